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
    fn cold_when_reuse_is_off_or_nothing_matches() {
        assert_eq!(plan(&[1, 2, 3], &[1, 2, 3, 4], false).n_keep, 0);
        check(&[7, 8], &[1, 2], 0);
        check(&[], &[1], 0);
        check(&[1], &[], 0);
    }
}
