//! A changed `[tiers.*]` applied while the server runs (a saved `tierls.toml` or
//! `workspace/didChangeConfiguration`): each changed tier on a task of its own, the others
//! untouched. A model that does not exist or does not fit is reported naming the key, and
//! the tier keeps serving what it had. A tier whose model becomes a URL leaves this machine:
//! the node the URL names serves it once the router is built anew (`nodes.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tower_lsp::Client;
use tower_lsp::lsp_types::MessageType;

use crate::config::{ModelSource, Tier, TierConfig, Tiers};
use crate::models::hub::{Hub, model_cache};
use crate::models::tiers::TierSet;

/// How long a swap that cannot hold both models waits for the old one's requests.
const DRAIN: Duration = Duration::from_secs(30);

/// Starts reloading every tier whose settings differ between `old` and `new`; returns the
/// swaps under way, each done when its tier has its new model (or kept its old one).
pub(super) fn changed_tiers(
    client: &Client,
    tiers: &Arc<TierSet>,
    old: &Tiers,
    new: &Tiers,
    root: Option<&Path>,
    progress_supported: bool,
) -> Vec<JoinHandle<()>> {
    let mut swaps = Vec::new();
    for tier in Tier::ALL {
        let config = new.get(tier);
        if old.get(tier) == config {
            continue;
        }
        tracing::info!("the {tier} tier's configuration changed: reloading it");
        let (client, tiers) = (client.clone(), tiers.clone());
        match &config.model {
            None | Some(ModelSource::Remote(_)) => tiers.remove(tier),
            Some(ModelSource::HuggingFace(model))
                if Hub::from_env(model_cache()).cached(model).is_none() =>
            {
                super::downloads::start(
                    client,
                    tiers,
                    tier,
                    model.clone(),
                    config.clone(),
                    progress_supported,
                );
            }
            Some(ModelSource::HuggingFace(model)) => {
                if let Some(path) = Hub::from_env(model_cache()).cached(model) {
                    swaps.push(swap(client, tiers, tier, path, config.clone()));
                }
            }
            Some(ModelSource::File(path)) => {
                let path = match root {
                    Some(root) if path.is_relative() => root.join(path),
                    _ => path.clone(),
                };
                swaps.push(swap(client, tiers, tier, path, config.clone()));
            }
        }
    }
    swaps
}

/// Puts `path` behind `tier` off the runtime, then loads the fast tier (the others load
/// when a plan asks).
pub(super) fn swap(
    client: Client,
    tiers: Arc<TierSet>,
    tier: Tier,
    path: PathBuf,
    config: TierConfig,
) -> JoinHandle<()> {
    let span = tracing::Span::current();
    let work = async move {
        let reloaded = {
            let tiers = tiers.clone();
            tokio::task::spawn_blocking(move || {
                let result = tiers.reconfigure(tier, path.clone(), &config, DRAIN);
                // The fast tier serves completions: loaded now, the new model or, after a
                // failed load, the old one again.
                if tier == Tier::Fast
                    && let Err(err) = tiers.load(Tier::Fast)
                {
                    tracing::error!("the fast tier could not load: {err}");
                }
                result.map(|()| path)
            })
            .await
        };
        match reloaded {
            Ok(Ok(path)) => tracing::info!("the {tier} tier now runs {}", path.display()),
            Ok(Err(err)) => {
                tracing::error!("the {tier} tier keeps its model: tiers.{tier}.model: {err}");
                client
                    .show_message(
                        MessageType::ERROR,
                        format!(
                            "tierls: tiers.{tier}.model: {err}; the {tier} tier keeps the model it had"
                        ),
                    )
                    .await;
            }
            Err(err) => tracing::error!("reloading the {tier} tier panicked: {err}"),
        }
    };
    tokio::spawn(tracing::Instrument::instrument(work, span))
}
