//! `amd-lsp model pull`: download a checkpoint from the Hugging Face hub into its cache (with
//! the `hf-hub` crate: resumable, with a progress bar), verify LFS files against their sha256,
//! convert and quantize it, and store the GGUF in our cache — or take a ready GGUF file of a
//! repository as it is (`--file`). `HF_ENDPOINT`, `HF_HOME` /
//! `HF_HUB_CACHE` and `HF_HUB_OFFLINE` are honoured. This is the only code that uses the network.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use amd_engine::convert::{convert, OutType};
use amd_engine::gguf::scratch::ScratchPath;
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

/// Pulls one GGUF file of `repo` at `revision` as it is (no conversion: a ready GGUF such as
/// Qwen2.5-Coder's), verified by its sha256, and returns its path in our cache
/// (`models/<owner>--<name>/<file name>`, a hard link to the Hugging Face cache's blob where
/// the file system allows, else a copy).
pub fn pull_gguf(repo: &str, revision: &str, file: &str, loc: &Locations) -> Result<PathBuf> {
    anyhow::ensure!(
        models::valid_repo_id(repo),
        "{repo:?} is not a Hugging Face repository id (owner/name)"
    );
    let name = gguf_file_name(file)?;
    let hub = loc
        .hf_hub
        .clone()
        .context("no Hugging Face cache directory (set HF_HOME)")?;
    let source = if offline() {
        models::hf_snapshot_with(loc, repo, |dir| dir.join(file).is_file())
            .map(|dir| dir.join(file))
            .with_context(|| {
                format!(
                    "HF_HUB_OFFLINE is set and {repo}'s {file} is not in the Hugging Face cache ({})",
                    hub.display()
                )
            })?
    } else {
        let (api, cache_repo) = hub_repo(repo, revision, &hub)?;
        let names = listing(&api, repo)?;
        if !names.iter().any(|n| n == file) {
            let ggufs: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| n.ends_with(".gguf"))
                .collect();
            bail!(
                "{repo} has no file {file:?}; its GGUF files: {}",
                if ggufs.is_empty() {
                    "none".to_owned()
                } else {
                    ggufs.join(", ")
                }
            );
        }
        fetch(&api, &hub, &cache_repo, file)?
    };
    // A file that is not a model llama.cpp can load is not placed where a user would pick it up.
    let checked = amd_engine::gguf::validate::check_model_file(&source, false)
        .with_context(|| format!("{repo}'s {file} is not a usable model"))?;
    tracing::debug!(architecture = %checked.architecture, n_vocab = checked.n_vocab, "pulled GGUF checked");
    let dir = loc
        .repo_dir(repo)
        .context("no cache directory (set AMD_LSP_CACHE)")?;
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(name);
    let blob = std::fs::canonicalize(&source)
        .with_context(|| format!("cannot read {}", source.display()))?;
    // Linked (or copied) beside the target, then renamed over it: a reader never sees a
    // missing or half-copied file, and an interrupted copy leaves nothing behind.
    let scratch = ScratchPath::beside(&out, "pull");
    if std::fs::hard_link(&blob, scratch.path()).is_err() {
        std::fs::copy(&blob, scratch.path())
            .with_context(|| format!("cannot copy {} into {}", blob.display(), dir.display()))?;
    }
    scratch
        .persist(&out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(out)
}

/// The file name a GGUF of a repository gets in our cache: `file` must be a repository path of
/// plain components ending in `.gguf`.
fn gguf_file_name(file: &str) -> Result<&str> {
    let parts: Vec<&str> = file.split('/').collect();
    let name = parts.last().copied().unwrap_or_default();
    anyhow::ensure!(
        parts.iter().all(|p| models::plain_component(p))
            && name.len() > ".gguf".len()
            && name.ends_with(".gguf"),
        "{file:?} is not the name of a GGUF file in a repository (NAME.gguf)"
    );
    Ok(name)
}

/// The hub's client for `repo` at `revision`, caching into `hub`.
fn hub_repo(repo: &str, revision: &str, hub: &Path) -> Result<(hf_hub::api::sync::ApiRepo, Repo)> {
    let api = ApiBuilder::from_env()
        .with_cache_dir(hub.to_path_buf())
        .with_progress(true)
        .build()
        .context("cannot set up the Hugging Face client")?;
    let repo = Repo::with_revision(repo.to_owned(), RepoType::Model, revision.to_owned());
    Ok((api.repo(repo.clone()), repo))
}

/// The repository's file names.
fn listing(api: &hf_hub::api::sync::ApiRepo, repo: &str) -> Result<Vec<String>> {
    let info = api
        .info()
        .with_context(|| format!("cannot reach {repo} at {}", api.url("")))?;
    Ok(info.siblings.into_iter().map(|s| s.rfilename).collect())
}

/// Downloads what conversion needs; returns the snapshot directory.
fn download(repo: &str, revision: &str, hub: &Path) -> Result<PathBuf> {
    let (api, cache_repo) = hub_repo(repo, revision, hub)?;
    let names = listing(&api, repo)?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut wanted: Vec<String> = ["config.json", "tokenizer.model", "tokenizer_config.json"]
        .into_iter()
        .filter(|f| names.contains(f))
        .map(str::to_owned)
        .collect();
    if names.contains(&"model.safetensors") {
        wanted.push("model.safetensors".into());
    } else if names.contains(&"model.safetensors.index.json") {
        let index = fetch(&api, hub, &cache_repo, "model.safetensors.index.json")?;
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
        let path = fetch(&api, hub, &cache_repo, file)?;
        snapshot = path.parent().map(Path::to_path_buf);
    }
    snapshot.context("nothing was downloaded")
}

/// Downloads one file (or finds it in the cache) and checks an LFS file's sha256, which the
/// hub gives as its ETag and hf-hub uses as the blob's name. A mismatch removes the file.
/// Progress: hf-hub's bar on a terminal, else [`Lines`] on stderr (what editors show).
fn fetch(api: &hf_hub::api::sync::ApiRepo, hub: &Path, repo: &Repo, file: &str) -> Result<PathBuf> {
    let cached = hf_hub::Cache::new(hub.to_path_buf())
        .repo(repo.clone())
        .get(file);
    let path = match cached {
        Some(path) => Ok(path),
        None if std::io::IsTerminal::is_terminal(&std::io::stderr()) => api.download(file),
        None => api.download_with_progress(file, Lines::default()),
    }
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

/// Download progress as lines on stderr, one per whole percent:
/// `amd-lsp: downloading model.safetensors: 45% (121.5 of 270.0 MiB)`. Editors that run
/// `model pull` (the VS Code extension, `:AmdLsp pull`) read them.
#[derive(Default)]
struct Lines {
    file: String,
    total: usize,
    done: usize,
    shown: Option<usize>,
}

impl Lines {
    fn show(&mut self) {
        let percent = (self.done * 100)
            .checked_div(self.total)
            .unwrap_or(100)
            .min(100);
        if self.shown == Some(percent) {
            return;
        }
        self.shown = Some(percent);
        let mib = |n: usize| n as f64 / f64::from(1u32 << 20);
        let _ = writeln!(
            std::io::stderr(),
            "amd-lsp: downloading {}: {percent}% ({:.1} of {:.1} MiB)",
            self.file,
            mib(self.done),
            mib(self.total)
        );
    }
}

impl hf_hub::api::Progress for Lines {
    fn init(&mut self, size: usize, filename: &str) {
        *self = Lines {
            file: filename.to_owned(),
            total: size,
            ..Lines::default()
        };
        self.show();
    }

    fn update(&mut self, size: usize) {
        self.done += size;
        self.show();
    }

    fn finish(&mut self) {
        self.done = self.total;
        self.show();
    }
}
