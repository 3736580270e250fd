#!/usr/bin/env bash
# Shows that `--features hip` reaches llama.cpp's CMake configuration as GGML_HIP=ON, and that
# the normal (CPU) build has it OFF. Machines without ROCm (this one: Debian's package sources
# have no hipBLAS) cannot finish the HIP build: CMake's configure step stops when it looks for
# the HIP toolchain. The check reads the CMake cache that configure wrote before stopping.
set -euo pipefail
cd "$(dirname "$0")/../.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# A target directory of its own, so the failing build never touches the normal one.
rm -rf target/hip-check/release/build/llama-cpp-sys-2-*
if CARGO_TARGET_DIR=target/hip-check cargo build --release -p amd-engine --features hip >"$log" 2>&1; then
    echo "hip: the build succeeded (ROCm is installed)"
else
    echo "hip: the build stopped as expected without ROCm:"
    grep -m3 -E "CMake Error|Failed to find ROCm|HIP compiler" "$log" | cut -c1-200 || true
fi
hip_cache=$(ls target/hip-check/release/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt 2>/dev/null | head -1)
cpu_cache=$(ls target/release/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt 2>/dev/null | head -1)
if [[ -z "$hip_cache" ]] || ! grep -q "^GGML_HIP:BOOL=ON" "$hip_cache"; then
    tail -40 "$log"
    echo "hip-reaches-cmake: FAILED: no GGML_HIP=ON in the hip build's CMake cache" >&2
    exit 1
fi
if [[ -n "$cpu_cache" ]] && grep -q "^GGML_HIP:BOOL=ON" "$cpu_cache"; then
    echo "hip-reaches-cmake: FAILED: the CPU build has GGML_HIP=ON" >&2
    exit 1
fi
echo "hip-reaches-cmake: ok (GGML_HIP=ON with --features hip; ${cpu_cache:+OFF in the CPU build})"
