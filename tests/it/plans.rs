//! "Plan this refactor" with the scripted model: the planner's prompt, the plan, every
//! executor prompt and the resulting diff, on fixture workspaces in several languages; and
//! each bad input the plan flow must survive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::copy_tree;
use tierls::core::plan::context::Focus;
use tierls::core::plan::diff::unified;
use tierls::core::plan::land::{Landing, land};
use tierls::core::plan::render::render_plan;
use tierls::core::plan::{Plan, RawPlan};
use tierls::models::Cancel;
use tierls::models::Model;
use tierls::models::scripted::ScriptedModel;
use tierls::refactor::driver::{Driver, PlanRequest, Stage, Team, apply_on_disk};
use tierls::refactor::workspace::PlanFacts;
use tierls::refactor::{ExecuteOptions, Execution, Progress, StepOutcome, parse_plan};
use tierls::workspace::{Limits, Shared};

const MAX_FILE: u64 = 1 << 20;

/// A fixture workspace copied to a temporary folder, indexed.
struct Workspace {
    _dir: tempfile::TempDir,
    root: PathBuf,
    shared: Shared,
}

impl Workspace {
    fn driver(&self, planner: Arc<dyn Model>, executor: Arc<dyn Model>) -> Driver {
        Driver::new(self.shared.clone(), Team::Given { planner, executor })
    }

    /// Runs `plan` through the driver, with each step's progress to `progress`.
    async fn execute(
        &self,
        plan: &Plan,
        executor: Arc<dyn Model>,
        options: ExecuteOptions,
        cancel: Cancel,
        progress: Arc<dyn Fn(Progress) + Send + Sync>,
    ) -> (Execution, Landing) {
        let driver = self
            .driver(executor.clone(), executor)
            .on_stage(Arc::new(move |stage| {
                if let Stage::Step(event) = stage {
                    progress(event);
                }
            }));
        let executed = driver.execute(plan, |_| options, cancel).await.unwrap();
        (executed.execution, executed.landing)
    }

    /// Lands and writes the plan on the files as they are on disk now.
    fn apply(&self, plan: &Plan, execution: &Execution) -> Landing {
        apply_on_disk(&self.shared.snapshot(), plan, execution).unwrap()
    }

    /// The current text of each file the plan touches.
    fn read_files(&self, plan: &Plan) -> BTreeMap<String, Option<String>> {
        self.shared
            .snapshot()
            .current_files(plan.files())
            .into_iter()
            .map(|(file, current)| (file, current.text))
            .collect()
    }
}

fn workspace(fixture: &str) -> Workspace {
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/plans")
        .join(fixture);
    copy_tree(&source, dir.path());
    let root = dir.path().canonicalize().unwrap();
    let limits = Limits {
        index_bytes: MAX_FILE,
        read_bytes: MAX_FILE,
    };
    let (scanned, _) = tierls::workspace::Workspace::scanned(&root, limits, 1, &mut |_, _| {});
    Workspace {
        _dir: dir,
        root,
        shared: Shared::new(scanned),
    }
}

fn options(concurrency: usize) -> ExecuteOptions {
    ExecuteOptions {
        max_attempts: 3,
        max_step_tokens: 512,
        step_time_limit: None,
        concurrency,
    }
}

fn no_progress() -> Arc<dyn Fn(Progress) + Send + Sync> {
    Arc::new(|_| {})
}

struct Case<'a> {
    fixture: &'a str,
    instruction: &'a str,
    focus: Vec<Focus>,
    plan: &'a str,
    /// (needle in the executor's prompt, its answers in turn)
    executor: Vec<(&'a str, Vec<&'a str>)>,
}

/// Runs the whole flow headless with scripted models and shows every prompt, the plan, the
/// report and the diff; the files on disk are then written and checked.
async fn check_plan(case: Case<'_>) -> String {
    let ws = workspace(case.fixture);
    let planner = ScriptedModel::new(1).answer("Request:", &[case.plan]);
    let mut executor = ScriptedModel::new(2);
    for (needle, answers) in &case.executor {
        executor = executor.answer(needle, answers);
    }
    let (planner, executor) = (Arc::new(planner), Arc::new(executor));
    let request = PlanRequest {
        instruction: case.instruction.into(),
        focus: case.focus,
        map_tokens: 512,
        reference_tokens: 1024,
        max_fan_out: 256,
        planner_time: Duration::from_secs(600),
    };
    let (_, planned) = ws
        .driver(planner.clone(), executor.clone())
        .plan(&request, Cancel::new())
        .await
        .unwrap();
    let plan = planned.plan;
    let (execution, landing) = ws
        .execute(
            &plan,
            executor.clone(),
            options(2),
            Cancel::new(),
            no_progress(),
        )
        .await;
    let mut out = String::new();
    out.push_str(&format!("== planner prompt ==\n{}\n", planner.prompts()[0]));
    out.push_str(&format!("== plan ==\n{}\n", render_plan(&plan)));
    // Steps run concurrently: show the prompts in step order.
    let mut prompts = executor.prompts();
    prompts.sort_by_key(|prompt| step_of(prompt));
    for prompt in prompts {
        out.push_str(&format!("== executor prompt ==\n{prompt}\n"));
    }
    out.push_str(&report(&plan, &execution, &landing));
    let written = ws.apply(&plan, &execution);
    for file in &written.files {
        assert_eq!(
            std::fs::read_to_string(ws.root.join(&file.file)).unwrap(),
            file.text
        );
    }
    out
}

fn step_of(prompt: &str) -> (u32, usize) {
    let step = prompt
        .split("Your step: ")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or(0);
    (step, prompt.len())
}

fn report(plan: &Plan, execution: &Execution, landing: &Landing) -> String {
    let mut out = String::from("== steps ==\n");
    for report in &execution.reports {
        out.push_str(&format!(
            "{}: {:?} after {} answer(s)\n",
            report.step, report.outcome, report.attempts
        ));
    }
    for (step, reason) in &landing.refused {
        out.push_str(&format!("{step}: refused at landing: {reason}\n"));
    }
    out.push_str("== diff ==\n");
    for file in &landing.files {
        out.push_str(&unified(&file.file, file.base.as_deref(), &file.text));
    }
    let _ = plan;
    out
}

#[tokio::test]
async fn rust_independent_steps_land_as_one_change() {
    let snapshot = check_plan(Case {
        fixture: "rust",
        instruction: "use std::f64::consts::PI instead of 3.14, and add a function for the largest circle",
        focus: vec![Focus::Symbol { file: "src/geometry.rs".into(), path: "Circle".into() }],
        plan: r#"{"summary": "Use PI in Circle and add largest.", "steps": [
            {"id": 1, "file": "src/geometry.rs", "target": "Circle::area", "action": "replace_symbol", "instruction": "Use std::f64::consts::PI.", "depends_on": []},
            {"id": 2, "file": "src/geometry.rs", "target": "Circle::perimeter", "action": "replace_symbol", "instruction": "Use std::f64::consts::PI.", "depends_on": []},
            {"id": 3, "file": "src/geometry.rs", "target": "total_area", "action": "insert_after", "instruction": "Add largest(circles) returning the largest radius.", "depends_on": [1]}]}"#,
        executor: vec![
            ("Your step: 1.", vec!["/// The area of the circle.\npub fn area(&self) -> f64 {\n    std::f64::consts::PI * self.radius * self.radius\n}\n"]),
            ("Your step: 2.", vec!["    pub fn perimeter(&self) -> f64 {\n        2.0 * std::f64::consts::PI * self.radius\n    }"]),
            ("Your step: 3.", vec!["pub fn largest(circles: &[Circle]) -> f64 {\n    circles.iter().map(|c| c.radius).fold(0.0, f64::max)\n}"]),
        ],
    })
    .await;
    insta::assert_snapshot!(snapshot);
}

#[tokio::test]
async fn python_syntax_errors_go_back_to_the_executor() {
    let snapshot = check_plan(Case {
        fixture: "python",
        instruction: "total with sum(), and a receipt module",
        focus: vec![Focus::Selection { file: "shop/cart.py".into(), range: 200..210 }],
        plan: r#"{"summary": "Simplify total and add receipts.", "steps": [
            {"id": 1, "file": "shop/cart.py", "target": "Cart.total", "action": "replace_symbol", "instruction": "Return sum(price for _, price in self.items).", "depends_on": []},
            {"id": 2, "file": "shop/receipt.py", "target": "", "action": "create_file", "instruction": "Write receipt(cart) returning one line per item.", "depends_on": [1]}]}"#,
        executor: vec![
            ("Your step: 1.", vec!["def total(self):\n    return sum(price for _, price in self.items", "def total(self):\n    return sum(price for _, price in self.items)"]),
            ("Your step: 2.", vec!["def receipt(cart):\n    return \"\\n\".join(f\"{name}: {price}\" for name, price in cart.items)\n"]),
        ],
    })
    .await;
    insta::assert_snapshot!(snapshot);
}

#[tokio::test]
async fn typescript_delete_and_replace_with_a_rejected_step() {
    let snapshot = check_plan(Case {
        fixture: "typescript",
        instruction: "find with Array.find, and remove add",
        focus: vec![Focus::File("src/users.ts".into())],
        plan: r#"{"summary": "Shorter store.", "steps": [
            {"id": 1, "file": "src/users.ts", "target": "UserStore.find", "action": "replace_symbol", "instruction": "Use this.users.find.", "depends_on": []},
            {"id": 2, "file": "src/users.ts", "target": "UserStore.add", "action": "delete_symbol", "instruction": "", "depends_on": []},
            {"id": 3, "file": "src/users.ts", "target": "UserStore.remove", "action": "replace_symbol", "instruction": "Remove by id.", "depends_on": []}]}"#,
        executor: vec![
            ("Your step: 1.", vec!["find(id: number): User | undefined {\n  return this.users.find((user) => user.id === id);\n}"]),
        ],
    })
    .await;
    insta::assert_snapshot!(snapshot);
}

/// Validates a plan written as JSON against a fixture workspace set up by `setup`, and
/// shows the steps that run and the rejected ones with their reasons.
fn check_validation(fixture: &str, setup: impl FnOnce(&Path), plan: &str) -> String {
    let ws = workspace(fixture);
    setup(&ws.root);
    let raw: RawPlan = parse_plan(plan).unwrap();
    let facts = PlanFacts::gather(ws.shared.lock().index(), &ws.root, &raw);
    let plan = tierls::core::plan::validate("test", &raw, &facts);
    render_plan(&plan)
}

/// A plan of `steps` (as written by [`step`]) checked against the workspace's index.
fn checked_plan(ws: &Workspace, steps: &[String]) -> Plan {
    let raw = parse_plan(&format!(
        r#"{{"summary": "s", "steps": [{}]}}"#,
        steps.join(", ")
    ))
    .unwrap();
    tierls::core::plan::validate("t", &raw, ws.shared.lock().index())
}

fn step(id: u32, file: &str, target: &str, action: &str, depends_on: &[u32]) -> String {
    format!(
        r#"{{"id": {id}, "file": {file:?}, "target": {target:?}, "action": "{action}", "instruction": "do it", "depends_on": {depends_on:?}}}"#
    )
}

#[test]
fn paths_outside_the_workspace_are_rejected() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.rs"), "fn secret() {}\n").unwrap();
    let outside_path = outside.path().to_path_buf();
    let steps = [
        step(1, "../outside.rs", "", "create_file", &[]),
        step(2, "/etc/passwd", "", "edit_file", &[]),
        step(3, "C:\\\\Windows\\\\x.rs", "", "create_file", &[]),
        step(4, "link/new.rs", "", "create_file", &[]),
        step(5, "linked.rs", "", "edit_file", &[]),
        step(6, "file:///etc/passwd", "", "edit_file", &[]),
        step(7, "src/./deeper/../x.rs", "", "create_file", &[]),
        step(8, "src/new.rs", "", "create_file", &[]),
    ];
    let plan = format!(r#"{{"summary": "escape", "steps": [{}]}}"#, steps.join(","));
    insta::assert_snapshot!(check_validation(
        "rust",
        move |root| {
            std::os::unix::fs::symlink(&outside_path, root.join("link")).unwrap();
            std::os::unix::fs::symlink(outside_path.join("secret.rs"), root.join("linked.rs"))
                .unwrap();
        },
        &plan,
    ));
}

#[test]
fn unknown_symbols_and_bad_dependencies_are_rejected() {
    // Three plans, each within the schema's eight steps; steps that refer to each other
    // stay in one plan.
    let plans: [Vec<String>; 3] = [
        vec![
            step(
                1,
                "src/geometry.rs",
                "Circle::volume",
                "replace_symbol",
                &[],
            ),
            step(2, "src/geometry.rs", "area", "replace_symbol", &[]),
            step(3, "src/nowhere.rs", "x", "replace_symbol", &[]),
            step(4, "src/geometry.rs", "Circle::area", "replace_symbol", &[4]),
            step(
                5,
                "src/geometry.rs",
                "Circle::area",
                "replace_symbol",
                &[42],
            ),
            step(8, "src/geometry.rs", "total_area", "replace_symbol", &[1]),
        ],
        vec![
            step(6, "src/geometry.rs", "Circle::area", "replace_symbol", &[7]),
            step(
                7,
                "src/geometry.rs",
                "Circle::perimeter",
                "replace_symbol",
                &[6],
            ),
            step(9, "src/geometry.rs", "total_area", "insert_before", &[]),
            step(9, "src/main.rs", "main", "replace_symbol", &[]),
            step(10, "src/geometry.rs", "", "create_file", &[]),
            step(13, "src/geometry.rs", "Circle", "replace_symbol", &[]),
        ],
        vec![
            step(11, "src/made.rs", "", "create_file", &[]),
            step(12, "src/made.rs", "", "edit_file", &[]),
            step(14, "src/main.rs", "main", "replace_symbol", &[]),
            step(15, "src/main.rs", "main", "insert_after", &[]),
            step(16, "src/main.rs", "main", "delete_symbol", &[14]),
        ],
    ];
    let shown: Vec<String> = plans
        .iter()
        .map(|steps| {
            let plan = format!(r#"{{"summary": "bad", "steps": [{}]}}"#, steps.join(","));
            check_validation("rust", |_| {}, &plan)
        })
        .collect();
    insta::assert_snapshot!(shown.join("\n---\n\n"));
}

/// Runs a one-step replace of `Circle::area` whose executor answers `answers` in turn,
/// and shows the step's outcome; the file must be untouched when it fails.
async fn check_executor_answers(answers: &[&str], max_step_tokens: u32) -> String {
    let ws = workspace("rust");
    let before = std::fs::read_to_string(ws.root.join("src/geometry.rs")).unwrap();
    let plan = checked_plan(
        &ws,
        &[
            step(1, "src/geometry.rs", "Circle::area", "replace_symbol", &[]),
            step(
                2,
                "src/geometry.rs",
                "Circle::perimeter",
                "replace_symbol",
                &[1],
            ),
        ],
    );
    let executor = Arc::new(
        ScriptedModel::new(1)
            .answer("Your step: 1.", answers)
            .answer(
                "Your step: 2.",
                &["pub fn perimeter(&self) -> f64 {\n    0.0\n}"],
            ),
    );
    let mut options = options(1);
    options.max_step_tokens = max_step_tokens;
    let (execution, landing) = ws
        .execute(&plan, executor, options, Cancel::new(), no_progress())
        .await;
    let applied = ws.apply(&plan, &execution);
    assert!(
        applied.files.is_empty(),
        "nothing lands when the first step fails"
    );
    assert_eq!(
        std::fs::read_to_string(ws.root.join("src/geometry.rs")).unwrap(),
        before
    );
    report(&plan, &execution, &landing)
}

#[tokio::test]
async fn an_empty_answer_fails_the_step_and_its_dependents() {
    insta::assert_snapshot!(check_executor_answers(&["", "\n\n", "```rust\n```"], 512).await);
}

#[tokio::test]
async fn a_truncated_answer_is_not_spliced() {
    insta::assert_snapshot!(
        check_executor_answers(
            &["pub fn area(&self) -> f64 {\n    let mut total = 0.0;\n    total\n}"],
            5
        )
        .await
    );
}

#[tokio::test]
async fn prose_is_not_code() {
    insta::assert_snapshot!(
        check_executor_answers(
            &["Sure! Here is the new area function, it now uses PI for better precision."],
            512
        )
        .await
    );
}

#[tokio::test]
async fn an_enormous_answer_is_refused() {
    let enormous = format!(
        "pub fn area(&self) -> f64 {{\n{}    0.0\n}}",
        "    // pad\n".repeat(8000)
    );
    insta::assert_snapshot!(check_executor_answers(&[&enormous], 100_000).await);
}

/// The user types while the plan runs: a step whose symbol the user did not touch still
/// lands where that symbol now is; one whose symbol changed is refused with its dependents.
#[tokio::test]
async fn a_file_edited_during_the_plan_re_anchors_or_refuses() {
    let ws = workspace("rust");
    let plan = checked_plan(
        &ws,
        &[
            step(1, "src/geometry.rs", "Circle::area", "replace_symbol", &[]),
            step(
                2,
                "src/geometry.rs",
                "Circle::perimeter",
                "replace_symbol",
                &[],
            ),
            step(3, "src/main.rs", "main", "replace_symbol", &[2]),
        ],
    );
    let executor = Arc::new(
        ScriptedModel::new(2)
            .answer("Your step: 1.", &["pub fn area(&self) -> f64 {\n    std::f64::consts::PI * self.radius * self.radius\n}"])
            .answer("Your step: 2.", &["pub fn perimeter(&self) -> f64 {\n    std::f64::consts::TAU * self.radius\n}"])
            .answer("Your step: 3.", &["fn main() {\n    println!(\"done\");\n}"]),
    );
    let files = ws.read_files(&plan);
    let (execution, _) = ws
        .execute(&plan, executor, options(2), Cancel::new(), no_progress())
        .await;
    // Meanwhile the user added a line at the top and edited `perimeter`.
    let original = files["src/geometry.rs"].clone().unwrap();
    let edited = format!(
        "// edited by the user\n{}",
        original.replace("2.0 * 3.14", "6.28")
    );
    let mut bases: BTreeMap<String, Option<String>> = files.clone();
    bases.insert("src/geometry.rs".into(), Some(edited.clone()));
    let landing = land(&plan, &execution.edits, &bases);
    insta::assert_snapshot!(report(&plan, &execution, &landing));
    // The same through the disk: `apply` reads the files again and lands on what it finds.
    std::fs::write(ws.root.join("src/geometry.rs"), &edited).unwrap();
    let applied = ws.apply(&plan, &execution);
    assert_eq!(applied.landed, vec![1]);
    let on_disk = std::fs::read_to_string(ws.root.join("src/geometry.rs")).unwrap();
    assert!(
        on_disk.starts_with("// edited by the user\n")
            && on_disk.contains("consts::PI")
            && on_disk.contains("6.28")
    );
    assert_eq!(
        std::fs::read_to_string(ws.root.join("src/main.rs")).unwrap(),
        files["src/main.rs"].clone().unwrap()
    );
}

/// Cancelling mid-step stops the executor within a token and lands nothing.
#[tokio::test]
async fn cancelling_mid_step_lands_nothing() {
    let ws = workspace("rust");
    let plan = checked_plan(
        &ws,
        &[
            step(1, "src/geometry.rs", "Circle::area", "replace_symbol", &[]),
            step(
                2,
                "src/geometry.rs",
                "Circle::perimeter",
                "replace_symbol",
                &[1],
            ),
        ],
    );
    let executor = Arc::new(
        ScriptedModel::new(1)
            .per_token(Duration::from_millis(20))
            .answer("Your step:", &["pub fn area(&self) -> f64 {\n    std::f64::consts::PI * self.radius * self.radius\n}"]),
    );
    let cancel = Cancel::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let progress: Arc<dyn Fn(Progress) + Send + Sync> = {
        let (events, cancel) = (events.clone(), cancel.clone());
        Arc::new(move |event| {
            if matches!(event, Progress::Started { step: 1, .. }) {
                // The user cancels as soon as the first step starts.
                let cancel = cancel.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(100));
                    cancel.cancel();
                });
            }
            events.lock().unwrap().push(format!("{event:?}"));
        })
    };
    let before = std::fs::read_to_string(ws.root.join("src/geometry.rs")).unwrap();
    let (execution, landing) = ws
        .execute(&plan, executor, options(1), cancel.clone(), progress)
        .await;
    assert!(execution.cancelled);
    assert!(
        cancel.decoded_after_cancel() <= 1,
        "decoded {} tokens after the cancel",
        cancel.decoded_after_cancel()
    );
    assert!(landing.files.is_empty());
    assert_eq!(
        execution
            .reports
            .iter()
            .map(|r| r.outcome.clone())
            .collect::<Vec<_>>(),
        vec![StepOutcome::Cancelled, StepOutcome::Cancelled]
    );
    assert_eq!(
        std::fs::read_to_string(ws.root.join("src/geometry.rs")).unwrap(),
        before
    );
    insta::assert_snapshot!(events.lock().unwrap().join("\n"));
}

/// The grammar the planner is held to: steps numbered in order, each depending only on
/// earlier ones, files and targets from the workspace (a new path only for create_file).
#[test]
fn the_plan_schema_constrains_names_and_dependencies() {
    let schema = tierls::core::plan::plan_schema(&[
        (
            "src/geometry.rs".to_owned(),
            vec!["Circle::area".to_owned()],
        ),
        ("src/\"odd\".rs".to_owned(), vec![]),
    ]);
    let parsed: serde_json::Value = serde_json::from_str(&schema).expect("the schema is JSON");
    insta::assert_snapshot!(serde_json::to_string_pretty(&parsed["$defs"]["step2"]).unwrap());
    assert_eq!(
        parsed["properties"]["steps"]["anyOf"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
}

#[tokio::test]
async fn hidden_bidirectional_controls_are_refused() {
    // "Trojan Source": U+202E and U+2066 make the code read differently from how it runs.
    // Every answer that holds one is refused with the reason, and nothing lands.
    let sneaky = "pub fn area(&self) -> f64 {\n    // \u{202e} } \u{2066}\n    std::f64::consts::PI * self.radius * self.radius\n}";
    insta::assert_snapshot!(check_executor_answers(&[sneaky, sneaky, sneaky], 512).await);
}
