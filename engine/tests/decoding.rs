//! Decoding rules (sampling, stop strings, single line, budgets) and load/prompt errors.

mod common;

use amd_engine::gguf::{GgmlType, GgufWriter, TensorData, Value};
use amd_engine::{
    CompletionRequest, Engine, EngineConfig, EngineError, LoadError, Prompt, Sampling, StopReason,
};
use common::{block_on, tiny_engine, tiny_model, vocab_gguf};

const PROMPT: &str = "import heapq\n\ndef merge(a, b):\n    ";

fn complete(engine: &Engine, req: CompletionRequest) -> amd_engine::Completion {
    block_on(engine.submit(req))
        .expect("job")
        .completion()
        .expect("completed")
}

fn sampled(seed: u32) -> CompletionRequest {
    let mut req = CompletionRequest::greedy(Prompt::Text(PROMPT.into()), 24);
    req.sampling = Sampling::Random {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed,
    };
    req
}

#[test]
fn seeded_sampling_is_reproducible_and_seed_dependent() {
    let engine = tiny_engine(true);
    let a = complete(&engine, sampled(11));
    let b = complete(&engine, sampled(11));
    let c = complete(&engine, sampled(12));
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.tokens.len(), 24);
    assert_ne!(
        a.tokens, c.tokens,
        "a random model at temperature 1 over 32000 tokens"
    );
    let greedy = complete(
        &engine,
        CompletionRequest::greedy(Prompt::Text(PROMPT.into()), 24),
    );
    assert_ne!(greedy.tokens, a.tokens);
}

#[test]
fn progress_reports_the_text_generated_so_far() {
    let engine = tiny_engine(true);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut req = sampled(3);
    let log = std::sync::Arc::clone(&seen);
    req.on_progress = Some(Box::new(move |p| {
        if p.n_generated > 0 {
            log.lock().unwrap().push((p.n_generated, p.text.to_owned()));
        }
    }));
    let c = complete(&engine, req);
    let seen = seen.lock().unwrap();
    // One report per token but the last (which ends generation), each a prefix of the result.
    assert_eq!(seen.len(), c.stats.n_generated - 1);
    for (i, (n, text)) in seen.iter().enumerate() {
        assert_eq!(*n, i + 1);
        assert!(c.text.starts_with(text.as_str()), "{text:?} / {:?}", c.text);
    }
    assert!(seen.windows(2).all(|w| w[1].1.starts_with(w[0].1.as_str())));
    assert!(!seen.last().unwrap().1.is_empty());
}

#[test]
fn an_output_whose_first_line_is_the_one_to_avoid_starts_with_the_next_best_token() {
    let engine = tiny_engine(true);
    let prompt = block_on(engine.tokenize(PROMPT.to_owned(), true)).expect("tokenize");
    let greedy = |prompt: Vec<i32>, n: u32, avoid: Option<&str>| {
        let mut req = CompletionRequest::greedy(Prompt::Tokens(prompt), n);
        req.fresh_cache = true;
        req.not_first_line = avoid.map(str::to_owned);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&seen);
        req.on_progress = Some(Box::new(move |p| {
            if p.n_generated > 0 {
                log.lock().unwrap().push(p.text.to_owned());
            }
        }));
        let c = complete(&engine, req);
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        (c, seen)
    };
    let (free, _) = greedy(prompt.clone(), 12, None);
    assert!(
        !free.text.trim().is_empty() && !free.text.contains('\n'),
        "{:?}",
        free.text
    );

    // A line the output never is changes nothing.
    let (other, _) = greedy(prompt.clone(), 12, Some("no such line"));
    assert_eq!(other.tokens, free.tokens);

    // Its whole output as the line to avoid: the first token is the next most likely, the
    // rest what greedy decoding gives after it (token-identical to a cold run of that prompt,
    // so the cells of the dropped tokens are gone), and no progress showed the dropped text.
    let (avoided, seen) = greedy(prompt.clone(), 12, Some(&free.text));
    assert!(avoided.stats.avoided_line && !free.stats.avoided_line && !other.stats.avoided_line);
    assert_ne!(avoided.tokens[0], free.tokens[0]);
    assert_ne!(avoided.text.trim_end(), free.text.trim_end());
    assert_eq!(avoided.tokens.len(), 12, "the budget starts again");
    let mut after = prompt.clone();
    after.push(avoided.tokens[0]);
    let (cold, _) = greedy(after, 11, None);
    assert_eq!(avoided.tokens[1..], cold.tokens[..]);
    assert!(!seen.is_empty());
    for text in &seen {
        assert!(
            avoided.text.starts_with(text.as_str()),
            "{text:?} / {:?}",
            avoided.text
        );
    }
}

#[test]
fn max_tokens_and_stop_rules_end_generation() {
    let engine = tiny_engine(true);
    let free = complete(&engine, sampled(5));
    assert_eq!(free.stop, StopReason::MaxTokens);
    assert_eq!(free.stats.n_generated, 24);

    // Stop at a piece of text the model is known to produce: the output is cut before it.
    let chars: Vec<char> = free.text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let mut req = sampled(5);
    req.stop.stop_strings = vec![stop.clone()];
    let cut = complete(&engine, req);
    assert_eq!(cut.stop, StopReason::StopString);
    assert!(!cut.text.contains(&stop));
    assert!(free.text.starts_with(&cut.text));
    assert_eq!(free.text[cut.text.len()..].find(&stop), Some(0));

    // Single-line mode never returns a newline. (A random model over 32000 tokens rarely
    // emits one; the cut itself is unit-tested in `text`, through the same `StopRules::find`.)
    for seed in 0..4 {
        let mut req = sampled(seed);
        req.max_tokens = 48;
        req.stop.single_line = true;
        let c = complete(&engine, req);
        assert!(!c.text.contains('\n'), "{:?}", c.text);
    }

    let zero = complete(
        &engine,
        CompletionRequest::greedy(Prompt::Text(PROMPT.into()), 0),
    );
    assert_eq!((zero.text.as_str(), zero.stats.n_generated), ("", 0));
}

#[test]
fn bad_prompts_are_errors_and_the_engine_keeps_serving() {
    let mut config = EngineConfig::new(tiny_model());
    config.n_ctx = 256;
    let engine = Engine::start(config).expect("start");
    let long = "x = 1\n".repeat(400);
    let err = block_on(engine.submit(CompletionRequest::greedy(Prompt::Text(long), 4)))
        .expect_err("too long");
    assert!(
        matches!(err, EngineError::PromptTooLong { n_ctx: 256, .. }),
        "{err}"
    );
    let err = block_on(engine.submit(CompletionRequest::greedy(
        Prompt::Tokens(vec![1, 99_999]),
        4,
    )))
    .expect_err("bad token");
    assert!(
        matches!(err, EngineError::BadToken { token: 99_999, .. }),
        "{err}"
    );
    let err = block_on(engine.submit(CompletionRequest::greedy(Prompt::Tokens(vec![]), 4)))
        .expect_err("empty");
    assert!(matches!(err, EngineError::EmptyPrompt));
    let ok = complete(
        &engine,
        CompletionRequest::greedy(Prompt::Text(PROMPT.into()), 4),
    );
    assert_eq!(ok.stats.n_generated, 4);
    // A refused request leaves the KV cache as it was: the same prompt again is all reused.
    for bad in [Prompt::Tokens(vec![]), Prompt::Tokens(vec![1, 99_999])] {
        let err = block_on(engine.submit(CompletionRequest::greedy(bad, 4))).expect_err("refused");
        assert!(err.is_bad_request(), "{err}");
    }
    let again = complete(
        &engine,
        CompletionRequest::greedy(Prompt::Text(PROMPT.into()), 4),
    );
    assert!(
        again.stats.n_reused + 1 >= again.stats.n_prompt,
        "{:?}",
        again.stats
    );
    // Near the end of the context, generation stops instead of overflowing.
    let fill = "y = 2\n".repeat(40);
    let near = complete(&engine, CompletionRequest::greedy(Prompt::Text(fill), 200));
    assert_eq!(near.stop, StopReason::ContextFull, "{:?}", near.stats);
}

#[test]
fn broken_model_files_give_clear_errors() {
    let dir = std::env::temp_dir().join(format!("amd-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let start =
        |path: std::path::PathBuf| Engine::start(EngineConfig::new(path)).expect_err("must fail");

    assert!(matches!(
        start(dir.join("absent.gguf")),
        LoadError::Missing { .. }
    ));

    let random = dir.join("random.gguf");
    std::fs::write(
        &random,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .expect("write");
    let err = start(random);
    assert!(err.to_string().contains("not a GGUF file"), "{err}");

    let bytes = std::fs::read(tiny_model()).expect("read");
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let err = start(truncated);
    assert!(err.to_string().contains("outside the file"), "{err}");

    let err = start(vocab_gguf());
    assert!(err.to_string().contains("only a vocabulary"), "{err}");

    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("gpt2".into()));
    let gpt2 = dir.join("gpt2.gguf");
    w.write(&gpt2).expect("write");
    let err = start(gpt2);
    assert!(err.to_string().contains("no vocabulary"), "{err}");

    // Other architectures get llama.cpp's own tensor checks; its reason reaches the error.
    for arch in ["qwen2", "gemma3"] {
        let damaged = dir.join(format!("{arch}-damaged.gguf"));
        amd_engine::testing::testmodel::write_as_architecture(
            &tiny_model(),
            arch,
            Some("blk.1.ffn_down.weight"),
            &damaged,
        )
        .expect("write");
        let err = start(damaged);
        assert!(err.to_string().contains("tensor '"), "{arch}: {err}");
        let mut unbounded = amd_engine::gguf::read_header(&tiny_model()).expect("header");
        let mut w = GgufWriter::new();
        for (k, v) in std::mem::take(&mut unbounded.metadata) {
            w.set(&k.replace("llama.", &format!("{arch}.")), v);
        }
        w.set("general.architecture", Value::String(arch.into()));
        w.set(&format!("{arch}.attention.key_length"), Value::U32(1 << 30));
        w.add_tensor(TensorData {
            name: "output_norm.weight".into(),
            dims: vec![4],
            ggml_type: GgmlType::F32,
            data: vec![0; 16],
        });
        let path = dir.join(format!("{arch}-unbounded.gguf"));
        w.write(&path).expect("write");
        let err = start(path);
        assert!(err.to_string().contains("key_length"), "{arch}: {err}");
    }

    // A llama header whose hyperparameters would make llama.cpp allocate without bound.
    let mut header = amd_engine::gguf::read_header(&tiny_model()).expect("header");
    let mut w = GgufWriter::new();
    for (k, v) in std::mem::take(&mut header.metadata) {
        w.set(&k, v);
    }
    w.set("llama.block_count", Value::U32(4_000_000_000));
    w.add_tensor(TensorData {
        name: "output_norm.weight".into(),
        dims: vec![4],
        ggml_type: GgmlType::F32,
        data: vec![0; 16],
    });
    let huge = dir.join("huge-block-count.gguf");
    w.write(&huge).expect("write");
    let err = start(huge);
    assert!(err.to_string().contains("outside 1..=512"), "{err}");

    // A context whose KV cache cannot fit in memory is refused before llama.cpp allocates it.
    let mut config = EngineConfig::new(tiny_model());
    config.n_ctx = 4_000_000_000;
    let err = Engine::start(config).expect_err("too large");
    assert!(matches!(err, LoadError::ContextTooLarge { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
