// amd-lsp for VS Code: starts `amd-lsp --stdio` (the binary this platform's .vsix carries, else
// `amdLsp.serverPath`, else `amd-lsp` on PATH) and lets vscode-languageclient turn its LSP 3.18
// inline completions into VS Code's ghost text. Settings under `amdLsp.*` are the server's
// configuration keys (docs/configuration.md); `serverPath` and `trace.server` are the client's.
// With no model, a first run offers to download one (`amd-lsp model pull`, with its progress in
// the notification) or to choose a GGUF file; the status bar shows loading / ready / no model /
// error, and clicking it does what that state needs.
import * as cp from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import {
  LanguageClient,
  LanguageClientOptions,
  MessageType,
  ServerOptions,
  ShowMessageNotification,
  State,
  TransportKind,
} from 'vscode-languageclient/node';

const SECTION = 'amdLsp';
/** Settings of this extension that the server does not know. */
const CLIENT_ONLY = new Set(['serverPath', 'trace.server']);
const STATUS_POLL_MS = 2000;

let client: LanguageClient | undefined;
let statusItem: vscode.StatusBarItem;
let poll: NodeJS.Timeout | undefined;
let output: vscode.LogOutputChannel;
let extensionPath = '';
/** The last `amd/status` state seen (what a click on the status bar acts on). */
let lastState = 'starting';
let lastError: string | null | undefined;
/** The first-run prompt is shown once per session (the status bar offers it again). */
let offered = false;
let pulling = false;

/** The server's keys, as declared in package.json (so they cannot drift from the settings UI). */
function serverKeys(context: vscode.ExtensionContext): string[] {
  const props = context.extension.packageJSON.contributes.configuration.properties as Record<string, unknown>;
  return Object.keys(props)
    .map((k) => k.slice(SECTION.length + 1))
    .filter((k) => !CLIENT_ONLY.has(k));
}

/** The server configuration from the user's settings: every server key, defaults included. */
export function serverSettings(context: vscode.ExtensionContext): Record<string, unknown> {
  const config = vscode.workspace.getConfiguration(SECTION);
  const settings: Record<string, unknown> = {};
  for (const key of serverKeys(context)) {
    const value = config.get(key);
    settings[key] = value === undefined ? null : value;
  }
  return settings;
}

/** The binary a platform-specific .vsix carries (`bin/amd-lsp`), if this one does. */
export function bundledServer(root: string): string | undefined {
  const bin = path.join(root, 'bin', process.platform === 'win32' ? 'amd-lsp.exe' : 'amd-lsp');
  if (!fs.existsSync(bin)) return undefined;
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    // A zip does not always keep the executable bit.
    fs.chmodSync(bin, 0o755);
  }
  return bin;
}

function serverCommand(): string {
  const configured = vscode.workspace.getConfiguration(SECTION).get<string>('serverPath');
  if (configured && configured.trim() !== '') return configured;
  return bundledServer(extensionPath) ?? 'amd-lsp';
}

async function start(context: vscode.ExtensionContext): Promise<void> {
  const command = serverCommand();
  const serverOptions: ServerOptions = {
    // TransportKind.stdio makes the client add `--stdio` itself.
    run: { command, args: [], transport: TransportKind.stdio },
    debug: { command, args: ['--log-level', 'debug'], transport: TransportKind.stdio },
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
    initializationOptions: serverSettings(context),
    outputChannel: output,
  };
  client = new LanguageClient('amdLsp', 'amd-lsp', serverOptions, clientOptions);
  // Inline completion is LSP 3.18, a proposed feature in vscode-languageclient 10.
  client.registerProposedFeatures();
  client.onDidChangeState((e) => {
    if (e.newState === State.Stopped) {
      lastState = 'stopped';
      showText('$(circle-slash) amd-lsp', 'amd-lsp is not running (click to restart)');
    }
  });
  lastState = 'starting';
  showText('$(loading~spin) amd-lsp', 'Starting amd-lsp');
  try {
    await client.start();
  } catch (e) {
    lastState = 'error';
    lastError = `amd-lsp did not start (${command}): ${e}`;
    showText('$(error) amd-lsp', lastError);
    void vscode.window.showErrorMessage(
      `amd-lsp: could not start "${command}". Set amdLsp.serverPath to the amd-lsp binary. (${e})`,
    );
    return;
  }
  // The server's "no model" message becomes the first-run prompt; others show as they are.
  client.onNotification(ShowMessageNotification.type, (m) => {
    if (m.message.startsWith('amd-lsp: no model found')) {
      void offerModel();
      return;
    }
    const show = m.type === MessageType.Error ? vscode.window.showErrorMessage
      : m.type === MessageType.Warning ? vscode.window.showWarningMessage
        : vscode.window.showInformationMessage;
    void show(m.message);
  });
  poll = setInterval(() => void refreshStatus(), STATUS_POLL_MS);
  void refreshStatus();
}

async function stop(): Promise<void> {
  if (poll) clearInterval(poll);
  poll = undefined;
  const c = client;
  client = undefined;
  if (c) await c.stop().catch(() => undefined);
}

function showText(text: string, tooltip: string): void {
  statusItem.text = text;
  statusItem.tooltip = tooltip;
  statusItem.show();
}

interface Status {
  state: string;
  error?: string | null;
  model?: { name?: string | null; path?: string; device?: string } | null;
  latencyMs?: { p50?: number | null; p95?: number | null };
  counters?: { requests?: number; suggestions?: number };
}

/** The status-bar item: model and latency, from the server's `amd/status`. */
export function describeStatus(s: Status): { text: string; tooltip: string } {
  if (s.state === 'loading') {
    return { text: '$(loading~spin) amd-lsp: loading', tooltip: 'amd-lsp is loading its model' };
  }
  if (s.state === 'unconfigured') {
    return {
      text: '$(cloud-download) amd-lsp: no model',
      tooltip: 'amd-lsp has no model: click to download one or choose a GGUF file',
    };
  }
  if (s.state !== 'ready') {
    return {
      text: '$(error) amd-lsp: error',
      tooltip: `${s.error ?? s.state}\n(click for what to do)`,
    };
  }
  const model = s.model?.name ?? s.model?.path?.split('/').pop() ?? 'model';
  const p50 = s.latencyMs?.p50;
  const latency = p50 === undefined || p50 === null ? '' : ` · ${Math.round(p50)} ms`;
  const p95 = s.latencyMs?.p95;
  return {
    text: `$(sparkle) ${model}${latency}`,
    tooltip:
      `amd-lsp: ${model} on ${s.model?.device ?? 'cpu'}\n` +
      `latency p50 ${p50 ?? '-'} ms, p95 ${p95 ?? '-'} ms\n` +
      `${s.counters?.suggestions ?? 0} suggestions for ${s.counters?.requests ?? 0} requests`,
  };
}

async function refreshStatus(): Promise<Status | undefined> {
  if (!client || !client.isRunning()) return undefined;
  try {
    const s = await client.sendRequest<Status>('amd/status');
    if (pulling) return s;
    lastState = s.state;
    lastError = s.error;
    const shown = describeStatus(s);
    showText(shown.text, shown.tooltip);
    return s;
  } catch {
    return undefined;
  }
}

/** What the first progress line of each downloaded file says, from `model pull`'s stderr. */
export function parseProgress(line: string): { file: string; percent: number } | undefined {
  const m = /downloading (\S+): (\d+)%/.exec(line);
  return m ? { file: m[1], percent: Number(m[2]) } : undefined;
}

/** `amd-lsp model pull` with its progress in a notification; the GGUF's path, or undefined. */
async function pullModel(): Promise<string | undefined> {
  const command = serverCommand();
  pulling = true;
  showText('$(cloud-download) amd-lsp: downloading', 'amd-lsp is downloading its model');
  try {
    return await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: 'amd-lsp: downloading the model', cancellable: true },
      (progress, token) => new Promise<string | undefined>((resolve, reject) => {
        const child = cp.spawn(command, ['model', 'pull'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        let shown = 0;
        let file = '';
        child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
        child.stderr.on('data', (d: Buffer) => {
          const text = d.toString();
          stderr += text;
          for (const line of text.split('\n')) {
            output.info(line);
            const p = parseProgress(line);
            if (!p) continue;
            if (p.file !== file) { file = p.file; shown = 0; }
            progress.report({
              message: p.percent === 100 ? `${p.file}: done; converting when all files are in` : `${p.file}: ${p.percent}%`,
              increment: p.percent - shown,
            });
            shown = p.percent;
          }
        });
        token.onCancellationRequested(() => child.kill());
        child.on('error', reject);
        child.on('close', (code) => {
          if (token.isCancellationRequested) return resolve(undefined);
          if (code === 0) return resolve(stdout.trim().split('\n').pop());
          reject(new Error(stderr.trim().split('\n').slice(-3).join('\n') || `exit ${code}`));
        });
      }),
    );
  } finally {
    pulling = false;
  }
}

/** Makes `model` the model (user settings); the server loads it on the change. */
async function useModel(model: string): Promise<void> {
  await vscode.workspace.getConfiguration(SECTION).update('model', model, vscode.ConfigurationTarget.Global);
  output.info(`amdLsp.model = ${model}`);
}

async function downloadModel(): Promise<void> {
  try {
    const model = await pullModel();
    if (model) await useModel(model);
  } catch (e) {
    const pick = await vscode.window.showErrorMessage(
      `amd-lsp: the download failed: ${e instanceof Error ? e.message : e}`, 'Choose GGUF…', 'Retry');
    if (pick === 'Retry') return downloadModel();
    if (pick === 'Choose GGUF…') return chooseModel();
  } finally {
    void refreshStatus();
  }
}

async function chooseModel(): Promise<void> {
  const picked = await vscode.window.showOpenDialog({
    canSelectMany: false,
    filters: { 'GGUF model': ['gguf'] },
    openLabel: 'Use this model',
  });
  if (picked?.[0]) await useModel(picked[0].fsPath);
}

/** The first-run prompt: no model yet. */
async function offerModel(force = false): Promise<void> {
  if ((offered && !force) || pulling) return;
  offered = true;
  const pick = await vscode.window.showInformationMessage(
    'amd-lsp needs a model to suggest code. Download the default one (AMD-Llama-135m-code, about 150 MB) ' +
      'or choose a GGUF file you have (any model llama.cpp runs).',
    'Download model', 'Choose GGUF…');
  if (pick === 'Download model') await downloadModel();
  else if (pick === 'Choose GGUF…') await chooseModel();
}

/** A click on the status bar: what the current state needs. */
async function statusClicked(): Promise<void> {
  if (lastState === 'unconfigured') return offerModel(true);
  if (lastState === 'stopped') return vscode.commands.executeCommand('amdLsp.restart');
  if (lastState === 'failed' || lastState === 'error') {
    const pick = await vscode.window.showErrorMessage(`amd-lsp: ${lastError ?? lastState}`,
      'Choose GGUF…', 'Download model', 'Show log');
    if (pick === 'Choose GGUF…') return chooseModel();
    if (pick === 'Download model') return downloadModel();
    if (pick === 'Show log') output.show(true);
    return;
  }
  await vscode.commands.executeCommand('amdLsp.showStatus');
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  extensionPath = context.extensionPath;
  output = vscode.window.createOutputChannel('amd-lsp', { log: true });
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusItem.name = 'amd-lsp';
  statusItem.command = 'amdLsp.statusClicked';
  context.subscriptions.push(output, statusItem);

  context.subscriptions.push(
    vscode.commands.registerCommand('amdLsp.showStatus', async () => {
      const s = await refreshStatus();
      output.info(JSON.stringify(s ?? { state: 'not running' }, null, 2));
      output.show(true);
      return s;
    }),
    vscode.commands.registerCommand('amdLsp.statusClicked', () => statusClicked()),
    vscode.commands.registerCommand('amdLsp.downloadModel', () => downloadModel()),
    vscode.commands.registerCommand('amdLsp.chooseModel', () => chooseModel()),
    vscode.commands.registerCommand('amdLsp.restart', async () => {
      await stop();
      await start(context);
    }),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (!e.affectsConfiguration(SECTION)) return;
      if (e.affectsConfiguration(`${SECTION}.serverPath`)) {
        await stop();
        return start(context);
      }
      // Only the server's keys: it refuses keys it does not know.
      await client?.sendNotification('workspace/didChangeConfiguration', {
        settings: serverSettings(context),
      });
    }),
  );
  await start(context);
}

export async function deactivate(): Promise<void> {
  await stop();
}
