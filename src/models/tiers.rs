//! The embedded models of this machine, one per tier, and the flow rule: while the planner
//! runs, the tiers whose memory it needs step aside and come back afterwards.
//!
//! Nothing here waits on another tier: a request for a tier that is paused or loading gets
//! that status at once, so the editor can say so instead of hanging.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::path::Path;

use super::embedded::EmbeddedModel;
use super::fit::{LoadPlan, plan_load_drafted};
use super::gguf::GgufHeader;
use super::{Cancel, Model, ModelError};
use crate::config::{ModelSource, Tier, TierConfig, Tiers};
use crate::core::budget::{Machine, human_bytes, usable_memory};
use crate::core::draft::{DraftMode, check_vocabularies};
use crate::core::route::{TierState, TierStates};
use crate::sync::lock;

#[derive(Clone)]
enum State {
    Unloaded,
    Loading,
    /// Serving; `embedded` is the same model when it is this machine's llama.cpp model,
    /// which another tier's model can draft for.
    Ready {
        model: Arc<dyn Model>,
        embedded: Option<Arc<EmbeddedModel>>,
    },
    /// Unloaded to make room for the planner; reloaded when it is done.
    Paused,
    Failed(ModelError),
}

struct Entry {
    path: PathBuf,
    /// How the model loads; `None` for a model provided already running, which this set
    /// neither loads nor unloads.
    plan: Option<LoadPlan>,
    state: State,
    /// Drafting with the fast tier's model (`draft = "model"`): with which model, or why
    /// not; said in the log when it changes.
    drafting_note: Option<String>,
    /// The router's route when worker nodes serve the tier: requests go through it, and
    /// the model above (if this machine has one) is one of its members.
    route: Option<Arc<dyn Model>>,
}

/// What this machine's own model for a tier is doing, as the router sees its member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalState {
    Ready,
    /// Not loaded; `fits` says whether it would load beside the tiers that are loaded.
    Unloaded {
        fits: bool,
    },
    Loading,
    Paused,
    Failed(String),
    /// The tier has no model on this machine (any more).
    Gone,
}

impl Entry {
    /// The model this entry holds for `tier` on this machine, or why there is none now.
    fn local_model(&self, tier: Tier) -> Result<Arc<dyn Model>, ModelError> {
        match &self.state {
            State::Ready { model, .. } => Ok(model.clone()),
            State::Paused => Err(ModelError::TierPaused { tier }),
            State::Loading => Err(ModelError::TierLoading { tier }),
            State::Unloaded => Err(ModelError::TierNotLoaded { tier }),
            State::Failed(err) => Err(err.clone()),
        }
    }

    /// A tier only worker nodes serve.
    fn routed(route: Arc<dyn Model>) -> Entry {
        Entry {
            path: route.info().path.clone(),
            plan: None,
            state: State::Ready {
                model: route.clone(),
                embedded: None,
            },
            drafting_note: None,
            route: Some(route),
        }
    }
}

/// What a tier is doing, for status displays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TierStatus {
    NotConfigured,
    Unloaded,
    Loading,
    Ready,
    Paused,
    Failed(String),
}

impl TierStatus {
    pub fn name(&self) -> &'static str {
        match self {
            TierStatus::NotConfigured => "not configured",
            TierStatus::Unloaded => "not loaded",
            TierStatus::Loading => "loading",
            TierStatus::Ready => "ready",
            TierStatus::Paused => "paused",
            TierStatus::Failed(_) => "failed",
        }
    }
}

pub struct TierSet {
    machine: Machine,
    entries: Mutex<BTreeMap<Tier, Entry>>,
}

impl TierSet {
    pub fn new(machine: Machine) -> Arc<Self> {
        Arc::new(TierSet {
            machine,
            entries: Mutex::default(),
        })
    }

    /// Plans how `tier` runs `path` (reading only its header); a model that cannot fit this
    /// machine is refused here, before anything loads.
    pub fn configure(
        &self,
        tier: Tier,
        path: PathBuf,
        config: &TierConfig,
    ) -> Result<(), ModelError> {
        // A tier the fast tier's model drafts for holds a context of that model per slot:
        // counted here when the fast tier is configured first (`configure_all` does so).
        // The fast tier never drafts for itself.
        let drafter = self.drafter_header(tier);
        let plan = plan_load_drafted(&path, config, &self.machine, drafter.as_ref())?;
        let mut entries = self.lock();
        let route = entries.get(&tier).and_then(|entry| entry.route.clone());
        entries.insert(
            tier,
            Entry {
                path,
                plan: Some(plan),
                state: State::Unloaded,
                drafting_note: None,
                route,
            },
        );
        Ok(())
    }

    /// The fast tier's model header when it drafts for `tier` (the fast tier never drafts
    /// for itself): a tier it drafts for holds a context of that model per slot.
    fn drafter_header(&self, tier: Tier) -> Option<GgufHeader> {
        self.lock()
            .get(&Tier::Fast)
            .filter(|_| tier != Tier::Fast)
            .and_then(|fast| fast.plan.as_ref().map(|plan| plan.header.clone()))
    }

    /// Changes `tier`'s model or settings while the server runs (a saved `tierls.toml`).
    /// The new model's header is read and its fit planned first: an error there changes
    /// nothing. A tier that is not serving just takes the new model, loaded when asked. A
    /// serving tier loads the new model beside the old one when both fit, and swaps; else it
    /// stops taking requests (they get "loading"), waits up to `drain` for the old model's
    /// requests to finish, frees it and loads the new one. If that load fails, the tier
    /// goes back to the old model (loaded again when next asked) and the error is returned.
    /// A request still running on the old model keeps it alive until it ends. Blocks.
    pub fn reconfigure(
        &self,
        tier: Tier,
        path: PathBuf,
        config: &TierConfig,
        drain: Duration,
    ) -> Result<(), ModelError> {
        let drafter = self.drafter_header(tier);
        let plan = plan_load_drafted(&path, config, &self.machine, drafter.as_ref())?;
        let (old_model, fits_beside) = {
            let mut entries = self.lock();
            // A model provided running (a scripted one in tests) stays in charge. Worker nodes
            // that serve the tier take this model as one more member when the router is
            // built again (the LSP shell does so after a reload).
            if entries
                .get(&tier)
                .is_some_and(|entry| entry.plan.is_none() && entry.route.is_none())
            {
                tracing::info!(
                    "the {tier} tier is served by a model provided running: its model file {} is not loaded",
                    path.display()
                );
                return Ok(());
            }
            let serving = match entries.get(&tier) {
                Some(Entry {
                    plan: Some(_),
                    state: State::Ready { model, .. },
                    ..
                }) => Some(model.clone()),
                _ => None,
            };
            let Some(old_model) = serving else {
                let route = entries.get(&tier).and_then(|entry| entry.route.clone());
                entries.insert(
                    tier,
                    Entry {
                        path,
                        plan: Some(plan),
                        state: State::Unloaded,
                        drafting_note: None,
                        route,
                    },
                );
                connect_drafters(&mut entries);
                return Ok(());
            };
            let held: u64 = entries
                .values()
                .filter(|entry| matches!(entry.state, State::Ready { .. }))
                .filter_map(|entry| entry.plan.as_ref())
                .map(|plan| plan.estimate.total())
                .sum();
            let fits_beside = plan.estimate.total() + held <= usable_memory(&self.machine);
            if !fits_beside && let Some(entry) = entries.get_mut(&tier) {
                entry.state = State::Loading;
                connect_drafters(&mut entries);
            }
            (old_model, fits_beside)
        };
        if !fits_beside {
            // Ours is the last handle once the requests running on it have ended.
            let deadline = Instant::now() + drain;
            while Arc::strong_count(&old_model) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if Arc::strong_count(&old_model) > 1 {
                tracing::warn!(
                    "the {tier} tier's old model still has requests after {} s: they finish on it",
                    drain.as_secs()
                );
            }
        }
        drop(old_model);
        tracing::info!("the {tier} tier loads {}", path.display());
        let loaded = EmbeddedModel::load(&path, &plan.options);
        let mut entries = self.lock();
        let result = match loaded {
            Ok(model) => {
                let model = Arc::new(model);
                let route = entries.get(&tier).and_then(|entry| entry.route.clone());
                entries.insert(
                    tier,
                    Entry {
                        path,
                        plan: Some(plan),
                        state: State::Ready {
                            model: model.clone(),
                            embedded: Some(model),
                        },
                        drafting_note: None,
                        route,
                    },
                );
                Ok(())
            }
            Err(err) => {
                if let Some(entry) = entries.get_mut(&tier)
                    && matches!(entry.state, State::Loading)
                {
                    entry.state = State::Unloaded;
                }
                Err(err)
            }
        };
        connect_drafters(&mut entries);
        result
    }

    /// Stops serving `tier` from this machine (its model is no longer configured); worker
    /// nodes that serve it go on serving it.
    pub fn remove(&self, tier: Tier) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get(&tier)
            && entry.plan.is_some()
        {
            match entry.route.clone() {
                Some(route) => {
                    entries.insert(tier, Entry::routed(route));
                }
                None => {
                    entries.remove(&tier);
                }
            }
        }
        connect_drafters(&mut entries);
    }

    /// Serves `tier` with a model that is already running (a scripted model in tests).
    pub fn provide(&self, tier: Tier, model: Arc<dyn Model>) {
        self.lock().insert(
            tier,
            Entry {
                path: model.info().path.clone(),
                plan: None,
                state: State::Ready {
                    model,
                    embedded: None,
                },
                drafting_note: None,
                route: None,
            },
        );
    }

    /// Sends `tier`'s requests through the router's `route`. This machine's model for the
    /// tier, if it has one, stays configured: the route holds it as one of its members.
    pub fn route_through(&self, tier: Tier, route: Arc<dyn Model>) {
        let mut entries = self.lock();
        match entries.get_mut(&tier) {
            Some(entry) if entry.plan.is_some() => entry.route = Some(route),
            _ => {
                entries.insert(tier, Entry::routed(route));
            }
        }
    }

    /// Stops routing `tier` (no node serves it any more): this machine's model serves it
    /// alone, or nothing does.
    pub fn unroute(&self, tier: Tier) {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(&tier) else {
            return;
        };
        if entry.route.is_none() {
            return;
        }
        if entry.plan.is_some() {
            entry.route = None;
        } else {
            entries.remove(&tier);
        }
    }

    /// What this machine's own model for `tier` would be, from its load plan (nothing is
    /// loaded): the router's member for it describes itself with this.
    pub fn local_info(&self, tier: Tier) -> Option<super::ModelInfo> {
        let entries = self.lock();
        let entry = entries.get(&tier)?;
        let plan = entry.plan.as_ref()?;
        Some(super::ModelInfo {
            path: entry.path.clone(),
            n_ctx: plan.options.n_ctx,
            n_ctx_train: plan.header.shape.n_ctx_train,
            has_fim: plan.header.has_fim_tokens,
            slots: plan.options.slots.max(1),
        })
    }

    /// What this machine's own model for `tier` is doing, for the router's member.
    pub fn local_state(&self, tier: Tier) -> LocalState {
        let entries = self.lock();
        let Some(entry) = entries.get(&tier).filter(|entry| entry.plan.is_some()) else {
            return LocalState::Gone;
        };
        match &entry.state {
            State::Ready { .. } => LocalState::Ready,
            State::Unloaded => {
                drop(entries);
                LocalState::Unloaded {
                    fits: self.fits_beside(tier),
                }
            }
            State::Loading => LocalState::Loading,
            State::Paused => LocalState::Paused,
            State::Failed(err) => LocalState::Failed(err.to_string()),
        }
    }

    /// Loads `tier`'s model. Blocks: call it off the async runtime.
    pub fn load(&self, tier: Tier) -> Result<(), ModelError> {
        let (path, options) = {
            let mut entries = self.lock();
            let entry = entries
                .get_mut(&tier)
                .ok_or(ModelError::TierNotConfigured { tier })?;
            if matches!(entry.state, State::Ready { .. }) {
                return Ok(());
            }
            let Some(plan) = &entry.plan else {
                return Err(ModelError::TierNotLoaded { tier });
            };
            let options = plan.options.clone();
            entry.state = State::Loading;
            (entry.path.clone(), options)
        };
        if tier != Tier::Fast && matches!(options.draft, DraftMode::Model { .. }) {
            self.load_the_draft_model();
        }
        let loaded = EmbeddedModel::load(&path, &options);
        let mut entries = self.lock();
        let entry = entries
            .get_mut(&tier)
            .ok_or(ModelError::TierNotConfigured { tier })?;
        match loaded {
            Ok(model) => {
                let model = Arc::new(model);
                entry.state = State::Ready {
                    model: model.clone(),
                    embedded: Some(model),
                };
                connect_drafters(&mut entries);
                Ok(())
            }
            Err(err) => {
                entry.state = State::Failed(err.clone());
                Err(err)
            }
        }
    }

    /// Configures every tier whose model is a GGUF file (a relative path is under `root`);
    /// returns the tiers left out, with the reason.
    pub fn configure_all(&self, tiers: &Tiers, root: Option<&Path>) -> Vec<(Tier, String)> {
        let mut problems = Vec::new();
        for tier in Tier::ALL {
            let config = tiers.get(tier);
            let path = match &config.model {
                None => continue,
                Some(ModelSource::File(path)) => match root {
                    Some(root) if path.is_relative() => root.join(path),
                    _ => path.clone(),
                },
                // A URL is a worker node of its own (`[nodes]`), set up by the router.
                Some(ModelSource::Remote(_)) => continue,
                // From the model cache; one not there yet is the caller's to fetch first.
                Some(ModelSource::HuggingFace(model)) => {
                    match crate::models::hub::Hub::from_env(crate::models::hub::model_cache())
                        .cached(model)
                    {
                        Some(path) => path,
                        None => {
                            problems.push((
                                tier,
                                format!("{model} is not downloaded yet: `tierls pull {model}` fetches it"),
                            ));
                            continue;
                        }
                    }
                }
            };
            if let Err(err) = self.configure(tier, path, config) {
                problems.push((tier, err.to_string()));
            }
        }
        problems
    }

    pub fn is_configured(&self, tier: Tier) -> bool {
        self.lock().contains_key(&tier)
    }

    /// The model serving `tier`, loading it or waiting for a load in progress (the flow
    /// brings paused tiers back on a thread of its own). Blocks: call it off the runtime.
    pub fn ready(&self, tier: Tier, cancel: &Cancel) -> Result<Arc<dyn Model>, ModelError> {
        if let Some(route) = self.route(tier) {
            return Ok(route);
        }
        self.ready_local(tier, cancel)
    }

    /// This machine's own model for `tier` as a router member takes work: loaded now if it
    /// is not, but never waiting for a load or a pause (the router sends the request to a
    /// node instead), nor retrying a load that failed. Blocks while loading.
    pub fn local_now(&self, tier: Tier) -> Result<Arc<dyn Model>, ModelError> {
        match self.get_local(tier) {
            Err(ModelError::TierNotLoaded { .. }) => {
                self.load(tier)?;
                self.get_local(tier)
            }
            other => other,
        }
    }

    fn ready_local(&self, tier: Tier, cancel: &Cancel) -> Result<Arc<dyn Model>, ModelError> {
        loop {
            match self.get_local(tier) {
                Ok(model) => return Ok(model),
                Err(ModelError::TierNotLoaded { .. }) => self.load(tier)?,
                Err(ModelError::TierLoading { .. } | ModelError::TierPaused { .. }) => {
                    if cancel.is_cancelled() {
                        return Err(ModelError::LoadCancelled {
                            path: self
                                .lock()
                                .get(&tier)
                                .map(|e| e.path.clone())
                                .unwrap_or_default(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(ModelError::TierNotConfigured { .. }) => {
                    return Err(ModelError::TierNotConfigured { tier });
                }
                // A load that failed before is tried again: the file may have been fixed.
                Err(_) => self.load(tier)?,
            }
        }
    }

    /// The model serving `tier` now (the router's route when nodes serve it), or at once
    /// the reason there is none.
    pub fn get(&self, tier: Tier) -> Result<Arc<dyn Model>, ModelError> {
        // One lock: a completion asks this on every keystroke.
        let entries = self.lock();
        let entry = entries
            .get(&tier)
            .ok_or(ModelError::TierNotConfigured { tier })?;
        match &entry.route {
            Some(route) => Ok(route.clone()),
            None => entry.local_model(tier),
        }
    }

    fn route(&self, tier: Tier) -> Option<Arc<dyn Model>> {
        self.lock().get(&tier).and_then(|entry| entry.route.clone())
    }

    /// This machine's own model for `tier` now, or at once the reason there is none.
    fn get_local(&self, tier: Tier) -> Result<Arc<dyn Model>, ModelError> {
        self.lock()
            .get(&tier)
            .ok_or(ModelError::TierNotConfigured { tier })?
            .local_model(tier)
    }

    /// The model file serving `tier` (if any) and its state.
    pub fn describe(&self, tier: Tier) -> (Option<PathBuf>, TierStatus) {
        let path = self.lock().get(&tier).map(|entry| match &entry.route {
            Some(route) => route.info().path.clone(),
            None => entry.path.clone(),
        });
        (path, self.status(tier))
    }

    /// Speculative decoding's figures for `tier`'s loaded model, when it drafts.
    pub fn drafting(&self, tier: Tier) -> Option<super::DraftStats> {
        match self.lock().get(&tier).map(|entry| &entry.state) {
            Some(State::Ready { model, .. }) => model.drafting(),
            _ => None,
        }
    }

    /// A routed tier is ready: the router answers for it, whatever its members are doing.
    pub fn status(&self, tier: Tier) -> TierStatus {
        let entries = self.lock();
        let entry = entries.get(&tier);
        if entry.is_some_and(|entry| entry.route.is_some()) {
            return TierStatus::Ready;
        }
        match entry.map(|entry| &entry.state) {
            None => TierStatus::NotConfigured,
            Some(State::Unloaded) => TierStatus::Unloaded,
            Some(State::Loading) => TierStatus::Loading,
            Some(State::Ready { .. }) => TierStatus::Ready,
            Some(State::Paused) => TierStatus::Paused,
            Some(State::Failed(err)) => TierStatus::Failed(err.to_string()),
        }
    }

    /// Each tier as the routing rule sees it: configured, able to take work (loaded and
    /// answering, or loadable), and idle (loaded with a free slot).
    pub fn states(&self) -> TierStates {
        let state = |tier: Tier| -> TierState {
            let entries = self.lock();
            let Some(entry) = entries.get(&tier) else {
                return TierState::ABSENT;
            };
            let (usable, idle) = match (&entry.route, &entry.state) {
                (Some(model), _) | (None, State::Ready { model, .. }) => {
                    let availability = model.availability();
                    (
                        availability.usable,
                        availability.usable && availability.idle,
                    )
                }
                (None, State::Unloaded | State::Loading | State::Paused) => (true, false),
                (None, State::Failed(_)) => (false, false),
            };
            TierState {
                configured: true,
                usable,
                idle,
            }
        };
        TierStates {
            fast: state(Tier::Fast),
            executor: state(Tier::Executor),
            planner: state(Tier::Planner),
        }
    }

    /// Whether `tier` can be served now without unloading another tier: it is loaded or
    /// served by nodes, or its model fits beside the tiers that are loaded.
    pub fn fits_beside(&self, tier: Tier) -> bool {
        let entries = self.lock();
        let Some(entry) = entries.get(&tier) else {
            return false;
        };
        let Some(plan) = &entry.plan else {
            return true;
        };
        if matches!(entry.state, State::Ready { .. }) {
            return true;
        }
        let held: u64 = entries
            .iter()
            .filter(|(other, entry)| **other != tier && matches!(entry.state, State::Ready { .. }))
            .filter_map(|(_, entry)| entry.plan.as_ref())
            .map(|plan| plan.estimate.total())
            .sum();
        plan.estimate.total() + held <= usable_memory(&self.machine)
    }

    /// Unloads `tier`'s model file (a model provided running stays).
    pub fn unload(&self, tier: Tier) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(&tier)
            && entry.plan.is_some()
            && matches!(entry.state, State::Ready { .. })
        {
            entry.state = State::Unloaded;
        }
        connect_drafters(&mut entries);
    }

    /// Drafting with the fast tier's model for `tier`: the model drafting now, or why
    /// none does; `None` when `tier` does not draft with a model.
    pub fn drafting_note(&self, tier: Tier) -> Option<String> {
        self.lock()
            .get(&tier)
            .and_then(|entry| entry.drafting_note.clone())
    }

    /// `tier`'s model when it is this machine's llama.cpp model and loaded.
    pub fn embedded(&self, tier: Tier) -> Option<Arc<EmbeddedModel>> {
        match self.lock().get(&tier).map(|entry| &entry.state) {
            Some(State::Ready { embedded, .. }) => embedded.clone(),
            _ => None,
        }
    }

    /// Loads the fast tier's model for a tier that drafts with it, when it is configured
    /// here, not loaded, and fits beside what is loaded; a failure is only logged (the tier
    /// then runs without drafting).
    fn load_the_draft_model(&self) {
        let wanted = matches!(
            self.lock().get(&Tier::Fast),
            Some(Entry {
                plan: Some(_),
                state: State::Unloaded | State::Failed(_),
                ..
            })
        );
        if wanted
            && self.fits_beside(Tier::Fast)
            && let Err(err) = self.load(Tier::Fast)
        {
            tracing::warn!(
                "the fast tier's model, which drafts for another tier, did not load: {err}"
            );
        }
    }

    /// Starts a planning flow: loads the planner, first pausing (unloading) the other tiers
    /// when the machine cannot hold them all. Blocks while loading. The returned guard gives
    /// the planner; dropping it unloads the planner and brings the paused tiers back.
    pub fn enter_flow(self: &Arc<Self>) -> Result<Flow, ModelError> {
        let paused = {
            let mut entries = self.lock();
            let planner = entries
                .get(&Tier::Planner)
                .ok_or(ModelError::TierNotConfigured {
                    tier: Tier::Planner,
                })?;
            let needed = planner
                .plan
                .as_ref()
                .map_or(0, |plan| plan.estimate.total());
            let held: u64 = entries
                .iter()
                .filter(|(tier, entry)| {
                    **tier != Tier::Planner && matches!(entry.state, State::Ready { .. })
                })
                .filter_map(|(_, entry)| entry.plan.as_ref())
                .map(|plan| plan.estimate.total())
                .sum();
            let budget = usable_memory(&self.machine);
            let mut paused = Vec::new();
            if needed + held > budget {
                tracing::info!(
                    needed = %human_bytes(needed),
                    held = %human_bytes(held),
                    budget = %human_bytes(budget),
                    "the planner needs the memory of the other tiers: pausing them while it runs"
                );
                for (tier, entry) in entries.iter_mut() {
                    if *tier != Tier::Planner
                        && entry.plan.is_some()
                        && matches!(entry.state, State::Ready { .. })
                    {
                        // Dropping the last handle frees the model; a generation still
                        // running on it keeps it alive until it ends.
                        entry.state = State::Paused;
                        paused.push(*tier);
                    }
                }
                connect_drafters(&mut entries);
            }
            paused
        };
        let flow = Flow {
            tiers: self.clone(),
            paused,
        };
        self.load(Tier::Planner)?;
        Ok(flow)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Tier, Entry>> {
        lock(&self.entries)
    }
}

/// Whether the fast tier's model (`fast`) can draft for `tier`'s (`target`); the reason
/// it cannot names both models. Read from the GGUF headers: `tierls models` says the same
/// before anything loads.
pub fn model_drafting(
    tier: Tier,
    target: (&Path, &GgufHeader),
    fast: Option<(&Path, &GgufHeader)>,
) -> Result<(), String> {
    let name = |path: &Path| {
        path.file_name().map_or_else(
            || path.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        )
    };
    if tier == Tier::Fast {
        return Err("the fast tier cannot draft for itself".into());
    }
    let Some((fast_path, fast_header)) = fast else {
        return Err(
            "the fast tier has no model loaded on this machine to draft with (none configured, served by worker nodes, paused, or failed to load)"
                .into(),
        );
    };
    let (target_path, target_header) = target;
    let refused = |reason: String| {
        format!(
            "the fast tier's model {} cannot draft for the {tier}'s model {}: {reason}",
            name(fast_path),
            name(target_path)
        )
    };
    match (&target_header.vocabulary, &fast_header.vocabulary) {
        (Some(target), Some(draft)) => check_vocabularies(target, draft).map_err(refused),
        _ => Err(refused("a GGUF header has no tokenizer vocabulary".into())),
    }
}

/// Connects the fast tier's loaded model as the drafter of every loaded tier that drafts
/// with a model and shares its vocabulary, and withdraws it where it is gone or does not
/// fit; each change of outcome is logged once.
fn connect_drafters(entries: &mut BTreeMap<Tier, Entry>) {
    let fast = entries.get(&Tier::Fast).and_then(|entry| {
        let plan = entry.plan.as_ref()?;
        let State::Ready {
            embedded: Some(model),
            ..
        } = &entry.state
        else {
            return None;
        };
        Some((entry.path.clone(), plan.header.clone(), model.as_drafter()))
    });
    for (&tier, entry) in entries.iter_mut() {
        let Some(plan) = &entry.plan else { continue };
        if !matches!(plan.options.draft, DraftMode::Model { .. }) {
            continue;
        }
        let State::Ready {
            embedded: Some(target),
            ..
        } = &entry.state
        else {
            continue;
        };
        let fast_model = fast
            .as_ref()
            .map(|(path, header, _)| (path.as_path(), header));
        let outcome = model_drafting(tier, (&entry.path, &plan.header), fast_model);
        let note = match outcome.map(|()| fast.as_ref().map(|(_, _, drafter)| drafter.clone())) {
            Ok(Some(drafter)) => {
                let note = format!(
                    "drafting with the fast tier's model {}",
                    drafter.path().display()
                );
                target.set_drafter(Some(drafter));
                note
            }
            Ok(None) => unreachable!("a fast model is needed to pass the check"),
            Err(reason) => {
                target.set_drafter(None);
                format!("not drafting: {reason}")
            }
        };
        if entry.drafting_note.as_ref() != Some(&note) {
            if note.starts_with("not") {
                tracing::warn!(%tier, "{note}");
            } else {
                tracing::info!(%tier, "{note}");
            }
            entry.drafting_note = Some(note);
        }
    }
}

/// A running planning flow; see [`TierSet::enter_flow`].
pub struct Flow {
    tiers: Arc<TierSet>,
    paused: Vec<Tier>,
}

impl Flow {
    pub fn planner(&self) -> Result<Arc<dyn Model>, ModelError> {
        self.tiers.get(Tier::Planner)
    }

    /// The tiers this flow paused.
    pub fn paused(&self) -> &[Tier] {
        &self.paused
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        {
            let mut entries = self.tiers.lock();
            if let Some(entry) = entries.get_mut(&Tier::Planner)
                && entry.plan.is_some()
            {
                entry.state = State::Unloaded;
            }
            connect_drafters(&mut entries);
        }
        if self.paused.is_empty() {
            return;
        }
        // Reloading takes a while: do it on a thread of its own, so that dropping the flow
        // never blocks an async caller. Requests meanwhile see `Paused`, then `Loading`.
        let tiers = self.tiers.clone();
        let paused = std::mem::take(&mut self.paused);
        std::thread::spawn(move || {
            for tier in paused {
                if let Err(err) = tiers.load(tier) {
                    tracing::error!(%tier, "could not bring the tier back after the planner: {err}");
                }
            }
        });
    }
}
