//! `amd-lsp dev make-model`: deterministic random-weight test models.

use amd_engine::testmodel::{write_random_llama, LlamaShape, WeightType};
use anyhow::{Context, Result};

use crate::cli::{MakeModelArgs, ModelSize, ModelType};

pub(crate) fn make_model(args: &MakeModelArgs) -> Result<()> {
    let shape = match args.size {
        ModelSize::Tiny => LlamaShape::tiny(),
        ModelSize::Amd135m => LlamaShape::amd_135m(),
    };
    let wtype = match args.wtype {
        ModelType::F32 => WeightType::F32,
        ModelType::F16 => WeightType::F16,
        ModelType::Q8_0 => WeightType::Q8_0,
    };
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_random_llama(&args.vocab, &shape, wtype, args.seed, &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    tracing::info!(path = %args.output.display(), "test model written");
    Ok(())
}
