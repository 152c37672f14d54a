//! Repair rounds: what `plan.check` reports after a plan landed becomes new executor jobs,
//! each on the symbol a failure is in, with the failure as its instruction; the step that
//! changed that symbol is its owner (the repair depends on it, so a user edit that refuses
//! the step refuses its repair too). [`next_round`] decides, from what the last check
//! said, whether to repair again, ask the planner to revise, or stop, and says why.

use std::collections::BTreeMap;

use super::anchor::{MAX_EDIT_FILE_BYTES, locate};
use super::failures::Failure;
use super::prompt::{PlannerInput, TargetSource};
use super::{Action, Plan, Step};
use crate::core::index::extract::{extract, parse};
use crate::core::index::language::Language;

/// A failure with the symbol it is in (`None`: top-level code, or a file tierls does not
/// parse).
pub type Located = (Failure, Option<String>);

/// The most failures one repair job is told about: the first ones say what is wrong.
const MAX_FAILURES_PER_JOB: usize = 6;
/// The longest failure message a job is told, in characters.
const MAX_MESSAGE_CHARS: usize = 240;

/// The jobs of one repair round, and the failures no job can reach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    pub steps: Vec<Step>,
    /// `(failure, why no job takes it)`.
    pub left: Vec<(Failure, String)>,
}

/// One job per symbol with failures (or one `edit_file` per small file whose failures are
/// outside any symbol), numbered from `next_id`, at most `max_jobs`. `texts` holds each
/// file as the plan left it (the failures' line numbers are in these texts).
pub fn repair_steps(
    plan: &Plan,
    failures: &[Located],
    texts: &BTreeMap<String, Option<String>>,
    command: &str,
    next_id: u32,
    max_jobs: usize,
) -> Repairs {
    // The files where some failure is outside every symbol are rewritten whole, with all
    // of their failures, so that one round never has two jobs on one file's top level.
    let mut whole_files: BTreeMap<&str, Vec<&Failure>> = BTreeMap::new();
    let mut by_symbol: BTreeMap<(&str, &str), Vec<&Failure>> = BTreeMap::new();
    let mut repairs = Repairs::default();
    for (failure, symbol) in failures {
        match symbol {
            None => whole_files.entry(&failure.file).or_default().push(failure),
            Some(symbol) => by_symbol
                .entry((&failure.file, symbol))
                .or_default()
                .push(failure),
        }
    }
    for ((file, _), failures) in &by_symbol {
        if let Some(whole) = whole_files.get_mut(file) {
            whole.extend(failures.iter().copied());
        }
    }
    // Each job with the failures it takes, numbered once the set is known.
    let mut jobs: Vec<(Step, Vec<&Failure>)> = Vec::new();
    for (file, failures) in &whole_files {
        let text = texts.get(*file).cloned().flatten();
        let reason = match &text {
            None => Some("the file is not one the plan or the workspace holds".to_owned()),
            Some(text) if text.len() > MAX_EDIT_FILE_BYTES => Some(format!(
                "it is outside every symbol, and the file is over the {MAX_EDIT_FILE_BYTES} bytes a job may rewrite whole"
            )),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            repairs.left.extend(
                failures
                    .iter()
                    .map(|failure| ((*failure).clone(), reason.clone())),
            );
            continue;
        }
        let step = Step {
            id: 0,
            file: (*file).to_owned(),
            target: String::new(),
            action: Action::EditFile,
            instruction: instruction(command, plan, file, None, failures, text.as_deref()),
            depends_on: owners(plan, file, None),
            part_of: None,
        };
        jobs.push((step, failures.clone()));
    }
    for ((file, symbol), failures) in &by_symbol {
        if whole_files.contains_key(file) {
            continue;
        }
        let text = texts.get(*file).cloned().flatten();
        let step = Step {
            id: 0,
            file: (*file).to_owned(),
            target: (*symbol).to_owned(),
            action: Action::ReplaceSymbol,
            instruction: instruction(command, plan, file, Some(symbol), failures, text.as_deref()),
            depends_on: owners(plan, file, Some(symbol)),
            part_of: None,
        };
        jobs.push((step, failures.clone()));
    }
    for (number, (mut step, failures)) in jobs.into_iter().enumerate() {
        if number >= max_jobs {
            repairs.left.extend(failures.into_iter().map(|failure| {
                (
                    failure.clone(),
                    format!("past the {max_jobs} repair jobs a round may have (plan.max_fan_out)"),
                )
            }));
            continue;
        }
        step.id = next_id + number as u32;
        repairs.steps.push(step);
    }
    repairs
}

/// The steps that changed what a repair rewrites: those on the same symbol (or one inside
/// it, or around it), and whole-file steps on the file.
fn owners(plan: &Plan, file: &str, symbol: Option<&str>) -> Vec<u32> {
    plan.steps
        .iter()
        .filter(|step| step.file == file)
        .filter(|step| match symbol {
            None => true,
            Some(symbol) => {
                step.target.is_empty()
                    || step.target == symbol
                    || nested(&step.target, symbol)
                    || nested(symbol, &step.target)
            }
        })
        .map(|step| step.id)
        .collect()
}

/// `inner` is a path inside `outer` (`Cart::total` inside `Cart`).
fn nested(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.starts_with("::") || rest.starts_with('.'))
}

/// "Fix what `cargo check` reports …": the owner steps' instructions, then each failure
/// with the line it is on.
fn instruction(
    command: &str,
    plan: &Plan,
    file: &str,
    symbol: Option<&str>,
    failures: &[&Failure],
    text: Option<&str>,
) -> String {
    let place = match symbol {
        Some(symbol) => format!("`{symbol}`"),
        None => file.to_owned(),
    };
    let mut out = format!("`{command}` reports errors in {place} after the change.");
    let asked: Vec<&str> = owners(plan, file, symbol)
        .into_iter()
        .filter_map(|id| plan.step(id))
        .map(|step| step.instruction.as_str())
        .collect();
    if let Some(first) = asked.first() {
        out.push_str(&format!(" The change it is part of: {first}"));
    } else {
        out.push_str(&format!(" The change: {}", plan.instruction.trim()));
    }
    out.push_str("\nFix these errors, and change nothing else:\n");
    let lines: Vec<&str> = text.map(|text| text.lines().collect()).unwrap_or_default();
    for failure in failures.iter().take(MAX_FAILURES_PER_JOB) {
        let message: String = failure.message.chars().take(MAX_MESSAGE_CHARS).collect();
        match lines.get(failure.line.saturating_sub(1)) {
            Some(line) if !line.trim().is_empty() => {
                out.push_str(&format!("- at `{}`: {message}\n", line.trim()))
            }
            _ => out.push_str(&format!("- line {}: {message}\n", failure.line)),
        }
    }
    if failures.len() > MAX_FAILURES_PER_JOB {
        out.push_str(&format!(
            "- and {} more\n",
            failures.len() - MAX_FAILURES_PER_JOB
        ));
    }
    out.trim_end().to_owned()
}

/// Which model wrote a round's jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundKind {
    /// The plan's own steps.
    Plan,
    /// Executors, one job per failing symbol.
    Repair,
    /// Steps the planner added after seeing the failures and the diff.
    Revision,
}

/// One round: jobs run and landed, then the check.
#[derive(Clone, Debug, PartialEq)]
pub struct Round {
    /// 1 for the plan's own steps.
    pub number: u32,
    pub kind: RoundKind,
    pub jobs: Vec<u32>,
    /// Jobs whose edit landed.
    pub landed: usize,
    /// What the check said after the round ("passed", "failed (exit 101)").
    pub verdict: String,
    pub seconds: f64,
    /// The failures after the round that the workspace did not have before the plan.
    pub failures: Vec<Located>,
}

/// Why the loop ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoopEnd {
    /// The check passes.
    Clean,
    /// The check failed before the plan too, and reports nothing new.
    NothingNew,
    /// `plan.max_rounds` repair rounds ran (and the planner's revision, when there is a
    /// planner), and the check still fails.
    RoundLimit {
        rounds: u32,
    },
    /// `plan.repair_seconds` passed.
    TimeLimit {
        seconds: u64,
    },
    /// The check itself did not finish: nothing it said can be repaired.
    CheckTimedOut,
    /// The check command could not run (not found, not executable): it judges nothing.
    CheckCannotRun {
        verdict: String,
    },
    Cancelled,
    /// Failures remain that no job can reach, and the planner has had its turn.
    NoRepair,
    /// The last repairs and the planner's revision did not reduce the failures.
    NoProgress,
}

impl LoopEnd {
    pub fn holds(&self) -> bool {
        matches!(self, LoopEnd::Clean | LoopEnd::NothingNew)
    }

    pub fn describe(&self) -> String {
        match self {
            LoopEnd::Clean => "the check passes".into(),
            LoopEnd::NothingNew => {
                "the check failed before the plan and reports nothing new after it".into()
            }
            LoopEnd::RoundLimit { rounds } => format!(
                "the round limit: {rounds} repair round{} and the planner's revision did not make the check pass (plan.max_rounds)",
                if *rounds == 1 { "" } else { "s" }
            ),
            LoopEnd::TimeLimit { seconds } => {
                format!("the time limit: {seconds} s of rounds (plan.repair_seconds)")
            }
            LoopEnd::CheckTimedOut => {
                "the check did not finish within plan.check_seconds, so it cannot guide repairs"
                    .into()
            }
            LoopEnd::CheckCannotRun { verdict } => {
                format!("the check {verdict}, so nothing was checked (plan.check)")
            }
            LoopEnd::Cancelled => "cancelled".into(),
            LoopEnd::NoRepair => "the failures left are in places no repair job can change".into(),
            LoopEnd::NoProgress => {
                "the repairs and the planner's revision did not reduce the failures".into()
            }
        }
    }
}

/// What the loop knows when a check has just finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopState {
    pub holds: bool,
    pub check_timed_out: bool,
    /// Why the check could not run at all, when it could not.
    pub cannot_run: Option<String>,
    pub cancelled: bool,
    pub out_of_time: Option<u64>,
    /// Repair rounds run so far (the plan's round and the revision not counted).
    pub repairs_run: u32,
    pub max_rounds: u32,
    /// The planner may still revise (there is one, and it has not yet).
    pub can_revise: bool,
    /// The last repair round left fewer failures than it started with (true before any).
    pub progressing: bool,
    /// The failures now give at least one repair job.
    pub repairable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextRound {
    Repair,
    Revise,
    Stop(LoopEnd),
}

/// The loop's rule: stop on a clean check, a cancel, a check that timed out or the time
/// limit; else repair while rounds are left and repairs make progress; else let the
/// planner revise once; else stop at the limit.
pub fn next_round(state: &LoopState, failed_before: bool) -> NextRound {
    if state.cancelled {
        return NextRound::Stop(LoopEnd::Cancelled);
    }
    if let Some(verdict) = &state.cannot_run {
        return NextRound::Stop(LoopEnd::CheckCannotRun {
            verdict: verdict.clone(),
        });
    }
    if state.holds {
        return NextRound::Stop(match failed_before {
            true => LoopEnd::NothingNew,
            false => LoopEnd::Clean,
        });
    }
    if state.check_timed_out {
        return NextRound::Stop(LoopEnd::CheckTimedOut);
    }
    if let Some(seconds) = state.out_of_time {
        return NextRound::Stop(LoopEnd::TimeLimit { seconds });
    }
    if state.repairs_run < state.max_rounds && state.repairable && state.progressing {
        return NextRound::Repair;
    }
    if state.can_revise {
        return NextRound::Revise;
    }
    NextRound::Stop(if state.repairs_run >= state.max_rounds {
        LoopEnd::RoundLimit {
            rounds: state.repairs_run,
        }
    } else if state.repairable {
        LoopEnd::NoProgress
    } else {
        LoopEnd::NoRepair
    })
}

/// Every round with what its check said, and why the loop ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Rounds {
    pub command: String,
    /// What the check said before any step ran.
    pub before: String,
    pub failed_before: bool,
    pub rounds: Vec<Round>,
    pub end: LoopEnd,
    /// Failures no repair job could take in the last round, with why.
    pub unreachable: Vec<(Failure, String)>,
    /// What became of the planner's revision when it added nothing.
    pub revision_note: Option<String>,
}

impl Rounds {
    pub fn holds(&self) -> bool {
        self.end.holds()
    }

    /// The failures the last check reported that the workspace did not have before.
    pub fn failing(&self) -> &[Located] {
        self.rounds
            .last()
            .map_or(&[], |round| round.failures.as_slice())
    }

    /// Jobs of every round after the first that landed, over all of them.
    pub fn repair_jobs(&self) -> usize {
        self.rounds
            .iter()
            .skip(1)
            .map(|round| round.jobs.len())
            .sum()
    }
}

/// The rounds as the plan document and `tierls plan` show them.
pub fn render_rounds(rounds: &Rounds) -> String {
    let mut out = format!("## Checks: `{}`\n\n", rounds.command);
    out.push_str(&format!("Before any step ran: {}.\n\n", rounds.before));
    for round in &rounds.rounds {
        let who = match round.kind {
            RoundKind::Plan => "the plan's steps",
            RoundKind::Repair => "repairs by the executors",
            RoundKind::Revision => "steps the planner added",
        };
        let failures = match round.failures.len() {
            0 => String::new(),
            1 => ", 1 new failure".to_owned(),
            count => format!(", {count} new failures"),
        };
        let jobs = match round.jobs.len() {
            1 => "1 job".to_owned(),
            count => format!("{count} jobs"),
        };
        out.push_str(&format!(
            "- round {} ({who}: {jobs}, {} landed): {}{failures} ({:.1} s)\n",
            round.number, round.landed, round.verdict, round.seconds
        ));
        for (failure, symbol) in &round.failures {
            let within = symbol
                .as_ref()
                .map(|symbol| format!(" (in `{symbol}`)"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  - {}:{}{within}: {}\n",
                failure.file, failure.line, failure.message
            ));
        }
    }
    for (failure, reason) in &rounds.unreachable {
        out.push_str(&format!(
            "- not repaired: {}:{}: {reason}\n",
            failure.file, failure.line
        ));
    }
    if let Some(note) = &rounds.revision_note {
        out.push_str(&format!("- the planner's revision: {note}\n"));
    }
    let marked = match rounds.holds() {
        true => "",
        false => " **The check still fails on this change: review it before applying.**",
    };
    out.push_str(&format!(
        "\nThe loop stopped: {}.{marked}\n",
        rounds.end.describe()
    ));
    out
}

/// The most characters of the current diff the planner is shown when it revises.
pub const REVISION_DIFF_CHARS: usize = 8000;
/// The most failing symbols whose source the planner is shown when it revises.
const MAX_REVISION_TARGETS: usize = 8;
/// The most symbols listed per failing file.
const MAX_REVISION_SYMBOLS: usize = 80;

/// The planner's input for a revision: the request, the diff so far, what the check still
/// reports, and the failing symbols as the plan left them; a step may target any symbol of
/// a failing file.
pub fn revision_input(
    plan: &Plan,
    diff: &str,
    failures: &[Located],
    texts: &BTreeMap<String, Option<String>>,
    command: &str,
) -> PlannerInput {
    let mut instruction = format!(
        "{}\n\nA plan for this request was carried out (\"{}\"), and `{command}` fails on the result. The change so far:\n```diff\n{}```\nWhat `{command}` reports:\n",
        plan.instruction.trim(),
        plan.summary.trim(),
        capped(diff, REVISION_DIFF_CHARS)
    );
    for (failure, symbol) in failures.iter().take(MAX_FAILURES_PER_JOB * 4) {
        let within = symbol
            .as_ref()
            .map(|symbol| format!(" (in `{symbol}`)"))
            .unwrap_or_default();
        let message: String = failure.message.chars().take(MAX_MESSAGE_CHARS).collect();
        instruction.push_str(&format!(
            "- {}:{}{within}: {message}\n",
            failure.file, failure.line
        ));
    }
    instruction.push_str("Answer a plan of only the steps that make these errors go away.");
    let mut input = PlannerInput {
        instruction,
        ..PlannerInput::default()
    };
    let mut files: Vec<&str> = Vec::new();
    for (failure, _) in failures {
        if !files.contains(&failure.file.as_str()) {
            files.push(&failure.file);
        }
    }
    for file in files {
        let Some(text) = texts.get(file).cloned().flatten() else {
            continue;
        };
        let Some(language) = Language::from_path(file) else {
            input.allowed.push((file.to_owned(), Vec::new()));
            continue;
        };
        let Some(tree) = parse(language, &text, None) else {
            continue;
        };
        let symbols = extract(language, &tree, &text).symbols;
        let listed: Vec<(String, String)> = symbols
            .iter()
            .take(MAX_REVISION_SYMBOLS)
            .map(|symbol| (symbol.path().to_owned(), symbol.kind.name().to_owned()))
            .collect();
        input.allowed.push((
            file.to_owned(),
            listed.iter().map(|(path, _)| path.clone()).collect(),
        ));
        input.file_symbols.push((file.to_owned(), listed));
        let failing = failures
            .iter()
            .filter(|(failure, _)| failure.file == file)
            .filter_map(|(_, symbol)| symbol.as_deref());
        for path in failing {
            if input.targets.len() >= MAX_REVISION_TARGETS
                || input
                    .targets
                    .iter()
                    .any(|target| target.file == file && target.path == path)
            {
                continue;
            }
            let (Some(symbol), Some(located)) = (
                symbols.iter().find(|symbol| symbol.path() == path),
                locate(language, &text, path),
            ) else {
                continue;
            };
            input.targets.push(TargetSource {
                file: file.to_owned(),
                path: path.to_owned(),
                kind: symbol.kind.name().to_owned(),
                language: language.name().to_owned(),
                source: located.display(&text),
            });
        }
    }
    input
}

/// `text` cut at a line end within `chars`, saying how many lines were left out.
fn capped(text: &str, chars: usize) -> String {
    if text.len() <= chars {
        return text.to_owned();
    }
    let mut cut = chars;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let cut = text[..cut].rfind('\n').map_or(0, |at| at + 1);
    let left = text[cut..].lines().count();
    format!("{}(… {left} more lines of the diff)\n", &text[..cut])
}

/// Renumbers a revision's steps (and its fan-outs) to follow `after`, the plan's last id,
/// and makes each depend on the earlier steps on what it changes, as repairs do.
pub fn renumber_revision(plan: &Plan, revision: &mut Plan, after: u32) {
    let mut map: BTreeMap<u32, u32> = BTreeMap::new();
    let old_ids = revision
        .steps
        .iter()
        .map(|step| step.id)
        .chain(revision.fan_outs.iter().map(|fan_out| fan_out.step));
    for old in old_ids {
        let next = after + 1 + map.len() as u32;
        map.entry(old).or_insert(next);
    }
    for step in &mut revision.steps {
        step.id = map[&step.id];
        let mut depends_on: Vec<u32> = step
            .depends_on
            .iter()
            .filter_map(|dep| map.get(dep).copied())
            .collect();
        let target = (!step.target.is_empty()).then_some(step.target.as_str());
        depends_on.extend(owners(plan, &step.file, target));
        depends_on.sort_unstable();
        depends_on.dedup();
        step.depends_on = depends_on;
        step.part_of = step.part_of.and_then(|part| map.get(&part).copied());
    }
    for fan_out in &mut revision.fan_outs {
        fan_out.step = map[&fan_out.step];
        for job in &mut fan_out.jobs {
            *job = map.get(job).copied().unwrap_or(*job);
        }
    }
}
