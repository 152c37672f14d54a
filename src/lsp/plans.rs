//! "Plan this refactor" in the editor: the code actions, and the `tierls.planRefactor` /
//! `executePlan` / `discardPlan` commands. This module parses their arguments, shows the
//! driver's stages as `$/progress`, and turns a landing into one `WorkspaceEdit`; the plan
//! flow itself is `crate::refactor::driver`'s.
//!
//! No lock is held across an `.await`: the planner and the executors run while the user
//! goes on typing, and the edit is computed against the documents as they are when the
//! steps are done.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::mpsc;
use tower_lsp::Client;
use tower_lsp::jsonrpc::{Error, Result};
use tower_lsp::lsp_types::*;

use super::convert::{self, ClientFeatures};
use super::ext::{
    DISCARD_PLAN, DiscardResult, EXECUTE_PLAN, ExecuteResult, ExecutedStepReport, PLAN_REFACTOR,
    PlanArguments, PlanIdArguments, PlanResult, PlanStepReport, StepReason, checked_argument,
};
use super::plan_edit::workspace_edit;
use super::progress::{CancelOnDrop, Reporter, WorkProgress};
use super::request_failed;
use super::session::Session;
use crate::core::index::language::Language;
use crate::core::plan::comment::instruction_comment;
use crate::core::plan::context::Focus;
use crate::core::plan::land::Landing;
use crate::core::plan::render::render_plan;
use crate::core::position::byte_range_of;
use crate::models::Cancel;
use crate::models::tiers::TierSet;
use crate::refactor::driver::{Driver, DriverError, PlanRequest, Stage, Team};
use crate::refactor::{ExecuteOptions, PlanError, Progress, StepOutcome};
use crate::sync::lock;
use crate::workspace::{self, Workspace};

/// What a plan command needs of the server.
pub struct PlanContext {
    pub client: Client,
    pub session: Arc<Mutex<Session>>,
    pub workspace: workspace::Shared,
    pub tiers: Option<Arc<TierSet>>,
    pub features: ClientFeatures,
}

impl PlanContext {
    fn session(&self) -> MutexGuard<'_, Session> {
        lock(&self.session)
    }

    fn driver(&self, progress: &Reporter, stages: Stages) -> Result<(Driver, Forwarder)> {
        let tiers = self.tiers.clone().ok_or_else(|| {
            request_failed("the models are not set up yet: wait for `initialized`")
        })?;
        let (send, received) = mpsc::unbounded_channel();
        let forwarder = tokio::spawn(forward_stages(progress.clone(), received, stages));
        let driver = Driver::new(self.workspace.clone(), Team::Tiers(tiers)).on_stage(Arc::new(
            move |stage| {
                let _ = send.send(stage);
            },
        ));
        Ok((driver, forwarder))
    }

    async fn progress(
        &self,
        token: Option<NumberOrString>,
        name: &str,
        title: &str,
        cancel: &Cancel,
    ) -> WorkProgress {
        let supported = self.features.work_done_progress;
        WorkProgress::start(
            &self.client,
            &self.session,
            supported,
            token,
            name,
            title,
            cancel,
        )
        .await
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_params(message.into())
}

// ---------------------------------------------------------------------------------------
// Code actions

/// The plan actions at `range` of `key`.
pub fn code_actions(
    workspace: &Workspace,
    pending: &[(u32, String)],
    uri: &Url,
    key: &str,
    range: Range,
) -> Vec<CodeActionOrCommand> {
    let mut actions = Vec::new();
    let action = |title: String, command: &str, arguments: Value| {
        CodeActionOrCommand::CodeAction(CodeAction {
            title: title.clone(),
            kind: Some(CodeActionKind::REFACTOR),
            command: Some(Command {
                title,
                command: command.to_owned(),
                arguments: Some(vec![arguments]),
            }),
            ..CodeAction::default()
        })
    };
    let plan_arguments = |range: Range, instruction: Option<String>| {
        serde_json::to_value(PlanArguments {
            uri: uri.clone(),
            range: Some(range),
            instruction,
        })
        .unwrap_or_default()
    };
    let id_arguments =
        |plan_id: u32| serde_json::to_value(PlanIdArguments { plan_id }).unwrap_or_default();
    if let Some(document) = workspace.document(key) {
        let language =
            Language::from_lsp_id(document.language_id()).or_else(|| Language::from_path(key));
        let (first, last) = (range.start.line as usize, range.end.line as usize);
        if let Some((instruction, line)) =
            instruction_comment(document.text(), language, first, last)
        {
            // The comment's line is the focus: the symbol around it, or the one right below.
            let line = line as u32;
            let comment_line = Range::new(Position::new(line, 0), Position::new(line + 1, 0));
            actions.push(action(
                format!("tierls: Plan: {}", shorten(&instruction)),
                PLAN_REFACTOR,
                plan_arguments(comment_line, Some(instruction)),
            ));
        }
    }
    actions.push(action(
        "tierls: Plan refactor…".to_owned(),
        PLAN_REFACTOR,
        plan_arguments(range, None),
    ));
    for (id, instruction) in pending {
        let what = shorten(instruction);
        actions.push(action(
            format!("tierls: Execute plan {id}: {what}"),
            EXECUTE_PLAN,
            id_arguments(*id),
        ));
        actions.push(action(
            format!("tierls: Discard plan {id}: {what}"),
            DISCARD_PLAN,
            id_arguments(*id),
        ));
    }
    actions
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Progress from the driver's stages

type Forwarder = tokio::task::JoinHandle<()>;

/// How a command reports the driver's stages.
#[derive(Clone, Copy)]
enum Stages {
    Planning,
    Executing { steps: u32 },
}

async fn forward_stages(
    progress: Reporter,
    mut stages: mpsc::UnboundedReceiver<Stage>,
    shown: Stages,
) {
    let mut finished = 0;
    while let Some(stage) = stages.recv().await {
        let (message, percentage) = match (stage, shown) {
            (Stage::LoadingPlanner, _) => ("loading the planner".to_owned(), 5),
            (Stage::Planning { tier }, _) => (format!("the {tier} tier is planning"), 20),
            (Stage::Checking, _) => continue,
            (Stage::LoadingExecutor, _) => ("loading the executor".to_owned(), 0),
            (Stage::Step(event), Stages::Executing { steps }) => {
                let message = match event {
                    Progress::Started { step, attempt: 1 } => format!("step {step}"),
                    Progress::Started { step, attempt } => format!("step {step}, answer {attempt}"),
                    Progress::Finished { step, outcome } => {
                        finished += 1;
                        format!("step {step}: {}", outcome_text(&outcome))
                    }
                };
                (message, finished * 100 / steps.max(1))
            }
            (Stage::Step(_), Stages::Planning) => continue,
        };
        progress.report(message, Some(percentage)).await;
    }
}

/// Waits until every stage the driver reported is shown: the driver is dropped first.
async fn shown(driver: Driver, forwarder: Forwarder) {
    drop(driver);
    let _ = forwarder.await;
}

// ---------------------------------------------------------------------------------------
// Planning

fn one_argument<T: serde::de::DeserializeOwned>(command: &str, arguments: Vec<Value>) -> Result<T> {
    let [argument]: [Value; 1] = arguments.try_into().map_err(|arguments: Vec<Value>| {
        invalid(format!(
            "{command} takes one argument object, not {}",
            arguments.len()
        ))
    })?;
    checked_argument(argument).map_err(|err| invalid(format!("{command}: {err}")))
}

/// Each planning gets its own progress token: two may run at once.
static PLANNINGS: AtomicU32 = AtomicU32::new(0);

pub async fn plan_refactor(
    context: &PlanContext,
    arguments: Vec<Value>,
    token: Option<NumberOrString>,
) -> Result<PlanResult> {
    let arguments: PlanArguments = one_argument(PLAN_REFACTOR, arguments)?;
    let instruction = arguments.instruction.unwrap_or_default().trim().to_owned();
    if instruction.is_empty() {
        return Err(invalid(format!(
            "{PLAN_REFACTOR} needs an instruction: say what to change (editors ask for it; in Helix, write a `tierls: …` comment)"
        )));
    }
    context
        .tiers
        .as_ref()
        .ok_or_else(|| request_failed("the models are not set up yet: wait for `initialized`"))?;
    let focus = {
        let workspace = context.workspace.lock();
        let root = workspace.root().ok_or_else(|| {
            request_failed("plans need a workspace root, and the client sent none")
        })?;
        let key = convert::key(Some(root), &arguments.uri);
        if workspace::is_outside(&key) {
            return Err(invalid(format!(
                "{} is outside the workspace root",
                arguments.uri
            )));
        }
        let document = workspace
            .document(&key)
            .ok_or_else(|| invalid(format!("{} is not open: open it first", arguments.uri)))?;
        let range = match arguments.range {
            Some(range) => byte_range_of(
                document.text(),
                convert::range(range),
                context.features.encoding,
            )
            .map_err(|err| invalid(format!("{PLAN_REFACTOR}: the range: {err}")))?,
            None => 0..0,
        };
        Focus::Selection { file: key, range }
    };
    let request = {
        let config = &context.session().config.plan;
        PlanRequest {
            instruction: instruction.clone(),
            focus: vec![focus],
            map_tokens: config.map_tokens as usize,
            planner_time: std::time::Duration::from_secs(config.planner_seconds.into()),
        }
    };
    let cancel = Cancel::new();
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let number = PLANNINGS.fetch_add(1, Ordering::Relaxed) + 1;
    let name = format!("plan/{number}");
    let mut progress = context
        .progress(token, &name, "tierls: planning", &cancel)
        .await;
    let (driver, forwarder) = context.driver(&progress.reporter, Stages::Planning)?;
    let input = match driver.planner_input(&request).await {
        Ok(input) => input,
        Err(DriverError::Plan(PlanError::Focus(reason))) => {
            shown(driver, forwarder).await;
            progress.end(reason.clone()).await;
            return Err(invalid(reason));
        }
        Err(err) => {
            shown(driver, forwarder).await;
            progress.end(err.to_string()).await;
            return Err(request_failed(err.to_string()));
        }
    };
    let planned = driver.plan_with(input, &request, cancel.clone()).await;
    shown(driver, forwarder).await;
    let planned = match planned {
        Ok(planned) => planned,
        Err(err) => {
            let message = err.to_string();
            progress.end(message.clone()).await;
            return Err(request_failed(message));
        }
    };
    let plan = planned.plan;
    let id = context.session().plans.add(plan.clone());
    let document = render_plan(&plan);
    let shown_at = if context.features.show_document {
        show_plan_document(context, id, &document).await
    } else {
        None
    };
    let summary = format!(
        "plan {id} is ready: {} steps{}; execute or discard it from the code actions",
        plan.steps.len(),
        if plan.rejected.is_empty() {
            String::new()
        } else {
            format!(", {} cannot run", plan.rejected.len())
        }
    );
    progress.end(summary.clone()).await;
    context
        .client
        .show_message(MessageType::INFO, format!("tierls: {summary}"))
        .await;
    Ok(PlanResult {
        plan_id: id,
        document,
        document_uri: shown_at,
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
    })
}

/// Writes the plan where the editor can open it (tierls' cache folder, never the
/// workspace) and asks the editor to show it.
async fn show_plan_document(context: &PlanContext, id: u32, document: &str) -> Option<Url> {
    let folder = dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("tierls")
        .join("plans");
    let path = folder.join(format!("plan-{}-{id}.md", std::process::id()));
    let written = {
        let (folder, path, document) = (folder.clone(), path.clone(), document.to_owned());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&folder).and_then(|()| std::fs::write(&path, document))
        })
        .await
        .unwrap_or_else(|err| Err(std::io::Error::other(err.to_string())))
    };
    if let Err(err) = written {
        tracing::warn!(
            "could not write the plan document {}: {err}",
            path.display()
        );
        return None;
    }
    let uri = Url::from_file_path(&path).ok()?;
    let shown = context
        .client
        .show_document(ShowDocumentParams {
            uri: uri.clone(),
            external: Some(false),
            take_focus: Some(true),
            selection: None,
        })
        .await;
    if let Err(err) = shown {
        tracing::debug!("the client did not show the plan: {err}");
    }
    Some(uri)
}

pub fn discard_plan(context: &PlanContext, arguments: Vec<Value>) -> Result<DiscardResult> {
    let arguments: PlanIdArguments = one_argument(DISCARD_PLAN, arguments)?;
    let removed = context.session().plans.take(arguments.plan_id);
    match removed {
        Some(_) => Ok(DiscardResult {
            plan_id: arguments.plan_id,
            discarded: true,
        }),
        None => Err(no_such_plan(arguments.plan_id)),
    }
}

fn no_such_plan(id: u32) -> Error {
    invalid(format!(
        "there is no pending plan {id}: it ran, was discarded, or the server restarted"
    ))
}

// ---------------------------------------------------------------------------------------
// Executing

pub async fn execute_plan(
    context: &PlanContext,
    arguments: Vec<Value>,
    token: Option<NumberOrString>,
) -> Result<ExecuteResult> {
    let arguments: PlanIdArguments = one_argument(EXECUTE_PLAN, arguments)?;
    let id = arguments.plan_id;
    context
        .tiers
        .as_ref()
        .ok_or_else(|| request_failed("the models are not set up yet: wait for `initialized`"))?;
    // Taken out at once: a plan runs at most once.
    let (plan, plan_config) = {
        let mut session = context.session();
        let plan = session.plans.take(id).ok_or_else(|| no_such_plan(id))?;
        (plan, session.config.plan.clone())
    };
    if plan.steps.is_empty() {
        return Err(invalid(format!("plan {id} has no step that can run")));
    }
    let cancel = Cancel::new();
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let mut progress = context
        .progress(
            token,
            &format!("execute/{id}"),
            "tierls: executing the plan",
            &cancel,
        )
        .await;
    let steps = plan.steps.len() as u32;
    let (driver, forwarder) = context.driver(&progress.reporter, Stages::Executing { steps })?;
    let executed = driver
        .execute(
            &plan,
            |executor| ExecuteOptions::from_config(&plan_config, executor),
            cancel.clone(),
        )
        .await;
    shown(driver, forwarder).await;
    let executed = match executed {
        Ok(executed) => executed,
        Err(err) => {
            // Nothing ran: the plan waits again, to be executed once the executor is fixed.
            context.session().plans.put_back(id, plan);
            let message = format!("{err}; plan {id} is still waiting");
            progress.end(message.clone()).await;
            return Err(request_failed(message));
        }
    };
    let step_reports: Vec<ExecutedStepReport> = executed
        .execution
        .reports
        .iter()
        .map(|report| ExecutedStepReport {
            id: report.step,
            outcome: outcome_text(&report.outcome),
            answers: report.attempts,
            tokens: report.generated_tokens,
        })
        .collect();
    let cancelled = |steps: Vec<ExecutedStepReport>| ExecuteResult {
        plan_id: id,
        applied: false,
        cancelled: Some(true),
        reason: None,
        files: None,
        steps,
        refused: None,
    };
    if executed.execution.cancelled {
        progress.end("cancelled: nothing changed".into()).await;
        return Ok(cancelled(step_reports));
    }
    let landing = executed.landing;
    let root = context.workspace.lock().root().map(ToOwned::to_owned);
    let edit = match workspace_edit(
        &context.features,
        root.as_deref(),
        &landing,
        &executed.versions,
    ) {
        Ok(edit) => edit,
        Err(reason) => {
            progress.end(reason.clone()).await;
            return Err(request_failed(reason));
        }
    };
    if landing.files.is_empty() {
        let message = "nothing to change: no step changed a file".to_owned();
        progress.end(message.clone()).await;
        return Ok(ExecuteResult {
            plan_id: id,
            applied: false,
            cancelled: None,
            reason: Some(Some(message)),
            files: None,
            steps: step_reports,
            refused: Some(refused(&landing)),
        });
    }
    if cancel.is_cancelled() {
        progress.end("cancelled: nothing changed".into()).await;
        return Ok(cancelled(step_reports));
    }
    let response = context.client.apply_edit(edit).await;
    let (applied, reason) = match response {
        Ok(response) => (response.applied, response.failure_reason),
        Err(err) => (
            false,
            Some(format!("the editor answered with an error: {err}")),
        ),
    };
    let files: Vec<String> = landing.files.iter().map(|file| file.file.clone()).collect();
    let summary = if applied {
        format!(
            "plan {id}: {} of {} steps applied to {}",
            landing.landed.len(),
            plan.steps.len(),
            files.join(", ")
        )
    } else {
        format!(
            "plan {id}: the editor did not apply the edit{}",
            reason
                .as_ref()
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default()
        )
    };
    progress.end(summary.clone()).await;
    let kind = if applied {
        MessageType::INFO
    } else {
        MessageType::WARNING
    };
    context
        .client
        .show_message(kind, format!("tierls: {summary}"))
        .await;
    Ok(ExecuteResult {
        plan_id: id,
        applied,
        cancelled: None,
        reason: Some(reason),
        files: Some(files),
        steps: step_reports,
        refused: Some(refused(&landing)),
    })
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

fn outcome_text(outcome: &StepOutcome) -> String {
    match outcome {
        StepOutcome::Done => "done".into(),
        StepOutcome::Failed(reason) => format!("failed: {reason}"),
        StepOutcome::Skipped(reason) => format!("skipped: {reason}"),
        StepOutcome::Cancelled => "cancelled".into(),
    }
}

/// `window/workDoneProgress/cancel`: the user stopped a plan's work.
pub fn cancel_progress(session: &Session, token: &NumberOrString) {
    let key = super::progress::token_key(token);
    if session.plans.cancel(&key) {
        tracing::info!("the user cancelled {key}");
    }
}
