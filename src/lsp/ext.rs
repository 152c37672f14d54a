//! tierls' own LSP methods, and the results of its commands, as typed structs: every
//! custom method's params and result, and every `tierls.*` command's arguments and result.
//! Params are read through [`Checked`], so that a wrong type names its field.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tower_lsp::lsp_types::{Range, Url};

use crate::models::router::NodeReport;

/// Params deserialized with the path of the field at fault in the error
/// (`uri: invalid type: integer `5`, expected a string`), which tower-lsp turns into a
/// JSON-RPC invalid-params error.
#[derive(Clone, Debug)]
pub struct Checked<T>(pub T);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Checked<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        serde_path_to_error::deserialize(value)
            .map(Checked)
            .map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                // An unknown field's message already names it.
                if path == "." || inner.to_string().starts_with("unknown field") {
                    serde::de::Error::custom(inner)
                } else {
                    serde::de::Error::custom(format!("`{path}`: {inner}"))
                }
            })
    }
}

/// Reads a command's argument object, naming the field at fault.
pub fn checked_argument<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, String> {
    serde_json::from_value::<Checked<T>>(value)
        .map(|checked| checked.0)
        .map_err(|err| err.to_string())
}

/// `tierls/viewDocument`: the text the server holds for a document, from the editor's copy
/// when it is open and from disk otherwise. Editors use it to debug; tests use it to check
/// that the server's text matches the client's.
pub const VIEW_DOCUMENT: &str = "tierls/viewDocument";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewDocumentParams {
    pub uri: Url,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewDocumentResult {
    pub uri: Url,
    /// `editor` for an open document, `disk` for a file read from the workspace.
    pub source: String,
    /// The editor's version of an open document.
    pub version: Option<i32>,
    pub text: String,
}

/// `tierls/status`: each tier's model and state, the plans waiting for the user and the
/// plan work running; the editor extensions show it (status bar, `:TierlsStatus`).
pub const STATUS: &str = "tierls/status";

/// `tierls/status`'s result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub version: String,
    pub root: Option<PathBuf>,
    pub tiers: Vec<TierReport>,
    pub index: IndexReport,
    pub plans: PlansReport,
    pub nodes: Vec<NodeReport>,
    /// The last routing decisions, oldest first.
    #[serde(default)]
    pub routing: Vec<crate::route_log::Recorded>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierReport {
    pub tier: String,
    /// The model file.
    pub model: Option<PathBuf>,
    /// `not configured`, `loading`, `ready`, `paused`, `failed`, …
    pub state: String,
    pub error: Option<String>,
    /// Speculative decoding since the model loaded, when the tier drafts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drafting: Option<crate::models::DraftStats>,
    /// With `draft = "model"`: the model drafting for this tier, or why none does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drafting_note: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexReport {
    pub files: usize,
    pub definitions: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlansReport {
    pub pending: Vec<PendingPlanReport>,
    /// Plan work running now.
    pub running: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingPlanReport {
    pub plan_id: u32,
    pub instruction: String,
    pub steps: usize,
}

/// `tierls/nodesChanged` (server to client): a worker node's health changed; each node as
/// in `tierls/status`. The editor extensions update their status display from it.
pub enum NodesChanged {}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodesChangedParams {
    pub nodes: Vec<NodeReport>,
}

impl tower_lsp::lsp_types::notification::Notification for NodesChanged {
    type Params = NodesChangedParams;
    const METHOD: &'static str = "tierls/nodesChanged";
}

// ---------------------------------------------------------------------------------------
// The `tierls.*` commands (`workspace/executeCommand`)

pub const PLAN_REFACTOR: &str = "tierls.planRefactor";
pub const EXECUTE_PLAN: &str = "tierls.executePlan";
pub const DISCARD_PLAN: &str = "tierls.discardPlan";
pub const EDIT_SELECTION: &str = "tierls.editSelection";
pub const COMMANDS: [&str; 4] = [PLAN_REFACTOR, EXECUTE_PLAN, DISCARD_PLAN, EDIT_SELECTION];

/// `tierls.editSelection`'s argument: rewrite the selection's symbols as `instruction`
/// says (editors ask for it when it is missing).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EditArguments {
    pub uri: Url,
    pub range: Range,
    pub instruction: Option<String>,
}

/// `tierls.planRefactor`'s argument.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanArguments {
    pub uri: Url,
    pub range: Option<Range>,
    pub instruction: Option<String>,
}

/// `tierls.executePlan`'s and `tierls.discardPlan`'s argument.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanIdArguments {
    pub plan_id: u32,
}

/// `tierls.planRefactor`'s result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanResult {
    pub plan_id: u32,
    /// The plan as Markdown.
    pub document: String,
    /// Where the plan document was written for the editor to show, if it was.
    pub document_uri: Option<Url>,
    pub planner_tokens: u32,
    pub steps: Vec<PlanStepReport>,
    pub rejected: Vec<StepReason>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanStepReport {
    pub id: u32,
    pub file: String,
    pub target: String,
    pub action: String,
    pub instruction: String,
    pub depends_on: Vec<u32>,
}

/// A step and why it cannot run, or was refused when landing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepReason {
    pub id: u32,
    pub reason: String,
}

/// `tierls.executePlan`'s result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteResult {
    pub plan_id: u32,
    pub applied: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<bool>,
    /// Why nothing was applied (`null` when the editor gave no reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    pub steps: Vec<ExecutedStepReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Vec<StepReason>>,
    /// What `plan.check` said, round by round, when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckReport>,
    /// Who planned it and why (`tierls.editSelection`, which plans and executes at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_by: Option<String>,
}

/// The check loop of an executed plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub command: String,
    /// The check passes on the result (or reports nothing the workspace did not have).
    pub holds: bool,
    pub rounds: u32,
    /// Why the loop stopped.
    pub stopped: String,
    /// The failures left, as `file:line: message`.
    pub failing: Vec<String>,
    /// The rounds as the plan document shows them (Markdown).
    pub document: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecutedStepReport {
    pub id: u32,
    /// `done`, `failed: …`, `skipped: …`, `cancelled`.
    pub outcome: String,
    pub answers: u32,
    pub tokens: u32,
}

/// `tierls.discardPlan`'s result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscardResult {
    pub plan_id: u32,
    pub discarded: bool,
}

/// `textDocument/inlineCompletion` (LSP 3.18): lsp-types 0.94 predates it, so its types live
/// here.
pub const INLINE_COMPLETION: &str = "textDocument/inlineCompletion";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineCompletionParams {
    pub text_document: tower_lsp::lsp_types::TextDocumentIdentifier,
    pub position: tower_lsp::lsp_types::Position,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineCompletionItem {
    pub insert_text: String,
    pub range: Option<tower_lsp::lsp_types::Range>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineCompletionList {
    pub items: Vec<InlineCompletionItem>,
}

/// `tierls/completionStats`: what the completion engine did so far (requests, cache hits,
/// cancellations and the tokens they wasted, each generation's figures).
pub const COMPLETION_STATS: &str = "tierls/completionStats";
