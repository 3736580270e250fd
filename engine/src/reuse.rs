//! KV-cache reuse planning: which cached positions a new prompt keeps. Pure; no model needed.

use crate::TokenId;

/// What to do with the KV cache for a new prompt: keep positions `..n_keep`, evaluate the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReusePlan {
    pub n_keep: usize,
}

/// Plans reuse of `cached` (the tokens now in the KV cache, in order) for `prompt`.
///
/// Keeps the longest common prefix. When the whole prompt is cached, the last prompt token is
/// evaluated again: its logits are needed and the cache holds no logits.
pub fn plan(cached: &[TokenId], prompt: &[TokenId], reuse: bool) -> ReusePlan {
    if !reuse || prompt.is_empty() {
        return ReusePlan { n_keep: 0 };
    }
    let lcp = common_prefix(cached, prompt);
    ReusePlan {
        n_keep: lcp.min(prompt.len() - 1),
    }
}

/// Shortest run of tokens, after the common prefix, that counts as reusable from elsewhere in
/// the cache (with its positions shifted). Shorter coincidences are not worth a shift.
const MIN_CHUNK: usize = 4;

/// Tokens of `new` that no cache holding `old` could keep: everything except the common prefix
/// and the runs of at least [`MIN_CHUNK`] tokens that also occur in `old`, in order (a cache can
/// keep those by shifting their positions). Typing at the end changes the typed tokens; an
/// edit in the middle changes the edited ones; a window start that moved changes nothing.
pub fn changed(old: &[TokenId], new: &[TokenId]) -> usize {
    diff(old, new).changed
}

/// What [`diff`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diff {
    /// Tokens of `new` no cache holding `old` could keep.
    pub changed: usize,
    /// Where in `old` the last token `new` reused ends: what lies after it in `old` is text
    /// `new` did not reach (below the cursor, when the prompt ends at the cursor).
    pub old_end: usize,
}

/// [`changed`], and where the match with `old` ended.
pub fn diff(old: &[TokenId], new: &[TokenId]) -> Diff {
    let prefix = common_prefix(old, new);
    let base = prefix;
    let (old, new) = (&old[prefix..], &new[prefix..]);
    let mut index: std::collections::HashMap<&[TokenId], Vec<usize>> =
        std::collections::HashMap::new();
    for (j, gram) in old.windows(MIN_CHUNK).enumerate() {
        index.entry(gram).or_default().push(j);
    }
    let (mut i, mut j_min, mut changed) = (0, 0, 0);
    let mut old_end = 0;
    while i < new.len() {
        if new.len() - i < MIN_CHUNK {
            // The tail: kept if it continues the last reused run.
            let tail = &new[i..];
            if old.get(j_min..j_min + tail.len()) == Some(tail) {
                old_end = j_min + tail.len();
            } else {
                changed += tail.len();
            }
            break;
        }
        let found = index.get(&new[i..i + MIN_CHUNK]).and_then(|positions| {
            let k = positions.partition_point(|&j| j < j_min);
            positions.get(k).copied()
        });
        match found {
            Some(j) => {
                let run = common_prefix(&old[j..], &new[i..]);
                i += run;
                j_min = j + run;
                old_end = j_min;
            }
            None => {
                changed += 1;
                i += 1;
            }
        }
    }
    Diff {
        changed,
        old_end: base + old_end,
    }
}

/// Where a prompt picks up tokens set aside earlier (parked), after evaluating a few first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Splice {
    /// Tokens of the prompt's rest to evaluate before the reused run.
    pub lead: usize,
    /// Index in the parked tokens where the reused run starts.
    pub from: usize,
    /// Tokens reused.
    pub len: usize,
}

/// Shortest run worth taking back from the park (a position shift costs one pass over the
/// keys of the cache).
pub const MIN_SPLICE: usize = 16;

/// llama.cpp calls (prompt chunks and decode steps) after which parked tokens no prompt took
/// back are dropped. They stay in the attention span of every call: 512 parked cells made a
/// decode step after a 200-token prompt ~4.3 ms slower (~8 µs per cell) on the development
/// machine, while evaluating a token again costs ~5 ms (prefill at ~200 tok/s), so after some
/// 600 calls keeping them has cost more than evaluating them again would (docs/benchmarks.md).
pub const PARK_MAX_CALLS: usize = 512;

/// Finds the longest run of `rest` (the prompt after its common prefix with the cache) that
/// also occurs in `parked`, wherever it starts: right after the tokens typed at an edit, after
/// a window start that moved back, or after a chunk of context that came in before the current
/// file. Its first `recompute` tokens are left out: they are evaluated again, so that the code
/// right after an edit sees the edit (the reused run's keys were computed without it). Runs
/// shorter than [`MIN_SPLICE`] are not worth it. `limit` caps the reused run's end in `rest`
/// (the prompt's last token must be evaluated for its logits). Ties go to the earliest start.
pub fn splice(
    parked: &[TokenId],
    rest: &[TokenId],
    recompute: usize,
    limit: usize,
) -> Option<Splice> {
    let rest = &rest[..limit.min(rest.len())];
    if parked.len() < MIN_CHUNK || rest.len() < MIN_CHUNK {
        return None;
    }
    let mut index: std::collections::HashMap<&[TokenId], Vec<usize>> =
        std::collections::HashMap::new();
    for (j, gram) in parked.windows(MIN_CHUNK).enumerate() {
        index.entry(gram).or_default().push(j);
    }
    // (len, lead, from) of the longest run so far.
    let mut best: Option<(usize, usize, usize)> = None;
    for lead in 0..=rest.len() - MIN_CHUNK {
        let Some(starts) = index.get(&rest[lead..lead + MIN_CHUNK]) else {
            continue;
        };
        for &j in starts {
            if lead > 0 && j > 0 && rest[lead - 1] == parked[j - 1] {
                // Inside a run that started earlier, and shorter than it.
                continue;
            }
            let len = common_prefix(&parked[j..], &rest[lead..]);
            if best.is_none_or(|(l, _, _)| len > l) {
                best = Some((len, lead, j));
            }
        }
    }
    let (len, lead, from) = best?;
    // `then`, not `then_some`: `len - recompute` must not be computed when it would underflow.
    (len >= recompute + MIN_SPLICE).then(|| Splice {
        lead: lead + recompute,
        from: from + recompute,
        len: len - recompute,
    })
}

/// Length of the longest common prefix of two token sequences.
pub fn common_prefix(a: &[TokenId], b: &[TokenId]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cached: &[TokenId], prompt: &[TokenId], expect_keep: usize) {
        assert_eq!(
            plan(cached, prompt, true).n_keep,
            expect_keep,
            "cached={cached:?} prompt={prompt:?}"
        );
    }

    #[test]
    fn keeps_common_prefix_when_typing_at_the_end() {
        check(&[1, 2, 3], &[1, 2, 3, 4, 5], 3);
    }

    #[test]
    fn drops_tail_after_an_edit() {
        check(&[1, 2, 3, 4, 5], &[1, 2, 9, 4, 5], 2);
    }

    #[test]
    fn backspace_keeps_everything_before_it() {
        check(&[1, 2, 3, 4, 5], &[1, 2, 3, 4], 3);
    }

    #[test]
    fn whole_prompt_cached_reevaluates_last_token() {
        check(&[1, 2, 3], &[1, 2, 3], 2);
        check(&[1, 2, 3, 4], &[1, 2, 3], 2);
    }

    #[test]
    fn changed_counts_what_no_cache_could_keep() {
        let seq = |r: std::ops::RangeInclusive<i32>| r.collect::<Vec<TokenId>>();
        let with = |mut v: Vec<TokenId>, i: usize, t: TokenId| {
            v[i] = t;
            v
        };
        let old = seq(1..=20);
        assert_eq!(
            changed(&[1, 2, 3], &[1, 2, 3, 4, 5]),
            2,
            "typing at the end"
        );
        assert_eq!(
            changed(&old, &with(old.clone(), 10, 99)),
            1,
            "an edit in the middle"
        );
        let mut deleted = old.clone();
        deleted.remove(10);
        assert_eq!(changed(&old, &deleted), 0, "a deletion");
        let mut moved = vec![1];
        moved.extend(9..=20);
        moved.push(99);
        assert_eq!(
            changed(&old, &moved),
            1,
            "the window start moved, one token typed"
        );
        assert_eq!(changed(&old, &old), 0);
        assert_eq!(changed(&[], &[1, 2]), 2);
        assert_eq!(
            changed(&[7, 8, 9], &[1, 2, 3, 4, 5, 6]),
            6,
            "nothing in common"
        );
        let mut back = vec![1];
        back.extend(seq(11..=20));
        back.extend(seq(2..=10));
        assert_eq!(changed(&old, &back), 9, "runs are reused in order only");
        // Where the match with the old prompt ended.
        assert_eq!(
            diff(&old, &old[..12]).old_end,
            12,
            "a prompt that stops earlier"
        );
        assert_eq!(
            diff(&old, &[1, 2, 3, 77]).old_end,
            3,
            "typing above the old cursor"
        );
        assert_eq!(
            diff(&old, &moved).old_end,
            20,
            "the whole old prompt reused"
        );
    }

    #[test]
    fn splice_finds_the_parked_run_after_an_edit() {
        let parked: Vec<TokenId> = (100..200).collect();
        // Two tokens typed at the edit, then the old text goes on from parked[0].
        let mut rest = vec![7, 8];
        rest.extend(100..200);
        rest.push(5);
        let n = rest.len();
        assert_eq!(
            splice(&parked, &rest, 0, n - 1),
            Some(Splice {
                lead: 2,
                from: 0,
                len: 100
            })
        );
        // Recomputing 10 tokens after the edit: they move from the run to the lead.
        assert_eq!(
            splice(&parked, &rest, 10, n - 1),
            Some(Splice {
                lead: 12,
                from: 10,
                len: 90
            })
        );
        // The window start moved: the prompt continues from parked[30].
        let moved: Vec<TokenId> = (130..200).chain([1, 2]).collect();
        assert_eq!(
            splice(&parked, &moved, 0, moved.len() - 1),
            Some(Splice {
                lead: 0,
                from: 30,
                len: 70
            })
        );
        // The limit keeps the prompt's last token out of the run.
        assert_eq!(splice(&parked, &parked, 0, 99).map(|s| s.len), Some(99));
        // Far into the prompt (a chunk of context came in before the file): still found.
        let far: Vec<TokenId> = std::iter::repeat_n(1, 300).chain(100..200).collect();
        assert_eq!(
            splice(&parked, &far, 0, far.len()),
            Some(Splice {
                lead: 300,
                from: 0,
                len: 100
            })
        );
        // Of two runs, the longer one.
        let two: Vec<TokenId> = (150..170).chain([1]).chain(110..150).collect();
        assert_eq!(
            splice(&parked, &two, 0, two.len()),
            Some(Splice {
                lead: 21,
                from: 10,
                len: 40
            })
        );
        // Too short, or nothing in common.
        assert_eq!(
            splice(&parked, &(100..110).collect::<Vec<_>>(), 0, 10),
            None
        );
        assert_eq!(splice(&parked, &[1, 2, 3, 4, 5], 0, 5), None);
        // A run shorter than the tokens to recompute after the edit (no underflow).
        assert_eq!(
            splice(&parked, &(100..110).collect::<Vec<_>>(), 20, 10),
            None
        );
    }

    #[test]
    fn cold_when_reuse_is_off_or_nothing_matches() {
        assert_eq!(plan(&[1, 2, 3], &[1, 2, 3, 4], false).n_keep, 0);
        check(&[7, 8], &[1, 2], 0);
        check(&[], &[1], 0);
        check(&[1], &[], 0);
    }
}
