//! Worker nodes for real: llama.cpp's llama-server serving the test model on loopback,
//! reached through the router, the LSP server and `tierls status`.

use std::time::{Duration, Instant};

use serde_json::json;
use tierls::config::{NodeApi, NodeConfig, Tier};
use tierls::core::generation::{ChatMessage, GenerateRequest, Grammar, Prompt, StopReason};
use tierls::models::router::Router;
use tierls::models::worker::LlamaServer;
use tierls::models::{Cancel, GenerationEvent, Model, generate};

use crate::support::{TestServer, one_model_at_a_time};

fn start(slots: u32) -> LlamaServer {
    LlamaServer::start(&tierls::models::embedded::test_model_path(), slots, 1)
        .unwrap_or_else(|err| panic!("{err}"))
}

fn node(name: &str, server: &LlamaServer, tiers: &[Tier]) -> NodeConfig {
    NodeConfig {
        concurrency: 2,
        stall_seconds: 10,
        ..NodeConfig::new(name, server.url(), NodeApi::LlamaServer, tiers)
    }
}

#[tokio::test]
async fn completions_plans_and_fill_in_the_middle_through_llama_server() {
    let _turn = one_model_at_a_time();
    let server = start(2);
    let (router, _) = Router::new(&[node("local", &server, &[Tier::Fast, Tier::Planner])]);
    router.probe_now().await;
    let fast = router.route(Tier::Fast).unwrap();
    // The route's context is the node's per slot, read from `/props` by the probe.
    assert_eq!(fast.info().n_ctx, 2048);
    // The probe asked `/infill`: the test model has no FIM tokens.
    assert!(!fast.info().has_fim);

    // The same prompt twice on one slot: the node's KV cache keeps the prefix.
    let prompt = "// Return the larger of two numbers.\nfn max(a: i32, b: i32) -> i32 {\n";
    let first = generate(
        fast.as_ref(),
        0,
        GenerateRequest::text(prompt, 12),
        Cancel::new(),
    )
    .await
    .unwrap();
    assert!(
        !first.text.is_empty() && first.usage.generated_tokens > 0,
        "{first:?}"
    );
    let again = generate(
        fast.as_ref(),
        0,
        GenerateRequest::text(prompt, 12),
        Cancel::new(),
    )
    .await
    .unwrap();
    assert_eq!(again.text, first.text, "greedy answers repeat");
    assert!(
        again.usage.evaluated_tokens < first.usage.evaluated_tokens,
        "the cached prompt is not evaluated again: {:?} then {:?}",
        first.usage,
        again.usage
    );

    // The test model has no FIM tokens: `/infill` answers 501 and the prefix is continued.
    let fim = GenerateRequest {
        prompt: Prompt::Fim {
            prefix: prompt.to_owned(),
            suffix: "}\n".to_owned(),
            context: Default::default(),
        },
        ..GenerateRequest::text("", 8)
    };
    let filled = generate(fast.as_ref(), 1, fim, Cancel::new())
        .await
        .unwrap();
    assert!(!filled.text.is_empty(), "{filled:?}");

    // A plan-shaped request: a chat rendered by the node's template, held to a JSON schema.
    let planner = router.route(Tier::Planner).unwrap();
    let schema = r#"{"type":"object","properties":{"steps":{"type":"array","items":{"type":"string","maxLength":40},"maxItems":2}},"required":["steps"],"additionalProperties":false}"#;
    let request = GenerateRequest {
        prompt: Prompt::Chat(vec![ChatMessage::new(
            "user",
            "List the steps to rename `max` to `larger` as JSON.",
        )]),
        max_tokens: 200,
        stop: Vec::new(),
        time_limit: None,
        grammar: Some(Grammar::JsonSchema(schema.to_owned())),
        heal: false,
    };
    let plan = generate(planner.as_ref(), 0, request, Cancel::new())
        .await
        .unwrap();
    // The schema bounds the answer well under the token limit: it always finishes as JSON.
    assert_eq!(
        plan.stop_reason,
        StopReason::EndOfGeneration,
        "{}",
        plan.text
    );
    let value: serde_json::Value = serde_json::from_str(&plan.text).unwrap();
    assert!(value["steps"].is_array(), "{}", plan.text);

    let status = serde_json::to_value(router.status()).unwrap();
    assert_eq!(status[0]["health"], "healthy", "{status}");
    assert_eq!(status[0]["slots"]["total"], 2, "{status}");
    assert_eq!(status[0]["served"], 4, "{status}");
}

#[tokio::test]
async fn killing_a_node_mid_stream_finishes_on_the_other() {
    let _turn = one_model_at_a_time();
    let mut first = start(1);
    let second = start(1);
    let (router, _) = Router::new(&[
        node("first", &first, &[Tier::Executor]),
        node("second", &second, &[Tier::Executor]),
    ]);
    router.probe_now().await;
    let route = router.route(Tier::Executor).unwrap();
    let request = GenerateRequest::text("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,", 80);
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    route.submit(0, request, Cancel::new(), sender);

    // After a few pieces, kill whichever node is streaming.
    let mut streamed = String::new();
    for _ in 0..5 {
        match events.recv().await.unwrap() {
            GenerationEvent::Piece(piece) => streamed.push_str(&piece),
            GenerationEvent::Done(result) => panic!("finished before the kill: {result:?}"),
        }
    }
    let status = serde_json::to_value(router.status()).unwrap();
    let busy = if status[0]["busy"] == 1 {
        "first"
    } else {
        "second"
    };
    if busy == "first" {
        first.kill();
    } else {
        drop(second);
    }
    let started = Instant::now();
    let generation = loop {
        match events.recv().await.unwrap() {
            GenerationEvent::Piece(piece) => streamed.push_str(&piece),
            GenerationEvent::Done(result) => break result.unwrap(),
        }
    };
    assert_eq!(
        generation.text, streamed,
        "the pieces make the whole answer"
    );
    assert!(generation.usage.generated_tokens > 5, "{generation:?}");
    let status = serde_json::to_value(router.status()).unwrap();
    let (killed, survivor) = if busy == "first" { (0, 1) } else { (1, 0) };
    assert_eq!(status[killed]["failed"], 1, "{status}");
    assert_eq!(status[survivor]["served"], 1, "{status}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn tierls_status_probes_the_nodes() {
    let _turn = one_model_at_a_time();
    let server = start(2);
    let workspace = tempfile::tempdir().unwrap();
    let refused = crate::fake_node::refusing_url();
    std::fs::write(
        workspace.path().join("tierls.toml"),
        format!(
            "[nodes.local]\nurl = \"{}\"\napi = \"llama-server\"\ntiers = [\"fast\", \"executor\"]\n\n[nodes.gone]\nurl = \"{refused}\"\ntiers = [\"planner\"]\n",
            server.url()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tierls"))
        .args(["status", "--workspace"])
        .arg(workspace.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "one node is down: {stdout}");
    let local = stdout.lines().find(|l| l.starts_with("local")).unwrap();
    assert!(
        local.contains("healthy") && local.contains("0/2"),
        "{stdout}"
    );
    let gone = stdout.lines().find(|l| l.starts_with("gone")).unwrap();
    assert!(
        gone.contains("down") && gone.contains("cannot connect"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fast      nodes: local (ready)"),
        "{stdout}"
    );
    assert!(stdout.contains("planner   nodes: gone (ready)"), "{stdout}");
    // The node on this machine shows its process's memory (found through /proc); the one
    // that is down shows none.
    assert!(local.contains(" MiB "), "{stdout}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tierls"))
        .args(["status", "--json", "--workspace"])
        .arg(workspace.path())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let node = |name: &str| {
        report["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|node| node["name"] == name)
            .unwrap()
            .clone()
    };
    let shown = node("local")["memoryBytes"].as_u64().unwrap_or(0) as f64;
    let measured = server.resident_bytes().unwrap() as f64;
    assert!(
        (shown / measured - 1.0).abs() < 0.2,
        "status shows {shown} bytes, the process has {measured}"
    );
    assert_eq!(node("gone")["memoryBytes"], serde_json::Value::Null);
}

#[tokio::test]
async fn the_language_server_completes_through_a_worker_node() {
    let _turn = one_model_at_a_time();
    let node = start(2);
    let mut server =
        TestServer::start(&[("src/lib.rs", b"fn add(a: i32, b: i32) -> i32 {\n    \n}\n")]);
    server
        .initialize_with(
            &["utf-16"],
            json!({ "nodes": { "local": { "url": node.url(), "api": "llama-server", "tiers": ["fast"] } } }),
        )
        .await;
    server
        .open("src/lib.rs", "fn add(a: i32, b: i32) -> i32 {\n    \n}\n")
        .await;
    // The fast tier is routed once the node has been probed.
    let mut status = json!(null);
    for _ in 0..100 {
        status = server
            .client
            .request("tierls/status", json!(null))
            .await
            .unwrap();
        if status["result"]["tiers"][0]["state"] == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["result"]["nodes"][0]["name"], "local", "{status}");
    assert_eq!(
        status["result"]["nodes"][0]["health"], "healthy",
        "{status}"
    );
    assert_eq!(
        status["result"]["tiers"][0]["model"], "nodes: local",
        "{status}"
    );
    let answer = server
        .client
        .request(
            "textDocument/inlineCompletion",
            json!({ "textDocument": { "uri": server.uri("src/lib.rs") }, "position": { "line": 1, "character": 4 } }),
        )
        .await
        .unwrap();
    let items = answer["result"]["items"].as_array().unwrap();
    assert!(!items.is_empty(), "{answer}");
    let status = server
        .client
        .request("tierls/status", json!(null))
        .await
        .unwrap();
    assert!(
        status["result"]["nodes"][0]["served"].as_u64().unwrap() >= 1,
        "{status}"
    );
    // The node goes away: the next probe finds it down and the editor hears of it.
    drop(node);
    loop {
        let changed = server.client.wait_for("tierls/nodesChanged").await.unwrap();
        if changed["params"]["nodes"][0]["health"] == "down" {
            break;
        }
    }
    // A completion (at a new place, so that no cached answer serves it) is empty at once.
    server
        .change(
            "src/lib.rs",
            2,
            json!([{ "range": { "start": { "line": 1, "character": 4 }, "end": { "line": 1, "character": 4 } }, "text": "let sum = " }]),
        )
        .await;
    let started = Instant::now();
    let answer = server
        .client
        .request(
            "textDocument/inlineCompletion",
            json!({ "textDocument": { "uri": server.uri("src/lib.rs") }, "position": { "line": 1, "character": 14 } }),
        )
        .await
        .unwrap();
    assert_eq!(answer["result"]["items"], json!([]), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    server.finish().await;
}

/// Typing into a document whose completions go to a real llama-server: each keystroke's
/// request is cancelled by the next, as the completion engine does, and every 20th runs to
/// the end. The prompt tokens the node evaluates for those must stay flat: a cancelled
/// request lets the node finish reading its prompt, so the next finds it in the cache.
/// (The test model, Gemma 3, has sliding-window attention: the case the issue measured.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystrokes_cancelled_by_the_next_keep_the_nodes_prompt_cache() {
    let _turn = one_model_at_a_time();
    let server = start(1);
    let (router, _) = Router::new(&[node("local", &server, &[Tier::Fast])]);
    router.probe_now().await;
    let fast = router.route(Tier::Fast).unwrap();
    let base: String = (0..40)
        .map(|n| {
            format!(
                "pub fn value_{n}(x: i32) -> i32 {{\n    x * {n} + {}\n}}\n\n",
                n * 3
            )
        })
        .collect();
    let typed =
        "pub fn total(values: &[i32]) -> i32 {\n    values.iter().map(|v| value_3(*v)).sum()\n}\n";
    let typed: Vec<char> = typed.chars().cycle().take(200).collect();
    let mut evaluated = Vec::new();
    let mut prompt_tokens = 0;
    let mut previous: Option<Cancel> = None;
    for keystroke in 1..=typed.len() {
        let prompt = format!("{base}{}", typed[..keystroke].iter().collect::<String>());
        if let Some(cancel) = previous.take() {
            cancel.cancel();
        }
        let mut request = GenerateRequest::text(&prompt, 8);
        request.time_limit = Some(Duration::from_secs(20));
        if keystroke % 20 == 0 {
            let generation = generate(fast.as_ref(), 0, request, Cancel::new())
                .await
                .unwrap();
            evaluated.push(generation.usage.evaluated_tokens);
            prompt_tokens = generation.usage.prompt_tokens;
            continue;
        }
        let cancel = Cancel::new();
        let (sender, _events) = tokio::sync::mpsc::unbounded_channel();
        fast.submit(0, request, cancel.clone(), sender);
        previous = Some(cancel);
        // 40–100 ms between keys.
        tokio::time::sleep(Duration::from_millis(40 + (keystroke as u64 * 37) % 60)).await;
    }
    // The first answered request comes after 19 cancelled ones that each started on the
    // whole ~520-token prompt: had they been cut mid-prompt, it would read it all again
    // (measured: 521, against 6 when they finish reading it).
    let most = evaluated.iter().copied().max().unwrap_or(0);
    assert!(
        prompt_tokens > 400 && most > 0 && most < prompt_tokens / 8,
        "tokens evaluated every 20th keystroke, of {prompt_tokens} in the prompt: {evaluated:?}"
    );
}

/// Token healing on llama-server: the half-typed word comes off the prompt, a grammar makes
/// the answer start with it, and the answer comes back without it, finishing the word.
#[tokio::test]
async fn llama_server_heals_a_half_typed_word() {
    let _turn = one_model_at_a_time();
    let server = start(1);
    let (router, _) = Router::new(&[node("local", &server, &[Tier::Fast])]);
    router.probe_now().await;
    let fast = router.route(Tier::Fast).unwrap();
    let code = "def apply_discount(price, percent):\n    return price * (1 - percent / 100)\n\n\ndef total(prices):\n    return [apply_disc";
    let request = |heal| GenerateRequest {
        stop: vec!["\n".into()],
        heal,
        ..GenerateRequest::text(code, 16)
    };
    let healed = generate(fast.as_ref(), 0, request(true), Cancel::new())
        .await
        .unwrap();
    let plain = generate(fast.as_ref(), 0, request(false), Cancel::new())
        .await
        .unwrap();
    assert!(
        healed.text.starts_with("ount("),
        "healed: {:?}, plain: {:?}",
        healed.text,
        plain.text
    );
    // A word with a character outside ASCII, and a prompt that is only the word.
    for prompt in ["naïve_total = 1\nprint(naïve_to", "tot"] {
        let request = GenerateRequest {
            stop: vec!["\n".into()],
            heal: true,
            ..GenerateRequest::text(prompt, 8)
        };
        let answer = generate(fast.as_ref(), 0, request, Cancel::new()).await;
        assert!(answer.is_ok(), "{prompt:?}: {answer:?}");
    }
}

/// One member's line of the router's status, by name.
fn member(router: &Router, name: &str) -> serde_json::Value {
    let status = serde_json::to_value(router.status()).unwrap();
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|member| member["name"] == name)
        .unwrap_or_else(|| panic!("no member `{name}`: {status}"))
        .clone()
}

/// This machine's tiers with the executor on `model` (one slot, nothing loaded yet).
fn executor_here(model: std::path::PathBuf) -> std::sync::Arc<tierls::models::tiers::TierSet> {
    let tiers = tierls::models::tiers::TierSet::new(tierls::models::machine::detect());
    let config = tierls::config::TierConfig {
        context: 2048,
        slots: 1,
        ..Default::default()
    };
    tiers.configure(Tier::Executor, model, &config).unwrap();
    tiers
}

/// The executor tier on this machine's model and on a llama-server node at once: the
/// embedded model is one more member of the router, with its own slots and state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_served_by_its_local_model_and_a_node_uses_both() {
    use tierls::models::tiers::LocalState;
    let _turn = one_model_at_a_time();
    let server = start(1);
    let tiers = executor_here(tierls::models::embedded::test_model_path());
    let gpu = NodeConfig {
        concurrency: 1,
        ..node("gpu", &server, &[Tier::Executor])
    };
    let (router, notes) = tierls::models::router::serve_nodes(&tiers, &[gpu]).await;
    let router = router.unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let (path, _) = tiers.describe(Tier::Executor);
    let path = path.unwrap().display().to_string();
    assert!(
        path.ends_with(".gguf + nodes: gpu"),
        "the tier names both: {path}"
    );
    // Not loaded yet, and healthy: it loads with the first request the router gives it.
    let here = member(&router, "this machine");
    assert_eq!(here["health"], "healthy", "{here}");
    assert_eq!(here["api"], "llama.cpp", "{here}");
    assert_eq!(
        tiers.local_state(Tier::Executor),
        LocalState::Unloaded { fits: true }
    );

    // Four requests at once on two one-slot members: both take some.
    let route = tiers.get(Tier::Executor).unwrap();
    let requests = (0..4).map(|i| {
        let route = route.clone();
        tokio::spawn(async move {
            let prompt =
                format!("// Step {i}: add two numbers.\nfn add(a: i32, b: i32) -> i32 {{\n");
            generate(
                route.as_ref(),
                i,
                GenerateRequest::text(&prompt, 8),
                Cancel::new(),
            )
            .await
        })
    });
    for request in requests.collect::<Vec<_>>() {
        let answer = request.await.unwrap().unwrap();
        assert!(!answer.text.is_empty(), "{answer:?}");
    }
    let (here, gpu) = (member(&router, "this machine"), member(&router, "gpu"));
    assert!(
        here["served"].as_u64().unwrap() >= 1 && gpu["served"].as_u64().unwrap() >= 1,
        "both members served: {here} {gpu}"
    );
    assert_eq!(
        here["served"].as_u64().unwrap() + gpu["served"].as_u64().unwrap(),
        4
    );
    assert_eq!(tiers.local_state(Tier::Executor), LocalState::Ready);
    assert_eq!(here["health"], "healthy", "{here}");
}

/// This machine's model for a node-served tier is a file that is gone by the time the
/// router first gives it work: the load fails, the request is answered by the node, and the
/// member shows why it is down; the tier keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_member_that_cannot_load_leaves_the_work_to_the_node() {
    let _turn = one_model_at_a_time();
    let server = start(1);
    let folder = tempfile::tempdir().unwrap();
    let copy = folder.path().join("vanishing.gguf");
    std::fs::copy(tierls::models::embedded::test_model_path(), &copy).unwrap();
    let tiers = executor_here(copy.clone());
    let (router, _) =
        tierls::models::router::serve_nodes(&tiers, &[node("gpu", &server, &[Tier::Executor])])
            .await;
    let router = router.unwrap();
    std::fs::remove_file(&copy).unwrap();
    let route = tiers.get(Tier::Executor).unwrap();
    for i in 0..3 {
        let answer = generate(
            route.as_ref(),
            0,
            GenerateRequest::text(format!("fn step_{i}() {{\n"), 6),
            Cancel::new(),
        )
        .await
        .unwrap();
        assert!(!answer.text.is_empty(), "{answer:?}");
    }
    let here = member(&router, "this machine");
    assert_eq!(here["health"], "down", "{here}");
    assert!(
        here["lastError"]
            .as_str()
            .unwrap()
            .contains("vanishing.gguf"),
        "the member says which file: {here}"
    );
    assert_eq!(member(&router, "gpu")["served"], 3);
}

/// The node set changes while a request runs on a node that leaves: the request finishes
/// there (the old router lives while its requests do); new requests see the new set. A node
/// kept across the change keeps what the router knew of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_running_on_a_node_that_leaves_finishes_there() {
    use tierls::models::tiers::TierSet;
    let _turn = one_model_at_a_time();
    let (first, second) = (start(1), start(1));
    let tiers = TierSet::new(tierls::models::machine::detect());
    let leaving = node("leaving", &first, &[Tier::Executor]);
    let staying = node("staying", &second, &[Tier::Planner]);
    let (old, _) = tierls::models::router::serve_nodes(&tiers, &[leaving, staying.clone()]).await;
    let old = old.unwrap();
    let planner = tiers.get(Tier::Planner).unwrap();
    generate(
        planner.as_ref(),
        0,
        GenerateRequest::text("fn main() {", 4),
        Cancel::new(),
    )
    .await
    .unwrap();
    drop(planner);
    let route = tiers.get(Tier::Executor).unwrap();
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    let request = GenerateRequest {
        stop: Vec::new(),
        ..GenerateRequest::text("Count from one to one hundred: one, two, three,", 60)
    };
    route.submit(0, request, Cancel::new(), sender);
    match events.recv().await.unwrap() {
        GenerationEvent::Piece(_) => {}
        GenerationEvent::Done(done) => panic!("no piece first: {done:?}"),
    }
    drop(route);

    let (new, _) = Router::build(&[staying], Some(&tiers), Some(&old));
    new.probe_now().await;
    new.replace(Some(&old), &tiers);
    drop(old);
    assert!(
        matches!(
            tiers.get(Tier::Executor),
            Err(tierls::models::ModelError::TierNotConfigured { .. })
        ),
        "no node serves the executor any more"
    );
    assert!(tiers.get(Tier::Planner).is_ok());
    let mut text = String::new();
    let done = loop {
        match events.recv().await.unwrap() {
            GenerationEvent::Piece(piece) => text.push_str(&piece),
            GenerationEvent::Done(done) => break done.unwrap(),
        }
    };
    assert_eq!(done.stop_reason, StopReason::MaxTokens, "{done:?}");
    assert!(text.len() > 20, "{text}");
    let kept: Vec<(String, u64)> = new
        .status()
        .into_iter()
        .map(|node| (node.name, node.served))
        .collect();
    assert_eq!(kept, [("staying".to_owned(), 1)]);
}
