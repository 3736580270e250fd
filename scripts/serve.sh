#!/usr/bin/env bash
# Builds amd-lsp (installing build prerequisites first) and runs the language server on stdio.
# Arguments are passed to amd-lsp; without any, it serves LSP on stdio (`--stdio`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p amd-lsp >&2
if [ $# -eq 0 ]; then set -- --stdio; fi
exec target/release/amd-lsp "$@"
