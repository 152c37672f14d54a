//! Routing: which tier does each piece of model work, and why. The rule is a pure function;
//! its table is data here, and the driver's use of it is tested with scripted tiers.

use tierls::config::Tier;
use tierls::core::plan::Action;
use tierls::core::route::{
    Failed, HoverFacts, RefactorFacts, Rules, StepFacts, TierState, TierStates, Work, decide,
    reaches_beyond,
};

const ALL: TierStates = TierStates {
    fast: TierState::READY,
    executor: TierState::READY,
    planner: TierState::READY,
};

const DOWN: TierState = TierState {
    configured: true,
    usable: false,
    idle: false,
};

const BUSY: TierState = TierState {
    configured: true,
    usable: true,
    idle: false,
};

/// Each case as `label: work under tiers => decision`.
fn check(cases: &[(&str, Work, TierStates, Rules)]) -> String {
    cases
        .iter()
        .map(|(label, work, tiers, rules)| format!("{label}\n  => {}", decide(work, tiers, rules)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn refactor(symbols: usize, lines: usize, files: usize, instruction: &str) -> Work {
    Work::Refactor(RefactorFacts {
        symbols,
        lines,
        files,
        references: 3,
        reaches_beyond: reaches_beyond(instruction),
    })
}

fn step(action: Action, lines: usize, fan_out_job: bool, failed: Failed) -> Work {
    Work::Step(StepFacts {
        action,
        lines,
        fan_out_job,
        rename: false,
        failed,
        max_attempts: 3,
    })
}

fn failed(fast: u32, executor: u32, planner: u32) -> Failed {
    Failed {
        fast,
        executor,
        planner,
    }
}

fn without(tier: Tier) -> TierStates {
    let mut tiers = ALL;
    match tier {
        Tier::Fast => tiers.fast = TierState::ABSENT,
        Tier::Executor => tiers.executor = TierState::ABSENT,
        Tier::Planner => tiers.planner = TierState::ABSENT,
    }
    tiers
}

#[test]
fn refactors_skip_the_planner_when_their_target_is_one_symbol() {
    let rules = Rules::default();
    let off = Rules {
        skip_planner: false,
        ..Rules::default()
    };
    let only_planner = TierStates {
        planner: TierState::READY,
        ..TierStates::default()
    };
    let cases = [
        (
            "one symbol of 14 lines",
            refactor(1, 14, 1, "add a doc comment"),
            ALL,
            rules.clone(),
        ),
        (
            "one symbol of 400 lines",
            refactor(1, 400, 1, "simplify"),
            ALL,
            rules.clone(),
        ),
        (
            "three symbols",
            refactor(3, 40, 1, "share the parsing code"),
            ALL,
            rules.clone(),
        ),
        (
            "a whole file",
            refactor(0, 120, 1, "tidy up"),
            ALL,
            rules.clone(),
        ),
        (
            "asks for a new file",
            refactor(1, 14, 1, "move it to a new file"),
            ALL,
            rules.clone(),
        ),
        (
            "asks for the callers",
            refactor(
                1,
                14,
                1,
                "add a currency parameter and update every call site",
            ),
            ALL,
            rules.clone(),
        ),
        (
            "skip_planner off",
            refactor(1, 14, 1, "add a doc comment"),
            ALL,
            off,
        ),
        (
            "no executor configured",
            refactor(1, 14, 1, "add a doc comment"),
            without(Tier::Executor),
            rules.clone(),
        ),
        (
            "no planner configured, three symbols",
            refactor(3, 40, 1, "share the parsing code"),
            without(Tier::Planner),
            rules.clone(),
        ),
        (
            "the planner's node is down",
            refactor(3, 40, 1, "share the parsing code"),
            TierStates {
                planner: DOWN,
                ..ALL
            },
            rules.clone(),
        ),
        (
            "only a planner",
            refactor(1, 14, 1, "add a doc comment"),
            only_planner,
            rules.clone(),
        ),
        (
            "no tier at all",
            refactor(3, 40, 1, "share"),
            TierStates::default(),
            rules,
        ),
    ];
    insta::assert_snapshot!("refactors", check(&cases));
}

#[test]
fn steps_climb_a_tier_on_failure_and_at_most_once_per_tier() {
    let rules = Rules::default();
    let no_escalation = Rules {
        escalate_after: 0,
        ..Rules::default()
    };
    let executor_first = Rules {
        mechanical_tier: Tier::Executor,
        ..Rules::default()
    };
    let job = Action::ReplaceSymbol;
    let cases = [
        (
            "a call-site job of 5 lines",
            step(job, 5, true, failed(0, 0, 0)),
            ALL,
            rules.clone(),
        ),
        (
            "... its fast answer failed",
            step(job, 5, true, failed(1, 0, 0)),
            ALL,
            rules.clone(),
        ),
        (
            "a call-site job of 40 lines",
            step(job, 40, true, failed(0, 0, 0)),
            ALL,
            rules.clone(),
        ),
        (
            "a call-site job, mechanical_tier = executor",
            step(job, 5, true, failed(0, 0, 0)),
            ALL,
            executor_first,
        ),
        (
            "a call-site job, no fast tier",
            step(job, 5, true, failed(0, 0, 0)),
            without(Tier::Fast),
            rules.clone(),
        ),
        (
            "a call-site job, the fast node is down",
            step(job, 5, true, failed(0, 0, 0)),
            TierStates { fast: DOWN, ..ALL },
            rules.clone(),
        ),
        (
            "a replace_symbol step",
            step(job, 30, false, failed(0, 0, 0)),
            ALL,
            rules.clone(),
        ),
        (
            "... 1 failed answer",
            step(job, 30, false, failed(0, 1, 0)),
            ALL,
            rules.clone(),
        ),
        (
            "... 2 failed answers: escalate",
            step(job, 30, false, failed(0, 2, 0)),
            ALL,
            rules.clone(),
        ),
        (
            "... and the planner's answer failed too",
            step(job, 30, false, failed(0, 2, 1)),
            ALL,
            rules.clone(),
        ),
        (
            "... escalation off: all 3 answers on the executor",
            step(job, 30, false, failed(0, 2, 0)),
            ALL,
            no_escalation.clone(),
        ),
        (
            "... escalation off, 3 failed",
            step(job, 30, false, failed(0, 3, 0)),
            ALL,
            no_escalation,
        ),
        (
            "... no planner: all 3 answers on the executor",
            step(job, 30, false, failed(0, 2, 0)),
            without(Tier::Planner),
            rules.clone(),
        ),
        (
            "... no planner, 3 failed",
            step(job, 30, false, failed(0, 3, 0)),
            without(Tier::Planner),
            rules.clone(),
        ),
        (
            "... the planner's node is down, 3 failed",
            step(job, 30, false, failed(0, 3, 0)),
            TierStates {
                planner: DOWN,
                ..ALL
            },
            rules.clone(),
        ),
        (
            "no executor: the planner carries it",
            step(job, 30, false, failed(0, 0, 0)),
            without(Tier::Executor),
            rules.clone(),
        ),
        (
            "no executor, 3 failed on the planner",
            step(job, 30, false, failed(0, 0, 3)),
            without(Tier::Executor),
            rules.clone(),
        ),
        (
            "a fast failure, then no executor nor planner",
            step(job, 5, true, failed(1, 0, 0)),
            TierStates {
                fast: TierState::READY,
                ..TierStates::default()
            },
            rules.clone(),
        ),
        (
            "delete_symbol",
            step(Action::DeleteSymbol, 30, false, failed(0, 0, 0)),
            ALL,
            rules.clone(),
        ),
        (
            "a rename inside one symbol",
            Work::Step(StepFacts {
                action: job,
                lines: 8,
                fan_out_job: false,
                rename: true,
                failed: failed(0, 0, 0),
                max_attempts: 3,
            }),
            ALL,
            rules,
        ),
    ];
    insta::assert_snapshot!("steps", check(&cases));
}

#[test]
fn hovers_ask_the_executor_only_when_it_is_idle() {
    let rules = Rules::default();
    let hover = |lines, references, budget_ms| {
        Work::Hover(HoverFacts {
            lines,
            references,
            budget_ms,
        })
    };
    let cases = [
        ("a small symbol", hover(8, 2, 800), ALL, rules.clone()),
        ("a long symbol", hover(120, 2, 800), ALL, rules.clone()),
        ("a much-used symbol", hover(8, 400, 800), ALL, rules.clone()),
        (
            "a long symbol, the executor busy",
            hover(120, 2, 800),
            TierStates {
                executor: BUSY,
                ..ALL
            },
            rules.clone(),
        ),
        (
            "a long symbol, no executor",
            hover(120, 2, 800),
            without(Tier::Executor),
            rules.clone(),
        ),
        (
            "a long symbol, hover budget 0",
            hover(120, 2, 0),
            ALL,
            rules.clone(),
        ),
        (
            "a small symbol, the fast tier down",
            hover(8, 2, 800),
            TierStates { fast: DOWN, ..ALL },
            rules.clone(),
        ),
        ("a completion", Work::Completion, ALL, rules.clone()),
        (
            "a completion, no fast tier",
            Work::Completion,
            without(Tier::Fast),
            rules,
        ),
    ];
    insta::assert_snapshot!("hovers", check(&cases));
}
