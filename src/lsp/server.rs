//! The tower-lsp handlers: convert in, ask the workspace layer or an engine, convert out.
//!
//! Notification handlers mutate state before their first `.await`: tower-lsp polls
//! handlers concurrently, and a handler that awaited first could be overtaken by the next
//! `didChange`. No lock is held across an `.await`, and the workspace lock and the session
//! lock are never held together.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tower_lsp::jsonrpc::{Error, Result};
use tower_lsp::lsp_types::*;
use tower_lsp::{Client, LanguageServer};

use super::convert::{self, ClientFeatures};
use super::ext::{
    self, Checked, InlineCompletionItem, InlineCompletionList, InlineCompletionParams, Status,
    ViewDocumentParams, ViewDocumentResult,
};
use super::nodes::Nodes;
use super::session::Session;
use super::symbols::Texts;
use super::{
    ServerOptions, Shared, completion, hover, indexing, plan_actions, plans, reload,
    request_failed, startup, status, symbols,
};
use crate::completion::explain::ExplainEngine;
use crate::completion::{Completed, CompletionEngine};
use crate::config::{self, CONFIG_FILE_NAME, ConfigError, ConfigSources, Tier};
use crate::core::document::Document;
use crate::core::route;
use crate::logging;
use crate::models::Model;
use crate::models::tiers::TierSet;
use crate::sync::lock;
use crate::workspace::disk_sync::{DiskSync, Job};
use crate::workspace::{self, FileText, Key, Limits, Snapshot};

/// How long a symbol request waits for file events that came before it to reach the index.
const DISK_SYNC_WAIT: Duration = Duration::from_secs(5);

pub struct Backend {
    pub(super) client: Client,
    shared: Arc<Shared>,
    options: ServerOptions,
    pub(super) session: Arc<Mutex<Session>>,
    pub(super) workspace: workspace::Shared,
    /// What the client can do, read once at `initialize`.
    features: OnceLock<ClientFeatures>,
    /// The models of this machine, set up at `initialized`.
    pub(super) tiers: OnceLock<Arc<TierSet>>,
    /// The worker nodes, when the configuration names any.
    pub(super) nodes: Arc<Nodes>,
    pub(super) completion: CompletionEngine,
    explain: ExplainEngine,
    /// Brings the index up to date with the disk, off the workspace lock.
    disk_sync: DiskSync,
    /// Configuration errors found during `initialize`, shown once the client can hear them.
    startup_errors: Mutex<Vec<ConfigError>>,
}

impl Backend {
    pub(super) fn new(client: Client, shared: Arc<Shared>, options: ServerOptions) -> Self {
        let workspace = workspace::Shared::default();
        Backend {
            client,
            shared,
            options,
            disk_sync: DiskSync::start(workspace.clone()),
            workspace,
            session: Arc::default(),
            features: OnceLock::new(),
            startup_errors: Mutex::default(),
            tiers: OnceLock::new(),
            nodes: Arc::default(),
            completion: CompletionEngine::default(),
            explain: ExplainEngine::default(),
        }
    }

    pub(super) fn session(&self) -> MutexGuard<'_, Session> {
        lock(&self.session)
    }

    fn features(&self) -> ClientFeatures {
        self.features.get().copied().unwrap_or_default()
    }

    /// The workspace key of `uri`.
    fn key(&self, uri: &Url) -> Key {
        convert::key(self.workspace.lock().root(), uri)
    }

    /// The current texts of `keys`, read off the runtime when any is not open.
    async fn texts(snapshot: Snapshot, keys: Vec<Key>) -> HashMap<Key, FileText> {
        if snapshot.all_open(keys.iter().map(String::as_str)) {
            return snapshot.texts(keys.iter().map(String::as_str));
        }
        tokio::task::spawn_blocking(move || snapshot.texts(keys.iter().map(String::as_str)))
            .await
            .unwrap_or_default()
    }

    /// Asks `query` about the open document's byte offset under `at`, on a refreshed index,
    /// and takes a snapshot in the same short lock.
    fn at_cursor<T>(
        &self,
        at: &TextDocumentPositionParams,
        query: impl FnOnce(&workspace::Workspace, &str, usize) -> Option<T>,
    ) -> (Option<T>, Snapshot) {
        let encoding = self.features().encoding;
        let mut workspace = self.workspace.lock();
        workspace.refresh_index();
        let key = convert::key(workspace.root(), &at.text_document.uri);
        let found = workspace.document(&key).and_then(|document| {
            let offset = convert::offset(document.text(), at.position, encoding)?;
            query(&workspace, &key, offset)
        });
        (found, workspace.snapshot())
    }

    /// Re-resolves the configuration and applies what lives outside the session.
    fn apply_config(&self, session: &mut Session) {
        session.config = session.config_sources.resolve();
        self.shared
            .max_message_bytes
            .store(session.config.limits.max_message_bytes, Ordering::Relaxed);
        logging::set_session_level(self.shared.log_session, session.config.log.level);
        self.workspace.lock().set_limits(Limits {
            index_bytes: session.config.index.max_file_bytes,
            read_bytes: session.config.limits.max_file_bytes,
        });
    }

    /// Puts changed `[tiers.*]` and `[nodes]` into effect; before `initialized` there is
    /// nothing running (the tiers start from the configuration then).
    fn reload_tiers(&self, before: &config::Config, after: &config::Config) {
        let Some(tiers) = self.tiers.get() else {
            return;
        };
        let root = self.workspace.lock().root().map(ToOwned::to_owned);
        let swaps = reload::changed_tiers(
            &self.client,
            tiers,
            &before.tiers,
            &after.tiers,
            root.as_deref(),
            self.features().work_done_progress,
        );
        // The router is built anew when its nodes change, or when a tier they serve
        // changed its model here (the router's member for it), once that model is in place.
        let routed_now = self
            .nodes
            .router()
            .map(|router| router.tiers())
            .unwrap_or_default();
        let routed_tier_changed = config::Tier::ALL.into_iter().any(|tier| {
            let routed = routed_now.contains(&tier) || after.nodes.iter().any(|n| n.serves(tier));
            routed && before.tiers.get(tier) != after.tiers.get(tier)
        });
        if before.nodes == after.nodes && !routed_tier_changed {
            return;
        }
        let (client, tiers, nodes) = (self.client.clone(), tiers.clone(), self.nodes.clone());
        let configs = after.nodes.clone();
        let change = nodes.next_change();
        tokio::spawn(async move {
            for swap in swaps {
                let _ = swap.await;
            }
            nodes.apply(change, &client, &tiers, &configs).await;
        });
    }

    async fn report_config_errors(&self, errors: Vec<ConfigError>) {
        for error in errors {
            tracing::error!("configuration ignored, keeping the last good one: {error}");
            let message = format!("tierls: {error} (keeping the last good configuration)");
            self.client.show_message(MessageType::ERROR, message).await;
        }
    }

    fn fast_model(&self) -> Option<Arc<dyn Model>> {
        self.tiers.get()?.get(Tier::Fast).ok()
    }

    /// The model that explains a hover, as the routing rule says, and how the hover names
    /// it. The usual case (the fast tier) is logged at debug only; anything else is kept for
    /// `tierls/status`.
    fn explainer(&self, facts: route::HoverFacts) -> (Option<Arc<dyn Model>>, &'static str) {
        let Some(tiers) = self.tiers.get() else {
            return (None, "fast tier");
        };
        let (rules, decisions) = {
            let session = self.session();
            (session.config.routing.clone(), session.decisions.clone())
        };
        let decision = route::decide(&route::Work::Hover(facts), &tiers.states(), &rules);
        match decision.route {
            route::Route::Tier(Tier::Fast) => tracing::debug!("routing hover: {decision}"),
            _ => decisions.record("hover", &decision),
        }
        match decision.route.tier() {
            Some(Tier::Executor) => match tiers.get(Tier::Executor) {
                Ok(model) => (Some(model), "executor"),
                // Unloaded since the rule looked: the fast tier answers as usual.
                Err(_) => (self.fast_model(), "fast tier"),
            },
            Some(tier) => (tiers.get(tier).ok(), "fast tier"),
            None => (None, "fast tier"),
        }
    }

    /// Prepares a completion and runs it; `None` when there is nothing to suggest.
    async fn suggest(
        &self,
        uri: &Url,
        position: Position,
    ) -> Option<(completion::Prepared, String)> {
        let model = self.fast_model()?;
        let config = self.session().config.completion.clone();
        let at = completion::At {
            position,
            encoding: self.features().encoding,
        };
        let prepared = {
            let mut workspace = self.workspace.lock();
            let key = convert::key(workspace.root(), uri);
            workspace.refresh_index_except(&key);
            completion::prepare(&workspace, key, at, &config, model.info())?
        };
        let outcome = self
            .completion
            .complete(
                model,
                prepared.slot,
                &prepared.key,
                prepared.prefix.clone(),
                prepared.plan.clone(),
                prepared.timing,
            )
            .await;
        match outcome {
            Ok(Completed::Suggestion { text, .. }) => Some((prepared, text)),
            Ok(Completed::Nothing) => None,
            Err(err) => {
                tracing::warn!("no completion: {err}");
                None
            }
        }
    }

    fn plan_context(&self) -> plans::PlanContext {
        plans::PlanContext {
            client: self.client.clone(),
            session: self.session.clone(),
            workspace: self.workspace.clone(),
            tiers: self.tiers.get().cloned(),
            features: self.features(),
        }
    }

    /// `window/workDoneProgress/cancel`: stops the plan work behind the token.
    pub async fn work_done_progress_cancel(&self, params: WorkDoneProgressCancelParams) {
        plans::cancel_progress(&self.session(), &params.token);
    }

    pub async fn status(&self) -> Result<Status> {
        Ok(status::status(self))
    }

    pub async fn completion_stats(&self) -> Result<crate::completion::EngineStats> {
        Ok(self.completion.stats())
    }

    pub async fn inline_completion(
        &self,
        Checked(params): Checked<InlineCompletionParams>,
    ) -> Result<InlineCompletionList> {
        let cursor = params.position;
        let started = std::time::Instant::now();
        let items = match self.suggest(&params.text_document.uri, cursor).await {
            Some((_, text)) => vec![InlineCompletionItem {
                insert_text: text,
                range: Some(Range::new(cursor, cursor)),
            }],
            None => Vec::new(),
        };
        // The server's side of an editor's keystroke-to-ghost-text time.
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            suggested = !items.is_empty(),
            "inline completion answered"
        );
        Ok(InlineCompletionList { items })
    }

    pub async fn view_document(
        &self,
        Checked(params): Checked<ViewDocumentParams>,
    ) -> Result<ViewDocumentResult> {
        let uri = params.uri;
        let (key, snapshot) = {
            let workspace = self.workspace.lock();
            (convert::key(workspace.root(), &uri), workspace.snapshot())
        };
        if let Some(open) = snapshot.open_text(&key) {
            return Ok(view(uri, "editor", open));
        }
        uri.to_file_path()
            .map_err(|()| request_failed(format!("{uri} is not a file URI")))?;
        if snapshot.root().is_none() {
            return Err(request_failed("no workspace root: the client sent none"));
        }
        let read = tokio::task::spawn_blocking(move || snapshot.text(&key))
            .await
            .map_err(|err| request_failed(format!("reading failed: {err}")))?;
        let text = read.map_err(|err| request_failed(err.to_string()))?;
        Ok(view(uri, "disk", text))
    }
}

fn view(uri: Url, source: &str, text: FileText) -> ViewDocumentResult {
    ViewDocumentResult {
        uri,
        source: source.into(),
        version: text.version(),
        text: text.rope().to_string(),
    }
}

#[tower_lsp::async_trait]
impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        let features = convert::client_features(&params.capabilities);
        let _ = self.features.set(features);
        let root = startup::workspace_root(&params);
        let init_layer = params
            .initialization_options
            .filter(|options| !options.is_null())
            .map(|options| config::parse_settings(options, "initializationOptions"));
        self.workspace.lock().set_root(root.clone());
        let mut session = self.session();
        let workspace_file = root.map(|root| root.join(CONFIG_FILE_NAME));
        session.config_sources =
            ConfigSources::new(self.options.user_config.clone(), workspace_file);
        let mut errors = session.config_sources.reload_files();
        errors.extend(
            init_layer.and_then(|layer| session.config_sources.set_initialization_options(layer)),
        );
        self.apply_config(&mut session);
        *lock(&self.startup_errors) = errors;
        Ok(InitializeResult {
            capabilities: startup::capabilities(features.encoding),
            server_info: Some(ServerInfo {
                name: "tierls".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
            }),
        })
    }

    async fn initialized(&self, _: InitializedParams) {
        // Logged here rather than in `initialize`: tower-lsp drops messages to the client
        // until `initialize` has returned.
        let features = self.features();
        tracing::info!(encoding = %features.encoding, "initialized");
        let errors = std::mem::take(&mut *lock(&self.startup_errors));
        self.report_config_errors(errors).await;
        let config = self.session().config.clone();
        if config.index.enabled {
            indexing::start(
                self.workspace.clone(),
                self.client.clone(),
                features.work_done_progress,
                config.index.cache,
            );
        }
        let tiers = TierSet::new(crate::models::machine::detect());
        let _ = self.tiers.set(tiers.clone());
        let root = self.workspace.lock().root().map(ToOwned::to_owned);
        let provided = &self.options.provided_models;
        startup::start_tiers(
            &self.client,
            &tiers,
            &config,
            root.as_deref(),
            provided,
            &self.nodes,
            features.work_done_progress,
        )
        .await;
        if features.watch_files {
            startup::watch_files(&self.client).await;
        }
    }

    async fn shutdown(&self) -> Result<()> {
        self.shared.shutdown_requested.store(true, Ordering::SeqCst);
        tracing::info!("shutdown requested");
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        let item = params.text_document;
        let document = Document::new(&item.text, item.version, item.language_id);
        let replaced = {
            let mut workspace = self.workspace.lock();
            let key = convert::key(workspace.root(), &item.uri);
            workspace.open(&key, document)
        };
        if replaced.is_some() {
            tracing::warn!(uri = %item.uri, "didOpen for a document already open: replaced its text");
        }
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        let uri = params.text_document.uri;
        let changes: Vec<_> = params
            .content_changes
            .into_iter()
            .map(convert::text_change)
            .collect();
        let encoding = self.features().encoding;
        let result = {
            let mut workspace = self.workspace.lock();
            let key = convert::key(workspace.root(), &uri);
            workspace.change(&key, params.text_document.version, &changes, encoding)
        };
        if let Err(err) = result {
            tracing::warn!("didChange ignored: {err}");
        }
    }

    async fn did_save(&self, params: DidSaveTextDocumentParams) {
        let saved = params.text_document.uri.to_file_path().ok();
        let errors = {
            let mut session = self.session();
            let is_config = saved.is_some_and(|saved| {
                session.config_sources.workspace_file() == Some(&saved)
                    || self.options.user_config.as_ref() == Some(&saved)
            });
            if !is_config {
                return;
            }
            let errors = session.config_sources.reload_files();
            let before = session.config.clone();
            self.apply_config(&mut session);
            (errors, before, session.config.clone())
        };
        let (errors, before, after) = errors;
        tracing::info!("configuration reloaded after save");
        self.report_config_errors(errors).await;
        self.reload_tiers(&before, &after);
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        let key = self.key(&params.text_document.uri);
        self.completion.forget(&key);
        let closed = self.workspace.lock().close(&key);
        match closed {
            // The editor's copy is gone: the index goes back to what is on disk.
            Ok(true) => self.disk_sync.send(Job::Reindex(key)),
            Ok(false) => {}
            Err(err) => tracing::warn!("didClose ignored: {err}"),
        }
    }

    async fn did_change_watched_files(&self, params: DidChangeWatchedFilesParams) {
        // A deleted file fails to read, and the worker forgets it: one path for all.
        for change in params.changes {
            self.disk_sync.send(Job::Reindex(self.key(&change.uri)));
        }
    }

    async fn did_create_files(&self, params: CreateFilesParams) {
        for file in params.files {
            if let Ok(uri) = Url::parse(&file.uri) {
                self.disk_sync.send(Job::Reindex(self.key(&uri)));
            }
        }
    }

    async fn did_delete_files(&self, params: DeleteFilesParams) {
        for file in params.files {
            if let Ok(uri) = Url::parse(&file.uri) {
                self.disk_sync.send(Job::Forget(self.key(&uri)));
            }
        }
    }

    async fn did_rename_files(&self, params: RenameFilesParams) {
        for file in params.files {
            if let (Ok(old), Ok(new)) = (Url::parse(&file.old_uri), Url::parse(&file.new_uri)) {
                let (from, to) = (self.key(&old), self.key(&new));
                self.disk_sync.send(Job::Rename { from, to });
            }
        }
    }

    async fn hover(&self, params: HoverParams) -> Result<Option<Hover>> {
        let at = params.text_document_position_params;
        let encoding = self.features().encoding;
        let budget = Duration::from_millis(self.session().config.completion.hover_budget_ms.into());
        let (facts, snapshot) = self.at_cursor(&at, |workspace, key, offset| {
            workspace.hover_facts(key, offset)
        });
        let Some(facts) = facts else { return Ok(None) };
        let root = snapshot.root().map(ToOwned::to_owned);
        let files = Self::texts(snapshot, vec![facts.definition.file.clone()]).await;
        let texts = Texts {
            root: root.as_deref(),
            encoding,
            files: &files,
        };
        let hover::Facts {
            mut markdown,
            explain,
            mut route,
        } = hover::facts(&texts, &facts);
        if let Some((request, hash)) = explain {
            route.budget_ms = budget.as_millis().try_into().unwrap_or(u32::MAX);
            let (model, by) = self.explainer(route);
            let explanation = self.explain.explain(model, request, hash, budget).await;
            if let Some(explanation) = explanation.filter(|text| !text.is_empty()) {
                markdown = crate::core::explain::with_explanation(&markdown, &explanation, by);
            }
        }
        Ok(Some(hover::hover(markdown)))
    }

    async fn completion(&self, params: CompletionParams) -> Result<Option<CompletionResponse>> {
        let at = params.text_document_position;
        let items = match self.suggest(&at.text_document.uri, at.position).await {
            Some((prepared, text)) => vec![completion::completion_item(&prepared, &text)],
            None => Vec::new(),
        };
        // Incomplete: the editor asks again as the user types, and the cache answers fast.
        Ok(Some(CompletionResponse::List(CompletionList {
            is_incomplete: true,
            items,
        })))
    }

    async fn document_symbol(
        &self,
        params: DocumentSymbolParams,
    ) -> Result<Option<DocumentSymbolResponse>> {
        self.disk_sync.settled(DISK_SYNC_WAIT).await;
        let (found, snapshot) = {
            let mut workspace = self.workspace.lock();
            workspace.refresh_index();
            let key = convert::key(workspace.root(), &params.text_document.uri);
            (workspace.document_symbols(&key), workspace.snapshot())
        };
        let Some(found) = found else { return Ok(None) };
        let keys = found
            .first()
            .map(|symbol| symbol.file.clone())
            .into_iter()
            .collect();
        let root = snapshot.root().map(ToOwned::to_owned);
        let files = Self::texts(snapshot, keys).await;
        let texts = Texts {
            root: root.as_deref(),
            encoding: self.features().encoding,
            files: &files,
        };
        Ok(Some(DocumentSymbolResponse::Nested(
            symbols::document_symbols(&texts, &found),
        )))
    }

    async fn symbol(
        &self,
        params: WorkspaceSymbolParams,
    ) -> Result<Option<Vec<SymbolInformation>>> {
        self.disk_sync.settled(DISK_SYNC_WAIT).await;
        let (found, snapshot) = {
            let mut workspace = self.workspace.lock();
            workspace.refresh_index();
            (workspace.search(&params.query), workspace.snapshot())
        };
        let keys = found.iter().map(|symbol| symbol.file.clone()).collect();
        let root = snapshot.root().map(ToOwned::to_owned);
        let files = Self::texts(snapshot, keys).await;
        let texts = Texts {
            root: root.as_deref(),
            encoding: self.features().encoding,
            files: &files,
        };
        Ok(Some(symbols::symbol_information(&texts, &found)))
    }

    async fn goto_definition(
        &self,
        params: GotoDefinitionParams,
    ) -> Result<Option<GotoDefinitionResponse>> {
        self.disk_sync.settled(DISK_SYNC_WAIT).await;
        let at = params.text_document_position_params;
        let encoding = self.features().encoding;
        let (found, snapshot) = self.at_cursor(&at, |workspace, key, offset| {
            workspace.definitions_at(key, offset)
        });
        let Some(found) = found else { return Ok(None) };
        let keys = found.iter().map(|symbol| symbol.file.clone()).collect();
        let root = snapshot.root().map(ToOwned::to_owned);
        let files = Self::texts(snapshot, keys).await;
        let texts = Texts {
            root: root.as_deref(),
            encoding,
            files: &files,
        };
        let locations = symbols::locations(&texts, &found);
        Ok((!locations.is_empty()).then_some(GotoDefinitionResponse::Array(locations)))
    }

    async fn code_action(&self, params: CodeActionParams) -> Result<Option<CodeActionResponse>> {
        let pending: Vec<(u32, String)> = self
            .session()
            .plans
            .pending()
            .map(|(id, plan)| (id, plan.instruction.clone()))
            .collect();
        let uri = &params.text_document.uri;
        let workspace = self.workspace.lock();
        let key = convert::key(workspace.root(), uri);
        Ok(Some(plan_actions::code_actions(
            &workspace,
            &pending,
            uri,
            &key,
            params.range,
        )))
    }

    async fn execute_command(&self, params: ExecuteCommandParams) -> Result<Option<Value>> {
        let token = params.work_done_progress_params.work_done_token;
        let context = self.plan_context();
        let result = match params.command.as_str() {
            ext::PLAN_REFACTOR => {
                to_json(plans::plan_refactor(&context, params.arguments, token).await)
            }
            ext::EXECUTE_PLAN => {
                to_json(plans::execute_plan(&context, params.arguments, token).await)
            }
            ext::DISCARD_PLAN => to_json(plans::discard_plan(&context, params.arguments)),
            ext::EDIT_SELECTION => {
                to_json(plans::edit_selection(&context, params.arguments, token).await)
            }
            other => Err(Error::invalid_params(format!(
                "unknown command `{other}`: tierls runs {}",
                ext::COMMANDS.join(", ")
            ))),
        };
        if let Err(err) = &result {
            tracing::warn!("{}: {}", params.command, err.message);
        }
        result.map(Some)
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        let settings = startup::settings_for_us(params.settings);
        let errors = {
            let mut session = self.session();
            let mut errors = session.config_sources.reload_files();
            if let Some(settings) = settings {
                let layer = config::parse_settings(settings, "workspace/didChangeConfiguration");
                errors.extend(session.config_sources.set_settings(layer));
            }
            let before = session.config.clone();
            self.apply_config(&mut session);
            (errors, before, session.config.clone())
        };
        let (errors, before, after) = errors;
        tracing::info!("configuration reloaded");
        self.report_config_errors(errors).await;
        self.reload_tiers(&before, &after);
    }
}

/// A command's typed result as the JSON `workspace/executeCommand` answers with.
fn to_json<T: serde::Serialize>(result: Result<T>) -> Result<Value> {
    result.and_then(|value| {
        serde_json::to_value(value)
            .map_err(|err| request_failed(format!("encoding the result: {err}")))
    })
}
