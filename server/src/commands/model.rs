//! `amd-lsp model …`: getting a model into the GGUF form the engine loads.

use std::io::Write;
use std::path::PathBuf;

use amd_engine::convert::{convert as convert_checkpoint, OutType};
use anyhow::{Context, Result};

use crate::cli::{ConvertArgs, ConvertType, PullArgs};
use crate::models::{self, Explicit, Found, Locations, DEFAULT_REPO};

/// The converter's type and the name it has in cache file names.
fn out_type(t: ConvertType) -> (OutType, &'static str) {
    match t {
        ConvertType::F32 => (OutType::F32, "f32"),
        ConvertType::F16 => (OutType::F16, "f16"),
        ConvertType::Bf16 => (OutType::Bf16, "bf16"),
        ConvertType::Q8_0 => (OutType::Q8_0, "q8_0"),
        ConvertType::Q4KM => (OutType::Q4KM, "q4_k_m"),
    }
}

/// `amd-lsp model pull`: download, verify, convert, cache; prints the GGUF's path.
pub(crate) fn pull(args: &PullArgs) -> Result<()> {
    let loc = Locations::from_env();
    let path = match &args.file {
        Some(file) => crate::models::pull::pull_gguf(&args.repo, &args.revision, file, &loc)
            .with_context(|| format!("cannot pull {file} from {}", args.repo))?,
        None => {
            let (t, name) = out_type(args.out_type);
            crate::models::pull::pull(&args.repo, &args.revision, t, name, &loc)
                .with_context(|| format!("cannot pull {}", args.repo))?
        }
    };
    writeln!(std::io::stdout(), "{}", path.display())?;
    Ok(())
}

pub(crate) fn convert(args: &ConvertArgs) -> Result<()> {
    let (out_type, _) = out_type(args.out_type);
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

/// `amd-lsp model list`: each place in discovery order, what is there, and the choice.
pub(crate) fn list(flag: Option<PathBuf>) -> Result<()> {
    let loc = Locations::from_env();
    let explicit = Explicit {
        flag,
        setting: None,
        env: std::env::var_os("AMD_LSP_MODEL")
            .filter(|v| !v.is_empty())
            .map(Into::into),
    };
    let show = |p: &Option<PathBuf>| match p {
        Some(p) if p.is_file() => format!("{} (found)", p.display()),
        Some(p) => format!("{} (missing)", p.display()),
        None => "(not set)".to_owned(),
    };
    let cached = models::cached_gguf(&loc, DEFAULT_REPO);
    let hf = models::hf_snapshot(&loc, DEFAULT_REPO);
    let mut out = std::io::stdout().lock();
    writeln!(out, "1. --model            {}", show(&explicit.flag))?;
    writeln!(
        out,
        "2. `model` setting    (sent by the editor; the server reads it)"
    )?;
    writeln!(out, "3. AMD_LSP_MODEL      {}", show(&explicit.env))?;
    let cache_dir = loc
        .repo_dir(DEFAULT_REPO)
        .map_or("(no cache directory)".into(), |d| d.display().to_string());
    writeln!(
        out,
        "4. amd-lsp cache      {}",
        cached.map_or(format!("{cache_dir} (empty)"), |p| format!(
            "{} (found)",
            p.display()
        ))
    )?;
    let hub = loc
        .hf_hub
        .as_ref()
        .map_or("(no Hugging Face cache)".into(), |d| {
            d.display().to_string()
        });
    writeln!(
        out,
        "5. Hugging Face cache {}",
        hf.map_or(format!("{hub}: no {DEFAULT_REPO} checkpoint"), |p| format!(
            "{} (found; converted on first use)",
            p.display()
        ))
    )?;
    match models::discover(&explicit, &loc) {
        Some(Found::Gguf { source, path }) => writeln!(
            out,
            "the server would load {} (from {})",
            path.display(),
            source.describe()
        )?,
        Some(Found::Checkpoint { snapshot, into }) => {
            writeln!(
                out,
                "the server would convert {} into {} and load it",
                snapshot.display(),
                into.display()
            )?;
        }
        None => writeln!(
            out,
            "no model found (unless the editor's `model` setting names one)"
        )?,
    }
    Ok(())
}
