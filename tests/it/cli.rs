//! The built binary, spawned as an editor or a user would run it.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tierls::lsp::client::LspClient;

const TIERLS: &str = env!("CARGO_BIN_EXE_tierls");

fn run(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(TIERLS)
        .args(args)
        .output()
        .expect("run tierls");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_subcommands() {
    let (status, stdout, _) = run(&["--help"]);
    assert_eq!(status, 0);
    insta::assert_snapshot!("help", stdout);
}

#[test]
fn version_names_the_crate_version() {
    let (status, stdout, _) = run(&["--version"]);
    assert_eq!(
        (status, stdout.trim()),
        (0, concat!("tierls ", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn subcommands_not_built_yet_say_so() {
    for args in [&["plan", "rename x"][..], &["index", "."], &["models"]] {
        let (status, stdout, stderr) = run(args);
        assert_eq!(status, 2, "{args:?}");
        assert!(stdout.is_empty());
        assert!(stderr.contains("is not available yet"), "{stderr}");
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let (status, _, stderr) = run(&["serv"]);
    assert_eq!(status, 2);
    assert!(
        stderr.contains("unrecognized subcommand 'serv'"),
        "{stderr}"
    );
}

struct Spawned {
    child: tokio::process::Child,
    client: LspClient,
}

fn spawn_serve() -> Spawned {
    let mut child = tokio::process::Command::new(TIERLS)
        .arg("serve")
        .env("TIERLS_LOG", "debug")
        .env("TIERLS_CONFIG_DIR", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tierls serve");
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    Spawned {
        child,
        client: LspClient::new(stdout, stdin).with_timeout(Duration::from_secs(20)),
    }
}

async fn exit_code(mut spawned: Spawned) -> i32 {
    drop(spawned.client);
    let status = tokio::time::timeout(Duration::from_secs(10), spawned.child.wait())
        .await
        .unwrap()
        .unwrap();
    status.code().unwrap_or(-1)
}

/// Over real stdio: malformed input first, then a whole session; stdout carries nothing
/// but well-formed frames (a stray print would show up as a broken frame).
#[tokio::test]
async fn serve_over_stdio_survives_garbage_and_exits_cleanly() {
    let mut spawned = spawn_serve();
    let client = &mut spawned.client;
    client
        .send_bytes(b"Content-Length: 5\r\n\r\n{oops")
        .await
        .unwrap();
    client
        .send_bytes(b"Content-Lenght: 2\r\n\r\n{}")
        .await
        .unwrap();
    let init = client
        .request("initialize", json!({ "capabilities": {} }))
        .await
        .unwrap();
    assert_eq!(init["result"]["serverInfo"]["name"], "tierls");
    client.notify("initialized", json!({})).await.unwrap();
    client
        .notify("textDocument/didOpen", json!({ "textDocument": { "uri": "file:///tmp/x.rs", "languageId": "rust", "version": 1, "text": "a" } }))
        .await
        .unwrap();
    let shutdown = client.shutdown().await.unwrap();
    assert_eq!(shutdown["result"], Value::Null);
    let seen = client.drain(Duration::from_millis(500)).await.unwrap();
    let errors: Vec<&Value> = seen.iter().filter(|m| m.get("error").is_some()).collect();
    assert_eq!(errors.len(), 2, "one parse error per bad frame: {seen:?}");
    assert!(
        seen.iter()
            .all(|m| m.get("broken_frame").is_none() && m.get("unparsable").is_none()),
        "{seen:?}"
    );
    assert_eq!(exit_code(spawned).await, 0);
}

#[tokio::test]
async fn exit_without_shutdown_is_status_1() {
    let mut spawned = spawn_serve();
    spawned
        .client
        .request("initialize", json!({ "capabilities": {} }))
        .await
        .unwrap();
    spawned.client.notify("exit", Value::Null).await.unwrap();
    assert_eq!(exit_code(spawned).await, 1);
}

#[tokio::test]
async fn end_of_input_ends_the_server() {
    // Dropping the client closes the server's stdin before anything was said.
    assert_eq!(exit_code(spawn_serve()).await, 1);
}

#[test]
fn demo_runs_on_the_sample_workspace() {
    let (status, stdout, stderr) = run(&["demo"]);
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("the server's text (version 2) matches the editor's"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the server ended with exit status: 0"),
        "{stdout}"
    );
}

#[test]
fn bench_models_prints_its_figures_side_by_side() {
    let (status, stdout, stderr) = run(&["bench", "models"]);
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    for figure in ["load:", "cold:", "warm:", "prefix reuse:", "grammar:"] {
        assert!(
            stdout.lines().any(|line| line.starts_with(figure)),
            "no {figure} in\n{stdout}"
        );
    }
    let (status, _, stderr) = run(&["bench", "nonsense"]);
    assert_eq!(status, 2);
    assert!(stderr.contains("unknown benchmark `nonsense`"), "{stderr}");
}
