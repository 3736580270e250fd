//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same checks the
//! fuzz targets run, so every input the fuzzers kept is a regression test on stable Rust.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        check(&std::fs::read(&path).expect("read"));
        n += 1;
    }
    assert!(n > 0, "{} is empty", dir.display());
    n
}

#[test]
fn document_edits_corpus() {
    replay("document_edits", amd_lsp::fuzz::check_document_edits);
}

#[test]
fn framing_corpus() {
    replay("framing", amd_lsp::fuzz::check_framing);
}

#[test]
fn gguf_corpus() {
    replay("gguf", amd_engine::testing::fuzz::check_gguf);
}

/// Seeds of other architectures than llama (qwen2; gemma3 with per-layer KV heads and an
/// explicit head width): well-formed, so the fuzzer mutates from headers the checks accept.
#[test]
fn gguf_corpus_has_accepted_headers_of_other_architectures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/gguf");
    for (seed, arch) in [
        ("7856a3f56ef4d8ca91ce25c01bffca2fa210eff1", "qwen2"),
        ("e870656f4971e348297c2b2f79cbe6b9c605dc8d", "gemma3"),
    ] {
        let bytes = std::fs::read(dir.join(seed)).expect("seed");
        let header = amd_engine::gguf::parse_header(&bytes).expect("parses");
        let checked = amd_engine::gguf::validate::check_header(&header, false).expect("accepted");
        assert_eq!(checked.architecture, arch);
    }
}
