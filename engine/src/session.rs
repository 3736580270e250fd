//! A KV session: one llama.cpp context whose cache is mirrored token for token, and the job
//! loop that reuses it (plan → truncate → chunked prefill → decode with stop rules).

use std::time::Instant;

use crate::error::EngineError;
use crate::job::CancelToken;
use crate::kv_states::SavedDocs;
use crate::llama::{Context, Logits, Model, Sampler, SavedKv};
use crate::logits::{argmax, argmax_where, top2_margin, top_log_probs};
use crate::speculative::math::CostModel;
use crate::text::Utf8Stream;
use crate::{
    reuse, Completion, CompletionRequest, JobStats, Outcome, Progress, ProgressFn, Sampling,
    StopReason, TokenId,
};

pub(crate) struct Session<'m> {
    model: &'m Model,
    ctx: Context<'m>,
    /// Exactly the tokens in KV sequence 0, position i at index i.
    cached: Vec<TokenId>,
    prefill_chunk: usize,
    kv_reuse: bool,
    /// Park tokens a prompt moves away from and take them back shifted.
    kv_shift: bool,
    /// What speculation costs when this session's model generates (kept across jobs).
    costs: CostModel,
    /// `Some(n)` when the context holds the logits of cached position `n - 1` (the last decode
    /// asked for them and nothing was evaluated since): a prompt equal to the cache needs no
    /// evaluation at all (a job after a prefill-only one).
    logits_for: Option<usize>,
    /// A copy of the logits at the end of the last prompt evaluated to its end, for cached
    /// position `n - 1`: valid while the first `n` cached tokens stay. A job whose prompt is
    /// that same prompt again (a keystroke inside the token that token healing backs up over,
    /// a request for a suggestion already generated) then evaluates nothing, instead of
    /// evaluating its last token again only to get these logits back.
    kept_logits: Option<(usize, Vec<f32>)>,
    /// [`Session::logits`] answers from `kept_logits` (nothing was evaluated since).
    serve_kept: bool,
    /// The document whose tokens the cache holds (`None`: unknown).
    document: Option<u64>,
    /// Other documents' caches.
    saved: SavedDocs<SavedKv>,
    /// Process CPU time (µs) when the running job started generating.
    decode_cpu_from: Option<u64>,
    /// Tokens a prompt moved away from, kept in KV sequence 1 at positions `start..` until a
    /// later prompt takes them back (the cursor returns below an edit far above it, or the
    /// window start moved).
    parked: Option<Parked>,
}

struct Parked {
    tokens: Vec<TokenId>,
    start: usize,
    /// llama.cpp calls made since they were parked (each paid for them; see
    /// [`reuse::PARK_MAX_CALLS`]).
    calls: usize,
}

/// A prompt that would drop at least this many cached tokens parks them instead.
const PARK_MIN: usize = 64;

/// Tokens evaluated again after an edit before parked ones are reused (see [`reuse::splice`]).
pub(crate) const RECOMPUTE_AFTER_EDIT: usize = 16;

impl<'m> Session<'m> {
    pub(crate) fn new(
        model: &'m Model,
        ctx: Context<'m>,
        prefill_chunk: usize,
        kv_reuse: bool,
        kv_shift: bool,
        kv_documents_bytes: usize,
    ) -> Session<'m> {
        let prefill_chunk = prefill_chunk.clamp(1, ctx.n_batch());
        Session {
            model,
            ctx,
            cached: Vec::new(),
            prefill_chunk,
            kv_reuse,
            kv_shift: kv_reuse && kv_shift,
            costs: CostModel::default(),
            logits_for: None,
            kept_logits: None,
            serve_kept: false,
            document: None,
            saved: SavedDocs::new(if kv_reuse { kv_documents_bytes } else { 0 }),
            decode_cpu_from: None,
            parked: None,
        }
    }

    /// Notes that the job's prompt is in the cache and generation starts: CPU spent from now
    /// on is lost if the job is cancelled (what came before stays in the cache; without KV
    /// reuse nothing does, and the mark is set when the job starts).
    pub(crate) fn mark_decode_start(&mut self) {
        self.decode_cpu_from
            .get_or_insert_with(crate::stats::process_cpu_us);
    }

    /// When the last job started generating (process CPU µs); clears it.
    pub(crate) fn take_decode_start(&mut self) -> Option<u64> {
        self.decode_cpu_from.take()
    }

    /// Forgets the cache; used after a failed or panicked job so the next one starts clean.
    pub(crate) fn reset(&mut self) {
        self.ctx.clear();
        self.cached.clear();
        self.logits_for = None;
        self.forget_kept_logits(0);
        self.parked = None;
    }

    /// Forgets the parked tokens.
    fn drop_parked(&mut self) -> Result<(), EngineError> {
        if self.parked.take().is_some() {
            self.ctx.drop_parked()?;
        }
        Ok(())
    }

    /// How many cells the parked tokens occupy (they share the context's room).
    fn n_parked(&self) -> usize {
        self.parked.as_ref().map_or(0, |p| p.tokens.len())
    }

    /// Makes the cache `document`'s: the one it holds is saved (within the byte budget) and
    /// the document's own saved cache, if any, is put back. Returns whether one was. Without a
    /// document (or a budget) the cache stays as it is, for the longest common prefix to use.
    pub(crate) fn switch_document(&mut self, document: Option<u64>) -> Result<bool, EngineError> {
        if document.is_none() || document == self.document || !self.saved.enabled() {
            self.document = document.or(self.document);
            return Ok(false);
        }
        self.drop_parked()?;
        if let Some(current) = self.document {
            // A cache larger than the whole budget is not copied out only to be dropped.
            if !self.cached.is_empty() && self.saved.fits(self.ctx.saved_bytes()) {
                let saved = self.ctx.save()?;
                let bytes = saved.bytes();
                self.saved
                    .put(current, saved, std::mem::take(&mut self.cached), bytes);
            }
        }
        self.document = document;
        self.logits_for = None;
        self.forget_kept_logits(0);
        let Some((saved, tokens)) = document.and_then(|d| self.saved.take(d)) else {
            // Nothing kept for this document. If the previous one's cache was not saved away
            // (no key for it), it stays for the common prefix to use (a license header);
            // otherwise `cached` is empty and the context is cleared to match.
            if self.cached.is_empty() {
                self.reset();
            }
            return Ok(false);
        };
        match self.ctx.restore(&saved) {
            Ok(()) => {
                self.cached = tokens;
                Ok(true)
            }
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }

    /// Documents whose caches are kept in memory, and their bytes.
    pub(crate) fn saved_documents(&self) -> (usize, usize) {
        (self.saved.len(), self.saved.bytes())
    }

    pub(crate) fn model(&self) -> &'m Model {
        self.model
    }

    pub(crate) fn take_costs(&mut self) -> CostModel {
        std::mem::take(&mut self.costs)
    }

    pub(crate) fn put_costs(&mut self, costs: CostModel) {
        self.costs = costs;
    }

    pub(crate) fn n_ctx(&self) -> usize {
        self.ctx.n_ctx() as usize
    }

    /// The tokens whose KV entries the cache holds, in position order.
    pub(crate) fn cached(&self) -> &[TokenId] {
        &self.cached
    }

    /// Checks a prompt against the context size and the vocabulary.
    pub(crate) fn check_prompt(&self, prompt: &[TokenId]) -> Result<(), EngineError> {
        let n_ctx = self.n_ctx();
        let n_vocab = self.model.info().n_vocab;
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt.len() >= n_ctx {
            return Err(EngineError::PromptTooLong {
                n_prompt: prompt.len(),
                n_ctx,
            });
        }
        if let Some(&token) = prompt.iter().find(|&&t| t < 0 || t as u32 >= n_vocab) {
            return Err(EngineError::BadToken { token, n_vocab });
        }
        Ok(())
    }

    /// Brings the cache to `prompt` (keeping the longest common prefix, evaluating the rest in
    /// chunks) so that the last prompt position's logits are ready. Adds to `stats`; returns
    /// `false` when cancelled between chunks. `kept_ok`: the caller reads the logits through
    /// [`Session::logits`] only (not llama.cpp's sampler), so a kept copy may answer.
    pub(crate) fn prefill(
        &mut self,
        prompt: &[TokenId],
        kept_ok: bool,
        cancel: &CancelToken,
        stats: &mut JobStats,
        mut on_progress: Option<&mut ProgressFn>,
    ) -> Result<bool, EngineError> {
        let started = Instant::now();
        if self
            .parked
            .as_ref()
            .is_some_and(|p| p.calls > reuse::PARK_MAX_CALLS)
        {
            // Kept this long, they have cost more than evaluating them again would.
            self.drop_parked()?;
        }
        let mut plan = reuse::plan(&self.cached, prompt, self.kv_reuse);
        if self.kv_reuse && self.logits_for == Some(prompt.len()) && self.cached == prompt {
            // A prefill-only job left exactly this prompt and its last logits behind.
            plan.n_keep = prompt.len();
        }
        let kept = kept_ok
            && self.kv_reuse
            && plan.n_keep < prompt.len()
            && self
                .kept_logits
                .as_ref()
                .is_some_and(|(n, _)| *n == prompt.len())
            && self.cached.get(..prompt.len()) == Some(prompt);
        if kept {
            plan.n_keep = prompt.len();
        }
        let n_keep = plan.n_keep;
        if self.kv_shift && self.cached.len() >= n_keep + PARK_MIN {
            // Set the rest aside rather than drop it: the prompt may come back to it (a moved
            // window start continues with it at once). It replaces tokens parked earlier: what
            // the cache held last is what the next prompts are likeliest to continue with.
            self.logits_for = None;
            self.forget_kept_logits(n_keep);
            self.drop_parked()?;
            self.ctx.park(n_keep)?;
            self.parked = Some(Parked {
                tokens: self.cached.split_off(n_keep),
                start: n_keep,
                calls: 0,
            });
        } else {
            self.truncate(n_keep)?;
        }
        stats.n_reused += n_keep;
        if kept {
            self.serve_kept = true;
            stats.prefill_ms += ms_since(started);
            return Ok(true);
        }

        let mut at = n_keep;
        let found = self.parked.as_ref().and_then(|p| {
            let rest = &prompt[at..];
            reuse::splice(
                &p.tokens,
                rest,
                RECOMPUTE_AFTER_EDIT,
                rest.len().saturating_sub(1),
            )
            .map(|s| (s, p.start + s.from))
        });
        if let Some((splice, src)) = found {
            let lead = &prompt[at..at + splice.lead];
            if !self.eval_chunks(lead, false, cancel, stats, &mut on_progress)? {
                stats.prefill_ms += ms_since(started);
                return Ok(false);
            }
            at += splice.lead;
            // Evaluating the lead may have needed the parked cells' room (`eval` drops them
            // then): the rest is evaluated instead.
            if self.parked.take().is_some() {
                self.ctx.unpark(src, splice.len, at)?;
                self.cached.extend_from_slice(&prompt[at..at + splice.len]);
                at += splice.len;
                stats.n_reused += splice.len;
                stats.n_shifted += splice.len;
            }
        }
        let done = self.eval_chunks(&prompt[at..], true, cancel, stats, &mut on_progress)?;
        stats.prefill_ms += ms_since(started);
        Ok(done)
    }

    /// Evaluates `tokens` in chunks, checking `cancel` between them; the last chunk's last
    /// logits when `logits`. `false` when cancelled.
    fn eval_chunks(
        &mut self,
        tokens: &[TokenId],
        logits: bool,
        cancel: &CancelToken,
        stats: &mut JobStats,
        on_progress: &mut Option<&mut ProgressFn>,
    ) -> Result<bool, EngineError> {
        let n_chunks = tokens.len().div_ceil(self.prefill_chunk);
        for (i, chunk) in tokens.chunks(self.prefill_chunk).enumerate() {
            if cancel.is_cancelled() {
                return Ok(false);
            }
            let want = if logits && i + 1 == n_chunks {
                Logits::Last
            } else {
                Logits::None
            };
            self.eval(chunk, want)?;
            if want == Logits::Last {
                if let Some(l) = self.ctx.logits() {
                    let mut copy = self.kept_logits.take().map(|(_, v)| v).unwrap_or_default();
                    copy.clear();
                    copy.extend_from_slice(l);
                    self.kept_logits = Some((self.cached.len(), copy));
                }
            }
            stats.n_evaluated += chunk.len();
            if let Some(f) = on_progress.as_mut() {
                f(&Progress {
                    n_evaluated: stats.n_evaluated,
                    n_generated: 0,
                    text: "",
                });
            }
        }
        Ok(true)
    }

    /// Starts a job: checks `prompt` and prefills it. `Ok(Err(outcome))` when cancelled during
    /// the prefill; otherwise the job's stats so far.
    pub(crate) fn start(
        &mut self,
        prompt: &[TokenId],
        kept_ok: bool,
        cancel: &CancelToken,
        on_progress: Option<&mut ProgressFn>,
    ) -> Result<Result<JobStats, Outcome>, EngineError> {
        self.check_prompt(prompt)?;
        let mut stats = JobStats {
            n_prompt: prompt.len(),
            ..JobStats::default()
        };
        if !self.kv_reuse {
            // Nothing this job evaluates outlives it.
            self.mark_decode_start();
        }
        if !self.prefill(prompt, kept_ok, cancel, &mut stats, on_progress)? {
            return Ok(Err(Outcome::Cancelled(stats)));
        }
        Ok(Ok(stats))
    }

    /// Evaluates `tokens` at the next positions (one llama.cpp call).
    pub(crate) fn eval(&mut self, tokens: &[TokenId], logits: Logits) -> Result<(), EngineError> {
        self.logits_for = None;
        self.serve_kept = false;
        if self.cached.len() + tokens.len() + self.n_parked() > self.n_ctx() {
            // The parked cells share the context's room; the prompt comes first.
            self.drop_parked()?;
        }
        // The thread policy may switch llama.cpp to one thread before the call (`cpu.rs`).
        crate::cpu::before_call();
        self.ctx.decode(tokens, self.cached.len(), logits)?;
        if let Some(p) = self.parked.as_mut() {
            p.calls += 1;
        }
        self.cached.extend_from_slice(tokens);
        if logits == Logits::Last && !tokens.is_empty() {
            self.logits_for = Some(self.cached.len());
        }
        Ok(())
    }

    /// Keeps the first `n` cached tokens and drops the rest. Parked tokens stay, also when
    /// nothing is kept (a prompt without BOS shares no first token with the cache).
    pub(crate) fn truncate(&mut self, n: usize) -> Result<(), EngineError> {
        if n == 0 && self.parked.is_none() {
            self.reset();
        } else if n < self.cached.len() {
            self.logits_for = None;
            self.forget_kept_logits(n);
            self.ctx.truncate(n)?;
            self.cached.truncate(n);
        }
        Ok(())
    }

    /// Drops the kept logits unless they are for a position below `n` (what stays cached).
    fn forget_kept_logits(&mut self, n: usize) {
        if self.kept_logits.as_ref().is_some_and(|(k, _)| *k > n) {
            self.kept_logits = None;
        }
        self.serve_kept = false;
    }

    pub(crate) fn logits(&self) -> Result<&[f32], EngineError> {
        if self.serve_kept {
            if let Some((_, l)) = &self.kept_logits {
                return Ok(l);
            }
        }
        self.ctx
            .logits()
            .ok_or_else(|| EngineError::Internal("no logits after decode".into()))
    }

    pub(crate) fn logits_at(&self, i: usize) -> Result<&[f32], EngineError> {
        self.ctx
            .logits_at(i)
            .ok_or_else(|| EngineError::Internal(format!("no logits for batch output {i}")))
    }

    /// Runs one job. On `Err` the caller resets the session. `healed`: the text the output
    /// must start with (token healing; see [`crate::prompt::heal`]), left out of the completion.
    pub(crate) fn run(
        &mut self,
        req: &mut CompletionRequest,
        prompt: &[TokenId],
        healed: Option<Vec<u8>>,
        cancel: &CancelToken,
    ) -> Result<Outcome, EngineError> {
        // llama.cpp's sampler reads the context's own logits, not a kept copy.
        let kept_ok = !matches!(req.sampling, Sampling::Random { .. });
        let mut stats = match self.start(prompt, kept_ok, cancel, req.on_progress.as_mut())? {
            Ok(stats) => stats,
            Err(cancelled) => return Ok(cancelled),
        };
        let n_ctx = self.n_ctx();

        let decode_started = Instant::now();
        self.mark_decode_start();
        let sampling = req.sampling;
        let mut sampler = Sampler::new(&sampling);
        let n_prompt = self.cached.len();
        let mut out = Emitter::new(self.model, req);
        if let Some(text) = healed {
            tracing::trace!(healed = ?String::from_utf8_lossy(&text), "token healing");
            out.heal(text);
        }
        let stop = loop {
            if let Some(why) = out.full() {
                break why;
            }
            if cancel.is_cancelled() {
                stats.n_generated = out.tokens.len();
                stats.decode_ms = ms_since(decode_started);
                return Ok(Outcome::Cancelled(stats));
            }
            let logits = self.logits()?;
            out.observe(logits);
            let mut token = match (&sampling, sampler.as_mut()) {
                _ if out.healing() => out.heal_choice(logits, None),
                (Sampling::Random { .. }, Some(s)) => self
                    .ctx
                    .sample(s)
                    .ok_or_else(|| EngineError::Internal("sampler had no logits".into()))?,
                _ => argmax(logits),
            };
            let mut stopped = out.push(token);
            if let Some((n_kept, other)) = out.other_start(stopped.is_some()) {
                // Back to where the text started: the cells of the tokens since are dropped.
                self.truncate(n_prompt + n_kept)?;
                stats.avoided_line = true;
                token = other;
                stopped = out.push(token);
            }
            if let Some(why) = stopped {
                break why;
            }
            // Reported before the token is evaluated: a caller watching the text learns it
            // one decode step sooner.
            out.progress(&stats);
            if self.cached.len() + 1 >= n_ctx {
                break StopReason::ContextFull;
            }
            self.eval(&[token], Logits::Last)?;
            stats.n_target_calls += 1;
        };
        stats.decode_ms = ms_since(decode_started);
        Ok(Outcome::Completed(out.finish(stop, stats)))
    }
}

/// Turns generated tokens into the completion: text assembled across byte pieces, stop rules,
/// the token budget, and the per-position analysis a request asked for.
pub(crate) struct Emitter<'a> {
    model: &'a Model,
    req: &'a mut CompletionRequest,
    pub(crate) tokens: Vec<TokenId>,
    text: String,
    utf8: Utf8Stream,
    piece: Vec<u8>,
    margins: Vec<f32>,
    top_logprobs: Vec<Vec<(TokenId, f32)>>,
    /// Healed text not generated yet: the next token must cover it or be part of it.
    heal_pending: Vec<u8>,
    /// Tokens spent generating healed text (they do not count against the budget).
    n_heal_tokens: usize,
    /// The first line the output must not be ([`CompletionRequest::not_first_line`]), while
    /// it still could be: `None` once the first line differs or it was taken back.
    avoid: Option<String>,
    /// While `avoid` is set: the state where the output's text started, to go back to.
    branch: Option<Branch>,
}

/// The emitter's state where the output's text starts: what [`Emitter::other_start`] goes
/// back to.
struct Branch {
    n_tokens: usize,
    heal_pending: Vec<u8>,
    n_heal_tokens: usize,
    utf8: Utf8Stream,
    logits: Vec<f32>,
}

impl<'a> Emitter<'a> {
    pub(crate) fn new(model: &'a Model, req: &'a mut CompletionRequest) -> Emitter<'a> {
        Emitter {
            model,
            req,
            tokens: Vec::new(),
            text: String::new(),
            utf8: Utf8Stream::new(),
            piece: Vec::new(),
            margins: Vec::new(),
            top_logprobs: Vec::new(),
            heal_pending: Vec::new(),
            n_heal_tokens: 0,
            avoid: None,
            branch: None,
        }
        .avoiding_line()
    }

    /// Takes the request's line to avoid; greedy only (a sampled output has no "most likely
    /// other" token to go back to) and not with speculation.
    fn avoiding_line(mut self) -> Emitter<'a> {
        if matches!(self.req.sampling, Sampling::Greedy) && self.req.speculation.is_none() {
            self.avoid = self
                .req
                .not_first_line
                .as_deref()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
                .map(str::to_owned);
        }
        self
    }

    /// Whether the output could still turn out to be the line to avoid.
    pub(crate) fn avoiding(&self) -> bool {
        self.avoid.is_some()
    }

    /// Whether the next token is the first of the output's text (nothing written yet, not
    /// even part of a character) while a line is to be avoided: where to go back to.
    fn at_text_start(&self) -> bool {
        self.avoiding() && self.text.is_empty() && self.utf8.is_idle()
    }

    /// When the output's first line has turned out to be the line to avoid (`ended`:
    /// generation stops with the text as it is): goes back to where its text started and
    /// returns how many tokens are kept and the most likely other token there (for
    /// [`Emitter::push`]). Once the first line is known to differ, stops avoiding.
    pub(crate) fn other_start(&mut self, ended: bool) -> Option<(usize, TokenId)> {
        let avoid = self.avoid.as_deref()?;
        let line = match self.text.find('\n') {
            Some(i) => &self.text[..i],
            None if ended => &self.text,
            None if avoid.starts_with(self.text.trim_end()) => return None,
            None => "",
        };
        let repeats = line.trim_end() == avoid;
        self.avoid = None;
        let at = self.branch.take().filter(|_| repeats)?;
        let banned = self.tokens[at.n_tokens];
        tracing::trace!(avoided = ?self.text, "the output repeated the next line: other start");
        self.tokens.truncate(at.n_tokens);
        self.text.clear();
        self.utf8 = at.utf8;
        self.heal_pending = at.heal_pending;
        self.n_heal_tokens = at.n_heal_tokens;
        // The observation of that step stays: its logits are the same.
        self.margins.truncate(at.n_tokens + 1);
        self.top_logprobs.truncate(at.n_tokens + 1);
        let other = if self.healing() {
            self.heal_choice(&at.logits, Some(banned))
        } else {
            argmax_where(&at.logits, |t| t != banned).unwrap_or(banned)
        };
        Some((at.n_tokens, other))
    }

    /// The output must start with `text`, which is not part of the completion.
    pub(crate) fn heal(&mut self, text: Vec<u8>) {
        self.heal_pending = text;
    }

    /// Whether healed text is still to be generated.
    pub(crate) fn healing(&self) -> bool {
        !self.heal_pending.is_empty()
    }

    /// The most likely token that continues the healed text ([`crate::prompt::heals`]), other
    /// than `banned`.
    pub(crate) fn heal_choice(&self, logits: &[f32], banned: Option<TokenId>) -> TokenId {
        let pieces = self.model.pieces();
        argmax_where(logits, |t| {
            Some(t) != banned
                && pieces
                    .get(t as usize)
                    .is_some_and(|piece| crate::prompt::heals(&self.heal_pending, piece))
        })
        // A vocabulary always has the healed token itself; without one, plain argmax.
        .unwrap_or_else(|| argmax(logits))
    }

    /// How many more tokens the budget allows.
    pub(crate) fn room(&self) -> usize {
        (self.req.max_tokens as usize + self.n_heal_tokens).saturating_sub(self.tokens.len())
    }

    /// `Some(MaxTokens)` once the budget is spent.
    pub(crate) fn full(&self) -> Option<StopReason> {
        (self.room() == 0).then_some(StopReason::MaxTokens)
    }

    /// Records what the request wants to know about the logits the next token is chosen from,
    /// and, where the output's text starts while a line is to be avoided, the state to go
    /// back to.
    pub(crate) fn observe(&mut self, logits: &[f32]) {
        if self.at_text_start() {
            self.branch = Some(Branch {
                n_tokens: self.tokens.len(),
                heal_pending: self.heal_pending.clone(),
                n_heal_tokens: self.n_heal_tokens,
                utf8: self.utf8.clone(),
                logits: logits.to_vec(),
            });
        }
        if self.req.record_margins {
            self.margins.push(top2_margin(logits));
        }
        if self.req.top_logprobs > 0 {
            self.top_logprobs
                .push(top_log_probs(logits, self.req.top_logprobs));
        }
    }

    /// Takes the next generated token; `Some` when generation ends with it (an end-of-generation
    /// token is not part of the output).
    pub(crate) fn push(&mut self, token: TokenId) -> Option<StopReason> {
        if self.model.is_eog(token) {
            return Some(StopReason::EndOfGeneration);
        }
        self.tokens.push(token);
        let checked = self.text.len();
        self.piece.clear();
        self.model.piece(token, &mut self.piece);
        let mut piece = &self.piece[..];
        if self.healing() {
            self.n_heal_tokens += 1;
            let n = self.heal_pending.len().min(piece.len());
            self.heal_pending.drain(..n);
            piece = &piece[n..];
        }
        self.utf8.push(piece, &mut self.text);
        if let Some((keep, why)) = self.req.stop.find(&self.text, checked) {
            self.text.truncate(keep);
            return Some(why);
        }
        self.full()
    }

    pub(crate) fn progress(&mut self, stats: &JobStats) {
        // Text that may still be taken back is not reported.
        if self.avoiding() {
            return;
        }
        let n_generated = self.tokens.len();
        if let Some(f) = self.req.on_progress.as_mut() {
            f(&Progress {
                n_evaluated: stats.n_evaluated,
                n_generated,
                text: &self.text,
            });
        }
    }

    pub(crate) fn finish(mut self, stop: StopReason, mut stats: JobStats) -> Completion {
        if tracing::enabled!(tracing::Level::TRACE) {
            let pieces: Vec<String> = self
                .tokens
                .iter()
                .map(|&t| {
                    let mut p = Vec::new();
                    self.model.piece(t, &mut p);
                    String::from_utf8_lossy(&p).into_owned()
                })
                .collect();
            tracing::trace!(?pieces, "generated");
        }
        if !matches!(stop, StopReason::StopString | StopReason::LineEnd) {
            self.utf8.finish(&mut self.text);
        }
        stats.n_generated = self.tokens.len();
        Completion {
            text: self.text,
            tokens: self.tokens,
            stop,
            stats,
            margins: self.margins,
            top_logprobs: self.top_logprobs,
        }
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
