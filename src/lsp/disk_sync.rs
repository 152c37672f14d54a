//! Bringing the index up to date with the disk after file events and closes, off the
//! session lock and off the async runtime.
//!
//! One worker thread takes the jobs in the order the editor sent them, so the index ends
//! where the disk is. For each file it reads (through the one confined reader,
//! [`crate::disk::read_text`]: regular files inside the root only) and parses with no lock
//! held, then swaps the result in under a short lock. A branch switch of thousands of files
//! therefore delays a completion by one swap at most, never by the reads.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::session::Session;
use crate::core::index::extract::{FileSymbols, extract, parse};
use crate::core::index::language::Language;
use crate::sync::lock;

/// What the worker does for one notification.
#[derive(Debug)]
pub(super) enum Job {
    /// Index the file as the disk has it now, or forget it when it is gone or unreadable.
    Reindex(String),
    /// A deleted file or directory: forget everything under it.
    Forget(String),
    /// A renamed file or directory.
    Rename { from: String, to: String },
}

pub(super) struct DiskSync {
    jobs: mpsc::Sender<Job>,
    /// Jobs sent and not yet done.
    pending: tokio::sync::watch::Sender<usize>,
}

impl DiskSync {
    pub(super) fn start(session: Arc<Mutex<Session>>) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let pending = tokio::sync::watch::Sender::new(0usize);
        let done = pending.clone();
        let spawned = std::thread::Builder::new()
            .name("tierls-disk-sync".into())
            .spawn(move || {
                for job in queue {
                    run(&session, job);
                    done.send_modify(|count| *count = count.saturating_sub(1));
                }
            });
        if let Err(err) = spawned {
            tracing::error!("cannot start the disk-sync thread: {err}");
        }
        DiskSync { jobs, pending }
    }

    /// Queues `job`; it runs after every job queued before it.
    pub(super) fn send(&self, job: Job) {
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
    pub(super) async fn settled(&self, limit: Duration) {
        let mut pending = self.pending.subscribe();
        let _ = tokio::time::timeout(limit, pending.wait_for(|count| *count == 0)).await;
    }
}

fn run(session: &Mutex<Session>, job: Job) {
    match job {
        Job::Reindex(key) => reindex(session, &key),
        Job::Forget(key) => lock(session).forget_path(&key),
        Job::Rename { from, to } => {
            let needs_reading = lock(session).rename_path(&from, &to);
            if needs_reading {
                reindex(session, &to);
            }
        }
    }
}

/// What reading and parsing one file gave.
struct Indexed {
    language: Language,
    symbols: FileSymbols,
    bytes: usize,
}

fn reindex(session: &Mutex<Session>, key: &str) {
    let (root, max_bytes) = {
        let session = lock(session);
        if session.live.contains_key(key) {
            return; // The editor's copy wins.
        }
        (session.root.clone(), session.config.index.max_file_bytes)
    };
    // A key that is a URI lies outside the workspace root: its disk text is never read.
    let indexed = match root {
        Some(root) if !key.contains("://") => read_and_parse(&root, key, max_bytes),
        _ => None,
    };
    let mut session = lock(session);
    if session.live.contains_key(key) {
        return; // Opened in the editor while we read.
    }
    if session.scanning {
        session.synced_during_scan.insert(key.to_owned());
    }
    match indexed {
        Some(found) => {
            session
                .index
                .upsert(key, found.language, found.symbols, found.bytes);
        }
        None => {
            session.index.remove(key);
        }
    }
}

fn read_and_parse(root: &std::path::Path, key: &str, max_bytes: u64) -> Option<Indexed> {
    let language = Language::from_path(key)?;
    let text = match crate::disk::read_text(root, std::path::Path::new(key), max_bytes) {
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
    Some(Indexed {
        language,
        symbols: extract(language, &tree, &text),
        bytes: text.len(),
    })
}
