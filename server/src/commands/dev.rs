//! `amd-lsp dev make-model`: deterministic random-weight test models.

use amd_engine::testing::testmodel::{
    write_random_llama, write_stacked_target, LlamaShape, WeightType,
};
use anyhow::{Context, Result};

use crate::cli::{MakeModelArgs, ModelSize, ModelType};

pub(crate) fn make_model(args: &MakeModelArgs) -> Result<()> {
    let shape = match args.size {
        ModelSize::Tiny => LlamaShape::tiny(),
        ModelSize::Amd135m => LlamaShape::amd_135m(),
        ModelSize::Codellama7b => LlamaShape::codellama_7b(),
    };
    let wtype = match args.wtype {
        ModelType::F32 => WeightType::F32,
        ModelType::F16 => WeightType::F16,
        ModelType::Q8_0 => WeightType::Q8_0,
    };
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if let Some(draft) = &args.stack_on {
        let out = if wtype == WeightType::Q8_0 {
            args.output.with_extension("f16.tmp.gguf")
        } else {
            args.output.clone()
        };
        write_stacked_target(
            draft,
            &args.vocab,
            args.extra_layers,
            args.scale,
            args.codellama_vocab,
            args.seed,
            &out,
        )
        .with_context(|| format!("writing {}", out.display()))?;
        if out != args.output {
            let result = amd_engine::quantize(&out, &args.output, amd_engine::QuantType::Q8_0, 2);
            let _ = std::fs::remove_file(&out);
            result.with_context(|| format!("quantizing into {}", args.output.display()))?;
        }
    } else {
        let shape = if args.codellama_vocab {
            shape.with_codellama_vocab()
        } else {
            shape
        };
        write_random_llama(&args.vocab, &shape, wtype, args.seed, &args.output)
            .with_context(|| format!("writing {}", args.output.display()))?;
    }
    tracing::info!(path = %args.output.display(), "test model written");
    Ok(())
}
