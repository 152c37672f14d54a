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

pub struct DiskWorkspace<'a> {
    pub index: &'a Index,
    pub root: &'a Path,
}

impl Workspace for DiskWorkspace<'_> {
    fn symbols(&self, file: &str) -> Option<Vec<String>> {
        self.index.symbols(file)
    }

    fn exists(&self, file: &str) -> bool {
        self.index.file(file).is_some() || disk::exists(&self.root.join(file))
    }

    fn check_path(&self, file: &str) -> Result<(), String> {
        match disk::confine(self.root, file) {
            Ok(_) => Ok(()),
            Err(disk::ReadError::OutsideRoot { .. }) => Err(format!(
                "`{file}` leads outside the workspace root through a symbolic link"
            )),
            Err(err) => Err(err.to_string()),
        }
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
