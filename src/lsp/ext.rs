//! tierls' own LSP methods.

use serde::{Deserialize, Serialize};
use tower_lsp::lsp_types::Url;

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

/// `tierls/nodesChanged` (server to client): a worker node's health changed; the params
/// are `{ "nodes": [...] }`, each node as in `tierls/status`. The editor extensions update
/// their status display from it.
pub enum NodesChanged {}

impl tower_lsp::lsp_types::notification::Notification for NodesChanged {
    type Params = serde_json::Value;
    const METHOD: &'static str = "tierls/nodesChanged";
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
