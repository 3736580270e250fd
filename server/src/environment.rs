//! Variables llama.cpp's libraries read once, when they are loaded or first used, so they must
//! be in the environment before the process starts: the binary re-executes itself once with
//! them set. A variable the user set is kept.
//!
//! - `GOMP_SPINCOUNT=20000` (unless `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` is set). llama.cpp's
//!   OpenMP workers wait for each other at every operation of a graph. Sleeping between
//!   operations (`OMP_WAIT_POLICY=passive`) makes two decode threads slower than one; spinning
//!   makes them 1.4× faster on an idle machine but stalls them when another process takes a
//!   core, which the engine avoids by running on one thread while the cores are busy
//!   (`amd_engine`'s thread policy; measured in docs/benchmarks.md). So workers spin, briefly
//!   (about 0.1 ms) before they sleep, and burn little once a suggestion is done.
//! - `GGML_CPU_TILED_MM=0`. ggml's tiled matrix multiplication (K-quant weights: Q4_K, Q5_K,
//!   Q6_K…, taken for large batches) rounds differently from the per-row dot products single
//!   tokens use, so a prompt evaluated in one batch gives other logits than the same prompt
//!   evaluated in pieces, and KV reuse and speculative verification stop being token-identical
//!   to plain decoding (`engine/tests/numerics.rs` fails with it on, on a Q4_K_M model).
//!   `.cargo/config.toml` sets the same for `cargo test` and `cargo bench`. Not on Windows,
//!   where there is no re-exec: set it there by hand.

/// The spin count given to libgomp when the user set no OpenMP wait variable.
pub const SPIN_COUNT: &str = "20000";

/// What to add to the environment: (name, value) pairs the user has not decided.
fn missing(var: impl Fn(&str) -> bool) -> Vec<(&'static str, &'static str)> {
    let mut add = Vec::new();
    if !var("OMP_WAIT_POLICY") && !var("GOMP_SPINCOUNT") {
        add.push(("GOMP_SPINCOUNT", SPIN_COUNT));
    }
    if !var("GGML_CPU_TILED_MM") {
        add.push(("GGML_CPU_TILED_MM", "0"));
    }
    add
}

/// Re-executes the current binary with the variables above added. Returns only if nothing was
/// missing or the re-exec failed.
pub fn ensure_environment() {
    let add = missing(|name| std::env::var_os(name).is_some());
    if add.is_empty() {
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
            .envs(add)
            .exec();
        // exec only returns on failure; carry on with llama.cpp's defaults.
        let _ = err;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_user_left_unset_is_added() {
        assert_eq!(
            missing(|_| false),
            [("GOMP_SPINCOUNT", SPIN_COUNT), ("GGML_CPU_TILED_MM", "0")]
        );
        assert_eq!(
            missing(|n| n == "OMP_WAIT_POLICY"),
            [("GGML_CPU_TILED_MM", "0")]
        );
        assert_eq!(
            missing(|n| n == "GGML_CPU_TILED_MM"),
            [("GOMP_SPINCOUNT", SPIN_COUNT)]
        );
        // Both set (the re-executed process itself): nothing, so it never loops.
        assert!(missing(|n| n == "GOMP_SPINCOUNT" || n == "GGML_CPU_TILED_MM").is_empty());
    }
}
