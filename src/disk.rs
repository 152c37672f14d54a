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
    #[error("{path}: {kind}, not a regular file; only regular files are read")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: a symbolic link to {target}, which does not exist")]
    DanglingLink { path: PathBuf, target: PathBuf },
}

/// What kind of thing a non-regular file is, for messages.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a named pipe (FIFO)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// Opens `path` for reading only if it is a regular file, and reads at most `max_bytes + 1`
/// bytes of it. A FIFO, a device or a directory is refused before it is opened (opening a
/// FIFO blocks until a writer comes; a device never ends), the open itself does not block
/// or follow a link swapped in meanwhile, and the open file is checked again. The size limit
/// holds by what is read, never by trusting the metadata.
pub fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let (mut file, length) = open_regular(path, max_bytes)?;
    let mut bytes = Vec::with_capacity(length.min(max_bytes) as usize);
    // `take` guards against a file that grows between the size check and the read.
    file.by_ref()
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            limit: max_bytes,
        });
    }
    Ok(bytes)
}

/// [`read_regular`]'s checks without the read: the open regular file and its length, for a
/// caller that reads parts of it (a reader must still bound what it reads by the length).
pub fn open_regular(path: &Path, max_bytes: u64) -> Result<(std::fs::File, u64), ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(|source| dangling_or(path, source))?;
    if !metadata.is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_owned(),
            kind: kind_of(metadata.file_type()),
        });
    }
    if metadata.len() > max_bytes {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            size: metadata.len(),
            limit: max_bytes,
        });
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        // Opening a FIFO swapped in after the check returns at once instead of waiting for
        // a writer; reads of a regular file are unaffected.
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let opened = file.metadata().map_err(io)?;
    if !opened.is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_owned(),
            kind: kind_of(opened.file_type()),
        });
    }
    Ok((file, opened.len()))
}

/// A missing file that is a symbolic link is a dangling link: say so, with its target.
fn dangling_or(path: &Path, source: std::io::Error) -> ReadError {
    if source.kind() == std::io::ErrorKind::NotFound
        && let Ok(target) = std::fs::read_link(path)
    {
        return ReadError::DanglingLink {
            path: path.to_owned(),
            target,
        };
    }
    ReadError::Io {
        path: path.to_owned(),
        source,
    }
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
    let real = joined
        .canonicalize()
        .map_err(|source| dangling_or(&joined, source))?;
    if !real.starts_with(&root) {
        return Err(ReadError::OutsideRoot { path: joined, root });
    }
    let bytes = read_regular(&real, max_bytes).map_err(|err| err.named(&joined))?;
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

impl ReadError {
    /// The same error, naming `path` (what the caller asked for) instead of the real path.
    fn named(self, path: &Path) -> ReadError {
        let path = path.to_owned();
        match self {
            ReadError::Io { source, .. } => ReadError::Io { path, source },
            ReadError::TooLarge { size, limit, .. } => ReadError::TooLarge { path, size, limit },
            ReadError::NotRegular { kind, .. } => ReadError::NotRegular { path, kind },
            other => other,
        }
    }
}

/// Where the workspace-relative `relative` lives on disk, refusing a path that leads outside
/// the root through a symbolic link (an existing file's, or a missing file's nearest
/// existing folder's). `..` and absolute paths are refused before they get here.
pub fn confine(root: &Path, relative: &str) -> Result<PathBuf, ReadError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ReadError::Io { path, source }
    };
    let real_root = root.canonicalize().map_err(io(root))?;
    let joined = real_root.join(relative);
    let mut existing = joined.as_path();
    while std::fs::symlink_metadata(existing).is_err() {
        existing = match existing.parent() {
            Some(parent) => parent,
            None => break,
        };
    }
    let real = existing.canonicalize().map_err(io(existing))?;
    if !real.starts_with(&real_root) {
        return Err(ReadError::OutsideRoot {
            path: joined,
            root: real_root,
        });
    }
    Ok(joined)
}

/// Whether anything, even a broken link, exists at `path`.
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Confine(#[from] ReadError),
    #[error("{path}: changed on disk since it was read; nothing was written to it")]
    Changed { path: PathBuf },
    #[error("{path}: {reason}")]
    Blocked { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `text` to the workspace-relative `relative`, atomically, if the file still holds
/// `expected` (`None`: it must not exist). A temporary file in the same folder is renamed
/// over the old one, so a reader never sees half a file.
pub fn write_text(
    root: &Path,
    relative: &str,
    expected: Option<&str>,
    text: &str,
    max_bytes: u64,
) -> Result<(), WriteError> {
    let path = confine(root, relative)?;
    let io = |source| WriteError::Io {
        path: path.clone(),
        source,
    };
    match expected {
        Some(expected) => {
            let current = read_text(root, Path::new(relative), max_bytes)?;
            if current != expected {
                return Err(WriteError::Changed { path });
            }
        }
        None if exists(&path) => return Err(WriteError::Changed { path }),
        None => {}
    }
    let folder = path.parent().unwrap_or(root);
    std::fs::create_dir_all(folder).map_err(io)?;
    // The folder may have been created just now: check it again.
    confine(root, relative)?;
    let mut temporary = tempfile::NamedTempFile::new_in(folder).map_err(io)?;
    std::io::Write::write_all(&mut temporary, text.as_bytes()).map_err(io)?;
    if expected.is_some() {
        if let Ok(metadata) = std::fs::metadata(&path) {
            let _ = std::fs::set_permissions(temporary.path(), metadata.permissions());
        }
        temporary.persist(&path).map_err(|err| io(err.error))?;
    } else {
        temporary
            .persist_noclobber(&path)
            .map_err(|err| io(err.error))?;
    }
    Ok(())
}

/// One file of a change that lands all or none.
pub struct FileWrite<'a> {
    /// Workspace-relative path.
    pub relative: &'a str,
    /// What the file must still hold; `None`: it must not exist.
    pub expected: Option<&'a str>,
    pub text: &'a str,
}

/// The longest file name Linux file systems take, in bytes.
const NAME_MAX: usize = 255;
/// The longest path `open(2)` takes, in bytes.
const PATH_MAX: usize = 4096;

/// Writes every file or none. Every target is checked before the first write (inside the
/// root, parents that are folders or can be made, names that fit, a writable folder, room
/// on the disk, the file still as read); if a write fails anyway, the files already written
/// get their old text back, and the files and folders made are removed.
pub fn write_all(
    root: &Path,
    writes: &[FileWrite<'_>],
    max_bytes: u64,
) -> Result<(), Vec<(String, WriteError)>> {
    let problems: Vec<(String, WriteError)> = writes
        .iter()
        .filter_map(|write| {
            preflight(root, write, max_bytes)
                .err()
                .map(|err| (write.relative.to_owned(), err))
        })
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    if let Some(err) = check_free_space(root, writes) {
        return Err(vec![(writes[0].relative.to_owned(), err)]);
    }
    let mut done: Vec<Written> = Vec::new();
    for write in writes {
        let made_folders = missing_folders(root, write.relative);
        match write_text(root, write.relative, write.expected, write.text, max_bytes) {
            Ok(()) => done.push(Written {
                relative: write.relative,
                old: write.expected,
                new: write.text,
                made_folders,
            }),
            Err(err) => {
                // The check again, now that earlier writes are on disk, names the cause
                // better than the system's error ("`x/y.py` is a file", not "File exists").
                let err = preflight(root, write, max_bytes).err().unwrap_or(err);
                let mut failures = vec![(write.relative.to_owned(), err)];
                // What this write may have made before it failed.
                remove_folders(&made_folders);
                failures.extend(roll_back(root, &done, max_bytes));
                return Err(failures);
            }
        }
    }
    Ok(())
}

struct Written<'a> {
    relative: &'a str,
    old: Option<&'a str>,
    new: &'a str,
    made_folders: Vec<PathBuf>,
}

/// Undoes `done`, last first; what cannot be undone is reported.
fn roll_back(root: &Path, done: &[Written<'_>], max_bytes: u64) -> Vec<(String, WriteError)> {
    let mut failures = Vec::new();
    for written in done.iter().rev() {
        let undone = match written.old {
            Some(old) => write_text(root, written.relative, Some(written.new), old, max_bytes),
            None => confine(root, written.relative)
                .map_err(WriteError::from)
                .and_then(|path| {
                    std::fs::remove_file(&path).map_err(|source| WriteError::Io { path, source })
                }),
        };
        if let Err(err) = undone {
            failures.push((
                written.relative.to_owned(),
                WriteError::Io {
                    path: root.join(written.relative),
                    source: std::io::Error::other(format!(
                        "written, and could not be restored after a later file failed: {err}"
                    )),
                },
            ));
        }
        remove_folders(&written.made_folders);
    }
    failures
}

/// Removes folders a failed change made, deepest first, if they are still empty.
fn remove_folders(folders: &[PathBuf]) {
    for folder in folders {
        let _ = std::fs::remove_dir(folder);
    }
}

/// The folders writing `relative` would make, deepest first.
fn missing_folders(root: &Path, relative: &str) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut folder = root.join(relative);
    while let Some(parent) = folder.parent() {
        if parent == root || exists(parent) {
            break;
        }
        missing.push(parent.to_owned());
        folder = parent.to_owned();
    }
    missing
}

/// Everything about one write that can be known before writing.
fn preflight(root: &Path, write: &FileWrite<'_>, max_bytes: u64) -> Result<(), WriteError> {
    let path = confine(root, write.relative)?;
    let blocked = |reason: String| WriteError::Blocked {
        path: path.clone(),
        reason,
    };
    if write.text.len() as u64 > max_bytes {
        return Err(blocked(format!(
            "the new text is {} bytes, over the limit of {max_bytes} bytes (limits.max_file_mb)",
            write.text.len()
        )));
    }
    if path.as_os_str().len() >= PATH_MAX {
        return Err(blocked(format!(
            "the path is {} bytes long; the system takes at most {PATH_MAX}",
            path.as_os_str().len()
        )));
    }
    for part in write.relative.split('/') {
        if part.len() > NAME_MAX {
            return Err(blocked(format!(
                "the name `{}…` is {} bytes long; file names are at most {NAME_MAX} bytes",
                part.chars().take(24).collect::<String>(),
                part.len()
            )));
        }
    }
    // The nearest thing that exists above the file must be a folder we may write in.
    let mut relative_parent = Path::new(write.relative).parent();
    while let Some(parent) = relative_parent.filter(|parent| !parent.as_os_str().is_empty()) {
        let on_disk = root.join(parent);
        if let Ok(metadata) = std::fs::metadata(&on_disk) {
            if !metadata.is_dir() {
                return Err(blocked(format!(
                    "`{}` is a file, not a folder, so `{}` cannot be made",
                    parent.display(),
                    write.relative
                )));
            }
            break;
        }
        if exists(&on_disk) {
            return Err(blocked(format!(
                "`{}` is a symbolic link that leads nowhere",
                parent.display()
            )));
        }
        relative_parent = parent.parent();
    }
    let folder = nearest_existing(path.parent().unwrap_or(root));
    if !is_writable(&folder) {
        return Err(blocked(format!(
            "the folder `{}` is not writable",
            folder.display()
        )));
    }
    match write.expected {
        Some(expected) => {
            let current = read_text(root, Path::new(write.relative), max_bytes)?;
            if current != expected {
                return Err(WriteError::Changed { path });
            }
        }
        None if exists(&path) => return Err(WriteError::Changed { path }),
        None => {}
    }
    Ok(())
}

fn nearest_existing(path: &Path) -> PathBuf {
    let mut path = path;
    while !exists(path) {
        match path.parent() {
            Some(parent) => path = parent,
            None => break,
        }
    }
    path.to_owned()
}

fn is_writable(folder: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(name) = std::ffi::CString::new(folder.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `name` is a NUL-terminated path that lives across the call.
    unsafe { libc::access(name.as_ptr(), libc::W_OK) == 0 }
}

/// Refuses a change that would not fit on the disk (with a margin for the temporary copies).
fn check_free_space(root: &Path, writes: &[FileWrite<'_>]) -> Option<WriteError> {
    use std::os::unix::ffi::OsStrExt;
    let needed: u64 = writes
        .iter()
        .map(|write| write.text.len() as u64)
        .sum::<u64>()
        + (1 << 20);
    let name = std::ffi::CString::new(root.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into the zeroed struct we pass; `name` outlives the call.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(name.as_ptr(), &mut stats) } != 0 {
        return None; // Unknown: the writes themselves will tell.
    }
    let available = (stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64);
    (available < needed).then(|| WriteError::Blocked {
        path: root.to_owned(),
        reason: format!("the disk has {available} bytes free; the change needs about {needed}"),
    })
}
