#!/usr/bin/env bash
# VS Code for real: code-server 4.100.3 (VS Code 1.100.3) from npm with the platform .vsix
# (amd-lsp-linux-x64.vsix, carrying the server) installed and nothing else: no serverPath, no
# model. Opened in headless Debian Chromium driven by playwright-core, it goes through the first
# run — the "needs a model" notification, "Download model" (from a local stand-in for the hub
# holding the tiny checkpoint), the model set in the user's settings — then types until ghost
# text shows, accepts it, and checks the buffer and the status bar. Screenshots go to OUT (default
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
hub=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; [ -z "$hub" ] || kill "$hub" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/ud/User" "$work/ext" "$work/ws" "$work/hub" "$out"
cp tests/fixtures/tiny-llama-hf/{config.json,model.safetensors,tokenizer.model,tokenizer_config.json} "$work/hub/"
python3 tests/editors/hub_standin.py "$work/hub" amd/AMD-Llama-135m-code "$work/hub.port" 2> "$work/hub.log" &
hub=$!
for _ in $(seq 100); do [ -f "$work/hub.port" ] && break; sleep 0.1; done
printf 'import os\n\n\ndef load(path):\n' > "$work/ws/main.py"
cat > "$work/ud/User/settings.json" <<JSON
{
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
  --install-extension editors/vscode/amd-lsp-linux-x64.vsix >/dev/null
# The model comes from the hub stand-in into empty caches; nothing of this machine's is used.
export HF_ENDPOINT="http://127.0.0.1:$(cat "$work/hub.port")" HF_HOME="$work/hf" \
  AMD_LSP_CACHE="$work/cache" AMD_LSP_MODEL="" HF_HUB_OFFLINE=""
unset HF_HUB_CACHE HF_TOKEN
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
node "$cs/out/node/entry.js" --auth none --bind-addr "127.0.0.1:$port" --user-data-dir "$work/ud" \
  --extensions-dir "$work/ext" --disable-telemetry --disable-update-check --disable-workspace-trust \
  "$work/ws" > "$work/code-server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.2; done
if ! timeout 240 node tests/editors/vscode-e2e/e2e.mjs "http://127.0.0.1:$port/?folder=$work/ws" main.py "$out"; then
  tail -20 "$work/code-server.log" >&2
  find "$work/ud/logs" -name 'amd-lsp.log' -exec tail -20 {} \; >&2 || true
  tail -20 "$work/hub.log" >&2
  exit 1
fi
# The first run left the pulled model in the settings: the user's, or — amdLsp.model being
# machine-overridable and code-server a remote — the remote machine's.
python3 - "$work/ud" "$work/cache/models/amd--AMD-Llama-135m-code/q8_0.gguf" <<'PY'
import json, os, re, sys
found = {}
for scope in ("User", "Machine"):
    path = os.path.join(sys.argv[1], scope, "settings.json")
    if os.path.exists(path):
        text = open(path).read()
        found[scope] = json.loads(re.sub(r",(\s*})", r"\1", text) or "{}").get("amdLsp.model")
assert sys.argv[2] in found.values(), f"amdLsp.model is {found}, not the pulled {sys.argv[2]}"
print(f"run-code-server: first run pulled and set amdLsp.model = {sys.argv[2]} ({found})")
PY
