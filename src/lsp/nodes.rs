//! The session's worker nodes: the router over them, set up at start and built anew when
//! `[nodes]` changes (a saved `tierls.toml`, `workspace/didChangeConfiguration`) or when a
//! tier that nodes serve changes its model on this machine. Nodes that did not change keep
//! their state; requests running on a node that left finish there first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tower_lsp::Client;
use tower_lsp::lsp_types::MessageType;

use super::ext::{NodesChanged, NodesChangedParams};
use crate::config::NodeConfig;
use crate::models::router::Router;
use crate::models::tiers::TierSet;
use crate::sync::lock;

#[derive(Default)]
pub(super) struct Nodes {
    router: Mutex<Option<Arc<Router>>>,
    /// One change at a time: a later change waits for the earlier one's probes. Holds the
    /// number of the change applied last, so that an earlier change that comes late (its
    /// model swaps took longer) does not undo a later one.
    changing: tokio::sync::Mutex<u64>,
    /// Numbers changes in the order the configuration changed.
    changes: AtomicU64,
}

impl Nodes {
    /// A number for a change about to be applied: changes apply in this order.
    pub(super) fn next_change(&self) -> u64 {
        self.changes.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The router now, if any node is configured.
    pub(super) fn router(&self) -> Option<Arc<Router>> {
        lock(&self.router).clone()
    }

    /// Routes the tiers `configs` serve through a router over them (and this machine's
    /// model for such a tier, when it has one), probes the nodes now and then every few
    /// seconds, and tells the editor when a node's health changes. Replaces the router
    /// there was: tiers no node serves any more go back to this machine's model alone.
    pub(super) async fn apply(
        &self,
        change: u64,
        client: &Client,
        tiers: &Arc<TierSet>,
        configs: &[NodeConfig],
    ) {
        let mut applied = self.changing.lock().await;
        if *applied > change {
            tracing::debug!("a later change of the nodes is in effect already");
            return;
        }
        *applied = change;
        let previous = self.router();
        if configs.is_empty() && previous.is_none() {
            return;
        }
        let (router, notes) = Router::build(configs, Some(tiers), previous.as_deref());
        // Probed before any tier is routed through it: a route's context comes from what
        // its nodes report.
        router.probe_now().await;
        router.replace(previous.as_deref(), tiers);
        *lock(&self.router) = (!router.is_empty()).then(|| router.clone());
        drop(previous);
        for note in notes {
            tracing::warn!("{note}");
            client
                .show_message(MessageType::WARNING, format!("tierls: {note}"))
                .await;
        }
        if router.is_empty() {
            tracing::info!("no worker nodes are configured now");
            return;
        }
        let client = client.clone();
        let runtime = tokio::runtime::Handle::current();
        let watched = Arc::downgrade(&router);
        router.set_on_change(move || {
            let Some(router) = watched.upgrade() else {
                return;
            };
            let client = client.clone();
            let nodes = router.status();
            runtime.spawn(async move {
                client
                    .send_notification::<NodesChanged>(NodesChangedParams { nodes })
                    .await;
            });
        });
        // The old router's probing ends with it: it holds only a weak handle.
        router.start_probing(crate::models::router::PROBE_EVERY);
    }
}
