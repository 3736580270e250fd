//! The real `amd-lsp` binary over stdio: arguments, a whole session, and a clean stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

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

/// `amd-lsp --stdio` as a child process, spoken to over its pipes.
struct StdioServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: i64,
}

impl StdioServer {
    fn spawn(command: &mut Command, stderr: Stdio) -> StdioServer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn amd-lsp");
        StdioServer {
            stdin: child.stdin.take().expect("stdin"),
            stdout: BufReader::new(child.stdout.take().expect("stdout")),
            child,
            next_id: 0,
        }
    }

    fn send(&mut self, msg: &Value) {
        self.stdin.write_all(&frame(msg)).expect("write");
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request and returns its whole response, skipping other messages.
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let msg = read_frame(&mut self.stdout).expect("server alive");
            if msg["id"] == id && msg.get("method").is_none() {
                return msg;
            }
        }
    }

    /// `amd/status` until the model is no longer loading.
    fn settled_status(&mut self) -> Value {
        loop {
            let status = self.request("amd/status", Value::Null)["result"].clone();
            if status["state"] != "loading" {
                return status;
            }
        }
    }

    /// `shutdown` and `exit`; nothing may follow on stdout and the exit code is 0. Returns
    /// what the server wrote to stderr, when it was piped.
    fn shutdown(mut self) -> String {
        self.request("shutdown", Value::Null);
        self.notify("exit", Value::Null);
        drop(self.stdin);
        assert!(read_frame(&mut self.stdout).is_none(), "nothing after exit");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).expect("stderr");
        }
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{status}");
        stderr
    }
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
    // A watchdog, so a server that does not exit fails the test instead of hanging it.
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    let pid = server.child.id().to_string();
    let guard = std::thread::spawn(move || {
        if watchdog
            .recv_timeout(std::time::Duration::from_secs(30))
            .is_err()
        {
            let _ = Command::new("kill").arg(&pid).status();
        }
    });
    // stdin stays open: only the parent check can end the server. The read returns at EOF.
    while read_frame(&mut server.stdout).is_some() {}
    let status = server.child.wait().expect("wait");
    let _ = done.send(());
    guard.join().expect("watchdog");
    assert!(
        status.success(),
        "the server was killed by the watchdog: {status}"
    );
}
