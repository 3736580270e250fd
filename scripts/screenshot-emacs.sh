#!/usr/bin/env bash
# Takes docs/editors/img/emacs-eglot-completion.png: Emacs 28 (Debian's emacs-nox with
# elpa-eglot) in a real xterm under Xvfb with editors/emacs/amd-lsp-eglot.el and the tiny test
# model, after C-M-i (completion-at-point) in a Python file. Needs xvfb, xterm, x11-apps,
# imagemagick; target/release/amd-lsp built.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
target/release/amd-lsp dev make-model --size tiny -o "$work/tiny.gguf" --log-level warn
printf 'import os\n\n\ndef load(path):\n    """Read a file."""\n    with open(pa' > "$work/main.py"
cat > "$work/init.el" <<EOL
(package-initialize)
(add-to-list 'load-path "$PWD/editors/emacs")
(require 'amd-lsp-eglot)
(setq amd-lsp-command '("$PWD/target/release/amd-lsp" "--stdio")
      amd-lsp-model "$work/tiny.gguf"
      amd-lsp-settings '(:debounceMs 0 :maxTokens 10)
      inhibit-startup-screen t eglot-sync-connect t
      warning-minimum-level :error native-comp-async-report-warnings-errors nil)
EOL
Xvfb :78 -screen 0 820x330x24 >/dev/null 2>&1 & pids+=($!)
sleep 1
DISPLAY=:78 HOME=$work xterm -geometry 100x16+0+0 -fa 'DejaVu Sans Mono' -fs 11 -bg '#fdf6e3' -fg '#073642' \
  -e emacs -nw -l "$work/init.el" "$work/main.py" \
  --eval '(progn (goto-char (point-max)) (insert "th") (apply (function eglot) (eglot--guess-contact)) (delete-other-windows))' & pids+=($!)
sleep 6
# C-M-i: completion-at-point (ESC C-i in a terminal).
DISPLAY=:78 xdotool key --clearmodifiers Escape ctrl+i 2>/dev/null || true
sleep 3
DISPLAY=:78 xwd -root -silent | convert xwd:- -crop 820x300+0+0 docs/editors/img/emacs-eglot-completion.png
echo "wrote docs/editors/img/emacs-eglot-completion.png"
