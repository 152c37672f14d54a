//! `tierls bench nodes`: worker nodes on loopback (llama-server serving the test model),
//! reached through the router, side by side: two nodes against one (and one node with this
//! machine's model beside it) for a batch of executor steps; a completion through the router against the embedded backend; completion
//! latency while a plan's work runs on the same node.
//!
//! Each node runs with one CPU thread, standing in for a machine of its own.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::output;
use crate::config::{NodeApi, NodeConfig, Tier, TierConfig};
use crate::core::generation::GenerateRequest;
use crate::models::embedded::{EmbeddedModel, EmbeddedOptions, test_model_path};
use crate::models::router::Router;
use crate::models::tiers::TierSet;
use crate::models::worker::LlamaServer;
use crate::models::{Cancel, GenerationEvent, Model, generate};

pub fn run(model: Option<PathBuf>) -> ExitCode {
    let path = model.unwrap_or_else(test_model_path);
    let Some(runtime) = super::runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(bench(&path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            output::error(&format!("benchmark failed: {err}"));
            ExitCode::FAILURE
        }
    }
}

fn node(name: &str, server: &LlamaServer, tiers: &[Tier], concurrency: u32) -> NodeConfig {
    NodeConfig {
        concurrency,
        first_token_seconds: 120,
        stall_seconds: 60,
        ..NodeConfig::new(name, server.url(), NodeApi::LlamaServer, tiers)
    }
}

async fn router(nodes: &[NodeConfig]) -> Arc<Router> {
    let (router, _) = Router::new(nodes);
    router.probe_now().await;
    router
}

const STEPS: usize = 6;
const STEP_TOKENS: u32 = 48;

fn step(i: usize) -> GenerateRequest {
    GenerateRequest::text(
        format!(
            "// Step {i}: a function that returns the square of {i}.\nfn square_{i}(x: i64) -> i64 {{\n"
        ),
        STEP_TOKENS,
    )
}

/// Runs the batch of steps at once through `route`; returns (time, tokens).
async fn batch(route: Arc<dyn Model>) -> anyhow::Result<(Duration, u32)> {
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..STEPS {
        let route = route.clone();
        set.spawn(async move { generate(route.as_ref(), i, step(i), Cancel::new()).await });
    }
    let mut tokens = 0;
    while let Some(done) = set.join_next().await {
        tokens += done??.usage.generated_tokens;
    }
    Ok((started.elapsed(), tokens))
}

fn completion(i: usize) -> GenerateRequest {
    let mut request = GenerateRequest::text(
        format!(
            "use std::collections::HashMap;\n\n/// Counts the words of line {i}.\nfn count_words_{i}(text: &str) -> HashMap<String, usize> {{\n    let mut counts = HashMap::new();\n    for word in text.split_whitespace() {{\n        "
        ),
        16,
    );
    request.stop = vec!["\n".to_owned()];
    request
}

/// Latency of completions one after another: (median first piece, median whole answer).
async fn completions(model: &dyn Model, count: usize) -> anyhow::Result<(Duration, Duration)> {
    let mut firsts = Vec::new();
    let mut wholes = Vec::new();
    for i in 0..count {
        let started = Instant::now();
        let (_, first) = super::bench::timed(model, 0, completion(i)).await?;
        wholes.push(started.elapsed());
        firsts.push(first);
    }
    Ok((median(&mut firsts), median(&mut wholes)))
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

async fn bench(path: &Path) -> anyhow::Result<()> {
    let binary = LlamaServer::binary().map_err(anyhow::Error::msg)?;
    output::line(&format!("model: {}", path.display()));
    output::line(&format!("llama-server: {}", binary.display()));
    output::line("each node: llama-server on loopback, 1 thread, 2 slots");
    let start = |slots| {
        let path = path.to_owned();
        async move {
            tokio::task::spawn_blocking(move || LlamaServer::start(&path, slots, 1))
                .await?
                .map_err(anyhow::Error::msg)
        }
    };
    let first = start(2).await?;
    let second = start(2).await?;

    // 1. A batch of independent executor steps: one node, then two.
    output::line("");
    output::line(&format!(
        "batch of {STEPS} executor steps ({STEP_TOKENS} tokens each), through the router:"
    ));
    let one = router(&[node("a", &first, &[Tier::Executor], 2)]).await;
    let one = batch(one.route(Tier::Executor).expect("a route")).await?;
    let two = router(&[
        node("a", &first, &[Tier::Executor], 2),
        node("b", &second, &[Tier::Executor], 2),
    ])
    .await;
    let two = batch(two.route(Tier::Executor).expect("a route")).await?;
    // The same node with this machine's own model as the second member (loaded first, so
    // that the load is not counted).
    let (mixed, served) = with_this_machine(path, node("a", &first, &[Tier::Executor], 2)).await?;
    let speed = |(time, tokens): (Duration, u32)| f64::from(tokens) / time.as_secs_f64();
    let row = |label: &str, figures: (Duration, u32)| {
        output::line(&format!(
            "  {label:<22} {:>8}  {:>4} tokens  {:>6.1} tokens/s",
            ms(figures.0),
            figures.1,
            speed(figures)
        ));
    };
    let against_one = |label: &str, figures: (Duration, u32)| {
        output::line(&format!(
            "  {label} / 1 node: throughput {:.2}x, wall time {:.2}x",
            speed(figures) / speed(one),
            figures.0.as_secs_f64() / one.0.as_secs_f64()
        ));
    };
    row("1 node:", one);
    row("2 nodes:", two);
    row("1 node + this machine:", mixed);
    output::line(&format!("  (steps taken: {served})"));
    against_one("2 nodes", two);
    against_one("1 node + this machine", mixed);

    // 2. A completion through the router against the embedded backend, same model.
    output::line("");
    output::line("completion latency (16 tokens, median of 8), same model, 1 thread each:");
    let routed = router(&[node("a", &first, &[Tier::Fast], 2)]).await;
    let routed = routed.route(Tier::Fast).expect("a route");
    let remote = completions(routed.as_ref(), 8).await?;
    let options = EmbeddedOptions {
        n_ctx: 4096,
        slots: 1,
        threads: 1,
        ..EmbeddedOptions::default()
    };
    let model_path = path.to_owned();
    let embedded =
        tokio::task::spawn_blocking(move || EmbeddedModel::load(&model_path, &options)).await??;
    let local = completions(&embedded, 8).await?;
    drop(embedded);
    output::line(&format!(
        "  embedded:                first piece {:>7}, whole {:>7}",
        ms(local.0),
        ms(local.1)
    ));
    output::line(&format!(
        "  router -> llama-server:  first piece {:>7}, whole {:>7}",
        ms(remote.0),
        ms(remote.1)
    ));
    output::line(&format!(
        "  router / embedded: {:.2}x first piece, {:.2}x whole",
        remote.0.as_secs_f64() / local.0.as_secs_f64(),
        remote.1.as_secs_f64() / local.1.as_secs_f64()
    ));

    // 3. Completions while a plan's steps run on the same node.
    output::line("");
    output::line("completion latency while plan steps run on the same node (median of 4-6):");
    let idle = completions(routed.as_ref(), 6).await?;
    let shared = router(&[node("a", &first, &[Tier::Fast, Tier::Executor], 2)]).await;
    let busy = while_planning(&shared, 2).await?;
    // The same with one slot: nothing can be kept for interactive work.
    drop(first);
    let single = start(1).await?;
    let single_router = router(&[node("a", &single, &[Tier::Fast, Tier::Executor], 1)]).await;
    let queued = while_planning(&single_router, 1).await?;
    output::line(&format!(
        "  idle node:                           whole {:>7}",
        ms(idle.1)
    ));
    output::line(&format!(
        "  plan running, 2 slots (1 kept free): whole {:>7}",
        ms(busy.1)
    ));
    output::line(&format!(
        "  plan running, 1 slot (none free):    whole {:>7}",
        ms(queued.1)
    ));
    output::line(&format!(
        "  plan running / idle: {:.2}x with a free slot, {:.2}x without",
        busy.1.as_secs_f64() / idle.1.as_secs_f64(),
        queued.1.as_secs_f64() / idle.1.as_secs_f64()
    ));
    drop(second);
    Ok(())
}

/// The batch on `node` and this machine's model for the executor tier (2 slots, its
/// default threads) as one more member; returns the batch's figures and who took the steps.
async fn with_this_machine(
    path: &Path,
    node: NodeConfig,
) -> anyhow::Result<((Duration, u32), String)> {
    let tiers = TierSet::new(crate::models::machine::detect());
    let config = TierConfig {
        context: 2048,
        slots: 2,
        ..TierConfig::default()
    };
    tiers.configure(Tier::Executor, path.to_owned(), &config)?;
    let loading = tiers.clone();
    tokio::task::spawn_blocking(move || loading.load(Tier::Executor)).await??;
    let (router, _) = Router::build(&[node], Some(&tiers), None);
    router.probe_now().await;
    let figures = batch(router.route(Tier::Executor).expect("a route")).await?;
    let served: Vec<String> = router
        .status()
        .into_iter()
        .map(|member| format!("{} {}", member.name, member.served))
        .collect();
    Ok((figures, served.join(", ")))
}

/// Completion latency while batch steps keep the node's batch slots busy.
async fn while_planning(
    router: &Arc<Router>,
    steps: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let executor = router.route(Tier::Executor).expect("a route");
    let fast = router.route(Tier::Fast).expect("a route");
    let cancel = Cancel::new();
    let mut running = Vec::new();
    for i in 0..steps.max(2) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let mut long = step(i);
        long.max_tokens = 200;
        executor.submit(i, long, cancel.clone(), sender);
        running.push(receiver);
    }
    // Let the steps start streaming before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let measured = completions(fast.as_ref(), 4).await;
    cancel.cancel();
    for mut receiver in running {
        while let Some(event) = receiver.recv().await {
            if matches!(event, GenerationEvent::Done(_)) {
                break;
            }
        }
    }
    measured
}
