#!/usr/bin/env bash
# Takes docs/editors/img/helix-popup.png: Helix 25.07.1 (built by tests/editors/run-helix.sh) in
# a real xterm under Xvfb, attached to a tmux session that the keys go through, with
# editors/helix/languages.toml and SmolLM2-135M, after typing `with open(pa` into a Python file.
# Needs Debian's xvfb, xterm, x11-apps, imagemagick and tmux; target/release/amd-lsp built.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$PWD/.tools/helix-25.07.1
[ -x "$tools/hx" ] || tests/editors/run-helix.sh >/dev/null
model="${AMD_LSP_PROXY_MODELS:-$HOME/.cache/amd-lsp-proxies}/SmolLM2-135M-Instruct.Q4_1.gguf"
work=$(mktemp -d)
pids=()
trap 'tmux kill-session -t amd-lsp-shot 2>/dev/null; kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/config/helix" "$work/project"
sed -e "s|command = \"amd-lsp\"|command = \"$PWD/target/release/amd-lsp\"|" \
  -e "s|/path/to/amd-llama-135m-code.q8_0.gguf|$model|" \
  -e 's|language-servers = \["pylsp", "amd-lsp"\]|language-servers = ["amd-lsp"]|' \
  editors/helix/languages.toml > "$work/config/helix/languages.toml"
printf 'theme = "base16_terminal"\n[editor]\ncompletion-timeout = 5\ncompletion-trigger-len = 1\n' > "$work/config/helix/config.toml"
printf 'import os\n\n\ndef read_config(path):\n    """Read the configuration file at path."""\n    with open(path) as file:\n        return file.read()\n\n\ndef write_config(path, text):\n    \n' > "$work/project/app.py"
tmux new-session -d -s amd-lsp-shot -x 100 -y 16 \
  "cd $work/project && HELIX_RUNTIME=$tools/runtime XDG_CONFIG_HOME=$work/config XDG_CACHE_HOME=$work/cache $tools/hx app.py"
Xvfb :78 -screen 0 820x300x24 >/dev/null 2>&1 & pids+=($!)
sleep 1
DISPLAY=:78 xterm -geometry 100x16+0+0 -fa 'DejaVu Sans Mono' -fs 11 -bg '#fdf6e3' -fg '#073642' -e env TERM=xterm-256color tmux attach -t amd-lsp-shot & pids+=($!)
sleep 3
tmux send-keys -t amd-lsp-shot ':11' Enter A
tmux send-keys -t amd-lsp-shot -l 'with open(pa'
sleep 3
DISPLAY=:78 xwd -root -silent | /usr/bin/convert xwd:- -crop 820x260+0+0 docs/editors/img/helix-popup.png
echo "wrote docs/editors/img/helix-popup.png"
