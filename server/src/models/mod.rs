//! Finding a model without the network, in this order: `--model`, the `model` setting,
//! `AMD_LSP_MODEL`, our cache, and a checkpoint of the default model already in the Hugging
//! Face cache (converted to GGUF into our cache on first use).

pub mod pull;

use std::path::{Path, PathBuf};

use amd_engine::convert::{convert, OutType};
use anyhow::{Context, Result};

/// The model the product is built around.
pub const DEFAULT_REPO: &str = "amd/AMD-Llama-135m-code";
/// Quantizations looked for in our cache, preferred first.
const CACHED_TYPES: [&str; 4] = ["q8_0", "f16", "q4_k_m", "f32"];

/// Where models are kept on this machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locations {
    /// Our cache: `AMD_LSP_CACHE`, else the user cache directory's `amd-lsp`.
    pub cache: Option<PathBuf>,
    /// Hugging Face's hub cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub hf_hub: Option<PathBuf>,
}

impl Locations {
    /// Read from the environment (the one place that does).
    pub fn from_env() -> Locations {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Locations {
            cache: var("AMD_LSP_CACHE").or_else(|| dirs::cache_dir().map(|d| d.join("amd-lsp"))),
            hf_hub: var("HF_HUB_CACHE")
                .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
                .or_else(|| dirs::home_dir().map(|h| h.join(".cache/huggingface/hub"))),
        }
    }

    /// Our cache's directory for a repository: `models/amd--AMD-Llama-135m-code/`.
    /// `None` also for a repository id that is not `owner/name` of plain characters: the
    /// id becomes one directory name, which must stay inside the cache.
    pub fn repo_dir(&self, repo: &str) -> Option<PathBuf> {
        if !valid_repo_id(repo) {
            return None;
        }
        Some(
            self.cache
                .as_ref()?
                .join("models")
                .join(repo.replace('/', "--")),
        )
    }
}

/// A Hugging Face repository id: `owner/name`, each a plain path component.
pub fn valid_repo_id(repo: &str) -> bool {
    repo.split_once('/')
        .is_some_and(|(owner, name)| plain_component(owner) && plain_component(name))
}

/// Letters, digits, `-`, `_` and `.`, and not `.` or `..`: safe as one directory name.
pub(crate) fn plain_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Where a model was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Setting,
    Env,
    Cache,
    HfCache,
}

impl Source {
    pub fn describe(self) -> &'static str {
        match self {
            Source::Flag => "--model",
            Source::Setting => "the `model` setting",
            Source::Env => "AMD_LSP_MODEL",
            Source::Cache => "amd-lsp's cache",
            Source::HfCache => "the Hugging Face cache (converted on first use)",
        }
    }
}

/// A model to load: a GGUF file, or a Hugging Face checkpoint to convert first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    Gguf { source: Source, path: PathBuf },
    Checkpoint { snapshot: PathBuf, into: PathBuf },
}

/// The explicit choices, strongest first.
#[derive(Clone, Debug, Default)]
pub struct Explicit {
    pub flag: Option<PathBuf>,
    pub setting: Option<PathBuf>,
    pub env: Option<PathBuf>,
}

/// Finds the model to use, or `None` (then the message names how to get one).
pub fn discover(explicit: &Explicit, loc: &Locations) -> Option<Found> {
    let chosen = [
        (Source::Flag, &explicit.flag),
        (Source::Setting, &explicit.setting),
        (Source::Env, &explicit.env),
    ];
    if let Some((source, Some(path))) = chosen.into_iter().find(|(_, p)| p.is_some()) {
        // An explicit choice is used even when missing: the load error then says so.
        return Some(Found::Gguf {
            source,
            path: path.clone(),
        });
    }
    if let Some(path) = cached_gguf(loc, DEFAULT_REPO) {
        return Some(Found::Gguf {
            source: Source::Cache,
            path,
        });
    }
    let snapshot = hf_snapshot(loc, DEFAULT_REPO)?;
    let into = loc.repo_dir(DEFAULT_REPO)?.join("q8_0.gguf");
    Some(Found::Checkpoint { snapshot, into })
}

/// The GGUF of `repo` in our cache, best quantization first.
pub fn cached_gguf(loc: &Locations, repo: &str) -> Option<PathBuf> {
    let dir = loc.repo_dir(repo)?;
    CACHED_TYPES
        .iter()
        .map(|t| dir.join(format!("{t}.gguf")))
        .find(|p| p.is_file())
}

/// A complete snapshot of `repo` in the Hugging Face cache (`refs/main`, else any snapshot).
pub fn hf_snapshot(loc: &Locations, repo: &str) -> Option<PathBuf> {
    hf_snapshot_with(loc, repo, |dir| {
        dir.join("config.json").is_file()
            && dir.join("tokenizer.model").is_file()
            && (dir.join("model.safetensors").is_file()
                || dir.join("model.safetensors.index.json").is_file())
    })
}

/// The snapshot of `repo` in the Hugging Face cache that `complete` accepts: the one `main`
/// points at, else the last one.
pub fn hf_snapshot_with(
    loc: &Locations,
    repo: &str,
    complete: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let root = loc
        .hf_hub
        .as_ref()?
        .join(format!("models--{}", repo.replace('/', "--")));
    let main = std::fs::read_to_string(root.join("refs/main"))
        .ok()
        .map(|rev| rev.trim().to_owned())
        .filter(|rev| plain_component(rev))
        .map(|rev| root.join("snapshots").join(rev));
    if let Some(dir) = main.filter(|d| complete(d)) {
        return Some(dir);
    }
    let mut snapshots: Vec<PathBuf> = std::fs::read_dir(root.join("snapshots"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|d| complete(d))
        .collect();
    snapshots.sort();
    snapshots.pop()
}

/// The GGUF path to load, converting a Hugging Face checkpoint into our cache first if needed
/// (atomically: the converter writes a temporary file and renames it). Blocking.
pub fn resolve(found: &Found) -> Result<PathBuf> {
    match found {
        Found::Gguf { path, .. } => Ok(path.clone()),
        Found::Checkpoint { snapshot, into } => {
            if into.is_file() {
                return Ok(into.clone());
            }
            let dir = into.parent().context("cache path has no directory")?;
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            tracing::info!(from = %snapshot.display(), to = %into.display(), "converting the Hugging Face checkpoint");
            convert(snapshot, into, OutType::Q8_0)
                .with_context(|| format!("cannot convert {}", snapshot.display()))?;
            Ok(into.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_ids_stay_inside_the_cache() {
        let loc = Locations {
            cache: Some(PathBuf::from("/c")),
            hf_hub: None,
        };
        assert_eq!(
            loc.repo_dir("amd/AMD-Llama-135m-code"),
            Some(PathBuf::from("/c/models/amd--AMD-Llama-135m-code"))
        );
        for bad in [
            "..", "amd/..", "../x", "amd/a/b", "/etc", "amd/", "a b/c", "amd/x\\y",
        ] {
            assert_eq!(loc.repo_dir(bad), None, "{bad}");
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("amd-models-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    fn snapshot(hub: &Path, rev: &str) -> PathBuf {
        let root = hub.join("models--amd--AMD-Llama-135m-code");
        let snap = root.join("snapshots").join(rev);
        std::fs::create_dir_all(&snap).expect("dir");
        for f in ["config.json", "tokenizer.model", "model.safetensors"] {
            std::fs::write(snap.join(f), "x").expect("write");
        }
        std::fs::create_dir_all(root.join("refs")).expect("refs");
        std::fs::write(root.join("refs/main"), rev).expect("ref");
        snap
    }

    #[test]
    fn explicit_choices_win_in_order() {
        let loc = Locations::default();
        let p = |s: &str| Some(PathBuf::from(s));
        let all = Explicit {
            flag: p("/a.gguf"),
            setting: p("/b.gguf"),
            env: p("/c.gguf"),
        };
        let found = |e: &Explicit| discover(e, &loc);
        assert_eq!(
            found(&all),
            Some(Found::Gguf {
                source: Source::Flag,
                path: "/a.gguf".into()
            })
        );
        let no_flag = Explicit {
            flag: None,
            ..all.clone()
        };
        assert_eq!(
            found(&no_flag),
            Some(Found::Gguf {
                source: Source::Setting,
                path: "/b.gguf".into()
            })
        );
        let env_only = Explicit {
            env: p("/c.gguf"),
            ..Explicit::default()
        };
        assert_eq!(
            found(&env_only),
            Some(Found::Gguf {
                source: Source::Env,
                path: "/c.gguf".into()
            })
        );
        assert_eq!(found(&Explicit::default()), None);
    }

    #[test]
    fn our_cache_then_the_hugging_face_cache() {
        let cache = scratch("cache");
        let hub = scratch("hub");
        let loc = Locations {
            cache: Some(cache.clone()),
            hf_hub: Some(hub.clone()),
        };
        assert_eq!(discover(&Explicit::default(), &loc), None);
        let snap = snapshot(&hub, "abc123");
        let into = cache.join("models/amd--AMD-Llama-135m-code/q8_0.gguf");
        assert_eq!(
            discover(&Explicit::default(), &loc),
            Some(Found::Checkpoint {
                snapshot: snap,
                into: into.clone()
            })
        );
        std::fs::create_dir_all(into.parent().expect("dir")).expect("dir");
        std::fs::write(&into, "gguf").expect("write");
        assert_eq!(
            discover(&Explicit::default(), &loc),
            Some(Found::Gguf {
                source: Source::Cache,
                path: into
            })
        );
    }
}
