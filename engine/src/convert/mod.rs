//! Hugging Face Llama checkpoints (AMD-Llama-135m, CodeLlama) to GGUF for llama.cpp's `llama`
//! architecture: `config.json`, safetensors weights (one file or shards), and the SentencePiece
//! `tokenizer.model`. Q and K projection rows are permuted from Hugging Face's rotate-half RoPE
//! layout to llama.cpp's interleaved one, as llama.cpp's own converter does. Quantized outputs go
//! through llama.cpp's quantizer.

pub mod spm;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::error::LoadError;
use crate::gguf::scratch::ScratchPath;
use crate::gguf::shape::LlamaShape;
use crate::gguf::{GgmlType, GgufWriter, TensorData, Value};
use crate::llama::{quantize, QuantType};

/// What the converter writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4KM,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{0} has no config.json: is it a Hugging Face model directory?")]
    NoConfig(PathBuf),
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("architecture {0:?} cannot be converted: only LlamaForCausalLM (Llama, AMD-Llama, CodeLlama) is supported; for other models use llama.cpp's convert_hf_to_gguf.py and pass the GGUF with --model")]
    Architecture(Vec<String>),
    #[error("{0} holds only pytorch_model.bin: download the safetensors files of the model (most Hugging Face repositories have them) and convert those")]
    PytorchOnly(PathBuf),
    #[error("{0} has neither model.safetensors nor model.safetensors.index.json")]
    NoWeights(PathBuf),
    #[error("{0} has no tokenizer.model: the SentencePiece model is needed for a Llama vocabulary; download it from the model's repository into that directory")]
    NoTokenizer(PathBuf),
    #[error(transparent)]
    Tokenizer(#[from] spm::SpmError),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("tensor {name}: {message}")]
    Tensor { name: String, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Quantize(#[from] LoadError),
}

/// The parts of `config.json` the conversion needs.
#[derive(Debug, Deserialize)]
struct HfConfig {
    hidden_size: u32,
    intermediate_size: u32,
    num_attention_heads: u32,
    num_hidden_layers: u32,
    num_key_value_heads: Option<u32>,
    rms_norm_eps: f32,
    rope_theta: Option<f32>,
    max_position_embeddings: u32,
    vocab_size: u32,
    #[serde(default)]
    tie_word_embeddings: bool,
    bos_token_id: Option<u32>,
    eos_token_id: Option<serde_json::Value>,
}

/// What a conversion produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertSummary {
    pub n_tensors: usize,
    pub n_vocab: usize,
    pub fim: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ConvertError + '_ {
    move |source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Converts the checkpoint in `dir` to `out`.
pub fn convert(dir: &Path, out: &Path, out_type: OutType) -> Result<ConvertSummary, ConvertError> {
    let config = read_config(dir)?;
    let weight_files = weight_files(dir)?;
    let tokenizer = dir.join("tokenizer.model");
    if !tokenizer.is_file() {
        return Err(ConvertError::NoTokenizer(dir.to_path_buf()));
    }
    let mut pieces = spm::parse(&std::fs::read(&tokenizer).map_err(io_err(&tokenizer))?)?;
    // Checkpoints may have more embedding rows than pieces; llama.cpp's converter pads.
    for i in pieces.len()..config.vocab_size as usize {
        pieces.push(spm::Piece {
            text: format!("[PAD{i}]"),
            score: 0.0,
            kind: 4,
        });
    }

    let quantized = matches!(out_type, OutType::Q8_0 | OutType::Q4KM);
    let matrix_type = match out_type {
        OutType::F16 => GgmlType::F16,
        OutType::Bf16 => GgmlType::BF16,
        _ => GgmlType::F32,
    };
    let mut w = GgufWriter::new();
    let summary = write_metadata(&mut w, dir, &config, &pieces, matrix_type)?;
    let n_tensors = add_tensors(&mut w, &config, &weight_files, matrix_type)?;

    let result = if quantized {
        let tmp = ScratchPath::beside(out, "f32");
        w.write_to(tmp.path())
            .map_err(|source| ConvertError::Write {
                path: tmp.path().to_path_buf(),
                source,
            })?;
        let to = if out_type == OutType::Q8_0 {
            QuantType::Q8_0
        } else {
            QuantType::Q4KM
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        // llama.cpp writes its output in place: quantize into a scratch file, then rename.
        let part = ScratchPath::beside(out, "quantized");
        quantize(tmp.path(), part.path(), to, threads).map_err(ConvertError::from)?;
        drop(tmp);
        part.persist(out).map_err(|source| ConvertError::Write {
            path: out.to_path_buf(),
            source,
        })
    } else {
        w.write(out).map_err(|source| ConvertError::Write {
            path: out.to_path_buf(),
            source,
        })
    };
    result.map(|()| ConvertSummary {
        n_tensors,
        ..summary
    })
}

fn read_config(dir: &Path) -> Result<HfConfig, ConvertError> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(ConvertError::NoConfig(dir.to_path_buf()));
    }
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let bad = |e: serde_json::Error| ConvertError::Config {
        path: path.clone(),
        message: e.to_string(),
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    // The architecture first: another model's config lacks Llama's fields.
    let architectures: Vec<String> = json["architectures"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if !architectures.iter().any(|a| a == "LlamaForCausalLM") {
        return Err(ConvertError::Architecture(architectures));
    }
    let config = HfConfig::deserialize(json).map_err(bad)?;
    if config.num_attention_heads == 0 || config.hidden_size % config.num_attention_heads != 0 {
        return Err(ConvertError::Config {
            path,
            message: "hidden_size must be a multiple of num_attention_heads".into(),
        });
    }
    Ok(config)
}

/// The safetensors files: `model.safetensors`, or the shards an index names.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ConvertError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(io_err(&index))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ConvertError::Config {
                path: index.clone(),
                message: e.to_string(),
            })?;
        let map = json["weight_map"]
            .as_object()
            .ok_or_else(|| ConvertError::Config {
                path: index.clone(),
                message: "no weight_map".into(),
            })?;
        let files: BTreeSet<&str> = map.values().filter_map(serde_json::Value::as_str).collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    if dir.join("pytorch_model.bin").is_file() || dir.join("pytorch_model.bin.index.json").is_file()
    {
        return Err(ConvertError::PytorchOnly(dir.to_path_buf()));
    }
    Err(ConvertError::NoWeights(dir.to_path_buf()))
}

/// The model's name for `general.name`: the checkpoint directory's name, or for a snapshot in
/// the Hugging Face cache (`models--owner--name/snapshots/<commit>`) the repository's name rather
/// than the commit.
fn model_name(dir: &Path) -> String {
    let base = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let parent = dir.parent();
    if parent.and_then(base).as_deref() == Some("snapshots") {
        if let Some(repo) = parent.and_then(Path::parent).and_then(base) {
            if let Some(name) = repo
                .strip_prefix("models--")
                .and_then(|r| r.rsplit("--").next())
            {
                if !name.is_empty() {
                    return name.to_owned();
                }
            }
        }
    }
    base(dir).unwrap_or_else(|| "model".into())
}

fn write_metadata(
    w: &mut GgufWriter,
    dir: &Path,
    c: &HfConfig,
    pieces: &[spm::Piece],
    matrix_type: GgmlType,
) -> Result<ConvertSummary, ConvertError> {
    let n_head_kv = c.num_key_value_heads.unwrap_or(c.num_attention_heads);
    w.set("general.name", Value::String(model_name(dir)));
    let file_type = match matrix_type {
        GgmlType::F16 => 1,
        GgmlType::BF16 => 32,
        _ => 0,
    };
    w.set("general.file_type", Value::U32(file_type));
    let shape = LlamaShape {
        n_layer: c.num_hidden_layers,
        n_embd: c.hidden_size,
        n_head: c.num_attention_heads,
        n_head_kv,
        n_ff: c.intermediate_size,
        n_ctx_train: c.max_position_embeddings,
        codellama_vocab: false,
    };
    let rope_base = c.rope_theta.unwrap_or(10000.0);
    shape.write_hparams(w, c.rms_norm_eps, rope_base, pieces.len() as u32);

    w.set("tokenizer.ggml.model", Value::String("llama".into()));
    w.set(
        "tokenizer.ggml.tokens",
        Value::string_array(pieces.iter().map(|p| p.text.clone())),
    );
    w.set(
        "tokenizer.ggml.scores",
        Value::f32_array(pieces.iter().map(|p| p.score)),
    );
    w.set(
        "tokenizer.ggml.token_type",
        Value::i32_array(pieces.iter().map(|p| p.kind)),
    );
    let find = |text: &str| pieces.iter().position(|p| p.text == text).map(|i| i as u32);
    let eos = c
        .eos_token_id
        .as_ref()
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.get(0).and_then(serde_json::Value::as_u64))
        })
        .map(|v| v as u32)
        .or_else(|| find("</s>"));
    let ids = [
        ("bos", c.bos_token_id.or_else(|| find("<s>"))),
        ("eos", eos),
        (
            "unknown",
            pieces.iter().position(|p| p.kind == 2).map(|i| i as u32),
        ),
    ];
    for (key, id) in ids {
        if let Some(id) = id {
            w.set(&format!("tokenizer.ggml.{key}_token_id"), Value::U32(id));
        }
    }
    let (add_bos, add_eos) = tokenizer_flags(dir)?;
    w.set("tokenizer.ggml.add_bos_token", Value::Bool(add_bos));
    w.set("tokenizer.ggml.add_eos_token", Value::Bool(add_eos));
    // CodeLlama's fill-in-the-middle pieces, marked the way llama.cpp's converter marks them.
    let fim = ["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"].map(find);
    let has_fim = fim.iter().all(Option::is_some);
    if has_fim {
        for (key, id) in ["fim_pre", "fim_suf", "fim_mid", "eot"].iter().zip(fim) {
            w.set(
                &format!("tokenizer.ggml.{key}_token_id"),
                Value::U32(id.unwrap_or_default()),
            );
        }
    }
    Ok(ConvertSummary {
        n_tensors: 0,
        n_vocab: pieces.len(),
        fim: has_fim,
    })
}

/// `add_bos_token` / `add_eos_token` from `tokenizer_config.json` (Llama's defaults: true, false).
fn tokenizer_flags(dir: &Path) -> Result<(bool, bool), ConvertError> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok((true, false));
    }
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ConvertError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
    Ok((
        json["add_bos_token"].as_bool().unwrap_or(true),
        json["add_eos_token"].as_bool().unwrap_or(false),
    ))
}

/// The GGUF name of a Hugging Face tensor, and for Q/K the head count to permute by.
fn gguf_name(hf: &str, c: &HfConfig) -> Option<(String, Option<u32>)> {
    let n_head_kv = c.num_key_value_heads.unwrap_or(c.num_attention_heads);
    Some(match hf {
        "model.embed_tokens.weight" => ("token_embd.weight".into(), None),
        "model.norm.weight" => ("output_norm.weight".into(), None),
        "lm_head.weight" => ("output.weight".into(), None),
        _ => {
            let rest = hf.strip_prefix("model.layers.")?;
            let (layer, part) = rest.split_once('.')?;
            let layer: u32 = layer.parse().ok()?;
            let (name, permute) = match part {
                "input_layernorm.weight" => ("attn_norm", None),
                "self_attn.q_proj.weight" => ("attn_q", Some(c.num_attention_heads)),
                "self_attn.k_proj.weight" => ("attn_k", Some(n_head_kv)),
                "self_attn.v_proj.weight" => ("attn_v", None),
                "self_attn.o_proj.weight" => ("attn_output", None),
                "post_attention_layernorm.weight" => ("ffn_norm", None),
                "mlp.gate_proj.weight" => ("ffn_gate", None),
                "mlp.up_proj.weight" => ("ffn_up", None),
                "mlp.down_proj.weight" => ("ffn_down", None),
                _ => return None,
            };
            (format!("blk.{layer}.{name}.weight"), permute)
        }
    })
}

fn add_tensors(
    w: &mut GgufWriter,
    c: &HfConfig,
    files: &[PathBuf],
    matrix_type: GgmlType,
) -> Result<usize, ConvertError> {
    let mut n = 0;
    let mut embeddings = None;
    let mut has_output = false;
    for path in files {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| ConvertError::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut names = st.names();
        names.sort();
        for hf_name in names {
            if hf_name.ends_with("rotary_emb.inv_freq") {
                continue;
            }
            let view = st.tensor(hf_name).map_err(|e| ConvertError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let (name, permute) = gguf_name(hf_name, c).ok_or_else(|| ConvertError::Tensor {
                name: hf_name.to_owned(),
                message: "not a tensor of a Llama model".into(),
            })?;
            let tensor_err = |message: String| ConvertError::Tensor {
                name: hf_name.to_owned(),
                message,
            };
            let mut values = to_f32(view.dtype(), view.data()).map_err(tensor_err)?;
            let shape = view.shape().to_vec();
            if let Some(n_head) = permute {
                values = permute_rows(&values, &shape, n_head).map_err(tensor_err)?;
            }
            has_output |= name == "output.weight";
            // ggml lists dimensions fastest-first: the reverse of the row-major shape.
            let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
            let ggml_type = if dims.len() == 1 {
                GgmlType::F32
            } else {
                matrix_type
            };
            let tensor = TensorData {
                name,
                dims,
                ggml_type,
                data: encode(&values, ggml_type),
            };
            if tensor.name == "token_embd.weight" {
                embeddings = Some(tensor.clone());
            }
            w.add_tensor(tensor);
            n += 1;
        }
    }
    if !has_output && c.tie_word_embeddings {
        if let Some(mut output) = embeddings {
            output.name = "output.weight".into();
            w.add_tensor(output);
            n += 1;
        }
    }
    let expected = 3 + 9 * c.num_hidden_layers as usize;
    if n != expected {
        return Err(ConvertError::Tensor {
            name: "(all)".into(),
            message: format!(
                "found {n} tensors, a Llama of {} layers has {expected}",
                c.num_hidden_layers
            ),
        });
    }
    Ok(n)
}

fn to_f32(dtype: Dtype, data: &[u8]) -> Result<Vec<f32>, String> {
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(format!(
                "dtype {other:?} is not supported (F32, F16, BF16 are)"
            ))
        }
    })
}

fn encode(values: &[f32], ggml_type: GgmlType) -> Vec<u8> {
    match ggml_type {
        GgmlType::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Reorders the rows of a Q or K projection from rotate-half RoPE (Hugging Face: each head's
/// first half of rows pairs with its second half) to interleaved RoPE (llama.cpp: rows 2j and
/// 2j+1 pair). Row `h·d + 2j + i` of the result is row `h·d + i·d/2 + j` of the input.
pub fn permute_rows(values: &[f32], shape: &[usize], n_head: u32) -> Result<Vec<f32>, String> {
    let [rows, cols] = shape else {
        return Err(format!("expected a matrix, got shape {shape:?}"));
    };
    let n_head = n_head as usize;
    if n_head == 0 || rows % (2 * n_head) != 0 || values.len() != rows * cols {
        return Err(format!(
            "cannot split {rows} rows into {n_head} heads of pairs"
        ));
    }
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..half {
                let from = h * head_dim + i * half + j;
                let to = h * head_dim + 2 * j + i;
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_the_halves_of_each_head() {
        // 2 heads of dimension 4, one column: rows are their own indices.
        let values: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let out = permute_rows(&values, &[8, 1], 2).expect("permute");
        assert_eq!(out, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert!(permute_rows(&values, &[8, 1], 3).is_err());
    }

    #[test]
    fn a_snapshot_is_named_after_its_repository() {
        let snap = Path::new("/h/hub/models--amd--AMD-Llama-135m-code/snapshots/0123abcd");
        assert_eq!(model_name(snap), "AMD-Llama-135m-code");
        assert_eq!(model_name(Path::new("/m/tiny-llama-hf")), "tiny-llama-hf");
        assert_eq!(model_name(Path::new("/x/snapshots/0123abcd")), "0123abcd");
    }
}
