#!/usr/bin/env bash
# Installs what building amd-lsp needs on a Debian/Ubuntu machine that has only Rust:
# cmake (llama.cpp's build) and libclang-dev (bindgen in llama-cpp-sys-2).
# Idempotent: does nothing when everything is already there.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 \
   || ! ls /usr/lib/llvm-*/lib/clang/*/include/stddef.h >/dev/null 2>&1; then
  need+=(libclang-dev)
fi
command -v c++ >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# llama.cpp is compiled twice by the tests (scripts/test.sh): ccache makes the second a cache hit.
command -v ccache >/dev/null 2>&1 || need+=(ccache)
# The editor tests install Neovim from PyPI.
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# The VS Code extension is compiled and packaged with Node.js (>= 20 wanted) and npm.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The cmake crate configures llama.cpp's CMake build once per target directory and never again,
# so a build configured before .cargo/config.toml's llama.cpp options last changed (llamafile's
# kernels for every batch size, cmake/ggml-batch-invariant.cmake) would keep the old ones, and
# so would one whose copy of sgemm.cpp an older version of that file wrote (no "v2" line).
# Such a build is cleaned; the next cargo build configures it afresh.
cd "$(dirname "$0")/.."
for profile in release debug; do
  for cache in target/"$profile"/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt; do
    [ -f "$cache" ] || continue
    copy="$(dirname "$cache")/amd-lsp/sgemm.cpp"
    if ! grep -q '^CMAKE_PROJECT_INCLUDE:.*ggml-batch-invariant\.cmake' "$cache" \
       || { [ -f "$copy" ] && ! grep -q 'amd-lsp batch-invariant sgemm v2' "$copy"; }; then
      echo "setup: llama.cpp in target/$profile was configured with older options; cleaning it" >&2
      flag=""
      [ "$profile" = release ] && flag="--release"
      cargo clean -q -p llama-cpp-sys-2 $flag
      break
    fi
  done
done
