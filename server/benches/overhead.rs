//! Server overhead per completion request and type-through hit time, on a replayed typing
//! session against the real binary over stdio.
//!
//! `cargo bench -p amd-lsp --bench overhead -- [--model M.gguf] [--steps N]`
//!
//! Types the rest of a real source file into an open document one character at a time,
//! asking for an inline completion after each; every tenth step instead types three
//! characters of the suggestion on screen (type-through). The server measures itself:
//! overhead = time in the request handler minus the debounce wait and the engine's time.

mod common;

use std::io::Write;

use common::{call, cursor, model_arg, source, start_server, status};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| common::opt(&args, name);
    let steps: usize = opt("--steps").map_or(400, |s| s.parse().expect("--steps N"));
    let model = model_arg(&args);
    let source = source();

    let mut c = start_server(&model, json!({"debounceMs": 0}));

    let uri = "file:///bench/heapq.py";
    let split = 3000;
    let mut doc: String = source[..split].to_owned();
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": doc}}),
    )
    .expect("write");
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
        )
        .expect("write");
        let (line, col) = cursor(&doc);
        let result = call(
            &mut c,
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
    let status = status(&mut c);
    c.shutdown().expect("shutdown");
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
