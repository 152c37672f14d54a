//! Tier models named on Hugging Face and not in the cache yet: fetched in the background at
//! start with `$/progress`; the tier is configured when its model is in (and the fast tier
//! loaded), and a failure is shown once, naming the key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tower_lsp::Client;
use tower_lsp::lsp_types::notification::Progress;
use tower_lsp::lsp_types::request::WorkDoneProgressCreate;
use tower_lsp::lsp_types::*;

use crate::config::{ModelSource, Tier, TierConfig, Tiers};
use crate::core::budget::human_bytes;
use crate::core::hub::HubModel;
use crate::models::hub::{FetchProgress, Hub, model_cache};
use crate::models::tiers::TierSet;

/// The tiers whose Hugging Face model is not in the cache.
pub(super) fn missing(tiers: &Tiers) -> Vec<(Tier, HubModel)> {
    let hub = Hub::from_env(model_cache());
    Tier::ALL
        .into_iter()
        .filter_map(|tier| match &tiers.get(tier).model {
            Some(ModelSource::HuggingFace(model)) if hub.cached(model).is_none() => {
                Some((tier, model.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Fetches `model` for `tier`, then puts it behind the tier (`reload::swap`: the fast tier
/// loads at once, the others when a plan asks).
pub(super) fn start(
    client: Client,
    tiers: Arc<TierSet>,
    tier: Tier,
    model: HubModel,
    config: TierConfig,
    progress_supported: bool,
) {
    let span = tracing::Span::current();
    let fetch = async move {
        let (events, receiver) = mpsc::unbounded_channel();
        let reporter = tokio::spawn(report(
            client.clone(),
            receiver,
            progress_supported,
            tier,
            model.to_string(),
        ));
        let hub = Hub::from_env(model_cache());
        let mut progress = Events {
            events,
            last: Instant::now() - REPORT_EVERY,
            total: 0,
            name: String::new(),
        };
        let fetched = hub.fetch(&model, &mut progress).await;
        drop(progress);
        let _ = reporter.await;
        match fetched {
            Ok(path) => {
                tracing::info!(
                    "the {tier} tier's model is in the cache: {}",
                    path.display()
                );
                super::reload::swap(client, tiers, tier, path, config);
            }
            Err(err) => {
                tracing::error!("the {tier} tier's model: {err}");
                client
                    .show_message(
                        MessageType::ERROR,
                        format!("tierls: the {tier} tier (tiers.{tier}.model): {err}"),
                    )
                    .await;
            }
        }
    };
    tokio::spawn(tracing::Instrument::instrument(fetch, span));
}

const REPORT_EVERY: Duration = Duration::from_millis(250);

enum Event {
    File { name: String, total: u64 },
    Done { done: u64, total: u64, name: String },
    Waiting(String),
}

/// Turns fetch progress into events, at most four a second.
struct Events {
    events: mpsc::UnboundedSender<Event>,
    last: Instant,
    total: u64,
    name: String,
}

impl FetchProgress for Events {
    fn file(&mut self, name: &str, total: u64, done: u64) {
        self.total = total;
        self.name = name.to_owned();
        let _ = self.events.send(Event::File {
            name: name.to_owned(),
            total,
        });
        self.advance(done);
    }

    fn advance(&mut self, done: u64) {
        if self.last.elapsed() >= REPORT_EVERY {
            self.last = Instant::now();
            let _ = self.events.send(Event::Done {
                done,
                total: self.total,
                name: self.name.clone(),
            });
        }
    }

    fn waiting(&mut self, name: &str) {
        let _ = self.events.send(Event::Waiting(name.to_owned()));
    }
}

async fn report(
    client: Client,
    mut events: mpsc::UnboundedReceiver<Event>,
    progress_supported: bool,
    tier: Tier,
    model: String,
) {
    let token = NumberOrString::String(format!("tierls/download/{tier}"));
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
        title: format!("tierls: downloading the {tier} tier's model"),
        cancellable: Some(false),
        message: Some(model.clone()),
        percentage: Some(0),
    }))
    .await;
    while let Some(event) = events.recv().await {
        let (message, percentage) = match event {
            Event::File { name, total } => (format!("{name} ({})", human_bytes(total)), None),
            Event::Done { done, total, name } => (
                format!("{name}: {} of {}", human_bytes(done), human_bytes(total)),
                (total > 0).then(|| (done.saturating_mul(100) / total).min(100) as u32),
            ),
            Event::Waiting(name) => (
                format!("{name}: another tierls is downloading it; waiting"),
                None,
            ),
        };
        send(WorkDoneProgress::Report(WorkDoneProgressReport {
            cancellable: Some(false),
            message: Some(message),
            percentage,
        }))
        .await;
    }
    send(WorkDoneProgress::End(WorkDoneProgressEnd {
        message: Some(model),
    }))
    .await;
}
