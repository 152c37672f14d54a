//! The one plan driver: lease the planner → plan → validate → lease the executor → execute →
//! land. The LSP shell, `tierls plan`, `tierls bench plan` and the tests all call it; each
//! turns its [`Stage`]s into what its user sees (`$/progress`, a progress bar) and its
//! result into what it delivers (one `WorkspaceEdit`, a diff and `--apply`).
//!
//! The workspace layer is its only file source. The lock is held only to copy facts out;
//! reads run on blocking threads, models on their own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::check::{CheckError, CheckRun, CheckSpec, CheckStatus};
use super::rounds::locate_failures;
use super::team::StepTeam;
use super::workspace::PlanFacts;
use super::{
    ExecuteOptions, Execution, PlanError, Planned, PlannerLease, Progress, ask_planner,
    lease_planner,
};
use crate::config::Tier;
use crate::core::generation::Usage;
use crate::core::plan::context::{Focus, PromptBudget, planner_input, reference_files};
use crate::core::plan::failures::{Failure, new_failures};
use crate::core::plan::land::{Landing, land};
use crate::core::plan::prompt::PlannerInput;
use crate::core::plan::repair::{RoundKind, Rounds};
use crate::core::plan::{Action, RawPlan, RawStep};
use crate::core::plan::{Plan, fan_out, validate};
use crate::core::route::{
    Decision, RefactorFacts, Route, Rules, TierState, TierStates, Work, decide,
};
use crate::disk::{self, WriteError};
use crate::models::tiers::TierSet;
use crate::models::{Cancel, Model, ModelError};
use crate::route_log::DecisionLog;
use crate::workspace::{CurrentFile, Shared, Snapshot};

/// The most unindexed files searched for a fan-out's name.
const MAX_UNINDEXED_SEARCHED: usize = 2_000;

/// Who does the work: the tiers of this machine and its worker nodes (leased per plan), or
/// models given outright (the tests and the benchmark).
#[derive(Clone)]
pub enum Team {
    Tiers(Arc<TierSet>),
    Given {
        planner: Arc<dyn Model>,
        executor: Arc<dyn Model>,
    },
    /// Models given per tier, routed by the rule like the tiers are: the planner plans
    /// (else the executor), mechanical steps may go to the fast tier, a failing step up to
    /// the planner.
    Routed {
        fast: Option<Arc<dyn Model>>,
        executor: Option<Arc<dyn Model>>,
        planner: Option<Arc<dyn Model>>,
    },
}

/// Where the work is, for progress displays.
#[derive(Debug)]
pub enum Stage {
    LoadingPlanner,
    Planning {
        tier: Tier,
    },
    Checking,
    LoadingExecutor,
    Step(Progress),
    /// A round of the check loop starts: its jobs run next.
    Round {
        number: u32,
        kind: RoundKind,
        jobs: usize,
    },
    /// `plan.check` runs after round `round`.
    RunningCheck {
        round: u32,
    },
    /// The planner revises the plan from what the check still reports.
    Revising,
}

pub type OnStage = Arc<dyn Fn(Stage) + Send + Sync>;

/// A refactor to plan.
pub struct PlanRequest {
    pub instruction: String,
    pub focus: Vec<Focus>,
    /// The repo map's token budget (`plan.map_tokens`).
    pub map_tokens: usize,
    /// The reference sites' token budget (`plan.reference_tokens`).
    pub reference_tokens: usize,
    /// The most jobs a fan-out step expands into (`plan.max_fan_out`).
    pub max_fan_out: usize,
    /// The planner's whole answer must arrive within this (`plan.planner_seconds`).
    pub planner_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("no planner: {0}")]
    NoPlanner(ModelError),
    #[error("no executor: {0}")]
    NoExecutor(ModelError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("checking the plan failed: {0}")]
    Checking(String),
    #[error(transparent)]
    Check(#[from] CheckError),
}

/// An executed plan, landed on the files as they were when its steps were done.
pub struct Executed {
    /// The steps that ran: the plan's, then every repair round's.
    pub plan: Plan,
    pub execution: Execution,
    pub landing: Landing,
    /// The editor's version of each file the landing is based on (`None`: the disk's).
    pub versions: BTreeMap<String, Option<i32>>,
    /// The check loop's rounds, when `plan.check` ran.
    pub rounds: Option<Rounds>,
}

/// `plan.check` on an executed plan: on the files as they were before it, then with its
/// landing over them.
#[derive(Debug)]
pub struct Checked {
    pub before: CheckRun,
    pub after: CheckRun,
    /// Failures after the plan that the check did not report before it (matched by file
    /// and message: lines move), each with the symbol it is in.
    pub new_failures: Vec<(Failure, Option<String>)>,
}

impl Checked {
    /// The result holds: the check passes, or it failed before the plan and reports
    /// nothing new after it.
    pub fn holds(&self) -> bool {
        self.after.status == CheckStatus::Passed
            || (self.before.status != CheckStatus::Passed
                && self.after.status != CheckStatus::TimedOut
                && self.new_failures.is_empty())
    }

    /// What a person is told, a line each.
    pub fn summary(&self, command: &str) -> Vec<String> {
        let mut lines = Vec::new();
        if self.before.status != CheckStatus::Passed {
            lines.push(format!(
                "`{command}` already {} before any step ran: its failures then are not the plan's",
                self.before.verdict()
            ));
        }
        lines.push(format!(
            "`{command}` {} on the changed workspace ({:.1} s)",
            self.after.verdict(),
            self.after.elapsed.as_secs_f64()
        ));
        for (failure, symbol) in &self.new_failures {
            let within = symbol
                .as_ref()
                .map(|symbol| format!(" (in `{symbol}`)"))
                .unwrap_or_default();
            lines.push(format!(
                "  {}:{}{within}: {}",
                failure.file, failure.line, failure.message
            ));
        }
        if self.after.status != CheckStatus::Passed && self.new_failures.is_empty() {
            let tail: Vec<&str> = self.after.output.lines().rev().take(10).collect();
            lines.extend(tail.into_iter().rev().map(|line| format!("  | {line}")));
        }
        lines
    }
}

pub struct Driver {
    pub workspace: Shared,
    pub team: Team,
    pub on_stage: OnStage,
    /// The `[routing]` rules.
    pub rules: Rules,
    /// Where each routing decision is kept (the server's, for `tierls/status`).
    pub decisions: Arc<DecisionLog>,
}

impl Driver {
    pub fn new(workspace: Shared, team: Team) -> Self {
        Driver {
            workspace,
            team,
            on_stage: Arc::new(|_| {}),
            rules: Rules::default(),
            decisions: Arc::default(),
        }
    }

    pub fn routing(mut self, rules: Rules, decisions: Arc<DecisionLog>) -> Self {
        self.rules = rules;
        self.decisions = decisions;
        self
    }

    pub fn on_stage(mut self, on_stage: OnStage) -> Self {
        self.on_stage = on_stage;
        self
    }

    /// Plans `request`: the planner's prompt and the checked plan.
    pub async fn plan(
        &self,
        request: &PlanRequest,
        cancel: Cancel,
    ) -> Result<(PlannerInput, Planned), DriverError> {
        let input = self.planner_input(request).await?;
        let planned = self.plan_with(input.clone(), request, cancel).await?;
        Ok((input, planned))
    }

    /// Routes the refactor ([`crate::core::route`]): a small one-symbol refactor becomes a
    /// one-step plan for the executor; anything else is planned by the planner (or, without
    /// one, the executor) with `input` (from [`Driver::planner_input`]). Either way the plan
    /// is checked against the workspace and says who planned it.
    pub async fn plan_with(
        &self,
        input: PlannerInput,
        request: &PlanRequest,
        cancel: Cancel,
    ) -> Result<Planned, DriverError> {
        let decision = self.route_refactor(&input);
        let work: String = format!("plan \"{}\"", request.instruction.trim())
            .chars()
            .take(80)
            .collect();
        self.decisions.record(work, &decision);
        let (raw, answer, usage) = match decision.route {
            Route::OneStep(_) => match one_step(&input) {
                Some(raw) => (raw, String::new(), Usage::default()),
                None => return Err(PlanError::Focus(decision.reason).into()),
            },
            Route::Tier(_) => {
                (self.on_stage)(Stage::LoadingPlanner);
                let (model, tier, lease) = self.planner(cancel.clone()).await?;
                (self.on_stage)(Stage::Planning { tier });
                let answer =
                    ask_planner(model.as_ref(), &input, request.planner_time, cancel).await;
                drop(model);
                // Ending the flow unloads the planner: off the runtime.
                let _ = tokio::task::spawn_blocking(move || drop(lease)).await;
                let answer = answer?;
                (answer.raw, answer.answer, answer.usage)
            }
            Route::NoModel | Route::Nowhere => {
                return Err(DriverError::NoPlanner(ModelError::NoNode {
                    tier: Tier::Planner,
                    reason: format!("no tier can plan this refactor: {}", decision.reason),
                }));
            }
        };
        (self.on_stage)(Stage::Checking);
        // Validation asks the disk: off the runtime, on index facts copied out.
        let facts = {
            let workspace = self.workspace.lock();
            let root = workspace.root().map(ToOwned::to_owned).unwrap_or_default();
            PlanFacts::gather(workspace.index(), &root, &raw)
        };
        let instruction = request.instruction.clone();
        let mut plan = tokio::task::spawn_blocking(move || validate(&instruction, &raw, &facts))
            .await
            .map_err(|err| DriverError::Checking(err.to_string()))?;
        plan.planned_by = decision.to_string();
        // Fan-outs become jobs now, from the index, so that the plan shown is what runs.
        fan_out::expand(
            &mut plan,
            self.workspace.lock().index(),
            request.max_fan_out,
        );
        let plan = self.note_unindexed_uses(plan).await;
        Ok(Planned {
            plan,
            answer,
            usage,
        })
    }

    /// Where the refactor `input` describes goes, under this driver's rules and team. Models
    /// given outright ([`Team::Given`]) always plan: that team is the always-plan baseline.
    pub fn route_refactor(&self, input: &PlannerInput) -> Decision {
        let (states, rules) = match &self.team {
            Team::Tiers(tiers) => (tiers.states(), self.rules.clone()),
            Team::Given { .. } => {
                return Decision {
                    route: Route::Tier(Tier::Planner),
                    reason: "the planner always plans (models given outright)".to_owned(),
                };
            }
            Team::Routed {
                fast,
                executor,
                planner,
            } => {
                let state = |model: &Option<Arc<dyn Model>>| match model {
                    Some(_) => TierState::READY,
                    None => TierState::ABSENT,
                };
                (
                    TierStates {
                        fast: state(fast),
                        executor: state(executor),
                        planner: state(planner),
                    },
                    self.rules.clone(),
                )
            }
        };
        decide(&Work::Refactor(RefactorFacts::of(input)), &states, &rules)
    }

    /// The model that plans, with its tier, and the lease that holds the planner's flow
    /// (drop it off the runtime: ending the flow unloads the planner).
    pub(super) async fn planner(
        &self,
        cancel: Cancel,
    ) -> Result<(Arc<dyn Model>, Tier, Option<PlannerLease>), DriverError> {
        match &self.team {
            Team::Tiers(tiers) => {
                let lease = lease_planner(tiers.clone(), cancel)
                    .await
                    .map_err(DriverError::NoPlanner)?;
                Ok((lease.model.clone(), lease.tier, Some(lease)))
            }
            Team::Given { planner, .. } => Ok((planner.clone(), Tier::Planner, None)),
            Team::Routed {
                executor, planner, ..
            } => match (planner, executor) {
                (Some(planner), _) => Ok((planner.clone(), Tier::Planner, None)),
                (None, Some(executor)) => Ok((executor.clone(), Tier::Executor, None)),
                (None, None) => Err(DriverError::NoPlanner(ModelError::TierNotConfigured {
                    tier: Tier::Planner,
                })),
            },
        }
    }

    /// Lists under each fan-out the generated or too-large files that use its name (the
    /// index does not hold them, so no job can change them), read off the runtime.
    async fn note_unindexed_uses(&self, mut plan: Plan) -> Plan {
        let unindexed = self.workspace.lock().unindexed().to_vec();
        if plan.fan_outs.is_empty() || unindexed.is_empty() {
            return plan;
        }
        let names: Vec<(u32, String)> = plan
            .fan_outs
            .iter()
            .map(|f| (f.step, fan_out::used_name(&f.symbol).to_owned()))
            .collect();
        let snapshot = self.workspace.snapshot();
        let found = off_runtime(move || {
            let mut found = Vec::new();
            for (file, why) in unindexed.iter().take(MAX_UNINDEXED_SEARCHED) {
                let Ok(text) = snapshot.read_disk_limited(file, snapshot.max_read_bytes()) else {
                    continue;
                };
                for (step, name) in &names {
                    if fan_out::uses_word(&text, name) {
                        found.push((*step, file.clone(), why.name()));
                    }
                }
            }
            found
        })
        .await;
        for (step, file, why) in found {
            fan_out::note_unindexed(&mut plan, step, &file, why);
        }
        plan
    }

    /// The planner's prompt for `request`, from the focus files as they are now.
    pub async fn planner_input(&self, request: &PlanRequest) -> Result<PlannerInput, DriverError> {
        let (snapshot, using) = {
            let mut workspace = self.workspace.lock();
            workspace.refresh_index();
            for item in &request.focus {
                let file = item.file();
                if workspace.index().file(file).is_none() && !workspace.is_open(file) {
                    return Err(PlanError::Focus(format!(
                        "{file}: not a source file in the index (give a path relative to the workspace root)"
                    ))
                    .into());
                }
            }
            let using =
                reference_files(workspace.index(), &request.focus, request.reference_tokens);
            (workspace.snapshot(), using)
        };
        let files: Vec<String> = request
            .focus
            .iter()
            .map(|item| item.file().to_owned())
            .collect();
        let texts = tokio::task::spawn_blocking(move || {
            let mut texts = files
                .iter()
                .map(|file| {
                    let text = snapshot.text(file).map_err(|err| err.to_string())?;
                    Ok((file.clone(), text.rope().to_string()))
                })
                .collect::<Result<BTreeMap<String, String>, String>>()?;
            // A file that uses a focus symbol and cannot be read now: its sites go unshown.
            for file in using {
                if !texts.contains_key(&file)
                    && let Ok(text) = snapshot.text(&file)
                {
                    texts.insert(file, text.rope().to_string());
                }
            }
            Ok(texts)
        })
        .await
        .map_err(|err| err.to_string())
        .and_then(|texts| texts)
        .map_err(PlanError::Focus)?;
        let shared = self.workspace.clone();
        tokio::task::spawn_blocking(move || shared.build_repo_graph())
            .await
            .map_err(|err| PlanError::Focus(err.to_string()))?;
        let workspace = self.workspace.lock();
        planner_input(
            workspace.index(),
            &texts,
            &request.instruction,
            &request.focus,
            PromptBudget {
                map_tokens: request.map_tokens,
                reference_tokens: request.reference_tokens,
            },
        )
        .map_err(|reason| PlanError::Focus(reason).into())
    }

    /// Runs the plan's steps on the files as they are now, then lands them on the files as
    /// they are when the steps are done (the user may have typed meanwhile). A cancelled
    /// plan lands nothing.
    pub async fn execute(
        &self,
        plan: &Plan,
        options: impl FnOnce(&dyn Model) -> ExecuteOptions,
        cancel: Cancel,
    ) -> Result<Executed, DriverError> {
        let (executor, lead) = self.executor(cancel.clone()).await?;
        let options = options(lead.as_ref());
        let files = self.texts_now(plan).await;
        let execution = self.run_round(plan, executor, files, options, cancel).await;
        Ok(self.land_now(plan, &execution).await)
    }

    /// The models a plan's steps go to, the executor loaded if need be, and the one that
    /// carries most steps (its slots set how many run at once).
    pub(super) async fn executor(
        &self,
        cancel: Cancel,
    ) -> Result<(Arc<StepTeam>, Arc<dyn Model>), DriverError> {
        (self.on_stage)(Stage::LoadingExecutor);
        let team = match &self.team {
            Team::Tiers(tiers) => {
                let (tiers, rules, decisions) =
                    (tiers.clone(), self.rules.clone(), self.decisions.clone());
                tokio::task::spawn_blocking(move || {
                    StepTeam::from_tiers(&tiers, rules, decisions, &cancel)
                })
                .await
                .unwrap_or(Err(ModelError::WorkerGone))
                .map_err(DriverError::NoExecutor)?
            }
            Team::Given { executor, .. } => {
                StepTeam::one(executor.clone()).with_decisions(self.decisions.clone())
            }
            Team::Routed {
                fast,
                executor,
                planner,
            } => StepTeam::given(
                fast.clone(),
                executor.clone(),
                planner.clone(),
                self.rules.clone(),
            )
            .with_decisions(self.decisions.clone()),
        };
        let lead = team
            .lead()
            .ok_or(DriverError::NoExecutor(ModelError::TierNotConfigured {
                tier: Tier::Executor,
            }))?;
        Ok((Arc::new(team), lead))
    }

    /// `execution`'s edits landed on the files as they are now (the user may have typed
    /// meanwhile). A cancelled execution lands nothing.
    pub(super) async fn land_now(&self, plan: &Plan, execution: &Execution) -> Executed {
        if execution.cancelled {
            return Executed {
                plan: plan.clone(),
                execution: execution.clone(),
                landing: Landing::default(),
                versions: BTreeMap::new(),
                rounds: None,
            };
        }
        let current = self.current_files(plan).await;
        let bases = current
            .iter()
            .map(|(file, now)| (file.clone(), now.text.clone()))
            .collect();
        let landing = land(plan, &execution.edits, &bases);
        let versions = current
            .into_iter()
            .map(|(file, now)| (file, now.version))
            .collect();
        Executed {
            plan: plan.clone(),
            execution: execution.clone(),
            landing,
            versions,
            rounds: None,
        }
    }

    /// Runs `spec` on a scratch copy of the workspace before and after `landing` (both on
    /// the texts the landing is based on: the editor's, else the disk's), off the runtime.
    pub async fn check(&self, landing: &Landing, spec: CheckSpec) -> Result<Checked, DriverError> {
        let before: BTreeMap<String, Option<String>> = landing
            .files
            .iter()
            .map(|file| (file.file.clone(), file.base.clone()))
            .collect();
        let after: BTreeMap<String, Option<String>> = landing
            .files
            .iter()
            .map(|file| (file.file.clone(), Some(file.text.clone())))
            .collect();
        let before_run = self.run_check(before, spec.clone()).await?;
        let after_run = self.run_check(after.clone(), spec).await?;
        let fresh = new_failures(&before_run.failures, &after_run.failures);
        let snapshot = self.workspace.snapshot();
        let (new_failures, _) =
            tokio::task::spawn_blocking(move || locate_failures(&snapshot, after, fresh))
                .await
                .map_err(|err| DriverError::Checking(err.to_string()))?;
        Ok(Checked {
            before: before_run,
            after: after_run,
            new_failures,
        })
    }

    /// Each file the plan touches as it is now, read off the runtime.
    async fn current_files(&self, plan: &Plan) -> BTreeMap<String, CurrentFile> {
        let snapshot = self.workspace.snapshot();
        let files: Vec<String> = plan.files().into_iter().map(ToOwned::to_owned).collect();
        off_runtime(move || snapshot.current_files(files.iter().map(String::as_str))).await
    }
}

/// The one-step plan for a refactor that skips the planner: rewrite its one target symbol
/// with the user's instruction.
fn one_step(input: &PlannerInput) -> Option<RawPlan> {
    let [target] = input.targets.as_slice() else {
        return None;
    };
    Some(RawPlan {
        summary: format!("Rewrite `{}` as asked.", target.path),
        steps: vec![RawStep {
            id: 1,
            file: target.file.clone(),
            target: target.path.clone(),
            action: Action::ReplaceSymbol,
            instruction: input.instruction.trim().to_owned(),
            depends_on: Vec::new(),
        }],
    })
}

/// Lands the executed steps on the files as they are on disk now (a file edited meanwhile
/// takes the steps whose symbols it still holds) and writes them: all files or none
/// ([`disk::write_all`]: every file is checked before the first is written, each write is
/// atomic and refused if the file changed after the check, and a failed write restores the
/// files already written). For `tierls plan --apply`, with no editor.
pub fn apply_on_disk(
    snapshot: &Snapshot,
    plan: &Plan,
    execution: &Execution,
) -> Result<Landing, Vec<(String, WriteError)>> {
    let current: BTreeMap<String, Option<String>> = snapshot
        .current_files(plan.files())
        .into_iter()
        .map(|(file, current)| (file, current.text))
        .collect();
    let landing = land(plan, &execution.edits, &current);
    let writes: Vec<disk::FileWrite<'_>> = landing
        .files
        .iter()
        .map(|file| disk::FileWrite {
            relative: &file.file,
            expected: file.base.as_deref(),
            text: &file.text,
        })
        .collect();
    let root = snapshot.root().map(ToOwned::to_owned).unwrap_or_default();
    disk::write_all(&root, &writes, snapshot.max_read_bytes())?;
    Ok(landing)
}

/// Runs blocking work (disk reads) on tokio's blocking threads.
async fn off_runtime<T: Send + Default + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap_or_default()
}
