//! A test LSP client: the real server in-process over `tokio::io::duplex` pipes, with real
//! Content-Length framing. Every wait has a timeout; nothing sleeps to synchronise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amd_engine::testing::testmodel::cached_tiny_model;
use amd_lsp::lsp::{serve, ServeOptions};
use serde_json::{json, Value};
use tokio::io::{
    AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf,
};
use tokio::sync::{mpsc, oneshot};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);

/// The tiny random Llama with the real Llama-2 vocabulary, written once per target dir.
pub(crate) fn tiny_model() -> PathBuf {
    cached_tiny_model(Path::new(env!("CARGO_TARGET_TMPDIR")), false).expect("tiny model")
}

/// The tiny random Llama with CodeLlama's vocabulary (FIM tokens at 32007..32010).
pub(crate) fn tiny_fim_model() -> PathBuf {
    cached_tiny_model(Path::new(env!("CARGO_TARGET_TMPDIR")), true).expect("tiny FIM model")
}

/// A CodeLlama-vocabulary target stacked on the tiny model (its layers plus one more, scaled
/// down), so the tiny model drafts for it with a high acceptance.
pub(crate) fn stacked_target() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!(
        "e2e-stacked-target-v{}.gguf",
        amd_engine::testing::testmodel::GENERATOR_VERSION
    ));
    if !path.exists() {
        amd_engine::testing::testmodel::write_stacked_target(
            &tiny_model(),
            &amd_engine::testing::testmodel::fixture_vocab(),
            1,
            0.05,
            true,
            3,
            &path,
        )
        .expect("stacked target");
    }
    path
}

/// The `file:` URI of a local path.
pub(crate) fn file_uri(path: &Path) -> String {
    url::Url::from_file_path(path)
        .expect("an absolute path")
        .to_string()
}

type Pending = Arc<Mutex<HashMap<i64, oneshot::Sender<Value>>>>;

type Writer = Arc<tokio::sync::Mutex<WriteHalf<DuplexStream>>>;

pub(crate) struct TestClient {
    writer: Writer,
    pending: Pending,
    notifications: mpsc::UnboundedReceiver<Value>,
    next_id: i64,
    server: tokio::task::JoinHandle<()>,
}

/// How the test client introduces itself.
pub(crate) struct ClientSetup {
    pub(crate) inline: bool,
    pub utf8: bool,
    pub(crate) options: Value,
    pub(crate) model: Option<PathBuf>,
    /// The workspace folder (`rootUri`), if any.
    pub(crate) root: Option<PathBuf>,
}

impl Default for ClientSetup {
    fn default() -> ClientSetup {
        ClientSetup {
            inline: true,
            utf8: false,
            options: json!({"debounceMs": 0}),
            model: Some(tiny_model()),
            root: None,
        }
    }
}

impl TestClient {
    /// Starts a server and runs `initialize` + `initialized`; returns the initialize result.
    pub(crate) async fn start(setup: ClientSetup) -> (TestClient, Value) {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let (server_read, server_write) = tokio::io::split(server_io);
        let options = ServeOptions {
            model: setup.model,
            ..ServeOptions::default()
        };
        let server = tokio::spawn(serve(server_read, server_write, options));
        let (client_read, writer) = tokio::io::split(client_io);
        let pending: Pending = Arc::default();
        let (notify_tx, notifications) = mpsc::unbounded_channel();
        let writer: Writer = Arc::new(tokio::sync::Mutex::new(writer));
        tokio::spawn(read_loop(
            client_read,
            Arc::clone(&pending),
            notify_tx,
            Arc::clone(&writer),
        ));
        let mut client = TestClient {
            writer,
            pending,
            notifications,
            next_id: 0,
            server,
        };
        let mut caps = json!({
            "window": {"workDoneProgress": true},
            "general": {"positionEncodings": if setup.utf8 { json!(["utf-8", "utf-16"]) } else { json!(["utf-16"]) }},
            "textDocument": {"synchronization": {"dynamicRegistration": false}},
        });
        if setup.inline {
            caps["textDocument"]["inlineCompletion"] = json!({"dynamicRegistration": false});
        }
        // Evaluating a document when it is opened adds an engine job whenever a test is slow
        // to send its first request; tests that count jobs would depend on timing. Tests of it
        // turn it on.
        let mut options = setup.options;
        if let Some(o) = options.as_object_mut() {
            o.entry("prefillOnOpen").or_insert(json!(false));
        }
        let init = client
            .request(
                "initialize",
                json!({"processId": null, "capabilities": caps, "initializationOptions": options,
                    "rootUri": setup.root.as_ref().map(|r| file_uri(r))}),
            )
            .await;
        client.notify("initialized", json!({})).await;
        (client, init)
    }

    pub(crate) async fn send(&mut self, message: Value) {
        write_frame(&self.writer, &message).await;
    }

    pub(crate) async fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await;
    }

    /// Sends a request and returns a receiver for its whole response message.
    pub(crate) async fn request_later(
        &mut self,
        method: &str,
        params: Value,
    ) -> (i64, oneshot::Receiver<Value>) {
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("lock").insert(id, tx);
        let mut msg = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            msg["params"] = params;
        }
        self.send(msg).await;
        (id, rx)
    }

    /// Sends a request and waits for its result; panics on an error response.
    pub(crate) async fn request(&mut self, method: &str, params: Value) -> Value {
        let (_, rx) = self.request_later(method, params).await;
        let response = wait(rx).await;
        assert!(
            response.get("error").is_none(),
            "{method} failed: {response}"
        );
        response["result"].clone()
    }

    /// Waits for the next notification with this method, skipping others.
    pub(crate) async fn notification(&mut self, method: &str) -> Value {
        let fut = async {
            loop {
                let msg = self.notifications.recv().await.expect("server closed");
                if msg["method"] == method {
                    return msg["params"].clone();
                }
            }
        };
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .expect("timed out waiting for a notification")
    }

    /// Waits until the model is loaded (the end of its `$/progress`).
    pub(crate) async fn wait_model_ready(&mut self) {
        loop {
            let p = self.notification("$/progress").await;
            if p["value"]["kind"] == "end" {
                break;
            }
        }
        let status = self.request("amd/status", Value::Null).await;
        assert_eq!(status["state"], "ready", "{status}");
    }

    pub(crate) async fn open(&mut self, uri: &str, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}}),
        )
        .await;
    }

    pub(crate) async fn change(
        &mut self,
        uri: &str,
        version: i32,
        range: [[u32; 2]; 2],
        text: &str,
    ) {
        self.notify(
            "textDocument/didChange",
            json!({
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"range": {
                    "start": {"line": range[0][0], "character": range[0][1]},
                    "end": {"line": range[1][0], "character": range[1][1]},
                }, "text": text}],
            }),
        )
        .await;
    }

    pub(crate) fn inline_params(uri: &str, line: u32, character: u32, invoked: bool) -> Value {
        json!({
            "textDocument": {"uri": uri},
            "position": {"line": line, "character": character},
            "context": {"triggerKind": if invoked { 1 } else { 2 }},
        })
    }

    pub(crate) async fn inline(&mut self, uri: &str, line: u32, character: u32) -> Value {
        self.request(
            "textDocument/inlineCompletion",
            TestClient::inline_params(uri, line, character, false),
        )
        .await
    }

    pub(crate) async fn status(&mut self) -> Value {
        self.request("amd/status", Value::Null).await
    }

    /// The status once the server counter `name` reached `value` (background work), or after
    /// 10 s, whichever is first; callers assert on it.
    pub(crate) async fn status_once(&mut self, name: &str, value: u64) -> Value {
        let mut status = self.status().await;
        for _ in 0..400 {
            if status["counters"][name] == value {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            status = self.status().await;
        }
        status
    }

    /// `shutdown` then `exit`; the server task must end.
    pub(crate) async fn shutdown(mut self) {
        self.request("shutdown", Value::Null).await;
        self.notify("exit", Value::Null).await;
        tokio::time::timeout(TIMEOUT, self.server)
            .await
            .expect("server did not stop after exit")
            .expect("server task panicked");
        let leftover = self.pending.lock().expect("lock").len();
        assert_eq!(leftover, 0, "requests left unanswered");
    }
}

async fn write_frame(writer: &Writer, message: &Value) {
    let body = serde_json::to_vec(message).expect("json");
    let mut w = writer.lock().await;
    let frame = format!("Content-Length: {}\r\n\r\n", body.len());
    w.write_all(frame.as_bytes()).await.expect("write header");
    w.write_all(&body).await.expect("write body");
    w.flush().await.expect("flush");
}

pub(crate) async fn wait<T>(rx: oneshot::Receiver<T>) -> T {
    tokio::time::timeout(TIMEOUT, rx)
        .await
        .expect("timed out waiting for a response")
        .expect("response channel closed")
}

async fn read_loop(
    read: ReadHalf<DuplexStream>,
    pending: Pending,
    notifications: mpsc::UnboundedSender<Value>,
    writer: Writer,
) {
    let mut reader = BufReader::new(read);
    loop {
        let mut n_body = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                n_body = v.parse::<usize>().ok();
            }
        }
        let mut body = vec![0u8; n_body.expect("Content-Length header")];
        reader.read_exact(&mut body).await.expect("body");
        let msg: Value = serde_json::from_slice(&body).expect("server sent invalid JSON");
        match (msg.get("id"), msg.get("method")) {
            (Some(id), None) => {
                let id = id.as_i64().expect("numeric id");
                let tx = pending.lock().expect("lock").remove(&id);
                let tx = tx.unwrap_or_else(|| {
                    panic!("response to unknown or answered request {id}: {msg}")
                });
                let _ = tx.send(msg);
            }
            // A request from the server (progress creation): answer it, and record it.
            (Some(id), Some(_)) => {
                write_frame(
                    &writer,
                    &json!({"jsonrpc": "2.0", "id": id, "result": null}),
                )
                .await;
                let _ = notifications.send(msg);
            }
            _ => {
                let _ = notifications.send(msg);
            }
        }
    }
}
