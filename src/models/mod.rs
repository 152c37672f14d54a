//! Models: the interface every model call goes through, and its backends.
//!
//! A backend runs inference on threads of its own and streams events back over a channel,
//! so async callers never block the runtime and a cancel flag is seen between tokens.

pub mod embedded;
pub mod fit;
pub mod gguf;
pub mod machine;
pub mod tiers;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc::UnboundedSender;

use crate::config::Tier;
use crate::core::generation::{GenerateRequest, Generation};

/// What a running generation reports, in order: pieces of text, then exactly one `Done`.
#[derive(Debug)]
pub enum GenerationEvent {
    Piece(String),
    Done(Result<Generation, ModelError>),
}

/// A flag the caller raises to stop a generation; the backend checks it between tokens.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Cancel::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The shared flag, to tell two handles of one cancellation apart from others.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
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
    #[error("model {path}: it has no chat template, and chat prompts need one")]
    NoChatTemplate { path: PathBuf },
    #[error("the chat template could not render the conversation: {0}")]
    ChatTemplate(String),
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

/// Every backend: embedded llama.cpp now, remote inference servers later.
pub trait Model: Send + Sync {
    fn info(&self) -> &ModelInfo;

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
