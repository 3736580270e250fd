//! Completion requests, from a cursor to cleaned suggestions; shared by
//! `textDocument/inlineCompletion` and `textDocument/completion`.
//!
//! Order of work: snapshot the document (no await before it), serve from the type-through
//! cache if the user is typing through the suggestion on screen, claim the document's
//! latest-wins slot, debounce, then ask the engine. A newer request for the same document
//! wakes this one at once; it answers empty and its engine job is cancelled.

mod background;
pub mod flight;
pub mod latest;
mod plan;
pub mod postprocess;
mod remote;
pub mod rhythm;
pub mod typethrough;
pub mod window;

use std::sync::Arc;
use std::time::{Duration, Instant};

use amd_engine::{Engine, Outcome, Sampling};
use anyhow::Result;
use tower_lsp_server::gen_lsp_types::{Position, Range, Uri};

pub use self::background::prefill_on_open;
use self::flight::{Flight, Verdict};
use self::latest::Ticket;
use self::plan::{place, plan, Gate, Judged, Placed, Plan};
use self::typethrough::Shown;
use self::window::CursorWindow;
use super::config::{ReuseMode, ServerConfig};
use super::state::ServerState;

/// How many other open documents prompt lookup searches, and how many characters of each
/// (the engine tokenizes them per request: 4 × 16 KiB is a few milliseconds).
const LOOKUP_CORPUS_DOCS: usize = 4;
const LOOKUP_CORPUS_CHARS: usize = 16 * 1024;

/// A suggestion the confidence gate hid is shown once the user has typed this many of its
/// characters (leading spaces not counted) without leaving it.
const REVEAL_AFTER_CHARS: usize = 2;

/// Sampling settings of the extra candidates of an invoked completion.
const CANDIDATE_TEMPERATURE: f32 = 0.7;

/// What is being asked.
#[derive(Clone, Debug)]
pub struct SuggestParams {
    pub uri: Uri,
    pub position: Position,
    /// Up to this many distinct suggestions (the first is greedy).
    pub n_candidates: usize,
    /// The completion popup's selected item: the suggestion must extend it.
    pub selected: Option<(Range, String)>,
    /// Explicitly asked for (a key), not triggered by typing.
    pub invoked: bool,
}

/// Suggestions and where they go. Positions are in the client's encoding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Suggestion {
    pub line_start: Position,
    pub cursor: Position,
    /// Start of the identifier that ends at the cursor (for popup items).
    pub word_start: Position,
    /// The cursor's line before the cursor (with the popup's selected text applied).
    pub line_prefix: String,
    /// The identifier that ends at the cursor, in the document as it is.
    pub word: String,
    pub texts: Vec<String>,
}

/// Answers a completion request; `Ok(None)` means no suggestion (superseded, cancelled,
/// no model, or nothing worth showing).
pub async fn suggest(
    state: &Arc<ServerState>,
    params: SuggestParams,
) -> Result<Option<Suggestion>> {
    let started = Instant::now();
    ServerState::bump(&state.counters.n_requests);
    state.interrupt_idle_work();
    if !params.invoked {
        state.record_key(started);
    }
    let config = state.config();

    // Everything up to the first await works on a snapshot taken now.
    let Some(doc) = state.docs.snapshot(&params.uri) else {
        tracing::debug!(uri = %params.uri, "completion for a document that is not open");
        return Ok(None);
    };
    let mut placed = place(state, &config, &doc, &params);
    if let Some(rest) = from_screen(state, &params, &placed.at) {
        ServerState::bump(&state.counters.n_cache_hits);
        // Still the newest request for this document: an older one in flight answers now.
        drop(state.latest.begin(&params.uri));
        placed.suggestion.texts.push(rest);
        state.record_latency(ms_since(started));
        state.record_cache_hit(ms_since(started));
        return Ok(Some(placed.suggestion));
    }

    let ticket = state.latest.begin(&params.uri);
    if let Some(backend) = state.backend() {
        let asked = remote::Asked {
            started,
            version: doc.version,
        };
        return remote::suggest(state, &config, &backend, placed, &params, &ticket, asked).await;
    }
    let Some(engine) = state.engine() else {
        ServerState::bump(&state.counters.n_empty);
        return Ok(None);
    };
    // One greedy suggestion for the text as it is: one a generation in flight may give.
    let flies = config.keep_generating && params.selected.is_none() && params.n_candidates <= 1;
    if let Some(flight) = state.flight(&params.uri).filter(|_| flies) {
        match follow(state, flight, &placed.at, &ticket).await {
            None => return Ok(None),
            Some(Verdict::Answer(text)) => {
                if !fresh(state, &params.uri, doc.version) {
                    return Ok(None);
                }
                ServerState::bump(&state.counters.n_followed);
                state.record_latency(ms_since(started));
                let texts = text.into_iter().collect();
                return Ok(answer(
                    state, &config, &params, &ticket, engine, placed, texts,
                ));
            }
            Some(Verdict::Failed(e)) => return Err(anyhow::anyhow!(e)),
            Some(Verdict::Leave | Verdict::Wait) => state.end_flight(&params.uri),
        }
    } else if !flies {
        state.end_flight(&params.uri);
    }
    let plan = plan(state, &config, &engine, &placed.at, &params);
    // The prompt goes into the KV cache now, while the debounce runs: that work is kept
    // whatever comes next (the next keystroke's prompt shares it), and the job after the
    // debounce then only generates. Dropped (superseded), it stops between chunks.
    let _prefill = (state.reuse == ReuseMode::Full)
        .then(|| engine.submit(plan.prefill_job(&params.uri, &config)));
    let Some(debounce_ms) = debounce(state, &config, &params, &ticket).await else {
        return Ok(None);
    };
    let after_debounce = Instant::now();
    let generated = if flies {
        let job = plan.job(&engine, Sampling::Greedy, &params.uri, &config);
        let flight = Flight::start(
            state,
            &engine,
            job,
            &params.uri,
            &placed.at,
            plan.multi_line,
            Gate::of(&config),
        );
        state.set_flight(&params.uri, flight.clone());
        match follow(state, flight, &placed.at, &ticket).await {
            None => None,
            Some(Verdict::Answer(text)) => {
                Some((text.into_iter().collect(), ms_since(after_debounce)))
            }
            Some(Verdict::Failed(e)) => return Err(anyhow::anyhow!(e)),
            // Its own flight, asked where the cursor is: it cannot disagree.
            Some(Verdict::Leave | Verdict::Wait) => None,
        }
    } else {
        generate(state, &config, &engine, &plan, &placed.at, &params, &ticket).await?
    };
    let Some((texts, engine_ms)) = generated else {
        return Ok(None);
    };
    if !fresh(state, &params.uri, doc.version) {
        return Ok(None);
    }
    state.record_latency(ms_since(started));
    state.record_overhead(ms_since(started) - debounce_ms - engine_ms);
    state.record_debounce(debounce_ms, ms_since(after_debounce));
    Ok(answer(
        state, &config, &params, &ticket, engine, placed, texts,
    ))
}

/// Whether the document is still at `version`. An answer made for text the user has changed
/// since (a paste, an undo, typing a popup client did not ask about) would land on the wrong
/// line: it is dropped.
fn fresh(state: &ServerState, uri: &Uri, version: i32) -> bool {
    let fresh = state.docs.version(uri) == Some(version);
    if !fresh {
        ServerState::bump(&state.counters.n_stale);
    }
    fresh
}

/// The answer with `texts`: remembered as the suggestion on screen, and counted.
fn answer(
    state: &Arc<ServerState>,
    config: &ServerConfig,
    params: &SuggestParams,
    ticket: &Ticket,
    engine: Arc<Engine>,
    mut placed: Placed,
    texts: Vec<String>,
) -> Option<Suggestion> {
    let mut suggestion = std::mem::take(&mut placed.suggestion);
    suggestion.texts = texts;
    if params.selected.is_none() {
        remember(state, config, params, ticket, engine, placed, &suggestion);
    }
    if suggestion.texts.is_empty() {
        ServerState::bump(&state.counters.n_empty);
        return None;
    }
    state.showed(&params.uri);
    Some(suggestion)
}

/// Waits for `flight` until it answers the request at `at` or the request should ask the
/// model itself (never [`Verdict::Wait`]); `None` when a newer request superseded this one.
async fn follow(
    state: &ServerState,
    mut flight: Flight,
    at: &CursorWindow,
    ticket: &Ticket,
) -> Option<Verdict> {
    loop {
        match flight.judge(at) {
            Verdict::Wait => {
                if !unless_superseded(state, ticket, flight.changed()).await? {
                    return Some(Verdict::Leave);
                }
            }
            verdict => return Some(verdict),
        }
    }
}

/// Waits out the debounce; `None` when a newer request superseded this one meanwhile, else the
/// milliseconds waited.
async fn debounce(
    state: &ServerState,
    config: &ServerConfig,
    params: &SuggestParams,
    ticket: &Ticket,
) -> Option<f64> {
    let wait_ms = state.debounce_wait_ms(config, &params.uri, params.invoked);
    let debounce_started = Instant::now();
    let sleep = tokio::time::sleep(Duration::from_millis(wait_ms));
    unless_superseded(state, ticket, sleep).await?;
    Some(ms_since(debounce_started))
}

/// `work`'s output, or `None` (counted as superseded) when a newer request for the document
/// comes first. Biased: a newer request that arrived as the work finished wins over its result.
/// Dropping `work` cancels it (an engine job, a backend request).
async fn unless_superseded<T>(
    state: &ServerState,
    ticket: &Ticket,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        () = ticket.superseded.cancelled() => {
            ServerState::bump(&state.counters.n_superseded);
            None
        }
        out = work => Some(out),
    }
}

/// The rest of the suggestion on screen when the user is typing through it (or of the next
/// one, computed in the background, when they accepted it). Only for a request that wants one
/// suggestion: one that asks for several (an explicit invocation: the user wants
/// alternatives) goes to the model.
fn from_screen(state: &ServerState, params: &SuggestParams, at: &CursorWindow) -> Option<String> {
    if params.selected.is_some() || params.n_candidates > 1 {
        return None;
    }
    if let Some(rest) = state
        .shown(&params.uri)
        .as_ref()
        .and_then(|s| s.remaining(at))
    {
        return Some(rest.to_owned());
    }
    // The shown suggestion was accepted and the next one is ready.
    if let Some(next) = state.next(&params.uri) {
        if let Some(rest) = next.remaining(at).map(str::to_owned) {
            state.set_shown(&params.uri, Some(next));
            state.set_next(&params.uri, None);
            ServerState::bump(&state.counters.n_precomputed_hits);
            return Some(rest);
        }
    }
    // The gate hid a suggestion and the user has typed its start: now it is worth showing.
    let held = state.held(&params.uri)?;
    let confirmed = held
        .typed(at)
        .is_some_and(|t| t.trim_start().chars().count() >= REVEAL_AFTER_CHARS);
    let rest = held.remaining(at).filter(|_| confirmed)?.to_owned();
    state.set_shown(&params.uri, Some(held));
    state.set_held(&params.uri, None);
    ServerState::bump(&state.counters.n_revealed);
    Some(rest)
}

/// Asks the engine for the request's candidates (the first greedy, the others sampled) and
/// cleans them. `None` when a newer request superseded this one, the job was cancelled or
/// the prompt refused; otherwise the distinct texts and the time spent waiting for the engine.
async fn generate(
    state: &ServerState,
    config: &ServerConfig,
    engine: &Engine,
    plan: &Plan,
    at: &CursorWindow,
    params: &SuggestParams,
    ticket: &Ticket,
) -> Result<Option<(Vec<String>, f64)>> {
    let placement = plan.placement(at);
    let mut texts = Vec::new();
    let mut engine_ms = 0.0;
    for i in 0..params.n_candidates.max(1) {
        let sampling = if i == 0 {
            Sampling::Greedy
        } else {
            Sampling::Random {
                temperature: CANDIDATE_TEMPERATURE,
                top_k: 40,
                top_p: 0.95,
                seed: i as u32,
            }
        };
        // Dropping `job` (superseded) cancels the engine's work.
        let job = engine.submit(plan.job(engine, sampling, &params.uri, config));
        let job_started = Instant::now();
        let Some(outcome) = unless_superseded(state, ticket, job).await else {
            return Ok(None);
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) if e.is_bad_request() => {
                // An empty prompt (cursor at the top of a file, no BOS), one too long: no
                // suggestion, and the caches stay.
                tracing::debug!(error = %e, "no suggestion for this prompt");
                ServerState::bump(&state.counters.n_empty);
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        engine_ms += ms_since(job_started);
        let c = match outcome {
            Outcome::Cancelled(_) => {
                ServerState::bump(&state.counters.n_cancelled);
                return Ok(None);
            }
            Outcome::Completed(c) => c,
        };
        state.set_last_job(c.stats);
        state.context.answered(&params.uri);
        match Gate::of(config).judge(&c, &placement) {
            Judged::Nothing => {}
            Judged::Unsure(text) => {
                ServerState::bump(&state.counters.n_unsure);
                if i == 0 {
                    hold(state, &params.uri, at, text);
                }
            }
            Judged::Show(text) => {
                if !texts.contains(&text) {
                    texts.push(text);
                }
            }
        }
    }
    Ok(Some((texts, engine_ms)))
}

/// Keeps `text`, hidden by the confidence gate at `at`, to show once the user types its start
/// ([`REVEAL_AFTER_CHARS`]). One hidden earlier that the user is still typing through stays:
/// what they typed of it counts.
fn hold(state: &ServerState, uri: &Uri, at: &CursorWindow, text: String) {
    if state.held(uri).is_some_and(|h| h.remaining(at).is_some()) {
        return;
    }
    state.set_held(uri, Some(Shown::new(at, text)));
}

/// Keeps the answered suggestion as the one on screen (for the type-through path) and starts
/// computing the one that follows it.
fn remember(
    state: &Arc<ServerState>,
    config: &ServerConfig,
    params: &SuggestParams,
    ticket: &Ticket,
    engine: Arc<Engine>,
    placed: Placed,
    suggestion: &Suggestion,
) {
    let first = suggestion.texts.first();
    if first.is_some() {
        state.set_held(&params.uri, None);
    }
    state.set_shown(
        &params.uri,
        first.map(|t| Shown::new(&placed.at, t.clone())),
    );
    state.set_next(&params.uri, None);
    match first {
        Some(text)
            if config.precompute_next
                && params.n_candidates <= 1
                && state.reuse == ReuseMode::Full =>
        {
            background::precompute_next(state, params, ticket, engine, placed, text);
        }
        _ => {}
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
