//! The last routing decisions: each is logged at info when it is made and kept here (a
//! bounded ring) for `tierls/status` and `tierls status`.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::core::route::Decision;
use crate::sync::lock;

/// How many decisions are kept.
const KEPT: usize = 32;

/// One decision as the status shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recorded {
    /// What was routed: "plan: add a doc comment", "step 3 (answer 2)", "hover".
    pub work: String,
    /// The tier it went to (`None`: no model, or nowhere).
    pub tier: Option<String>,
    /// The decision in words: "executor, as a one-step plan — one symbol, 14 lines".
    pub decision: String,
}

#[derive(Default)]
pub struct DecisionLog {
    recent: Mutex<VecDeque<Recorded>>,
}

impl DecisionLog {
    /// Logs `decision` at info and keeps it.
    pub fn record(&self, work: impl Into<String>, decision: &Decision) {
        let work = work.into();
        tracing::info!("routing {work}: {decision}");
        self.keep(work, decision);
    }

    /// Keeps `decision` without logging it above debug (one per call-site job would drown
    /// the log).
    pub fn record_quietly(&self, work: impl Into<String>, decision: &Decision) {
        let work = work.into();
        tracing::debug!("routing {work}: {decision}");
        self.keep(work, decision);
    }

    fn keep(&self, work: String, decision: &Decision) {
        let mut recent = lock(&self.recent);
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(Recorded {
            work,
            tier: decision.route.tier().map(|tier| tier.to_string()),
            decision: decision.to_string(),
        });
    }

    /// The kept decisions, oldest first.
    pub fn recent(&self) -> Vec<Recorded> {
        lock(&self.recent).iter().cloned().collect()
    }
}
