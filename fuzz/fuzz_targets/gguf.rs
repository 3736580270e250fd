#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| amd_engine::testing::fuzz::check_gguf(data));
