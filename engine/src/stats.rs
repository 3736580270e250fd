//! What the engine counts: counters readable from anywhere, the process's CPU time, and
//! what each document's recent prompts were (to count what a new one changed).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::EngineError;
use crate::{ModelRole, Outcome, TokenId};

/// Counters kept by the engine thread, readable from anywhere.
#[derive(Debug, Default)]
pub struct EngineCounters {
    pub n_jobs: AtomicU64,
    pub n_completed: AtomicU64,
    pub n_cancelled: AtomicU64,
    pub n_failed: AtomicU64,
    pub n_tokens_reused: AtomicU64,
    /// Reused tokens taken back from the park at shifted positions.
    pub n_tokens_shifted: AtomicU64,
    pub n_tokens_evaluated: AtomicU64,
    pub n_tokens_generated: AtomicU64,
    /// Prompt tokens that differed from the same document's previous prompt (the minimum).
    pub n_tokens_changed: AtomicU64,
    /// Jobs that evaluated their prompt from nothing (whole, or its first chunks before they
    /// were cancelled) although more than half of it was known from the document's previous
    /// prompts (a reuse path that gave up; 0 is the goal).
    pub n_whole_reevaluations: AtomicU64,
    /// Process CPU time spent in jobs, and in jobs that ended cancelled, in microseconds.
    pub cpu_us: AtomicU64,
    pub cpu_us_cancelled: AtomicU64,
    /// CPU time thrown away: what cancelled jobs spent generating (their prompt evaluation
    /// stays in the cache for the next job; `n_tokens_evaluated` against `n_tokens_changed`
    /// shows whether it was used), or all they spent without KV reuse, in microseconds.
    pub cpu_us_superseded: AtomicU64,
    /// Jobs whose document's KV cache was put back from memory.
    pub n_restored: AtomicU64,
    /// Jobs whose first line came out as the line to avoid and went back for another start.
    pub n_avoided_lines: AtomicU64,
    /// Documents whose KV caches are kept in memory now, and their bytes.
    pub saved_documents: AtomicU64,
    pub saved_bytes: AtomicU64,
    /// llama.cpp calls run with all their threads, and with one because other processes were
    /// using the cores (only with the default thread settings, see `cpu.rs`).
    pub n_calls_all_threads: AtomicU64,
    pub n_calls_one_thread: AtomicU64,
    /// Prompt evaluation speed of the main model, tokens per second (an `f64`'s bits; 0: not
    /// measured yet): a moving average over jobs that evaluated at least
    /// [`PREFILL_RATE_MIN_TOKENS`] prompt tokens.
    pub prefill_tokens_per_s: AtomicU64,
}

/// Jobs that evaluate fewer prompt tokens than this say little about prefill speed.
pub(crate) const PREFILL_RATE_MIN_TOKENS: usize = 32;

impl EngineCounters {
    /// The measured prompt evaluation speed (tokens per second), once there is one.
    pub fn prefill_rate(&self) -> Option<f64> {
        let rate = f64::from_bits(self.prefill_tokens_per_s.load(Ordering::Relaxed));
        (rate > 0.0).then_some(rate)
    }

    pub(crate) fn record_prefill(&self, n_evaluated: usize, prefill_ms: f64) {
        if n_evaluated < PREFILL_RATE_MIN_TOKENS || prefill_ms <= 0.0 {
            return;
        }
        let rate = n_evaluated as f64 * 1000.0 / prefill_ms;
        let next = match self.prefill_rate() {
            None => rate,
            Some(old) => 0.7 * old + 0.3 * rate,
        };
        self.prefill_tokens_per_s
            .store(next.to_bits(), Ordering::Relaxed);
    }

    /// Records a finished job: its CPU time (`cpu`), the documents' caches kept in memory
    /// (`saved`: documents, bytes), its token counts and, for the main model, its prefill speed.
    pub(crate) fn record_job(
        &self,
        result: &Result<Outcome, EngineError>,
        cpu: JobCpu,
        saved: (usize, usize),
        role: ModelRole,
    ) {
        self.cpu_us.fetch_add(cpu.total_us, Ordering::Relaxed);
        if matches!(result, Ok(Outcome::Cancelled(_))) {
            self.cpu_us_cancelled
                .fetch_add(cpu.total_us, Ordering::Relaxed);
            self.cpu_us_superseded
                .fetch_add(cpu.decode_us, Ordering::Relaxed);
        }
        self.saved_documents
            .store(saved.0 as u64, Ordering::Relaxed);
        self.saved_bytes.store(saved.1 as u64, Ordering::Relaxed);
        self.count(result);
        if let (Ok(outcome), ModelRole::Main) = (result, role) {
            let s = outcome.stats();
            self.record_prefill(s.n_evaluated, s.prefill_ms);
        }
    }

    /// Adds a finished job's token counts and ending.
    fn count(&self, result: &Result<Outcome, EngineError>) {
        match result {
            Ok(outcome) => {
                let s = outcome.stats();
                self.n_tokens_reused
                    .fetch_add(s.n_reused as u64, Ordering::Relaxed);
                self.n_tokens_evaluated
                    .fetch_add(s.n_evaluated as u64, Ordering::Relaxed);
                self.n_tokens_shifted
                    .fetch_add(s.n_shifted as u64, Ordering::Relaxed);
                self.n_tokens_generated
                    .fetch_add(s.n_generated as u64, Ordering::Relaxed);
                self.n_tokens_changed
                    .fetch_add(s.n_changed as u64, Ordering::Relaxed);
                if s.restored {
                    self.n_restored.fetch_add(1, Ordering::Relaxed);
                }
                if s.avoided_line {
                    self.n_avoided_lines.fetch_add(1, Ordering::Relaxed);
                }
                // Evaluated from nothing although most of it was known: the whole prompt at once,
                // or the first chunks of it (a job cancelled between chunks counts as changed
                // only what it evaluated, so a first prompt cut short is not counted).
                if s.n_reused == 0
                    && s.n_evaluated > 0
                    && s.n_changed * 2 < s.n_prompt.min(s.n_evaluated)
                {
                    self.n_whole_reevaluations.fetch_add(1, Ordering::Relaxed);
                }
                match outcome {
                    Outcome::Completed(_) => self.n_completed.fetch_add(1, Ordering::Relaxed),
                    Outcome::Cancelled(_) => self.n_cancelled.fetch_add(1, Ordering::Relaxed),
                };
            }
            Err(_) => {
                self.n_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Process CPU time a job took, in µs: all of it, and from its first decode step on.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JobCpu {
    pub(crate) total_us: u64,
    pub(crate) decode_us: u64,
}

/// Documents kept by [`LastPrompts`]: more than an editor has open at once.
const LAST_PROMPTS_KEPT: usize = 32;

/// Most tokens remembered of a document.
const KNOWN_TOKENS_MAX: usize = 16 << 10;

/// What the engine has seen of each recent document, to count what a new prompt changed:
/// the prompts spliced together, so that a prompt ending above the old cursor (an edit far
/// up the file) keeps what it did not reach, and coming back changes nothing.
#[derive(Default)]
pub(crate) struct LastPrompts(std::collections::VecDeque<(u64, Vec<TokenId>)>);

impl LastPrompts {
    /// Tokens of `prompt` that differ from what was known of `document`; remembers `prompt`.
    pub(crate) fn changed(&mut self, document: Option<u64>, prompt: &[TokenId]) -> usize {
        let Some(key) = document else {
            return prompt.len();
        };
        let previous = self
            .0
            .iter()
            .position(|(k, _)| *k == key)
            .and_then(|i| self.0.remove(i))
            .map(|(_, p)| p);
        let mut known = prompt.to_vec();
        let changed = match previous {
            None => prompt.len(),
            Some(old) => {
                let diff = crate::reuse::diff(&old, prompt);
                known.extend_from_slice(&old[diff.old_end..]);
                known.truncate(KNOWN_TOKENS_MAX);
                diff.changed
            }
        };
        self.0.push_front((key, known));
        self.0.truncate(LAST_PROMPTS_KEPT);
        changed
    }

    /// Forgets all but the first `n` tokens known of `document` (a cancelled job got no
    /// further).
    pub(crate) fn cut(&mut self, document: Option<u64>, n: usize) {
        if let Some((_, known)) = self.0.iter_mut().find(|(k, _)| Some(*k) == document) {
            known.truncate(n);
        }
    }
}

/// CPU time of the whole process (every thread: llama.cpp's workers included), in µs.
pub(crate) fn process_cpu_us() -> u64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
        }
    }
    0
}

#[cfg(test)]
mod last_prompts_tests {
    use super::LastPrompts;

    #[test]
    fn an_edit_far_above_and_back_changes_only_what_was_typed() {
        let mut seen = LastPrompts::default();
        let doc: Vec<i32> = (1..=100).collect();
        assert_eq!(seen.changed(Some(7), &doc), 100, "first prompt: all of it");
        assert_eq!(seen.changed(Some(7), &doc[..101 - 1]), 0);
        // The cursor goes up to position 40 and types two tokens there.
        let mut up = doc[..40].to_vec();
        up.extend([900, 901]);
        assert_eq!(seen.changed(Some(7), &up), 2);
        // Back at the end: the document is the old one with the two tokens inserted.
        let mut back = up.clone();
        back.extend(&doc[40..]);
        assert_eq!(seen.changed(Some(7), &back), 0, "nothing new since");
        // Another document does not disturb this one; without a key, all of it counts.
        assert_eq!(seen.changed(Some(8), &doc[..10]), 10);
        assert_eq!(seen.changed(Some(7), &back), 0);
        assert_eq!(seen.changed(None, &back), back.len());
    }
}

#[cfg(test)]
mod prefill_rate_tests {
    use super::EngineCounters;

    #[test]
    fn the_prefill_rate_is_a_moving_average_of_jobs_that_evaluated_enough() {
        let c = EngineCounters::default();
        assert_eq!(c.prefill_rate(), None);
        c.record_prefill(8, 10.0); // too few tokens to say anything
        assert_eq!(c.prefill_rate(), None);
        c.record_prefill(200, 1000.0); // 200 tok/s
        assert_eq!(c.prefill_rate(), Some(200.0));
        c.record_prefill(100, 250.0); // 400 tok/s: 0.7 * 200 + 0.3 * 400
        assert!((c.prefill_rate().unwrap() - 260.0).abs() < 1e-9);
        c.record_prefill(100, 0.0); // no time measured: ignored
        assert!((c.prefill_rate().unwrap() - 260.0).abs() < 1e-9);
    }
}
