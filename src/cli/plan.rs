//! `tierls plan "instruction"`: the plan flow without an editor. Prints the plan and a
//! unified diff; `--apply` writes the files (all or none).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::index::scan_configured;
use super::output;
use crate::config::CONFIG_FILE_NAME;
use crate::core::plan::context::Focus;
use crate::core::plan::diff::unified;
use crate::core::plan::render::render_plan;
use crate::core::plan::repair::{RoundKind, Rounds, render_rounds};
use crate::core::route::TierState;
use crate::models::Cancel;
use crate::models::tiers::TierSet;
use crate::refactor::driver::{
    Driver, DriverError, Executed, OnStage, PlanRequest, Stage, Team, apply_on_disk,
};
use crate::refactor::rounds::RoundsRequest;
use crate::refactor::{ExecuteOptions, Execution, Progress, StepOutcome};
use crate::sync::lock;
use crate::workspace::Shared;

pub struct PlanArgs {
    pub instruction: String,
    pub workspace: Option<PathBuf>,
    pub focus: Vec<String>,
    pub apply: bool,
    /// Write even when `plan.check` fails on the result.
    pub apply_failing: bool,
}

pub fn run(args: PlanArgs) -> ExitCode {
    let Some(runtime) = super::runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(plan(args)) {
        Ok(code) => code,
        Err(message) => {
            output::error(&message);
            ExitCode::from(2)
        }
    }
}

/// `PATH` or `PATH:SYMBOL` (the symbol's qualified path may itself hold `::`).
pub(super) fn parse_focus(text: &str) -> Focus {
    match text.split_once(':') {
        Some((file, symbol)) if !symbol.is_empty() => Focus::Symbol {
            file: file.to_owned(),
            path: symbol.to_owned(),
        },
        _ => Focus::File(text.trim_end_matches(':').to_owned()),
    }
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// The workspace's root and configuration for a refactor command, after checking that
/// the instruction says something.
pub(super) fn refactor_workspace(
    workspace: Option<PathBuf>,
    instruction: &str,
) -> Result<(PathBuf, crate::config::Config), String> {
    let workspace = workspace.unwrap_or_else(|| PathBuf::from("."));
    let root = workspace
        .canonicalize()
        .map_err(|err| format!("{}: {err}", workspace.display()))?;
    if instruction.trim().is_empty() {
        return Err("the instruction is empty: say what to change".into());
    }
    let config = super::workspace_config(&root)
        .map_err(|errors| errors.first().map(ToString::to_string).unwrap_or_default())?;
    Ok((root, config))
}

async fn plan(args: PlanArgs) -> Result<ExitCode, String> {
    let (root, config) = refactor_workspace(args.workspace.clone(), &args.instruction)?;
    let scanned = scan_configured(&root, &config);
    let workspace = Shared::new(scanned);

    super::pull::fetch_configured(&config.tiers).await;
    let tiers = TierSet::new(crate::models::machine::detect());
    for (tier, problem) in tiers.configure_all(&config.tiers, Some(&root)) {
        output::error(&format!("the {tier} tier: {problem}"));
    }
    // Worker nodes serve the tiers they name; the router lives as long as the plan.
    let (_router, notes) = crate::models::router::serve_nodes(&tiers, &config.nodes).await;
    for note in notes {
        output::error(&note);
    }
    let display = Display::default();
    let driver = Driver::new(workspace.clone(), Team::Tiers(tiers))
        .routing(config.routing.clone(), Default::default())
        .on_stage(display.on_stage());
    let request = PlanRequest {
        instruction: args.instruction.clone(),
        focus: args.focus.iter().map(|text| parse_focus(text)).collect(),
        map_tokens: config.plan.map_tokens as usize,
        reference_tokens: config.plan.reference_tokens as usize,
        max_fan_out: config.plan.max_fan_out as usize,
        planner_time: Duration::from_secs(config.plan.planner_seconds.into()),
    };
    let cancel = Cancel::new();
    let planned = driver.plan(&request, cancel.clone()).await;
    display.clear();
    let states = super::route::configured_states(&config);
    let none_configured =
        states.planner == TierState::ABSENT && states.executor == TierState::ABSENT;
    let (_, planned) = planned.map_err(|err| match err {
        DriverError::NoPlanner(_) if none_configured => format!(
            "no model is configured to plan: set `tiers.planner.model` or `tiers.executor.model` in {}",
            root.join(CONFIG_FILE_NAME).display()
        ),
        err => err.to_string(),
    })?;
    let plan = planned.plan;
    output::line(&render_plan(&plan));
    if !planned.answer.is_empty() {
        output::line(&format!(
            "(the planner wrote {} tokens)",
            planned.usage.generated_tokens
        ));
    }
    if plan.steps.is_empty() {
        return Ok(ExitCode::FAILURE);
    }

    display.expect_steps(plan.steps.len());
    let options =
        |executor: &dyn crate::models::Model| ExecuteOptions::from_config(&config.plan, executor);
    let rounds = RoundsRequest::from_config(&config.plan);
    let executed = match &rounds {
        Some(rounds) => driver.execute_checked(&plan, options, rounds, cancel).await,
        None => driver.execute(&plan, options, cancel).await,
    };
    display.clear();
    let Executed {
        plan,
        execution,
        landing,
        rounds,
        ..
    } = executed.map_err(|err| err.to_string())?;
    describe_execution(&execution);
    for (step, reason) in &landing.refused {
        output::line(&format!("step {step}: refused: {reason}"));
    }
    for file in &landing.files {
        output::line(unified(&file.file, file.base.as_deref(), &file.text).trim_end());
    }
    let complete = landing.refused.is_empty()
        && execution
            .reports
            .iter()
            .all(|report| report.outcome == StepOutcome::Done);
    if let Some(rounds) = &rounds {
        output::line(render_rounds(rounds).trim_end());
    }
    let check_holds = rounds.as_ref().is_none_or(Rounds::holds);
    if args.apply && !check_holds && !args.apply_failing {
        output::error(
            "nothing was written: the check fails on the change (--apply-failing writes it anyway)",
        );
        return Ok(ExitCode::FAILURE);
    }
    if !args.apply {
        output::line("(dry run: nothing was written; --apply writes the files)");
    } else if landing.files.is_empty() {
        output::line("nothing to write");
    } else {
        let snapshot = workspace.snapshot();
        let applied =
            tokio::task::spawn_blocking(move || apply_on_disk(&snapshot, &plan, &execution))
                .await
                .map_err(|err| err.to_string())?;
        match applied {
            Ok(applied) => {
                for file in &applied.files {
                    output::line(&format!("wrote {}", file.file));
                }
            }
            Err(problems) => {
                // Each problem names its file.
                for (_, problem) in problems {
                    output::error(&problem.to_string());
                }
                output::error("nothing was written: the change lands all or none");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(if complete && check_holds {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The driver's stages on stderr: a spinner while a model loads or plans, a bar over the
/// steps.
#[derive(Clone, Default)]
struct Display {
    bar: Arc<Mutex<Option<ProgressBar>>>,
}

impl Display {
    fn show(&self, bar: ProgressBar) {
        if let Some(old) = lock(&self.bar).replace(bar) {
            old.finish_and_clear();
        }
    }

    fn clear(&self) {
        if let Some(old) = lock(&self.bar).take() {
            old.finish_and_clear();
        }
    }

    fn expect_steps(&self, steps: usize) {
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps ({elapsed}) {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message("loading the executor");
        self.show(bar);
    }

    fn on_stage(&self) -> OnStage {
        let display = self.clone();
        Arc::new(move |stage| match stage {
            Stage::LoadingPlanner => display.show(spinner("loading the planner")),
            Stage::Planning { tier } => {
                display.show(spinner(&format!("planning with the {tier} tier")))
            }
            Stage::Checking => display.show(spinner("checking the plan")),
            Stage::LoadingExecutor => {}
            Stage::Round { number: 1, .. } => {}
            Stage::Round { number, kind, jobs } => {
                let who = match kind {
                    RoundKind::Revision => "steps the planner added",
                    _ => "repairs",
                };
                display.expect_steps(jobs);
                if let Some(bar) = lock(&display.bar).as_ref() {
                    bar.set_message(format!("round {number}: {who}"));
                }
            }
            Stage::RunningCheck { round } => {
                display.show(spinner(&format!("round {round}: running the check")))
            }
            Stage::Revising => display.show(spinner("the planner revises the plan")),
            Stage::Step(event) => {
                if let Some(bar) = lock(&display.bar).as_ref() {
                    match event {
                        Progress::Started { step, attempt } => {
                            bar.set_message(format!("step {step}, answer {attempt}"))
                        }
                        Progress::Finished { .. } => bar.inc(1),
                    }
                }
            }
        })
    }
}

fn describe_execution(execution: &Execution) {
    for report in &execution.reports {
        let outcome = match &report.outcome {
            StepOutcome::Done => "done".to_owned(),
            StepOutcome::Failed(reason) => format!("failed: {reason}"),
            StepOutcome::Skipped(reason) => format!("skipped: {reason}"),
            StepOutcome::Cancelled => "cancelled".to_owned(),
        };
        let answers = if report.attempts == 1 {
            "answer"
        } else {
            "answers"
        };
        output::line(&format!(
            "step {}: {outcome} ({} {answers}, {} tokens)",
            report.step, report.attempts, report.generated_tokens
        ));
    }
}
