//! Completion requests, from a cursor to cleaned suggestions; shared by
//! `textDocument/inlineCompletion` and `textDocument/completion`.
//!
//! Order of work: snapshot the document (no await before it), serve from the type-through
//! cache if the user is typing through the suggestion on screen, claim the document's
//! latest-wins slot, debounce, then ask the engine. A newer request for the same document
//! wakes this one at once; it answers empty and its engine job is cancelled.

pub mod latest;
pub mod postprocess;
pub mod rhythm;
pub mod typethrough;
pub mod window;

use std::sync::Arc;
use std::time::{Duration, Instant};

use amd_engine::{
    CompletionRequest, DraftLength, Drafter, Engine, ModelInfo, ModelRole, Outcome, Prompt,
    Sampling, Speculation, StopRules,
};
use anyhow::Result;
use ropey::Rope;
use tower_lsp_server::gen_lsp_types::{Position, Range, Uri};

use self::latest::Ticket;
use self::postprocess::Around;
use self::typethrough::Shown;
use self::window::{surroundings, window_start, Surroundings, WindowPolicy};
use super::config::{MultiLine, ReuseMode, ServerConfig, SpeculationMode, UseTarget};
use super::state::ServerState;

/// How many other open documents prompt lookup searches, and how many characters of each
/// (the engine tokenizes them per request: 4 × 16 KiB is a few milliseconds).
const LOOKUP_CORPUS_DOCS: usize = 4;
const LOOKUP_CORPUS_CHARS: usize = 16 * 1024;

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
#[derive(Clone, Debug, PartialEq, Eq)]
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
    let enc = state.encoding();
    let config = state.config();

    // Everything up to the first await works on a snapshot taken now.
    let Some(doc) = state.docs.snapshot(&params.uri) else {
        tracing::debug!(uri = %params.uri, "completion for a document that is not open");
        return Ok(None);
    };
    let doc_cursor = doc.char_offset(params.position, enc);
    let cursor_pos = doc.position(doc_cursor, enc);
    let line_start_char = doc.rope.line_to_char(doc.rope.char_to_line(doc_cursor));
    let word_start_char = word_start(&doc.rope, line_start_char, doc_cursor);

    let (rope, cursor) = match &params.selected {
        Some((range, text)) if doc.char_offset(range.end, enc) == doc_cursor => {
            let start = doc
                .char_offset(range.start, enc)
                .min(doc_cursor)
                .max(line_start_char);
            let mut rope = doc.rope.clone();
            rope.remove(start..doc_cursor);
            rope.insert(start, text);
            (rope, start + text.chars().count())
        }
        _ => (doc.rope.clone(), doc_cursor),
    };
    let sticky = match ReuseMode::from_env() {
        ReuseMode::Full => state.window_start(&params.uri),
        ReuseMode::Prefix | ReuseMode::Cold => None,
    };
    let mut policy = WindowPolicy {
        max_chars: config.window_max_chars.max(64),
        keep_chars: config.window_max_chars.max(64) / 2,
    };
    let context_max = config.context_max_tokens as usize;
    if !window::slides(sticky, cursor, policy) && ReuseMode::from_env() == ReuseMode::Full {
        let rate = state.engine().and_then(|e| e.counters().prefill_rate());
        // Context from other files takes its share of the first suggestion's time.
        let (window_ms, context_tokens) = window::share_first_budget(
            config.first_suggestion_ms,
            rate,
            config.context,
            context_max,
        );
        policy.keep_chars = window::first_window_chars(policy, window_ms, rate);
        if params.selected.is_none() {
            state.context.start_budget(&params.uri, context_tokens);
        }
        tracing::debug!(
            keep_chars = policy.keep_chars,
            ?rate,
            "prompt window starts afresh"
        );
    } else if params.selected.is_none() {
        state.context.grow_budget(&params.uri, context_max);
    }
    let start = window_start(&rope, cursor, sticky, policy);
    if params.selected.is_none() {
        state.set_window_start(&params.uri, start);
    }
    let at = surroundings(&rope, cursor, start);
    let mut suggestion = Suggestion {
        line_start: Position {
            line: cursor_pos.line,
            character: 0,
        },
        cursor: cursor_pos,
        word_start: doc.position(word_start_char, enc),
        line_prefix: at.line_prefix.clone(),
        word: doc.rope.slice(word_start_char..doc_cursor).to_string(),
        texts: Vec::new(),
    };

    // The suggestion on screen answers a request that wants one; one that asks for several
    // candidates (an explicit invocation: the user wants alternatives) goes to the model.
    if params.selected.is_none() && params.n_candidates <= 1 {
        let on_screen = state.shown(&params.uri);
        let rest = on_screen
            .as_ref()
            .and_then(|s| s.remaining(&at))
            .map(str::to_owned)
            .or_else(|| {
                // The shown suggestion was accepted and the next one is ready.
                let next = state.next(&params.uri)?;
                let rest = next.remaining(&at)?.to_owned();
                state.set_shown(&params.uri, Some(next));
                state.set_next(&params.uri, None);
                ServerState::bump(&state.counters.n_precomputed_hits);
                Some(rest)
            });
        if let Some(rest) = rest {
            ServerState::bump(&state.counters.n_cache_hits);
            // Still the newest request for this document: an older one in flight answers now.
            drop(state.latest.begin(&params.uri));
            suggestion.texts.push(rest);
            state.record_latency(ms_since(started));
            state.record_cache_hit(ms_since(started));
            return Ok(Some(suggestion));
        }
    }

    let ticket = state.latest.begin(&params.uri);
    let Some(engine) = state.engine() else {
        ServerState::bump(&state.counters.n_empty);
        return Ok(None);
    };

    let Plan {
        prompt,
        model,
        speculation,
        multi_line,
    } = plan(state, &config, &engine, &at, &params);
    // The prompt goes into the KV cache now, while the debounce runs: that work is kept
    // whatever comes next (the next keystroke's prompt shares it), and the job after the
    // debounce then only generates. Dropped (superseded), it stops between chunks.
    let _prefill = (ReuseMode::from_env() == ReuseMode::Full).then(|| {
        engine.submit(CompletionRequest {
            max_tokens: 0,
            speculation: None,
            ..request(
                prompt.clone(),
                model,
                Sampling::Greedy,
                &params.uri,
                &config,
            )
        })
    });
    let wait_ms = if params.invoked {
        config.debounce_ms
    } else {
        state.debounce_wait_ms(&config)
    };
    let debounce_started = Instant::now();
    tokio::select! {
        biased;
        () = ticket.superseded.cancelled() => {
            ServerState::bump(&state.counters.n_superseded);
            return Ok(None);
        }
        () = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
    }
    let debounce_ms = ms_since(debounce_started);
    let after_debounce = Instant::now();
    let mut waited_ms = debounce_ms;
    let around = Around {
        line_prefix: &at.line_prefix,
        line_suffix: &at.line_suffix,
        next_lines: at.next_lines(),
        multi_line,
    };
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
        let job = engine.submit(CompletionRequest {
            max_tokens: max_tokens(&config, model_info(&engine, model)),
            stop: StopRules {
                stop_strings: Vec::new(),
                single_line: !multi_line,
            },
            speculation: speculation.clone(),
            ..request(prompt.clone(), model, sampling, &params.uri, &config)
        });
        // Dropping `job` (superseded) cancels the engine's work.
        let job_started = Instant::now();
        // Biased: a newer request that arrived as the job finished wins over its result.
        let outcome = tokio::select! {
            biased;
            () = ticket.superseded.cancelled() => {
                ServerState::bump(&state.counters.n_superseded);
                return Ok(None);
            }
            outcome = job => match outcome {
                Ok(outcome) => outcome,
                Err(e) if e.is_bad_request() => {
                    // An empty prompt (cursor at the top of a file, no BOS), one too long: no
                    // suggestion, and the caches stay.
                    tracing::debug!(error = %e, "no suggestion for this prompt");
                    ServerState::bump(&state.counters.n_empty);
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            },
        };
        waited_ms += ms_since(job_started);
        match outcome {
            Outcome::Cancelled(_) => {
                ServerState::bump(&state.counters.n_cancelled);
                return Ok(None);
            }
            Outcome::Completed(c) => {
                state.set_last_job(c.stats);
                if !confident(&c, config.min_confidence) {
                    ServerState::bump(&state.counters.n_unsure);
                    continue;
                }
                if let Some(text) = postprocess::clean(&c.text, &around) {
                    if !suggestion.texts.contains(&text) {
                        suggestion.texts.push(text);
                    }
                }
            }
        }
    }
    if state.docs.version(&params.uri) != Some(doc.version) {
        // Made for text the user has changed since (a paste, an undo, typing a popup client
        // did not ask about): its range and text would land on the wrong line.
        ServerState::bump(&state.counters.n_stale);
        return Ok(None);
    }
    state.record_latency(ms_since(started));
    state.record_overhead(ms_since(started) - waited_ms);
    state.record_debounce(debounce_ms, ms_since(after_debounce));
    if params.selected.is_none() {
        let shown = suggestion.texts.first().map(|t| Shown::new(&at, t.clone()));
        state.set_shown(&params.uri, shown);
        state.set_next(&params.uri, None);
        match suggestion.texts.first() {
            Some(text)
                if config.precompute_next
                    && params.n_candidates <= 1
                    && ReuseMode::from_env() == ReuseMode::Full =>
            {
                precompute_next(state, &params, &ticket, engine, rope, cursor, start, text);
            }
            _ => {}
        }
    }
    if suggestion.texts.is_empty() {
        ServerState::bump(&state.counters.n_empty);
        return Ok(None);
    }
    ServerState::bump(&state.counters.n_suggestions);
    Ok(Some(suggestion))
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The char offset where the identifier ending at `cursor` starts (not before `line_start`).
fn word_start(rope: &Rope, line_start: usize, cursor: usize) -> usize {
    let line = rope.slice(line_start..cursor);
    let n_word = line
        .chars_at(line.len_chars())
        .reversed()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .count();
    cursor - n_word
}

/// Computes, in the background and once the user is idle, the suggestion that follows
/// `accepted` once it is accepted (inserted at `cursor`), for the type-through path to serve. The next request for the
/// document supersedes it (a keystroke means the user did something else, or accepted before
/// it was ready: then the model is asked as usual, its prompt already mostly in the cache).
#[allow(clippy::too_many_arguments)]
fn precompute_next(
    state: &Arc<ServerState>,
    params: &SuggestParams,
    ticket: &Ticket,
    engine: Arc<Engine>,
    mut rope: Rope,
    cursor: usize,
    start: usize,
    accepted: &str,
) {
    // The request's own claim, passed on only while no newer request has arrived.
    let Some(ticket) = state.latest.pass_on(&params.uri, ticket) else {
        return;
    };
    rope.insert(cursor, accepted);
    let at = surroundings(&rope, cursor + accepted.chars().count(), start);
    let config = state.config();
    let Plan {
        prompt,
        model,
        speculation,
        multi_line,
    } = plan(state, &config, &engine, &at, params);
    let request = CompletionRequest {
        max_tokens: max_tokens(&config, model_info(&engine, model)),
        stop: StopRules {
            stop_strings: Vec::new(),
            single_line: !multi_line,
        },
        speculation,
        ..request(prompt, model, Sampling::Greedy, &params.uri, &config)
    };
    // Only once the user has been idle as long as the debounce: someone typing on after a
    // suggestion appeared costs nothing, and nobody accepts faster than that.
    let idle_ms = state.debounce_wait_ms(&config);
    let min_confidence = config.min_confidence;
    let (state, uri) = (Arc::clone(state), params.uri.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = ticket.superseded.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(idle_ms)) => {}
        }
        let job = engine.submit(request);
        let outcome = tokio::select! {
            () = ticket.superseded.cancelled() => return,
            outcome = job => outcome,
        };
        let Ok(Outcome::Completed(c)) = outcome else {
            return;
        };
        if !confident(&c, min_confidence) {
            return;
        }
        let around = Around {
            line_prefix: &at.line_prefix,
            line_suffix: &at.line_suffix,
            next_lines: at.next_lines(),
            multi_line,
        };
        if let Some(text) = postprocess::clean(&c.text, &around) {
            state.set_next(&uri, Some(Shown::new(&at, text)));
            ServerState::bump(&state.counters.n_precomputed);
        }
    });
}

/// How long a newly opened document waits before it is evaluated: a file opened to peek at
/// (a definition, a search result) is often closed or left again within this.
const OPEN_PREFILL_DELAY: Duration = Duration::from_millis(300);

/// Evaluates a newly opened document into the KV cache while the user is idle (`prefillOnOpen`),
/// when the whole document fits the prompt window (`windowMaxChars`): its window then starts
/// at the top for any cursor, so the first request anywhere in it reuses the cache up to its
/// cursor instead of evaluating everything before it. A larger document's first window
/// depends on a cursor the server does not know yet, so it is left alone. The next completion
/// request of any document, or the next document opened, cancels this one; what was
/// evaluated before that stays in the cache.
pub fn prefill_on_open(state: &Arc<ServerState>, uri: &Uri) {
    let config = state.config();
    if !config.prefill_on_open || ReuseMode::from_env() != ReuseMode::Full {
        return;
    }
    let (Some(engine), Some(doc)) = (state.engine(), state.docs.snapshot(uri)) else {
        return;
    };
    let n_chars = doc.rope.len_chars();
    if n_chars == 0 || n_chars > config.window_max_chars.max(64) {
        return;
    }
    // What a request with the cursor at the end would ask for, without generating.
    let at = surroundings(&doc.rope, n_chars, 0);
    let (model, info) = match engine.target_info() {
        Some(target) if config.use_target == UseTarget::Always => (ModelRole::Target, target),
        _ => (ModelRole::Main, engine.info()),
    };
    let prompt = prompt_for(&at, info, &config, uri, state);
    let token = state.begin_idle_work();
    let (state, uri) = (Arc::clone(state), uri.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(OPEN_PREFILL_DELAY) => {}
        }
        if token.is_cancelled() || state.docs.snapshot(&uri).is_none_or(|d| d.rope != doc.rope) {
            return;
        }
        state.set_window_start(&uri, 0);
        let job = engine.submit(request(prompt, model, Sampling::Greedy, &uri, &config));
        tokio::select! {
            () = token.cancelled() => {}
            outcome = job => {
                if let Ok(Outcome::Completed(_)) = outcome {
                    ServerState::bump(&state.counters.n_open_prefills);
                }
            }
        }
    });
}

/// What the engine is asked for a cursor.
struct Plan {
    prompt: Prompt,
    model: ModelRole,
    speculation: Option<Speculation>,
    multi_line: bool,
}

fn plan(
    state: &ServerState,
    config: &ServerConfig,
    engine: &Engine,
    at: &Surroundings,
    params: &SuggestParams,
) -> Plan {
    let multi_line = match config.multi_line {
        MultiLine::Always => true,
        MultiLine::Never => false,
        MultiLine::Auto => {
            at.line_suffix.trim().is_empty()
                && (at.line_prefix.trim().is_empty() || postprocess::opens_block(&at.line_prefix))
        }
    };
    let use_target = engine.target_info().is_some()
        && match config.use_target {
            UseTarget::Auto => multi_line || params.invoked,
            UseTarget::Always => true,
            UseTarget::Never => false,
        };
    let (model, info) = match engine.target_info() {
        Some(target) if use_target => (ModelRole::Target, target),
        _ => (ModelRole::Main, engine.info()),
    };
    let speculation = match (config.speculation, model) {
        (SpeculationMode::Off, _) | (SpeculationMode::Auto, ModelRole::Main) => None,
        (SpeculationMode::Lookup, _) => {
            let mut lookup = Speculation::lookup(state.docs.others(
                &params.uri,
                LOOKUP_CORPUS_DOCS,
                LOOKUP_CORPUS_CHARS,
            ));
            lookup.k = DraftLength::Adaptive {
                init: 4,
                max: config.draft_max.max(1) as usize,
            };
            Some(lookup)
        }
        (SpeculationMode::Auto | SpeculationMode::Model, ModelRole::Target) => Some(Speculation {
            drafter: Drafter::Model,
            k: DraftLength::Adaptive {
                init: if engine.info().device == "CPU" { 2 } else { 4 },
                max: config.draft_max.max(1) as usize,
            },
        }),
        (SpeculationMode::Model, ModelRole::Main) => None,
    };
    let prompt = prompt_for(at, info, config, &params.uri, state);
    Plan {
        prompt,
        model,
        speculation,
        multi_line,
    }
}

/// The prompt for a cursor's surroundings, in the model's format (FIM when it has the tokens).
fn prompt_for(
    at: &Surroundings,
    info: &ModelInfo,
    config: &ServerConfig,
    uri: &Uri,
    state: &ServerState,
) -> Prompt {
    let budget = (info.n_ctx as usize).saturating_sub(max_tokens(config, info) as usize + 8);
    if info.fim.is_some() {
        // The cursor's line after the middle token (as llama.vim sends it): typing on the
        // line then only appends to the prompt, and the suffix's KV stays where it is.
        let split = if config.fim_line_in_middle {
            at.prefix.rfind('\n').map_or(0, |i| i + 1)
        } else {
            at.prefix.len()
        };
        Prompt::Fim {
            prefix: at.prefix[..split].to_owned(),
            middle: at.prefix[split..].to_owned(),
            suffix: at.suffix.clone(),
            max_tokens: budget,
            file: super::project::repo_file(uri, &state.roots()),
            context: super::context::for_prompt(state, uri, at, config),
        }
    } else {
        Prompt::Prefix {
            text: at.prefix.clone(),
            max_tokens: budget,
            context: super::context::for_prompt(state, uri, at, config),
        }
    }
}

/// The token budget of a suggestion: `maxTokens`, at most half the context (a larger one
/// would leave no room for the prompt).
fn max_tokens(config: &ServerConfig, info: &ModelInfo) -> u32 {
    config.max_tokens.min(info.n_ctx / 2)
}

fn model_info(engine: &Engine, model: ModelRole) -> &ModelInfo {
    match (model, engine.target_info()) {
        (ModelRole::Target, Some(target)) => target,
        _ => engine.info(),
    }
}

/// A request for `prompt` with nothing extra (no tokens, no stop rules, no speculation);
/// callers set what differs.
fn request(
    prompt: Prompt,
    model: ModelRole,
    sampling: Sampling,
    uri: &Uri,
    config: &ServerConfig,
) -> CompletionRequest {
    CompletionRequest {
        // The target model's jobs speculate; healing is a main-model feature (a target job
        // gives the same text with speculation on or off).
        heal: config.token_healing && model == ModelRole::Main,
        prompt,
        max_tokens: 0,
        sampling,
        stop: StopRules::default(),
        record_margins: false,
        // The confidence gate reads the chosen tokens' probabilities.
        top_logprobs: usize::from(config.min_confidence > 0.0),
        model,
        speculation: None,
        on_progress: None,
        document: Some(document_key(uri)),
    }
}

/// The confidence gate (`minConfidence`): whether the geometric mean of the probabilities
/// the model gave its own generated tokens reaches `min`. Always with the gate off (0), or
/// with nothing recorded.
fn confident(c: &amd_engine::Completion, min: f32) -> bool {
    let chosen: Vec<f32> = c
        .tokens
        .iter()
        .zip(&c.top_logprobs)
        .filter_map(|(t, top)| top.iter().find(|(id, _)| id == t).map(|(_, lp)| *lp))
        .collect();
    if min <= 0.0 || chosen.is_empty() {
        return true;
    }
    // A chosen token outside the recorded top (one token healing constrained) is left out:
    // its probability says how the model would have split the text, not what it expects.
    let mean = chosen.iter().sum::<f32>() / chosen.len() as f32;
    mean.exp() >= min
}

/// The engine's opaque key for a document.
fn document_key(uri: &Uri) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uri.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::confident;
    use amd_engine::{Completion, StopReason};

    fn completion(tokens: &[i32], chosen_logprobs: &[f32]) -> Completion {
        Completion {
            text: String::new(),
            tokens: tokens.to_vec(),
            stop: StopReason::MaxTokens,
            stats: Default::default(),
            margins: Vec::new(),
            top_logprobs: tokens
                .iter()
                .zip(chosen_logprobs)
                .map(|(&t, &lp)| vec![(t, lp)])
                .collect(),
        }
    }

    #[test]
    fn the_confidence_gate_takes_the_geometric_mean_of_the_chosen_tokens() {
        let sure = completion(&[1, 2], &[0.9f32.ln(), 0.8f32.ln()]);
        assert!(confident(&sure, 0.8)); // sqrt(0.72) = 0.85
        assert!(!confident(&sure, 0.9));
        let unsure = completion(&[1, 2], &[0.9f32.ln(), 0.1f32.ln()]);
        assert!(!confident(&unsure, 0.5)); // sqrt(0.09) = 0.3
                                           // Off, or nothing recorded: shown.
        assert!(confident(&unsure, 0.0));
        assert!(confident(&completion(&[], &[]), 0.9));
        // A chosen token outside the recorded top (a healed one) is left out.
        let mut healed = completion(&[1, 2], &[0.1f32.ln(), 0.9f32.ln()]);
        assert!(!confident(&healed, 0.5));
        healed.top_logprobs[0] = vec![(7, 0.9f32.ln())];
        assert!(confident(&healed, 0.5));
    }
}
