//! The check-and-repair loop: the plan's steps run and land, `plan.check` runs on a
//! scratch copy, and what it reports goes back to the executors as repair jobs (one per
//! failing symbol), then, if repairs do not converge, to the planner with the diff so far;
//! until the check holds or a limit stops it ([`next_round`] decides, and says why).
//!
//! Every round lands the whole plan so far (its steps, then each round's) on the files as
//! they are now, so the check always sees the user's latest text, and the result is one
//! landing: nothing is offered to the editor while a round runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::check::{CheckRun, CheckSpec, CheckStatus, cargo_target_for, run_check};
use super::driver::{Driver, DriverError, Executed, Stage};
use super::team::StepTeam;
use super::workspace::{PlanFacts, definitions_for};
use super::{ExecuteOptions, Execution, ask_planner, execute};
use crate::core::index::language::Language;
use crate::core::plan::diff::unified;
use crate::core::plan::failures::{Failure, new_failures, symbol_at_line};
use crate::core::plan::land::Landing;
use crate::core::plan::repair::{
    Located, LoopEnd, LoopState, NextRound, Round, RoundKind, Rounds, next_round,
    renumber_revision, repair_steps, revision_input,
};
use crate::core::plan::{Plan, fan_out, validate};
use crate::models::{Cancel, Model};
use crate::workspace::Snapshot;

/// How the loop runs: the check, and its limits.
#[derive(Clone, Debug)]
pub struct RoundsRequest {
    pub spec: CheckSpec,
    /// Repair rounds by the executors before the planner revises (`plan.max_rounds`).
    pub max_rounds: u32,
    /// All rounds together, checks included (`plan.repair_seconds`); a running check or
    /// step is bounded by its own limit.
    pub time_limit: Duration,
    /// The most jobs in one repair round (`plan.max_fan_out`).
    pub max_jobs: usize,
    /// The planner's revision must arrive within this (`plan.planner_seconds`).
    pub planner_time: Duration,
}

impl Driver {
    /// Runs `plan`, then checks and repairs it round by round. The result holds every
    /// round's steps (`Executed::plan`), landed together, and what each check said.
    pub async fn execute_checked(
        &self,
        plan: &Plan,
        options: impl FnOnce(&dyn Model) -> ExecuteOptions,
        request: &RoundsRequest,
        cancel: Cancel,
    ) -> Result<Executed, DriverError> {
        let started = Instant::now();
        let command = request.spec.command.clone();
        let mut spec = request.spec.clone();
        spec.cancel = Some(cancel.clone());
        let (executor, lead) = self.executor(cancel.clone()).await?;
        let options = options(lead.as_ref());
        (self.on_stage)(Stage::Round {
            number: 1,
            kind: RoundKind::Plan,
            jobs: plan.steps.len(),
        });
        let files = self.texts_now(plan).await;
        let mut execution = self
            .run_round(plan, executor.clone(), files, options, cancel.clone())
            .await;
        let mut whole = plan.clone();
        let mut executed = self.land_now(&whole, &execution).await;
        if execution.cancelled || executed.landing.files.is_empty() {
            return Ok(executed);
        }
        (self.on_stage)(Stage::RunningCheck { round: 1 });
        let before_files: BTreeMap<String, Option<String>> = executed
            .landing
            .files
            .iter()
            .map(|file| (file.file.clone(), file.base.clone()))
            .collect();
        let before = self.run_check(before_files, spec.clone()).await?;
        let failed_before = before.status != CheckStatus::Passed;
        let mut rounds = Rounds {
            command: command.clone(),
            before: before.verdict(),
            failed_before,
            rounds: Vec::new(),
            end: LoopEnd::Cancelled,
            unreachable: Vec::new(),
            revision_note: None,
        };
        let mut round = Round {
            number: 1,
            kind: RoundKind::Plan,
            jobs: plan.steps.iter().map(|step| step.id).collect(),
            landed: executed.landing.landed.len(),
            verdict: String::new(),
            seconds: 0.0,
            failures: Vec::new(),
        };
        let mut repairs_run = 0;
        let mut revised = false;
        let mut last_count = usize::MAX;
        loop {
            let round_started = Instant::now();
            let (after, located, texts) = self
                .check_landing(&executed.landing, &before, spec.clone())
                .await?;
            round.verdict = after.verdict();
            round.seconds = round_started.elapsed().as_secs_f64();
            round.failures = located.clone();
            let progressing = located.len() < last_count;
            last_count = located.len();
            let repairs = repair_steps(
                &whole,
                &located,
                &texts,
                &command,
                next_id(&whole),
                request.max_jobs,
            );
            rounds.unreachable = repairs.left.clone();
            rounds.rounds.push(round.clone());
            let elapsed = started.elapsed();
            let state = LoopState {
                holds: after.status == CheckStatus::Passed
                    || (failed_before
                        && after.status != CheckStatus::TimedOut
                        && located.is_empty()),
                check_timed_out: after.status == CheckStatus::TimedOut,
                cannot_run: matches!(
                    after.status,
                    CheckStatus::Failed {
                        code: Some(126 | 127)
                    }
                )
                .then(|| after.verdict()),
                cancelled: cancel.is_cancelled() || after.status == CheckStatus::Cancelled,
                out_of_time: (elapsed >= request.time_limit)
                    .then_some(request.time_limit.as_secs()),
                repairs_run,
                max_rounds: request.max_rounds,
                can_revise: !revised,
                progressing,
                repairable: !repairs.steps.is_empty(),
            };
            let (kind, mut round_plan) = match next_round(&state, failed_before) {
                NextRound::Stop(end) => {
                    rounds.end = end;
                    break;
                }
                NextRound::Repair => {
                    repairs_run += 1;
                    let summary = format!(
                        "Repairs for \"{}\": fix what `{command}` reports.",
                        whole.summary.trim()
                    );
                    let round_plan = Plan {
                        instruction: whole.instruction.clone(),
                        summary,
                        steps: repairs.steps,
                        ..Plan::default()
                    };
                    (RoundKind::Repair, round_plan)
                }
                NextRound::Revise => {
                    revised = true;
                    (self.on_stage)(Stage::Revising);
                    match self
                        .revise(
                            &whole,
                            &executed.landing,
                            &located,
                            &texts,
                            request,
                            &cancel,
                        )
                        .await
                    {
                        Ok(revision) if !revision.steps.is_empty() => {
                            (RoundKind::Revision, revision)
                        }
                        Ok(revision) => {
                            let refused: Vec<String> = revision
                                .rejected
                                .iter()
                                .map(|rejected| rejected.reason.clone())
                                .collect();
                            rounds.revision_note = Some(match refused.is_empty() {
                                true => "it added no step".to_owned(),
                                false => format!("no step can run: {}", refused.join("; ")),
                            });
                            rounds.end = stop_after_revision(&state);
                            break;
                        }
                        Err(err) => {
                            tracing::warn!("the planner could not revise the plan: {err}");
                            rounds.revision_note = Some(err.to_string());
                            rounds.end = stop_after_revision(&state);
                            break;
                        }
                    }
                }
            };
            let number = round.number + 1;
            (self.on_stage)(Stage::Round {
                number,
                kind,
                jobs: round_plan.steps.len(),
            });
            // The whole plan keeps each job's owners (landing refuses a repair whose owner
            // it refused); within the round, only its own steps come first.
            whole.steps.extend(round_plan.steps.iter().cloned());
            whole.fan_outs.extend(round_plan.fan_outs.iter().cloned());
            let ids: Vec<u32> = round_plan.steps.iter().map(|step| step.id).collect();
            for step in &mut round_plan.steps {
                step.depends_on.retain(|dep| ids.contains(dep));
            }
            let files = working_texts(&round_plan, &executed.landing, &texts, self).await;
            let more = self
                .run_round(
                    &round_plan,
                    executor.clone(),
                    files,
                    options,
                    cancel.clone(),
                )
                .await;
            execution.reports.extend(more.reports);
            execution.edits.extend(more.edits);
            execution.cancelled |= more.cancelled;
            executed = self.land_now(&whole, &execution).await;
            round = Round {
                number,
                kind,
                landed: ids
                    .iter()
                    .filter(|id| executed.landing.landed.contains(id))
                    .count(),
                jobs: ids,
                verdict: String::new(),
                seconds: 0.0,
                failures: Vec::new(),
            };
            if execution.cancelled {
                rounds.rounds.push(round);
                rounds.end = LoopEnd::Cancelled;
                break;
            }
            (self.on_stage)(Stage::RunningCheck { round: number });
        }
        executed.rounds = Some(rounds);
        Ok(executed)
    }

    /// Runs one round's steps on `files` (each file the round touches, as the plan so far
    /// left it).
    pub(super) async fn run_round(
        &self,
        round: &Plan,
        executor: Arc<StepTeam>,
        files: BTreeMap<String, Option<String>>,
        options: ExecuteOptions,
        cancel: Cancel,
    ) -> Execution {
        let definitions = definitions_for(round, self.workspace.lock().index(), &files);
        let on_stage = self.on_stage.clone();
        execute(
            round.clone(),
            executor,
            files,
            definitions,
            options,
            cancel,
            Arc::new(move |event| on_stage(Stage::Step(event))),
        )
        .await
    }

    /// Each file `plan` touches, as the editor or the disk holds it now.
    pub(super) async fn texts_now(&self, plan: &Plan) -> BTreeMap<String, Option<String>> {
        let snapshot = self.workspace.snapshot();
        let files: Vec<String> = plan.files().into_iter().map(ToOwned::to_owned).collect();
        tokio::task::spawn_blocking(move || {
            snapshot
                .current_files(files.iter().map(String::as_str))
                .into_iter()
                .map(|(file, current)| (file, current.text))
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Runs the check with `changed` over the workspace, off the runtime.
    pub(super) async fn run_check(
        &self,
        changed: BTreeMap<String, Option<String>>,
        spec: CheckSpec,
    ) -> Result<CheckRun, DriverError> {
        let root = self
            .workspace
            .snapshot()
            .root()
            .map(ToOwned::to_owned)
            .ok_or_else(|| DriverError::Checking("the workspace has no root".into()))?;
        let run = tokio::task::spawn_blocking(move || {
            let target = cargo_target_for(&root);
            run_check(&root, &changed, &spec, target.as_deref())
        })
        .await
        .map_err(|err| DriverError::Checking(err.to_string()))??;
        Ok(run)
    }

    /// The check on the landing, its failures that `before` did not have (each with its
    /// symbol), and the texts those failures are in.
    async fn check_landing(
        &self,
        landing: &Landing,
        before: &CheckRun,
        spec: CheckSpec,
    ) -> Result<(CheckRun, Vec<Located>, BTreeMap<String, Option<String>>), DriverError> {
        let changed: BTreeMap<String, Option<String>> = landing
            .files
            .iter()
            .map(|file| (file.file.clone(), Some(file.text.clone())))
            .collect();
        let after = self.run_check(changed.clone(), spec).await?;
        let fresh = new_failures(&before.failures, &after.failures);
        let snapshot = self.workspace.snapshot();
        let (located, texts) =
            tokio::task::spawn_blocking(move || locate_failures(&snapshot, changed, fresh))
                .await
                .map_err(|err| DriverError::Checking(err.to_string()))?;
        Ok((after, located, texts))
    }

    /// The planner's revision: steps that fix what the check reports, checked against the
    /// files as the plan left them, numbered after the plan's.
    async fn revise(
        &self,
        whole: &Plan,
        landing: &Landing,
        failures: &[Located],
        texts: &BTreeMap<String, Option<String>>,
        request: &RoundsRequest,
        cancel: &Cancel,
    ) -> Result<Plan, DriverError> {
        let diff: String = landing
            .files
            .iter()
            .map(|file| unified(&file.file, file.base.as_deref(), &file.text))
            .collect();
        let input = revision_input(whole, &diff, failures, texts, &request.spec.command);
        let (model, _, lease) = self.planner(cancel.clone()).await?;
        let answer =
            ask_planner(model.as_ref(), &input, request.planner_time, cancel.clone()).await;
        drop(model);
        let _ = tokio::task::spawn_blocking(move || drop(lease)).await;
        let answer = answer?;
        let root = self
            .workspace
            .snapshot()
            .root()
            .map(ToOwned::to_owned)
            .unwrap_or_default();
        let facts = PlanFacts::from_texts(&root, texts);
        let instruction = input.instruction.clone();
        let mut revision =
            tokio::task::spawn_blocking(move || validate(&instruction, &answer.raw, &facts))
                .await
                .map_err(|err| DriverError::Checking(err.to_string()))?;
        revision.instruction = whole.instruction.clone();
        revision.summary = format!("Revision: {}", revision.summary.trim());
        // The revision's uses are where the plan left them: the changed files are parsed
        // off the runtime, and only the expansion runs under the lock.
        let changed = texts.clone();
        let overlay = tokio::task::spawn_blocking(move || fan_out::Overlay::of(&changed))
            .await
            .map_err(|err| DriverError::Checking(err.to_string()))?;
        fan_out::expand_over(
            &mut revision,
            overlay.over(self.workspace.lock().index()),
            request.max_jobs,
        );
        renumber_revision(whole, &mut revision, next_id(whole) - 1);
        Ok(revision)
    }
}

/// Why the loop ends when the planner's revision gave nothing to run.
fn stop_after_revision(state: &LoopState) -> LoopEnd {
    let after = LoopState {
        can_revise: false,
        ..state.clone()
    };
    match next_round(&after, false) {
        NextRound::Stop(end) => end,
        // Repairs could still run, but they were not progressing: that is why it revised.
        _ => LoopEnd::NoProgress,
    }
}

/// The first id after every step and fan-out of `plan`.
fn next_id(plan: &Plan) -> u32 {
    let steps = plan.steps.iter().map(|step| step.id);
    let fan_outs = plan.fan_outs.iter().map(|fan_out| fan_out.step);
    steps.chain(fan_outs).max().unwrap_or(0) + 1
}

/// Each failure with the symbol it is in, in the text the check saw (the plan's where it
/// changed the file, else the workspace's); and those texts.
pub(super) fn locate_failures(
    snapshot: &Snapshot,
    changed: BTreeMap<String, Option<String>>,
    failures: Vec<Failure>,
) -> (Vec<Located>, BTreeMap<String, Option<String>>) {
    let mut texts = changed;
    let mut located = Vec::new();
    for failure in failures {
        let text = texts
            .entry(failure.file.clone())
            .or_insert_with(|| {
                snapshot
                    .text(&failure.file)
                    .ok()
                    .map(|text| text.rope().to_string())
            })
            .clone();
        let symbol = Language::from_path(&failure.file)
            .zip(text)
            .and_then(|(language, text)| symbol_at_line(language, &text, failure.line));
        located.push((failure, symbol));
    }
    (located, texts)
}

/// The texts a round's steps start from: as the plan so far left each file.
async fn working_texts(
    round: &Plan,
    landing: &Landing,
    texts: &BTreeMap<String, Option<String>>,
    driver: &Driver,
) -> BTreeMap<String, Option<String>> {
    let mut files = driver.texts_now(round).await;
    for (file, text) in &mut files {
        if let Some(landed) = landing.files.iter().find(|landed| &landed.file == file) {
            *text = Some(landed.text.clone());
        } else if let Some(Some(seen)) = texts.get(file) {
            *text = Some(seen.clone());
        }
    }
    files
}

/// The most output of one check run kept for the report and the parser (its last bytes).
pub const CHECK_OUTPUT_BYTES: usize = 256 * 1024;

impl RoundsRequest {
    /// The loop the configuration asks for: `None` when `plan.check` is not set.
    pub fn from_config(config: &crate::config::PlanConfig) -> Option<RoundsRequest> {
        let command = config.check.clone()?;
        Some(RoundsRequest {
            spec: CheckSpec {
                command,
                time_limit: Duration::from_secs(config.check_seconds.into()),
                output_cap: CHECK_OUTPUT_BYTES,
                cancel: None,
                links: config.check_links.clone(),
            },
            max_rounds: config.max_rounds,
            time_limit: Duration::from_secs(config.repair_seconds.into()),
            max_jobs: config.max_fan_out as usize,
            planner_time: Duration::from_secs(config.planner_seconds.into()),
        })
    }
}
