//! Random-weight Llama models for tests and benchmarks, written deterministically and offline.
//!
//! The vocabulary (tokens, scores, types, special ids) is copied from a vocab-only GGUF, so the
//! models tokenize exactly like the real AMD-Llama-135m / Llama-2. The weights are seeded
//! normal noise: outputs are meaningless, but shapes, speed and KV behaviour are real.

use std::path::{Path, PathBuf};

use half::f16;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::error::LoadError;
use crate::gguf::{self, GgmlType, GgufWriter, TensorData, Value};
use crate::llama::{quantize, QuantType};

pub use crate::gguf::shape::LlamaShape;

/// Bumped whenever the generator's output changes, so files cached under names that carry it
/// (tests keep models in the target directory) are never stale.
pub const GENERATOR_VERSION: u32 = 2;

/// The Llama-2 vocabulary GGUF in this repository's test fixtures.
pub fn fixture_vocab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama2-vocab/llama2-vocab.gguf")
}

/// The tiny test model (F32, seed 1; CodeLlama's vocabulary with seed 2 when `codellama`),
/// written into `dir` unless already there. Its name carries [`GENERATOR_VERSION`]; the
/// file is written atomically, so concurrent callers may race harmlessly.
pub fn cached_tiny_model(dir: &Path, codellama: bool) -> Result<PathBuf, TestModelError> {
    let (name, shape, seed) = if codellama {
        (
            "tiny-codellama-vocab",
            LlamaShape::tiny().with_codellama_vocab(),
            2,
        )
    } else {
        ("tiny-llama-f32-seed1", LlamaShape::tiny(), 1)
    };
    cached(dir, name, &shape, seed)
}

/// A tiny test model with 64-wide heads (2 layers, hidden 128, 2 heads; F32, seed 3), the
/// head size at which llama.cpp stores quantized keys the way the default KV cache does for
/// AMD-Llama-135m (rotated, and shiftable).
pub fn cached_tiny_model_head64(dir: &Path) -> Result<PathBuf, TestModelError> {
    cached(
        dir,
        "tiny-llama-head64-seed3",
        &LlamaShape::tiny_head64(),
        3,
    )
}

fn cached(
    dir: &Path,
    name: &str,
    shape: &LlamaShape,
    seed: u64,
) -> Result<PathBuf, TestModelError> {
    let path = dir.join(format!("{name}-v{GENERATOR_VERSION}.gguf"));
    if !path.exists() {
        std::fs::create_dir_all(dir).map_err(|source| TestModelError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        write_random_llama(&fixture_vocab(), shape, WeightType::F32, seed, &path)?;
    }
    Ok(path)
}

/// CodeLlama-7b's tokens 32000..32016: its four FIM pieces among reserved ones.
pub fn codellama_extra_tokens() -> Vec<String> {
    (0..16)
        .map(|i| match i {
            7 => "▁<PRE>".to_owned(),
            8 => "▁<SUF>".to_owned(),
            9 => "▁<MID>".to_owned(),
            10 => "▁<EOT>".to_owned(),
            _ => format!("<reserved_{}>", 32000 + i),
        })
        .collect()
}

/// Weight storage of a generated model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightType {
    F32,
    F16,
    /// Written as F16, then quantized by llama.cpp's own quantizer.
    Q8_0,
    /// Likewise, to Q4_K_M (mostly Q4_K, some Q6_K: the mix most downloaded GGUFs have).
    Q4KM,
}

#[derive(Debug, thiserror::Error)]
pub enum TestModelError {
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error("{0} has no tokenizer.ggml.tokens")]
    NoVocab(PathBuf),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Quantize(#[from] LoadError),
}

/// Writes a random-weight Llama with `shape`, the vocabulary of `vocab_gguf`, and weights drawn
/// from `seed`. The same arguments always give the same bytes.
pub fn write_random_llama(
    vocab_gguf: &Path,
    shape: &LlamaShape,
    wtype: WeightType,
    seed: u64,
    out: &Path,
) -> Result<(), TestModelError> {
    if let Some(to) = match wtype {
        WeightType::Q8_0 => Some(QuantType::Q8_0),
        WeightType::Q4KM => Some(QuantType::Q4KM),
        _ => None,
    } {
        static N_WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N_WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let f16_path = out.with_extension(format!("f16-{}-{n}.tmp.gguf", std::process::id()));
        write_random_llama(vocab_gguf, shape, WeightType::F16, seed, &f16_path)?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        let result = quantize(&f16_path, out, to, threads);
        let _ = std::fs::remove_file(&f16_path);
        return Ok(result?);
    }
    let (tokenizer, n_vocab) = tokenizer_metadata(vocab_gguf, shape.codellama_vocab)?;
    let n_vocab = n_vocab as u64;

    let mut w = GgufWriter::new();
    let s = shape;
    w.set(
        "general.name",
        Value::String(format!(
            "random-llama-{}L-{}d-seed{seed}",
            s.n_layer, s.n_embd
        )),
    );
    w.set(
        "general.file_type",
        Value::U32(if wtype == WeightType::F32 { 0 } else { 1 }),
    );
    s.write_hparams(&mut w, 1e-5, 10000.0, n_vocab as u32);
    for (key, value) in tokenizer {
        w.set(&key, value);
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let embd = u64::from(s.n_embd);
    // Billions of normal draws take minutes: models of 7B's width repeat a pool of noise
    // instead (the same speed to run; their outputs mean nothing either way).
    let mut pool = (s.n_embd >= 4096).then(|| NoisePool::new(&mut rng));
    let mut matrix = |name: String, dims: Vec<u64>, std: f32| match pool.as_mut() {
        Some(pool) => pool.matrix(wtype, name, dims, std),
        None => random_matrix(&mut rng, wtype, name, dims, std),
    };
    let mut tensors = vec![matrix(
        "token_embd.weight".into(),
        vec![embd, n_vocab],
        0.02,
    )];
    for i in 0..s.n_layer {
        tensors.extend(layer_matrices(s, i, 1.0, &mut matrix));
    }
    tensors.push(matrix("output.weight".into(), vec![embd, n_vocab], 0.1));
    for t in tensors {
        w.add_tensor(t);
    }
    // Norm weights stay F32 (llama.cpp's convention), near but not at 1.
    let mut norm = |name: String| {
        let dist = Normal::new(1.0f32, 0.1).expect("valid normal");
        let data = (0..embd)
            .flat_map(|_| dist.sample(&mut rng).to_le_bytes())
            .collect();
        TensorData {
            name,
            dims: vec![embd],
            ggml_type: GgmlType::F32,
            data,
        }
    };
    for i in 0..s.n_layer {
        w.add_tensor(norm(format!("blk.{i}.attn_norm.weight")));
        w.add_tensor(norm(format!("blk.{i}.ffn_norm.weight")));
    }
    w.add_tensor(norm("output_norm.weight".into()));
    w.write(out).map_err(|source| TestModelError::Write {
        path: out.to_path_buf(),
        source,
    })
}

/// The `tokenizer.*` metadata of `vocab_gguf` (with CodeLlama's 16 extra tokens and FIM ids
/// when asked) and the vocabulary size.
fn tokenizer_metadata(
    vocab_gguf: &Path,
    codellama: bool,
) -> Result<(Vec<(String, Value)>, u32), TestModelError> {
    let mut vocab = gguf::read_header(vocab_gguf)?;
    if codellama {
        extend_vocab(&mut vocab, &codellama_extra_tokens());
        // As llama.cpp's converter marks CodeLlama's FIM pieces (its text-based detection
        // does not know "▁<EOT>").
        for (key, id) in [
            ("fim_pre", 32007),
            ("fim_suf", 32008),
            ("fim_mid", 32009),
            ("eot", 32010),
        ] {
            vocab
                .metadata
                .insert(format!("tokenizer.ggml.{key}_token_id"), Value::U32(id));
        }
    }
    let n_vocab = vocab
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .map(<[Value]>::len)
        .ok_or_else(|| TestModelError::NoVocab(vocab_gguf.to_path_buf()))? as u32;
    let entries = vocab
        .metadata
        .into_iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .collect();
    Ok((entries, n_vocab))
}

/// Seeded unit normal noise, tiled: a tensor is the pool read from a moving offset, scaled.
struct NoisePool {
    values: Vec<f32>,
    next: usize,
}

impl NoisePool {
    const LEN: usize = (1 << 20) + 7;

    fn new(rng: &mut ChaCha8Rng) -> NoisePool {
        let dist = Normal::new(0.0f32, 1.0).expect("valid normal");
        NoisePool {
            values: (0..NoisePool::LEN).map(|_| dist.sample(rng)).collect(),
            next: 0,
        }
    }

    fn matrix(&mut self, wtype: WeightType, name: String, dims: Vec<u64>, std: f32) -> TensorData {
        let n = dims.iter().product::<u64>() as usize;
        let start = self.next;
        self.next = (self.next + 7919) % NoisePool::LEN;
        let values = (0..n).map(|i| self.values[(start + i) % NoisePool::LEN] * std);
        stored(wtype, name, dims, values)
    }
}

/// A tensor of `values`, stored as `wtype` (F32, or F16 for the others).
fn stored(
    wtype: WeightType,
    name: String,
    dims: Vec<u64>,
    values: impl Iterator<Item = f32>,
) -> TensorData {
    let (ggml_type, data) = match wtype {
        WeightType::F32 => (GgmlType::F32, values.flat_map(f32::to_le_bytes).collect()),
        _ => (
            GgmlType::F16,
            values
                .flat_map(|v| f16::from_f32(v).to_le_bytes())
                .collect(),
        ),
    };
    TensorData {
        name,
        dims,
        ggml_type,
        data,
    }
}

/// A tensor of seeded normal noise, stored as `wtype` (F32, or F16 for the others).
fn random_matrix(
    rng: &mut ChaCha8Rng,
    wtype: WeightType,
    name: String,
    dims: Vec<u64>,
    std: f32,
) -> TensorData {
    let n: u64 = dims.iter().product();
    let dist = Normal::new(0.0f32, std).expect("valid normal");
    stored(wtype, name, dims, (0..n).map(|_| dist.sample(rng)))
}

/// The seven weight matrices of layer `i`; the two that write into the residual stream
/// (attention output, FFN down) have their scale multiplied by `out_scale`.
fn layer_matrices(
    s: &LlamaShape,
    i: u32,
    out_scale: f32,
    matrix: &mut impl FnMut(String, Vec<u64>, f32) -> TensorData,
) -> Vec<TensorData> {
    let (embd, ff) = (u64::from(s.n_embd), u64::from(s.n_ff));
    let kv = embd / u64::from(s.n_head) * u64::from(s.n_head_kv);
    vec![
        matrix(format!("blk.{i}.attn_q.weight"), vec![embd, embd], 0.05),
        matrix(format!("blk.{i}.attn_k.weight"), vec![embd, kv], 0.05),
        matrix(format!("blk.{i}.attn_v.weight"), vec![embd, kv], 0.05),
        matrix(
            format!("blk.{i}.attn_output.weight"),
            vec![embd, embd],
            0.05 * out_scale,
        ),
        matrix(format!("blk.{i}.ffn_gate.weight"), vec![embd, ff], 0.05),
        matrix(format!("blk.{i}.ffn_up.weight"), vec![embd, ff], 0.05),
        matrix(
            format!("blk.{i}.ffn_down.weight"),
            vec![ff, embd],
            0.05 * out_scale,
        ),
    ]
}

/// Writes a target model for speculative-decoding tests and benchmarks: the draft model's
/// layers, then `extra_layers` random layers whose residual writes are scaled by `scale`, so
/// that the target agrees with the draft more the smaller `scale` is (at 0 it computes the
/// same function). With `codellama`, the target gets CodeLlama's 32016-token vocabulary
/// (the 16 new embedding and output rows are random). `draft` must be F32 or F16; the
/// target has the same storage.
pub fn write_stacked_target(
    draft: &Path,
    vocab_gguf: &Path,
    extra_layers: u32,
    scale: f32,
    codellama: bool,
    seed: u64,
    out: &Path,
) -> Result<(), TestModelError> {
    let header = gguf::read_header(draft)?;
    let bytes = std::fs::read(draft).map_err(|source| TestModelError::Write {
        path: draft.to_path_buf(),
        source,
    })?;
    let get = |key: &str| header.get_u64(&format!("llama.{key}")).unwrap_or(0) as u32;
    let mut shape = LlamaShape {
        n_layer: get("block_count"),
        n_embd: get("embedding_length"),
        n_head: get("attention.head_count"),
        n_head_kv: get("attention.head_count_kv"),
        n_ff: get("feed_forward_length"),
        n_ctx_train: get("context_length"),
        codellama_vocab: codellama,
    };
    let n_draft_layers = shape.n_layer;
    let wtype = match header.tensors.first().map(|t| t.ggml_type) {
        Some(GgmlType::F32) => WeightType::F32,
        _ => WeightType::F16,
    };
    let (tokenizer, n_vocab) = tokenizer_metadata(vocab_gguf, codellama)?;
    shape.n_layer += extra_layers;

    let mut w = GgufWriter::new();
    w.set(
        "general.name",
        Value::String(format!(
            "stacked-target-{}+{extra_layers}L-scale{scale}-seed{seed}",
            n_draft_layers
        )),
    );
    w.set(
        "general.file_type",
        Value::U32(if wtype == WeightType::F32 { 0 } else { 1 }),
    );
    shape.write_hparams(&mut w, 1e-5, 10000.0, n_vocab);
    for (key, value) in tokenizer {
        w.set(&key, value);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut matrix =
        |name: String, dims: Vec<u64>, std: f32| random_matrix(&mut rng, wtype, name, dims, std);
    let embd = u64::from(shape.n_embd);
    for t in &header.tensors {
        let start = (header.data_offset + t.offset) as usize;
        let len = t.n_bytes().unwrap_or(0) as usize;
        let mut data = bytes[start..start + len].to_vec();
        let mut dims = t.dims.clone();
        let vocab_rows = t.name == "token_embd.weight" || t.name == "output.weight";
        if vocab_rows && dims.get(1).is_some_and(|&n| n < u64::from(n_vocab)) {
            let extra = u64::from(n_vocab) - dims[1];
            let rows = matrix(String::new(), vec![embd, extra], 0.02);
            data.extend(rows.data);
            dims[1] = u64::from(n_vocab);
        }
        w.add_tensor(TensorData {
            name: t.name.clone(),
            dims,
            ggml_type: t.ggml_type,
            data,
        });
    }
    for i in n_draft_layers..shape.n_layer {
        for t in layer_matrices(&shape, i, scale, &mut matrix) {
            w.add_tensor(t);
        }
    }
    let dist = Normal::new(1.0f32, 0.1).expect("valid normal");
    for i in n_draft_layers..shape.n_layer {
        for name in ["attn_norm", "ffn_norm"] {
            let data = (0..embd)
                .flat_map(|_| dist.sample(&mut rng).to_le_bytes())
                .collect();
            w.add_tensor(TensorData {
                name: format!("blk.{i}.{name}.weight"),
                dims: vec![embd],
                ggml_type: GgmlType::F32,
                data,
            });
        }
    }
    w.write(out).map_err(|source| TestModelError::Write {
        path: out.to_path_buf(),
        source,
    })
}

/// Appends control tokens (score 0) to a vocabulary's token, score and type arrays.
fn extend_vocab(vocab: &mut gguf::GgufHeader, extra: &[String]) {
    const CONTROL: i32 = 3;
    let mut push = |key: &str, values: Vec<Value>| {
        if let Some(Value::Array { items, .. }) = vocab.metadata.get_mut(key) {
            items.extend(values);
        }
    };
    push(
        "tokenizer.ggml.tokens",
        extra.iter().cloned().map(Value::String).collect(),
    );
    push(
        "tokenizer.ggml.scores",
        extra.iter().map(|_| Value::F32(0.0)).collect(),
    );
    push(
        "tokenizer.ggml.token_type",
        extra.iter().map(|_| Value::I32(CONTROL)).collect(),
    );
}

/// Writes the llama model `src` as architecture `arch` (the same tensors and hyperparameters
/// under the new prefix), less the tensor `drop`: a damaged file of another architecture, for
/// the tests of llama.cpp's loader messages.
pub fn write_as_architecture(
    src: &Path,
    arch: &str,
    drop: Option<&str>,
    dst: &Path,
) -> Result<(), TestModelError> {
    let header = gguf::read_header(src)?;
    let bytes = std::fs::read(src).map_err(|source| TestModelError::Write {
        path: src.to_path_buf(),
        source,
    })?;
    let mut w = GgufWriter::new();
    for (k, v) in &header.metadata {
        w.set(&k.replace("llama.", &format!("{arch}.")), v.clone());
    }
    w.set("general.architecture", Value::String(arch.into()));
    for t in header
        .tensors
        .iter()
        .filter(|t| Some(t.name.as_str()) != drop)
    {
        let start = (header.data_offset + t.offset) as usize;
        let n = t.n_bytes().unwrap_or(0) as usize;
        w.add_tensor(TensorData {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: t.ggml_type,
            data: bytes.get(start..start + n).unwrap_or_default().to_vec(),
        });
    }
    w.write(dst).map_err(|source| TestModelError::Write {
        path: dst.to_path_buf(),
        source,
    })
}
