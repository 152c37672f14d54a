//! Scanning a workspace into the index: a gitignore-aware parallel walk (the `ignore` crate,
//! as ripgrep uses), reading, filtering and parsing each file on the walker's threads.
//!
//! Nothing stops the scan: each file that cannot be indexed is counted under its reason and
//! logged once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use ignore::{WalkBuilder, WalkState};

pub mod cache;
mod heap;

use crate::core::index::cache_format::{FileHead, FileStamp, content_hash, encode_symbols};
use crate::core::index::extract::{FileSymbols, extract, parse};
use crate::core::index::language::Language;
use crate::core::index::table::Index;
use cache::IndexSink;

#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// Larger files are skipped.
    pub max_file_bytes: u64,
    /// Walker threads (0: one per core).
    pub threads: usize,
    /// The last scan's files (`scan::cache`): a file whose size and modification time, or
    /// failing those its content hash, are unchanged takes its symbols from here unparsed.
    pub cache: Option<Arc<cache::LoadedCache>>,
    /// Where every indexed file goes for the next start's cache, from the walkers' threads.
    pub recorder: Option<Arc<cache::Recorder>>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            max_file_bytes: 1024 * 1024,
            threads: 0,
            cache: None,
            recorder: None,
        }
    }
}

/// A modification time this close to the scan's start may hide a write in the same clock
/// tick: its stamp is stored without it, so the next start checks the content.
const RACY_SECONDS: u64 = 2;

/// Why a file was not indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    UnknownLanguage,
    TooLarge,
    Binary,
    NotUtf8,
    Generated,
    /// Unreadable, deleted during the walk, or a walk error (such as a link loop).
    Unreadable,
}

impl Skip {
    pub const ALL: [Skip; 6] = [
        Skip::UnknownLanguage,
        Skip::TooLarge,
        Skip::Binary,
        Skip::NotUtf8,
        Skip::Generated,
        Skip::Unreadable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Skip::UnknownLanguage => "unknown language",
            Skip::TooLarge => "too large",
            Skip::Binary => "binary",
            Skip::NotUtf8 => "not UTF-8",
            Skip::Generated => "generated",
            Skip::Unreadable => "unreadable",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ScanStats {
    pub indexed: usize,
    pub skipped: Vec<(Skip, usize)>,
    pub elapsed: Duration,
    /// Source files in a language tierls parses that it did not index because they are
    /// generated or too large (at most [`MAX_UNINDEXED`], in path order): a change to
    /// every use of a name lists the ones that use it, since it never edits them.
    pub unindexed: Vec<(String, Skip)>,
    /// Files whose symbols came from the cache, unparsed.
    pub from_cache: usize,
}

/// The most unindexed source files a scan remembers by name.
pub const MAX_UNINDEXED: usize = 10_000;

impl ScanStats {
    pub fn skipped(&self, reason: Skip) -> usize {
        self.skipped
            .iter()
            .find(|(skip, _)| *skip == reason)
            .map_or(0, |(_, count)| *count)
    }

    fn count(&mut self, reason: Skip) {
        match self.skipped.iter_mut().find(|(skip, _)| *skip == reason) {
            Some((_, count)) => *count += 1,
            None => self.skipped.push((reason, 1)),
        }
    }
}

/// One indexed file, ready to go into the index.
pub struct ScannedFile {
    /// Relative to the root, with `/` separators.
    pub path: String,
    pub language: Language,
    pub symbols: FileSymbols,
    pub bytes: usize,
}

// Not boxed: a box per file, allocated by a walker and freed by the index's thread, made
// a warm start of the kernel 0.4 s slower (3.2 s → 3.6–3.9 s) than moving the bytes.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    /// A file, and whether its symbols came from the cache.
    Indexed(ScannedFile, bool),
    Skipped(Skip, String),
}

/// A walker thread hands the index its files this many at a time: one wake-up of the
/// index's thread per batch, not per file.
const BATCH_FILES: usize = 32;
/// Batches read but not yet taken by the index, at most.
const QUEUED_BATCHES: usize = 16;

/// A walker thread's files not yet sent; the rest go when the thread's walk ends.
struct Batch {
    outcomes: Vec<Outcome>,
    sender: mpsc::SyncSender<Vec<Outcome>>,
}

impl Batch {
    /// Adds `outcome`; `false` once the index stopped taking files.
    fn push(&mut self, outcome: Outcome) -> bool {
        self.outcomes.push(outcome);
        self.outcomes.len() < BATCH_FILES || self.send()
    }

    fn send(&mut self) -> bool {
        let full = std::mem::replace(&mut self.outcomes, Vec::with_capacity(BATCH_FILES));
        full.is_empty() || self.sender.send(full).is_ok()
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.send();
    }
}

/// Scans `root` into `index`, calling `progress` with the number of files seen so far.
/// `keep` says whether a scanned file may replace what the index holds (the editor's copy of
/// an open document wins over the disk's).
pub fn scan(
    root: &Path,
    options: &ScanOptions,
    index: &mut dyn FnMut(ScannedFile),
    progress: &mut dyn FnMut(usize, &str),
) -> ScanStats {
    let started = Instant::now();
    // Bounded: when the index takes files slower than the walkers read them (a warm start
    // decodes faster than the index inserts), the walkers wait instead of queueing the
    // whole tree's symbols in memory.
    let (sender, receiver) = mpsc::sync_channel::<Vec<Outcome>>(QUEUED_BATCHES);
    let walker = WalkBuilder::new(root)
        .require_git(false)
        .follow_links(false)
        .threads(options.threads)
        .build_parallel();
    let max = options.max_file_bytes;
    let root_owned = root.to_path_buf();
    let scan_started = SystemTime::now();
    let mut stats = ScanStats::default();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            walker.run(|| {
                let mut batch = Batch {
                    outcomes: Vec::with_capacity(BATCH_FILES),
                    sender: sender.clone(),
                };
                let root = root_owned.clone();
                let cache = options.cache.clone();
                let recorder = options.recorder.clone();
                Box::new(move |entry| {
                    let outcome = match entry {
                        Ok(entry) if entry.file_type().is_some_and(|kind| kind.is_file()) => {
                            let reading = Reading {
                                max_bytes: max,
                                cache: cache.as_deref(),
                                recorder: recorder.as_deref(),
                                scan_started,
                            };
                            scan_file(&root, entry.path(), &reading)
                        }
                        Ok(_) => return WalkState::Continue,
                        Err(err) => Outcome::Skipped(Skip::Unreadable, err.to_string()),
                    };
                    if batch.push(outcome) {
                        WalkState::Continue
                    } else {
                        WalkState::Quit
                    }
                })
            });
        });
        let mut seen = 0;
        let mut read_since_trim = 0;
        for outcome in receiver.into_iter().flatten() {
            seen += 1;
            match outcome {
                Outcome::Indexed(file, reused) => {
                    progress(seen, &file.path);
                    stats.indexed += 1;
                    stats.from_cache += usize::from(reused);
                    read_since_trim += file.bytes;
                    index(file);
                    if read_since_trim >= heap::TRIM_EVERY_BYTES {
                        heap::release_free_pages();
                        read_since_trim = 0;
                    }
                }
                Outcome::Skipped(reason, what) => {
                    if reason != Skip::UnknownLanguage {
                        tracing::debug!("not indexed ({}): {what}", reason.name());
                    }
                    if matches!(reason, Skip::Generated | Skip::TooLarge)
                        && stats.unindexed.len() < MAX_UNINDEXED
                    {
                        let path = what.split(": ").next().unwrap_or(&what).to_owned();
                        stats.unindexed.push((path, reason));
                    }
                    stats.count(reason);
                }
            }
        }
    });
    heap::release_free_pages();
    stats.elapsed = started.elapsed();
    stats.skipped.sort();
    stats.unindexed.sort();
    stats
}

/// Scans `root` into a new index.
pub fn scan_into_index(
    root: &Path,
    options: &ScanOptions,
    progress: &mut dyn FnMut(usize, &str),
) -> (Index, ScanStats) {
    let mut index = Index::default();
    let stats = scan(root, options, &mut |file| index.add(file), progress);
    index.settle();
    (index, stats)
}

/// How the walker's threads read a file.
struct Reading<'c> {
    max_bytes: u64,
    cache: Option<&'c cache::LoadedCache>,
    recorder: Option<&'c cache::Recorder>,
    scan_started: SystemTime,
}

fn scan_file(root: &Path, path: &Path, reading: &Reading<'_>) -> Outcome {
    let relative = relative_path(root, path);
    let Some(language) = Language::from_path(&relative) else {
        return Outcome::Skipped(Skip::UnknownLanguage, relative);
    };
    let cached = reading.cache.and_then(|cache| {
        let file = cache.get(&relative)?;
        (file.head.language == language).then_some((cache, file))
    });
    // The stat comes before the read: a write between them leaves a stamp older than the
    // content, which the next start's stat sees as a change.
    let (size, modified_ns) = match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_file() => (metadata.len(), modified_ns(&metadata, reading)),
        Ok(_) => {
            return Outcome::Skipped(Skip::Unreadable, format!("{relative}: not a regular file"));
        }
        Err(err) => return Outcome::Skipped(Skip::Unreadable, format!("{relative}: {err}")),
    };
    if let Some((cache, file)) = cached
        && file.head.stamp.same_metadata(size, modified_ns)
        && size <= reading.max_bytes
        && let Some((symbols, _)) = cache.symbols(file)
    {
        if let Some(recorder) = reading.recorder {
            recorder.unchanged(file);
        }
        return Outcome::Indexed(scanned(file.head.clone(), symbols), true);
    }
    match read_source(path, reading.max_bytes) {
        Ok(text) => {
            if is_generated(&relative, &text) {
                return Outcome::Skipped(Skip::Generated, relative);
            }
            let head = FileHead {
                path: relative,
                language,
                stamp: FileStamp {
                    size,
                    modified_ns,
                    hash: content_hash(text.as_bytes()),
                },
                bytes: text.len() as u64,
            };
            if let Some((cache, file)) = cached
                && file.head.stamp.hash == head.stamp.hash
                && let Some((symbols, encoded)) = cache.symbols(file)
            {
                // The same content under a new stamp: the next start need not hash it.
                if let Some(recorder) = reading.recorder {
                    recorder.changed(&head, &encoded);
                }
                return Outcome::Indexed(scanned(head, symbols), true);
            }
            let symbols = match parse(language, &text, None) {
                Some(tree) => extract(language, &tree, &text),
                None => FileSymbols {
                    has_errors: true,
                    ..FileSymbols::default()
                },
            };
            drop(text);
            if let Some(recorder) = reading.recorder {
                recorder.changed(&head, &encode_symbols(&symbols));
            }
            Outcome::Indexed(scanned(head, symbols), false)
        }
        Err((reason, detail)) => Outcome::Skipped(reason, format!("{relative}: {detail}")),
    }
}

fn scanned(head: FileHead, symbols: FileSymbols) -> ScannedFile {
    ScannedFile {
        path: head.path,
        language: head.language,
        symbols,
        bytes: head.bytes as usize,
    }
}

/// The modification time to stamp, or 0 (check the content next time) when it is unknown
/// or within `RACY_SECONDS` of the scan's start.
fn modified_ns(metadata: &std::fs::Metadata, reading: &Reading<'_>) -> u64 {
    let Ok(modified) = metadata.modified() else {
        return 0;
    };
    let racy = reading
        .scan_started
        .duration_since(modified)
        .map_or(true, |age| age.as_secs() < RACY_SECONDS);
    if racy {
        return 0;
    }
    modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// Reads a source file, refusing what is not source text (and anything but a regular file:
/// see [`crate::disk::read_regular`]).
pub fn read_source(path: &Path, max_bytes: u64) -> Result<String, (Skip, String)> {
    let bytes = crate::disk::read_regular(path, max_bytes).map_err(|err| match err {
        crate::disk::ReadError::TooLarge { size, .. } => (Skip::TooLarge, format!("{size} bytes")),
        other => (Skip::Unreadable, other.to_string()),
    })?;
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Err((Skip::Binary, "a NUL byte".into()));
    }
    String::from_utf8(bytes).map_err(|err| {
        (
            Skip::NotUtf8,
            format!("bad byte at {}", err.utf8_error().valid_up_to()),
        )
    })
}

/// Machine-written files say so near the top; minified bundles say so in their name.
pub fn is_generated(path: &str, text: &str) -> bool {
    if path.ends_with(".min.js") || path.ends_with(".bundle.js") {
        return true;
    }
    let head: String = text
        .chars()
        .take(1024)
        .collect::<String>()
        .to_ascii_lowercase();
    [
        "@generated",
        "do not edit",
        "auto-generated",
        "autogenerated",
        "code generated by",
    ]
    .iter()
    .any(|mark| head.contains(mark))
}

fn relative_path(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// `root`/`relative`, for callers that hold workspace-relative paths.
pub fn absolute(root: &Path, relative: &str) -> PathBuf {
    root.join(relative)
}
