//! The arithmetic of speculative decoding, kept pure: the target's sampling distribution,
//! the exact accept/resample rule, adaptive draft length, prompt lookup, and the speedup
//! Leviathan et al. predict. The loop that drives models is [`super`].

use rand::Rng;

use crate::logits::argmax;
use crate::{DraftLength, Sampling, TokenId};

/// A sampling distribution over tokens: the candidates left after top-k/top-p, with
/// probabilities that sum to 1, most likely first.
pub type Dist = Vec<(TokenId, f64)>;

/// The distribution llama.cpp's chain (top-k → top-p → temperature → dist) samples from.
/// Greedy, and temperature ≤ 0, give all mass to the argmax.
pub fn target_dist(logits: &[f32], sampling: &Sampling) -> Dist {
    let (temperature, top_k, top_p) = match *sampling {
        Sampling::Greedy => return vec![(argmax(logits), 1.0)],
        Sampling::Random {
            temperature,
            top_k,
            top_p,
            ..
        } => (temperature, top_k, top_p),
    };
    if temperature <= 0.0 {
        return vec![(argmax(logits), 1.0)];
    }
    let mut ids: Vec<usize> = (0..logits.len()).collect();
    ids.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if top_k > 0 {
        ids.truncate(top_k as usize);
    }
    if top_p < 1.0 {
        let probs = softmax(ids.iter().map(|&i| f64::from(logits[i])));
        let mut cum = 0.0;
        let mut keep = ids.len();
        for (n, p) in probs.iter().enumerate() {
            cum += p;
            if cum >= f64::from(top_p) {
                keep = n + 1;
                break;
            }
        }
        ids.truncate(keep.max(1));
    }
    let t = f64::from(temperature);
    let probs = softmax(ids.iter().map(|&i| f64::from(logits[i]) / t));
    ids.into_iter().map(|i| i as TokenId).zip(probs).collect()
}

fn softmax(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let v: Vec<f64> = values.collect();
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

/// The probability of `token` under `dist`.
pub fn prob(dist: &[(TokenId, f64)], token: TokenId) -> f64 {
    dist.iter().find(|(t, _)| *t == token).map_or(0.0, |p| p.1)
}

/// Draws a token from `dist`.
pub fn sample(dist: &[(TokenId, f64)], rng: &mut impl Rng) -> TokenId {
    let total: f64 = dist.iter().map(|p| p.1).sum();
    let mut u = rng.random::<f64>() * total;
    for &(t, p) in dist {
        if u < p {
            return t;
        }
        u -= p;
    }
    dist.last().map_or(0, |p| p.0)
}

/// What verification decides at one drafted position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// The drafted token is rejected; this token is emitted in its place.
    Replace(TokenId),
}

/// Test hook, compiled only with the `test-hooks` feature (the engine's own tests turn it on;
/// no build of the server does): replaces the resampling step with a naive draw from the
/// target distribution (biased towards the drafted token), so that tests can show they detect
/// a wrong rule.
#[cfg(any(test, feature = "test-hooks"))]
#[doc(hidden)]
pub mod broken_rule {
    use std::sync::atomic::{AtomicBool, Ordering};

    static ON: AtomicBool = AtomicBool::new(false);

    pub fn set(on: bool) {
        ON.store(on, Ordering::SeqCst);
    }

    pub(super) fn on() -> bool {
        ON.load(Ordering::Relaxed)
    }
}

/// The exact rule of speculative sampling (Leviathan et al. 2023; Chen et al. 2023): accept a
/// token `x` drafted from `q` with probability min(1, p(x)/q(x)); on rejection draw from the
/// normalised max(0, p − q). The emitted token is then distributed as `p`. With a greedy or
/// lookup draft `q` is one-hot on `x`, and this is "sample from p and compare". With greedy
/// `p` (one-hot on the argmax) it accepts exactly when `x` is the argmax.
pub fn verify(
    p: &[(TokenId, f64)],
    q: &[(TokenId, f64)],
    x: TokenId,
    rng: &mut impl Rng,
) -> Verdict {
    let (px, qx) = (prob(p, x), prob(q, x));
    if qx > 0.0 && (px >= qx || rng.random::<f64>() * qx < px) {
        return Verdict::Accept;
    }
    #[cfg(any(test, feature = "test-hooks"))]
    if broken_rule::on() {
        return Verdict::Replace(sample(p, rng));
    }
    let residual: Dist = p
        .iter()
        .map(|&(t, pt)| (t, (pt - prob(q, t)).max(0.0)))
        .filter(|r| r.1 > 0.0)
        .collect();
    if residual.is_empty() {
        // p ≤ q everywhere means p = q, and x was accepted; only rounding gets here.
        return Verdict::Replace(sample(p, rng));
    }
    Verdict::Replace(sample(&residual, rng))
}

/// What speculation has cost and earned on this machine, kept across jobs: time of a target
/// call by batch size, time per drafted token, and the per-token acceptance α. The adaptive
/// draft length maximises expected tokens per millisecond under it, and k = 0 (plain
/// decoding) is a candidate, so speculation turns itself off where verification costs more
/// than it saves (a 2-core CPU, measured in docs/benchmarks.md).
#[derive(Clone, Debug)]
pub struct CostModel {
    /// Recent times of a target call evaluating n tokens, at index n (their median is used: one
    /// slow call, a page fault or another process, must not decide for hundreds).
    call_ms: Vec<Recent>,
    /// Milliseconds per drafted token while the draft model keeps up with the output (EMA;
    /// 0 = not measured).
    draft_ms: f64,
    /// Milliseconds per token the draft model spends catching up on output it has not seen
    /// (EMA; 0 = not measured): what a try after a run of plain steps costs first.
    catch_up_ms: f64,
    /// Decayed counts of accepted and examined drafted tokens.
    accepted: f64,
    examined: f64,
    /// Plain calls since speculation was last tried.
    since_probe: u32,
    /// Drafting calls since a plain step was last timed.
    since_plain: u32,
    /// Drafting calls after which a plain step is timed again: [`RETIME_EVERY`], doubled each
    /// time drafting goes on after one (up to [`RETIME_MAX`]), back to [`RETIME_EVERY`] when
    /// drafting starts on a try.
    retime_every: u32,
    /// The last call was a plain step timed again while drafting.
    retimed: bool,
    /// Plain calls after which speculation is tried again: [`PROBE_EVERY`], doubled after each
    /// try that did not pay (a try costs the draft model's catch-up over everything emitted
    /// since it last ran, in a new job the prompt too), back to [`PROBE_EVERY`] when drafting
    /// wins.
    probe_every: u32,
}

/// Weight of a new measurement in the moving averages.
const EMA: f64 = 0.2;
/// Drafting calls after which a plain step is timed again: drafting on merit never times one,
/// and a plain step timed once, slowly, would keep drafting on for good (Qwen2.5-Coder 0.5B →
/// 1.5B, 2 cores: one `auto` run drafted k = 2 throughout at 0.72× the target alone).
/// Each costs one plain step where drafting gives several tokens, hence the doubling while it
/// keeps winning.
const RETIME_EVERY: u32 = 16;
/// The longest wait between plain steps timed again.
const RETIME_MAX: u32 = 1024;
/// Plain calls after which speculation is tried again (conditions change: load, context).
const PROBE_EVERY: u32 = 64;
/// The longest wait between tries.
const PROBE_MAX: u32 = 4096;
/// The most a try may cost in catching the draft model up, as a share of the time spent in
/// plain steps since the last one. A try at a new job's start catches up on the whole prompt:
/// on Qwen2.5-Coder 0.5B → 1.5B (2 cores) tries cost ~100 ms per drafted token and made
/// `auto` 6% slower than the target alone (docs/benchmarks.md).
const PROBE_SHARE: f64 = 0.03;
/// Tokens a draft in step with the output evaluates before drafting (the last drafted token
/// and the target's own); more is catching up.
const IN_STEP: usize = 2;
/// How much faster than plain decoding drafting must be expected to be before it is used: the
/// model leaves out the loop's own work (verification, draft catch-up bookkeeping) and timings
/// are noisy, so a predicted tie is a measured loss (Qwen2.5-Coder 0.5B → 1.5B on 2 cores:
/// k = 3 about break-even by the model, 0.96× measured).
const MARGIN: f64 = 1.05;

impl Default for CostModel {
    fn default() -> CostModel {
        CostModel {
            call_ms: Vec::new(),
            draft_ms: 0.0,
            catch_up_ms: 0.0,
            // A prior of α = 0.7 over 10 tokens: optimistic enough to try drafting.
            accepted: 7.0,
            examined: 10.0,
            since_probe: 0,
            since_plain: 0,
            retime_every: RETIME_EVERY,
            retimed: false,
            probe_every: PROBE_EVERY,
        }
    }
}

impl CostModel {
    /// The per-token acceptance estimate.
    pub fn alpha(&self) -> f64 {
        self.accepted / self.examined
    }

    /// Measured milliseconds of a target call over `n` tokens, if any.
    pub fn call_ms(&self, n: usize) -> Option<f64> {
        self.call_ms.get(n).and_then(Recent::median)
    }

    /// A target call over `n` tokens took `ms`. `chosen`: the adaptive length chose its size;
    /// a fixed-length job's calls are timed but are no choices (`bench spec` runs fixed lengths
    /// before `auto` on one cost model: their calls must not count as tries or plain steps).
    pub fn record_call(&mut self, n: usize, ms: f64, chosen: bool) {
        if self.call_ms.len() <= n {
            self.call_ms.resize(n + 1, Recent::default());
        }
        self.call_ms[n].push(ms);
        if !chosen {
            return;
        }
        if n == 1 {
            self.retimed = self.since_plain >= self.retime_every;
            self.since_probe += 1;
            self.since_plain = 0;
        } else {
            // A drafting call after a full wait was a try; one before it, a choice on merit.
            if self.since_probe >= self.probe_every {
                self.probe_every = (self.probe_every * 2).min(PROBE_MAX);
                self.retime_every = RETIME_EVERY;
            } else {
                self.probe_every = PROBE_EVERY;
                if self.retimed {
                    self.retime_every = (self.retime_every * 2).min(RETIME_MAX);
                }
            }
            self.retimed = false;
            self.since_plain += 1;
            self.since_probe = 0;
        }
    }

    /// A draft of `n` tokens that took `ms`, of which `prefill_ms` went into evaluating the
    /// `prefilled` output tokens the draft model had not seen. What exceeds a draft in step
    /// with the output ([`IN_STEP`] tokens) is catching up, timed apart: it is paid once after
    /// plain steps, not per drafted token.
    pub fn record_draft(&mut self, n: usize, ms: f64, prefilled: usize, prefill_ms: f64) {
        if n == 0 {
            return;
        }
        let excess = prefilled.saturating_sub(IN_STEP);
        let mut ms = ms;
        if excess > 0 {
            let per = prefill_ms / prefilled as f64;
            ema(&mut self.catch_up_ms, per);
            ms -= per * excess as f64;
        }
        ema(&mut self.draft_ms, ms.max(0.0) / n as f64);
    }

    /// After a verification: `accepted` drafted tokens kept, `rejected` is 1 when one was
    /// refused (0 when all were kept).
    pub fn record_verdict(&mut self, accepted: usize, rejected: usize) {
        let decay = 0.98f64.powi((accepted + rejected) as i32);
        self.accepted = self.accepted * decay + accepted as f64;
        self.examined = self.examined * decay + (accepted + rejected) as f64;
    }

    /// The cost of a call over `n` tokens: measured, else interpolated between measured
    /// sizes, else assumed to grow by 10% of a step per extra token (optimistic, so that
    /// untried lengths get tried).
    fn estimate_call(&self, n: usize, step: f64) -> f64 {
        if let Some(t) = self.call_ms(n) {
            return t;
        }
        let below = (1..n).rev().find_map(|m| self.call_ms(m).map(|t| (m, t)));
        let above = (n + 1..self.call_ms.len()).find_map(|m| self.call_ms(m).map(|t| (m, t)));
        match (below, above) {
            (Some((a, ta)), Some((b, tb))) => ta + (tb - ta) * (n - a) as f64 / (b - a) as f64,
            (Some((a, ta)), None) => ta.max(step * (1.0 + 0.1 * (n - a) as f64)),
            _ => step * (1.0 + 0.1 * (n - 1) as f64),
        }
    }

    /// Expected tokens per millisecond when drafting `k` (0 = plain decoding).
    pub fn rate(&self, k: usize) -> Option<f64> {
        let step = self.call_ms(1)?;
        if k == 0 {
            return Some(1.0 / step);
        }
        let draft = k as f64 * self.draft_ms;
        Some(expected_tokens(self.alpha(), k) / (draft + self.estimate_call(k + 1, step)))
    }

    /// The draft length with the best expected rate, up to `max`. A plain step is timed
    /// first (without it nothing can be compared: jobs that end on an end-of-generation token
    /// never reach a step where the budget forces k = 0); then, until a draft has been timed,
    /// it drafts `init` (small on CPU, larger on GPU). Drafting must be expected to beat plain
    /// decoding by [`MARGIN`]; after a long run of plain calls it tries the best drafting
    /// length once more.
    ///
    /// `catch_up`: output tokens the draft model has not seen, asked only when a try is due. A
    /// try waits until catching up on them costs at most [`PROBE_SHARE`] of the plain steps'
    /// time since the last try.
    pub fn choose(&self, init: usize, max: usize, catch_up: impl FnOnce() -> usize) -> usize {
        let Some(plain) = self.rate(0) else {
            return 0;
        };
        if self.draft_ms <= 0.0 {
            return init.clamp(1, max.max(1));
        }
        let best = (1..=max)
            .filter_map(|k| self.rate(k).map(|r| (k, r)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let affordable = || {
            catch_up() as f64 * self.catch_up_ms
                <= PROBE_SHARE * f64::from(self.since_probe) / plain
        };
        match best {
            Some(_) if self.since_plain >= self.retime_every => 0,
            Some((k, r)) if r > plain * MARGIN => k,
            Some((k, _)) if self.since_probe >= self.probe_every && affordable() => k,
            _ => 0,
        }
    }
}

/// The last few measurements of one thing.
#[derive(Clone, Debug, Default)]
struct Recent {
    samples: [f64; 5],
    len: usize,
    next: usize,
}

impl Recent {
    fn push(&mut self, x: f64) {
        self.samples[self.next] = x;
        self.next = (self.next + 1) % self.samples.len();
        self.len = (self.len + 1).min(self.samples.len());
    }

    /// The median (of an even count, the lower middle); `None` before the first.
    fn median(&self) -> Option<f64> {
        if self.len == 0 {
            return None;
        }
        let mut v = self.samples[..self.len].to_vec();
        v.sort_by(f64::total_cmp);
        Some(v[(self.len - 1) / 2])
    }
}

/// Moves a moving average towards `x` (the first measurement sets it).
fn ema(avg: &mut f64, x: f64) {
    *avg = if *avg > 0.0 {
        *avg + EMA * (x - *avg)
    } else {
        x
    };
}

/// Chooses how many tokens to draft next.
#[derive(Clone, Debug)]
pub struct DraftControl {
    length: DraftLength,
}

impl DraftControl {
    pub fn new(length: DraftLength) -> DraftControl {
        DraftControl { length }
    }

    /// Whether the length is chosen from measured costs.
    pub fn adaptive(&self) -> bool {
        matches!(self.length, DraftLength::Adaptive { .. })
    }

    /// The draft length for the next verification; `catch_up`: output tokens the draft model
    /// has not seen (see [`CostModel::choose`]).
    pub fn k(&self, costs: &CostModel, catch_up: impl FnOnce() -> usize) -> usize {
        match self.length {
            DraftLength::Fixed(k) => k,
            DraftLength::Adaptive { init, max } => costs.choose(init, max.max(1), catch_up),
        }
    }
}

/// Prompt lookup: finds the most recent earlier occurrence of the last n tokens of `stream`
/// (n from `ngram_max` down to `ngram_min`), first in `stream` itself, then in each of
/// `corpus`, and returns up to `k` tokens that followed it.
pub fn lookup_draft(
    stream: &[TokenId],
    corpus: &[Vec<TokenId>],
    ngram_min: usize,
    ngram_max: usize,
    k: usize,
) -> Vec<TokenId> {
    let ngram_min = ngram_min.max(1);
    for n in (ngram_min..=ngram_max.max(ngram_min)).rev() {
        if stream.len() < n {
            continue;
        }
        let key = &stream[stream.len() - n..];
        // In the stream: any earlier occurrence (one may overlap the key itself).
        let own = &stream[..stream.len() - 1];
        if let Some(start) = rfind(own, key) {
            let from = start + n;
            let to = (from + k).min(stream.len());
            return stream[from..to].to_vec();
        }
        for text in corpus {
            if let Some(start) = rfind(text, key) {
                let from = start + n;
                return text[from..(from + k).min(text.len())].to_vec();
            }
        }
    }
    Vec::new()
}

/// Start of the last occurrence of `key` in `hay` that has at least one token after it.
fn rfind(hay: &[TokenId], key: &[TokenId]) -> Option<usize> {
    if hay.len() <= key.len() {
        return None;
    }
    (0..hay.len() - key.len())
        .rev()
        .find(|&i| &hay[i..i + key.len()] == key)
}

/// Expected tokens per target call when each drafted token is accepted with probability
/// `alpha` and `k` are drafted: (1 − α^(k+1)) / (1 − α).
pub fn expected_tokens(alpha: f64, k: usize) -> f64 {
    if (1.0 - alpha).abs() < 1e-12 {
        return k as f64 + 1.0;
    }
    (1.0 - alpha.powi(k as i32 + 1)) / (1.0 - alpha)
}

/// The speedup Leviathan et al. predict: E / (k·c + 1), with `c` the cost of a draft step
/// relative to a target step (verification of k+1 tokens assumed to cost one target step).
pub fn leviathan_speedup(alpha: f64, k: usize, c: f64) -> f64 {
    expected_tokens(alpha, k) / (k as f64 * c + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn dist(v: &[(TokenId, f64)]) -> Dist {
        v.to_vec()
    }

    /// Pearson's chi-square of observed counts against expected probabilities.
    fn chi_square(counts: &[u64], probs: &[f64]) -> f64 {
        let n: u64 = counts.iter().sum();
        counts
            .iter()
            .zip(probs)
            .map(|(&o, &p)| {
                let e = p * n as f64;
                (o as f64 - e).powi(2) / e
            })
            .sum()
    }

    /// Emits one token the speculative way: draft x ~ q, verify against p.
    fn emit(p: &Dist, q: &Dist, rng: &mut ChaCha8Rng) -> TokenId {
        let x = sample(q, rng);
        match verify(p, q, x, rng) {
            Verdict::Accept => x,
            Verdict::Replace(t) => t,
        }
    }

    #[test]
    fn target_dist_follows_llama_cpp_chain() {
        let logits = [1.0f32, 3.0, 2.0, 0.0];
        assert_eq!(target_dist(&logits, &Sampling::Greedy), vec![(1, 1.0)]);
        let s = |temperature, top_k, top_p| Sampling::Random {
            temperature,
            top_k,
            top_p,
            seed: 0,
        };
        let d = target_dist(&logits, &s(1.0, 2, 1.0));
        assert_eq!(d.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2]);
        let e = 1.0f64.exp();
        assert!((d[0].1 - e / (e + 1.0)).abs() < 1e-12);
        // top-p 0.6: softmax(3,2,1,0) = .64,.24,.09,.03 → only the first survives.
        assert_eq!(target_dist(&logits, &s(1.0, 0, 0.6)).len(), 1);
        assert_eq!(target_dist(&logits, &s(1.0, 0, 0.7)).len(), 2);
        // Temperature sharpens after the cuts.
        let cold = target_dist(&logits, &s(0.5, 2, 1.0));
        assert!((cold[0].1 - e * e / (e * e + 1.0)).abs() < 1e-12);
    }

    /// The accept/resample rule reproduces p exactly, for sampled and one-hot drafts; a
    /// naive rule (on rejection, draw from p) is caught by the same test.
    #[test]
    fn rejection_sampling_preserves_the_target_distribution() {
        let p = dist(&[(0, 0.5), (1, 0.3), (2, 0.15), (3, 0.05)]);
        let drafts = [
            dist(&[(0, 0.1), (1, 0.6), (2, 0.1), (3, 0.2)]),
            dist(&[(1, 1.0)]),
            dist(&[(3, 0.7), (2, 0.3)]),
        ];
        const N: usize = 40_000;
        // Chi-square critical value for 3 degrees of freedom at p = 0.001.
        const CRITICAL: f64 = 16.27;
        let probs: Vec<f64> = p.iter().map(|x| x.1).collect();
        for broken in [false, true] {
            broken_rule::set(broken);
            for (i, q) in drafts.iter().enumerate() {
                let mut rng = ChaCha8Rng::seed_from_u64(7 + i as u64);
                let mut counts = [0u64; 4];
                for _ in 0..N {
                    counts[emit(&p, q, &mut rng) as usize] += 1;
                }
                let x2 = chi_square(&counts, &probs);
                if broken {
                    assert!(x2 > CRITICAL, "naive rule not detected with q={q:?}: {x2}");
                } else {
                    assert!(x2 < CRITICAL, "q={q:?}: counts {counts:?}, chi2 {x2}");
                }
            }
        }
        broken_rule::set(false);
    }

    #[test]
    fn greedy_verification_accepts_exactly_the_argmax() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let p = target_dist(&[0.0, 2.0, 1.0], &Sampling::Greedy);
        let q = dist(&[(1, 1.0)]);
        assert_eq!(verify(&p, &q, 1, &mut rng), Verdict::Accept);
        let q = dist(&[(2, 1.0)]);
        assert_eq!(verify(&p, &q, 2, &mut rng), Verdict::Replace(1));
    }

    #[test]
    fn draft_length_follows_measured_costs() {
        let mut c = CostModel::default();
        // Nothing timed yet: a plain step first, so that there is something to compare with.
        assert_eq!(c.choose(2, 8, || 0), 0);
        c.record_call(1, 10.0, true);
        // Then, before a draft has been timed, the length the caller says.
        assert_eq!(c.choose(2, 8, || 0), 2);
        assert_eq!(c.choose(4, 3, || 0), 3);
        c.record_draft(4, 4.0, 2, 1.0);
        // Cheap verification (GPU-like: 9 tokens cost 1.2 steps) and α 0.7 → draft long.
        for n in 2..=9 {
            c.record_call(n, 10.0 + 2.0 * (n - 1) as f64 / 8.0, true);
        }
        let k = c.choose(2, 8, || 0);
        assert!(k >= 4, "{k}");
        // Drafting on merit times a plain step again after 16 calls, then, while drafting keeps
        // winning, after 32, 64… (each costs a step where drafting gives several tokens).
        c.record_call(1, 10.0, true);
        for wait in [16, 32, 64] {
            for _ in 0..wait {
                assert!(c.choose(2, 8, || 0) >= 4);
                c.record_call(k + 1, 10.0 + 2.0 * k as f64 / 8.0, true);
            }
            assert_eq!(c.choose(2, 8, || 0), 0, "after {wait} drafting calls");
            c.record_call(1, 10.0, true);
        }
        // Verification as costly as the tokens it checks (a busy 2-core CPU) → plain decoding.
        let mut cpu = CostModel::default();
        cpu.record_call(1, 10.0, true);
        cpu.record_draft(2, 6.0, 2, 1.0);
        for n in 2..=9 {
            cpu.record_call(n, 10.0 * (0.8 + 0.5 * n as f64), true);
        }
        assert_eq!(cpu.choose(2, 8, || 0), 0);
        // A predicted tie is not enough (the margin): verification of k + 1 tokens costing
        // about what the drafted tokens save.
        let mut tie = CostModel::default();
        tie.record_call(1, 10.0, true);
        tie.record_draft(1, 3.2, 2, 1.0);
        for _ in 0..100 {
            tie.record_verdict(3, 1);
        }
        for n in 2..=9 {
            tie.record_call(n, 10.0 * (1.0 + 0.35 * (n - 1) as f64), true);
        }
        let best = (1..=8).filter_map(|k| tie.rate(k)).fold(0.0, f64::max);
        let plain = tie.rate(0).unwrap();
        assert!(best > plain && best < plain * MARGIN, "{best} vs {plain}");
        assert_eq!(tie.choose(2, 8, || 0), 0);
        // …and it tries again after a long run of plain steps.
        for _ in 0..64 {
            cpu.record_call(1, 10.0, true);
        }
        let k = cpu.choose(2, 8, || 0);
        assert!(k > 0);
        // A try that does not pay makes the next one wait twice as long.
        cpu.record_call(k + 1, 10.0 * (0.8 + 0.5 * (k + 1) as f64), true);
        for _ in 0..64 {
            cpu.record_call(1, 10.0, true);
        }
        assert_eq!(cpu.choose(2, 8, || 0), 0);
        for _ in 0..64 {
            cpu.record_call(1, 10.0, true);
        }
        assert!(cpu.choose(2, 8, || 0) > 0);
        // A try waits while catching the draft model up would cost more than 3% of the plain
        // steps' time since the last one: here 64 steps of 10 ms allow 19.2 ms.
        let mut lag = CostModel::default();
        lag.record_call(1, 10.0, true);
        // A first draft of 2 tokens that caught up on 100: 5 ms of drafting, 100 ms of catch-up.
        lag.record_draft(2, 105.0, 100, 100.0);
        assert!(
            (lag.draft_ms - (105.0 - 98.0) / 2.0).abs() < 1e-9,
            "{}",
            lag.draft_ms
        );
        assert!((lag.catch_up_ms - 1.0).abs() < 1e-9);
        lag.record_call(3, 30.0, true);
        for _ in 0..64 {
            lag.record_call(1, 10.0, true);
        }
        assert_eq!(lag.choose(2, 8, || 100), 0, "100 ms of catch-up");
        assert!(lag.choose(2, 8, || 19) > 0, "19 ms of catch-up");
        // A fixed-length job's calls are timed but are no tries: they leave the wait alone.
        let mut fixed = CostModel::default();
        fixed.record_call(1, 10.0, true);
        fixed.record_draft(2, 6.0, 2, 1.0);
        fixed.record_call(3, 40.0, true);
        for _ in 0..63 {
            fixed.record_call(1, 10.0, true);
            fixed.record_call(3, 40.0, false);
        }
        assert_eq!(fixed.choose(2, 8, || 0), 0, "63 plain steps");
        fixed.record_call(1, 10.0, true);
        assert!(fixed.choose(2, 8, || 0) > 0, "64 plain steps: a try");
        // A plain step timed once, slowly, does not keep drafting on: drafting on merit times
        // a plain step again every 16 calls, and the median forgets the slow one.
        let mut slow = CostModel::default();
        slow.record_call(1, 80.0, true);
        slow.record_draft(2, 20.0, 2, 1.0);
        for _ in 0..50 {
            slow.record_verdict(2, 1);
        }
        slow.record_call(3, 101.0, true);
        assert!(
            slow.choose(2, 8, || 0) > 0,
            "on merit against an 80 ms step"
        );
        for _ in 0..15 {
            slow.record_call(3, 101.0, true);
        }
        assert_eq!(
            slow.choose(2, 8, || 0),
            0,
            "16 drafting calls: time a plain step"
        );
        slow.record_call(1, 46.0, true);
        assert_eq!(
            slow.choose(2, 8, || 0),
            0,
            "against a 46 ms step it does not pay"
        );
        // A poor acceptance also turns drafting off.
        for _ in 0..200 {
            c.record_verdict(0, 1);
        }
        assert!(c.alpha() < 0.1);
        assert_eq!(c.choose(2, 8, || 0), 0);
        assert_eq!(DraftControl::new(DraftLength::Fixed(5)).k(&c, || 0), 5);
    }

    #[test]
    fn lookup_copies_what_followed_the_longest_recent_ngram() {
        // "a b c d x a b c" → the 3-gram "a b c" was followed by "d x".
        let stream = [1, 2, 3, 4, 9, 1, 2, 3];
        assert_eq!(lookup_draft(&stream, &[], 1, 3, 2), [4, 9]);
        assert_eq!(lookup_draft(&stream, &[], 1, 3, 10), [4, 9, 1, 2, 3]);
        // Nothing in the stream: the corpus is searched.
        let stream = [7, 8];
        let corpus = vec![vec![5, 7, 8, 6, 6], vec![]];
        assert_eq!(lookup_draft(&stream, &corpus, 2, 3, 4), [6, 6]);
        assert!(lookup_draft(&stream, &[], 2, 3, 4).is_empty());
        assert!(lookup_draft(&[], &corpus, 2, 3, 4).is_empty());
    }

    #[test]
    fn leviathan_formula() {
        assert!((expected_tokens(0.0, 4) - 1.0).abs() < 1e-12);
        assert!((expected_tokens(1.0, 4) - 5.0).abs() < 1e-12);
        // α = 0.7, k = 3, c = 0.15 → 2.533 / 1.45 (notes' table: 1.75).
        let s = leviathan_speedup(0.7, 3, 0.15);
        assert!((s - 1.7469).abs() < 1e-3, "{s}");
    }
}
