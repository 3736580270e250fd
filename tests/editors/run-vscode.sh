#!/usr/bin/env bash
# The VS Code extension (editors/vscode) compiles with tsc and packages with @vscode/vsce into a
# .vsix holding the compiled extension, its manifest and its runtime dependencies.
# Needs Node.js >= 20 and npm (scripts/setup.sh installs them when missing).
set -euo pipefail
cd "$(dirname "$0")/../../editors/vscode"
npm ci --no-audit --no-fund --loglevel=error
npx tsc -p .
rm -f amd-lsp.vsix
npx vsce package --out amd-lsp.vsix >/dev/null
python3 - amd-lsp.vsix <<'PY'
import json, sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = ["extension/package.json", "extension/out/extension.js", "extension/LICENSE.txt",
        "extension/node_modules/vscode-languageclient/package.json", "extension.vsixmanifest"]
missing = [n for n in need if n not in names]
assert not missing, f"missing from the .vsix: {missing}"
leaked = [n for n in names if n.startswith(("extension/src/", "extension/node_modules/typescript/"))]
assert not leaked, f"sources or dev tools in the .vsix: {leaked[:5]}"
manifest = json.loads(zipfile.ZipFile(sys.argv[1]).read("extension/package.json"))
props = manifest["contributes"]["configuration"]["properties"]
assert "amdLsp.model" in props and manifest["main"] == "./out/extension.js"
print(f"run-vscode: amd-lsp.vsix packaged ({len(names)} files, {len(props)} settings)")
PY
