//! The models a plan's steps may go to, one per tier, with the routing rule that picks one
//! for each answer ([`crate::core::route`]): mechanical steps to the fast tier, the rest to
//! the executor, a step the executor keeps failing once to the planner's tier.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::config::Tier;
use crate::core::route::{Decision, Rules, TierState, TierStates, Work, decide};
use crate::models::tiers::TierSet;
use crate::models::{Cancel, Model, ModelError};
use crate::route_log::DecisionLog;

type Loader = Arc<dyn Fn() -> Result<Arc<dyn Model>, ModelError> + Send + Sync>;

/// A tier's model: running, or loaded the first time a step needs it.
enum Member {
    Ready(Arc<dyn Model>),
    Lazy {
        load: Loader,
        loaded: OnceCell<Result<Arc<dyn Model>, ModelError>>,
    },
}

pub struct StepTeam {
    fast: Option<Member>,
    executor: Option<Member>,
    planner: Option<Member>,
    /// The tiers as the rule sees them when the steps start.
    pub states: TierStates,
    pub rules: Rules,
    pub decisions: Arc<DecisionLog>,
    /// Set when this team may load the planner: it is unloaded again with the team.
    unload_planner: Option<Arc<TierSet>>,
}

impl StepTeam {
    /// One executor, and no routing: every answer goes to it.
    pub fn one(executor: Arc<dyn Model>) -> Self {
        StepTeam::given(None, Some(executor), None, Rules::default())
    }

    /// Models given outright (the tests and the benchmark), each ready.
    pub fn given(
        fast: Option<Arc<dyn Model>>,
        executor: Option<Arc<dyn Model>>,
        planner: Option<Arc<dyn Model>>,
        rules: Rules,
    ) -> Self {
        let state = |model: &Option<Arc<dyn Model>>| match model {
            Some(model) => {
                let availability = model.availability();
                TierState {
                    configured: true,
                    usable: availability.usable,
                    idle: availability.idle,
                }
            }
            None => TierState::ABSENT,
        };
        StepTeam {
            states: TierStates {
                fast: state(&fast),
                executor: state(&executor),
                planner: state(&planner),
            },
            fast: fast.map(Member::Ready),
            executor: executor.map(Member::Ready),
            planner: planner.map(Member::Ready),
            rules,
            decisions: Arc::default(),
            unload_planner: None,
        }
    }

    /// The team of this machine's tiers and nodes. Blocks (the executor may load): call it
    /// off the runtime. The fast tier joins only when it is loaded (it is there for
    /// completions; steps never load it), the planner only when it can run beside the
    /// others without pausing them, and then it loads at the first escalation.
    pub fn from_tiers(
        tiers: &Arc<TierSet>,
        rules: Rules,
        decisions: Arc<DecisionLog>,
        cancel: &Cancel,
    ) -> Result<Self, ModelError> {
        let mut states = tiers.states();
        let executor = if tiers.is_configured(Tier::Executor) {
            Some(Member::Ready(tiers.ready(Tier::Executor, cancel)?))
        } else {
            None
        };
        let planner = if executor.is_none() {
            // The planner's tier carries the steps: today's fallback, a case of the rule.
            let model = tiers
                .ready(Tier::Planner, cancel)
                .map_err(|err| match err {
                    ModelError::TierNotConfigured { .. } => ModelError::TierNotConfigured {
                        tier: Tier::Executor,
                    },
                    err => err,
                })?;
            Some(Member::Ready(model))
        } else if states.planner.usable && tiers.fits_beside(Tier::Planner) {
            match tiers.get(Tier::Planner) {
                Ok(model) => Some(Member::Ready(model)),
                Err(_) => {
                    let (tiers, cancel) = (tiers.clone(), cancel.clone());
                    Some(Member::Lazy {
                        load: Arc::new(move || tiers.ready(Tier::Planner, &cancel)),
                        loaded: OnceCell::new(),
                    })
                }
            }
        } else {
            // It would need the memory the executor is using: no escalation.
            states.planner.usable = false;
            None
        };
        let fast = tiers.get(Tier::Fast).ok().map(Member::Ready);
        if fast.is_none() {
            states.fast.usable = false;
        }
        let unload_planner = match &planner {
            Some(Member::Lazy { .. }) => Some(tiers.clone()),
            _ => None,
        };
        Ok(StepTeam {
            fast,
            executor,
            planner,
            states,
            rules,
            decisions,
            unload_planner,
        })
    }

    pub fn with_decisions(mut self, decisions: Arc<DecisionLog>) -> Self {
        self.decisions = decisions;
        self
    }

    /// The model that carries most steps: its slots set how many run at once.
    pub fn lead(&self) -> Option<Arc<dyn Model>> {
        [&self.executor, &self.planner]
            .into_iter()
            .find_map(|member| match member {
                Some(Member::Ready(model)) => Some(model.clone()),
                _ => None,
            })
    }

    /// Where one answer goes.
    pub fn decide(&self, work: &Work, states: &TierStates) -> Decision {
        decide(work, states, &self.rules)
    }

    /// `tier`'s model, loading it the first time (off the runtime).
    pub async fn model(&self, tier: Tier) -> Result<Arc<dyn Model>, ModelError> {
        let member = match tier {
            Tier::Fast => &self.fast,
            Tier::Executor => &self.executor,
            Tier::Planner => &self.planner,
        };
        match member {
            None => Err(ModelError::TierNotConfigured { tier }),
            Some(Member::Ready(model)) => Ok(model.clone()),
            Some(Member::Lazy { load, loaded }) => loaded
                .get_or_init(|| {
                    let load = load.clone();
                    async move {
                        tracing::info!("loading the {tier} tier for a step that escalated");
                        tokio::task::spawn_blocking(move || load())
                            .await
                            .unwrap_or(Err(ModelError::WorkerGone))
                    }
                })
                .await
                .clone(),
        }
    }
}

impl Drop for StepTeam {
    fn drop(&mut self) {
        if let Some(tiers) = &self.unload_planner
            && let Some(Member::Lazy { loaded, .. }) = &self.planner
            && loaded.initialized()
        {
            tiers.unload(Tier::Planner);
        }
    }
}
