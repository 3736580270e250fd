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
# This llama.cpp needs Vulkan headers with VK_EXT_layer_settings (1.3.261+); Debian 12 ships
# 1.3.239. Then take the headers (only) of Debian 13's libvulkan-dev, unpacked under the target
# directory and put first on the C/C++ include path; the loader and drivers stay Debian 12's.
if ! grep -q VK_EXT_layer_settings /usr/include/vulkan/vulkan_core.h 2>/dev/null; then
    headers=$PWD/target/vulkan/headers
    if [[ ! -f $headers/usr/include/vulkan/vulkan.hpp ]]; then
        list=$(mktemp)
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' >"$list"
        apt_opts=(-o Dir::Etc::sourcelist="$list" -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0)
        sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
        $sudo apt-get update -q "${apt_opts[@]}"
        mkdir -p "$headers"
        (cd "$headers" && apt-get download -q "${apt_opts[@]}" libvulkan-dev/trixie && dpkg-deb -x libvulkan-dev_*.deb .)
        rm -f "$list"
    fi
    export CPATH="$headers/usr/include${CPATH:+:$CPATH}"
    # A configure that failed earlier leaves a cache that skips configuring again.
    grep -qs "Generating done" "$CARGO_TARGET_DIR"/release/build/llama-cpp-sys-2-*/output ||
        rm -rf "$CARGO_TARGET_DIR"/release/build/llama-cpp-sys-2-*
fi
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
