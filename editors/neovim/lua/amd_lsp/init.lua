-- amd-lsp for Neovim: starts `amd-lsp --stdio` for the configured filetypes and shows its
-- suggestions as ghost text (Neovim's own inline completion on 0.12+, this plugin's on 0.10/0.11).
--
--   require('amd_lsp').setup({ settings = { model = '~/models/amd-llama-135m-code.q8_0.gguf' } })
--
-- See :help amd-lsp.
local config = require('amd_lsp.config')

local M = {}

M.name = 'amd_lsp'

-- The client configuration (for vim.lsp.start, or vim.lsp.config on 0.11+).
function M.client_config(buf)
  local o = config.options
  local root
  if vim.fs.root then
    root = vim.fs.root(buf or 0, o.root_markers)
  else
    local found = vim.fs.find(o.root_markers, { upward = true, path = vim.fs.dirname(vim.api.nvim_buf_get_name(buf or 0)) })[1]
    root = found and vim.fs.dirname(found)
  end
  return {
    name = M.name,
    cmd = o.cmd,
    root_dir = root or vim.fn.getcwd(),
    init_options = o.settings,
    settings = { amdLsp = o.settings },
    capabilities = config.capabilities(),
    on_attach = M.on_attach,
  }
end

-- Called for each buffer the client attaches to: turns ghost text on there.
function M.on_attach(client, buf)
  local mode = config.ghost_mode()
  if mode == 'plugin' then
    require('amd_lsp.ghost').attach(client, buf, config.options.keys)
  elseif mode == 'builtin' then
    M.attach_builtin(client, buf)
  end
end

-- Neovim 0.12+: its own inline completion renders; our keys drive it.
function M.attach_builtin(client, buf)
  local ic = vim.lsp.inline_completion
  ic.enable(true, { bufnr = buf, client_id = client.id })
  -- get() returns true when it accepted something (0.12); select() was jump() before 0.12.
  local select = ic.select or ic.jump
  local actions = {
    accept = function() return ic.get({ bufnr = buf }) == true end,
    next = function() select({ bufnr = buf, count = 1 }); return true end,
    prev = function() select({ bufnr = buf, count = -1 }); return true end,
  }
  local keys = {}
  for name, lhs in pairs(config.options.keys or {}) do
    if actions[name] then keys[name] = lhs end
  end
  require('amd_lsp.ghost').map_keys(buf, keys, function(name) return actions[name]() end)
end

-- Starts (or reuses) the client for `buf`.
function M.start(buf)
  buf = (buf == nil or buf == 0) and vim.api.nvim_get_current_buf() or buf
  if vim.bo[buf].buftype ~= '' then return nil end
  return vim.lsp.start(M.client_config(buf), { bufnr = buf })
end

--- Configures the plugin and starts the server for the configured filetypes.
function M.setup(opts)
  config.set(opts)
  local group = vim.api.nvim_create_augroup('amd_lsp', { clear = true })
  vim.api.nvim_create_autocmd('FileType', {
    group = group,
    pattern = config.options.filetypes,
    callback = function(ev) M.start(ev.buf) end,
  })
  -- Buffers already open with a matching filetype.
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.tbl_contains(config.options.filetypes, vim.bo[buf].filetype) then
      M.start(buf)
    end
  end
end

--- The running amd-lsp clients.
function M.clients()
  if vim.lsp.get_clients then return vim.lsp.get_clients({ name = M.name }) end
  return vim.lsp.get_active_clients({ name = M.name })
end

--- Stops the running clients and starts one again for the current buffer (with the current
--- options: a changed `settings.model` takes effect).
function M.restart()
  for _, c in ipairs(M.clients()) do vim.lsp.stop_client(c.id) end
  vim.defer_fn(function() M.start(0) end, 200)
end

--- Runs `amd-lsp model pull ARGS…` in the background (`{}`: the default model, converted;
--- `{ 'owner/Repo-GGUF', '--file', 'name.gguf' }`: a ready GGUF). On success the pulled file
--- becomes `settings.model` for this session and the server restarts with it. `done(path)` or
--- `done(nil, err)` is called at the end.
function M.pull(args, done)
  local cmd = { config.options.cmd[1], 'model', 'pull' }
  vim.list_extend(cmd, args or {})
  vim.notify('amd-lsp: ' .. table.concat(cmd, ' ') .. ' (downloading; this can take a minute)')
  local function finish(res)
    if res.code ~= 0 then
      local why = vim.trim(res.stderr or '')
      vim.notify('amd-lsp: pull failed: ' .. why, vim.log.levels.ERROR)
      if done then done(nil, why) end
      return
    end
    local path = vim.trim(res.stdout or ''):match('[^\n]+$')
    config.options.settings.model = path
    vim.notify('amd-lsp: using ' .. path .. ' (for this session; to keep it, put it in '
      .. 'setup({ settings = { model = ... } }))')
    M.restart()
    if done then done(path) end
  end
  local ok, err = pcall(vim.system, cmd, { text = true }, vim.schedule_wrap(finish))
  if not ok then finish({ code = -1, stderr = tostring(err) }) end
end

--- The server's `amd/status` (model, counters, latency) from the first client, or nil, err.
function M.status(timeout_ms)
  local client = M.clients()[1]
  if not client then return nil, 'amd-lsp is not running' end
  local res, err
  if vim.fn.has('nvim-0.11') == 1 then
    res, err = client:request_sync('amd/status', nil, timeout_ms or 2000, 0)
  else
    res, err = client.request_sync('amd/status', nil, timeout_ms or 2000, 0)
  end
  if not res then return nil, err or 'no answer' end
  if res.err then return nil, res.err.message end
  return res.result
end

return M
