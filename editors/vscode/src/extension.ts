// tierls for VS Code: starts `tierls serve`, shows the fast tier's suggestions as ghost text,
// runs "Plan refactor…" with an input box, plan progress, and execute or discard, and
// "Edit selection…", whose edit VS Code shows as a diff before applying it.
// The logic that needs no VS Code lives in logic.ts, where it is unit-tested.

import * as fs from "fs";
import * as vscode from "vscode";
import {
  CloseAction,
  ErrorAction,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
} from "vscode-languageclient/node";

import * as logic from "./logic";

const LANGUAGES = [
  "rust", "python", "javascript", "javascriptreact", "typescript", "typescriptreact", "go", "c", "cpp", "java",
];

let client: LanguageClient | undefined;
let status: vscode.StatusBarItem;
let lastPlan: number | undefined;
const restarts = new logic.RestartPolicy();

function settings(): logic.Settings {
  const config = vscode.workspace.getConfiguration("tierls");
  const read = <T>(key: keyof logic.Settings) => config.get<T | null>(key) ?? null;
  return {
    "server.path": read<string>("server.path"),
    "tiers.fast.model": read<string>("tiers.fast.model"),
    "tiers.executor.model": read<string>("tiers.executor.model"),
    "tiers.planner.model": read<string>("tiers.planner.model"),
    "tiers.fast.slots": read<number>("tiers.fast.slots"),
    "completion.debounceMs": read<number>("completion.debounceMs"),
    "completion.budgetMs": read<number>("completion.budgetMs"),
    "plan.maxAttempts": read<number>("plan.maxAttempts"),
    "plan.maxStepTokens": read<number>("plan.maxStepTokens"),
    "log.level": read<string>("log.level"),
  };
}

let tiers = "";

function setStatus(state: Parameters<typeof logic.statusText>[0], busy?: string): void {
  const text = logic.statusText(state, busy);
  status.text = state === "running" && !busy && tiers ? `${text} ${tiers}` : text;
}

/** Asks the server for its tiers and plans (`tierls/status`) and shows them. */
async function refreshStatus(): Promise<void> {
  if (!client || client.state !== State.Running) {
    return;
  }
  try {
    const current = await client.sendRequest<logic.ServerStatus>("tierls/status");
    tiers = logic.tiersText(current);
    status.tooltip = logic.statusTooltip(current);
    if (!status.text.includes("sync~spin")) {
      setStatus("running");
    }
  } catch {
    // A server that does not answer is shown by the client's state.
  }
}

async function start(): Promise<void> {
  const current = settings();
  const { command, args } = logic.serverCommand(current);
  const isFile = (path: string) => fs.statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
  if (!logic.findServer(command, process.env.PATH, isFile)) {
    // One message, from here: the client's own would come first and say nothing of the fix.
    setStatus("failed");
    void vscode.window.showErrorMessage(logic.startFailure(command, { code: "ENOENT" }));
    return;
  }
  const serverOptions: ServerOptions = { command, args };
  const clientOptions: LanguageClientOptions = {
    documentSelector: LANGUAGES.map((language) => ({ scheme: "file", language })),
    initializationOptions: logic.initializationOptions(current),
    outputChannelName: "tierls",
    errorHandler: {
      error: () => ({ action: ErrorAction.Continue }),
      closed: () => {
        const decision = restarts.onStop(Date.now());
        if (decision === "restart") {
          return { action: CloseAction.Restart };
        }
        setStatus("failed");
        if (decision === "give-up-and-report") {
          return {
            action: CloseAction.DoNotRestart,
            message: `tierls: the server stopped several times; not restarting. Run \`${command} serve\` in a terminal to see why, then use "tierls: Restart the server".`,
          };
        }
        return { action: CloseAction.DoNotRestart, handled: true };
      },
    },
    middleware: {
      // "Plan refactor…" code actions come without the instruction: ask for it here.
      executeCommand: async (name, commandArgs, next) => {
        if (name === "tierls.planRefactor" && commandArgs[0] && !commandArgs[0].instruction) {
          const instruction = await askInstruction();
          if (!instruction) {
            return undefined;
          }
          commandArgs = [{ ...commandArgs[0], instruction }];
          return handlePlan(await next(name, commandArgs));
        }
        if (name === "tierls.planRefactor") {
          return handlePlan(await next(name, commandArgs));
        }
        if (name === "tierls.editSelection" && commandArgs[0] && !commandArgs[0].instruction) {
          const instruction = await askEditInstruction();
          if (!instruction) {
            return undefined;
          }
          return handleExecuted(await next(name, [{ ...commandArgs[0], instruction }]));
        }
        if (name === "tierls.executePlan" || name === "tierls.editSelection") {
          return handleExecuted(await next(name, commandArgs));
        }
        return next(name, commandArgs);
      },
    },
  };
  client = new LanguageClient("tierls", "tierls", serverOptions, clientOptions);
  // A worker node's health changed: show it now rather than at the next poll.
  client.onNotification("tierls/nodesChanged", () => void refreshStatus());
  client.onDidChangeState((event) => {
    setStatus(event.newState === State.Running ? "running" : event.newState === State.Starting ? "starting" : "stopped");
  });
  setStatus("starting");
  try {
    await client.start();
  } catch (error) {
    setStatus("failed");
    // Said once: the client does not retry a start that failed.
    void vscode.window.showErrorMessage(logic.startFailure(command, error as { code?: string; message?: string } | string));
  }
}

function askInstruction(): Thenable<string | undefined> {
  return vscode.window.showInputBox({
    title: "tierls: Plan refactor",
    prompt: "What should change?",
    placeHolder: "extract the parsing into its own function",
  });
}

function askEditInstruction(): Thenable<string | undefined> {
  return vscode.window.showInputBox({
    title: "tierls: Edit selection",
    prompt: "How should the selected code change?",
    placeHolder: "sum the areas with an iterator",
  });
}

async function handlePlan(result: unknown): Promise<unknown> {
  const plan = result as logic.PlanResult | undefined;
  if (!plan || typeof plan.planId !== "number") {
    return result;
  }
  lastPlan = plan.planId;
  const shown = (result as { documentUri?: string }).documentUri;
  if (!shown) {
    // The server opens the plan itself when it can (window/showDocument).
    const document = await vscode.workspace.openTextDocument({ content: plan.document, language: "markdown" });
    await vscode.window.showTextDocument(document, { preview: true, viewColumn: vscode.ViewColumn.Beside });
  }
  if (plan.steps.length === 0) {
    void vscode.window.showWarningMessage(logic.planSummary(plan));
    return result;
  }
  const choice = await vscode.window.showInformationMessage(logic.planSummary(plan), "Execute", "Discard");
  if (choice === "Execute") {
    await runCommand("tierls.executePlan", { planId: plan.planId });
  } else if (choice === "Discard") {
    await runCommand("tierls.discardPlan", { planId: plan.planId });
  }
  return result;
}

function handleExecuted(result: unknown): unknown {
  const executed = result as logic.ExecuteResult | undefined;
  if (executed && typeof executed.planId === "number") {
    const message = logic.executeSummary(executed);
    if (executed.applied) {
      void vscode.window.showInformationMessage(message);
    } else {
      void vscode.window.showWarningMessage(message);
    }
  }
  return result;
}

async function runCommand(command: string, argument: unknown): Promise<unknown> {
  if (!client || client.state !== State.Running) {
    void vscode.window.showWarningMessage("tierls: the server is not running");
    return undefined;
  }
  const busy = { "tierls.planRefactor": "planning", "tierls.editSelection": "editing" }[command] ?? "executing";
  setStatus("running", busy);
  try {
    const result = await client.sendRequest(ExecuteCommandRequest.type, { command, arguments: [argument] });
    return command === "tierls.executePlan" || command === "tierls.editSelection" ? handleExecuted(result) : result;
  } catch (error) {
    void vscode.window.showErrorMessage(`tierls: ${(error as Error).message}`);
    return undefined;
  } finally {
    setStatus("running");
  }
}

async function planRefactorPrompt(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor || !client) {
    return;
  }
  const instruction = await askInstruction();
  if (!instruction) {
    return;
  }
  const result = await runCommand("tierls.planRefactor", {
    uri: editor.document.uri.toString(),
    range: client.code2ProtocolConverter.asRange(editor.selection),
    instruction,
  });
  await handlePlan(result);
}

/** "Edit selection…": the selection's symbols rewritten as told; the server sends the edit
 * annotated for review, so VS Code shows it as a diff (the refactor preview) first. */
async function editSelectionPrompt(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor || !client) {
    return;
  }
  if (editor.selection.isEmpty) {
    void vscode.window.showWarningMessage("tierls: select the code to edit first");
    return;
  }
  const instruction = await askEditInstruction();
  if (!instruction) {
    return;
  }
  await runCommand("tierls.editSelection", {
    uri: editor.document.uri.toString(),
    range: client.code2ProtocolConverter.asRange(editor.selection),
    instruction,
  });
}

const inlineCompletions: vscode.InlineCompletionItemProvider = {
  async provideInlineCompletionItems(document, position, _context, token) {
    if (!client || client.state !== State.Running) {
      return [];
    }
    if (!vscode.workspace.getConfiguration("tierls").get<boolean>("inlineCompletions.enabled", true)) {
      return [];
    }
    const result = await client.sendRequest<{ items: Array<{ insertText: string; range?: unknown }> }>(
      "textDocument/inlineCompletion",
      {
        textDocument: { uri: document.uri.toString() },
        position: client.code2ProtocolConverter.asPosition(position),
        context: { triggerKind: 2 },
      },
      token,
    );
    return (result?.items ?? []).map(
      (item) => new vscode.InlineCompletionItem(item.insertText, new vscode.Range(position, position)),
    );
  },
};

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  status = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  status.command = "tierls.showStatus";
  status.show();
  context.subscriptions.push(
    status,
    vscode.commands.registerCommand("tierls.planRefactorPrompt", planRefactorPrompt),
    vscode.commands.registerCommand("tierls.editSelectionPrompt", editSelectionPrompt),
    vscode.commands.registerCommand("tierls.executeLastPlan", () =>
      lastPlan === undefined ? undefined : runCommand("tierls.executePlan", { planId: lastPlan }),
    ),
    vscode.commands.registerCommand("tierls.discardLastPlan", () =>
      lastPlan === undefined ? undefined : runCommand("tierls.discardPlan", { planId: lastPlan }),
    ),
    vscode.commands.registerCommand("tierls.restartServer", async () => {
      restarts.reset();
      if (client) {
        await client.stop().catch(() => undefined);
      }
      await start();
    }),
    vscode.commands.registerCommand("tierls.showStatus", async () => {
      const state = client ? State[client.state] : "not started";
      await refreshStatus();
      void vscode.window.showInformationMessage(`tierls: ${state}\n${status.tooltip ?? ""}`, { modal: true });
    }),
    vscode.languages.registerInlineCompletionItemProvider(
      LANGUAGES.map((language) => ({ scheme: "file", language })),
      inlineCompletions,
    ),
  );
  const timer = setInterval(() => void refreshStatus(), 5000);
  context.subscriptions.push({ dispose: () => clearInterval(timer) });
  await start();
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
