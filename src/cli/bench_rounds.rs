//! `tierls bench plan`, check-round cases (also `tierls bench rounds` alone): a Rust crate
//! where one function is called from N files, the planner writes two steps (change the
//! function, update every reference), and `cargo check` judges the result round by round.
//! - scripted executors that leave every fourth call site with the old arity on their
//!   first answer and fix it when a repair job shows them the error;
//! - the test model as the executor of the call sites and the repairs (the new signature is
//!   scripted, so that they have something to follow), on 4 and 8 call sites: rounds until
//!   clean or the limit, and the share of jobs whose first answer passed the check.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::output;
use crate::core::plan::context::Focus;
use crate::core::plan::repair::{RoundKind, Rounds};
use crate::models::embedded::{EmbeddedModel, EmbeddedOptions};
use crate::models::scripted::ScriptedModel;
use crate::models::{Cancel, Model};
use crate::refactor::ExecuteOptions;
use crate::refactor::check::CheckSpec;
use crate::refactor::driver::{Driver, PlanRequest, Team};
use crate::refactor::rounds::{CHECK_OUTPUT_BYTES, RoundsRequest};
use crate::workspace::{Limits, Shared, Workspace};

const CHECK: &str = "cargo check --quiet --offline --message-format short";
const PER_TOKEN: Duration = Duration::from_millis(1);

const PLAN: &str = r#"{"summary": "Add a currency to total_price.", "steps": [{"id": 1, "action": "replace_symbol", "file": "src/pricing.rs", "target": "total_price", "instruction": "Add a `currency: &str` parameter after `cart`.", "depends_on": []}, {"id": 2, "action": "update_references", "file": "src/pricing.rs", "target": "total_price", "instruction": "Pass \"EUR\" as the new currency argument.", "depends_on": [1]}]}"#;
const NEW_TOTAL: &str = "pub fn total_price(cart: &[u32], currency: &str) -> u32 {\n    let _ = currency;\n    cart.iter().sum()\n}";

fn caller(i: usize, arguments: &str) -> String {
    format!("pub fn checkout_{i}(cart: &[u32]) -> u32 {{\n    total_price({arguments}) + {i}\n}}")
}

/// A crate: `src/pricing.rs` and N caller modules, each importing `total_price`.
fn write_crate(root: &Path, callers: usize) -> std::io::Result<()> {
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)
    };
    write(
        "Cargo.toml",
        "[package]\nname = \"shop\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )?;
    let mut lib = String::from("pub mod pricing;\n");
    for i in 0..callers {
        lib.push_str(&format!(
            "#[path = \"part{:02}/checkout_{i}.rs\"]\npub mod checkout_{i};\n",
            i % 16
        ));
        write(
            &format!("src/part{:02}/checkout_{i}.rs", i % 16),
            &format!(
                "use crate::pricing::total_price;\n\n{}\n",
                caller(i, "cart")
            ),
        )?;
    }
    write("src/lib.rs", &lib)?;
    write(
        "src/pricing.rs",
        "pub fn total_price(cart: &[u32]) -> u32 {\n    cart.iter().sum()\n}\n",
    )
}

/// Right on the first answer for three call sites in four; the fourth is right only when a
/// repair job shows the error.
fn scripted_executor(callers: usize) -> ScriptedModel {
    let mut model = ScriptedModel::new(1)
        .per_token(PER_TOKEN)
        .answer("Rewrite `total_price`", &[NEW_TOTAL]);
    for i in 0..callers {
        let fixed = caller(i, "cart, \"EUR\"");
        model = model.answer(&format!("reports errors in `checkout_{i}`"), &[&fixed]);
        let first = match i % 4 {
            3 => caller(i, "cart"),
            _ => fixed,
        };
        model = model.answer(&format!("Rewrite `checkout_{i}`"), &[&first]);
    }
    model
}

struct Outcome {
    /// `None` when no file changed, so there was nothing to check.
    rounds: Option<Rounds>,
    failed_jobs: usize,
    updated: usize,
    first_answers_passed: (usize, usize),
    executor_tokens: u32,
    wall: Duration,
}

async fn run(callers: usize, executor: Arc<dyn Model>, slots: usize) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().canonicalize()?;
    write_crate(&root, callers)?;
    let (workspace, _) = Workspace::scanned(&root, Limits::default(), 0, &mut |_, _| {});
    let planner: Arc<dyn Model> = Arc::new(ScriptedModel::new(1).answer("Request:", &[PLAN]));
    let driver = Driver::new(Shared::new(workspace), Team::Given { planner, executor });
    let request = PlanRequest {
        instruction:
            "add a `currency` parameter to `total_price` and pass \"EUR\" at every call site".into(),
        focus: vec![Focus::Symbol {
            file: "src/pricing.rs".into(),
            path: "total_price".into(),
        }],
        map_tokens: 512,
        reference_tokens: 2048,
        max_fan_out: 256,
        planner_time: Duration::from_secs(60),
    };
    let (_, planned) = driver.plan(&request, Cancel::new()).await?;
    let options = ExecuteOptions {
        max_attempts: 2,
        max_step_tokens: 256,
        step_time_limit: Some(Duration::from_secs(120)),
        concurrency: slots,
    };
    let rounds = RoundsRequest {
        spec: CheckSpec {
            command: CHECK.into(),
            time_limit: Duration::from_secs(600),
            output_cap: CHECK_OUTPUT_BYTES,
            cancel: None,
            links: Vec::new(),
        },
        max_rounds: 2,
        time_limit: Duration::from_secs(1800),
        max_jobs: 256,
        planner_time: Duration::from_secs(60),
    };
    let started = Instant::now();
    let executed = driver
        .execute_checked(&planned.plan, |_| options, &rounds, Cancel::new())
        .await?;
    let wall = started.elapsed();
    let failed_jobs = executed
        .execution
        .reports
        .iter()
        .filter(|report| report.outcome != crate::refactor::StepOutcome::Done)
        .count();
    let updated = executed
        .landing
        .files
        .iter()
        .filter(|file| file.text.contains("total_price(cart, \"EUR\")"))
        .count();
    // A first-round job passed when the check after round 1 reports nothing in its symbol.
    let rounds = executed.rounds;
    let failing_after_first: Vec<(&str, &str)> = rounds
        .iter()
        .flat_map(|rounds| rounds.rounds.first())
        .flat_map(|first| first.failures.iter())
        .filter_map(|(failure, symbol)| Some((failure.file.as_str(), symbol.as_deref()?)))
        .collect();
    let passed = planned
        .plan
        .steps
        .iter()
        .filter(|step| {
            !failing_after_first.contains(&(step.file.as_str(), step.target.as_str()))
                && executed.execution.reports.iter().any(|report| {
                    report.step == step.id && report.outcome == crate::refactor::StepOutcome::Done
                })
        })
        .count();
    let passed = if rounds.is_some() { passed } else { 0 };
    Ok(Outcome {
        failed_jobs,
        updated,
        first_answers_passed: (passed, planned.plan.steps.len()),
        executor_tokens: executed.execution.generated_tokens(),
        rounds,
        wall,
    })
}

fn describe(outcome: &Outcome, callers: usize) -> String {
    let Some(rounds) = &outcome.rounds else {
        return format!(
            "{callers:>3} call sites: no file changed ({} of {} jobs failed, the others answered the code unchanged), so nothing was checked; {} executor tokens, {:.1} s",
            outcome.failed_jobs,
            outcome.first_answers_passed.1,
            outcome.executor_tokens,
            outcome.wall.as_secs_f64()
        );
    };
    let kinds: Vec<String> = rounds
        .rounds
        .iter()
        .map(|round| {
            let who = match round.kind {
                RoundKind::Plan => "plan",
                RoundKind::Repair => "repair",
                RoundKind::Revision => "revision",
            };
            format!("{who} {}/{}", round.landed, round.jobs.len())
        })
        .collect();
    let (passed, jobs) = outcome.first_answers_passed;
    format!(
        "{callers:>3} call sites: updated {}/{callers}, {} check rounds [{}], first answers passing the check {passed}/{jobs} ({:.0}%), {} executor tokens, {:.1} s; stopped: {}",
        outcome.updated,
        rounds.rounds.len(),
        kinds.join(", "),
        100.0 * passed as f64 / jobs.max(1) as f64,
        outcome.executor_tokens,
        outcome.wall.as_secs_f64(),
        rounds.end.describe()
    )
}

/// The scripted cases, then the test model's (when `model` is given).
pub async fn bench(model: Option<PathBuf>) -> anyhow::Result<()> {
    output::line(&format!(
        "\ncheck rounds: `{CHECK}` after the plan; scripted executors at {} ms/token, wrong on every fourth call site until repaired",
        PER_TOKEN.as_millis()
    ));
    for callers in [24, 200] {
        let outcome = run(callers, Arc::new(scripted_executor(callers)), 2).await?;
        output::line(&describe(&outcome, callers));
    }
    let Some(path) = model else {
        return Ok(());
    };
    output::line(&format!(
        "check rounds with the test model as the executor of the call sites and the repairs ({}; `total_price`'s new signature is scripted)",
        path.display()
    ));
    let options = EmbeddedOptions {
        n_ctx: 4096,
        slots: 1,
        threads: 2,
        chat_template: Some("gemma".into()),
        ..EmbeddedOptions::default()
    };
    let model: Arc<dyn Model> = Arc::new(EmbeddedModel::load(&path, &options)?);
    for callers in [4, 8] {
        // The signature change by script, so that the call sites have something to follow;
        // the call sites and the repairs by the test model.
        let executor = ScriptedModel::new(1)
            .answer("Rewrite `total_price`", &[NEW_TOTAL])
            .otherwise(model.clone());
        let outcome = run(callers, Arc::new(executor), 1).await?;
        output::line(&describe(&outcome, callers));
    }
    Ok(())
}
