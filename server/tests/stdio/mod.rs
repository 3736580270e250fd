//! The real `amd-lsp` binary as a child process, spoken to over its pipes with real framing.
//! Shared by the binary-level test files (`mod stdio;`). Every server has a watchdog: one that
//! hangs is killed, so a test fails instead of hanging.

#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use amd_lsp::client::{Client, Messages};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_amd-lsp");

/// How long any one server may live in a test.
const WATCHDOG: Duration = Duration::from_secs(180);

/// `amd-lsp --stdio` as a child process, spoken to over its pipes through the project's one
/// client (`amd_lsp::client`), synchronously: every call panics on failure, and `read` takes
/// the server's messages in order.
pub struct StdioServer {
    pub client: Client,
    watchdog: Option<mpsc::Sender<()>>,
}

impl StdioServer {
    pub fn spawn(command: &mut Command, stderr: Stdio) -> StdioServer {
        let client = Client::start(command.stderr(stderr), Messages::Keep).expect("spawn amd-lsp");
        let (done, watch) = mpsc::channel::<()>();
        let pid = client.pid().to_string();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(WATCHDOG) {
                eprintln!("watchdog: killing amd-lsp {pid}");
                let _ = Command::new("kill").args(["-9", &pid]).status();
            }
        });
        StdioServer {
            client,
            watchdog: Some(done),
        }
    }

    pub fn child(&mut self) -> &mut Child {
        self.client.child()
    }

    pub fn send(&mut self, msg: &Value) {
        self.client.send(msg).expect("write");
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.client.notify(method, params).expect("write");
    }

    /// Sends a request and returns its whole response, skipping other messages.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.client.request(method, params).expect("write");
        loop {
            let msg = self.read();
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
        self.client.close_stdin();
        self.assert_output_ended();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child().stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("stderr");
        }
        let status = self.client.wait_exit().expect("wait");
        assert!(status.success(), "{status}");
        stderr
    }

    /// Writes raw bytes (for malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.client.send_raw(bytes).expect("write");
    }

    /// The next message from the server; panics at end of stream.
    pub fn read(&mut self) -> Value {
        self.client.next_message().expect("the server is alive")
    }

    /// The next message, or `None` once the server's output has ended.
    pub fn try_read(&mut self) -> Option<Value> {
        self.client.next_message()
    }

    /// Nothing more comes from the server: its output ends.
    pub fn assert_output_ended(&mut self) {
        let rest = self.try_read();
        assert!(rest.is_none(), "nothing after exit: {rest:?}");
    }

    /// Reads (and drops) messages until the server's output ends.
    pub fn drain(&mut self) {
        while self.try_read().is_some() {}
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> i64 {
        self.client.next_id()
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        // A server still running when its test ends is killed (by the client); the watchdog
        // is no longer needed.
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
