//! The persisted index's format: what a scan found, file by file, with each file's stamp
//! (size, modification time, content hash) so that the next start reuses what has not
//! changed. Pure: bytes in, bytes out; the file is written and read by `scan::cache`.
//!
//! Layout: a magic, the format version, the root it was written for, the body, and a hash
//! of the body. The body is records, then the number of distinct names the writing index
//! held (the next start makes room for that many at once instead of growing its tables
//! name by name). A record is a file's head (path, language, stamp; a length and a
//! `postcard` encoding) and its symbols (a length and a `postcard` encoding). The hash
//! comes last so that a cache can be written as the scan goes, never held whole in memory;
//! the symbols are apart from the head so that a start decodes only the heads (in one
//! streaming pass that also checks the hash) and reads each unchanged file's symbols when
//! it is reached. Nothing in a cache is trusted before the magic, version, root and hash
//! agree, and a record that does not decode ends the reading with an error (the cache is
//! then ignored).

use std::io::Read;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::extract::FileSymbols;
use super::language::Language;

const MAGIC: &[u8; 8] = b"TIERLSIX";
/// Raised whenever the layout or anything it encodes (symbols, kinds, languages) changes: a
/// cache of another version is ignored, never read as this one.
pub const FORMAT_VERSION: u32 = 5;
/// A record longer than this is corrupt (a file's symbols never take 64 MiB).
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;
const HASH_BYTES: usize = 8;
/// The name count and the hash.
const TRAILER_BYTES: usize = 8 + HASH_BYTES;

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

/// A file's record without its symbols.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileHead {
    /// Relative to the root, with `/` separators.
    pub path: String,
    pub language: Language,
    pub stamp: FileStamp,
    pub bytes: u64,
}

/// A file in a decoded cache: its head, and where its encoded symbols (for
/// [`decode_symbols`]) and its whole record (for [`Encoder::copied`]) are in the cache's
/// bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedFile {
    pub head: FileHead,
    pub symbols: Range<usize>,
    pub record: Range<usize>,
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

/// A file's symbols as a record carries them.
pub fn encode_symbols(symbols: &FileSymbols) -> Vec<u8> {
    // Encoding plain data into memory cannot fail; should it, the record holds no symbols
    // and fails to decode, so the file is parsed again next time.
    postcard::to_allocvec(symbols).unwrap_or_default()
}

pub fn decode_symbols(bytes: &[u8]) -> Result<FileSymbols, CacheError> {
    postcard::from_bytes(bytes)
        .map_err(|err| CacheError::Corrupt(format!("a file's symbols do not decode: {err}")))
}

/// Writes a cache in pieces, in order: [`Encoder::start`], a [`Encoder::record`] per file,
/// [`Encoder::finish`]. The caller writes each piece where it wants.
pub struct Encoder {
    body: xxhash_rust::xxh3::Xxh3,
}

impl Encoder {
    /// The encoder and the cache's first bytes, for `root`.
    pub fn start(root: &str) -> (Encoder, Vec<u8>) {
        let mut bytes = Vec::with_capacity(root.len() + 16);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(root.len() as u32).to_le_bytes());
        bytes.extend_from_slice(root.as_bytes());
        let encoder = Encoder {
            body: xxhash_rust::xxh3::Xxh3::new(),
        };
        (encoder, bytes)
    }

    /// One file's record: its head and its symbols as [`encode_symbols`] gave them.
    pub fn record(&mut self, head: &FileHead, symbols: &[u8]) -> Vec<u8> {
        let head = postcard::to_allocvec(head).unwrap_or_default();
        let mut record = Vec::with_capacity(8 + head.len() + symbols.len());
        record.extend_from_slice(&(head.len() as u32).to_le_bytes());
        record.extend_from_slice(&head);
        record.extend_from_slice(&(symbols.len() as u32).to_le_bytes());
        record.extend_from_slice(symbols);
        self.body.update(&record);
        record
    }

    /// A record copied whole from another cache of this version (its bytes at
    /// [`CachedFile::record`]).
    pub fn copied(&mut self, record: &[u8]) {
        self.body.update(record);
    }

    /// The cache's last bytes: `names`, the distinct names the index held, and the hash.
    pub fn finish(&mut self, names: u64) -> [u8; TRAILER_BYTES] {
        let names = names.to_le_bytes();
        self.body.update(&names);
        let mut trailer = [0; TRAILER_BYTES];
        trailer[..8].copy_from_slice(&names);
        trailer[8..].copy_from_slice(&self.body.digest().to_le_bytes());
        trailer
    }
}

/// What a cache holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub files: Vec<CachedFile>,
    /// The distinct names the index that wrote it held.
    pub names: u64,
}

/// The files a cache holds, if it is a whole cache of this version for `root`. Their
/// symbols stay encoded in `bytes`.
pub fn decode(bytes: &[u8], root: &str) -> Result<Decoded, CacheError> {
    let mut reader = bytes;
    decode_from(&mut reader, bytes.len() as u64, root)
}

/// [`decode`] reading the `length` bytes of a cache from `cache` in one pass, keeping only
/// the heads: a start need not hold the whole cache in memory, only read each unchanged
/// file's symbols (at [`CachedFile::symbols`], offsets from the cache's start) when it
/// reaches it. Nothing is returned before the hash at the end agrees.
pub fn decode_from(cache: &mut dyn Read, length: u64, root: &str) -> Result<Decoded, CacheError> {
    let mut reader = Stream {
        inner: cache,
        at: 0,
        hash: None,
    };
    let mut magic = [0; MAGIC.len()];
    if reader.fill(&mut magic).is_err() || &magic != MAGIC {
        return Err(CacheError::NotACache);
    }
    let version = reader.u32().ok_or_else(|| truncated("the version"))?;
    if version != FORMAT_VERSION {
        return Err(CacheError::OtherVersion(version));
    }
    let root_length = reader.u32().ok_or_else(|| truncated("the root"))? as usize;
    if root_length > MAX_RECORD_BYTES {
        return Err(truncated("the root"));
    }
    let mut cached_root = vec![0; root_length];
    reader
        .fill(&mut cached_root)
        .map_err(|_| truncated("the root"))?;
    if cached_root != root.as_bytes() {
        return Err(CacheError::OtherRoot(
            String::from_utf8_lossy(&cached_root).into_owned(),
        ));
    }
    let records_end = length
        .checked_sub(TRAILER_BYTES as u64)
        .filter(|&end| end >= reader.at)
        .ok_or_else(|| truncated("the hash"))?;
    reader.hash = Some(xxhash_rust::xxh3::Xxh3::new());
    let mut files = Vec::new();
    let mut head = Vec::new();
    while reader.at < records_end {
        let record_start = reader.at as usize;
        reader.record(&mut head)?;
        let head: FileHead = postcard::from_bytes(&head)
            .map_err(|err| CacheError::Corrupt(format!("a record does not decode: {err}")))?;
        let symbols_length = reader.length()?;
        let start = reader.at;
        reader.skip(symbols_length)?;
        files.push(CachedFile {
            head,
            symbols: start as usize..reader.at as usize,
            record: record_start..reader.at as usize,
        });
    }
    if reader.at != records_end {
        return Err(truncated("a record"));
    }
    let names = reader.u64().ok_or_else(|| truncated("the name count"))?;
    let body_hash = reader.hash.take().map(|hash| hash.digest());
    let hash = reader.u64().ok_or_else(|| truncated("the hash"))?;
    if body_hash != Some(hash) {
        return Err(CacheError::Corrupt(
            "the body does not match its hash (truncated or overwritten)".into(),
        ));
    }
    Ok(Decoded { files, names })
}

fn truncated(what: &str) -> CacheError {
    CacheError::Corrupt(format!("truncated in {what}"))
}

/// A cache read front to back, hashing the body as it goes.
struct Stream<'r> {
    inner: &'r mut dyn Read,
    at: u64,
    hash: Option<xxhash_rust::xxh3::Xxh3>,
}

impl Stream<'_> {
    fn fill(&mut self, buffer: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact(buffer)?;
        self.at += buffer.len() as u64;
        if let Some(hash) = &mut self.hash {
            hash.update(buffer);
        }
        Ok(())
    }

    fn u32(&mut self) -> Option<u32> {
        let mut bytes = [0; 4];
        self.fill(&mut bytes).ok()?;
        Some(u32::from_le_bytes(bytes))
    }

    fn u64(&mut self) -> Option<u64> {
        let mut bytes = [0; 8];
        self.fill(&mut bytes).ok()?;
        Some(u64::from_le_bytes(bytes))
    }

    /// A record's length, checked against `MAX_RECORD_BYTES`.
    fn length(&mut self) -> Result<usize, CacheError> {
        let length = self.u32().ok_or_else(|| truncated("a record"))? as usize;
        if length > MAX_RECORD_BYTES {
            return Err(CacheError::Corrupt(format!("a record of {length} bytes")));
        }
        Ok(length)
    }

    /// A length and that many bytes, into `into`.
    fn record(&mut self, into: &mut Vec<u8>) -> Result<(), CacheError> {
        let length = self.length()?;
        into.resize(length, 0);
        self.fill(into).map_err(|_| truncated("a record"))
    }

    /// Reads past `length` bytes (hashing them).
    fn skip(&mut self, mut length: usize) -> Result<(), CacheError> {
        let mut buffer = [0; 16 * 1024];
        while length > 0 {
            let step = length.min(buffer.len());
            self.fill(&mut buffer[..step])
                .map_err(|_| truncated("a record"))?;
            length -= step;
        }
        Ok(())
    }
}

/// The content hash of a stamp.
pub fn content_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}
