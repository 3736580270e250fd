//! The same typist against llama-server (`bench replay --baseline URL`, variant
//! `llama-server`), driven as llama.vim drives it: `/infill` with the 256 lines before the
//! cursor's line as `input_prefix`, the cursor's line up to the cursor as `prompt` (after
//! `FIM_MID`, so the rest stays cached), the rest of the line and 64 lines after it as
//! `input_suffix` (`/completion` with the prefix for a model without FIM), `cache_prompt`,
//! sent through the `backend` setting's client (`crate::backend`);
//! one request in flight (a new one goes out when it ends, for the text as it is then; an
//! answer for older text is not shown); and llama.vim's client-side type-through: a typed
//! character that the suggestion on screen starts with leaves the rest on screen without a
//! request. Greedy, with the server's budget (`--max-tokens`) and its single-line rule.

use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Result;
use ropey::Rope;

use super::script::{Action, KeyKind, Step};
use super::typist;
use super::{Quantiles, Run, Taken, TypistFigures};
use crate::backend::{self, Backend, BackendConfig};
use crate::cli::ReplayBenchArgs;

/// Lines before and after the cursor's line llama.vim sends (its `n_prefix`, `n_suffix`).
const N_PREFIX_LINES: usize = 256;
const N_SUFFIX_LINES: usize = 64;

struct Ask {
    doc: usize,
    version: u64,
    prefix: String,
    middle: String,
    suffix: String,
    single_line: bool,
}

struct Answered {
    doc: usize,
    version: u64,
    text: String,
    sent: Instant,
    arrived: Instant,
}

/// What llama.vim sends for a cursor at (`line`, char column `col`) of `rope`.
fn ask(rope: &Rope, doc: usize, version: u64, line: usize, col: usize) -> Ask {
    let from = line.saturating_sub(N_PREFIX_LINES);
    let prefix = rope
        .slice(rope.line_to_char(from)..rope.line_to_char(line))
        .to_string();
    let line_start = rope.line_to_char(line);
    let middle = rope.slice(line_start..line_start + col).to_string();
    let to = (line + 1 + N_SUFFIX_LINES).min(rope.len_lines());
    let end = if to >= rope.len_lines() {
        rope.len_chars()
    } else {
        rope.line_to_char(to)
    };
    let suffix = rope.slice(line_start + col..end).to_string();
    let single_line = !crate::commands::bench::quality::multi_line(&middle);
    Ask {
        doc,
        version,
        prefix,
        middle,
        suffix,
        single_line,
    }
}

/// Asks llama-server through the `backend` client (the same llama.vim split of the text, FIM
/// when the model has it), without a time limit or cancellation, and cleans the answer.
fn complete(backend: &Backend, a: &Ask, max_tokens: u32) -> Result<String> {
    let ask = backend::Ask {
        prefix: a.prefix.clone(),
        middle: a.middle.clone(),
        suffix: a.suffix.clone(),
        max_tokens,
        single_line: a.single_line,
        ..backend::Ask::default()
    };
    let text = backend
        .complete(&ask, &AtomicBool::new(false))?
        .unwrap_or_default();
    Ok(crate::commands::bench::quality::clean_baseline(
        &text,
        a.single_line,
    ))
}

/// Replays `steps` against llama-server at `url` with the typist (accepting when
/// `args.accept`).
pub(crate) fn replay(args: &ReplayBenchArgs, url: &str, steps: &[Step]) -> Result<Run> {
    let backend = Arc::new(Backend::new(BackendConfig {
        url: url.to_owned(),
        model: None,
        api_key_env: None,
        api: backend::Api::LlamaServer,
        // A slow CPU may take tens of seconds for a first prompt: the bench waits.
        timeout_ms: 3_600_000,
    })?);
    // Asked before the clock starts (the first request would ask otherwise).
    backend.uses_fim()?;
    let (ask_tx, ask_rx) = mpsc::channel::<Ask>();
    let (done_tx, done_rx) = mpsc::channel::<Result<Answered>>();
    let worker = {
        let (backend, max_tokens) = (Arc::clone(&backend), args.max_tokens);
        std::thread::spawn(move || {
            for a in ask_rx {
                let sent = Instant::now();
                let text = complete(&backend, &a, max_tokens);
                let _ = done_tx.send(text.map(|text| Answered {
                    doc: a.doc,
                    version: a.version,
                    text,
                    sent,
                    arrived: Instant::now(),
                }));
            }
        })
    };

    let mut run = Run {
        variant: "llama-server".into(),
        ..Run::default()
    };
    let mut texts: Vec<Rope> = Vec::new();
    let mut versions: Vec<u64> = Vec::new();
    let mut cursors: Vec<(u32, u32)> = Vec::new();
    let mut in_flight = false;
    let mut wanted: Option<usize> = None;
    // (doc, version it is for, text, on screen since, latency ms of its answer)
    let mut screen: Option<(usize, u64, String, Instant, f64)> = None;
    let mut latencies = Vec::new();
    let mut shown = Vec::new();
    let mut takes: Vec<Taken> = Vec::new();
    let (mut skipped_ms, mut skip_to) = (0u64, 0usize);
    let reaction = Duration::from_secs_f64(args.reaction_ms as f64 / 1000.0 / args.speed);
    let started = Instant::now();

    let send = |texts: &[Rope], cursors: &[(u32, u32)], versions: &[u64], doc: usize| {
        let rope = &texts[doc];
        let (line, col16) = cursors[doc];
        let line_start = rope.line_to_char(line as usize);
        let col =
            rope.utf16_cu_to_char(rope.char_to_utf16_cu(line_start) + col16 as usize) - line_start;
        ask(rope, doc, versions[doc], line as usize, col)
    };
    for (i, step) in steps.iter().enumerate() {
        if i < skip_to {
            continue;
        }
        let due = started
            + Duration::from_secs_f64((step.at_ms - skipped_ms) as f64 / 1000.0 / args.speed);
        // Answers that came while waiting for the key.
        loop {
            let wait = due.saturating_duration_since(Instant::now());
            let got = if wait.is_zero() {
                done_rx.try_recv().ok()
            } else {
                done_rx.recv_timeout(wait).ok()
            };
            let Some(got) = got else { break };
            let a = got?;
            in_flight = false;
            run.requests += 1;
            // Answers are read before the next key is applied: one for the text as it is now
            // arrived before anything changed it.
            if versions.get(a.doc) == Some(&a.version) && !a.text.is_empty() {
                let ms = a.arrived.duration_since(a.sent).as_secs_f64() * 1000.0;
                latencies.push(ms);
                run.suggestions += 1;
                shown.push(a.text.clone());
                screen = Some((a.doc, a.version, a.text, a.arrived, ms));
            } else {
                run.empty += 1;
            }
            if let Some(doc) = wanted.take() {
                ask_tx.send(send(&texts, &cursors, &versions, doc))?;
                in_flight = true;
            }
        }
        match &step.action {
            Action::Open { text, .. } => {
                texts.push(Rope::from_str(text));
                versions.push(0);
                cursors.push((0, 0));
            }
            Action::Close { .. } => {}
            Action::Key {
                doc,
                start,
                end,
                text,
                cursor,
                kind,
            } => {
                let now = Instant::now();
                let on_screen = screen
                    .as_ref()
                    .filter(|s| s.0 == *doc && s.1 == versions[*doc]);
                let take = on_screen
                    .filter(|s| args.accept && *kind == KeyKind::Type && s.3 + reaction <= now)
                    .and_then(|s| typist::take(&s.2, &typist::upcoming(steps, i)));
                // What goes in, where the cursor ends, and the end of the replaced range (an
                // accepted text is inserted at the cursor).
                let (typed, to, edit_end) = match take {
                    Some(t) => {
                        let last = i + t.chars - 1;
                        let Action::Key { cursor: to, .. } = &steps[last].action else {
                            unreachable!("upcoming() covers Key steps only")
                        };
                        let typed: String =
                            typist::upcoming(steps, i).chars().take(t.chars).collect();
                        let s = on_screen.expect("taken from the screen");
                        takes.push(Taken {
                            take: t,
                            text: s.2.clone(),
                            since: s.3,
                            at: now,
                            answer_ms: s.4,
                        });
                        run.keystrokes += t.keys;
                        skip_to = last + 1;
                        skipped_ms += steps[last].at_ms - step.at_ms;
                        (typed, *to, *start)
                    }
                    None => {
                        run.keystrokes += 1;
                        (text.clone(), *cursor, *end)
                    }
                };
                let rest = on_screen
                    .filter(|s| {
                        *start == *end && s.2.starts_with(&typed) && s.2.len() > typed.len()
                    })
                    .map(|s| (s.2[typed.len()..].to_owned(), s.3, s.4));
                typist::apply(&mut texts[*doc], *start, edit_end, &typed);
                versions[*doc] += 1;
                cursors[*doc] = to;
                match rest {
                    // llama.vim's type-through: the rest stays on screen, no request.
                    Some((rest, since, ms)) => {
                        screen = Some((*doc, versions[*doc], rest, since, ms));
                    }
                    None => {
                        screen = None;
                        if in_flight {
                            wanted = Some(*doc);
                        } else {
                            ask_tx.send(send(&texts, &cursors, &versions, *doc))?;
                            in_flight = true;
                        }
                    }
                }
            }
        }
    }
    drop(ask_tx);
    // The last answers.
    while let Ok(got) = done_rx.recv_timeout(Duration::from_secs(120)) {
        got?;
        run.requests += 1;
    }
    let _ = worker.join();
    run.seconds = started.elapsed().as_secs_f64();
    run.latency_ms = Quantiles::of(&latencies);
    run.typist = Some(TypistFigures::new(
        steps,
        &texts,
        run.keystrokes,
        shown,
        &takes,
    ));
    Ok(run)
}
