//! The workspace scan at start, reported with `$/progress`.
//!
//! The scan runs on a thread of its own through [`workspace::Shared::scan`], which puts each
//! file into the index under a short lock; an open document's editor copy is never replaced
//! by the disk's.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tower_lsp::Client;
use tower_lsp::lsp_types::notification::Progress;
use tower_lsp::lsp_types::request::WorkDoneProgressCreate;
use tower_lsp::lsp_types::*;

use crate::scan::{ScanStats, Skip};
use crate::workspace;

enum Event {
    Seen(usize),
    Done(ScanStats),
}

/// Scans the workspace root, if there is one.
pub fn start(workspace: workspace::Shared, client: Client, progress_supported: bool, cache: bool) {
    if workspace.lock().root().is_none() {
        return;
    }
    let (events, receiver) = mpsc::unbounded_channel();
    tokio::spawn(report(client, receiver, progress_supported));
    let span = tracing::Span::current();
    std::thread::spawn(move || {
        let _entered = span.enter();
        let stats = workspace.scan(0, cache, &mut |seen, _| {
            if seen % 100 == 0 {
                let _ = events.send(Event::Seen(seen));
            }
        });
        let summary = workspace.lock().index().stats();
        let skipped: Vec<String> = Skip::ALL
            .iter()
            .filter(|reason| stats.skipped(**reason) > 0)
            .map(|reason| format!("{} {}", reason.name(), stats.skipped(*reason)))
            .collect();
        tracing::info!(
            "indexed {} files ({} unchanged since the cache): {} definitions, {} references; skipped: {}",
            stats.indexed,
            stats.from_cache,
            summary.definitions,
            summary.references,
            if skipped.is_empty() {
                "none".to_owned()
            } else {
                skipped.join(", ")
            }
        );
        tracing::debug!("the scan took {:.2} s", stats.elapsed.as_secs_f64());
        let _ = events.send(Event::Done(stats));
    });
}

/// Forwards scan events as `$/progress`, at most five reports a second.
async fn report(
    client: Client,
    mut events: mpsc::UnboundedReceiver<Event>,
    progress_supported: bool,
) {
    let token = NumberOrString::String("tierls/index".into());
    let progress = progress_supported
        && client
            .send_request::<WorkDoneProgressCreate>(WorkDoneProgressCreateParams {
                token: token.clone(),
            })
            .await
            .is_ok();
    let send = |value: WorkDoneProgress| {
        let client = client.clone();
        let token = token.clone();
        async move {
            if progress {
                client
                    .send_notification::<Progress>(ProgressParams {
                        token,
                        value: ProgressParamsValue::WorkDone(value),
                    })
                    .await;
            }
        }
    };
    send(WorkDoneProgress::Begin(WorkDoneProgressBegin {
        title: "tierls: indexing".into(),
        cancellable: Some(false),
        message: Some("scanning the workspace".into()),
        percentage: None,
    }))
    .await;
    let mut last = Instant::now();
    while let Some(event) = events.recv().await {
        match event {
            Event::Seen(seen) if last.elapsed() >= Duration::from_millis(200) => {
                last = Instant::now();
                send(WorkDoneProgress::Report(WorkDoneProgressReport {
                    cancellable: Some(false),
                    message: Some(format!("{seen} files")),
                    percentage: None,
                }))
                .await;
            }
            Event::Seen(_) => {}
            Event::Done(stats) => {
                send(WorkDoneProgress::End(WorkDoneProgressEnd {
                    message: Some(format!(
                        "{} files indexed in {:.1} s",
                        stats.indexed,
                        stats.elapsed.as_secs_f64()
                    )),
                }))
                .await;
                return;
            }
        }
    }
}
