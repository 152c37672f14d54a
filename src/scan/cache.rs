//! The persisted index on disk: one file per workspace root in tierls' cache folder, read
//! at start (and revalidated file by file by the scan) and written as each full scan goes,
//! once the scan finds a file that differs from it (see [`Recorder`]).
//!
//! Nothing read from it is trusted before `cache_format::decode` accepts it; any problem
//! (missing, unreadable, another version or root, truncated, corrupt) means a cold scan and
//! a log line. Writing goes to a temporary file in the same folder and is renamed over the
//! old one when the scan ends, so two servers on one workspace never see half a cache.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::core::index::cache_format::{
    CachedFile, Encoder, FileHead, decode_from, decode_symbols,
};
use crate::core::index::extract::FileSymbols;
use crate::core::index::table::Index;

/// A cache larger than this is not used (the kernel's index is about 150 MiB).
const MAX_CACHE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// The cache file for `root`: `$TIERLS_INDEX_CACHE` (a folder) or the user's cache folder's
/// `tierls/index`, named by a hash of the root.
pub fn cache_path(root: &Path) -> Option<PathBuf> {
    let folder = std::env::var_os("TIERLS_INDEX_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|dir| dir.join("tierls").join("index")))?;
    let key = xxhash_rust::xxh3::xxh3_64(root.to_string_lossy().as_bytes());
    Some(folder.join(format!("{key:016x}.index")))
}

/// The root as the cache records it.
fn root_key(root: &Path) -> String {
    root.to_string_lossy().into_owned()
}

/// A cache read at start: each file's head by path; its symbols stay in the file, read
/// when the scan reaches it (the cache is never held whole in memory).
#[derive(Debug)]
pub struct LoadedCache {
    /// The cache as it was checked: a cache written meanwhile is renamed over the path,
    /// never written into this file.
    file: std::fs::File,
    files: HashMap<String, CachedFile>,
    /// The distinct names of the index that wrote it, at most one per two bytes of the
    /// cache (each is spelled in it, after its length), so that a count that lies cannot
    /// ask for more room than the cache's size justifies.
    names: usize,
}

impl LoadedCache {
    pub fn get(&self, path: &str) -> Option<&CachedFile> {
        self.files.get(path)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The distinct names the index that wrote it held.
    pub fn names(&self) -> usize {
        self.names
    }

    /// A file's symbols, decoded and as encoded (to copy into the next cache), or `None`
    /// when they cannot be read or do not decode (the file is then parsed).
    pub fn symbols(&self, file: &CachedFile) -> Option<(FileSymbols, Vec<u8>)> {
        let encoded = self.bytes(&file.symbols)?;
        let symbols = decode_symbols(&encoded).ok()?;
        Some((symbols, encoded))
    }

    /// The cache's bytes in `range` (offsets that `decode_from` gave).
    fn bytes(&self, range: &Range<usize>) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0; range.len()];
        self.file
            .read_exact_at(&mut bytes, range.start as u64)
            .ok()?;
        Some(bytes)
    }
}

/// What the last scan of `root` left in `path`, or why there is nothing to use.
pub fn load(root: &Path, path: &Path) -> Result<LoadedCache, String> {
    let (file, length) =
        crate::disk::open_regular(path, MAX_CACHE_BYTES).map_err(|err| match err {
            crate::disk::ReadError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                "none yet".to_owned()
            }
            // The error names the path.
            other => other.to_string(),
        })?;
    let mut reader = std::io::BufReader::with_capacity(256 * 1024, &file);
    let decoded = decode_from(&mut reader, length, &root_key(root))
        .map_err(|err| format!("{}: {err}", path.display()))?;
    drop(reader);
    let files = decoded
        .files
        .into_iter()
        .map(|file| (file.head.path.clone(), file))
        .collect();
    let names = decoded.names.min(length / 2) as usize;
    Ok(LoadedCache { file, files, names })
}

/// A cache being written as a scan goes: records go to a temporary file beside the cache,
/// which replaces the old cache whole when [`finish`](Self::finish)ed.
pub struct CacheWriter {
    path: PathBuf,
    file: BufWriter<tempfile::NamedTempFile>,
    encoder: Encoder,
    /// The first error; nothing more is written after it.
    failed: Option<String>,
}

impl CacheWriter {
    pub fn create(root: &Path, path: &Path) -> Result<CacheWriter, String> {
        let folder = path.parent().ok_or("the cache path has no folder")?;
        std::fs::create_dir_all(folder).map_err(|err| format!("{}: {err}", folder.display()))?;
        let temporary = tempfile::NamedTempFile::new_in(folder)
            .map_err(|err| format!("{}: {err}", folder.display()))?;
        let (encoder, header) = Encoder::start(&root_key(root));
        let mut writer = CacheWriter {
            path: path.to_owned(),
            file: BufWriter::with_capacity(256 * 1024, temporary),
            encoder,
            failed: None,
        };
        writer.write(&header);
        Ok(writer)
    }

    pub fn record(&mut self, head: &FileHead, symbols: &[u8]) {
        if self.failed.is_none() {
            let record = self.encoder.record(head, symbols);
            self.write(&record);
        }
    }

    /// A record copied whole from the last cache.
    pub fn copied(&mut self, record: &[u8]) {
        if self.failed.is_none() {
            self.encoder.copied(record);
            self.write(record);
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.failed.is_none()
            && let Err(err) = self.file.write_all(bytes)
        {
            self.failed = Some(format!("{}: {err}", self.file.get_ref().path().display()));
        }
    }

    /// Ends the cache (`names`: the distinct names the index holds) and puts it in place of
    /// the old one.
    pub fn finish(mut self, names: usize) -> Result<(), String> {
        let trailer = self.encoder.finish(names as u64);
        self.write(&trailer);
        if let Some(failed) = self.failed.take() {
            return Err(failed);
        }
        let temporary = self
            .file
            .into_inner()
            .map_err(|err| format!("{}: {}", self.path.display(), err.error()))?;
        // Not synced to disk first (that took most of a second on the kernel's cache): a
        // crash that leaves the renamed file short or zeroed leaves one whose hash does not
        // match, which the next start ignores and costs a cold scan, never a wrong index.
        temporary
            .persist(&self.path)
            .map_err(|err| format!("{}: {}", self.path.display(), err.error))?;
        Ok(())
    }
}

/// The next start's cache, fed by the walkers as they read each file (never by the index's
/// thread, which a warm start keeps busiest). A file whose record in the last cache still
/// holds is only noted: nothing is written until some file differs, and then the noted
/// records are copied from the last cache. A scan that found every cached file unchanged
/// and no other file keeps the last cache as it is: a warm start writes nothing.
pub struct Recorder {
    root: PathBuf,
    path: PathBuf,
    last: Option<Arc<LoadedCache>>,
    state: Mutex<Recording>,
}

#[derive(Default)]
struct Recording {
    writer: Option<CacheWriter>,
    /// Unchanged records not copied yet (all of them until a file differs).
    noted: Vec<Range<usize>>,
    unchanged: usize,
    /// Why nothing more is recorded (said once, when the scan ends).
    failed: Option<String>,
}

/// What became of the next start's cache.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Nothing changed: the last cache stays.
    Kept,
    Written,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .finish()
    }
}

impl Recorder {
    pub fn new(root: &Path, path: &Path, last: Option<Arc<LoadedCache>>) -> Recorder {
        Recorder {
            root: root.to_owned(),
            path: path.to_owned(),
            last,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        // A walker that panicked mid-record leaves a writer whose hash will not match what
        // it wrote: the next start ignores that cache.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A file the last cache holds as it is now (`file` is its record there).
    pub fn unchanged(&self, file: &CachedFile) {
        let mut state = self.lock();
        state.unchanged += 1;
        if state.writer.is_some() {
            self.copy(&mut state, std::slice::from_ref(&file.record));
        } else {
            state.noted.push(file.record.clone());
        }
    }

    /// A file the last cache does not hold as it is now: its head and encoded symbols.
    pub fn changed(&self, head: &FileHead, symbols: &[u8]) {
        let mut state = self.lock();
        if self.start_writing(&mut state)
            && let Some(writer) = state.writer.as_mut()
        {
            writer.record(head, symbols);
        }
    }

    /// Creates the writer if there is none yet and copies the noted records into it;
    /// whether records can be written.
    fn start_writing(&self, state: &mut Recording) -> bool {
        if state.failed.is_some() {
            return false;
        }
        if state.writer.is_none() {
            match CacheWriter::create(&self.root, &self.path) {
                Ok(writer) => state.writer = Some(writer),
                Err(why) => {
                    state.failed = Some(why);
                    return false;
                }
            }
            let noted = std::mem::take(&mut state.noted);
            self.copy(state, &noted);
        }
        state.failed.is_none()
    }

    /// Copies records of the last cache into the writer.
    fn copy(&self, state: &mut Recording, records: &[Range<usize>]) {
        let (Some(last), Some(writer)) = (self.last.as_deref(), state.writer.as_mut()) else {
            return;
        };
        for record in records {
            match last.bytes(record) {
                Some(bytes) => writer.copied(&bytes),
                None => {
                    state.failed = Some(format!(
                        "{}: the last cache could not be read",
                        self.path.display()
                    ));
                    return;
                }
            }
        }
    }

    /// Puts the cache in place (`names`: the distinct names the index holds), or keeps the
    /// last one when this scan changed nothing.
    pub fn finish(self, names: usize) -> Result<Recorded, String> {
        let mut state = std::mem::take(&mut *self.lock());
        let same_files = self
            .last
            .as_deref()
            .is_some_and(|last| state.unchanged == last.len());
        if state.writer.is_none() && state.failed.is_none() && same_files {
            return Ok(Recorded::Kept);
        }
        self.start_writing(&mut state);
        if let Some(failed) = state.failed {
            return Err(failed);
        }
        // The last cache is closed before the new one is put in its place.
        drop(self.last);
        match state.writer {
            Some(writer) => writer.finish(names).map(|()| Recorded::Written),
            None => Err("no cache writer".into()),
        }
    }
}

/// Where a scan through the cache puts the files it finds: an index, told before the first
/// file how many distinct names the last scan's index held (room made at once, not by
/// growing its tables name by name) and asked after the last how many it holds (for the
/// next start).
pub trait IndexSink {
    fn expect_names(&mut self, names: usize);
    fn add(&mut self, file: super::ScannedFile);
    fn name_count(&self) -> usize;
}

impl IndexSink for Index {
    fn expect_names(&mut self, names: usize) {
        self.reserve_names(names);
    }

    fn add(&mut self, file: super::ScannedFile) {
        self.upsert(&file.path, file.language, file.symbols, file.bytes);
    }

    fn name_count(&self) -> usize {
        Index::name_count(self)
    }
}

/// `scan::scan` through the cache: the last scan's files are revalidated instead of parsed
/// again, and the next start's cache is written as the scan goes (see [`Recorder`]). A
/// cache that cannot be read or written is said in the log and costs a cold scan, nothing
/// else.
pub fn scan_with_cache(
    root: &Path,
    cache_file: &Path,
    options: &super::ScanOptions,
    index: &mut dyn IndexSink,
    progress: &mut dyn FnMut(usize, &str),
) -> super::ScanStats {
    let mut options = options.clone();
    let last = match load(root, cache_file) {
        Ok(files) => {
            tracing::debug!("the index cache holds {} files", files.len());
            index.expect_names(files.names());
            Some(Arc::new(files))
        }
        Err(why) => {
            tracing::info!("index cache not used: {why}");
            None
        }
    };
    options.cache = last.clone();
    let recorder = Arc::new(Recorder::new(root, cache_file, last));
    options.recorder = Some(recorder.clone());
    let stats = super::scan(root, &options, &mut |file| index.add(file), progress);
    drop(options);
    let names = index.name_count();
    match Arc::into_inner(recorder).map(|recorder| recorder.finish(names)) {
        Some(Ok(Recorded::Kept)) => tracing::debug!("index cache unchanged"),
        Some(Ok(Recorded::Written)) => {
            tracing::debug!("index cache written to {}", cache_file.display())
        }
        Some(Err(why)) => warn_unwritten(&why),
        None => warn_unwritten("a walker still held it"),
    }
    stats
}

fn warn_unwritten(why: &str) {
    tracing::warn!(
        "the index cache could not be written ({why}): the next start indexes from scratch"
    );
}
