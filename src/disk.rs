//! Reading workspace files as text, confined to the workspace root.
//!
//! This is the one place that turns bytes on disk into document text: it refuses what
//! would be wrong to treat as source (binary, not UTF-8, too large, outside the root) with
//! an error that names the file.

use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: outside the workspace root {root}")]
    OutsideRoot { path: PathBuf, root: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes is over the limit of {limit} bytes (limits.max_file_mb)")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{path}: a binary file (it contains a NUL byte at offset {offset})")]
    Binary { path: PathBuf, offset: usize },
    #[error("{path}: not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 { path: PathBuf, offset: usize },
}

/// Reads `path` (absolute, or relative to `root`) as UTF-8 text of at most `max_bytes`.
pub fn read_text(root: &Path, path: &Path, max_bytes: u64) -> Result<String, ReadError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ReadError::Io { path, source }
    };
    let root = root.canonicalize().map_err(io(root))?;
    let joined = if path.is_absolute() {
        path.to_owned()
    } else {
        root.join(path)
    };
    // Canonicalising resolves `..` and symbolic links, so a link cannot lead outside.
    let real = joined.canonicalize().map_err(io(&joined))?;
    if !real.starts_with(&root) {
        return Err(ReadError::OutsideRoot { path: joined, root });
    }
    let mut file = std::fs::File::open(&real).map_err(io(&joined))?;
    let size = file.metadata().map_err(io(&joined))?.len();
    if size > max_bytes {
        return Err(ReadError::TooLarge {
            path: joined,
            size,
            limit: max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // `take` guards against a file that grows between the size check and the read.
    file.by_ref()
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io(&joined))?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge {
            path: joined,
            size: bytes.len() as u64,
            limit: max_bytes,
        });
    }
    if let Some(offset) = bytes.iter().position(|&byte| byte == 0) {
        return Err(ReadError::Binary {
            path: joined,
            offset,
        });
    }
    String::from_utf8(bytes).map_err(|err| ReadError::NotUtf8 {
        path: joined,
        offset: err.utf8_error().valid_up_to(),
    })
}
