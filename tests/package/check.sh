#!/usr/bin/env bash
# Checks a release archive as a user gets it: the checksum matches SHA256SUMS, and in a fresh
# directory with an empty HOME the archive's binary prints its version and serves one
# completion over stdio with MODEL (a real GGUF).
#   tests/package/check.sh dist/amd-lsp-<version>-<target>.tar.gz MODEL.gguf
set -euo pipefail
archive=$(realpath "$1")
model=$(realpath "$2")
here=$(cd "$(dirname "$0")" && pwd)
(cd "$(dirname "$archive")" && sha256sum --check --ignore-missing --strict SHA256SUMS)
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
tar -xzf "$archive" -C "$fresh"
root=$(find "$fresh" -mindepth 1 -maxdepth 1 -type d)
for f in bin/amd-lsp README.md INSTALL.md LICENSE-MIT LICENSE-APACHE THIRD-PARTY.md \
         editors/neovim/lua/amd_lsp/init.lua editors/helix/languages.toml docs/configuration.md; do
  [ -e "$root/$f" ] || { echo "package: $f is missing from the archive" >&2; exit 1; }
done
grep -q '^## llama.cpp' "$root/THIRD-PARTY.md"
cd "$fresh"
env -i PATH=/usr/bin:/bin HOME="$fresh/home" "$root/bin/amd-lsp" --version
env -i PATH=/usr/bin:/bin HOME="$fresh/home" python3 "$here/serve_once.py" "$root/bin/amd-lsp" "$model"
echo "package: $(basename "$archive") ok"
