-- tierls for Neovim: starts `tierls serve` for the configured filetypes, shows completions
-- (native inline completion where Neovim has it, completion items otherwise), and adds
-- :TierlsPlan, :TierlsExecute, :TierlsDiscard and :TierlsStatus.
--
-- Works from Neovim 0.7 (Debian 12) on: it uses vim.lsp.start where it exists and
-- vim.lsp.start_client before.

local M = {}

M.config = {
  -- The server command; `tierls` must be on $PATH, or give the full path.
  cmd = { "tierls", "serve" },
  filetypes = {
    "rust", "python", "javascript", "javascriptreact", "typescript", "typescriptreact",
    "go", "c", "cpp", "java",
  },
  -- Files or folders that mark the workspace root, nearest first.
  root_markers = { "tierls.toml", ".git", "Cargo.toml", "package.json", "pyproject.toml", "go.mod" },
  -- Sent as initializationOptions: the same keys as tierls.toml, for example
  -- { tiers = { fast = { model = "/models/coder-1.5b.gguf" } }, completion = { debounce_ms = 30 } }.
  settings = vim.empty_dict and vim.empty_dict() or {},
  -- Restart a server that stops unexpectedly, at most this many times in a row.
  max_restarts = 3,
  -- Where messages go (tests replace it).
  notify = function(message, level)
    vim.notify(message, level)
  end,
}

local state = {
  client_id = nil,
  -- The running server answered `initialize`.
  initialized = false,
  restarts = 0,
  stopping = false,
  reported = {},
  last_plan = nil,
  last_exit = nil,
}

-- Says `message` once per session: a broken setup is reported, not repeated in a loop.
local function report_once(key, message, level)
  if state.reported[key] then
    return
  end
  state.reported[key] = true
  M.config.notify(message, level or vim.log.levels.ERROR)
end

local function find_root(bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr)
  local folder = vim.fn.fnamemodify(name, ":p:h")
  for _, marker in ipairs(M.config.root_markers) do
    local found = vim.fn.findfile(marker, folder .. ";")
    if found == "" then
      found = vim.fn.finddir(marker, folder .. ";")
    end
    if found ~= "" then
      return vim.fn.fnamemodify(found, ":p:h"):gsub("/%.git/?$", "")
    end
  end
  return folder
end

local function client()
  return state.client_id and vim.lsp.get_client_by_id(state.client_id) or nil
end

local function on_exit(code, signal)
  state.last_exit = { code = code, signal = signal }
  local was_attached = state.client_id
  local had_started = state.initialized
  state.client_id = nil
  state.initialized = false
  if state.stopping then
    return
  end
  if not had_started then
    -- It stopped before answering `initialize`: restarting would fail the same way.
    report_once(
      "crashed-at-start",
      ("tierls: the server exited at start (exit code %s). Run `%s` in a terminal to see why; fix the cause, then reopen the file."):format(
        tostring(code), table.concat(M.config.cmd, " ")
      )
    )
    return
  end
  if state.restarts >= M.config.max_restarts then
    report_once(
      "gave-up",
      ("tierls: the server stopped %d times (last exit code %s); not restarting. Run `%s` in a terminal to see why."):format(
        state.restarts + 1, tostring(code), table.concat(M.config.cmd, " ")
      )
    )
    return
  end
  state.restarts = state.restarts + 1
  if was_attached then
    -- Reconnect: start again and attach every buffer of a configured filetype.
    vim.schedule(function()
      for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
        if vim.api.nvim_buf_is_loaded(bufnr)
          and vim.tbl_contains(M.config.filetypes, vim.bo[bufnr].filetype)
        then
          M.attach(bufnr)
        end
      end
    end)
  end
end

local function on_attach(lsp_client, bufnr)
  state.initialized = true
  -- A server that stays up for a minute has recovered: forget the earlier restarts.
  vim.defer_fn(function()
    if state.client_id == lsp_client.id then
      state.restarts = 0
    end
  end, 60000)
  if vim.lsp.inline_completion and vim.lsp.inline_completion.enable then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  else
    -- No ghost text in this Neovim: completion items through omnifunc (<C-x><C-o>).
    vim.bo[bufnr].omnifunc = "v:lua.vim.lsp.omnifunc"
  end
end

--- Starts the server if needed and attaches `bufnr` to it.
function M.attach(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local binary = M.config.cmd[1]
  if vim.fn.executable(binary) ~= 1 then
    report_once(
      "missing",
      ("tierls: the server `%s` was not found. Install it with `cargo install --path .` in the tierls sources, or set `cmd` in require('tierls').setup{}."):format(binary)
    )
    return nil
  end
  local existing = client()
  if existing and not existing.is_stopped() then
    vim.lsp.buf_attach_client(bufnr, existing.id)
    return existing.id
  end
  local config = {
    name = "tierls",
    cmd = M.config.cmd,
    root_dir = find_root(bufnr),
    init_options = M.config.settings,
    on_attach = on_attach,
    on_exit = on_exit,
    handlers = {
      -- The server says when a worker node's health changes: one line with every node.
      ["tierls/nodesChanged"] = function(_, params)
        local parts = {}
        for _, node in ipairs((params or {}).nodes or {}) do
          table.insert(parts, ("%s %s"):format(node.name, node.health))
        end
        M.config.notify("tierls: nodes: " .. table.concat(parts, ", "), vim.log.levels.INFO)
      end,
    },
  }
  local id = vim.lsp.start_client(config)
  if not id then
    report_once("start", ("tierls: could not start `%s`."):format(table.concat(M.config.cmd, " ")))
    return nil
  end
  state.client_id = id
  vim.lsp.buf_attach_client(bufnr, id)
  return id
end

local function execute(command, argument, callback)
  local lsp_client = client()
  if not lsp_client then
    M.config.notify("tierls: the server is not running", vim.log.levels.WARN)
    return
  end
  lsp_client.request("workspace/executeCommand", { command = command, arguments = { argument } },
    function(err, result)
      if err then
        M.config.notify("tierls: " .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
        return
      end
      if callback then
        callback(result)
      end
    end, vim.api.nvim_get_current_buf())
end

local function show_plan(result)
  state.last_plan = result
  local lines = vim.split(result.document or "", "\n")
  vim.cmd("botright new")
  local buf = vim.api.nvim_get_current_buf()
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].buftype = "nofile"
  vim.bo[buf].bufhidden = "wipe"
  vim.bo[buf].filetype = "markdown"
  vim.cmd("wincmd p")
end

--- Plans `instruction` for the cursor (or the given range), shows the plan, then asks
--- whether to execute or discard it.
function M.plan(instruction, range, callback)
  if not instruction or vim.trim(instruction) == "" then
    M.config.notify("tierls: say what to change, for example :TierlsPlan rename x to y", vim.log.levels.WARN)
    return
  end
  local cursor = vim.api.nvim_win_get_cursor(0)
  local position = { line = cursor[1] - 1, character = 0 }
  local argument = {
    uri = vim.uri_from_bufnr(0),
    range = range or { start = position, ["end"] = position },
    instruction = instruction,
  }
  execute("tierls.planRefactor", argument, function(result)
    show_plan(result)
    if callback then
      callback(result)
      return
    end
    if #(result.steps or {}) == 0 then
      return
    end
    vim.ui.select({ "Execute", "Discard" }, { prompt = "tierls: plan " .. result.planId }, function(choice)
      if choice == "Execute" then
        M.execute(result.planId)
      else
        M.discard(result.planId)
      end
    end)
  end)
end

--- Rewrites the symbols under `range` (the lines of a visual selection) as `instruction`
--- says. The server picks the tier (one symbol: the executor, no planning pass) and sends
--- the edit, which Neovim applies; `u` undoes it.
function M.edit(instruction, range, callback)
  if not instruction or vim.trim(instruction) == "" then
    M.config.notify("tierls: say what to change, for example :'<,'>TierlsEdit use an iterator", vim.log.levels.WARN)
    return
  end
  local argument = { uri = vim.uri_from_bufnr(0), range = range, instruction = instruction }
  execute("tierls.editSelection", argument, function(result)
    local message
    if result.applied then
      message = "tierls: edited by " .. tostring(result.plannedBy or "?")
    else
      message = "tierls: edit not applied: " .. tostring(result.reason or (result.cancelled and "cancelled") or "?")
    end
    M.config.notify(message, vim.log.levels.INFO)
    if callback then
      callback(result)
    end
  end)
end

function M.execute(plan_id, callback)
  plan_id = plan_id or (state.last_plan and state.last_plan.planId)
  execute("tierls.executePlan", { planId = plan_id }, function(result)
    local message = result.applied and "tierls: plan applied" or ("tierls: plan not applied: " .. tostring(result.reason or (result.cancelled and "cancelled") or "?"))
    M.config.notify(message, vim.log.levels.INFO)
    if callback then
      callback(result)
    end
  end)
end

function M.discard(plan_id, callback)
  plan_id = plan_id or (state.last_plan and state.last_plan.planId)
  execute("tierls.discardPlan", { planId = plan_id }, function(result)
    M.config.notify("tierls: plan " .. tostring(plan_id) .. " discarded", vim.log.levels.INFO)
    if callback then
      callback(result)
    end
  end)
end

--- What the plugin knows: the server, its state, the last plan.
function M.status()
  local lsp_client = client()
  local lines = {}
  if lsp_client then
    table.insert(lines, ("tierls: running (client %d), root %s"):format(lsp_client.id, lsp_client.config.root_dir or "?"))
    local response = lsp_client.request_sync("tierls/status", vim.NIL, 2000)
    local server = response and response.result
    if server then
      for _, tier in ipairs(server.tiers or {}) do
        local model = tier.model ~= vim.NIL and tier.model and (" (" .. tier.model .. ")") or ""
        local error = tier.error ~= vim.NIL and tier.error and (": " .. tier.error) or ""
        local drafting = tier.drafting and (", drafts %d/%d tokens accepted"):format(tier.drafting.accepted, tier.drafting.drafted) or ""
        table.insert(lines, ("%s: %s%s%s%s"):format(tier.tier, tier.state, model, drafting, error))
        if tier.draftingNote and tier.draftingNote ~= vim.NIL then
          table.insert(lines, "  " .. tier.draftingNote)
        end
      end
      for _, node in ipairs(server.nodes or {}) do
        local latency = node.firstTokenMs ~= vim.NIL and node.firstTokenMs and (", first token %d ms"):format(node.firstTokenMs) or ""
        local memory = node.memoryBytes ~= vim.NIL and node.memoryBytes and (", %d MiB"):format(math.floor(node.memoryBytes / 1048576 + 0.5)) or ""
        local error = node.health ~= "healthy" and node.lastError ~= vim.NIL and node.lastError and (": " .. node.lastError) or ""
        table.insert(lines, ("node %s (%s): %s, %d/%d busy%s%s%s"):format(
          node.name, table.concat(node.tiers, ", "), node.health, node.busy, node.concurrency, latency, memory, error))
      end
      for _, plan in ipairs((server.plans or {}).pending or {}) do
        table.insert(lines, ("plan %d waiting: %s (%d steps)"):format(plan.planId, plan.instruction, plan.steps))
      end
    end
    table.insert(lines, ("attached buffers: %d"):format(vim.tbl_count(lsp_client.attached_buffers or {})))
  else
    table.insert(lines, "tierls: not running" .. (state.last_exit and (" (last exit code " .. tostring(state.last_exit.code) .. ")") or ""))
  end
  table.insert(lines, ("restarts in a row: %d of %d"):format(state.restarts, M.config.max_restarts))
  if state.last_plan then
    table.insert(lines, ("last plan: %s (%d steps)"):format(tostring(state.last_plan.planId), #(state.last_plan.steps or {})))
  end
  return table.concat(lines, "\n")
end

function M.stop()
  state.stopping = true
  local lsp_client = client()
  if lsp_client then
    lsp_client.stop()
  end
end

--- For tests: what the plugin holds.
function M._state()
  return state
end

function M.setup(options)
  M.config = vim.tbl_deep_extend("force", M.config, options or {})
  local group = vim.api.nvim_create_augroup("tierls", { clear = true })
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = M.config.filetypes,
    callback = function(event)
      M.attach(event.buf)
    end,
  })
  vim.api.nvim_create_user_command("TierlsPlan", function(command)
    if command.args ~= "" then
      M.plan(command.args)
    else
      vim.ui.input({ prompt = "tierls: what should change? " }, function(text)
        M.plan(text)
      end)
    end
  end, { nargs = "*", desc = "Plan a refactor with tierls" })
  vim.api.nvim_create_user_command("TierlsEdit", function(command)
    -- Whole lines: the selection's first line to the end of its last.
    local range = {
      start = { line = command.line1 - 1, character = 0 },
      ["end"] = { line = command.line2, character = 0 },
    }
    if command.args ~= "" then
      M.edit(command.args, range)
    else
      vim.ui.input({ prompt = "tierls: how should the selection change? " }, function(text)
        M.edit(text, range)
      end)
    end
  end, { nargs = "*", range = true, desc = "Edit the selected code with tierls" })
  vim.api.nvim_create_user_command("TierlsExecute", function(command)
    M.execute(tonumber(command.args))
  end, { nargs = "?", desc = "Execute a tierls plan" })
  vim.api.nvim_create_user_command("TierlsDiscard", function(command)
    M.discard(tonumber(command.args))
  end, { nargs = "?", desc = "Discard a tierls plan" })
  vim.api.nvim_create_user_command("TierlsStatus", function()
    print(M.status())
  end, { desc = "Show tierls' state" })
end

return M
