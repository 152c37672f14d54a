//! `tierls bench plan`, fan-out cases: one function and N call sites (N = 24 and 200, in
//! Rust and Python), a planner that writes two steps (change the function, update every
//! reference) and scripted executors that answer each job correctly at a fixed time per
//! token, on one node against two. The figures are the flow's: call sites reached, the
//! planner's tokens against the executors', and what a second node buys.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::output;
use crate::core::plan::context::Focus;
use crate::models::scripted::ScriptedModel;
use crate::models::{Cancel, Model};
use crate::refactor::ExecuteOptions;
use crate::refactor::driver::{Driver, PlanRequest, Team};
use crate::workspace::{Limits, Shared, Workspace};

const PER_TOKEN: Duration = Duration::from_millis(1);

/// One language's generated workspace: where `total_price` lives, a caller and its fixed
/// form, and the planner's answer.
struct Case {
    language: &'static str,
    pricing: (&'static str, &'static str),
    caller_path: fn(usize) -> String,
    caller: fn(usize, &str) -> String,
    new_function: &'static str,
}

const CASES: [Case; 2] = [
    Case {
        language: "rust",
        pricing: (
            "src/pricing.rs",
            "pub fn total_price(cart: &[u32]) -> u32 {\n    cart.iter().sum()\n}\n",
        ),
        caller_path: |i| format!("src/part{:02}/checkout_{i}.rs", i % 16),
        caller: |i, arguments| {
            format!(
                "pub fn checkout_{i}(cart: &[u32]) -> u32 {{\n    total_price({arguments}) + {i}\n}}\n"
            )
        },
        new_function: "pub fn total_price(cart: &[u32], currency: &str) -> u32 {\n    let _ = currency;\n    cart.iter().sum()\n}",
    },
    Case {
        language: "python",
        pricing: (
            "shop/pricing.py",
            "def total_price(cart):\n    return sum(cart)\n",
        ),
        caller_path: |i| format!("shop/part{:02}/checkout_{i}.py", i % 16),
        caller: |i, arguments| {
            format!("def checkout_{i}(cart):\n    return total_price({arguments}) + {i}\n")
        },
        new_function: "def total_price(cart, currency):\n    return sum(cart)",
    },
];

fn plan_answer(file: &str) -> String {
    format!(
        r#"{{"summary": "Add a currency to total_price.", "steps": [{{"id": 1, "action": "replace_symbol", "file": "{file}", "target": "total_price", "instruction": "Add a currency parameter after cart.", "depends_on": []}}, {{"id": 2, "action": "update_references", "file": "{file}", "target": "total_price", "instruction": "Pass \"EUR\" as the currency.", "depends_on": [1]}}]}}"#
    )
}

fn write_case(root: &Path, case: &Case, callers: usize) -> std::io::Result<()> {
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)
    };
    write(case.pricing.0, case.pricing.1)?;
    for i in 0..callers {
        write(&(case.caller_path)(i), &(case.caller)(i, "cart"))?;
    }
    Ok(())
}

/// The executors' script: each caller's job gets its fixed form.
fn executor(case: &Case, callers: usize, slots: usize) -> ScriptedModel {
    let mut model = ScriptedModel::new(slots)
        .per_token(PER_TOKEN)
        .answer("Rewrite `total_price`", &[case.new_function]);
    for i in 0..callers {
        let fixed = (case.caller)(i, "cart, \"EUR\"");
        model = model.answer(&format!("Rewrite `checkout_{i}`"), &[fixed.trim_end()]);
    }
    model
}

struct Run {
    updated: usize,
    planner_tokens: u32,
    executor_tokens: u32,
    wall: Duration,
}

async fn run(case: &Case, callers: usize, nodes: usize) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().canonicalize()?;
    write_case(&root, case, callers)?;
    let (workspace, _) = Workspace::scanned(&root, Limits::default(), 0, &mut |_, _| {});
    let planner: Arc<dyn Model> =
        Arc::new(ScriptedModel::new(1).answer("Request:", &[&plan_answer(case.pricing.0)]));
    let team = Team::Given {
        planner,
        executor: Arc::new(executor(case, callers, nodes)),
    };
    let driver = Driver::new(Shared::new(workspace), team);
    let request = PlanRequest {
        instruction:
            "add a `currency` parameter to `total_price` and pass \"EUR\" at every call site".into(),
        focus: vec![Focus::Symbol {
            file: case.pricing.0.into(),
            path: "total_price".into(),
        }],
        map_tokens: 512,
        reference_tokens: 2048,
        max_fan_out: 256,
        planner_time: Duration::from_secs(60),
    };
    let (_, planned) = driver.plan(&request, Cancel::new()).await?;
    let options = ExecuteOptions {
        max_attempts: 1,
        max_step_tokens: 256,
        step_time_limit: None,
        concurrency: nodes,
    };
    let started = Instant::now();
    let executed = driver
        .execute(&planned.plan, |_| options, Cancel::new())
        .await?;
    let wall = started.elapsed();
    let updated = executed
        .landing
        .files
        .iter()
        .filter(|file| file.text.contains("total_price(cart, \"EUR\")"))
        .count();
    Ok(Run {
        updated,
        planner_tokens: planned.usage.generated_tokens,
        executor_tokens: executed.execution.generated_tokens(),
        wall,
    })
}

pub async fn bench() -> anyhow::Result<()> {
    output::line(&format!(
        "\nfan-out: one function, N call sites, the planner writes 2 steps; scripted executors at {} ms/token",
        PER_TOKEN.as_millis()
    ));
    output::line(&format!(
        "{:<8} {:>5} {:>9} {:>15} {:>16} {:>10} {:>10} {:>6}",
        "language",
        "N",
        "updated",
        "planner tokens",
        "executor tokens",
        "1 node",
        "2 nodes",
        "ratio"
    ));
    for case in &CASES {
        for callers in [24, 200] {
            let one = run(case, callers, 1).await?;
            let two = run(case, callers, 2).await?;
            output::line(&format!(
                "{:<8} {:>5} {:>9} {:>15} {:>16} {:>9.2}s {:>9.2}s {:>5.2}x",
                case.language,
                callers,
                format!("{}/{callers}", one.updated.min(two.updated)),
                one.planner_tokens,
                one.executor_tokens,
                one.wall.as_secs_f64(),
                two.wall.as_secs_f64(),
                one.wall.as_secs_f64() / two.wall.as_secs_f64().max(1e-9),
            ));
        }
    }
    Ok(())
}
