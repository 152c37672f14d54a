//! The tower-lsp handlers: convert in, call the core, convert out.
//!
//! Notification handlers mutate the session before their first `.await`: tower-lsp polls
//! handlers concurrently, and a handler that awaited first could be overtaken by the next
//! `didChange`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tower_lsp::jsonrpc::{Error, Result};
use tower_lsp::lsp_types::*;
use tower_lsp::{Client, LanguageServer};

use super::disk_sync::{DiskSync, Job};
use super::ext::{
    InlineCompletionItem, InlineCompletionList, InlineCompletionParams, ViewDocumentParams,
    ViewDocumentResult,
};
use super::session::Session;
use super::{
    ServerOptions, Shared, completion, convert, hover, indexing, plans, request_failed, symbols,
};
use crate::completion::{Completed, CompletionEngine};
use crate::config::Tier;
use crate::config::{self, CONFIG_FILE_NAME, ConfigError, ConfigSources};
use crate::core::document::Document;
use crate::disk;
use crate::logging;
use crate::models::Model;
use crate::models::router::Router;
use crate::models::tiers::TierSet;
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::OnceLock;

/// How long a symbol request waits for file events that came before it to reach the index.
const DISK_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Backend {
    client: Client,
    shared: Arc<Shared>,
    options: ServerOptions,
    session: Arc<Mutex<Session>>,
    /// The models of this machine, set up at `initialized`.
    tiers: OnceLock<Arc<TierSet>>,
    /// The worker nodes, when the configuration names any.
    router: OnceLock<Arc<Router>>,
    completion: CompletionEngine,
    /// Brings the index up to date with the disk, off the session lock.
    disk_sync: DiskSync,
    /// Explanations by the hash of the definition they explain.
    explanations: Mutex<HashMap<u64, String>>,
    /// Configuration errors found during `initialize`, shown once the client can hear them.
    startup_errors: Mutex<Vec<ConfigError>>,
}

impl Backend {
    pub(super) fn new(client: Client, shared: Arc<Shared>, options: ServerOptions) -> Self {
        let session: Arc<Mutex<Session>> = Arc::default();
        Backend {
            client,
            shared,
            options,
            disk_sync: DiskSync::start(session.clone()),
            session,
            startup_errors: Mutex::default(),
            tiers: OnceLock::new(),
            router: OnceLock::new(),
            completion: CompletionEngine::default(),
            explanations: Mutex::default(),
        }
    }

    fn session(&self) -> MutexGuard<'_, Session> {
        lock(&self.session)
    }

    /// Runs `answer` on the session with the texts of the files it needs, never reading
    /// the disk under the session lock: a first pass records which closed files it wants,
    /// they are read off the runtime with the lock released, and a second pass answers
    /// with them (a file it wants only then is left out rather than read under the lock).
    async fn with_texts<T>(
        &self,
        answer: impl for<'s> Fn(&'s Session, &mut symbols::Texts<'s>) -> T,
    ) -> T {
        let (first, wanted, root, max_bytes) = {
            let mut session = self.session();
            session.refresh_index();
            let mut texts = symbols::Texts::new(&session, HashMap::new());
            let first = answer(&session, &mut texts);
            let wanted = texts.wanted();
            let root = session.root.clone();
            (first, wanted, root, session.config.limits.max_file_bytes)
        };
        if wanted.is_empty() {
            return first;
        }
        let read = tokio::task::spawn_blocking(move || {
            symbols::read_from_disk(root.as_deref(), wanted, max_bytes)
        })
        .await
        .unwrap_or_default();
        let session = self.session();
        let mut texts = symbols::Texts::new(&session, read);
        answer(&session, &mut texts)
    }

    /// Re-resolves the configuration and applies what lives outside the session.
    fn apply_config(&self, session: &mut Session) {
        session.config = session.config_sources.resolve();
        self.shared
            .max_message_bytes
            .store(session.config.limits.max_message_bytes, Ordering::Relaxed);
        logging::set_session_level(self.shared.log_session, session.config.log.level);
    }

    async fn report_config_errors(&self, errors: Vec<ConfigError>) {
        for error in errors {
            tracing::error!("configuration ignored, keeping the last good one: {error}");
            let message = format!("tierls: {error} (keeping the last good configuration)");
            self.client.show_message(MessageType::ERROR, message).await;
        }
    }

    /// Sets up the tiers the configuration names (reading GGUF headers only), then loads
    /// the fast tier's model off the runtime; the executor and the planner load when a plan
    /// needs them. Completions answer empty until the fast tier is ready.
    async fn start_tiers(&self) {
        let (tier_configs, node_configs, root) = {
            let session = self.session();
            (
                session.config.tiers.clone(),
                session.config.nodes.clone(),
                session.root.clone(),
            )
        };
        let tiers = TierSet::new(crate::models::machine::detect());
        let _ = self.tiers.set(tiers.clone());
        for (tier, problem) in tiers.configure_all(&tier_configs, root.as_deref()) {
            self.client
                .show_message(
                    MessageType::ERROR,
                    format!("tierls: the {tier} tier: {problem}"),
                )
                .await;
        }
        if !node_configs.is_empty() {
            self.start_nodes(&tiers, &node_configs).await;
        }
        for (tier, model) in &self.options.provided_models {
            tiers.provide(*tier, model.clone());
        }
        if !tiers.is_configured(Tier::Fast)
            || self
                .router
                .get()
                .is_some_and(|r| r.tiers().contains(&Tier::Fast))
        {
            return;
        }
        let loader = tiers.clone();
        let client = self.client.clone();
        let span = tracing::Span::current();
        tokio::spawn(async move {
            let loaded = tokio::task::spawn_blocking(move || loader.load(Tier::Fast)).await;
            let _entered = span.enter();
            match loaded {
                Ok(Ok(())) => tracing::info!("the fast tier is ready"),
                Ok(Err(err)) => {
                    tracing::error!("the fast tier could not load: {err}");
                    client
                        .show_message(
                            MessageType::ERROR,
                            format!("tierls: the fast tier could not load: {err}"),
                        )
                        .await;
                }
                Err(err) => tracing::error!("loading the fast tier panicked: {err}"),
            }
        });
    }

    /// Routes the tiers worker nodes serve through the router, probes the nodes now and then
    /// every few seconds, and tells the editor when a node's health changes.
    async fn start_nodes(&self, tiers: &Arc<TierSet>, configs: &[config::NodeConfig]) {
        let (router, mut notes) = Router::new(configs);
        // Known to the status request before any tier is routed through it.
        let _ = self.router.set(router.clone());
        // Probed first: a route's context comes from what its nodes report.
        router.probe_now().await;
        notes.extend(router.serve(tiers));
        for note in notes {
            tracing::warn!("{note}");
            self.client
                .show_message(MessageType::WARNING, format!("tierls: {note}"))
                .await;
        }
        let client = self.client.clone();
        let runtime = tokio::runtime::Handle::current();
        let watched = Arc::downgrade(&router);
        router.set_on_change(move || {
            let Some(router) = watched.upgrade() else {
                return;
            };
            let client = client.clone();
            let nodes = router.status();
            runtime.spawn(async move {
                client
                    .send_notification::<super::ext::NodesChanged>(
                        serde_json::json!({ "nodes": nodes }),
                    )
                    .await;
            });
        });
        router.start_probing(crate::models::router::PROBE_EVERY);
    }

    fn fast_model(&self) -> Option<Arc<dyn Model>> {
        self.tiers.get()?.get(Tier::Fast).ok()
    }

    /// Prepares a completion and runs it; `None` when there is nothing to suggest.
    async fn suggest(
        &self,
        uri: &Url,
        position: Position,
    ) -> Option<(completion::Prepared, String)> {
        let model = self.fast_model()?;
        let info = model.info().clone();
        let prepared = completion::prepare(
            &self.session(),
            uri,
            position,
            info.has_fim,
            info.slots,
            info.n_ctx,
        )?;
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
            tiers: self.tiers.get().cloned(),
        }
    }

    /// `window/workDoneProgress/cancel`: stops the plan work behind the token.
    pub async fn work_done_progress_cancel(&self, params: WorkDoneProgressCancelParams) {
        plans::cancel_progress(&mut self.session(), &params.token);
    }

    pub async fn status(&self) -> Result<Value> {
        let tiers: Vec<Value> = Tier::ALL
            .iter()
            .map(|&tier| {
                let (model, state) = match self.tiers.get() {
                    Some(tiers) => tiers.describe(tier),
                    None => (None, crate::models::tiers::TierStatus::NotConfigured),
                };
                let (state, error) = match state {
                    crate::models::tiers::TierStatus::Failed(error) => ("failed", Some(error)),
                    other => (other.name(), None),
                };
                serde_json::json!({ "tier": tier.to_string(), "model": model, "state": state, "error": error })
            })
            .collect();
        let session = self.session();
        let index = session.index.stats();
        Ok(serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "root": session.root,
            "tiers": tiers,
            "index": { "files": index.files, "definitions": index.definitions },
            "plans": plans::summary(&session),
            "nodes": self.router.get().map_or(Value::Array(Vec::new()), |router| router.status()),
        }))
    }

    pub async fn completion_stats(&self) -> Result<crate::completion::EngineStats> {
        Ok(self.completion.stats())
    }

    pub async fn inline_completion(
        &self,
        params: InlineCompletionParams,
    ) -> Result<InlineCompletionList> {
        let cursor = params.position;
        let items = match self.suggest(&params.text_document.uri, cursor).await {
            Some((_, text)) => vec![InlineCompletionItem {
                insert_text: text,
                range: Some(Range::new(cursor, cursor)),
            }],
            None => Vec::new(),
        };
        Ok(InlineCompletionList { items })
    }

    /// Asks the client to tell us about source files that change on disk, when it can.
    async fn watch_source_files(&self) {
        if !self.session().watch_files {
            return;
        }
        let options = DidChangeWatchedFilesRegistrationOptions {
            watchers: vec![FileSystemWatcher {
                glob_pattern: GlobPattern::String("**/*".into()),
                kind: None,
            }],
        };
        let registration = Registration {
            id: "tierls/watch-source-files".into(),
            method: "workspace/didChangeWatchedFiles".into(),
            register_options: serde_json::to_value(options).ok(),
        };
        if let Err(err) = self.client.register_capability(vec![registration]).await {
            tracing::warn!("the client refused to watch files: {err}");
        }
    }

    pub async fn view_document(&self, params: ViewDocumentParams) -> Result<ViewDocumentResult> {
        let uri = params.uri;
        let (open, root, max_file_bytes) = {
            let session = self.session();
            let open = session
                .documents
                .get(uri.as_str())
                .map(|document| (document.version(), document.text().to_string()));
            (
                open,
                session.root.clone(),
                session.config.limits.max_file_bytes,
            )
        };
        if let Some((version, text)) = open {
            return Ok(ViewDocumentResult {
                uri,
                source: "editor".into(),
                version: Some(version),
                text,
            });
        }
        let path = uri
            .to_file_path()
            .map_err(|()| request_failed(format!("{uri} is not a file URI")))?;
        let root = root.ok_or_else(|| request_failed("no workspace root: the client sent none"))?;
        let read =
            tokio::task::spawn_blocking(move || disk::read_text(&root, &path, max_file_bytes))
                .await
                .map_err(|err| request_failed(format!("reading failed: {err}")))?;
        let text = read.map_err(|err| request_failed(err.to_string()))?;
        Ok(ViewDocumentResult {
            uri,
            source: "disk".into(),
            version: None,
            text,
        })
    }
}

#[tower_lsp::async_trait]
impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        let encoding = convert::negotiate_encoding(&params.capabilities);
        let root = workspace_root(&params);
        let init_layer = params
            .initialization_options
            .filter(|options| !options.is_null())
            .map(|options| config::parse_settings(options, "initializationOptions"));
        {
            let mut session = self.session();
            session.encoding = encoding;
            session.work_done_progress = params
                .capabilities
                .window
                .as_ref()
                .and_then(|window| window.work_done_progress)
                .unwrap_or(false);
            session.watch_files = params
                .capabilities
                .workspace
                .as_ref()
                .and_then(|workspace| workspace.did_change_watched_files.as_ref())
                .and_then(|watched| watched.dynamic_registration)
                .unwrap_or(false);
            let workspace_caps = params.capabilities.workspace.as_ref();
            let edit_caps = workspace_caps.and_then(|workspace| workspace.workspace_edit.as_ref());
            session.document_changes = edit_caps
                .and_then(|edit| edit.document_changes)
                .unwrap_or(false);
            session.create_files = edit_caps
                .and_then(|edit| edit.resource_operations.as_ref())
                .is_some_and(|operations| operations.contains(&ResourceOperationKind::Create));
            session.show_document = params
                .capabilities
                .window
                .as_ref()
                .and_then(|window| window.show_document.as_ref())
                .is_some_and(|show| show.support);
            session.root = root.clone();
            let workspace_file = root.map(|root| root.join(CONFIG_FILE_NAME));
            session.config_sources =
                ConfigSources::new(self.options.user_config.clone(), workspace_file);
            let mut errors = session.config_sources.reload_files();
            errors.extend(
                init_layer
                    .and_then(|layer| session.config_sources.set_initialization_options(layer)),
            );
            self.apply_config(&mut session);
            *lock(&self.startup_errors) = errors;
        }
        Ok(InitializeResult {
            capabilities: capabilities(encoding),
            server_info: Some(ServerInfo {
                name: "tierls".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
            }),
        })
    }

    async fn initialized(&self, _: InitializedParams) {
        // Logged here rather than in `initialize`: tower-lsp drops messages to the client
        // until `initialize` has returned.
        tracing::info!(encoding = %self.session().encoding, "initialized");
        let errors = std::mem::take(&mut *lock(&self.startup_errors));
        self.report_config_errors(errors).await;
        let progress = self.session().work_done_progress;
        indexing::start(self.session.clone(), self.client.clone(), progress);
        self.start_tiers().await;
        self.watch_source_files().await;
    }

    async fn shutdown(&self) -> Result<()> {
        self.shared.shutdown_requested.store(true, Ordering::SeqCst);
        tracing::info!("shutdown requested");
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        let item = params.text_document;
        let document = Document::new(&item.text, item.version, item.language_id.clone());
        let replaced = {
            let mut session = self.session();
            let replaced = session.documents.open(item.uri.as_str(), document);
            session.index_open_document(&item.uri, &item.language_id);
            replaced
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
        let result = {
            let mut session = self.session();
            let encoding = session.encoding;
            let result = session.documents.change(
                uri.as_str(),
                params.text_document.version,
                &changes,
                encoding,
            );
            if let Ok(edits) = &result {
                session.reindex_changed_document(&uri, edits);
            }
            result
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
            self.apply_config(&mut session);
            errors
        };
        tracing::info!("configuration reloaded after save");
        self.report_config_errors(errors).await;
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        let closed = {
            let mut session = self.session();
            let uri = params.text_document.uri;
            let closed = session.documents.close(uri.as_str());
            let key = session.index_key(&uri);
            self.completion.cancel(&key);
            if session.live.remove(&key).is_some() {
                // The editor's copy is gone: the index goes back to what is on disk.
                self.disk_sync.send(Job::Reindex(key));
            }
            closed
        };
        if let Err(err) = closed {
            tracing::warn!("didClose ignored: {err}");
        }
    }

    async fn did_change_watched_files(&self, params: DidChangeWatchedFilesParams) {
        let session = self.session();
        for change in params.changes {
            // A deleted file fails to read, and the worker forgets it: one path for all.
            self.disk_sync
                .send(Job::Reindex(session.index_key(&change.uri)));
        }
    }

    async fn did_create_files(&self, params: CreateFilesParams) {
        let session = self.session();
        for file in params.files {
            if let Ok(uri) = Url::parse(&file.uri) {
                self.disk_sync.send(Job::Reindex(session.index_key(&uri)));
            }
        }
    }

    async fn did_delete_files(&self, params: DeleteFilesParams) {
        let session = self.session();
        for file in params.files {
            if let Ok(uri) = Url::parse(&file.uri) {
                self.disk_sync.send(Job::Forget(session.index_key(&uri)));
            }
        }
    }

    async fn did_rename_files(&self, params: RenameFilesParams) {
        let session = self.session();
        for file in params.files {
            if let (Ok(old), Ok(new)) = (Url::parse(&file.old_uri), Url::parse(&file.new_uri)) {
                let (from, to) = (session.index_key(&old), session.index_key(&new));
                self.disk_sync.send(Job::Rename { from, to });
            }
        }
    }

    async fn hover(&self, params: HoverParams) -> Result<Option<Hover>> {
        let position = params.text_document_position_params;
        let budget = self.session().config.completion.hover_budget_ms;
        let facts = self
            .with_texts(|session, texts| {
                hover::facts(
                    session,
                    texts,
                    &position.text_document.uri,
                    position.position,
                )
            })
            .await;
        let Some(facts) = facts else { return Ok(None) };
        let mut markdown = facts.markdown;
        if let Some((mut request, hash)) = facts.explain {
            let cached = lock(&self.explanations).get(&hash).cloned();
            let explanation = match (cached, self.fast_model()) {
                (Some(cached), _) => Some(cached),
                (None, Some(model)) if budget > 0 => {
                    request.time_limit = Some(std::time::Duration::from_millis(budget.into()));
                    let slots = model.info().slots;
                    match crate::models::generate(
                        &*model,
                        slots - 1,
                        request,
                        crate::models::Cancel::new(),
                    )
                    .await
                    {
                        Ok(answer)
                            if answer.stop_reason
                                != crate::core::generation::StopReason::TimeLimit =>
                        {
                            let text =
                                crate::core::hidden::without_bidi_controls(answer.text.trim());
                            lock(&self.explanations).insert(hash, text.clone());
                            Some(text)
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(explanation) = explanation.filter(|text| !text.is_empty()) {
                markdown.push_str(&format!("\n\n---\n*fast tier:* {explanation}"));
            }
        }
        Ok(Some(Hover {
            contents: HoverContents::Markup(MarkupContent {
                kind: MarkupKind::Markdown,
                value: markdown,
            }),
            range: None,
        }))
    }

    async fn completion(&self, params: CompletionParams) -> Result<Option<CompletionResponse>> {
        let position = params.text_document_position;
        let items = match self
            .suggest(&position.text_document.uri, position.position)
            .await
        {
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
        let uri = &params.text_document.uri;
        let found = self
            .with_texts(|session, texts| symbols::document_symbols(session, texts, uri))
            .await;
        Ok(found.map(DocumentSymbolResponse::Nested))
    }

    async fn symbol(
        &self,
        params: WorkspaceSymbolParams,
    ) -> Result<Option<Vec<SymbolInformation>>> {
        self.disk_sync.settled(DISK_SYNC_WAIT).await;
        let query = &params.query;
        let found = self
            .with_texts(|session, texts| symbols::workspace_symbols(session, texts, query))
            .await;
        Ok(Some(found))
    }

    async fn code_action(&self, params: CodeActionParams) -> Result<Option<CodeActionResponse>> {
        let session = self.session();
        let actions = plans::code_actions(&session, &params.text_document.uri, params.range);
        Ok(Some(actions))
    }

    async fn execute_command(&self, params: ExecuteCommandParams) -> Result<Option<Value>> {
        let token = params.work_done_progress_params.work_done_token;
        let context = self.plan_context();
        let result = match params.command.as_str() {
            plans::PLAN_REFACTOR => plans::plan_refactor(&context, params.arguments, token).await,
            plans::EXECUTE_PLAN => plans::execute_plan(&context, params.arguments, token).await,
            plans::DISCARD_PLAN => plans::discard_plan(&context, params.arguments),
            other => Err(Error::invalid_params(format!(
                "unknown command `{other}`: tierls runs {}",
                plans::COMMANDS.join(", ")
            ))),
        };
        if let Err(err) = &result {
            tracing::warn!("{}: {}", params.command, err.message);
        }
        result.map(Some)
    }

    async fn goto_definition(
        &self,
        params: GotoDefinitionParams,
    ) -> Result<Option<GotoDefinitionResponse>> {
        self.disk_sync.settled(DISK_SYNC_WAIT).await;
        let position = params.text_document_position_params;
        let (uri, at) = (&position.text_document.uri, position.position);
        let found = self
            .with_texts(|session, texts| symbols::definitions(session, texts, uri, at))
            .await;
        Ok(found
            .filter(|locations| !locations.is_empty())
            .map(GotoDefinitionResponse::Array))
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        let settings = settings_for_us(params.settings);
        let errors = {
            let mut session = self.session();
            let mut errors = session.config_sources.reload_files();
            if let Some(settings) = settings {
                let layer = config::parse_settings(settings, "workspace/didChangeConfiguration");
                errors.extend(session.config_sources.set_settings(layer));
            }
            self.apply_config(&mut session);
            errors
        };
        tracing::info!("configuration reloaded");
        self.report_config_errors(errors).await;
    }
}

fn capabilities(encoding: crate::core::position::PositionEncoding) -> ServerCapabilities {
    ServerCapabilities {
        position_encoding: Some(convert::encoding_kind(encoding)),
        text_document_sync: Some(TextDocumentSyncCapability::Options(
            TextDocumentSyncOptions {
                open_close: Some(true),
                change: Some(TextDocumentSyncKind::INCREMENTAL),
                save: Some(TextDocumentSyncSaveOptions::SaveOptions(SaveOptions {
                    include_text: Some(false),
                })),
                ..Default::default()
            },
        )),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        completion_provider: Some(CompletionOptions {
            resolve_provider: Some(false),
            ..Default::default()
        }),
        document_symbol_provider: Some(OneOf::Left(true)),
        workspace_symbol_provider: Some(OneOf::Left(true)),
        definition_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(CodeActionProviderCapability::Options(CodeActionOptions {
            code_action_kinds: Some(vec![CodeActionKind::REFACTOR]),
            ..CodeActionOptions::default()
        })),
        execute_command_provider: Some(ExecuteCommandOptions {
            commands: plans::COMMANDS.iter().map(|c| (*c).to_owned()).collect(),
            work_done_progress_options: WorkDoneProgressOptions {
                work_done_progress: Some(true),
            },
        }),
        workspace: Some(WorkspaceServerCapabilities {
            workspace_folders: None,
            file_operations: Some(WorkspaceFileOperationsServerCapabilities {
                did_rename: Some(all_files_filter()),
                did_create: Some(all_files_filter()),
                did_delete: Some(all_files_filter()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn all_files_filter() -> FileOperationRegistrationOptions {
    FileOperationRegistrationOptions {
        filters: vec![FileOperationFilter {
            scheme: Some("file".into()),
            pattern: FileOperationPattern {
                glob: "**/*".into(),
                matches: None,
                options: None,
            },
        }],
    }
}

fn workspace_root(params: &InitializeParams) -> Option<PathBuf> {
    let folder = params
        .workspace_folders
        .as_ref()
        .and_then(|folders| folders.first())
        .map(|folder| &folder.uri);
    #[allow(deprecated)] // `rootUri` and `rootPath` are what older clients send.
    let uri = folder.or(params.root_uri.as_ref());
    #[allow(deprecated)]
    let from_path = params.root_path.as_ref().map(PathBuf::from);
    uri.and_then(|uri| uri.to_file_path().ok()).or(from_path)
}

/// Editors send either our section (`{"tierls": {...}}`, as VS Code does) or the bare table.
fn settings_for_us(settings: Value) -> Option<Value> {
    match settings {
        Value::Null => None,
        Value::Object(mut map) if map.contains_key("tierls") => {
            map.remove("tierls").filter(|v| !v.is_null())
        }
        Value::Object(map) if map.is_empty() => None,
        other => Some(other),
    }
}
