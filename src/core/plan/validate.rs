//! From the planner's answer to a plan that can run: every path inside the workspace, every
//! symbol known to the index, every dependency present and acyclic. What fails is reported
//! with the reason, never guessed at.

use std::collections::{BTreeMap, HashSet};

use super::path::workspace_relative;
use super::{Action, Plan, RawPlan, RawStep, Rejected, Step};

/// What validation needs to know about the workspace.
pub trait Workspace {
    /// The qualified symbol paths of an indexed file; `None` when the file is not indexed.
    fn symbols(&self, file: &str) -> Option<Vec<String>>;
    /// Whether anything (file, directory, link) exists at the workspace-relative `file`.
    fn exists(&self, file: &str) -> bool;
    /// Refuses a path that the disk leads outside the workspace (a symbolic link).
    fn check_path(&self, _file: &str) -> Result<(), String> {
        Ok(())
    }
}

impl Workspace for crate::core::index::table::Index {
    fn symbols(&self, file: &str) -> Option<Vec<String>> {
        self.file(file)
            .map(|entry| entry.symbols.iter().map(|s| s.path.clone()).collect())
    }

    fn exists(&self, file: &str) -> bool {
        self.file(file).is_some()
    }
}

pub fn validate(instruction: &str, raw: &RawPlan, workspace: &dyn Workspace) -> Plan {
    let mut rejected: BTreeMap<u32, String> = BTreeMap::new();
    let mut candidates: Vec<Step> = Vec::new();
    let mut created: BTreeMap<String, u32> = BTreeMap::new();
    for raw_step in &raw.steps {
        let id = raw_step.id;
        if candidates.iter().any(|step| step.id == id) || rejected.contains_key(&id) {
            // Two steps with one id make every dependency on it ambiguous: neither runs.
            rejected
                .entry(id)
                .or_insert_with(|| format!("another step already has id {id}"));
            candidates.retain(|step| step.id != id);
            continue;
        }
        match check_step(raw_step, workspace, &created) {
            Ok(step) => {
                if step.action == Action::CreateFile {
                    created.insert(step.file.clone(), step.id);
                }
                candidates.push(step);
            }
            Err(reason) => {
                rejected.insert(id, reason);
            }
        }
    }

    // Dependencies: present, not on itself, not through a rejected step, not in a cycle.
    let ids: HashSet<u32> = raw.steps.iter().map(|step| step.id).collect();
    candidates.retain(|step| {
        let reason = if step.depends_on.contains(&step.id) {
            Some("it depends on itself".to_owned())
        } else {
            step.depends_on
                .iter()
                .find(|dep| !ids.contains(dep))
                .map(|dep| format!("it depends on step {dep}, which the plan does not have"))
        }
        .or_else(|| {
            // A step that edits a file the plan creates must wait for that file.
            created
                .get(&step.file)
                .filter(|&&creator| creator != step.id && !step.depends_on.contains(&creator))
                .map(|creator| {
                    format!(
                        "it edits {}, which step {creator} creates, without depending on it",
                        step.file
                    )
                })
        });
        match reason {
            Some(reason) => {
                rejected.insert(step.id, reason);
                false
            }
            None => true,
        }
    });
    // Steps are ordered so that dependencies come first. On the way, two steps that change
    // the same symbol (or rewrite the same file) must be ordered between themselves:
    // otherwise they would run at once and one would overwrite the other.
    let mut ordered: Vec<Step> = Vec::new();
    loop {
        let before = candidates.len();
        let mut still_waiting = Vec::new();
        for step in candidates {
            if let Some(dep) = step
                .depends_on
                .iter()
                .find(|dep| rejected.contains_key(dep))
            {
                rejected.insert(
                    step.id,
                    format!("it depends on step {dep}, which cannot run"),
                );
            } else if step
                .depends_on
                .iter()
                .all(|dep| ordered.iter().any(|done| done.id == *dep))
            {
                match unordered_clash(&ordered, &step) {
                    Some(reason) => {
                        rejected.insert(step.id, reason);
                    }
                    None => ordered.push(step),
                }
            } else {
                still_waiting.push(step);
            }
        }
        candidates = still_waiting;
        if candidates.is_empty() {
            break;
        }
        if candidates.len() == before {
            for step in &candidates {
                rejected.insert(step.id, "its dependencies form a cycle".to_owned());
            }
            break;
        }
    }
    Plan {
        instruction: instruction.to_owned(),
        summary: raw.summary.trim().to_owned(),
        steps: ordered,
        rejected: rejected
            .into_iter()
            .map(|(id, reason)| Rejected { id, reason })
            .collect(),
    }
}

fn check_step(
    raw: &RawStep,
    workspace: &dyn Workspace,
    created: &BTreeMap<String, u32>,
) -> Result<Step, String> {
    let file = workspace_relative(&raw.file)?;
    workspace.check_path(&file)?;
    let target = raw.target.trim().to_owned();
    let instruction = raw.instruction.trim().to_owned();
    if instruction.is_empty() && raw.action.needs_executor() {
        return Err("its instruction is empty".into());
    }
    match raw.action {
        Action::CreateFile => {
            if created.contains_key(&file) {
                return Err(format!("another step already creates {file}"));
            }
            if workspace.exists(&file) {
                return Err(format!(
                    "{file} already exists (use edit_file to change it)"
                ));
            }
        }
        Action::EditFile => {
            if workspace.symbols(&file).is_none() && !created.contains_key(&file) {
                return Err(format!("{file} is not a source file in the index"));
            }
        }
        action => {
            if created.contains_key(&file) {
                return Err(format!(
                    "{file} is created by this plan: its symbols are written by the step that creates it"
                ));
            }
            let Some(symbols) = workspace.symbols(&file) else {
                return Err(format!("{file} is not a source file in the index"));
            };
            if target.is_empty() {
                return Err(format!("{} needs a target symbol", action.name()));
            }
            if !symbols.contains(&target) {
                let last = target.rsplit([':', '.']).next().unwrap_or(&target);
                let similar: Vec<&str> = symbols
                    .iter()
                    .filter(|path| path.rsplit([':', '.']).next() == Some(last))
                    .map(String::as_str)
                    .take(5)
                    .collect();
                return Err(if similar.is_empty() {
                    format!("{file} has no symbol `{target}`")
                } else {
                    format!(
                        "{file} has no symbol `{target}` (it has {})",
                        similar
                            .iter()
                            .map(|path| format!("`{path}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
            }
        }
    }
    let mut depends_on = raw.depends_on.clone();
    depends_on.sort_unstable();
    depends_on.dedup();
    Ok(Step {
        id: raw.id,
        file,
        target: if raw.action.needs_symbol() {
            target
        } else {
            String::new()
        },
        action: raw.action,
        instruction,
        depends_on,
    })
}

/// Why `step` cannot run beside an earlier step that changes the same thing without being
/// one of its dependencies, if it cannot.
fn unordered_clash(earlier_steps: &[Step], step: &Step) -> Option<String> {
    let earlier = earlier_steps.iter().find(|earlier| {
        earlier.file == step.file
            && (earlier.target == step.target
                || earlier.target.is_empty()
                || step.target.is_empty())
            && !is_ancestor(earlier_steps, earlier.id, step)
    })?;
    let what = if step.target.is_empty() || earlier.target.is_empty() {
        step.file.clone()
    } else {
        format!("`{}` in {}", step.target, step.file)
    };
    Some(format!(
        "it changes {what}, as step {} does, without depending on it",
        earlier.id
    ))
}

/// Whether `ancestor` is among the steps `step` depends on, directly or not.
fn is_ancestor(steps: &[Step], ancestor: u32, step: &Step) -> bool {
    let mut pending: Vec<u32> = step.depends_on.clone();
    let mut seen = HashSet::new();
    while let Some(id) = pending.pop() {
        if id == ancestor {
            return true;
        }
        if seen.insert(id)
            && let Some(found) = steps.iter().find(|candidate| candidate.id == id)
        {
            pending.extend(&found.depends_on);
        }
    }
    false
}
