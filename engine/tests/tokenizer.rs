//! The engine's tokenizer against llama.cpp's own Llama-2 test vectors, and UTF-8 assembly.

mod common;

use amd_engine::{Engine, EngineConfig};
use common::{block_on, fixtures, vocab_gguf};

fn vocab_engine() -> Engine {
    let mut config = EngineConfig::new(vocab_gguf());
    config.vocab_only = true;
    Engine::start(config).expect("load vocab-only GGUF")
}

#[test]
fn reproduces_llama_cpp_tokenizer_vectors() {
    let dir = fixtures().join("llama2-vocab");
    let inputs = std::fs::read_to_string(dir.join("tokenizer-cases.inp")).expect("inp");
    let outputs = std::fs::read_to_string(dir.join("tokenizer-cases.out")).expect("out");
    let inputs: Vec<&str> = inputs.split("\n__ggml_vocab_test__\n").collect();
    let outputs: Vec<&str> = outputs.split('\n').collect();
    assert_eq!(inputs.len(), 47);
    assert_eq!(outputs.len(), 47);
    let engine = vocab_engine();
    let mut n_ok = 0;
    for (input, expected) in inputs.iter().zip(&outputs) {
        let expected: Vec<i32> = expected
            .split_whitespace()
            .map(|t| t.parse().expect("token id"))
            .collect();
        let got = block_on(engine.tokenize((*input).to_owned(), false)).expect("tokenize");
        assert_eq!(got, expected, "input {input:?}");
        n_ok += 1;
    }
    assert_eq!(n_ok, 47);
}

#[test]
fn adds_bos_and_never_parses_special_token_text() {
    let engine = vocab_engine();
    assert_eq!(engine.info().bos, Some(1));
    assert!(engine.info().add_bos);
    assert_eq!(
        engine.info().fim,
        None,
        "Llama-2's vocabulary has no FIM tokens"
    );
    let code = "def quick_sort(array):\n    return";
    let ids = block_on(engine.tokenize(code.into(), true)).expect("tokenize");
    assert_eq!(
        ids,
        [1, 822, 4996, 29918, 6605, 29898, 2378, 1125, 13, 1678, 736]
    );
    // User text that spells control tokens stays text: no id 1 or 2 after the BOS.
    let ids = block_on(engine.tokenize("x = '<s></s>'".into(), true)).expect("tokenize");
    assert_eq!(ids[0], 1);
    assert!(ids[1..].iter().all(|&t| t != 1 && t != 2), "{ids:?}");
}

#[test]
fn multibyte_characters_split_across_tokens_come_out_whole() {
    let engine = vocab_engine();
    let text = "s = \"你好, 世界 🙂 naïve ∑ 𝔘\"";
    let ids = block_on(engine.tokenize(text.into(), false)).expect("tokenize");
    let pieces = block_on(engine.detokenize(ids.clone())).expect("detokenize");
    assert_eq!(pieces.len(), ids.len());
    // Byte-fallback tokens carry parts of a character: those pieces are empty until the
    // character is complete, and nothing is ever emitted broken.
    assert!(
        pieces.iter().any(String::is_empty),
        "expected split characters in {ids:?}"
    );
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert_eq!(
        pieces.concat(),
        format!(" {text}"),
        "SPM adds one dummy-prefix space"
    );
}

#[test]
fn codellama_vocabulary_has_fim_tokens_that_user_text_cannot_produce() {
    use amd_engine::FimTokens;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = amd_engine::testing::testmodel::cached_tiny_model(dir, true).expect("write");
    let engine = Engine::start(EngineConfig::new(&path)).expect("load");
    assert_eq!(engine.info().n_vocab, 32016);
    assert_eq!(
        engine.info().fim,
        Some(FimTokens {
            pre: 32007,
            suf: 32008,
            mid: 32009,
            eot: Some(32010),
            repo_name: None,
            file_sep: None,
        })
    );
    let ids = block_on(engine.tokenize("a = '<PRE> ▁<SUF> <MID>'".into(), true)).expect("tokenize");
    assert!(ids.iter().all(|&t| t < 32000), "{ids:?}");
}
