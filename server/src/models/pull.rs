//! `amd-lsp model pull`: download a checkpoint from the Hugging Face hub into its cache (with
//! the `hf-hub` crate: resumable, with a progress bar), verify LFS files against their sha256,
//! convert and quantize it, and store the GGUF in our cache. `HF_ENDPOINT`, `HF_HOME` /
//! `HF_HUB_CACHE` and `HF_HUB_OFFLINE` are honoured. This is the only code that uses the network.

use std::io::Read;
use std::path::{Path, PathBuf};

use amd_engine::convert::{convert, OutType};
use anyhow::{bail, Context, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};
use sha2::{Digest, Sha256};

use crate::models::{self, Locations};

/// Whether `HF_HUB_OFFLINE` forbids the network.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

/// Pulls `repo` at `revision` and returns the GGUF written into our cache.
pub fn pull(
    repo: &str,
    revision: &str,
    out_type: OutType,
    type_name: &str,
    loc: &Locations,
) -> Result<PathBuf> {
    anyhow::ensure!(
        models::valid_repo_id(repo),
        "{repo:?} is not a Hugging Face repository id (owner/name)"
    );
    let hub = loc
        .hf_hub
        .clone()
        .context("no Hugging Face cache directory (set HF_HOME)")?;
    let snapshot = if offline() {
        models::hf_snapshot(loc, repo).with_context(|| {
            format!(
                "HF_HUB_OFFLINE is set and {repo} is not in the Hugging Face cache ({})",
                hub.display()
            )
        })?
    } else {
        download(repo, revision, &hub)?
    };
    let out = loc
        .repo_dir(repo)
        .context("no cache directory (set AMD_LSP_CACHE)")?
        .join(format!("{type_name}.gguf"));
    std::fs::create_dir_all(out.parent().context("cache path")?)?;
    tracing::info!(from = %snapshot.display(), to = %out.display(), "converting");
    convert(&snapshot, &out, out_type)
        .with_context(|| format!("cannot convert {}", snapshot.display()))?;
    Ok(out)
}

/// Downloads what conversion needs; returns the snapshot directory.
fn download(repo: &str, revision: &str, hub: &Path) -> Result<PathBuf> {
    let api = ApiBuilder::from_env()
        .with_cache_dir(hub.to_path_buf())
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .build()
        .context("cannot set up the Hugging Face client")?;
    let api = api.repo(Repo::with_revision(
        repo.to_owned(),
        RepoType::Model,
        revision.to_owned(),
    ));
    let info = api
        .info()
        .with_context(|| format!("cannot reach {repo} at {}", api.url("")))?;
    let names: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let mut wanted: Vec<String> = ["config.json", "tokenizer.model", "tokenizer_config.json"]
        .into_iter()
        .filter(|f| names.contains(f))
        .map(str::to_owned)
        .collect();
    if names.contains(&"model.safetensors") {
        wanted.push("model.safetensors".into());
    } else if names.contains(&"model.safetensors.index.json") {
        let index = fetch(&api, "model.safetensors.index.json")?;
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index)?)?;
        let mut shards: Vec<String> = json["weight_map"]
            .as_object()
            .context("model.safetensors.index.json has no weight_map")?
            .values()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        shards.sort();
        shards.dedup();
        wanted.extend(shards);
    } else if names.iter().any(|n| n.starts_with("pytorch_model")) {
        bail!("{repo} has only PyTorch .bin weights; amd-lsp converts safetensors checkpoints");
    } else {
        bail!("{repo} has no safetensors weights");
    }
    let mut snapshot = None;
    for file in &wanted {
        let path = fetch(&api, file)?;
        snapshot = path.parent().map(Path::to_path_buf);
    }
    snapshot.context("nothing was downloaded")
}

/// Downloads one file (or finds it in the cache) and checks an LFS file's sha256, which the
/// hub gives as its ETag and hf-hub uses as the blob's name. A mismatch removes the file.
fn fetch(api: &hf_hub::api::sync::ApiRepo, file: &str) -> Result<PathBuf> {
    let path = api
        .get(file)
        .with_context(|| format!("cannot download {file}"))?;
    let blob = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    let etag = blob
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    if etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        let actual = sha256_file(&blob)?;
        if !actual.eq_ignore_ascii_case(&etag) {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&blob);
            bail!("{file}: sha256 {actual} does not match the hub's {etag}; the download was discarded");
        }
    }
    Ok(path)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
