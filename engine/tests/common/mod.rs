//! Shared set-up for the engine's integration tests: fixture paths and the tiny test model.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use amd_engine::testing::testmodel::{cached_tiny_model, cached_tiny_model_head64};
use amd_engine::{Engine, EngineConfig};

pub const TIMEOUT: Duration = Duration::from_secs(120);

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub fn vocab_gguf() -> PathBuf {
    amd_engine::testing::testmodel::fixture_vocab()
}

/// The tiny random Llama (2 layers, hidden 64, real Llama-2 vocabulary), written once per
/// target directory. The file is deterministic and written atomically, so test binaries
/// running at the same time may race to write it harmlessly.
pub fn tiny_model() -> PathBuf {
    cached_tiny_model(Path::new(env!("CARGO_TARGET_TMPDIR")), false).expect("write tiny test model")
}

/// The tiny model with 64-wide heads, at which the default KV cache stores its keys as Q8_0
/// (the tiny model's 16-wide heads get F16 keys; see `validate::effective_kv_types`).
pub fn tiny_model_head64() -> PathBuf {
    cached_tiny_model_head64(Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("write tiny test model")
}

/// The tiny model with SmolLM2's vocabulary: GPT-2-style BPE, no BOS (the real models users
/// run: SmolLM2, Qwen2.5-Coder, StarCoder2), when SmolLM2 is there to take it from
/// (`scripts/fetch-models.sh smollm2-135m`, which `scripts/test.sh` runs). `None` otherwise:
/// the test says so and passes.
pub fn tiny_bpe_model() -> Option<PathBuf> {
    let vocab = proxy_model("SmolLM2-135M-Instruct.Q4_1.gguf")?;
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "tiny-bpe-smollm2-v{}.gguf",
        amd_engine::testing::testmodel::GENERATOR_VERSION
    ));
    if !out.is_file() {
        amd_engine::testing::testmodel::write_random_llama(
            &vocab,
            &amd_engine::testing::testmodel::LlamaShape::tiny(),
            amd_engine::testing::testmodel::WeightType::F32,
            1,
            &out,
        )
        .expect("write the tiny BPE model");
    }
    Some(out)
}

pub fn tiny_engine(kv_reuse: bool) -> Engine {
    tiny_engine_with(|c| c.kv_reuse = kv_reuse)
}

/// The tiny model's engine as the tests run it, with `change` applied to its configuration.
pub fn tiny_engine_with(change: impl FnOnce(&mut EngineConfig)) -> Engine {
    engine_with(&tiny_model(), change)
}

/// An engine on `model` set up as the tests run it, with `change` applied.
pub fn engine_with(model: &Path, change: impl FnOnce(&mut EngineConfig)) -> Engine {
    let mut config = EngineConfig::new(model);
    config.n_ctx = 2048;
    config.n_threads = 1;
    config.n_threads_batch = 1;
    // llama.cpp's CPU flash-attention kernel accumulates in F16, so with it the logits of the
    // same prompt split into different batches differ by ~1e-3 (measured: top-2 margins moved
    // by up to 3e-3 between prefill chunks of 16, 64 and 512). Without it they are identical,
    // which is what lets these tests demand token-identical reuse.
    config.flash_attention = false;
    change(&mut config);
    Engine::start(config).expect("start engine on a tiny model")
}

/// Runs a future to completion on a current-thread runtime, failing after [`TIMEOUT`].
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(async { tokio::time::timeout(TIMEOUT, f).await.expect("timed out") })
}

pub use amd_engine::testing::proxy_model;
