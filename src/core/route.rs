//! Routing: which tier does each piece of model work, and why.
//!
//! [`decide`] is a pure function of facts the shell gathers (the work's kind and size, the
//! answers that already failed, which tiers are configured and can take work now) and of
//! the `[routing]` rules. Every decision carries its reason in words, because the user
//! sees it: in the log, in `tierls/status`, in the plan document, in `tierls route`.
//! Today's fallbacks (no planner: the executor plans; no executor: the planner executes)
//! are cases of the rule, not code of their own.

use std::fmt;

use crate::config::Tier;
use crate::core::plan::Action;
use crate::core::plan::prompt::PlannerInput;

/// The `[routing]` table, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// A refactor of one symbol that asks for no new file skips the planner.
    pub skip_planner: bool,
    /// ... when that symbol has at most this many lines.
    pub skip_planner_lines: u32,
    /// The tier mechanical steps (a call-site job of a fan-out, a rename inside one
    /// symbol) go to first: the fast tier, or the executor like every other step.
    pub mechanical_tier: Tier,
    /// ... when their target has at most this many lines.
    pub fast_step_lines: u32,
    /// A step that failed this many answers on the executor is retried once on the
    /// planner's tier; 0: never.
    pub escalate_after: u32,
    /// A hover on a symbol of at least this many lines may be explained by the executor.
    pub hover_executor_lines: u32,
    /// ... or on one used at least this many times.
    pub hover_executor_references: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            skip_planner: true,
            skip_planner_lines: 150,
            mechanical_tier: Tier::Fast,
            fast_step_lines: 12,
            escalate_after: 2,
            hover_executor_lines: 60,
            hover_executor_references: 25,
        }
    }
}

/// What the server knows of a tier when it decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierState {
    pub configured: bool,
    /// It can take work now: loaded (or loadable) and, for nodes, one of them healthy.
    pub usable: bool,
    /// Loaded with a free slot: a hover does not wait behind a plan's steps.
    pub idle: bool,
}

impl TierState {
    pub const ABSENT: TierState = TierState {
        configured: false,
        usable: false,
        idle: false,
    };
    pub const READY: TierState = TierState {
        configured: true,
        usable: true,
        idle: true,
    };
}

/// Every tier's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierStates {
    pub fast: TierState,
    pub executor: TierState,
    pub planner: TierState,
}

impl TierStates {
    pub fn get(&self, tier: Tier) -> TierState {
        match tier {
            Tier::Fast => self.fast,
            Tier::Executor => self.executor,
            Tier::Planner => self.planner,
        }
    }

    /// Why `tier` cannot take work, in words.
    fn why_not(&self, tier: Tier) -> &'static str {
        if self.get(tier).configured {
            "cannot take work now"
        } else {
            "is not configured"
        }
    }
}

/// A refactor request, as the router sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefactorFacts {
    /// The symbols the focus is about (0: a whole file, or nothing under the selection).
    pub symbols: usize,
    /// Their lines together.
    pub lines: usize,
    pub files: usize,
    /// Uses of the focus symbols across the workspace.
    pub references: usize,
    /// What in the instruction asks for more than the symbol itself ("a new file",
    /// "every call site"), quoted.
    pub reaches_beyond: Option<String>,
}

impl RefactorFacts {
    /// The facts of a refactor, from what its planner would be shown.
    pub fn of(input: &PlannerInput) -> Self {
        let mut files: Vec<&str> = input.targets.iter().map(|t| t.file.as_str()).collect();
        files.sort_unstable();
        files.dedup();
        RefactorFacts {
            symbols: input.targets.len(),
            lines: input.targets.iter().map(|t| t.source.lines().count()).sum(),
            files: match files.len() {
                0 => input.file_symbols.len(),
                n => n,
            },
            references: input.references.iter().map(|r| r.total_sites).sum(),
            reaches_beyond: reaches_beyond(&input.instruction).or_else(|| {
                renames_a_used_symbol(
                    &input.instruction,
                    input.references.iter().map(|r| r.total_sites).sum(),
                )
            }),
        }
    }
}

/// A rename of the symbol itself reaches its uses; a rename inside it ("the local `x`", "the
/// parameter") does not.
fn renames_a_used_symbol(instruction: &str, uses: usize) -> Option<String> {
    const INSIDE: [&str; 5] = ["inside", "local", "variable", "parameter", "argument"];
    let lower = instruction.to_lowercase();
    let inside = INSIDE.iter().any(|word| lower.contains(word));
    (is_rename(instruction) && !inside && uses > 0)
        .then(|| format!("a rename of a symbol used {uses} {}", plural(uses, "time")))
}

/// One answer a plan step needs, as the router sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepFacts {
    pub action: Action,
    /// The target's lines.
    pub lines: usize,
    /// A call-site job expanded from a fan-out.
    pub fan_out_job: bool,
    /// The instruction renames something inside its one symbol.
    pub rename: bool,
    /// Answers that failed so far, per tier.
    pub failed: PerTier,
    /// Answers a step gets on the tier that carries it (`plan.max_attempts`).
    pub max_attempts: u32,
}

/// Answers per tier (failed ones, or served ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerTier {
    pub fast: u32,
    pub executor: u32,
    pub planner: u32,
}

impl PerTier {
    pub fn add(&mut self, tier: Tier) {
        *self.get_mut(tier) += 1;
    }

    /// Adds `other`'s counts, tier by tier.
    pub fn merge(&mut self, other: PerTier) {
        for tier in Tier::ALL {
            *self.get_mut(tier) += other.get(tier);
        }
    }

    pub fn get(&self, tier: Tier) -> u32 {
        match tier {
            Tier::Fast => self.fast,
            Tier::Executor => self.executor,
            Tier::Planner => self.planner,
        }
    }

    fn get_mut(&mut self, tier: Tier) -> &mut u32 {
        match tier {
            Tier::Fast => &mut self.fast,
            Tier::Executor => &mut self.executor,
            Tier::Planner => &mut self.planner,
        }
    }

    /// The highest tier tried: a step never goes back below it.
    fn highest(&self) -> Option<Tier> {
        Tier::ALL.into_iter().rev().find(|tier| self.get(*tier) > 0)
    }
}

/// A hover's explanation, as the router sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoverFacts {
    pub lines: usize,
    pub references: usize,
    /// The hover budget (`completion.hover_budget_ms`).
    pub budget_ms: u32,
}

/// A piece of model work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    Completion,
    Hover(HoverFacts),
    Refactor(RefactorFacts),
    Step(StepFacts),
}

/// Where work goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To this tier. For a refactor: the tier that plans it.
    Tier(Tier),
    /// A refactor that skips the planner: this tier carries it out as a one-step plan.
    OneStep(Tier),
    /// No model is needed (deleting a symbol).
    NoModel,
    /// Nowhere: no tier can take it, or a step has had every answer it gets.
    Nowhere,
}

impl Route {
    /// The tier that does the work, if one does.
    pub fn tier(self) -> Option<Tier> {
        match self {
            Route::Tier(tier) | Route::OneStep(tier) => Some(tier),
            Route::NoModel | Route::Nowhere => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub route: Route,
    /// Why, in words a user reads: "one symbol, 14 lines".
    pub reason: String,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.route {
            Route::Tier(tier) => write!(f, "{tier}")?,
            Route::OneStep(tier) => write!(f, "{tier}, as a one-step plan (no planning pass)")?,
            Route::NoModel => f.write_str("no model")?,
            Route::Nowhere => f.write_str("nowhere")?,
        }
        write!(f, " — {}", self.reason)
    }
}

fn decision(route: Route, reason: impl Into<String>) -> Decision {
    Decision {
        route,
        reason: reason.into(),
    }
}

/// Where `work` goes under `rules`, given the tiers as they are.
pub fn decide(work: &Work, tiers: &TierStates, rules: &Rules) -> Decision {
    match work {
        Work::Completion => interactive(tiers, "completions are interactive"),
        Work::Hover(facts) => hover(facts, tiers, rules),
        Work::Refactor(facts) => refactor(facts, tiers, rules),
        Work::Step(facts) => step(facts, tiers, rules),
    }
}

fn interactive(tiers: &TierStates, why: &str) -> Decision {
    if tiers.fast.usable {
        decision(Route::Tier(Tier::Fast), why)
    } else {
        // An interactive request never waits for a bigger tier: it fails at once.
        decision(
            Route::Nowhere,
            format!("{why}, and the fast tier {}", tiers.why_not(Tier::Fast)),
        )
    }
}

fn hover(facts: &HoverFacts, tiers: &TierStates, rules: &Rules) -> Decision {
    let large = facts.lines >= rules.hover_executor_lines as usize;
    let used = facts.references >= rules.hover_executor_references as usize;
    if !(large || used) {
        return interactive(tiers, &hover_size(facts));
    }
    let size = hover_size(facts);
    let executor = tiers.executor;
    if executor.usable && executor.idle && facts.budget_ms > 0 {
        return decision(
            Route::Tier(Tier::Executor),
            format!(
                "{size}: the executor is idle and loaded, within the {} ms hover budget",
                facts.budget_ms
            ),
        );
    }
    let why = if !executor.configured {
        "the executor is not configured"
    } else if !executor.usable {
        "the executor cannot take work now"
    } else if !executor.idle {
        "the executor is busy"
    } else {
        "the hover budget is 0"
    };
    interactive(tiers, &format!("{size}, but {why}"))
}

fn hover_size(facts: &HoverFacts) -> String {
    format!(
        "{} {}, {} {}",
        facts.lines,
        plural(facts.lines, "line"),
        facts.references,
        plural(facts.references, "use")
    )
}

fn refactor(facts: &RefactorFacts, tiers: &TierStates, rules: &Rules) -> Decision {
    let size = refactor_size(facts);
    let carrier = [Tier::Executor, Tier::Planner]
        .into_iter()
        .find(|tier| tiers.get(*tier).usable);
    let one_symbol = facts.symbols == 1 && facts.files == 1;
    let small = facts.lines <= rules.skip_planner_lines as usize;
    if rules.skip_planner
        && one_symbol
        && small
        && facts.reaches_beyond.is_none()
        && let Some(tier) = carrier
    {
        let stand_in = match tier {
            Tier::Executor => String::new(),
            _ => format!("; the executor {}", tiers.why_not(Tier::Executor)),
        };
        return decision(Route::OneStep(tier), format!("{size}{stand_in}"));
    }
    let why_planned = if !rules.skip_planner {
        "routing.skip_planner is off".to_owned()
    } else if let Some(words) = &facts.reaches_beyond {
        format!("the instruction asks for {words}")
    } else if facts.symbols == 0 {
        "nothing to rewrite as one step".to_owned()
    } else if !one_symbol {
        "more than one symbol".to_owned()
    } else if !small {
        format!(
            "over routing.skip_planner_lines ({})",
            rules.skip_planner_lines
        )
    } else {
        "no executor can take it as one step".to_owned()
    };
    let reason = format!("{size}; {why_planned}");
    if tiers.planner.usable {
        return decision(Route::Tier(Tier::Planner), reason);
    }
    if tiers.executor.usable {
        return decision(
            Route::Tier(Tier::Executor),
            format!(
                "{reason}; the planner {}, so the executor plans",
                tiers.why_not(Tier::Planner)
            ),
        );
    }
    decision(
        Route::Nowhere,
        format!(
            "{reason}; the planner {} and the executor {}",
            tiers.why_not(Tier::Planner),
            tiers.why_not(Tier::Executor)
        ),
    )
}

fn refactor_size(facts: &RefactorFacts) -> String {
    if facts.symbols == 0 {
        return "no symbol (a whole file, or nothing under the selection)".to_owned();
    }
    let mut size = format!(
        "{} {}, {} {}",
        count_word(facts.symbols),
        plural(facts.symbols, "symbol"),
        facts.lines,
        plural(facts.lines, "line")
    );
    if facts.files > 1 {
        size.push_str(&format!(" in {} files", facts.files));
    }
    size
}

fn step(facts: &StepFacts, tiers: &TierStates, rules: &Rules) -> Decision {
    if !facts.action.needs_executor() {
        return decision(
            Route::NoModel,
            format!("{}: the server does it", facts.action.name()),
        );
    }
    let highest = facts.failed.highest();
    let at_or_above = |tier: Tier| highest.is_none_or(|highest| tier >= highest);
    let failed = facts.failed;
    let attempts = facts.max_attempts.max(1);
    let lines = format!("{} {}", facts.lines, plural(facts.lines, "line"));

    let kind = match (facts.fan_out_job, facts.rename) {
        (true, _) => Some("a call-site update"),
        (false, true) => Some("a rename inside one symbol"),
        _ => None,
    }
    .filter(|_| rules.mechanical_tier == Tier::Fast);
    let small = facts.lines <= rules.fast_step_lines as usize;
    let mechanical = kind.filter(|_| small);
    if let Some(what) = mechanical
        && failed.fast == 0
        && at_or_above(Tier::Fast)
        && tiers.fast.usable
    {
        return decision(
            Route::Tier(Tier::Fast),
            format!(
                "{what} of {lines} (routing.fast_step_lines: {})",
                rules.fast_step_lines
            ),
        );
    }
    let fast_note = match (kind, mechanical, failed.fast > 0) {
        (_, Some(_), true) if !tiers.fast.usable => {
            "; the fast tier could not answer, so it goes up a tier".to_owned()
        }
        (_, Some(_), true) => "; the fast tier's answer failed, so it goes up a tier".to_owned(),
        (_, Some(what), false) => {
            format!("; {what}, but the fast tier {}", tiers.why_not(Tier::Fast))
        }
        (Some(what), None, _) => format!(
            "; {what}, over routing.fast_step_lines ({})",
            rules.fast_step_lines
        ),
        _ => String::new(),
    };

    let planner_can_escalate = rules.escalate_after > 0 && tiers.planner.usable;
    if tiers.executor.usable && at_or_above(Tier::Executor) {
        let budget = match planner_can_escalate && failed.planner == 0 {
            true => rules.escalate_after.min(attempts),
            false => attempts,
        };
        if failed.executor < budget {
            let tried = match failed.executor {
                0 => String::new(),
                n => format!(", answer {} after {n} failed", n + 1),
            };
            return decision(
                Route::Tier(Tier::Executor),
                format!("{} of {lines}{tried}{fast_note}", facts.action.name()),
            );
        }
    }
    // Up to the planner's tier: once after the executor's answers failed, or as the
    // executor's stand-in when it cannot take work.
    if tiers.planner.usable {
        if !tiers.executor.usable && failed.executor == 0 && failed.planner < attempts {
            return decision(
                Route::Tier(Tier::Planner),
                format!(
                    "{} of {lines}; the executor {}, so the planner's tier carries the step{fast_note}",
                    facts.action.name(),
                    tiers.why_not(Tier::Executor)
                ),
            );
        }
        if planner_can_escalate && failed.executor > 0 && failed.planner == 0 {
            return decision(
                Route::Tier(Tier::Planner),
                format!(
                    "{} failed {} on the executor (routing.escalate_after: {}): retried once on the planner's tier",
                    facts.action.name(),
                    answers(failed.executor),
                    rules.escalate_after
                ),
            );
        }
    }
    decision(Route::Nowhere, gave_up(facts, tiers, rules))
}

fn gave_up(facts: &StepFacts, tiers: &TierStates, rules: &Rules) -> String {
    let failed = facts.failed;
    let mut tried = Vec::new();
    for tier in Tier::ALL {
        let count = failed.get(tier);
        if count > 0 {
            tried.push(format!("{} on the {tier} tier", answers(count)));
        }
    }
    if tried.is_empty() {
        return format!(
            "no tier can take the step: the executor {} and the planner {}",
            tiers.why_not(Tier::Executor),
            tiers.why_not(Tier::Planner)
        );
    }
    let escalation = if !tiers.executor.usable && failed.executor == 0 && failed.planner == 0 {
        match tiers.planner.usable {
            true => "",
            false => "; neither the executor nor the planner can take it",
        }
    } else if rules.escalate_after == 0 {
        "; routing.escalate_after is 0"
    } else if failed.planner > 0 {
        ""
    } else if !tiers.planner.configured {
        "; no planner tier to escalate to"
    } else if !tiers.planner.usable {
        "; the planner's tier cannot take work now"
    } else {
        ""
    };
    format!("failed {}{escalation}", tried.join(", "))
}

fn answers(count: u32) -> String {
    match count {
        1 => "1 answer".to_owned(),
        n => format!("{n} answers"),
    }
}

/// `word`, with an `s` unless there is exactly one.
pub fn plural(count: usize, word: &str) -> String {
    match count {
        1 => word.to_owned(),
        _ => format!("{word}s"),
    }
}

fn count_word(count: usize) -> String {
    match count {
        1 => "one".to_owned(),
        n => n.to_string(),
    }
}

/// Words in an instruction that ask for more than rewriting the focus symbol, lowercase.
const BEYOND_THE_SYMBOL: [&str; 20] = [
    "new file",
    "new module",
    "separate file",
    "own file",
    "another file",
    "create a file",
    "into a module",
    "move it to",
    "move to",
    "split into files",
    "every call",
    "all call",
    "call site",
    "callers",
    "every use",
    "all uses",
    "everywhere",
    "across the",
    "whole workspace",
    "all files",
];

/// What in `instruction` reaches beyond its focus symbol, quoted, if anything.
pub fn reaches_beyond(instruction: &str) -> Option<String> {
    let lower = instruction.to_lowercase();
    BEYOND_THE_SYMBOL
        .iter()
        .find(|words| lower.contains(*words))
        .map(|words| format!("\"{words}\""))
}

/// Whether a step's instruction is a rename (kept to its one symbol).
pub fn is_rename(instruction: &str) -> bool {
    instruction
        .split(|c: char| !c.is_alphanumeric())
        .any(|word| word.eq_ignore_ascii_case("rename"))
}
