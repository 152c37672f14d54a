-- Drives Neovim headless with the tierls plugin, as a user would, and writes what happened
-- to $RESULT as JSON. Run by tests/it/editors.rs:
--   nvim --headless -u NONE -c "luafile tests/editors/neovim_e2e.lua"
-- $MODE: "flow" (completion, hover, plan, execute, write, discard, restart), "missing"
-- (no server binary) or "crash" (a server that exits at start).

local env = vim.env
local result = { notes = {} }

local function finish(ok)
  result.ok = ok
  vim.fn.writefile({ vim.fn.json_encode(result) }, env.RESULT)
  vim.cmd(ok and "qa!" or "cquit 1")
end

local function wait(ms, condition, what)
  if not vim.wait(ms, condition, 50) then
    error("timed out waiting for " .. what)
  end
end

vim.opt.runtimepath:prepend(env.PLUGIN)
vim.cmd("filetype on")
vim.opt.swapfile = false
vim.lsp.set_log_level(env.LSP_LOG_LEVEL or "warn")
local tierls = require("tierls")

local function notify(message)
  table.insert(result.notes, message)
end

local function setup(cmd)
  tierls.setup({
    cmd = cmd,
    settings = {
      index = { enabled = true },
      tiers = { fast = { model = env.TEST_MODEL, context = 2048 } },
    },
    notify = notify,
  })
end

local function client()
  local id = tierls._state().client_id
  return id and vim.lsp.get_client_by_id(id)
end

local function request(method, params)
  local responses = vim.lsp.buf_request_sync(0, method, params, 60000)
  for _, response in pairs(responses or {}) do
    if response.error then
      error(method .. ": " .. vim.inspect(response.error))
    end
    return response.result
  end
  error(method .. ": no response")
end

local function position(line, character)
  return { textDocument = { uri = vim.uri_from_bufnr(0) }, position = { line = line, character = character } }
end

local function code_actions(line)
  local at = { line = line, character = 4 }
  return request("textDocument/codeAction", {
    textDocument = { uri = vim.uri_from_bufnr(0) },
    range = { start = at, ["end"] = at },
    context = { diagnostics = {} },
  }) or {}
end

local function run_action(line, prefix)
  for _, action in ipairs(code_actions(line)) do
    if action.title:sub(1, #prefix) == prefix then
      local command = action.command
      local response
      client().request("workspace/executeCommand", { command = command.command, arguments = command.arguments },
        function(err, value)
          response = { err = err, result = value }
        end, 0)
      wait(120000, function() return response ~= nil end, action.title)
      if response.err then
        error(action.title .. ": " .. vim.inspect(response.err))
      end
      return action.title, response.result
    end
  end
  error("no code action starting with " .. prefix)
end

local function flow()
  setup({ env.TIERLS_BIN, "serve", "--scripted-models", env.SCRIPT })
  vim.cmd("edit " .. env.WORKSPACE .. "/src/geometry.rs")
  wait(20000, function()
    local c = client()
    return c ~= nil and not c.is_stopped() and c.initialized ~= false and tierls._state().initialized
  end, "the server to start")
  local first_client = tierls._state().client_id

  -- Completion items (this Neovim has no inline completion): the fast tier runs the real
  -- test model, which loads in the background; ask until it answers with an item.
  -- The user starts a function at the end of the file; it is taken away afterwards.
  local end_line = vim.api.nvim_buf_line_count(0)
  vim.api.nvim_buf_set_lines(0, end_line, end_line, false, { "", "pub fn double(x: f64) -> f64 {", "    x * " })
  local items = {}
  wait(120000, function()
    local completion = request("textDocument/completion", position(end_line + 2, 8))
    items = completion and (completion.items or completion) or {}
    return #items > 0
  end, "a completion item")
  result.completion = items[1].insertText or items[1].label
  vim.api.nvim_buf_set_lines(0, end_line, -1, false, {})

  local hover = request("textDocument/hover", position(8, 12))
  result.hover = hover and hover.contents and (hover.contents.value or hover.contents) or nil

  -- The `tierls:` comment offers its plan; then execute it: Neovim applies the edit.
  result.plan_action, result.plan = run_action(8, "tierls: Plan: ")
  result.execute_action, result.executed = run_action(8, "tierls: Execute plan")
  vim.cmd("write")

  -- An instruction edit of the selected lines (inside `total_area`): no planning pass, the
  -- executor's answer applied by Neovim.
  vim.cmd("15,17TierlsEdit sum the areas with an iterator")
  wait(60000, function()
    return table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n"):find("iter%(%)") ~= nil
  end, "the instruction edit")
  vim.cmd("write")

  -- A plan the user discards changes nothing.
  local before = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
  tierls.plan("use PI everywhere", nil, function(plan) result.second_plan = plan end)
  wait(60000, function() return result.second_plan ~= nil end, "the second plan")
  result.plan_window_shown = vim.fn.winnr("$") == 2
  result.discard_action = run_action(8, "tierls: Discard plan")
  result.unchanged_after_discard = before == table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
  result.modified_after_discard = vim.bo.modified

  -- The server goes away mid-session: the plugin starts it again and reattaches.
  client().notify("exit", nil)
  wait(20000, function()
    local state = tierls._state()
    return state.client_id ~= nil and state.client_id ~= first_client and state.initialized
  end, "the server to come back")
  local hover_again = request("textDocument/hover", position(8, 12))
  result.reconnected = hover_again ~= nil
  result.status = tierls.status()
  tierls.stop()
end

local function missing()
  setup({ "/nonexistent/tierls", "serve" })
  vim.cmd("edit " .. env.WORKSPACE .. "/src/geometry.rs")
  vim.cmd("edit " .. env.WORKSPACE .. "/src/other.rs")
  vim.cmd("buffer 1")
  vim.wait(500)
end

local function crash()
  setup({ "sh", "-c", "exit 3" })
  vim.cmd("edit " .. env.WORKSPACE .. "/src/geometry.rs")
  vim.wait(2000)
  vim.cmd("edit " .. env.WORKSPACE .. "/src/other.rs")
  vim.wait(2000)
  result.status = tierls.status()
end

local ok, err = pcall(({ flow = flow, missing = missing, crash = crash })[env.MODE])
if not ok then
  result.error = tostring(err)
end
finish(ok)
