//! Shared by the server benchmarks: a synchronous LSP client for the real binary over stdio.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use amd_engine::testing::testmodel::cached_tiny_model;
use serde_json::{json, Value};

pub struct Client {
    pub stdin: ChildStdin,
    pub stdout: BufReader<ChildStdout>,
    pub next_id: i64,
}

// The frame helpers the binary-level tests use, so both speak the wire format one way.
#[path = "../../tests/stdio/mod.rs"]
mod stdio;

pub use stdio::read_frame;

/// Writes one framed JSON-RPC message.
pub fn write_frame(w: &mut impl Write, msg: &Value) {
    w.write_all(&stdio::frame(msg)).expect("write");
    w.flush().expect("flush");
}

impl Client {
    pub fn send(&mut self, msg: &Value) {
        write_frame(&mut self.stdin, msg);
    }

    pub fn read(&mut self) -> Value {
        read_frame(&mut self.stdout).expect("the server closed its output")
    }

    pub fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let msg = self.read();
            if msg["id"] == id && msg.get("method").is_none() {
                return msg["result"].clone();
            }
        }
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }
}

/// Starts `amd-lsp --stdio` with `model`, initializes it with `options`, and waits until the
/// model is loaded.
pub fn start_server(model: &Path, options: Value) -> (Child, Client) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_amd-lsp"))
        .args(["--stdio", "--log-level", "warn", "--model"])
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn amd-lsp");
    let mut c = Client {
        stdin: child.stdin.take().expect("stdin"),
        stdout: BufReader::new(child.stdout.take().expect("stdout")),
        next_id: 0,
    };
    c.request(
        "initialize",
        json!({"capabilities": {"textDocument": {"inlineCompletion": {}}}, "initializationOptions": options}),
    );
    c.notify("initialized", json!({}));
    loop {
        let status = c.request("amd/status", Value::Null);
        match status["state"].as_str() {
            Some("ready") => break,
            Some("loading") => continue,
            _ => panic!("the model did not load: {status}"),
        }
    }
    (child, c)
}

/// The value after `name` on the command line, if any.
pub fn opt(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The model named by `--model` (made absolute: cargo runs benchmarks in the package
/// directory), or the tiny test model.
pub fn model_arg(args: &[String]) -> PathBuf {
    match args
        .iter()
        .position(|a| a == "--model")
        .and_then(|i| args.get(i + 1))
    {
        Some(m) => std::path::absolute(m).expect("model path"),
        None => tiny_model(),
    }
}

/// The real source file the benchmarks type.
pub fn source() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join("tests/fixtures/documents/heapq.py")).expect("heapq.py")
}

/// Line and UTF-16 column of the end of `doc`.
pub fn cursor(doc: &str) -> (usize, usize) {
    let line = doc.matches('\n').count();
    let col = doc.rsplit('\n').next().unwrap_or("").encode_utf16().count();
    (line, col)
}

pub fn tiny_model() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-models");
    cached_tiny_model(&dir, false).expect("tiny model")
}
