//! How a plan command runs in the editor: what it needs of the server ([`PlanContext`]),
//! and one run of the plan driver shown as `$/progress`, cancellable by the user, its
//! failures ending the progress with the message the request answers ([`PlanRun`]).

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tower_lsp::Client;
use tower_lsp::jsonrpc::{Error, Result};
use tower_lsp::lsp_types::{MessageType, NumberOrString};

use super::convert::ClientFeatures;
use super::plan_reports::outcome_text;
use super::progress::{CancelOnDrop, Reporter, WorkProgress};
use super::request_failed;
use super::session::Session;
use crate::config::PlanConfig;
use crate::core::plan::Plan;
use crate::core::plan::repair::RoundKind;
use crate::models::Cancel;
use crate::models::tiers::TierSet;
use crate::refactor::driver::{Driver, DriverError, Executed, PlanRequest, Stage, Team};
use crate::refactor::rounds::RoundsRequest;
use crate::refactor::{ExecuteOptions, PlanError, Planned, Progress};
use crate::sync::lock;
use crate::workspace;

/// What a plan command needs of the server.
pub struct PlanContext {
    pub client: Client,
    pub session: Arc<Mutex<Session>>,
    pub workspace: workspace::Shared,
    pub tiers: Option<Arc<TierSet>>,
    pub features: ClientFeatures,
}

impl PlanContext {
    pub(super) fn session(&self) -> MutexGuard<'_, Session> {
        lock(&self.session)
    }

    pub(super) fn tiers(&self) -> Result<Arc<TierSet>> {
        self.tiers
            .clone()
            .ok_or_else(|| request_failed("the models are not set up yet: wait for `initialized`"))
    }
}

/// One run of the driver for a command: its cancel flag (set by the user's
/// `window/workDoneProgress/cancel`, or when the request is dropped) and its progress.
pub(super) struct PlanRun<'a> {
    context: &'a PlanContext,
    team: Team,
    pub cancel: Cancel,
    _cancel_on_drop: CancelOnDrop,
    progress: WorkProgress,
}

impl<'a> PlanRun<'a> {
    pub async fn start(
        context: &'a PlanContext,
        tiers: Arc<TierSet>,
        token: Option<NumberOrString>,
        name: &str,
        title: &str,
    ) -> PlanRun<'a> {
        let cancel = Cancel::new();
        let progress = WorkProgress::start(
            &context.client,
            &context.session,
            context.features.work_done_progress,
            token,
            name,
            title,
            &cancel,
        )
        .await;
        PlanRun {
            context,
            team: Team::Tiers(tiers),
            _cancel_on_drop: CancelOnDrop(cancel.clone()),
            cancel,
            progress,
        }
    }

    /// The planner's checked plan. A focus the index does not hold is the caller's
    /// mistake (invalid params); anything else is the models' failure.
    pub async fn plan(&self, request: &PlanRequest) -> Result<Planned> {
        let (driver, shown) = self.driver(Stages::Planning);
        let planned = match driver.planner_input(request).await {
            Ok(input) => driver.plan_with(input, request, self.cancel.clone()).await,
            Err(err) => Err(err),
        };
        shown.wait(driver).await;
        planned.map_err(|err| match err {
            DriverError::Plan(PlanError::Focus(reason)) => Error::invalid_params(reason),
            err => request_failed(err.to_string()),
        })
    }

    /// The plan's steps run and landed on the files as they are when the steps are done;
    /// with `plan.check` set, checked and repaired round by round first.
    pub async fn execute(
        &self,
        plan: &Plan,
        config: &PlanConfig,
    ) -> std::result::Result<Executed, DriverError> {
        let steps = plan.steps.len() as u32;
        let (driver, shown) = self.driver(Stages::Executing { steps });
        let options =
            |executor: &dyn crate::models::Model| ExecuteOptions::from_config(config, executor);
        let executed = match RoundsRequest::from_config(config) {
            Some(rounds) => {
                driver
                    .execute_checked(plan, options, &rounds, self.cancel.clone())
                    .await
            }
            None => driver.execute(plan, options, self.cancel.clone()).await,
        };
        shown.wait(driver).await;
        executed
    }

    /// Ends the progress with the error's message and hands the error back.
    pub async fn fail(mut self, error: Error) -> Error {
        self.progress.end(error.message.to_string()).await;
        error
    }

    pub async fn end(mut self, message: &str) {
        self.progress.end(message.to_owned()).await;
    }

    /// Ends the progress with `summary` and shows it as a message too.
    pub async fn announce(mut self, kind: MessageType, summary: String) {
        self.progress.end(summary.clone()).await;
        self.context
            .client
            .show_message(kind, format!("tierls: {summary}"))
            .await;
    }

    fn driver(&self, stages: Stages) -> (Driver, Shown) {
        let (send, received) = mpsc::unbounded_channel();
        let forwarder = tokio::spawn(forward_stages(
            self.progress.reporter.clone(),
            received,
            stages,
        ));
        let (rules, decisions) = {
            let session = self.context.session();
            (session.config.routing.clone(), session.decisions.clone())
        };
        let driver = Driver::new(self.context.workspace.clone(), self.team.clone())
            .routing(rules, decisions)
            .on_stage(Arc::new(move |stage| {
                let _ = send.send(stage);
            }));
        (driver, Shown(forwarder))
    }
}

/// How a command reports the driver's stages.
#[derive(Clone, Copy)]
enum Stages {
    Planning,
    Executing { steps: u32 },
}

/// The task that shows the driver's stages as `$/progress` reports.
struct Shown(tokio::task::JoinHandle<()>);

impl Shown {
    /// Waits until every stage the driver reported is shown: the driver is dropped first.
    async fn wait(self, driver: Driver) {
        drop(driver);
        let _ = self.0.await;
    }
}

async fn forward_stages(
    progress: Reporter,
    mut stages: mpsc::UnboundedReceiver<Stage>,
    shown: Stages,
) {
    let mut finished = 0;
    let mut shown = shown;
    let mut round = 1;
    while let Some(stage) = stages.recv().await {
        let (message, percentage) = match (stage, shown) {
            (Stage::Round { number: 1, .. }, _) => continue,
            (Stage::Round { number, kind, jobs }, _) => {
                // A new round's jobs: the percentage counts them from the start.
                round = number;
                finished = 0;
                shown = Stages::Executing { steps: jobs as u32 };
                let who = match kind {
                    RoundKind::Revision => "steps the planner added",
                    _ => "repairs",
                };
                let count = match jobs {
                    1 => "1 job".to_owned(),
                    jobs => format!("{jobs} jobs"),
                };
                (format!("round {number}: {who}, {count}"), 0)
            }
            (Stage::RunningCheck { round: number }, _) => {
                round = number;
                (format!("round {number}: running the check"), 100)
            }
            (Stage::Revising, _) => (format!("round {round}: the planner revises the plan"), 100),
            (Stage::LoadingPlanner, _) => ("loading the planner".to_owned(), 5),
            (Stage::Planning { tier }, _) => (format!("the {tier} tier is planning"), 20),
            (Stage::Checking, _) => continue,
            (Stage::LoadingExecutor, _) => ("loading the executor".to_owned(), 0),
            (Stage::Step(event), Stages::Executing { steps }) => {
                let message = match event {
                    Progress::Started { step, attempt: 1 } if round > 1 => {
                        format!("round {round}: step {step}")
                    }
                    Progress::Started { step, attempt: 1 } => format!("step {step}"),
                    Progress::Started { step, attempt } => format!("step {step}, answer {attempt}"),
                    Progress::Finished { step, outcome } => {
                        finished += 1;
                        format!("step {step}: {}", outcome_text(&outcome))
                    }
                };
                (message, finished * 100 / steps.max(1))
            }
            (Stage::Step(_), Stages::Planning) => continue,
        };
        progress.report(message, Some(percentage)).await;
    }
}
