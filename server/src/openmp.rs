//! OpenMP's wait policy, which must be in the environment before the process starts.
//!
//! llama.cpp's OpenMP workers wait for each other at every operation of a graph. Sleeping
//! between operations (`OMP_WAIT_POLICY=passive`) makes two decode threads slower than one;
//! spinning makes them 1.4× faster on an idle machine but stalls them when another process
//! takes a core, which the engine avoids by running on one thread while the cores are busy
//! (`amd_engine`'s thread policy; measured in docs/benchmarks.md). So workers spin, briefly:
//! `GOMP_SPINCOUNT=20000` (about 0.1 ms) before they sleep, so that they burn little once a
//! suggestion is done. libgomp reads its variables once, when it is loaded, so setting them
//! from `main` is too late: we re-execute ourselves once with it set.

/// The spin count given to libgomp when the user set no OpenMP wait variable.
pub const SPIN_COUNT: &str = "20000";

/// Re-executes the current binary with `GOMP_SPINCOUNT` set unless `OMP_WAIT_POLICY` or
/// `GOMP_SPINCOUNT` already is (a user's explicit choice is kept). Returns only if nothing was
/// done or the re-exec failed.
pub fn ensure_openmp_wait_policy() {
    if std::env::var_os("OMP_WAIT_POLICY").is_some() || std::env::var_os("GOMP_SPINCOUNT").is_some()
    {
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
            .env("GOMP_SPINCOUNT", SPIN_COUNT)
            .exec();
        // exec only returns on failure; carry on with the default policy.
        let _ = err;
    }
}
