//! The arithmetic of speculative decoding, kept pure: the target's sampling distribution,
//! the exact accept/resample rule, adaptive draft length, prompt lookup, and the speedup
//! Leviathan et al. predict. The loop that drives models is `speculative.rs`.

use std::sync::atomic::{AtomicBool, Ordering};

use rand::Rng;

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

fn argmax(logits: &[f32]) -> TokenId {
    crate::session::argmax(logits)
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

static BROKEN_RULE: AtomicBool = AtomicBool::new(false);

/// Test hook: replaces the resampling step with a naive draw from the target distribution
/// (biased towards the drafted token), so that tests can show they detect a wrong rule.
#[doc(hidden)]
pub fn use_broken_rule_for_tests(on: bool) {
    BROKEN_RULE.store(on, Ordering::SeqCst);
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
    if BROKEN_RULE.load(Ordering::Relaxed) {
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

/// Chooses how many tokens to draft next.
#[derive(Clone, Debug)]
pub struct DraftControl {
    k: usize,
    max: usize,
    adaptive: bool,
}

impl DraftControl {
    pub fn new(length: DraftLength) -> DraftControl {
        match length {
            DraftLength::Fixed(k) => DraftControl {
                k: k.max(1),
                max: k.max(1),
                adaptive: false,
            },
            DraftLength::Adaptive { init, max } => DraftControl {
                k: init.clamp(1, max.max(1)),
                max: max.max(1),
                adaptive: true,
            },
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// After a verification of `drafted` tokens of which `accepted` were kept: grow after a
    /// fully accepted draft, shrink when less than half was kept.
    pub fn update(&mut self, drafted: usize, accepted: usize) {
        if !self.adaptive || drafted == 0 {
            return;
        }
        if accepted == drafted && drafted == self.k {
            self.k = (self.k + 1).min(self.max);
        } else if 2 * accepted < drafted {
            self.k = self.k.saturating_sub(1).max(1);
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
            use_broken_rule_for_tests(broken);
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
        use_broken_rule_for_tests(false);
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
    fn draft_length_adapts_within_bounds() {
        let mut c = DraftControl::new(DraftLength::Adaptive { init: 2, max: 4 });
        c.update(2, 2);
        assert_eq!(c.k(), 3);
        c.update(3, 3);
        c.update(4, 4);
        c.update(4, 4);
        assert_eq!(c.k(), 4);
        c.update(4, 1);
        assert_eq!(c.k(), 3);
        c.update(3, 0);
        c.update(2, 0);
        c.update(1, 0);
        assert_eq!(c.k(), 1);
        let mut fixed = DraftControl::new(DraftLength::Fixed(5));
        fixed.update(5, 0);
        assert_eq!(fixed.k(), 5);
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
