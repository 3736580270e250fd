//! `amd-lsp bench quality --model M [DIR…] [--baseline URL]`: how good the suggestions are
//! that a user reads. Positions sampled from real code ([`positions`]) are driven through the
//! real server over stdio the way an editor does it (`didOpen`, then
//! `textDocument/inlineCompletion`, trigger kind Automatic); with `--baseline`, the same
//! positions go to a llama-server with the same prompt text (`/infill` for FIM models,
//! `/completion` otherwise), and both are reported side by side.

pub(crate) mod positions;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ropey::Rope;
use serde::Serialize;
use serde_json::{json, Value};

use self::positions::{Kind, Position};
use super::replay::Quantiles;
use crate::cli::QualityBenchArgs;
use crate::client::Client;
use crate::lsp::completion::window::{cursor_window, window_start, WindowPolicy};

/// Source files outside these sizes are left out (tiny ones have no context, huge ones are
/// generated more often than written).
const MIN_FILE_BYTES: u64 = 1 << 10;
const MAX_FILE_BYTES: u64 = 200 << 10;
const MAX_FILES: usize = 5000;
const SOURCE_EXTENSIONS: [&str; 12] = [
    "rs", "py", "c", "h", "cc", "cpp", "go", "js", "ts", "java", "lua", "rb",
];

/// One answer, scored.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Scored {
    pub kind: Kind,
    pub file: String,
    pub line: usize,
    pub truth: String,
    pub suggestion: String,
    pub exact_line: bool,
    pub exact_block: bool,
    pub similarity: f64,
    pub kept_chars: usize,
    pub truth_chars: usize,
    pub latency_ms: f64,
    /// The chunks of other files in the prompt (`amd/status` → `context.lastUsed`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<String>,
    /// Cross-file positions: whether a chunk in the prompt holds the definition of a name the
    /// truth uses that only another file defines (retrieval recall, whatever the model did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition_in_context: Option<bool>,
}

/// Figures over a set of answers.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub n: usize,
    /// First line equal to the truth's first line (trailing whitespace aside).
    pub exact_line: f64,
    /// Mean normalized Levenshtein similarity (first lines; whole text for blocks).
    pub similarity: f64,
    pub empty: f64,
    /// Characters a user would keep (the suggestion's common prefix with the truth), as a share
    /// of the truth's characters.
    pub kept: f64,
    /// Block positions whose whole suggestion equals the body.
    pub exact_block: Option<f64>,
    /// Cross-file positions whose prompt held a definition the truth needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition_in_context: Option<f64>,
    pub latency_ms: Quantiles,
}

impl Summary {
    fn of(scored: &[&Scored]) -> Summary {
        let n = scored.len();
        if n == 0 {
            return Summary::default();
        }
        let share =
            |f: &dyn Fn(&Scored) -> bool| scored.iter().filter(|s| f(s)).count() as f64 / n as f64;
        let blocks: Vec<&&Scored> = scored.iter().filter(|s| s.kind == Kind::Block).collect();
        Summary {
            n,
            exact_line: share(&|s| s.exact_line),
            similarity: scored.iter().map(|s| s.similarity).sum::<f64>() / n as f64,
            empty: share(&|s| s.suggestion.trim().is_empty()),
            kept: scored.iter().map(|s| s.kept_chars).sum::<usize>() as f64
                / scored.iter().map(|s| s.truth_chars).sum::<usize>().max(1) as f64,
            exact_block: (!blocks.is_empty()).then(|| {
                blocks.iter().filter(|s| s.exact_block).count() as f64 / blocks.len() as f64
            }),
            definition_in_context: {
                let judged: Vec<bool> = scored
                    .iter()
                    .filter_map(|s| s.definition_in_context)
                    .collect();
                (!judged.is_empty())
                    .then(|| judged.iter().filter(|&&b| b).count() as f64 / judged.len() as f64)
            },
            latency_ms: Quantiles::of(&scored.iter().map(|s| s.latency_ms).collect::<Vec<_>>()),
        }
    }
}

/// Scores a suggestion (text from the cursor on) against the truth.
pub(crate) fn score(p: &Position, file: &str, suggestion: &str, latency_ms: f64) -> Scored {
    let first = |t: &str| t.lines().next().unwrap_or("").trim_end().to_owned();
    let normalize = |t: &str| {
        t.lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end()
            .to_owned()
    };
    let (truth_cmp, sugg_cmp) = match p.kind {
        Kind::Block => (normalize(&p.truth), normalize(suggestion)),
        Kind::Line | Kind::Mid => (first(&p.truth), first(suggestion)),
    };
    let kept_chars = truth_cmp
        .chars()
        .zip(sugg_cmp.chars())
        .take_while(|(a, b)| a == b)
        .count();
    Scored {
        kind: p.kind,
        file: file.to_owned(),
        line: p.line,
        truth: p.truth.clone(),
        suggestion: suggestion.to_owned(),
        exact_line: first(&p.truth) == first(suggestion),
        exact_block: p.kind == Kind::Block && normalize(&p.truth) == normalize(suggestion),
        similarity: strsim::normalized_levenshtein(&truth_cmp, &sugg_cmp),
        kept_chars,
        truth_chars: truth_cmp.chars().count(),
        latency_ms,
        context: Vec::new(),
        definition_in_context: None,
    }
}

/// The files of the corpus: source files under `dirs`, sorted, hidden and build folders
/// left out.
pub(crate) fn corpus(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(dir) = stack.pop() {
        if dir.is_file() {
            out.push(dir);
            continue;
        }
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_symlink() || name.starts_with('.') {
                continue;
            }
            if kind.is_dir() {
                if !matches!(
                    name.as_str(),
                    "target" | "node_modules" | "__pycache__" | "build"
                ) {
                    stack.push(path);
                }
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| SOURCE_EXTENSIONS.contains(&e))
                && entry
                    .metadata()
                    .is_ok_and(|m| (MIN_FILE_BYTES..=MAX_FILE_BYTES).contains(&m.len()))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out.truncate(MAX_FILES);
    anyhow::ensure!(!out.is_empty(), "no source files under {dirs:?}");
    Ok(out)
}

/// A llama-server to compare with.
struct Baseline {
    url: String,
    fim: bool,
}

impl Baseline {
    /// Sends the prompt text the server would use; returns the suggestion and the latency.
    fn complete(
        &self,
        prefix: &str,
        suffix: &str,
        args: &QualityBenchArgs,
        single_line: bool,
    ) -> Result<(String, f64)> {
        let mut body = json!({
            "n_predict": args.max_tokens,
            "temperature": 0.0,
            "top_k": 1,
            "cache_prompt": true,
            "stream": false,
        });
        if single_line {
            body["stop"] = json!(["\n"]);
        }
        let endpoint = if self.fim {
            body["input_prefix"] = json!(prefix);
            body["input_suffix"] = json!(suffix);
            body["input_extra"] = json!([]);
            "infill"
        } else {
            body["prompt"] = json!(prefix);
            "completion"
        };
        let started = Instant::now();
        let mut response = ureq::post(format!("{}/{endpoint}", self.url.trim_end_matches('/')))
            .send_json(&body)
            .with_context(|| format!("llama-server at {}", self.url))?;
        let answer: Value = response.body_mut().read_json()?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        Ok((
            answer["content"].as_str().unwrap_or_default().to_owned(),
            ms,
        ))
    }
}

/// Whether the server asks for several lines here (its `multiLine: auto` rule).
pub(crate) fn multi_line(line_prefix: &str) -> bool {
    line_prefix.trim().is_empty() || crate::lsp::completion::postprocess::opens_block(line_prefix)
}

#[derive(Serialize)]
struct Report {
    model: PathBuf,
    baseline: Option<String>,
    seed: u64,
    files: usize,
    settings: Value,
    ours: Side,
    theirs: Option<Side>,
}

#[derive(Serialize, Default)]
struct Side {
    all: Summary,
    by_kind: Vec<(Kind, Summary)>,
    warm: Option<Summary>,
    answers: Vec<Scored>,
}

impl Side {
    fn new(answers: Vec<Scored>, warm: Option<Vec<Scored>>, kinds: &[Kind]) -> Side {
        let all: Vec<&Scored> = answers.iter().collect();
        Side {
            all: Summary::of(&all),
            by_kind: kinds
                .iter()
                .map(|&k| {
                    (
                        k,
                        Summary::of(&answers.iter().filter(|s| s.kind == k).collect::<Vec<_>>()),
                    )
                })
                .collect(),
            warm: warm.map(|w| Summary::of(&w.iter().collect::<Vec<_>>())),
            answers,
        }
    }
}

/// The directories as absolute paths without links (what the server is told as workspace
/// folders); a missing one is an error.
pub(crate) fn canonical_dirs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    dirs.iter()
        .map(|d| std::fs::canonicalize(d).with_context(|| format!("no such path {}", d.display())))
        .collect()
}

pub(crate) fn run(args: &QualityBenchArgs) -> Result<()> {
    let dirs = canonical_dirs(&args.dirs)?;
    if dirs.is_empty() {
        bail!("give at least one directory of source code");
    }
    let kinds: Vec<Kind> = args
        .kinds
        .iter()
        .map(|k| Kind::parse(k).with_context(|| format!("unknown kind {k} (line, mid, block)")))
        .collect::<Result<_>>()?;
    let paths = corpus(&dirs)?;
    let texts = read_all(&paths);
    let filter = if args.cross_file {
        positions::Filter::CrossFile
    } else {
        positions::Filter::All
    };
    let rels: Vec<String> = paths.iter().map(|p| relative(p, &dirs)).collect();
    let positions = positions::sample(&texts, &rels, &kinds, args.positions, args.seed, filter);
    eprintln!(
        "bench quality: {} positions from {} files ({})",
        positions.len(),
        paths.len(),
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut settings = json!({
        "debounceMs": 0, "debounceMaxMs": 0, "maxTokens": args.max_tokens,
        "precomputeNext": false, "prefillOnOpen": false, "inlineCandidates": 1,
    });
    for (k, v) in &args.settings {
        settings[k] = v.clone();
    }
    let mut client = Client::spawn(&args.model, &[])?;
    client.initialize_in(settings.clone(), &dirs, true)?;
    let status = wait_for_index(&mut client)?;
    let fim = status["result"]["model"]["fim"].as_bool().unwrap_or(false);
    let window_max_chars = settings["windowMaxChars"].as_u64().unwrap_or(4096) as usize;
    let baseline = args.baseline.as_ref().map(|url| Baseline {
        url: url.clone(),
        fim,
    });

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let (mut ours_warm, mut theirs_warm) = (Vec::new(), Vec::new());
    for (n, p) in positions.iter().enumerate() {
        let path = &paths[p.file];
        let name = rels[p.file].clone();
        let uri = url::Url::from_file_path(path)
            .map_or_else(|()| format!("file:///quality/{n}"), |u| u.to_string());
        let rope = Rope::from_str(&p.document);
        let (line, character) = lsp_position(&rope, p.cursor);
        let single_line = !multi_line(p.line_prefix());
        if args.warm {
            // The user had typed up to the line start; the request there fills the cache.
            let line_start = rope.line_to_char(line);
            let mut before = rope.clone();
            before.remove(line_start..p.cursor);
            open(&mut client, &uri, &before.to_string())?;
            client.call(
                "textDocument/inlineCompletion",
                inline_params(&uri, line, 0),
                120,
            )?;
            change(&mut client, &uri, 2, line, p.line_prefix())?;
            let (text, ms) = ask(&mut client, &uri, line, character)?;
            ours_warm.push(score(p, &name, &text, ms));
            close(&mut client, &uri)?;
        }
        open(&mut client, &uri, &p.document)?;
        let (text, ms) = ask(&mut client, &uri, line, character)?;
        let mut scored = score(p, &name, &text, ms);
        let status = client.call("amd/status", Value::Null, 30)?;
        scored.context = status["result"]["context"]["lastUsed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        if args.cross_file {
            let defs = positions::definitions_elsewhere(&texts, &rels, p);
            scored.definition_in_context =
                Some(holds_definition(&scored.context, &defs, &paths, &dirs));
        }
        ours.push(scored);
        close(&mut client, &uri)?;
        if let Some(b) = &baseline {
            let policy = WindowPolicy {
                max_chars: window_max_chars.max(64),
                keep_chars: window_max_chars.max(64) / 2,
            };
            let at = cursor_window(&rope, p.cursor, window_start(&rope, p.cursor, None, policy));
            if args.warm {
                let line_start = rope.line_to_char(line);
                let head = cursor_window(
                    &rope,
                    line_start,
                    window_start(&rope, line_start, None, policy),
                );
                b.complete(&head.prefix, &at.suffix, args, single_line)?;
                let (text, ms) = b.complete(&at.prefix, &at.suffix, args, single_line)?;
                theirs_warm.push(score(p, &name, &clean_baseline(&text, single_line), ms));
            }
            let (text, ms) = b.complete(&at.prefix, &at.suffix, args, single_line)?;
            theirs.push(score(p, &name, &clean_baseline(&text, single_line), ms));
        }
        if (n + 1) % 10 == 0 {
            eprintln!("  {}/{}", n + 1, positions.len());
        }
    }
    let _ = client.shutdown();

    let report = Report {
        model: args.model.clone(),
        baseline: args.baseline.clone(),
        seed: args.seed,
        files: paths.len(),
        settings,
        ours: Side::new(ours, args.warm.then_some(ours_warm), &kinds),
        theirs: baseline.map(|_| Side::new(theirs, args.warm.then_some(theirs_warm), &kinds)),
    };
    print_table(&report, &kinds)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The files' texts (empty where unreadable), with Unix line ends.
pub(crate) fn read_all(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .replace("\r\n", "\n")
        })
        .collect()
}

/// Whether a chunk of `context` (as `amd/status` names them) holds one of `definitions` (file
/// index, 0-based line) of `paths` under `dirs`.
pub(crate) fn holds_definition(
    context: &[String],
    definitions: &[(usize, usize)],
    paths: &[PathBuf],
    dirs: &[PathBuf],
) -> bool {
    definitions.iter().any(|&(f, line)| {
        let rel = relative(&paths[f], dirs);
        context.iter().any(|c| in_chunk(c, &rel, line))
    })
}

/// `path` relative to the directory of `dirs` that holds it, as the context index names it.
pub(crate) fn relative(path: &Path, dirs: &[PathBuf]) -> String {
    path.strip_prefix(
        dirs.iter()
            .find(|d| path.starts_with(d))
            .map_or(Path::new(""), |d| d.as_path()),
    )
    .unwrap_or(path)
    .display()
    .to_string()
}

/// Whether `chunk` (`path:first-last`, or `path:a,b,c` for an outline; 1-based lines, as
/// `amd/status` shows it) is of `rel` and holds the 0-based `line`.
fn in_chunk(chunk: &str, rel: &str, line: usize) -> bool {
    let Some((path, lines)) = chunk.rsplit_once(':') else {
        return false;
    };
    let line = line + 1;
    path == rel
        && match lines.split_once('-') {
            Some((first, last)) => match (first.parse::<usize>(), last.parse::<usize>()) {
                (Ok(first), Ok(last)) => (first..=last).contains(&line),
                _ => false,
            },
            None => lines.split(',').any(|l| l.parse() == Ok(line)),
        }
}

/// `amd/status` once the workspace index for `context` is built (or `context` is off).
pub(crate) fn wait_for_index(client: &mut Client) -> Result<Value> {
    let started = Instant::now();
    loop {
        let status = client.call("amd/status", Value::Null, 30)?;
        let context = &status["result"]["context"];
        let on = context["enabled"] == Value::Bool(true)
            && context["indexed"] == Value::Bool(false)
            && started.elapsed().as_secs() < 120;
        if !on {
            if let Some(stats) = context.get("index").filter(|s| !s.is_null()) {
                eprintln!("bench quality: workspace index {stats}");
            }
            return Ok(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// What llama.vim shows of a llama-server answer: one line where one was asked for, trailing
/// whitespace removed.
pub(crate) fn clean_baseline(text: &str, single_line: bool) -> String {
    let text = if single_line {
        text.lines().next().unwrap_or("")
    } else {
        text
    };
    text.trim_end().to_owned()
}

/// A char offset as an LSP position (UTF-16 columns; the corpus is mostly ASCII).
fn lsp_position(rope: &Rope, cursor: usize) -> (usize, usize) {
    let line = rope.char_to_line(cursor);
    let col = rope
        .slice(rope.line_to_char(line)..cursor)
        .chars()
        .map(char::len_utf16)
        .sum();
    (line, col)
}

fn open(client: &mut Client, uri: &str, text: &str) -> Result<()> {
    client.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": language(uri), "version": 1, "text": text}}),
    )
}

fn change(client: &mut Client, uri: &str, version: i32, line: usize, text: &str) -> Result<()> {
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": version},
            "contentChanges": [{"range": {"start": {"line": line, "character": 0},
                "end": {"line": line, "character": 0}}, "text": text}]}),
    )
}

fn close(client: &mut Client, uri: &str) -> Result<()> {
    client.notify(
        "textDocument/didClose",
        json!({"textDocument": {"uri": uri}}),
    )
}

fn inline_params(uri: &str, line: usize, character: usize) -> Value {
    json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
        "context": {"triggerKind": 2}})
}

/// Asks for an inline completion (trigger kind Automatic); the suggestion from the cursor on.
fn ask(client: &mut Client, uri: &str, line: usize, character: usize) -> Result<(String, f64)> {
    let started = Instant::now();
    let answer = client.call(
        "textDocument/inlineCompletion",
        inline_params(uri, line, character),
        300,
    )?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if let Some(e) = answer.get("error") {
        bail!("the server answered an error: {e}");
    }
    let item = &answer["result"]["items"][0];
    let insert = item["insertText"].as_str().unwrap_or_default();
    // The item replaces the line up to the cursor: the suggestion is what follows that.
    let start = item["range"]["start"]["character"]
        .as_u64()
        .unwrap_or(character as u64) as usize;
    let n_units = character.saturating_sub(start);
    let mut units = 0;
    let skip = insert
        .char_indices()
        .find(|(_, c)| {
            let found = units >= n_units;
            units += c.len_utf16();
            found
        })
        .map_or(insert.len(), |(i, _)| i);
    Ok((insert[skip..].to_owned(), ms))
}

fn language(uri: &str) -> &'static str {
    match uri.rsplit('.').next() {
        Some("rs") => "rust",
        Some("py") => "python",
        Some("c" | "h") => "c",
        Some("cc" | "cpp") => "cpp",
        Some("go") => "go",
        Some("js") => "javascript",
        Some("ts") => "typescript",
        Some("java") => "java",
        Some("lua") => "lua",
        Some("rb") => "ruby",
        _ => "plaintext",
    }
}

fn print_table(report: &Report, kinds: &[Kind]) -> Result<()> {
    let mut out = std::io::stderr().lock();
    let pct = |v: f64| format!("{:.1}%", v * 100.0);
    writeln!(out, "\n| who | positions | exact line | similarity | empty | kept chars | block exact | p50 ms | p95 ms |")?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    let mut row = |who: &str, s: &Summary| {
        writeln!(
            out,
            "| {who} | {} | {} | {:.3} | {} | {} | {} | {:.0} | {:.0} |",
            s.n,
            pct(s.exact_line),
            s.similarity,
            pct(s.empty),
            pct(s.kept),
            s.exact_block.map_or("—".into(), pct),
            s.latency_ms.p50,
            s.latency_ms.p95
        )
    };
    let sides: Vec<(&str, &Side)> = std::iter::once(("amd-lsp", &report.ours))
        .chain(report.theirs.as_ref().map(|t| ("llama-server", t)))
        .collect();
    for (who, side) in &sides {
        row(&format!("{who}, all"), &side.all)?;
    }
    for (i, k) in kinds.iter().enumerate() {
        for (who, side) in &sides {
            row(&format!("{who}, {}", k.name()), &side.by_kind[i].1)?;
        }
    }
    for (who, side) in &sides {
        if let Some(w) = &side.warm {
            row(&format!("{who}, warm"), w)?;
        }
    }
    if let Some(share) = report.ours.all.definition_in_context {
        writeln!(
            out,
            "\ncross-file positions whose prompt held a definition the truth uses: {}",
            pct(share)
        )?;
    }
    Ok(())
}
