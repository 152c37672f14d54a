//! `tierls bench models`: the embedded backend's figures on one model, side by side.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::output;
use crate::config::TierConfig;
use crate::core::budget::human_bytes;
use crate::core::draft::{DEFAULT_DRAFT_MATCH, DEFAULT_DRAFT_TOKENS, DraftMode, lookup_draft};
use crate::core::generation::{GenerateRequest, Generation, Grammar};
use crate::logging;
use crate::models::embedded::{EmbeddedModel, EmbeddedOptions, test_model_path};
use crate::models::fit::plan_load;
use crate::models::machine;
use crate::models::{Cancel, GenerationEvent, Model};

pub fn run(name: &str, model: Option<PathBuf>, path: Option<PathBuf>) -> ExitCode {
    if name == "index" {
        return super::bench_index::run(path.unwrap_or_else(|| PathBuf::from(".")));
    }
    if name == "completion" {
        return super::bench_completion::run(path, model);
    }
    if name == "quality" {
        return super::bench_quality::run(path, model);
    }
    if name == "plan" {
        return super::bench_plan::run(model);
    }
    if name == "routing" {
        return super::bench_routing::run(model);
    }
    if name == "nodes" {
        return super::bench_nodes::run(model);
    }
    if name == "fan-out" {
        return run_async(super::bench_fan_out::bench());
    }
    if name == "rounds" {
        return run_async(super::bench_rounds::bench(model));
    }
    if name == "pull" {
        return run_async(super::bench_pull::bench());
    }
    if name == "server" {
        return super::bench_server::run();
    }
    if name != "models" {
        output::error(&format!(
            "unknown benchmark `{name}`: available: models, index, completion, quality, plan, routing, fan-out, rounds, nodes, server, pull"
        ));
        return ExitCode::from(2);
    }
    let path = model.unwrap_or_else(test_model_path);
    let Some(runtime) = super::runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(bench_models(path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            output::error(&format!("benchmark failed: {err}"));
            ExitCode::FAILURE
        }
    }
}

/// Runs an async benchmark on a multi-threaded runtime; its error, if any, on stderr.
pub(super) fn run_async(bench: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let Some(runtime) = super::runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(bench) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            output::error(&format!("benchmark failed: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

/// One timed generation: the result and when its first piece arrived.
pub(super) async fn timed(
    model: &dyn Model,
    slot: usize,
    request: GenerateRequest,
) -> anyhow::Result<(Generation, Duration)> {
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    model.submit(slot, request, Cancel::new(), sender);
    let mut first_piece = None;
    while let Some(event) = events.recv().await {
        match event {
            GenerationEvent::Piece(_) => {
                first_piece.get_or_insert_with(|| started.elapsed());
            }
            GenerationEvent::Done(result) => {
                let generation = result?;
                return Ok((generation, first_piece.unwrap_or_else(|| started.elapsed())));
            }
        }
    }
    anyhow::bail!("the model's worker stopped")
}

fn per_second(tokens: u32, time: Duration) -> f64 {
    tokens as f64 / time.as_secs_f64().max(1e-9)
}

async fn bench_models(path: PathBuf) -> anyhow::Result<()> {
    output::line(&format!("model: {}", path.display()));
    let options = EmbeddedOptions {
        n_ctx: 4096,
        slots: 2,
        ..EmbeddedOptions::default()
    };
    output::line(&format!(
        "threads: {}, context: {} tokens",
        options.threads, options.n_ctx
    ));

    let tier = TierConfig {
        context: options.n_ctx,
        slots: options.slots as u32,
        ..TierConfig::default()
    };
    let estimate = plan_load(&path, &tier, &machine::detect())?.estimate;

    let allocated_before = logging::llama_cpp_allocated_bytes();
    let loading = Instant::now();
    let loaded =
        tokio::task::spawn_blocking(move || EmbeddedModel::load(&path, &options)).await??;
    let model: &dyn Model = &loaded;
    output::line(&format!(
        "load: {:.0} ms",
        loading.elapsed().as_secs_f64() * 1000.0
    ));
    let allocated = logging::llama_cpp_allocated_bytes() - allocated_before;
    output::line(&format!(
        "memory: estimate {} (weights {}, KV cache {}, compute {}) vs llama.cpp's own buffers {} = {:+.1}%",
        human_bytes(estimate.total()),
        human_bytes(estimate.weights),
        human_bytes(estimate.kv_cache),
        human_bytes(estimate.compute),
        human_bytes(allocated),
        (estimate.total() as f64 / allocated.max(1) as f64 - 1.0) * 100.0,
    ));

    // A prompt of about 1,000 tokens of code.
    let unit = "fn add(a: i32, b: i32) -> i32 {\n    let sum = a + b;\n    sum\n}\n";
    let prompt = unit.repeat(28);

    let (cold, cold_first) = timed(model, 0, GenerateRequest::text(prompt.clone(), 64)).await?;
    output::line(&format!(
        "cold:  prompt {} tokens evaluated {} in {:.0} ms ({:.0} tokens/s); first token {:.0} ms; generation {} tokens at {:.1} tokens/s",
        cold.usage.prompt_tokens,
        cold.usage.evaluated_tokens,
        ms(cold.usage.prompt_time),
        per_second(cold.usage.evaluated_tokens, cold.usage.prompt_time),
        ms(cold_first),
        cold.usage.generated_tokens,
        per_second(cold.usage.generated_tokens, cold.usage.generation_time),
    ));

    let follow_up = format!("{prompt}fn mul(a: i32, b: i32) -> i32 {{\n    let product = a * b;\n");
    let (warm, warm_first) = timed(model, 0, GenerateRequest::text(follow_up, 64)).await?;
    output::line(&format!(
        "warm:  prompt {} tokens evaluated {} in {:.0} ms; first token {:.0} ms",
        warm.usage.prompt_tokens,
        warm.usage.evaluated_tokens,
        ms(warm.usage.prompt_time),
        ms(warm_first),
    ));
    output::line(&format!(
        "prefix reuse: first token {:.0} ms warm vs {:.0} ms cold = {:.3}x ({:.1}x faster)",
        ms(warm_first),
        ms(cold_first),
        warm_first.as_secs_f64() / cold_first.as_secs_f64(),
        cold_first.as_secs_f64() / warm_first.as_secs_f64(),
    ));

    // Grammar-constrained against free decoding, same prompt, on a second slot, alternated
    // three times so that a noisy neighbour hits both; the medians are compared.
    let question = "Steps to rename the function add to sum in a Rust crate:\n";
    let schema = r#"{"type":"object","properties":{"steps":{"type":"array","maxItems":6,"items":{"type":"string","maxLength":60}}},"required":["steps"]}"#;
    let (mut free_speeds, mut grammar_speeds) = (Vec::new(), Vec::new());
    let (mut free_tokens, mut grammar_tokens) = (0, 0);
    for _ in 0..3 {
        let (free, _) = timed(model, 1, GenerateRequest::text(question, 96)).await?;
        free_speeds.push(per_second(
            free.usage.generated_tokens,
            free.usage.generation_time,
        ));
        free_tokens = free.usage.generated_tokens;
        let grammar_request = GenerateRequest {
            grammar: Some(Grammar::JsonSchema(schema.into())),
            heal: false,
            ..GenerateRequest::text(question, 96)
        };
        let (constrained, _) = timed(model, 1, grammar_request).await?;
        grammar_speeds.push(per_second(
            constrained.usage.generated_tokens,
            constrained.usage.generation_time,
        ));
        grammar_tokens = constrained.usage.generated_tokens;
    }
    let (free_speed, grammar_speed) = (median(&mut free_speeds), median(&mut grammar_speeds));
    output::line(&format!(
        "grammar: {grammar_speed:.1} tokens/s constrained ({grammar_tokens} tokens) vs {free_speed:.1} tokens/s free ({free_tokens} tokens) = {:.2}x (medians of 3)",
        grammar_speed / free_speed,
    ));
    drafting(&loaded.info().path).await
}

/// Speculative decoding with prompt lookup and with a draft model against none, on
/// executor-style rewrites (which copy most of their prompt) and on prompts with little to
/// look up; each mode on a model of its own, alternated so that a noisy neighbour hits all.
/// The draft model is the same test model loaded once more: it shows the mechanics (a draft
/// costs as much as the answer it saves), not the speed of a small model drafting for a
/// large one.
async fn drafting(path: &std::path::Path) -> anyhow::Result<()> {
    let load = |draft: DraftMode| {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            EmbeddedModel::load(
                &path,
                &EmbeddedOptions {
                    n_ctx: 4096,
                    draft,
                    ..EmbeddedOptions::default()
                },
            )
        })
    };
    let off = load(DraftMode::Off).await??;
    let lookup = load(DraftMode::Lookup {
        max_tokens: DEFAULT_DRAFT_TOKENS,
        min_match: DEFAULT_DRAFT_MATCH,
    })
    .await??;
    let with_model = load(DraftMode::Model {
        max_tokens: DEFAULT_DRAFT_TOKENS,
    })
    .await??;
    let draft_model = load(DraftMode::Off).await??;
    with_model.set_drafter(Some(draft_model.as_drafter()));
    output::line(&format!(
        "\ndrafting: prompt lookup (up to {DEFAULT_DRAFT_TOKENS} tokens after a match of {DEFAULT_DRAFT_MATCH} or more) and a draft model (the test model drafting for itself, up to {DEFAULT_DRAFT_TOKENS} tokens) against none, greedy, 160 tokens each, medians of 3"
    ));
    output::line(&format!(
        "{:<28} {:>9} {:>9} {:>8} {:>9} {:>5} {:>9} {:>8} {:>9} {:>5}",
        "prompt",
        "off tok/s",
        "lookup",
        "speedup",
        "accepted",
        "same",
        "model",
        "speedup",
        "accepted",
        "same"
    ));
    let modes = [&lookup, &with_model];
    for (name, prompt) in drafting_prompts() {
        let request = GenerateRequest::text(prompt, 160);
        let mut off_speeds = Vec::new();
        let mut speeds = [Vec::new(), Vec::new()];
        let mut same = [true, true];
        let mut acceptance = [(0, 0), (0, 0)];
        for _ in 0..3 {
            let (plain, _) = timed(&off, 0, request.clone()).await?;
            off_speeds.push(per_second(
                plain.usage.generated_tokens,
                plain.usage.generation_time,
            ));
            for (mode, model) in modes.iter().enumerate() {
                let (drafting, _) = timed(*model, 0, request.clone()).await?;
                speeds[mode].push(per_second(
                    drafting.usage.generated_tokens,
                    drafting.usage.generation_time,
                ));
                same[mode] &= plain.text == drafting.text;
                acceptance[mode] = (
                    drafting.usage.accepted_tokens,
                    drafting.usage.drafted_tokens,
                );
            }
        }
        let off_speed = median(&mut off_speeds);
        let mut line = format!("{name:<28} {off_speed:>9.1}");
        for mode in 0..modes.len() {
            let speed = median(&mut speeds[mode]);
            let (accepted, drafted) = acceptance[mode];
            line.push_str(&format!(
                " {speed:>9.1} {:>7.2}x {:>9} {:>5}",
                speed / off_speed,
                format!("{accepted}/{drafted}"),
                if same[mode] { "yes" } else { "no" },
            ));
        }
        output::line(&line);
    }
    // The search itself, on a history with no repeat (the worst case: every length is tried
    // against every position), against a token's decode.
    let history: Vec<u32> = (0..4096).collect();
    let searches = 200;
    let started = Instant::now();
    for _ in 0..searches {
        std::hint::black_box(lookup_draft(
            std::hint::black_box(&history),
            DEFAULT_DRAFT_MATCH,
            DEFAULT_DRAFT_TOKENS,
        ));
    }
    let search = started.elapsed() / searches;
    let (plain, _) = timed(&off, 0, GenerateRequest::text("Once upon a time", 32)).await?;
    let per_token = plain.usage.generation_time / plain.usage.generated_tokens.max(1);
    output::line(&format!(
        "lookup with nothing to find: {:.0} µs per token on a 4,096-token history against {:.1} ms per token decoded = {:.2}% overhead",
        search.as_secs_f64() * 1e6,
        ms(per_token),
        search.as_secs_f64() / per_token.as_secs_f64().max(1e-9) * 100.0
    ));
    Ok(())
}

/// Executor-style rewrites of fixture symbols, and two prompts with little to copy.
fn drafting_prompts() -> Vec<(&'static str, String)> {
    let rewrite = |body: &str, change: &str| {
        format!(
            "Here is a function:\n\n{body}\n\nRewrite it so that it {change}. Write the whole function:\n\n"
        )
    };
    let total = "pub fn total_area(circles: &[Circle]) -> f64 {\n    let mut total = 0.0;\n    for circle in circles {\n        total += circle.area();\n    }\n    total\n}";
    let python = "def apply_discount(price, code):\n    if code == \"HALF\":\n        return price / 2\n    if code == \"TENTH\":\n        return price * 0.9\n    return price";
    let ts = "find(id: string): User | undefined {\n  for (const user of this.users) {\n    if (user.id === id) {\n      return user;\n    }\n  }\n  return undefined;\n}";
    vec![
        (
            "rust total_area: documented",
            rewrite(total, "is documented"),
        ),
        (
            "python apply_discount",
            rewrite(python, "returns early for unknown codes"),
        ),
        ("typescript find", rewrite(ts, "uses Array.prototype.find")),
        ("little to look up: story", "Once upon a time".to_owned()),
        (
            "little to look up: question",
            "Why is the sky blue? Because".to_owned(),
        ),
    ]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
