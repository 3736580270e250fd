//! Pure arithmetic over a model's logits: the greedy choice, log-probabilities, the margin.

use crate::TokenId;

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

/// The most likely token that `allowed` accepts (the lowest index among ties); `None` when it
/// accepts none.
pub(crate) fn argmax_where(logits: &[f32], allowed: impl Fn(TokenId) -> bool) -> Option<TokenId> {
    let mut best: Option<usize> = None;
    for (i, &v) in logits.iter().enumerate() {
        if best.is_none_or(|b| v > logits[b]) && allowed(i as TokenId) {
            best = Some(i);
        }
    }
    best.map(|b| b as TokenId)
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
    fn argmax_where_takes_the_most_likely_allowed() {
        let logits = [0.1, 0.9, 0.5, -1.0];
        assert_eq!(argmax_where(&logits, |t| t != 1), Some(2));
        assert_eq!(argmax_where(&logits, |t| t != 2), Some(1));
        assert_eq!(argmax_where(&[0.3, 0.9, 0.3], |t| t != 1), Some(0));
        assert_eq!(argmax_where(&[2.0], |t| t != 0), None);
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
