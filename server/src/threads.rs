//! OpenMP's wait policy, which must be in the environment before the process starts.
//!
//! llama.cpp's OpenMP workers spin while they wait. When another process keeps a core busy
//! (a build, a browser), spinning workers lose their time slices and prompt evaluation slows
//! down (measured: 2-thread prefill 251 tok/s spinning vs 359 passive with one core busy,
//! docs/benchmarks.md). libgomp reads `OMP_WAIT_POLICY` once, when it is loaded, so setting
//! it from `main` is too late: we re-execute ourselves once with it set.

/// Re-executes the current binary with `OMP_WAIT_POLICY=passive` unless the variable is
/// already set (a user's explicit choice is kept). Returns only if nothing was done or the
/// re-exec failed.
pub fn ensure_passive_openmp() {
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("OMP_WAIT_POLICY", "passive")
            .exec();
        // exec only returns on failure; carry on with the default policy.
        let _ = err;
    }
}
