//! `tierls/status`: what the editor extensions show, gathered from the tiers, the workspace,
//! the plans and the worker nodes.

use super::ext::{IndexReport, PendingPlanReport, PlansReport, Status, TierReport};
use super::server::Backend;
use crate::config::Tier;
use crate::models::tiers::TierStatus;

pub fn status(backend: &Backend) -> Status {
    let tiers = Tier::ALL
        .iter()
        .map(|&tier| {
            let ((model, state), drafting, drafting_note) = match backend.tiers.get() {
                Some(tiers) => (
                    tiers.describe(tier),
                    tiers.drafting(tier),
                    tiers.drafting_note(tier),
                ),
                None => ((None, TierStatus::NotConfigured), None, None),
            };
            let (state, error) = match state {
                TierStatus::Failed(error) => ("failed".to_owned(), Some(error)),
                other => (other.name().to_owned(), None),
            };
            TierReport {
                tier: tier.to_string(),
                model,
                state,
                error,
                drafting,
                drafting_note,
            }
        })
        .collect();
    let (root, index) = {
        let workspace = backend.workspace.lock();
        let stats = workspace.index().stats();
        let index = IndexReport {
            files: stats.files,
            definitions: stats.definitions,
        };
        (workspace.root().map(ToOwned::to_owned), index)
    };
    let (plans, routing) = {
        let session = backend.session();
        let plans = PlansReport {
            pending: session
                .plans
                .summary()
                .into_iter()
                .map(|plan| PendingPlanReport {
                    plan_id: plan.id,
                    instruction: plan.instruction,
                    steps: plan.steps,
                })
                .collect(),
            running: session.plans.running(),
        };
        (plans, session.decisions.recent())
    };
    Status {
        version: env!("CARGO_PKG_VERSION").into(),
        root,
        tiers,
        index,
        plans,
        nodes: backend
            .nodes
            .router()
            .map(|router| router.status())
            .unwrap_or_default(),
        routing,
    }
}
