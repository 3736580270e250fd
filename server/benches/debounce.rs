//! Choosing the debounce: typing at human speed into the real server over stdio, for several
//! `debounceMs` values, measuring what a user sees and what the machine burns.
//!
//! `cargo bench -p amd-lsp --bench debounce -- [--model M.gguf] [--keys N] [--debounce 0,20,40,80,150]`
//!
//! Keystrokes come in bursts (90–200 ms apart, 6–14 keys) separated by pauses (0.8–1.5 s),
//! drawn from a fixed seed; every keystroke sends didChange and an inline completion request
//! without waiting. Reported: latency from the last keystroke of a burst to its suggestion
//! (what the user waits for when they stop typing), and the engine work started and thrown away.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{cursor, model_arg, source, start_server, status};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| common::opt(&args, name);
    let n_keys: usize = opt("--keys").map_or(150, |s| s.parse().expect("--keys N"));
    let debounces: Vec<u64> = opt("--debounce")
        .unwrap_or_else(|| "0,20,40,80,150".into())
        .split(',')
        .map(|s| s.parse().expect("debounce ms"))
        .collect();
    let model = model_arg(&args);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "model: {}, {n_keys} keystrokes per run",
        model.display()
    );
    let _ = writeln!(
        out,
        "| debounceMs | pause latency p50 / p95 ms | suggestions | engine jobs | jobs cancelled | tokens generated |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for debounce in debounces {
        let r = run(&model, debounce, n_keys);
        let _ = writeln!(
            out,
            "| {debounce} | {:.0} / {:.0} | {} | {} | {} | {} |",
            r.pause_p50, r.pause_p95, r.n_suggestions, r.n_jobs, r.n_cancelled, r.n_generated
        );
    }
}

struct RunResult {
    pause_p50: f64,
    pause_p95: f64,
    n_suggestions: usize,
    n_jobs: u64,
    n_cancelled: u64,
    n_generated: u64,
}

/// A small deterministic generator (the schedule must be the same for every run).
struct Lcg(u64);

impl Lcg {
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

fn run(model: &std::path::Path, debounce: u64, n_keys: usize) -> RunResult {
    let mut c = start_server(model, json!({"debounceMs": debounce}));
    let source = source();
    let uri = "file:///bench/heapq.py";
    let mut doc: String = source[..3000].to_owned();
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": doc}}),
    )
    .expect("write");
    let mut typed = source[3000..].chars();
    let mut rng = Lcg(7);
    let mut sent: HashMap<i64, (Instant, bool)> = HashMap::new();
    let mut burst_left = rng.range(6, 15);
    for key in 0..n_keys {
        let ch = typed.next().unwrap_or('\n');
        let (line, col) = cursor(&doc);
        doc.push(ch);
        c.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": key + 2}, "contentChanges": [{
                "range": {"start": {"line": line, "character": col}, "end": {"line": line, "character": col}},
                "text": ch.to_string(),
            }]}),
        )
        .expect("write");
        let (line, col) = cursor(&doc);
        let id = c
            .request(
                "textDocument/inlineCompletion",
                json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": col},
                       "context": {"triggerKind": 2}}),
            )
            .expect("write");
        burst_left -= 1;
        let pause = burst_left == 0;
        sent.insert(id, (Instant::now(), pause));
        let wait_ms = if pause {
            burst_left = rng.range(6, 15);
            rng.range(800, 1500)
        } else {
            rng.range(90, 200)
        };
        std::thread::sleep(Duration::from_millis(wait_ms));
    }
    c.wait_all(sent.keys().copied(), 60);
    let mut pause_latencies = Vec::new();
    let mut n_suggestions = 0;
    for (id, (sent_at, pause)) in &sent {
        let answers = c.answers();
        let answer = answers.get(id).expect("every request is answered");
        if !answer.msg["result"].is_null() {
            n_suggestions += 1;
            if *pause {
                pause_latencies.push(answer.arrived.duration_since(*sent_at).as_secs_f64() * 1e3);
            }
        }
    }
    let status = status(&mut c);
    c.shutdown().expect("shutdown");
    pause_latencies.sort_by(f64::total_cmp);
    let q = |p: f64| {
        if pause_latencies.is_empty() {
            f64::NAN
        } else {
            pause_latencies[((p * pause_latencies.len() as f64).ceil() as usize)
                .clamp(1, pause_latencies.len())
                - 1]
        }
    };
    let engine = &status["engine"];
    RunResult {
        pause_p50: q(0.5),
        pause_p95: q(0.95),
        n_suggestions,
        n_jobs: engine["jobs"].as_u64().unwrap_or(0),
        n_cancelled: engine["cancelled"].as_u64().unwrap_or(0),
        n_generated: engine["tokensGenerated"].as_u64().unwrap_or(0),
    }
}
