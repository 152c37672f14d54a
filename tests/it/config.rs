//! Configuration: typed layers, errors that name the source, line and key, and a server that
//! keeps its last good configuration.

use std::time::Duration;

use serde_json::json;
use tierls::config::{Config, parse_toml};

use crate::support::{TestServer, transcript};

/// Parses `toml` as a workspace `tierls.toml` and shows the resolved configuration or the error.
fn check(toml: &str) -> String {
    match parse_toml(toml, "ws/tierls.toml") {
        Ok(layer) => format!("{:?}", Config::from_layers([&layer])),
        Err(err) => err.to_string(),
    }
}

#[test]
fn valid_files() {
    let cases = [
        "",
        "[log]\nlevel = \"debug\"\n",
        "[limits]\nmax_message_mb = 8\nmax_file_mb = 2\n",
        "[tiers.fast]\nmodel = \"models/coder-1.5b.gguf\"\ncontext = 8192\nslots = 2\ngpu_layers = \"auto\"\n",
        "[tiers.executor]\nmodel = \"http://worker.local:8080\"\n[tiers.planner]\nmodel = \"hf://Qwen/Qwen2.5-72B-GGUF/q4_k_m.gguf\"\ngpu_layers = 40\ncache_type = \"q8_0\"\n",
        "[nodes.gpu-box]\nurl = \"http://192.168.1.20:8080/\"\napi = \"llama-server\"\ntiers = [\"fast\", \"executor\"]\nconcurrency = 4\napi_key_env = \"GPU_BOX_KEY\"\n\n[nodes.ollama]\nurl = \"https://ollama.lan\"\ntiers = [\"planner\"]\nmodel = \"qwen2.5:72b\"\nfirst_token_seconds = 120\n",
        "[plan]\ncheck = \"npx tsc --noEmit\"\ncheck_links = [\"node_modules\", \".yarn\"]\n",
        "[routing]\nskip_planner = false\nskip_planner_lines = 40\nmechanical_tier = \"executor\"\nfast_step_lines = 30\nescalate_after = 0\nhover_executor_lines = 200\nhover_executor_references = 100\n",
        "[tiers.executor]\ndraft = \"lookup\"\ndraft_max = 12\ndraft_min_match = 3\n",
    ];
    let shown: Vec<String> = cases
        .iter()
        .map(|toml| format!("{toml:?}\n  => {}", check(toml)))
        .collect();
    insta::assert_snapshot!("valid_files", shown.join("\n"));
}

#[test]
fn invalid_files_name_the_line_and_key() {
    let cases = [
        "[log]\nlevel = \"loud\"\n",
        "[log]\nlevl = \"info\"\n",
        "[limits]\nmax_file_mb = \"big\"\n",
        "[limits]\nmax_message_mb = 0\n",
        "[limits]\n\nmax_message_mb = 5000\n",
        "[models]\nfast = \"x.gguf\"\n",
        "[log\nlevel = \"info\"\n",
        "log = 3\n",
        "[tiers.fast]\nmodel = \"hf://just-a-name\"\n",
        "[tiers.fast]\ngpu_layers = \"all\"\n",
        "[tiers.fast]\ncontext = 100\n",
        "[tiers.planner]\nslots = 0\n",
        "[tiers.executor]\ncache_type = \"q2\"\n",
        "[tiers.fast]\nmodle = \"x.gguf\"\n",
        "[tiers.executor]\ndraft = \"medusa\"\n",
        "[tiers.executor]\ndraft_max = 0\n",
        "[tiers.planner]\ndraft_min_match = 7\n",
        "[tiers.huge]\nmodel = \"x.gguf\"\n",
        "[nodes.a]\nurl = \"http://h:1\"\ntiers = [\"huge\"]\n",
        "[nodes.a]\nurl = \"http://h:1\"\ntiers = []\n",
        "[nodes.a]\nurl = \"http://h:1\"\ntiers = [\"fast\", \"fast\"]\n",
        "[nodes.a]\nurl = \"http://h:1\"\n",
        "[nodes.a]\nurl = \"ftp://h\"\ntiers = [\"fast\"]\n",
        "[nodes.a]\nurl = \"http://h:1\"\ntiers = [\"fast\"]\napi = \"grpc\"\n",
        "[nodes.a]\nurl = \"http://h:1\"\ntiers = [\"fast\"]\nconcurrency = 0\n",
        "[nodes.a]\nurl = \"http://h:1\"\ntiers = [\"fast\"]\napi_key = \"secret\"\n",
        "[plan]\ncheck_links = [\"../outside\"]\n",
        "[routing]\nskip_planer = true\n",
        "[routing]\nfast_step_lines = -3\n",
        "[routing]\nskip_planner_lines = 0\n",
        "[routing]\nescalate_after = 11\n",
        "[routing]\nmechanical_tier = \"turbo\"\n",
        "[routing]\nmechanical_tier = \"planner\"\n",
        "[routing]\nskip_planner = \"yes\"\n",
        "[plan]\ncheck_links = [\"..\"]\n",
        "[plan]\ncheck_links = \"node_modules\"\n",
        "[plan]\ncheck_links = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", \"h\", \"i\", \"j\", \"k\", \"l\", \"m\", \"n\", \"o\", \"p\", \"q\", \"r\", \"s\", \"t\", \"u\", \"v\", \"w\", \"x\", \"y\", \"z\", \"aa\", \"bb\", \"cc\", \"dd\", \"ee\", \"ff\", \"gg\"]\n",
    ];
    let shown: Vec<String> = cases
        .iter()
        .map(|toml| format!("{toml:?}\n  => {}", check(toml)))
        .collect();
    insta::assert_snapshot!("invalid_files", shown.join("\n"));
}

#[test]
fn later_layers_win() {
    let user = parse_toml(
        "[log]\nlevel = \"debug\"\n[limits]\nmax_file_mb = 3\n",
        "user",
    )
    .unwrap();
    let workspace = parse_toml("[log]\nlevel = \"warn\"\n", "workspace").unwrap();
    let config = Config::from_layers([&user, &workspace]);
    assert_eq!(config.log.level, tierls::config::LogLevel::Warn);
    assert_eq!(config.limits.max_file_bytes, 3 * 1024 * 1024);
}

#[test]
fn invalid_utf8_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tierls.toml");
    std::fs::write(&path, b"[log]\nlevel = \"\xff\"\n").unwrap();
    let err = tierls::config::load_file(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: the file is not valid UTF-8 (at byte 15)",
            path.display()
        )
    );
}

const QUIET: Duration = Duration::from_millis(500);

/// A 2 MiB message: refused exactly when the message limit is 1 MiB.
async fn limit_is_one_mib(server: &mut TestServer) -> bool {
    let body = json!({ "jsonrpc": "2.0", "id": "probe", "method": "tierls/noSuchMethod",
                       "params": { "pad": "x".repeat(2 * 1024 * 1024) } });
    server
        .client
        .send_raw(body.to_string().as_bytes())
        .await
        .unwrap();
    let refused = loop {
        let message = server
            .client
            .next_message("the probe's answer")
            .await
            .unwrap();
        if message["id"] == "probe" {
            break false; // It reached the server: not refused.
        }
        if message["id"].is_null() && message.get("error").is_some() {
            break message["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("over the limit");
        }
    };
    // The refusal's log line may trail the answer: take it now, not in a later snapshot.
    server.client.drain(QUIET).await.unwrap();
    refused
}

#[tokio::test]
async fn invalid_workspace_file_is_reported_and_defaults_stay() {
    let files: &[(&str, &[u8])] = &[("tierls.toml", b"[limits]\nmax_message_mb = \"one\"\n")];
    let mut server = TestServer::start(files);
    server.initialize().await;
    let received = server.client.drain(QUIET).await.unwrap();
    insta::assert_snapshot!("startup_error", transcript(&received, server.root.path()));
    assert!(server.finish().await.clean);
}

#[tokio::test]
async fn settings_apply_and_a_bad_update_keeps_the_last_good_configuration() {
    let mut server = TestServer::start(&[]);
    server.initialize().await;
    let client = &mut server.client;
    client
        .notify(
            "workspace/didChangeConfiguration",
            json!({ "settings": { "tierls": { "limits": { "max_message_mb": 1 } } } }),
        )
        .await
        .unwrap();
    server.round_trip().await;
    assert!(limit_is_one_mib(&mut server).await, "the new limit applies");

    server
        .client
        .notify(
            "workspace/didChangeConfiguration",
            json!({ "settings": { "tierls": { "limits": { "max_message_mb": 0 } } } }),
        )
        .await
        .unwrap();
    let received = server.client.drain(QUIET).await.unwrap();
    insta::assert_snapshot!("bad_settings", transcript(&received, server.root.path()));
    assert!(
        limit_is_one_mib(&mut server).await,
        "the last good limit still applies"
    );
    assert!(server.finish().await.clean);
}

#[tokio::test]
async fn saving_the_workspace_file_reloads_it() {
    let files: &[(&str, &[u8])] = &[("tierls.toml", b"[limits]\nmax_message_mb = 1\n")];
    let mut server = TestServer::start(files);
    server.initialize().await;
    assert!(
        limit_is_one_mib(&mut server).await,
        "the file's limit applies"
    );

    // A broken save keeps the last good file's values.
    std::fs::write(
        server.root.path().join("tierls.toml"),
        "[limits]\nmax_message_mb = [1]\n",
    )
    .unwrap();
    let uri = server.uri("tierls.toml");
    server
        .client
        .notify(
            "textDocument/didSave",
            json!({ "textDocument": { "uri": uri } }),
        )
        .await
        .unwrap();
    let received = server.client.drain(QUIET).await.unwrap();
    insta::assert_snapshot!("bad_save", transcript(&received, server.root.path()));
    assert!(
        limit_is_one_mib(&mut server).await,
        "the last good limit still applies"
    );

    // A good save applies: the 2 MiB message now passes the framing guard.
    std::fs::write(
        server.root.path().join("tierls.toml"),
        "[limits]\nmax_message_mb = 8\n",
    )
    .unwrap();
    server
        .client
        .notify(
            "textDocument/didSave",
            json!({ "textDocument": { "uri": uri } }),
        )
        .await
        .unwrap();
    server.round_trip().await;
    assert!(
        !limit_is_one_mib(&mut server).await,
        "the new file's limit applies"
    );
    assert!(server.finish().await.clean);
}
