//! `amd-lsp bench index`: what the workspace index behind `context` costs on a real tree.

use std::time::Instant;

use anyhow::Result;

use super::replay::Quantiles;
use crate::cli::IndexBenchArgs;
use crate::client::rss_mib;
use crate::lsp::context::index::{Index, Limits};
use crate::lsp::context::terms;

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
    let report = serde_json::json!({
        "roots": roots,
        "index": index.stats,
        "rssMib": { "before": before, "after": after, "added": after - before },
        "rankMs": q,
        "queries": times.len(),
    });
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
