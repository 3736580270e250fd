//! Reuse beyond the common prefix: tokens parked after a far edit and taken back at shifted
//! positions (approximate: checked against cold runs), and other documents' caches saved and
//! put back (exact: token-identical to cold).

mod common;

use amd_engine::{Completion, CompletionRequest, Engine, Outcome, Prompt};
use std::path::Path;

use common::{block_on, engine_with, fixtures, tiny_bpe_model, tiny_model, tiny_model_head64};

/// Two tests of one check: on the tiny model (16-wide heads, so F16 keys) and on the tiny model
/// with 64-wide heads, where the default KV cache stores its keys as Q8_0.
macro_rules! on_both_kv_layouts {
    ($f16:ident, $q8:ident, $check:ident) => {
        #[test]
        fn $f16() {
            $check(&tiny_model());
        }

        #[test]
        fn $q8() {
            $check(&tiny_model_head64());
        }
    };
}

fn run(engine: &Engine, prompt: &[i32], document: Option<u64>) -> Completion {
    let mut req = CompletionRequest::greedy(Prompt::Tokens(prompt.to_vec()), 8);
    req.record_margins = true;
    req.document = document;
    match block_on(engine.submit(req)).expect("job") {
        Outcome::Completed(c) => c,
        Outcome::Cancelled(_) => panic!("nothing cancelled this job"),
    }
}

fn tokens(engine: &Engine, text: &str) -> Vec<i32> {
    block_on(engine.tokenize(text.to_owned(), true)).expect("tokenize")
}

fn heapq() -> String {
    let text = std::fs::read_to_string(fixtures().join("documents/heapq.py")).expect("heapq.py");
    text.chars().take(3000).collect()
}

on_both_kv_layouts!(
    shifted_reuse_after_far_edits_stays_close_to_cold,
    shifted_reuse_after_far_edits_stays_close_to_cold_with_q8_0_keys,
    shifted_reuse_after_far_edits_stays_close_to_cold_on
);

/// Tokens around an edit that may be evaluated again: those typed, the re-tokenized boundary
/// and the ones recomputed after it.
const EDIT_SLACK: usize = 48;

/// The user goes up the file, types a comment at the end of a line, and comes back to where
/// they were: the way back evaluates the edit and a few tokens after it, not the whole rest.
/// Over many such edits the suggestions agree with a cold evaluation of the same prompt.
fn shifted_reuse_after_far_edits_stays_close_to_cold_on(model: &Path) {
    let warm = engine_with(model, |_| {});
    let cold = engine_with(model, |c| c.kv_reuse = false);
    let doc = heapq();
    let line_ends: Vec<usize> = doc.match_indices('\n').map(|(i, _)| i).collect();
    let (mut n_same, mut n_first_same, mut n_trials) = (0, 0, 0);
    let mut worst_margin_differing = 0.0f32;
    for (k, &at) in line_ends.iter().skip(5).step_by(4).take(12).enumerate() {
        let edit = format!(" # edit {k}");
        let edited = format!("{}{edit}{}", &doc[..at], &doc[at..]);
        // Typing at the end of the file, then at the edit, then at the end again.
        let before = tokens(&warm, &doc);
        run(&warm, &before, Some(1));
        let far = tokens(&warm, &edited[..at + edit.len()]);
        run(&warm, &far, Some(1));
        let back = tokens(&warm, &edited);
        let got = run(&warm, &back, Some(1));
        let want = run(&cold, &back, Some(1));
        assert!(
            got.stats.n_shifted + 2 * EDIT_SLACK >= back.len() - far.len(),
            "edit {k}: what follows the edit is reused shifted: {:?}",
            got.stats
        );
        assert!(
            got.stats.n_evaluated <= back.len() - far.len() + 2 * EDIT_SLACK,
            "edit {k}: the way back evaluates the edit and a window after it: {:?}",
            got.stats
        );
        n_trials += 1;
        n_same += usize::from(got.tokens == want.tokens);
        n_first_same += usize::from(got.tokens.first() == want.tokens.first());
        if got.tokens != want.tokens {
            let i = amd_engine::reuse::common_prefix(&got.tokens, &want.tokens);
            // A strict prefix that ended by the budget has no margin at `i`: count it as the
            // worst (the assertion below then says so instead of panicking here).
            let margin = want.margins.get(i).copied().unwrap_or(f32::INFINITY);
            worst_margin_differing = worst_margin_differing.max(margin);
        }
    }
    eprintln!(
        "{n_trials} far edits: {n_same} suggestions identical to cold, {n_first_same} first tokens \
         identical; largest cold top-2 margin where they differ: {worst_margin_differing}"
    );
    assert_eq!(n_trials, 12);
    assert!(
        n_first_same * 10 >= n_trials * 9,
        "{n_first_same}/{n_trials}"
    );
    assert!(n_same * 10 >= n_trials * 7, "{n_same}/{n_trials}");
}

on_both_kv_layouts!(
    a_moved_window_start_is_reused_shifted,
    a_moved_window_start_is_reused_shifted_with_q8_0_keys,
    a_moved_window_start_is_reused_shifted_on
);

/// The window start moved forward (the prompt lost its first lines): the rest is taken back
/// shifted instead of evaluated again.
fn a_moved_window_start_is_reused_shifted_on(model: &Path) {
    let warm = engine_with(model, |_| {});
    let doc = heapq();
    let first = tokens(&warm, &doc);
    run(&warm, &first, Some(1));
    let cut = doc[..]
        .match_indices('\n')
        .nth(10)
        .map(|(i, _)| i + 1)
        .expect("lines");
    let moved = tokens(&warm, &format!("{}x = 1\n", &doc[cut..]));
    let got = run(&warm, &moved, Some(1));
    assert!(
        got.stats.n_shifted + 16 + 32 >= moved.len(),
        "reused shifted: {:?} of {}",
        got.stats,
        moved.len()
    );
    // Without shifting, only the BOS token would be kept (nothing, without BOS).
    let exact = engine_with(model, |c| c.kv_shift = false);
    run(&exact, &first, Some(1));
    let got = run(&exact, &moved, Some(1));
    let shared = amd_engine::reuse::common_prefix(&first, &moved);
    assert!(
        shared <= 1,
        "the windows share only BOS, or a first token by chance"
    );
    assert_eq!((got.stats.n_reused, got.stats.n_shifted), (shared, 0));
}

on_both_kv_layouts!(
    a_window_move_is_reused_while_older_tokens_are_parked,
    a_window_move_is_reused_while_older_tokens_are_parked_with_q8_0_keys,
    a_window_move_is_reused_while_older_tokens_are_parked_on
);

/// Tokens parked earlier (the cursor went up the file and stayed there) do not stop the next
/// move from being parked and taken back: the newer cache replaces them. Before, a held park
/// blocked it and the moved window was evaluated whole (without BOS: the park was lost too).
fn a_window_move_is_reused_while_older_tokens_are_parked_on(model: &Path) {
    let warm = engine_with(model, |_| {});
    let doc = heapq();
    let at = |n: usize| doc.char_indices().nth(n).map_or(doc.len(), |(i, _)| i);
    run(&warm, &tokens(&warm, &doc[..at(2400)]), Some(1));
    // Up the file: the rest is parked, and stays parked while the user types there.
    let top = format!("{}y", &doc[..at(900)]);
    run(&warm, &tokens(&warm, &doc[..at(900)]), Some(1));
    run(&warm, &tokens(&warm, &top), Some(1));
    // The window start moves forward (ten lines dropped).
    let cut = doc
        .match_indices('\n')
        .nth(10)
        .map(|(i, _)| i + 1)
        .expect("lines");
    let moved = tokens(&warm, &top[cut..]);
    let got = run(&warm, &moved, Some(1));
    assert!(
        got.stats.n_reused + 16 + 32 >= moved.len(),
        "reused (shifted): {:?} of {}",
        got.stats,
        moved.len()
    );
}

/// The same on a BPE vocabulary without BOS (SmolLM2's), where the two windows share no
/// prefix at all and the moved window's first line tokenizes differently.
#[test]
fn a_moved_window_start_is_reused_shifted_without_bos() {
    if let Some(model) = tiny_bpe_model() {
        a_moved_window_start_is_reused_shifted_on(&model);
        a_window_move_is_reused_while_older_tokens_are_parked_on(&model);
        shifted_reuse_after_far_edits_stays_close_to_cold_on(&model);
    }
}

on_both_kv_layouts!(
    switching_documents_restores_their_caches_exactly,
    switching_documents_restores_their_caches_exactly_with_q8_0_keys,
    switching_documents_restores_their_caches_exactly_on
);

/// Switching between documents puts each one's cache back: nothing is evaluated again, and
/// the suggestions are token-identical to a cold run (the saved state is exact).
fn switching_documents_restores_their_caches_exactly_on(model: &Path) {
    let warm = engine_with(model, |_| {});
    let keys = warm.kv_types().keys;
    let head64 = warm.info().n_embd == 128;
    assert_eq!(keys == amd_engine::KvType::Q8_0, head64, "{keys:?}");
    let cold = engine_with(model, |c| c.kv_reuse = false);
    let doc = heapq();
    let a = tokens(&warm, &doc[..1500]);
    let b = tokens(&warm, &doc[1500..]);
    run(&warm, &a, Some(1));
    run(&warm, &b, Some(2));
    for round in 0..3 {
        for (key, prompt) in [(1, &a), (2, &b)] {
            let got = run(&warm, prompt, Some(key));
            assert!(
                got.stats.restored,
                "round {round}, doc {key}: {:?}",
                got.stats
            );
            assert!(got.stats.n_evaluated <= 1, "round {round}: {:?}", got.stats);
            assert_eq!(got.tokens, run(&cold, prompt, None).tokens, "round {round}");
        }
    }
    // Without a budget, a switch starts over.
    let single = engine_with(model, |c| c.kv_documents_bytes = 0);
    run(&single, &a, Some(1));
    run(&single, &b, Some(2));
    let got = run(&single, &a, Some(1));
    assert!(!got.stats.restored);
    assert!(got.stats.n_evaluated > a.len() / 2, "{:?}", got.stats);
}

/// The user stays far above the old cursor for a long time: past `PARK_MAX_CALLS` llama.cpp
/// calls the parked tokens are dropped (every call paid for them), so going back evaluates the
/// rest again instead of shifting it.
#[test]
fn parked_tokens_are_dropped_after_long_enough_away() {
    let warm = engine_with(&tiny_model(), |_| {});
    let doc = heapq();
    let at = doc
        .match_indices('\n')
        .nth(3)
        .map(|(i, _)| i)
        .expect("lines");
    run(&warm, &tokens(&warm, &doc), Some(1));
    // Typing at the end of an early line, one character per job, until the calls made while
    // the rest is parked (a lower bound from each job's stats) pass the limit.
    let (mut typed, mut calls) = (String::new(), 0);
    while calls <= amd_engine::reuse::PARK_MAX_CALLS {
        typed.push(if typed.len() % 8 == 7 { ' ' } else { 'x' });
        let far = tokens(&warm, &format!("{}{typed}", &doc[..at]));
        let got = run(&warm, &far, Some(1));
        calls += usize::from(got.stats.n_evaluated > 0) + got.stats.n_generated.saturating_sub(1);
    }
    let back = tokens(&warm, &format!("{}{typed}{}", &doc[..at], &doc[at..]));
    let got = run(&warm, &back, Some(1));
    assert_eq!(got.stats.n_shifted, 0, "{:?}", got.stats);
    assert!(got.stats.n_evaluated > back.len() / 2, "{:?}", got.stats);
}

/// Near the end of the context, the parked tokens give way to the prompt (they share its
/// room) even while a later prompt is being spliced onto them: the way back is then evaluated
/// in full, and its suggestion is still the cold one.
#[test]
fn parked_tokens_give_way_to_the_prompt_near_the_context_limit() {
    let small = |c: &mut amd_engine::EngineConfig| c.n_ctx = 256;
    let warm = engine_with(&tiny_model(), small);
    let cold = engine_with(&tiny_model(), |c| {
        small(c);
        c.kv_reuse = false;
    });
    let all = tokens(&warm, &heapq());
    // A prompt that with its generated tokens nearly fills the context (232 + 7 of 256), so
    // that taking the parked rest back, after the 16 tokens past the edit, would not fit.
    let first = all[..232].to_vec();
    run(&warm, &first, Some(1));
    // An edit far above: everything after token 50 is parked.
    let edit = tokens(&warm, "x = 1")[1..].to_vec();
    let far: Vec<i32> = first[..50].iter().chain(&edit).copied().collect();
    run(&warm, &far, Some(1));
    // Back below the edit: what follows it continues the parked tokens.
    let back: Vec<i32> = far.iter().chain(&first[50..]).copied().collect();
    assert_eq!(back.len(), 236);
    let got = run(&warm, &back, Some(1));
    assert_eq!(
        got.tokens,
        run(&cold, &back, None).tokens,
        "{:?}",
        got.stats
    );
    assert_eq!(got.stats.n_shifted, 0, "{:?}", got.stats);
    // The cache is consistent afterwards: one more token typed reuses all of it.
    let mut more = back.clone();
    more.push(all[232]);
    let next = run(&warm, &more, Some(1));
    assert_eq!(next.tokens, run(&cold, &more, None).tokens);
}
