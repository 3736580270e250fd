//! Model files are checked here, in Rust, before llama.cpp parses them (llama.cpp's GGUF and
//! model loaders have had memory-safety bugs on hostile files): for every file, a well-formed
//! GGUF header (`gguf::read_header` bounds every length and keeps every tensor inside the
//! file), the attention hyperparameters in sane ranges and a KV cache that fits in memory; for
//! the `llama` architecture (ours), also every tensor llama.cpp will look for present with the
//! shape it expects. Other architectures (qwen2, gemma3, starcoder2, …) get llama.cpp's own
//! loader checks for their tensors. Pure: no llama.cpp.

use std::path::Path;

use crate::error::LoadError;
pub use crate::gguf::shape::AttentionShape;
use crate::gguf::{self, GgufHeader, Value};
use crate::{KvType, KvTypes};

/// Bounds far above any model this product runs, far below what would exhaust memory while
/// llama.cpp sets up its arrays.
const MAX_LAYERS: u64 = 512;
const MAX_EMBD: u64 = 1 << 16;
const MAX_HEADS: u64 = 1 << 10;
const MAX_FF: u64 = 1 << 20;
const MAX_CTX: u64 = 1 << 24;
const MAX_VOCAB: u64 = 1 << 20;
const MAX_HEAD_DIM: u64 = 1 << 12;

/// What the checks learned: the architecture, its attention shape and the vocabulary size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub architecture: String,
    pub shape: AttentionShape,
    pub n_vocab: u64,
}

/// Checks the file at `path` (see the module docs). A vocabulary-only file passes only when
/// `vocab_only` is set.
pub fn check_model_file(path: &Path, vocab_only: bool) -> Result<Checked, LoadError> {
    if !path.is_file() {
        return Err(LoadError::Missing {
            path: path.to_path_buf(),
        });
    }
    let header = gguf::read_header(path)?;
    check_header(&header, vocab_only).map_err(|what| LoadError::Invalid {
        path: path.to_path_buf(),
        what,
    })
}

/// The checks on a parsed header; the error says what is wrong, for a person.
pub fn check_header(header: &GgufHeader, vocab_only: bool) -> Result<Checked, String> {
    let architecture = header
        .get_str("general.architecture")
        .filter(|a| !a.is_empty())
        .ok_or("general.architecture is missing")?;
    if architecture.len() > 64
        || !architecture
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(format!("architecture {architecture:?} is not a valid name"));
    }
    let n_vocab = header
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array())
        .map(|a| a.len() as u64)
        .ok_or("no tokenizer.ggml.tokens: the file has no vocabulary")?;
    in_range(
        "tokenizer.ggml.tokens (vocabulary size)",
        n_vocab,
        MAX_VOCAB,
    )?;
    if header.tensors.is_empty() {
        if vocab_only {
            return Ok(Checked {
                architecture: architecture.to_owned(),
                shape: AttentionShape::default(),
                n_vocab,
            });
        }
        return Err("it holds only a vocabulary, no weights".into());
    }
    let shape = attention_shape(header, architecture)?;
    if architecture == "llama" {
        check_llama_tensors(header, &shape, n_vocab)?;
    }
    Ok(Checked {
        architecture: architecture.to_owned(),
        shape,
        n_vocab,
    })
}

/// `{arch}.{name}`, bounded; an array (a per-layer value) gives its largest item.
fn arch_key(header: &GgufHeader, arch: &str, name: &str, max: u64) -> Result<Option<u64>, String> {
    let full = format!("{arch}.{name}");
    let v = match header.get(&full) {
        None => return Ok(None),
        Some(Value::Array { items, .. }) => items
            .iter()
            .map(|i| {
                i.as_u64()
                    .ok_or_else(|| format!("{full} holds a non-integer"))
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .max()
            .ok_or_else(|| format!("{full} is an empty array"))?,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("{full} is not an unsigned integer"))?,
    };
    // Per-layer head counts may be 0 for layers without attention (hybrid models).
    if v > max {
        return Err(format!("{full} is {v}, outside 1..={max}"));
    }
    Ok(Some(v))
}

/// The attention hyperparameters every transformer GGUF carries under its architecture's
/// prefix, bounded (they size the KV cache before llama.cpp sees the file).
fn attention_shape(header: &GgufHeader, arch: &str) -> Result<AttentionShape, String> {
    let required = |name: &str, max: u64| -> Result<u64, String> {
        let v = arch_key(header, arch, name, max)?
            .ok_or_else(|| format!("{arch}.{name} is missing"))?;
        in_range(&format!("{arch}.{name}"), v, max)?;
        Ok(v)
    };
    let n_layer = required("block_count", MAX_LAYERS)?;
    let n_embd = required("embedding_length", MAX_EMBD)?;
    let n_head = required("attention.head_count", MAX_HEADS)?;
    let n_head_kv = arch_key(header, arch, "attention.head_count_kv", MAX_HEADS)?.unwrap_or(n_head);
    let n_ctx_train = required("context_length", MAX_CTX)?;
    if let Some(n_ff) = arch_key(header, arch, "feed_forward_length", MAX_FF)? {
        in_range(&format!("{arch}.feed_forward_length"), n_ff, MAX_FF)?;
    }
    let head_dim_k = arch_key(header, arch, "attention.key_length", MAX_HEAD_DIM)?;
    let head_dim_v = arch_key(header, arch, "attention.value_length", MAX_HEAD_DIM)?;
    if head_dim_k.is_none() && n_embd % n_head != 0 {
        return Err(format!("{n_head} heads do not divide the width {n_embd}"));
    }
    if n_head_kv > 0 && n_head % n_head_kv != 0 {
        return Err(format!(
            "{n_head} heads are not a multiple of {n_head_kv} key/value heads"
        ));
    }
    let head_dim_k = head_dim_k.unwrap_or(n_embd / n_head);
    let head_dim_v = head_dim_v.unwrap_or(head_dim_k);
    in_range(
        &format!("{arch}.attention.key_length"),
        head_dim_k,
        MAX_HEAD_DIM,
    )?;
    in_range(
        &format!("{arch}.attention.value_length"),
        head_dim_v,
        MAX_HEAD_DIM,
    )?;
    // Bounded above, so these fit in u32.
    Ok(AttentionShape {
        n_layer: n_layer as u32,
        n_embd: n_embd as u32,
        n_head: n_head as u32,
        n_head_kv: n_head_kv as u32,
        head_dim_k: head_dim_k as u32,
        head_dim_v: head_dim_v as u32,
        n_ctx_train: n_ctx_train as u32,
    })
}

/// Every tensor llama.cpp's `llama` loader looks for, with the shape it expects.
fn check_llama_tensors(
    header: &GgufHeader,
    shape: &AttentionShape,
    n_vocab: u64,
) -> Result<(), String> {
    let n_ff = arch_key(header, "llama", "feed_forward_length", MAX_FF)?
        .ok_or("llama.feed_forward_length is missing")?;
    if shape.n_head_kv == 0 || u64::from(shape.n_embd) % u64::from(shape.n_head) != 0 {
        return Err(format!(
            "{} heads ({} for keys and values) do not divide the width {}",
            shape.n_head, shape.n_head_kv, shape.n_embd
        ));
    }
    let n_embd = u64::from(shape.n_embd);
    let n_embd_kv = n_embd / u64::from(shape.n_head) * u64::from(shape.n_head_kv);
    let expect = |name: &str, dims: &[u64]| -> Result<(), String> {
        let t = header
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("tensor {name} is missing"))?;
        if t.dims != dims {
            return Err(format!(
                "tensor {name} has shape {:?}, expected {dims:?}",
                t.dims
            ));
        }
        Ok(())
    };
    expect("token_embd.weight", &[n_embd, n_vocab])?;
    expect("output_norm.weight", &[n_embd])?;
    if header.tensors.iter().any(|t| t.name == "output.weight") {
        expect("output.weight", &[n_embd, n_vocab])?;
    }
    for i in 0..shape.n_layer {
        let blk = |t: &str| format!("blk.{i}.{t}.weight");
        expect(&blk("attn_norm"), &[n_embd])?;
        expect(&blk("attn_q"), &[n_embd, n_embd])?;
        expect(&blk("attn_k"), &[n_embd, n_embd_kv])?;
        expect(&blk("attn_v"), &[n_embd, n_embd_kv])?;
        expect(&blk("attn_output"), &[n_embd, n_embd])?;
        expect(&blk("ffn_norm"), &[n_embd])?;
        expect(&blk("ffn_gate"), &[n_embd, n_ff])?;
        expect(&blk("ffn_up"), &[n_embd, n_ff])?;
        expect(&blk("ffn_down"), &[n_ff, n_embd])?;
    }
    Ok(())
}

fn in_range(what: &str, v: u64, max: u64) -> Result<(), String> {
    if v == 0 || v > max {
        return Err(format!("{what} is {v}, outside 1..={max}"));
    }
    Ok(())
}

/// The KV cache types to use for models of these shapes: `requested`, with F16 keys instead
/// of quantized ones when a model's head size is not a multiple of 64. llama.cpp rotates
/// quantized keys (a Hadamard transform) only for such head sizes, and shifting keys
/// (`seq_add`) that were quantized without it dereferences the missing rotation (read in
/// llama-kv-cache.cpp, `build_rope_shift`; a test model with 16-wide heads crashed there).
pub fn effective_kv_types<'a>(
    requested: KvTypes,
    shapes: impl IntoIterator<Item = &'a AttentionShape>,
) -> KvTypes {
    let rotated = shapes
        .into_iter()
        .all(|s| s.head_dim_k > 0 && s.head_dim_k % 64 == 0);
    // llama.cpp's switch that turns the rotation off leaves the shift crashing as well.
    let disabled = std::env::var("LLAMA_ATTN_ROT_DISABLE")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .is_some_and(|v| v != 0);
    match requested.keys {
        KvType::Q8_0 if !rotated || disabled => KvTypes {
            keys: KvType::F16,
            ..requested
        },
        _ => requested,
    }
}

/// Bytes of KV cache for `n_ctx` positions of a model of this shape.
pub fn kv_cache_bytes(shape: &AttentionShape, n_ctx: u32, types: KvTypes) -> u64 {
    // Keys or values, per layer, per position; Q8_0 stores 34 bytes per 32 values.
    let elements = |head_dim: u32| {
        u64::from(shape.n_layer)
            * u64::from(n_ctx)
            * u64::from(shape.n_head_kv)
            * u64::from(head_dim)
    };
    let bytes = |t: KvType, n: u64| match t {
        KvType::F32 => n * 4,
        KvType::F16 => n * 2,
        KvType::Q8_0 => n / 32 * 34,
    };
    bytes(types.keys, elements(shape.head_dim_k)) + bytes(types.values, elements(shape.head_dim_v))
}

/// Refuses a context whose KV cache (`needed` bytes, [`kv_cache_bytes`] of every model)
/// needs more than `available` bytes (when known), so a configured context size too large
/// for the machine is an error message, not an abort inside llama.cpp's allocator.
pub fn check_context_fits(
    needed: u64,
    n_ctx: u32,
    available: Option<u64>,
) -> Result<(), LoadError> {
    match available {
        Some(available) if needed > available => Err(LoadError::ContextTooLarge {
            n_ctx,
            needed_mib: needed >> 20,
            available_mib: available >> 20,
        }),
        _ => Ok(()),
    }
}

/// Memory the system can still give us (Linux's `MemAvailable`), or `None` where unknown.
/// Read from /proc directly: one number does not justify a system-information crate.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::shape::LlamaShape;
    use crate::gguf::{GgmlType, TensorInfo};

    /// A header for `shape` with every tensor present (no data; the checks read shapes only).
    fn header(shape: &LlamaShape, n_vocab: u64) -> GgufHeader {
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert(
            "general.architecture".to_owned(),
            Value::String("llama".into()),
        );
        metadata.insert(
            "tokenizer.ggml.tokens".to_owned(),
            Value::string_array((0..n_vocab).map(|i| format!("t{i}"))),
        );
        for (k, v) in [
            ("block_count", shape.n_layer),
            ("embedding_length", shape.n_embd),
            ("attention.head_count", shape.n_head),
            ("attention.head_count_kv", shape.n_head_kv),
            ("feed_forward_length", shape.n_ff),
            ("context_length", shape.n_ctx_train),
        ] {
            metadata.insert(format!("llama.{k}"), Value::U32(v));
        }
        let (e, f) = (u64::from(shape.n_embd), u64::from(shape.n_ff));
        let kv = e / u64::from(shape.n_head) * u64::from(shape.n_head_kv);
        let mut tensors = vec![
            ("token_embd.weight".to_owned(), vec![e, n_vocab]),
            ("output_norm.weight".to_owned(), vec![e]),
            ("output.weight".to_owned(), vec![e, n_vocab]),
        ];
        for i in 0..shape.n_layer {
            for (t, dims) in [
                ("attn_norm", vec![e]),
                ("attn_q", vec![e, e]),
                ("attn_k", vec![e, kv]),
                ("attn_v", vec![e, kv]),
                ("attn_output", vec![e, e]),
                ("ffn_norm", vec![e]),
                ("ffn_gate", vec![e, f]),
                ("ffn_up", vec![e, f]),
                ("ffn_down", vec![f, e]),
            ] {
                tensors.push((format!("blk.{i}.{t}.weight"), dims));
            }
        }
        GgufHeader {
            version: 3,
            metadata,
            tensors: tensors
                .into_iter()
                .map(|(name, dims)| TensorInfo {
                    name,
                    dims,
                    ggml_type: GgmlType::F32,
                    offset: 0,
                })
                .collect(),
            data_offset: 0,
            file_len: 0,
        }
    }

    fn amd135m() -> LlamaShape {
        LlamaShape::amd_135m()
    }

    fn attention(s: &LlamaShape) -> AttentionShape {
        AttentionShape {
            n_layer: s.n_layer,
            n_embd: s.n_embd,
            n_head: s.n_head,
            n_head_kv: s.n_head_kv,
            head_dim_k: s.n_embd / s.n_head,
            head_dim_v: s.n_embd / s.n_head,
            n_ctx_train: s.n_ctx_train,
        }
    }

    /// `header` renamed to another architecture: keys under its prefix, tensors left as they
    /// are (only llama's tensors are checked here; llama.cpp checks the others').
    fn other_architecture(arch: &str) -> GgufHeader {
        let mut h = header(&amd135m(), 32000);
        let keys: Vec<(String, Value)> = std::mem::take(&mut h.metadata).into_iter().collect();
        for (k, v) in keys {
            let k = k
                .strip_prefix("llama.")
                .map_or(k.clone(), |r| format!("{arch}.{r}"));
            h.metadata.insert(k, v);
        }
        h.metadata
            .insert("general.architecture".into(), Value::String(arch.into()));
        h.tensors.truncate(3);
        h
    }

    #[test]
    fn other_architectures_pass_on_their_attention_keys() {
        let qwen = check_header(&other_architecture("qwen2"), false).expect("qwen2 passes");
        assert_eq!(qwen.architecture, "qwen2");
        assert_eq!(qwen.shape, attention(&amd135m()));
        // Gemma-style explicit head widths, and per-layer KV head counts (the largest counts).
        let mut gemma = other_architecture("gemma3");
        gemma
            .metadata
            .insert("gemma3.attention.key_length".into(), Value::U32(256));
        gemma.metadata.insert(
            "gemma3.attention.head_count_kv".into(),
            Value::Array {
                elem: crate::gguf::ValueType::U32,
                items: vec![Value::U32(0), Value::U32(4), Value::U32(2)],
            },
        );
        let g = check_header(&gemma, false).expect("gemma3 passes");
        assert_eq!(
            (g.shape.head_dim_k, g.shape.head_dim_v, g.shape.n_head_kv),
            (256, 256, 4)
        );

        let fault = |edit: &dyn Fn(&mut GgufHeader)| {
            let mut h = other_architecture("qwen2");
            edit(&mut h);
            check_header(&h, false).expect_err("must fail")
        };
        assert!(fault(&|h| {
            h.metadata.remove("qwen2.block_count");
        })
        .contains("qwen2.block_count is missing"));
        assert!(fault(&|h| {
            h.metadata
                .insert("qwen2.attention.key_length".into(), Value::U32(1 << 20));
        })
        .contains("outside"));
        assert!(fault(&|h| {
            h.metadata.insert(
                "qwen2.attention.head_count".into(),
                Value::String("twelve".into()),
            );
        })
        .contains("not an unsigned integer"));
        assert!(fault(&|h| {
            h.metadata
                .insert("general.architecture".into(), Value::String("../x".into()));
        })
        .contains("not a valid name"));
    }

    #[test]
    fn a_whole_model_passes_and_each_fault_is_named() {
        let good = header(&amd135m(), 32000);
        let checked = check_header(&good, false).expect("passes");
        assert_eq!(checked.shape, attention(&amd135m()));
        assert_eq!(checked.n_vocab, 32000);

        let fault = |edit: &dyn Fn(&mut GgufHeader)| {
            let mut h = header(&amd135m(), 32000);
            edit(&mut h);
            check_header(&h, false).expect_err("must fail")
        };
        let set = |k: &'static str, v: u32| {
            move |h: &mut GgufHeader| {
                h.metadata.insert(k.to_owned(), Value::U32(v));
            }
        };
        assert!(fault(&set("llama.block_count", 1_000_000)).contains("outside 1..=512"));
        assert!(fault(&set("llama.block_count", 13)).contains("blk.12.attn_norm.weight is missing"));
        assert!(fault(&set("llama.attention.head_count", 7)).contains("do not divide"));
        assert!(fault(&set("llama.context_length", 0)).contains("outside"));
        assert!(fault(&|h| {
            h.metadata.remove("llama.embedding_length");
        })
        .contains("llama.embedding_length is missing"));
        assert!(fault(&|h| h.tensors[5].dims = vec![768, 768, 2]).contains("has shape"));
        assert!(fault(&|h| {
            h.metadata
                .insert("general.architecture".into(), Value::String("gpt2".into()));
        })
        .contains("gpt2.block_count is missing"));
        let mut vocab_only = header(&amd135m(), 32000);
        vocab_only.tensors.clear();
        assert!(check_header(&vocab_only, false)
            .expect_err("no weights")
            .contains("only a vocabulary"));
        assert!(check_header(&vocab_only, true).is_ok());
    }

    #[test]
    fn quantized_keys_only_where_llama_cpp_can_shift_them() {
        let q8 = KvTypes::default();
        assert_eq!(q8.keys, KvType::Q8_0);
        assert_eq!(effective_kv_types(q8, [&attention(&amd135m())]), q8);
        let tiny = attention(&LlamaShape::tiny());
        let f16_keys = effective_kv_types(q8, [&attention(&amd135m()), &tiny]);
        assert_eq!((f16_keys.keys, f16_keys.values), (KvType::F16, KvType::F16));
        let f32 = KvTypes::both(KvType::F32);
        assert_eq!(effective_kv_types(f32, [&tiny]), f32);
    }

    #[test]
    fn kv_cache_size_and_the_memory_check() {
        // AMD-Llama-135m: 2 × 12 layers × 768 × 2 bytes = 36 KiB per position, 72 MiB at 2048 (F16).
        assert_eq!(
            kv_cache_bytes(&attention(&amd135m()), 2048, KvTypes::both(KvType::F16)),
            72 << 20
        );
        assert_eq!(
            kv_cache_bytes(&attention(&amd135m()), 2048, KvTypes::default()),
            // Q8_0 keys: 34 bytes per 32 values.
            (36 << 20) + (36 << 20) / 32 * 17
        );
        let fits = |n_ctx, available| {
            check_context_fits(
                kv_cache_bytes(&attention(&amd135m()), n_ctx, KvTypes::both(KvType::F16)),
                n_ctx,
                available,
            )
        };
        assert!(fits(2048, Some(1 << 30)).is_ok());
        assert!(fits(2048, None).is_ok());
        let err = fits(1 << 24, Some(8 << 30)).expect_err("576 GiB does not fit in 8 GiB");
        assert!(err.to_string().contains("589824 MiB"), "{err}");
    }
}
