-- amd-lsp: commands. The server starts after require('amd_lsp').setup({...}).
if vim.g.loaded_amd_lsp then return end
vim.g.loaded_amd_lsp = true

vim.api.nvim_create_user_command('AmdLsp', function(cmd)
  local amd = require('amd_lsp')
  local sub = cmd.fargs[1] or 'status'
  if sub == 'status' then
    local s, err = amd.status(2000)
    if not s then return vim.notify('amd-lsp: ' .. tostring(err), vim.log.levels.WARN) end
    vim.notify(vim.inspect(s))
  elseif sub == 'restart' then
    amd.restart()
  elseif sub == 'pull' then
    -- :AmdLsp pull                         the default model, converted
    -- :AmdLsp pull OWNER/REPO FILE.gguf    a ready GGUF of a repository
    local rest = vim.list_slice(cmd.fargs, 2)
    if rest[2] then rest = { rest[1], '--file', rest[2] } end
    amd.pull(rest)
  elseif sub == 'stop' then
    for _, c in ipairs(amd.clients()) do vim.lsp.stop_client(c.id) end
  else
    vim.notify('amd-lsp: unknown subcommand ' .. sub, vim.log.levels.ERROR)
  end
end, {
  nargs = '*',
  complete = function() return { 'status', 'restart', 'stop', 'pull' } end,
  desc = 'amd-lsp: status | restart | stop | pull [REPO FILE.gguf]',
})
