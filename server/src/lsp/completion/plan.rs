//! What a request asks of the engine: where its window is ([`place`]), which model, prompt
//! and speculation ([`plan`]), and the jobs that carry them.

use amd_engine::{
    CompletionRequest, DraftLength, Drafter, Engine, ModelInfo, ModelRole, Prompt, Sampling,
    Speculation, StopRules,
};
use ropey::Rope;
use tower_lsp_server::gen_lsp_types::{Position, Uri};

use super::postprocess::{self, Placement};
use super::window::{self, cursor_window, window_start, CursorWindow, WindowPolicy};
use super::{SuggestParams, Suggestion, LOOKUP_CORPUS_CHARS, LOOKUP_CORPUS_DOCS};
use crate::lsp::config::{MultiLine, ReuseMode, ServerConfig, SpeculationMode, UseTarget};
use crate::lsp::documents::Document;
use crate::lsp::state::ServerState;

/// Where a request's suggestion is made: the document as the request sees it (the popup's
/// selected item applied), the cursor in it, the prompt window's start, the window, and the
/// suggestion's positions (its texts still empty).
pub(super) struct Placed {
    pub(super) rope: Rope,
    pub(super) cursor: usize,
    pub(super) start: usize,
    pub(super) at: CursorWindow,
    pub(super) suggestion: Suggestion,
}

/// Places a request in `doc`: applies the popup's selected item, keeps the document's prompt
/// window where it was unless the cursor left it (a fresh window is sized to the first
/// suggestion's time budget, shared with context from other files).
pub(super) fn place(
    state: &ServerState,
    config: &ServerConfig,
    doc: &Document,
    params: &SuggestParams,
) -> Placed {
    let enc = state.encoding();
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
    let sticky = match state.reuse {
        ReuseMode::Full => state.window_start(&params.uri),
        ReuseMode::Prefix | ReuseMode::Cold => None,
    };
    let mut policy = WindowPolicy {
        max_chars: config.window_max_chars.max(64),
        keep_chars: config.window_max_chars.max(64) / 2,
    };
    let context_max = config.context_max_tokens as usize;
    if !window::slides(sticky, cursor, policy) && state.reuse == ReuseMode::Full {
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
    let at = cursor_window(&rope, cursor, start);
    let suggestion = Suggestion {
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
    Placed {
        rope,
        cursor,
        start,
        at,
        suggestion,
    }
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

/// What the engine is asked for a cursor.
pub(super) struct Plan {
    pub(super) prompt: Prompt,
    pub(super) model: ModelRole,
    pub(super) speculation: Option<Speculation>,
    pub(super) multi_line: bool,
    /// The first line the suggestion must not have (`avoidNextLine`).
    pub(super) not_first_line: Option<String>,
}

impl Plan {
    /// The job that generates a suggestion with `sampling`.
    pub(super) fn job(
        &self,
        engine: &Engine,
        sampling: Sampling,
        uri: &Uri,
        config: &ServerConfig,
    ) -> CompletionRequest {
        CompletionRequest {
            max_tokens: max_tokens(config, model_info(engine, self.model)),
            stop: StopRules {
                stop_strings: Vec::new(),
                single_line: !self.multi_line,
            },
            speculation: self.speculation.clone(),
            not_first_line: self.not_first_line.clone(),
            ..request(self.prompt.clone(), self.model, sampling, uri, config)
        }
    }

    /// The job that only evaluates the prompt into the KV cache (generates nothing).
    pub(super) fn prefill_job(&self, uri: &Uri, config: &ServerConfig) -> CompletionRequest {
        request(
            self.prompt.clone(),
            self.model,
            Sampling::Greedy,
            uri,
            config,
        )
    }

    /// Where its suggestion lands, for post-processing.
    pub(super) fn placement<'a>(&self, at: &'a CursorWindow) -> Placement<'a> {
        placement(at, self.multi_line)
    }
}

pub(super) fn plan(
    state: &ServerState,
    config: &ServerConfig,
    engine: &Engine,
    at: &CursorWindow,
    params: &SuggestParams,
) -> Plan {
    let multi_line = multi_line(config, at);
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
    let not_first_line = config
        .avoid_next_line
        .then(|| postprocess::repeated_first_line(&placement(at, multi_line)))
        .flatten()
        .map(str::to_owned);
    Plan {
        prompt,
        model,
        speculation,
        multi_line,
        not_first_line,
    }
}

/// Whether the suggestion at `at` may take several lines (`multiLine`).
pub(super) fn multi_line(config: &ServerConfig, at: &CursorWindow) -> bool {
    match config.multi_line {
        MultiLine::Always => true,
        MultiLine::Never => false,
        MultiLine::Auto => {
            at.line_suffix.trim().is_empty()
                && (at.line_prefix.trim().is_empty() || postprocess::opens_block(&at.line_prefix))
        }
    }
}

/// Where a suggestion lands, for post-processing.
pub(super) fn placement(at: &CursorWindow, multi_line: bool) -> Placement<'_> {
    Placement {
        line_prefix: &at.line_prefix,
        line_suffix: &at.line_suffix,
        next_lines: at.next_lines(),
        multi_line,
    }
}

/// The prompt for a cursor's cursor_window, in the model's format (FIM when it has the tokens).
pub(super) fn prompt_for(
    at: &CursorWindow,
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
            file: crate::lsp::project::repo_file(uri, &state.roots()),
            context: crate::lsp::context::for_prompt(state, uri, at, config),
        }
    } else {
        Prompt::Prefix {
            text: at.prefix.clone(),
            max_tokens: budget,
            context: crate::lsp::context::for_prompt(state, uri, at, config),
        }
    }
}

/// The token budget of a suggestion: `maxTokens`, at most half the context (a larger one
/// would leave no room for the prompt).
pub(super) fn max_tokens(config: &ServerConfig, info: &ModelInfo) -> u32 {
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
pub(super) fn request(
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
        top_logprobs: usize::from(Gate::of(config).needs_probabilities()),
        model,
        speculation: None,
        on_progress: None,
        document: Some(document_key(uri)),
        fresh_cache: false,
        not_first_line: None,
    }
}

/// What the model's own probabilities say of a completion: the gate's input, and (trace
/// level, beside the completion's text) what `bench replay --accept` relates to what the
/// typist took.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Confidence {
    /// Geometric mean of the probabilities of the chosen tokens.
    pub mean: f32,
    /// Probability of the first chosen token.
    pub first: f32,
    /// The least probable chosen token's probability.
    pub min: f32,
    /// Tokens it is taken over.
    pub n: usize,
}

/// The [`Confidence`] of `c`, from the probabilities recorded for its chosen tokens (none
/// recorded: `None`). A chosen token outside the recorded top (one token healing constrained)
/// is left out: its probability says how the model would have split the text, not what it
/// expects.
fn confidence(c: &amd_engine::Completion) -> Option<Confidence> {
    let chosen: Vec<f32> = c
        .tokens
        .iter()
        .zip(&c.top_logprobs)
        .filter_map(|(t, top)| top.iter().find(|(id, _)| id == t).map(|(_, lp)| *lp))
        .collect();
    let first = *chosen.first()?;
    Some(Confidence {
        mean: (chosen.iter().sum::<f32>() / chosen.len() as f32).exp(),
        first: first.exp(),
        min: chosen.iter().copied().fold(f32::INFINITY, f32::min).exp(),
        n: chosen.len(),
    })
}

/// The confidence gate (`minConfidence`, `minExpectedSaving`): which suggestions are worth
/// showing, from the model's own probabilities.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Gate {
    /// Least [`Confidence::mean`] shown.
    pub min_confidence: f32,
    /// Least `mean × (characters − 1)` shown: the keystrokes taking the suggestion saves if it
    /// is right (one key takes it), weighed by how likely the model thinks it is.
    pub min_expected_saving: f32,
}

impl Gate {
    pub(crate) fn of(config: &ServerConfig) -> Gate {
        Gate {
            min_confidence: config.min_confidence,
            min_expected_saving: config.min_expected_saving,
        }
    }

    /// Whether the engine must record the chosen tokens' probabilities.
    pub(crate) fn needs_probabilities(&self) -> bool {
        self.min_confidence > 0.0 || self.min_expected_saving > 0.0
    }

    /// What `c` gives to show at `placement`: its text cleaned, then gated. The model text
    /// and its confidence are logged at trace level only, like prompts (what
    /// docs/bench/gate/study.py reads).
    pub(crate) fn judge(&self, c: &amd_engine::Completion, placement: &Placement) -> Judged {
        let cleaned = postprocess::clean(&c.text, placement);
        tracing::trace!(raw = ?c.text, stop = ?c.stop, ?cleaned, conf = ?confidence(c), "completion");
        match cleaned {
            None => Judged::Nothing,
            Some(text) if !self.shows(c, &text) => Judged::Unsure(text),
            Some(text) => Judged::Show(text),
        }
    }

    /// Whether `text`, cleaned from `c`, is shown. Always with the gate off, or with nothing
    /// recorded.
    pub(crate) fn shows(&self, c: &amd_engine::Completion, text: &str) -> bool {
        if !self.needs_probabilities() {
            return true;
        }
        let Some(k) = confidence(c) else {
            return true;
        };
        let saving = k.mean * (text.chars().count() as f32 - 1.0);
        k.mean >= self.min_confidence && saving >= self.min_expected_saving
    }
}

/// What a completion gives to show ([`Gate::judge`]).
pub(crate) enum Judged {
    /// Nothing once cleaned.
    Nothing,
    /// A text the gate hides (held: shown once the user types its start).
    Unsure(String),
    Show(String),
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
    use super::Gate;
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
        let gate = |min_confidence| Gate {
            min_confidence,
            min_expected_saving: 0.0,
        };
        let sure = completion(&[1, 2], &[0.9f32.ln(), 0.8f32.ln()]);
        assert!(gate(0.8).shows(&sure, "x")); // sqrt(0.72) = 0.85
        assert!(!gate(0.9).shows(&sure, "x"));
        let unsure = completion(&[1, 2], &[0.9f32.ln(), 0.1f32.ln()]);
        assert!(!gate(0.5).shows(&unsure, "x")); // sqrt(0.09) = 0.3
                                                 // Off, or nothing recorded: shown.
        assert!(gate(0.0).shows(&unsure, "x"));
        assert!(Gate::default().shows(&unsure, ""));
        assert!(gate(0.9).shows(&completion(&[], &[]), "x"));
        // A chosen token outside the recorded top (a healed one) is left out.
        let mut healed = completion(&[1, 2], &[0.1f32.ln(), 0.9f32.ln()]);
        assert!(!gate(0.5).shows(&healed, "x"));
        healed.top_logprobs[0] = vec![(7, 0.9f32.ln())];
        assert!(gate(0.5).shows(&healed, "x"));
    }

    #[test]
    fn the_expected_saving_weighs_the_keys_a_suggestion_saves_by_its_confidence() {
        let gate = Gate {
            min_confidence: 0.0,
            min_expected_saving: 2.0,
        };
        // Confidence 0.5: 5 characters save 4 keys if right, 2 expected; 4 characters, 1.5.
        let half = completion(&[1], &[0.5f32.ln()]);
        assert!(gate.shows(&half, "abcde"));
        assert!(!gate.shows(&half, "abcd"));
        // Characters, not bytes.
        assert!(gate.shows(&half, "ééééé"));
        // Sure of a short one: 3 characters save at most 2 keys.
        let sure = completion(&[1], &[1.0f32.ln()]);
        assert!(!gate.shows(&sure, "):"));
        assert!(gate.shows(&sure, "abc"));
        // Both rules hold at once.
        let both = Gate {
            min_confidence: 0.6,
            ..gate
        };
        assert!(!both.shows(&half, "a long suggestion"));
        assert!(both.shows(&sure, "abc"));
    }
}
