//! The real `amd-lsp` binary over stdio: arguments, a whole session, and a clean stdout.

mod stdio;

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;

use stdio::{tiny_model, StdioServer, BIN};

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
    let mut cmd = Command::new(BIN);
    cmd.args(["--stdio", "--log-level", "debug", "--model"])
        .arg(tiny_model());
    let mut server = StdioServer::spawn(&mut cmd, Stdio::piped());
    let init = server.request(
        "initialize",
        json!({
            "processId": null,
            "capabilities": {"textDocument": {"inlineCompletion": {}}},
            "initializationOptions": {"debounceMs": 0},
        }),
    );
    assert_eq!(
        init["result"]["capabilities"]["inlineCompletionProvider"], true,
        "{init}"
    );
    server.notify("initialized", json!({}));
    server.notify(
        "textDocument/didOpen",
        json!({"textDocument": {
            "uri": "file:///t/a.py", "languageId": "python", "version": 1, "text": "def add(a, b):\n    return a",
        }}),
    );
    // The model loads in the background.
    assert_eq!(server.settled_status()["state"], "ready");
    let completion = server.request(
        "textDocument/inlineCompletion",
        json!({
            "textDocument": {"uri": "file:///t/a.py"},
            "position": {"line": 1, "character": 12},
            "context": {"triggerKind": 2},
        }),
    );
    let items = completion["result"]["items"].as_array().expect("items");
    assert!(items[0]["insertText"]
        .as_str()
        .expect("text")
        .starts_with("    return a"));
    // No network at run time: after loading and completing, no Internet socket is open
    // (only `model pull` uses the network).
    let sockets = stdio::inet_sockets(server.client.pid());
    assert!(sockets.is_empty(), "{sockets:?}");
    let stderr = server.shutdown();
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
    stdio::fake_hf_cache(&root.join("hf"));
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

    let mut server = StdioServer::spawn(&mut command(&["--stdio"]), Stdio::null());
    server.request("initialize", json!({"capabilities": {}}));
    server.notify("initialized", json!({}));
    let status = server.settled_status();
    assert_eq!(status["state"], "ready", "{status}");
    let converted = cache.join("models/amd--AMD-Llama-135m-code/q8_0.gguf");
    assert_eq!(status["model"]["path"], converted.display().to_string());
    assert!(converted.is_file());
    server.shutdown();
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn exits_when_the_editor_process_dies() {
    let mut editor = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("a stand-in editor process");
    let mut cmd = Command::new(BIN);
    cmd.arg("--stdio")
        .env_remove("AMD_LSP_MODEL")
        .env(
            "AMD_LSP_CACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("empty-cache"),
        )
        .env(
            "HF_HOME",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("empty-hf"),
        );
    let mut server = StdioServer::spawn(&mut cmd, Stdio::null());
    server.request(
        "initialize",
        json!({"processId": editor.id(), "capabilities": {}}),
    );
    editor.kill().expect("kill the editor");
    editor.wait().expect("reap");
    // stdin stays open: only the parent check can end the server (or the watchdog, failing
    // the test). The read returns at EOF.
    let started = std::time::Instant::now();
    server.drain();
    let status = server.child().wait().expect("wait");
    eprintln!("exited {:?} after the editor died", started.elapsed());
    assert!(
        status.success(),
        "the server was killed by the watchdog: {status}"
    );
}

#[test]
fn the_socket_check_sees_a_listening_socket() {
    // The negative control for the check in `a_whole_session_over_stdio`.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    assert!(!stdio::inet_sockets(std::process::id()).is_empty());
    drop(listener);
}
