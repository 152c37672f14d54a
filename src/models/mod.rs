//! Models: the interface every model call goes through, and its backends.
//!
//! A backend runs inference on threads of its own and streams events back over a channel,
//! so async callers never block the runtime and a cancel flag is seen between tokens.

pub mod embedded;
pub mod fit;
pub mod gguf;
pub mod hub;
pub mod loopback_hub;
pub mod machine;
pub mod remote;
pub mod router;
pub mod scripted;
pub mod tiers;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::sync::mpsc::UnboundedSender;

use crate::config::Tier;
use crate::core::generation::{GenerateRequest, Generation};

/// What a running generation reports, in order: pieces of text, then exactly one `Done`.
#[derive(Debug)]
pub enum GenerationEvent {
    Piece(String),
    Done(Result<Generation, ModelError>),
}

/// A flag the caller raises to stop a generation; the backend checks it between tokens. It
/// also counts the tokens decoded, so that the work done after a cancel can be measured.
#[derive(Clone, Debug)]
pub struct Cancel(Arc<CancelState>);

#[derive(Debug)]
struct CancelState {
    raised: AtomicBool,
    decoded: AtomicU32,
    decoded_at_cancel: AtomicU32,
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel(Arc::new(CancelState {
            raised: AtomicBool::new(false),
            decoded: AtomicU32::new(0),
            decoded_at_cancel: AtomicU32::new(0),
        }))
    }
}

impl Cancel {
    pub fn new() -> Self {
        Cancel::default()
    }

    pub fn cancel(&self) {
        if !self.0.raised.swap(true, Ordering::SeqCst) {
            self.0
                .decoded_at_cancel
                .store(self.0.decoded.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.raised.load(Ordering::SeqCst)
    }

    /// Whether two handles are the same cancellation.
    pub fn same_as(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Called by backends after each generated token is decoded.
    pub fn note_decoded(&self) {
        self.0.decoded.fetch_add(1, Ordering::SeqCst);
    }

    /// Tokens decoded after the cancel was raised: the work a cancel wasted.
    pub fn decoded_after_cancel(&self) -> u32 {
        if !self.is_cancelled() {
            return 0;
        }
        self.0
            .decoded
            .load(Ordering::SeqCst)
            .saturating_sub(self.0.decoded_at_cancel.load(Ordering::SeqCst))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path}: not found")]
    NotFound { path: PathBuf },
    #[error("model file {path}: not a GGUF file ({reason})")]
    NotGguf { path: PathBuf, reason: String },
    #[error("model file {path}: llama.cpp could not load it (truncated or corrupt?)")]
    LoadFailed { path: PathBuf },
    #[error("model {path}: could not create a context of {n_ctx} tokens")]
    ContextFailed { path: PathBuf, n_ctx: u32 },
    #[error(
        "context of {requested} tokens is longer than the model's training context of {trained}"
    )]
    ContextTooLong { requested: u32, trained: u32 },
    #[error(
        "the prompt has {prompt_tokens} tokens, but the context holds {n_ctx} (leave room for the answer)"
    )]
    PromptTooLong { prompt_tokens: u32, n_ctx: u32 },
    #[error("the grammar does not parse: {0}")]
    BadGrammar(String),
    #[error("llama.cpp failed to decode: {0}")]
    Decode(String),
    #[error("the model's worker stopped")]
    WorkerGone,
    #[error("model {path}: does not fit: it needs {needed}, {available} available; {hint}")]
    DoesNotFit {
        path: PathBuf,
        needed: String,
        available: String,
        hint: String,
    },
    #[error("no model is configured for the {tier} tier (set `tiers.{tier}.model`)")]
    TierNotConfigured { tier: Tier },
    #[error(
        "the {tier} tier is paused while the planner uses this machine's memory; it comes back when the plan is done"
    )]
    TierPaused { tier: Tier },
    #[error("the {tier} tier is loading its model")]
    TierLoading { tier: Tier },
    #[error("the {tier} tier's model is not loaded")]
    TierNotLoaded { tier: Tier },
    #[error("model {path}: loading was cancelled")]
    LoadCancelled { path: PathBuf },
    #[error(
        "model {path}: it has no chat template, and chat prompts need one (set the tier's `chat_template`, for example \"gemma\" or \"chatml\")"
    )]
    NoChatTemplate { path: PathBuf },
    #[error("the chat template could not render the conversation: {0}")]
    ChatTemplate(String),
    #[error("node `{node}`: {reason}")]
    Node { node: String, reason: String },
    /// The node understood the request and refused it (HTTP 4xx): the request's fault, not
    /// the node's, so the router neither retries it nor holds it against the node.
    #[error("node `{node}` refused the request: {reason}")]
    Refused { node: String, reason: String },
    #[error("{reason}")]
    NoNode { tier: Tier, reason: String },
}

/// What callers know about a loaded model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub n_ctx: u32,
    pub n_ctx_train: u32,
    pub has_fim: bool,
    pub slots: usize,
}

/// Whether a model can take work now, for the routing rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Availability {
    /// Some backend behind it can answer (a node is healthy; a loaded model always is).
    pub usable: bool,
    /// It has a free slot: a request would not wait behind others.
    pub idle: bool,
}

/// Speculative decoding's figures for one model: generations that drafted, and the
/// tokens drafted and accepted in them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DraftStats {
    pub requests: u64,
    pub drafted: u64,
    pub accepted: u64,
    /// Drafts not made because the draft model's own tier was answering (completions
    /// come first).
    pub yielded: u64,
}

/// [`DraftStats`] counted by a backend's workers.
#[derive(Debug, Default)]
pub struct DraftCounters {
    requests: std::sync::atomic::AtomicU64,
    drafted: std::sync::atomic::AtomicU64,
    accepted: std::sync::atomic::AtomicU64,
    yielded: std::sync::atomic::AtomicU64,
}

impl DraftCounters {
    pub fn add(&self, usage: &crate::core::generation::Usage) {
        use std::sync::atomic::Ordering::Relaxed;
        self.requests.fetch_add(1, Relaxed);
        self.drafted.fetch_add(usage.drafted_tokens.into(), Relaxed);
        self.accepted
            .fetch_add(usage.accepted_tokens.into(), Relaxed);
        self.yielded.fetch_add(usage.draft_yields.into(), Relaxed);
    }

    pub fn get(&self) -> DraftStats {
        use std::sync::atomic::Ordering::Relaxed;
        DraftStats {
            requests: self.requests.load(Relaxed),
            drafted: self.drafted.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            yielded: self.yielded.load(Relaxed),
        }
    }
}

/// Every backend: embedded llama.cpp, worker nodes, the router over them, scripted models.
pub trait Model: Send + Sync {
    fn info(&self) -> &ModelInfo;

    /// Speculative decoding's figures since the model loaded, when it drafts.
    fn drafting(&self) -> Option<DraftStats> {
        None
    }

    /// Whether it can take work now; a model that cannot tell says it can.
    fn availability(&self) -> Availability {
        Availability {
            usable: true,
            idle: true,
        }
    }

    /// Queues `request` on `slot` (slots keep their own KV cache, so a follow-up on the same
    /// slot reuses the common prefix). Events arrive on `events`; never blocks.
    fn submit(
        &self,
        slot: usize,
        request: GenerateRequest,
        cancel: Cancel,
        events: UnboundedSender<GenerationEvent>,
    );
}

/// Runs a request to the end, collecting the text: a convenience for callers that do not
/// stream.
pub async fn generate(
    model: &dyn Model,
    slot: usize,
    request: GenerateRequest,
    cancel: Cancel,
) -> Result<Generation, ModelError> {
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    model.submit(slot, request, cancel, sender);
    while let Some(event) = events.recv().await {
        if let GenerationEvent::Done(result) = event {
            return result;
        }
    }
    Err(ModelError::WorkerGone)
}
