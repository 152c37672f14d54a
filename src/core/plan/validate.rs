//! From the planner's answer to a plan that can run: every path inside the workspace, every
//! symbol known to the index, every dependency present and acyclic. What fails is reported
//! with the reason, never guessed at.

use std::collections::{BTreeMap, HashSet};

use super::path::workspace_relative;
use super::{Action, MAX_STEPS, Plan, RawPlan, RawStep, Rejected, Step};

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
        self.file(file).map(|entry| {
            entry
                .symbols()
                .map(|s| s.symbol_path().into_owned())
                .collect()
        })
    }

    fn exists(&self, file: &str) -> bool {
        self.file(file).is_some()
    }
}

/// Limits the plan schema puts on the planner's strings, checked again here for servers
/// that ignore grammars.
pub const MAX_SUMMARY_CHARS: usize = 200;
pub const MAX_PATH_CHARS: usize = 160;
pub const MAX_INSTRUCTION_CHARS: usize = 400;

pub fn validate(instruction: &str, raw: &RawPlan, workspace: &dyn Workspace) -> Plan {
    let mut rejected: BTreeMap<u32, String> = BTreeMap::new();
    let mut candidates: Vec<Step> = Vec::new();
    let mut created: BTreeMap<String, u32> = BTreeMap::new();
    let mut seen: HashSet<u32> = HashSet::new();
    for (index, raw_step) in raw.steps.iter().enumerate() {
        let id = raw_step.id;
        if index >= MAX_STEPS as usize {
            // Only the schema's number of steps is looked at; the rest is refused unread.
            rejected.entry(id).or_insert_with(|| {
                format!("the plan has more than {MAX_STEPS} steps, the most a plan may have")
            });
            continue;
        }
        if !seen.insert(id) {
            // Two steps with one id make every dependency on it ambiguous: neither runs.
            rejected
                .entry(id)
                .or_insert_with(|| format!("another step already has id {id}"));
            candidates.retain(|step| step.id != id);
            continue;
        }
        match check_step(instruction, raw_step, workspace, &created) {
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
    let ids: HashSet<u32> = raw
        .steps
        .iter()
        .take(MAX_STEPS as usize)
        .map(|step| step.id)
        .collect();
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
    let ordered = order(candidates, &mut rejected);
    Plan {
        instruction: instruction.to_owned(),
        summary: raw.summary.trim().chars().take(MAX_SUMMARY_CHARS).collect(),
        steps: ordered,
        rejected: rejected
            .into_iter()
            .map(|(id, reason)| Rejected { id, reason })
            .collect(),
        fan_outs: Vec::new(),
        planned_by: String::new(),
    }
}

/// Orders the steps so that dependencies come first, each step as early as its
/// dependencies allow and otherwise in the planner's order (Kahn's algorithm over the
/// planner's order: near-linear in the steps and dependencies). On the way, two steps that
/// change the same symbol (or rewrite the same file) must be ordered between themselves:
/// otherwise they would run at once and one would overwrite the other.
fn order(candidates: Vec<Step>, rejected: &mut BTreeMap<u32, String>) -> Vec<Step> {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap};
    let position: HashMap<u32, usize> = candidates
        .iter()
        .enumerate()
        .map(|(index, step)| (step.id, index))
        .collect();
    let mut waiting_on: Vec<usize> = vec![0; candidates.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); candidates.len()];
    let mut ready = BinaryHeap::new();
    for (index, step) in candidates.iter().enumerate() {
        for dep in &step.depends_on {
            // A dependency that is not a candidate was rejected earlier: it is resolved,
            // and the step fails below.
            if let Some(&dep_index) = position.get(dep) {
                waiting_on[index] += 1;
                dependents[dep_index].push(index);
            }
        }
        if waiting_on[index] == 0 {
            ready.push(Reverse(index));
        }
    }
    let mut ordered: Vec<Step> = Vec::new();
    // Every step placed so far, with all the steps it depends on, directly or not.
    let mut ancestors: HashMap<u32, HashSet<u32>> = HashMap::new();
    let mut resolved = vec![false; candidates.len()];
    while let Some(Reverse(index)) = ready.pop() {
        resolved[index] = true;
        let step = &candidates[index];
        let failed_dep = step
            .depends_on
            .iter()
            .find(|dep| rejected.contains_key(dep));
        if let Some(dep) = failed_dep {
            rejected.insert(
                step.id,
                format!("it depends on step {dep}, which cannot run"),
            );
        } else {
            let mut own: HashSet<u32> = HashSet::new();
            for dep in &step.depends_on {
                own.insert(*dep);
                if let Some(further) = ancestors.get(dep) {
                    own.extend(further);
                }
            }
            match unordered_clash(&ordered, step, &own) {
                Some(reason) => {
                    rejected.insert(step.id, reason);
                }
                None => {
                    ancestors.insert(step.id, own);
                    ordered.push(step.clone());
                }
            }
        }
        for &dependent in &dependents[index] {
            waiting_on[dependent] -= 1;
            if waiting_on[dependent] == 0 {
                ready.push(Reverse(dependent));
            }
        }
    }
    for (index, step) in candidates.iter().enumerate() {
        if !resolved[index] {
            rejected.insert(step.id, "its dependencies form a cycle".to_owned());
        }
    }
    ordered
}

fn check_step(
    plan_instruction: &str,
    raw: &RawStep,
    workspace: &dyn Workspace,
    created: &BTreeMap<String, u32>,
) -> Result<Step, String> {
    check_lengths(raw)?;
    let file = workspace_relative(&raw.file)?;
    if let Some(reason) = protected_reason(&file, plan_instruction) {
        return Err(reason);
    }
    if raw.action == Action::CreateFile && !is_new_file_name(&file) {
        return Err(format!(
            "`{}` is not a name a new file may have (letters, digits, `_`, `.`, `/` and `-`, at most 82 characters, ending in an extension)",
            file.escape_debug()
        ));
    }
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
        part_of: None,
    })
}

/// The schema's bounds on one step's strings and dependencies.
fn check_lengths(raw: &RawStep) -> Result<(), String> {
    let too_long = |what: &str, text: &str, limit: usize| {
        (text.chars().count() > limit)
            .then(|| format!("its {what} is longer than {limit} characters"))
    };
    if let Some(reason) = too_long("file", &raw.file, MAX_PATH_CHARS)
        .or_else(|| too_long("target", &raw.target, MAX_PATH_CHARS))
        .or_else(|| too_long("instruction", &raw.instruction, MAX_INSTRUCTION_CHARS))
    {
        return Err(reason);
    }
    if raw.depends_on.len() > MAX_STEPS as usize {
        return Err(format!(
            "it lists {} dependencies; a plan has at most {MAX_STEPS} steps",
            raw.depends_on.len()
        ));
    }
    Ok(())
}

/// The schema's pattern for a new file: `^[A-Za-z0-9_][A-Za-z0-9_./-]{0,80}[.][a-z]{1,4}$`.
fn is_new_file_name(path: &str) -> bool {
    let bytes = path.as_bytes();
    let Some(dot) = path.rfind('.') else {
        return false;
    };
    let (stem, extension) = (&bytes[..dot], &bytes[dot + 1..]);
    let body_ok = |byte: &u8| byte.is_ascii_alphanumeric() || b"_./-".contains(byte);
    !stem.is_empty()
        && stem.len() <= 81
        && (stem[0].is_ascii_alphanumeric() || stem[0] == b'_')
        && stem[1..].iter().all(body_ok)
        && (1..=4).contains(&extension.len())
        && extension.iter().all(u8::is_ascii_lowercase)
}

/// Folders and files a plan never writes on its own: version control's (always refused),
/// and editor tasks, build-tool and CI configuration and tierls' own configuration, which
/// run code or change what runs: refused unless the user's instruction names the path.
fn protected_reason(file: &str, instruction: &str) -> Option<String> {
    const VERSION_CONTROL: [&str; 5] = [".git", ".hg", ".svn", ".jj", ".bzr"];
    const CONFIGURATION_FOLDERS: [&str; 8] = [
        ".vscode",
        ".idea",
        ".helix",
        ".zed",
        ".cargo",
        ".github",
        ".gitlab",
        ".devcontainer",
    ];
    const CONFIGURATION_FILES: [&str; 8] = [
        "tierls.toml",
        ".gitlab-ci.yml",
        ".envrc",
        ".nvim.lua",
        ".nvimrc",
        ".exrc",
        ".gitattributes",
        ".gitmodules",
    ];
    let parts: Vec<&str> = file.split('/').collect();
    if let Some(part) = parts.iter().find(|part| VERSION_CONTROL.contains(part)) {
        return Some(format!(
            "`{file}` is inside `{part}`, version control's own folder: plans never write there"
        ));
    }
    let folder = parts[..parts.len() - 1]
        .iter()
        .find(|part| CONFIGURATION_FOLDERS.contains(part));
    let name = parts[parts.len() - 1];
    let what = match folder {
        Some(folder) => format!("inside `{folder}`, which holds editor, build or CI configuration"),
        None if CONFIGURATION_FILES.contains(&name) => {
            "configuration that runs code or changes what runs".to_owned()
        }
        None => return None,
    };
    if instruction.contains(file) {
        return None; // The user asked for this file by name.
    }
    Some(format!(
        "`{file}` is {what}: a plan writes it only when the instruction names `{file}`"
    ))
}

/// Why `step` cannot run beside an earlier step that changes the same thing without being
/// one of its dependencies, if it cannot.
fn unordered_clash(
    earlier_steps: &[Step],
    step: &Step,
    ancestors: &HashSet<u32>,
) -> Option<String> {
    // A fan-out changes the symbol's users, not the symbol: its jobs are checked as they
    // are expanded.
    let fans_out = |step: &Step| step.action == Action::UpdateReferences;
    if fans_out(step) {
        return None;
    }
    let earlier = earlier_steps.iter().find(|earlier| {
        !fans_out(earlier)
            && earlier.file == step.file
            && (earlier.target == step.target
                || earlier.target.is_empty()
                || step.target.is_empty())
            && !ancestors.contains(&earlier.id)
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
