//! Draft-and-verify decoding over two KV sessions (or one, for prompt lookup).
//!
//! Invariants:
//! - Every emitted token is chosen from the generating (target) model's logits by
//!   [`math::verify`], so greedy output is the target's own and sampled output has its
//!   distribution; drafts only decide how many positions one target call evaluates.
//! - Each session's token mirror stays exact: a verify batch `[last, d1..dk]` is evaluated
//!   as a whole and the rejected tail is removed from the cache before generation goes on.
//! - The draft model sees its own stream (its prompt, then the emitted tokens), never the
//!   target's FIM ids; a token it cannot represent ends drafting for the rest of the job.

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::EngineError;
use crate::job::CancelToken;
use crate::llama::Logits;
use crate::logits::argmax;
use crate::session::{Emitter, Session};

use self::math::{CostModel, DraftControl, Verdict};
use crate::{CompletionRequest, Drafter, JobStats, Outcome, Sampling, StopReason, TokenId};

pub mod math;

/// The drafting side of a job.
pub(crate) enum DraftSource<'a, 'm> {
    /// The draft model, with its prompt.
    Model {
        session: &'a mut Session<'m>,
        prompt: Vec<TokenId>,
    },
    /// Prompt lookup over the target's stream and these extra token streams.
    Lookup { corpus: Vec<Vec<TokenId>> },
}

/// Runs one speculative job on `target`. On `Err` the caller resets the sessions.
pub(crate) fn run(
    target: &mut Session<'_>,
    mut source: DraftSource<'_, '_>,
    req: &mut CompletionRequest,
    prompt: &[TokenId],
    cancel: &CancelToken,
) -> Result<Outcome, EngineError> {
    // Only the settings; the lookup corpus (already tokenized into `source`) is not copied.
    let Some((length, ngrams)) = req.speculation.as_ref().map(|s| {
        let ngrams = match &s.drafter {
            Drafter::Lookup(l) => (l.ngram_min, l.ngram_max),
            Drafter::Model => (0, 0),
        };
        (s.k, ngrams)
    }) else {
        return Err(EngineError::Internal(
            "speculative job without settings".into(),
        ));
    };
    let mut stats = match target.start(prompt, true, cancel, req.on_progress.as_mut())? {
        Ok(stats) => stats,
        Err(cancelled) => return Ok(cancelled),
    };
    target.mark_decode_start();
    let draft_stream = match &mut source {
        DraftSource::Model { session, prompt } => match session.check_prompt(prompt) {
            Ok(()) => Some(std::mem::take(prompt)),
            Err(e) => {
                tracing::debug!(error = %e, "draft model cannot take the prompt; not drafting");
                None
            }
        },
        _ => None,
    };
    let draft_vocab = match &source {
        DraftSource::Model { session, .. } => session.model().info().n_vocab,
        _ => 0,
    };
    let sampling = req.sampling;
    let decode_started = Instant::now();
    let mut job = Job {
        costs: target.take_costs(),
        out: Emitter::new(target.model(), req),
        rng: ChaCha8Rng::seed_from_u64(match sampling {
            Sampling::Random { seed, .. } => u64::from(seed),
            Sampling::Greedy => 0,
        }),
        sampling,
        control: DraftControl::new(length),
        ngrams,
        draft_stream,
        draft_vocab,
    };
    let ended = job.generate(target, &mut source, &mut stats, cancel)?;
    tracing::debug!(costs = ?job.costs, "speculation costs after the job");
    // The one way out: what speculation cost and earned is kept for the next job.
    target.put_costs(job.costs.clone());
    stats.decode_ms = ms_since(decode_started);
    Ok(match ended {
        Some(stop) => {
            stats.k_final = job.control.k(&job.costs, || 0);
            Outcome::Completed(job.out.finish(stop, stats))
        }
        None => {
            stats.n_generated = job.out.tokens.len();
            Outcome::Cancelled(stats)
        }
    })
}

/// The decoding side of a speculative job.
struct Job<'r> {
    costs: CostModel,
    out: Emitter<'r>,
    rng: ChaCha8Rng,
    sampling: Sampling,
    control: DraftControl,
    /// Prompt lookup's n-gram lengths (min, max).
    ngrams: (usize, usize),
    /// The draft model's stream (its prompt, then the emitted tokens); `None`: not drafting.
    draft_stream: Option<Vec<TokenId>>,
    draft_vocab: u32,
}

impl Job<'_> {
    /// Draft, verify and emit until a stop (`Some`) or a cancellation (`None`).
    fn generate(
        &mut self,
        target: &mut Session<'_>,
        source: &mut DraftSource<'_, '_>,
        stats: &mut JobStats,
        cancel: &CancelToken,
    ) -> Result<Option<StopReason>, EngineError> {
        if let Some(stop) = self.out.full() {
            return Ok(Some(stop));
        }
        let n_ctx = target.n_ctx();
        // The first token comes from the prompt's logits.
        let mut last = self.emit_next(target.logits()?);
        if let Some(stop) = self.push(last) {
            return Ok(Some(stop));
        }
        loop {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            let base = target.cached().len();
            if base + 1 >= n_ctx {
                return Ok(Some(StopReason::ContextFull));
            }
            // Emitting `accepted + 1` tokens must stay within the budget and the context.
            // The catch-up is counted only when a try is due (it walks the whole stream).
            let catch_up = || catch_up(source, self.draft_stream.as_deref());
            let k = self
                .control
                .k(&self.costs, catch_up)
                .min(self.out.room().saturating_sub(1))
                .min(n_ctx - base - 2);
            let drafts = self.draft(target, source, last, k, stats, cancel)?;

            let mut batch = Vec::with_capacity(drafts.len() + 1);
            batch.push(last);
            batch.extend_from_slice(&drafts);
            let called = Instant::now();
            let logits = if drafts.is_empty() {
                Logits::Last
            } else {
                Logits::All
            };
            target.eval(&batch, logits)?;
            self.costs
                .record_call(batch.len(), ms_since(called), self.control.adaptive());
            stats.n_target_calls += 1;
            stats.n_drafted += drafts.len();

            let mut accepted = 0;
            let mut next = None;
            for (i, &d) in drafts.iter().enumerate() {
                let logits = target.logits_at(i)?;
                self.out.observe(logits);
                let p = math::target_dist(logits, &self.sampling);
                match math::verify(&p, &[(d, 1.0)], d, &mut self.rng) {
                    Verdict::Accept => {
                        accepted += 1;
                        if let Some(stop) = self.push(d) {
                            stats.n_accepted += accepted;
                            return Ok(Some(stop));
                        }
                    }
                    Verdict::Replace(t) => {
                        stats.n_rejected += 1;
                        next = Some(t);
                        break;
                    }
                }
            }
            let next = match next {
                Some(t) => t,
                // Every draft was accepted: the target's next token comes free.
                None => self.emit_next(target.logits_at(drafts.len())?),
            };
            stats.n_accepted += accepted;
            if !drafts.is_empty() {
                self.costs
                    .record_verdict(accepted, usize::from(accepted < drafts.len()));
            }
            target.truncate(base + 1 + accepted)?;
            last = next;
            if let Some(stop) = self.push(last) {
                return Ok(Some(stop));
            }
            self.out.progress(stats);
        }
    }

    /// The target's choice from `logits` (observed for the completion's statistics).
    fn emit_next(&mut self, logits: &[f32]) -> TokenId {
        self.out.observe(logits);
        math::sample(&math::target_dist(logits, &self.sampling), &mut self.rng)
    }

    /// Emits `token`; the draft model's stream follows it unless the job stops here.
    fn push(&mut self, token: TokenId) -> Option<StopReason> {
        let stop = self.out.push(token);
        if stop.is_none() {
            extend_draft_stream(&mut self.draft_stream, token, self.draft_vocab);
        }
        stop
    }

    /// Up to `k` drafted tokens to follow `last`, timed.
    fn draft(
        &mut self,
        target: &Session<'_>,
        source: &mut DraftSource<'_, '_>,
        last: TokenId,
        k: usize,
        stats: &mut JobStats,
        cancel: &CancelToken,
    ) -> Result<Vec<TokenId>, EngineError> {
        let drafted = Instant::now();
        // Output tokens the draft model evaluated before drafting, and their time.
        let mut prefilled = JobStats::default();
        let drafts = match source {
            _ if k == 0 => Vec::new(),
            DraftSource::Model { session, .. } => match &self.draft_stream {
                Some(stream) => draft_with_model(session, stream, k, cancel, &mut prefilled)?,
                None => Vec::new(),
            },
            DraftSource::Lookup { corpus } => {
                let mut stream = target.cached().to_vec();
                stream.push(last);
                let (min, max) = self.ngrams;
                math::lookup_draft(&stream, corpus, min, max, k)
            }
        };
        let draft_ms = ms_since(drafted);
        stats.draft_ms += draft_ms;
        self.costs.record_draft(
            drafts.len(),
            draft_ms,
            prefilled.n_evaluated,
            prefilled.prefill_ms,
        );
        Ok(drafts)
    }
}

/// Output tokens of `stream` the draft model has not evaluated yet (0 for prompt lookup).
fn catch_up(source: &DraftSource<'_, '_>, stream: Option<&[TokenId]>) -> usize {
    match (source, stream) {
        (DraftSource::Model { session, .. }, Some(stream)) => {
            stream.len() - crate::reuse::common_prefix(session.cached(), stream)
        }
        _ => 0,
    }
}

/// Appends an emitted token to the draft model's stream, or ends drafting when the draft
/// vocabulary cannot represent it.
fn extend_draft_stream(stream: &mut Option<Vec<TokenId>>, token: TokenId, draft_vocab: u32) {
    if let Some(s) = stream.as_mut() {
        if token >= 0 && (token as u32) < draft_vocab {
            s.push(token);
        } else {
            *stream = None;
        }
    }
}

/// Brings the draft model to `stream` (reusing its cache; what that evaluated is added to
/// `prefilled`) and drafts up to `k` tokens greedily.
fn draft_with_model(
    session: &mut Session<'_>,
    stream: &[TokenId],
    k: usize,
    cancel: &CancelToken,
    prefilled: &mut JobStats,
) -> Result<Vec<TokenId>, EngineError> {
    if stream.len() + k >= session.n_ctx() {
        return Ok(Vec::new());
    }
    if !session.prefill(stream, true, cancel, prefilled, None)? {
        return Ok(Vec::new());
    }
    let mut drafts = Vec::with_capacity(k);
    loop {
        let token = argmax(session.logits()?);
        drafts.push(token);
        if drafts.len() == k || session.model().is_eog(token) {
            return Ok(drafts);
        }
        session.eval(&[token], Logits::Last)?;
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
