-- The client configuration for Neovim 0.11's vim.lsp.config / vim.lsp.enable (the
-- nvim-lspconfig layout): with this plugin on 'runtimepath',
--   vim.lsp.config('amd_lsp', { init_options = { model = '/path/to/model.gguf' } })
--   vim.lsp.enable('amd_lsp')
local config = require('amd_lsp.config')
return {
  cmd = config.options.cmd,
  filetypes = config.options.filetypes,
  root_markers = config.options.root_markers,
  capabilities = config.capabilities(),
  init_options = config.options.settings,
  on_attach = function(client, buf) require('amd_lsp').on_attach(client, buf) end,
}
