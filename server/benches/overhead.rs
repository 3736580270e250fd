//! Server overhead per completion request and type-through hit time, on a replayed typing
//! session against the real binary over stdio.
//!
//! `cargo bench -p amd-lsp --bench overhead -- [--model M.gguf] [--steps N]`
//!
//! Types the rest of a real source file into an open document one character at a time,
//! asking for an inline completion after each; every tenth step instead types three
//! characters of the suggestion on screen (type-through). The server measures itself:
//! overhead = time in the request handler minus the debounce wait and the engine's time.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};

use amd_engine::testmodel::{write_random_llama, LlamaShape, WeightType};
use serde_json::{json, Value};

struct Client {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: i64,
}

impl Client {
    fn send(&mut self, msg: &Value) {
        let body = serde_json::to_vec(msg).expect("json");
        write!(self.stdin, "Content-Length: {}\r\n\r\n", body.len()).expect("write");
        self.stdin.write_all(&body).expect("write");
        self.stdin.flush().expect("flush");
    }

    fn read(&mut self) -> Value {
        let mut n = 0;
        loop {
            let mut line = String::new();
            self.stdout.read_line(&mut line).expect("read");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                n = v.parse().expect("length");
            }
        }
        let mut body = vec![0; n];
        self.stdout.read_exact(&mut body).expect("body");
        serde_json::from_slice(&body).expect("json")
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
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

    fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let steps: usize = opt("--steps").map_or(400, |s| s.parse().expect("--steps N"));
    // Cargo runs benchmarks in the package directory: resolve a relative path first.
    let model =
        opt("--model").map_or_else(tiny_model, |m| std::path::absolute(m).expect("model path"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source =
        std::fs::read_to_string(root.join("tests/fixtures/documents/heapq.py")).expect("heapq.py");

    let mut child = Command::new(env!("CARGO_BIN_EXE_amd-lsp"))
        .args(["--stdio", "--log-level", "warn", "--model"])
        .arg(&model)
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
        json!({"capabilities": {"textDocument": {"inlineCompletion": {}}}, "initializationOptions": {"debounceMs": 0}}),
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

    let uri = "file:///bench/heapq.py";
    let split = 3000;
    let mut doc: String = source[..split].to_owned();
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": doc}}),
    );
    let mut typed_source = source[split..].chars();
    let mut version = 1;
    let mut shown = String::new();
    let mut through: Vec<char> = Vec::new();
    for step in 0..steps {
        if through.is_empty() && step % 10 == 9 {
            through = shown.chars().take(3).collect();
        }
        let ch = if through.is_empty() {
            typed_source.next().unwrap_or('\n')
        } else {
            through.remove(0)
        };
        let (line, col) = cursor(&doc);
        doc.push(ch);
        version += 1;
        c.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": version}, "contentChanges": [{
                "range": {"start": {"line": line, "character": col}, "end": {"line": line, "character": col}},
                "text": ch.to_string(),
            }]}),
        );
        let (line, col) = cursor(&doc);
        let result = c.request(
            "textDocument/inlineCompletion",
            json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": col},
                   "context": {"triggerKind": 2}}),
        );
        let line_prefix = doc.rsplit('\n').next().unwrap_or("");
        shown = result["items"][0]["insertText"]
            .as_str()
            .and_then(|t| t.strip_prefix(line_prefix))
            .unwrap_or("")
            .to_owned();
    }
    let status = c.request("amd/status", Value::Null);
    c.request("shutdown", Value::Null);
    c.notify("exit", Value::Null);
    let _ = child.wait();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "model: {}", model.display());
    let _ = writeln!(out, "steps: {steps}, counters: {}", status["counters"]);
    let _ = writeln!(out, "engine: {}", status["engine"]);
    for key in ["latencyMs", "overheadMs", "cacheHitMs"] {
        let _ = writeln!(
            out,
            "{key}: p50 {:.3} p95 {:.3}",
            status[key]["p50"].as_f64().unwrap_or(f64::NAN),
            status[key]["p95"].as_f64().unwrap_or(f64::NAN)
        );
    }
}

/// Line and UTF-16 column of the end of `doc`.
fn cursor(doc: &str) -> (usize, usize) {
    let line = doc.matches('\n').count();
    let col = doc.rsplit('\n').next().unwrap_or("").encode_utf16().count();
    (line, col)
}

fn tiny_model() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../target/bench-models/tiny-llama-f32-seed1-v{}.gguf",
        amd_engine::testmodel::GENERATOR_VERSION
    ));
    if !path.exists() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        let vocab = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/llama2-vocab/llama2-vocab.gguf");
        write_random_llama(&vocab, &LlamaShape::tiny(), WeightType::F32, 1, &path)
            .expect("tiny model");
    }
    path
}
