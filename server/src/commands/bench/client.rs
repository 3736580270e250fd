//! An editor's side of `amd-lsp --stdio` for the benchmarks that drive the real binary (`soak`,
//! `replay`): spawns this binary, writes framed messages, and reads the server's on a thread
//! that stamps each answer as it arrives and answers the server's own requests with `null`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::lsp::transport::{Decoded, Decoder};

/// An answer: when it arrived, how many answers that id got, and the first one.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub(crate) arrived: Instant,
    pub(crate) count: usize,
    pub(crate) msg: Value,
}

impl Answer {
    pub(crate) fn is_error(&self) -> bool {
        self.msg.get("error").is_some()
    }

    /// Whether an inline-completion answer holds at least one item.
    pub(crate) fn has_items(&self) -> bool {
        self.msg["result"]["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
    }
}

type Answers = Arc<Mutex<HashMap<i64, Answer>>>;

pub(crate) struct Client {
    child: Child,
    stdin: Arc<Mutex<ChildStdin>>,
    answers: Answers,
    reader: Option<JoinHandle<()>>,
    next_id: i64,
}

impl Client {
    /// Starts `amd-lsp --stdio --model MODEL` (this binary) with `env` set.
    pub(crate) fn spawn(model: &Path, env: &[(&str, &str)]) -> Result<Client> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["--stdio", "--log-level", "warn", "--model"])
            .arg(model)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        // The server's log, when a benchmark is being looked into (with AMD_LSP_LOG=debug).
        if let Some(path) = std::env::var_os("AMD_LSP_BENCH_LOG") {
            command.arg("--log-file").arg(path);
        }
        let mut child = command.spawn().context("cannot start amd-lsp --stdio")?;
        let stdin = Arc::new(Mutex::new(child.stdin.take().context("stdin")?));
        let stdout = child.stdout.take().context("stdout")?;
        let answers: Answers = Arc::default();
        let reader = {
            let (stdin, answers) = (Arc::clone(&stdin), Arc::clone(&answers));
            std::thread::spawn(move || read_loop(stdout, &stdin, &answers))
        };
        Ok(Client {
            child,
            stdin,
            answers,
            reader: Some(reader),
            next_id: 0,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn send(&self, msg: &Value) -> Result<()> {
        write_frame(&self.stdin, msg)
    }

    pub(crate) fn notify(&self, method: &str, params: Value) -> Result<()> {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
    }

    /// Sends a request without waiting; returns its id.
    pub(crate) fn request(&mut self, method: &str, params: Value) -> Result<i64> {
        self.next_id += 1;
        self.send(
            &json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}),
        )?;
        Ok(self.next_id)
    }

    /// The answers so far, by request id.
    pub(crate) fn answers(&self) -> MutexGuard<'_, HashMap<i64, Answer>> {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the answer to `id`; fails if the server exits or `secs` pass.
    pub(crate) fn wait(&mut self, id: i64, secs: u64) -> Result<Value> {
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
    pub(crate) fn call(&mut self, method: &str, params: Value, secs: u64) -> Result<Value> {
        let id = self.request(method, params)?;
        self.wait(id, secs)
    }

    /// Waits until every id in `ids` has an answer, or `secs` pass.
    pub(crate) fn wait_all(&self, ids: impl Iterator<Item = i64> + Clone, secs: u64) {
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

    pub(crate) fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the server exited: {status}");
        }
        Ok(())
    }

    /// `initialize` with inline-completion support and `options`, then `initialized`; then,
    /// with `wait_ready`, `amd/status` until the model is ready.
    pub(crate) fn initialize(&mut self, options: Value, wait_ready: bool) -> Result<()> {
        self.initialize_in(options, &[], wait_ready)
    }

    /// [`Client::initialize`] with these workspace folders.
    pub(crate) fn initialize_in(
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

    /// `shutdown`, `exit`, and the exit status.
    pub(crate) fn shutdown(mut self) -> Result<std::process::ExitStatus> {
        self.call("shutdown", Value::Null, 30)?;
        self.notify("exit", Value::Null)?;
        let status = self.child.wait()?;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ok(status)
    }
}

fn write_frame(stdin: &Mutex<ChildStdin>, msg: &Value) -> Result<()> {
    let body = serde_json::to_vec(msg)?;
    let mut w = stdin.lock().unwrap_or_else(PoisonError::into_inner);
    write!(w, "Content-Length: {}\r\n\r\n", body.len())?;
    w.write_all(&body)?;
    w.flush()?;
    Ok(())
}

/// Reads the server's messages: stamps answers as they arrive, answers its requests with null.
fn read_loop(mut stdout: impl Read, stdin: &Mutex<ChildStdin>, answers: &Answers) {
    let mut decoder = Decoder::trusted();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        while let Some(item) = decoder.next_item() {
            let arrived = Instant::now();
            let Decoded::Message(body) = item else {
                continue;
            };
            let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
                continue;
            };
            match (msg.get("id"), msg.get("method")) {
                (Some(id), Some(_)) => {
                    let _ =
                        write_frame(stdin, &json!({"jsonrpc": "2.0", "id": id, "result": null}));
                }
                (Some(id), None) => {
                    let Some(id) = id.as_i64() else { continue };
                    answers
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(id)
                        .and_modify(|a| a.count += 1)
                        .or_insert(Answer {
                            arrived,
                            count: 1,
                            msg,
                        });
                }
                _ => {}
            }
        }
        match stdout.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => decoder.push(&buf[..n]),
        }
    }
}

/// Resident memory of `pid` in MiB (Linux; 0 elsewhere).
pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
