//! The workspace layer: one place that owns what tierls knows of the workspace, below every
//! front end (the LSP shell, `tierls plan`, `tierls index`, the benchmarks, the tests).
//!
//! [`Workspace`] holds the editor's documents, the index, the open documents' live trees,
//! the set of documents whose symbols are stale, and the lines edited lately. Everything is
//! keyed by a [`Key`]: the path relative to the root with `/` separators, or the URI for a
//! document outside the root. Changes arrive as values (`open`, `change`, `close`, and the
//! disk sync's [`DiskIndexed`]); readers take a [`Snapshot`], which answers "a file's
//! current text" (the editor's copy, else the disk's, confined to the root) with no lock
//! held. [`Snapshot`] is the only code that reads a workspace file; the start-up scan goes
//! through [`scan`] here as well.
//!
//! This layer knows nothing of LSP. It does not use the async runtime, except the disk
//! sync's "settled" signal, which is a `tokio::sync::watch`.

pub mod disk_sync;
pub mod queries;
pub mod snapshot;

pub use snapshot::{CurrentFile, FileText, Snapshot};

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::completion::RecentEdit;
use crate::core::document::{Document, TextChange};
use crate::core::index::extract::FileSymbols;
use crate::core::index::language::Language;
use crate::core::index::live::LiveFile;
use crate::core::index::table::Index;
use crate::core::position::PositionEncoding;
use crate::core::store::{DocumentStore, StoreError};
use crate::scan::cache::IndexSink;
use crate::scan::{ScanOptions, ScanStats, ScannedFile};
use crate::sync::lock;

/// How the workspace names a file: its path relative to the root (`src/app.py`), or its URI
/// when it lies outside the root.
pub type Key = String;

/// True for a key that names a file outside the root: its disk text is never read.
pub fn is_outside(key: &str) -> bool {
    key.contains("://")
}

/// The most recent edits remembered for completion context.
const RECENT_EDITS: usize = 16;

/// How large a file the workspace reads or indexes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Larger files are not indexed (`index.max_file_kb`).
    pub index_bytes: u64,
    /// Larger files are not read for requests and plans (`limits.max_file_mb`).
    pub read_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        let config = crate::config::Config::default();
        Limits {
            index_bytes: config.index.max_file_bytes,
            read_bytes: config.limits.max_file_bytes,
        }
    }
}

#[derive(Default)]
pub struct Workspace {
    root: Option<PathBuf>,
    limits: Limits,
    /// The editor's documents, by key.
    documents: DocumentStore,
    index: Index,
    /// The syntax trees of open documents: the editor's copy wins over the disk.
    live: HashMap<Key, LiveFile>,
    /// Open documents reparsed since their symbols were last extracted: extraction waits
    /// until something reads the index (it costs ~25x an incremental reparse).
    dirty: HashSet<Key>,
    /// Lines the user edited lately, most recent first (completion context).
    recent_edits: VecDeque<RecentEdit>,
    /// The start-up scan is running.
    scanning: bool,
    /// Files the disk sync indexed while the scan ran: the scan read them earlier, so its
    /// copy must not replace the newer one.
    synced_during_scan: HashSet<Key>,
    /// Source files the last scan left out as generated or too large.
    unindexed: Vec<(Key, crate::scan::Skip)>,
}

/// One file as the disk sync read and parsed it, or `None` when it is gone or unreadable.
pub struct DiskIndexed {
    pub language: Language,
    pub symbols: FileSymbols,
    pub bytes: usize,
}

impl Workspace {
    pub fn new(root: Option<PathBuf>, limits: Limits) -> Self {
        Workspace {
            root,
            limits,
            ..Workspace::default()
        }
    }

    /// A workspace on disk, scanned now (`tierls plan`, `tierls index`, the benchmarks):
    /// `progress` hears the number of files seen and the last one's path.
    pub fn scanned(
        root: &Path,
        limits: Limits,
        threads: usize,
        progress: &mut dyn FnMut(usize, &str),
    ) -> (Workspace, ScanStats) {
        Self::scanned_with(root, limits, threads, false, progress)
    }

    /// [`scanned`](Self::scanned), through the persisted index when `cache` is set.
    pub fn scanned_with(
        root: &Path,
        limits: Limits,
        threads: usize,
        cache: bool,
        progress: &mut dyn FnMut(usize, &str),
    ) -> (Workspace, ScanStats) {
        let mut workspace = Workspace::new(None, limits);
        workspace.set_root(Some(root.to_owned()));
        let options = ScanOptions {
            max_file_bytes: limits.index_bytes,
            threads,
            ..ScanOptions::default()
        };
        let cache_file = cache
            .then(|| crate::scan::cache::cache_path(root))
            .flatten();
        let stats = if let Some(cache_file) = cache_file {
            crate::scan::cache::scan_with_cache(
                root,
                &cache_file,
                &options,
                &mut workspace,
                progress,
            )
        } else {
            let mut index = |file| workspace.index_scanned(file);
            crate::scan::scan(root, &options, &mut index, progress)
        };
        workspace.index.settle();
        workspace.unindexed = stats.unindexed.clone();
        (workspace, stats)
    }

    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Source files the last scan did not index because they are generated or too large.
    pub fn unindexed(&self) -> &[(Key, crate::scan::Skip)] {
        &self.unindexed
    }

    /// The root the editor named at `initialize`; a trailing `/` is dropped, so that errors
    /// and keys show one spelling of it.
    pub fn set_root(&mut self, root: Option<PathBuf>) {
        self.root = root.map(|root| root.components().collect());
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn document(&self, key: &str) -> Option<&Document> {
        self.documents.get(key)
    }

    pub fn is_open(&self, key: &str) -> bool {
        self.documents.get(key).is_some()
    }

    pub fn recent_edits(&self) -> Vec<RecentEdit> {
        self.recent_edits.iter().cloned().collect()
    }

    /// What readers need to see the files as they are now, with no lock held: cheap (ropes
    /// share their text).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.root.clone(), self.limits.read_bytes, &self.documents)
    }

    // -----------------------------------------------------------------------------------
    // Changes from the editor

    /// Opens a document and indexes the editor's copy; returns the document it replaced.
    pub fn open(&mut self, key: &str, document: Document) -> Option<Document> {
        let language =
            Language::from_lsp_id(document.language_id()).or_else(|| Language::from_path(key));
        let replaced = self.documents.open(key, document);
        self.index_open_document(key, language);
        replaced
    }

    fn index_open_document(&mut self, key: &str, language: Option<Language>) {
        let Some(document) = self.documents.get(key) else {
            return;
        };
        let too_large = document.text().len_bytes() as u64 > self.limits.index_bytes;
        let (Some(language), false) = (language, too_large) else {
            self.live.remove(key);
            return;
        };
        if let Some((live, symbols)) = LiveFile::open(language, document.text()) {
            let bytes = document.text().len_bytes();
            self.index.upsert(key, language, symbols, bytes);
            self.live.insert(key.to_owned(), live);
        }
    }

    /// Applies an editor change (whole or not at all) and brings the document's tree up to
    /// date; its symbols are extracted when the index is next read.
    pub fn change(
        &mut self,
        key: &str,
        version: i32,
        changes: &[TextChange],
        encoding: PositionEncoding,
    ) -> Result<(), StoreError> {
        let edits = self.documents.change(key, version, changes, encoding)?;
        let Some(document) = self.documents.get(key) else {
            return Ok(());
        };
        let bytes = document.text().len_bytes();
        if bytes as u64 > self.limits.index_bytes {
            self.live.remove(key);
            self.dirty.remove(key);
            return Ok(());
        }
        if let Some(live) = self.live.get_mut(key) {
            live.reparse(document.text(), &edits);
            self.dirty.insert(key.to_owned());
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
                self.recent_edits.push_front(RecentEdit {
                    path: key.to_owned(),
                    line,
                });
                self.recent_edits.truncate(RECENT_EDITS);
            }
        }
        Ok(())
    }

    /// Closes a document. True when the index held the editor's copy, which must now give
    /// way to the disk's (the caller queues a [`disk_sync::Job::Reindex`]); a document outside
    /// the root is dropped from the index instead.
    pub fn close(&mut self, key: &str) -> Result<bool, StoreError> {
        self.documents.close(key)?;
        self.dirty.remove(key);
        let had_tree = self.live.remove(key).is_some();
        if is_outside(key) {
            self.index.remove(key);
            return Ok(false);
        }
        Ok(had_tree)
    }

    /// Extracts the symbols of documents edited since the index last read them. Symbol,
    /// definition, hover and plan requests call this first; completions call
    /// `refresh_index_except` (re-extracting the document being typed in on every keystroke
    /// costs milliseconds, and its last extraction is close enough).
    pub fn refresh_index(&mut self) {
        self.refresh_index_except("");
    }

    /// `refresh_index` for every edited document but `key`: a completion's context comes
    /// from other files' newest text (edited in the editor, not yet saved), which costs one
    /// extraction per document edited since, not one per keystroke.
    pub fn refresh_index_except(&mut self, key: &str) {
        let kept = self.dirty.take(key);
        for key in std::mem::take(&mut self.dirty) {
            let (Some(live), Some(document)) = (self.live.get(&key), self.documents.get(&key))
            else {
                continue;
            };
            let symbols = live.symbols(document.text());
            let (language, bytes) = (live.language, document.text().len_bytes());
            self.index.upsert(&key, language, symbols, bytes);
        }
        self.dirty.extend(kept);
    }

    // -----------------------------------------------------------------------------------
    // Changes from the disk

    /// The start-up scan begins: files the disk sync indexes meanwhile keep their newer copy.
    pub fn begin_scan(&mut self) {
        self.scanning = true;
        self.index.begin_bulk_load();
    }

    pub fn end_scan(&mut self) {
        self.scanning = false;
        self.synced_during_scan.clear();
        self.index.settle();
    }

    /// One file of the start-up scan: the editor's copy and what the disk sync read since
    /// both win over it.
    pub fn index_scanned(&mut self, file: ScannedFile) {
        if !self.live.contains_key(&file.path) && !self.synced_during_scan.contains(&file.path) {
            self.index
                .upsert(&file.path, file.language, file.symbols, file.bytes);
        }
    }

    /// True when the index holds the editor's copy of `key`, which the disk's never replaces.
    pub fn has_editor_tree(&self, key: &str) -> bool {
        self.live.contains_key(key)
    }

    /// Swaps in what the disk sync read of `key` (or forgets it when the read found nothing),
    /// unless the editor opened it meanwhile.
    pub fn apply_disk(&mut self, key: &str, indexed: Option<DiskIndexed>) {
        if self.live.contains_key(key) {
            return;
        }
        if self.scanning {
            self.synced_during_scan.insert(key.to_owned());
        }
        match indexed {
            Some(found) => {
                self.index
                    .upsert(key, found.language, found.symbols, found.bytes);
            }
            None => {
                self.index.remove(key);
            }
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

/// The workspace shared between the handlers, the disk sync, the scan and the plan driver.
/// Every critical section is short: nothing reads the disk or awaits under the lock.
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<Workspace>>);

/// A workspace scanned alone (`tierls index`, `tierls plan`).
impl IndexSink for Workspace {
    fn expect_names(&mut self, names: usize) {
        self.index.reserve_names(names);
    }

    fn add(&mut self, file: ScannedFile) {
        self.index_scanned(file);
    }

    fn name_count(&self) -> usize {
        self.index.name_count()
    }
}

/// The server's workspace, scanned while the editor works in it: one short lock per file.
impl IndexSink for &Shared {
    fn expect_names(&mut self, names: usize) {
        self.lock().index.reserve_names(names);
    }

    fn add(&mut self, file: ScannedFile) {
        self.lock().index_scanned(file);
    }

    fn name_count(&self) -> usize {
        self.lock().index.name_count()
    }
}

impl Shared {
    pub fn new(workspace: Workspace) -> Self {
        Shared(Arc::new(Mutex::new(workspace)))
    }

    pub fn lock(&self) -> MutexGuard<'_, Workspace> {
        lock(&self.0)
    }

    /// Builds the repo map's graph, if it is not yet, in steps of a short lock each (about
    /// 10 ms on the kernel), so that the first plan does not build it under one lock while
    /// completions wait (half a second on the kernel's 55,000 files). Built on the first
    /// plan, not after the scan: the graph and a map's working space raise the kernel's
    /// peak by about 155 MiB, which a user who never plans should not pay. Blocking: call
    /// it off the async runtime.
    pub fn build_repo_graph(&self) {
        use crate::core::index::repo_map::{GRAPH_ROWS_PER_STEP, build_graph_step};
        let started = std::time::Instant::now();
        let mut steps = 0;
        loop {
            steps += 1;
            if build_graph_step(self.lock().index(), GRAPH_ROWS_PER_STEP) {
                break;
            }
            // The mutex is not fair: without a pause this thread takes it back before a
            // handler woken by the unlock can, and the steps would hold it end to end.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if steps > 1 {
            tracing::debug!(
                "the repo map's graph took {:.2} s in {steps} steps",
                started.elapsed().as_secs_f64()
            );
        }
    }

    /// A snapshot with the index's stale symbols refreshed first.
    pub fn snapshot(&self) -> Snapshot {
        let mut workspace = self.lock();
        workspace.refresh_index();
        workspace.snapshot()
    }

    /// Scans the root into the index on the calling thread, one short lock per file.
    /// With `cache`, through the persisted index (`scan::cache`).
    pub fn scan(
        &self,
        threads: usize,
        cache: bool,
        progress: &mut dyn FnMut(usize, &str),
    ) -> ScanStats {
        let (root, limits) = {
            let mut workspace = self.lock();
            let Some(root) = workspace.root.clone() else {
                return ScanStats::default();
            };
            workspace.begin_scan();
            (root, workspace.limits)
        };
        let options = ScanOptions {
            max_file_bytes: limits.index_bytes,
            threads,
            ..ScanOptions::default()
        };
        let cache_file = cache
            .then(|| crate::scan::cache::cache_path(&root))
            .flatten();
        let stats = if let Some(cache_file) = cache_file {
            crate::scan::cache::scan_with_cache(&root, &cache_file, &options, &mut &*self, progress)
        } else {
            let mut index = |file| self.lock().index_scanned(file);
            crate::scan::scan(&root, &options, &mut index, progress)
        };
        let mut workspace = self.lock();
        workspace.end_scan();
        workspace.unindexed = stats.unindexed.clone();
        drop(workspace);
        stats
    }
}
