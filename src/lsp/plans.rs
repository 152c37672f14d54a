//! "Plan this refactor" in the editor: code actions, the commands that plan, execute and
//! discard, `$/progress` with cancel, and the one `WorkspaceEdit` a plan lands as.
//!
//! The session lock is taken only to read or write state, never across an `.await`: the
//! planner and the executors run while the user goes on typing, and the edit is computed
//! against the documents as they are when the steps are done.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower_lsp::Client;
use tower_lsp::jsonrpc::{Error, Result};
use tower_lsp::lsp_types::notification::Progress as ProgressNotification;
use tower_lsp::lsp_types::request::WorkDoneProgressCreate;
use tower_lsp::lsp_types::*;

use super::plan_edit::{current_files, workspace_edit};
use super::request_failed;
use super::session::Session;
use crate::core::plan::Plan;
use crate::core::plan::context::{Focus, planner_input};
use crate::core::plan::land::{Landing, land};
use crate::core::plan::render::render_plan;
use crate::core::plan::validate;
use crate::core::position::byte_range_of;
use crate::models::Cancel;
use crate::models::tiers::TierSet;
use crate::refactor::workspace::{PlanFacts, definitions_for};
use crate::refactor::{
    ExecuteOptions, Progress, StepOutcome, ask_planner, execute, lease_executor, lease_planner,
};
use crate::sync::lock;

pub const PLAN_REFACTOR: &str = "tierls.planRefactor";
pub const EXECUTE_PLAN: &str = "tierls.executePlan";
pub const DISCARD_PLAN: &str = "tierls.discardPlan";
pub const COMMANDS: [&str; 3] = [PLAN_REFACTOR, EXECUTE_PLAN, DISCARD_PLAN];

/// How far above the cursor a `tierls:` comment is looked for, in lines.
const COMMENT_LINES_ABOVE: u32 = 20;

/// Plans waiting for the user's decision, and the running work's cancel flags.
#[derive(Default)]
pub struct PlanStore {
    next_id: u32,
    pending: BTreeMap<u32, Plan>,
    /// By progress token.
    running: HashMap<String, Cancel>,
}

/// The plans waiting for the user and the plan work running, for `tierls/status`.
pub fn summary(session: &Session) -> Value {
    json!({
        "pending": session.plans.pending.iter().map(|(id, plan)| json!({
            "planId": id,
            "instruction": plan.instruction,
            "steps": plan.steps.len(),
        })).collect::<Vec<_>>(),
        "running": session.plans.running.len(),
    })
}

/// What a plan command needs of the server.
pub struct PlanContext {
    pub client: Client,
    pub session: Arc<Mutex<Session>>,
    pub tiers: Option<Arc<TierSet>>,
}

impl PlanContext {
    fn session(&self) -> MutexGuard<'_, Session> {
        lock(&self.session)
    }

    fn tiers(&self) -> Result<Arc<TierSet>> {
        self.tiers
            .clone()
            .ok_or_else(|| request_failed("the models are not set up yet: wait for `initialized`"))
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_params(message.into())
}

// ---------------------------------------------------------------------------------------
// Code actions

/// The plan actions at `range` of `uri`.
pub fn code_actions(session: &Session, uri: &Url, range: Range) -> Vec<CodeActionOrCommand> {
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
    if let Some((instruction, line)) = instruction_comment(session, uri, range) {
        // The comment's line is the focus: the symbol around it, or the one right below.
        let comment_line = Range::new(Position::new(line, 0), Position::new(line + 1, 0));
        actions.push(action(
            format!("tierls: Plan: {}", shorten(&instruction)),
            PLAN_REFACTOR,
            json!({ "uri": uri, "range": comment_line, "instruction": instruction }),
        ));
    }
    actions.push(action(
        "tierls: Plan refactor…".to_owned(),
        PLAN_REFACTOR,
        json!({ "uri": uri, "range": range }),
    ));
    for (id, plan) in &session.plans.pending {
        let what = shorten(&plan.instruction);
        actions.push(action(
            format!("tierls: Execute plan {id}: {what}"),
            EXECUTE_PLAN,
            json!({ "planId": id }),
        ));
        actions.push(action(
            format!("tierls: Discard plan {id}: {what}"),
            DISCARD_PLAN,
            json!({ "planId": id }),
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

/// A `tierls: <instruction>` comment on the selected lines or up to
/// [`COMMENT_LINES_ABOVE`] lines above them, nearest first, with its line.
fn instruction_comment(session: &Session, uri: &Url, range: Range) -> Option<(String, u32)> {
    let document = session.documents.get(uri.as_str())?;
    let text = document.text();
    let last = range
        .end
        .line
        .min(text.len_lines().saturating_sub(1) as u32);
    let first = range.start.line.saturating_sub(COMMENT_LINES_ABOVE);
    (first..=last).rev().find_map(|line| {
        let content = text.line(line as usize).to_string();
        let trimmed = content.trim_start();
        let is_comment = ["//", "#", "--", "/*", "*", ";"]
            .iter()
            .any(|prefix| trimmed.starts_with(prefix));
        if !is_comment {
            return None;
        }
        let (_, after) = trimmed.split_once("tierls:")?;
        let instruction = after.trim().trim_end_matches("*/").trim();
        (!instruction.is_empty()).then(|| (instruction.to_owned(), line))
    })
}

// ---------------------------------------------------------------------------------------
// Progress

/// Sends `$/progress` for one token; silent when the client does not show progress.
#[derive(Clone)]
struct Reporter {
    client: Client,
    token: Option<NumberOrString>,
}

impl Reporter {
    async fn report(&self, message: String, percentage: Option<u32>) {
        self.send(WorkDoneProgress::Report(WorkDoneProgressReport {
            cancellable: Some(true),
            message: Some(message),
            percentage,
        }))
        .await;
    }

    async fn send(&self, value: WorkDoneProgress) {
        if let Some(token) = &self.token {
            self.client
                .send_notification::<ProgressNotification>(ProgressParams {
                    token: token.clone(),
                    value: ProgressParamsValue::WorkDone(value),
                })
                .await;
        }
    }
}

/// One piece of plan work shown with `$/progress`, cancellable by the user. If the request
/// is dropped before `end` (`$/cancelRequest`), the progress still ends and its cancel flag
/// is forgotten.
struct WorkProgress {
    reporter: Reporter,
    session: Arc<Mutex<Session>>,
    ended: bool,
}

impl WorkProgress {
    /// Uses the client's token when it gave one, else creates one.
    async fn start(
        context: &PlanContext,
        given: Option<NumberOrString>,
        name: &str,
        title: &str,
        cancel: &Cancel,
    ) -> WorkProgress {
        let supported = context.session().work_done_progress;
        let token = match given {
            Some(token) => Some(token),
            None if supported => {
                let token = NumberOrString::String(format!("tierls/{name}"));
                context
                    .client
                    .send_request::<WorkDoneProgressCreate>(WorkDoneProgressCreateParams {
                        token: token.clone(),
                    })
                    .await
                    .ok()
                    .map(|()| token)
            }
            None => None,
        };
        if let Some(token) = &token {
            context
                .session()
                .plans
                .running
                .insert(token_key(token), cancel.clone());
        }
        let progress = WorkProgress {
            reporter: Reporter {
                client: context.client.clone(),
                token,
            },
            session: context.session.clone(),
            ended: false,
        };
        progress
            .reporter
            .send(WorkDoneProgress::Begin(WorkDoneProgressBegin {
                title: title.to_owned(),
                cancellable: Some(true),
                message: None,
                percentage: Some(0),
            }))
            .await;
        progress
    }

    async fn report(&self, message: String, percentage: Option<u32>) {
        self.reporter.report(message, percentage).await;
    }

    async fn end(&mut self, message: String) {
        self.ended = true;
        self.forget();
        self.reporter
            .send(WorkDoneProgress::End(WorkDoneProgressEnd {
                message: Some(message),
            }))
            .await;
    }

    fn forget(&self) {
        if let Some(token) = &self.reporter.token {
            lock(&self.session).plans.running.remove(&token_key(token));
        }
    }
}

impl Drop for WorkProgress {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.forget();
        let reporter = self.reporter.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let end = WorkDoneProgressEnd {
                    message: Some("cancelled: nothing changed".into()),
                };
                reporter.send(WorkDoneProgress::End(end)).await;
            });
        }
    }
}

fn token_key(token: &NumberOrString) -> String {
    match token {
        NumberOrString::Number(number) => number.to_string(),
        NumberOrString::String(text) => text.clone(),
    }
}

/// `window/workDoneProgress/cancel`: the user stopped a plan's work.
pub fn cancel_progress(session: &mut Session, token: &NumberOrString) {
    if let Some(cancel) = session.plans.running.get(&token_key(token)) {
        tracing::info!("the user cancelled {}", token_key(token));
        cancel.cancel();
    }
}

/// Raises the cancel flag when the request's future is dropped (`$/cancelRequest`).
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

// ---------------------------------------------------------------------------------------
// Planning

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PlanArguments {
    uri: Url,
    range: Option<Range>,
    instruction: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PlanIdArguments {
    plan_id: u32,
}

fn one_argument<T: serde::de::DeserializeOwned>(command: &str, arguments: Vec<Value>) -> Result<T> {
    let [argument]: [Value; 1] = arguments.try_into().map_err(|arguments: Vec<Value>| {
        invalid(format!(
            "{command} takes one argument object, not {}",
            arguments.len()
        ))
    })?;
    serde_json::from_value(argument).map_err(|err| invalid(format!("{command}: {err}")))
}

pub async fn plan_refactor(
    context: &PlanContext,
    arguments: Vec<Value>,
    token: Option<NumberOrString>,
) -> Result<Value> {
    let arguments: PlanArguments = one_argument(PLAN_REFACTOR, arguments)?;
    let instruction = arguments.instruction.unwrap_or_default().trim().to_owned();
    if instruction.is_empty() {
        return Err(invalid(format!(
            "{PLAN_REFACTOR} needs an instruction: say what to change (editors ask for it; in Helix, write a `tierls: …` comment)"
        )));
    }
    let tiers = context.tiers()?;
    let (input, root, planner_time) = {
        let mut session = context.session();
        session.refresh_index();
        let root = session.root.clone().ok_or_else(|| {
            request_failed("plans need a workspace root, and the client sent none")
        })?;
        let key = session.index_key(&arguments.uri);
        if key.contains("://") {
            return Err(invalid(format!(
                "{} is outside the workspace root",
                arguments.uri
            )));
        }
        let document = session
            .documents
            .get(arguments.uri.as_str())
            .ok_or_else(|| invalid(format!("{} is not open: open it first", arguments.uri)))?;
        let range = match arguments.range {
            Some(range) => byte_range_of(
                document.text(),
                crate::lsp::convert::range(range),
                session.encoding,
            )
            .map_err(|err| invalid(format!("{PLAN_REFACTOR}: the range: {err}")))?,
            None => 0..0,
        };
        let texts = BTreeMap::from([(key.clone(), document.text().to_string())]);
        let focus = [Focus::Selection { file: key, range }];
        let map_tokens = session.config.plan.map_tokens as usize;
        let input = planner_input(&session.index, &texts, &instruction, &focus, map_tokens)
            .map_err(invalid)?;
        let planner_time =
            std::time::Duration::from_secs(session.config.plan.planner_seconds.into());
        (input, root, planner_time)
    };
    let cancel = Cancel::new();
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    // Each planning gets its own token: two may run at once.
    static PLANNINGS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let number = PLANNINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let mut progress = WorkProgress::start(
        context,
        token,
        &format!("plan/{number}"),
        "tierls: planning",
        &cancel,
    )
    .await;
    progress.report("loading the planner".into(), Some(5)).await;
    let lease = match lease_planner(tiers, cancel.clone()).await {
        Ok(lease) => lease,
        Err(err) => {
            let message = format!("no planner: {err}");
            progress.end(message.clone()).await;
            return Err(request_failed(message));
        }
    };
    progress
        .report(format!("the {} tier is planning", lease.tier), Some(20))
        .await;
    let answer = ask_planner(lease.model.as_ref(), &input, planner_time, cancel.clone()).await;
    // Ending the flow unloads the planner: off the runtime.
    let _ = tokio::task::spawn_blocking(move || drop(lease)).await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => {
            progress.end(err.to_string()).await;
            return Err(request_failed(err.to_string()));
        }
    };
    // Validation asks the disk: it runs off the runtime, with what it needs of the index
    // copied out under a short lock.
    let facts = PlanFacts::gather(&context.session().index, &root, &answer.raw);
    let validated = {
        let instruction = instruction.clone();
        tokio::task::spawn_blocking(move || validate(&instruction, &answer.raw, &facts)).await
    };
    let plan = match validated {
        Ok(plan) => plan,
        Err(err) => {
            let message = format!("checking the plan failed: {err}");
            progress.end(message.clone()).await;
            return Err(request_failed(message));
        }
    };
    let (id, plan, show_document) = {
        let mut session = context.session();
        session.plans.next_id += 1;
        let id = session.plans.next_id;
        session.plans.pending.insert(id, plan.clone());
        (id, plan, session.show_document)
    };
    let document = render_plan(&plan);
    let shown = if show_document {
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
    Ok(json!({
        "planId": id,
        "document": document,
        "documentUri": shown,
        "plannerTokens": answer.usage.generated_tokens,
        "steps": plan.steps.iter().map(|step| json!({
            "id": step.id,
            "file": step.file,
            "target": step.target,
            "action": step.action.name(),
            "instruction": step.instruction,
            "dependsOn": step.depends_on,
        })).collect::<Vec<_>>(),
        "rejected": plan.rejected.iter().map(|rejected| json!({
            "id": rejected.id,
            "reason": rejected.reason,
        })).collect::<Vec<_>>(),
    }))
}

/// Writes the plan where the editor can open it (tierls' cache folder, never the
/// workspace) and asks the editor to show it.
async fn show_plan_document(context: &PlanContext, id: u32, document: &str) -> Option<Url> {
    let folder = dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("tierls")
        .join("plans");
    let path = folder.join(format!("plan-{}-{id}.md", std::process::id()));
    let written = std::fs::create_dir_all(&folder).and_then(|()| std::fs::write(&path, document));
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

pub fn discard_plan(context: &PlanContext, arguments: Vec<Value>) -> Result<Value> {
    let arguments: PlanIdArguments = one_argument(DISCARD_PLAN, arguments)?;
    let removed = context.session().plans.pending.remove(&arguments.plan_id);
    match removed {
        Some(_) => Ok(json!({ "planId": arguments.plan_id, "discarded": true })),
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
) -> Result<Value> {
    let arguments: PlanIdArguments = one_argument(EXECUTE_PLAN, arguments)?;
    let id = arguments.plan_id;
    let tiers = context.tiers()?;
    // Taken out at once: a plan runs at most once.
    let plan = context
        .session()
        .plans
        .pending
        .remove(&id)
        .ok_or_else(|| no_such_plan(id))?;
    if plan.steps.is_empty() {
        return Err(invalid(format!("plan {id} has no step that can run")));
    }
    let cancel = Cancel::new();
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let mut progress = WorkProgress::start(
        context,
        token,
        &format!("execute/{id}"),
        "tierls: executing the plan",
        &cancel,
    )
    .await;
    progress
        .report("loading the executor".into(), Some(0))
        .await;
    let executor = match lease_executor(tiers, cancel.clone()).await {
        Ok(executor) => executor,
        Err(err) => {
            // Nothing ran: the plan waits again, to be executed once the executor is fixed.
            context.session().plans.pending.insert(id, plan);
            let message = format!("no executor: {err}; plan {id} is still waiting");
            progress.end(message.clone()).await;
            return Err(request_failed(message));
        }
    };
    let (files, definitions, options) = {
        let mut session = context.session();
        session.refresh_index();
        let files: BTreeMap<String, Option<String>> = current_files(&session, &plan)
            .into_iter()
            .map(|(file, (text, _))| (file, text))
            .collect();
        let definitions = definitions_for(&plan, &session.index, &files);
        let options = ExecuteOptions::from_config(&session.config.plan, executor.as_ref());
        (files, definitions, options)
    };
    let (events, mut received) = mpsc::unbounded_channel();
    let total = plan.steps.len() as u32;
    let forward = {
        let progress = progress.reporter.clone();
        tokio::spawn(async move {
            let mut finished = 0;
            while let Some(event) = received.recv().await {
                let message = match event {
                    Progress::Started { step, attempt: 1 } => format!("step {step}"),
                    Progress::Started { step, attempt } => format!("step {step}, answer {attempt}"),
                    Progress::Finished { step, outcome } => {
                        finished += 1;
                        format!("step {step}: {}", outcome_text(&outcome))
                    }
                };
                progress.report(message, Some(finished * 100 / total)).await;
            }
        })
    };
    let execution = execute(
        plan.clone(),
        executor,
        files,
        definitions,
        options,
        cancel.clone(),
        Arc::new(move |event| {
            let _ = events.send(event);
        }),
    )
    .await;
    let _ = forward.await;
    let steps: Vec<Value> = execution
        .reports
        .iter()
        .map(|report| {
            json!({
                "id": report.step,
                "outcome": outcome_text(&report.outcome),
                "answers": report.attempts,
                "tokens": report.generated_tokens,
            })
        })
        .collect();
    if execution.cancelled {
        progress.end("cancelled: nothing changed".into()).await;
        return Ok(json!({ "planId": id, "applied": false, "cancelled": true, "steps": steps }));
    }
    // Land on the documents as they are now: the user may have typed meanwhile.
    let built = {
        let session = context.session();
        let current = current_files(&session, &plan);
        let bases = current
            .iter()
            .map(|(file, (text, _))| (file.clone(), text.clone()))
            .collect();
        let landing = land(&plan, &execution.edits, &bases);
        let versions: BTreeMap<String, Option<i32>> = current
            .into_iter()
            .map(|(file, (_, version))| (file, version))
            .collect();
        workspace_edit(&session, &landing, &versions).map(|edit| (edit, landing))
    };
    let refused_json = |landing: &Landing| {
        landing
            .refused
            .iter()
            .map(|(step, reason)| json!({ "id": step, "reason": reason }))
            .collect::<Vec<_>>()
    };
    let (edit, landing) = match built {
        Ok(built) => built,
        Err(reason) => {
            progress.end(reason.clone()).await;
            return Err(request_failed(reason));
        }
    };
    if landing.files.is_empty() {
        let message = "nothing to change: no step changed a file".to_owned();
        progress.end(message.clone()).await;
        return Ok(
            json!({ "planId": id, "applied": false, "reason": message, "steps": steps, "refused": refused_json(&landing) }),
        );
    }
    if cancel.is_cancelled() {
        progress.end("cancelled: nothing changed".into()).await;
        return Ok(json!({ "planId": id, "applied": false, "cancelled": true, "steps": steps }));
    }
    let response = context.client.apply_edit(edit).await;
    let (applied, reason) = match response {
        Ok(response) => (response.applied, response.failure_reason),
        Err(err) => (
            false,
            Some(format!("the editor answered with an error: {err}")),
        ),
    };
    let files: Vec<&str> = landing
        .files
        .iter()
        .map(|file| file.file.as_str())
        .collect();
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
    context
        .client
        .show_message(
            if applied {
                MessageType::INFO
            } else {
                MessageType::WARNING
            },
            format!("tierls: {summary}"),
        )
        .await;
    Ok(json!({
        "planId": id,
        "applied": applied,
        "reason": reason,
        "files": files,
        "steps": steps,
        "refused": refused_json(&landing),
    }))
}

fn outcome_text(outcome: &StepOutcome) -> String {
    match outcome {
        StepOutcome::Done => "done".into(),
        StepOutcome::Failed(reason) => format!("failed: {reason}"),
        StepOutcome::Skipped(reason) => format!("skipped: {reason}"),
        StepOutcome::Cancelled => "cancelled".into(),
    }
}
