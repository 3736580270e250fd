//! The one editor's side of `amd-lsp --stdio`, for everything that drives the real binary: the
//! `bench` commands (`soak`, `replay`, `quality`), the criterion-free benches in `server/benches`
//! and the binary-level tests in `server/tests`.
//!
//! It spawns the server, writes framed messages, and reads the server's output on a thread that
//! stamps each answer as it arrives (by request id, counting duplicates), answers the server's
//! own requests with `null`, and — when asked for — keeps every message in order for callers
//! that read the stream itself. The output is read strictly: anything on stdout that is not a
//! `Content-Length` frame holding JSON is recorded as a violation, which [`Client::check_alive`]
//! and [`Client::next_message`] report.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::lsp::transport::{Decoded, Decoder};

/// An answer: when it arrived, how many answers that id got, and the first one.
#[derive(Clone, Debug)]
pub struct Answer {
    pub arrived: Instant,
    pub count: usize,
    pub msg: Value,
}

impl Answer {
    pub fn is_error(&self) -> bool {
        self.msg.get("error").is_some()
    }

    /// Whether an inline-completion answer holds at least one item.
    pub fn has_items(&self) -> bool {
        self.msg["result"]["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
    }
}

/// What the reader thread shares with the client.
#[derive(Default)]
struct Seen {
    answers: HashMap<i64, Answer>,
    /// Output that was not a JSON-RPC frame.
    violations: Vec<String>,
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether the client keeps every message in order ([`Client::next_message`]) besides the
/// answers by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Messages {
    /// Answers by id only (long benchmark runs: nothing grows but the answer map).
    AnswersOnly,
    /// Every message, in the order it arrived.
    Keep,
}

pub struct Client {
    child: Child,
    stdin: Shared<Option<ChildStdin>>,
    seen: Shared<Seen>,
    messages: Option<Receiver<Value>>,
    reader: Option<JoinHandle<()>>,
    next_id: i64,
}

impl Client {
    /// Starts `amd-lsp --stdio --model MODEL` (this binary) with `env` set, its log discarded
    /// (or written to `AMD_LSP_BENCH_LOG` when a benchmark is being looked into).
    pub fn spawn(model: &Path, env: &[(&str, &str)]) -> Result<Client> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["--stdio", "--log-level", "warn", "--model"])
            .arg(model)
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        if let Some(path) = std::env::var_os("AMD_LSP_BENCH_LOG") {
            command.arg("--log-file").arg(path);
        }
        Client::start(&mut command, Messages::AnswersOnly)
    }

    /// Starts `command` (an `amd-lsp --stdio` command line; stdin and stdout are piped here,
    /// stderr is as the caller set it).
    pub fn start(command: &mut Command, messages: Messages) -> Result<Client> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start amd-lsp --stdio")?;
        let stdin = Arc::new(Mutex::new(Some(child.stdin.take().context("stdin")?)));
        let stdout = child.stdout.take().context("stdout")?;
        let seen: Shared<Seen> = Arc::default();
        let (tx, rx) = match messages {
            Messages::Keep => {
                let (tx, rx) = mpsc::channel();
                (Some(tx), Some(rx))
            }
            Messages::AnswersOnly => (None, None),
        };
        let reader = {
            let (stdin, seen) = (Arc::clone(&stdin), Arc::clone(&seen));
            std::thread::spawn(move || read_loop(stdout, &stdin, &seen, tx.as_ref()))
        };
        Ok(Client {
            child,
            stdin,
            seen,
            messages: rx,
            reader: Some(reader),
            next_id: 0,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server process (for `wait`, `kill`, its stderr).
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Writes `bytes` as they are (for malformed input; the framing is the caller's).
    pub fn send_raw(&self, bytes: &[u8]) -> Result<()> {
        let mut stdin = lock(&self.stdin);
        let w = stdin.as_mut().context("stdin is closed")?;
        w.write_all(bytes)?;
        w.flush()?;
        Ok(())
    }

    pub fn send(&self, msg: &Value) -> Result<()> {
        self.send_raw(&frame(msg))
    }

    pub fn notify(&self, method: &str, params: Value) -> Result<()> {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
    }

    /// A fresh request id, for requests the caller writes itself.
    pub fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends a request without waiting; returns its id.
    pub fn request(&mut self, method: &str, params: Value) -> Result<i64> {
        let id = self.next_id();
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        Ok(id)
    }

    /// Closes the server's input (end of stream, as when an editor dies).
    pub fn close_stdin(&self) {
        drop(lock(&self.stdin).take());
    }

    /// The answers so far, by request id.
    pub fn answers(&self) -> MappedAnswers<'_> {
        MappedAnswers(lock(&self.seen))
    }

    /// The next message from the server, in order (with [`Messages::Keep`]); `None` once the
    /// server's output has ended and every message was read. Panics on output that was not a
    /// JSON-RPC frame: stdout belongs to the protocol.
    pub fn next_message(&mut self) -> Option<Value> {
        let rx = self.messages.as_ref().expect("started with Messages::Keep");
        let msg = rx.recv().ok();
        let violations = &lock(&self.seen).violations;
        assert!(
            violations.is_empty(),
            "not JSON-RPC on stdout: {violations:?}"
        );
        msg
    }

    /// Waits for the answer to `id`; fails if the server exits or `secs` pass.
    pub fn wait(&mut self, id: i64, secs: u64) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(a) = self.answers().get(&id) {
                return Ok(a.msg.clone());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("request {id} was not answered in {secs} s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends a request and waits for its answer.
    pub fn call(&mut self, method: &str, params: Value, secs: u64) -> Result<Value> {
        let id = self.request(method, params)?;
        self.wait(id, secs)
    }

    /// Waits until every id in `ids` has an answer, or `secs` pass.
    pub fn wait_all(&self, ids: impl Iterator<Item = i64> + Clone, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            let answers = self.answers();
            if ids.clone().all(|id| answers.contains_key(&id)) {
                return;
            }
            drop(answers);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Fails if the server has exited or wrote something that is not JSON-RPC.
    pub fn check_alive(&mut self) -> Result<()> {
        self.check_violations()?;
        if let Some(status) = self.child.try_wait()? {
            bail!("the server exited: {status}");
        }
        Ok(())
    }

    /// `initialize` with inline-completion support and `options`, then `initialized`; then,
    /// with `wait_ready`, `amd/status` until the model is ready.
    pub fn initialize(&mut self, options: Value, wait_ready: bool) -> Result<()> {
        self.initialize_in(options, &[], wait_ready)
    }

    /// [`Client::initialize`] with these workspace folders.
    pub fn initialize_in(
        &mut self,
        options: Value,
        roots: &[std::path::PathBuf],
        wait_ready: bool,
    ) -> Result<()> {
        let folders: Vec<Value> = roots
            .iter()
            .filter_map(|r| url::Url::from_directory_path(r).ok())
            .map(|u| json!({"uri": u.as_str(), "name": u.path_segments().and_then(|mut s| s.nth_back(1)).unwrap_or("")}))
            .collect();
        self.call(
            "initialize",
            json!({"processId": std::process::id(),
                "capabilities": {"textDocument": {"inlineCompletion": {}}},
                "workspaceFolders": if folders.is_empty() { Value::Null } else { Value::Array(folders) },
                "initializationOptions": options}),
            60,
        )?;
        self.notify("initialized", json!({}))?;
        if !wait_ready {
            return Ok(());
        }
        loop {
            let status = self.call("amd/status", Value::Null, 60)?;
            match status["result"]["state"].as_str() {
                Some("ready") => return Ok(()),
                Some("loading") => std::thread::sleep(Duration::from_millis(20)),
                other => bail!(
                    "the model did not load: {other:?} {}",
                    status["result"]["error"]
                ),
            }
        }
    }

    /// `shutdown`, `exit`, and the exit status once the output has ended.
    pub fn shutdown(mut self) -> Result<ExitStatus> {
        self.call("shutdown", Value::Null, 30)?;
        self.notify("exit", Value::Null)?;
        self.wait_exit()
    }

    /// Waits for the server's output to end and the process to exit.
    pub fn wait_exit(&mut self) -> Result<ExitStatus> {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let status = self.child.wait()?;
        self.check_violations()?;
        Ok(status)
    }

    fn check_violations(&self) -> Result<()> {
        let violations = &lock(&self.seen).violations;
        if !violations.is_empty() {
            bail!("the server wrote something that is not JSON-RPC: {violations:?}");
        }
        Ok(())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // A server still running when its user is done (a failed assertion, an error) is killed.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The answers by id, while the lock is held.
pub struct MappedAnswers<'a>(MutexGuard<'a, Seen>);

impl std::ops::Deref for MappedAnswers<'_> {
    type Target = HashMap<i64, Answer>;
    fn deref(&self) -> &Self::Target {
        &self.0.answers
    }
}

/// One framed JSON-RPC message, as an editor writes it.
pub fn frame(msg: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend(body);
    out
}

/// Reads the server's messages: stamps answers as they arrive, answers its requests with null,
/// passes every message on to `log` when there is one, and records anything that is not a
/// JSON-RPC frame.
fn read_loop(
    mut stdout: impl Read,
    stdin: &Mutex<Option<ChildStdin>>,
    seen: &Mutex<Seen>,
    log: Option<&Sender<Value>>,
) {
    let mut decoder = Decoder::trusted();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        while let Some(item) = decoder.next_item() {
            let arrived = Instant::now();
            let msg = match item {
                Decoded::Message(body) => serde_json::from_slice::<Value>(&body)
                    .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&body))),
                Decoded::Invalid(rejected) => Err(rejected.why),
            };
            let msg = match msg {
                Ok(msg) => msg,
                Err(why) => {
                    lock(seen).violations.push(why);
                    continue;
                }
            };
            match (msg.get("id"), msg.get("method")) {
                (Some(id), Some(_)) => {
                    if let Some(w) = lock(stdin).as_mut() {
                        let reply = frame(&json!({"jsonrpc": "2.0", "id": id, "result": null}));
                        let _ = w.write_all(&reply).and_then(|()| w.flush());
                    }
                }
                (Some(id), None) => {
                    if let Some(id) = id.as_i64() {
                        lock(seen)
                            .answers
                            .entry(id)
                            .and_modify(|a| a.count += 1)
                            .or_insert(Answer {
                                arrived,
                                count: 1,
                                msg: msg.clone(),
                            });
                    }
                }
                _ => {}
            }
            if let Some(log) = log {
                let _ = log.send(msg);
            }
        }
        match stdout.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => decoder.push(&buf[..n]),
        }
    }
}

/// Resident memory of `pid` in MiB (Linux; 0 elsewhere).
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
