-- Options of the amd-lsp Neovim plugin, their defaults, and how they become an LSP client
-- configuration. Everything under `settings` goes to the server as initializationOptions
-- (its keys are the server's: docs/configuration.md).
local M = {}

M.defaults = {
  -- The server command. `--model PATH` may be added here, or `settings.model` set.
  cmd = { 'amd-lsp', '--stdio' },
  filetypes = {
    'python', 'rust', 'c', 'cpp', 'go', 'java', 'javascript', 'typescript', 'lua', 'sh', 'zig',
  },
  root_markers = { '.git', '.hg', 'pyproject.toml', 'Cargo.toml', 'package.json', 'go.mod' },
  -- Server configuration (camelCase keys, as in docs/configuration.md).
  settings = {},
  -- 'auto': Neovim's own inline completion when it has one (0.12+), else this plugin's ghost text.
  -- 'plugin': always this plugin's ghost text. 'builtin': only Neovim's. 'off': no ghost text.
  ghost_text = 'auto',
  -- Insert-mode keys; false turns one off. A key falls through when no suggestion is shown.
  keys = {
    accept = '<Tab>',
    accept_line = '<C-l>',
    accept_word = '<M-Right>',
    dismiss = '<C-]>',
    next = '<M-]>',
    prev = '<M-[>',
  },
}

M.options = vim.deepcopy(M.defaults)

function M.set(opts)
  M.options = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  -- Lists replace, they do not merge by index.
  for _, k in ipairs({ 'cmd', 'filetypes', 'root_markers' }) do
    if opts and opts[k] then M.options[k] = opts[k] end
  end
  return M.options
end

-- The client capabilities: Neovim's own, plus inline completion (LSP 3.18), which Neovim
-- before 0.12 does not declare; without it the server offers only the completion popup.
function M.capabilities()
  local caps = vim.lsp.protocol.make_client_capabilities()
  caps.textDocument = caps.textDocument or {}
  caps.textDocument.inlineCompletion = caps.textDocument.inlineCompletion
    or { dynamicRegistration = false }
  return caps
end

-- Whether this Neovim has the built-in inline completion (0.12+).
function M.has_builtin()
  return vim.lsp.inline_completion ~= nil and vim.lsp.inline_completion.enable ~= nil
end

-- Which ghost text renders suggestions: 'builtin', 'plugin' or 'off'.
function M.ghost_mode()
  local want = M.options.ghost_text
  if want == 'auto' then return M.has_builtin() and 'builtin' or 'plugin' end
  if want == 'builtin' and not M.has_builtin() then return 'off' end
  return want
end

return M
