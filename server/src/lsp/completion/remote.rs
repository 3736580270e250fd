//! Completion requests answered by a shared inference server (`backend`) instead of the
//! in-process engine. The editor side stays the same: the snapshot, the type-through cache and
//! latest-wins before this point, then the debounce, post-processing and the stale check. A
//! superseded request's HTTP request is closed at once, which stops llama-server generating.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tower_lsp_server::gen_lsp_types::MessageType;

use super::latest::Ticket;
use super::plan::{multi_line, placement, Placed};
use super::typethrough::Shown;
use super::window::CursorWindow;
use super::{debounce, ms_since, postprocess, unless_superseded, SuggestParams, Suggestion};
use crate::backend::{Ask, Backend};
use crate::lsp::config::ServerConfig;
use crate::lsp::state::ServerState;

/// Characters per token assumed when fitting other files' chunks into `contextMaxTokens`
/// without the model's tokenizer.
const CHARS_PER_TOKEN: usize = 3;

/// When and on which version of the document the request was made.
pub(super) struct Asked {
    pub(super) started: Instant,
    pub(super) version: i32,
}

/// Sets the flag when dropped: the blocking request stops reading and closes its connection.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub(super) async fn suggest(
    state: &Arc<ServerState>,
    config: &ServerConfig,
    backend: &Arc<Backend>,
    mut placed: Placed,
    params: &SuggestParams,
    ticket: &Ticket,
    asked: Asked,
) -> Result<Option<Suggestion>> {
    let Some(debounce_ms) = debounce(state, config, params, ticket).await else {
        return Ok(None);
    };
    // Built after the debounce: a superseded keystroke costs no context search.
    let multi_line = multi_line(config, &placed.at);
    let ask = ask(state, config, &placed.at, params, multi_line);
    let after_debounce = Instant::now();
    let cancel = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(Arc::clone(&cancel));
    let job = {
        let backend = Arc::clone(backend);
        tokio::task::spawn_blocking(move || backend.complete(&ask, &cancel))
    };
    let remote_started = Instant::now();
    let Some(answer) = unless_superseded(state, ticket, job).await else {
        return Ok(None);
    };
    let answer = answer?;
    let remote_ms = ms_since(remote_started);
    let text = match answer {
        Ok(Some(text)) => text,
        Ok(None) => {
            ServerState::bump(&state.counters.n_cancelled);
            return Ok(None);
        }
        Err(e) => {
            ServerState::bump(&state.counters.n_errors);
            tracing::warn!(error = %e, "backend request failed");
            // One message per outage, not one per keystroke.
            if backend.set_reachable(false) {
                let text = format!("amd-lsp: {e}. Completions are empty until it answers again.");
                state.client.show_message(MessageType::Warning, text).await;
            }
            return Ok(None);
        }
    };
    if backend.set_reachable(true) {
        tracing::info!(url = backend.url(), "backend answers again");
    }
    if state.docs.version(&params.uri) != Some(asked.version) {
        ServerState::bump(&state.counters.n_stale);
        return Ok(None);
    }
    let started = asked.started;
    state.record_latency(ms_since(started));
    state.record_overhead(ms_since(started) - debounce_ms - remote_ms);
    state.record_debounce(debounce_ms, ms_since(after_debounce));
    let mut suggestion = std::mem::take(&mut placed.suggestion);
    let cleaned = postprocess::clean(&text, &placement(&placed.at, multi_line));
    suggestion.texts = cleaned.into_iter().collect();
    if params.selected.is_none() {
        let first = suggestion.texts.first().cloned();
        state.set_shown(&params.uri, first.map(|t| Shown::new(&placed.at, t)));
    }
    if suggestion.texts.is_empty() {
        ServerState::bump(&state.counters.n_empty);
        return Ok(None);
    }
    state.showed(&params.uri);
    Ok(Some(suggestion))
}

/// The text the backend gets: llama.vim's split of the window (the lines before the cursor's
/// line, the line so far, what follows), and with `context` the chosen chunks of other files
/// within `contextMaxTokens`.
fn ask(
    state: &ServerState,
    config: &ServerConfig,
    at: &CursorWindow,
    params: &SuggestParams,
    multi_line: bool,
) -> Ask {
    let split = at.prefix.rfind('\n').map_or(0, |i| i + 1);
    let mut extra = Vec::new();
    let mut line_comment = String::from("//");
    if config.context {
        let mut left = config.context_max_tokens as usize * CHARS_PER_TOKEN;
        let context = crate::lsp::context::for_prompt(state, &params.uri, at, config);
        line_comment = context.line_comment;
        for chunk in context.chunks {
            if chunk.text.len() <= left {
                left -= chunk.text.len();
                extra.push((chunk.path, chunk.text));
            }
        }
    }
    Ask {
        prefix: at.prefix[..split].to_owned(),
        middle: at.prefix[split..].to_owned(),
        suffix: at.suffix.clone(),
        extra,
        line_comment,
        max_tokens: config.max_tokens,
        single_line: !multi_line,
    }
}
