#!/usr/bin/env bash
# Builds amd-lsp with the Vulkan backend and runs the engine's tests and a completion on Mesa's
# CPU Vulkan driver (lavapipe), so the Vulkan code path runs on a machine without a GPU.
# Not part of scripts/test.sh: the Vulkan build compiles llama.cpp's shaders (~15 min on 2
# cores); run it when the engine or llama.cpp changes. Needs: libvulkan-dev glslc spirv-headers
# mesa-vulkan-drivers (installed below when missing, as scripts/setup.sh does).
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
for pkg in libvulkan-dev glslc spirv-headers mesa-vulkan-drivers; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get install -y -q "${missing[@]}"
fi
export CARGO_TARGET_DIR=target/vulkan
# lavapipe is a CPU device in Vulkan's terms; make sure ggml may use it.
export GGML_VK_VISIBLE_DEVICES="${GGML_VK_VISIBLE_DEVICES:-0}"
cargo build --release -p amd-lsp --features vulkan
target/vulkan/release/amd-lsp --version
# The engine's tests with every layer offloaded to the Vulkan device (the default in a GPU build).
cargo test --release -p amd-engine --features vulkan
mkdir -p target/vulkan/models
model=target/vulkan/models/tiny.gguf
[[ -f $model ]] || target/vulkan/release/amd-lsp dev make-model -o "$model"
target/vulkan/release/amd-lsp complete --model "$model" --prompt "def fib(n):" --max-tokens 16 --stats
