//! `tierls bench routing`: the routing rule against always planning, side by side, on the
//! fixture refactors and single-symbol edits, with the test model (real llama.cpp) serving
//! every tier: wall time, planner and step tokens, and the answers each tier gave. Then the
//! rule's own cost per decision.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bench_plan::{REFACTORS, load, options, symbol_request, workspace};
use super::output;
use crate::config::Tier;
use crate::core::plan::Action;
use crate::core::route::{
    HoverFacts, PerTier, RefactorFacts, Rules, StepFacts, TierState, TierStates, Work, decide,
};
use crate::models::Cancel;
use crate::models::embedded::test_model_path;
use crate::refactor::driver::{Driver, Team};
use crate::workspace::{Limits, Shared, Workspace};

/// Single-symbol edits beyond the fixture refactors, and one that reaches beyond its symbol
/// (the rule plans it too): fixture, instruction, file, symbol.
const EDITS: [(&str, &str, &str, &str); 4] = [
    (
        "rust",
        "use std::f64::consts::TAU",
        "src/geometry.rs",
        "Circle::perimeter",
    ),
    (
        "rust",
        "sum the areas with an iterator",
        "src/geometry.rs",
        "total_area",
    ),
    (
        "python",
        "return early when the code is unknown",
        "shop/pricing.py",
        "apply_discount",
    ),
    (
        "rust",
        "rename it to surface and update every call site",
        "src/geometry.rs",
        "Circle::area",
    ),
];

pub fn run(model: Option<PathBuf>) -> ExitCode {
    super::bench::run_async(bench(model.unwrap_or_else(test_model_path)))
}

/// One refactor's run under one mode.
#[derive(Default)]
struct Run {
    wall: Duration,
    planner_tokens: u32,
    step_tokens: u32,
    /// Planning passes (0 or 1) and step answers, per tier.
    plans: PerTier,
    answers: PerTier,
}

impl Run {
    fn add(&mut self, other: &Run) {
        self.wall += other.wall;
        self.planner_tokens += other.planner_tokens;
        self.step_tokens += other.step_tokens;
        self.plans.merge(other.plans);
        self.answers.merge(other.answers);
    }

    fn row(&self, case: &str, mode: &str) -> String {
        let per_tier =
            |counts: PerTier| format!("{}/{}/{}", counts.fast, counts.executor, counts.planner);
        format!(
            "{case:<34} {mode:<11} {:>7.2} {:>8} {:>6} {:>9} {:>13}",
            self.wall.as_secs_f64(),
            self.planner_tokens,
            self.step_tokens,
            per_tier(self.plans),
            per_tier(self.answers),
        )
    }
}

async fn bench(path: PathBuf) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as i32;
    output::line(&format!(
        "model: {} as every tier, {cores} cores; each mode has its own copy (its own KV cache)",
        path.display()
    ));
    let always_model = load(&path, 1, cores)?;
    let routed_model = load(&path, 1, cores)?;
    output::line(
        "always-plan: the planner plans every refactor (before routing); routed: the [routing] defaults",
    );
    output::line(&format!(
        "\n{:<34} {:<11} {:>7} {:>8} {:>6} {:>9} {:>13}",
        "refactor", "mode", "wall s", "planner", "steps", "plans", "step answers"
    ));
    output::line(&format!(
        "{:<34} {:<11} {:>7} {:>8} {:>6} {:>9} {:>13}",
        "", "", "", "tokens", "tokens", "f/e/p", "f/e/p"
    ));
    let (mut always_total, mut routed_total) = (Run::default(), Run::default());
    for (fixture, instruction, file, symbol) in REFACTORS.iter().chain(EDITS.iter()) {
        let case = format!("{fixture} {symbol}: {instruction}");
        let case: String = case.chars().take(34).collect();
        let always = run_once(
            fixture,
            instruction,
            file,
            symbol,
            Team::Given {
                planner: always_model.clone(),
                executor: always_model.clone(),
            },
        )
        .await?;
        let routed = run_once(
            fixture,
            instruction,
            file,
            symbol,
            Team::Routed {
                fast: Some(routed_model.clone()),
                executor: Some(routed_model.clone()),
                planner: Some(routed_model.clone()),
            },
        )
        .await?;
        output::line(&always.row(&case, "always-plan"));
        output::line(&routed.row("", "routed"));
        always_total.add(&always);
        routed_total.add(&routed);
    }
    output::line(&always_total.row("all", "always-plan"));
    output::line(&routed_total.row("", "routed"));
    let ratio = |a: f64, b: f64| a / b.max(1e-9);
    output::line(&format!(
        "routed against always-plan: wall {:.2}x faster, {:.2}x fewer tokens in all, {} of {} planning passes skipped",
        ratio(
            always_total.wall.as_secs_f64(),
            routed_total.wall.as_secs_f64()
        ),
        ratio(
            f64::from(always_total.planner_tokens + always_total.step_tokens),
            f64::from(routed_total.planner_tokens + routed_total.step_tokens)
        ),
        always_total.plans.get(Tier::Planner) + always_total.plans.get(Tier::Executor)
            - routed_total.plans.get(Tier::Planner)
            - routed_total.plans.get(Tier::Executor),
        always_total.plans.get(Tier::Planner),
    ));
    output::line(
        "(the test model is a 270M base model: its plans and code are not a 70B's or a 30B's; the figures show what the rule spares, not answer quality)",
    );
    decision_cost();
    Ok(())
}

/// Plans and executes one refactor with `team`; the run's figures.
async fn run_once(
    fixture: &str,
    instruction: &str,
    file: &str,
    symbol: &str,
    team: Team,
) -> anyhow::Result<Run> {
    let dir = workspace(fixture)?;
    let root = dir.path().canonicalize()?;
    let (scanned, _) = Workspace::scanned(&root, Limits::default(), 0, &mut |_, _| {});
    let driver = Driver::new(Shared::new(scanned), team).routing(Rules::default(), Arc::default());
    let request = symbol_request(instruction, file, symbol);
    let started = Instant::now();
    let (_, planned) = driver.plan(&request, Cancel::new()).await?;
    let mut plans = PerTier::default();
    if !planned.answer.is_empty() {
        plans.add(Tier::Planner);
    }
    let execution = driver
        .execute(&planned.plan, |_| options(1), Cancel::new())
        .await?
        .execution;
    let mut answers = PerTier::default();
    for report in &execution.reports {
        answers.merge(report.by_tier);
    }
    Ok(Run {
        wall: started.elapsed(),
        planner_tokens: planned.usage.generated_tokens,
        step_tokens: execution.generated_tokens(),
        plans,
        answers,
    })
}

/// The rule's cost per decision, for each kind of work.
fn decision_cost() {
    const DECISIONS: u32 = 200_000;
    let rules = Rules::default();
    let tiers = TierStates {
        fast: TierState::READY,
        executor: TierState::READY,
        planner: TierState::READY,
    };
    let works = [
        ("completion", Work::Completion),
        (
            "hover",
            Work::Hover(HoverFacts {
                lines: 80,
                references: 3,
                budget_ms: 800,
            }),
        ),
        (
            "refactor",
            Work::Refactor(RefactorFacts {
                symbols: 1,
                lines: 14,
                files: 1,
                references: 4,
                reaches_beyond: None,
            }),
        ),
        (
            "step",
            Work::Step(StepFacts {
                action: Action::ReplaceSymbol,
                lines: 8,
                fan_out_job: true,
                rename: false,
                failed: PerTier {
                    fast: 1,
                    executor: 0,
                    planner: 0,
                },
                max_attempts: 3,
            }),
        ),
    ];
    output::line(&format!(
        "\nthe rule's cost ({DECISIONS} decisions each, reason text included)"
    ));
    for (name, work) in &works {
        let started = Instant::now();
        for _ in 0..DECISIONS {
            black_box(decide(
                black_box(work),
                black_box(&tiers),
                black_box(&rules),
            ));
        }
        let each = started.elapsed().as_secs_f64() * 1e6 / f64::from(DECISIONS);
        output::line(&format!("{name:<11} {each:.3} µs per decision"));
    }
}
