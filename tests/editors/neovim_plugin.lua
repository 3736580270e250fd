-- Drives the Neovim plugin (editors/neovim) in a real, embedded Neovim with the real amd-lsp and
-- a tiny model, through keystrokes sent over RPC exactly as a UI sends them: type, see ghost
-- text (read back from the extmarks), type through it, accept it, move away, leave insert mode,
-- :checkhealth. Run: nvim --headless --clean -l tests/editors/neovim_plugin.lua NVIM BIN MODEL OUT
local nvim_bin, bin, model, out = arg[1], arg[2], arg[3], arg[4]
local plugin = vim.fn.fnamemodify('editors/neovim', ':p')
local passed, log = 0, {}

local function fail(msg)
  io.stderr:write('neovim_plugin: FAIL: ' .. msg .. '\n')
  io.stderr:write(table.concat(log, '\n') .. '\n')
  os.exit(1)
end

local ch = vim.fn.jobstart({ nvim_bin, '--embed', '--headless', '--clean', '--cmd', 'set rtp^=' .. plugin },
  { rpc = true })
if ch <= 0 then fail('could not start ' .. nvim_bin) end

local function lua(code, ...) return vim.rpcrequest(ch, 'nvim_exec_lua', code, { ... }) end
local function input(keys) vim.rpcrequest(ch, 'nvim_input', keys) end
local function wait(what, ms, cond)
  local v
  local ok = vim.wait(ms, function() v = cond(); return v ~= nil and v ~= false and v ~= vim.NIL end, 20)
  if not ok then fail('timed out waiting for ' .. what) end
  return v
end
local function check(name, cond, detail)
  if not cond then fail(name .. (detail and (': ' .. detail) or '')) end
  passed = passed + 1
  table.insert(log, 'ok ' .. name)
  if vim.env.VERBOSE then io.stderr:write('ok ' .. name .. '\n') end
end

-- The ghost text as the user sees it: the extmarks' virtual text and lines, joined.
local GHOST = [[
  local ns = require('amd_lsp.ghost').ns
  local marks = vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })
  if #marks == 0 then return vim.NIL end
  local d, parts = marks[1][4], {}
  table.insert(parts, d.virt_text and d.virt_text[1][1] or '')
  for _, l in ipairs(d.virt_lines or {}) do table.insert(parts, l[1][1]) end
  return { row = marks[1][2], col = marks[1][3], text = table.concat(parts, '\n'), n = #marks }
]]
local function ghost() local g = lua(GHOST); return g ~= vim.NIL and g or nil end
local function line(n) return lua('return vim.api.nvim_buf_get_lines(0, ...)[1]', n - 1, n, false) end
local function mode() return vim.rpcrequest(ch, 'nvim_get_mode').mode end
local function keys_for(text) return (text:gsub('<', '<lt>')) end

check('the plugin file loaded at startup', lua('return vim.fn.exists(":AmdLsp") == 2'))

-- A Python file; setup() starts the server for it.
local file = vim.fn.tempname() .. '.py'
vim.fn.writefile({ 'import os', '', 'def load(path):', '    return open(pa' }, file)
lua([[
  require('amd_lsp').setup({
    cmd = { ..., '--stdio', '--model', select(2, ...) },
    filetypes = { 'python' },
    settings = { debounceMs = 0, maxTokens = 12 },
  })
]], bin, model)
vim.rpcrequest(ch, 'nvim_command', 'edit ' .. file)
wait('the model to load', 30000, function()
  return lua("local s = require('amd_lsp').status(1000); return s and s.state == 'ready'")
end)
check('the server started for the python buffer and its model is ready', true)
check('ghost text is the plugin\'s on 0.11', lua("return require('amd_lsp.config').ghost_mode()") == 'plugin')

-- Type at the end of the last line, as a user does: A, then "th".
input('GA')
input('th')
wait('insert mode', 5000, function() return mode() == 'i' end)
check('typed text reached the buffer', wait('the typed text', 5000, function()
  return line(4) == '    return open(path'
end))
local g = wait('ghost text to appear', 30000, ghost)
table.insert(log, 'ghost: ' .. vim.inspect(g))
check('ghost text sits at the cursor', g.row == 3 and g.col == #'    return open(path', vim.inspect(g))
check('one extmark', g.n == 1)
-- Where the cursor is drawn: before the ghost text, right after the typed text.
local screen = lua('vim.cmd.redraw(); local p = vim.fn.screenpos(0, 4, #vim.fn.getline(4)); return { vim.fn.screencol(), p.col }')
check('the cursor is drawn before the ghost text', screen[1] == #'    return open(path' + 1, vim.inspect(screen))
check('ghost text is what the plugin holds', g.text == lua("return require('amd_lsp.ghost').text(0)"))
check('the buffer itself is unchanged by ghost text', line(4) == '    return open(path')

-- Type through: typing the suggestion's first character keeps the rest, with no new request.
local before = lua("return require('amd_lsp').status(1000).counters.requests")
check('the server counted the request that showed it', before >= 1)
local first = g.text:match('^[%z\1-\127\194-\244][\128-\191]*') or ''
if first ~= '\n' and first ~= '' and not first:match('%s') then
  input(keys_for(first))
  local g2 = wait('ghost text to follow typing', 5000, function()
    local x = ghost()
    return x and x.col == g.col + #first and x
  end)
  check('typing through keeps the rest of the suggestion', g2.text == g.text:sub(#first + 1), vim.inspect(g2))
  check('typing through sends no request', lua("return require('amd_lsp').status(1000).counters.requests") == before)
  g = g2
end

-- Accept with <Tab>: the buffer gets the suggestion, the cursor goes after it.
local head = line(4)
input('<Tab>')
local want = vim.split(head .. g.text, '\n', { plain = true })
wait('the suggestion to be inserted', 5000, function()
  return lua('return vim.api.nvim_buf_get_lines(0, 3, -1, false)')[1] == want[1]
end)
local got = lua('return vim.api.nvim_buf_get_lines(0, 3, -1, false)')
check('accepting inserts the suggestion', vim.deep_equal(got, want), vim.inspect({ got = got, want = want }))
local cur = vim.rpcrequest(ch, 'nvim_win_get_cursor', 0)
check('the cursor is after the accepted text', cur[1] == 3 + #want and cur[2] == #want[#want], vim.inspect(cur))
check('still in insert mode after accepting', mode() == 'i')

-- Leaving insert mode clears ghost text.
wait('settle', 2000, function() return true end)
input('<Esc>')
wait('normal mode', 5000, function() return mode() == 'n' end)
check('no ghost text in normal mode', wait('ghost text to clear', 5000, function() return ghost() == nil end))

-- A suggestion on a fresh line, then moving the cursor away clears it.
input('o')
input('x = ')
local g3 = wait('ghost text on a new line', 30000, ghost)
-- Accept one word with <M-Right>: the rest stays shown.
local word = g3.text:match('^%s*[%w_\128-\255]+') or g3.text:match('^%s*[^%w_%s\128-\255]+')
  or g3.text:match('^%s+') or g3.text
local r3 = vim.rpcrequest(ch, 'nvim_win_get_cursor', 0)[1]
local typed = line(r3)
input('<M-Right>')
vim.wait(5000, function() return line(r3) == typed .. word:match('^[^\n]*') end, 20)
check('accepting a word inserts just that word', line(r3) == typed .. word:match('^[^\n]*'),
  vim.inspect({ ghost = g3, word = word, line = line(r3) }))
if #word < #g3.text and not word:find('\n') then
  local g4 = wait('the rest of the suggestion', 5000, ghost)
  check('the rest of the suggestion stays after a word', g4.text == g3.text:sub(#word + 1), vim.inspect({ g3, g4 }))
end
-- <C-]> dismisses it; the buffer keeps what was typed.
local kept = line(r3)
input('<C-]>')
check('<C-]> dismisses the suggestion', wait('ghost text to go', 5000, function() return ghost() == nil end)
  and line(r3) == kept)
-- <M-]> asks for candidates (an invoked request) and shows the next one.
input('y')
local g5 = wait('ghost text after typing', 30000, ghost)
input('<M-]>')
local cands = wait('candidates', 30000, function()
  local n = lua("local s = require('amd_lsp.ghost'); return s._state(0)")
  return n ~= vim.NIL and n.invoked and n
end)
table.insert(log, 'candidates: ' .. vim.inspect(cands)); if vim.env.VERBOSE then io.stderr:write(vim.inspect(cands) .. '\n') end
check('cycling asked for several candidates', #cands.items >= 1, vim.inspect(cands))
if #cands.items > 1 then
  local now
  vim.wait(5000, function()
    now = lua("return require('amd_lsp.ghost')._state(0)")
    local x = ghost()
    return now ~= vim.NIL and x ~= nil and now.index == 2 and x.text == now.rest
  end, 20)
  check('cycling shows the second candidate', now ~= vim.NIL and now.index == 2 and ghost()
    and ghost().text == now.rest, vim.inspect({ g5, now, ghost() }))
end
-- <C-l> accepts up to the end of the suggestion's line.
local g6 = ghost()
if g6 then
  local before_line = line(r3)
  local want_line = g6.text:sub(1, 1) == '\n' and before_line or before_line .. g6.text:match('^[^\n]*')
  input('<C-l>')
  vim.wait(5000, function() return line(r3) == want_line end, 20)
  check('<C-l> accepts one line of the suggestion', line(r3) == want_line, vim.inspect({ g6, line(r3), want_line }))
end
input('<Up>')
check('moving the cursor clears ghost text', wait('ghost text to clear after a move', 5000, function()
  return ghost() == nil
end))
-- With nothing shown, <Tab> is an ordinary Tab.
local row = vim.rpcrequest(ch, 'nvim_win_get_cursor', 0)[1]
local was = line(row)
lua("require('amd_lsp.ghost').clear(0)")
input('<Tab>')
wait('a tab', 5000, function() return line(row) ~= was end)
check('<Tab> falls through when nothing is shown', line(row):find('\t', 1, true) or line(row):match('^%s+'), line(row))
input('<Esc>')

-- :checkhealth reads the binary, the model and amd/status.
vim.rpcrequest(ch, 'nvim_command', 'checkhealth amd_lsp')
local health = table.concat(lua('return vim.api.nvim_buf_get_lines(0, 0, -1, false)'), '\n')
table.insert(log, health)
check('checkhealth finds the binary', health:find('amd-lsp 0', 1, true) ~= nil)
check('checkhealth reports the model as ready', health:find('ready: ', 1, true) ~= nil)
check('checkhealth has no errors', not health:find('ERROR', 1, true), health)

-- Neovim 0.11's own configuration path (lsp/amd_lsp.lua, as nvim-lspconfig lays it out):
-- vim.lsp.config + vim.lsp.enable, no setup(); ghost text appears the same way.
vim.fn.jobstop(ch)
ch = vim.fn.jobstart({ nvim_bin, '--embed', '--headless', '--clean', '--cmd', 'set rtp^=' .. plugin }, { rpc = true })
lua([[
  vim.lsp.config('amd_lsp', {
    cmd = { ..., '--stdio' },
    init_options = { model = select(2, ...), debounceMs = 0, maxTokens = 8 },
  })
  vim.lsp.enable('amd_lsp')
]], bin, model)
local file2 = vim.fn.tempname() .. '.py'
vim.fn.writefile({ 'def add(a, b):', '    return a' }, file2)
vim.rpcrequest(ch, 'nvim_command', 'edit ' .. file2)
wait('the model (vim.lsp.enable)', 30000, function()
  return lua("local s = require('amd_lsp').status(1000); return s and s.state == 'ready'")
end)
input('GA')
input(' +')
check('vim.lsp.enable: ghost text appears', wait('ghost text (vim.lsp.enable)', 30000, ghost) ~= nil)
check('vim.lsp.enable: one amd_lsp client', lua("return #require('amd_lsp').clients()") == 1)

-- First run with no model: :checkhealth says to run :AmdLsp pull, which pulls the default model
-- (offline here, from a Hugging Face cache holding the tiny checkpoint: the download itself is
-- tested against a local hub in server/tests/pull.rs), makes it the model and restarts the server.
vim.fn.jobstop(ch)
local home = vim.fn.tempname()
local snapshot = home .. '/hf/hub/models--amd--AMD-Llama-135m-code/snapshots/rev1'
vim.fn.mkdir(snapshot, 'p')
for _, name in ipairs({ 'config.json', 'model.safetensors', 'tokenizer.model', 'tokenizer_config.json' }) do
  local from = assert(io.open('tests/fixtures/tiny-llama-hf/' .. name, 'rb'))
  local to = assert(io.open(snapshot .. '/' .. name, 'wb'))
  to:write(from:read('*a'))
  from:close(); to:close()
end
vim.fn.mkdir(home .. '/hf/hub/models--amd--AMD-Llama-135m-code/refs', 'p')
vim.fn.writefile({ 'rev1' }, home .. '/hf/hub/models--amd--AMD-Llama-135m-code/refs/main')
ch = vim.fn.jobstart({ nvim_bin, '--embed', '--headless', '--clean', '--cmd', 'set rtp^=' .. plugin }, {
  rpc = true,
  env = { HF_HOME = home .. '/hf', HF_HUB_OFFLINE = '1', AMD_LSP_CACHE = home .. '/cache', AMD_LSP_MODEL = '' },
})
lua([[
  require('amd_lsp').setup({ cmd = { ..., '--stdio' }, filetypes = { 'python' },
    settings = { debounceMs = 0, maxTokens = 8 } })
]], bin)
local file3 = vim.fn.tempname() .. '.py'
vim.fn.writefile({ 'def add(a, b):', '    return a' }, file3)
vim.rpcrequest(ch, 'nvim_command', 'edit ' .. file3)
wait('the server without a model', 30000, function()
  return lua("local s = require('amd_lsp').status(1000); return s and s.state ~= 'loading' and s.state")
end)
vim.rpcrequest(ch, 'nvim_command', 'checkhealth amd_lsp')
local first_health = table.concat(lua('return vim.api.nvim_buf_get_lines(0, 0, -1, false)'), '\n')
table.insert(log, first_health)
check('checkhealth with no model says :AmdLsp pull', first_health:find(':AmdLsp pull', 1, true) ~= nil, first_health)
vim.rpcrequest(ch, 'nvim_command', 'bwipeout')
vim.rpcrequest(ch, 'nvim_command', 'AmdLsp pull')
local pulled = wait(':AmdLsp pull to set the model', 60000, function()
  return lua("return require('amd_lsp.config').options.settings.model")
end)
check(':AmdLsp pull puts the model in our cache', pulled == home .. '/cache/models/amd--AMD-Llama-135m-code/q8_0.gguf', pulled)
local ready = wait('the restarted server with the pulled model', 60000, function()
  return lua("local s = require('amd_lsp').status(1000); return s and s.state == 'ready' and s.model.path")
end)
check('the server restarted with the pulled model', ready == pulled, ready)
vim.fn.jobstop(ch)

-- The help file has its tags (:helptags on a copy, so the repository stays clean).
local docs = vim.fn.tempname()
vim.fn.mkdir(docs .. '/doc', 'p')
vim.fn.writefile(vim.fn.readfile(plugin .. '/doc/amd-lsp.txt'), docs .. '/doc/amd-lsp.txt')
vim.cmd('helptags ' .. docs .. '/doc')
local tags = table.concat(vim.fn.readfile(docs .. '/doc/tags'), '\n')
for _, tag in ipairs({ 'amd-lsp-setup', 'amd-lsp-keys', 'amd-lsp-health' }) do
  check(':help ' .. tag .. ' exists', tags:find(tag .. '\t', 1, true) ~= nil)
end

local f = assert(io.open(out, 'w'))
f:write(vim.json.encode({ accepted = got, health = health }))
f:close()
vim.fn.jobstop(ch)
io.stdout:write(('neovim_plugin: %d passed, 0 failed\n'):format(passed))
os.exit(0)
