//! The workspace as a plan sees it: the index for symbols, the disk for what exists and
//! where links lead.

use std::collections::BTreeMap;
use std::path::Path;

use crate::core::index::language::Language;
use crate::core::index::table::Index;
use crate::core::plan::anchor::locate;
use crate::core::plan::context::used_definitions;
use crate::core::plan::{Action, Plan, Workspace};
use crate::disk;

/// The most definitions an executor is shown for one step.
const MAX_DEFINITIONS: usize = 12;

/// What validation needs of the index for one plan, copied out under the session lock so
/// that validating (which also asks the disk) runs with no lock held.
pub struct PlanFacts {
    pub root: std::path::PathBuf,
    /// The symbols of each file the plan names, `None` when the file is not indexed.
    files: BTreeMap<String, Option<Vec<String>>>,
}

impl PlanFacts {
    /// The facts for the files `raw` names (the decoder has bounded their number).
    pub fn gather(index: &Index, root: &Path, raw: &crate::core::plan::RawPlan) -> Self {
        let files = raw
            .steps
            .iter()
            .filter_map(|step| crate::core::plan::path::workspace_relative(&step.file).ok())
            .map(|file| {
                let symbols = index.symbols(&file);
                (file, symbols)
            })
            .collect();
        PlanFacts {
            root: root.to_owned(),
            files,
        }
    }
}

impl PlanFacts {
    /// The facts of files as a plan left them (`texts`), for a revision's steps: they
    /// target the symbols the plan's result has, not the index's.
    pub fn from_texts(root: &Path, texts: &BTreeMap<String, Option<String>>) -> Self {
        let files = texts
            .iter()
            .map(|(file, text)| {
                let symbols = text.as_ref().and_then(|text| {
                    let language = Language::from_path(file)?;
                    let tree = crate::core::index::extract::parse(language, text, None)?;
                    let symbols = crate::core::index::extract::extract(language, &tree, text);
                    Some(
                        symbols
                            .symbols
                            .into_iter()
                            .map(|symbol| symbol.path().to_owned())
                            .collect(),
                    )
                });
                (file.clone(), symbols)
            })
            .collect();
        PlanFacts {
            root: root.to_owned(),
            files,
        }
    }
}

impl Workspace for PlanFacts {
    fn symbols(&self, file: &str) -> Option<Vec<String>> {
        self.files.get(file).cloned().flatten()
    }

    fn exists(&self, file: &str) -> bool {
        matches!(self.files.get(file), Some(Some(_))) || disk::exists(&self.root.join(file))
    }

    fn check_path(&self, file: &str) -> Result<(), String> {
        check_on_disk(&self.root, file)
    }
}

/// Refuses a path that leads outside the root through a symbolic link.
fn check_on_disk(root: &Path, file: &str) -> Result<(), String> {
    match disk::confine(root, file) {
        Ok(_) => Ok(()),
        Err(disk::ReadError::OutsideRoot { .. }) => Err(format!(
            "`{file}` leads outside the workspace root through a symbolic link"
        )),
        Err(err) => Err(err.to_string()),
    }
}

/// The signatures each step's code uses, from the files as they are before the plan runs.
pub fn definitions_for(
    plan: &Plan,
    index: &Index,
    files: &BTreeMap<String, Option<String>>,
) -> BTreeMap<u32, Vec<String>> {
    plan.steps
        .iter()
        .map(|step| {
            let text = files.get(&step.file).cloned().flatten().unwrap_or_default();
            let source = match step.action {
                Action::CreateFile => step.instruction.clone(),
                Action::EditFile => text,
                _ => Language::from_path(&step.file)
                    .and_then(|language| locate(language, &text, &step.target))
                    .map(|located| located.source(&text).to_owned())
                    .unwrap_or_default(),
            };
            let words = format!("{source}\n{}", step.instruction);
            let found = used_definitions(index, &words, &step.file, &step.target, MAX_DEFINITIONS);
            (step.id, found)
        })
        .collect()
}
