//! Temporary files next to their final path, written then renamed into place, and known to the
//! process so that a signal handler can remove them ([`remove_all`]): a conversion interrupted
//! by SIGTERM leaves neither a half-written model under the final name nor a temporary file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static N_CREATED: AtomicU64 = AtomicU64::new(0);

/// A registered temporary path; the file (if any) is removed on drop unless persisted.
#[derive(Debug)]
pub struct ScratchPath {
    path: PathBuf,
}

impl ScratchPath {
    /// A fresh name beside `target` (same directory, so the final rename is atomic), unique per
    /// process and call: threads may write the same target at once.
    pub fn beside(target: &Path, tag: &str) -> ScratchPath {
        let n = N_CREATED.fetch_add(1, Ordering::Relaxed);
        let name = target
            .file_name()
            .map_or_else(|| "scratch".into(), |n| n.to_string_lossy().into_owned());
        let path = target.with_file_name(format!(".{name}.{tag}-{}-{n}.tmp", std::process::id()));
        LIVE.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(path.clone());
        ScratchPath { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file to `target`.
    pub fn persist(self, target: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, target)
        // On success the file is gone from here; drop only unregisters the name.
    }
}

impl Drop for ScratchPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        LIVE.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|p| p != &self.path);
    }
}

/// Removes every temporary file this process has open now. For signal handlers, just before
/// the process exits.
pub fn remove_all() -> usize {
    remove_where(|_| true)
}

/// Removes the temporary files whose paths `pick` selects.
fn remove_where(pick: impl Fn(&Path) -> bool) -> usize {
    let live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    live.iter()
        .filter(|p| pick(p) && std::fs::remove_file(p).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_and_persisted_and_removed_on_signal() {
        let dir = std::env::temp_dir().join(format!("amd-scratch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let target = dir.join("model.gguf");

        let s = ScratchPath::beside(&target, "part");
        std::fs::write(s.path(), "x").expect("write");
        let p = s.path().to_path_buf();
        drop(s);
        assert!(!p.exists(), "dropped scratch files are removed");

        let s = ScratchPath::beside(&target, "part");
        std::fs::write(s.path(), "y").expect("write");
        s.persist(&target).expect("persist");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "y");

        let s = ScratchPath::beside(&target, "part");
        std::fs::write(s.path(), "z").expect("write");
        // Only this test's files: tests beside it write through scratch files too.
        assert!(remove_where(|p| p.starts_with(&dir)) >= 1);
        assert!(!s.path().exists());
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
