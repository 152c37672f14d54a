import { test } from "node:test";
import * as assert from "node:assert/strict";

import {
  RestartPolicy,
  editSummary,
  executeSummary,
  initializationOptions,
  planSummary,
  serverCommand,
  startFailure,
  findServer,
  statusText,
  statusTooltip,
  tiersText,
  nodesText,
} from "../logic";

test("only the settings the user set become initializationOptions, as tierls.toml tables", () => {
  assert.deepEqual(initializationOptions({}), {});
  assert.deepEqual(
    initializationOptions({
      "tiers.fast.model": "models/coder.gguf",
      "tiers.executor.model": null,
      "tiers.fast.slots": 2,
      "completion.debounceMs": 0,
      "plan.maxAttempts": 2,
      "log.level": "",
    }),
    {
      tiers: { fast: { model: "models/coder.gguf", slots: 2 } },
      completion: { debounce_ms: 0 },
      plan: { max_attempts: 2 },
    },
  );
});

test("the server command defaults to tierls on PATH", () => {
  assert.deepEqual(serverCommand({}), { command: "tierls", args: ["serve"] });
  assert.deepEqual(serverCommand({ "server.path": "  " }), { command: "tierls", args: ["serve"] });
  assert.deepEqual(serverCommand({ "server.path": "/opt/tierls/bin/tierls" }), {
    command: "/opt/tierls/bin/tierls",
    args: ["serve"],
  });
});

test("a missing or broken binary says how to fix it", () => {
  const missing = startFailure("tierls", { code: "ENOENT" });
  assert.match(missing, /was not found/);
  assert.match(missing, /cargo install --path \./);
  assert.match(missing, /tierls\.server\.path/);
  assert.match(startFailure("/x/tierls", { code: "EACCES" }), /permission denied/);
  assert.match(startFailure("tierls", { message: "exit code 3" }), /did not start: exit code 3/);
  // What the client rejects with when spawning fails: a string.
  assert.match(
    startFailure("/x/tierls", "Launching server using command /x/tierls failed. Error: spawn /x/tierls ENOENT"),
    /was not found/,
  );
});

test("the server binary is looked for where the client would run it from", () => {
  const files = new Set(["/usr/local/bin/tierls", "/opt/tierls/bin/tierls"]);
  const isFile = (path: string) => files.has(path);
  assert.equal(findServer("tierls", "/usr/bin:/usr/local/bin", isFile), "/usr/local/bin/tierls");
  assert.equal(findServer("/opt/tierls/bin/tierls", "/usr/bin", isFile), "/opt/tierls/bin/tierls");
  assert.equal(findServer("tierls", "/usr/bin", isFile), undefined);
  assert.equal(findServer("/nowhere/tierls", "/usr/local/bin", isFile), undefined);
  assert.equal(findServer("tierls", undefined, isFile), undefined);
});

test("a crashing server is restarted a few times, then reported once, not in a loop", () => {
  const policy = new RestartPolicy(3, 180_000);
  const outcomes = [0, 1000, 2000, 3000, 4000, 5000].map((at) => policy.onStop(at));
  assert.deepEqual(outcomes, ["restart", "restart", "restart", "give-up-and-report", "give-up", "give-up"]);
  policy.reset();
  assert.equal(policy.onStop(6000), "restart");
});

test("a server that stays up long enough recovers its restarts", () => {
  const policy = new RestartPolicy(2, 60_000);
  assert.equal(policy.onStop(0), "restart");
  assert.equal(policy.onStop(10_000), "restart");
  assert.equal(policy.onStop(200_000), "restart");
});

test("plans and their outcomes read as one line", () => {
  const plan = {
    planId: 3,
    document: "# Plan",
    steps: [{ id: 1, file: "a.rs", target: "f", action: "replace_symbol", instruction: "x" }],
    rejected: [{ id: 2, reason: "unknown symbol" }],
  };
  assert.equal(planSummary(plan), "tierls: plan 3: 1 step, 1 cannot run");
  assert.equal(
    executeSummary({ planId: 3, applied: true, files: ["a.rs"], steps: [{ id: 1, outcome: "done" }], refused: [] }),
    "tierls: plan 3: 1 of 1 steps applied to a.rs",
  );
  assert.equal(
    executeSummary({ planId: 3, applied: false, reason: "the file is read-only", steps: [] }),
    "tierls: plan 3 not applied: the file is read-only",
  );
  assert.equal(executeSummary({ planId: 4, applied: false, cancelled: true, steps: [] }), "tierls: plan 4 cancelled; nothing changed");
});

test("the status bar shows the state", () => {
  assert.equal(statusText("running"), "$(check) tierls");
  assert.equal(statusText("running", "planning"), "$(sync~spin) tierls: planning");
  assert.equal(statusText("failed"), "$(error) tierls");
});

test("the status bar lists the configured tiers; the tooltip says the rest", () => {
  const status = {
    version: "0.1.0",
    tiers: [
      { tier: "fast", model: "/m/fast.gguf", state: "ready", error: null, drafting: { requests: 3, drafted: 141, accepted: 100 } },
      { tier: "executor", model: "/m/exec.gguf", state: "failed", error: "does not fit" },
      {
        tier: "planner",
        model: null,
        state: "not configured",
        error: null,
        draftingNote: "not drafting: the fast tier cannot draft for itself",
      },
    ],
    plans: { pending: [{ planId: 2, instruction: "use PI", steps: 3 }], running: 1 },
  };
  assert.equal(tiersText(status), "fast ● executor ✗");
  assert.equal(
    statusTooltip(status),
    [
      "tierls 0.1.0",
      "fast: ready (/m/fast.gguf), drafts 100/141 tokens accepted",
      "executor: failed (/m/exec.gguf): does not fit",
      "planner: not configured",
      "  not drafting: the fast tier cannot draft for itself",
      "plan work running: 1",
      "plan 2 waiting: use PI (3 steps)",
    ].join("\n"),
  );
});

test("worker nodes show in the status bar and the tooltip", () => {
  const nodes = [
    { name: "gpu-box", url: "http://h:8080", tiers: ["fast", "executor"], health: "healthy", busy: 1, concurrency: 4, firstTokenMs: 85, lastError: null, memoryBytes: 763363328 },
    { name: "laptop", url: "http://l:11434", tiers: ["executor"], health: "cooling down", busy: 0, concurrency: 2, firstTokenMs: null, lastError: "node `laptop`: HTTP 500" },
  ];
  const status = {
    version: "0.1.0",
    tiers: [{ tier: "fast", model: "nodes: gpu-box", state: "ready", error: null }],
    plans: { pending: [], running: 0 },
    nodes,
  };
  assert.equal(nodesText([]), "");
  assert.equal(tiersText(status), "fast ● nodes 1/2");
  assert.equal(
    statusTooltip(status),
    [
      "tierls 0.1.0",
      "fast: ready (nodes: gpu-box)",
      "node gpu-box (fast, executor): healthy, 1/4 busy, first token 85 ms, 728 MiB",
      "node laptop (executor): cooling down, 0/2 busy: node `laptop`: HTTP 500",
    ].join("\n"),
  );
});

test("an instruction edit says what it changed and which tier did it", () => {
  const by = "executor, as a one-step plan (no planning pass) — one symbol, 4 lines";
  assert.equal(
    executeSummary({ planId: 5, applied: true, files: ["src/a.rs"], steps: [{ id: 1, outcome: "done" }], plannedBy: by }),
    `tierls: edited src/a.rs (${by})`,
  );
  assert.equal(
    editSummary({ planId: 5, applied: false, reason: null, steps: [], plannedBy: by }),
    `tierls: edit not applied: the model's answer changed nothing (${by})`,
  );
  assert.equal(editSummary({ planId: 5, applied: false, cancelled: true, steps: [] }), "tierls: edit cancelled; nothing changed");
});
