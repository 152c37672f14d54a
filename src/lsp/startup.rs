//! Setting a session up: the server's capabilities, the workspace root and settings the
//! client sends, the tiers and worker nodes, and the file watch.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tower_lsp::Client;
use tower_lsp::lsp_types::*;

use super::convert;
use super::ext::COMMANDS;
use crate::config::{self, Tier};
use crate::models::tiers::TierSet;

/// Sets up the tiers the configuration names (reading GGUF headers only), routes the tiers
/// worker nodes serve, then loads the fast tier's model off the runtime; the executor and
/// the planner load when a plan needs them. Completions answer empty until the fast tier is
/// ready.
pub(super) async fn start_tiers(
    client: &Client,
    tiers: &Arc<TierSet>,
    config: &config::Config,
    root: Option<&std::path::Path>,
    provided: &super::ProvidedModels,
    nodes: &super::nodes::Nodes,
    progress_supported: bool,
) {
    // Models still to download are configured when they are in, not reported missing.
    let downloads = super::downloads::missing(&config.tiers);
    for (tier, problem) in tiers.configure_all(&config.tiers, root) {
        if downloads.iter().any(|(waiting, _)| *waiting == tier) {
            continue;
        }
        client
            .show_message(
                MessageType::ERROR,
                format!("tierls: the {tier} tier: {problem}"),
            )
            .await;
    }
    nodes
        .apply(nodes.next_change(), client, tiers, &config.nodes)
        .await;
    for (tier, model) in provided {
        tiers.provide(*tier, model.clone());
    }
    // Loaded now even when nodes also serve the tier: completions are the reason to have
    // the model here.
    if tiers.local_info(Tier::Fast).is_some() {
        load_fast_tier(client.clone(), tiers.clone());
    }
    for (tier, model) in downloads {
        super::downloads::start(
            client.clone(),
            tiers.clone(),
            tier,
            model,
            config.tiers.get(tier).clone(),
            progress_supported,
        );
    }
}

fn load_fast_tier(client: Client, tiers: Arc<TierSet>) {
    let span = tracing::Span::current();
    tokio::spawn(async move {
        let loaded = tokio::task::spawn_blocking(move || tiers.load(Tier::Fast)).await;
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

/// Asks the client to tell us about files that change on disk.
pub(super) async fn watch_files(client: &Client) {
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
    if let Err(err) = client.register_capability(vec![registration]).await {
        tracing::warn!("the client refused to watch files: {err}");
    }
}

pub(super) fn capabilities(
    encoding: crate::core::position::PositionEncoding,
) -> ServerCapabilities {
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
            commands: COMMANDS.iter().map(|c| (*c).to_owned()).collect(),
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

pub(super) fn workspace_root(params: &InitializeParams) -> Option<PathBuf> {
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
pub(super) fn settings_for_us(settings: Value) -> Option<Value> {
    match settings {
        Value::Null => None,
        Value::Object(mut map) if map.contains_key("tierls") => {
            map.remove("tierls").filter(|v| !v.is_null())
        }
        Value::Object(map) if map.is_empty() => None,
        other => Some(other),
    }
}
