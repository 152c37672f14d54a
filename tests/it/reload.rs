//! Tiers changed while the server runs (`workspace/didChangeConfiguration`, as a saved
//! `tierls.toml` does): a changed tier reloads on the real test model, the others keep
//! theirs, and a model that does not exist or does not fit leaves the old one serving.

use serde_json::{Value, json};
use tierls::models::embedded::test_model_path;

use crate::support::{TestServer, wait_for_log};

async fn change_tiers(server: &mut TestServer, fast: Value, executor: &Value) {
    server
        .client
        .notify(
            "workspace/didChangeConfiguration",
            json!({ "settings": { "tierls": { "tiers": { "fast": fast, "executor": executor } } } }),
        )
        .await
        .unwrap();
}

/// Each tier's (state, model file name) as `tierls/status` shows them.
async fn tiers(server: &mut TestServer) -> Vec<(String, String)> {
    let status = server
        .client
        .request("tierls/status", Value::Null)
        .await
        .unwrap();
    status["result"]["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tier| {
            let model = tier["model"].as_str().unwrap_or("-");
            let file = model.rsplit('/').next().unwrap_or(model);
            (tier["state"].as_str().unwrap().to_owned(), file.to_owned())
        })
        .collect()
}

/// No message since the last wait speaks of `tier` (a reload left it alone).
async fn assert_untouched(server: &mut TestServer, tier: &str) {
    let messages = server
        .client
        .drain(std::time::Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        !messages.iter().any(|m| m["params"]["message"]
            .as_str()
            .is_some_and(|text| text.contains(tier))),
        "the {tier} was touched: {messages:?}"
    );
}

async fn error_message(server: &mut TestServer) -> String {
    let shown = server.client.wait_for("window/showMessage").await.unwrap();
    shown["params"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tier_reloads_and_a_bad_change_keeps_the_old_model() {
    let _turn = crate::support::one_model_at_a_time();
    // The same weights under another name: a change of model the status can tell apart.
    let other = tempfile::tempdir().unwrap();
    let other_model = other.path().join("other-model.gguf");
    std::fs::copy(test_model_path(), &other_model).unwrap();
    let executor = json!({ "model": test_model_path(), "context": 2048 });
    let mut server = TestServer::start(&[]);
    let options = json!({ "tiers": { "fast": { "model": test_model_path(), "context": 2048 }, "executor": executor } });
    server.initialize_with(&["utf-16"], options).await;
    wait_for_log(&mut server, "the fast tier is ready").await;
    let model_name = test_model_path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let fast_ready = ("ready".to_owned(), model_name.clone());
    let executor_waiting = ("not loaded".to_owned(), model_name.clone());
    assert_eq!(
        tiers(&mut server).await[..2],
        [fast_ready.clone(), executor_waiting.clone()]
    );

    // A model that does not exist: the key is named, the fast tier keeps serving.
    change_tiers(
        &mut server,
        json!({ "model": "/nonexistent/model.gguf", "context": 2048 }),
        &executor,
    )
    .await;
    let message = error_message(&mut server).await;
    assert!(
        message.starts_with("tierls: tiers.fast.model: ")
            && message.contains("/nonexistent/model.gguf")
            && message.ends_with("the fast tier keeps the model it had"),
        "{message}"
    );
    assert_eq!(
        tiers(&mut server).await[..2],
        [fast_ready.clone(), executor_waiting.clone()]
    );

    // One that cannot fit this machine (about 88 GiB of KV cache): the same.
    change_tiers(
        &mut server,
        json!({ "model": other_model, "context": 32_768, "slots": 64 }),
        &executor,
    )
    .await;
    let message = error_message(&mut server).await;
    assert!(
        message.starts_with("tierls: tiers.fast.model: ") && message.contains("does not fit"),
        "{message}"
    );
    assert_eq!(
        tiers(&mut server).await[..2],
        [fast_ready.clone(), executor_waiting.clone()]
    );

    // A good change: the fast tier runs the new file; the executor, unchanged, is untouched.
    change_tiers(
        &mut server,
        json!({ "model": other_model, "context": 2048 }),
        &executor,
    )
    .await;
    wait_for_log(&mut server, "the fast tier now runs").await;
    assert_eq!(
        tiers(&mut server).await[..2],
        [
            ("ready".to_owned(), "other-model.gguf".to_owned()),
            executor_waiting
        ]
    );
    assert_untouched(&mut server, "executor tier").await;
    assert!(server.finish().await.clean);
}

async fn change_settings(server: &mut TestServer, settings: Value) {
    server
        .client
        .notify(
            "workspace/didChangeConfiguration",
            json!({ "settings": { "tierls": settings } }),
        )
        .await
        .unwrap();
}

/// `tierls/status` once `ready` says it shows what the last change asked for.
async fn status_when(server: &mut TestServer, ready: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let status = server
            .client
            .request("tierls/status", Value::Null)
            .await
            .unwrap();
        if ready(&status["result"]) {
            return status["result"].clone();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the change did not take effect: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn names(status: &Value) -> Vec<String> {
    let mut names: Vec<String> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// `[nodes]` changed while the server runs: a node joins (and this machine's fast model
/// becomes one member of the fast tier beside it), a node serving another tier joins through
/// `tiers.executor.model = "http://…"`, then they all leave, and the fast tier, unchanged, keeps
/// its loaded model throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_leave_without_a_restart() {
    let _turn = crate::support::one_model_at_a_time();
    let node = tierls::models::worker::LlamaServer::start(&test_model_path(), 1, 1)
        .unwrap_or_else(|err| panic!("{err}"));
    let fast = json!({ "model": test_model_path(), "context": 2048 });
    let mut server = TestServer::start(&[]);
    server
        .initialize_with(&["utf-16"], json!({ "tiers": { "fast": fast } }))
        .await;
    wait_for_log(&mut server, "the fast tier is ready").await;
    let status = status_when(&mut server, |_| true).await;
    assert_eq!(status["nodes"], json!([]), "{status}");

    // A node whose API key is not in the environment is left out, saying so; the other joins.
    change_settings(
        &mut server,
        json!({ "tiers": { "fast": fast }, "nodes": {
            "gpu": { "url": node.url(), "api": "llama-server", "tiers": ["fast"] },
            "locked": { "url": node.url(), "tiers": ["fast"], "api_key_env": "TIERLS_TEST_NEVER_SET" },
        } }),
    )
    .await;
    let message = error_message(&mut server).await;
    assert!(
        message.contains("node `locked`") && message.contains("TIERLS_TEST_NEVER_SET"),
        "{message}"
    );
    let status = status_when(&mut server, |status| {
        !status["nodes"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(names(&status), ["gpu", "this machine"], "{status}");
    let fast_model = status["tiers"][0]["model"].as_str().unwrap();
    assert!(fast_model.ends_with(".gguf + nodes: gpu"), "{status}");
    assert_eq!(status["tiers"][0]["state"], "ready", "{status}");

    // The executor's model becomes the node's URL: a node of its own joins for that tier.
    change_settings(
        &mut server,
        json!({ "tiers": { "fast": fast, "executor": { "model": node.url() } }, "nodes": { "gpu": { "url": node.url(), "api": "llama-server", "tiers": ["fast"] } } }),
    )
    .await;
    let status = status_when(&mut server, |status| {
        status["nodes"].as_array().unwrap().len() == 3
    })
    .await;
    assert_eq!(status["tiers"][1]["state"], "ready", "{status}");
    assert!(
        status["tiers"][1]["model"]
            .as_str()
            .unwrap()
            .starts_with("nodes: "),
        "{status}"
    );

    // All nodes leave: the executor has nothing to run on, the fast tier runs its own model.
    change_settings(&mut server, json!({ "tiers": { "fast": fast } })).await;
    let status = status_when(&mut server, |status| status["nodes"] == json!([])).await;
    assert_eq!(status["tiers"][1]["state"], "not configured", "{status}");
    let (state, model) = (&status["tiers"][0]["state"], &status["tiers"][0]["model"]);
    assert_eq!(state, "ready", "{status}");
    assert_eq!(model.as_str().unwrap(), test_model_path().to_str().unwrap());
    assert_untouched(&mut server, "fast tier").await;
    assert!(server.finish().await.clean);
}
