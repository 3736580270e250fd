//! `amd-lsp bench replay [DIR…]`: replays human editing of real source files into the real
//! server over stdio and measures what a user feels: keystroke-to-suggestion latency, and what
//! it cost — tokens evaluated against tokens changed, CPU spent on superseded work, memory.
//! Each variant (this server, then its baselines: longest-common-prefix reuse only, and no
//! reuse) replays the same script against a fresh `amd-lsp --stdio` (this binary), one after
//! the other, `--rounds` times interleaved; figures are medians over the rounds.

mod plot;
pub(crate) mod script;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::{json, Value};

use self::script::{Action, KeyKind, Step, Style};
use crate::cli::ReplayBenchArgs;
use crate::lsp::config::ReuseMode;
use crate::lsp::transport::{Decoded, Decoder};

/// Source files larger than this are left out of the corpus (they dominate a short replay).
const MAX_FILE_BYTES: u64 = 120 << 10;
const MIN_FILE_BYTES: u64 = 2 << 10;

/// One variant's replay.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Run {
    pub variant: String,
    pub keystrokes: usize,
    pub requests: usize,
    /// Requests answered with a suggestion (the ones a user sees).
    pub suggestions: usize,
    /// Requests answered `null` (superseded by a newer keystroke, or nothing to suggest).
    pub empty: usize,
    pub unanswered: usize,
    pub errors: usize,
    /// Keystroke (request sent) to suggestion, milliseconds, for answered-with-a-suggestion requests.
    pub latency_ms: Quantiles,
    /// The same less the server's debounce, for suggestions that came from the model.
    pub latency_less_debounce_ms: Quantiles,
    /// (seconds since start, milliseconds) of each suggestion, for the plot.
    #[serde(skip)]
    pub points: Vec<plot::Point>,
    pub jobs: u64,
    pub tokens_evaluated: u64,
    pub tokens_changed: u64,
    pub tokens_evaluated_per_job: f64,
    pub evaluated_per_changed: f64,
    pub cpu_ms: f64,
    pub cpu_ms_superseded: f64,
    pub superseded_cpu_share: f64,
    pub type_through_hits: u64,
    pub type_through_rate: f64,
    pub type_through_ms: Quantiles,
    pub documents: usize,
    pub rss_peak_mib: f64,
    pub rss_end_mib: f64,
    /// How far the client fell behind its schedule at most (a busy machine), milliseconds.
    pub max_lag_ms: f64,
    pub seconds: f64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Quantiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub n: usize,
}

impl Quantiles {
    pub(crate) fn of(values: &[f64]) -> Quantiles {
        if values.is_empty() {
            return Quantiles::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        Quantiles {
            p50: q(0.5),
            p95: q(0.95),
            p99: q(0.99),
            n: v.len(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    model: &'a Path,
    corpus: Vec<String>,
    seed: u64,
    keystrokes: usize,
    rounds: usize,
    debounce_ms: u64,
    max_tokens: u32,
    threads: u32,
    speed: f64,
    /// Medians over the rounds, per variant.
    variants: Vec<Run>,
    /// Each baseline's figure divided by this server's (`full`).
    ratios: Vec<Value>,
    runs: Vec<Run>,
}

pub(crate) fn run(args: &ReplayBenchArgs) -> Result<()> {
    let files = corpus(&args.dirs, args.files, args.seed)?;
    let style = Style {
        keystrokes: args.keystrokes,
        ..Style::default()
    };
    let steps = script::plan(&files, args.seed, &style);
    anyhow::ensure!(
        !steps.is_empty(),
        "no file in the corpus is long enough to replay"
    );
    eprintln!(
        "replay: {} keystrokes over {} files, {:.0} s of typing per variant",
        steps
            .iter()
            .filter(|s| matches!(s.action, Action::Key { .. }))
            .count(),
        steps
            .iter()
            .filter(|s| matches!(s.action, Action::Open { .. }))
            .count(),
        steps
            .last()
            .map_or(0.0, |s| s.at_ms as f64 / 1000.0 / args.speed)
    );
    let mut runs = Vec::new();
    for round in 0..args.rounds.max(1) {
        for variant in &args.variants {
            let run = replay_once(args, variant, &steps)
                .with_context(|| format!("variant {variant}, round {}", round + 1))?;
            eprintln!(
                "replay: round {} {variant}: p50 {:.0} ms, p95 {:.0} ms, evaluated/changed {:.2}",
                round + 1,
                run.latency_ms.p50,
                run.latency_ms.p95,
                run.evaluated_per_changed
            );
            runs.push(run);
        }
    }
    let variants: Vec<Run> = args
        .variants
        .iter()
        .map(|v| median_run(runs.iter().filter(|r| &r.variant == v)))
        .collect();
    let ratios = ratios(&variants);
    let report = Report {
        model: &args.model,
        corpus: files.iter().map(|(n, _)| n.clone()).collect(),
        seed: args.seed,
        keystrokes: args.keystrokes,
        rounds: args.rounds.max(1),
        debounce_ms: args.debounce_ms,
        max_tokens: args.max_tokens,
        threads: args.threads,
        speed: args.speed,
        variants,
        ratios,
        runs,
    };
    print_table(&report)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        // The first round of each variant.
        let series: Vec<plot::Series<'_>> = report
            .runs
            .iter()
            .take(args.variants.len())
            .map(|r| (r.variant.as_str(), r.points.as_slice()))
            .collect();
        std::fs::write(path, plot::latency_svg(&series))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let broken: usize = report.runs.iter().map(|r| r.unanswered + r.errors).sum();
    if broken > 0 {
        bail!("{broken} requests were not answered, or answered with an error");
    }
    Ok(())
}

/// Source files from `dirs` (default: this machine's Python standard library), sorted, then
/// `n` of them chosen by `seed`.
fn corpus(dirs: &[PathBuf], n: usize, seed: u64) -> Result<Vec<(String, String)>> {
    let dirs = if dirs.is_empty() {
        vec![python_stdlib().context(
            "no directory given and no Python standard library found (python3 -c 'import sysconfig')",
        )?]
    } else {
        dirs.to_vec()
    };
    let mut paths = Vec::new();
    for dir in &dirs {
        if dir.is_file() {
            paths.push(dir.clone());
            continue;
        }
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let source = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                matches!(
                    e,
                    "py" | "rs" | "c" | "h" | "cpp" | "go" | "js" | "ts" | "java" | "lua"
                )
            });
            if source && path.is_file() && (MIN_FILE_BYTES..=MAX_FILE_BYTES).contains(&size) {
                paths.push(path);
            }
        }
    }
    paths.sort();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    paths.shuffle(&mut rng);
    paths.truncate(n.max(1));
    let mut files = Vec::new();
    for path in paths {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            files.push((name, text.replace("\r\n", "\n")));
        }
    }
    anyhow::ensure!(!files.is_empty(), "no source files in {dirs:?}");
    Ok(files)
}

fn python_stdlib() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    dir.is_dir().then_some(dir)
}

/// Answers by request id: (arrival, whether it had items, whether it was an error, count).
type Answers = Arc<Mutex<HashMap<i64, (Instant, bool, bool, usize, Value)>>>;

fn replay_once(args: &ReplayBenchArgs, variant: &str, steps: &[Step]) -> Result<Run> {
    let mode = match variant {
        "full" => "full",
        "prefix" => "prefix",
        "cold" => "cold",
        other => bail!("unknown variant {other} (full, prefix, cold)"),
    };
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--stdio", "--log-level", "warn", "--model"])
        .arg(&args.model)
        .env(ReuseMode::ENV, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start amd-lsp --stdio")?;
    let pid = child.id();
    let stdin = Arc::new(Mutex::new(child.stdin.take().context("stdin")?));
    let stdout = child.stdout.take().context("stdout")?;
    let answers: Answers = Arc::default();
    let reader = {
        let (stdin, answers) = (Arc::clone(&stdin), Arc::clone(&answers));
        std::thread::spawn(move || read_loop(stdout, &stdin, &answers))
    };
    let send = |msg: Value| -> Result<()> { write_frame(&stdin, &msg) };
    let mut next_id = 0i64;
    let mut request = |method: &str, params: Value| -> Result<i64> {
        next_id += 1;
        send(json!({"jsonrpc": "2.0", "id": next_id, "method": method, "params": params}))?;
        Ok(next_id)
    };
    let wait = |id: i64, secs: u64| -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(a) = answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
            {
                return Ok(a.4.clone());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "request {id} unanswered after {secs} s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    };

    let mut options = json!({"debounceMs": args.debounce_ms, "maxTokens": args.max_tokens});
    if args.threads > 0 {
        options["threads"] = json!(args.threads);
    }
    let id = request(
        "initialize",
        json!({"processId": std::process::id(),
            "capabilities": {"textDocument": {"inlineCompletion": {}}},
            "initializationOptions": options}),
    )?;
    wait(id, 60)?;
    send(json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}))?;
    loop {
        let id = request("amd/status", Value::Null)?;
        let status = wait(id, 60)?;
        match status["result"]["state"].as_str() {
            Some("ready") => break,
            Some("loading") => std::thread::sleep(Duration::from_millis(20)),
            other => bail!(
                "the model did not load: {other:?} {}",
                status["result"]["error"]
            ),
        }
    }

    let mut run = Run {
        variant: variant.to_owned(),
        ..Run::default()
    };
    let uri = |doc: usize, name: &str| format!("file:///replay/{doc}/{name}");
    let mut names: Vec<String> = Vec::new();
    let mut versions: Vec<i64> = Vec::new();
    let mut sent: HashMap<i64, (Instant, KeyKind)> = HashMap::new();
    let mut rss_peak = 0.0f64;
    let started = Instant::now();
    for (i, step) in steps.iter().enumerate() {
        let due = started + Duration::from_secs_f64(step.at_ms as f64 / 1000.0 / args.speed);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            run.max_lag_ms = run.max_lag_ms.max((now - due).as_secs_f64() * 1000.0);
        }
        match &step.action {
            Action::Close { doc } => {
                send(
                    json!({"jsonrpc": "2.0", "method": "textDocument/didClose", "params": {
                    "textDocument": {"uri": uri(*doc, &names[*doc])}}}),
                )?;
            }
            Action::Open { doc, name, text } => {
                names.push(name.clone());
                versions.push(0);
                send(
                    json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
                    "textDocument": {"uri": uri(*doc, name), "languageId": language(name),
                        "version": 0, "text": text}}}),
                )?;
            }
            Action::Key {
                doc,
                start,
                end,
                text,
                cursor,
                kind,
            } => {
                versions[*doc] += 1;
                let u = uri(*doc, &names[*doc]);
                send(
                    json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
                    "textDocument": {"uri": u, "version": versions[*doc]},
                    "contentChanges": [{"range": {
                        "start": {"line": start.0, "character": start.1},
                        "end": {"line": end.0, "character": end.1}}, "text": text}]}}),
                )?;
                let id = request(
                    "textDocument/inlineCompletion",
                    json!({"textDocument": {"uri": u},
                        "position": {"line": cursor.0, "character": cursor.1},
                        "context": {"triggerKind": 2}}),
                )?;
                sent.insert(id, (Instant::now(), *kind));
                run.keystrokes += 1;
            }
        }
        if i % 50 == 0 {
            rss_peak = rss_peak.max(super::soak::rss_mib(pid));
            if let Some(status) = child.try_wait()? {
                bail!("the server died: {status}");
            }
        }
    }
    // Every request answered, then the server's own counters.
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let a = answers.lock().unwrap_or_else(PoisonError::into_inner);
        if sent.keys().all(|id| a.contains_key(id)) {
            break;
        }
        drop(a);
        std::thread::sleep(Duration::from_millis(10));
    }
    run.seconds = started.elapsed().as_secs_f64();
    let id = request("amd/status", Value::Null)?;
    let status = wait(id, 30)?["result"].clone();
    run.rss_end_mib = super::soak::rss_mib(pid);
    run.rss_peak_mib = rss_peak.max(run.rss_end_mib);
    let id = request("shutdown", Value::Null)?;
    wait(id, 30)?;
    send(json!({"jsonrpc": "2.0", "method": "exit"}))?;
    let _ = child.wait();
    let _ = reader.join();

    let a = answers.lock().unwrap_or_else(PoisonError::into_inner);
    let (mut all, mut model_only) = (Vec::new(), Vec::new());
    for (id, (at, kind)) in &sent {
        run.requests += 1;
        let Some((arrived, items, error, count, _)) = a.get(id) else {
            run.unanswered += 1;
            continue;
        };
        if *count > 1 {
            run.errors += 1; // answered twice
        }
        if *error {
            run.errors += 1;
        } else if *items {
            run.suggestions += 1;
            let ms = arrived.duration_since(*at).as_secs_f64() * 1000.0;
            all.push(ms);
            // Type-through hits answer at once; the rest waited for the debounce.
            let hit = ms < args.debounce_ms as f64;
            if !hit {
                model_only.push(ms - args.debounce_ms as f64);
            }
            run.points.push(plot::Point {
                t: at.duration_since(started).as_secs_f64(),
                ms,
                far: *kind == KeyKind::FarEdit,
            });
        } else {
            run.empty += 1;
        }
    }
    run.points.sort_by(|x, y| x.t.total_cmp(&y.t));
    run.latency_ms = Quantiles::of(&all);
    run.latency_less_debounce_ms = Quantiles::of(&model_only);
    let engine = &status["engine"];
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    run.jobs = engine["jobs"].as_u64().unwrap_or(0);
    run.tokens_evaluated = engine["tokensEvaluated"].as_u64().unwrap_or(0);
    run.tokens_changed = engine["tokensChanged"].as_u64().unwrap_or(0);
    run.tokens_evaluated_per_job = ratio(run.tokens_evaluated as f64, run.jobs as f64);
    run.evaluated_per_changed = ratio(run.tokens_evaluated as f64, run.tokens_changed as f64);
    run.cpu_ms = num(&engine["cpuMs"]);
    run.cpu_ms_superseded = num(&engine["cpuMsCancelled"]);
    run.superseded_cpu_share = ratio(run.cpu_ms_superseded, run.cpu_ms);
    run.type_through_hits = status["counters"]["cacheHits"].as_u64().unwrap_or(0);
    run.type_through_rate = ratio(run.type_through_hits as f64, run.requests as f64);
    run.type_through_ms = Quantiles {
        p50: num(&status["cacheHitMs"]["p50"]),
        p95: num(&status["cacheHitMs"]["p95"]),
        p99: 0.0,
        n: run.type_through_hits as usize,
    };
    run.documents = names.len();
    Ok(run)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn language(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("py") => "python",
        Some("rs") => "rust",
        Some("c" | "h") => "c",
        Some("cpp") => "cpp",
        Some("go") => "go",
        Some("js") => "javascript",
        Some("ts") => "typescript",
        Some("java") => "java",
        Some("lua") => "lua",
        _ => "plaintext",
    }
}

/// The median of each figure over the rounds of one variant.
fn median_run<'a>(runs: impl Iterator<Item = &'a Run>) -> Run {
    let runs: Vec<&Run> = runs.collect();
    let Some(first) = runs.first() else {
        return Run::default();
    };
    let med = |f: &dyn Fn(&Run) -> f64| {
        let v: Vec<f64> = runs.iter().map(|r| f(r)).collect();
        Quantiles::of(&v).p50
    };
    let q = |f: &dyn Fn(&Run) -> Quantiles| Quantiles {
        p50: med(&|r| f(r).p50),
        p95: med(&|r| f(r).p95),
        p99: med(&|r| f(r).p99),
        n: f(first).n,
    };
    Run {
        variant: first.variant.clone(),
        keystrokes: first.keystrokes,
        requests: first.requests,
        suggestions: med(&|r| r.suggestions as f64) as usize,
        empty: med(&|r| r.empty as f64) as usize,
        unanswered: runs.iter().map(|r| r.unanswered).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        latency_ms: q(&|r| r.latency_ms),
        latency_less_debounce_ms: q(&|r| r.latency_less_debounce_ms),
        points: Vec::new(),
        jobs: med(&|r| r.jobs as f64) as u64,
        tokens_evaluated: med(&|r| r.tokens_evaluated as f64) as u64,
        tokens_changed: med(&|r| r.tokens_changed as f64) as u64,
        tokens_evaluated_per_job: med(&|r| r.tokens_evaluated_per_job),
        evaluated_per_changed: med(&|r| r.evaluated_per_changed),
        cpu_ms: med(&|r| r.cpu_ms),
        cpu_ms_superseded: med(&|r| r.cpu_ms_superseded),
        superseded_cpu_share: med(&|r| r.superseded_cpu_share),
        type_through_hits: med(&|r| r.type_through_hits as f64) as u64,
        type_through_rate: med(&|r| r.type_through_rate),
        type_through_ms: q(&|r| r.type_through_ms),
        documents: first.documents,
        rss_peak_mib: med(&|r| r.rss_peak_mib),
        rss_end_mib: med(&|r| r.rss_end_mib),
        max_lag_ms: runs.iter().map(|r| r.max_lag_ms).fold(0.0, f64::max),
        seconds: med(&|r| r.seconds),
    }
}

/// Each other variant against `full`: latency and cost ratios.
fn ratios(variants: &[Run]) -> Vec<Value> {
    let Some(full) = variants.iter().find(|r| r.variant == "full") else {
        return Vec::new();
    };
    variants
        .iter()
        .filter(|r| r.variant != "full")
        .map(|r| {
            json!({
                "variant": r.variant,
                "latency_p50": ratio(r.latency_ms.p50, full.latency_ms.p50),
                "latency_p95": ratio(r.latency_ms.p95, full.latency_ms.p95),
                "tokens_evaluated_per_job": ratio(r.tokens_evaluated_per_job, full.tokens_evaluated_per_job),
                "cpu_ms": ratio(r.cpu_ms, full.cpu_ms),
            })
        })
        .collect()
}

fn print_table(r: &Report<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| variant | p50 ms | p95 ms | p99 ms | p50 less debounce | suggestions / requests | tokens evaluated per job | evaluated ÷ changed | superseded CPU | type-through hits (p50 ms) | RSS peak MiB |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for v in &r.variants {
        writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {} / {} | {:.1} | {:.2} | {:.1}% | {:.1}% ({:.2}) | {:.0} |",
            v.variant,
            v.latency_ms.p50,
            v.latency_ms.p95,
            v.latency_ms.p99,
            v.latency_less_debounce_ms.p50,
            v.suggestions,
            v.requests,
            v.tokens_evaluated_per_job,
            v.evaluated_per_changed,
            v.superseded_cpu_share * 100.0,
            v.type_through_rate * 100.0,
            v.type_through_ms.p50,
            v.rss_peak_mib,
        )?;
    }
    for ratio in &r.ratios {
        writeln!(
            out,
            "{} ÷ full: {ratio}",
            ratio["variant"].as_str().unwrap_or("?")
        )?;
    }
    Ok(())
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
                    let items = msg["result"]["items"]
                        .as_array()
                        .is_some_and(|items| !items.is_empty());
                    let error = msg.get("error").is_some();
                    let mut a = answers.lock().unwrap_or_else(PoisonError::into_inner);
                    a.entry(id)
                        .and_modify(|e| e.3 += 1)
                        .or_insert((arrived, items, error, 1, msg));
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
