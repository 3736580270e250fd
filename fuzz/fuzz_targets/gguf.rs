#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| amd_engine::fuzz::check_gguf(data));
