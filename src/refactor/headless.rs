//! The plan flow on a workspace on disk, with no editor: `tierls plan`, the tests and the
//! benchmark drive it. Files are read at the start and, with `apply`, written only if they
//! still hold what the plan read.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::workspace::{DiskWorkspace, definitions_for};
use super::{ExecuteOptions, Execution, PlanError, Planned, Progress, execute, make_plan};
use crate::core::index::table::Index;
use crate::core::plan::Plan;
use crate::core::plan::context::{Focus, planner_input};
use crate::core::plan::land::{Landing, land};
use crate::core::plan::prompt::PlannerInput;
use crate::disk::{self, WriteError};
use crate::models::{Cancel, Model};

/// A workspace on disk and its index.
#[derive(Clone, Copy)]
pub struct OnDisk<'a> {
    pub root: &'a Path,
    pub index: &'a Index,
    /// Larger files are not read (`limits.max_file_mb`).
    pub max_file_bytes: u64,
}

/// Plans `instruction` on the workspace.
pub async fn plan(
    workspace: OnDisk<'_>,
    instruction: &str,
    focus: &[Focus],
    map_tokens: usize,
    planner_time: std::time::Duration,
    planner: &dyn Model,
    cancel: Cancel,
) -> Result<(PlannerInput, Planned), PlanError> {
    let OnDisk {
        root,
        index,
        max_file_bytes,
    } = workspace;
    let mut texts = BTreeMap::new();
    for item in focus {
        if index.file(item.file()).is_none() {
            return Err(PlanError::Focus(format!(
                "{}: not a source file in the index (give a path relative to the workspace root)",
                item.file()
            )));
        }
        let text = disk::read_text(root, Path::new(item.file()), max_file_bytes)
            .map_err(|err| PlanError::Focus(err.to_string()))?;
        texts.insert(item.file().to_owned(), text);
    }
    let input =
        planner_input(index, &texts, instruction, focus, map_tokens).map_err(PlanError::Focus)?;
    let workspace = DiskWorkspace { index, root };
    let planned = make_plan(planner, &input, &workspace, planner_time, cancel).await?;
    Ok((input, planned))
}

/// Each file the plan touches as it is on disk now; `None` when it does not exist (or
/// cannot be read, which the steps on it then report).
pub fn read_files(
    root: &Path,
    plan: &Plan,
    max_file_bytes: u64,
) -> BTreeMap<String, Option<String>> {
    plan.files()
        .into_iter()
        .map(|file| {
            let text = match disk::confine(root, file) {
                Ok(path) if disk::exists(&path) => {
                    match disk::read_text(root, Path::new(file), max_file_bytes) {
                        Ok(text) => Some(text),
                        Err(err) => {
                            tracing::warn!("a plan step cannot read its file: {err}");
                            None
                        }
                    }
                }
                Ok(_) => None,
                Err(err) => {
                    tracing::warn!("a plan step names a file outside the workspace: {err}");
                    None
                }
            };
            (file.to_owned(), text)
        })
        .collect()
}

/// Runs the plan's steps on the files as they are on disk, then lands them.
pub async fn execute_plan(
    workspace: OnDisk<'_>,
    plan: &Plan,
    executor: Arc<dyn Model>,
    options: ExecuteOptions,
    cancel: Cancel,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> (Execution, Landing) {
    let OnDisk {
        root,
        index,
        max_file_bytes,
    } = workspace;
    let files = read_files(root, plan, max_file_bytes);
    let definitions = definitions_for(plan, index, &files);
    let execution = execute(
        plan.clone(),
        executor,
        files.clone(),
        definitions,
        options,
        cancel,
        progress,
    )
    .await;
    let landing = if execution.cancelled {
        Landing::default()
    } else {
        land(plan, &execution.edits, &files)
    };
    (execution, landing)
}

/// Lands the executed steps on the files as they are on disk now (a file edited meanwhile
/// takes the steps whose symbols it still holds) and writes them: all files or none
/// ([`disk::write_all`]: every file is checked before the first is written, each write is
/// atomic and refused if the file changed after the check, and a failed write restores the
/// files already written).
pub fn apply(
    root: &Path,
    plan: &Plan,
    execution: &Execution,
    max_file_bytes: u64,
) -> Result<Landing, Vec<(String, WriteError)>> {
    let current = read_files(root, plan, max_file_bytes);
    let landing = land(plan, &execution.edits, &current);
    let writes: Vec<disk::FileWrite<'_>> = landing
        .files
        .iter()
        .map(|file| disk::FileWrite {
            relative: &file.file,
            expected: file.base.as_deref(),
            text: &file.text,
        })
        .collect();
    disk::write_all(root, &writes, max_file_bytes)?;
    Ok(landing)
}
