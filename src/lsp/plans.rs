//! "Plan this refactor" in the editor: the `tierls.planRefactor` / `executePlan` /
//! `discardPlan` commands, and `editSelection` (an instruction edit of a selection). Each handler converts its arguments in, runs the one plan
//! driver through [`PlanRun`] (progress, cancel), and converts the result out
//! ([`super::plan_reports`], [`super::plan_edit`]); the plan flow itself is
//! `crate::refactor::driver`'s.
//!
//! No lock is held across an `.await`: the planner and the executors run while the user
//! goes on typing, and the edit is computed against the documents as they are when the
//! steps are done.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;
use tower_lsp::jsonrpc::{Error, Result};
use tower_lsp::lsp_types::*;

use super::convert;
use super::ext::{
    DISCARD_PLAN, DiscardResult, EDIT_SELECTION, EXECUTE_PLAN, EditArguments, ExecuteResult,
    PLAN_REFACTOR, PlanArguments, PlanIdArguments, PlanResult, checked_argument,
};
use super::plan_edit::{Confirmation, workspace_edit};
use super::plan_reports::{self as reports, Applied};
pub use super::plan_run::PlanContext;
use super::plan_run::PlanRun;
use super::request_failed;
use super::session::Session;
use crate::config::PlanConfig;
use crate::core::plan::Plan;
use crate::core::plan::context::{Focus, edit_targets};
use crate::core::plan::render::render_plan;
use crate::core::plan::repair::render_rounds;
use crate::core::position::byte_range_of;
use crate::refactor::driver::PlanRequest;
use crate::workspace;

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_params(message.into())
}

fn one_argument<T: serde::de::DeserializeOwned>(command: &str, arguments: Vec<Value>) -> Result<T> {
    let [argument]: [Value; 1] = arguments.try_into().map_err(|arguments: Vec<Value>| {
        invalid(format!(
            "{command} takes one argument object, not {}",
            arguments.len()
        ))
    })?;
    checked_argument(argument).map_err(|err| invalid(format!("{command}: {err}")))
}

// ---------------------------------------------------------------------------------------
// Planning

/// Each planning gets its own progress token: two may run at once.
static PLANNINGS: AtomicU32 = AtomicU32::new(0);

pub async fn plan_refactor(
    context: &PlanContext,
    arguments: Vec<Value>,
    token: Option<NumberOrString>,
) -> Result<PlanResult> {
    let arguments: PlanArguments = one_argument(PLAN_REFACTOR, arguments)?;
    let request = plan_request(context, arguments)?;
    let tiers = context.tiers()?;
    let number = PLANNINGS.fetch_add(1, Ordering::Relaxed) + 1;
    let name = format!("plan/{number}");
    let run = PlanRun::start(context, tiers, token, &name, "tierls: planning").await;
    let planned = match run.plan(&request).await {
        Ok(planned) => planned,
        Err(err) => return Err(run.fail(err).await),
    };
    let id = context.session().plans.add(planned.plan.clone());
    let document = render_plan(&planned.plan);
    let shown_at = show_plan_document(context, id, &document).await;
    run.announce(MessageType::INFO, reports::plan_ready(id, &planned.plan))
        .await;
    Ok(reports::plan_result(id, document, shown_at, &planned))
}

/// Convert in: the instruction, and the focus as a byte range of the open document.
fn plan_request(context: &PlanContext, arguments: PlanArguments) -> Result<PlanRequest> {
    let missing = "editors ask for it; in Helix, write a `tierls: …` comment";
    request_on_open_document(
        context,
        PLAN_REFACTOR,
        (arguments.instruction, missing),
        (&arguments.uri, arguments.range),
        |_, key, _, range| {
            Ok(vec![Focus::Selection {
                file: key,
                range: range.unwrap_or(0..0),
            }])
        },
    )
}

/// Convert in, for the commands that start from an open document: the instruction (an
/// error saying where it comes from when there is none), then, under the workspace lock,
/// `focus` of the document `uri`, its key and the range as bytes.
fn request_on_open_document(
    context: &PlanContext,
    command: &str,
    (instruction, missing): (Option<String>, &str),
    (uri, range): (&Url, Option<Range>),
    focus: impl FnOnce(
        &workspace::Workspace,
        String,
        &crate::core::document::Document,
        Option<std::ops::Range<usize>>,
    ) -> Result<Vec<Focus>>,
) -> Result<PlanRequest> {
    let instruction = instruction.unwrap_or_default().trim().to_owned();
    if instruction.is_empty() {
        return Err(invalid(format!(
            "{command} needs an instruction: say what to change ({missing})"
        )));
    }
    let focus = {
        let workspace = context.workspace.lock();
        let root = workspace.root().ok_or_else(|| {
            request_failed("plans need a workspace root, and the client sent none")
        })?;
        let key = convert::key(Some(root), uri);
        if workspace::is_outside(&key) {
            return Err(invalid(format!("{uri} is outside the workspace root")));
        }
        let document = workspace
            .document(&key)
            .ok_or_else(|| invalid(format!("{key} is not open: open it first")))?;
        let range = range
            .map(|range| {
                byte_range_of(
                    document.text(),
                    convert::range(range),
                    context.features.encoding,
                )
                .map_err(|err| invalid(format!("{command}: the range: {err}")))
            })
            .transpose()?;
        focus(&workspace, key, document, range)?
    };
    let config = &context.session().config.plan;
    Ok(PlanRequest {
        instruction,
        focus,
        map_tokens: config.map_tokens as usize,
        reference_tokens: config.reference_tokens as usize,
        max_fan_out: config.max_fan_out as usize,
        planner_time: Duration::from_secs(config.planner_seconds.into()),
    })
}

/// Writes the plan where the editor can open it (tierls' cache folder, never the
/// workspace) and asks the editor to show it.
async fn show_plan_document(context: &PlanContext, id: u32, document: &str) -> Option<Url> {
    if !context.features.show_document {
        return None;
    }
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
    let PlanIdArguments { plan_id } = one_argument(DISCARD_PLAN, arguments)?;
    match context.session().plans.take(plan_id) {
        Some(_) => Ok(DiscardResult {
            plan_id,
            discarded: true,
        }),
        None => Err(no_such_plan(plan_id)),
    }
}

// ---------------------------------------------------------------------------------------
// Editing a selection with an instruction

/// `tierls.editSelection`: the selection's symbols rewritten as the instruction says, by the
/// tier the routing rule picks (one symbol: the executor, no planning pass), offered at once
/// as one versioned edit, for review where the client supports change annotations.
pub async fn edit_selection(
    context: &PlanContext,
    arguments: Vec<Value>,
    token: Option<NumberOrString>,
) -> Result<ExecuteResult> {
    let arguments: EditArguments = one_argument(EDIT_SELECTION, arguments)?;
    let request = edit_request(context, arguments)?;
    let tiers = context.tiers()?;
    let number = PLANNINGS.fetch_add(1, Ordering::Relaxed) + 1;
    let run = PlanRun::start(
        context,
        tiers.clone(),
        token,
        &format!("edit/{number}"),
        "tierls: editing",
    )
    .await;
    let planned = match run.plan(&request).await {
        Ok(planned) => planned,
        Err(err) => return Err(run.fail(err).await),
    };
    drop(run);
    if planned.plan.steps.is_empty() {
        return Err(request_failed(format!(
            "nothing can be edited: {}",
            render_plan(&planned.plan)
        )));
    }
    let (id, config) = {
        let mut session = context.session();
        let id = session.plans.add(planned.plan.clone());
        session.plans.take(id);
        (id, session.config.plan.clone())
    };
    let planned_by = planned.plan.planned_by.clone();
    let label = format!("tierls: {}", shorten_instruction(&request.instruction));
    let mut result = run_plan(context, tiers, id, planned.plan, config, None, Some(label)).await?;
    result.planned_by = Some(planned_by);
    Ok(result)
}

fn shorten_instruction(instruction: &str) -> String {
    let mut short: String = instruction.chars().take(60).collect();
    if short.len() < instruction.len() {
        short.push('…');
    }
    short
}

/// Convert in: the instruction and the selection's symbols, checked before any model is
/// asked (an empty selection, one over no symbol or too many, a file the index does not
/// hold).
fn edit_request(context: &PlanContext, arguments: EditArguments) -> Result<PlanRequest> {
    let missing = "in Helix, write a `tierls: …` comment above the selection";
    request_on_open_document(
        context,
        EDIT_SELECTION,
        (arguments.instruction, missing),
        (&arguments.uri, Some(arguments.range)),
        |workspace, key, document, range| {
            let entry = workspace.index().file(&key).ok_or_else(|| {
                invalid(format!(
                    "{key} is not in the index (not a language tierls parses, generated, or too large): nothing to edit by symbol"
                ))
            })?;
            Ok(edit_targets(entry, document.text(), &range.unwrap_or(0..0))
                .map_err(|reason| invalid(format!("{EDIT_SELECTION}: {reason}")))?
                .into_iter()
                .map(|symbol| Focus::Symbol {
                    file: key.clone(),
                    path: symbol.symbol_path().into_owned(),
                })
                .collect())
        },
    )
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
    let PlanIdArguments { plan_id: id } = one_argument(EXECUTE_PLAN, arguments)?;
    let tiers = context.tiers()?;
    let (plan, config) = take_plan(context, id)?;
    run_plan(context, tiers, id, plan, config, token, None).await
}

/// Runs plan `id` (taken out of the store) and offers its landing as one versioned edit.
/// `review`: the label under which a client with change annotations shows the edit for
/// review before applying it (an instruction edit); a failing check is always reviewed.
async fn run_plan(
    context: &PlanContext,
    tiers: std::sync::Arc<crate::models::tiers::TierSet>,
    id: u32,
    plan: Plan,
    config: PlanConfig,
    token: Option<NumberOrString>,
    review: Option<String>,
) -> Result<ExecuteResult> {
    let name = format!("execute/{id}");
    let run = PlanRun::start(context, tiers, token, &name, "tierls: executing the plan").await;
    let executed = match run.execute(&plan, &config).await {
        Ok(executed) => executed,
        Err(err) => {
            // Nothing ran: the plan waits again, to be executed once the executor is fixed.
            context.session().plans.put_back(id, plan);
            let message = format!("{err}; plan {id} is still waiting");
            return Err(run.fail(request_failed(message)).await);
        }
    };
    let steps = reports::executed_steps(&executed.execution);
    if executed.execution.cancelled {
        run.end(reports::CANCELLED).await;
        return Ok(reports::cancelled(id, steps));
    }
    let landing = &executed.landing;
    let rounds = executed.rounds.as_ref();
    if let Some(rounds) = rounds {
        // The plan document gains its rounds: what each check said, what is left failing.
        let document = format!("{}\n{}", render_plan(&executed.plan), render_rounds(rounds));
        show_plan_document(context, id, &document).await;
    }
    let check_fails = rounds
        .filter(|rounds| !rounds.holds())
        .map(reports::check_fails);
    let confirm = match &check_fails {
        Some(label) => Some(Confirmation::check_fails(label.clone())),
        None => review.map(Confirmation::review),
    };
    let root = context.workspace.lock().root().map(ToOwned::to_owned);
    let edit = match workspace_edit(
        &context.features,
        root.as_deref(),
        landing,
        &executed.versions,
        confirm.as_ref(),
    ) {
        Ok(edit) => edit,
        Err(reason) => return Err(run.fail(request_failed(reason)).await),
    };
    let check = rounds.map(reports::check_report);
    if landing.files.is_empty() {
        run.end(reports::NOTHING_TO_CHANGE).await;
        let mut result = reports::nothing_to_change(id, steps, landing);
        result.check = check;
        return Ok(result);
    }
    if run.cancel.is_cancelled() {
        run.end(reports::CANCELLED).await;
        return Ok(reports::cancelled(id, steps));
    }
    // A change whose check fails is never applied silently: the editor asks about the
    // annotated edit, or the user is asked here first.
    let answer = match &check_fails {
        Some(label) if edit.change_annotations.is_none() && !ask_to_apply(context, label).await => {
            Applied {
                applied: false,
                reason: Some(format!("{label}: the user did not apply it")),
            }
        }
        _ => apply(context, edit).await,
    };
    let kind = match answer.applied && check_fails.is_none() {
        true => MessageType::INFO,
        false => MessageType::WARNING,
    };
    run.announce(
        kind,
        reports::applied_summary(id, &executed.plan, landing, &answer),
    )
    .await;
    let mut result = reports::applied(id, steps, landing, answer);
    result.check = check;
    Ok(result)
}

/// How long the user has to answer whether a failing change is applied.
const CONFIRM_TIME: Duration = Duration::from_secs(600);
const APPLY_ANYWAY: &str = "Apply anyway";

/// Asks the user (`window/showMessageRequest`) whether to apply a change whose check
/// fails; no answer within [`CONFIRM_TIME`] is a no.
async fn ask_to_apply(context: &PlanContext, label: &str) -> bool {
    let asked = context.client.show_message_request(
        MessageType::WARNING,
        format!("tierls: {label}. Apply it anyway?"),
        Some(vec![
            MessageActionItem {
                title: APPLY_ANYWAY.to_owned(),
                properties: Default::default(),
            },
            MessageActionItem {
                title: "Leave the files unchanged".to_owned(),
                properties: Default::default(),
            },
        ]),
    );
    match tokio::time::timeout(CONFIRM_TIME, asked).await {
        Ok(Ok(Some(choice))) => choice.title == APPLY_ANYWAY,
        Ok(Ok(None)) => false,
        Ok(Err(err)) => {
            tracing::info!("the editor could not ask about the failing change: {err}");
            false
        }
        Err(_) => false,
    }
}

/// Takes the plan out at once: a plan runs at most once.
fn take_plan(context: &PlanContext, id: u32) -> Result<(Plan, PlanConfig)> {
    let mut session = context.session();
    let plan = session.plans.take(id).ok_or_else(|| no_such_plan(id))?;
    if plan.steps.is_empty() {
        return Err(invalid(format!("plan {id} has no step that can run")));
    }
    Ok((plan, session.config.plan.clone()))
}

async fn apply(context: &PlanContext, edit: WorkspaceEdit) -> Applied {
    match context.client.apply_edit(edit).await {
        Ok(response) => Applied {
            applied: response.applied,
            reason: response.failure_reason,
        },
        Err(err) => Applied {
            applied: false,
            reason: Some(format!("the editor answered with an error: {err}")),
        },
    }
}

/// `window/workDoneProgress/cancel`: the user stopped a plan's work.
pub fn cancel_progress(session: &Session, token: &NumberOrString) {
    let key = super::progress::token_key(token);
    if session.plans.cancel(&key) {
        tracing::info!("the user cancelled {key}");
    }
}
