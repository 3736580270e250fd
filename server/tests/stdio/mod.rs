//! The real `amd-lsp` binary as a child process, spoken to over its pipes with real framing.
//! Shared by the binary-level test files (`mod stdio;`). Every server has a watchdog: one that
//! hangs is killed, so a test fails instead of hanging.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_amd-lsp");

/// How long any one server may live in a test.
const WATCHDOG: Duration = Duration::from_secs(180);

pub fn frame(msg: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("json");
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend(body);
    out
}

/// Reads one framed message; `None` at end of stream.
pub fn read_frame(r: &mut impl BufRead) -> Option<Value> {
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
pub struct StdioServer {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: BufReader<ChildStdout>,
    pub next_id: i64,
    watchdog: Option<mpsc::Sender<()>>,
}

impl StdioServer {
    pub fn spawn(command: &mut Command, stderr: Stdio) -> StdioServer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn amd-lsp");
        let (done, watch) = mpsc::channel::<()>();
        let pid = child.id().to_string();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(WATCHDOG) {
                eprintln!("watchdog: killing amd-lsp {pid}");
                let _ = Command::new("kill").args(["-9", &pid]).status();
            }
        });
        StdioServer {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().expect("stdout")),
            child,
            next_id: 0,
            watchdog: Some(done),
        }
    }

    pub fn send(&mut self, msg: &Value) {
        self.stdin().write_all(&frame(msg)).expect("write");
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request and returns its whole response, skipping other messages.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
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
    pub fn settled_status(&mut self) -> Value {
        loop {
            let status = self.request("amd/status", Value::Null)["result"].clone();
            if status["state"] != "loading" {
                return status;
            }
        }
    }

    /// `shutdown` and `exit`; nothing may follow on stdout and the exit code is 0. Returns
    /// what the server wrote to stderr, when it was piped.
    pub fn shutdown(mut self) -> String {
        self.request("shutdown", Value::Null);
        self.notify("exit", Value::Null);
        drop(self.stdin.take());
        assert!(read_frame(&mut self.stdout).is_none(), "nothing after exit");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).expect("stderr");
        }
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{status}");
        stderr
    }

    /// Writes raw bytes (for malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stdin().write_all(bytes).expect("write");
        self.stdin().flush().expect("flush");
    }

    /// The next message from the server; panics at end of stream.
    pub fn read(&mut self) -> Value {
        read_frame(&mut self.stdout).expect("the server is alive")
    }

    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.stdin.as_mut().expect("stdin is open")
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        // A server still running when its test ends (a failed assertion) is killed.
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.watchdog.take());
    }
}

/// The tiny random Llama with the real Llama-2 vocabulary, written once per target dir.
pub fn tiny_model() -> std::path::PathBuf {
    amd_engine::testing::testmodel::cached_tiny_model(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        false,
    )
    .expect("tiny model")
}

/// A Hugging Face cache at `hf_home` holding the tiny checkpoint as
/// `amd/AMD-Llama-135m-code` (revision `rev1`, `refs/main` pointing at it).
pub fn fake_hf_cache(hf_home: &std::path::Path) {
    let repo = hf_home.join("hub/models--amd--AMD-Llama-135m-code");
    let snapshot = repo.join("snapshots/rev1");
    std::fs::create_dir_all(&snapshot).expect("dir");
    let checkpoint =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-llama-hf");
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
}

/// The Internet sockets (TCP, UDP, raw; v4 or v6) process `pid` has open, as lines of
/// `/proc/net/*`. Unix socket pairs (tokio's signal driver uses one) are not counted.
pub fn inet_sockets(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut found = Vec::new();
    for table in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let inode = line.split_whitespace().nth(9).unwrap_or("");
            if inodes.iter().any(|i| i == inode) {
                found.push(format!("{table}: {line}"));
            }
        }
    }
    found
}
