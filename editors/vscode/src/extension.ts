// amd-lsp for VS Code: starts `amd-lsp --stdio` and lets vscode-languageclient turn its LSP 3.18
// inline completions into VS Code's ghost text. Settings under `amdLsp.*` are the server's
// configuration keys (docs/configuration.md); `serverPath` and `trace.server` are the client's.
import * as vscode from 'vscode';
import {
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
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

function serverCommand(): string {
  const configured = vscode.workspace.getConfiguration(SECTION).get<string>('serverPath');
  return configured && configured.trim() !== '' ? configured : 'amd-lsp';
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
    if (e.newState === State.Stopped) showText('$(circle-slash) amd-lsp', 'amd-lsp is not running');
  });
  showText('$(loading~spin) amd-lsp', 'Starting amd-lsp');
  try {
    await client.start();
  } catch (e) {
    showText('$(error) amd-lsp', `amd-lsp did not start (${command}): ${e}`);
    void vscode.window.showErrorMessage(
      `amd-lsp: could not start "${command}". Set amdLsp.serverPath to the amd-lsp binary. (${e})`,
    );
    return;
  }
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
  if (s.state !== 'ready') {
    const icon = s.state === 'loading' ? '$(loading~spin)' : '$(warning)';
    return { text: `${icon} amd-lsp: ${s.state}`, tooltip: s.error ?? s.state };
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
    const shown = describeStatus(s);
    showText(shown.text, shown.tooltip);
    return s;
  } catch {
    return undefined;
  }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel('amd-lsp', { log: true });
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusItem.name = 'amd-lsp';
  statusItem.command = 'amdLsp.showStatus';
  context.subscriptions.push(output, statusItem);

  context.subscriptions.push(
    vscode.commands.registerCommand('amdLsp.showStatus', async () => {
      const s = await refreshStatus();
      output.info(JSON.stringify(s ?? { state: 'not running' }, null, 2));
      output.show(true);
      return s;
    }),
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
