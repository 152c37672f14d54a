//! The protocol-side state of one editor session: the configuration and the plans waiting
//! for the user. What tierls knows of the workspace lives in the workspace layer
//! (`crate::workspace`), behind a lock of its own. Handlers lock each briefly, one at a time,
//! and never across an `.await`.

use std::sync::Arc;

use crate::config::{Config, ConfigSources};
use crate::refactor::store::PlanStore;
use crate::route_log::DecisionLog;

#[derive(Default)]
pub struct Session {
    pub config_sources: ConfigSources,
    pub config: Config,
    /// Plans waiting for the user, and running plan work.
    pub plans: PlanStore,
    /// The last routing decisions, for `tierls/status`.
    pub decisions: Arc<DecisionLog>,
}
