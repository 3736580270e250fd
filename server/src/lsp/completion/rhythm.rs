//! Adaptive debounce: how long to wait after a keystroke before the model generates, from the
//! user's own typing rhythm. While someone types in a burst, a suggestion started after every
//! key is thrown away at the next one (on a 2-core laptop generating 16 tokens takes longer
//! than the gap between two keys); waiting as long as most of their gaps within a burst puts
//! generation where the pauses are. The prompt itself is evaluated at once regardless (that
//! work stays in the KV cache), so only generation waits.

use std::collections::VecDeque;
use std::time::Instant;

/// Gaps longer than this end a burst; they are pauses, not typing speed.
const BURST_GAP_MS: f64 = 1000.0;
/// How many recent gaps make up the rhythm.
const KEPT: usize = 48;
/// Gaps needed before the rhythm is trusted.
const MIN_GAPS: usize = 8;
/// Wait as long as this share of the recent gaps.
const QUANTILE: f64 = 0.9;

#[derive(Debug, Default)]
pub struct Rhythm {
    last: Option<Instant>,
    gaps_ms: VecDeque<f64>,
}

impl Rhythm {
    /// A keystroke now.
    pub fn key(&mut self, now: Instant) {
        if let Some(last) = self.last {
            self.gap(now.saturating_duration_since(last).as_secs_f64() * 1e3);
        }
        self.last = Some(now);
    }

    fn gap(&mut self, ms: f64) {
        if ms < BURST_GAP_MS {
            if self.gaps_ms.len() == KEPT {
                self.gaps_ms.pop_front();
            }
            self.gaps_ms.push_back(ms);
        }
    }

    /// Milliseconds to wait after a keystroke: the user's typical gap between keys within a
    /// burst, within `min..=max` (`min` until enough keys were seen, or when `max <= min`).
    pub fn wait_ms(&self, min: u64, max: u64) -> u64 {
        if max <= min || self.gaps_ms.len() < MIN_GAPS {
            return min;
        }
        let mut v: Vec<f64> = self.gaps_ms.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let rank = ((QUANTILE * v.len() as f64).ceil() as usize).clamp(1, v.len());
        (v[rank - 1].ceil() as u64).clamp(min, max)
    }
}

/// How long a request waits before the model generates: `min` when it was invoked, or, with
/// `eager_first`, when its document has shown no suggestion since it was opened (the first
/// suggestion in a file should come while the user still types, not at their first pause);
/// else the rhythm's wait.
pub fn debounce_ms(
    rhythm: &Rhythm,
    (min, max): (u64, u64),
    invoked: bool,
    eager_first: bool,
    shown_nothing: bool,
) -> u64 {
    if invoked || (eager_first && shown_nothing) {
        min
    } else {
        rhythm.wait_ms(min, max)
    }
}

#[cfg(test)]
mod tests {
    use super::{debounce_ms, Rhythm};

    fn typed(gaps: &[f64]) -> Rhythm {
        let mut r = Rhythm::default();
        for &g in gaps {
            r.gap(g);
        }
        r
    }

    #[test]
    fn waits_as_long_as_most_gaps_within_bounds() {
        // Too few keys: the configured minimum.
        assert_eq!(typed(&[100.0; 5]).wait_ms(40, 300), 40);
        // Ten gaps of 100..=190 ms: the 90th percentile is 180.
        let gaps: Vec<f64> = (0..10).map(|i| 100.0 + 10.0 * i as f64).collect();
        assert_eq!(typed(&gaps).wait_ms(40, 300), 180);
        assert_eq!(typed(&gaps).wait_ms(40, 150), 150, "capped");
        assert_eq!(typed(&gaps).wait_ms(200, 300), 200, "at least the minimum");
        assert_eq!(typed(&gaps).wait_ms(40, 40), 40, "off when max <= min");
        // Pauses are not typing speed.
        let mut with_pauses = gaps.clone();
        with_pauses.extend([1500.0, 4000.0]);
        assert_eq!(typed(&with_pauses).wait_ms(40, 300), 180);
        // Fast typists wait less.
        assert_eq!(typed(&[50.0; 20]).wait_ms(40, 300), 50);
    }

    #[test]
    fn the_first_suggestion_in_a_document_and_invoked_ones_do_not_wait_for_the_rhythm() {
        let gaps: Vec<f64> = (0..10).map(|i| 100.0 + 10.0 * i as f64).collect();
        let r = typed(&gaps);
        // (invoked, eagerFirstSuggestion, shown nothing yet in the document) -> wait
        for (invoked, eager, nothing, want) in [
            (false, true, true, 40),
            (false, true, false, 180),
            (false, false, true, 180),
            (false, false, false, 180),
            (true, false, false, 40),
            (true, true, true, 40),
        ] {
            assert_eq!(
                debounce_ms(&r, (40, 300), invoked, eager, nothing),
                want,
                "invoked {invoked}, eager {eager}, shown nothing {nothing}"
            );
        }
    }
}
