-- :checkhealth amd_lsp — the binary, the model, and the running server's own report.
local M = {}

local h = vim.health
local start = h.start or h.report_start
local ok = h.ok or h.report_ok
local warn = h.warn or h.report_warn
local err = h.error or h.report_error
local info = h.info or h.report_info

function M.check()
  local config = require('amd_lsp.config')
  local amd = require('amd_lsp')
  local o = config.options

  start('amd-lsp: Neovim')
  local v = vim.version()
  local mode = config.ghost_mode()
  local version = string.format('%d.%d.%d', v.major, v.minor, v.patch)
  if vim.fn.has('nvim-0.10') == 0 then
    err('Neovim ' .. version .. ': amd-lsp needs 0.10 or newer (inline virtual text)')
  else
    ok('Neovim ' .. version .. '; ghost text: ' .. mode
      .. (mode == 'builtin' and ' (vim.lsp.inline_completion)' or mode == 'plugin' and ' (extmarks)' or ''))
  end

  start('amd-lsp: binary')
  local bin = o.cmd[1]
  local path = vim.fn.exepath(bin)
  if path == '' then
    err(bin .. ' not found', {
      'Build it from the repository: scripts/serve.sh --version (installs cmake and libclang, builds target/release/amd-lsp)',
      'Install it on PATH: cargo install --locked --path server',
      'Or unpack a release archive (amd-lsp-VERSION-TARGET.tar.gz) and set cmd = { "/path/to/bin/amd-lsp", "--stdio" } in setup()',
    })
  else
    local out = vim.fn.system({ path, '--version' })
    if vim.v.shell_error == 0 then
      ok(path .. ': ' .. vim.trim(out))
    else
      err(path .. ' --version failed: ' .. vim.trim(out))
    end
  end

  start('amd-lsp: model')
  local model = o.settings.model
  for i, a in ipairs(o.cmd) do
    if a == '--model' then model = model or o.cmd[i + 1] end
  end
  model = model or vim.env.AMD_LSP_MODEL
  if not model then
    warn('no model configured: the server uses the default model if it was pulled (amd-lsp model list)', {
      ':AmdLsp pull   (the default model, from the Hugging Face hub)',
      ':AmdLsp pull Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF qwen2.5-coder-0.5b-instruct-q4_k_m.gguf   (a ready GGUF)',
      "or setup({ settings = { model = '/path/to/model.gguf' } }) for a GGUF you have",
    })
  elseif vim.fn.filereadable(vim.fn.expand(model)) == 1 then
    ok(model .. string.format(' (%.1f MiB)', vim.fn.getfsize(vim.fn.expand(model)) / 1048576))
  else
    err(model .. ' is not a readable file', { 'Check the path, or :AmdLsp pull to download a model' })
  end

  start('amd-lsp: server')
  if #amd.clients() == 0 then
    info('not running: open a file of a configured filetype (' .. table.concat(o.filetypes, ', ') .. ')')
    return
  end
  local s, e = amd.status(2000)
  if not s then return err('amd/status failed: ' .. tostring(e)) end
  if s.state == 'ready' then
    local m = s.model or {}
    ok(string.format('ready: %s (%s, %d tokens of context) on %s; backends: %s', m.name or m.path or '?',
      m.architecture or '?', m.nCtx or 0, m.device or 'cpu', table.concat(s.backends or {}, ', ')))
  elseif s.state == 'loading' then
    warn('loading the model')
  else
    err(s.state .. ': ' .. tostring(s.error), {
      'The message says what is wrong with the model file; :AmdLsp pull gets a known-good one',
    })
  end
  local c = s.counters or {}
  info(string.format('requests %d, suggestions %d, superseded %d, cache hits %d, errors %d',
    c.requests or 0, c.suggestions or 0, c.superseded or 0, c.cacheHits or 0, c.errors or 0))
  if s.latencyMs and s.latencyMs.p50 then
    info(string.format('latency p50 %.0f ms, p95 %.0f ms', s.latencyMs.p50, s.latencyMs.p95 or 0))
  end
end

return M
