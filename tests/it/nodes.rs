//! The router over scripted nodes on loopback: every way a node goes wrong, one test each,
//! and what the router made of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tierls::config::{NodeApi, NodeConfig, Tier};
use tierls::core::generation::{ChatMessage, GenerateRequest, Grammar, Prompt, StopReason};
use tierls::models::router::Router;
use tierls::models::{Cancel, Model, generate};

use crate::fake_node::{Behaviour, FakeNode, refusing_url};

fn node(name: &str, url: &str, tiers: &[Tier]) -> NodeConfig {
    NodeConfig {
        concurrency: 2,
        first_token_seconds: 5,
        stall_seconds: 1,
        ..NodeConfig::new(name, url, NodeApi::LlamaServer, tiers)
    }
}

fn text(prompt: &str) -> GenerateRequest {
    GenerateRequest::text(prompt, 16)
}

/// Sends `request` to `tier` through a router over `nodes` and shows what happened: the
/// answer or the error, then each node's requests and state.
async fn check(nodes: &[(&str, &str)], tier: Tier, request: GenerateRequest) -> String {
    let configs: Vec<NodeConfig> = nodes
        .iter()
        .map(|(name, url)| node(name, url, &[Tier::Executor]))
        .collect();
    let (router, problems) = Router::new(&configs);
    assert!(problems.is_empty(), "{problems:?}");
    show(&router, tier, request).await
}

async fn show(router: &Arc<Router>, tier: Tier, request: GenerateRequest) -> String {
    let outcome = match router.route(tier) {
        None => format!("no route for the {tier} tier"),
        Some(route) => match generate(route.as_ref(), 0, request, Cancel::new()).await {
            Ok(generation) => format!(
                "answer {:?} ({:?})",
                generation.text, generation.stop_reason
            ),
            Err(err) => format!("error: {err}"),
        },
    };
    format!("{outcome}\n{}", node_lines(router))
}

/// Each node's state without the timings, which vary from run to run.
fn node_lines(router: &Router) -> String {
    let status = serde_json::to_value(router.status()).unwrap();
    status
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            format!(
                "  {}: {}, served {}, failed {}{}",
                node["name"].as_str().unwrap(),
                node["health"].as_str().unwrap(),
                node["served"],
                node["failed"],
                match node["lastError"].as_str() {
                    Some(error) => format!(", last error: {error}"),
                    None => String::new(),
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_node_that_answers_streams_through_the_router() {
    let good = FakeNode::start(Behaviour::Answer(vec!["fn ", "main", "()"]));
    let shown = check(&[("good", &good.url)], Tier::Executor, text("x")).await;
    insta::assert_snapshot!(shown, @r#"
    answer "fn main()" (EndOfGeneration)
      good: healthy, served 1, failed 0
    "#);
    let request = &good.generation_requests()[0];
    assert_eq!(request.path, "/completion");
    assert_eq!(request.body["cache_prompt"], true);
    // Before a probe has read the node's slots, no slot is pinned.
    assert_eq!(request.body.get("id_slot"), None);

    // After it, a document's slot is pinned within the node's two slots, and the route
    // takes the node's context.
    let (router, _) = Router::new(&[node("good", &good.url, &[Tier::Executor])]);
    router.probe_now().await;
    let route = router.route(Tier::Executor).unwrap();
    assert_eq!(route.info().n_ctx, 1024);
    generate(route.as_ref(), 3, text("y"), Cancel::new())
        .await
        .unwrap();
    let pinned = good
        .generation_requests()
        .into_iter()
        .find(|r| r.path == "/completion" && r.body["prompt"] == "y")
        .unwrap();
    assert_eq!(pinned.body["id_slot"], 1);
}

#[tokio::test]
async fn a_refused_connection_goes_to_the_next_node() {
    let good = FakeNode::start(Behaviour::Answer(vec!["ok"]));
    let refused = refusing_url();
    let shown = check(
        &[("down", &refused), ("good", &good.url)],
        Tier::Executor,
        text("x"),
    )
    .await;
    let shown = shown.replace(&refused, "$URL");
    insta::assert_snapshot!(shown, @r#"
    answer "ok" (EndOfGeneration)
      down: unknown, served 0, failed 1, last error: node `down`: cannot connect: Connection refused (os error 111)
      good: healthy, served 1, failed 0
    "#);
}

#[tokio::test]
async fn when_every_node_fails_the_error_names_each_one() {
    let failing = FakeNode::start(Behaviour::Fails);
    let refused = refusing_url();
    let shown = check(
        &[("down", &refused), ("crashing", &failing.url)],
        Tier::Executor,
        text("x"),
    )
    .await;
    insta::assert_snapshot!(shown, @"
    error: no node of the executor tier could serve: node `down`: cannot connect: Connection refused (os error 111); node `crashing`: HTTP 500: the model crashed
      down: unknown, served 0, failed 1, last error: node `down`: cannot connect: Connection refused (os error 111)
      crashing: unknown, served 0, failed 1, last error: node `crashing`: HTTP 500: the model crashed
    ");
}

#[tokio::test]
async fn a_request_the_node_refuses_is_not_held_against_it_nor_sent_elsewhere() {
    let strict = FakeNode::start(Behaviour::Refuses);
    let other = FakeNode::start(Behaviour::Answer(vec!["ok"]));
    let shown = check(
        &[("strict", &strict.url), ("other", &other.url)],
        Tier::Executor,
        text("x"),
    )
    .await;
    insta::assert_snapshot!(shown, @"
    error: node `strict` refused the request: HTTP 400: the request exceeds the available context size
      strict: unknown, served 0, failed 0
      other: unknown, served 0, failed 0
    ");
    assert!(other.generation_requests().is_empty());
}

#[tokio::test]
async fn a_stream_that_stalls_or_dies_continues_on_another_node() {
    for behaviour in [
        Behaviour::Stalls(vec!["fn ", "ma"]),
        Behaviour::Dies(vec!["fn ", "ma"]),
    ] {
        let broken = FakeNode::start(behaviour.clone());
        let good = FakeNode::start(Behaviour::Answer(vec!["in", "()"]));
        let shown = check(
            &[("broken", &broken.url), ("good", &good.url)],
            Tier::Executor,
            text("let f = "),
        )
        .await;
        let shown = shown
            .replace("nothing for 1s", "$STALL")
            .replace("error decoding response body", "$DIED");
        assert!(
            shown.starts_with("answer \"fn main()\" (EndOfGeneration)")
                && shown.contains("broken: unknown, served 0, failed 1")
                && shown.contains("good: healthy, served 1, failed 0"),
            "{behaviour:?}: {shown}"
        );
        // The second node was asked to continue the answer, not to start it again.
        let continued = &good.generation_requests()[0].body;
        assert_eq!(continued["prompt"], "let f = fn ma", "{behaviour:?}");
        assert_eq!(continued["n_predict"], 14, "{behaviour:?}");
    }
}

#[tokio::test]
async fn malformed_streams_are_named() {
    let cases = [
        ("html", "<html>busy</html>\n"),
        ("not json", "data: {oops\n\n"),
        ("no content", "data: {\"id\":1}\n\n"),
        (
            "an error event",
            "data: {\"error\":{\"message\":\"out of memory\"}}\n\n",
        ),
        ("cut short", "data: {\"content\":\"x\",\"stop\":false}\n\n"),
    ];
    let mut shown = Vec::new();
    for (case, raw) in cases {
        let node = FakeNode::start(Behaviour::Raw(raw));
        let outcome = check(&[("odd", &node.url)], Tier::Executor, text("x")).await;
        shown.push(format!("{case}: {}", outcome.lines().next().unwrap()));
    }
    insta::assert_snapshot!(shown.join("\n"), @"
    html: error: no node of the executor tier could serve: node `odd`: the event stream has a line that is not an event field: `<html>busy</html>`
    not json: error: no node of the executor tier could serve: node `odd`: a streamed event is not JSON (key must be a string at line 1 column 2): `{oops`
    no content: error: no node of the executor tier could serve: node `odd`: a streamed event has neither `choices` nor `content`
    an error event: error: no node of the executor tier could serve: node `odd`: the node reported an error: out of memory
    cut short: error: no node of the executor tier could serve: node `odd`: the stream ended before the answer did
    ");
}

#[tokio::test]
async fn an_answer_that_breaks_the_schema_is_asked_of_another_node() {
    let sloppy = FakeNode::start(Behaviour::Answer(vec!["Sure! Here", " is the plan"]));
    let good = FakeNode::start(Behaviour::Answer(vec!["{\"steps\":", "[]}"]));
    let mut request = text("plan");
    request.grammar = Some(Grammar::JsonSchema(r#"{"type":"object"}"#.into()));
    let shown = check(
        &[("sloppy", &sloppy.url), ("good", &good.url)],
        Tier::Executor,
        request,
    )
    .await;
    // The good node starts the answer over: half of a JSON document cannot be continued.
    assert!(
        shown.starts_with("answer \"{\\\"steps\\\":[]}\" (EndOfGeneration)"),
        "{shown}"
    );
    assert_eq!(good.generation_requests()[0].body["prompt"], "plan");
    assert!(shown.contains("sloppy: unknown, served 0, failed 1, last error: node `sloppy`: the answer breaks the requested JSON schema: `Sure! Here is the plan`"), "{shown}");
    assert_eq!(
        good.generation_requests()[0].body["json_schema"]["type"],
        "object"
    );
}

#[tokio::test]
async fn an_endless_answer_is_cut_off() {
    // Every piece holds at least one token: at the first piece past the 16 tokens asked
    // for, the client stops the stream itself instead of trusting the node to.
    let endless = FakeNode::start(Behaviour::Endless);
    let shown = check(&[("endless", &endless.url)], Tier::Executor, text("x")).await;
    let expected = format!("answer {:?} (MaxTokens)", "x".repeat(17 * 1000));
    assert!(
        shown.starts_with(&expected),
        "{}",
        &shown[..300.min(shown.len())]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *endless.hung_up.lock().unwrap(),
        1,
        "the node saw the hang-up"
    );

    // Fewer, enormous pieces are stopped by the byte cap instead.
    let flood = FakeNode::start(Behaviour::Flood);
    let started = Instant::now();
    let shown = check(&[("flood", &flood.url)], Tier::Executor, text("x")).await;
    assert!(
        shown.starts_with("error: no node of the executor tier could serve: node `flood`: "),
        "{}",
        &shown[..300.min(shown.len())]
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // The router hung up: the node saw its writes fail.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*flood.hung_up.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_node_that_never_ends_its_answer_meets_the_time_limit() {
    // One space a second stays under the stall timer forever; the request's own time
    // limit (plan.planner_seconds for plans) ends it.
    let trickle = FakeNode::start(Behaviour::Trickle(Duration::from_millis(700)));
    let mut request = GenerateRequest::text("plan", 100_000);
    request.time_limit = Some(Duration::from_secs(2));
    let started = Instant::now();
    let shown = check(&[("trickle", &trickle.url)], Tier::Executor, request).await;
    assert!(shown.contains("(TimeLimit)"), "{shown}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the limit held"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        *trickle.hung_up.lock().unwrap(),
        1,
        "the node saw the hang-up"
    );
}

#[tokio::test]
async fn a_node_slower_than_the_time_budget_gives_what_it_has() {
    let slow = FakeNode::start(Behaviour::Slowly(
        vec!["a", "b", "c", "d"],
        Duration::from_millis(400),
    ));
    let mut request = text("x");
    request.time_limit = Some(Duration::from_millis(1000));
    let started = Instant::now();
    let shown = check(&[("slow", &slow.url)], Tier::Executor, request).await;
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    insta::assert_snapshot!(shown, @r#"
    answer "ab" (TimeLimit)
      slow: healthy, served 1, failed 0
    "#);
}

#[tokio::test]
async fn a_node_that_never_starts_is_left_for_another() {
    let silent = FakeNode::start(Behaviour::Stalls(vec![]));
    let good = FakeNode::start(Behaviour::Answer(vec!["ok"]));
    let mut configs = vec![
        node("silent", &silent.url, &[Tier::Executor]),
        node("good", &good.url, &[Tier::Executor]),
    ];
    configs[0].first_token_seconds = 1;
    let (router, _) = Router::new(&configs);
    let shown = show(&router, Tier::Executor, text("x")).await;
    insta::assert_snapshot!(shown, @r#"
    answer "ok" (EndOfGeneration)
      silent: unknown, served 0, failed 1, last error: node `silent`: no token within 1s
      good: healthy, served 1, failed 0
    "#);
}

#[tokio::test]
async fn cancelling_closes_the_stream() {
    let slow = FakeNode::start(Behaviour::Stalls(vec!["a"]));
    let (router, _) = Router::new(&[node("slow", &slow.url, &[Tier::Executor])]);
    let route = router.route(Tier::Executor).unwrap();
    let cancel = Cancel::new();
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    route.submit(0, text("x"), cancel.clone(), sender);
    // Wait for the first piece, then cancel.
    let first = events.recv().await.unwrap();
    assert!(matches!(first, tierls::models::GenerationEvent::Piece(ref p) if p == "a"));
    cancel.cancel();
    let started = Instant::now();
    let done = loop {
        if let tierls::models::GenerationEvent::Done(result) = events.recv().await.unwrap() {
            break result.unwrap();
        }
    };
    assert_eq!(
        (done.text.as_str(), done.stop_reason),
        ("a", StopReason::Cancelled)
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *slow.hung_up.lock().unwrap(),
        1,
        "the node saw the stream close"
    );
    assert!(node_lines(&router).contains("slow: unknown, served 0, failed 0"));
}

#[tokio::test]
async fn twice_failing_nodes_cool_down_and_a_probe_brings_them_back() {
    let failing = FakeNode::start(Behaviour::Fails);
    let (router, _) = Router::new(&[node("flaky", &failing.url, &[Tier::Executor])]);
    for _ in 0..2 {
        let _ = show(&router, Tier::Executor, text("x")).await;
    }
    let shown = show(&router, Tier::Executor, text("x")).await;
    insta::assert_snapshot!(shown, @"
    error: no node of the executor tier can serve (`flaky` cooling down: node `flaky`: HTTP 500: the model crashed)
      flaky: cooling down, served 0, failed 2, last error: node `flaky`: HTTP 500: the model crashed
    ");
    // No request reached the node while it cooled down.
    assert_eq!(failing.generation_requests().len(), 2);
    // The probe finds it healthy, but the cooldown is not over yet.
    router.probe_all().await;
    assert!(node_lines(&router).contains("cooling down"));
}

#[tokio::test]
async fn executor_work_falls_back_to_the_planners_nodes_and_fast_work_fails_at_once() {
    let refused = refusing_url();
    let planner = FakeNode::start(Behaviour::Answer(vec!["planned"]));
    let configs = vec![
        node("executor-box", &refused, &[Tier::Executor, Tier::Fast]),
        node("planner-box", &planner.url, &[Tier::Planner]),
    ];
    let (router, _) = Router::new(&configs);
    let shown = show(&router, Tier::Executor, text("x")).await;
    assert!(shown.starts_with("answer \"planned\""), "{shown}");
    let started = Instant::now();
    let shown = show(&router, Tier::Fast, text("x")).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        shown.starts_with("error: no node of the fast tier could serve: node `executor-box`: cannot connect: Connection refused (os error 111)"),
        "{shown}"
    );
    let shown = show(&router, Tier::Executor, text("x")).await;
    assert!(shown.starts_with("answer \"planned\""), "{shown}");
}

#[tokio::test]
async fn a_failure_on_a_node_of_both_batch_tiers_is_told_once_and_not_retried_there() {
    // One node serves the planner and the executor: when it fails a plan, the fallback to
    // the executor's nodes has nowhere new to go, and the message names the planner tier
    // once, without nesting.
    let both = FakeNode::start(Behaviour::Fails);
    let (router, _) = Router::new(&[node("both", &both.url, &[Tier::Planner, Tier::Executor])]);
    let shown = show(&router, Tier::Planner, text("plan")).await;
    let error = shown.lines().next().unwrap_or_default();
    assert!(
        error.starts_with("error: no node of the planner tier could serve: node `both`: "),
        "{shown}"
    );
    assert!(!error.contains("executor"), "{shown}");
    assert_eq!(both.generation_requests().len(), 1, "asked once");
}

#[tokio::test]
async fn interactive_requests_are_never_stuck_behind_batch_work() {
    let node_url = FakeNode::start(Behaviour::Slowly(
        vec!["a", "b", "c", "d", "e"],
        Duration::from_millis(300),
    ));
    let mut config = node("shared", &node_url.url, &[Tier::Fast, Tier::Executor]);
    config.concurrency = 2;
    let (router, _) = Router::new(&[config]);
    let executor = router.route(Tier::Executor).unwrap();
    let fast = router.route(Tier::Fast).unwrap();
    // Three batch requests: one takes a slot, the others wait (one slot stays interactive).
    let mut batch = Vec::new();
    for _ in 0..3 {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        executor.submit(0, text("batch"), Cancel::new(), sender);
        batch.push(receiver);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = serde_json::to_value(router.status()).unwrap();
    assert_eq!(
        status[0]["busy"], 1,
        "batch work keeps one slot free: {status}"
    );
    let started = Instant::now();
    let answer = generate(fast.as_ref(), 0, text("fast"), Cancel::new())
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(answer.text, "abcde");
    // Five pieces at 300 ms: the interactive request ran at once, not after the batch.
    assert!(waited < Duration::from_millis(2500), "{waited:?}");
    for mut receiver in batch {
        loop {
            if let tierls::models::GenerationEvent::Done(result) = receiver.recv().await.unwrap() {
                assert_eq!(result.unwrap().text, "abcde");
                break;
            }
        }
    }
}

#[tokio::test]
async fn api_keys_come_from_the_environment_and_never_show() {
    let node_url = FakeNode::start(Behaviour::Fails);
    let mut config = node("keyed", &node_url.url, &[Tier::Executor]);
    config.api_key_env = Some("TIERLS_TEST_NODE_KEY".into());
    // An unset variable leaves the node out and says which variable.
    let (router, problems) = Router::new(std::slice::from_ref(&config));
    assert!(router.is_empty());
    assert_eq!(
        problems,
        [
            "node `keyed`: the environment variable `TIERLS_TEST_NODE_KEY` (its `api_key_env`) is not set"
        ]
    );
    // SAFETY: this test alone reads or writes this variable.
    unsafe { std::env::set_var("TIERLS_TEST_NODE_KEY", "s3cret-key") };
    let (router, problems) = Router::new(&[config]);
    assert!(problems.is_empty());
    let shown = show(&router, Tier::Executor, text("x")).await;
    assert_eq!(
        node_url.generation_requests()[0].authorization.as_deref(),
        Some("Bearer s3cret-key")
    );
    let status = serde_json::to_value(router.status()).unwrap().to_string();
    assert!(
        !shown.contains("s3cret") && !status.contains("s3cret"),
        "{shown}\n{status}"
    );
}

#[tokio::test]
async fn openai_servers_get_the_openai_api() {
    let raw = "data: {\"choices\":[{\"delta\":{\"content\":\"He\"},\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"llo\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let ollama = FakeNode::start(Behaviour::Raw(raw));
    let mut config = node("ollama", &ollama.url, &[Tier::Planner]);
    config.api = NodeApi::Openai;
    config.model = Some("qwen2.5-coder:32b".into());
    let (router, _) = Router::new(&[config]);
    let request = GenerateRequest {
        prompt: Prompt::Chat(vec![ChatMessage::new("user", "hi")]),
        ..text("")
    };
    let shown = show(&router, Tier::Planner, request).await;
    insta::assert_snapshot!(shown, @r#"
    answer "Hello" (EndOfGeneration)
      ollama: healthy, served 1, failed 0
    "#);
    let sent = &ollama.generation_requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.body["model"], "qwen2.5-coder:32b");
    assert_eq!(sent.body["messages"][0]["content"], "hi");
}

#[test]
fn a_tier_no_node_serves_has_no_route() {
    let (router, _) = Router::new(&[node("only-fast", "http://127.0.0.1:9", &[Tier::Fast])]);
    assert!(router.route(Tier::Planner).is_none());
    assert_eq!(router.tiers(), [Tier::Fast]);
    let status: Value = serde_json::to_value(router.status()).unwrap();
    assert_eq!(status[0]["tiers"], serde_json::json!(["fast"]));
}

#[tokio::test]
async fn two_requests_for_one_slot_do_not_both_pin_it() {
    let slow = FakeNode::start(Behaviour::Slowly(
        vec!["a", "b"],
        Duration::from_millis(200),
    ));
    let (router, _) = Router::new(&[node("slow", &slow.url, &[Tier::Executor])]);
    router.probe_now().await;
    let route = router.route(Tier::Executor).unwrap();
    let (first, second) = tokio::join!(
        generate(route.as_ref(), 0, text("first"), Cancel::new()),
        generate(route.as_ref(), 0, text("second"), Cancel::new()),
    );
    assert_eq!(
        (first.unwrap().text, second.unwrap().text),
        ("ab".into(), "ab".into())
    );
    // llama-server would hold the second until the first is done: it takes the other slot.
    let pins = |requests: Vec<crate::fake_node::Received>| {
        let mut pins: Vec<String> = requests
            .iter()
            .filter(|r| r.path == "/completion")
            .map(|r| {
                r.body
                    .get("id_slot")
                    .map_or("none".into(), |v| v.to_string())
            })
            .collect();
        pins.sort();
        pins
    };
    assert_eq!(pins(slow.generation_requests()), ["0", "1"]);
    // Once both are done, the slot is free to pin again.
    generate(route.as_ref(), 0, text("third"), Cancel::new())
        .await
        .unwrap();
    let third = slow
        .generation_requests()
        .into_iter()
        .find(|r| r.body["prompt"] == "third")
        .unwrap();
    assert_eq!(third.body["id_slot"], 0);
    // With both slots held, a third request goes unpinned: llama-server gives it the first
    // slot that frees.
    let busy = FakeNode::start(Behaviour::Slowly(
        vec!["a", "b"],
        Duration::from_millis(200),
    ));
    // (More requests at once than slots: the router does not hold the third back.)
    let mut config = node("busy", &busy.url, &[Tier::Executor]);
    config.concurrency = 3;
    let (router, _) = Router::new(&[config]);
    router.probe_now().await;
    let route = router.route(Tier::Executor).unwrap();
    let (one, two, three) = tokio::join!(
        generate(route.as_ref(), 0, text("one"), Cancel::new()),
        generate(route.as_ref(), 0, text("two"), Cancel::new()),
        generate(route.as_ref(), 0, text("three"), Cancel::new()),
    );
    assert!(one.is_ok() && two.is_ok() && three.is_ok());
    assert_eq!(pins(busy.generation_requests()), ["0", "1", "none"]);
}

// ---------------------------------------------------------------------------------------
// Interactive budgets and the node's prompt cache.

/// A fast-tier node that may take a minute before its first token, asked with a budget.
fn patient_node(url: &str) -> NodeConfig {
    NodeConfig {
        first_token_seconds: 60,
        stall_seconds: 30,
        ..node("slow", url, &[Tier::Fast])
    }
}

/// Every wait of a completion is inside its budget: connecting, the answer's head, the
/// first token.
#[tokio::test]
async fn a_completion_waits_for_no_node_past_its_budget() {
    let cases = [
        (
            "the head after 10 s",
            Behaviour::PrefillBeforeHead(Duration::from_secs(10), vec!["late"]),
        ),
        (
            "no head ever",
            Behaviour::PrefillBeforeHead(Duration::from_secs(3600), vec![]),
        ),
        ("a head, then nothing", Behaviour::Stalls(vec![])),
    ];
    let mut out = String::new();
    for (label, behaviour) in cases {
        let slow = FakeNode::start(behaviour);
        let (router, _) = Router::new(&[patient_node(&slow.url)]);
        let mut request = text("x");
        request.time_limit = Some(Duration::from_millis(400));
        let started = Instant::now();
        let shown = show(&router, Tier::Fast, request).await;
        let waited = started.elapsed();
        assert!(waited < Duration::from_millis(1200), "{label}: {waited:?}");
        out.push_str(&format!("{label}\n{shown}\n"));
    }
    insta::assert_snapshot!(out);
}

/// Cancels `request` on `node` after `after`; the stop reason, once the answer is done.
async fn cancel_after(router: &Arc<Router>, request: GenerateRequest, after: Duration) -> String {
    let route = router.route(Tier::Fast).unwrap();
    let cancel = Cancel::new();
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    route.submit(0, request, cancel.clone(), sender);
    tokio::time::sleep(after).await;
    cancel.cancel();
    let started = Instant::now();
    loop {
        if let tierls::models::GenerationEvent::Done(result) = events.recv().await.unwrap() {
            assert!(
                started.elapsed() < Duration::from_millis(300),
                "the cancel waited"
            );
            return match result {
                Ok(generation) => format!("{:?} {:?}", generation.text, generation.stop_reason),
                Err(err) => format!("error: {err}"),
            };
        }
    }
}

/// A request given up while the node reads its prompt returns at once, but its connection
/// stays open until the node has read the prompt to the end (and sent the first token), so
/// the node keeps that prompt's cache for the next keystroke.
#[tokio::test]
async fn a_request_given_up_before_its_first_token_lets_the_node_finish_the_prompt() {
    let prefill = Duration::from_millis(600);
    let mut out = String::new();
    for (label, behaviour) in [
        (
            "head after the prompt",
            Behaviour::PrefillBeforeHead(prefill, vec!["a", "b"]),
        ),
        (
            "head before the prompt",
            Behaviour::PrefillAfterHead(prefill, vec!["a", "b"]),
        ),
    ] {
        // Cancelled by the next keystroke.
        let node = FakeNode::start(behaviour.clone());
        let (router, _) = Router::new(&[patient_node(&node.url)]);
        let stopped = cancel_after(&router, text("x"), Duration::from_millis(150)).await;
        assert_eq!(
            *node.open.lock().unwrap(),
            1,
            "{label}: closed at the cancel"
        );
        tokio::time::sleep(prefill + Duration::from_millis(400)).await;
        out.push_str(&format!(
            "{label}, cancelled: {stopped}; prompts cut {}, open {}\n",
            node.prefill_cut.lock().unwrap(),
            node.open.lock().unwrap()
        ));
        // Out of time (the completion budget) while the node reads the prompt.
        let node = FakeNode::start(behaviour);
        let (router, _) = Router::new(&[patient_node(&node.url)]);
        let mut request = text("x");
        request.time_limit = Some(Duration::from_millis(150));
        let shown = show(&router, Tier::Fast, request).await;
        tokio::time::sleep(prefill + Duration::from_millis(400)).await;
        out.push_str(&format!(
            "{label}, out of time: {}; prompts cut {}, open {}\n",
            shown.lines().next().unwrap(),
            node.prefill_cut.lock().unwrap(),
            node.open.lock().unwrap()
        ));
    }
    insta::assert_snapshot!(out);
}

/// A node that never answers does not collect a background connection per keystroke: at
/// most two cancelled requests per node wait for their prompt; the rest close at once.
#[tokio::test]
async fn background_waits_for_a_silent_node_are_bounded() {
    let silent = FakeNode::start(Behaviour::PrefillBeforeHead(
        Duration::from_secs(3600),
        vec![],
    ));
    let (router, _) = Router::new(&[patient_node(&silent.url)]);
    for _ in 0..6 {
        cancel_after(&router, text("x"), Duration::from_millis(60)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        (
            *silent.open.lock().unwrap(),
            *silent.prefill_cut.lock().unwrap()
        ),
        (2, 4),
        "(still open, closed at their cancel)"
    );
}

/// The next keystroke's request for a document whose last request is still reading its
/// prompt waits for it (its slot holds the document's prefix) instead of queueing behind it
/// on the node; one superseded while it waits is never sent at all.
#[tokio::test]
async fn the_next_request_waits_for_its_slot_to_finish_the_prompt() {
    let prefill = Duration::from_millis(600);
    let node = FakeNode::start(Behaviour::PrefillBeforeHead(prefill, vec!["a", "b"]));
    let (router, _) = Router::new(&[patient_node(&node.url)]);
    router.probe_now().await;
    let route = router.route(Tier::Fast).unwrap();
    let started = Instant::now();
    // The first keystroke's request, cancelled while the node reads its prompt.
    cancel_after(&router, text("first"), Duration::from_millis(100)).await;
    // The second, superseded by the third while it waits for the slot.
    let (sender, _events) = tokio::sync::mpsc::unbounded_channel();
    let second = Cancel::new();
    route.submit(0, text("second"), second.clone(), sender);
    tokio::time::sleep(Duration::from_millis(100)).await;
    second.cancel();
    let third = generate(route.as_ref(), 0, text("third"), Cancel::new())
        .await
        .unwrap();
    let sent: Vec<(String, Duration)> = node
        .generation_requests()
        .iter()
        .filter(|r| r.at >= started)
        .map(|r| {
            (
                r.body["prompt"].as_str().unwrap_or(&r.path).to_owned(),
                r.at - started,
            )
        })
        .collect();
    let prompts: Vec<&str> = sent.iter().map(|(prompt, _)| prompt.as_str()).collect();
    assert_eq!(prompts, ["first", "third"], "{sent:?}");
    assert!(
        sent[1].1 >= prefill,
        "sent before the slot was free: {sent:?}"
    );
    assert_eq!(
        (third.text.as_str(), third.stop_reason),
        ("ab", StopReason::EndOfGeneration)
    );
}

/// The same through the language server: the editor gets an empty answer at the budget.
#[tokio::test]
async fn the_editor_gets_an_empty_completion_at_the_budget_from_a_silent_node() {
    let silent = FakeNode::start(Behaviour::PrefillBeforeHead(
        Duration::from_secs(3600),
        vec![],
    ));
    let text = "fn add(a: i32, b: i32) -> i32 {\n    \n}\n";
    let mut server = crate::support::TestServer::start(&[("src/lib.rs", text.as_bytes())]);
    server
        .initialize_with(
            &["utf-16"],
            serde_json::json!({
                "nodes": { "silent": { "url": silent.url, "api": "llama-server", "tiers": ["fast"] } },
                "completion": { "budget_ms": 400, "debounce_ms": 0 },
            }),
        )
        .await;
    server.open("src/lib.rs", text).await;
    for _ in 0..100 {
        let status = server
            .client
            .request("tierls/status", serde_json::json!(null))
            .await
            .unwrap();
        if status["result"]["tiers"][0]["state"] == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let answer = server
        .client
        .request(
            "textDocument/inlineCompletion",
            serde_json::json!({ "textDocument": { "uri": server.uri("src/lib.rs") }, "position": { "line": 1, "character": 4 } }),
        )
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(answer["result"]["items"], serde_json::json!([]), "{answer}");
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_millis(1200),
        "{waited:?}"
    );
    let sent: Vec<String> = silent
        .generation_requests()
        .iter()
        .filter(|r| r.path == "/completion")
        .map(|r| r.body["prompt"].to_string())
        .collect();
    assert_eq!(sent.len(), 1, "the request reached the node: {sent:?}");
    assert!(server.finish().await.clean);
}
