//! Fetching models from Hugging Face (or a server speaking its API) into the model cache.
//!
//! What a reference needs comes from `core::hub`; this module lists the repository
//! (`/api/models/{repo}/tree/main`), downloads each file into `<file>.part` with HTTP range
//! requests (so a cut connection or a killed process resumes where it stopped), checks the
//! size and the hub's sha256, and renames the file into place: a file under its final name
//! is always whole and verified, and once there it is used without the network. Two
//! processes fetching the same file take turns on a lock file; the second finds it done.
//!
//! Every wait is bounded: connecting (10 s), each piece of a body (60 s), a listing
//! (16 MiB), the wait on another process's download (60 s without progress).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ring::digest::{Context, SHA256};

use crate::core::hub::{HubModel, RepoFile, Target, pick_cached, pick_files};

/// The public hub, unless `HF_ENDPOINT` names another.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A body that sends nothing for this long is treated as cut (and resumed).
const READ_STALL: Duration = Duration::from_secs(60);
const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;
const MAX_LISTING_PAGES: usize = 20;
/// Tries of one file before giving up; each resumes where the last stopped.
const ATTEMPTS: u32 = 4;
/// Another process's download is waited on while its part file grows.
const WAIT_STALL: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{what}: not found on {endpoint} (404): check the repository and the file name")]
    NotFound { what: String, endpoint: String },
    #[error("{what}: {endpoint} refused access ({status}): {}", token_hint(.token))]
    Unauthorized {
        what: String,
        endpoint: String,
        status: u16,
        token: bool,
    },
    #[error("{what}: {endpoint} answered {status}")]
    Status {
        what: String,
        endpoint: String,
        status: u16,
    },
    #[error("{what}: cannot reach {endpoint}: {message}")]
    Network {
        what: String,
        endpoint: String,
        message: String,
    },
    #[error(
        "{file}: the download stopped at {done} of {total} bytes after {attempts} tries ({last}); what arrived is kept and the next fetch resumes it"
    )]
    Interrupted {
        file: String,
        done: u64,
        total: u64,
        attempts: u32,
        last: String,
    },
    #[error(
        "{file}: the server sent more than the {total} bytes the hub lists; the download was removed"
    )]
    TooLong { file: String, total: u64 },
    #[error(
        "{file}: the download's sha256 is {found}, the hub lists {expected}; the download was removed"
    )]
    Checksum {
        file: String,
        expected: String,
        found: String,
    },
    #[error("{file}: needs {needed} bytes more but {folder} has room for {room}")]
    NoRoom {
        file: String,
        needed: u64,
        room: u64,
        folder: String,
    },
    #[error(
        "{file}: another process is downloading it and its download made no progress for {} s",
        WAIT_STALL.as_secs()
    )]
    Busy { file: String },
    #[error("{0}")]
    Pick(String),
    #[error("{what}: the hub's file list is not what was expected: {message}")]
    Listing { what: String, message: String },
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
}

fn token_hint(token: &bool) -> &'static str {
    if *token {
        "HF_TOKEN is set but cannot read this repository"
    } else {
        "the repository is gated or private; set HF_TOKEN to a token that can read it"
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |err| HubError::Io {
        path: path.to_owned(),
        err,
    }
}

/// What a fetch reports, for a progress bar or `$/progress`.
pub trait FetchProgress: Send {
    /// A file starts (or resumes at `done` bytes).
    fn file(&mut self, name: &str, total: u64, done: u64);
    /// `done` bytes of the current file are in.
    fn advance(&mut self, done: u64);
    /// Another process is downloading `name`; this one waits for it.
    fn waiting(&mut self, name: &str);
}

/// Reports nothing.
pub struct Quiet;

impl FetchProgress for Quiet {
    fn file(&mut self, _: &str, _: u64, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn waiting(&mut self, _: &str) {}
}

/// The hub and the cache it fills.
#[derive(Clone, Debug)]
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    /// The model cache; repositories go under `hf/owner/name`.
    cache: PathBuf,
    /// At most this many bytes are written by one fetch (the room on the disk if less).
    pub max_bytes: Option<u64>,
    http: reqwest::Client,
}

impl Hub {
    /// The hub `HF_ENDPOINT` names (the public one by default), with `HF_TOKEN`.
    pub fn from_env(cache: PathBuf) -> Hub {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|endpoint| !endpoint.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let token = std::env::var("HF_TOKEN")
            .ok()
            .filter(|token| !token.trim().is_empty());
        Hub::new(&endpoint, token, cache)
    }

    pub fn new(endpoint: &str, token: Option<String>, cache: PathBuf) -> Hub {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("tierls/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Hub {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token,
            cache,
            max_bytes: None,
            http,
        }
    }

    pub fn cache(&self) -> &Path {
        &self.cache
    }

    /// The local path of a model if every file it needs is in the cache (no network).
    pub fn cached(&self, model: &HubModel) -> Option<PathBuf> {
        let folder = self.cache.join(model.repo_folder());
        let present = cached_ggufs(&folder);
        let files = pick_cached(model, &present)?;
        Some(folder.join(files.first()?))
    }

    /// The model's first (or only) file in the cache, downloading what is missing.
    pub async fn fetch(
        &self,
        model: &HubModel,
        progress: &mut dyn FetchProgress,
    ) -> Result<PathBuf, HubError> {
        // A file named outright is used from the cache without asking the hub; a
        // quantization is looked up when online, so that a newly added file is seen.
        if matches!(model.target, Target::File(_))
            && let Some(path) = self.cached(model)
        {
            return Ok(path);
        }
        let listing = match self.list(model).await {
            Ok(listing) => listing,
            Err(err @ HubError::Network { .. }) => return self.cached(model).ok_or(err),
            Err(err) => return Err(err),
        };
        let files = pick_files(model, &listing).map_err(HubError::Pick)?;
        let folder = self.cache.join(model.repo_folder());
        for file in &files {
            self.fetch_file(model, file, &folder, progress).await?;
        }
        Ok(folder.join(&files[0].path))
    }

    /// The repository's files, following the listing's pages.
    async fn list(&self, model: &HubModel) -> Result<Vec<RepoFile>, HubError> {
        let what = format!("hf://{}", model.repo);
        let mut url = format!(
            "{}/api/models/{}/tree/main?recursive=true",
            self.endpoint, model.repo
        );
        let mut files = Vec::new();
        for _ in 0..MAX_LISTING_PAGES {
            let response = self.get(&url, &what, None).await?;
            let next = next_page(response.headers());
            let body = read_bounded(response, MAX_LISTING_BYTES, &what, &self.endpoint).await?;
            files.extend(parse_listing(&body).map_err(|message| HubError::Listing {
                what: what.clone(),
                message,
            })?);
            match next {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(files)
    }

    async fn get(
        &self,
        url: &str,
        what: &str,
        range_from: Option<u64>,
    ) -> Result<reqwest::Response, HubError> {
        let mut request = self.http.get(url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(from) = range_from {
            request = request.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        let response = request.send().await.map_err(|err| HubError::Network {
            what: what.to_owned(),
            endpoint: self.endpoint.clone(),
            message: error_chain(&err),
        })?;
        let status = response.status();
        if status.is_success() || status.as_u16() == 416 {
            return Ok(response);
        }
        Err(match status.as_u16() {
            404 => HubError::NotFound {
                what: what.to_owned(),
                endpoint: self.endpoint.clone(),
            },
            code @ (401 | 403) => HubError::Unauthorized {
                what: what.to_owned(),
                endpoint: self.endpoint.clone(),
                status: code,
                token: self.token.is_some(),
            },
            code => HubError::Status {
                what: what.to_owned(),
                endpoint: self.endpoint.clone(),
                status: code,
            },
        })
    }

    /// One file into `folder`, unless it is there already.
    async fn fetch_file(
        &self,
        model: &HubModel,
        file: &RepoFile,
        folder: &Path,
        progress: &mut dyn FetchProgress,
    ) -> Result<(), HubError> {
        let target = folder.join(&file.path);
        if is_complete(&target, file) {
            return Ok(());
        }
        let parent = target.parent().unwrap_or(folder);
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let part = with_suffix(&target, ".part");
        let _lock = self.take_turn(&target, &part, &file.path, progress).await?;
        // The process that held the lock may have finished it.
        if is_complete(&target, file) {
            return Ok(());
        }
        self.download(model, file, &target, &part, progress).await
    }

    /// Holds the file's lock, waiting while another process downloads it and its part
    /// grows.
    async fn take_turn(
        &self,
        target: &Path,
        part: &Path,
        name: &str,
        progress: &mut dyn FetchProgress,
    ) -> Result<FileLock, HubError> {
        let lock_path = with_suffix(target, ".lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let mut last_size = None;
        let mut still_since = tokio::time::Instant::now();
        let mut told = false;
        loop {
            // SAFETY: flock on a descriptor this function owns; non-blocking.
            if unsafe { libc::flock(lock_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(FileLock(lock_file));
            }
            if !told {
                progress.waiting(name);
                told = true;
            }
            let size = std::fs::metadata(part).map(|m| m.len()).ok();
            if size != last_size {
                last_size = size;
                still_since = tokio::time::Instant::now();
                if let Some(size) = size {
                    progress.advance(size);
                }
            } else if still_since.elapsed() > WAIT_STALL {
                return Err(HubError::Busy {
                    file: name.to_owned(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn download(
        &self,
        model: &HubModel,
        file: &RepoFile,
        target: &Path,
        part: &Path,
        progress: &mut dyn FetchProgress,
    ) -> Result<(), HubError> {
        let url = format!(
            "{}/{}/resolve/main/{}",
            self.endpoint,
            model.repo,
            encode_path(&file.path)
        );
        let what = format!("hf://{}/{}", model.repo, file.path);
        // A part left by an earlier try of the same content resumes; any other restarts.
        let identity_path = with_suffix(target, ".part.id");
        let identity = format!("{} {}", file.size, file.sha256.as_deref().unwrap_or("-"));
        let resumable = std::fs::read_to_string(&identity_path).is_ok_and(|kept| kept == identity);
        // Room is checked before anything is written.
        let kept = match resumable {
            true => std::fs::metadata(part).map_or(0, |meta| meta.len().min(file.size)),
            false => 0,
        };
        let needed = file.size - kept;
        let room = self.room(target.parent().unwrap_or(target));
        if needed > room {
            return Err(HubError::NoRoom {
                file: file.path.clone(),
                needed,
                room,
                folder: target.parent().unwrap_or(target).display().to_string(),
            });
        }
        if !resumable {
            let _ = std::fs::remove_file(part);
            std::fs::write(&identity_path, &identity).map_err(io(&identity_path))?;
        }
        let mut writer = PartWriter::open(part, file.size)?;
        progress.file(&file.path, file.size, writer.done);
        let mut attempts = 0;
        let mut last = String::new();
        // The listed size bounds the download: a body past it is refused, so a hub that
        // never stops cannot fill the disk.
        while writer.done < file.size {
            if attempts == ATTEMPTS {
                return Err(HubError::Interrupted {
                    file: file.path.clone(),
                    done: writer.done,
                    total: file.size,
                    attempts,
                    last,
                });
            }
            attempts += 1;
            let from = (writer.done > 0).then_some(writer.done);
            let response = match self.get(&url, &what, from).await {
                Ok(response) => response,
                Err(HubError::Network { message, .. }) => {
                    last = message;
                    tokio::time::sleep(POLL * attempts).await;
                    continue;
                }
                Err(err) => return Err(err),
            };
            match response.status().as_u16() {
                // The whole body, not a range: start over.
                200 if writer.done > 0 => writer.restart()?,
                416 => {
                    // Nothing left to send from there: the part is at least whole; the
                    // checks below decide.
                    break;
                }
                _ => {}
            }
            match self.receive(response, &mut writer, file, progress).await {
                Ok(()) => {
                    if writer.done < file.size {
                        last = format!("the body ended at byte {}", writer.done);
                    }
                }
                Err(Received::Cut(message)) => last = message,
                Err(Received::Failed(err)) => {
                    writer.discard(&identity_path);
                    return Err(err);
                }
            }
        }
        let (done, found) = writer.finish()?;
        if done < file.size {
            // Only after a 416: the server will not send the rest of this part.
            writer_discard(part, &identity_path);
            return Err(HubError::Status {
                what: format!("{what} (resuming at byte {done} of {})", file.size),
                endpoint: self.endpoint.clone(),
                status: 416,
            });
        }
        if let Some(expected) = &file.sha256
            && !expected.eq_ignore_ascii_case(&found)
        {
            writer_discard(part, &identity_path);
            return Err(HubError::Checksum {
                file: file.path.clone(),
                expected: expected.clone(),
                found,
            });
        }
        std::fs::rename(part, target).map_err(io(target))?;
        let _ = std::fs::remove_file(&identity_path);
        Ok(())
    }

    async fn receive(
        &self,
        mut response: reqwest::Response,
        writer: &mut PartWriter,
        file: &RepoFile,
        progress: &mut dyn FetchProgress,
    ) -> Result<(), Received> {
        loop {
            let chunk = match tokio::time::timeout(READ_STALL, response.chunk()).await {
                Err(_) => {
                    return Err(Received::Cut(format!(
                        "nothing arrived for {} s",
                        READ_STALL.as_secs()
                    )));
                }
                Ok(Err(err)) => return Err(Received::Cut(error_chain(&err))),
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(chunk))) => chunk,
            };
            if writer.done + chunk.len() as u64 > file.size {
                return Err(Received::Failed(HubError::TooLong {
                    file: file.path.clone(),
                    total: file.size,
                }));
            }
            writer.write(&chunk).map_err(Received::Failed)?;
            progress.advance(writer.done);
        }
    }

    /// Bytes this fetch may still write under `folder`.
    fn room(&self, folder: &Path) -> u64 {
        let free = free_space(folder).unwrap_or(u64::MAX);
        self.max_bytes.map_or(free, |max| max.min(free))
    }
}

enum Received {
    /// The connection ended early or stalled: resumable.
    Cut(String),
    Failed(HubError),
}

/// A part file being written, with the sha256 of everything in it so far.
struct PartWriter {
    path: PathBuf,
    file: File,
    hash: Context,
    done: u64,
}

impl PartWriter {
    /// Opens the part, hashing what an earlier try left (a part longer than the file is
    /// dropped).
    fn open(path: &Path, size: u64) -> Result<PartWriter, HubError> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        let mut writer = PartWriter {
            path: path.to_owned(),
            hash: Context::new(&SHA256),
            done: 0,
            file: file.try_clone().map_err(io(path))?,
        };
        let kept = file.metadata().map_err(io(path))?.len();
        if kept > size {
            writer.restart()?;
            return Ok(writer);
        }
        let mut buffer = vec![0; 1 << 20];
        loop {
            let read = file.read(&mut buffer).map_err(io(path))?;
            if read == 0 {
                break;
            }
            writer.hash.update(&buffer[..read]);
            writer.done += read as u64;
        }
        Ok(writer)
    }

    fn restart(&mut self) -> Result<(), HubError> {
        self.file.set_len(0).map_err(io(&self.path))?;
        self.hash = Context::new(&SHA256);
        self.done = 0;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), HubError> {
        self.file.write_all(bytes).map_err(io(&self.path))?;
        self.hash.update(bytes);
        self.done += bytes.len() as u64;
        Ok(())
    }

    /// Flushed to the disk; the bytes written and their sha256 (hex).
    fn finish(&mut self) -> Result<(u64, String), HubError> {
        self.file.sync_all().map_err(io(&self.path))?;
        let digest = self.hash.clone().finish();
        Ok((self.done, hex(digest.as_ref())))
    }

    fn discard(&self, identity: &Path) {
        writer_discard(&self.path, identity);
    }
}

fn writer_discard(part: &Path, identity: &Path) {
    let _ = std::fs::remove_file(part);
    let _ = std::fs::remove_file(identity);
}

/// The sha256 of `bytes`, in lowercase hex as the hub lists it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Released when dropped (closing the descriptor releases the flock).
struct FileLock(#[allow(dead_code)] File);

fn is_complete(target: &Path, file: &RepoFile) -> bool {
    std::fs::symlink_metadata(target).is_ok_and(|meta| meta.is_file() && meta.len() == file.size)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Each segment percent-encoded as a URL path needs (names with spaces or `#`).
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            segment
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

async fn read_bounded(
    mut response: reqwest::Response,
    max: usize,
    what: &str,
    endpoint: &str,
) -> Result<Vec<u8>, HubError> {
    let mut body = Vec::new();
    loop {
        let chunk = tokio::time::timeout(READ_STALL, response.chunk())
            .await
            .map_err(|_| HubError::Network {
                what: what.to_owned(),
                endpoint: endpoint.to_owned(),
                message: format!("the file list stalled for {} s", READ_STALL.as_secs()),
            })?
            .map_err(|err| HubError::Network {
                what: what.to_owned(),
                endpoint: endpoint.to_owned(),
                message: error_chain(&err),
            })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > max {
            return Err(HubError::Listing {
                what: what.to_owned(),
                message: format!("larger than {} MiB", max >> 20),
            });
        }
        body.extend_from_slice(&chunk);
    }
}

/// The hub's `Link: <url>; rel="next"` header.
fn next_page(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|entry| {
        let (url, params) = entry.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// `[{"type": "file", "path": …, "size": …, "lfs": {"oid": sha256, …}}, …]`.
fn parse_listing(body: &[u8]) -> Result<Vec<RepoFile>, String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "type")]
        kind: String,
        path: String,
        #[serde(default)]
        size: u64,
        lfs: Option<Lfs>,
    }
    #[derive(serde::Deserialize)]
    struct Lfs {
        oid: String,
        size: Option<u64>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(body).map_err(|err| err.to_string())?;
    Ok(entries
        .into_iter()
        .filter(|entry| entry.kind == "file")
        .map(|entry| {
            let sha256 = entry
                .lfs
                .as_ref()
                .map(|lfs| lfs.oid.trim_start_matches("sha256:").to_owned())
                .filter(|oid| oid.len() == 64 && oid.bytes().all(|b| b.is_ascii_hexdigit()));
            RepoFile {
                size: entry.lfs.and_then(|lfs| lfs.size).unwrap_or(entry.size),
                path: entry.path,
                sha256,
            }
        })
        .collect())
}

/// The GGUF files under a repository's cache folder, as paths inside it.
fn cached_ggufs(folder: &Path) -> Vec<String> {
    walkdir::WalkDir::new(folder)
        .max_depth(8)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .filter_map(|entry| {
            let relative = entry.path().strip_prefix(folder).ok()?;
            let relative = relative.to_str()?.to_owned();
            relative
                .to_ascii_lowercase()
                .ends_with(".gguf")
                .then_some(relative)
        })
        .collect()
}

/// Every model file in the cache, with its size: `tierls models` lists them.
pub fn cached_models(cache: &Path) -> Vec<(String, u64)> {
    let hub = cache.join("hf");
    let mut found: Vec<(String, u64)> = walkdir::WalkDir::new(&hub)
        .max_depth(10)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .filter_map(|entry| {
            let relative = entry.path().strip_prefix(&hub).ok()?.to_str()?.to_owned();
            let size = entry.metadata().ok()?.len();
            relative
                .to_ascii_lowercase()
                .ends_with(".gguf")
                .then(|| (format!("hf://{relative}"), size))
        })
        .collect();
    found.sort();
    found
}

fn free_space(folder: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(folder.as_os_str().as_bytes()).ok()?;
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed struct the call fills.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    Some(stats.f_bavail as u64 * stats.f_frsize as u64)
}

/// The model cache: `$TIERLS_MODEL_CACHE`, else `$XDG_CACHE_HOME/tierls/models`, else
/// `~/.cache/tierls/models`.
pub fn model_cache() -> PathBuf {
    std::env::var_os("TIERLS_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| dirs::home_dir().map(|home| home.join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"));
            base.join("tierls/models")
        })
}
