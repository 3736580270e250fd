#!/usr/bin/env bash
# Drives amd-lsp from a real Emacs (Debian's emacs-nox 28 with its eglot and lsp-mode packages)
# with the tiny test model, through editors/emacs/amd-lsp-{eglot,lsp-mode}.el; every file there must
# also byte-compile without a warning. Expects target/release/amd-lsp to be built.
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/editors/apt-need.sh emacs-nox elpa-eglot elpa-lsp-mode
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp editors/emacs/*.el "$work/"
for f in editors/emacs/*.el; do
  HOME=$work emacs --batch -L "$work" --eval '(progn (package-initialize) (setq byte-compile-error-on-warn t))' \
    -f batch-byte-compile "$work/$(basename "$f")" 2>&1 | { grep -v '^Loading' || true; }
  [ -f "$work/$(basename "$f" .el).elc" ] || { echo "run-emacs: $f does not byte-compile cleanly" >&2; exit 1; }
done
echo "run-emacs: editors/emacs/*.el byte-compile without warnings"
target/release/amd-lsp dev make-model --size tiny -o "$work/tiny.gguf" --log-level warn
HOME=$work timeout 120 emacs --batch -l tests/editors/emacs_eglot.el \
  "$PWD/target/release/amd-lsp" "$work/tiny.gguf" 2>&1 | { grep -v '^Loading\|^\[eglot\]' || true; }
HOME=$work timeout 120 emacs --batch -l tests/editors/emacs_lsp_mode.el \
  "$PWD/target/release/amd-lsp" "$work/tiny.gguf" 2>&1 | { grep -v '^Loading\|^LSP ::\|^$' || true; }
