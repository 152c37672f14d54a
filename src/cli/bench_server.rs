//! `tierls bench server`: what a 2,000-file branch switch costs the editor's completions,
//! and whether the server's memory stays flat over 20,000 completions. The server runs as
//! a child process (`tierls serve`, as editors run it) with an instant scripted fast tier,
//! so the figures are the server's own (handlers, locks, reindexing, caches), not a
//! model's decode time: `tierls bench completion` measures that on the test model.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tower_lsp::lsp_types::Url;

use super::output;
use crate::core::budget::human_bytes;
use crate::lsp::client::LspClient;

const FILES: usize = 2000;
const FUNCTIONS_PER_FILE: usize = 20;
const IDLE_REQUESTS: usize = 300;
const LONG_RUN: usize = 20_000;
/// The long run opens a new document this often (and closes an old one): 200 in all.
const NEW_DOCUMENT_EVERY: usize = 100;
const EDITING: &str = "fn main() {\n    let total = \n}\n";

pub fn run() -> ExitCode {
    let Some(runtime) = super::runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(bench()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            output::error(&format!("benchmark failed: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

/// A file of `functions` functions named `{name}_{index}_{k}`.
fn module(name: &str, index: usize, functions: usize) -> String {
    (0..functions)
        .map(|k| {
            format!("pub fn {name}_{index}_{k}(value: u32) -> u32 {{\n    value + {k}\n}}\n\n")
        })
        .collect()
}

fn paths() -> Vec<String> {
    (0..FILES)
        .map(|i| format!("src/m{:02}/f{i}.rs", i % 40))
        .collect()
}

fn write_tree(root: &Path, name: &str, functions: usize) -> anyhow::Result<()> {
    for (i, path) in paths().iter().enumerate() {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, module(name, i, functions))?;
    }
    Ok(())
}

/// The server's resident memory, from `/proc/PID/status`.
fn resident_memory(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

struct Server {
    client: LspClient,
    child: tokio::process::Child,
    root: Url,
}

impl Server {
    fn uri(&self, path: &str) -> anyhow::Result<Url> {
        Ok(self.root.join(path)?)
    }

    /// One completion at the end of `main.rs`'s line 1, timed from send to answer.
    async fn complete(&mut self, uri: &Url, character: u32) -> anyhow::Result<(Duration, bool)> {
        let params = json!({ "textDocument": { "uri": uri }, "position": { "line": 1, "character": character }, "context": { "triggerKind": 2 } });
        let started = Instant::now();
        let answer = self
            .client
            .request("textDocument/inlineCompletion", params)
            .await?;
        let elapsed = started.elapsed();
        if let Some(error) = answer.get("error") {
            anyhow::bail!("a completion failed: {error}");
        }
        // Logs and progress the bench does not read: dropped, so they cost no memory here.
        self.client.take_notifications();
        let suggested = answer["result"]["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty());
        Ok((elapsed, suggested))
    }

    /// The index's files and definitions, from `tierls/status` (which, unlike
    /// `workspace/symbol`, does not wait for the disk sync to settle).
    async fn indexed(&mut self) -> anyhow::Result<(u64, u64)> {
        let status = self.client.request("tierls/status", Value::Null).await?;
        let index = &status["result"]["index"];
        let count = |key: &str| index[key].as_u64().unwrap_or(0);
        Ok((count("files"), count("definitions")))
    }
}

async fn start(root: &Path) -> anyhow::Result<Server> {
    let script = root.join(".tierls-bench-models.json");
    std::fs::write(
        &script,
        json!({ "fast": [{ "needle": "", "answers": ["1 + 2;"] }] }).to_string(),
    )?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--scripted-models")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let Some(client) = LspClient::of_child(&mut child) else {
        anyhow::bail!("the server's stdio was not captured");
    };
    let client = client.with_timeout(Duration::from_secs(60));
    let root = Url::from_directory_path(root).map_err(|()| anyhow::anyhow!("bad root"))?;
    Ok(Server {
        client,
        child,
        root,
    })
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

fn ms(durations: &[Duration]) -> Vec<f64> {
    durations
        .iter()
        .map(|duration| duration.as_secs_f64() * 1000.0)
        .collect()
}

fn bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:30}} {{pos}}/{{len}} {what} ({{per_sec}})"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

async fn bench() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let root = folder.path().canonicalize()?;
    write_tree(&root, "before", FUNCTIONS_PER_FILE)?;
    std::fs::write(root.join("src/main.rs"), EDITING)?;
    let mut server = start(&root).await?;
    let pid = server.child.id().unwrap_or(0);
    let options = json!({ "index": { "enabled": true }, "completion": { "debounce_ms": 0 } });
    server
        .client
        .request(
            "initialize",
            json!({ "rootUri": server.root, "capabilities": {}, "initializationOptions": options }),
        )
        .await?;
    server.client.notify("initialized", json!({})).await?;
    let scanned = Instant::now();
    while server.indexed().await?.0 < (FILES + 1) as u64 {
        anyhow::ensure!(
            scanned.elapsed() < Duration::from_secs(300),
            "the first scan did not finish within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    output::line(&format!(
        "workspace: {FILES} files of {FUNCTIONS_PER_FILE} functions, scanned in {:.2} s; server pid {pid}, fast tier: an instant scripted model, debounce 0 ms",
        scanned.elapsed().as_secs_f64()
    ));
    let main = server.uri("src/main.rs")?;
    server.client.notify("textDocument/didOpen", json!({ "textDocument": { "uri": main, "languageId": "rust", "version": 1, "text": EDITING } })).await?;
    let end_of_line = EDITING.lines().nth(1).unwrap_or_default().len() as u32;

    let mut idle = Vec::new();
    for _ in 0..IDLE_REQUESTS {
        idle.push(server.complete(&main, end_of_line).await?.0);
    }

    // The branch switch: every file rewritten on disk with one function more, and one
    // `didChangeWatchedFiles`; the reindex is done when the index holds the new count.
    let (_, definitions_before) = server.indexed().await?;
    write_tree(&root, "after", FUNCTIONS_PER_FILE + 1)?;
    let changes: Vec<Value> = paths()
        .iter()
        .map(|path| Ok(json!({ "uri": server.uri(path)?, "type": 2 })))
        .collect::<anyhow::Result<_>>()?;
    server
        .client
        .notify(
            "workspace/didChangeWatchedFiles",
            json!({ "changes": changes }),
        )
        .await?;
    let switched = Instant::now();
    let mut during = Vec::new();
    while server.indexed().await?.1 < definitions_before + FILES as u64 {
        for _ in 0..5 {
            during.push(server.complete(&main, end_of_line).await?.0);
        }
        anyhow::ensure!(
            switched.elapsed() < Duration::from_secs(300),
            "the reindex did not finish within 300 s"
        );
    }
    let reindex = switched.elapsed();
    let (mut idle, mut during) = (ms(&idle), ms(&during));
    let (idle_p50, idle_p95) = (percentile(&mut idle, 0.5), percentile(&mut idle, 0.95));
    let (during_p50, during_p95) = (percentile(&mut during, 0.5), percentile(&mut during, 0.95));
    output::line(&format!(
        "completion latency idle: p50 {idle_p50:.2} ms, p95 {idle_p95:.2} ms, max {:.2} ms ({} requests)",
        idle.last().copied().unwrap_or(f64::NAN),
        idle.len()
    ));
    output::line(&format!(
        "completion latency during the reindex of {FILES} changed files ({:.2} s until the index held every new definition): p50 {during_p50:.2} ms, p95 {during_p95:.2} ms, max {:.2} ms ({} requests) => p50 {:.2}x, p95 {:.2}x idle",
        reindex.as_secs_f64(),
        during.last().copied().unwrap_or(f64::NAN),
        during.len(),
        during_p50 / idle_p50.max(1e-9),
        during_p95 / idle_p95.max(1e-9),
    ));

    // A long day: every completion follows an edit, and new documents keep opening.
    let memory_start = resident_memory(pid).unwrap_or(0);
    let mut memory_at_1000 = 0;
    let mut suggested = 0;
    let mut opened: Vec<Url> = Vec::new();
    let progress = bar(LONG_RUN, "completions");
    let started = Instant::now();
    for i in 0..LONG_RUN {
        if i % NEW_DOCUMENT_EVERY == 0 {
            let uri = server.uri(&format!("src/extra/e{}.rs", i / NEW_DOCUMENT_EVERY))?;
            let text = module("extra", i, FUNCTIONS_PER_FILE);
            server.client.notify("textDocument/didOpen", json!({ "textDocument": { "uri": uri, "languageId": "rust", "version": 1, "text": text } })).await?;
            opened.push(uri);
            if opened.len() > 10 {
                let old = opened.remove(0);
                server
                    .client
                    .notify(
                        "textDocument/didClose",
                        json!({ "textDocument": { "uri": old } }),
                    )
                    .await?;
            }
        }
        let line = format!("    let total = {i}");
        let change = json!({ "range": { "start": { "line": 1, "character": 0 }, "end": { "line": 2, "character": 0 } }, "text": format!("{line}\n") });
        server.client.notify("textDocument/didChange", json!({ "textDocument": { "uri": main, "version": i + 2 }, "contentChanges": [change] })).await?;
        let (_, had) = server.complete(&main, line.len() as u32).await?;
        suggested += usize::from(had);
        if i + 1 == 1000 {
            memory_at_1000 = resident_memory(pid).unwrap_or(0);
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    let memory_end = resident_memory(pid).unwrap_or(0);
    output::line(&format!(
        "{LONG_RUN} completions after edits ({suggested} with a suggestion), {} documents opened, in {:.1} s ({:.0} per second)",
        LONG_RUN / NEW_DOCUMENT_EVERY,
        elapsed.as_secs_f64(),
        LONG_RUN as f64 / elapsed.as_secs_f64().max(1e-9)
    ));
    output::line(&format!(
        "server memory (RSS): {} before, {} after 1,000 completions, {} after {LONG_RUN} => {:.2}x the 1,000-completion figure",
        human_bytes(memory_start),
        human_bytes(memory_at_1000),
        human_bytes(memory_end),
        memory_end as f64 / (memory_at_1000 as f64).max(1.0),
    ));
    server.client.shutdown().await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), server.child.wait()).await;
    Ok(())
}
