//! Landing a plan: the executed steps spliced onto the files as they are now.
//!
//! The steps re-anchor by symbol path, so a file the user edited elsewhere still takes them;
//! a step whose symbol the user changed is refused, and so is every step that depends on a
//! refused one, so that what lands is always a consistent part of the plan.

use std::collections::{BTreeMap, BTreeSet};

use super::Plan;
use super::anchor::{StepEdit, splice};

/// One file after the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LandedFile {
    pub file: String,
    /// The text the steps were spliced onto; `None` for a file the plan creates.
    pub base: Option<String>,
    pub text: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Landing {
    /// The files that change, in plan order.
    pub files: Vec<LandedFile>,
    /// Steps that landed, in the order they were spliced.
    pub landed: Vec<u32>,
    /// Steps refused at landing, with the reason.
    pub refused: Vec<(u32, String)>,
}

/// Splices `edits` (in the order they were made) onto `bases`: each file's current text,
/// `None` when it does not exist.
pub fn land(plan: &Plan, edits: &[StepEdit], bases: &BTreeMap<String, Option<String>>) -> Landing {
    let mut refused: BTreeMap<u32, String> = BTreeMap::new();
    loop {
        let mut newly_refused = false;
        let mut files: Vec<LandedFile> = Vec::new();
        for file in plan.files() {
            let base = bases.get(file).cloned().flatten();
            let mut text = base.clone();
            for edit in edits.iter().filter(|edit| edit.file == file) {
                if refused.contains_key(&edit.step) {
                    continue;
                }
                match splice(text.as_deref(), edit) {
                    Ok(new) => text = Some(new),
                    Err(err) => {
                        refused.insert(edit.step, err.to_string());
                        newly_refused = true;
                    }
                }
            }
            if let Some(text) = text
                && base.as_deref() != Some(text.as_str())
            {
                files.push(LandedFile {
                    file: file.to_owned(),
                    base,
                    text,
                });
            }
        }
        newly_refused |= refuse_dependents(plan, edits, &mut refused);
        if !newly_refused {
            let landed = edits
                .iter()
                .map(|edit| edit.step)
                .filter(|step| !refused.contains_key(step))
                .collect();
            return Landing {
                files,
                landed,
                refused: refused.into_iter().collect(),
            };
        }
    }
}

/// Refuses every step that depends, directly or not, on a refused one; `true` when it
/// refused any.
fn refuse_dependents(plan: &Plan, edits: &[StepEdit], refused: &mut BTreeMap<u32, String>) -> bool {
    let executed: BTreeSet<u32> = edits.iter().map(|edit| edit.step).collect();
    let mut any = false;
    loop {
        let next = plan.steps.iter().find_map(|step| {
            if !executed.contains(&step.id) || refused.contains_key(&step.id) {
                return None;
            }
            let dep = step
                .depends_on
                .iter()
                .find(|dep| refused.contains_key(dep))?;
            Some((
                step.id,
                format!("it depends on step {dep}, which was refused"),
            ))
        });
        match next {
            Some((id, reason)) => {
                refused.insert(id, reason);
                any = true;
            }
            None => return any,
        }
    }
}
