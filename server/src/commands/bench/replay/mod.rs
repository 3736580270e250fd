//! `amd-lsp bench replay [DIR…]`: replays human editing of real source files into the real
//! server over stdio and measures what a user feels: keystroke-to-suggestion latency, and what
//! it cost — tokens evaluated against tokens changed, CPU spent on superseded work, memory.
//! Each variant (this server, then its baselines: longest-common-prefix reuse only, and no
//! reuse) replays the same script against a fresh `amd-lsp --stdio` (this binary), one after
//! the other, `--rounds` times interleaved; figures are medians over the rounds.

mod baseline;
mod plot;
pub(crate) mod script;
mod typist;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::{json, Value};

use self::script::{Action, KeyKind, Step, Style};
use super::quality::wait_for_index;
use crate::cli::ReplayBenchArgs;
use crate::client::{rss_mib, Client};
use crate::lsp::config::ReuseMode;

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
    /// Measured by the server for requests that reached the model: from the end of the
    /// debounce to the answer (what the latency goals are about), and the debounce
    /// itself (adaptive: it follows the typing rhythm).
    pub after_debounce_ms: Quantiles,
    pub debounce_ms: Quantiles,
    /// (seconds since start, milliseconds) of each suggestion, for the plot.
    #[serde(skip)]
    pub points: Vec<plot::Point>,
    pub jobs: u64,
    pub tokens_evaluated: u64,
    pub tokens_changed: u64,
    /// Prompt tokens taken back from the park at shifted positions (a moved window start, an
    /// edit far above), not evaluated again.
    pub tokens_shifted: u64,
    /// Jobs that evaluated their whole prompt although most of it was known (0 is the goal).
    pub whole_reevaluations: u64,
    pub tokens_evaluated_per_request: f64,
    pub evaluated_per_changed: f64,
    pub cpu_ms: f64,
    /// CPU thrown away: what cancelled jobs spent generating.
    pub cpu_ms_superseded: f64,
    pub superseded_cpu_share: f64,
    /// CPU of cancelled jobs in all (their prompt evaluation included, which the cache keeps).
    pub cpu_ms_cancelled: f64,
    pub cancelled_cpu_share: f64,
    /// Jobs whose document's KV cache came back from memory (a switch back to it).
    pub restored: u64,
    /// Jobs whose first line repeated the next line and went back for another start
    /// (`avoidNextLine`).
    pub avoided_lines: u64,
    /// From the first keystroke in a newly opened document to its first suggestion (the
    /// documents that got one).
    pub first_in_opened_ms: Quantiles,
    /// The same, each document's figure in the order they were opened (to pool seeds).
    pub first_in_opened_each_ms: Vec<f64>,
    /// From the first keystroke in a newly opened document after which the person pauses
    /// (the next key comes [`PAUSE_MS`] or more later) to the first suggestion from then on:
    /// how long the first wait in a new file is. Before that pause a suggestion could only
    /// arrive between keys.
    pub first_pause_in_opened_ms: Quantiles,
    /// The accepting typist (`--accept`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typist: Option<TypistFigures>,
    /// llama.cpp calls run on one thread because other processes used the cores, in all
    /// calls (0 with a fixed `threads` setting).
    pub one_thread_share: f64,
    pub type_through_hits: u64,
    pub type_through_rate: f64,
    pub type_through_ms: Quantiles,
    /// Generations kept in flight across keystrokes (`keepGenerating`), and the requests
    /// answered by following one instead of asking the model again.
    pub flights: u64,
    pub followed: u64,
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
    debounce_max_ms: u64,
    max_tokens: u32,
    threads: u32,
    settings: serde_json::Map<String, Value>,
    speed: f64,
    look_ms: u64,
    /// Medians over the rounds, per variant.
    variants: Vec<Run>,
    /// Each baseline's figure divided by this server's (`full`).
    ratios: Vec<Value>,
    runs: Vec<Run>,
}

pub(crate) fn run(args: &ReplayBenchArgs) -> Result<()> {
    let files = corpus(&args.dirs, args.files, args.seed, args.workspace)?;
    let style = Style {
        keystrokes: args.keystrokes,
        look_ms: args.look_ms,
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
            let run = match (variant.as_str(), &args.baseline) {
                ("llama-server", Some(url)) => baseline::replay(args, url, &steps),
                ("llama-server", None) => bail!("the llama-server variant needs --baseline URL"),
                _ => replay_once(args, variant, &steps),
            }
            .with_context(|| format!("variant {variant}, round {}", round + 1))?;
            eprintln!(
                "replay: round {} {variant}: p50 {:.0} ms, p95 {:.0} ms (after debounce {:.0}, {:.0}), \
                 evaluated/changed {:.2}, superseded CPU {:.1}%, CPU {:.1} s, \
                 one-thread calls {:.0}%, first suggestion in an opened file p50 {:.0} ms ({}), \
                 from the first pause in it p50 {:.0} ms ({}), \
                 whole-prompt re-evaluations {}",
                round + 1,
                run.latency_ms.p50,
                run.latency_ms.p95,
                run.after_debounce_ms.p50,
                run.after_debounce_ms.p95,
                run.evaluated_per_changed,
                run.superseded_cpu_share * 100.0,
                run.cpu_ms / 1000.0,
                run.one_thread_share * 100.0,
                run.first_in_opened_ms.p50,
                run.first_in_opened_ms.n,
                run.first_pause_in_opened_ms.p50,
                run.first_pause_in_opened_ms.n,
                run.whole_reevaluations
            );
            if let Some(t) = &run.typist {
                eprintln!(
                    "replay: round {} {variant} typist: keystrokes saved {:.1}% ({} of {} made), \
                     {} suggestions shown ({:.1} per 100 keystrokes), {} accepted ({:.0}%; \
                     whole {}, lines {}, words {}), {:.1} characters each, {:.0}% from a cache, \
                     on screen before taken p50 {:.0} ms, files identical: {}",
                    round + 1,
                    t.keystrokes_saved * 100.0,
                    t.keystrokes,
                    t.script_keystrokes,
                    t.shown,
                    t.shown_per_100_keystrokes,
                    t.accepted,
                    t.acceptance_rate * 100.0,
                    t.whole,
                    t.lines,
                    t.words,
                    t.chars_per_accepted,
                    t.accepted_from_cache * 100.0,
                    t.on_screen_ms.p50,
                    t.files_identical
                );
                anyhow::ensure!(
                    t.files_identical,
                    "the accepting typist left the documents different from the script's"
                );
                anyhow::ensure!(
                    !args.expect_accepts || t.accepted > 0,
                    "the accepting typist took no suggestion (--expect-accepts)"
                );
            }
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
        debounce_max_ms: args.debounce_max_ms,
        max_tokens: args.max_tokens,
        threads: args.threads,
        settings: args.settings.iter().cloned().collect(),
        speed: args.speed,
        look_ms: args.look_ms,
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
/// Files to replay as (name, text); with `paths`, the name is the file's absolute path.
fn corpus(dirs: &[PathBuf], n: usize, seed: u64, paths: bool) -> Result<Vec<(String, String)>> {
    let named_by_path = paths;
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
            let name = if named_by_path {
                std::fs::canonicalize(&path)
                    .unwrap_or_else(|_| path.clone())
                    .to_string_lossy()
                    .into_owned()
            } else {
                path.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            };
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

/// What the accepting typist did (`--accept`).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct TypistFigures {
    /// Keystrokes of the script, and those the typist made (accepting keys included).
    pub script_keystrokes: u64,
    pub keystrokes: u64,
    /// Share of the script's keystrokes the typist did not make.
    pub keystrokes_saved: f64,
    /// Distinct suggestions that reached the screen (an answer that arrived before the next
    /// keystroke; a type-through continuation of the one on screen is the same suggestion).
    pub shown: u64,
    pub shown_per_100_keystrokes: f64,
    /// Suggestions taken at least in part, and that share of `shown`.
    pub accepted: u64,
    pub acceptance_rate: f64,
    pub accepted_chars: u64,
    pub chars_per_accepted: f64,
    /// Takes by key: the whole suggestion, lines, words.
    pub whole: u64,
    pub lines: u64,
    pub words: u64,
    /// Share of taken suggestions answered within 15 ms of their request (the type-through
    /// cache or the precomputed next suggestion, not the model).
    pub accepted_from_cache: f64,
    /// How long a taken suggestion had been on screen.
    pub on_screen_ms: Quantiles,
    /// The documents the server was sent equal the script's, byte for byte.
    pub files_identical: bool,
    /// What was shown (each suggestion's text as the editor got it) and what was taken (the
    /// text on screen then, and the characters taken of it): what a study of which
    /// suggestions are worth showing starts from (docs/benchmarks.md, the confidence gate).
    pub shown_texts: Vec<String>,
    pub taken: Vec<TakenText>,
}

/// A taken suggestion's text on screen and the characters taken of it.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct TakenText {
    pub text: String,
    pub chars: usize,
}

/// An answer counted as from a cache (no model run) when it came this fast (ms).
const CACHE_ANSWER_MS: f64 = 15.0;

/// One take of the accepting typist.
pub(crate) struct Taken {
    pub take: typist::Take,
    /// The suggestion's text on screen when it was taken.
    pub text: String,
    /// When the suggestion showed, and when it was taken.
    pub since: Instant,
    pub at: Instant,
    /// From its request to its answer (ms).
    pub answer_ms: f64,
}

impl TypistFigures {
    /// The figures of a run: the script, the texts the typist left, the keystrokes they made,
    /// the suggestions that reached the screen, and what they took.
    pub(crate) fn new(
        steps: &[Step],
        texts: &[ropey::Rope],
        keystrokes: usize,
        shown_texts: Vec<String>,
        takes: &[Taken],
    ) -> TypistFigures {
        let shown = shown_texts.len() as u64;
        let script_keystrokes = steps
            .iter()
            .filter(|s| matches!(s.action, Action::Key { .. }))
            .count() as u64;
        let keystrokes = keystrokes as u64;
        let accepted = takes.len() as u64;
        let accepted_chars: u64 = takes.iter().map(|t| t.take.chars as u64).sum();
        let count = |how| takes.iter().filter(|t| t.take.how == how).count() as u64;
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let from_cache = takes
            .iter()
            .filter(|t| t.answer_ms < CACHE_ANSWER_MS)
            .count();
        let on_screen: Vec<f64> = takes
            .iter()
            .map(|t| t.at.duration_since(t.since).as_secs_f64() * 1000.0)
            .collect();
        TypistFigures {
            script_keystrokes,
            keystrokes,
            keystrokes_saved: 1.0 - ratio(keystrokes as f64, script_keystrokes as f64),
            shown,
            shown_per_100_keystrokes: ratio(100.0 * shown as f64, keystrokes as f64),
            accepted,
            acceptance_rate: ratio(accepted as f64, shown as f64),
            accepted_chars,
            chars_per_accepted: ratio(accepted_chars as f64, accepted as f64),
            whole: count(typist::How::Whole),
            lines: count(typist::How::Lines),
            words: count(typist::How::Words),
            accepted_from_cache: ratio(from_cache as f64, accepted as f64),
            on_screen_ms: Quantiles::of(&on_screen),
            files_identical: typist::final_texts(steps)
                .iter()
                .zip(texts)
                .all(|(want, got)| want == got),
            shown_texts,
            taken: takes
                .iter()
                .map(|t| TakenText {
                    text: t.text.clone(),
                    chars: t.take.chars,
                })
                .collect(),
        }
    }
}

/// The accepting typist's figures from what was sent and answered.
fn typist_figures(
    steps: &[Step],
    texts: &[ropey::Rope],
    sent: &HashMap<i64, (Instant, KeyKind)>,
    doc_of: &HashMap<i64, usize>,
    answers: &HashMap<i64, crate::client::Answer>,
    takes: &[Taken],
    keystrokes: usize,
) -> TypistFigures {
    // Shown: answered with items before the document's next request went out; a suggestion
    // whose text continues the one shown before it is the same suggestion.
    let mut by_doc: HashMap<usize, Vec<(Instant, i64)>> = HashMap::new();
    for (id, (at, _)) in sent {
        by_doc.entry(doc_of[id]).or_default().push((*at, *id));
    }
    let mut shown = Vec::new();
    for requests in by_doc.values_mut() {
        requests.sort();
        let mut before: Option<String> = None;
        for (k, (_, id)) in requests.iter().enumerate() {
            let next_sent = requests.get(k + 1).map(|r| r.0);
            let Some(a) = answers.get(id).filter(|a| a.has_items()) else {
                before = None;
                continue;
            };
            if next_sent.is_some_and(|n| a.arrived > n) {
                continue;
            }
            let text = a.msg["result"]["items"][0]["insertText"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            // insertText holds the line up to the cursor too: a continuation has the same
            // whole line.
            if before.as_deref() != Some(text.as_str()) {
                shown.push(text.clone());
            }
            before = Some(text);
        }
    }
    TypistFigures::new(steps, texts, keystrokes, shown, takes)
}

/// A gap between keystrokes at least this long (ms, at a person's speed) is a pause.
const PAUSE_MS: f64 = 500.0;

fn replay_once(args: &ReplayBenchArgs, variant: &str, steps: &[Step]) -> Result<Run> {
    let mode = match variant {
        "full" | "backend" => "full",
        "prefix" => "prefix",
        "cold" => "cold",
        other => bail!("unknown variant {other} (full, prefix, cold, backend, llama-server)"),
    };
    let mut client = Client::spawn(&args.model, &[(ReuseMode::ENV, mode)])?;
    let pid = client.pid();
    let mut options = json!({"debounceMs": args.debounce_ms,
        "debounceMaxMs": args.debounce_max_ms, "maxTokens": args.max_tokens});
    if args.threads > 0 {
        options["threads"] = json!(args.threads);
    }
    for (key, value) in &args.settings {
        options[key] = value.clone();
    }
    if variant == "backend" {
        let url = args
            .backend
            .as_ref()
            .context("the backend variant needs --backend URL")?;
        options["backend"] = json!({ "url": url });
    }
    let roots: Vec<PathBuf> = if args.workspace {
        args.dirs
            .iter()
            .filter_map(|d| std::fs::canonicalize(d).ok())
            .collect()
    } else {
        Vec::new()
    };
    client.initialize_in(options, &roots, true)?;
    if args.workspace {
        wait_for_index(&mut client)?;
    }

    let mut run = Run {
        variant: variant.to_owned(),
        ..Run::default()
    };
    // With a workspace, a file's first document has its real path (context leaves it out);
    // later documents of the same file get a name of their own.
    let mut first_doc_of: HashMap<String, usize> = HashMap::new();
    let workspace = args.workspace;
    let mut uri = move |doc: usize, name: &str| {
        let first = *first_doc_of.entry(name.to_owned()).or_insert(doc);
        match url::Url::from_file_path(name) {
            Ok(u) if workspace && first == doc => u.to_string(),
            _ => format!(
                "file:///replay/{doc}/{}",
                name.rsplit('/').next().unwrap_or(name)
            ),
        }
    };
    let mut names: Vec<String> = Vec::new();
    let mut versions: Vec<i64> = Vec::new();
    let mut sent: HashMap<i64, (Instant, KeyKind)> = HashMap::new();
    // Per document: when its first keystroke was sent, and which requests were its.
    let mut first_key: Vec<Option<Instant>> = Vec::new();
    let mut first_pause: Vec<Option<Instant>> = Vec::new();
    let mut doc_of: HashMap<i64, usize> = HashMap::new();
    let mut rss_peak = 0.0f64;
    // The accepting typist: the texts sent (to check them against the script's), each
    // document's latest request and its cursor, what is on screen and since when, the script
    // time skipped by accepting, and what was taken.
    let mut texts: Vec<ropey::Rope> = Vec::new();
    let mut latest: Vec<Option<(i64, (u32, u32))>> = Vec::new();
    let mut on_screen: Option<(usize, String, Instant)> = None;
    let mut skipped_ms = 0u64;
    let mut skip_to = 0usize;
    let mut takes: Vec<Taken> = Vec::new();
    let reaction = Duration::from_secs_f64(args.reaction_ms as f64 / 1000.0 / args.speed);
    let started = Instant::now();
    for (i, step) in steps.iter().enumerate() {
        if i < skip_to {
            continue;
        }
        let due = started
            + Duration::from_secs_f64((step.at_ms - skipped_ms) as f64 / 1000.0 / args.speed);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            run.max_lag_ms = run.max_lag_ms.max((now - due).as_secs_f64() * 1000.0);
        }
        match &step.action {
            Action::Close { doc } => {
                client.notify(
                    "textDocument/didClose",
                    json!({"textDocument": {"uri": uri(*doc, &names[*doc])}}),
                )?;
            }
            Action::Open { doc, name, text } => {
                names.push(name.clone());
                versions.push(0);
                first_key.push(None);
                first_pause.push(None);
                texts.push(ropey::Rope::from_str(text));
                latest.push(None);
                client.notify(
                    "textDocument/didOpen",
                    json!({"textDocument": {"uri": uri(*doc, name), "languageId": language(name),
                        "version": 0, "text": text}}),
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
                // The typist looks at the screen before the key.
                if args.accept && *kind == KeyKind::Type {
                    let shown = latest[*doc]
                        .filter(|(_, at)| at == start)
                        .and_then(|(id, _)| client.answers().get(&id).cloned())
                        .filter(|a| a.has_items());
                    on_screen = shown.map(|a| {
                        let line = texts[*doc].line(start.0 as usize);
                        let prefix = line.utf16_cu_to_char(start.1 as usize);
                        let insert = a.msg["result"]["items"][0]["insertText"]
                            .as_str()
                            .unwrap_or("");
                        let text: String = insert.chars().skip(prefix).collect();
                        let since = match &on_screen {
                            Some((d, before, since))
                                if d == doc
                                    && before.len() > text.len()
                                    && before.ends_with(&text) =>
                            {
                                *since
                            }
                            _ => a.arrived,
                        };
                        (*doc, text, since)
                    });
                    let now = Instant::now();
                    let take = on_screen
                        .as_ref()
                        .filter(|(_, _, since)| *since + reaction <= now)
                        .and_then(|(_, text, _)| typist::take(text, &typist::upcoming(steps, i)));
                    if let Some(t) = take {
                        let last = i + t.chars - 1;
                        let Action::Key { cursor: to, .. } = &steps[last].action else {
                            unreachable!("upcoming() covers Key steps only")
                        };
                        let inserted: String =
                            typist::upcoming(steps, i).chars().take(t.chars).collect();
                        versions[*doc] += 1;
                        let u = uri(*doc, &names[*doc]);
                        typist::apply(&mut texts[*doc], *start, *start, &inserted);
                        client.notify(
                            "textDocument/didChange",
                            json!({"textDocument": {"uri": u, "version": versions[*doc]},
                                "contentChanges": [{"range": {
                                    "start": {"line": start.0, "character": start.1},
                                    "end": {"line": start.0, "character": start.1}}, "text": inserted}]}),
                        )?;
                        let id = client.request(
                            "textDocument/inlineCompletion",
                            json!({"textDocument": {"uri": u},
                                "position": {"line": to.0, "character": to.1},
                                "context": {"triggerKind": 2}}),
                        )?;
                        let answer_ms = latest[*doc]
                            .and_then(|(id, _)| {
                                let asked = sent.get(&id)?.0;
                                let answered = client.answers().get(&id)?.arrived;
                                Some(answered.duration_since(asked).as_secs_f64() * 1000.0)
                            })
                            .unwrap_or(f64::INFINITY);
                        takes.push(Taken {
                            take: t,
                            text: on_screen.as_ref().map_or_else(String::new, |s| s.1.clone()),
                            since: on_screen.as_ref().map_or(now, |s| s.2),
                            at: now,
                            answer_ms,
                        });
                        sent.insert(id, (now, KeyKind::Type));
                        doc_of.insert(id, *doc);
                        latest[*doc] = Some((id, *to));
                        on_screen = None;
                        run.keystrokes += t.keys;
                        skip_to = last + 1;
                        skipped_ms += steps[last].at_ms - step.at_ms;
                        continue;
                    }
                }
                versions[*doc] += 1;
                let u = uri(*doc, &names[*doc]);
                typist::apply(&mut texts[*doc], *start, *end, text);
                client.notify(
                    "textDocument/didChange",
                    json!({"textDocument": {"uri": u, "version": versions[*doc]},
                        "contentChanges": [{"range": {
                            "start": {"line": start.0, "character": start.1},
                            "end": {"line": end.0, "character": end.1}}, "text": text}]}),
                )?;
                let id = client.request(
                    "textDocument/inlineCompletion",
                    json!({"textDocument": {"uri": u},
                        "position": {"line": cursor.0, "character": cursor.1},
                        "context": {"triggerKind": 2}}),
                )?;
                let now = Instant::now();
                sent.insert(id, (now, *kind));
                doc_of.insert(id, *doc);
                latest[*doc] = Some((id, *cursor));
                first_key[*doc].get_or_insert(now);
                let gap = steps
                    .get(i + 1)
                    .map_or(u64::MAX, |next| next.at_ms - step.at_ms);
                if gap as f64 >= PAUSE_MS {
                    first_pause[*doc].get_or_insert(now);
                }
                run.keystrokes += 1;
            }
        }
        if i % 50 == 0 {
            rss_peak = rss_peak.max(rss_mib(pid));
            client.check_alive()?;
        }
    }
    // Every request answered, then the server's own counters.
    client.wait_all(sent.keys().copied(), 120);
    run.seconds = started.elapsed().as_secs_f64();
    let status = client.call("amd/status", Value::Null, 30)?["result"].clone();
    run.rss_end_mib = rss_mib(pid);
    run.rss_peak_mib = rss_peak.max(run.rss_end_mib);
    let answers = client.answers().clone();
    client.shutdown()?;

    let mut first_in_opened = Vec::new();
    for (d, t0) in first_key.iter().enumerate() {
        let first = doc_of
            .iter()
            .filter(|&(_, &doc)| doc == d)
            .filter_map(|(id, _)| answers.get(id).filter(|a| a.has_items()))
            .map(|a| a.arrived)
            .min();
        if let (Some(t0), Some(first)) = (t0, first) {
            first_in_opened.push(first.duration_since(*t0).as_secs_f64() * 1000.0);
        }
    }
    run.first_in_opened_ms = Quantiles::of(&first_in_opened);
    run.first_in_opened_each_ms = first_in_opened;
    let mut first_pause_in_opened = Vec::new();
    for (d, t0) in first_pause.iter().enumerate() {
        let Some(t0) = *t0 else { continue };
        let first = doc_of
            .iter()
            .filter(|&(_, &doc)| doc == d)
            .filter_map(|(id, _)| answers.get(id).filter(|a| a.has_items()))
            .map(|a| a.arrived)
            .filter(|&at| at >= t0)
            .min();
        if let Some(first) = first {
            first_pause_in_opened.push(first.duration_since(t0).as_secs_f64() * 1000.0);
        }
    }
    run.first_pause_in_opened_ms = Quantiles::of(&first_pause_in_opened);
    if args.accept {
        run.typist = Some(typist_figures(
            steps,
            &texts,
            &sent,
            &doc_of,
            &answers,
            &takes,
            run.keystrokes,
        ));
    }
    let mut all = Vec::new();
    for (id, (at, kind)) in &sent {
        run.requests += 1;
        let Some(answer) = answers.get(id) else {
            run.unanswered += 1;
            continue;
        };
        let arrived = &answer.arrived;
        if answer.count > 1 {
            run.errors += 1; // answered twice
        }
        if answer.is_error() {
            run.errors += 1;
        } else if answer.has_items() {
            run.suggestions += 1;
            let ms = arrived.duration_since(*at).as_secs_f64() * 1000.0;
            all.push(ms);
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
    let engine = &status["engine"];
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    run.jobs = engine["jobs"].as_u64().unwrap_or(0);
    run.tokens_evaluated = engine["tokensEvaluated"].as_u64().unwrap_or(0);
    run.tokens_changed = engine["tokensChanged"].as_u64().unwrap_or(0);
    run.tokens_shifted = engine["tokensShifted"].as_u64().unwrap_or(0);
    run.whole_reevaluations = engine["wholeReevaluations"].as_u64().unwrap_or(0);
    run.tokens_evaluated_per_request = ratio(run.tokens_evaluated as f64, run.keystrokes as f64);
    run.evaluated_per_changed = ratio(run.tokens_evaluated as f64, run.tokens_changed as f64);
    run.cpu_ms = num(&engine["cpuMs"]);
    run.cpu_ms_superseded = num(&engine["cpuMsSuperseded"]);
    run.superseded_cpu_share = ratio(run.cpu_ms_superseded, run.cpu_ms);
    run.cpu_ms_cancelled = num(&engine["cpuMsCancelled"]);
    run.cancelled_cpu_share = ratio(run.cpu_ms_cancelled, run.cpu_ms);
    run.restored = engine["restored"].as_u64().unwrap_or(0);
    run.avoided_lines = engine["avoidedLines"].as_u64().unwrap_or(0);
    let one_thread = num(&engine["callsOneThread"]);
    run.one_thread_share = ratio(one_thread, one_thread + num(&engine["callsAllThreads"]));
    let server_quantiles = |v: &Value| Quantiles {
        p50: num(&v["p50"]),
        p95: num(&v["p95"]),
        p99: num(&v["p99"]),
        n: 0,
    };
    run.after_debounce_ms = server_quantiles(&status["afterDebounceMs"]);
    run.debounce_ms = server_quantiles(&status["debounceMs"]);
    run.type_through_hits = status["counters"]["cacheHits"].as_u64().unwrap_or(0);
    run.type_through_rate = ratio(run.type_through_hits as f64, run.requests as f64);
    run.type_through_ms = Quantiles {
        p50: num(&status["cacheHitMs"]["p50"]),
        p95: num(&status["cacheHitMs"]["p95"]),
        p99: 0.0,
        n: run.type_through_hits as usize,
    };
    run.flights = status["counters"]["flights"].as_u64().unwrap_or(0);
    run.followed = status["counters"]["followed"].as_u64().unwrap_or(0);
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
        after_debounce_ms: q(&|r| r.after_debounce_ms),
        debounce_ms: q(&|r| r.debounce_ms),
        points: Vec::new(),
        jobs: med(&|r| r.jobs as f64) as u64,
        tokens_evaluated: med(&|r| r.tokens_evaluated as f64) as u64,
        tokens_changed: med(&|r| r.tokens_changed as f64) as u64,
        tokens_shifted: med(&|r| r.tokens_shifted as f64) as u64,
        whole_reevaluations: med(&|r| r.whole_reevaluations as f64) as u64,
        tokens_evaluated_per_request: med(&|r| r.tokens_evaluated_per_request),
        evaluated_per_changed: med(&|r| r.evaluated_per_changed),
        cpu_ms: med(&|r| r.cpu_ms),
        cpu_ms_superseded: med(&|r| r.cpu_ms_superseded),
        superseded_cpu_share: med(&|r| r.superseded_cpu_share),
        cpu_ms_cancelled: med(&|r| r.cpu_ms_cancelled),
        cancelled_cpu_share: med(&|r| r.cancelled_cpu_share),
        restored: med(&|r| r.restored as f64) as u64,
        avoided_lines: med(&|r| r.avoided_lines as f64) as u64,
        one_thread_share: med(&|r| r.one_thread_share),
        first_in_opened_ms: q(&|r| r.first_in_opened_ms),
        first_in_opened_each_ms: runs
            .iter()
            .flat_map(|r| r.first_in_opened_each_ms.iter().copied())
            .collect(),
        first_pause_in_opened_ms: q(&|r| r.first_pause_in_opened_ms),
        // The typist's figures of the round with the median keystrokes saved.
        typist: {
            let mut t: Vec<&TypistFigures> =
                runs.iter().filter_map(|r| r.typist.as_ref()).collect();
            t.sort_by(|a, b| a.keystrokes_saved.total_cmp(&b.keystrokes_saved));
            t.get(t.len() / 2).map(|t| (*t).clone())
        },
        type_through_hits: med(&|r| r.type_through_hits as f64) as u64,
        type_through_rate: med(&|r| r.type_through_rate),
        type_through_ms: q(&|r| r.type_through_ms),
        flights: med(&|r| r.flights as f64) as u64,
        followed: med(&|r| r.followed as f64) as u64,
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
                "after_debounce_p50": ratio(r.after_debounce_ms.p50, full.after_debounce_ms.p50),
                "after_debounce_p95": ratio(r.after_debounce_ms.p95, full.after_debounce_ms.p95),
                "tokens_evaluated_per_request": ratio(r.tokens_evaluated_per_request, full.tokens_evaluated_per_request),
                "cpu_ms": ratio(r.cpu_ms, full.cpu_ms),
            })
        })
        .collect()
}

fn print_table(r: &Report<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| variant | keystroke→suggestion p50 / p95 / p99 ms | after debounce p50 / p95 / p99 ms | debounce p50 ms | suggestions / requests | tokens evaluated per request | evaluated ÷ changed | superseded CPU (cancelled jobs) | switches restored | type-through hits (p50 ms) | RSS peak MiB |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for v in &r.variants {
        writeln!(
            out,
            "| {} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:.0} | {} / {} | {:.1} | {:.2} | {:.1}% ({:.0}%) | {} | {:.1}% ({:.2}) | {:.0} |",
            v.variant,
            v.latency_ms.p50,
            v.latency_ms.p95,
            v.latency_ms.p99,
            v.after_debounce_ms.p50,
            v.after_debounce_ms.p95,
            v.after_debounce_ms.p99,
            v.debounce_ms.p50,
            v.suggestions,
            v.requests,
            v.tokens_evaluated_per_request,
            v.evaluated_per_changed,
            v.superseded_cpu_share * 100.0,
            v.cancelled_cpu_share * 100.0,
            v.restored,
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
