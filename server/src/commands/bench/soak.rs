//! `amd-lsp bench soak`: an editor typing for a long time. Spawns `amd-lsp --stdio` (this
//! binary), types a source file one character per keystroke (an incremental `didChange` and an
//! `inlineCompletion` request each, as Neovim and VS Code do), starts over in a new document
//! at the end of the file, and answers the server's own requests. Samples the server's
//! resident memory as it goes. Fails if a request is not answered exactly once, if the server
//! dies, or if memory grows more than `--max-rss-growth` percent after the warm-up (by default
//! the first quarter: the prompt window reaches its full size in it).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::SoakBenchArgs;
use crate::client::{rss_mib, Client};

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

pub(crate) fn run(args: &SoakBenchArgs) -> Result<()> {
    let source = std::fs::read_to_string(&args.source)
        .with_context(|| format!("cannot read {}", args.source.display()))?;
    let chars: Vec<char> = source.chars().collect();
    anyhow::ensure!(!chars.is_empty(), "{} is empty", args.source.display());
    let mut client = Client::spawn(&args.model, &[])?;
    let pid = client.pid();
    // Typing starts at once, while the model loads, as in an editor.
    client.initialize(
        json!({"debounceMs": args.debounce_ms, "maxTokens": args.max_tokens}),
        false,
    )?;

    let mut report = Report {
        rss_start_mib: rss_mib(pid),
        ..Report::default()
    };
    let warm_up = args.warm_up.unwrap_or(args.keystrokes / 4).max(1);
    let started = Instant::now();
    let (mut doc, mut line, mut col, mut at) = (0usize, 0u32, 0u32, 0usize);
    let uri = |doc: usize| format!("file:///soak/doc{doc}.py");
    let mut typed = Vec::with_capacity(args.keystrokes);
    for k in 0..args.keystrokes {
        if at == 0 {
            if doc > 0 {
                client.notify(
                    "textDocument/didClose",
                    json!({"textDocument": {"uri": uri(doc)}}),
                )?;
            }
            doc += 1;
            client.notify(
                "textDocument/didOpen",
                json!({"textDocument": {"uri": uri(doc), "languageId": "python", "version": 0, "text": ""}}),
            )?;
            (line, col) = (0, 0);
        }
        let c = chars[at];
        let pos = json!({"line": line, "character": col});
        client.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri(doc), "version": k + 1},
                "contentChanges": [{"range": {"start": pos, "end": pos}, "text": c.to_string()}]}),
        )?;
        if c == '\n' {
            (line, col) = (line + 1, 0);
        } else {
            col += c.len_utf16() as u32;
        }
        typed.push(client.request(
            "textDocument/inlineCompletion",
            json!({"textDocument": {"uri": uri(doc)}, "position": {"line": line, "character": col},
                "context": {"triggerKind": 2}}),
        )?);
        at = (at + 1) % chars.len();
        if k + 1 == warm_up {
            report.rss_warm_mib = rss_mib(pid);
        }
        if k % 1000 == 0 {
            report.rss_samples_mib.push(rss_mib(pid));
            client
                .check_alive()
                .with_context(|| format!("after {k} keystrokes"))?;
        }
        std::thread::sleep(Duration::from_micros(args.interval_us));
    }
    // Every request answered, then a clean exit.
    client.wait_all(typed.iter().copied(), 120);
    report.seconds = started.elapsed().as_secs_f64();
    report.server_counters =
        client.call("amd/status", Value::Null, 120)?["result"]["counters"].clone();
    report.rss_end_mib = rss_mib(pid);
    report.rss_peak_mib = report
        .rss_samples_mib
        .iter()
        .fold(report.rss_end_mib, |a, &b| a.max(b));
    let answers = client.answers().clone();
    let status = client.shutdown()?;

    report.keystrokes = args.keystrokes;
    report.documents = doc;
    report.requests = typed.len();
    for id in &typed {
        match answers.get(id) {
            None => report.unanswered += 1,
            Some(a) => {
                if a.count == 1 {
                    report.answered_once += 1;
                } else {
                    report.answered_twice += 1;
                }
                report.errors += usize::from(a.is_error());
                report.suggestions += usize::from(a.has_items());
            }
        }
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
