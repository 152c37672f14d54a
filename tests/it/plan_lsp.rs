//! "Plan this refactor" through the editor: code actions, the plan, `$/progress`, one
//! versioned `WorkspaceEdit`, and what the user does meanwhile (typing, cancelling,
//! refusing the edit), with scripted models serving the planner and executor tiers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tierls::config::Tier;
use tierls::models::Model;
use tierls::models::scripted::ScriptedModel;

use crate::support::TestServer;

const GEOMETRY: &str = include_str!("../fixtures/plans/rust/src/geometry.rs");
const MAIN: &str = include_str!("../fixtures/plans/rust/src/main.rs");

const PLAN: &str = r#"{"summary": "Use PI.", "steps": [
    {"id": 1, "action": "replace_symbol", "file": "src/geometry.rs", "target": "Circle::area", "instruction": "Use std::f64::consts::PI.", "depends_on": []},
    {"id": 2, "action": "replace_symbol", "file": "src/geometry.rs", "target": "Circle::perimeter", "instruction": "Use std::f64::consts::PI.", "depends_on": []}]}"#;

const NEW_AREA: &str = "/// The area of the circle.\npub fn area(&self) -> f64 {\n    std::f64::consts::PI * self.radius * self.radius\n}";
const NEW_PERIMETER: &str =
    "pub fn perimeter(&self) -> f64 {\n    2.0 * std::f64::consts::PI * self.radius\n}";

fn executor(per_token: Duration) -> ScriptedModel {
    ScriptedModel::new(1)
        .per_token(per_token)
        .answer("Your step: 1.", &[NEW_AREA])
        .answer("Your step: 2.", &[NEW_PERIMETER])
}

fn capabilities(document_changes: bool) -> Value {
    json!({
        "window": { "workDoneProgress": true },
        "workspace": { "workspaceEdit": { "documentChanges": document_changes, "resourceOperations": ["create"] } },
    })
}

/// A server over the Rust fixture with scripted planner and executor, indexed, with
/// `src/geometry.rs` open.
async fn start(
    plan: &str,
    executor: ScriptedModel,
    document_changes: bool,
) -> (TestServer, Arc<ScriptedModel>) {
    let planner = Arc::new(ScriptedModel::new(1).answer("Request:", &[plan]));
    let models: Vec<(Tier, Arc<dyn Model>)> = vec![
        (Tier::Planner, planner.clone()),
        (Tier::Executor, Arc::new(executor)),
    ];
    let mut server = TestServer::start_with_models(
        &[
            ("src/geometry.rs", GEOMETRY.as_bytes()),
            ("src/main.rs", MAIN.as_bytes()),
        ],
        models,
    );
    server
        .initialize_as(
            capabilities(document_changes),
            // These tests are about the planner's plans: a one-symbol focus would skip it.
            json!({ "index": { "enabled": true }, "routing": { "skip_planner": false } }),
        )
        .await;
    wait_for_progress_end(&mut server, "tierls/index").await;
    server.open("src/geometry.rs", GEOMETRY).await;
    (server, planner)
}

async fn wait_for_progress_end(server: &mut TestServer, token: &str) {
    loop {
        let progress = server.client.wait_for("$/progress").await.unwrap();
        if progress["params"]["token"] == token && progress["params"]["value"]["kind"] == "end" {
            return;
        }
    }
}

/// Waits for a `$/progress` report whose message starts with `prefix`.
async fn wait_for_report(server: &mut TestServer, prefix: &str) {
    loop {
        let progress = server.client.wait_for("$/progress").await.unwrap();
        let message = progress["params"]["value"]["message"]
            .as_str()
            .unwrap_or_default();
        if message.starts_with(prefix) {
            return;
        }
    }
}

/// Sends `tierls.executePlan` for `plan_id` and returns the request's id at once, so that
/// the test can act while the steps run.
async fn execute_without_waiting(server: &mut TestServer, plan_id: u32) -> i64 {
    server
        .client
        .send_request(
            "workspace/executeCommand",
            json!({ "command": "tierls.executePlan", "arguments": [{ "planId": plan_id }] }),
        )
        .await
        .unwrap()
}

async fn command(server: &mut TestServer, command: &str, arguments: Value) -> Value {
    server
        .client
        .request(
            "workspace/executeCommand",
            json!({ "command": command, "arguments": [arguments] }),
        )
        .await
        .unwrap()
}

async fn code_action_titles(server: &mut TestServer, path: &str, line: u32) -> Vec<String> {
    let uri = server.uri(path);
    let response = server
        .client
        .request(
            "textDocument/codeAction",
            json!({
                "textDocument": { "uri": uri },
                "range": { "start": { "line": line, "character": 4 }, "end": { "line": line, "character": 4 } },
                "context": { "diagnostics": [] },
            }),
        )
        .await
        .unwrap();
    response["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|action| action["title"].as_str().unwrap().to_owned())
        .collect()
}

async fn plan(server: &mut TestServer, instruction: &str) -> Value {
    let uri = server.uri("src/geometry.rs");
    let response = command(
        server,
        "tierls.planRefactor",
        json!({ "uri": uri, "range": { "start": { "line": 9, "character": 4 }, "end": { "line": 9, "character": 4 } }, "instruction": instruction }),
    )
    .await;
    assert!(response.get("error").is_none(), "{response}");
    response["result"].clone()
}

/// Applies an LSP `TextEdit` list (line/character positions, ASCII text) to `text`.
fn apply_text_edits(text: &str, edits: &Value) -> String {
    let offset = |position: &Value| {
        let line = position["line"].as_u64().unwrap() as usize;
        let character = position["character"].as_u64().unwrap() as usize;
        let line_start: usize = text.split_inclusive('\n').take(line).map(str::len).sum();
        line_start + character
    };
    let mut edits: Vec<&Value> = edits.as_array().unwrap().iter().collect();
    edits.sort_by_key(|edit| std::cmp::Reverse(offset(&edit["range"]["start"])));
    let mut out = text.to_owned();
    for edit in edits {
        let (start, end) = (
            offset(&edit["range"]["start"]),
            offset(&edit["range"]["end"]),
        );
        out.replace_range(start..end, edit["newText"].as_str().unwrap());
    }
    out
}

/// Every message the client kept that is a `method` one.
fn kept<'m>(messages: &'m [Value], method: &str) -> Vec<&'m Value> {
    messages.iter().filter(|m| m["method"] == method).collect()
}

#[tokio::test]
async fn a_plan_goes_from_code_action_to_one_versioned_edit() {
    let (mut server, planner) = start(PLAN, executor(Duration::ZERO), true).await;
    let mut out = format!(
        "actions: {:?}\n",
        code_action_titles(&mut server, "src/geometry.rs", 9).await
    );
    let planned = plan(&mut server, "use PI").await;
    assert!(planner.prompts()[0].contains("Target: `Circle::area` (method) in src/geometry.rs"));
    out.push_str(&format!(
        "plan {}:\n{}\n",
        planned["planId"],
        planned["document"].as_str().unwrap()
    ));
    out.push_str(&format!(
        "actions: {:?}\n",
        code_action_titles(&mut server, "src/geometry.rs", 9).await
    ));
    server
        .client
        .answer_with("workspace/applyEdit", json!({ "applied": true }));
    let response = command(&mut server, "tierls.executePlan", json!({ "planId": 1 })).await;
    out.push_str(&format!("result: {}\n", response["result"]));
    let messages = server
        .client
        .drain(Duration::from_millis(300))
        .await
        .unwrap();
    let apply = kept(&messages, "workspace/applyEdit");
    assert_eq!(apply.len(), 1, "one edit for the whole plan");
    let operations = &apply[0]["params"]["edit"]["documentChanges"];
    let edit = &operations[0];
    out.push_str(&format!(
        "edit version: {}\n",
        edit["textDocument"]["version"]
    ));
    for progress in kept(&messages, "$/progress") {
        if progress["params"]["token"] == "tierls/execute/1" {
            out.push_str(&format!("progress: {}\n", progress["params"]["value"]));
        }
    }
    out.push_str(&format!(
        "text after the edit:\n{}",
        apply_text_edits(GEOMETRY, &edit["edits"])
    ));
    insta::assert_snapshot!(out);
    // The plan ran: it cannot run twice.
    let again = command(&mut server, "tierls.executePlan", json!({ "planId": 1 })).await;
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no pending plan 1"),
        "{again}"
    );
}

#[tokio::test]
async fn the_editor_refusing_the_edit_is_reported() {
    let (mut server, _) = start(PLAN, executor(Duration::ZERO), true).await;
    plan(&mut server, "use PI").await;
    server.client.answer_with(
        "workspace/applyEdit",
        json!({ "applied": false, "failureReason": "the file is read-only" }),
    );
    let response = command(&mut server, "tierls.executePlan", json!({ "planId": 1 })).await;
    let result = &response["result"];
    assert_eq!(result["applied"], false, "{response}");
    assert_eq!(result["reason"], "the file is read-only");
    let messages = server
        .client
        .drain(Duration::from_millis(300))
        .await
        .unwrap();
    let shown: Vec<&str> = kept(&messages, "window/showMessage")
        .iter()
        .filter_map(|m| m["params"]["message"].as_str())
        .collect();
    assert!(
        shown.contains(&"tierls: plan 1: the editor did not apply the edit: the file is read-only"),
        "{shown:?}"
    );
    // The server's copy is the editor's: unchanged.
    assert_eq!(server.text_of("src/geometry.rs").await, GEOMETRY);
}

/// Plans "use PI", executes it, and once step 1 is under way applies `typed` to the
/// document as the user would; returns the server and the `executePlan` response.
async fn execute_while_typing(typed: Value) -> (TestServer, Value) {
    let (mut server, _) = start(PLAN, executor(Duration::from_millis(15)), true).await;
    plan(&mut server, "use PI").await;
    server
        .client
        .answer_with("workspace/applyEdit", json!({ "applied": true }));
    let id = execute_without_waiting(&mut server, 1).await;
    wait_for_report(&mut server, "step 1").await;
    server.change("src/geometry.rs", 2, typed).await;
    let response = server
        .client
        .response_to(json!(id), "executePlan")
        .await
        .unwrap();
    (server, response)
}

/// The user types above the code while the steps run: the edit is computed against the new
/// text and carries its version, and the user's line survives.
#[tokio::test]
async fn typing_elsewhere_during_the_plan_keeps_both_changes() {
    let typed = json!([{ "range": { "start": { "line": 0, "character": 0 }, "end": { "line": 0, "character": 0 } }, "text": "// typed meanwhile\n" }]);
    let (mut server, response) = execute_while_typing(typed).await;
    assert_eq!(response["result"]["applied"], true, "{response}");
    let messages = server
        .client
        .drain(Duration::from_millis(300))
        .await
        .unwrap();
    let apply = kept(&messages, "workspace/applyEdit");
    let edit = &apply[0]["params"]["edit"]["documentChanges"][0];
    assert_eq!(
        edit["textDocument"]["version"], 2,
        "the edit is for the text the user has now"
    );
    let now = format!("// typed meanwhile\n{GEOMETRY}");
    let after = apply_text_edits(&now, &edit["edits"]);
    assert!(after.starts_with("// typed meanwhile\n"), "{after}");
    assert!(
        after.contains("std::f64::consts::PI * self.radius * self.radius"),
        "{after}"
    );
    assert!(
        after.contains("2.0 * std::f64::consts::PI * self.radius"),
        "{after}"
    );
}

/// The user rewrites a step's own symbol while the plan runs: that step is refused, never
/// applied over the user's work; the other step still lands.
#[tokio::test]
async fn editing_a_steps_symbol_during_the_plan_refuses_that_step() {
    // `area`'s body is on line 10: the user replaces 3.14 there.
    let typed = json!([{ "range": { "start": { "line": 10, "character": 8 }, "end": { "line": 10, "character": 12 } }, "text": "3.1416" }]);
    let (mut server, response) = execute_while_typing(typed).await;
    let result = &response["result"];
    assert_eq!(result["refused"][0]["id"], 1, "{response}");
    assert!(
        result["refused"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("changed since the step read it")
    );
    let messages = server
        .client
        .drain(Duration::from_millis(300))
        .await
        .unwrap();
    let edit = &kept(&messages, "workspace/applyEdit")[0]["params"]["edit"]["documentChanges"][0];
    let now = GEOMETRY.replacen(
        "3.14 * self.radius * self.radius",
        "3.1416 * self.radius * self.radius",
        1,
    );
    let after = apply_text_edits(&now, &edit["edits"]);
    assert!(
        after.contains("3.1416 * self.radius * self.radius"),
        "{after}"
    );
    assert!(
        after.contains("2.0 * std::f64::consts::PI * self.radius"),
        "{after}"
    );
}

/// `window/workDoneProgress/cancel` mid-step: decoding stops, nothing is sent to apply.
#[tokio::test]
async fn cancelling_from_the_editor_changes_nothing() {
    let (mut server, _) = start(PLAN, executor(Duration::from_millis(40)), true).await;
    plan(&mut server, "use PI").await;
    let id = execute_without_waiting(&mut server, 1).await;
    wait_for_report(&mut server, "step 1").await;
    server
        .client
        .notify(
            "window/workDoneProgress/cancel",
            json!({ "token": "tierls/execute/1" }),
        )
        .await
        .unwrap();
    let response = server
        .client
        .response_to(json!(id), "executePlan")
        .await
        .unwrap();
    assert_eq!(response["result"]["cancelled"], true, "{response}");
    assert_eq!(response["result"]["steps"][0]["outcome"], "cancelled");
    let messages = server
        .client
        .drain(Duration::from_millis(300))
        .await
        .unwrap();
    assert!(kept(&messages, "workspace/applyEdit").is_empty());
    let end = kept(&messages, "$/progress")
        .into_iter()
        .filter(|m| m["params"]["value"]["kind"] == "end")
        .map(|m| m["params"]["value"]["message"].clone())
        .collect::<Vec<_>>();
    assert_eq!(end, vec![json!("cancelled: nothing changed")]);
}

/// A discarded plan is gone: executing it afterwards changes nothing.
#[tokio::test]
async fn a_discarded_plan_changes_nothing() {
    let (mut server, _) = start(PLAN, executor(Duration::ZERO), true).await;
    plan(&mut server, "use PI").await;
    let discarded = command(&mut server, "tierls.discardPlan", json!({ "planId": 1 })).await;
    assert_eq!(discarded["result"]["discarded"], true, "{discarded}");
    let executed = command(&mut server, "tierls.executePlan", json!({ "planId": 1 })).await;
    assert!(
        executed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no pending plan 1")
    );
    let messages = server
        .client
        .drain(Duration::from_millis(200))
        .await
        .unwrap();
    assert!(kept(&messages, "workspace/applyEdit").is_empty());
    let titles = code_action_titles(&mut server, "src/geometry.rs", 9).await;
    assert!(
        titles.iter().all(|title| !title.contains("plan 1")),
        "{titles:?}"
    );
}

/// Every malformed command gets an error that says what is wrong; the server goes on.
#[tokio::test]
async fn bad_plan_commands_get_clear_errors() {
    let (mut server, _) = start(PLAN, executor(Duration::ZERO), true).await;
    let geometry = server.uri("src/geometry.rs");
    let main = server.uri("src/main.rs");
    let cursor =
        json!({ "start": { "line": 9, "character": 4 }, "end": { "line": 9, "character": 4 } });
    let cases = [
        (
            "tierls.planRefactor",
            json!([{ "uri": geometry, "range": cursor }]),
        ),
        (
            "tierls.planRefactor",
            json!([{ "uri": geometry, "range": cursor, "instruction": "   " }]),
        ),
        (
            "tierls.planRefactor",
            json!([{ "uri": main, "range": cursor, "instruction": "use PI" }]),
        ),
        (
            "tierls.planRefactor",
            json!([{ "uri": geometry, "range": { "start": { "line": 999, "character": 0 }, "end": { "line": 999, "character": 0 } }, "instruction": "use PI" }]),
        ),
        (
            "tierls.planRefactor",
            json!([{ "uri": geometry, "instruction": "x", "colour": "blue" }]),
        ),
        ("tierls.planRefactor", json!([])),
        ("tierls.planRefactor", json!(["src/geometry.rs"])),
        ("tierls.executePlan", json!([{ "planId": 42 }])),
        ("tierls.executePlan", json!([{ "planId": "one" }])),
        ("tierls.discardPlan", json!([{ "planId": 7 }])),
        ("tierls.formatDisk", json!([])),
    ];
    let mut out = String::new();
    for (command, arguments) in cases {
        let response = server
            .client
            .request(
                "workspace/executeCommand",
                json!({ "command": command, "arguments": arguments }),
            )
            .await
            .unwrap();
        let message = response["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {response}"));
        let root = server.root_uri().to_string();
        out.push_str(
            &format!(
                "{command} {arguments}\n  -> {}: {}\n",
                response["error"]["code"], message
            )
            .replace(&root, "$ROOT/"),
        );
    }
    insta::assert_snapshot!(out);
    server.round_trip().await;
    assert_eq!(server.text_of("src/geometry.rs").await, GEOMETRY);
}

/// Helix cannot prompt: a `tierls:` comment above a function offers its plan, about the
/// function below it.
#[tokio::test]
async fn a_tierls_comment_offers_its_own_plan() {
    let (mut server, planner) = start(PLAN, executor(Duration::ZERO), true).await;
    let commented = GEOMETRY.replace(
        "    pub fn perimeter",
        "    // tierls: use PI in perimeter\n    pub fn perimeter",
    );
    server
        .change("src/geometry.rs", 2, json!([{ "text": commented }]))
        .await;
    // The cursor is in `perimeter`'s body, two lines below the comment.
    let titles = code_action_titles(&mut server, "src/geometry.rs", 15).await;
    assert_eq!(titles[0], "tierls: Plan: use PI in perimeter", "{titles:?}");
    let uri = server.uri("src/geometry.rs");
    let response = command(
        &mut server,
        "tierls.planRefactor",
        json!({ "uri": uri, "range": { "start": { "line": 13, "character": 0 }, "end": { "line": 14, "character": 0 } }, "instruction": "use PI in perimeter" }),
    )
    .await;
    assert!(response["result"]["planId"].is_number(), "{response}");
    assert!(
        planner.prompts()[0].contains("Target: `Circle::perimeter` (method) in src/geometry.rs"),
        "{}",
        planner.prompts()[0]
    );
}

/// A client without `documentChanges` gets plain `changes`; a plan that creates a file
/// cannot be expressed that way and is refused whole.
#[tokio::test]
async fn clients_without_document_changes_get_plain_changes() {
    let (mut server, _) = start(PLAN, executor(Duration::ZERO), false).await;
    plan(&mut server, "use PI").await;
    server
        .client
        .answer_with("workspace/applyEdit", json!({ "applied": true }));
    let response = command(&mut server, "tierls.executePlan", json!({ "planId": 1 })).await;
    assert_eq!(response["result"]["applied"], true, "{response}");
    let messages = server
        .client
        .drain(Duration::from_millis(300))
        .await
        .unwrap();
    let edit = &kept(&messages, "workspace/applyEdit")[0]["params"]["edit"];
    let uri = server.uri("src/geometry.rs").to_string();
    let after = apply_text_edits(GEOMETRY, &edit["changes"][&uri]);
    assert!(
        after.contains("2.0 * std::f64::consts::PI * self.radius"),
        "{after}"
    );

    let creating = r#"{"summary": "s", "steps": [{"id": 1, "action": "create_file", "file": "src/pi.rs", "target": "", "instruction": "Define PI.", "depends_on": []}]}"#;
    let executor = ScriptedModel::new(1).answer("Your step: 1.", &["pub const PI: f64 = 3.14159;"]);
    let (mut server, _) = start(creating, executor, false).await;
    plan(&mut server, "add pi.rs").await;
    let response = command(&mut server, "tierls.executePlan", json!({ "planId": 1 })).await;
    let message = response["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot create files through an edit; nothing was changed"),
        "{response}"
    );
    assert!(!server.root.path().join("src/pi.rs").exists());
}

/// The whole flow on the real test model through the editor protocol: the grammar gives a
/// plan the server can check, the executor writes whatever a 270M model writes, and what
/// reaches the editor is one edit that parses no worse than the file did, with a report
/// that matches it.
#[tokio::test]
async fn the_whole_flow_runs_on_the_test_model() {
    let _turn = crate::support::one_model_at_a_time();
    let model = tierls::models::embedded::test_model_path();
    let mut server = TestServer::start(&[
        ("src/geometry.rs", GEOMETRY.as_bytes()),
        ("src/main.rs", MAIN.as_bytes()),
    ]);
    // llama.cpp on two shared cores: planning and each step's answers take their time (the
    // server bounds them itself: `plan.planner_seconds`, `plan.step_seconds`).
    server
        .client
        .set_timeout(std::time::Duration::from_secs(300));
    let options = json!({
        "index": { "enabled": true },
        "tiers": { "executor": { "model": model, "chat_template": "gemma", "context": 4096 } },
        "plan": { "max_step_tokens": 256 },
        // The plan grammar on llama.cpp is what this test is about: never skip the planner.
        "routing": { "skip_planner": false },
    });
    server.initialize_as(capabilities(true), options).await;
    wait_for_progress_end(&mut server, "tierls/index").await;
    server.open("src/geometry.rs", GEOMETRY).await;
    server
        .client
        .answer_with("workspace/applyEdit", json!({ "applied": true }));
    let planned = plan(&mut server, "use std::f64::consts::PI instead of 3.14").await;
    let steps = planned["steps"].as_array().unwrap().len();
    let rejected = planned["rejected"].as_array().unwrap().len();
    assert!(steps + rejected >= 1, "{planned}");
    let document = planned["document"].as_str().unwrap();
    assert!(
        document.starts_with("# Plan: use std::f64::consts::PI instead of 3.14"),
        "{document}"
    );
    // The plan came out of llama.cpp, not from a script.
    assert!(planned["plannerTokens"].as_u64().unwrap() > 0, "{planned}");
    if steps == 0 {
        return; // Nothing can run: the plan says why, and nothing is executed.
    }
    let id = planned["planId"].clone();
    let response = command(&mut server, "tierls.executePlan", json!({ "planId": id })).await;
    let result = &response["result"];
    assert_eq!(
        result["steps"].as_array().unwrap().len(),
        steps,
        "{response}"
    );
    // Every step that asked the executor got tokens decoded by llama.cpp.
    for step in result["steps"].as_array().unwrap() {
        if step["answers"].as_u64().unwrap() > 0 {
            assert!(step["tokens"].as_u64().unwrap() > 0, "{response}");
        }
    }
    let messages = server
        .client
        .drain(Duration::from_millis(300))
        .await
        .unwrap();
    let applies = kept(&messages, "workspace/applyEdit");
    if result["applied"] == true {
        assert_eq!(applies.len(), 1);
        let operations = applies[0]["params"]["edit"]["documentChanges"]
            .as_array()
            .unwrap();
        let errors = |text: &str| {
            tierls::core::plan::anchor::syntax_errors(
                tierls::core::index::language::Language::Rust,
                text,
            )
            .len()
        };
        for operation in operations {
            assert_eq!(
                operation["textDocument"]["uri"],
                json!(server.uri("src/geometry.rs")),
                "{operation}"
            );
            let after = apply_text_edits(GEOMETRY, &operation["edits"]);
            assert!(errors(&after) <= errors(GEOMETRY), "{after}");
        }
        let done = result["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["outcome"] == "done")
            .count();
        let refused = result["refused"].as_array().unwrap().len();
        assert!(done > refused, "{response}");
    } else {
        assert!(
            applies.is_empty(),
            "nothing is sent when nothing lands: {response}"
        );
        assert!(
            result["steps"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["outcome"] != "done")
                || result["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("nothing to change"),
            "{response}"
        );
    }
}

/// A client that can show documents is asked to open the plan, written outside the
/// workspace.
#[tokio::test]
async fn the_plan_opens_as_a_document_outside_the_workspace() {
    let planner = Arc::new(ScriptedModel::new(1).answer("Request:", &[PLAN]));
    let models: Vec<(Tier, Arc<dyn Model>)> = vec![
        (Tier::Planner, planner),
        (Tier::Executor, Arc::new(executor(Duration::ZERO))),
    ];
    let mut server =
        TestServer::start_with_models(&[("src/geometry.rs", GEOMETRY.as_bytes())], models);
    let mut capabilities = capabilities(true);
    capabilities["window"]["showDocument"] = json!({ "support": true });
    server
        .initialize_as(
            capabilities,
            json!({ "index": { "enabled": true }, "routing": { "skip_planner": false } }),
        )
        .await;
    wait_for_progress_end(&mut server, "tierls/index").await;
    server.open("src/geometry.rs", GEOMETRY).await;
    server
        .client
        .answer_with("window/showDocument", json!({ "success": true }));
    let planned = plan(&mut server, "use PI").await;
    let shown = server.client.wait_for("window/showDocument").await.unwrap();
    let uri = shown["params"]["uri"].as_str().unwrap();
    assert_eq!(planned["documentUri"], uri);
    let path = tower_lsp::lsp_types::Url::parse(uri)
        .unwrap()
        .to_file_path()
        .unwrap();
    assert!(
        !path.starts_with(server.root.path().canonicalize().unwrap()),
        "{path:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        planned["document"].as_str().unwrap()
    );
    std::fs::remove_file(path).unwrap();
}

/// `tierls/status`: each tier's model and state, and the plans waiting for the user.
#[tokio::test]
async fn status_lists_tiers_and_pending_plans() {
    let (mut server, _) = start(PLAN, executor(Duration::ZERO), true).await;
    plan(&mut server, "use PI").await;
    let response = server
        .client
        .request("tierls/status", serde_json::Value::Null)
        .await
        .unwrap();
    let mut status = response["result"].clone();
    status["root"] = json!("$ROOT");
    insta::assert_json_snapshot!(status);
}

/// `$/cancelRequest` on a running plan: the request ends cancelled, its progress ends, and
/// nothing is applied.
#[tokio::test]
async fn cancelling_the_request_ends_its_progress_and_applies_nothing() {
    let (mut server, _) = start(PLAN, executor(Duration::from_millis(40)), true).await;
    plan(&mut server, "use PI").await;
    let id = execute_without_waiting(&mut server, 1).await;
    wait_for_report(&mut server, "step 1").await;
    server
        .client
        .notify("$/cancelRequest", json!({ "id": id }))
        .await
        .unwrap();
    let response = server
        .client
        .response_to(json!(id), "executePlan")
        .await
        .unwrap();
    assert_eq!(response["error"]["code"], -32800, "{response}");
    let messages = server
        .client
        .drain(Duration::from_millis(500))
        .await
        .unwrap();
    assert!(kept(&messages, "workspace/applyEdit").is_empty());
    let ends: Vec<Value> = kept(&messages, "$/progress")
        .into_iter()
        .filter(|m| m["params"]["value"]["kind"] == "end")
        .map(|m| m["params"]["value"]["message"].clone())
        .collect();
    assert_eq!(ends, vec![json!("cancelled: nothing changed")]);
    let status = server
        .client
        .request("tierls/status", Value::Null)
        .await
        .unwrap();
    assert_eq!(status["result"]["plans"]["running"], 0, "{status}");
}

/// The executor's first answer for `Circle::perimeter` names a value that does not exist;
/// a repair (its prompt holds the check's error) answers it right when `repairs` is set.
fn flawed_executor(repairs: bool) -> ScriptedModel {
    let flawed = "pub fn perimeter(&self) -> f64 {\n    2.0 * PI_UNDEFINED * self.radius\n}";
    let mut model = ScriptedModel::new(1);
    if repairs {
        model = model.answer("reports errors in `Circle::perimeter`", &[NEW_PERIMETER]);
    }
    model
        .answer("Your step: 1.", &[NEW_AREA])
        .answer("Rewrite `Circle::perimeter`", &[flawed])
}

/// A check in gcc's format: every line that names `PI_UNDEFINED` is an error.
const UNDEFINED_CHECK: &str = r#"if grep -n PI_UNDEFINED src/geometry.rs | sed 's/^\([0-9]*\):.*/src\/geometry.rs:\1:9: error: cannot find value `PI_UNDEFINED`/' | grep .; then exit 1; fi"#;

/// A server whose `plan.check` is [`UNDEFINED_CHECK`], planned "use PI" and executed; the
/// client asks about annotated edits when `annotations` is set.
async fn execute_checked(executor: ScriptedModel, annotations: bool) -> (TestServer, Value) {
    let planner = Arc::new(ScriptedModel::new(1).answer("Request:", &[PLAN]));
    let models: Vec<(Tier, Arc<dyn Model>)> = vec![
        (Tier::Planner, planner),
        (Tier::Executor, Arc::new(executor)),
    ];
    let mut server = TestServer::start_with_models(
        &[
            ("src/geometry.rs", GEOMETRY.as_bytes()),
            ("src/main.rs", MAIN.as_bytes()),
        ],
        models,
    );
    let mut capabilities = capabilities(true);
    if annotations {
        capabilities["workspace"]["workspaceEdit"]["changeAnnotationSupport"] =
            json!({ "groupsOnLabel": false });
    }
    server
        .initialize_as(
            capabilities,
            json!({ "index": { "enabled": true }, "plan": { "check": UNDEFINED_CHECK, "max_rounds": 1 }, "routing": { "skip_planner": false } }),
        )
        .await;
    wait_for_progress_end(&mut server, "tierls/index").await;
    server.open("src/geometry.rs", GEOMETRY).await;
    plan(&mut server, "use PI").await;
    server
        .client
        .answer_with("workspace/applyEdit", json!({ "applied": true }));
    server.client.answer_with(
        "window/showMessageRequest",
        json!({ "title": "Leave the files unchanged" }),
    );
    let response = command(&mut server, "tierls.executePlan", json!({ "planId": 1 })).await;
    (server, response)
}

/// In the editor, the check's failure goes back to the executor before anything is
/// offered: one edit, with the repair in it, and the rounds in `$/progress` and the result.
#[tokio::test]
async fn the_editor_gets_the_repaired_change_once() {
    let (mut server, response) = execute_checked(flawed_executor(true), true).await;
    let result = &response["result"];
    assert_eq!(result["check"]["holds"], true, "{response}");
    assert_eq!(result["check"]["rounds"], 2, "{response}");
    let messages = server
        .client
        .drain(Duration::from_millis(300))
        .await
        .unwrap();
    let apply = kept(&messages, "workspace/applyEdit");
    assert_eq!(apply.len(), 1, "one edit, after the rounds");
    let edit = &apply[0]["params"]["edit"];
    assert!(edit.get("changeAnnotations").is_none(), "{edit}");
    let text = apply_text_edits(GEOMETRY, &edit["documentChanges"][0]["edits"]);
    assert!(
        text.contains(NEW_PERIMETER.lines().nth(1).unwrap()),
        "{text}"
    );
    assert!(!text.contains("PI_UNDEFINED"), "{text}");
    let reports: Vec<String> = kept(&messages, "$/progress")
        .iter()
        .filter_map(|m| m["params"]["value"]["message"].as_str())
        .filter(|message| message.starts_with("round"))
        .map(ToOwned::to_owned)
        .collect();
    assert!(
        reports.contains(&"round 1: running the check".to_owned())
            && reports.contains(&"round 2: repairs, 1 job".to_owned()),
        "{reports:?}"
    );
}

/// A change whose check still fails is offered marked: as an edit that needs the user's
/// confirmation where the editor asks about those, else after asking the user first (who
/// declines here: nothing is sent).
#[tokio::test]
async fn a_change_that_still_fails_is_never_applied_silently() {
    let (mut server, response) = execute_checked(flawed_executor(false), true).await;
    let result = &response["result"];
    assert_eq!(result["check"]["holds"], false, "{response}");
    assert!(
        result["check"]["failing"][0]
            .as_str()
            .unwrap()
            .contains("src/geometry.rs:"),
        "{response}"
    );
    let messages = server
        .client
        .drain(Duration::from_millis(300))
        .await
        .unwrap();
    let apply = kept(&messages, "workspace/applyEdit");
    assert_eq!(apply.len(), 1);
    let edit = &apply[0]["params"]["edit"];
    let annotation = &edit["changeAnnotations"]["tierls-check-fails"];
    assert_eq!(annotation["needsConfirmation"], true, "{edit}");
    assert!(
        annotation["label"]
            .as_str()
            .unwrap()
            .contains("still fails"),
        "{annotation}"
    );
    for change in edit["documentChanges"][0]["edits"].as_array().unwrap() {
        assert_eq!(change["annotationId"], "tierls-check-fails", "{change}");
    }

    let (mut server, response) = execute_checked(flawed_executor(false), false).await;
    let result = &response["result"];
    assert_eq!(result["applied"], false, "{response}");
    assert!(
        result["reason"]
            .as_str()
            .unwrap()
            .contains("the user did not apply it"),
        "{response}"
    );
    let messages = server
        .client
        .drain(Duration::from_millis(300))
        .await
        .unwrap();
    assert!(kept(&messages, "workspace/applyEdit").is_empty());
    let asked = kept(&messages, "window/showMessageRequest");
    assert_eq!(asked.len(), 1, "{messages:?}");
    assert_eq!(server.text_of("src/geometry.rs").await, GEOMETRY);
}

// ---------------------------------------------------------------------------------------
// Edit with instruction

/// A server over the Rust fixture with the default routing rules, scripted planner and
/// executor, `src/geometry.rs` open; `annotations`: the client reviews annotated edits.
async fn start_editing(annotations: bool) -> (TestServer, Arc<ScriptedModel>, Arc<ScriptedModel>) {
    let planner = Arc::new(ScriptedModel::new(1).answer("Request:", &[PLAN]));
    let executor = Arc::new(executor(Duration::ZERO));
    let models: Vec<(Tier, Arc<dyn Model>)> = vec![
        (Tier::Planner, planner.clone()),
        (Tier::Executor, executor.clone()),
    ];
    let mut server = TestServer::start_with_models(
        &[
            ("src/geometry.rs", GEOMETRY.as_bytes()),
            ("src/main.rs", MAIN.as_bytes()),
            ("notes.txt", b"just notes\nmore notes\n"),
        ],
        models,
    );
    let mut capabilities = capabilities(true);
    if annotations {
        capabilities["workspace"]["workspaceEdit"]["changeAnnotationSupport"] =
            json!({ "groupsOnLabel": false });
    }
    server
        .initialize_as(capabilities, json!({ "index": { "enabled": true } }))
        .await;
    wait_for_progress_end(&mut server, "tierls/index").await;
    server.open("src/geometry.rs", GEOMETRY).await;
    (server, planner, executor)
}

fn range(start: (u32, u32), end: (u32, u32)) -> Value {
    json!({ "start": { "line": start.0, "character": start.1 }, "end": { "line": end.0, "character": end.1 } })
}

#[tokio::test]
async fn an_instruction_edit_of_a_selection_skips_the_planner_and_offers_one_reviewed_edit() {
    let (mut server, planner, _) = start_editing(true).await;
    server
        .client
        .answer_with("workspace/applyEdit", json!({ "applied": true }));
    let uri = server.uri("src/geometry.rs");
    // Lines 10–11: inside `Circle::area`'s body.
    let selection = range((10, 8), (10, 20));
    let actions = server
        .client
        .request(
            "textDocument/codeAction",
            json!({ "textDocument": { "uri": uri }, "range": selection, "context": { "diagnostics": [] } }),
        )
        .await
        .unwrap();
    let titles: Vec<&str> = actions["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|action| action["title"].as_str().unwrap())
        .collect();
    assert!(titles.contains(&"tierls: Edit selection…"), "{titles:?}");
    let response = command(
        &mut server,
        "tierls.editSelection",
        json!({ "uri": uri, "range": selection, "instruction": "use std::f64::consts::PI" }),
    )
    .await;
    let result = &response["result"];
    assert!(planner.prompts().is_empty(), "the planner was asked");
    assert_eq!(result["applied"], true, "{response}");
    let messages = server
        .client
        .drain(Duration::from_millis(300))
        .await
        .unwrap();
    let apply = kept(&messages, "workspace/applyEdit");
    assert_eq!(apply.len(), 1, "one edit");
    let edit = &apply[0]["params"]["edit"];
    let document = &edit["documentChanges"][0];
    let mut out = format!(
        "planned by: {}\nsteps: {}\nversion: {}\nannotations: {}\n",
        result["plannedBy"].as_str().unwrap(),
        result["steps"],
        document["textDocument"]["version"],
        edit["changeAnnotations"]
    );
    out.push_str(&format!(
        "text after the edit:\n{}",
        apply_text_edits(GEOMETRY, &document["edits"])
    ));
    insta::assert_snapshot!(out);
}

/// Each selection no model can be asked about gets a clear error, and no model is asked.
#[tokio::test]
async fn bad_selections_are_refused_before_any_model_is_asked() {
    let (mut server, planner, executor) = start_editing(false).await;
    server
        .open_as("notes.txt", "plaintext", "just notes\nmore notes\n")
        .await;
    let many: String = (0..10).map(|n| format!("fn step{n}() {{}}\n")).collect();
    server.open("src/many.rs", &many).await;
    let geometry = server.uri("src/geometry.rs");
    let many = server.uri("src/many.rs");
    let notes = server.uri("notes.txt");
    let unopened = server.uri("src/main.rs");
    let cases = [
        (
            "empty selection",
            json!({ "uri": geometry, "range": range((10, 8), (10, 8)), "instruction": "use PI" }),
        ),
        (
            "only a blank line",
            json!({ "uri": geometry, "range": range((6, 0), (7, 0)), "instruction": "use PI" }),
        ),
        (
            "no symbol under it",
            json!({ "uri": geometry, "range": range((0, 0), (0, 10)), "instruction": "use PI" }),
        ),
        (
            "an unindexed file",
            json!({ "uri": notes, "range": range((0, 0), (1, 4)), "instruction": "tidy" }),
        ),
        (
            "ten functions at once",
            json!({ "uri": many, "range": range((0, 0), (10, 0)), "instruction": "log each step" }),
        ),
        (
            "a file not open",
            json!({ "uri": unopened, "range": range((0, 0), (1, 4)), "instruction": "tidy" }),
        ),
        (
            "no instruction",
            json!({ "uri": geometry, "range": range((10, 8), (10, 20)) }),
        ),
        (
            "a blank instruction",
            json!({ "uri": geometry, "range": range((10, 8), (10, 20)), "instruction": "  " }),
        ),
        (
            "a range past the end",
            json!({ "uri": geometry, "range": range((10, 8), (900, 0)), "instruction": "use PI" }),
        ),
        (
            "outside the root",
            json!({ "uri": "file:///etc/passwd", "range": range((0, 0), (1, 0)), "instruction": "use PI" }),
        ),
    ];
    let mut out = String::new();
    for (label, arguments) in cases {
        let response = command(&mut server, "tierls.editSelection", arguments).await;
        out.push_str(&format!(
            "{label}\n  => {}\n",
            response["error"]["message"]
                .as_str()
                .unwrap_or("(no error)")
        ));
    }
    let out = out.replace(server.uri("").as_str(), "<root>");
    assert!(planner.prompts().is_empty() && executor.prompts().is_empty());
    insta::assert_snapshot!(out);
}

/// Helix's way: a `tierls:` comment above a selection offers "Edit: …", which rewrites the
/// symbol without a planning pass.
#[tokio::test]
async fn a_tierls_comment_above_a_selection_offers_an_edit() {
    let (mut server, planner, executor) = start_editing(false).await;
    server
        .client
        .answer_with("workspace/applyEdit", json!({ "applied": true }));
    let commented = GEOMETRY.replace(
        "    /// The area of the circle.\n",
        "    // tierls: use std::f64::consts::PI\n    /// The area of the circle.\n",
    );
    server.open("src/shapes.rs", &commented).await;
    let uri = server.uri("src/shapes.rs");
    // From the comment's line through the end of `area`.
    let selection = range((8, 0), (13, 0));
    let actions = server
        .client
        .request(
            "textDocument/codeAction",
            json!({ "textDocument": { "uri": uri }, "range": selection, "context": { "diagnostics": [] } }),
        )
        .await
        .unwrap();
    let edit = actions["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|action| action["title"] == "tierls: Edit: use std::f64::consts::PI")
        .unwrap_or_else(|| panic!("no edit action: {actions}"))
        .clone();
    let response = command(
        &mut server,
        "tierls.editSelection",
        edit["command"]["arguments"][0].clone(),
    )
    .await;
    assert_eq!(response["result"]["applied"], true, "{response}");
    assert!(planner.prompts().is_empty(), "the planner was asked");
    let prompts = executor.prompts();
    assert_eq!(prompts.len(), 1);
    assert!(
        prompts[0].contains("use std::f64::consts::PI"),
        "{}",
        prompts[0]
    );
    let messages = server
        .client
        .drain(Duration::from_millis(300))
        .await
        .unwrap();
    let apply = kept(&messages, "workspace/applyEdit");
    let document = &apply[0]["params"]["edit"]["documentChanges"][0];
    assert_eq!(document["textDocument"]["uri"], uri.as_str());
    insta::assert_snapshot!(apply_text_edits(&commented, &document["edits"]));
}
