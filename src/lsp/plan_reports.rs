//! Convert out: a plan or an executed plan as the `tierls.planRefactor` /
//! `tierls.executePlan` results and the one-line summaries the user sees.

use super::ext::{
    CheckReport, ExecuteResult, ExecutedStepReport, PlanResult, PlanStepReport, StepReason,
};
use crate::core::plan::Plan;
use crate::core::plan::land::Landing;
use crate::core::plan::repair::{Rounds, render_rounds};
use crate::refactor::{Execution, Planned, StepOutcome};
use tower_lsp::lsp_types::Url;

pub(super) const CANCELLED: &str = "cancelled: nothing changed";
pub(super) const NOTHING_TO_CHANGE: &str = "nothing to change: no step changed a file";

/// "plan 3 is ready: 4 steps, 1 cannot run; …"
pub(super) fn plan_ready(id: u32, plan: &Plan) -> String {
    let rejected = match plan.rejected.len() {
        0 => String::new(),
        count => format!(", {count} cannot run"),
    };
    let steps = match plan.steps.len() {
        1 => "1 step".to_owned(),
        count => format!("{count} steps"),
    };
    format!("plan {id} is ready: {steps}{rejected}; execute or discard it from the code actions")
}

pub(super) fn plan_result(
    id: u32,
    document: String,
    document_uri: Option<Url>,
    planned: &Planned,
) -> PlanResult {
    let plan = &planned.plan;
    PlanResult {
        plan_id: id,
        document,
        document_uri,
        planner_tokens: planned.usage.generated_tokens,
        steps: plan
            .steps
            .iter()
            .map(|step| PlanStepReport {
                id: step.id,
                file: step.file.clone(),
                target: step.target.clone(),
                action: step.action.name().to_owned(),
                instruction: step.instruction.clone(),
                depends_on: step.depends_on.clone(),
            })
            .collect(),
        rejected: plan
            .rejected
            .iter()
            .map(|rejected| StepReason {
                id: rejected.id,
                reason: rejected.reason.clone(),
            })
            .collect(),
    }
}

pub(super) fn executed_steps(execution: &Execution) -> Vec<ExecutedStepReport> {
    execution
        .reports
        .iter()
        .map(|report| ExecutedStepReport {
            id: report.step,
            outcome: outcome_text(&report.outcome),
            answers: report.attempts,
            tokens: report.generated_tokens,
        })
        .collect()
}

/// The user cancelled: nothing was sent to the editor.
pub(super) fn cancelled(id: u32, steps: Vec<ExecutedStepReport>) -> ExecuteResult {
    ExecuteResult {
        plan_id: id,
        applied: false,
        cancelled: Some(true),
        reason: None,
        files: None,
        steps,
        refused: None,
        check: None,
        planned_by: None,
    }
}

/// The steps ran and no file changed.
pub(super) fn nothing_to_change(
    id: u32,
    steps: Vec<ExecutedStepReport>,
    landing: &Landing,
) -> ExecuteResult {
    ExecuteResult {
        plan_id: id,
        applied: false,
        cancelled: None,
        reason: Some(Some(NOTHING_TO_CHANGE.to_owned())),
        files: None,
        steps,
        refused: Some(refused(landing)),
        check: None,
        planned_by: None,
    }
}

/// The editor's answer to the `workspace/applyEdit` of the landing.
pub(super) struct Applied {
    pub applied: bool,
    pub reason: Option<String>,
}

/// "plan 3: 4 of 5 steps applied to a.rs, b.rs" or why the editor did not apply it.
pub(super) fn applied_summary(id: u32, plan: &Plan, landing: &Landing, answer: &Applied) -> String {
    if answer.applied {
        format!(
            "plan {id}: {} of {} steps applied to {}",
            landing.landed.len(),
            plan.steps.len(),
            files(landing).join(", ")
        )
    } else {
        let reason = answer
            .reason
            .as_ref()
            .map(|reason| format!(": {reason}"))
            .unwrap_or_default();
        format!("plan {id}: the editor did not apply the edit{reason}")
    }
}

pub(super) fn applied(
    id: u32,
    steps: Vec<ExecutedStepReport>,
    landing: &Landing,
    answer: Applied,
) -> ExecuteResult {
    ExecuteResult {
        plan_id: id,
        applied: answer.applied,
        cancelled: None,
        reason: Some(answer.reason),
        files: Some(files(landing)),
        steps,
        refused: Some(refused(landing)),
        check: None,
        planned_by: None,
    }
}

fn files(landing: &Landing) -> Vec<String> {
    landing.files.iter().map(|file| file.file.clone()).collect()
}

fn refused(landing: &Landing) -> Vec<StepReason> {
    landing
        .refused
        .iter()
        .map(|(step, reason)| StepReason {
            id: *step,
            reason: reason.clone(),
        })
        .collect()
}

pub(super) fn outcome_text(outcome: &StepOutcome) -> String {
    match outcome {
        StepOutcome::Done => "done".into(),
        StepOutcome::Failed(reason) => format!("failed: {reason}"),
        StepOutcome::Skipped(reason) => format!("skipped: {reason}"),
        StepOutcome::Cancelled => "cancelled".into(),
    }
}

/// The check loop as `tierls.executePlan` reports it.
pub(super) fn check_report(rounds: &Rounds) -> CheckReport {
    CheckReport {
        command: rounds.command.clone(),
        holds: rounds.holds(),
        rounds: rounds.rounds.len() as u32,
        stopped: rounds.end.describe(),
        failing: rounds
            .failing()
            .iter()
            .map(|(failure, _)| format!("{}:{}: {}", failure.file, failure.line, failure.message))
            .collect(),
        document: render_rounds(rounds),
    }
}

/// "the check `cargo check` still fails after 3 rounds (…)": the confirmation's label.
pub(super) fn check_fails(rounds: &Rounds) -> String {
    format!(
        "`{}` still fails on this change after {} rounds ({} new failures; stopped at {})",
        rounds.command,
        rounds.rounds.len(),
        rounds.failing().len(),
        rounds.end.describe()
    )
}
