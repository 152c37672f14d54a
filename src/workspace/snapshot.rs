//! A read-only view of the workspace's files, taken under the lock and used without it:
//! "a file's current text" is the editor's copy when the file is open, else the disk's.
//!
//! This is the only code that reads a workspace file for a request, a plan or the disk sync
//! (the start-up scan reads through `crate::scan`, called from this layer). Every read goes
//! through [`crate::disk::read_text`]: inside the root after resolving links, a regular file,
//! text, under the size limit. Call the reading methods with no lock held and off the async
//! runtime: a read may take as long as the disk does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ropey::Rope;

use super::{Key, is_outside};
use crate::core::store::DocumentStore;
use crate::disk::{self, ReadError};

/// An open document as the snapshot saw it.
#[derive(Clone)]
struct OpenCopy {
    text: Rope,
    version: i32,
}

#[derive(Clone)]
pub struct Snapshot {
    root: Option<PathBuf>,
    max_read_bytes: u64,
    open: HashMap<Key, OpenCopy>,
}

/// A file's text, and where it came from.
#[derive(Clone, Debug)]
pub enum FileText {
    /// The editor's copy, with its version.
    Editor {
        text: Rope,
        version: i32,
    },
    Disk(Rope),
}

impl FileText {
    pub fn rope(&self) -> &Rope {
        match self {
            FileText::Editor { text, .. } | FileText::Disk(text) => text,
        }
    }

    pub fn version(&self) -> Option<i32> {
        match self {
            FileText::Editor { version, .. } => Some(*version),
            FileText::Disk(_) => None,
        }
    }
}

/// A file a plan touches, as it is now: `text` is `None` when it does not exist (or cannot
/// be read, which the steps on it then report); `version` is the editor's, when open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrentFile {
    pub text: Option<String>,
    pub version: Option<i32>,
}

impl Snapshot {
    pub(super) fn new(
        root: Option<PathBuf>,
        max_read_bytes: u64,
        documents: &DocumentStore,
    ) -> Self {
        let open = documents
            .iter()
            .map(|(key, document)| {
                let copy = OpenCopy {
                    text: document.text().clone(),
                    version: document.version(),
                };
                (key.to_owned(), copy)
            })
            .collect();
        Snapshot {
            root,
            max_read_bytes,
            open,
        }
    }

    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The largest file read (`limits.max_file_mb`).
    pub fn max_read_bytes(&self) -> u64 {
        self.max_read_bytes
    }

    /// True when every key is open in the editor, so that no disk read is needed.
    pub fn all_open<'k>(&self, mut keys: impl Iterator<Item = &'k str>) -> bool {
        keys.all(|key| self.open.contains_key(key))
    }

    /// The editor's copy of `key`, never the disk's (cheap, fine under a lock).
    pub fn open_text(&self, key: &str) -> Option<FileText> {
        self.open.get(key).map(|copy| FileText::Editor {
            text: copy.text.clone(),
            version: copy.version,
        })
    }

    /// The current text of `key`: the editor's copy, else the disk's.
    pub fn text(&self, key: &str) -> Result<FileText, ReadError> {
        if let Some(open) = self.open_text(key) {
            return Ok(open);
        }
        self.read_disk(key)
            .map(|text| FileText::Disk(Rope::from_str(&text)))
    }

    /// The disk's text of `key`, whether or not the editor has it open (the disk sync,
    /// and a plan applied without an editor).
    pub fn read_disk(&self, key: &str) -> Result<String, ReadError> {
        self.read_disk_limited(key, self.max_read_bytes)
    }

    /// As [`Snapshot::read_disk`], with another size limit (the index's).
    pub fn read_disk_limited(&self, key: &str, max_bytes: u64) -> Result<String, ReadError> {
        let Some(root) = self.root.as_deref().filter(|_| !is_outside(key)) else {
            return Err(ReadError::OutsideRoot {
                path: PathBuf::from(key),
                root: self.root.clone().unwrap_or_default(),
            });
        };
        disk::read_text(root, Path::new(key), max_bytes)
    }

    /// The current texts of `keys`, each read once; what cannot be read is left out.
    pub fn texts<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> HashMap<Key, FileText> {
        let mut texts = HashMap::new();
        for key in keys {
            if texts.contains_key(key) {
                continue;
            }
            match self.text(key) {
                Ok(text) => {
                    texts.insert(key.to_owned(), text);
                }
                Err(err) => tracing::debug!("not read: {err}"),
            }
        }
        texts
    }

    /// Each file a plan touches as it is now: the editor's copy with its version, else the
    /// disk's, else `None` when it does not exist.
    pub fn current_files<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> BTreeMap<String, CurrentFile> {
        keys.into_iter()
            .map(|key| (key.to_owned(), self.current_file(key)))
            .collect()
    }

    fn current_file(&self, key: &str) -> CurrentFile {
        if let Some(open) = self.open.get(key) {
            return CurrentFile {
                text: Some(open.text.to_string()),
                version: Some(open.version),
            };
        }
        let Some(root) = self.root.as_deref() else {
            return CurrentFile::default();
        };
        let text = match disk::confine(root, key) {
            Ok(path) if disk::exists(&path) => match self.read_disk(key) {
                Ok(text) => Some(text),
                Err(err) => {
                    tracing::warn!("a plan step cannot read its file: {err}");
                    None
                }
            },
            Ok(_) => None,
            Err(err) => {
                tracing::warn!("a plan step names a file outside the workspace: {err}");
                None
            }
        };
        CurrentFile {
            text,
            version: None,
        }
    }
}
