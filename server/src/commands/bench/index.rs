//! `amd-lsp bench index`: what the workspace index behind `context` costs on a real tree.

use std::time::Instant;

use anyhow::{Context as _, Result};

use ropey::Rope;

use super::quality::positions::{self, Filter, Kind};
use super::quality::{corpus, holds_definition, read_all, relative};
use super::replay::Quantiles;
use crate::cli::IndexBenchArgs;
use crate::client::rss_mib;
use crate::lsp::completion::window::{cursor_window, window_start, WindowPolicy};
use crate::lsp::context::index::{Index, Limits};
use crate::lsp::context::{self, terms};

pub(crate) fn run(args: &IndexBenchArgs) -> Result<()> {
    let roots = super::quality::canonical_dirs(&args.dirs)?;
    let pid = std::process::id();
    let before = rss_mib(pid);
    let index = Index::build(
        &roots,
        Limits {
            max_files: args.max_files as usize,
            max_file_bytes: crate::lsp::context::MAX_FILE_BYTES,
        },
    );
    let after = rss_mib(pid);
    // Queries as the server makes them: the identifiers of 24 lines of an indexed file.
    let sources: Vec<String> = roots
        .iter()
        .flat_map(|r| {
            ignore::WalkBuilder::new(r)
                .build()
                .flatten()
                .filter(|e| index.covers(e.path()))
                .take(args.queries)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect::<Vec<_>>()
        })
        .take(args.queries)
        .collect();
    let mut times = Vec::new();
    for text in &sources {
        let lines: Vec<&str> = text.lines().collect();
        let mid = lines.len() / 2;
        let query = lines[mid.saturating_sub(24)..mid].join("\n");
        let words: Vec<&str> = terms::identifiers(&query).collect();
        let started = Instant::now();
        let ranked = index.rank(&words, &[], &[], None, 32);
        times.push(started.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(ranked);
    }
    let q = Quantiles::of(&times);
    let mut report = serde_json::json!({
        "roots": roots,
        "index": index.stats,
        "rssMib": { "before": before, "after": after, "added": after - before },
        "rankMs": q,
        "queries": times.len(),
    });
    if args.positions > 0 {
        report["crossFile"] = retrieval(&index, &roots, args)?;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if let Some(answers) = report.get_mut("crossFile") {
            answers["answers"] = serde_json::Value::Null;
        }
    }
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Whether `context` finds what cross-file positions need, without a model: the `line`
/// positions `bench quality --cross-file` samples (same seed, same positions), each asked as a
/// cold request with the full window would ask; the share whose chosen chunks hold the
/// definition of a name the truth uses that only another file defines.
fn retrieval(
    index: &Index,
    roots: &[std::path::PathBuf],
    args: &IndexBenchArgs,
) -> Result<serde_json::Value> {
    let paths = corpus(roots)?;
    let texts = read_all(&paths);
    let rels: Vec<String> = paths.iter().map(|p| relative(p, roots)).collect();
    let positions = positions::sample(
        &texts,
        &rels,
        &[Kind::Line],
        args.positions,
        args.seed,
        Filter::CrossFile,
    );
    // The window of a request whose first window is not limited (`firstSuggestionMs` 0).
    let policy = WindowPolicy {
        max_chars: 4096,
        keep_chars: 2048,
    };
    let mut found = Vec::new();
    let mut chunks_per_position = Vec::new();
    let mut answers = Vec::new();
    let mut choose_ms = Vec::new();
    for p in &positions {
        let rope = Rope::from_str(&p.document);
        let at = cursor_window(&rope, p.cursor, window_start(&rope, p.cursor, None, policy));
        // What the server's `choose` does on a new query, timed as a whole: the document's
        // text, ranking, the wanted definitions over the whole document, reading the files.
        let started = Instant::now();
        let text = rope.to_string();
        let query = context::query_text(&at);
        let ranked = context::rank(
            index,
            &query,
            &at,
            &context::head_of(&rope),
            Some(&paths[p.file]),
        );
        let wanted = if args.no_definitions {
            Vec::new()
        } else {
            context::wanted_definitions(index, &text, Some(&paths[p.file]))
        };
        let once =
            context::ReadOnce::new(|path: &std::path::Path| std::fs::read_to_string(path).ok());
        let read = |path: &std::path::Path| once.get(path);
        let members = if args.no_members {
            Vec::new()
        } else {
            let head = context::head_of(&rope);
            let imports = terms::Imports::of(&head);
            let files = index.module_files(&imports, Some(&paths[p.file]), context::MEMBER_FILES);
            context::members(files, &imports, &query, &at, read)
        };
        let ranked = context::members_first(members, ranked);
        let budget = args.context_tokens;
        let chosen = context::assemble(ranked, wanted, budget, budget, &[], read);
        choose_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let names: Vec<String> = chosen.iter().map(|(r, _)| context::describe(r)).collect();
        let definitions = positions::definitions_elsewhere(&texts, &rels, p);
        let hit = holds_definition(&names, &definitions, &paths, roots);
        found.push(hit);
        chunks_per_position.push(names.len() as f64);
        answers.push(serde_json::json!({
            "file": rels[p.file],
            "line": p.line + 1,
            "truth": p.truth,
            "definitions": definitions
                .iter()
                .map(|&(f, line)| format!("{}:{}", rels[f], line + 1))
                .collect::<Vec<_>>(),
            "chunks": names,
            "found": hit,
        }));
    }
    let n = positions.len().max(1) as f64;
    Ok(serde_json::json!({
        "positions": positions.len(),
        "seed": args.seed,
        "contextTokens": args.context_tokens,
        "definitionInContext": found.iter().filter(|&&f| f).count() as f64 / n,
        "chunksPerPosition": chunks_per_position.iter().sum::<f64>() / n,
        "chooseMs": Quantiles::of(&choose_ms),
        "answers": answers,
    }))
}
