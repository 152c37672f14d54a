//! `tierls demo`: starts `tierls serve` as an editor would, on a sample workspace, and
//! narrates the exchange. It grows as features land.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Instant;

use serde_json::{Value, json};
use tower_lsp::lsp_types::Url;

use super::output;
use crate::config::{Tier, TierConfig};
use crate::core::generation::{GenerateRequest, Prompt};
use crate::lsp::client::LspClient;
use crate::lsp::ext;
use crate::models::embedded::test_model_path;
use crate::models::tiers::TierSet;
use crate::models::{Cancel, GenerationEvent, machine};

/// The sample workspace bundled with the sources.
fn bundled_workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample-workspace")
}

pub fn run(workspace: Option<PathBuf>) -> ExitCode {
    let workspace = workspace.unwrap_or_else(bundled_workspace);
    let Some(runtime) = super::runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(demo(&workspace)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            output::error(&format!("demo failed: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn demo(workspace: &Path) -> anyhow::Result<()> {
    let workspace = workspace
        .canonicalize()
        .map_err(|err| anyhow::anyhow!("workspace {}: {err}", workspace.display()))?;
    let root = Url::from_directory_path(&workspace)
        .map_err(|()| anyhow::anyhow!("{} is not an absolute path", workspace.display()))?;
    output::line(&format!("tierls demo on {}", workspace.display()));

    let started = Instant::now();
    let (mut server, mut client) = start_server(&[])?;

    let init = client
        .request(
            "initialize",
            json!({
                "processId": std::process::id(),
                "rootUri": root,
                "capabilities": {
                    "general": { "positionEncodings": ["utf-8", "utf-16"] },
                    "window": { "workDoneProgress": true },
                    "workspace": { "workspaceEdit": { "documentChanges": true, "resourceOperations": ["create"] } },
                },
                // The executor tier runs the test model, which needs a chat template.
                "initializationOptions": {
                    "tiers": { "executor": { "model": test_model_path(), "context": 4096, "chat_template": "gemma" } },
                    "plan": { "max_step_tokens": 256 },
                },
            }),
        )
        .await?;
    let result = init
        .get("result")
        .ok_or_else(|| anyhow::anyhow!("initialize failed: {init}"))?;
    output::line(&format!(
        "  started `tierls serve` ({} {}) in {} ms",
        result["serverInfo"]["name"].as_str().unwrap_or("?"),
        result["serverInfo"]["version"].as_str().unwrap_or("?"),
        started.elapsed().as_millis()
    ));
    output::line(&format!(
        "  position encoding: {}",
        result["capabilities"]["positionEncoding"]
            .as_str()
            .unwrap_or("utf-16")
    ));
    let capabilities: Vec<_> = result["capabilities"]
        .as_object()
        .map(|caps| caps.keys().cloned().collect())
        .unwrap_or_default();
    output::line(&format!("  capabilities: {}", capabilities.join(", ")));
    client.notify("initialized", json!({})).await?;

    let file = workspace.join("src/shapes.rs");
    let uri =
        Url::from_file_path(&file).map_err(|()| anyhow::anyhow!("bad path {}", file.display()))?;
    let text = std::fs::read_to_string(&file)?;
    client
        .notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": "rust", "version": 1, "text": text } }),
        )
        .await?;
    output::line(&format!(
        "  opened src/shapes.rs ({} lines)",
        text.lines().count()
    ));

    let edit = "\n/// Added by the demo through an incremental didChange.\npub fn unit_square() -> Square {\n    Square { side: 1.0 }\n}\n";
    let end_line = text.lines().count();
    client
        .notify(
            "textDocument/didChange",
            json!({
                "textDocument": { "uri": uri, "version": 2 },
                "contentChanges": [{ "range": {
                    "start": { "line": end_line, "character": 0 },
                    "end": { "line": end_line, "character": 0 } }, "text": edit }],
            }),
        )
        .await?;
    let view = client
        .request(ext::VIEW_DOCUMENT, json!({ "uri": uri }))
        .await?;
    let server_text = view["result"]["text"].as_str().unwrap_or_default();
    let expected = format!("{text}{edit}");
    output::line(&format!(
        "  inserted a function: the server's text (version {}) {} the editor's",
        view["result"]["version"],
        if server_text == expected {
            "matches"
        } else {
            "DIFFERS FROM"
        }
    ));
    if server_text != expected {
        anyhow::bail!("the server's text differs from the editor's");
    }

    let unopened = Url::from_file_path(workspace.join("scripts/report.py"))
        .map_err(|()| anyhow::anyhow!("bad path"))?;
    let from_disk = client
        .request(ext::VIEW_DOCUMENT, json!({ "uri": unopened }))
        .await?;
    describe_view(&from_disk, "scripts/report.py");

    plan_refactor(&mut client, &uri, &expected).await?;

    let shutdown = client.shutdown().await?;
    if shutdown.get("error").is_some() {
        anyhow::bail!("shutdown failed: {shutdown}");
    }
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), server.wait()).await??;
    output::line(&format!(
        "  shutdown and exit: the server ended with {status}"
    ));
    if !status.success() {
        anyhow::bail!("the server did not exit cleanly");
    }
    agent_edit(&workspace, &root).await?;
    fast_tier(&text).await
}

/// `tierls serve` as an editor starts it, with `extra` arguments.
fn start_server(extra: &[&std::ffi::OsStr]) -> anyhow::Result<(tokio::process::Child, LspClient)> {
    let mut server = tokio::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .args(extra)
        .env(
            "TIERLS_LOG",
            std::env::var("TIERLS_LOG")
                .unwrap_or_else(|_| "warn,llama-cpp-2=error,llama_cpp_2=error".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let Some(client) = LspClient::of_child(&mut server) else {
        anyhow::bail!("the server's stdio was not captured");
    };
    // Planning on a loaded machine can take a while: wait for answers as an editor would.
    Ok((
        server,
        client.with_timeout(std::time::Duration::from_secs(600)),
    ))
}

/// The planner's answer in the agent-edit part: a 70B planner's job, which the 270M test
/// model cannot do reliably, so it is scripted; the executors are the test model.
const AGENT_PLAN: &str = r#"{"summary": "Scale total_area.", "steps": [{"id": 1, "action": "replace_symbol", "file": "src/shapes.rs", "target": "total_area", "instruction": "Add a `scale: f64` parameter after `shapes`, and multiply the sum by it.", "depends_on": []}, {"id": 2, "action": "update_references", "file": "src/shapes.rs", "target": "total_area", "instruction": "Pass 1.0 as the new scale argument.", "depends_on": [1]}]}"#;

/// The check the agent-edit part runs on its scratch copies.
const AGENT_CHECK: &str =
    "rustc --edition 2021 --error-format short --emit metadata --out-dir .check src/main.rs";

/// A workspace-wide agent edit through a second server: a fan-out over every use of
/// `total_area`, executed by the test model, checked by `rustc` round by round, and the
/// one edit it ends in (answered as applied here; the sample files are never written).
async fn agent_edit(workspace: &Path, root: &Url) -> anyhow::Result<()> {
    let script = tempfile::NamedTempFile::new()?;
    let rules = json!({ "planner": [{ "needle": "Request:", "answers": [AGENT_PLAN] }] });
    std::fs::write(script.path(), rules.to_string())?;
    output::line(&format!(
        "agent edit: \"add a scale parameter to total_area\", with plan.check = `{AGENT_CHECK}`"
    ));
    output::line(
        "  (the planner's answer is scripted: planning a fan-out is the 70B tier's job; the executor is the test model)",
    );
    let (mut server, mut client) = start_server(&[
        std::ffi::OsStr::new("--scripted-models"),
        script.path().as_os_str(),
    ])?;
    let init = client
        .request(
            "initialize",
            json!({
                "processId": std::process::id(),
                "rootUri": root,
                "capabilities": {
                    "window": { "workDoneProgress": true },
                    "workspace": { "workspaceEdit": { "documentChanges": true, "resourceOperations": ["create"] } },
                },
                "initializationOptions": {
                    "index": { "enabled": true },
                    "tiers": { "executor": { "model": test_model_path(), "context": 4096, "chat_template": "gemma" } },
                    "plan": { "max_step_tokens": 256, "check": AGENT_CHECK, "max_rounds": 1 },
                },
            }),
        )
        .await?;
    if init.get("result").is_none() {
        anyhow::bail!("initialize failed: {init}");
    }
    client.notify("initialized", json!({})).await?;
    wait_for_index(&mut client).await?;
    let file = workspace.join("src/shapes.rs");
    let uri =
        Url::from_file_path(&file).map_err(|()| anyhow::anyhow!("bad path {}", file.display()))?;
    let text = std::fs::read_to_string(&file)?;
    client
        .notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": "rust", "version": 1, "text": text } }),
        )
        .await?;
    let line = text[..text.find("pub fn total_area").unwrap_or(0)]
        .matches('\n')
        .count();
    let planned = client
        .request(
            "workspace/executeCommand",
            json!({ "command": "tierls.planRefactor", "arguments": [{
                "uri": uri,
                "range": { "start": { "line": line, "character": 4 }, "end": { "line": line, "character": 4 } },
                "instruction": "add a `scale: f64` parameter to `total_area` and pass 1.0 at every call site",
            }] }),
        )
        .await?;
    let Some(plan) = planned.get("result") else {
        anyhow::bail!("planning failed: {}", planned["error"]["message"]);
    };
    for line in plan["document"].as_str().unwrap_or_default().lines() {
        output::line(&format!("  | {line}"));
    }
    client.answer_with("workspace/applyEdit", json!({ "applied": true }));
    client.answer_with(
        "window/showMessageRequest",
        json!({ "title": "Leave the files unchanged" }),
    );
    let started = Instant::now();
    let executed = client
        .request(
            "workspace/executeCommand",
            json!({ "command": "tierls.executePlan", "arguments": [{ "planId": plan["planId"] }] }),
        )
        .await?;
    let messages = client.drain(std::time::Duration::from_millis(200)).await?;
    for message in &messages {
        if message["method"] == "$/progress"
            && let Some(text) = message["params"]["value"]["message"].as_str()
            && text.starts_with("round")
        {
            output::line(&format!("  $/progress: {text}"));
        }
    }
    let result = &executed["result"];
    output::line(&format!(
        "  executed in {:.1} s; {} steps ran",
        started.elapsed().as_secs_f64(),
        result["steps"].as_array().map_or(0, Vec::len)
    ));
    for line in result["check"]["document"]
        .as_str()
        .unwrap_or_default()
        .lines()
    {
        output::line(&format!("  | {line}"));
    }
    let sent = messages
        .iter()
        .filter(|message| message["method"] == "workspace/applyEdit")
        .count();
    output::line(&format!(
        "  the server sent {sent} workspace/applyEdit; applied: {}{}",
        result["applied"],
        result["reason"]
            .as_str()
            .map(|reason| format!(" ({reason})"))
            .unwrap_or_default()
    ));
    client.shutdown().await?;
    tokio::time::timeout(std::time::Duration::from_secs(10), server.wait()).await??;
    Ok(())
}

/// Waits (at most a minute) for the index's `$/progress` to end.
async fn wait_for_index(client: &mut LspClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while Instant::now() < deadline {
        for message in client.drain(std::time::Duration::from_millis(200)).await? {
            if message["method"] == "$/progress"
                && message["params"]["token"] == "tierls/index"
                && message["params"]["value"]["kind"] == "end"
            {
                return Ok(());
            }
        }
    }
    anyhow::bail!("the index did not finish within a minute")
}

/// The fast tier with the default model (the test model): how it is placed on this machine,
/// then a continuation of the file the editor opened, streamed as it is generated.
async fn fast_tier(text: &str) -> anyhow::Result<()> {
    let tier = TierConfig {
        context: 2048,
        ..TierConfig::default()
    };
    let tiers = TierSet::new(machine::detect());
    let path = test_model_path();
    tiers.configure(Tier::Fast, path.clone(), &tier)?;
    output::line(&format!("fast tier: {}", path.display()));
    let loading = Instant::now();
    let loader = tiers.clone();
    tokio::task::spawn_blocking(move || loader.load(Tier::Fast)).await??;
    output::line(&format!("  loaded in {} ms", loading.elapsed().as_millis()));
    let model = tiers.get(Tier::Fast)?;

    // The test model has no FIM tokens: it continues the text up to the cursor.
    let cursor = text.find("pub fn total_area").unwrap_or(text.len());
    let request = GenerateRequest {
        prompt: Prompt::Fim {
            prefix: text[..cursor].to_owned(),
            suffix: text[cursor..].to_owned(),
            context: Default::default(),
        },
        stop: vec!["\n\n".into()],
        ..GenerateRequest::text("", 48)
    };
    output::line("  completion at `pub fn total_area` in src/shapes.rs:");
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    model.submit(0, request, Cancel::new(), sender);
    let mut shown = String::new();
    while let Some(event) = events.recv().await {
        match event {
            GenerationEvent::Piece(piece) => shown.push_str(&piece),
            GenerationEvent::Done(result) => {
                let generation = result?;
                for line in shown.lines() {
                    output::line(&format!("    | {line}"));
                }
                output::line(&format!(
                    "  {} prompt tokens ({} evaluated), {} generated, stopped by {:?}; FIM tokens: {}",
                    generation.usage.prompt_tokens,
                    generation.usage.evaluated_tokens,
                    generation.usage.generated_tokens,
                    generation.stop_reason,
                    if generation.usage.used_fim {
                        "used"
                    } else {
                        "none in this model, prefix prompt"
                    },
                ));
                return Ok(());
            }
        }
    }
    anyhow::bail!("the model's worker stopped")
}

/// "Plan this refactor" on the function the cursor is in: the plan, the steps, and the
/// edit the server sends, applied here as an editor would.
async fn plan_refactor(client: &mut LspClient, uri: &Url, text: &str) -> anyhow::Result<()> {
    let Some(offset) = text.find("pub fn total_area") else {
        return Ok(());
    };
    let line = text[..offset].matches('\n').count();
    output::line(
        "  plan this refactor: \"add a doc comment to total_area\" (the executor tier plans: no planner is configured)",
    );
    let started = Instant::now();
    let planned = client
        .request(
            "workspace/executeCommand",
            json!({ "command": "tierls.planRefactor", "arguments": [{
                "uri": uri,
                "range": { "start": { "line": line, "character": 4 }, "end": { "line": line, "character": 4 } },
                "instruction": "add a doc comment to total_area",
            }] }),
        )
        .await?;
    let Some(plan) = planned.get("result") else {
        output::line(&format!(
            "    planning failed: {}",
            planned["error"]["message"]
        ));
        return Ok(());
    };
    output::line(&format!(
        "    planned in {} ms ({} tokens):",
        started.elapsed().as_millis(),
        plan["plannerTokens"]
    ));
    for line in plan["document"].as_str().unwrap_or_default().lines() {
        output::line(&format!("    | {line}"));
    }
    if plan["steps"].as_array().is_none_or(Vec::is_empty) {
        return Ok(());
    }
    client.answer_with("workspace/applyEdit", json!({ "applied": true }));
    let started = Instant::now();
    let executed = client
        .request(
            "workspace/executeCommand",
            json!({ "command": "tierls.executePlan", "arguments": [{ "planId": plan["planId"] }] }),
        )
        .await?;
    let result = &executed["result"];
    output::line(&format!(
        "    executed in {} ms:",
        started.elapsed().as_millis()
    ));
    for step in result["steps"].as_array().into_iter().flatten() {
        let answers = if step["answers"] == 1 {
            "answer"
        } else {
            "answers"
        };
        output::line(&format!(
            "    step {}: {} ({} {answers}, {} tokens)",
            step["id"],
            step["outcome"].as_str().unwrap_or("?"),
            step["answers"],
            step["tokens"]
        ));
    }
    let edits = client
        .drain(std::time::Duration::from_millis(200))
        .await?
        .into_iter()
        .filter(|message| message["method"] == "workspace/applyEdit")
        .collect::<Vec<_>>();
    match edits.first() {
        Some(request) => {
            let changes = request["params"]["edit"]["documentChanges"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            output::line(&format!(
                "    the server sent one workspace/applyEdit with {} document change(s); applied: {}",
                changes.len(),
                result["applied"]
            ));
        }
        None => output::line(&format!(
            "    {}",
            result["reason"]
                .as_str()
                .unwrap_or("nothing to change: no step changed a file")
        )),
    }
    Ok(())
}

fn describe_view(view: &Value, name: &str) {
    match view.get("result") {
        Some(result) => output::line(&format!(
            "  read {name} from {} ({} bytes) without opening it",
            result["source"].as_str().unwrap_or("?"),
            result["text"].as_str().map_or(0, str::len)
        )),
        None => output::line(&format!(
            "  reading {name} failed: {}",
            view["error"]["message"]
        )),
    }
}
