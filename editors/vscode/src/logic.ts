// The extension's logic without VS Code: settings to tierls' initializationOptions, the
// server command, messages, and when to stop restarting. Unit-tested in src/test/.

/** The extension's settings, as VS Code returns them (unset ones are null or undefined). */
export interface Settings {
  "server.path"?: string | null;
  "tiers.fast.model"?: string | null;
  "tiers.executor.model"?: string | null;
  "tiers.planner.model"?: string | null;
  "tiers.fast.slots"?: number | null;
  "completion.debounceMs"?: number | null;
  "completion.budgetMs"?: number | null;
  "plan.maxAttempts"?: number | null;
  "plan.maxStepTokens"?: number | null;
  "log.level"?: string | null;
}

/** Which tierls.toml key each setting sets. */
const KEYS: Array<[keyof Settings, string[]]> = [
  ["tiers.fast.model", ["tiers", "fast", "model"]],
  ["tiers.executor.model", ["tiers", "executor", "model"]],
  ["tiers.planner.model", ["tiers", "planner", "model"]],
  ["tiers.fast.slots", ["tiers", "fast", "slots"]],
  ["completion.debounceMs", ["completion", "debounce_ms"]],
  ["completion.budgetMs", ["completion", "budget_ms"]],
  ["plan.maxAttempts", ["plan", "max_attempts"]],
  ["plan.maxStepTokens", ["plan", "max_step_tokens"]],
  ["log.level", ["log", "level"]],
];

/**
 * The initializationOptions for tierls: the same tables as tierls.toml, with only the
 * settings the user set, so that the workspace's tierls.toml keeps its say for the rest.
 */
export function initializationOptions(settings: Settings): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const [setting, path] of KEYS) {
    const value = settings[setting];
    if (value === null || value === undefined || value === "") {
      continue;
    }
    let table = options;
    for (const key of path.slice(0, -1)) {
      table[key] = (table[key] as Record<string, unknown>) ?? {};
      table = table[key] as Record<string, unknown>;
    }
    table[path[path.length - 1]] = value;
  }
  return options;
}

/** The command that starts the server. */
export function serverCommand(settings: Settings): { command: string; args: string[] } {
  const path = (settings["server.path"] ?? "").trim();
  return { command: path === "" ? "tierls" : path, args: ["serve"] };
}

/**
 * Where `command` runs from: itself when it names a path, else the first directory of
 * `searchPath` (PATH) holding it; `undefined` when there is no such file. Checked before the
 * client starts, because the client reports a missing binary with a message of its own that
 * says nothing of the fix.
 */
export function findServer(
  command: string,
  searchPath: string | undefined,
  isFile: (path: string) => boolean,
): string | undefined {
  if (command.includes("/")) {
    return isFile(command) ? command : undefined;
  }
  for (const directory of (searchPath ?? "").split(":")) {
    const candidate = `${directory === "" ? "." : directory}/${command}`;
    if (isFile(candidate)) {
      return candidate;
    }
  }
  return undefined;
}

/** Why the server could not start, and what to do about it. The client rejects with an
 * error or, when spawning failed, a string such as "… Error: spawn tierls ENOENT". */
export function startFailure(command: string, error: { code?: string; message?: string } | string): string {
  const { code, message } =
    typeof error === "string" ? { code: /\b(ENOENT|EACCES)\b/.exec(error)?.[1], message: error } : error;
  if (code === "ENOENT") {
    return `tierls: the server \`${command}\` was not found. Install it with \`cargo install --path .\` in the tierls sources, or set "tierls.server.path" to the binary.`;
  }
  if (code === "EACCES") {
    return `tierls: \`${command}\` cannot be run (permission denied). Check the file, or set "tierls.server.path".`;
  }
  return `tierls: the server \`${command} serve\` did not start: ${message ?? "unknown error"}. Run it in a terminal to see why.`;
}

/**
 * Restarts of a server that stops: a few, then stop and say so once. A server that stayed
 * up for `healthyMs` has recovered, and the count starts again.
 */
export class RestartPolicy {
  private restarts: number[] = [];
  private reported = false;

  constructor(private readonly max = 3, private readonly windowMs = 180_000) {}

  /** Called when the server stopped at `now`: restart, or give up (and report once). */
  onStop(now: number): "restart" | "give-up-and-report" | "give-up" {
    this.restarts = this.restarts.filter((at) => now - at < this.windowMs);
    if (this.restarts.length < this.max) {
      this.restarts.push(now);
      return "restart";
    }
    if (this.reported) {
      return "give-up";
    }
    this.reported = true;
    return "give-up-and-report";
  }

  /** The user asked for a restart: start afresh. */
  reset(): void {
    this.restarts = [];
    this.reported = false;
  }
}

/** What `tierls.planRefactor` returns. */
export interface PlanResult {
  planId: number;
  document: string;
  steps: Array<{ id: number; file: string; target: string; action: string; instruction: string }>;
  rejected: Array<{ id: number; reason: string }>;
}

/** What `tierls.executePlan` returns. */
export interface ExecuteResult {
  planId: number;
  applied: boolean;
  cancelled?: boolean;
  reason?: string | null;
  files?: string[];
  steps: Array<{ id: number; outcome: string }>;
  refused?: Array<{ id: number; reason: string }>;
  /** Who planned it and why (an instruction edit plans and executes at once). */
  plannedBy?: string;
}

export function planSummary(plan: PlanResult): string {
  const steps = plan.steps.length;
  const rejected = plan.rejected.length;
  const parts = [`plan ${plan.planId}: ${steps} step${steps === 1 ? "" : "s"}`];
  if (rejected > 0) {
    parts.push(`${rejected} cannot run`);
  }
  return `tierls: ${parts.join(", ")}`;
}

export function executeSummary(result: ExecuteResult): string {
  if (result.plannedBy !== undefined) {
    return editSummary(result);
  }
  if (result.cancelled) {
    return `tierls: plan ${result.planId} cancelled; nothing changed`;
  }
  const done = result.steps.filter((step) => step.outcome === "done").length;
  const refused = result.refused?.length ?? 0;
  if (result.applied) {
    const files = result.files ?? [];
    return `tierls: plan ${result.planId}: ${done - refused} of ${result.steps.length} steps applied to ${files.join(", ")}`;
  }
  return `tierls: plan ${result.planId} not applied: ${result.reason ?? "no step changed a file"}`;
}

/** What an instruction edit (`tierls.editSelection`) did, and which tier did it. */
export function editSummary(result: ExecuteResult): string {
  if (result.cancelled) {
    return "tierls: edit cancelled; nothing changed";
  }
  const by = result.plannedBy ? ` (${result.plannedBy})` : "";
  if (result.applied) {
    return `tierls: edited ${(result.files ?? []).join(", ")}${by}`;
  }
  return `tierls: edit not applied: ${result.reason ?? "the model's answer changed nothing"}${by}`;
}

/** The status bar's text for the server's state. */
export function statusText(state: "starting" | "running" | "stopped" | "failed", busy?: string): string {
  switch (state) {
    case "starting":
      return "$(sync~spin) tierls";
    case "running":
      return busy ? `$(sync~spin) tierls: ${busy}` : "$(check) tierls";
    case "stopped":
      return "$(debug-stop) tierls";
    case "failed":
      return "$(error) tierls";
  }
}

/** What `tierls/status` returns. */
export interface ServerStatus {
  version: string;
  tiers: Array<{
    tier: string;
    model: string | null;
    state: string;
    error: string | null;
    /** Speculative decoding since the model loaded, when the tier drafts. */
    drafting?: { requests: number; drafted: number; accepted: number; yielded?: number };
    /** With `draft = "model"`: which model drafts for the tier, or why none does. */
    draftingNote?: string;
  }>;
  plans: { pending: Array<{ planId: number; instruction: string; steps: number }>; running: number };
  /** Worker nodes (absent from servers before them). */
  nodes?: NodeStatus[];
}

/** One worker node, as `tierls/status` and `tierls/nodesChanged` describe it. */
export interface NodeStatus {
  name: string;
  url: string;
  tiers: string[];
  health: string;
  busy: number;
  concurrency: number;
  firstTokenMs: number | null;
  lastError: string | null;
  /** The node process's resident memory, when it runs on the server's machine. */
  memoryBytes?: number | null;
}

/** The nodes in a few characters for the status bar: healthy ones out of all. */
export function nodesText(nodes: NodeStatus[] | undefined): string {
  if (!nodes || nodes.length === 0) {
    return "";
  }
  const healthy = nodes.filter((node) => node.health === "healthy").length;
  return `nodes ${healthy}/${nodes.length}`;
}

function nodeLine(node: NodeStatus): string {
  const latency = node.firstTokenMs === null ? "" : `, first token ${node.firstTokenMs} ms`;
  const memory = node.memoryBytes ? `, ${Math.round(node.memoryBytes / (1024 * 1024))} MiB` : "";
  const error = node.health !== "healthy" && node.lastError ? `: ${node.lastError}` : "";
  return `node ${node.name} (${node.tiers.join(", ")}): ${node.health}, ${node.busy}/${node.concurrency} busy${latency}${memory}${error}`;
}

const TIER_MARKS: Record<string, string> = {
  ready: "●",
  loading: "◐",
  "not loaded": "○",
  paused: "‖",
  failed: "✗",
};

/** The tiers in a few characters for the status bar: configured tiers only. */
export function tiersText(status: ServerStatus): string {
  const tiers = status.tiers
    .filter((tier) => tier.state !== "not configured")
    .map((tier) => `${tier.tier} ${TIER_MARKS[tier.state] ?? "?"}`);
  const nodes = nodesText(status.nodes);
  return (nodes ? [...tiers, nodes] : tiers).join(" ");
}

/** The status bar's tooltip: each tier's model and state, and the plans. */
export function statusTooltip(status: ServerStatus): string {
  const lines = [`tierls ${status.version}`];
  for (const tier of status.tiers) {
    const model = tier.model ? ` (${tier.model})` : "";
    const error = tier.error ? `: ${tier.error}` : "";
    const drafting = tier.drafting
      ? `, drafts ${tier.drafting.accepted}/${tier.drafting.drafted} tokens accepted`
      : "";
    lines.push(`${tier.tier}: ${tier.state}${model}${drafting}${error}`);
    if (tier.draftingNote) {
      lines.push(`  ${tier.draftingNote}`);
    }
  }
  for (const node of status.nodes ?? []) {
    lines.push(nodeLine(node));
  }
  if (status.plans.running > 0) {
    lines.push(`plan work running: ${status.plans.running}`);
  }
  for (const plan of status.plans.pending) {
    lines.push(`plan ${plan.planId} waiting: ${plan.instruction} (${plan.steps} steps)`);
  }
  return lines.join("\n");
}
