//! Fan-out steps: "change every use of `S`" (`update_references`), expanded from the index
//! into one job per symbol that uses `S`, before anything runs and before the plan is
//! shown. The planner writes one step; each job is an ordinary `replace_symbol` step,
//! anchored and landed like any other; no step cap applies to the expansion, only
//! `plan.max_fan_out`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::{Action, Plan, Step};
use crate::core::index::extract::{extract, parse};
use crate::core::index::language::Language;
use crate::core::index::table::{Found, Index};

/// Files a plan changed, indexed from their new texts: what a revision's fan-outs see
/// in place of the workspace's index entries for them.
#[derive(Debug, Default)]
pub struct Overlay {
    index: Index,
    /// Every changed file, removed ones included: the workspace's index does not answer
    /// for them.
    shadowed: BTreeSet<String>,
}

impl Overlay {
    /// Parses each changed file of a language tierls indexes (`None`: the file is gone).
    pub fn of(texts: &BTreeMap<String, Option<String>>) -> Overlay {
        let mut overlay = Overlay::default();
        for (file, text) in texts {
            overlay.shadowed.insert(file.clone());
            let Some((language, text)) = Language::from_path(file).zip(text.as_deref()) else {
                continue;
            };
            if let Some(tree) = parse(language, text, None) {
                let found = extract(language, &tree, text);
                overlay.index.upsert(file, language, found, text.len());
            }
        }
        overlay
    }

    pub fn over<'a>(&'a self, base: &'a Index) -> Layered<'a> {
        Layered {
            base,
            overlay: Some(self),
        }
    }
}

/// The index a fan-out expands over: the workspace's, with an [`Overlay`] on it or not.
#[derive(Clone, Copy)]
pub struct Layered<'a> {
    pub base: &'a Index,
    pub overlay: Option<&'a Overlay>,
}

impl<'a> Layered<'a> {
    pub fn plain(base: &'a Index) -> Layered<'a> {
        Layered {
            base,
            overlay: None,
        }
    }

    fn is_shadowed(&self, file: &str) -> bool {
        self.overlay
            .is_some_and(|overlay| overlay.shadowed.contains(file))
    }

    fn changed(&self) -> Option<&'a Index> {
        self.overlay.map(|overlay| &overlay.index)
    }

    /// The index that answers for `file`.
    fn layer(&self, file: &str) -> &'a Index {
        match self.changed() {
            Some(changed) if self.is_shadowed(file) => changed,
            _ => self.base,
        }
    }

    fn symbol(&self, file: &str, path: &str) -> Option<Found<'a>> {
        let entry = self.layer(file).file(file)?;
        entry.symbols().find(|symbol| symbol.symbol_path() == path)
    }

    /// Every use of `name`, by path and then position.
    fn references(&self, name: &str) -> Vec<(&'a str, Range<usize>)> {
        let mut found: Vec<(&str, Range<usize>)> = self
            .base
            .references(name)
            .into_iter()
            .filter(|(file, _)| !self.is_shadowed(file))
            .collect();
        if let Some(changed) = self.changed() {
            found.extend(changed.references(name));
        }
        found.sort_by(|a, b| (a.0, a.1.start).cmp(&(b.0, b.1.start)));
        found
    }

    fn enclosing(&self, file: &str, offset: usize) -> Option<Found<'a>> {
        self.layer(file).enclosing(file, offset)
    }

    /// How many files define `name`.
    fn defining_files(&self, name: &str) -> usize {
        let mut files: BTreeSet<&str> = self
            .base
            .definitions(name)
            .iter()
            .map(|found| found.path)
            .filter(|file| !self.is_shadowed(file))
            .collect();
        if let Some(changed) = self.changed() {
            files.extend(changed.definitions(name).iter().map(|found| found.path));
        }
        files.len()
    }
}

/// One fan-out step and what it became.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FanOut {
    /// The planner's step id.
    pub step: u32,
    /// Where the symbol is defined, and its qualified path.
    pub file: String,
    pub symbol: String,
    pub instruction: String,
    /// The jobs' step ids, in path order.
    pub jobs: Vec<u32>,
    /// Every use found and the files they are in.
    pub sites: usize,
    pub files: usize,
    /// Uses no job changes, and why: `(where, reason)`.
    pub not_done: Vec<(String, String)>,
}

/// Expands every `update_references` step of `plan` into jobs, at most `max_jobs` per
/// fan-out. Steps that depended on a fan-out depend on all of its jobs instead.
pub fn expand(plan: &mut Plan, index: &Index, max_jobs: usize) {
    expand_over(plan, Layered::plain(index), max_jobs);
}

/// [`expand`] over a layered index: a revision's fan-outs see the plan's texts.
pub fn expand_over(plan: &mut Plan, index: Layered<'_>, max_jobs: usize) {
    let mut next_id = plan.steps.iter().map(|step| step.id).max().unwrap_or(0) + 1;
    let mut expanded: Vec<Step> = Vec::new();
    let mut jobs_of: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut claimed: BTreeMap<(String, String), u32> = BTreeMap::new();
    let others: Vec<Step> = plan
        .steps
        .iter()
        .filter(|step| step.action != Action::UpdateReferences)
        .cloned()
        .collect();
    for step in std::mem::take(&mut plan.steps) {
        if step.action != Action::UpdateReferences {
            expanded.push(step);
            continue;
        }
        // A second fan-out on the same symbol has nothing left to do: the first one's jobs
        // stand for it.
        if let Some(first) = plan
            .fan_outs
            .iter()
            .find(|fan_out| fan_out.file == step.file && fan_out.symbol == step.target)
        {
            let duplicate = FanOut {
                step: step.id,
                file: step.file.clone(),
                symbol: step.target.clone(),
                instruction: step.instruction.clone(),
                not_done: vec![(
                    format!("{} `{}`", step.file, step.target),
                    format!("step {} already changes every use", first.step),
                )],
                ..FanOut::default()
            };
            jobs_of.insert(step.id, first.jobs.clone());
            plan.fan_outs.push(duplicate);
            continue;
        }
        let fan_out = expand_one(&step, &index, &others, max_jobs, &mut next_id, &mut claimed);
        for job in &fan_out.1 {
            expanded.push(job.clone());
        }
        jobs_of.insert(step.id, fan_out.0.jobs.clone());
        plan.fan_outs.push(fan_out.0);
    }
    for step in &mut expanded {
        let mut depends_on = Vec::new();
        for dep in &step.depends_on {
            match jobs_of.get(dep) {
                Some(jobs) => depends_on.extend(jobs),
                None => depends_on.push(*dep),
            }
        }
        step.depends_on = depends_on;
    }
    plan.steps = expanded;
}

fn expand_one(
    step: &Step,
    index: &Layered<'_>,
    others: &[Step],
    max_jobs: usize,
    next_id: &mut u32,
    claimed: &mut BTreeMap<(String, String), u32>,
) -> (FanOut, Vec<Step>) {
    let mut fan_out = FanOut {
        step: step.id,
        file: step.file.clone(),
        symbol: step.target.clone(),
        instruction: step.instruction.clone(),
        ..FanOut::default()
    };
    let Some(symbol) = index.symbol(&step.file, &step.target) else {
        fan_out.not_done.push((
            format!("{} `{}`", step.file, step.target),
            "the symbol is not in the index".into(),
        ));
        return (fan_out, Vec::new());
    };
    let definitions = index.defining_files(symbol.name());
    let sites = index.references(symbol.name());
    fan_out.sites = sites.len();
    // The symbols the uses sit in, in path order, each once.
    let mut users: Vec<(String, String)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (file, range) in &sites {
        let enclosing = index
            .enclosing(file, range.start)
            .map(|symbol| symbol.symbol_path().into_owned())
            .unwrap_or_default();
        let user = ((*file).to_owned(), enclosing);
        if seen.insert(user.clone()) {
            users.push(user);
        }
    }
    let mut files: Vec<&str> = sites.iter().map(|(file, _)| *file).collect();
    files.dedup();
    fan_out.files = files.len();
    let mut jobs = Vec::new();
    for (file, enclosing) in users {
        let place = if enclosing.is_empty() {
            format!("{file} (top level)")
        } else {
            format!("{file} `{enclosing}`")
        };
        let owner = others.iter().find(|other| {
            other.file == file && (other.target == enclosing || other.target.is_empty())
        });
        let reason = if enclosing.is_empty() {
            Some("the use is outside any symbol: change it with an edit_file step".to_owned())
        } else if file == step.file && enclosing == step.target {
            Some(format!(
                "the use is inside `{}` itself: its own step changes it",
                step.target
            ))
        } else if let Some(owner) = owner {
            Some(format!("step {} changes this symbol", owner.id))
        } else if definitions > 1 && file != step.file {
            Some(format!(
                "`{}` is defined in {definitions} places and uses are found by name: confirm this one uses {} `{}` and change it with a step of its own",
                symbol.name(),
                step.file,
                step.target
            ))
        } else if jobs.len() >= max_jobs {
            Some(format!(
                "over the {max_jobs} jobs a fan-out may have (`plan.max_fan_out`)"
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            fan_out.not_done.push((place, reason));
            continue;
        }
        let id = *next_id;
        *next_id += 1;
        fan_out.jobs.push(id);
        // A symbol that uses two fanned-out symbols gets one job per fan-out, in turn.
        let mut depends_on = step.depends_on.clone();
        if let Some(earlier) = claimed.insert((file.clone(), enclosing.clone()), id) {
            depends_on.push(earlier);
        }
        jobs.push(Step {
            id,
            file,
            target: enclosing,
            action: Action::ReplaceSymbol,
            instruction: format!(
                "{} (This symbol uses `{}` from {}: change its uses of it.)",
                step.instruction, step.target, step.file
            ),
            depends_on,
            part_of: Some(step.id),
        });
    }
    (fan_out, jobs)
}

/// The name a fan-out's uses are found by: the last segment of its qualified path.
pub fn used_name(symbol: &str) -> &str {
    symbol
        .rsplit(['.', ':'])
        .next()
        .filter(|name| !name.is_empty())
        .unwrap_or(symbol)
}

/// `text` uses `name` as a whole word (an identifier not inside a longer one).
pub fn uses_word(text: &str, name: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    !name.is_empty()
        && text.match_indices(name).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + name.len()..].chars().next();
            !before.is_some_and(is_word) && !after.is_some_and(is_word)
        })
}

/// Lists, under each fan-out, an unindexed file (generated or too large) that uses its
/// name: no job is made for it, so the user knows to change or regenerate it.
pub fn note_unindexed(plan: &mut Plan, step: u32, file: &str, why: &str) {
    if let Some(fan_out) = plan.fan_outs.iter_mut().find(|f| f.step == step) {
        let reason = match why {
            "generated" => {
                "a generated file uses the name: it is never changed; regenerate it".to_owned()
            }
            why => format!("a file tierls does not index ({why}) uses the name: change it by hand"),
        };
        fan_out.not_done.push((file.to_owned(), reason));
    }
}
