//! The persisted index's format: what a scan found, file by file, with each file's stamp
//! (size, modification time, content hash) so that the next start reuses what has not
//! changed. Pure: bytes in, bytes out; the file is written and read by `scan::cache`.
//!
//! Layout: a magic, the format version, the root it was written for, a hash of the body,
//! then the body: records, each a length and a `postcard` encoding of one `CachedFile`.
//! Nothing in a cache is trusted before the magic, version, root and hash agree, and a
//! record that does not decode ends the reading with an error (the cache is then ignored).

use serde::{Deserialize, Serialize};

use super::extract::FileSymbols;
use super::language::Language;

const MAGIC: &[u8; 8] = b"TIERLSIX";
/// Raised whenever the layout or anything it encodes (symbols, kinds, languages) changes: a
/// cache of another version is ignored, never read as this one.
pub const FORMAT_VERSION: u32 = 1;
/// A record longer than this is corrupt (a file's symbols never take 64 MiB).
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// What the disk said about a file when it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub size: u64,
    /// Nanoseconds since the epoch; 0 when unknown or too recent to trust (a write within
    /// the clock's granularity of the read could keep it), which forces a hash check.
    pub modified_ns: u64,
    /// xxh3 of the content.
    pub hash: u64,
}

impl FileStamp {
    /// Whether `other` (a stat of the file now) shows it unchanged without reading it.
    pub fn same_metadata(&self, size: u64, modified_ns: u64) -> bool {
        self.modified_ns != 0 && self.size == size && self.modified_ns == modified_ns
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedFile {
    /// Relative to the root, with `/` separators.
    pub path: String,
    pub language: Language,
    pub stamp: FileStamp,
    pub bytes: u64,
    pub symbols: FileSymbols,
}

/// Why a cache was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheError {
    NotACache,
    OtherVersion(u32),
    OtherRoot(String),
    Corrupt(String),
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::NotACache => write!(f, "not an index cache (no magic number)"),
            CacheError::OtherVersion(version) => write!(
                f,
                "written by format version {version}, this is version {FORMAT_VERSION}"
            ),
            CacheError::OtherRoot(root) => write!(f, "written for another root, {root}"),
            CacheError::Corrupt(why) => write!(f, "corrupt: {why}"),
        }
    }
}

/// One file's record, to append to a body.
pub fn encode_record(file: &CachedFile, body: &mut Vec<u8>) {
    // Encoding plain data into memory cannot fail; a file that somehow does is left out.
    if let Ok(record) = postcard::to_allocvec(file) {
        body.extend_from_slice(&(record.len() as u32).to_le_bytes());
        body.extend_from_slice(&record);
    }
}

/// The whole cache for `root`, from a body of records.
pub fn encode(root: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(body.len() + root.len() + 32);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(root.len() as u32).to_le_bytes());
    bytes.extend_from_slice(root.as_bytes());
    bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(body).to_le_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// The files a cache holds, if it is a whole cache of this version for `root`.
pub fn decode(bytes: &[u8], root: &str) -> Result<Vec<CachedFile>, CacheError> {
    let mut reader = Reader { bytes, at: 0 };
    if reader.take(MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(CacheError::NotACache);
    }
    let version = reader.u32().ok_or_else(|| truncated("the version"))?;
    if version != FORMAT_VERSION {
        return Err(CacheError::OtherVersion(version));
    }
    let root_length = reader.u32().ok_or_else(|| truncated("the root"))? as usize;
    let cached_root = reader
        .take(root_length)
        .ok_or_else(|| truncated("the root"))?;
    if cached_root != root.as_bytes() {
        return Err(CacheError::OtherRoot(
            String::from_utf8_lossy(cached_root).into_owned(),
        ));
    }
    let hash = reader.u64().ok_or_else(|| truncated("the hash"))?;
    let body = &bytes[reader.at..];
    if xxhash_rust::xxh3::xxh3_64(body) != hash {
        return Err(CacheError::Corrupt(
            "the body does not match its hash (truncated or overwritten)".into(),
        ));
    }
    let mut reader = Reader { bytes: body, at: 0 };
    let mut files = Vec::new();
    while reader.at < body.len() {
        let length = reader.u32().ok_or_else(|| truncated("a record"))? as usize;
        if length > MAX_RECORD_BYTES {
            return Err(CacheError::Corrupt(format!("a record of {length} bytes")));
        }
        let record = reader.take(length).ok_or_else(|| truncated("a record"))?;
        let file: CachedFile = postcard::from_bytes(record)
            .map_err(|err| CacheError::Corrupt(format!("a record does not decode: {err}")))?;
        files.push(file);
    }
    Ok(files)
}

fn truncated(what: &str) -> CacheError {
    CacheError::Corrupt(format!("truncated in {what}"))
}

struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, length: usize) -> Option<&'b [u8]> {
        let end = self.at.checked_add(length)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The content hash of a stamp.
pub fn content_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}
