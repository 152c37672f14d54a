//! Running a plan's steps on the executor tier.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::config::Tier;
use crate::core::generation::{GenerateRequest, Prompt, StopReason};
use crate::core::index::language::Language;
use crate::core::plan::anchor::{
    MAX_EDIT_FILE_BYTES, SpliceError, StepEdit, clean_answer, locate, splice,
};
use crate::core::plan::prompt::{ExecutorInput, executor_prompt};
use crate::core::plan::{Action, Plan, Step};
use crate::core::route::{PerTier, Route, StepFacts, TierStates, Work, is_rename};
use crate::models::{Cancel, generate};
use crate::sync::lock;

use super::team::StepTeam;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecuteOptions {
    /// Answers asked of the executor per step, the first included.
    pub max_attempts: u32,
    pub max_step_tokens: u32,
    pub step_time_limit: Option<Duration>,
    /// Steps in flight at once: the executor's slots.
    pub concurrency: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    Done,
    Failed(String),
    /// Not run, because a step it depends on did not succeed.
    Skipped(String),
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    Started { step: u32, attempt: u32 },
    Finished { step: u32, outcome: StepOutcome },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReport {
    pub step: u32,
    pub outcome: StepOutcome,
    /// Answers asked of the models.
    pub attempts: u32,
    pub generated_tokens: u32,
    /// The answers each tier gave.
    pub by_tier: PerTier,
}

impl StepReport {
    /// The step landed with the executor's first answer.
    pub fn first_try(&self) -> bool {
        self.outcome == StepOutcome::Done && self.attempts <= 1
    }
}

#[derive(Clone, Debug, Default)]
pub struct Execution {
    /// One per step, in plan order.
    pub reports: Vec<StepReport>,
    /// The steps' results in the order they were spliced: land them in this order.
    pub edits: Vec<StepEdit>,
    pub cancelled: bool,
}

impl Execution {
    pub fn generated_tokens(&self) -> u32 {
        self.reports
            .iter()
            .map(|report| report.generated_tokens)
            .sum()
    }
}

struct Context {
    plan: Plan,
    team: Arc<StepTeam>,
    /// Each file as the plan has changed it so far; `None`: it does not exist.
    working: Mutex<BTreeMap<String, Option<String>>>,
    edits: Mutex<Vec<StepEdit>>,
    definitions: BTreeMap<u32, Vec<String>>,
    options: ExecuteOptions,
    cancel: Cancel,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
}

impl Context {
    fn working(&self) -> MutexGuard<'_, BTreeMap<String, Option<String>>> {
        lock(&self.working)
    }
}

/// Runs `plan`'s steps on `files` (each file the plan touches, as it is now; `None`: it
/// does not exist). `definitions` are the signatures each step's code uses.
pub async fn execute(
    plan: Plan,
    team: Arc<StepTeam>,
    files: BTreeMap<String, Option<String>>,
    definitions: BTreeMap<u32, Vec<String>>,
    options: ExecuteOptions,
    cancel: Cancel,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Execution {
    let context = Arc::new(Context {
        plan,
        team,
        working: Mutex::new(files),
        edits: Mutex::default(),
        definitions,
        options,
        cancel: cancel.clone(),
        progress,
    });
    let mut waiting: Vec<Step> = context.plan.steps.clone();
    let mut reports: HashMap<u32, StepReport> = HashMap::new();
    let mut free_slots: Vec<usize> = (0..options.concurrency.max(1)).rev().collect();
    let mut running = JoinSet::new();
    loop {
        // Start every step whose dependencies are done, while slots are free.
        let mut index = 0;
        while index < waiting.len() {
            let step = &waiting[index];
            let failed_dependency = step.depends_on.iter().find(|dep| {
                reports
                    .get(dep)
                    .is_some_and(|report| report.outcome != StepOutcome::Done)
            });
            let ready = step.depends_on.iter().all(|dep| reports.contains_key(dep));
            if cancel.is_cancelled() {
                let step = waiting.remove(index);
                finish(
                    &context,
                    &mut reports,
                    report(&step, StepOutcome::Cancelled, 0, 0),
                );
            } else if let Some(dep) = failed_dependency {
                let reason = format!("step {dep} did not succeed");
                let step = waiting.remove(index);
                finish(
                    &context,
                    &mut reports,
                    report(&step, StepOutcome::Skipped(reason), 0, 0),
                );
            } else if ready && let Some(slot) = free_slots.pop() {
                let step = waiting.remove(index);
                let context = context.clone();
                running.spawn(async move { (slot, run_step(&context, &step, slot).await) });
            } else {
                index += 1;
            }
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        match joined {
            Ok((slot, step_report)) => {
                free_slots.push(slot);
                finish(&context, &mut reports, step_report);
            }
            Err(err) => {
                // A step task only fails by panicking; the plan cannot be trusted after it.
                tracing::error!("a plan step panicked: {err}");
                cancel.cancel();
            }
        }
        if waiting.is_empty() && running.is_empty() {
            break;
        }
    }
    for step in &waiting {
        reports.insert(step.id, report(step, StepOutcome::Cancelled, 0, 0));
    }
    let edits = lock(&context.edits).clone();
    Execution {
        reports: context
            .plan
            .steps
            .iter()
            .filter_map(|step| reports.remove(&step.id))
            .collect(),
        edits,
        cancelled: cancel.is_cancelled(),
    }
}

fn report(step: &Step, outcome: StepOutcome, attempts: u32, generated_tokens: u32) -> StepReport {
    StepReport {
        step: step.id,
        outcome,
        attempts,
        generated_tokens,
        by_tier: PerTier::default(),
    }
}

fn finish(context: &Context, reports: &mut HashMap<u32, StepReport>, report: StepReport) {
    (context.progress)(Progress::Finished {
        step: report.step,
        outcome: report.outcome.clone(),
    });
    reports.insert(report.step, report);
}

/// What a step reads before asking the executor: its anchor's exact source and the same as
/// the executor is shown it, or why the step cannot run.
fn read_step(context: &Context, step: &Step) -> Result<(String, String), String> {
    let working = context.working();
    let current = working.get(&step.file).cloned().flatten();
    match (step.action, current) {
        (Action::UpdateReferences, _) => Err(format!(
            "the fan-out on `{}` runs as the jobs it expands into, and was never expanded",
            step.target
        )),
        (Action::CreateFile, None) => Ok((String::new(), String::new())),
        (Action::CreateFile, Some(_)) => Err(format!("{} already exists", step.file)),
        (_, None) => Err(format!("{} does not exist", step.file)),
        (Action::EditFile, Some(text)) if text.len() > MAX_EDIT_FILE_BYTES => Err(format!(
            "{} is {} bytes, over the {MAX_EDIT_FILE_BYTES} an edit_file step may rewrite",
            step.file,
            text.len()
        )),
        (Action::EditFile, Some(text)) => Ok((text.clone(), text)),
        (_, Some(text)) => {
            let language = Language::from_path(&step.file)
                .ok_or_else(|| format!("{} is not in a language tierls parses", step.file))?;
            locate(language, &text, &step.target)
                .map(|located| (located.source(&text).to_owned(), located.display(&text)))
                .ok_or_else(|| format!("`{}` is no longer in {}", step.target, step.file))
        }
    }
}

async fn run_step(context: &Context, step: &Step, slot: usize) -> StepReport {
    let mut run = StepRun {
        answered: PerTier::default(),
        failed: PerTier::default(),
        states: context.team.states,
    };
    let mut report = run_step_routed(context, step, slot, &mut run).await;
    report.by_tier = run.answered;
    report
}

/// What one step's answers have come to so far.
struct StepRun {
    answered: PerTier,
    failed: PerTier,
    /// The tiers as the rule sees them for this step: a tier whose model failed to answer
    /// at all is down for the rest of it.
    states: TierStates,
}

async fn run_step_routed(
    context: &Context,
    step: &Step,
    slot: usize,
    run: &mut StepRun,
) -> StepReport {
    let language = Language::from_path(&step.file).map_or("", Language::name);
    let mut refusals: Vec<(String, String)> = Vec::new();
    let mut generated_tokens = 0;
    let mut attempts = 0;
    let mut last_reason = String::new();
    // The last failure was the model's, not its answer's: reported as it was.
    let mut model_failed = false;
    let team = &context.team;
    // Every answer goes through the rule; the loop also ends at a bound of its own.
    let most_answers = context.options.max_attempts.max(1) + 2;
    while attempts < most_answers {
        if context.cancel.is_cancelled() {
            return report(step, StepOutcome::Cancelled, attempts, generated_tokens);
        }
        let (read, shown) = match read_step(context, step) {
            Ok(read) => read,
            Err(reason) => {
                return report(
                    step,
                    StepOutcome::Failed(reason),
                    attempts,
                    generated_tokens,
                );
            }
        };
        let code = if step.action.needs_executor() {
            let facts = StepFacts {
                action: step.action,
                lines: read.lines().count(),
                fan_out_job: step.part_of.is_some(),
                rename: is_rename(&step.instruction),
                failed: run.failed,
                max_attempts: context.options.max_attempts,
            };
            let decision = team.decide(&Work::Step(facts), &run.states);
            let work = format!("step {} (answer {})", step.id, attempts + 1);
            let tier = match decision.route {
                Route::Tier(tier) => tier,
                _ => {
                    let reason = match (model_failed, attempts) {
                        (true, _) => last_reason,
                        (false, 0) => decision.reason.clone(),
                        (false, _) => format!("after {attempts} answers: {last_reason}"),
                    };
                    return report(
                        step,
                        StepOutcome::Failed(reason),
                        attempts,
                        generated_tokens,
                    );
                }
            };
            // The usual case (the executor's first answer) is kept quiet; anything the
            // rule did on purpose is logged.
            if tier == Tier::Executor && attempts == 0 {
                team.decisions.record_quietly(work, &decision);
            } else {
                team.decisions.record(work, &decision);
            }
            let model = match team.model(tier).await {
                Ok(model) => model,
                Err(err) => {
                    tracing::info!(step = step.id, "the {tier} tier could not load: {err}");
                    last_reason = format!("the {tier}: {err}");
                    model_failed = true;
                    mark_down(run, tier);
                    continue;
                }
            };
            attempts += 1;
            (context.progress)(Progress::Started {
                step: step.id,
                attempt: attempts,
            });
            let no_definitions = Vec::new();
            let definitions = context.definitions.get(&step.id).unwrap_or(&no_definitions);
            let prompt = executor_prompt(&ExecutorInput {
                plan: &context.plan,
                step,
                language,
                source: &shown,
                definitions,
                attempts: &refusals,
            });
            let request = GenerateRequest {
                prompt: Prompt::Chat(prompt),
                max_tokens: context.options.max_step_tokens,
                stop: vec!["```".to_owned()],
                time_limit: context.options.step_time_limit,
                grammar: None,
                heal: false,
            };
            let slot = slot % model.info().slots.max(1);
            let generation =
                match generate(model.as_ref(), slot, request, context.cancel.clone()).await {
                    Ok(generation) => generation,
                    Err(err) => {
                        tracing::info!(step = step.id, "the {tier} tier could not answer: {err}");
                        last_reason = format!("the {tier}: {err}");
                        model_failed = true;
                        run.failed.add(tier);
                        mark_down(run, tier);
                        continue;
                    }
                };
            model_failed = false;
            run.answered.add(tier);
            generated_tokens += generation.usage.generated_tokens;
            if generation.stop_reason == StopReason::Cancelled {
                return report(step, StepOutcome::Cancelled, attempts, generated_tokens);
            }
            let truncated = matches!(
                generation.stop_reason,
                StopReason::MaxTokens | StopReason::TimeLimit
            );
            match clean_answer(&generation.text, truncated) {
                Ok(code) => (code, Some(tier)),
                Err(problem) => {
                    last_reason = problem.to_string();
                    refusals.push((generation.text, last_reason.clone()));
                    run.failed.add(tier);
                    continue;
                }
            }
        } else {
            attempts += 1;
            (String::new(), None)
        };
        let (code, tier) = code;
        let edit = StepEdit {
            step: step.id,
            file: step.file.clone(),
            action: step.action,
            target: step.target.clone(),
            read,
            code,
        };
        // Splice under the lock, so that two steps on one file never both splice onto the
        // same text.
        let mut working = context.working();
        let current = working.get(&step.file).cloned().flatten();
        match splice(current.as_deref(), &edit) {
            Ok(new) => {
                working.insert(step.file.clone(), Some(new));
                lock(&context.edits).push(edit);
                return report(step, StepOutcome::Done, attempts, generated_tokens);
            }
            Err(err @ (SpliceError::SymbolChanged { .. } | SpliceError::FileChanged { .. })) => {
                // Another step changed the target while this one ran: read it again. The
                // model did nothing wrong, so its answer is not fed back; it still counts
                // against the step's answers, which keeps the loop bounded.
                last_reason = err.to_string();
                if let Some(tier) = tier {
                    run.failed.add(tier);
                }
            }
            Err(err @ SpliceError::SyntaxErrors { .. }) => {
                last_reason = err.to_string();
                refusals.push((edit.code, last_reason.clone()));
                if let Some(tier) = tier {
                    run.failed.add(tier);
                }
            }
            Err(err) => {
                return report(
                    step,
                    StepOutcome::Failed(err.to_string()),
                    attempts,
                    generated_tokens,
                );
            }
        }
    }
    let reason = format!("after {attempts} answers: {last_reason}");
    report(
        step,
        StepOutcome::Failed(reason),
        attempts,
        generated_tokens,
    )
}

/// `tier` could not answer at all (its node is down, its model did not load): the rest of
/// the step goes elsewhere.
fn mark_down(run: &mut StepRun, tier: Tier) {
    match tier {
        Tier::Fast => run.states.fast.usable = false,
        Tier::Executor => run.states.executor.usable = false,
        Tier::Planner => run.states.planner.usable = false,
    }
}
