//! Workspace-wide agent edits: what the planner is shown about a symbol used across a large
//! workspace, and that it is shown the same bytes every time.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tierls::core::plan::context::Focus;
use tierls::core::plan::prompt::{planner_prompt, render_conversation};
use tierls::models::scripted::ScriptedModel;
use tierls::refactor::driver::{Driver, PlanRequest, Team};
use tierls::workspace::{Limits, Shared, Workspace};

/// A workspace of `files` Rust files: `src/pricing.rs` defines `total_price`, `callers` files
/// call it, and the rest call each other's helpers, so that the repo map has many ties.
fn pricing_workspace(root: &Path, files: usize, callers: usize) {
    let write = |path: &str, text: String| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "src/pricing.rs",
        "/// The price of every line of the cart.\npub fn total_price(cart: &[u32]) -> u32 {\n    cart.iter().sum()\n}\n".to_owned(),
    );
    for i in 0..files {
        let mut text = format!("pub fn helper_{i}(value: u32) -> u32 {{\n    value + {i}\n}}\n");
        if i < callers {
            text.push_str(&format!(
                "\npub fn checkout_{i}(cart: &[u32]) -> u32 {{\n    let total = total_price(cart);\n    helper_{}(total)\n}}\n",
                (i + 1) % files
            ));
        } else {
            text.push_str(&format!(
                "\npub fn chain_{i}(value: u32) -> u32 {{\n    helper_{}(value) + helper_{}(value)\n}}\n",
                (i * 7 + 3) % files,
                (i * 13 + 5) % files
            ));
        }
        write(&format!("src/part{:02}/module_{i}.rs", i % 16), text);
    }
}

pub(crate) fn scanned(root: &Path, threads: usize) -> Shared {
    let limits = Limits {
        index_bytes: 1 << 20,
        read_bytes: 1 << 20,
    };
    Shared::new(Workspace::scanned(root, limits, threads, &mut |_, _| {}).0)
}

async fn planner_prompt_of(shared: Shared, request: &PlanRequest) -> String {
    let model = std::sync::Arc::new(ScriptedModel::new(1));
    let driver = Driver::new(
        shared,
        Team::Given {
            planner: model.clone(),
            executor: model,
        },
    );
    let input = driver.planner_input(request).await.unwrap();
    render_conversation(&planner_prompt(&input))
}

/// The same request on the same workspace gives the same planner prompt, byte for byte,
/// however the scan happened to order the files (two walker threads race).
#[tokio::test]
async fn the_same_request_gives_the_same_planner_prompt_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    pricing_workspace(&root, 400, 24);
    let request = PlanRequest {
        instruction:
            "add a `currency` parameter to `total_price` and pass \"EUR\" at every call site".into(),
        focus: vec![Focus::Symbol {
            file: "src/pricing.rs".into(),
            path: "total_price".into(),
        }],
        map_tokens: 1024,
        reference_tokens: 2048,
        max_fan_out: 256,
        planner_time: Duration::from_secs(60),
    };
    let mut prompts = BTreeSet::new();
    for run in 0..10 {
        let threads = if run % 2 == 0 { 2 } else { 1 };
        prompts.insert(planner_prompt_of(scanned(&root, threads), &request).await);
    }
    assert_eq!(prompts.len(), 1, "distinct planner prompts over 10 runs");
    let prompt = prompts.into_iter().next().unwrap();
    assert!(prompt.contains("total_price"), "{prompt}");
}

pub(crate) fn pricing_request(max_fan_out: usize, reference_tokens: usize) -> PlanRequest {
    PlanRequest {
        instruction:
            "add a `currency` parameter to `total_price` and pass \"EUR\" at every call site".into(),
        focus: vec![Focus::Symbol {
            file: "src/pricing.rs".into(),
            path: "total_price".into(),
        }],
        map_tokens: 256,
        reference_tokens,
        max_fan_out,
        planner_time: Duration::from_secs(60),
    }
}

pub(crate) const PRICING_PLAN: &str = r#"{"summary": "Add a currency to total_price.", "steps": [
  {"id": 1, "action": "replace_symbol", "file": "src/pricing.rs", "target": "total_price", "instruction": "Add a `currency: &str` parameter after `cart`.", "depends_on": []},
  {"id": 2, "action": "update_references", "file": "src/pricing.rs", "target": "total_price", "instruction": "Pass \"EUR\" as the new currency argument.", "depends_on": [1]}]}"#;

fn checkout(i: usize, files: usize) -> String {
    format!(
        "pub fn checkout_{i}(cart: &[u32]) -> u32 {{\n    let total = total_price(cart, \"EUR\");\n    helper_{}(total)\n}}",
        (i + 1) % files
    )
}

/// The planner writes two steps; the fan-out reaches all 24 call sites (the plan grammar's
/// 8 steps once capped it at 7), each as a job of its own, landed as one change.
#[tokio::test]
async fn one_fan_out_step_reaches_every_call_site() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let (files, callers) = (60, 24);
    pricing_workspace(&root, files, callers);
    let planner = ScriptedModel::new(1).answer("Request:", &[PRICING_PLAN]);
    let mut executor = ScriptedModel::new(2).answer(
        "Rewrite `total_price`",
        &["pub fn total_price(cart: &[u32], currency: &str) -> u32 {\n    let _ = currency;\n    cart.iter().sum()\n}"],
    );
    let answers: Vec<String> = (0..callers).map(|i| checkout(i, files)).collect();
    for (i, answer) in answers.iter().enumerate() {
        executor = executor.answer(&format!("Rewrite `checkout_{i}`"), &[answer]);
    }
    let driver = Driver::new(
        scanned(&root, 2),
        Team::Given {
            planner: std::sync::Arc::new(planner),
            executor: std::sync::Arc::new(executor),
        },
    );
    let (_, planned) = driver
        .plan(&pricing_request(256, 4096), tierls::models::Cancel::new())
        .await
        .unwrap();
    let plan = planned.plan;
    assert!(plan.rejected.is_empty(), "{:?}", plan.rejected);
    let options = tierls::refactor::ExecuteOptions {
        max_attempts: 2,
        max_step_tokens: 512,
        step_time_limit: None,
        concurrency: 2,
    };
    let executed = driver
        .execute(&plan, |_| options, tierls::models::Cancel::new())
        .await
        .unwrap();
    let landing = executed.landing;
    let updated = landing
        .files
        .iter()
        .filter(|file| file.text.contains("total_price(cart, \"EUR\")"))
        .count();
    assert_eq!(
        updated, callers,
        "call sites updated: {:?}",
        landing.refused
    );
    assert!(landing.refused.is_empty(), "{:?}", landing.refused);
    insta::assert_snapshot!(tierls::core::plan::render::render_plan(&plan));
}

/// Checks what the planner is shown about the uses of `total_price` on a small workspace:
/// every site with the symbol it is in, a second definition of the name, and what the
/// budget left out.
async fn check_references(reference_tokens: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    pricing_workspace(&root, 8, 4);
    std::fs::create_dir_all(root.join("tools")).unwrap();
    std::fs::write(
        root.join("tools/report.py"),
        "from pricing import total_price\n\nprint(total_price([1, 2]))\n",
    )
    .unwrap();
    std::fs::write(
        root.join("src/legacy.rs"),
        "pub fn total_price(cart: &[u32]) -> u32 {\n    cart.len() as u32\n}\n",
    )
    .unwrap();
    let prompt =
        planner_prompt_of(scanned(&root, 1), &pricing_request(256, reference_tokens)).await;
    let start = prompt.find("Where `total_price`").unwrap_or(0);
    let end = prompt[start..]
        .find("\nThe most relevant")
        .map_or(prompt.len(), |at| start + at);
    prompt[start..end].to_owned()
}

#[tokio::test]
async fn the_planner_sees_every_use_with_the_symbol_it_is_in() {
    insta::assert_snapshot!(check_references(2048).await);
}

#[tokio::test]
async fn uses_past_the_reference_budget_are_counted() {
    insta::assert_snapshot!(check_references(40).await);
}

/// What [`fan_out::expand`] makes of `raw` on `root`, at most `limit` jobs per fan-out.
fn expansion_report(root: &Path, raw: &str, limit: usize) -> String {
    use tierls::core::plan::{RawPlan, fan_out, validate};
    let shared = scanned(root, 1);
    let raw: RawPlan = serde_json::from_str(raw).unwrap();
    let workspace = shared.lock();
    let mut plan = validate("add a currency", &raw, workspace.index());
    fan_out::expand(&mut plan, workspace.index(), limit);
    let mut report = String::new();
    for fan_out in &plan.fan_outs {
        report.push_str(&format!(
            "fan-out of step {} on `{}`: {} uses in {} files, {} jobs\n",
            fan_out.step,
            fan_out.symbol,
            fan_out.sites,
            fan_out.files,
            fan_out.jobs.len()
        ));
        let mut repeated: std::collections::BTreeMap<&str, usize> = Default::default();
        for (place, reason) in &fan_out.not_done {
            if reason.starts_with("over the") || reason.contains("confirm") {
                *repeated.entry(reason).or_default() += 1;
            } else {
                report.push_str(&format!("  not done: {place}: {reason}\n"));
            }
        }
        for (reason, count) in repeated {
            report.push_str(&format!("  not done, {count} uses: {reason}\n"));
        }
    }
    let dependents: Vec<String> = plan
        .steps
        .iter()
        .filter(|step| step.part_of.is_none())
        .map(|step| format!("step {} after {:?}", step.id, step.depends_on))
        .collect();
    report.push_str(&format!("other steps: {}\n", dependents.join("; ")));
    for rejected in &plan.rejected {
        report.push_str(&format!(
            "rejected: step {}: {}\n",
            rejected.id, rejected.reason
        ));
    }
    report
}

/// The expansion's bad inputs, on the index alone: a limit on the jobs, a use inside the
/// symbol itself, a symbol another step already changes, a name defined twice, a second
/// fan-out on the same symbol, and fan-outs on a symbol that does not exist or that the
/// plan itself writes.
#[test]
fn a_fan_out_is_bounded_and_says_what_it_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    pricing_workspace(&root, 40, 30);
    std::fs::write(
        root.join("src/pricing.rs"),
        "pub fn total_price(cart: &[u32]) -> u32 {\n    if cart.is_empty() { 0 } else { cart[0] + total_price(&cart[1..]) }\n}\n",
    )
    .unwrap();
    let raw = r#"{"summary": "s", "steps": [
      {"id": 1, "action": "replace_symbol", "file": "src/part03/module_3.rs", "target": "checkout_3", "instruction": "Rewrite it by hand.", "depends_on": []},
      {"id": 2, "action": "update_references", "file": "src/pricing.rs", "target": "total_price", "instruction": "Pass \"EUR\".", "depends_on": []},
      {"id": 3, "action": "update_references", "file": "src/pricing.rs", "target": "no_such_function", "instruction": "Pass \"EUR\".", "depends_on": []},
      {"id": 4, "action": "insert_after", "file": "src/pricing.rs", "target": "total_price", "instruction": "Add total_price_eur.", "depends_on": [2]},
      {"id": 5, "action": "update_references", "file": "src/pricing.rs", "target": "total_price_eur", "instruction": "Use it.", "depends_on": [4]},
      {"id": 6, "action": "update_references", "file": "src/pricing.rs", "target": "total_price", "instruction": "Pass \"EUR\" again.", "depends_on": []}]}"#;
    let bounded = expansion_report(&root, raw, 10);
    std::fs::write(
        root.join("src/part00/legacy.rs"),
        "pub fn total_price(cart: &[u32]) -> u32 {\n    cart.len() as u32\n}\n",
    )
    .unwrap();
    let defined_twice = expansion_report(&root, raw, 10);
    insta::assert_snapshot!(format!(
        "at most 10 jobs:\n{bounded}\nwith a second `total_price`:\n{defined_twice}"
    ));
}

/// A revision's fan-out sees the files as the plan left them: a caller the plan added,
/// a file the plan added, and a file the plan removed, over the workspace's index.
#[test]
fn a_revisions_fan_out_finds_the_uses_where_the_plan_left_them() {
    use std::collections::BTreeMap;
    use tierls::core::plan::{RawPlan, fan_out, validate};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    pricing_workspace(&root, 3, 3);
    let shared = scanned(&root, 1);
    let raw: RawPlan = serde_json::from_str(r#"{"summary": "s", "steps": [
      {"id": 1, "action": "update_references", "file": "src/pricing.rs", "target": "total_price", "instruction": "Pass \"EUR\".", "depends_on": []}]}"#).unwrap();
    let texts = BTreeMap::from([
        (
            "src/part00/module_0.rs".to_owned(),
            Some("pub fn checkout_0(cart: &[u32]) -> u32 {\n    total_price(cart)\n}\n\npub fn refund_0(cart: &[u32]) -> u32 {\n    total_price(cart) / 2\n}\n".to_owned()),
        ),
        ("src/part01/module_1.rs".to_owned(), None),
        (
            "src/report.rs".to_owned(),
            Some("pub fn report(cart: &[u32]) -> String {\n    total_price(cart).to_string()\n}\n".to_owned()),
        ),
    ]);
    let overlay = fan_out::Overlay::of(&texts);
    let workspace = shared.lock();
    let jobs = |layered: Option<&fan_out::Overlay>| {
        let mut plan = validate("add a currency", &raw, workspace.index());
        match layered {
            Some(overlay) => fan_out::expand_over(&mut plan, overlay.over(workspace.index()), 10),
            None => fan_out::expand(&mut plan, workspace.index(), 10),
        }
        let fan_out = &plan.fan_outs[0];
        let targets: Vec<String> = plan
            .steps
            .iter()
            .map(|step| format!("{} `{}`", step.file, step.target))
            .collect();
        format!(
            "{} uses in {} files: {}",
            fan_out.sites,
            fan_out.files,
            targets.join(", ")
        )
    };
    assert_eq!(
        jobs(None),
        "3 uses in 3 files: src/part00/module_0.rs `checkout_0`, src/part01/module_1.rs `checkout_1`, src/part02/module_2.rs `checkout_2`"
    );
    assert_eq!(
        jobs(Some(&overlay)),
        "4 uses in 3 files: src/part00/module_0.rs `checkout_0`, src/part00/module_0.rs `refund_0`, src/part02/module_2.rs `checkout_2`, src/report.rs `report`"
    );
}

/// The fan-out's jobs go to llama.cpp like any step: the test model as the executor (two
/// slots) answers each job of a four-caller fan-out; every job is reported with the tokens
/// it decoded, and whatever lands parses (a job whose answer does not is refused, never
/// spliced).
#[tokio::test]
async fn fan_out_jobs_run_on_the_test_model() {
    use tierls::models::embedded::{EmbeddedModel, EmbeddedOptions, test_model_path};
    let _turn = crate::support::one_model_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let callers = 4;
    pricing_workspace(&root, 6, callers);
    let options = EmbeddedOptions {
        n_ctx: 4096,
        slots: 2,
        threads: 2,
        chat_template: Some("gemma".into()),
        ..EmbeddedOptions::default()
    };
    let executor = EmbeddedModel::load(&test_model_path(), &options).expect("the test model loads");
    let planner = ScriptedModel::new(1).answer("Request:", &[PRICING_PLAN]);
    let driver = Driver::new(
        scanned(&root, 1),
        Team::Given {
            planner: std::sync::Arc::new(planner),
            executor: std::sync::Arc::new(executor),
        },
    );
    let (_, planned) = driver
        .plan(&pricing_request(256, 2048), tierls::models::Cancel::new())
        .await
        .unwrap();
    let plan = planned.plan;
    assert_eq!(plan.fan_outs[0].jobs.len(), callers, "{:?}", plan.fan_outs);
    let options = tierls::refactor::ExecuteOptions {
        max_attempts: 1,
        max_step_tokens: 96,
        step_time_limit: Some(Duration::from_secs(120)),
        concurrency: 2,
    };
    let executed = driver
        .execute(&plan, |_| options, tierls::models::Cancel::new())
        .await
        .unwrap();
    let reports = &executed.execution.reports;
    assert_eq!(reports.len(), plan.steps.len(), "{reports:?}");
    for report in reports {
        if report.attempts > 0 {
            assert!(report.generated_tokens > 0, "{report:?}");
        }
    }
    for file in &executed.landing.files {
        let language = tierls::core::index::language::Language::from_path(&file.file).unwrap();
        let errors = tierls::core::plan::anchor::syntax_errors(language, &file.text);
        assert!(
            errors.is_empty(),
            "{}: {errors:?}\n{}",
            file.file,
            file.text
        );
    }
}

/// A tiny crate: `total_price` and two callers, so that `cargo check` can judge a plan.
pub(crate) fn pricing_crate(root: &Path) {
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "Cargo.toml",
        "[package]\nname = \"shop\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write("src/lib.rs", "pub mod checkout;\npub mod pricing;\n");
    write(
        "src/pricing.rs",
        "pub fn total_price(cart: &[u32]) -> u32 {\n    cart.iter().sum()\n}\n",
    );
    write(
        "src/checkout.rs",
        "use crate::pricing::total_price;\n\npub fn checkout_a(cart: &[u32]) -> u32 {\n    total_price(cart)\n}\n\npub fn checkout_b(cart: &[u32]) -> u32 {\n    total_price(cart) + 1\n}\n",
    );
}

/// `plan.check` judges the landed plan with the real `cargo check`, on a scratch copy: a
/// call site the executor left with the old arity is a new failure, named by file, line
/// and the symbol it is in; the same check on the files before the plan passed. Then a
/// workspace that already failed: the failure is reported as the workspace's, not the
/// plan's.
#[tokio::test]
async fn the_check_finds_the_call_site_a_job_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    pricing_crate(&root);
    let planner = ScriptedModel::new(1).answer("Request:", &[PRICING_PLAN]);
    let executor = ScriptedModel::new(1)
        .answer(
            "Rewrite `total_price`",
            &["pub fn total_price(cart: &[u32], currency: &str) -> u32 {\n    let _ = currency;\n    cart.iter().sum()\n}"],
        )
        .answer(
            "Rewrite `checkout_a`",
            &["pub fn checkout_a(cart: &[u32]) -> u32 {\n    total_price(cart, \"EUR\")\n}"],
        )
        // The job on checkout_b answers the code unchanged: the old arity stays.
        .answer(
            "Rewrite `checkout_b`",
            &["pub fn checkout_b(cart: &[u32]) -> u32 {\n    total_price(cart) + 1\n}"],
        );
    let driver = Driver::new(
        scanned(&root, 1),
        Team::Given {
            planner: std::sync::Arc::new(planner),
            executor: std::sync::Arc::new(executor),
        },
    );
    let (_, planned) = driver
        .plan(&pricing_request(256, 2048), tierls::models::Cancel::new())
        .await
        .unwrap();
    let options = tierls::refactor::ExecuteOptions {
        max_attempts: 1,
        max_step_tokens: 256,
        step_time_limit: None,
        concurrency: 1,
    };
    let executed = driver
        .execute(&planned.plan, |_| options, tierls::models::Cancel::new())
        .await
        .unwrap();
    let command = "cargo check --quiet --offline --message-format short";
    let spec = |command: &str| tierls::refactor::check::CheckSpec {
        command: command.to_owned(),
        time_limit: Duration::from_secs(300),
        output_cap: 256 * 1024,
        cancel: None,
        links: Vec::new(),
    };
    let checked = driver
        .check(&executed.landing, spec(command))
        .await
        .unwrap();
    assert!(!checked.holds());
    let found: Vec<(String, usize, Option<String>)> = checked
        .new_failures
        .iter()
        .map(|(failure, symbol)| (failure.file.clone(), failure.line, symbol.clone()))
        .collect();
    assert_eq!(
        found,
        [(
            "src/checkout.rs".to_owned(),
            8,
            Some("checkout_b".to_owned())
        )],
        "{}",
        checked.summary(command).join("\n")
    );
    assert!(
        checked.new_failures[0].0.message.contains("E0061"),
        "{:?}",
        checked.new_failures
    );
    let summary = checked.summary(command);
    assert_eq!(
        summary[0],
        format!(
            "`{command}` failed (exit 101) on the changed workspace ({:.1} s)",
            checked.after.elapsed.as_secs_f64()
        )
    );

    // The workspace was broken before the plan: its failure is not blamed on the steps.
    std::fs::write(
        root.join("src/lib.rs"),
        "pub mod checkout;\npub mod pricing;\npub fn broken() -> u32 { \"no\" }\n",
    )
    .unwrap();
    let checked = driver
        .check(&executed.landing, spec(command))
        .await
        .unwrap();
    assert!(
        checked.summary(command)[0].contains("already failed (exit 101) before any step ran"),
        "{:?}",
        checked.summary(command)
    );
    let blamed: Vec<&str> = checked
        .new_failures
        .iter()
        .map(|(failure, _)| failure.file.as_str())
        .collect();
    assert_eq!(blamed, ["src/checkout.rs"], "{:?}", checked.new_failures);
}

/// A generated file and one over the index's size limit both call `total_price`: the
/// fan-out makes no job for them (the index does not hold them) and lists each, so the
/// user knows what is left to regenerate or change by hand.
#[tokio::test]
async fn uses_in_unindexed_files_are_listed_not_touched() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    pricing_workspace(&root, 4, 2);
    std::fs::create_dir_all(root.join("src/gen")).unwrap();
    std::fs::write(
        root.join("src/gen/api.rs"),
        "// @generated by protoc. Do not edit.\npub fn generated_total(cart: &[u32]) -> u32 {\n    total_price(cart)\n}\n",
    )
    .unwrap();
    let big = format!(
        "pub fn big_total(cart: &[u32]) -> u32 {{\n    total_price(cart)\n}}\n{}",
        "// padding\n".repeat(2000)
    );
    std::fs::write(root.join("src/big.rs"), big).unwrap();
    // A name that only contains the symbol's name is not a use.
    std::fs::write(
        root.join("src/gen/other.rs"),
        "// @generated\npub fn total_price_cents() -> u32 { 0 }\n",
    )
    .unwrap();
    let limits = Limits {
        index_bytes: 16 * 1024,
        read_bytes: 1 << 20,
    };
    let shared = Shared::new(Workspace::scanned(&root, limits, 1, &mut |_, _| {}).0);
    let model = std::sync::Arc::new(ScriptedModel::new(1).answer("Request:", &[PRICING_PLAN]));
    let driver = Driver::new(
        shared,
        Team::Given {
            planner: model.clone(),
            executor: model,
        },
    );
    let (_, planned) = driver
        .plan(&pricing_request(256, 2048), tierls::models::Cancel::new())
        .await
        .unwrap();
    let fan_out = &planned.plan.fan_outs[0];
    assert_eq!(fan_out.jobs.len(), 2, "{fan_out:?}");
    let listed: Vec<&(String, String)> = fan_out
        .not_done
        .iter()
        .filter(|(place, _)| !place.contains("(top level)"))
        .collect();
    assert_eq!(
        listed,
        [
            &(
                "src/big.rs".to_owned(),
                "a file tierls does not index (too large) uses the name: change it by hand"
                    .to_owned()
            ),
            &(
                "src/gen/api.rs".to_owned(),
                "a generated file uses the name: it is never changed; regenerate it".to_owned()
            ),
        ],
        "{fan_out:?}"
    );
    let files: Vec<&str> = planned.plan.files();
    assert!(!files.contains(&"src/gen/api.rs") && !files.contains(&"src/big.rs"));
}
