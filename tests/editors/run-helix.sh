#!/usr/bin/env bash
# Drives amd-lsp from a real Helix inside tmux (tests/editors/helix_tmux.py) with SmolLM2-135M:
# the popup item, accepting it, a key typed while a request is pending, multi-line items,
# :lsp-restart with new settings, another model, and a ~230-keystroke typing session.
# Helix 25.07.1 is built from the source vendored in tests/editors/vendor (no registry carries
# it; ../shared/editors/README.md says where it comes from) and cached in .tools.
# Expects target/release/amd-lsp (scripts/test.sh builds it) and the proxy models
# (scripts/fetch-models.sh, in $AMD_LSP_PROXY_MODELS).
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/editors/apt-need.sh tmux python3
tools=.tools/helix-25.07.1
src=tests/editors/vendor/helix-25.07.1-079a789e8-src.tar.gz
if [ ! -x "$tools/hx" ]; then
  echo "e17fe3f6ef5aeed85f8077304c113eb0434cbcc39cc2c6ac1dd9d6bc54ff6529  $src" | sha256sum -c --quiet
  rm -rf "$tools" && mkdir -p "$tools"
  tar xzf "$src" -C "$tools"
  # It pins Rust 1.82 (not installed); the default toolchain builds it.
  rm -f "$tools/helix/rust-toolchain.toml"
  (cd "$tools/helix" && HELIX_DISABLE_AUTO_GRAMMAR_BUILD=1 CARGO_TARGET_DIR="$PWD/../target" \
    cargo build --release -p helix-term --locked --quiet)
  mv "$tools/target/release/hx" "$tools/hx"
  mv "$tools/helix/runtime" "$tools/runtime"
  rm -rf "$tools/target" "$tools/helix"
fi
models="${AMD_LSP_PROXY_MODELS:-$HOME/.cache/amd-lsp-proxies}"
smollm2="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$smollm2" ] || scripts/fetch-models.sh smollm2-135m >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target/release/amd-lsp dev make-model --size tiny -o "$work/tiny.gguf" --log-level warn
timeout 600 python3 tests/editors/helix_tmux.py "$PWD/$tools/hx" "$PWD/$tools/runtime" \
  "$PWD/target/release/amd-lsp" "$smollm2" "$work/tiny.gguf" "$work" ||
  { echo "run-helix: failed; Helix's log:" >&2; tail -40 "$work/helix.log" >&2; exit 1; }
mkdir -p target/editors-e2e && cp "$work/session.txt" target/editors-e2e/helix-session.txt
