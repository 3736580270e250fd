-- Ghost text for Neovim 0.10/0.11, which have no inline completion of their own: asks the
-- server for `textDocument/inlineCompletion` as the user types, shows the suggestion after the
-- cursor with extmarks (inline virtual text, then virtual lines), keeps it while the typed
-- text agrees with it, and clears it when the cursor leaves it or insert mode ends.
local M = {}

local METHOD = 'textDocument/inlineCompletion'
local TRIGGER_INVOKED, TRIGGER_AUTOMATIC = 1, 2

M.ns = vim.api.nvim_create_namespace('amd_lsp_ghost')

-- Per buffer: { client_id, seq, pending = {id, client}, shown = suggestion or nil }.
-- A suggestion: { row, base (line text up to the cursor when asked), items = { full }, index,
-- invoked }, where each `full` is what the line up to the cursor becomes once accepted.
local buffers = {}

local function call(client, method, ...)
  -- 0.11 has methods (client:request); 0.10 has fields taking no self.
  if vim.fn.has('nvim-0.11') == 1 then return client[method](client, ...) end
  return client[method](...)
end

local function cursor(buf)
  local win = vim.api.nvim_get_current_win()
  if vim.api.nvim_win_get_buf(win) ~= buf then return nil end
  local pos = vim.api.nvim_win_get_cursor(win)
  local row, col = pos[1] - 1, pos[2]
  local line = vim.api.nvim_buf_get_lines(buf, row, row + 1, false)[1] or ''
  return row, col, line
end

-- Byte column of an LSP `character` on `line` in the client's position encoding.
local function byte_col(line, character, encoding)
  if encoding == 'utf-8' then return math.min(character, #line) end
  local ok, col = pcall(vim.str_byteindex, line, encoding, character, false)
  if not ok then ok, col = pcall(vim.str_byteindex, line, character, encoding == 'utf-16') end
  return ok and col or math.min(character, #line)
end

local function items_of(result)
  if result == nil then return {} end
  return result.items or result
end

local function text_of(item)
  local t = item.insertText
  if type(t) == 'table' then t = t.value end
  return t
end

-- The text still to come of the shown suggestion at this cursor, or nil if the cursor has left it.
local function remaining(state, row, col, line)
  local s = state.shown
  if not s or row ~= s.row then return nil end
  local typed = line:sub(1, col)
  local full = s.items[s.index]
  if #typed < #s.base or full:sub(1, #typed) ~= typed then return nil end
  return full:sub(#typed + 1)
end

local function clear_marks(buf)
  if vim.api.nvim_buf_is_valid(buf) then vim.api.nvim_buf_clear_namespace(buf, M.ns, 0, -1) end
end

local function render(buf, row, col, text)
  clear_marks(buf)
  if text == '' then return end
  local tab = string.rep(' ', vim.bo[buf].tabstop)
  local lines = vim.split(text:gsub('\t', tab), '\n', { plain = true })
  -- right_gravity stays true: with false, Neovim draws the cursor after the inline text.
  local opts = { hl_mode = 'combine', priority = 200 }
  if lines[1] ~= '' then
    opts.virt_text = { { lines[1], 'AmdLspGhost' } }
    opts.virt_text_pos = 'inline'
  end
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      table.insert(opts.virt_lines, { { lines[i], 'AmdLspGhost' } })
    end
  end
  vim.api.nvim_buf_set_extmark(buf, M.ns, row, col, opts)
end

local function cancel_pending(state)
  local p = state.pending
  state.pending = nil
  if p and p.client and p.id then pcall(call, p.client, 'cancel_request', p.id) end
end

--- Clears the suggestion of `buf` (the current buffer by default) and drops any request in flight.
function M.clear(buf)
  buf = (buf == nil or buf == 0) and vim.api.nvim_get_current_buf() or buf
  local state = buffers[buf]
  if not state then return end
  state.shown = nil
  state.seq = state.seq + 1
  cancel_pending(state)
  clear_marks(buf)
end

--- Asks the server for a suggestion at the cursor. `invoked`: the user asked (several candidates).
function M.request(buf, invoked, on_shown)
  buf = (buf == nil or buf == 0) and vim.api.nvim_get_current_buf() or buf
  local state = buffers[buf]
  if not state then return end
  local client = vim.lsp.get_client_by_id(state.client_id)
  local row, col, line = cursor(buf)
  if not client or not row then return end
  cancel_pending(state)
  state.seq = state.seq + 1
  local seq, base = state.seq, line:sub(1, col)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = invoked and TRIGGER_INVOKED or TRIGGER_AUTOMATIC }
  local ok, id = call(client, 'request', METHOD, params, function(err, result)
    if state.seq ~= seq then return end -- a newer request or a clear came since
    state.pending = nil
    if err then return end
    local r, c, now = cursor(buf)
    if r ~= row or now:sub(1, c) ~= base or vim.fn.mode() ~= 'i' then return end
    local fulls = {}
    for _, item in ipairs(items_of(result)) do
      local text = text_of(item)
      local start = item.range and byte_col(line, item.range.start.character, client.offset_encoding) or col
      if text and (not item.range or item.range.start.line == row) then
        local full = line:sub(1, start) .. text
        if #full > #base and full:sub(1, #base) == base then table.insert(fulls, full) end
      end
    end
    if #fulls == 0 then return M.clear(buf) end
    state.shown = { row = row, base = base, items = fulls, index = 1, invoked = invoked }
    render(buf, row, c, remaining(state, r, c, now))
    if on_shown then on_shown(state.shown) end
  end, buf)
  if ok then state.pending = { id = id, client = client } end
end

-- After a change or a move in insert mode: keep the suggestion if the cursor is still inside
-- it (the user typed what it says), else clear it; after a change, ask for a new one.
local function update(buf, changed)
  local state = buffers[buf]
  if not state then return end
  local row, col, line = cursor(buf)
  if not row then return end
  local rest = remaining(state, row, col, line)
  if rest and rest ~= '' then
    return render(buf, row, col, rest) -- typed through: no request
  end
  if changed then
    M.clear(buf)
    M.request(buf, false)
  elseif state.shown then
    M.clear(buf) -- moved away from it
  end
end

--- The suggestion text still to come at the cursor, or nil when none is shown.
function M.text(buf)
  buf = (buf == nil or buf == 0) and vim.api.nvim_get_current_buf() or buf
  local state = buffers[buf]
  if not state then return nil end
  local row, col, line = cursor(buf)
  if not row then return nil end
  local rest = remaining(state, row, col, line)
  if rest == '' then return nil end
  return rest
end

function M.visible(buf) return M.text(buf) ~= nil end

local function take_line(rest)
  if rest:sub(1, 1) == '\n' then return '\n' .. (rest:sub(2):match('^[^\n]*')) end
  return rest:match('^[^\n]*')
end

local function take_word(rest)
  -- Bytes >= 128 are parts of non-ASCII letters: words, not punctuation.
  return rest:match('^%s*[%w_\128-\255]+') or rest:match('^%s*[^%w_%s\128-\255]+')
    or rest:match('^%s+') or rest
end

-- Inserts `text` at the cursor and puts the cursor after it.
local function insert(text)
  local buf = vim.api.nvim_get_current_buf()
  local row, col = cursor(buf)
  local lines = vim.split(text, '\n', { plain = true })
  vim.api.nvim_buf_set_text(buf, row, col, row, col, lines)
  local last = #lines == 1 and col + #lines[1] or #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { row + #lines, last })
end

local function accept_with(take)
  local rest = M.text(0)
  if not rest then return false end
  insert(take(rest))
  -- Show what is left at once; TextChangedI keeps it, or asks for the next suggestion.
  local buf = vim.api.nvim_get_current_buf()
  local row, col, line = cursor(buf)
  render(buf, row, col, remaining(buffers[buf], row, col, line) or '')
  return true
end

--- Accepts the whole suggestion. Returns false when none is shown.
function M.accept() return accept_with(function(rest) return rest end) end
--- Accepts up to the end of the suggestion's current line (or its next line, at a line end).
function M.accept_line() return accept_with(take_line) end
--- Accepts the next word of the suggestion.
function M.accept_word() return accept_with(take_word) end

--- Hides the suggestion until the next change.
function M.dismiss()
  if not M.visible(0) then return false end
  M.clear(0)
  return true
end

--- Shows the next (`delta` = 1) or previous (-1) candidate; asks for candidates if only one is known.
function M.cycle(delta)
  local buf = vim.api.nvim_get_current_buf()
  local state = buffers[buf]
  if not state or not M.visible(buf) then return false end
  local s = state.shown
  if #s.items > 1 then
    s.index = (s.index - 1 + delta) % #s.items + 1
    local row, col, line = cursor(buf)
    render(buf, row, col, remaining(state, row, col, line) or '')
  elseif not s.invoked then
    M.request(buf, true, function(shown)
      if #shown.items > 1 then M.cycle(delta) end
    end)
  end
  return true
end

-- For tests and statuslines: the shown suggestion of `buf` (items, index, the text still to
-- come as `rest`), or nil.
function M._state(buf)
  buf = (buf == nil or buf == 0) and vim.api.nvim_get_current_buf() or buf
  local state = buffers[buf]
  if not state or not state.shown then return nil end
  local s = state.shown
  return { items = s.items, index = s.index, invoked = s.invoked, rest = M.text(buf) }
end

M.actions = {
  accept = M.accept,
  accept_line = M.accept_line,
  accept_word = M.accept_word,
  dismiss = M.dismiss,
  next = function() return M.cycle(1) end,
  prev = function() return M.cycle(-1) end,
}

-- What a key did before we mapped it, so it still does that when no suggestion is shown.
local function fallback(buf, lhs)
  local prev = vim.fn.maparg(lhs, 'i', false, true)
  local keys = vim.api.nvim_replace_termcodes(lhs, true, false, true)
  if type(prev) ~= 'table' or vim.tbl_isempty(prev) or (prev.buffer == 1 and prev.desc == 'amd-lsp') then
    return function() vim.api.nvim_feedkeys(keys, 'n', false) end
  end
  return function()
    if prev.callback then
      local out = prev.callback()
      if prev.expr == 1 and type(out) == 'string' then
        vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(out, true, false, true), 'n', false)
      end
    else
      local rhs = vim.api.nvim_replace_termcodes(prev.rhs or lhs, true, false, true)
      vim.api.nvim_feedkeys(rhs, prev.noremap == 1 and 'n' or 'm', false)
    end
  end
end

--- Sets the insert-mode keys of `buf`; `run(action_name)` returns false when nothing was shown.
function M.map_keys(buf, keys, run)
  for name, lhs in pairs(keys or {}) do
    if lhs and M.actions[name] then
      local otherwise = fallback(buf, lhs)
      vim.keymap.set('i', lhs, function()
        if not run(name) then otherwise() end
      end, { buffer = buf, desc = 'amd-lsp' })
    end
  end
end

--- Starts ghost text in `buf` for `client`.
function M.attach(client, buf, keys)
  if buffers[buf] then
    buffers[buf].client_id = client.id
    return
  end
  buffers[buf] = { client_id = client.id, seq = 0 }
  vim.api.nvim_set_hl(0, 'AmdLspGhost', { link = 'Comment', default = true })
  local group = vim.api.nvim_create_augroup('amd_lsp_ghost_' .. buf, { clear = true })
  vim.api.nvim_create_autocmd('TextChangedI', {
    group = group, buffer = buf, callback = function() update(buf, true) end,
  })
  vim.api.nvim_create_autocmd('CursorMovedI', {
    group = group, buffer = buf, callback = function() update(buf, false) end,
  })
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group, buffer = buf, callback = function() M.clear(buf) end,
  })
  vim.api.nvim_create_autocmd('LspDetach', {
    group = group, buffer = buf,
    callback = function(ev)
      if ev.data and ev.data.client_id == client.id then M.detach(buf) end
    end,
  })
  M.map_keys(buf, keys, function(name) return M.actions[name]() end)
end

function M.detach(buf)
  M.clear(buf)
  buffers[buf] = nil
  pcall(vim.api.nvim_del_augroup_by_name, 'amd_lsp_ghost_' .. buf)
end

return M
