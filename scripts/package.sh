#!/usr/bin/env bash
# Builds the release archive: dist/amd-lsp-<version>-<target>.tar.gz holding the binary, the
# README, the licenses (ours, llama.cpp's, and every linked crate's), the editor set-ups and
# their docs; and dist/SHA256SUMS. Extra cargo features (a GPU backend) come from FEATURES:
#   FEATURES=vulkan scripts/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2
features=(${FEATURES:+--features "$FEATURES"})
cargo build --release --locked -p amd-lsp "${features[@]}" >&2
version=$(target/release/amd-lsp --version | awk '{print $2}')
target=$(rustc -vV | sed -n 's/^host: //p')
name="amd-lsp-$version-$target${FEATURES:+-${FEATURES//,/-}}"
stage="dist/$name"
rm -rf "$stage" "dist/$name.tar.gz"
mkdir -p "$stage/bin"
cp target/release/amd-lsp "$stage/bin/"
strip --strip-debug "$stage/bin/amd-lsp" 2>/dev/null || true
cp README.md LICENSE-MIT LICENSE-APACHE "$stage/"
# The editor set-ups and their pages, as tracked (no node_modules or build output).
git ls-files -z editors docs/editors docs/configuration.md docs/models.md \
  | xargs -0 -I{} cp --parents {} "$stage/"
# Third-party licenses: llama.cpp (compiled in) and the crates linked into the binary.
sys_dir=$(cargo metadata --format-version 1 --locked \
  | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="llama-cpp-sys-2").rsplit("/",1)[0])')
{
  echo "# Third-party software in amd-lsp $version"
  echo
  echo "## llama.cpp (compiled into the binary through llama-cpp-sys-2)"
  echo
  echo '```'
  cat "$sys_dir/llama.cpp/LICENSE"
  echo '```'
  echo
  echo "## Rust crates linked into the binary (name version: license)"
  echo
  cargo tree --locked -p amd-lsp "${features[@]}" -e normal --prefix none -f '{p}: {l}' \
    | sed -E 's/ \([^)]*\):/:/; s/ \(\*\)$//' | grep -v '^amd-' | sort -u | sed 's/^/- /'
} > "$stage/THIRD-PARTY.md"
cat > "$stage/INSTALL.md" <<MD
# amd-lsp $version ($target)

\`bin/amd-lsp\` is the whole server. Put it on your PATH (or point the editor at it) and give it a
model:

    bin/amd-lsp model pull                  # AMD-Llama-135m-code from the Hugging Face hub, converted
    bin/amd-lsp model pull Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF --file qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
    bin/amd-lsp --stdio --model PATH.gguf   # any GGUF that llama.cpp runs

Editor set-ups are in \`editors/\`, their pages in \`docs/editors/\`, settings in
\`docs/configuration.md\`. The binary needs glibc and libgomp (\`apt-get install libgomp1\`).
MD
tar -czf "dist/$name.tar.gz" -C dist "$name"
(cd dist && sha256sum ./*.tar.gz | sed 's# \./# #' > SHA256SUMS)
echo "dist/$name.tar.gz"
