//! The embedded backend: llama.cpp through llama-cpp-2, one thread and one context per slot.
//!
//! Each slot remembers the tokens in its KV cache; a request evaluates only what follows the
//! longest common prefix with them, which is what makes a follow-up keystroke cheap.

use std::io::Read;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use tokio::sync::mpsc::UnboundedSender;

use super::{
    Availability, Cancel, DraftCounters, DraftStats, GenerationEvent, Model, ModelError, ModelInfo,
};
use crate::core::budget::CacheType;
use crate::core::draft::{DraftMode, lookup_draft};
use crate::core::generation::{
    ChatMessage, GenerateRequest, Generation, Grammar, Prompt, StopMatcher, StopOutcome,
    StopReason, Usage,
};
use crate::core::heal::{HealState, Healing, PieceTable, plan_healing};
use crate::core::speculate::{Decoder, Limits, Steps, decode_greedily};
use crate::sync::lock;

/// How to load and run a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Context length per slot, in tokens.
    pub n_ctx: u32,
    /// Layers offloaded to the GPU (0 on a CPU-only build).
    pub n_gpu_layers: u32,
    /// Independent KV caches, each with its own worker thread.
    pub slots: usize,
    /// CPU threads per decode.
    pub threads: i32,
    /// Prompt tokens evaluated per decode call.
    pub n_batch: u32,
    /// The element type of the KV cache.
    pub cache_type: CacheType,
    /// The chat template to use instead of the GGUF's own (a llama.cpp template name or
    /// the template text); needed for chat prompts when the GGUF has none.
    pub chat_template: Option<String>,
    /// Speculative decoding: how drafts are made (verified in one batch; greedy output is
    /// the same with or without).
    pub draft: DraftMode,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as i32;
        EmbeddedOptions {
            n_ctx: 4096,
            n_gpu_layers: 0,
            slots: 1,
            threads,
            n_batch: 512,
            cache_type: CacheType::F16,
            chat_template: None,
            draft: DraftMode::Off,
        }
    }
}

/// Initialises llama.cpp once for this process (device queries need it too).
pub fn init_backend() {
    backend();
}

/// llama.cpp's backend may be initialised once per process: every model shares it.
fn backend() -> &'static LlamaBackend {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
        LlamaBackend::init().expect("llama.cpp's backend initialises once per process")
    })
}

struct Job {
    request: GenerateRequest,
    cancel: Cancel,
    events: UnboundedSender<GenerationEvent>,
}

/// What a slot's worker receives.
enum SlotMessage {
    Job(Job),
    /// The model drafting for this one was connected, replaced or withdrawn: build or
    /// release the draft context now, not at the next request.
    DrafterChanged,
}

/// A loaded model drafting for another of the same vocabulary (the fast tier's, for the
/// executor), sharing its weights: each slot of the model it drafts for runs it in a
/// context of its own, so the fast tier's completion slots are never disturbed.
#[derive(Clone)]
pub struct Drafter {
    model: Arc<LlamaModel>,
    path: PathBuf,
    /// Requests the draft model's own tier is answering: drafting yields to them.
    busy: Arc<AtomicUsize>,
}

impl Drafter {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn is(&self, other: &Drafter) -> bool {
        Arc::ptr_eq(&self.model, &other.model)
    }
}

/// The drafter a model's slots use now; `None` when none is connected.
type SharedDrafter = Arc<Mutex<Option<Drafter>>>;

pub struct EmbeddedModel {
    info: ModelInfo,
    model: Arc<LlamaModel>,
    slots: Vec<std_mpsc::Sender<SlotMessage>>,
    /// Requests submitted and not yet answered, across the slots.
    in_flight: Arc<AtomicUsize>,
    /// Speculative decoding's figures, when this model drafts.
    drafting: Option<Arc<DraftCounters>>,
    /// The model drafting for this one, with [`DraftMode::Model`].
    drafter: SharedDrafter,
}

impl EmbeddedModel {
    /// Loads a GGUF file and starts one worker per slot. Blocks: call it off the runtime.
    pub fn load(path: &Path, options: &EmbeddedOptions) -> Result<Self, ModelError> {
        Self::load_with(path, options, &Cancel::new(), |_| {})
    }

    /// [`load`](Self::load) that reports progress (0.0 to 1.0) and stops when `cancel` is
    /// raised, freeing what was loaded.
    pub fn load_with(
        path: &Path,
        options: &EmbeddedOptions,
        cancel: &Cancel,
        mut progress: impl FnMut(f32) + 'static,
    ) -> Result<Self, ModelError> {
        check_gguf(path)?;
        let watched = cancel.clone();
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(options.n_gpu_layers)
            .with_progress_callback(move |fraction| {
                progress(fraction);
                !watched.is_cancelled()
            });
        let model = LlamaModel::load_from_file(backend(), path, &params).map_err(|_| {
            let path = path.to_owned();
            if cancel.is_cancelled() {
                ModelError::LoadCancelled { path }
            } else {
                ModelError::LoadFailed { path }
            }
        })?;
        let n_ctx_train = model.n_ctx_train();
        if options.n_ctx > n_ctx_train {
            return Err(ModelError::ContextTooLong {
                requested: options.n_ctx,
                trained: n_ctx_train,
            });
        }
        let vocab = model.vocab();
        let has_fim = [vocab.fim_pre(), vocab.fim_suf(), vocab.fim_mid()]
            .iter()
            .all(|token| token.0 >= 0);
        let info = ModelInfo {
            path: path.to_owned(),
            n_ctx: options.n_ctx,
            n_ctx_train,
            has_fim,
            slots: options.slots.max(1),
        };
        let model = Arc::new(model);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let drafting = (options.draft != DraftMode::Off).then(Arc::<DraftCounters>::default);
        let drafter = SharedDrafter::default();
        let pieces = Arc::new(OnceLock::new());
        let mut slots = Vec::new();
        for slot in 0..info.slots {
            let (jobs_tx, jobs_rx) = std_mpsc::channel();
            let (ready_tx, ready_rx) = std_mpsc::channel();
            let (model, options, info) = (model.clone(), options.clone(), info.clone());
            let in_flight = in_flight.clone();
            let drafting = drafting.clone();
            let drafter = drafter.clone();
            let pieces = pieces.clone();
            std::thread::Builder::new()
                .name(format!("tierls-llama-slot-{slot}"))
                .spawn(move || {
                    let counters = Counters {
                        in_flight: &in_flight,
                        drafting: drafting.as_deref(),
                        pieces: &pieces,
                    };
                    run_slot(
                        &model, &options, &info, jobs_rx, ready_tx, counters, &drafter,
                    )
                })
                .map_err(|_| ModelError::WorkerGone)?;
            ready_rx.recv().map_err(|_| ModelError::WorkerGone)??;
            slots.push(jobs_tx);
        }
        Ok(EmbeddedModel {
            info,
            model,
            slots,
            in_flight,
            drafting,
            drafter,
        })
    }

    /// This model as a drafter for another model of the same vocabulary.
    pub fn as_drafter(&self) -> Drafter {
        Drafter {
            model: self.model.clone(),
            path: self.info.path.clone(),
            busy: self.in_flight.clone(),
        }
    }

    /// Connects the model that drafts for this one (with [`DraftMode::Model`]), or with
    /// `None` withdraws it. A request in progress stops drafting at its next draft; the
    /// draft model's memory is released once no slot holds it.
    pub fn set_drafter(&self, drafter: Option<Drafter>) {
        {
            let mut current = lock(&self.drafter);
            let same = match (&*current, &drafter) {
                (Some(current), Some(new)) => current.is(new),
                (None, None) => true,
                _ => false,
            };
            if same {
                return;
            }
            *current = drafter;
        }
        for slot in &self.slots {
            let _ = slot.send(SlotMessage::DrafterChanged);
        }
    }

    /// The file of the model drafting for this one now.
    pub fn drafts_with(&self) -> Option<PathBuf> {
        lock(&self.drafter)
            .as_ref()
            .map(|drafter| drafter.path.clone())
    }

    /// Renders a conversation with the model's own chat template, or with `template` (a
    /// template text, or the name of one built into llama.cpp, such as `gemma`).
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        template: Option<&str>,
    ) -> Result<String, ModelError> {
        render_chat(&self.model, &self.info.path, messages, template)
    }
}

impl Model for EmbeddedModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn drafting(&self) -> Option<DraftStats> {
        self.drafting.as_ref().map(|counters| counters.get())
    }

    fn availability(&self) -> Availability {
        Availability {
            usable: true,
            idle: self.in_flight.load(Ordering::Relaxed) < self.slots.len(),
        }
    }

    fn submit(
        &self,
        slot: usize,
        request: GenerateRequest,
        cancel: Cancel,
        events: UnboundedSender<GenerationEvent>,
    ) {
        let job = Job {
            request,
            cancel,
            events,
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let sent = self.slots[slot % self.slots.len()].send(SlotMessage::Job(job));
        if let Err(std_mpsc::SendError(SlotMessage::Job(job))) = sent {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = job
                .events
                .send(GenerationEvent::Done(Err(ModelError::WorkerGone)));
        }
    }
}

fn render_chat(
    model: &LlamaModel,
    path: &Path,
    messages: &[ChatMessage],
    template: Option<&str>,
) -> Result<String, ModelError> {
    let template = match template {
        Some(template) => LlamaChatTemplate::new(template)
            .map_err(|err| ModelError::ChatTemplate(err.to_string()))?,
        None => model
            .chat_template(None)
            .map_err(|_| ModelError::NoChatTemplate {
                path: path.to_owned(),
            })?,
    };
    // A last assistant message is the start of the answer: the template opens the
    // assistant's turn and the model continues that text.
    let (messages, answer_start) = match messages.split_last() {
        Some((last, earlier)) if last.role == "assistant" => (earlier, last.content.as_str()),
        _ => (messages, ""),
    };
    let messages = messages
        .iter()
        .map(|message| LlamaChatMessage::new(message.role.clone(), message.content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| ModelError::ChatTemplate(err.to_string()))?;
    let mut text = model
        .apply_chat_template(&template, &messages, true)
        .map_err(|err| ModelError::ChatTemplate(err.to_string()))?;
    text.push_str(answer_start);
    Ok(text)
}

/// Refuses what llama.cpp would fail on less clearly: a missing file, or one without the
/// GGUF magic. (llama-cpp-2 also asserts existence in debug builds.)
pub(super) fn check_gguf(path: &Path) -> Result<(), ModelError> {
    let mut file = std::fs::File::open(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => ModelError::NotFound {
            path: path.to_owned(),
        },
        _ => ModelError::NotGguf {
            path: path.to_owned(),
            reason: err.to_string(),
        },
    })?;
    let mut magic = [0u8; 4];
    let not_gguf = |reason: &str| ModelError::NotGguf {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    file.read_exact(&mut magic)
        .map_err(|_| not_gguf("shorter than a GGUF header"))?;
    if &magic != b"GGUF" {
        return Err(not_gguf("it does not start with the GGUF magic"));
    }
    Ok(())
}

fn kv_cache_type(cache_type: CacheType) -> KvCacheType {
    match cache_type {
        CacheType::F16 => KvCacheType::F16,
        CacheType::Q8_0 => KvCacheType::Q8_0,
        CacheType::Q4_0 => KvCacheType::Q4_0,
    }
}

/// What a slot's worker counts for the model, and what the slots share.
struct Counters<'a> {
    in_flight: &'a AtomicUsize,
    drafting: Option<&'a DraftCounters>,
    /// The vocabulary's token texts for token healing, read on first use.
    pieces: &'a OnceLock<PieceTable>,
}

fn context_params(options: &EmbeddedOptions) -> LlamaContextParams {
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(options.n_ctx))
        .with_n_batch(options.n_batch)
        .with_n_threads(options.threads)
        .with_n_threads_batch(options.threads)
        // A full-size sliding-window cache keeps prefix reuse possible on SWA models (Gemma 3).
        .with_swa_full(true)
        .with_type_k(kv_cache_type(options.cache_type))
        .with_type_v(kv_cache_type(options.cache_type))
}

/// One slot's thread: owns a context (which borrows the model) and its cache bookkeeping,
/// and, while a draft model is connected, a context of that model's.
fn run_slot(
    model: &LlamaModel,
    options: &EmbeddedOptions,
    info: &ModelInfo,
    messages: std_mpsc::Receiver<SlotMessage>,
    ready: std_mpsc::Sender<Result<(), ModelError>>,
    counters: Counters,
    shared_drafter: &SharedDrafter,
) {
    let context = match model.new_context(backend(), context_params(options)) {
        Ok(context) => context,
        Err(_) => {
            let _ = ready.send(Err(ModelError::ContextFailed {
                path: info.path.clone(),
                n_ctx: options.n_ctx,
            }));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut slot = Slot {
        model,
        sequence: KvSequence::new(context, options.n_batch),
        info,
        chat_template: options.chat_template.clone(),
        draft: options.draft,
        pieces: counters.pieces,
    };
    let drafts_with_a_model = matches!(options.draft, DraftMode::Model { .. });
    let connected = || {
        drafts_with_a_model
            .then(|| lock(shared_drafter).clone())
            .flatten()
    };
    let mut pending: Option<Job> = None;
    loop {
        // The draft model's context lives as long as it stays connected: it keeps its own
        // cache of the prompt between requests, as the slot does.
        let drafter = connected();
        let mut drafting = drafter
            .as_ref()
            .and_then(|drafter| ModelDrafter::new(drafter, options, shared_drafter));
        let changed = || match (&drafter, connected()) {
            (Some(old), Some(new)) => !old.is(&new),
            (None, None) => false,
            _ => true,
        };
        loop {
            let job = match pending.take() {
                Some(job) => job,
                None => match messages.recv() {
                    Ok(SlotMessage::Job(job)) => job,
                    Ok(SlotMessage::DrafterChanged) if changed() => break,
                    Ok(SlotMessage::DrafterChanged) => continue,
                    Err(_) => return,
                },
            };
            if changed() {
                pending = Some(job);
                break;
            }
            let events = job.events.clone();
            let result = slot.generate(job, drafting.as_mut());
            if let (Some(drafting), Ok(generation)) = (counters.drafting, &result) {
                drafting.add(&generation.usage);
            }
            counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = events.send(GenerationEvent::Done(result));
        }
    }
}

/// A context and the tokens in its KV cache (sequence 0), in position order.
struct KvSequence<'m> {
    context: LlamaContext<'m>,
    cached: Vec<LlamaToken>,
    /// Tokens evaluated per decode call.
    n_batch: usize,
}

impl<'m> KvSequence<'m> {
    fn new(context: LlamaContext<'m>, n_batch: u32) -> Self {
        KvSequence {
            context,
            cached: Vec::new(),
            n_batch: n_batch as usize,
        }
    }

    /// Brings the cache to `tokens`, evaluating only what follows the common prefix; returns
    /// how many tokens were evaluated. The last token is always evaluated: its logits
    /// choose the next one.
    fn sync(&mut self, tokens: &[LlamaToken], cancel: &Cancel) -> Result<u32, ModelError> {
        let common = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        let keep = common.min(tokens.len().saturating_sub(1));
        if keep < self.cached.len() && self.truncate(keep).is_err() {
            self.context.clear_kv_cache();
            self.cached.clear();
        }
        let start = self.cached.len();
        for chunk in tokens[start..].chunks(self.n_batch) {
            if cancel.is_cancelled() {
                break;
            }
            self.decode(chunk, false)?;
        }
        Ok((tokens.len() - start) as u32)
    }

    /// Decodes `tokens` at the end of the cache, asking for logits of the last one only, or
    /// of every one (`all_logits`: verifying a draft).
    fn decode(&mut self, tokens: &[LlamaToken], all_logits: bool) -> Result<(), ModelError> {
        let mut batch = LlamaBatch::new(tokens.len(), 1);
        let start = self.cached.len();
        for (offset, &token) in tokens.iter().enumerate() {
            let is_last = offset + 1 == tokens.len();
            batch
                .add(token, (start + offset) as i32, &[0], is_last || all_logits)
                .map_err(|err| ModelError::Decode(err.to_string()))?;
        }
        self.context
            .decode(&mut batch)
            .map_err(|err| ModelError::Decode(err.to_string()))?;
        self.cached.extend_from_slice(tokens);
        Ok(())
    }

    /// Drops every cached token from position `keep` on.
    fn truncate(&mut self, keep: usize) -> Result<(), ModelError> {
        self.context
            .kv_cache_seq_rm(0, Some(keep as u32), None)
            .map_err(|_| {
                ModelError::Decode("llama.cpp could not drop tokens from the KV cache".into())
            })?;
        self.cached.truncate(keep);
        Ok(())
    }
}

/// A slot's use of the draft model: its own context of the draft model, kept in step with
/// the slot's prompt and answer.
struct ModelDrafter<'d> {
    drafter: &'d Drafter,
    sequence: KvSequence<'d>,
    shared: &'d SharedDrafter,
}

impl<'d> ModelDrafter<'d> {
    fn new(
        drafter: &'d Drafter,
        options: &EmbeddedOptions,
        shared: &'d SharedDrafter,
    ) -> Option<Self> {
        match drafter
            .model
            .new_context(backend(), context_params(options))
        {
            Ok(context) => Some(ModelDrafter {
                drafter,
                sequence: KvSequence::new(context, options.n_batch),
                shared,
            }),
            Err(err) => {
                tracing::warn!(
                    draft_model = %drafter.path.display(),
                    "no context of {} tokens for the draft model ({err}): this slot does not draft",
                    options.n_ctx
                );
                None
            }
        }
    }

    /// Whether it is still the connected drafter: the tiers may withdraw it mid-request
    /// (the flow rule unloading the fast tier).
    fn is_connected(&self) -> bool {
        lock(self.shared)
            .as_ref()
            .is_some_and(|connected| connected.is(self.drafter))
    }

    /// Whether the draft model's own tier is answering a request (completions first).
    fn should_yield(&self) -> bool {
        self.drafter.busy.load(Ordering::Relaxed) > 0
    }

    /// Up to `limit` tokens the draft model writes greedily after `history`: fewer when it
    /// ends the text, the request is cancelled, or its own tier gets a request. Each token
    /// is one decode, and cancelling is checked before each.
    fn draft(
        &mut self,
        history: &[LlamaToken],
        limit: usize,
        cancel: &Cancel,
    ) -> Result<Vec<LlamaToken>, ModelError> {
        self.sequence.sync(history, cancel)?;
        let vocab = self.drafter.model.vocab();
        let mut draft = Vec::with_capacity(limit);
        while draft.len() < limit && !cancel.is_cancelled() && !self.should_yield() {
            let logits = self.sequence.context.get_logits_ith(-1);
            let token = argmax(logits);
            // An unsure guess is likely rejected: stop rather than spend decodes on it.
            if vocab.is_eog(token) || probability(logits, token) < DRAFT_MIN_PROBABILITY {
                break;
            }
            draft.push(token);
            if draft.len() < limit {
                self.sequence.decode(&[token], false)?;
                cancel.note_decoded();
            }
        }
        Ok(draft)
    }
}

/// The least probability (as the draft model sees it) of a drafted token; below it the
/// draft ends: the cut llama-server makes with `--draft-p-min`.
const DRAFT_MIN_PROBABILITY: f32 = 0.75;

/// The softmax probability of `token` under `logits`.
fn probability(logits: &[f32], token: LlamaToken) -> f32 {
    let chosen = logits[token.0 as usize];
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&logit| (logit - max).exp()).sum();
    (chosen - max).exp() / sum
}

/// The draft from the draft model, or none: when it is withdrawn (then not again this
/// request), yields to its own tier, or fails (then not again this request either).
fn draft_with_model(
    drafting: &mut Option<&mut ModelDrafter>,
    history: &[LlamaToken],
    limit: usize,
    cancel: &Cancel,
    yields: &mut u32,
) -> Vec<LlamaToken> {
    let Some(drafter) = drafting else {
        return Vec::new();
    };
    if limit == 0 {
        return Vec::new();
    }
    if !drafter.is_connected() {
        *drafting = None;
        return Vec::new();
    }
    if drafter.should_yield() {
        *yields += 1;
        return Vec::new();
    }
    match drafter.draft(history, limit, cancel) {
        Ok(draft) => draft,
        Err(err) => {
            tracing::warn!(
                draft_model = %drafter.drafter.path.display(),
                "the draft model failed ({err}): this request goes on without drafting"
            );
            *drafting = None;
            Vec::new()
        }
    }
}

struct Slot<'m, 'c> {
    model: &'m LlamaModel,
    sequence: KvSequence<'m>,
    info: &'c ModelInfo,
    chat_template: Option<String>,
    draft: DraftMode,
    pieces: &'c OnceLock<PieceTable>,
}

impl Slot<'_, '_> {
    fn generate(
        &mut self,
        job: Job,
        drafting: Option<&mut ModelDrafter>,
    ) -> Result<Generation, ModelError> {
        let Job {
            request,
            cancel,
            events,
        } = job;
        let started = Instant::now();
        let deadline = request.time_limit.map(|limit| started + limit);
        let (mut tokens, used_fim, cursor_end) = self.tokenize(&request.prompt)?;
        let healing = match cursor_end {
            Some(end) if request.heal && request.grammar.is_none() => self.heal(&mut tokens, end),
            _ => None,
        };
        if tokens.len() as u32 + 1 > self.info.n_ctx {
            return Err(ModelError::PromptTooLong {
                prompt_tokens: tokens.len() as u32,
                n_ctx: self.info.n_ctx,
            });
        }
        let mut grammar = match &request.grammar {
            None => None,
            Some(grammar) => Some(self.grammar_sampler(grammar)?),
        };
        let mut usage = Usage {
            prompt_tokens: tokens.len() as u32,
            used_fim,
            ..Usage::default()
        };

        let evaluated = self.sequence.sync(&tokens, &cancel)?;
        usage.evaluated_tokens = evaluated;
        usage.prompt_time = started.elapsed();
        if cancel.is_cancelled() {
            return Ok(Generation {
                text: String::new(),
                stop_reason: StopReason::Cancelled,
                usage,
            });
        }

        let generating = Instant::now();
        let mut verifying = Verifying {
            model: self.model,
            sequence: &mut self.sequence,
            grammar: grammar.as_mut(),
            cancel: &cancel,
            healing: healing.as_ref().map(HealState::new),
            pieces: self.pieces,
        };
        let mut steps = Writing {
            model: self.model,
            cancel: &cancel,
            deadline,
            draft: self.draft,
            drafting,
            draft_yields: 0,
            matcher: StopMatcher::new(&request.stop),
            text: String::new(),
            undecoded_bytes: Vec::new(),
            events: &events,
            healing: healing.as_ref().map(HealState::new),
        };
        let limits = Limits {
            // The healed text is written again and is not part of the answer's allowance.
            max_tokens: request.max_tokens
                + healing
                    .as_ref()
                    .map_or(0, |healing| healing.removed_tokens as u32),
            n_ctx: self.info.n_ctx as usize,
        };
        let (stop_reason, counts) = decode_greedily(&mut verifying, tokens, limits, &mut steps)?;
        let mut text = steps.text;
        if stop_reason != StopReason::StopSequence {
            let rest = steps.matcher.finish();
            if !rest.is_empty() {
                text.push_str(&rest);
                let _ = events.send(GenerationEvent::Piece(rest));
            }
        }
        usage.generated_tokens = counts.generated;
        usage.drafted_tokens = counts.drafted;
        usage.accepted_tokens = counts.accepted;
        usage.draft_yields = steps.draft_yields;
        usage.generation_time = generating.elapsed();
        Ok(Generation {
            text,
            stop_reason,
            usage,
        })
    }

    /// The prompt's tokens, whether they use FIM tokens, and where the text before the
    /// cursor ends among them (for healing; none for a chat).
    fn tokenize(
        &self,
        prompt: &Prompt,
    ) -> Result<(Vec<LlamaToken>, bool, Option<usize>), ModelError> {
        let vocab = self.model.vocab();
        let (tokens, used_fim) = match prompt {
            Prompt::Text(text) => (vocab.tokenize(text.as_bytes(), true, false), false),
            Prompt::Chat(messages) => {
                let text = render_chat(
                    self.model,
                    &self.info.path,
                    messages,
                    self.chat_template.as_deref(),
                )?;
                // Templates write their own BOS and turn markers: parse them as special
                // tokens, and add no second BOS.
                let bos = String::from_utf8_lossy(&vocab.token_to_piece(vocab.bos(), true, None))
                    .into_owned();
                let add_bos = bos.is_empty() || !text.starts_with(&bos);
                (vocab.tokenize(text.as_bytes(), add_bos, true), false)
            }
            Prompt::Fim {
                prefix, context, ..
            } if !self.info.has_fim => (
                vocab.tokenize(context.before(prefix).as_bytes(), true, false),
                false,
            ),
            Prompt::Fim {
                prefix,
                suffix,
                context,
            } => {
                let prefix = context.before(prefix);
                let mut tokens = Vec::new();
                if vocab.should_add_bos() {
                    tokens.push(vocab.bos());
                }
                tokens.push(vocab.fim_pre());
                tokens.extend(vocab.tokenize(prefix.as_bytes(), false, false));
                let cursor_end = tokens.len();
                tokens.push(vocab.fim_suf());
                tokens.extend(vocab.tokenize(suffix.as_bytes(), false, false));
                tokens.push(vocab.fim_mid());
                return Ok((tokens, true, Some(cursor_end)));
            }
        };
        let cursor_end = (!matches!(prompt, Prompt::Chat(_))).then_some(tokens.len());
        Ok((tokens, used_fim, cursor_end))
    }

    /// Token healing: takes the tokens the cursor ends inside off `tokens` (ending at
    /// `end`), and says what the answer must start with.
    fn heal(&self, tokens: &mut Vec<LlamaToken>, end: usize) -> Option<Healing> {
        let vocab = self.model.vocab();
        let table = self.pieces.get_or_init(|| {
            PieceTable::new(
                (0..self.model.n_vocab())
                    .map(|id| (id, vocab.token_to_piece(LlamaToken(id), false, None))),
            )
        });
        let last: Vec<Vec<u8>> = tokens[end.saturating_sub(4)..end]
            .iter()
            .map(|&token| {
                if vocab.is_control(token) || vocab.is_eog(token) {
                    Vec::new()
                } else {
                    vocab.token_to_piece(token, false, None)
                }
            })
            .collect();
        let healing = plan_healing(&last, table)?;
        tokens.drain(end - healing.removed_tokens..end);
        Some(healing)
    }

    fn grammar_sampler(&self, grammar: &Grammar) -> Result<LlamaSampler, ModelError> {
        let gbnf = match grammar {
            Grammar::Gbnf(gbnf) => gbnf.clone(),
            Grammar::JsonSchema(schema) => {
                // llama.cpp only says "failed" for a schema that is not JSON: say where.
                serde_json::from_str::<serde_json::Value>(schema).map_err(|err| {
                    ModelError::BadGrammar(format!("the JSON schema is not JSON: {err}"))
                })?;
                llama_cpp_2::json_schema_to_grammar(schema).map_err(|err| {
                    ModelError::BadGrammar(format!(
                        "llama.cpp cannot turn the JSON schema into a grammar ({err})"
                    ))
                })?
            }
        };
        LlamaSampler::grammar(self.model, &gbnf, "root").map_err(|_| {
            ModelError::BadGrammar(
                "llama.cpp rejected the GBNF grammar (its log on stderr names the spot)".into(),
            )
        })
    }
}

/// The slot's model as the decoding loop drives it: its cache, greedy choices under the
/// request's grammar, and a note of every decode for cancelling's bound.
struct Verifying<'s, 'm> {
    model: &'m LlamaModel,
    sequence: &'s mut KvSequence<'m>,
    grammar: Option<&'s mut LlamaSampler>,
    cancel: &'s Cancel,
    /// While the healed text is being written again, only tokens that agree with it.
    healing: Option<HealState>,
    pieces: &'s OnceLock<PieceTable>,
}

impl Decoder for Verifying<'_, '_> {
    type Token = LlamaToken;
    type Error = ModelError;

    fn cached(&self) -> usize {
        self.sequence.cached.len()
    }

    fn decode(&mut self, tokens: &[LlamaToken], all_logits: bool) -> Result<(), ModelError> {
        self.sequence.decode(tokens, all_logits)?;
        self.cancel.note_decoded();
        Ok(())
    }

    fn choose(&mut self, index: i32) -> LlamaToken {
        self.sample(index)
    }

    fn truncate(&mut self, keep: usize) -> Result<(), ModelError> {
        self.sequence.truncate(keep)
    }
}

impl Verifying<'_, '_> {
    /// Greedy sampling. With a grammar, the free choice is checked against the grammar alone
    /// and the whole vocabulary is masked only when it is rejected: most tokens pass, and
    /// masking 262k candidates every token is what makes naive grammar sampling slow.
    fn sample(&mut self, logits_index: i32) -> LlamaToken {
        // Greedy is an argmax over the logits: cheaper than building llama.cpp's candidate
        // array of the whole vocabulary for every token.
        let logits = self.sequence.context.get_logits_ith(logits_index);
        if let Some(healing) = self
            .healing
            .as_mut()
            .filter(|healing| healing.constraining())
            && let Some(table) = self.pieces.get()
        {
            // The best-scoring token that agrees with the healed text (one always does: the
            // token taken off the prompt).
            let best = healing
                .allowed(table)
                .into_iter()
                .max_by(|&a, &b| logits[a as usize].total_cmp(&logits[b as usize]));
            if let Some(best) = best {
                let token = LlamaToken(best);
                healing.advance(&self.model.vocab().token_to_piece(token, false, None));
                return token;
            }
        }
        let token = argmax(logits);
        let Some(grammar) = self.grammar.as_deref_mut() else {
            return token;
        };
        // The greedy choice under a grammar is the best-scoring token it allows: try the
        // best few one by one, and mask the whole vocabulary only when none of them passes.
        // End-of-generation tokens come last: a finished grammar allows nothing else.
        let vocab = self.model.vocab();
        let ends = [vocab.eos(), vocab.eot()]
            .into_iter()
            .filter(|end| end.0 >= 0);
        let allowed = std::iter::once(token)
            .chain(
                best_tokens(logits, GRAMMAR_CANDIDATES)
                    .into_iter()
                    .filter(|&candidate| candidate != token),
            )
            .chain(ends)
            .find(|&candidate| {
                let logit = logits[candidate.0 as usize];
                let mut single = LlamaTokenDataArray::new(
                    vec![LlamaTokenData::new(candidate, logit, 0.0)],
                    false,
                );
                single.apply_sampler(grammar);
                single.data[0].logit().is_finite()
            });
        let token = allowed.unwrap_or_else(|| {
            let mut all = self.sequence.context.token_data_array_ith(logits_index);
            all.apply_sampler(grammar);
            all.sample_token_greedy()
        });
        grammar.accept(token);
        token
    }
}

/// The request's side of the loop: cancelling and the deadline, drafts, and the text
/// streamed as it is written (held back while it may be the start of a stop sequence).
struct Writing<'s, 'd> {
    model: &'s LlamaModel,
    cancel: &'s Cancel,
    deadline: Option<Instant>,
    draft: DraftMode,
    drafting: Option<&'s mut ModelDrafter<'d>>,
    draft_yields: u32,
    matcher: StopMatcher,
    text: String,
    undecoded_bytes: Vec<u8>,
    events: &'s UnboundedSender<GenerationEvent>,
    /// The healed text, left out of the answer as it is written again.
    healing: Option<HealState>,
}

impl Steps<LlamaToken> for Writing<'_, '_> {
    fn interrupted(&mut self) -> Option<StopReason> {
        if self.cancel.is_cancelled() {
            Some(StopReason::Cancelled)
        } else if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            Some(StopReason::TimeLimit)
        } else {
            None
        }
    }

    fn draft(&mut self, history: &[LlamaToken], limit: usize) -> Vec<LlamaToken> {
        if self.healing.as_ref().is_some_and(HealState::hiding) {
            // The next choices are constrained: a draft would be judged by other rules.
            return Vec::new();
        }
        match self.draft {
            DraftMode::Lookup {
                max_tokens,
                min_match,
            } => lookup_draft(history, min_match, max_tokens.min(limit)).to_vec(),
            DraftMode::Model { max_tokens } => draft_with_model(
                &mut self.drafting,
                history,
                max_tokens.min(limit),
                self.cancel,
                &mut self.draft_yields,
            ),
            DraftMode::Off => Vec::new(),
        }
    }

    fn write(&mut self, token: LlamaToken) -> Option<StopReason> {
        let vocab = self.model.vocab();
        if vocab.is_eog(token) {
            return Some(StopReason::EndOfGeneration);
        }
        self.undecoded_bytes
            .extend(vocab.token_to_piece(token, false, None));
        if let Some(healing) = self.healing.as_mut() {
            healing.hide(&mut self.undecoded_bytes);
        }
        let piece = take_valid_utf8(&mut self.undecoded_bytes);
        let (released, stop) = match self.matcher.push(&piece) {
            StopOutcome::Continue(released) => (released, None),
            StopOutcome::Stopped(released) => (released, Some(StopReason::StopSequence)),
        };
        if !released.is_empty() {
            self.text.push_str(&released);
            let _ = self.events.send(GenerationEvent::Piece(released));
        }
        stop
    }
}

fn argmax(logits: &[f32]) -> LlamaToken {
    let best = logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (id, &logit)| {
            if logit > best.1 { (id, logit) } else { best }
        });
    LlamaToken(best.0 as i32)
}

/// Candidates checked one by one against a grammar before masking the whole vocabulary.
const GRAMMAR_CANDIDATES: usize = 32;

/// The `k` highest-scoring tokens, best first, in one pass over the logits.
fn best_tokens(logits: &[f32], k: usize) -> Vec<LlamaToken> {
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    for (id, &logit) in logits.iter().enumerate() {
        if best.len() == k && best.last().is_some_and(|&(worst, _)| logit <= worst) {
            continue;
        }
        let at = best.partition_point(|&(other, _)| other >= logit);
        best.insert(at, (logit, id));
        best.truncate(k);
    }
    best.into_iter()
        .map(|(_, id)| LlamaToken(id as i32))
        .collect()
}

/// Takes the longest valid UTF-8 prefix out of `bytes`, leaving an incomplete trailing
/// character for the next token; invalid bytes become U+FFFD rather than vanishing.
fn take_valid_utf8(bytes: &mut Vec<u8>) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let text = text.to_owned();
            bytes.clear();
            text
        }
        Err(err) if err.error_len().is_none() => {
            let valid = err.valid_up_to();
            let text = String::from_utf8_lossy(&bytes[..valid]).into_owned();
            bytes.drain(..valid);
            text
        }
        Err(_) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            bytes.clear();
            text
        }
    }
}

/// The default test and demo model's location: `tests/fetch-test-model.sh` puts it there.
pub fn test_model_path() -> PathBuf {
    if let Some(path) = std::env::var_os("TIERLS_TEST_MODEL") {
        return PathBuf::from(path);
    }
    let cache = crate::models::hub::model_cache();
    cache.join("gemma-3-270m-q4_k_m.gguf")
}
