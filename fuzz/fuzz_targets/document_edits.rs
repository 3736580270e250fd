#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| amd_lsp::fuzz::check_document_edits(data));
