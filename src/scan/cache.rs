//! The persisted index on disk: one file per workspace root in tierls' cache folder, read
//! at start (and revalidated file by file by the scan) and written as each full scan goes.
//!
//! Nothing read from it is trusted before `cache_format::decode` accepts it; any problem
//! (missing, unreadable, another version or root, truncated, corrupt) means a cold scan and
//! a log line. Writing goes to a temporary file in the same folder and is renamed over the
//! old one when the scan ends, so two servers on one workspace never see half a cache.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::core::index::cache_format::{
    CachedFile, Encoder, FileHead, decode_from, decode_symbols,
};
use crate::core::index::extract::FileSymbols;

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

    /// A file's symbols, decoded and as encoded (to copy into the next cache), or `None`
    /// when they cannot be read or do not decode (the file is then parsed).
    pub fn symbols(&self, file: &CachedFile) -> Option<(FileSymbols, Vec<u8>)> {
        use std::os::unix::fs::FileExt;
        let mut encoded = vec![0; file.symbols.len()];
        self.file
            .read_exact_at(&mut encoded, file.symbols.start as u64)
            .ok()?;
        let symbols = decode_symbols(&encoded).ok()?;
        Some((symbols, encoded))
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
    let files = decode_from(&mut reader, length, &root_key(root))
        .map_err(|err| format!("{}: {err}", path.display()))?;
    drop(reader);
    let files = files
        .into_iter()
        .map(|file| (file.head.path.clone(), file))
        .collect();
    Ok(LoadedCache { file, files })
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

    fn write(&mut self, bytes: &[u8]) {
        if self.failed.is_none()
            && let Err(err) = self.file.write_all(bytes)
        {
            self.failed = Some(format!("{}: {err}", self.file.get_ref().path().display()));
        }
    }

    /// Ends the cache and puts it in place of the old one.
    pub fn finish(mut self) -> Result<(), String> {
        let hash = self.encoder.finish();
        self.write(&hash);
        if let Some(failed) = self.failed.take() {
            return Err(failed);
        }
        let temporary = self
            .file
            .into_inner()
            .map_err(|err| format!("{}: {}", self.path.display(), err.error()))?;
        temporary
            .as_file()
            .sync_all()
            .map_err(|err| format!("{}: {err}", temporary.path().display()))?;
        temporary
            .persist(&self.path)
            .map_err(|err| format!("{}: {}", self.path.display(), err.error))?;
        Ok(())
    }
}

/// `scan::scan` through the cache: the last scan's files are revalidated instead of parsed
/// again, and this scan's are written for the next start as they come. A cache that cannot
/// be read or written is said in the log and costs a cold scan, nothing else.
pub fn scan_with_cache(
    root: &Path,
    cache_file: &Path,
    options: &super::ScanOptions,
    index: &mut dyn FnMut(super::ScannedFile),
    progress: &mut dyn FnMut(usize, &str),
) -> super::ScanStats {
    let mut options = options.clone();
    match load(root, cache_file) {
        Ok(files) => {
            tracing::debug!("the index cache holds {} files", files.len());
            options.cache = Some(std::sync::Arc::new(files));
        }
        Err(why) => tracing::info!("index cache not used: {why}"),
    }
    let mut writer = match CacheWriter::create(root, cache_file) {
        Ok(writer) => Some(writer),
        Err(why) => {
            warn_unwritten(&why);
            None
        }
    };
    options.record = writer.is_some();
    let stats = super::scan(
        root,
        &options,
        &mut |mut file| {
            if let (Some(writer), Some(record)) = (writer.as_mut(), file.record.take()) {
                writer.record(&record.head, &record.symbols);
            }
            index(file);
        },
        progress,
    );
    // The old cache is closed before the new one is put in its place.
    drop(options);
    if let Some(writer) = writer {
        match writer.finish() {
            Ok(()) => tracing::debug!("index cache written to {}", cache_file.display()),
            Err(why) => warn_unwritten(&why),
        }
    }
    stats
}

fn warn_unwritten(why: &str) {
    tracing::warn!(
        "the index cache could not be written ({why}): the next start indexes from scratch"
    );
}
