-- Neovim drives `amd-lsp --stdio` through its own LSP client: open a buffer, type, and get a
-- completion. Run: nvim --headless --clean -l tests/editors/neovim_lsp.lua BIN MODEL OUT
local bin, model, out = arg[1], arg[2], arg[3]
local function fail(msg)
  io.stderr:write('neovim_lsp: FAIL: ' .. msg .. '\n')
  os.exit(1)
end

vim.cmd('enew')
local buf = vim.api.nvim_get_current_buf()
vim.bo[buf].filetype = 'python'
vim.api.nvim_buf_set_name(buf, vim.fn.tempname() .. '.py')
vim.api.nvim_buf_set_lines(buf, 0, -1, false, { 'import os', '', 'def load(path):', '    return open(pa' })

local client_id = vim.lsp.start({
  name = 'amd-lsp',
  cmd = { bin, '--stdio', '--model', model },
  root_dir = vim.fn.getcwd(),
  init_options = { debounceMs = 0 },
})
if not client_id then fail('vim.lsp.start returned nil') end
local client = vim.lsp.get_client_by_id(client_id)

-- Wait for the model (the server answers amd/status at once; poll with a deadline).
local ready = vim.wait(20000, function()
  local res = client:request_sync('amd/status', nil, 2000, buf)
  return res and res.result and res.result.state == 'ready'
end, 50)
if not ready then fail('model never became ready') end

-- Type: append "th" to the last line, as insert mode would (didChange goes to the server).
vim.api.nvim_buf_set_text(buf, 3, 18, 3, 18, { 'th' })
local line = vim.api.nvim_buf_get_lines(buf, 3, 4, false)[1]
if line ~= '    return open(path' then fail('unexpected buffer line: ' .. line) end

local params = {
  textDocument = { uri = vim.uri_from_bufnr(buf) },
  position = { line = 3, character = #line },
}
local results = vim.lsp.buf_request_sync(buf, 'textDocument/completion', params, 20000)
if not results or not results[client_id] then fail('no completion response') end
local result = results[client_id].result
if not result or not result.items or #result.items ~= 1 then
  fail('expected one completion item, got ' .. vim.inspect(result))
end
local edit = result.items[1].textEdit
if edit.range.start.character ~= 16 or edit.range['end'].character ~= 20 then
  fail('the edit should replace the word "path": ' .. vim.inspect(edit.range))
end
if edit.newText:sub(1, 4) ~= 'path' or #edit.newText <= 4 then
  fail('the suggestion should extend "path": ' .. edit.newText)
end

-- Accept it: apply the edit to the buffer the way the completion popup would.
vim.lsp.util.apply_text_edits({ edit }, buf, client.offset_encoding)
local accepted = vim.api.nvim_buf_get_lines(buf, 3, 4, false)[1]
if accepted ~= '    return open(' .. edit.newText:gsub('\n.*', '') then
  fail('accepting did not insert the suggestion: ' .. accepted)
end

local f = assert(io.open(out, 'w'))
f:write(vim.json.encode({ line = accepted, item = result.items[1] }))
f:close()
client:stop()
vim.wait(5000, function() return client:is_stopped() end, 20)
io.stdout:write('neovim_lsp: 1 passed, 0 failed\n')
os.exit(0)
