//! The persisted index on disk: one file per workspace root in tierls' cache folder, read
//! at start (and revalidated file by file by the scan) and written after each full scan.
//!
//! Nothing read from it is trusted before `cache_format::decode` accepts it; any problem
//! (missing, unreadable, another version or root, truncated, corrupt) means a cold scan and
//! a log line. Writing goes to a temporary file in the same folder and is renamed over the
//! old one, so two servers on one workspace never see half a cache.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::core::index::cache_format::{CachedFile, decode, encode};

/// A cache larger than this is not read (the kernel's index is about 150 MiB).
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

/// What the last scan of `root` left in `path`, by file, or why there is nothing to use.
pub fn load(root: &Path, path: &Path) -> Result<HashMap<String, CachedFile>, String> {
    let bytes = crate::disk::read_regular(path, MAX_CACHE_BYTES).map_err(|err| match err {
        crate::disk::ReadError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            "none yet".to_owned()
        }
        // The error names the path.
        other => other.to_string(),
    })?;
    let files = decode(&bytes, &root_key(root)).map_err(|err| format!("{}: {err}", path.display()))?;
    Ok(files.into_iter().map(|file| (file.path.clone(), file)).collect())
}

/// Writes the cache of `root` to `path` from a scan's records; the old one is replaced
/// whole, at once.
pub fn store(root: &Path, path: &Path, records: &[u8]) -> Result<(), String> {
    let folder = path.parent().ok_or("the cache path has no folder")?;
    std::fs::create_dir_all(folder).map_err(|err| format!("{}: {err}", folder.display()))?;
    let bytes = encode(&root_key(root), records);
    let mut temporary = tempfile::NamedTempFile::new_in(folder)
        .map_err(|err| format!("{}: {err}", folder.display()))?;
    temporary
        .write_all(&bytes)
        .and_then(|()| temporary.as_file().sync_all())
        .map_err(|err| format!("{}: {err}", temporary.path().display()))?;
    temporary
        .persist(path)
        .map_err(|err| format!("{}: {}", path.display(), err.error))?;
    Ok(())
}

/// `scan::scan` through the cache: the last scan's files are revalidated instead of parsed
/// again, and this scan's are written for the next start. A cache that cannot be read or
/// written is said in the log and costs a cold scan, nothing else.
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
    options.record = true;
    let mut stats = super::scan(root, &options, index, progress);
    // The cache's entries are dropped before the new one is encoded.
    drop(options);
    match store(root, cache_file, &stats.records) {
        Ok(()) => tracing::debug!("index cache written to {}", cache_file.display()),
        Err(why) => tracing::warn!(
            "the index cache could not be written ({why}): the next start indexes from scratch"
        ),
    }
    stats.records = Vec::new();
    stats
}
