//! `tierls route "instruction" --focus PATH[:SYMBOL]`: the routing rule's decision for a
//! refactor and for the answers of its steps, with the reasons, without running a model. For
//! people tuning the `[routing]` table.

use std::path::PathBuf;
use std::process::ExitCode;

use super::index::scan_configured;
use super::output;
use super::plan::{parse_focus, refactor_workspace};
use crate::config::{Config, Tier};
use crate::core::plan::Action;
use crate::core::route::{
    PerTier, RefactorFacts, Route, StepFacts, TierState, TierStates, Work, decide, is_rename,
    plural,
};
use crate::refactor::driver::{Driver, PlanRequest, Team};
use crate::workspace::Shared;

pub struct RouteArgs {
    pub instruction: String,
    pub workspace: Option<PathBuf>,
    pub focus: Vec<String>,
}

pub fn run(args: RouteArgs) -> ExitCode {
    let Some(runtime) = super::runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(route(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            output::error(&message);
            ExitCode::from(2)
        }
    }
}

/// Each tier as the configuration names it: configured tiers are taken to be up (nothing
/// is loaded or probed here; `tierls status` probes the nodes).
pub fn configured_states(config: &Config) -> TierStates {
    let state = |tier: Tier| {
        let configured = config.tiers.get(tier).model.is_some()
            || config.nodes.iter().any(|node| node.serves(tier));
        match configured {
            true => TierState::READY,
            false => TierState::ABSENT,
        }
    };
    TierStates {
        fast: state(Tier::Fast),
        executor: state(Tier::Executor),
        planner: state(Tier::Planner),
    }
}

async fn route(args: RouteArgs) -> Result<(), String> {
    let (root, config) = refactor_workspace(args.workspace.clone(), &args.instruction)?;
    if args.focus.is_empty() {
        return Err("give what the refactor is about: --focus PATH[:SYMBOL]".into());
    }
    let scanned = scan_configured(&root, &config);
    let states = configured_states(&config);
    let driver = Driver::new(
        Shared::new(scanned),
        Team::Routed {
            fast: None,
            executor: None,
            planner: None,
        },
    );
    let request = PlanRequest {
        instruction: args.instruction.clone(),
        focus: args.focus.iter().map(|text| parse_focus(text)).collect(),
        map_tokens: config.plan.map_tokens as usize,
        reference_tokens: config.plan.reference_tokens as usize,
        max_fan_out: config.plan.max_fan_out as usize,
        planner_time: std::time::Duration::from_secs(1),
    };
    let input = driver
        .planner_input(&request)
        .await
        .map_err(|err| err.to_string())?;
    let rules = &config.routing;
    let facts = RefactorFacts::of(&input);
    let decision = decide(&Work::Refactor(facts.clone()), &states, rules);
    let tiers: Vec<String> = Tier::ALL
        .iter()
        .map(|tier| {
            let state = states.get(*tier);
            format!(
                "{tier}: {}",
                if state.configured {
                    "configured"
                } else {
                    "not configured"
                }
            )
        })
        .collect();
    output::line(&format!("tiers: {}", tiers.join(", ")));
    output::line(&format!(
        "focus: {} {}, {} {}, {} {}{}",
        facts.symbols,
        plural(facts.symbols, "symbol"),
        facts.lines,
        plural(facts.lines, "line"),
        facts.references,
        plural(facts.references, "use"),
        facts
            .reaches_beyond
            .as_ref()
            .map(|words| format!("; the instruction says {words}"))
            .unwrap_or_default()
    ));
    output::line(&format!("refactor: {decision}"));
    let Route::OneStep(_) = decision.route else {
        output::line("  the steps are routed once the plan names them");
        return Ok(());
    };
    let target = &input.targets[0];
    let mut facts = StepFacts {
        action: Action::ReplaceSymbol,
        lines: target.source.lines().count(),
        fan_out_job: false,
        rename: is_rename(&args.instruction),
        failed: PerTier::default(),
        max_attempts: config.plan.max_attempts,
    };
    output::line(&format!(
        "step 1, replace_symbol `{}` in {}:",
        target.path, target.file
    ));
    // Each answer in turn, as if every one failed: where the step climbs, and where it stops.
    for answer in 1..=config.plan.max_attempts + 2 {
        let decision = decide(&Work::Step(facts.clone()), &states, rules);
        output::line(&format!("  answer {answer}: {decision}"));
        match decision.route.tier() {
            Some(tier) => facts.failed.add(tier),
            None => break,
        }
    }
    Ok(())
}
