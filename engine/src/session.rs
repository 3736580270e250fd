//! A KV session: one llama.cpp context whose cache is mirrored token for token, and the job
//! loop that reuses it (plan → truncate → chunked prefill → decode with stop rules).

use std::time::Instant;

use crate::engine::CancelToken;
use crate::error::EngineError;
use crate::llama::{Context, Model, Sampler};
use crate::text::Utf8Stream;
use crate::{
    reuse, Completion, CompletionRequest, JobStats, Outcome, Progress, Sampling, StopReason,
    TokenId,
};

pub(crate) struct Session<'m> {
    model: &'m Model,
    ctx: Context<'m>,
    /// Exactly the tokens in KV sequence 0, position i at index i.
    cached: Vec<TokenId>,
    prefill_chunk: usize,
    kv_reuse: bool,
}

impl<'m> Session<'m> {
    pub(crate) fn new(
        model: &'m Model,
        ctx: Context<'m>,
        prefill_chunk: usize,
        kv_reuse: bool,
    ) -> Session<'m> {
        let prefill_chunk = prefill_chunk.clamp(1, ctx.n_batch());
        Session {
            model,
            ctx,
            cached: Vec::new(),
            prefill_chunk,
            kv_reuse,
        }
    }

    /// Forgets the cache; used after a failed or panicked job so the next one starts clean.
    pub(crate) fn reset(&mut self) {
        self.ctx.clear();
        self.cached.clear();
    }

    /// Runs one job. On `Err` the caller resets the session.
    pub(crate) fn run(
        &mut self,
        req: &mut CompletionRequest,
        prompt: &[TokenId],
        cancel: &CancelToken,
    ) -> Result<Outcome, EngineError> {
        let n_ctx = self.ctx.n_ctx() as usize;
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

        let mut stats = JobStats {
            n_prompt: prompt.len(),
            ..JobStats::default()
        };
        let started = Instant::now();
        let plan = reuse::plan(&self.cached, prompt, self.kv_reuse);
        if plan.n_keep == 0 {
            self.reset();
        } else if plan.n_keep < self.cached.len() {
            self.ctx.truncate(plan.n_keep)?;
            self.cached.truncate(plan.n_keep);
        }
        stats.n_reused = plan.n_keep;

        let rest = &prompt[plan.n_keep..];
        let n_chunks = rest.len().div_ceil(self.prefill_chunk);
        for (i, chunk) in rest.chunks(self.prefill_chunk).enumerate() {
            if cancel.is_cancelled() {
                stats.prefill_ms = ms_since(started);
                return Ok(Outcome::Cancelled(stats));
            }
            self.ctx
                .decode(chunk, self.cached.len(), i + 1 == n_chunks)?;
            self.cached.extend_from_slice(chunk);
            stats.n_evaluated += chunk.len();
            if let Some(f) = req.on_progress.as_mut() {
                f(&Progress {
                    n_evaluated: stats.n_evaluated,
                    n_generated: 0,
                });
            }
        }
        stats.prefill_ms = ms_since(started);

        let decode_started = Instant::now();
        let mut sampler = Sampler::new(&req.sampling);
        let mut tokens = Vec::new();
        let mut margins = Vec::new();
        let mut top_logprobs = Vec::new();
        let mut text = String::new();
        let mut utf8 = Utf8Stream::new();
        let mut piece = Vec::new();
        let stop = loop {
            if tokens.len() >= req.max_tokens as usize {
                break StopReason::MaxTokens;
            }
            if cancel.is_cancelled() {
                stats.n_generated = tokens.len();
                stats.decode_ms = ms_since(decode_started);
                return Ok(Outcome::Cancelled(stats));
            }
            let logits = self
                .ctx
                .logits()
                .ok_or_else(|| EngineError::Internal("no logits after decode".into()))?;
            if req.record_margins {
                margins.push(top2_margin(logits));
            }
            if req.top_logprobs > 0 {
                top_logprobs.push(top_log_probs(logits, req.top_logprobs));
            }
            let token = match (&req.sampling, sampler.as_mut()) {
                (Sampling::Random { .. }, Some(s)) => self
                    .ctx
                    .sample(s)
                    .ok_or_else(|| EngineError::Internal("sampler had no logits".into()))?,
                _ => argmax(logits),
            };
            if self.model.is_eog(token) {
                break StopReason::EndOfGeneration;
            }
            tokens.push(token);
            let checked = text.len();
            piece.clear();
            self.model.piece(token, &mut piece);
            utf8.push(&piece, &mut text);
            if let Some((keep, why)) = req.stop.find(&text, checked) {
                text.truncate(keep);
                break why;
            }
            if tokens.len() >= req.max_tokens as usize {
                break StopReason::MaxTokens;
            }
            if self.cached.len() + 1 >= n_ctx {
                break StopReason::ContextFull;
            }
            self.ctx.decode(&[token], self.cached.len(), true)?;
            self.cached.push(token);
            if let Some(f) = req.on_progress.as_mut() {
                f(&Progress {
                    n_evaluated: stats.n_evaluated,
                    n_generated: tokens.len(),
                });
            }
        };
        if !matches!(stop, StopReason::StopString | StopReason::LineEnd) {
            utf8.finish(&mut text);
        }
        stats.n_generated = tokens.len();
        stats.decode_ms = ms_since(decode_started);
        Ok(Outcome::Completed(Completion {
            text,
            tokens,
            stop,
            stats,
            margins,
            top_logprobs,
        }))
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Index of the largest logit; the lowest index among equals.
pub(crate) fn argmax(logits: &[f32]) -> TokenId {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as TokenId
}

/// The `n` most likely tokens with their log-probabilities (log-softmax), most likely first.
pub(crate) fn top_log_probs(logits: &[f32], n: usize) -> Vec<(TokenId, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits
        .iter()
        .map(|&v| f64::from(v - max).exp())
        .sum::<f64>()
        .ln() as f32;
    let mut ids: Vec<usize> = (0..logits.len()).collect();
    let n = n.min(ids.len());
    ids.select_nth_unstable_by(n.saturating_sub(1), |&a, &b| {
        logits[b].total_cmp(&logits[a])
    });
    ids.truncate(n);
    ids.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    ids.into_iter()
        .map(|i| (i as TokenId, logits[i] - max - log_sum))
        .collect()
}

/// Top-1 minus top-2 logit.
pub(crate) fn top2_margin(logits: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in logits {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    a - b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_prefers_lowest_index_among_ties() {
        assert_eq!(argmax(&[0.1, 0.5, 0.5, -1.0]), 1);
        assert_eq!(argmax(&[2.0]), 0);
    }

    #[test]
    fn top_log_probs_are_a_log_softmax() {
        let top = top_log_probs(&[0.0, 2.0, 1.0, 2.0f32.ln()], 2);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2]);
        let z = (1.0 + 2.0f32.exp() + 1.0f32.exp() + 2.0f32).ln();
        assert!((top[0].1 - (2.0 - z)).abs() < 1e-5, "{top:?}");
    }

    #[test]
    fn margin_is_gap_between_best_two() {
        assert!((top2_margin(&[0.1, 0.5, 0.25, -1.0]) - 0.25).abs() < 1e-6);
        assert_eq!(top2_margin(&[1.0, 1.0]), 0.0);
    }
}
