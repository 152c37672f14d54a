//! The workspace layer under a live server: a branch switch that rewrites thousands of files
//! while completions are asked, files that vanish, turn into folders or into binaries
//! between two events, params of the wrong type for every tierls method and command, and a
//! handler that panics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tierls::config::Tier;
use tierls::models::Model;
use tierls::models::scripted::ScriptedModel;

use crate::support::TestServer;

/// How long a test waits for one answer before it calls the server frozen.
const ANSWER_BOUND: Duration = Duration::from_secs(20);

async fn request(server: &mut TestServer, method: &str, params: Value) -> Value {
    tokio::time::timeout(ANSWER_BOUND, server.client.request(method, params))
        .await
        .unwrap_or_else(|_| panic!("{method} got no answer within {ANSWER_BOUND:?}"))
        .unwrap()
}

async fn symbol_names(server: &mut TestServer, query: &str) -> Vec<String> {
    let found = request(server, "workspace/symbol", json!({ "query": query })).await;
    let mut names: Vec<String> = found["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|symbol| symbol["name"].as_str().unwrap_or("?").to_owned())
        .collect();
    names.sort();
    names
}

/// Waits until `query` finds exactly `expected` names, or fails after the bound.
async fn wait_for_symbols(server: &mut TestServer, query: &str, expected: usize) {
    let started = Instant::now();
    loop {
        let found = symbol_names(server, query).await.len();
        if found == expected {
            return;
        }
        assert!(
            started.elapsed() < ANSWER_BOUND,
            "`{query}` finds {found} symbols, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_the_scan(server: &mut TestServer) {
    loop {
        let progress = server.client.wait_for("$/progress").await.unwrap();
        if progress["params"]["value"]["kind"] == "end" {
            break;
        }
    }
}

fn watched(server: &TestServer, paths: &[String]) -> Value {
    let changes: Vec<Value> = paths
        .iter()
        .map(|path| json!({ "uri": server.uri(path), "type": 2 }))
        .collect();
    json!({ "changes": changes })
}

const BRANCH_FILES: usize = 2000;

fn module(name: &str, index: usize) -> String {
    format!("pub fn {name}_{index}(value: u32) -> u32 {{\n    value + {index}\n}}\n")
}

/// `git checkout` of another branch: every one of 2,000 files changes on disk and the editor
/// says so in one `didChangeWatchedFiles`. Completions asked meanwhile all answer (the
/// reindex reads and parses off the workspace lock), and afterwards the index matches the
/// disk: every new name, no old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_switch_of_2000_files_never_stalls_completions() {
    let paths: Vec<String> = (0..BRANCH_FILES)
        .map(|i| format!("src/m{:02}/f{i}.rs", i % 40))
        .collect();
    let contents: Vec<String> = (0..BRANCH_FILES).map(|i| module("before", i)).collect();
    let mut files: Vec<(&str, &[u8])> = paths
        .iter()
        .zip(&contents)
        .map(|(path, text)| (path.as_str(), text.as_bytes()))
        .collect();
    let editing = "fn main() {\n    let total = \n}\n";
    files.push(("src/main.rs", editing.as_bytes()));
    let fast: Arc<dyn Model> = Arc::new(ScriptedModel::new(1).answer("", &["1 + 2;"]));
    let mut server = TestServer::start_with_models(&files, vec![(Tier::Fast, fast)]);
    server
        .initialize_as(
            json!({ "window": { "workDoneProgress": true } }),
            json!({ "index": { "enabled": true }, "completion": { "debounce_ms": 0 } }),
        )
        .await;
    wait_for_the_scan(&mut server).await;
    wait_for_symbols(&mut server, "before_1999", 1).await;
    server.open("src/main.rs", editing).await;

    let root = server.root.path().canonicalize().unwrap();
    for (i, path) in paths.iter().enumerate() {
        std::fs::write(root.join(path), module("after", i)).unwrap();
    }
    let changes = watched(&server, &paths);
    server
        .client
        .notify("workspace/didChangeWatchedFiles", changes)
        .await
        .unwrap();
    let uri = server.uri("src/main.rs");
    for _ in 0..20 {
        let params = json!({ "textDocument": { "uri": uri }, "position": { "line": 1, "character": 16 }, "context": { "triggerKind": 2 } });
        let answer = request(&mut server, "textDocument/inlineCompletion", params).await;
        assert!(answer.get("error").is_none(), "{answer}");
        assert!(answer["result"]["items"].is_array(), "{answer}");
    }
    wait_for_symbols(&mut server, "before_", 0).await;
    // The search is fuzzy and answers at most 256 names: look for a spread of exact ones.
    for i in [0, 777, 1234, BRANCH_FILES - 1] {
        let name = format!("after_{i}");
        assert!(
            symbol_names(&mut server, &name).await.contains(&name),
            "{name} is not indexed"
        );
    }
    let status = request(&mut server, "tierls/status", Value::Null).await;
    assert_eq!(
        status["result"]["index"]["files"],
        BRANCH_FILES + 1,
        "{status}"
    );
    assert!(server.finish().await.clean);
}

/// Files that change their nature between two events: deleted while open (the close finds
/// nothing to go back to), replaced by a folder, turned binary. The index forgets each, the
/// server says why it cannot show them, and answers on.
#[tokio::test]
async fn files_that_vanish_or_change_kind_leave_the_index_in_step_with_the_disk() {
    let mut server = TestServer::start(&[
        ("src/gone.rs", b"fn gone_fn() {}\n"),
        ("src/folder.rs", b"fn folder_fn() {}\n"),
        ("src/binary.rs", b"fn binary_fn() {}\n"),
        ("src/stays.rs", b"fn stays_fn() {}\n"),
    ]);
    server
        .initialize_as(
            json!({ "window": { "workDoneProgress": true } }),
            json!({ "index": { "enabled": true } }),
        )
        .await;
    wait_for_the_scan(&mut server).await;
    for query in ["gone_fn", "folder_fn", "binary_fn", "stays_fn"] {
        wait_for_symbols(&mut server, query, 1).await;
    }
    let root = server.root.path().canonicalize().unwrap();

    server
        .open("src/gone.rs", "fn gone_fn() {}\nfn typed_fn() {}\n")
        .await;
    wait_for_symbols(&mut server, "typed_fn", 1).await;
    std::fs::remove_file(root.join("src/gone.rs")).unwrap();
    server.close("src/gone.rs").await;

    std::fs::remove_file(root.join("src/folder.rs")).unwrap();
    std::fs::create_dir(root.join("src/folder.rs")).unwrap();
    std::fs::write(root.join("src/binary.rs"), b"fn binary_fn() {}\n\0\x01\x02").unwrap();
    let changes = watched(&server, &["src/folder.rs".into(), "src/binary.rs".into()]);
    server
        .client
        .notify("workspace/didChangeWatchedFiles", changes)
        .await
        .unwrap();

    for query in ["gone_fn", "typed_fn", "folder_fn", "binary_fn"] {
        wait_for_symbols(&mut server, query, 0).await;
    }
    assert_eq!(symbol_names(&mut server, "stays_fn").await, ["stays_fn"]);
    let mut shown = String::new();
    for path in ["src/gone.rs", "src/folder.rs", "src/binary.rs"] {
        let view = server.view(path).await;
        let message = view["error"]["message"].as_str().unwrap_or("no error");
        let message = message.replace(&root.display().to_string(), "$ROOT");
        shown.push_str(&format!("{path}: {message}\n"));
    }
    insta::assert_snapshot!(shown);
    assert!(server.finish().await.clean);
}

/// Every tierls method and command, given params of the wrong shape: an invalid-params
/// error that names the field at fault, and the server answers the next request.
#[tokio::test]
async fn wrong_params_for_every_tierls_method_name_the_field() {
    let mut server = TestServer::start(&[("src/a.rs", b"fn a() {}\n")]);
    server.initialize().await;
    let uri = server.uri("src/a.rs");
    let command = |name: &str, arguments: Value| json!({ "command": name, "arguments": arguments });
    let cases = [
        ("tierls/viewDocument", json!({ "uri": 5 })),
        ("tierls/viewDocument", json!({ "url": uri })),
        (
            "textDocument/inlineCompletion",
            json!({ "textDocument": { "uri": uri }, "position": { "line": "one", "character": 0 } }),
        ),
        (
            "textDocument/inlineCompletion",
            json!({ "textDocument": { "uri": uri } }),
        ),
        ("tierls/status", json!({ "verbose": true })),
        ("tierls/completionStats", json!([1, 2])),
        (
            "workspace/executeCommand",
            command("tierls.planRefactor", json!([{ "uri": 5 }])),
        ),
        (
            "workspace/executeCommand",
            command(
                "tierls.planRefactor",
                json!([{ "uri": uri, "range": { "start": 3, "end": 4 } }]),
            ),
        ),
        (
            "workspace/executeCommand",
            command(
                "tierls.planRefactor",
                json!([{ "uri": uri, "instruction": ["x"] }]),
            ),
        ),
        (
            "workspace/executeCommand",
            command("tierls.executePlan", json!([{ "planId": -1 }])),
        ),
        (
            "workspace/executeCommand",
            command("tierls.discardPlan", json!([{ "planId": null }])),
        ),
        (
            "workspace/executeCommand",
            command("tierls.discardPlan", json!([])),
        ),
        (
            "workspace/executeCommand",
            command("tierls.noSuchCommand", json!([])),
        ),
    ];
    let mut shown = String::new();
    for (method, params) in cases {
        let answer = request(&mut server, method, params.clone()).await;
        let error = &answer["error"];
        shown.push_str(&format!(
            "{method} {params}\n  -> {}: {}\n",
            error["code"],
            error["message"].as_str().unwrap_or("no error")
        ));
    }
    let root = server.root.path().canonicalize().unwrap();
    insta::assert_snapshot!(shown.replace(&root.display().to_string(), "$ROOT"));
    let view = server.view("src/a.rs").await;
    assert_eq!(view["result"]["text"], "fn a() {}\n", "{view}");
    assert!(server.finish().await.clean);
}

const PANICS: &str = "pub fn explode(value: u32) -> u32 {\n    value * 2\n}\n\npub fn calm(value: u32) -> u32 {\n    explode(value) + 1\n}\n";

/// A bug in one handler (here the fast tier's backend panics while a hover asks it) answers
/// that request with an internal error naming the method; the server lives on, and the next
/// hover, on another symbol, gets its explanation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_an_error_and_the_server_lives_on() {
    let fast: Arc<dyn Model> = Arc::new(
        ScriptedModel::new(1)
            .panics_on("fn explode")
            .answer("fn calm", &["Adds one to twice the value."]),
    );
    let mut server = TestServer::start_with_models(
        &[("src/lib.rs", PANICS.as_bytes())],
        vec![(Tier::Fast, fast)],
    );
    server
        .initialize_as(
            json!({ "window": { "workDoneProgress": true } }),
            json!({ "index": { "enabled": true }, "completion": { "hover_budget_ms": 20000 } }),
        )
        .await;
    wait_for_the_scan(&mut server).await;
    server.open("src/lib.rs", PANICS).await;
    let hover = |line: u32, character: u32| json!({ "textDocument": { "uri": server.uri("src/lib.rs") }, "position": { "line": line, "character": character } });
    let (on_explode, on_calm) = (hover(0, 8), hover(4, 8));
    let failed = request(&mut server, "textDocument/hover", on_explode.clone()).await;
    assert_eq!(failed["error"]["code"], -32603, "{failed}");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "tierls failed on textDocument/hover: the scripted model was told to fail"
        ),
        "{failed}"
    );
    let calm = request(&mut server, "textDocument/hover", on_calm).await;
    let text = calm["result"]["contents"]["value"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("Adds one to twice the value."), "{calm}");
    // The panic poisoned nothing: the same request panics the same way, and edits still land.
    let again = request(&mut server, "textDocument/hover", on_explode).await;
    assert_eq!(again["error"]["code"], -32603, "{again}");
    server
        .change("src/lib.rs", 2, json!([{ "text": "pub fn fine() {}\n" }]))
        .await;
    assert_eq!(server.text_of("src/lib.rs").await, "pub fn fine() {}\n");
    assert!(server.finish().await.clean);
}
