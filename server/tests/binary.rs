//! The real `amd-lsp` binary over stdio: arguments, a whole session, and a clean stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use amd_engine::testmodel::cached_tiny_model;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_amd-lsp");

fn tiny_model() -> PathBuf {
    cached_tiny_model(Path::new(env!("CARGO_TARGET_TMPDIR")), false).expect("tiny model")
}

fn frame(msg: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("json");
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend(body);
    out
}

/// Reads one framed message; `None` at end of stream.
fn read_frame(r: &mut impl BufRead) -> Option<Value> {
    let mut n = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).expect("read") == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let value = line
            .strip_prefix("Content-Length: ")
            .expect("only Content-Length headers on stdout");
        n = Some(value.parse::<usize>().expect("length"));
    }
    let mut body = vec![0; n.expect("Content-Length")];
    r.read_exact(&mut body).expect("body");
    Some(serde_json::from_slice(&body).expect("stdout carries only JSON-RPC frames"))
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("amd-lsp "));
    let out = Command::new(BIN).arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--stdio",
        "--model",
        "--log-file",
        "--log-level",
        "complete",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}

#[test]
fn a_whole_session_over_stdio() {
    let mut child = Command::new(BIN)
        .args(["--stdio", "--log-level", "debug", "--model"])
        .arg(tiny_model())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn amd-lsp");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut send = |msg: Value| stdin.write_all(&frame(&msg)).expect("write");

    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "processId": null,
            "capabilities": {"textDocument": {"inlineCompletion": {}}},
            "initializationOptions": {"debounceMs": 0},
        }}),
    );
    let init = read_frame(&mut stdout).expect("initialize answer");
    assert_eq!(
        init["result"]["capabilities"]["inlineCompletionProvider"], true,
        "{init}"
    );
    send(json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}));
    send(
        json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": "file:///t/a.py", "languageId": "python", "version": 1, "text": "def add(a, b):\n    return a",
        }}}),
    );
    // The model loads in the background: ask for the status until it is ready, then complete.
    let mut next_id = 2;
    let mut answers = Vec::new();
    let mut completion = None;
    while completion.is_none() {
        send(json!({"jsonrpc": "2.0", "id": next_id, "method": "amd/status"}));
        let status = loop {
            let msg = read_frame(&mut stdout).expect("server alive");
            if msg["id"] == next_id {
                break msg["result"].clone();
            }
            answers.push(msg);
        };
        next_id += 1;
        if status["state"] == "ready" {
            send(
                json!({"jsonrpc": "2.0", "id": next_id, "method": "textDocument/inlineCompletion", "params": {
                    "textDocument": {"uri": "file:///t/a.py"},
                    "position": {"line": 1, "character": 12},
                    "context": {"triggerKind": 2},
                }}),
            );
            let msg = loop {
                let msg = read_frame(&mut stdout).expect("server alive");
                if msg["id"] == next_id {
                    break msg;
                }
            };
            completion = Some(msg);
        } else {
            assert_eq!(status["state"], "loading", "{status}");
        }
    }
    let completion = completion.expect("completion");
    let items = completion["result"]["items"].as_array().expect("items");
    assert!(items[0]["insertText"]
        .as_str()
        .expect("text")
        .starts_with("    return a"));
    send(json!({"jsonrpc": "2.0", "id": 999, "method": "shutdown"}));
    let msg = read_frame(&mut stdout).expect("shutdown answer");
    assert_eq!(msg["id"], 999);
    send(json!({"jsonrpc": "2.0", "method": "exit"}));
    drop(stdin);
    assert!(read_frame(&mut stdout).is_none(), "nothing after exit");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(
        stderr.contains("model ready"),
        "logs go to stderr: {stderr}"
    );
    assert!(
        !stderr.contains("return a"),
        "no document text in logs above trace"
    );
}

#[test]
fn finds_and_converts_a_checkpoint_in_the_hugging_face_cache() {
    let root =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hf-cache-{}", std::process::id()));
    let repo = root.join("hf/hub/models--amd--AMD-Llama-135m-code");
    let snapshot = repo.join("snapshots/rev1");
    std::fs::create_dir_all(&snapshot).expect("dir");
    let checkpoint = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-llama-hf");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.model",
        "tokenizer_config.json",
    ] {
        std::fs::copy(checkpoint.join(f), snapshot.join(f)).expect("copy");
    }
    std::fs::create_dir_all(repo.join("refs")).expect("refs");
    std::fs::write(repo.join("refs/main"), "rev1").expect("ref");
    let cache = root.join("cache");
    let command = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("HF_HOME", root.join("hf"))
            .env("AMD_LSP_CACHE", &cache)
            .env_remove("HF_HUB_CACHE")
            .env_remove("AMD_LSP_MODEL");
        c
    };

    let list = command(&["model", "list"]).output().expect("model list");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("snapshots/rev1 (found; converted on first use)"),
        "{list}"
    );

    let mut child = command(&["--stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut send = |msg: Value| stdin.write_all(&frame(&msg)).expect("write");
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}),
    );
    read_frame(&mut stdout).expect("initialize answer");
    send(json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}));
    let mut id = 1;
    let status = loop {
        id += 1;
        send(json!({"jsonrpc": "2.0", "id": id, "method": "amd/status"}));
        let status = loop {
            let msg = read_frame(&mut stdout).expect("server alive");
            if msg["id"] == id {
                break msg["result"].clone();
            }
        };
        if status["state"] != "loading" {
            break status;
        }
    };
    assert_eq!(status["state"], "ready", "{status}");
    let converted = cache.join("models/amd--AMD-Llama-135m-code/q8_0.gguf");
    assert_eq!(status["model"]["path"], converted.display().to_string());
    assert!(converted.is_file());
    send(json!({"jsonrpc": "2.0", "id": 999, "method": "shutdown"}));
    send(json!({"jsonrpc": "2.0", "method": "exit"}));
    assert!(child.wait().expect("wait").success());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn exits_when_the_editor_process_dies() {
    let mut editor = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("a stand-in editor process");
    let mut child = Command::new(BIN)
        .arg("--stdio")
        .env_remove("AMD_LSP_MODEL")
        .env(
            "AMD_LSP_CACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("empty-cache"),
        )
        .env(
            "HF_HOME",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("empty-hf"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": {"processId": editor.id(), "capabilities": {}}});
    stdin.write_all(&frame(&init)).expect("write");
    read_frame(&mut stdout).expect("initialize answer");
    editor.kill().expect("kill the editor");
    editor.wait().expect("reap");
    // A watchdog, so a server that does not exit fails the test instead of hanging it.
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    let pid = child.id().to_string();
    let guard = std::thread::spawn(move || {
        if watchdog
            .recv_timeout(std::time::Duration::from_secs(30))
            .is_err()
        {
            let _ = Command::new("kill").arg(&pid).status();
        }
    });
    // stdin stays open: only the parent check can end the server. The read returns at EOF.
    while read_frame(&mut stdout).is_some() {}
    let status = child.wait().expect("wait");
    let _ = done.send(());
    guard.join().expect("watchdog");
    assert!(
        status.success(),
        "the server was killed by the watchdog: {status}"
    );
    drop(stdin);
}
