//! `plan.check`: the user's check command, run on a scratch copy of the workspace with a
//! plan's changed files over the unchanged ones, never in the user's tree. The copy holds
//! what the scan would index and more (hidden files such as `.cargo/`, any file type) but
//! not what `.gitignore` leaves out, nor `.git`; Cargo builds into a target folder of
//! tierls' cache, kept between checks so that they stay incremental. Ignored dependency
//! folders (`plan.check_links`: `node_modules`, `.venv`, ...) are linked, not copied: a
//! type checker or test runner needs them, and copying them would cost gigabytes. The command runs in
//! its own process group with no stdin, within a time limit (the whole group is killed at
//! it) and an output cap (the tail is kept); the copy is removed afterwards.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::core::plan::failures::{Failure, parse_failures};

/// The most bytes copied into a scratch workspace: a tree past it is refused, not copied.
const MAX_COPY_BYTES: u64 = 4 << 30;

#[derive(Clone, Debug)]
pub struct CheckSpec {
    /// Run by `sh -c` in the scratch copy's root.
    pub command: String,
    pub time_limit: Duration,
    /// The most output bytes kept (the last ones).
    pub output_cap: usize,
    /// Raised when the plan is cancelled: the running check is stopped with its group.
    pub cancel: Option<crate::models::Cancel>,
    /// Folder names that, when ignored in the workspace, are linked into the copy.
    pub links: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    Passed,
    Failed { code: Option<i32> },
    TimedOut,
    Cancelled,
}

impl CheckRun {
    /// "passed", "failed (exit 2)", "the command was not found (exit 127)", "timed out".
    pub fn verdict(&self) -> String {
        match self.status {
            CheckStatus::Passed => "passed".into(),
            CheckStatus::TimedOut => format!(
                "did not finish within its time limit and was stopped after {:.0} s",
                self.elapsed.as_secs_f64()
            ),
            CheckStatus::Cancelled => "was stopped: the plan was cancelled".into(),
            CheckStatus::Failed { code: Some(127) } => {
                "could not run: the command was not found (exit 127)".into()
            }
            CheckStatus::Failed { code: Some(126) } => {
                "could not run: the command is not executable (exit 126)".into()
            }
            CheckStatus::Failed { code: Some(code) } => format!("failed (exit {code})"),
            CheckStatus::Failed { code: None } => "failed (killed by a signal)".into(),
        }
    }
}

/// What one run of the check said.
#[derive(Clone, Debug)]
pub struct CheckRun {
    pub status: CheckStatus,
    /// The output's last `output_cap` bytes (stdout and stderr interleaved).
    pub output: String,
    /// Output bytes dropped from the front.
    pub dropped: u64,
    pub elapsed: Duration,
    /// The failures in workspace files, parsed from the output.
    pub failures: Vec<Failure>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot copy the workspace for the check: {0}")]
    Copy(String),
    #[error("the check `{command}` could not start: {reason}")]
    Start { command: String, reason: String },
}

/// Runs `spec` on a copy of `root` where each file of `changed` holds its new text
/// (`None`: the file is gone).
pub fn run_check(
    root: &Path,
    changed: &BTreeMap<String, Option<String>>,
    spec: &CheckSpec,
    cargo_target: Option<&Path>,
) -> Result<CheckRun, CheckError> {
    let scratch = tempfile::Builder::new()
        .prefix("tierls-check-")
        .tempdir()
        .map_err(|err| CheckError::Copy(err.to_string()))?;
    copy_workspace(root, scratch.path(), &spec.links).map_err(CheckError::Copy)?;
    for (file, text) in changed {
        if crate::core::plan::path::workspace_relative(file).as_deref() != Ok(file.as_str()) {
            return Err(CheckError::Copy(format!(
                "`{file}` is not a workspace path"
            )));
        }
        let path = scratch.path().join(file);
        let written = match text {
            Some(text) => path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, text)),
            None => std::fs::remove_file(&path).or_else(|err| match err.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(err),
            }),
        };
        written.map_err(|err| CheckError::Copy(format!("{file}: {err}")))?;
    }
    let run = run_in(scratch.path(), spec, cargo_target)?;
    let root_of_copy = scratch.path().to_owned();
    let resolve = |printed: &str| workspace_file(&root_of_copy, printed);
    let failures = parse_failures(&run.output, &resolve);
    Ok(CheckRun { failures, ..run })
}

/// A path as a checker printed it (relative to the copy's root, `./`-prefixed, or
/// absolute inside the copy) → the workspace-relative path of a file the copy holds.
fn workspace_file(copy: &Path, printed: &str) -> Option<String> {
    let path = Path::new(printed);
    let relative = if path.is_absolute() {
        path.strip_prefix(copy).ok()?.to_owned()
    } else {
        path.to_owned()
    };
    let relative = relative.to_str()?.trim_start_matches("./").to_owned();
    let relative = crate::core::plan::path::workspace_relative(&relative).ok()?;
    copy.join(&relative).is_file().then_some(relative)
}

/// Copies what is not ignored, with hidden files and without `.git`, as regular files
/// (symbolic links are not followed or copied); then links each ignored folder named in
/// `links` that sits in a copied folder.
fn copy_workspace(root: &Path, to: &Path, links: &[String]) -> Result<(), String> {
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|entry| entry.file_name() != ".git")
        .build();
    let mut copied = 0u64;
    let mut folders = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|err| err.to_string())?;
        let Some(kind) = entry.file_type() else {
            continue;
        };
        let Ok(relative) = entry.path().strip_prefix(root) else {
            continue;
        };
        let target = to.join(relative);
        if kind.is_dir() {
            std::fs::create_dir_all(&target)
                .map_err(|err| format!("{}: {err}", relative.display()))?;
            folders.push(relative.to_owned());
        } else if kind.is_file() {
            copied += std::fs::copy(entry.path(), &target)
                .map_err(|err| format!("{}: {err}", relative.display()))?;
            if copied > MAX_COPY_BYTES {
                return Err(format!(
                    "the workspace holds more than {} GiB outside its ignored folders",
                    MAX_COPY_BYTES >> 30
                ));
            }
        }
    }
    link_dependency_folders(root, to, &folders, links)
}

/// Links `root/folder/name` into the copy for each copied folder and each name of `links`
/// that is a folder there (or a link to one) and was left out of the copy (it is ignored).
fn link_dependency_folders(
    root: &Path,
    to: &Path,
    folders: &[PathBuf],
    links: &[String],
) -> Result<(), String> {
    for folder in folders {
        for name in links {
            let source = root.join(folder).join(name);
            let target = to.join(folder).join(name);
            let is_folder = std::fs::metadata(&source).is_ok_and(|meta| meta.is_dir());
            if is_folder && std::fs::symlink_metadata(&target).is_err() {
                std::os::unix::fs::symlink(&source, &target)
                    .map_err(|err| format!("{}: {err}", folder.join(name).display()))?;
            }
        }
    }
    Ok(())
}

fn run_in(
    dir: &Path,
    spec: &CheckSpec,
    cargo_target: Option<&Path>,
) -> Result<CheckRun, CheckError> {
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    let mut command = Command::new("sh");
    // stderr joins stdout so that the two stay in the order printed.
    command
        .arg("-c")
        .arg(format!("exec 2>&1\n{}", spec.command))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    if let Some(target) = cargo_target {
        command.env("CARGO_TARGET_DIR", target);
    }
    let mut child = command.spawn().map_err(|err| CheckError::Start {
        command: spec.command.clone(),
        reason: err.to_string(),
    })?;
    let Some(mut stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err(CheckError::Start {
            command: spec.command.clone(),
            reason: "its output was not captured".into(),
        });
    };
    let cap = spec.output_cap.max(1);
    let (send, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut kept: Vec<u8> = Vec::new();
        let mut dropped = 0u64;
        let mut buffer = [0u8; 64 * 1024];
        while let Ok(read) = stdout.read(&mut buffer) {
            if read == 0 {
                break;
            }
            kept.extend_from_slice(&buffer[..read]);
            if kept.len() > 2 * cap {
                let over = kept.len() - cap;
                kept.drain(..over);
                dropped += over as u64;
            }
        }
        if kept.len() > cap {
            let over = kept.len() - cap;
            kept.drain(..over);
            dropped += over as u64;
        }
        let _ = send.send((kept, dropped));
    });
    let deadline = started + spec.time_limit;
    let cancelled = || {
        spec.cancel
            .as_ref()
            .is_some_and(|cancel| cancel.is_cancelled())
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline || cancelled() => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    // The whole group goes: a checker's children (rustc, test binaries) too.
    kill_group(child.id());
    let _ = child.wait();
    // A child that left the group may hold the pipe open: the output waits a little only.
    let (kept, dropped) = received
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    let status = match status {
        None if cancelled() => CheckStatus::Cancelled,
        None => CheckStatus::TimedOut,
        Some(status) if status.success() => CheckStatus::Passed,
        Some(status) => CheckStatus::Failed {
            code: status.code(),
        },
    };
    Ok(CheckRun {
        status,
        output: String::from_utf8_lossy(&kept).into_owned(),
        dropped,
        elapsed: started.elapsed(),
        failures: Vec::new(),
    })
}

fn kill_group(pid: u32) {
    // SAFETY: kill(2) with a negative pid signals the process group the child leads (it was
    // started with `process_group(0)`); it touches no memory of ours.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

/// Where Cargo builds for checks of the workspace at `root`: a folder of tierls' cache.
pub fn cargo_target_for(root: &Path) -> Option<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    root.hash(&mut hasher);
    let cache = std::env::var_os("TIERLS_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|dir| dir.join("tierls")))?;
    Some(
        cache
            .join("check-target")
            .join(format!("{:016x}", hasher.finish())),
    )
}
