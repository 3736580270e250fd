//! Draft-and-verify decoding over two KV sessions (or one, for prompt lookup).
//!
//! Invariants:
//! - Every emitted token is chosen from the generating (target) model's logits by
//!   [`spec::verify`], so greedy output is the target's own and sampled output has its
//!   distribution; drafts only decide how many positions one target call evaluates.
//! - Each session's token mirror stays exact: a verify batch `[last, d1..dk]` is evaluated
//!   as a whole and the rejected tail is removed from the cache before generation goes on.
//! - The draft model sees its own stream (its prompt, then the emitted tokens), never the
//!   target's FIM ids; a token it cannot represent ends drafting for the rest of the job.

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::engine::CancelToken;
use crate::error::EngineError;
use crate::llama::Logits;
use crate::session::{Emitter, Session};
use crate::spec::{self, CostModel, DraftControl, Verdict};
use crate::{CompletionRequest, Drafter, JobStats, Outcome, Sampling, StopReason, TokenId};

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
    let Some((length, (ngram_min, ngram_max))) = req.speculation.as_ref().map(|s| {
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
    let n_ctx = target.n_ctx();
    let mut draft_stream = match &mut source {
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
    let mut rng = ChaCha8Rng::seed_from_u64(match sampling {
        Sampling::Random { seed, .. } => u64::from(seed),
        Sampling::Greedy => 0,
    });
    let control = DraftControl::new(length);
    let mut costs = target.take_costs();
    let decode_started = Instant::now();
    let mut out = Emitter::new(target.model(), req);

    let finish = |out: Emitter<'_>, stop, mut stats: JobStats, costs: &CostModel| {
        stats.decode_ms = ms_since(decode_started);
        stats.k_final = control.k(costs);
        Ok(Outcome::Completed(out.finish(stop, stats)))
    };
    if let Some(stop) = out.full() {
        {
            target.put_costs(costs.clone());
            return finish(out, stop, stats, &costs);
        }
    }
    // The first token comes from the prompt's logits.
    let logits = target.logits()?;
    out.observe(logits);
    let mut last = spec::sample(&spec::target_dist(logits, &sampling), &mut rng);
    if let Some(stop) = out.push(last) {
        {
            target.put_costs(costs.clone());
            return finish(out, stop, stats, &costs);
        }
    }
    extend_draft_stream(&mut draft_stream, last, draft_vocab);

    loop {
        if cancel.is_cancelled() {
            target.put_costs(costs);
            stats.n_generated = out.tokens.len();
            stats.decode_ms = ms_since(decode_started);
            return Ok(Outcome::Cancelled(stats));
        }
        let base = target.cached().len();
        if base + 1 >= n_ctx {
            {
                target.put_costs(costs.clone());
                return finish(out, StopReason::ContextFull, stats, &costs);
            }
        }
        // Emitting `accepted + 1` tokens must stay within the budget and the context.
        let k = control
            .k(&costs)
            .min(out.room().saturating_sub(1))
            .min(n_ctx - base - 2);

        let drafted = Instant::now();
        let drafts = match &mut source {
            _ if k == 0 => Vec::new(),
            DraftSource::Model { session, .. } => match &draft_stream {
                Some(stream) => draft_with_model(session, stream, k, cancel)?,
                None => Vec::new(),
            },
            DraftSource::Lookup { corpus } => {
                let mut stream = target.cached().to_vec();
                stream.push(last);
                spec::lookup_draft(&stream, corpus, ngram_min, ngram_max, k)
            }
        };
        let draft_ms = ms_since(drafted);
        stats.draft_ms += draft_ms;
        costs.record_draft(drafts.len(), draft_ms);

        let mut batch = Vec::with_capacity(drafts.len() + 1);
        batch.push(last);
        batch.extend_from_slice(&drafts);
        let called = Instant::now();
        target.eval(
            &batch,
            if drafts.is_empty() {
                Logits::Last
            } else {
                Logits::All
            },
        )?;
        costs.record_call(batch.len(), ms_since(called));
        stats.n_target_calls += 1;
        stats.n_drafted += drafts.len();

        let mut accepted = 0;
        let mut next = None;
        for (i, &d) in drafts.iter().enumerate() {
            let logits = target.logits_at(i)?;
            out.observe(logits);
            let p = spec::target_dist(logits, &sampling);
            match spec::verify(&p, &[(d, 1.0)], d, &mut rng) {
                Verdict::Accept => {
                    accepted += 1;
                    if let Some(stop) = out.push(d) {
                        stats.n_accepted += accepted;
                        {
                            target.put_costs(costs.clone());
                            return finish(out, stop, stats, &costs);
                        }
                    }
                    extend_draft_stream(&mut draft_stream, d, draft_vocab);
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
            None => {
                // Every draft was accepted: the target's next token comes free.
                let logits = target.logits_at(drafts.len())?;
                out.observe(logits);
                spec::sample(&spec::target_dist(logits, &sampling), &mut rng)
            }
        };
        stats.n_accepted += accepted;
        if !drafts.is_empty() {
            costs.record_verdict(accepted, usize::from(accepted < drafts.len()));
        }
        target.truncate(base + 1 + accepted)?;
        last = next;
        if let Some(stop) = out.push(last) {
            {
                target.put_costs(costs.clone());
                return finish(out, stop, stats, &costs);
            }
        }
        extend_draft_stream(&mut draft_stream, last, draft_vocab);
        out.progress(&stats);
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

/// Brings the draft model to `stream` (reusing its cache) and drafts up to `k` tokens greedily.
fn draft_with_model(
    session: &mut Session<'_>,
    stream: &[TokenId],
    k: usize,
    cancel: &CancelToken,
) -> Result<Vec<TokenId>, EngineError> {
    if stream.len() + k >= session.n_ctx() {
        return Ok(Vec::new());
    }
    let mut scratch = JobStats::default();
    if !session.prefill(stream, true, cancel, &mut scratch, None)? {
        return Ok(Vec::new());
    }
    let mut drafts = Vec::with_capacity(k);
    loop {
        let token = crate::session::argmax(session.logits()?);
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
