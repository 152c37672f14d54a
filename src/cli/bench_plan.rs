//! `tierls bench plan`: the plan flow's figures on fixture refactors, side by side:
//! - tokens the planner writes against tokens the executors write (the share of the work
//!   the big model is spared);
//! - wall time of a plan with independent steps on one executor against two;
//! - the share of executor answers that anchor and parse on the first try;
//! - fan-out steps over 24 and 200 call sites (`bench_fan_out.rs`);
//! - check rounds: `cargo check` after the plan, repairs, the test model as executor
//!   (`bench_rounds.rs`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::output;
use crate::core::plan::context::Focus;
use crate::core::plan::{RawPlan, RawStep, validate};
use crate::models::embedded::{EmbeddedModel, EmbeddedOptions, test_model_path};
use crate::models::scripted::ScriptedModel;
use crate::models::{Cancel, Model};
use crate::refactor::driver::{Driver, PlanRequest, Team};
use crate::refactor::workspace::PlanFacts;
use crate::refactor::{ExecuteOptions, Execution};
use crate::workspace::{Limits, Shared, Workspace};

/// The fixture refactors: fixture folder, instruction, focus.
pub(super) const REFACTORS: [(&str, &str, &str, &str); 3] = [
    (
        "rust",
        "use std::f64::consts::PI instead of 3.14",
        "src/geometry.rs",
        "Circle::area",
    ),
    (
        "python",
        "compute the total with sum()",
        "shop/cart.py",
        "Cart.total",
    ),
    (
        "typescript",
        "use Array.prototype.find in find",
        "src/users.ts",
        "UserStore.find",
    ),
];

pub fn run(model: Option<PathBuf>) -> ExitCode {
    super::bench::run_async(bench(model.unwrap_or_else(test_model_path)))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plans")
}

/// A fixture copied to a temporary folder, so that nothing of the repository changes.
pub(super) fn workspace(fixture: &str) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    copy_tree(&fixtures().join(fixture), dir.path())?;
    Ok(dir)
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

pub(super) fn load(path: &Path, slots: usize, threads: i32) -> anyhow::Result<Arc<dyn Model>> {
    let options = EmbeddedOptions {
        n_ctx: 4096,
        slots,
        threads,
        chat_template: Some("gemma".into()),
        ..EmbeddedOptions::default()
    };
    Ok(Arc::new(EmbeddedModel::load(path, &options)?))
}

pub(super) fn options(concurrency: usize) -> ExecuteOptions {
    ExecuteOptions {
        max_attempts: 3,
        max_step_tokens: 256,
        step_time_limit: Some(Duration::from_secs(120)),
        concurrency,
    }
}

async fn bench(path: PathBuf) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as i32;
    output::line(&format!(
        "model: {} (planner and executor), {cores} cores",
        path.display()
    ));
    let model = load(&path, 1, cores)?;

    output::line("\nthe split: the planner plans, executors write the code");
    output::line(&format!(
        "{:<11} {:>6} {:>15} {:>16} {:>12} {:>9}",
        "refactor", "steps", "planner tokens", "executor tokens", "planner share", "first try"
    ));
    let (mut planner_total, mut executor_total, mut answers, mut first_tries) = (0, 0, 0, 0);
    for (fixture, instruction, file, symbol) in REFACTORS {
        let dir = workspace(fixture)?;
        let root = dir.path().canonicalize()?;
        let driver = driver(&root, model.clone());
        let request = symbol_request(instruction, file, symbol);
        let (_, planned) = driver.plan(&request, Cancel::new()).await?;
        let execution = driver
            .execute(&planned.plan, |_| options(1), Cancel::new())
            .await?
            .execution;
        let planner_tokens = planned.usage.generated_tokens;
        let executor_tokens = execution.generated_tokens();
        let (asked, first) = first_try(&execution);
        planner_total += planner_tokens;
        executor_total += executor_tokens;
        answers += asked;
        first_tries += first;
        output::line(&format!(
            "{:<11} {:>6} {:>15} {:>16} {:>11.0}% {:>9}",
            fixture,
            planned.plan.steps.len(),
            planner_tokens,
            executor_tokens,
            share(planner_tokens, planner_tokens + executor_tokens),
            format!("{first}/{asked}")
        ));
    }
    output::line(&format!(
        "{:<11} {:>6} {:>15} {:>16} {:>11.0}% {:>9}",
        "all",
        "",
        planner_total,
        executor_total,
        share(planner_total, planner_total + executor_total),
        format!("{first_tries}/{answers}")
    ));
    output::line(&format!(
        "the executors wrote {:.0}% of the tokens: work the big model did not have to do",
        share(executor_total, planner_total + executor_total)
    ));
    drop(model);

    output::line(
        "\nindependent steps: one executor against two (4 steps, 256 tokens at most each)",
    );
    let one = load(&path, 1, cores)?;
    let one_time = timed_plan(one.clone(), 1).await?;
    drop(one);
    let split = (cores / 2).max(1);
    let two = load(&path, 2, split)?;
    let two_time = timed_plan(two.clone(), 2).await?;
    drop(two);
    output::line(&format!(
        "embedded, 1 slot x {cores} threads: {} | 2 slots x {split} threads: {} | wall {:.2}x, throughput {:.2}x",
        one_time.describe(),
        two_time.describe(),
        one_time.ratio(&two_time),
        two_time.throughput() / one_time.throughput().max(1e-9)
    ));
    output::line(
        "(greedy answers differ with the thread count, so the token counts differ: compare the throughput)",
    );
    // Two worker machines each decode at full speed: a scripted model with a fixed time per
    // token stands in for them, which measures the scheduler, not the hardware.
    let per_token = Duration::from_millis(10);
    let one_node = timed_plan(Arc::new(scripted(1, per_token)), 1).await?;
    let two_nodes = timed_plan(Arc::new(scripted(2, per_token)), 2).await?;
    output::line(&format!(
        "scripted nodes at 10 ms/token, 1 node: {} | 2 nodes: {} | {:.2}x",
        one_node.describe(),
        two_nodes.describe(),
        one_node.ratio(&two_nodes)
    ));
    super::bench_fan_out::bench().await?;
    super::bench_rounds::bench(Some(path)).await
}

/// A fixture refactor of one symbol, with the plan budgets the benchmarks use.
pub(super) fn symbol_request(instruction: &str, file: &str, symbol: &str) -> PlanRequest {
    PlanRequest {
        instruction: instruction.into(),
        focus: vec![Focus::Symbol {
            file: file.into(),
            path: symbol.into(),
        }],
        map_tokens: 512,
        reference_tokens: 1024,
        max_fan_out: 256,
        planner_time: Duration::from_secs(
            crate::config::Config::default().plan.planner_seconds.into(),
        ),
    }
}

/// The plan driver on `root`, scanned now, with `model` as planner and executor.
fn driver(root: &Path, model: Arc<dyn Model>) -> Driver {
    let (workspace, _) = Workspace::scanned(root, Limits::default(), 0, &mut |_, _| {});
    let team = Team::Given {
        planner: model.clone(),
        executor: model,
    };
    Driver::new(Shared::new(workspace), team)
}

fn share(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * f64::from(part) / f64::from(whole)
    }
}

/// Steps that asked the executor, and those that landed with its first answer.
fn first_try(execution: &Execution) -> (u32, u32) {
    let asked = execution.reports.iter().filter(|r| r.attempts > 0).count() as u32;
    let first = execution.reports.iter().filter(|r| r.first_try()).count() as u32;
    (asked, first)
}

fn scripted(slots: usize, per_token: Duration) -> ScriptedModel {
    let body = "    let x = std::f64::consts::PI * 2.0;\n";
    let answer = format!("pub fn answer() -> f64 {{\n{}    x\n}}", body.repeat(4));
    ScriptedModel::new(slots)
        .per_token(per_token)
        .answer("Your step:", &[&answer])
}

struct Timed {
    time: Duration,
    tokens: u32,
    answers: u32,
}

impl Timed {
    fn describe(&self) -> String {
        format!(
            "{:.2} s ({} answers, {} tokens, {:.0} tokens/s)",
            self.time.as_secs_f64(),
            self.answers,
            self.tokens,
            self.throughput()
        )
    }

    fn throughput(&self) -> f64 {
        f64::from(self.tokens) / self.time.as_secs_f64().max(1e-9)
    }

    fn ratio(&self, faster: &Timed) -> f64 {
        self.time.as_secs_f64() / faster.time.as_secs_f64().max(1e-9)
    }
}

/// The same four independent steps on the Rust fixture, timed.
async fn timed_plan(executor: Arc<dyn Model>, concurrency: usize) -> anyhow::Result<Timed> {
    let dir = workspace("rust")?;
    let root = dir.path().canonicalize()?;
    let driver = driver(&root, executor);
    let step = |id: u32, file: &str, target: &str, instruction: &str| RawStep {
        id,
        file: file.into(),
        target: target.into(),
        action: crate::core::plan::Action::ReplaceSymbol,
        instruction: instruction.into(),
        depends_on: Vec::new(),
    };
    let raw = RawPlan {
        summary: "Four independent rewrites.".into(),
        steps: vec![
            step(
                1,
                "src/geometry.rs",
                "Circle::area",
                "Use std::f64::consts::PI.",
            ),
            step(
                2,
                "src/geometry.rs",
                "Circle::perimeter",
                "Use std::f64::consts::TAU.",
            ),
            step(3, "src/geometry.rs", "total_area", "Sum with an iterator."),
            step(
                4,
                "src/main.rs",
                "main",
                "Print the total with two decimals.",
            ),
        ],
    };
    let facts = PlanFacts::gather(driver.workspace.lock().index(), &root, &raw);
    let plan = validate("bench", &raw, &facts);
    let started = Instant::now();
    let execution = driver
        .execute(&plan, |_| options(concurrency), Cancel::new())
        .await?
        .execution;
    anyhow::ensure!(execution.reports.len() == 4, "all four steps run");
    Ok(Timed {
        time: started.elapsed(),
        tokens: execution.generated_tokens(),
        answers: execution.reports.iter().map(|r| r.attempts).sum(),
    })
}
