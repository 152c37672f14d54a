//! The state of one editor session. Handlers lock it briefly and never across an `.await`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use tower_lsp::lsp_types::Url;

use crate::config::{Config, ConfigSources};
use crate::core::index::language::Language;
use crate::core::index::live::LiveFile;
use crate::core::index::table::Index;
use crate::core::position::PositionEncoding;
use crate::core::store::DocumentStore;

#[derive(Default)]
pub struct Session {
    pub documents: DocumentStore,
    pub encoding: PositionEncoding,
    pub root: Option<PathBuf>,
    pub config_sources: ConfigSources,
    pub config: Config,
    pub index: Index,
    /// The syntax trees of open documents, by index key: the editor's copy wins over disk.
    pub live: HashMap<String, LiveFile>,
    /// Open documents reparsed since their symbols were last extracted: extraction waits
    /// until something reads the index (it costs ~25x an incremental reparse).
    pub dirty: HashSet<String>,
    /// Lines the user edited lately, most recent first (completion context).
    pub recent_edits: std::collections::VecDeque<crate::core::completion::RecentEdit>,
    /// The client shows `$/progress`.
    pub work_done_progress: bool,
    /// The client can watch files for us (`workspace/didChangeWatchedFiles`).
    pub watch_files: bool,
    /// The client opens documents we ask it to (`window/showDocument`).
    pub show_document: bool,
    /// The client takes versioned `documentChanges` in a `WorkspaceEdit`.
    pub document_changes: bool,
    /// The client creates files from a `WorkspaceEdit`.
    pub create_files: bool,
    /// The start-up scan is running.
    pub scanning: bool,
    /// Files the disk sync indexed while the scan ran: the scan read them earlier, so its
    /// copy must not replace the newer one.
    pub synced_during_scan: HashSet<String>,
    /// Plans waiting for the user, and running plan work.
    pub plans: super::plans::PlanStore,
}

impl Session {
    /// How the index names a document: its path relative to the workspace root, or its URI
    /// when it lies outside.
    pub fn index_key(&self, uri: &Url) -> String {
        if let (Ok(path), Some(root)) = (uri.to_file_path(), &self.root)
            && let Ok(relative) = path.strip_prefix(root)
        {
            return relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
        }
        uri.to_string()
    }

    /// The URI of an index key.
    pub fn uri_of(&self, key: &str) -> Option<Url> {
        if key.contains("://") {
            return Url::parse(key).ok();
        }
        Url::from_file_path(self.root.as_ref()?.join(key)).ok()
    }

    /// Parses an open document and indexes the editor's copy.
    pub fn index_open_document(&mut self, uri: &Url, language_id: &str) {
        let key = self.index_key(uri);
        let language =
            Language::from_lsp_id(language_id).or_else(|| Language::from_path(uri.path()));
        let Some(document) = self.documents.get(uri.as_str()) else {
            return;
        };
        let too_large = document.text().len_bytes() as u64 > self.config.index.max_file_bytes;
        let (Some(language), false) = (language, too_large) else {
            self.live.remove(&key);
            return;
        };
        if let Some((live, symbols)) = LiveFile::open(language, document.text()) {
            let bytes = document.text().len_bytes();
            self.index.upsert(&key, language, symbols, bytes);
            self.live.insert(key, live);
        }
    }

    /// Brings an open document's tree and symbols up to date after `edits`.
    pub fn reindex_changed_document(
        &mut self,
        uri: &Url,
        edits: &[crate::core::document::ByteEdit],
    ) {
        let key = self.index_key(uri);
        let Some(document) = self.documents.get(uri.as_str()) else {
            return;
        };
        let bytes = document.text().len_bytes();
        if bytes as u64 > self.config.index.max_file_bytes {
            self.live.remove(&key);
            self.dirty.remove(&key);
            return;
        }
        if let Some(live) = self.live.get_mut(&key) {
            live.reparse(document.text(), edits);
            self.dirty.insert(key.clone());
        }
        // Remember the edited lines (the last edit of a change is enough).
        if let Some(edit) = edits.last() {
            let row = edit
                .new_end_point
                .0
                .min(document.text().len_lines().saturating_sub(1));
            let line = document.text().line(row).to_string();
            if !line.trim().is_empty() {
                self.recent_edits
                    .retain(|recent| !(recent.path == key && recent.line == line));
                self.recent_edits
                    .push_front(crate::core::completion::RecentEdit { path: key, line });
                self.recent_edits.truncate(16);
            }
        }
    }

    /// Extracts the symbols of documents edited since the index last read them. Symbol,
    /// definition and hover handlers call this first; completions do not (see
    /// `lsp/completion.rs`).
    pub fn refresh_index(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            let Some(uri) = self.uri_of(&key) else {
                continue;
            };
            let (Some(live), Some(document)) =
                (self.live.get(&key), self.documents.get(uri.as_str()))
            else {
                continue;
            };
            let symbols = live.symbols(document.text());
            let (language, bytes) = (live.language, document.text().len_bytes());
            self.index.upsert(&key, language, symbols, bytes);
        }
    }

    /// A deleted file or directory: forget everything indexed under it (open documents keep
    /// their editor copy).
    pub fn forget_path(&mut self, key: &str) {
        let prefix = format!("{key}/");
        let doomed: Vec<String> = self
            .index
            .files()
            .map(|(_, entry)| entry.path.clone())
            .filter(|path| {
                (path == key || path.starts_with(&prefix)) && !self.live.contains_key(path)
            })
            .collect();
        for path in doomed {
            self.index.remove(&path);
        }
    }

    /// A renamed file or directory: move what was indexed under it. True when nothing was
    /// indexed under `to` afterwards, so the disk must be read.
    pub fn rename_path(&mut self, from: &str, to: &str) -> bool {
        let prefix = format!("{from}/");
        let moved: Vec<String> = self
            .index
            .files()
            .map(|(_, entry)| entry.path.clone())
            .filter(|path| path == from || path.starts_with(&prefix))
            .collect();
        for path in moved {
            let target = format!("{to}{}", &path[from.len()..]);
            self.index.rename(&path, &target);
            if let Some(live) = self.live.remove(&path) {
                self.live.insert(target, live);
            }
        }
        self.index.file(to).is_none()
    }
}
