//! Routing: which tier does each piece of model work, and why. The rule is a pure function;
//! its table is data here, and the driver's use of it is tested with scripted tiers.

use tierls::config::Tier;
use tierls::core::plan::Action;
use tierls::core::route::{
    HoverFacts, PerTier, RefactorFacts, Rules, StepFacts, TierState, TierStates, Work, decide,
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

fn step(action: Action, lines: usize, fan_out_job: bool, failed: PerTier) -> Work {
    Work::Step(StepFacts {
        action,
        lines,
        fan_out_job,
        rename: false,
        failed,
        max_attempts: 3,
    })
}

fn failed(fast: u32, executor: u32, planner: u32) -> PerTier {
    PerTier {
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

// ---------------------------------------------------------------------------------------
// The rule at work in the plan driver, with scripted tiers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tierls::core::generation::GenerateRequest;
use tierls::core::plan::context::Focus;
use tierls::core::plan::render::render_plan;
use tierls::models::scripted::ScriptedModel;
use tierls::models::{Cancel, GenerationEvent, Model, ModelError, ModelInfo};
use tierls::refactor::ExecuteOptions;
use tierls::refactor::driver::{Driver, PlanRequest, Team};
use tierls::route_log::DecisionLog;
use tierls::workspace::{Limits, Shared};
use tokio::sync::mpsc::UnboundedSender;

const PLAN: &str = r#"{"summary": "Use PI.", "steps": [
    {"id": 1, "action": "replace_symbol", "file": "src/geometry.rs", "target": "Circle::area", "instruction": "Use std::f64::consts::PI.", "depends_on": []}]}"#;
const NEW_AREA: &str = "/// The area of the circle.\npub fn area(&self) -> f64 {\n    std::f64::consts::PI * self.radius * self.radius\n}";
const BROKEN: &str = "pub fn area(&self) -> f64 {\n    std::f64::consts::PI * (self.radius\n}";

/// A node that is down: every request fails at once.
struct DownNode(ModelInfo);

impl Model for DownNode {
    fn info(&self) -> &ModelInfo {
        &self.0
    }

    fn submit(
        &self,
        _slot: usize,
        _request: GenerateRequest,
        _cancel: Cancel,
        events: UnboundedSender<GenerationEvent>,
    ) {
        let _ = events.send(GenerationEvent::Done(Err(ModelError::Node {
            node: "fast-box".into(),
            reason: "connection refused".into(),
        })));
    }
}

fn down() -> Arc<dyn Model> {
    Arc::new(DownNode(ScriptedModel::new(1).info().clone()))
}

struct Routed {
    _dir: tempfile::TempDir,
    driver: Driver,
    decisions: Arc<DecisionLog>,
}

/// The Rust plan fixture, indexed, with a driver over the given tiers.
fn routed(
    fast: Option<Arc<dyn Model>>,
    executor: Option<Arc<dyn Model>>,
    planner: Option<Arc<dyn Model>>,
    rules: Rules,
) -> Routed {
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plans/rust");
    crate::support::copy_tree(&source, dir.path());
    let limits = Limits {
        index_bytes: 1 << 20,
        read_bytes: 1 << 20,
    };
    let root = dir.path().canonicalize().unwrap();
    let (scanned, _) = tierls::workspace::Workspace::scanned(&root, limits, 1, &mut |_, _| {});
    let decisions = Arc::new(DecisionLog::default());
    let team = Team::Routed {
        fast,
        executor,
        planner,
    };
    let driver = Driver::new(Shared::new(scanned), team).routing(rules, decisions.clone());
    Routed {
        _dir: dir,
        driver,
        decisions,
    }
}

fn request(instruction: &str, focus: Focus) -> PlanRequest {
    PlanRequest {
        instruction: instruction.into(),
        focus: vec![focus],
        map_tokens: 512,
        reference_tokens: 1024,
        max_fan_out: 256,
        planner_time: Duration::from_secs(60),
    }
}

fn area() -> Focus {
    Focus::Symbol {
        file: "src/geometry.rs".into(),
        path: "Circle::area".into(),
    }
}

fn options() -> ExecuteOptions {
    ExecuteOptions {
        max_attempts: 3,
        max_step_tokens: 256,
        step_time_limit: None,
        concurrency: 1,
    }
}

/// Plans and runs `instruction` on `Circle::area`, and shows the plan, each step's outcome
/// and answers per tier, and every decision kept.
async fn check_routed(routed: &Routed, instruction: &str) -> String {
    let (_, planned) = routed
        .driver
        .plan(&request(instruction, area()), Cancel::new())
        .await
        .unwrap();
    let executed = routed
        .driver
        .execute(&planned.plan, |_| options(), Cancel::new())
        .await
        .unwrap();
    let mut out = render_plan(&planned.plan);
    out.push_str(&format!(
        "\nplanner tokens: {}\n",
        planned.usage.generated_tokens
    ));
    for report in &executed.execution.reports {
        let by = report.by_tier;
        out.push_str(&format!(
            "step {}: {:?}; answers: fast {}, executor {}, planner {}\n",
            report.step, report.outcome, by.fast, by.executor, by.planner
        ));
    }
    out.push_str("\ndecisions:\n");
    for recorded in routed.decisions.recent() {
        out.push_str(&format!("- {}: {}\n", recorded.work, recorded.decision));
    }
    out
}

#[tokio::test]
async fn a_one_symbol_refactor_skips_the_planner_and_a_wide_one_does_not() {
    let planner = Arc::new(ScriptedModel::new(1).answer("Request:", &[PLAN]));
    let executor = Arc::new(ScriptedModel::new(1).answer("Your step: 1.", &[NEW_AREA]));
    let one = routed(
        None,
        Some(executor.clone()),
        Some(planner.clone()),
        Rules::default(),
    );
    let skipped = check_routed(&one, "use std::f64::consts::PI").await;
    assert!(planner.prompts().is_empty(), "the planner was asked");
    insta::assert_snapshot!("one_symbol_skips_the_planner", skipped);
    // The same team, asked for every call site: the planner plans.
    let wide = routed(
        None,
        Some(executor),
        Some(planner.clone()),
        Rules::default(),
    );
    let planned = check_routed(&wide, "use PI and update every call site").await;
    assert_eq!(planner.prompts().len(), 1);
    insta::assert_snapshot!("a_wide_refactor_is_planned", planned);
}

#[tokio::test]
async fn a_step_that_keeps_failing_climbs_to_the_planner_once() {
    // The executor answers broken code every time; the planner's tier fixes it.
    let executor = Arc::new(ScriptedModel::new(1).answer("Your step: 1.", &[BROKEN]));
    let planner = Arc::new(
        ScriptedModel::new(1)
            .answer("Request:", &[PLAN])
            .answer("Your step: 1.", &[NEW_AREA]),
    );
    let team = routed(
        None,
        Some(executor.clone()),
        Some(planner),
        Rules::default(),
    );
    let escalated = check_routed(&team, "use std::f64::consts::PI").await;
    insta::assert_snapshot!("escalated_once", escalated);

    // The planner's tier fails too: the step fails after one answer there, never back down.
    let failing_planner = Arc::new(ScriptedModel::new(1).answer("Your step: 1.", &[BROKEN]));
    let team = routed(
        None,
        Some(executor.clone()),
        Some(failing_planner.clone()),
        Rules::default(),
    );
    let failed = check_routed(&team, "use std::f64::consts::PI").await;
    assert_eq!(
        failing_planner.prompts().len(),
        1,
        "one answer on the planner"
    );
    insta::assert_snapshot!("escalated_and_failed", failed);

    // No planner tier: the executor gets every answer it has, then the step fails.
    let team = routed(None, Some(executor), None, Rules::default());
    let no_planner = check_routed(&team, "use std::f64::consts::PI").await;
    insta::assert_snapshot!("no_planner_to_escalate_to", no_planner);
}

#[tokio::test]
async fn a_mechanical_step_goes_to_the_fast_tier_and_up_when_it_fails_or_is_down() {
    let instruction = "rename the local `radius` to `r` inside it";
    let executor = || Arc::new(ScriptedModel::new(1).answer("Your step: 1.", &[NEW_AREA]));
    // The fast tier answers: the executor is never asked.
    let fast = Arc::new(ScriptedModel::new(1).answer("Your step: 1.", &[NEW_AREA]));
    let exec = executor();
    let team = routed(
        Some(fast.clone()),
        Some(exec.clone()),
        None,
        Rules::default(),
    );
    let on_fast = check_routed(&team, instruction).await;
    assert!(exec.prompts().is_empty(), "the executor was asked");
    insta::assert_snapshot!("mechanical_on_fast", on_fast);

    // The fast tier's answer does not parse: up to the executor.
    let fast = Arc::new(ScriptedModel::new(1).answer("Your step: 1.", &[BROKEN]));
    let team = routed(Some(fast), Some(executor()), None, Rules::default());
    insta::assert_snapshot!(
        "mechanical_fast_failed",
        check_routed(&team, instruction).await
    );

    // The fast tier's node is down: the executor, with the reason.
    let team = routed(Some(down()), Some(executor()), None, Rules::default());
    let went_up = check_routed(&team, instruction).await;
    assert!(went_up.contains("executor"), "{went_up}");
    insta::assert_snapshot!("mechanical_fast_down", went_up);

    // routing.mechanical_tier = "executor": the fast tier is never asked.
    let fast = Arc::new(ScriptedModel::new(1).answer("Your step: 1.", &[NEW_AREA]));
    let rules = Rules {
        mechanical_tier: Tier::Executor,
        ..Rules::default()
    };
    let team = routed(Some(fast.clone()), Some(executor()), None, rules);
    check_routed(&team, instruction).await;
    assert!(fast.prompts().is_empty(), "the fast tier was asked");
}

#[tokio::test]
async fn no_executor_and_no_planner_is_a_clear_error_and_asks_no_model() {
    let fast = Arc::new(ScriptedModel::new(1));
    let team = routed(Some(fast.clone()), None, None, Rules::default());
    let result = team
        .driver
        .plan(&request("use PI", area()), Cancel::new())
        .await;
    let Err(err) = result else {
        panic!("a plan without executor nor planner");
    };
    insta::assert_snapshot!("no_tier_can_plan", err.to_string());
    assert!(fast.prompts().is_empty());
}

// ---------------------------------------------------------------------------------------
// Hovers through the server: a large symbol may be explained by the executor.

/// A model whose slots are all taken (it answers, but the rule must not pick it).
struct Busy(Arc<ScriptedModel>);

impl Model for Busy {
    fn info(&self) -> &ModelInfo {
        self.0.info()
    }

    fn availability(&self) -> tierls::models::Availability {
        tierls::models::Availability {
            usable: true,
            idle: false,
        }
    }

    fn submit(
        &self,
        slot: usize,
        request: GenerateRequest,
        cancel: Cancel,
        events: UnboundedSender<GenerationEvent>,
    ) {
        self.0.submit(slot, request, cancel, events);
    }
}

/// `big::tabulate` has 70 lines (over `routing.hover_executor_lines`); `big::twice` has 3.
fn hover_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut big =
        String::from("pub fn tabulate(n: u32) -> Vec<u32> {\n    let mut out = Vec::new();\n");
    for line in 0..66 {
        big.push_str(&format!("    out.push(n + {line});\n"));
    }
    big.push_str("    out\n}\n\npub fn twice(x: u32) -> u32 {\n    x * 2\n}\n");
    let main =
        "mod big;\nfn main() {\n    let t = big::tabulate(3);\n    let d = big::twice(2);\n}\n";
    vec![
        ("src/big.rs", big.into_bytes()),
        ("src/main.rs", main.into()),
    ]
}

/// The hover's explanation line for `line:character` of `src/main.rs`.
async fn explanation(server: &mut crate::support::TestServer, line: u32, character: u32) -> String {
    let uri = server.uri("src/main.rs");
    let response = server
        .client
        .request(
            "textDocument/hover",
            serde_json::json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": character } }),
        )
        .await
        .unwrap();
    let text = response["result"]["contents"]["value"]
        .as_str()
        .unwrap_or_default();
    text.rsplit("---\n").next().unwrap_or_default().to_owned()
}

async fn hover_server(
    executor: Arc<dyn Model>,
    fast: Arc<ScriptedModel>,
) -> crate::support::TestServer {
    let files = hover_files();
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(path, text)| (*path, text.as_slice()))
        .collect();
    let models: Vec<(Tier, Arc<dyn Model>)> = vec![(Tier::Fast, fast), (Tier::Executor, executor)];
    let mut server = crate::support::TestServer::start_with_models(&files, models);
    let options = serde_json::json!({ "index": { "enabled": true }, "completion": { "hover_budget_ms": 20000 } });
    server.initialize_with(&["utf-16"], options).await;
    crate::support::wait_for_log(&mut server, "indexed 2 files").await;
    let main = String::from_utf8(hover_files()[1].1.clone()).unwrap();
    server.open("src/main.rs", &main).await;
    server
}

fn explainer(answer: &str) -> Arc<ScriptedModel> {
    Arc::new(ScriptedModel::new(1).answer("In one sentence", &[answer]))
}

#[tokio::test]
async fn a_hover_on_a_large_symbol_is_explained_by_an_idle_executor() {
    let (fast, executor) = (explainer(" is quick."), explainer(" is deliberate."));
    let mut server = hover_server(executor.clone(), fast.clone()).await;
    let mut out = String::new();
    out.push_str(&format!(
        "tabulate (70 lines): {}\n",
        explanation(&mut server, 2, 18).await
    ));
    out.push_str(&format!(
        "twice (3 lines): {}\n",
        explanation(&mut server, 3, 18).await
    ));
    assert_eq!((executor.prompts().len(), fast.prompts().len()), (1, 1));
    let status = server
        .client
        .request("tierls/status", serde_json::json!(null))
        .await
        .unwrap();
    for recorded in status["result"]["routing"].as_array().unwrap() {
        out.push_str(&format!(
            "status: {}: {}\n",
            recorded["work"], recorded["decision"]
        ));
    }
    insta::assert_snapshot!("hover_on_the_executor", out);
    assert!(server.finish().await.clean);

    // The executor's slots are taken: the fast tier explains it, as for any hover.
    let (fast, executor) = (explainer(" is quick."), explainer(" is deliberate."));
    let mut server = hover_server(Arc::new(Busy(executor.clone())), fast.clone()).await;
    let busy = explanation(&mut server, 2, 18).await;
    assert_eq!(busy, "*fast tier:* is quick.");
    assert!(executor.prompts().is_empty(), "the busy executor was asked");
    assert!(server.finish().await.clean);
}
