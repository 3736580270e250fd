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
    replay("gguf", amd_engine::fuzz::check_gguf);
}
