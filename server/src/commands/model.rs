//! `amd-lsp model …`: getting a model into the GGUF form the engine loads.

use amd_engine::convert::{convert as convert_checkpoint, OutType};
use anyhow::{Context, Result};

use crate::cli::{ConvertArgs, ConvertType};

pub(crate) fn convert(args: &ConvertArgs) -> Result<()> {
    let out_type = match args.out_type {
        ConvertType::F32 => OutType::F32,
        ConvertType::F16 => OutType::F16,
        ConvertType::Bf16 => OutType::Bf16,
        ConvertType::Q8_0 => OutType::Q8_0,
        ConvertType::Q4KM => OutType::Q4KM,
    };
    let summary = convert_checkpoint(&args.hf_dir, &args.output, out_type)
        .with_context(|| format!("cannot convert {}", args.hf_dir.display()))?;
    tracing::info!(
        path = %args.output.display(),
        n_tensors = summary.n_tensors,
        n_vocab = summary.n_vocab,
        fim = summary.fim,
        "converted"
    );
    Ok(())
}
