//! "Plan this refactor": the planner writes a plan, executors carry out its steps, and the
//! result lands as one set of file changes. [`driver`] conducts it for every front end.
//!
//! Steps whose dependencies are done run at once, one per executor slot. Each step reads
//! the plan's working copy of its file, asks the executor for plain code, and splices it by
//! symbol path; a splice that adds syntax errors goes back to the executor with the errors,
//! a bounded number of times. Nothing touches a file here: the caller lands the edits.

pub mod check;
pub mod driver;
mod execute;
pub mod rounds;
pub mod store;
pub mod team;
pub mod workspace;

pub use execute::{ExecuteOptions, Execution, Progress, StepOutcome, StepReport, execute};

use std::sync::Arc;

use crate::config::{PlanConfig, Tier};
use crate::core::generation::{GenerateRequest, Grammar, Prompt, StopReason, Usage};
use crate::core::plan::prompt::{PlannerInput, planner_prompt};
use crate::core::plan::{MAX_STEPS, Plan, RawPlan, Workspace, plan_schema, validate};
use crate::models::tiers::{Flow, TierSet};
use crate::models::{Cancel, Model, ModelError, generate};

/// The planner's answer is at most 8 bounded steps: this many tokens always hold it.
pub const PLAN_MAX_TOKENS: u32 = 2048;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the planner: {0}")]
    Model(#[from] ModelError),
    #[error("{0}")]
    Focus(String),
    #[error("planning was cancelled")]
    Cancelled,
    #[error("the planner did not finish its answer within {seconds} s (plan.planner_seconds)")]
    TimeLimit { seconds: u64 },
    #[error("the planner's answer is not a plan ({reason}): {answer}")]
    NotAPlan { reason: String, answer: String },
}

/// A plan, with what producing it cost.
#[derive(Clone, Debug)]
pub struct Planned {
    pub plan: Plan,
    /// The planner's answer as written.
    pub answer: String,
    pub usage: Usage,
}

/// The planner's answer, decoded but not yet checked.
#[derive(Clone, Debug)]
pub struct PlannerAnswer {
    pub raw: RawPlan,
    pub answer: String,
    pub usage: Usage,
}

/// Asks the planner for a plan, constrained by the plan grammar.
pub async fn ask_planner(
    planner: &dyn Model,
    input: &PlannerInput,
    time_limit: std::time::Duration,
    cancel: Cancel,
) -> Result<PlannerAnswer, PlanError> {
    let request = GenerateRequest {
        prompt: Prompt::Chat(planner_prompt(input)),
        max_tokens: PLAN_MAX_TOKENS,
        stop: Vec::new(),
        // A node that trickles its answer never ends it: the whole answer has a limit.
        time_limit: Some(time_limit),
        grammar: Some(Grammar::JsonSchema(plan_schema(&input.allowed))),
        heal: false,
    };
    let generation = generate(planner, 0, request, cancel).await?;
    match generation.stop_reason {
        StopReason::Cancelled => return Err(PlanError::Cancelled),
        StopReason::TimeLimit => {
            return Err(PlanError::TimeLimit {
                seconds: time_limit.as_secs(),
            });
        }
        _ => {}
    }
    tracing::debug!(
        tokens = generation.usage.generated_tokens,
        "the planner answered: {}",
        generation.text
    );
    Ok(PlannerAnswer {
        raw: parse_plan(&generation.text)?,
        answer: generation.text,
        usage: generation.usage,
    })
}

/// Asks the planner for a plan and checks it against the workspace.
pub async fn make_plan(
    planner: &dyn Model,
    input: &PlannerInput,
    workspace: &(dyn Workspace + Sync),
    time_limit: std::time::Duration,
    cancel: Cancel,
) -> Result<Planned, PlanError> {
    let answer = ask_planner(planner, input, time_limit, cancel).await?;
    Ok(Planned {
        plan: validate(&input.instruction, &answer.raw, workspace),
        answer: answer.answer,
        usage: answer.usage,
    })
}

/// Decodes the planner's JSON. The grammar makes this succeed unless the answer was cut
/// short (or a remote server ignored the grammar).
pub fn parse_plan(answer: &str) -> Result<RawPlan, PlanError> {
    let not_a_plan = |reason: String| PlanError::NotAPlan {
        reason,
        answer: answer.chars().take(400).collect(),
    };
    let raw: RawPlan = serde_json::from_str(answer).map_err(|err| not_a_plan(err.to_string()))?;
    if raw.steps.len() > MAX_STEPS as usize {
        return Err(not_a_plan(format!(
            "it has {} steps; a plan has at most {MAX_STEPS}",
            raw.steps.len()
        )));
    }
    Ok(raw)
}

/// The model that plans one refactor: the planner tier inside a flow (other tiers step
/// aside while it needs their memory), or the executor tier when no planner is configured.
/// Dropping the lease ends the flow.
pub struct PlannerLease {
    pub model: Arc<dyn Model>,
    pub tier: Tier,
    _flow: Option<Flow>,
}

/// Leases the planner, loading it off the async runtime.
pub async fn lease_planner(
    tiers: Arc<TierSet>,
    cancel: Cancel,
) -> Result<PlannerLease, ModelError> {
    off_runtime(move || planner_now(&tiers, &cancel)).await
}

fn planner_now(tiers: &Arc<TierSet>, cancel: &Cancel) -> Result<PlannerLease, ModelError> {
    if tiers.is_configured(Tier::Planner) {
        let flow = tiers.enter_flow()?;
        let model = flow.planner()?;
        return Ok(PlannerLease {
            model,
            tier: Tier::Planner,
            _flow: Some(flow),
        });
    }
    tracing::info!("no planner tier is configured: the executor tier plans");
    let model = tiers.ready(Tier::Executor, cancel)?;
    Ok(PlannerLease {
        model,
        tier: Tier::Executor,
        _flow: None,
    })
}

/// Runs model loading, which blocks, on tokio's blocking threads.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ModelError> + Send + 'static,
) -> Result<T, ModelError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or(Err(ModelError::WorkerGone))
}

impl ExecuteOptions {
    /// The options the configuration gives, with one step in flight per executor slot.
    pub fn from_config(config: &PlanConfig, executor: &dyn Model) -> Self {
        ExecuteOptions {
            max_attempts: config.max_attempts,
            max_step_tokens: config.max_step_tokens,
            step_time_limit: Some(std::time::Duration::from_secs(config.step_seconds.into())),
            concurrency: executor.info().slots,
        }
    }
}
