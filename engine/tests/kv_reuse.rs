//! KV reuse is exact: a replay of real editing, each prompt run with reuse and cold.

mod common;

use amd_engine::reuse::common_prefix;
use amd_engine::{CompletionRequest, Engine, Outcome, Prompt, StopReason};
use common::{block_on, engine_with, fixtures, tiny_bpe_model, tiny_model, tiny_model_head64};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bytes of prefix the prompt window may hold before its start moves.
const WINDOW_MAX: usize = 2400;
/// Where the start moves to: this many bytes before the cursor, then to a line start.
const WINDOW_KEEP: usize = 1600;

/// A document being edited, with a cursor and a sticky prompt-window start.
struct Editor {
    doc: String,
    cursor: usize,
    window_start: usize,
    source: Vec<char>,
    next_source: usize,
}

impl Editor {
    fn prompt(&mut self) -> &str {
        if self.window_start > self.cursor || self.cursor - self.window_start > WINDOW_MAX {
            let from = floor_boundary(&self.doc, self.cursor.saturating_sub(WINDOW_KEEP));
            self.window_start = self.doc[from..self.cursor]
                .find('\n')
                .map_or(from, |i| from + i + 1);
        }
        self.window_start = floor_boundary(&self.doc, self.window_start);
        &self.doc[self.window_start..self.cursor]
    }

    fn type_chars(&mut self, n: usize) {
        for _ in 0..n {
            let c = self.source[self.next_source % self.source.len()];
            self.next_source += 1;
            self.doc.insert(self.cursor, c);
            self.cursor += c.len_utf8();
        }
    }

    fn backspace(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(c) = self.doc[..self.cursor].chars().next_back() {
                self.cursor -= c.len_utf8();
                self.doc.remove(self.cursor);
            }
        }
    }

    /// Inserts a word at the end of a line above the cursor; the cursor stays (shifted).
    fn edit_above(&mut self, rng: &mut ChaCha8Rng) {
        let lines: Vec<usize> = self.doc[..self.cursor]
            .match_indices('\n')
            .map(|(i, _)| i)
            .collect();
        if lines.len() < 4 {
            return;
        }
        let at = lines[rng.random_range(lines.len() / 2..lines.len())];
        let word = " # edited";
        self.doc.insert_str(at, word);
        self.cursor += word.len();
    }

    /// Moves the cursor to the end of some other line.
    fn jump(&mut self, rng: &mut ChaCha8Rng) {
        let lines: Vec<usize> = self.doc.match_indices('\n').map(|(i, _)| i).collect();
        if !lines.is_empty() {
            self.cursor = lines[rng.random_range(0..lines.len())];
        }
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn run(engine: &Engine, prompt: Vec<i32>, record_margins: bool) -> amd_engine::Completion {
    let mut req = CompletionRequest::greedy(Prompt::Tokens(prompt), 8);
    req.record_margins = record_margins;
    match block_on(engine.submit(req)).expect("job") {
        Outcome::Completed(c) => c,
        Outcome::Cancelled(_) => panic!("nothing cancelled this job"),
    }
}

#[test]
fn reuse_is_token_identical_to_cold_over_200_edits() {
    reuse_is_token_identical_to_cold(&tiny_model());
}

/// The same with the default KV cache's Q8_0 keys (the tiny model's 16-wide heads keep F16).
#[test]
fn reuse_with_q8_0_keys_is_token_identical_to_cold_over_200_edits() {
    reuse_is_token_identical_to_cold(&tiny_model_head64());
}

/// The same on a BPE vocabulary without BOS (SmolLM2's): the common prefix may be empty.
#[test]
fn reuse_on_a_bpe_model_without_bos_is_token_identical_to_cold_over_200_edits() {
    if let Some(model) = tiny_bpe_model() {
        reuse_is_token_identical_to_cold(&model);
    }
}

fn reuse_is_token_identical_to_cold(model: &std::path::Path) {
    let text = std::fs::read_to_string(fixtures().join("documents/heapq.py")).expect("heapq.py");
    let split = floor_boundary(&text, 3000);
    let mut ed = Editor {
        doc: text[..split].to_owned(),
        cursor: split,
        window_start: 0,
        source: text[split..].chars().collect(),
        next_source: 0,
    };
    // The longest common prefix alone: exact, token for token (shifted reuse is checked
    // against cold runs in `shifted_reuse_after_far_edits_stays_close_to_cold`).
    let warm = engine_with(model, |c| c.kv_shift = false);
    let cold = engine_with(model, |c| c.kv_reuse = false);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut kv_mirror: Vec<i32> = Vec::new();
    let (mut n_steps, mut n_near_ties, mut n_prompt_total, mut n_reused_total) = (0, 0, 0, 0);
    let mut n_whole_prompt_cached = 0;
    let mut previous: Vec<i32> = Vec::new();
    let mut kinds = [0usize; 4];
    for step in 0..220 {
        let kind = match rng.random_range(0..100) {
            0..=59 => 0,
            60..=79 => 1,
            80..=89 => 2,
            _ => 3,
        };
        kinds[kind] += 1;
        match kind {
            0 => ed.type_chars(rng.random_range(1..=4)),
            1 => ed.backspace(rng.random_range(1..=3)),
            2 => ed.edit_above(&mut rng),
            _ => ed.jump(&mut rng),
        }
        let prompt_text = ed.prompt().to_owned();
        let prompt = block_on(warm.tokenize(prompt_text, true)).expect("tokenize");

        let got = run(&warm, prompt.clone(), false);
        let want = run(&cold, prompt.clone(), true);

        // Reuse bookkeeping: exactly the common prefix with what the cache held is kept; the
        // last prompt asked again evaluates nothing (its logits were kept).
        let expect_keep = if prompt == previous {
            prompt.len()
        } else {
            common_prefix(&kv_mirror, &prompt).min(prompt.len() - 1)
        };
        if common_prefix(&kv_mirror, &prompt) >= prompt.len() {
            n_whole_prompt_cached += 1;
        }
        previous = prompt.clone();
        assert_eq!(got.stats.n_reused, expect_keep, "step {step}");
        assert_eq!(
            got.stats.n_evaluated,
            prompt.len() - expect_keep,
            "step {step}"
        );
        assert_eq!(
            want.stats.n_evaluated,
            prompt.len(),
            "cold run evaluates everything"
        );

        if got.tokens != want.tokens {
            let i = common_prefix(&got.tokens, &want.tokens);
            // Past the end of the cold run's margins (one output a strict prefix of the other
            // that ended by the budget): no margin to excuse it, and the message says so.
            let margin = want.margins.get(i).copied().unwrap_or(f32::INFINITY);
            assert!(
                margin < 1e-3,
                "step {step}: reuse and cold differ at generated token {i} with margin {margin}: {:?} vs {:?}",
                got.tokens,
                want.tokens
            );
            n_near_ties += 1;
        }

        // What the warm engine's KV cache now holds: the prompt plus every generated token
        // that was fed back (all but the last, unless generation ended on an EOG token).
        kv_mirror = prompt.clone();
        let n_fed = match got.stop {
            StopReason::EndOfGeneration => got.tokens.len(),
            _ => got.tokens.len().saturating_sub(1),
        };
        kv_mirror.extend_from_slice(&got.tokens[..n_fed]);
        n_steps += 1;
        n_prompt_total += prompt.len();
        n_reused_total += got.stats.n_reused;
    }
    assert_eq!(n_steps, 220);
    assert!(
        kinds.iter().all(|&k| k > 5),
        "every kind of edit happened: {kinds:?}"
    );
    assert!(
        n_whole_prompt_cached > 0,
        "a backspace over generated text re-used a whole prompt"
    );
    assert!(
        n_reused_total * 10 > n_prompt_total * 8,
        "typing should reuse most of the prompt: {n_reused_total} of {n_prompt_total}"
    );
    assert!(
        n_near_ties <= 5,
        "{n_near_ties} near-ties in 220 steps is suspicious"
    );
    eprintln!("220 steps, {n_near_ties} accepted near-ties, reused {n_reused_total}/{n_prompt_total} prompt tokens");
}

/// The last prompt asked again (a keystroke inside the token that healing backs up over, the
/// same request twice) evaluates nothing and completes exactly as before; a sampled job, which
/// reads llama.cpp's own logits, evaluates the last token again.
#[test]
fn a_prompt_asked_again_evaluates_nothing() {
    let warm = engine_with(&tiny_model(), |c| c.kv_shift = false);
    let prompt =
        block_on(warm.tokenize("def heappush(heap, item):\n    ".into(), true)).expect("tokenize");
    let first = run(&warm, prompt.clone(), false);
    assert_eq!(first.stats.n_evaluated, prompt.len());
    let again = run(&warm, prompt.clone(), false);
    assert_eq!(
        (again.stats.n_reused, again.stats.n_evaluated),
        (prompt.len(), 0)
    );
    assert_eq!(again.tokens, first.tokens);
    // A longer prompt, then the first one again: the kept logits were for the longer one.
    let mut longer = prompt.clone();
    longer.extend_from_slice(&first.tokens[..1]);
    run(&warm, longer, false);
    let back = run(&warm, prompt.clone(), false);
    assert_eq!(back.stats.n_evaluated, 1);
    assert_eq!(back.tokens, first.tokens);
    let mut sampled = CompletionRequest::greedy(Prompt::Tokens(prompt.clone()), 8);
    sampled.sampling = amd_engine::Sampling::Random {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        seed: 1,
    };
    let Outcome::Completed(s) = block_on(warm.submit(sampled)).expect("job") else {
        panic!("nothing cancelled this job")
    };
    assert_eq!(
        s.stats.n_evaluated, 1,
        "llama.cpp's sampler needs the context's logits"
    );
}

/// FIM prompts with the cursor's line after the middle token (`<PRE> lines <SUF> after <MID>
/// line`, as llama.vim sends them): typing on the line only appends, so each keystroke
/// evaluates what it changed, exactly; with the whole prefix before `<SUF>` every keystroke
/// moves the suffix's tokens, the 16 after the edit are evaluated again and the rest is taken
/// back shifted (approximate).
#[test]
fn typing_on_a_line_of_a_fim_prompt_evaluates_what_it_changed() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let model = amd_engine::testing::testmodel::cached_tiny_model(dir, true).expect("write");
    let text = std::fs::read_to_string(fixtures().join("documents/heapq.py")).expect("heapq.py");
    let (before, after) = text.split_at(floor_boundary(&text, 2000));
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let typed = "        return heap[0] if heap else None";
    let evaluated = |in_middle: bool| {
        let engine = engine_with(&model, |_| {});
        let mut total = 0;
        for n in 1..=typed.len() {
            let line = &typed[..n];
            let (prefix, middle) = if in_middle {
                (
                    before[..line_start].to_owned(),
                    format!("{}{line}", &before[line_start..]),
                )
            } else {
                (format!("{before}{line}"), String::new())
            };
            let mut req = CompletionRequest::greedy(
                Prompt::Fim {
                    prefix,
                    middle,
                    suffix: after[..600].to_owned(),
                    max_tokens: 1500,
                    file: None,
                    context: Default::default(),
                },
                4,
            );
            req.heal = true;
            req.document = Some(1);
            let Outcome::Completed(c) = block_on(engine.submit(req)).expect("job") else {
                panic!("nothing cancelled this job")
            };
            if n > 1 {
                total += c.stats.n_evaluated;
                // Appending never needs the approximate shifted reuse.
                assert!(!in_middle || c.stats.n_shifted == 0, "keystroke {n}");
            }
        }
        total
    };
    let (middle, classic) = (evaluated(true), evaluated(false));
    let keys = typed.len() - 1;
    // Measured: 16 and 267 tokens for 39 keystrokes (a keystroke that changes the prompt's
    // tokens evaluates 1 against 17-18 plus 179 taken back shifted).
    assert!(middle <= keys, "{middle} tokens for {keys} keystrokes");
    assert!(classic >= 8 * middle, "{classic} against {middle} tokens");
}

/// Chunks of other files in front of the current file's code (`Prompt::*::context`): while they
/// stay the same, typing evaluates only what it changed and the answers are those of a cold
/// run, token for token; a chunk added after them costs its own tokens, and the current file's
/// code after it is taken back shifted instead of evaluated again.
#[test]
fn context_chunks_stay_in_the_cache_while_the_user_types() {
    let text = std::fs::read_to_string(fixtures().join("documents/heapq.py")).expect("heapq.py");
    let chunk = |from: usize, to: usize| amd_engine::ContextChunk {
        path: format!("lib/part{from}.py"),
        text: text[floor_boundary(&text, from)..floor_boundary(&text, to)].to_owned(),
    };
    let context = |chunks: Vec<amd_engine::ContextChunk>| amd_engine::Context {
        chunks,
        line_comment: "#".into(),
        max_tokens: 1200,
    };
    let two = context(vec![chunk(9000, 9600), chunk(12000, 12500)]);
    let doc = &text[..floor_boundary(&text, 2000)];
    let prompt = |typed: &str, context: &amd_engine::Context| Prompt::Prefix {
        text: format!("{doc}{typed}"),
        max_tokens: 3000,
        context: context.clone(),
    };
    let warm = engine_with(&tiny_model(), |_| {});
    let cold = engine_with(&tiny_model(), |c| c.kv_reuse = false);
    let ask = |engine: &Engine, prompt: Prompt| {
        let mut req = CompletionRequest::greedy(prompt, 4);
        req.document = Some(1);
        match block_on(engine.submit(req)).expect("job") {
            Outcome::Completed(c) => c,
            Outcome::Cancelled(_) => panic!("nothing cancelled this job"),
        }
    };
    let typed = "    return heap";
    let first = ask(&warm, prompt("", &two));
    assert!(first.stats.n_prompt > 600, "{:?}", first.stats);
    for n in 1..=typed.len() {
        let p = prompt(&typed[..n], &two);
        let got = ask(&warm, p.clone());
        assert!(got.stats.n_evaluated <= 3, "keystroke {n}: {:?}", got.stats);
        assert_eq!(got.tokens, ask(&cold, p).tokens, "keystroke {n}");
    }
    // A third chunk after the two: its tokens are evaluated, the code after it is not.
    let added = chunk(15000, 15400);
    let n_added = block_on(warm.tokenize(format!("# {}\n{}\n", added.path, added.text), false))
        .expect("tokenize")
        .len();
    let mut three = two.clone();
    three.chunks.push(added);
    let got = ask(&warm, prompt(typed, &three));
    assert!(
        got.stats.n_evaluated <= n_added + 16 + 8,
        "{n_added} tokens added: {:?}",
        got.stats
    );
    assert!(got.stats.n_shifted > 300, "{:?}", got.stats);
    // And typing goes on from there at the cost of what is typed.
    let got = ask(&warm, prompt(&format!("{typed}[0]"), &three));
    assert!(got.stats.n_evaluated <= 3, "{:?}", got.stats);
}
