//! Work done while the user is idle: the suggestion that follows an accepted one
//! ([`precompute_next`]) and a newly opened document's prompt ([`prefill_on_open`]).

use std::sync::Arc;
use std::time::Duration;

use amd_engine::{Engine, ModelRole, Outcome, Sampling};
use tower_lsp_server::gen_lsp_types::Uri;

use super::latest::Ticket;
use super::plan::{plan, prompt_for, request, Gate, Judged, Placed};
use super::typethrough::Shown;
use super::window::cursor_window;
use super::SuggestParams;
use crate::lsp::config::{ReuseMode, UseTarget};
use crate::lsp::state::ServerState;

/// Computes, in the background and once the user is idle, the suggestion that follows
/// `accepted` once it is accepted (inserted at the cursor), for the type-through path to
/// serve. The next request for the document supersedes it (a keystroke means the user did
/// something else, or accepted before it was ready: then the model is asked as usual, its
/// prompt already mostly in the cache).
pub(super) fn precompute_next(
    state: &Arc<ServerState>,
    params: &SuggestParams,
    ticket: &Ticket,
    engine: Arc<Engine>,
    placed: Placed,
    accepted: &str,
) {
    let Placed {
        mut rope,
        cursor,
        start,
        ..
    } = placed;
    // The request's own claim, passed on only while no newer request has arrived.
    let Some(ticket) = state.latest.pass_on(&params.uri, ticket) else {
        return;
    };
    rope.insert(cursor, accepted);
    let at = cursor_window(&rope, cursor + accepted.chars().count(), start);
    let config = state.config();
    let plan = plan(state, &config, &engine, &at, params);
    let request = plan.job(&engine, Sampling::Greedy, &params.uri, &config);
    // Only once the user has been idle as long as the debounce: someone typing on after a
    // suggestion appeared costs nothing, and nobody accepts faster than that.
    let idle_ms = state.rhythm_wait_ms(&config);
    let gate = Gate::of(&config);
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
        if let Judged::Show(text) = gate.judge(&c, &plan.placement(&at)) {
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
    if !config.prefill_on_open || state.reuse != ReuseMode::Full {
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
    let at = cursor_window(&doc.rope, n_chars, 0);
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
