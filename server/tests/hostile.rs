//! Hostile input against the real binary: every case gets the answer the LSP and JSON-RPC
//! specifications ask for (or is ignored where they say so), every request is answered exactly
//! once, and the server still gives the same completions as a fresh one afterwards.

mod stdio;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use stdio::{tiny_model, StdioServer, BIN};

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const NOT_INITIALIZED: i64 = -32002;

const DOC: &str = "file:///w/a.py";
const TEXT: &str = "def add(a, b):\n    return a\n\n# 😀 emoji: two UTF-16 units\nx = '😀'\n";

fn server() -> StdioServer {
    let mut cmd = Command::new(BIN);
    cmd.args(["--stdio", "--model"]).arg(tiny_model());
    StdioServer::spawn(&mut cmd, Stdio::null())
}

fn body(msg: &Value) -> String {
    serde_json::to_string(msg).expect("json")
}

fn request(id: i64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn inline(id: i64, uri: &str, line: u32, character: u32) -> Value {
    request(
        id,
        "textDocument/inlineCompletion",
        json!({
            "textDocument": {"uri": uri},
            "position": {"line": line, "character": character},
            "context": {"triggerKind": 1},
        }),
    )
}

/// The checking helper: sends `input` (raw bytes), then a probe request, and returns every
/// message up to the probe's answer. Asserts the probe is answered, so the server is alive and
/// reading in order.
fn exchange(server: &mut StdioServer, input: &[u8]) -> Vec<Value> {
    server.send_raw(input);
    let probe = server.next_id() + 1_000_000;
    server.send(&request(probe, "amd/status", Value::Null));
    let mut seen = Vec::new();
    loop {
        let msg = server.read();
        if msg["id"] == probe {
            assert!(msg.get("result").is_some(), "probe failed: {msg}");
            return seen;
        }
        seen.push(msg);
    }
}

/// Sends a request and returns its one answer; checks no second answer for it follows.
fn answer(server: &mut StdioServer, msg: &Value) -> Value {
    server.send(msg);
    let id = msg["id"].as_i64().expect("a request");
    let first = wait_for(server, id);
    let seen = exchange(server, b"");
    assert!(
        responses(&seen).iter().all(|m| m["id"] != id),
        "answered twice: {seen:?}"
    );
    first
}

/// Responses (not server requests or notifications) among `messages`.
fn responses(messages: &[Value]) -> Vec<&Value> {
    messages
        .iter()
        .filter(|m| m.get("method").is_none())
        .collect()
}

fn error_code(msg: &Value) -> Option<i64> {
    msg["error"]["code"].as_i64()
}

/// Exactly one response with `id`, an error with `code`.
fn assert_error(messages: &[Value], id: Value, code: i64) {
    let answers: Vec<_> = responses(messages)
        .into_iter()
        .filter(|m| m["id"] == id)
        .collect();
    assert_eq!(answers.len(), 1, "one answer for {id}: {messages:?}");
    assert_eq!(error_code(answers[0]), Some(code), "{messages:?}");
}

/// Only null-id parse/invalid-request errors, at least one.
fn assert_framing_errors(messages: &[Value]) {
    let r = responses(messages);
    assert!(!r.is_empty(), "malformed input is answered");
    for m in r {
        assert_eq!(m["id"], Value::Null, "{m}");
        assert!(
            matches!(error_code(m), Some(PARSE_ERROR | INVALID_REQUEST)),
            "{m}"
        );
    }
}

fn framed(body: &str) -> Vec<u8> {
    format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// The suggestion a fresh server gives for `text` at `(line, character)`.
fn reference_suggestion(text: &str, line: u32, character: u32) -> Value {
    let mut s = server();
    initialize(&mut s);
    open(&mut s, "file:///w/ref.py", text, 1);
    s.settled_status();
    let id = s.next_id();
    s.send(&inline(id, "file:///w/ref.py", line, character));
    let answer = wait_for(&mut s, id);
    s.shutdown();
    answer["result"].clone()
}

fn initialize(s: &mut StdioServer) {
    let init = s.request(
        "initialize",
        json!({
            "capabilities": {"textDocument": {"inlineCompletion": {}}},
            "initializationOptions": {"debounceMs": 0},
        }),
    );
    assert!(init.get("result").is_some(), "{init}");
    s.notify("initialized", json!({}));
}

fn open(s: &mut StdioServer, uri: &str, text: &str, version: i32) {
    s.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "python", "version": version, "text": text}}),
    );
}

fn wait_for(s: &mut StdioServer, id: i64) -> Value {
    loop {
        let msg = s.read();
        if msg["id"] == id && msg.get("method").is_none() {
            return msg;
        }
    }
}

#[test]
fn hostile_input_never_ends_the_session() {
    let mut s = server();

    // Before `initialize`: requests get -32002, notifications are dropped.
    let mut input = framed(&body(&inline(1, DOC, 0, 0)));
    input.extend(framed(&body(
        &json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {}}),
    )));
    s.send_raw(&input);
    assert_eq!(error_code(&s.read()), Some(NOT_INITIALIZED));
    initialize(&mut s);
    open(&mut s, DOC, TEXT, 1);

    // Framing: bad JSON, no Content-Length, a non-number length, garbage bytes, a length too
    // short, a length too long, a huge declared length, an empty body, JSON that is not a
    // message. Each is answered with a null-id error and the session goes on.
    let probe = body(&request(900, "amd/status", Value::Null));
    let cases: Vec<Vec<u8>> = vec![
        framed("{abc}"),
        b"Content-Type: application/vscode-jsonrpc\r\n\r\n{}".to_vec(),
        b"Content-Length: twelve\r\n\r\n".to_vec(),
        b"\x00\xff\xfe garbage \r\n\r\n".to_vec(),
        [
            format!("Content-Length: {}\r\n\r\n", probe.len() - 5).as_bytes(),
            probe.as_bytes(),
        ]
        .concat(),
        [
            format!("Content-Length: {}\r\n\r\n", probe.len() + 7).as_bytes(),
            probe.as_bytes(),
            b"junk!!!\r\n\r\n",
        ]
        .concat(),
        b"Content-Length: 99999999999999\r\n\r\n".to_vec(),
        b"Content-Length: 0\r\n\r\n".to_vec(),
        framed("[1, 2, 3]"),
        framed("\"just a string\""),
        vec![b'x'; 100_000],
    ];
    for (i, case) in cases.iter().enumerate() {
        let seen = exchange(&mut s, case);
        assert_framing_errors(&seen);
        // A truncated or swallowed request is never answered twice.
        let n900 = responses(&seen).iter().filter(|m| m["id"] == 900).count();
        assert!(n900 <= 1, "case {i}: {seen:?}");
    }

    // A Content-Type without a charset (tower-lsp-server alone would end the stream on it).
    let msg = body(&request(20, "amd/status", Value::Null));
    let typed = format!(
        "Content-Length: {}\r\nContent-Type: application/vscode-jsonrpc\r\n\r\n{msg}",
        msg.len()
    );
    let seen = exchange(&mut s, typed.as_bytes());
    assert!(responses(&seen)
        .iter()
        .any(|m| m["id"] == 20 && m.get("result").is_some()));

    // JSON-RPC errors with ids: not a message (method is a number), unknown methods, bad
    // params. An unknown notification is ignored.
    let cases = [
        (
            json!({"jsonrpc": "2.0", "id": 21, "method": 5}),
            INVALID_REQUEST,
        ),
        (
            json!({"jsonrpc": "1.0", "id": 22, "method": "amd/status"}),
            INVALID_REQUEST,
        ),
        (request(23, "no/suchMethod", json!({})), METHOD_NOT_FOUND),
        (request(24, "$/no/suchMethod", json!({})), METHOD_NOT_FOUND),
        (
            request(
                25,
                "textDocument/inlineCompletion",
                json!({"textDocument": 3}),
            ),
            INVALID_PARAMS,
        ),
        (
            request(26, "textDocument/completion", json!([])),
            INVALID_PARAMS,
        ),
    ];
    for (msg, code) in cases {
        let id = msg["id"].clone();
        let seen = exchange(&mut s, &framed(&body(&msg)));
        assert_error(&seen, id, code);
    }
    let seen = exchange(
        &mut s,
        &framed(&body(
            &json!({"jsonrpc": "2.0", "method": "no/suchNotification"}),
        )),
    );
    assert!(responses(&seen).is_empty(), "{seen:?}");

    // Positions: past the end of a line and of the document, inside a surrogate pair
    // (line 4 is `x = '😀'`: character 6 is between the emoji's two UTF-16 units), and an
    // unknown document. All are answered, none is an error.
    for (id, uri, line, character) in [
        (30, DOC, 1, 500),
        (31, DOC, 400, 3),
        (32, DOC, 4, 6),
        (33, DOC, u32::MAX, u32::MAX),
        (34, "file:///w/never-opened.py", 0, 0),
        (35, "not a uri at all", 0, 0),
    ] {
        let got = answer(&mut s, &inline(id, uri, line, character));
        assert!(got.get("error").is_none() || id == 35, "{got}");
    }

    // didChange: a stale version is ignored, a range past the end is clamped, an unknown
    // document is ignored, a change with no params is dropped. None of it is answered.
    let change = |version: i32, range: Value, text: &str| {
        json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
            "textDocument": {"uri": DOC, "version": version},
            "contentChanges": [{"range": range, "text": text}],
        }})
    };
    let everywhere =
        json!({"start": {"line": 0, "character": 0}, "end": {"line": 99, "character": 0}});
    let past_end =
        json!({"start": {"line": 50, "character": 9}, "end": {"line": 90, "character": 1}});
    let mut input = Vec::new();
    for msg in [
        change(2, everywhere.clone(), TEXT),
        change(1, everywhere, "stale: must not apply"),
        change(3, past_end, "# appended\n"),
        json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
            "textDocument": {"uri": "file:///w/unknown.py", "version": 9},
            "contentChanges": [{"text": "x"}]}}),
        json!({"jsonrpc": "2.0", "method": "textDocument/didChange"}),
    ] {
        input.extend(framed(&body(&msg)));
    }
    let seen = exchange(&mut s, &input);
    assert!(responses(&seen).is_empty(), "{seen:?}");

    // Big and binary documents: 10 MB of code, and text full of control characters and NULs.
    let big: String = "def f(x):\n    return x + 1\n".repeat(10 << 20 >> 5);
    open(&mut s, "file:///w/big.py", &big, 1);
    let lines = big.lines().count() as u32;
    let id = s.next_id();
    let got = answer(&mut s, &inline(id, "file:///w/big.py", lines, 0));
    assert!(got.get("result").is_some(), "{got}");
    let binary: String = (0u8..=255).map(char::from).cycle().take(100_000).collect();
    open(&mut s, "file:///w/blob.bin", &binary, 1);
    let id = s.next_id();
    let got = answer(&mut s, &inline(id, "file:///w/blob.bin", 3, 7));
    assert!(got.get("result").is_some(), "{got}");
    // A lone surrogate escape is not text serde_json accepts: a parse error, nothing opened.
    let lone = r#"{"jsonrpc":"2.0","method":"textDocument/didOpen","params":{"textDocument":{"uri":"file:///w/s.py","languageId":"python","version":1,"text":"\ud800"}}}"#;
    assert_framing_errors(&exchange(&mut s, &framed(lone)));

    // 10 000 requests in one burst: each answered exactly once.
    let ids = burst(&mut s, 10_000);
    assert_eq!(ids.len(), 10_000);
    assert!(
        ids.values().all(|&n| n == 1),
        "every request answered exactly once"
    );

    // Still correct: a new document gets the same suggestion as from a fresh server.
    let text = "def add(a, b):\n    return a";
    open(&mut s, "file:///w/after.py", text, 1);
    let id = s.next_id();
    s.send(&inline(id, "file:///w/after.py", 1, 12));
    let after = wait_for(&mut s, id)["result"].clone();
    assert_eq!(after, reference_suggestion(text, 1, 12));
    assert!(after["items"][0]["insertText"].is_string(), "{after}");

    // After `shutdown`: requests are invalid, `exit` ends the process with 0.
    let shutdown = s.request("shutdown", Value::Null);
    assert!(shutdown.get("result").is_some());
    let id = s.next_id();
    s.send(&inline(id, DOC, 0, 0));
    let answer = wait_for(&mut s, id);
    assert_eq!(error_code(&answer), Some(INVALID_REQUEST), "{answer}");
    s.notify("exit", Value::Null);
    s.assert_output_ended();
    assert!(s.child().wait().expect("wait").success());
}

/// Sends `n` completion requests in one write (the client reads the server's answers on its own
/// thread meanwhile) and counts the answers per id.
fn burst(s: &mut StdioServer, n: i64) -> HashMap<i64, usize> {
    let first = s.next_id();
    for _ in 0..n {
        s.next_id();
    }
    let mut bytes = Vec::new();
    for i in 0..n {
        bytes.extend(framed(&body(&inline(first + i, DOC, 1, (i % 12) as u32))));
    }
    s.send_raw(&bytes);
    let mut counts = HashMap::new();
    while counts.values().sum::<usize>() < n as usize {
        let msg = s.read();
        if let Some(id) = msg["id"].as_i64().filter(|_| msg.get("method").is_none()) {
            assert!(
                msg.get("error").is_none() || error_code(&msg) == Some(-32800),
                "{msg}"
            );
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    // Nothing more arrives for the burst: the probe is the next answer.
    let seen = exchange(s, b"");
    assert!(
        responses(&seen).iter().all(|m| m["id"]
            .as_i64()
            .is_none_or(|id| id < first || id >= first + n)),
        "late duplicates: {seen:?}"
    );
    counts
}

/// A scratch directory under the target dir, unique per process.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn broken_models_are_reported_and_the_server_keeps_running() {
    let dir = scratch("models");
    let tiny = std::fs::read(tiny_model()).expect("tiny model");
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &tiny[..tiny.len() * 2 / 3]).expect("write");
    let random = dir.join("random.gguf");
    let noise: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&random, noise).expect("write");
    let not_llama = dir.join("gpt2.gguf");
    let mut w = amd_engine::gguf::GgufWriter::new();
    w.set(
        "general.architecture",
        amd_engine::gguf::Value::String("gpt2".into()),
    );
    w.write(&not_llama).expect("write");
    let vocab_only = amd_engine::testing::testmodel::fixture_vocab();
    let damaged_qwen2 = dir.join("qwen2-damaged.gguf");
    amd_engine::testing::testmodel::write_as_architecture(
        &tiny_model(),
        "qwen2",
        Some("blk.1.ffn_down.weight"),
        &damaged_qwen2,
    )
    .expect("write");

    let cases: Vec<(Value, &str)> = vec![
        (json!({"model": dir.join("absent.gguf")}), "does not exist"),
        (json!({"model": truncated}), "outside the file"),
        (json!({"model": random}), "not a GGUF file"),
        (json!({"model": not_llama}), "no vocabulary"),
        (json!({"model": vocab_only}), "only a vocabulary"),
        // Another architecture: llama.cpp's loader checks its tensors; its reason is shown.
        (json!({"model": damaged_qwen2}), "blk.1.ffn_down.weight"),
        (
            json!({"model": tiny_model(), "contextSize": 4_000_000_000u32}),
            "MiB of KV cache",
        ),
    ];
    for (options, expected) in cases {
        let mut s = StdioServer::spawn(
            Command::new(BIN)
                .args(["--stdio"])
                .env_remove("AMD_LSP_MODEL"),
            Stdio::null(),
        );
        let mut options = options;
        options["debounceMs"] = json!(0);
        s.request(
            "initialize",
            json!({"capabilities": {}, "initializationOptions": options}),
        );
        s.notify("initialized", json!({}));
        let message = loop {
            let msg = s.read();
            if msg["method"] == "window/showMessage" {
                break msg;
            }
        };
        assert_eq!(message["params"]["type"], 1, "an error: {message}");
        let text = message["params"]["message"].as_str().expect("text");
        assert!(text.contains(expected), "{expected:?} in {text:?}");
        assert_eq!(s.settled_status()["state"], "failed");
        // Still serving: documents are kept, completions are answered (empty).
        open(&mut s, DOC, TEXT, 1);
        let id = s.next_id();
        s.send(&request(
            id,
            "textDocument/completion",
            json!({"textDocument": {"uri": DOC}, "position": {"line": 1, "character": 12}}),
        ));
        let got = wait_for(&mut s, id);
        assert!(got.get("error").is_none(), "{got}");
        s.shutdown();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
