//! `tierls bench completion`: replays a recorded typing session through the real server (in
//! memory), with the fast tier on the test model, and reports what the editor would feel;
//! then the same session with the fast tier served by a llama-server node on loopback (idle,
//! with its prompt cache unbounded as llama-server's default has it, and with one other
//! CPU-bound process running), side by side.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use tower_lsp::lsp_types::Url;

use super::output;
use crate::completion::EngineStats;
use crate::core::budget::human_bytes;
use crate::lsp::client::LspClient;
use crate::lsp::{self, ServerOptions};
use crate::models::embedded::test_model_path;
use crate::models::worker::{CACHE_RAM_MIB, LlamaServer};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trace {
    workspace: PathBuf,
    file: String,
    keystrokes: Vec<Keystroke>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Keystroke {
    line: u32,
    character: u32,
    text: String,
    delay_ms: u64,
}

fn default_trace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/traces/typing-shapes.json")
}

pub fn run(trace: Option<PathBuf>, model: Option<PathBuf>) -> ExitCode {
    let trace_path = trace.unwrap_or_else(default_trace);
    let trace: Trace = match std::fs::read_to_string(&trace_path)
        .map_err(|err| err.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|err| err.to_string()))
    {
        Ok(trace) => trace,
        Err(err) => {
            output::error(&format!("{}: {err}", trace_path.display()));
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = super::runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(bench(trace, model.unwrap_or_else(test_model_path))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            output::error(&format!("benchmark failed: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

/// What serves the fast tier in one replay.
enum Fast {
    Embedded(PathBuf),
    /// A llama-server node at this URL.
    Node(String),
}

/// One replay of the trace, as the editor saw it.
struct Session {
    cold_ms: f64,
    /// Per typing request: its id, its latency, and whether it had a suggestion.
    answered: Vec<(i64, Duration, bool)>,
    keys: usize,
    /// Keystrokes whose suggestion was shown before the next keystroke.
    shown_before_next: usize,
    /// Pauses of at least [`PAUSE`], and those in which a suggestion was shown.
    pauses: usize,
    shown_in_pauses: usize,
    stats: EngineStats,
    overhead: Option<String>,
}

/// A pause in typing long enough that a user looks for a suggestion.
const PAUSE: Duration = Duration::from_millis(300);

async fn bench(trace: Trace, model: PathBuf) -> anyhow::Result<()> {
    output::line(&format!(
        "trace: {} keystrokes typed into {}",
        trace.keystrokes.len(),
        trace.file
    ));
    let embedded = replay(&trace, Fast::Embedded(model.clone())).await?;
    output::line(&format!(
        "editor: the first request (cold) answered in {:.0} ms",
        embedded.cold_ms
    ));
    report(&embedded.answered, &embedded.stats);
    if let Some(overhead) = &embedded.overhead {
        output::line(overhead);
    }
    let mut rows = vec![("embedded".to_owned(), embedded, None)];
    match LlamaServer::binary() {
        Err(why) => output::line(&format!("\nthrough a node: skipped: {why}")),
        Ok(_) => {
            let runs = [
                ("node, idle", CACHE_RAM_MIB, false),
                ("node, idle, --cache-ram 8192", 8192, false),
                ("node, 1 busy process", CACHE_RAM_MIB, true),
            ];
            for (label, cache_ram, busy) in runs {
                let (session, resident) = through_a_node(&trace, &model, cache_ram, busy).await?;
                rows.push((label.to_owned(), session, resident));
            }
        }
    }
    side_by_side(&rows);
    Ok(())
}

/// The trace through a llama-server node with the test model (2 slots, 2 threads, a prompt
/// cache of `cache_ram` MiB), with one CPU-bound process beside it when `busy`; the session
/// and the node's resident memory at its end.
async fn through_a_node(
    trace: &Trace,
    model: &Path,
    cache_ram: u32,
    busy: bool,
) -> anyhow::Result<(Session, Option<u64>)> {
    let path = model.to_owned();
    let node =
        tokio::task::spawn_blocking(move || LlamaServer::start_with_cache(&path, 2, 2, cache_ram))
            .await?
            .map_err(anyhow::Error::msg)?;
    let mut load = if busy {
        Some(
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()?,
        )
    } else {
        None
    };
    let session = replay(trace, Fast::Node(node.url().to_owned())).await;
    let resident = node.resident_bytes();
    if let Some(load) = &mut load {
        let _ = load.kill();
        let _ = load.wait();
    }
    Ok((session?, resident))
}

async fn replay(trace: &Trace, fast: Fast) -> anyhow::Result<Session> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(&trace.workspace)
        .canonicalize()?;
    let root =
        Url::from_directory_path(&workspace).map_err(|()| anyhow::anyhow!("bad workspace"))?;
    let file = workspace.join(&trace.file);
    let uri = Url::from_file_path(&file).map_err(|()| anyhow::anyhow!("bad file"))?;
    let text = std::fs::read_to_string(&file)?;

    let (client, server) = lsp::start_in_memory(ServerOptions {
        user_config: None,
        ..ServerOptions::default()
    });
    let mut client = client.with_timeout(Duration::from_secs(120));
    let options = match &fast {
        Fast::Embedded(model) => {
            json!({ "tiers": { "fast": { "model": model, "context": 4096 } } })
        }
        Fast::Node(url) => {
            json!({ "nodes": { "local": { "url": url, "api": "llama-server", "tiers": ["fast"] } } })
        }
    };
    client
        .request(
            "initialize",
            json!({ "rootUri": root, "capabilities": {}, "initializationOptions": options }),
        )
        .await?;
    client.notify("initialized", json!({})).await?;
    wait_until_ready(&mut client, &fast).await?;
    client.notify("textDocument/didOpen", json!({ "textDocument": { "uri": uri, "languageId": "rust", "version": 1, "text": text } })).await?;

    // One request before typing starts, awaited: the cold case, with nothing cached.
    let first = &trace.keystrokes[0];
    let started = Instant::now();
    client.request("textDocument/inlineCompletion", json!({ "textDocument": { "uri": uri }, "position": { "line": first.line, "character": first.character } })).await?;
    let cold_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut sent: HashMap<i64, Instant> = HashMap::new();
    let mut answered: Vec<(i64, Duration, bool)> = Vec::new();
    let (mut shown_before_next, mut pauses, mut shown_in_pauses) = (0, 0, 0);
    for (i, key) in trace.keystrokes.iter().enumerate() {
        let at = json!({ "line": key.line, "character": key.character });
        client
            .notify(
                "textDocument/didChange",
                json!({ "textDocument": { "uri": uri, "version": i + 2 }, "contentChanges": [{ "range": { "start": at, "end": at }, "text": key.text }] }),
            )
            .await?;
        let (line, character) = if key.text == "\n" {
            (key.line + 1, 0)
        } else {
            (
                key.line,
                key.character + key.text.encode_utf16().count() as u32,
            )
        };
        let id = client.send_request("textDocument/inlineCompletion", json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": character } })).await?;
        sent.insert(id, Instant::now());
        let delay = Duration::from_millis(key.delay_ms);
        collect(&mut client, &sent, &mut answered, delay).await?;
        let shown = answered
            .iter()
            .any(|(answer, _, has)| *answer == id && *has);
        shown_before_next += usize::from(shown);
        if delay >= PAUSE {
            pauses += 1;
            shown_in_pauses += usize::from(shown);
        }
    }
    while answered.len() < sent.len() {
        collect(
            &mut client,
            &sent,
            &mut answered,
            Duration::from_millis(500),
        )
        .await?;
    }
    // One more request, awaited, somewhere new in the file: the editor's latency against the
    // model's own decode time for it is tierls' overhead (the debounce included).
    let generations_before = stats_of(&mut client).await?.generations.len();
    let started = Instant::now();
    client
        .request(
            "textDocument/inlineCompletion",
            json!({ "textDocument": { "uri": uri }, "position": { "line": 12, "character": 0 } }),
        )
        .await?;
    let latency = started.elapsed().as_secs_f64() * 1000.0;
    let stats = stats_of(&mut client).await?;
    let overhead = stats.generations.get(generations_before).map(|decode| {
        format!(
            "overhead: the editor waited {latency:.0} ms for a decode of {:.0} ms after the 30 ms debounce: tierls adds {:.1} ms = {:.1}% over debounce + decode",
            decode.total_ms,
            latency - decode.total_ms - 30.0,
            (latency / (decode.total_ms + 30.0) - 1.0) * 100.0
        )
    });
    client.shutdown().await?;
    let _ = server.await;
    Ok(Session {
        cold_ms,
        answered,
        keys: trace.keystrokes.len(),
        shown_before_next,
        pauses,
        shown_in_pauses,
        stats,
        overhead,
    })
}

/// Waits (at most two minutes) until the fast tier can answer: the model loaded, or the
/// node probed and healthy.
async fn wait_until_ready(client: &mut LspClient, fast: &Fast) -> anyhow::Result<()> {
    if let Fast::Embedded(_) = fast {
        loop {
            let log = client.wait_for("window/logMessage").await?;
            let message = log["params"]["message"].as_str().unwrap_or_default();
            if message.contains("could not load") {
                anyhow::bail!("{message}");
            }
            if message.contains("the fast tier is ready") {
                return Ok(());
            }
        }
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let status = client.request("tierls/status", Value::Null).await?;
        if status["result"]["tiers"][0]["state"] == "ready" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the node did not become ready in 120 s")
}

/// The replays side by side: what the user saw, what the node evaluated, its memory.
fn side_by_side(rows: &[(String, Session, Option<u64>)]) {
    output::line(&format!(
        "\n{:<30} {:>16} {:>16} {:>18} {:>12}",
        "fast tier", "shown before", "pauses >= 300 ms", "tokens evaluated", "node memory"
    ));
    output::line(&format!(
        "{:<30} {:>16} {:>16} {:>18} {:>12}",
        "", "the next key", "with a suggestion", "per follow-up p50/max", "at the end"
    ));
    for (label, session, resident) in rows {
        let mut evaluated: Vec<f64> = session
            .stats
            .generations
            .iter()
            .skip(1)
            .map(|g| f64::from(g.evaluated_tokens))
            .collect();
        let most = evaluated.iter().copied().fold(0.0, f64::max);
        output::line(&format!(
            "{label:<30} {:>16} {:>16} {:>18} {:>12}",
            format!("{}/{}", session.shown_before_next, session.keys),
            format!("{}/{}", session.shown_in_pauses, session.pauses),
            format!("{:.0}/{most:.0}", percentile(&mut evaluated, 0.5)),
            resident.map_or("-".to_owned(), human_bytes),
        ));
    }
}

async fn stats_of(client: &mut LspClient) -> anyhow::Result<EngineStats> {
    Ok(serde_json::from_value(
        client
            .request("tierls/completionStats", Value::Null)
            .await?["result"]
            .clone(),
    )?)
}

/// Reads answers for up to `wait`, noting when each arrived and whether it had a suggestion.
async fn collect(
    client: &mut LspClient,
    sent: &HashMap<i64, Instant>,
    answered: &mut Vec<(i64, Duration, bool)>,
    wait: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(message) = client.next_message_within(left).await? else {
            break;
        };
        if let (Some(id), None) = (message["id"].as_i64(), message.get("method"))
            && let Some(started) = sent.get(&id)
        {
            let has_items = message["result"]["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty());
            answered.push((id, started.elapsed(), has_items));
        }
    }
    Ok(())
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

fn report(answered: &[(i64, Duration, bool)], stats: &EngineStats) {
    let mut latencies: Vec<f64> = answered
        .iter()
        .map(|(_, latency, _)| latency.as_secs_f64() * 1000.0)
        .collect();
    let shown = answered.iter().filter(|(_, _, has)| *has).count();
    output::line(&format!(
        "editor: {} requests while typing answered, {shown} with a suggestion; latency p50 {:.0} ms, p95 {:.0} ms",
        answered.len(),
        percentile(&mut latencies.clone(), 0.5),
        percentile(&mut latencies, 0.95)
    ));
    let Some((cold, warm)) = stats.generations.split_first() else {
        output::line("model: no generation finished");
        return;
    };
    let mut warm_first: Vec<f64> = warm.iter().map(|g| g.first_token_ms).collect();
    let mut warm_total: Vec<f64> = warm.iter().map(|g| g.total_ms).collect();
    let mut evaluated: Vec<f64> = warm.iter().map(|g| g.evaluated_tokens as f64).collect();
    let prompt_mean =
        warm.iter().map(|g| g.prompt_tokens as f64).sum::<f64>() / warm.len().max(1) as f64;
    let warm_first_p50 = percentile(&mut warm_first.clone(), 0.5);
    output::line(&format!(
        "first token: cold {:.0} ms ({} prompt tokens evaluated); follow-ups p50 {:.0} ms, p95 {:.0} ms => {:.3}x cold",
        cold.first_token_ms,
        cold.evaluated_tokens,
        warm_first_p50,
        percentile(&mut warm_first, 0.95),
        warm_first_p50 / cold.first_token_ms.max(1e-9),
    ));
    output::line(&format!(
        "whole suggestion: cold {:.0} ms; follow-ups p50 {:.0} ms, p95 {:.0} ms",
        cold.total_ms,
        percentile(&mut warm_total.clone(), 0.5),
        percentile(&mut warm_total, 0.95),
    ));
    output::line(&format!(
        "tokens evaluated per follow-up: p50 {:.0} of {:.0} in the prompt",
        percentile(&mut evaluated, 0.5),
        prompt_mean
    ));
    output::line(&format!(
        "requests {}, cache hits {}, cancelled {}, tokens decoded after a cancel: {} in all, at most {} for one request",
        stats.requests,
        stats.cache_hits,
        stats.cancelled,
        stats.wasted_tokens,
        stats.most_wasted_tokens
    ));
}
