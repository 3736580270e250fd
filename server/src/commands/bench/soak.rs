//! `amd-lsp bench soak`: an editor typing for a long time. Spawns `amd-lsp --stdio` (this
//! binary), types a source file one character per keystroke (an incremental `didChange` and an
//! `inlineCompletion` request each, as Neovim and VS Code do), starts over in a new document
//! at the end of the file, and answers the server's own requests. Samples the server's
//! resident memory as it goes. Fails if a request is not answered exactly once, if the server
//! dies, or if memory grows more than `--max-rss-growth` percent after the warm-up (by default
//! the first quarter: the prompt window reaches its full size in it).

use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::SoakBenchArgs;
use crate::lsp::transport::{Decoded, Decoder};

#[derive(Debug, Default, Serialize)]
struct Report {
    keystrokes: usize,
    requests: usize,
    answered_once: usize,
    unanswered: usize,
    answered_twice: usize,
    errors: usize,
    suggestions: usize,
    documents: usize,
    seconds: f64,
    rss_start_mib: f64,
    rss_warm_mib: f64,
    rss_end_mib: f64,
    /// The largest of the samples and the end.
    rss_peak_mib: f64,
    /// End against warm-up, in percent.
    rss_growth_pct: f64,
    /// Resident memory every 1000 keystrokes.
    rss_samples_mib: Vec<f64>,
    /// The server's own counters (`amd/status`) at the end.
    server_counters: Value,
}

/// The id of the final `amd/status` request.
const STATUS_ID: i64 = i64::MAX;

type Answers = Arc<Mutex<HashMap<i64, (usize, bool, bool)>>>;

pub(crate) fn run(args: &SoakBenchArgs) -> Result<()> {
    let source = std::fs::read_to_string(&args.source)
        .with_context(|| format!("cannot read {}", args.source.display()))?;
    let chars: Vec<char> = source.chars().collect();
    anyhow::ensure!(!chars.is_empty(), "{} is empty", args.source.display());
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--stdio", "--model"])
        .arg(&args.model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start amd-lsp --stdio")?;
    let pid = child.id();
    let stdin = Arc::new(Mutex::new(child.stdin.take().context("stdin")?));
    let stdout = child.stdout.take().context("stdout")?;
    let answers: Answers = Arc::default();
    let status: Arc<Mutex<Value>> = Arc::default();
    let reader = {
        let (stdin, answers, status) = (
            Arc::clone(&stdin),
            Arc::clone(&answers),
            Arc::clone(&status),
        );
        std::thread::spawn(move || read_loop(stdout, &stdin, &answers, &status))
    };
    let send = |msg: Value| -> Result<()> {
        let body = serde_json::to_vec(&msg)?;
        let mut w = stdin.lock().unwrap_or_else(PoisonError::into_inner);
        write!(w, "Content-Length: {}\r\n\r\n", body.len())?;
        w.write_all(&body)?;
        w.flush()?;
        Ok(())
    };

    send(
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "processId": std::process::id(),
            "capabilities": {"textDocument": {"inlineCompletion": {}}},
            "initializationOptions": {"debounceMs": args.debounce_ms, "maxTokens": args.max_tokens},
        }}),
    )?;
    wait_answered(&answers, 0, &mut child)?;
    send(json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}))?;

    let mut report = Report {
        rss_start_mib: rss_mib(pid),
        ..Report::default()
    };
    let warm_up = args.warm_up.unwrap_or(args.keystrokes / 4).max(1);
    let started = Instant::now();
    let (mut doc, mut line, mut col, mut at) = (0usize, 0u32, 0u32, 0usize);
    let uri = |doc: usize| format!("file:///soak/doc{doc}.py");
    for k in 0..args.keystrokes {
        let next_id = k as i64 + 1;
        if at == 0 {
            if doc > 0 {
                send(json!({"jsonrpc": "2.0", "method": "textDocument/didClose",
                    "params": {"textDocument": {"uri": uri(doc)}}}))?;
            }
            doc += 1;
            send(
                json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
                "textDocument": {"uri": uri(doc), "languageId": "python", "version": 0, "text": ""}}}),
            )?;
            (line, col) = (0, 0);
        }
        let c = chars[at];
        let pos = json!({"line": line, "character": col});
        send(
            json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
            "textDocument": {"uri": uri(doc), "version": k + 1},
            "contentChanges": [{"range": {"start": pos, "end": pos}, "text": c.to_string()}]}}),
        )?;
        if c == '\n' {
            (line, col) = (line + 1, 0);
        } else {
            col += c.len_utf16() as u32;
        }
        answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(next_id, (0, false, false));
        send(
            json!({"jsonrpc": "2.0", "id": next_id, "method": "textDocument/inlineCompletion", "params": {
            "textDocument": {"uri": uri(doc)}, "position": {"line": line, "character": col},
            "context": {"triggerKind": 2}}}),
        )?;
        at = (at + 1) % chars.len();
        if k + 1 == warm_up {
            report.rss_warm_mib = rss_mib(pid);
        }
        if k % 1000 == 0 {
            report.rss_samples_mib.push(rss_mib(pid));
            if let Some(status) = child.try_wait()? {
                bail!("the server died after {k} keystrokes: {status}");
            }
        }
        std::thread::sleep(Duration::from_micros(args.interval_us));
    }
    // Every request answered, then a clean exit.
    let deadline = Instant::now() + Duration::from_secs(120);
    while pending(&answers) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    report.seconds = started.elapsed().as_secs_f64();
    send(json!({"jsonrpc": "2.0", "id": STATUS_ID, "method": "amd/status"}))?;
    wait_answered(&answers, STATUS_ID, &mut child)?;
    report.server_counters =
        status.lock().unwrap_or_else(PoisonError::into_inner)["counters"].clone();
    report.rss_end_mib = rss_mib(pid);
    report.rss_peak_mib = report
        .rss_samples_mib
        .iter()
        .fold(report.rss_end_mib, |a, &b| a.max(b));
    send(json!({"jsonrpc": "2.0", "id": -1, "method": "shutdown"}))?;
    wait_answered(&answers, -1, &mut child)?;
    send(json!({"jsonrpc": "2.0", "method": "exit"}))?;
    let status = child.wait()?;
    let _ = reader.join();

    let answers = answers.lock().unwrap_or_else(PoisonError::into_inner);
    report.keystrokes = args.keystrokes;
    report.documents = doc;
    let typed = |id: &i64| *id > 0 && *id != STATUS_ID;
    report.requests = answers.keys().filter(|id| typed(id)).count();
    for &(n, error, suggestion) in answers.iter().filter(|(id, _)| typed(id)).map(|(_, v)| v) {
        match n {
            0 => report.unanswered += 1,
            1 => report.answered_once += 1,
            _ => report.answered_twice += 1,
        }
        report.errors += usize::from(error);
        report.suggestions += usize::from(suggestion);
    }
    report.rss_growth_pct = if report.rss_warm_mib > 0.0 {
        (report.rss_end_mib / report.rss_warm_mib - 1.0) * 100.0
    } else {
        0.0
    };
    print_report(&report)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if !status.success() {
        bail!("the server exited with {status}");
    }
    if report.unanswered + report.answered_twice + report.errors > 0 {
        bail!("not every request was answered exactly once without error");
    }
    if let Some(max) = args.max_rss_growth {
        if report.rss_growth_pct > max {
            bail!(
                "resident memory grew {:.1}% after warm-up (limit {max}%)",
                report.rss_growth_pct
            );
        }
    }
    Ok(())
}

fn print_report(r: &Report) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "keystrokes {}  documents {}  seconds {:.1}",
        r.keystrokes, r.documents, r.seconds
    )?;
    writeln!(
        out,
        "requests {}  answered once {}  unanswered {}  answered twice {}  errors {}  with a suggestion {}",
        r.requests, r.answered_once, r.unanswered, r.answered_twice, r.errors, r.suggestions
    )?;
    writeln!(
        out,
        "RSS MiB: start {:.1}  after warm-up {:.1}  end {:.1}  peak {:.1}  growth {:+.2}%",
        r.rss_start_mib, r.rss_warm_mib, r.rss_end_mib, r.rss_peak_mib, r.rss_growth_pct
    )?;
    let samples: Vec<String> = r
        .rss_samples_mib
        .iter()
        .map(|m| format!("{m:.1}"))
        .collect();
    writeln!(out, "RSS MiB every 1000 keystrokes: {}", samples.join(" "))?;
    writeln!(out, "server counters: {}", r.server_counters)
}

fn pending(answers: &Answers) -> usize {
    let a = answers.lock().unwrap_or_else(PoisonError::into_inner);
    a.values().filter(|(n, ..)| *n == 0).count()
}

fn wait_answered(answers: &Answers, id: i64, child: &mut Child) -> Result<()> {
    answers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(id)
        .or_insert((0, false, false));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if answers.lock().unwrap_or_else(PoisonError::into_inner)[&id].0 > 0 {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the server exited: {status}");
        }
        if Instant::now() > deadline {
            bail!("request {id} was not answered in 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads the server's messages: counts answers, replies to its requests (with null results,
/// as a client that ignores them would).
fn read_loop(
    mut stdout: impl std::io::Read,
    stdin: &Mutex<ChildStdin>,
    answers: &Answers,
    status: &Mutex<Value>,
) {
    let mut decoder = Decoder::trusted();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        while let Some(item) = decoder.next_item() {
            let Decoded::Message(body) = item else {
                continue;
            };
            let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
                continue;
            };
            match (msg.get("id"), msg.get("method")) {
                (Some(id), Some(_)) => {
                    let reply =
                        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": null}))
                            .unwrap_or_default();
                    let mut w = stdin.lock().unwrap_or_else(PoisonError::into_inner);
                    let _ = write!(w, "Content-Length: {}\r\n\r\n", reply.len());
                    let _ = w.write_all(&reply);
                    let _ = w.flush();
                }
                (Some(id), None) => {
                    let Some(id) = id.as_i64() else { continue };
                    if id == STATUS_ID {
                        *status.lock().unwrap_or_else(PoisonError::into_inner) =
                            msg["result"].clone();
                    }
                    let mut a = answers.lock().unwrap_or_else(PoisonError::into_inner);
                    let entry = a.entry(id).or_insert((0, false, false));
                    entry.0 += 1;
                    entry.1 |= msg.get("error").is_some();
                    entry.2 |= msg["result"]["items"]
                        .as_array()
                        .is_some_and(|items| !items.is_empty());
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
