//! The check-and-repair loop: `plan.check` after the plan's steps, failures sent back to the
//! executors as repair jobs, the planner's revision when repairs stall, and each way the
//! loop stops. Scripted planner and executor; the checks are real commands (`cargo check`
//! on a tiny crate, or shell lines that print `file:line:col: error: …`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tierls::core::plan::diff::unified;
use tierls::core::plan::repair::render_rounds;
use tierls::models::Cancel;
use tierls::models::scripted::ScriptedModel;
use tierls::refactor::ExecuteOptions;
use tierls::refactor::check::CheckSpec;
use tierls::refactor::driver::{Driver, Executed, Team, apply_on_disk};
use tierls::refactor::rounds::RoundsRequest;

use crate::agent_edits::{PRICING_PLAN, pricing_crate, pricing_request, scanned};

const NEW_TOTAL: &str = "pub fn total_price(cart: &[u32], currency: &str) -> u32 {\n    let _ = currency;\n    cart.iter().sum()\n}";
const GOOD_A: &str = "pub fn checkout_a(cart: &[u32]) -> u32 {\n    total_price(cart, \"EUR\")\n}";
/// The job on `checkout_b` leaves the old arity.
const BAD_B: &str = "pub fn checkout_b(cart: &[u32]) -> u32 {\n    total_price(cart) + 1\n}";
const GOOD_B: &str =
    "pub fn checkout_b(cart: &[u32]) -> u32 {\n    total_price(cart, \"EUR\") + 1\n}";

const CARGO_CHECK: &str = "cargo check --quiet --offline --message-format short";
/// Fails (gcc's format) on every call with the old arity once `total_price` has a currency;
/// passes on the workspace before the plan.
const SHELL_CHECK: &str = r#"if grep -q currency src/pricing.rs; then grep -n 'total_price(cart)' src/checkout.rs | sed 's/^\([0-9]*\):.*/src\/checkout.rs:\1:5: error: old arity/'; ! grep -q 'total_price(cart)' src/checkout.rs; fi"#;

const REVISION: &str = r#"{"summary": "Fix checkout_b.", "steps": [
  {"id": 1, "action": "replace_symbol", "file": "src/checkout.rs", "target": "checkout_b", "instruction": "Pass \"EUR\" to total_price in checkout_b.", "depends_on": []}]}"#;

/// The executor: right on `total_price` and `checkout_a`, wrong on `checkout_b` unless its
/// prompt holds `fixed_by` (a repair's or a revision's words).
fn executor(fixed_by: Option<&str>) -> ScriptedModel {
    let mut model = ScriptedModel::new(1);
    if let Some(needle) = fixed_by {
        model = model.answer(needle, &[GOOD_B]);
    }
    model
        .answer("Rewrite `total_price`", &[NEW_TOTAL])
        .answer("Rewrite `checkout_a`", &[GOOD_A])
        .answer("Rewrite `checkout_b`", &[BAD_B])
}

/// The planner: the pricing plan, and `REVISION` when asked to revise.
fn planner() -> ScriptedModel {
    ScriptedModel::new(1)
        .answer("fails on the result", &[REVISION])
        .answer("Request:", &[PRICING_PLAN])
}

struct Loop {
    command: &'static str,
    max_rounds: u32,
    time_limit: Duration,
}

impl Loop {
    fn new(command: &'static str) -> Self {
        Loop {
            command,
            max_rounds: 2,
            time_limit: Duration::from_secs(600),
        }
    }

    fn request(&self, check_seconds: u64) -> RoundsRequest {
        RoundsRequest {
            spec: CheckSpec {
                command: self.command.to_owned(),
                time_limit: Duration::from_secs(check_seconds),
                output_cap: 256 * 1024,
                cancel: None,
                links: Vec::new(),
            },
            max_rounds: self.max_rounds,
            time_limit: self.time_limit,
            max_jobs: 64,
            planner_time: Duration::from_secs(60),
        }
    }
}

/// Plans and runs the pricing change on the tiny crate at `root`, with the loop `shape`.
async fn run(
    root: &Path,
    planner: ScriptedModel,
    executor: ScriptedModel,
    shape: &Loop,
    cancel: Cancel,
) -> (Driver, Executed, Arc<ScriptedModel>, Arc<ScriptedModel>) {
    let planner = Arc::new(planner);
    let executor = Arc::new(executor);
    let driver = Driver::new(
        scanned(root, 1),
        Team::Given {
            planner: planner.clone(),
            executor: executor.clone(),
        },
    );
    let (_, planned) = driver
        .plan(&pricing_request(256, 2048), Cancel::new())
        .await
        .unwrap();
    let options = ExecuteOptions {
        max_attempts: 1,
        max_step_tokens: 256,
        step_time_limit: None,
        concurrency: 1,
    };
    let executed = driver
        .execute_checked(&planned.plan, |_| options, &shape.request(300), cancel)
        .await
        .unwrap();
    (driver, executed, planner, executor)
}

/// The rounds (seconds masked: they vary) and the diff of the result.
fn report(executed: &Executed) -> String {
    let rounds = executed.rounds.as_ref().expect("the loop ran");
    let mut out = mask_seconds(&render_rounds(rounds));
    out.push_str("\nThe result:\n");
    for file in &executed.landing.files {
        out.push_str(&unified(&file.file, file.base.as_deref(), &file.text));
    }
    out
}

/// "(1.2 s)" → "(… s)".
fn mask_seconds(text: &str) -> String {
    text.lines()
        .map(|line| match (line.rfind(" ("), line.ends_with(" s)")) {
            (Some(at), true) => format!("{} (… s)", &line[..at]),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn crate_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    pricing_crate(&root);
    (dir, root)
}

/// `cargo check` finds the call site the fan-out's job left with the old arity; the
/// executor gets it back with the error and fixes it; the second check passes.
#[tokio::test]
async fn a_failure_goes_back_to_the_executor_and_the_repair_lands() {
    let (_dir, root) = crate_dir();
    let (_, executed, _, executor) = run(
        &root,
        planner(),
        executor(Some("reports errors in `checkout_b`")),
        &Loop::new(CARGO_CHECK),
        Cancel::new(),
    )
    .await;
    let rounds = executed.rounds.as_ref().unwrap();
    assert!(rounds.holds(), "{}", render_rounds(rounds));
    let repair_prompt = executor
        .prompts()
        .into_iter()
        .find(|prompt| prompt.contains("reports errors in"))
        .expect("a repair job");
    insta::assert_snapshot!(format!(
        "{}\nThe repair job's prompt:\n{repair_prompt}",
        report(&executed)
    ));
}

/// Repairs that do not reduce the failures go to the planner, with the diff and what the
/// check says; the step it adds lands and the check passes.
#[tokio::test]
async fn repairs_that_stall_go_to_the_planner_with_the_diff() {
    let (_dir, root) = crate_dir();
    let shape = Loop {
        max_rounds: 1,
        ..Loop::new(CARGO_CHECK)
    };
    let (_, executed, planner, _) = run(
        &root,
        planner(),
        executor(Some("Pass \"EUR\" to total_price in checkout_b")),
        &shape,
        Cancel::new(),
    )
    .await;
    let rounds = executed.rounds.as_ref().unwrap();
    assert!(rounds.holds(), "{}", render_rounds(rounds));
    let revision_prompt = planner
        .prompts()
        .into_iter()
        .find(|prompt| prompt.contains("fails on the result"))
        .expect("a revision");
    insta::assert_snapshot!(format!(
        "{}\nThe planner's revision prompt:\n{revision_prompt}",
        report(&executed)
    ));
}

/// Each way the loop stops, with a check that no answer fixes (or none is needed), as
/// `(case, rounds, how it ended)`.
#[tokio::test]
async fn the_loop_stops_and_says_why() {
    let always_failing = Some("never in a prompt");
    let cases: Vec<(&str, Loop, Option<&str>)> = vec![
        (
            "repaired",
            Loop::new(SHELL_CHECK),
            Some("reports errors in"),
        ),
        (
            "round limit",
            Loop {
                max_rounds: 1,
                ..Loop::new(SHELL_CHECK)
            },
            always_failing,
        ),
        (
            "no progress",
            Loop {
                max_rounds: 4,
                ..Loop::new(SHELL_CHECK)
            },
            always_failing,
        ),
        (
            "no repair rounds",
            Loop {
                max_rounds: 0,
                ..Loop::new(SHELL_CHECK)
            },
            always_failing,
        ),
        (
            "time limit",
            Loop {
                time_limit: Duration::from_millis(1),
                ..Loop::new(SHELL_CHECK)
            },
            always_failing,
        ),
        (
            "broken before the plan",
            Loop::new("echo 'src/lib.rs:1:1: error: broken before'; exit 1"),
            always_failing,
        ),
        (
            "the check is not a command",
            Loop::new("no-such-checker --all"),
            always_failing,
        ),
    ];
    let mut out = String::new();
    for (case, shape, fixed_by) in cases {
        let (_dir, root) = crate_dir();
        let (_, executed, _, _) =
            run(&root, planner(), executor(fixed_by), &shape, Cancel::new()).await;
        let rounds = executed.rounds.as_ref().unwrap();
        let kinds: Vec<String> = rounds
            .rounds
            .iter()
            .map(|round| format!("{:?}:{}/{}", round.kind, round.landed, round.jobs.len()))
            .collect();
        out.push_str(&format!(
            "{case}: rounds {}; holds: {}; stopped: {}\n",
            kinds.join(", "),
            rounds.holds(),
            rounds.end.describe()
        ));
        // The user's tree is never touched by the loop.
        let checkout = std::fs::read_to_string(root.join("src/checkout.rs")).unwrap();
        assert!(!checkout.contains("EUR"), "{case}: {checkout}");
    }
    insta::assert_snapshot!(out);
}

/// Cancelling while the check runs stops it (its process group is killed) and the loop
/// ends at once, cancelled.
#[tokio::test]
async fn cancelling_stops_the_running_check() {
    let (_dir, root) = crate_dir();
    let cancel = Cancel::new();
    let raise = cancel.clone();
    let raiser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        raise.cancel();
    });
    let started = Instant::now();
    let (_, executed, _, _) = run(
        &root,
        planner(),
        executor(None),
        &Loop::new("sleep 120"),
        cancel,
    )
    .await;
    raiser.await.unwrap();
    let elapsed = started.elapsed();
    let rounds = executed.rounds.as_ref().unwrap();
    assert_eq!(rounds.end.describe(), "cancelled");
    assert!(!rounds.holds());
    // The check sleeps 120 s: ending long before means it was stopped.
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
}

/// The user edits `checkout_b` after the loop repaired it: applying refuses the fan-out's
/// job on it and the repair that depends on that job; every other step lands.
#[tokio::test]
async fn a_user_edit_refuses_the_repair_and_its_owner_only() {
    let (_dir, root) = crate_dir();
    let (driver, executed, _, _) = run(
        &root,
        planner(),
        executor(Some("reports errors in `checkout_b`")),
        &Loop::new(SHELL_CHECK),
        Cancel::new(),
    )
    .await;
    assert!(executed.rounds.as_ref().unwrap().holds());
    let repairs: Vec<u32> = executed.rounds.as_ref().unwrap().rounds[1].jobs.clone();
    assert_eq!(repairs.len(), 1);
    let checkout = root.join("src/checkout.rs");
    let edited = std::fs::read_to_string(&checkout)
        .unwrap()
        .replace("total_price(cart) + 1", "total_price(cart) + 2");
    std::fs::write(&checkout, &edited).unwrap();
    driver.workspace.lock().refresh_index();
    let landing = apply_on_disk(
        &driver.workspace.snapshot(),
        &executed.plan,
        &executed.execution,
    )
    .unwrap();
    let refused: Vec<u32> = landing.refused.iter().map(|(step, _)| *step).collect();
    assert!(refused.contains(&repairs[0]), "{:?}", landing.refused);
    assert_eq!(refused.len(), 2, "{:?}", landing.refused);
    let now = std::fs::read_to_string(&checkout).unwrap();
    assert!(now.contains("total_price(cart, \"EUR\")\n}"), "{now}");
    assert!(now.contains("total_price(cart) + 2"), "{now}");
    let pricing = std::fs::read_to_string(root.join("src/pricing.rs")).unwrap();
    assert!(pricing.contains("currency: &str"), "{pricing}");
}

/// The loop with llama.cpp as the executor: the test model answers the call sites and
/// then the repairs `cargo check` sends back (with the compiler's error in the prompt);
/// the loop ends with a reason that agrees with the last check, the user's tree is
/// untouched, and every file of the result parses.
#[tokio::test]
async fn the_loop_runs_on_the_test_model() {
    use tierls::core::plan::repair::LoopEnd;
    use tierls::models::embedded::{EmbeddedModel, EmbeddedOptions, test_model_path};
    let _turn = crate::support::one_model_at_a_time();
    let (_dir, root) = crate_dir();
    let before = ["src/pricing.rs", "src/checkout.rs"]
        .map(|file| std::fs::read_to_string(root.join(file)).unwrap());
    let options = EmbeddedOptions {
        n_ctx: 4096,
        slots: 1,
        threads: 2,
        chat_template: Some("gemma".into()),
        ..EmbeddedOptions::default()
    };
    // The signature change by script; the call sites and the repairs by the test model.
    let model = EmbeddedModel::load(&test_model_path(), &options).expect("the test model loads");
    let executor = Arc::new(
        ScriptedModel::new(1)
            .answer("Rewrite `total_price`", &[NEW_TOTAL])
            .otherwise(Arc::new(model)),
    );
    let driver = Driver::new(
        scanned(&root, 1),
        Team::Given {
            planner: Arc::new(planner()),
            executor: executor.clone(),
        },
    );
    let (_, planned) = driver
        .plan(&pricing_request(256, 2048), Cancel::new())
        .await
        .unwrap();
    let options = ExecuteOptions {
        max_attempts: 1,
        max_step_tokens: 128,
        step_time_limit: Some(Duration::from_secs(120)),
        concurrency: 1,
    };
    let shape = Loop {
        max_rounds: 1,
        ..Loop::new(CARGO_CHECK)
    };
    let executed = driver
        .execute_checked(
            &planned.plan,
            |_| options,
            &shape.request(300),
            Cancel::new(),
        )
        .await
        .unwrap();
    let rounds = executed.rounds.as_ref().expect("the loop ran");
    eprintln!("{}", render_rounds(rounds));
    let asked: Vec<String> = executor
        .prompts()
        .into_iter()
        .filter(|prompt| !prompt.contains("Rewrite `total_price`"))
        .collect();
    assert!(
        asked.len() >= 2,
        "the fan-out's two jobs went to the model: {asked:?}"
    );
    let first = &rounds.rounds[0];
    assert_eq!(first.jobs.len(), 3, "{first:?}");
    if !first.failures.is_empty() && rounds.rounds.len() > 1 {
        let (failure, _) = &first.failures[0];
        assert!(
            asked.iter().any(|prompt| prompt.contains(&failure.message)),
            "the repair prompt holds the check's error `{}`",
            failure.message
        );
    }
    assert_eq!(rounds.holds(), rounds.end == LoopEnd::Clean);
    assert_eq!(
        rounds.holds(),
        rounds.failing().is_empty() && rounds.unreachable.is_empty()
    );
    for (file, text) in ["src/pricing.rs", "src/checkout.rs"].iter().zip(&before) {
        assert_eq!(&std::fs::read_to_string(root.join(file)).unwrap(), text);
    }
    let rust = tierls::core::index::language::Language::Rust;
    for file in &executed.landing.files {
        let tree = tierls::core::index::extract::parse(rust, &file.text, None).unwrap();
        assert!(
            !tree.root_node().has_error(),
            "{}:\n{}",
            file.file,
            file.text
        );
    }
}
