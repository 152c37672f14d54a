//! The router's members: worker nodes, and this machine's own model for a tier that nodes
//! also serve (one GPU box plus the laptop). Both take a request the same way; each has its
//! own load and health, which the router weighs alike.

use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::super::remote::{Probe, RemoteNode, wire};
use super::super::tiers::{LocalState, TierSet};
use super::super::{Cancel, GenerationEvent, Model, ModelError, ModelInfo};
use crate::config::Tier;
use crate::core::generation::GenerateRequest;

/// The name this machine's model goes by among the nodes.
pub const THIS_MACHINE: &str = "this machine";

pub enum Member {
    Node(RemoteNode),
    Local(LocalMember),
}

/// This machine's embedded model for one tier, as a router member: it loads when the
/// router first gives it work, and is unavailable while paused, loading, failed, or too big
/// to load beside the tiers that are loaded.
pub struct LocalMember {
    tiers: Weak<TierSet>,
    tier: Tier,
    info: ModelInfo,
}

impl LocalMember {
    /// The member for `tier`'s model on this machine, when it has one configured.
    pub fn new(tiers: &std::sync::Arc<TierSet>, tier: Tier) -> Option<LocalMember> {
        Some(LocalMember {
            info: tiers.local_info(tier)?,
            tiers: std::sync::Arc::downgrade(tiers),
            tier,
        })
    }

    pub fn tier(&self) -> Tier {
        self.tier
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn state(&self) -> LocalState {
        self.tiers
            .upgrade()
            .map_or(LocalState::Gone, |tiers| tiers.local_state(self.tier))
    }

    /// Whether the model can take a request now (loading it first counts), and why not.
    pub fn health(&self) -> (bool, String) {
        match self.state() {
            LocalState::Ready => (true, "loaded".into()),
            LocalState::Unloaded { fits: true } => {
                (true, "not loaded yet: loads with its first request".into())
            }
            LocalState::Unloaded { fits: false } => (
                false,
                "not loaded, and it does not fit beside the tiers loaded now".into(),
            ),
            LocalState::Loading => (false, "loading".into()),
            LocalState::Paused => (false, "paused while the planner runs".into()),
            LocalState::Failed(err) => (false, err),
            LocalState::Gone => (false, "no model on this machine any more".into()),
        }
    }
}

impl Member {
    pub fn name(&self) -> &str {
        match self {
            Member::Node(node) => &node.config().name,
            Member::Local(_) => THIS_MACHINE,
        }
    }

    pub fn serves(&self, tier: Tier) -> bool {
        match self {
            Member::Node(node) => node.config().serves(tier),
            Member::Local(local) => local.tier == tier,
        }
    }

    /// Requests it takes at once.
    pub fn concurrency(&self) -> u32 {
        match self {
            Member::Node(node) => node.config().concurrency,
            Member::Local(local) => local.info.slots as u32,
        }
    }

    pub fn as_node(&self) -> Option<&RemoteNode> {
        match self {
            Member::Node(node) => Some(node),
            Member::Local(_) => None,
        }
    }

    pub fn as_local(&self) -> Option<&LocalMember> {
        match self {
            Member::Node(_) => None,
            Member::Local(local) => Some(local),
        }
    }

    /// The context per request it holds, as far as it is known.
    pub fn context(&self) -> u32 {
        match self {
            Member::Node(node) => node.context().unwrap_or(node.info().n_ctx),
            Member::Local(local) => local.info.n_ctx,
        }
    }

    pub fn info(&self) -> &ModelInfo {
        match self {
            Member::Node(node) => node.info(),
            Member::Local(local) => &local.info,
        }
    }

    pub fn fills_in_the_middle(&self) -> bool {
        match self {
            Member::Node(node) => node.fills_in_the_middle(),
            Member::Local(local) => local.info.has_fim,
        }
    }

    /// A node answers over the network; this machine's model answers from the tier set.
    pub async fn probe(&self, timeout: Duration) -> Probe {
        match self {
            Member::Node(node) => node.probe(timeout).await,
            Member::Local(local) => {
                let started = Instant::now();
                let (healthy, detail) = local.health();
                Probe {
                    healthy,
                    detail,
                    slots: None,
                    metrics: wire::NodeMetrics::default(),
                    latency: started.elapsed(),
                    memory: None,
                }
            }
        }
    }

    /// Starts `request`; events arrive on `events`, ending with one `Done`. This machine's
    /// model is loaded first when it is not (off the runtime: loading blocks).
    pub fn submit(
        &self,
        slot: usize,
        request: GenerateRequest,
        cancel: Cancel,
        events: UnboundedSender<GenerationEvent>,
    ) {
        match self {
            Member::Node(node) => node.submit(slot, request, cancel, events),
            Member::Local(local) => {
                let (tiers, tier) = (local.tiers.clone(), local.tier);
                tokio::spawn(async move {
                    let ready = tokio::task::spawn_blocking(move || match tiers.upgrade() {
                        Some(tiers) => tiers.local_now(tier),
                        None => Err(ModelError::TierNotConfigured { tier }),
                    })
                    .await
                    .unwrap_or(Err(ModelError::WorkerGone));
                    match ready {
                        Ok(model) => model.submit(slot, request, cancel, events),
                        Err(err) => {
                            let _ = events.send(GenerationEvent::Done(Err(err)));
                        }
                    }
                });
            }
        }
    }
}
