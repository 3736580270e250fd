// VS Code for real: code-server (VS Code 1.100 in the browser) with our platform .vsix installed
// and no model, driven in headless Chromium by playwright-core. Takes the first-run offer
// ("Download model"), then types into a Python file until the extension's inline suggestion
// shows as ghost text, takes a screenshot, accepts it with Tab and checks the text.
// Usage: node e2e.mjs URL FILE_NAME OUT_DIR   (run-code-server.sh starts code-server first)
import { chromium } from 'playwright-core';
import { writeFileSync } from 'node:fs';

const [url, fileName, outDir] = process.argv.slice(2);
const step = (s) => process.stderr.write(`e2e: ${s}\n`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let page;
try {
  page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  step('waiting for the workbench');
  await page.waitForSelector('.monaco-workbench', { timeout: 90_000 });
  // Open the file through Quick Open, as a user would.
  await page.waitForTimeout(2000);
  await page.keyboard.press('Control+P');
  await page.waitForSelector('.quick-input-widget input', { timeout: 20_000 });
  await page.keyboard.type(fileName);
  await page.waitForTimeout(1000);
  await page.keyboard.press('Enter');
  const editor = page.locator('.editor-instance .monaco-editor').first();
  await editor.waitFor({ timeout: 30_000 });
  await editor.locator('.view-lines').click();
  // The first run: no model, so the extension offers to download one; take it, as a user would.
  step('waiting for the first-run notification');
  const download = page.locator('.notifications-toasts .monaco-button', { hasText: 'Download model' }).first();
  await download.waitFor({ state: 'visible', timeout: 60_000 });
  await page.waitForFunction(() => /no model/.test(document.querySelector('.statusbar')?.textContent ?? ''),
    null, { timeout: 10_000 }).catch(() => {});
  const noModelStatus = (await page.locator('.statusbar-item').allTextContents()).join(' | ');
  await page.screenshot({ path: `${outDir}/vscode-first-run.png` });
  await download.click();
  step('downloading (progress in a notification)');
  await editor.locator('.view-lines').click();
  step('waiting for amd-lsp to load its model (status bar)');
  const status = page.locator('#amdLsp\\.amd-lsp, [id="amd-lsp.amd-lsp"]').first();
  await page.waitForFunction(() => [...document.querySelectorAll('.statusbar-item')]
    .some((e) => /sparkle|tiny|amd-lsp/.test(e.getAttribute('aria-label') ?? '') && !/loading|Starting/.test(e.textContent ?? '')),
  null, { timeout: 60_000 }).catch(() => step('status bar item not seen (continuing)'));
  // Type at the end of the file.
  await page.keyboard.press('Control+End');
  await page.keyboard.type('    return open(pa', { delay: 60 });
  step('typed; waiting for ghost text');
  const ghost = page.locator('.ghost-text-decoration, .ghost-text').first();
  await ghost.waitFor({ state: 'visible', timeout: 60_000 });
  const ghostText = (await page.locator('.ghost-text-decoration, .ghost-text').allTextContents()).join('');
  step(`ghost text: ${JSON.stringify(ghostText)}`);
  await page.screenshot({ path: `${outDir}/vscode-ghost-text.png` });
  // Accept with Tab.
  await page.keyboard.press('Tab');
  await page.waitForTimeout(500);
  const lines = (await editor.locator('.view-line').allTextContents()).join('\n');
  // The status-bar item shows the model and the median latency once it polled after a suggestion.
  await page.waitForFunction(() => /\u00b7 \d+ ms/.test(document.querySelector('#status\\.extensionMessage, .statusbar')?.textContent ?? ''),
    null, { timeout: 10_000 }).catch(() => {});
  const statusText = (await page.locator('.statusbar-item').allTextContents()).join(' | ');
  await page.screenshot({ path: `${outDir}/vscode-accepted.png` });
  const norm = (s) => s.replace(/\u00a0/g, ' ');
  const last = norm(lines).split('\n').filter((l) => l.includes('return open(')).pop() ?? '';
  const firstGhostLine = norm(ghostText).split('\n')[0];
  const ok = ghostText.length > 0 && norm(last).startsWith('    return open(pa') &&
    norm(last).length > '    return open(pa'.length && norm(last).includes(firstGhostLine.trim().slice(0, 8)) &&
    /\u00b7 \d+ ms/.test(statusText) && /no model/.test(noModelStatus);
  writeFileSync(`${outDir}/vscode-e2e.json`, JSON.stringify({ noModelStatus, ghostText, acceptedLine: last, statusText, ok }, null, 2));
  if (!ok) {
    step(`FAIL: accepted line ${JSON.stringify(last)} does not hold the ghost text`);
    process.exitCode = 1;
  } else {
    step(`accepted: ${JSON.stringify(last)}`);
    console.log('vscode-e2e: ghost text shown and accepted in code-server');
  }
} catch (e) {
  step(`FAIL: ${e}`);
  if (page) await page.screenshot({ path: `${outDir}/vscode-failure.png` }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
