#!/usr/bin/env bash
# The VS Code extension (editors/vscode) type-checks with tsc, bundles with esbuild into one file,
# and packages with @vscode/vsce twice: amd-lsp.vsix (any platform; the server comes from
# amdLsp.serverPath or PATH) and amd-lsp-linux-x64.vsix, which carries target/release/amd-lsp
# (what `code --install-extension` needs to work with nothing else installed).
# Needs Node.js >= 20 and npm (scripts/setup.sh installs them when missing) and the release build.
set -euo pipefail
cd "$(dirname "$0")/../../editors/vscode"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent compile >/dev/null
rm -rf bin amd-lsp.vsix amd-lsp-linux-x64.vsix
npx vsce package --no-dependencies --out amd-lsp.vsix >/dev/null
mkdir -p bin
cp ../../target/release/amd-lsp bin/amd-lsp
strip --strip-debug bin/amd-lsp 2>/dev/null || true
npx vsce package --no-dependencies --target linux-x64 --out amd-lsp-linux-x64.vsix >/dev/null
rm -rf bin
python3 - amd-lsp.vsix amd-lsp-linux-x64.vsix <<'PY'
import json, sys, zipfile
for vsix in sys.argv[1:]:
    z = zipfile.ZipFile(vsix)
    names = set(z.namelist())
    need = ["extension/package.json", "extension/out/extension.js", "extension/LICENSE.txt",
            "extension.vsixmanifest"]
    platform = "linux-x64" in vsix
    if platform:
        need.append("extension/bin/amd-lsp")
    missing = [n for n in need if n not in names]
    assert not missing, f"{vsix}: missing {missing}"
    leaked = [n for n in names if n.startswith(("extension/src/", "extension/node_modules/"))
              or n.endswith(".map")]
    assert not leaked, f"{vsix}: sources, maps or node_modules in the .vsix: {leaked[:5]}"
    assert len(names) <= 12, f"{vsix}: {len(names)} files, not a bundle: {sorted(names)}"
    manifest = json.loads(z.read("extension/package.json"))
    props = manifest["contributes"]["configuration"]["properties"]
    assert "amdLsp.model" in props and manifest["main"] == "./out/extension.js"
    xml = z.read("extension.vsixmanifest").decode()
    assert ('TargetPlatform="linux-x64"' in xml) == platform, f"{vsix}: target platform"
    if platform:
        mode = z.getinfo("extension/bin/amd-lsp").external_attr >> 16
        size = z.getinfo("extension/bin/amd-lsp").file_size
        print(f"run-vscode: {vsix}: {len(names)} files, amd-lsp {size / 2**20:.1f} MiB (mode {oct(mode)})")
    else:
        print(f"run-vscode: {vsix}: {len(names)} files, {len(props)} settings")
PY
