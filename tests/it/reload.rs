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
    let messages = server
        .client
        .drain(std::time::Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        !messages.iter().any(|m| m["params"]["message"]
            .as_str()
            .is_some_and(|text| text.contains("executor tier"))),
        "the executor was touched: {messages:?}"
    );
    assert!(server.finish().await.clean);
}
