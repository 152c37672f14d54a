//! Bringing the index up to date with the disk after file events and closes, off the
//! workspace lock and off the async runtime.
//!
//! One worker thread takes the jobs in the order the editor sent them, so the index ends
//! where the disk is. For each file it reads (through the workspace's one reader,
//! [`super::Snapshot`]: regular files inside the root only) and parses with no lock
//! held, then swaps the result in under a short lock. A branch switch of thousands of files
//! therefore delays a completion by one swap at most, never by the reads.

use std::sync::mpsc;
use std::time::Duration;

use super::{DiskIndexed, Shared};
use crate::core::index::extract::{extract, parse};
use crate::core::index::language::Language;

/// What the worker does for one notification.
#[derive(Debug)]
pub enum Job {
    /// Index the file as the disk has it now, or forget it when it is gone or unreadable.
    Reindex(String),
    /// A deleted file or directory: forget everything under it.
    Forget(String),
    /// A renamed file or directory.
    Rename { from: String, to: String },
}

pub struct DiskSync {
    jobs: mpsc::Sender<Job>,
    /// Jobs sent and not yet done.
    pending: tokio::sync::watch::Sender<usize>,
}

impl DiskSync {
    pub fn start(workspace: Shared) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let pending = tokio::sync::watch::Sender::new(0usize);
        let done = pending.clone();
        let spawned = std::thread::Builder::new()
            .name("tierls-disk-sync".into())
            .spawn(move || {
                for job in queue {
                    run(&workspace, job);
                    done.send_modify(|count| *count = count.saturating_sub(1));
                }
            });
        if let Err(err) = spawned {
            tracing::error!("cannot start the disk-sync thread: {err}");
        }
        DiskSync { jobs, pending }
    }

    /// Queues `job`; it runs after every job queued before it.
    pub fn send(&self, job: Job) {
        self.pending.send_modify(|count| *count += 1);
        if self.jobs.send(job).is_err() {
            self.pending
                .send_modify(|count| *count = count.saturating_sub(1));
            tracing::error!("the disk-sync thread is gone: the index may lag behind the disk");
        }
    }

    /// Waits until every job queued so far is done, for at most `limit`. Handlers that
    /// answer from the whole index (symbols, definitions) call this so that they see the
    /// notifications that came before them; completions never do.
    pub async fn settled(&self, limit: Duration) {
        let mut pending = self.pending.subscribe();
        let _ = tokio::time::timeout(limit, pending.wait_for(|count| *count == 0)).await;
    }
}

fn run(workspace: &Shared, job: Job) {
    match job {
        Job::Reindex(key) => reindex(workspace, &key),
        Job::Forget(key) => workspace.lock().forget_path(&key),
        Job::Rename { from, to } => {
            let needs_reading = workspace.lock().rename_path(&from, &to);
            if needs_reading {
                reindex(workspace, &to);
            }
        }
    }
}

fn reindex(workspace: &Shared, key: &str) {
    let (snapshot, max_bytes) = {
        let workspace = workspace.lock();
        if workspace.has_editor_tree(key) {
            return; // The editor's copy wins.
        }
        (workspace.snapshot(), workspace.limits().index_bytes)
    };
    // A key outside the root is never read: it is forgotten.
    let indexed = if super::is_outside(key) {
        None
    } else {
        read_and_parse(&snapshot, key, max_bytes)
    };
    workspace.lock().apply_disk(key, indexed);
}

fn read_and_parse(snapshot: &super::Snapshot, key: &str, max_bytes: u64) -> Option<DiskIndexed> {
    let language = Language::from_path(key)?;
    let text = match snapshot.read_disk_limited(key, max_bytes) {
        Ok(text) => text,
        Err(err) => {
            if !matches!(&err, crate::disk::ReadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
            {
                tracing::debug!("not indexed: {err}");
            }
            return None;
        }
    };
    if crate::scan::is_generated(key, &text) {
        return None;
    }
    let tree = parse(language, &text, None)?;
    Some(DiskIndexed {
        language,
        symbols: extract(language, &tree, &text),
        bytes: text.len(),
    })
}
