//! Shared by the server benchmarks: the real binary over stdio (through `amd_lsp::client`), the
//! model and the source they type.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use amd_engine::testing::testmodel::cached_tiny_model;
use amd_lsp::client::{Client, Messages};
use serde_json::{json, Value};

/// Starts `amd-lsp --stdio` with `model` through the project's one client, initializes it with
/// `options`, and waits until the model is loaded.
pub fn start_server(model: &Path, options: Value) -> Client {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_amd-lsp"));
    command
        .args(["--stdio", "--log-level", "warn", "--model"])
        .arg(model);
    let mut c = Client::start(&mut command, Messages::AnswersOnly).expect("spawn amd-lsp");
    c.initialize(options, true).expect("the model loads");
    c
}

/// Sends a request and returns its `result`.
pub fn call(c: &mut Client, method: &str, params: Value) -> Value {
    c.call(method, params, 120).expect("an answer")["result"].clone()
}

/// An `amd/status` result.
pub fn status(c: &mut Client) -> Value {
    call(c, "amd/status", json!(null))
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
