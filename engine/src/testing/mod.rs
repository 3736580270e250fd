//! What tests, fuzz targets and the `dev`/`bench` tools build on: random-weight models and the
//! fuzz entry points. Never called on a job's path.

pub mod fuzz;
pub mod testmodel;

use std::path::PathBuf;

/// A real trained model fetched by `scripts/fetch-models.sh` (which `scripts/test.sh` runs),
/// by file name, from `$AMD_LSP_PROXY_MODELS` or `~/.cache/amd-lsp-proxies`. `None` when it is
/// not there (said on stderr), so that tests on a machine without the models skip it and pass.
pub fn proxy_model(file: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("AMD_LSP_PROXY_MODELS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/amd-lsp-proxies"))
        })?;
    let path = dir.join(file);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "{} not found: fetch it with scripts/fetch-models.sh (test skipped)",
            path.display()
        );
        None
    }
}
