#!/usr/bin/env bash
# VS Code for real: code-server 4.100.3 (VS Code 1.100.3) from npm with the packaged amd-lsp.vsix
# installed, opened in headless Debian Chromium driven by playwright-core; types until ghost text
# shows, accepts it, and checks the buffer and the status bar. Screenshots go to OUT (default
# target/editors-e2e). Needs tests/editors/run-vscode.sh to have packaged the .vsix and
# target/release/amd-lsp built. Installs, once: Debian's chromium, ripgrep and the headers
# code-server's native modules build against; code-server under .tools/.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
out=${OUT:-$root/target/editors-e2e}
version=4.100.3
cs=$root/.tools/code-server-$version

tests/editors/apt-need.sh chromium ripgrep libkrb5-dev libxkbfile-dev libsecret-1-dev

# code-server's own postinstall downloads ripgrep from GitHub (unreachable here) and, under
# npm 11, races its nested installs; so: its steps by hand, native modules rebuilt, Debian's rg.
npm10() { npx -y npm@10.9.2 "$@" --no-audit --no-fund --loglevel=error; }
if [ ! -f "$cs/.installed" ]; then
  rm -rf "$cs" && mkdir -p "$cs"
  (cd "$cs" && npm pack "code-server@$version" --silent >/dev/null && tar xzf "code-server-$version.tgz" --strip-components=1 && rm "code-server-$version.tgz")
  native() { find node_modules -name binding.gyp | sed 's#^node_modules/##; s#/binding.gyp$##' | grep -v node_modules | sort -u; }
  (cd "$cs" && npm10 install --omit=dev --ignore-scripts && n=$(native) && { [ -z "$n" ] || npm10 rebuild $n; })
  (cd "$cs/lib/vscode" && npm10 install --omit=dev --ignore-scripts && npm10 rebuild $(native) \
    && mkdir -p node_modules/@vscode/ripgrep/bin && ln -sf "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg \
    && ln -sfn node_modules node_modules.asar \
    && (cd extensions && npm10 install --omit=dev --ignore-scripts))
  touch "$cs/.installed"
fi
(cd tests/editors/vscode-e2e && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

work=$(mktemp -d)
pid=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/ud/User" "$work/ext" "$work/ws" "$out"
target/release/amd-lsp dev make-model --size tiny -o "$work/tiny.gguf" --log-level warn
printf 'import os\n\n\ndef load(path):\n' > "$work/ws/main.py"
cat > "$work/ud/User/settings.json" <<JSON
{
  "amdLsp.serverPath": "$root/target/release/amd-lsp",
  "amdLsp.model": "$work/tiny.gguf",
  "amdLsp.debounceMs": 0,
  "amdLsp.maxTokens": 12,
  "workbench.startupEditor": "none",
  "security.workspace.trust.enabled": false,
  "telemetry.telemetryLevel": "off",
  "extensions.autoCheckUpdates": false,
  "editor.quickSuggestions": { "other": "off", "comments": "off", "strings": "off" },
  "editor.wordBasedSuggestions": "off",
  "editor.suggestOnTriggerCharacters": false,
  "editor.autoClosingBrackets": "never"
}
JSON
node "$cs/out/node/entry.js" --extensions-dir "$work/ext" --user-data-dir "$work/ud" \
  --install-extension editors/vscode/amd-lsp.vsix >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
node "$cs/out/node/entry.js" --auth none --bind-addr "127.0.0.1:$port" --user-data-dir "$work/ud" \
  --extensions-dir "$work/ext" --disable-telemetry --disable-update-check --disable-workspace-trust \
  "$work/ws" > "$work/code-server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.2; done
if ! timeout 240 node tests/editors/vscode-e2e/e2e.mjs "http://127.0.0.1:$port/?folder=$work/ws" main.py "$out"; then
  tail -20 "$work/code-server.log" >&2
  find "$work/ud/logs" -name 'amd-lsp.log' -exec tail -20 {} \; >&2 || true
  exit 1
fi
