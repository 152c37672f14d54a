//! The router: the primary node's choice of a worker node for every request.
//!
//! Each tier served by worker nodes is a [`TierRoute`], a `Model` like any other, so
//! completions, hovers and plans reach nodes without knowing it. For each request the route
//! picks a node that serves the tier by health, free capacity and a moving average of its
//! latency (`choose`). Interactive requests (the fast tier) go first and keep a slot of their
//! own on nodes that also do batch work. A node that fails is left for another with backoff,
//! and a request cut mid-stream continues on the next node from where it stopped (one under
//! a grammar starts over, and streams only once it has finished). Nodes that
//! fail twice in a row cool down (a circuit breaker) until a probe or a trial request finds
//! them well. When no node of a tier can serve, an executor request goes to the planner's
//! nodes and a planner request to the executor's; a fast request fails at once with the
//! reasons, so a completion never hangs.
//!
//! A tier this machine also has a model for gets that model as one more member
//! ([`member::LocalMember`]), weighed like a node by its own slots, latency and state.
//! A changed node set builds a new router ([`Router::build`] with the router it replaces) that keeps the members that
//! did not change, with their state; requests running on the old one finish there.

pub mod choose;
pub mod member;

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedSender;

use super::remote::{RemoteNode, http_runtime, wire};
use super::tiers::TierSet;
use super::{Cancel, GenerationEvent, Model, ModelError, ModelInfo};
use crate::config::{NodeConfig, Tier};
use crate::core::generation::{GenerateRequest, Generation, StopReason};
use crate::sync::lock;
use choose::{Choice, NodeState, Priority, backoff, choose};
use member::{LocalMember, Member};

/// How often nodes are probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One worker node as `tierls/status` and `tierls status` show it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub name: String,
    pub url: String,
    pub api: String,
    pub tiers: Vec<String>,
    pub model: Option<String>,
    /// `healthy`, `degraded`, `down`, …
    pub health: String,
    pub busy: u32,
    pub concurrency: u32,
    pub first_token_ms: Option<f64>,
    pub tokens_per_second: Option<f64>,
    pub served: u64,
    pub failed: u64,
    pub last_error: Option<String>,
    /// llama-server's own slot count from `/slots`.
    pub slots: Option<SlotCount>,
    pub probe_ms: Option<u64>,
    /// llama-server's own view of its load, from `/metrics`.
    pub processing: Option<f64>,
    pub deferred: Option<f64>,
    /// The node process's resident memory in bytes, when it runs on this machine.
    pub memory_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct SlotCount {
    pub busy: usize,
    pub total: usize,
}

pub struct Router {
    nodes: Vec<Arc<RoutedNode>>,
    /// Woken whenever a slot frees up or a node's health changes.
    freed: Notify,
    /// Interactive requests waiting for a slot; batch requests let them go first.
    interactive_waiting: Mutex<u32>,
    /// Called when a node's health changes (the LSP shell tells the editor).
    on_change: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

struct RoutedNode {
    node: Member,
    state: Mutex<NodeState>,
    /// The last probe's extras, for the status displays.
    probe: Mutex<Option<super::remote::Probe>>,
}

impl RoutedNode {
    fn new(node: Member) -> Arc<RoutedNode> {
        Arc::new(RoutedNode {
            state: Mutex::new(NodeState::new(node.concurrency(), node.serves(Tier::Fast))),
            node,
            probe: Mutex::new(None),
        })
    }
}

/// Sets up the configured nodes for `tiers` and probes them once: what the server, `tierls
/// plan` and `tierls status` share. Returns the router (none without nodes) and what the
/// user should be told.
pub async fn serve_nodes(
    tiers: &Arc<TierSet>,
    configs: &[NodeConfig],
) -> (Option<Arc<Router>>, Vec<String>) {
    if configs.is_empty() {
        return (None, Vec::new());
    }
    let (router, notes) = Router::build(configs, Some(tiers), None);
    // Probed first: a route's context comes from what its nodes report.
    router.probe_now().await;
    router.serve(tiers);
    (Some(router), notes)
}

/// The tier a fallback sends work to when no node of its own can serve.
pub fn fallback(tier: Tier) -> Option<Tier> {
    match tier {
        Tier::Executor => Some(Tier::Planner),
        Tier::Planner => Some(Tier::Executor),
        Tier::Fast => None,
    }
}

pub fn priority(tier: Tier) -> Priority {
    match tier {
        Tier::Fast => Priority::Interactive,
        Tier::Executor | Tier::Planner => Priority::Batch,
    }
}

impl Router {
    /// A router over the configured nodes. A node that cannot be set up (its API key's
    /// variable is unset) is left out and reported.
    pub fn new(configs: &[NodeConfig]) -> (Arc<Router>, Vec<String>) {
        Router::build(configs, None, None)
    }

    /// A router over the configured nodes and, for each tier they serve, this machine's
    /// model for it in `tiers` (when it has one). Members of `previous` that did not change
    /// (the same node settings; the same local model) are kept with their state, so that a
    /// reload neither forgets a node's health nor overfills it with requests still running.
    pub fn build(
        configs: &[NodeConfig],
        tiers: Option<&Arc<TierSet>>,
        previous: Option<&Router>,
    ) -> (Arc<Router>, Vec<String>) {
        let kept = |same: &dyn Fn(&Member) -> bool| {
            previous.and_then(|router| router.nodes.iter().find(|n| same(&n.node)).cloned())
        };
        let mut problems = Vec::new();
        let mut nodes = Vec::new();
        for config in configs {
            if let Some(routed) =
                kept(&|member| member.as_node().is_some_and(|node| node.config() == config))
            {
                nodes.push(routed);
                continue;
            }
            match RemoteNode::new(config.clone()) {
                Ok(node) => nodes.push(RoutedNode::new(Member::Node(node))),
                Err(problem) => problems.push(problem),
            }
        }
        if let Some(tiers) = tiers {
            for tier in Tier::ALL {
                let served = nodes.iter().any(|n| n.node.serves(tier));
                let Some(local) = LocalMember::new(tiers, tier).filter(|_| served) else {
                    continue;
                };
                let same = |member: &Member| {
                    member
                        .as_local()
                        .is_some_and(|old| old.tier() == tier && old.info() == local.info())
                };
                nodes.push(kept(&same).unwrap_or_else(|| RoutedNode::new(Member::Local(local))));
            }
        }
        let router = Arc::new(Router {
            nodes,
            freed: Notify::new(),
            interactive_waiting: Mutex::new(0),
            on_change: Mutex::new(None),
        });
        (router, problems)
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The tiers some node serves.
    pub fn tiers(&self) -> Vec<Tier> {
        Tier::ALL
            .into_iter()
            .filter(|&tier| self.nodes.iter().any(|n| n.node.serves(tier)))
            .collect()
    }

    /// The route for `tier`, or `None` when no node serves it.
    pub fn route(self: &Arc<Self>, tier: Tier) -> Option<Arc<TierRoute>> {
        let serving: Vec<&Arc<RoutedNode>> =
            self.nodes.iter().filter(|n| n.node.serves(tier)).collect();
        if serving.is_empty() {
            return None;
        }
        let names: Vec<&str> = serving
            .iter()
            .filter(|n| n.node.as_node().is_some())
            .map(|n| n.node.name())
            .collect();
        let local = serving.iter().find_map(|n| n.node.as_local());
        let path = match local {
            Some(local) => format!(
                "{} + nodes: {}",
                local.info().path.display(),
                names.join(", ")
            ),
            None => format!("nodes: {}", names.join(", ")),
        };
        let info = ModelInfo {
            path: path.into(),
            // A request must fit whichever member takes it.
            n_ctx: serving
                .iter()
                .map(|n| n.node.context())
                .min()
                .unwrap_or(8192),
            n_ctx_train: serving
                .iter()
                .map(|n| n.node.info().n_ctx_train)
                .min()
                .unwrap_or(8192),
            has_fim: serving.iter().all(|n| n.node.fills_in_the_middle()),
            slots: serving.iter().map(|n| n.node.info().slots).sum(),
        };
        Some(Arc::new(TierRoute {
            router: self.clone(),
            tier,
            info,
        }))
    }

    /// Makes every tier some node serves go through the router (this machine's model for
    /// such a tier stays configured: it is one of the route's members).
    pub fn serve(self: &Arc<Self>, tiers: &TierSet) {
        for tier in self.tiers() {
            if let Some(route) = self.route(tier) {
                tracing::info!("the {tier} tier is served by {}", route.info.path.display());
                tiers.route_through(tier, route);
            }
        }
    }

    /// Puts this router in `previous`'s place: tiers only `previous` served stop being
    /// routed. Requests running on `previous` finish there (their route holds it).
    pub fn replace(self: &Arc<Self>, previous: Option<&Router>, tiers: &TierSet) {
        let served = self.tiers();
        for tier in previous.map(Router::tiers).unwrap_or_default() {
            if !served.contains(&tier) {
                tracing::info!("no worker node serves the {tier} tier any more");
                tiers.unroute(tier);
            }
        }
        self.serve(tiers);
    }

    /// Whether some node of `tier` can take a request now, and whether one has room.
    pub fn availability(&self, tier: Tier) -> super::Availability {
        let now = Instant::now();
        let mut availability = super::Availability {
            usable: false,
            idle: false,
        };
        for routed in self.nodes.iter().filter(|n| n.node.serves(tier)) {
            let state = lock(&routed.state);
            if state.available(now) {
                availability.usable = true;
                availability.idle |= state.has_room(priority(tier));
            }
        }
        availability
    }

    pub fn set_on_change(&self, on_change: impl Fn() + Send + Sync + 'static) {
        *lock(&self.on_change) = Some(Box::new(on_change));
    }

    fn changed(&self) {
        if let Some(on_change) = lock(&self.on_change).as_ref() {
            on_change();
        }
    }

    /// Reads the state of this machine's models into their members' health: cheap, and done
    /// before each choice, because a pause or a load changes it between probes.
    fn refresh_local(&self) {
        let now = Instant::now();
        for routed in &self.nodes {
            if let Member::Local(local) = &routed.node {
                let (healthy, detail) = local.health();
                lock(&routed.state).probed(healthy, &detail, now);
            }
        }
    }

    /// Probes every node now and records what it found.
    pub async fn probe_all(&self) {
        let mut probes = tokio::task::JoinSet::new();
        for (index, routed) in self.nodes.iter().enumerate() {
            let routed = routed.clone();
            probes.spawn(async move { (index, routed.node.probe(PROBE_TIMEOUT).await) });
        }
        let mut changed = false;
        while let Some(Ok((index, probe))) = probes.join_next().await {
            let now = Instant::now();
            let routed = &self.nodes[index];
            {
                let mut state = lock(&routed.state);
                let before = state.health(now);
                state.probed(probe.healthy, &probe.detail, now);
                changed |= before != state.health(now);
            }
            *lock(&routed.probe) = Some(probe);
        }
        if changed {
            self.freed.notify_waiters();
            self.changed();
        }
    }

    /// Probes every node once, on the HTTP runtime, from any runtime or none.
    pub async fn probe_now(self: &Arc<Self>) {
        let router = self.clone();
        let _ = http_runtime()
            .spawn(async move { router.probe_all().await })
            .await;
    }

    /// Probes the nodes every `every` until the router is dropped.
    pub fn start_probing(self: &Arc<Self>, every: Duration) {
        let router: Weak<Router> = Arc::downgrade(self);
        http_runtime().spawn(async move {
            loop {
                let Some(alive) = router.upgrade() else {
                    return;
                };
                alive.probe_all().await;
                drop(alive);
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Every node's state, for `tierls status` and the editor.
    pub fn status(&self) -> Vec<NodeReport> {
        let now = Instant::now();
        self.nodes
            .iter()
            .map(|routed| {
                let state = lock(&routed.state).clone();
                let probe = lock(&routed.probe).clone();
                let (url, api, tiers, model) = match &routed.node {
                    Member::Node(node) => {
                        let config = node.config();
                        (
                            config.url.clone(),
                            config.api.to_string(),
                            config.tiers.iter().map(Tier::to_string).collect(),
                            config.model.clone(),
                        )
                    }
                    Member::Local(local) => (
                        "embedded".to_owned(),
                        "llama.cpp".to_owned(),
                        vec![local.tier().to_string()],
                        Some(local.info().path.display().to_string()),
                    ),
                };
                NodeReport {
                    name: routed.node.name().to_owned(),
                    url,
                    api,
                    tiers,
                    model,
                    health: state.health(now).to_owned(),
                    busy: state.busy(),
                    concurrency: state.concurrency,
                    first_token_ms: state.first_token_ms.map(f64::round),
                    tokens_per_second: state.tokens_per_second.map(|t| (t * 10.0).round() / 10.0),
                    served: state.served,
                    failed: state.failed,
                    last_error: state.last_error.clone(),
                    slots: probe
                        .as_ref()
                        .and_then(|p| p.slots)
                        .map(|(busy, total)| SlotCount { busy, total }),
                    probe_ms: probe.as_ref().map(|p| p.latency.as_millis() as u64),
                    processing: probe.as_ref().and_then(|p| p.metrics.requests_processing),
                    deferred: probe.as_ref().and_then(|p| p.metrics.requests_deferred),
                    memory_bytes: probe.as_ref().and_then(|p| p.memory),
                }
            })
            .collect()
    }

    fn serving(&self, tier: Tier) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].node.serves(tier))
            .collect()
    }

    /// Takes a slot on a node of `tier` for a request of `priority`, waiting while every
    /// available node is full. `Err` carries why no node can take it.
    async fn acquire(
        &self,
        tier: Tier,
        priority: Priority,
        excluded: &[usize],
        cancel: &Cancel,
        deadline: Option<Instant>,
    ) -> Result<Option<usize>, String> {
        let serving = self.serving(tier);
        if serving.is_empty() {
            return Err(format!("no node serves the {tier} tier"));
        }
        let mut waiting = false;
        let result = loop {
            self.refresh_local();
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let choice = {
                let states: Vec<_> = serving
                    .iter()
                    .map(|&i| lock(&self.nodes[i].state))
                    .collect();
                let refs: Vec<&NodeState> = states.iter().map(|s| &**s).collect();
                let excluded_local: Vec<usize> = serving
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| excluded.contains(i))
                    .map(|(local, _)| local)
                    .collect();
                let interactive_waiting = *lock(&self.interactive_waiting) > 0;
                choose(&refs, &excluded_local, priority, interactive_waiting, now)
            };
            match choice {
                Choice::Node(local) => {
                    let index = serving[local];
                    lock(&self.nodes[index].state).start(priority, now);
                    break Ok(Some(index));
                }
                Choice::Nowhere => break Err(self.why_not(&serving, excluded, tier)),
                Choice::Wait => {}
            }
            if !waiting && priority == Priority::Interactive {
                *lock(&self.interactive_waiting) += 1;
                waiting = true;
            }
            let limit = deadline.map_or(Duration::from_millis(100), |d| {
                d.saturating_duration_since(now)
                    .min(Duration::from_millis(100))
            });
            if cancel.is_cancelled() || deadline.is_some_and(|d| now >= d) {
                break Ok(None);
            }
            // Woken by a freed slot, or every 100 ms to look at the cancel flag.
            let _ = tokio::time::timeout(limit, notified).await;
        };
        if waiting {
            *lock(&self.interactive_waiting) -= 1;
            self.freed.notify_waiters();
        }
        result
    }

    fn why_not(&self, serving: &[usize], excluded: &[usize], tier: Tier) -> String {
        let now = Instant::now();
        let reasons: Vec<String> = serving
            .iter()
            .map(|&i| {
                let routed = &self.nodes[i];
                let state = lock(&routed.state);
                let why = if excluded.contains(&i) {
                    format!("failed: {}", state.last_error.clone().unwrap_or_default())
                } else {
                    let health = state.health(now);
                    match &state.last_error {
                        Some(error) => format!("{health}: {error}"),
                        None => health.to_owned(),
                    }
                };
                format!("`{}` {why}", routed.node.name())
            })
            .collect();
        format!(
            "no node of the {tier} tier can serve ({})",
            reasons.join("; ")
        )
    }

    fn release(
        &self,
        index: usize,
        priority: Priority,
        outcome: &Result<Generation, ModelError>,
        first_token: Duration,
    ) {
        let now = Instant::now();
        let before;
        let after;
        {
            let mut state = lock(&self.nodes[index].state);
            before = state.health(now);
            match outcome {
                Ok(generation) if generation.stop_reason == StopReason::Cancelled => {
                    state.released(priority);
                }
                Ok(generation) => {
                    let speed = generation.usage.generated_tokens as f64
                        / generation.usage.generation_time.as_secs_f64().max(1e-3);
                    let speed = (generation.usage.generated_tokens > 1).then_some(speed);
                    state.succeeded(priority, first_token, speed);
                }
                Err(ModelError::Refused { .. }) => state.released(priority),
                Err(err) => state.failed(priority, err.to_string(), now),
            }
            after = state.health(now);
        }
        self.freed.notify_waiters();
        if before != after {
            self.changed();
        }
    }

    /// Runs `request` for `tier`: picks nodes, retries elsewhere, falls back, and reports
    /// pieces and the final result on `events`.
    async fn run(
        self: Arc<Self>,
        tier: Tier,
        slot: usize,
        request: GenerateRequest,
        cancel: Cancel,
        events: UnboundedSender<GenerationEvent>,
    ) -> Result<Generation, ModelError> {
        let priority = priority(tier);
        let started = Instant::now();
        let deadline = request.time_limit.map(|limit| started + limit);
        let mut generated = String::new();
        let mut pieces = 0u32;
        let mut excluded: Vec<usize> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        // Why each tier tried could not serve, in order.
        let mut tiers_tried: Vec<String> = Vec::new();
        let mut serving_tier = tier;
        let mut attempt = 0u32;
        // A grammar constrains a whole answer: another node cannot continue half of one, so
        // constrained requests start over elsewhere and stream only the answer that finished.
        let restarts = request.grammar.is_some();
        loop {
            let index = match self
                .acquire(serving_tier, priority, &excluded, &cancel, deadline)
                .await
            {
                Ok(Some(index)) => index,
                Ok(None) => {
                    let reason = if cancel.is_cancelled() {
                        StopReason::Cancelled
                    } else {
                        StopReason::TimeLimit
                    };
                    return Ok(partial(generated, reason, started));
                }
                Err(why) => {
                    // The nodes that failed this request say why; otherwise, why none could take it.
                    let why = if failures.is_empty() {
                        why
                    } else {
                        format!(
                            "no node of the {serving_tier} tier could serve: {}",
                            std::mem::take(&mut failures).join("; ")
                        )
                    };
                    tiers_tried.push(why);
                    // The documented fallback: the other batch tier's nodes, if it has any
                    // this request has not already failed on.
                    let fresh = |other: Tier| {
                        self.serving(other)
                            .iter()
                            .any(|index| !excluded.contains(index))
                    };
                    match fallback(serving_tier).filter(|_| serving_tier == tier) {
                        Some(other) if fresh(other) => {
                            tracing::warn!(
                                "{}: the {tier} request goes to the {other} tier's other nodes",
                                tiers_tried.join("; ")
                            );
                            serving_tier = other;
                            continue;
                        }
                        _ => {
                            return Err(ModelError::NoNode {
                                tier,
                                reason: tiers_tried.join("; then "),
                            });
                        }
                    }
                }
            };
            let node = &self.nodes[index].node;
            let continued = wire::continuation(&request, &generated, pieces);
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    self.release(
                        index,
                        priority,
                        &Ok(partial(String::new(), StopReason::Cancelled, started)),
                        Duration::ZERO,
                    );
                    return Ok(partial(generated, StopReason::TimeLimit, started));
                }
            }
            let mut continued = continued;
            continued.time_limit = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
            let sent_at = Instant::now();
            node.submit(slot, continued, cancel.clone(), sender);
            let mut first_token = None;
            let mut outcome = Err(ModelError::WorkerGone);
            while let Some(event) = receiver.recv().await {
                match event {
                    GenerationEvent::Piece(piece) => {
                        first_token.get_or_insert_with(|| sent_at.elapsed());
                        generated.push_str(&piece);
                        pieces += 1;
                        if !restarts {
                            let _ = events.send(GenerationEvent::Piece(piece));
                        }
                    }
                    GenerationEvent::Done(result) => {
                        outcome = result;
                        break;
                    }
                }
            }
            self.release(
                index,
                priority,
                &outcome,
                first_token.unwrap_or_else(|| sent_at.elapsed()),
            );
            match outcome {
                Ok(mut generation) => {
                    if restarts && !generated.is_empty() {
                        let _ = events.send(GenerationEvent::Piece(generated.clone()));
                    }
                    generation.text = generated;
                    generation.usage.generated_tokens =
                        generation.usage.generated_tokens.max(pieces);
                    return Ok(generation);
                }
                // Every node would refuse it the same way.
                Err(err @ ModelError::Refused { .. }) => return Err(err),
                Err(err) => {
                    tracing::warn!("{err}; trying another node");
                    failures.push(err.to_string());
                    excluded.push(index);
                    if restarts {
                        generated.clear();
                        pieces = 0;
                    }
                    if cancel.is_cancelled() {
                        return Ok(partial(generated, StopReason::Cancelled, started));
                    }
                    // The pause before the next node is a wait like any other: inside the
                    // request's deadline (the next `acquire` then answers that time is up).
                    let pause = deadline.map_or(backoff(attempt), |d| {
                        backoff(attempt).min(d.saturating_duration_since(Instant::now()))
                    });
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
            }
        }
    }
}

fn partial(text: String, stop_reason: StopReason, started: Instant) -> Generation {
    Generation {
        text,
        stop_reason,
        usage: crate::core::generation::Usage {
            generation_time: started.elapsed(),
            ..Default::default()
        },
    }
}

/// One tier served by worker nodes, as a `Model`.
pub struct TierRoute {
    router: Arc<Router>,
    tier: Tier,
    info: ModelInfo,
}

impl TierRoute {
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }
}

impl Model for TierRoute {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn availability(&self) -> super::Availability {
        self.router.availability(self.tier)
    }

    fn submit(
        &self,
        slot: usize,
        request: GenerateRequest,
        cancel: Cancel,
        events: UnboundedSender<GenerationEvent>,
    ) {
        let router = self.router.clone();
        let tier = self.tier;
        http_runtime().spawn(async move {
            let result = router
                .run(tier, slot, request, cancel, events.clone())
                .await;
            let _ = events.send(GenerationEvent::Done(result));
        });
    }
}
