//! A worker node: an inference server reached over HTTP (llama.cpp's llama-server, Ollama,
//! vLLM…) behind the same `Model` interface as the embedded backend.
//!
//! Requests stream over server-sent events on a small runtime of their own, so callers on
//! any thread (the LSP runtime, the CLI, blocking plan workers) can submit. Between chunks
//! the request checks its cancel flag, its time limit, a stall timer and a byte cap;
//! dropping the response closes the HTTP stream, which is how a cancel reaches the node.

pub(crate) mod local;
pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::sync::mpsc::UnboundedSender;

use super::{Cancel, GenerationEvent, Model, ModelError, ModelInfo};
use crate::config::{NodeApi, NodeConfig};
use crate::core::generation::{GenerateRequest, Generation, Grammar, Prompt, StopReason, Usage};
use wire::{Finish, SlotPin, SseDecoder};

/// The runtime every HTTP request to a node runs on.
pub fn http_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tierls-http")
            .enable_all()
            .build()
            .expect("the HTTP runtime starts")
    })
}

/// Runs `future` on the HTTP runtime and waits for it from a plain thread.
pub fn block_on_http<T: Send + 'static>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let (sender, receiver) = std::sync::mpsc::channel();
    http_runtime().spawn(async move {
        let _ = sender.send(future.await);
    });
    receiver.recv().expect("HTTP tasks run to the end")
}

/// A single line of an event stream longer than this means a broken node.
const MAX_EVENT_LINE: usize = 1024 * 1024;
/// How often a waiting request looks at its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(20);
/// How long a request cancelled (or out of time) before its first token keeps its
/// connection open in the background, so that the node finishes reading the prompt: a node
/// that drops a half-read prompt keeps nothing of it (llama-server with a sliding-window
/// model saves its reusable checkpoint only when a prompt is read to the end), and the next
/// keystroke's request would read it all again.
const PREFILL_DRAIN: Duration = Duration::from_secs(10);
/// The most such background waits per node at once; past it, a cancel closes at once.
const MAX_DRAINS: u32 = 2;

#[derive(Clone)]
pub struct RemoteNode(Arc<Inner>);

struct Inner {
    config: NodeConfig,
    info: ModelInfo,
    client: reqwest::Client,
    /// Read from the environment variable the configuration names. Never logged: this type
    /// has no `Debug`, and errors name the variable, not its value.
    api_key: Option<String>,
    /// Cleared when the node answers that it cannot fill in the middle.
    infill: AtomicBool,
    /// Whether a probe has asked `/infill` yet.
    infill_checked: AtomicBool,
    /// How many slots llama-server has (`/slots`; 0 until a probe has read it).
    slots: AtomicU32,
    /// The slots our requests are pinned to now, one bit each.
    pinned: AtomicU64,
    /// Our requests in flight that are not pinned: llama-server put each in a slot we do
    /// not know, so no request may be pinned while there are any.
    unpinned: AtomicU32,
    /// The context per slot llama-server reports in `/props` (0 until known).
    context: AtomicU32,
    /// Cancelled requests still reading their prompt in the background, and the slots
    /// they hold (one bit each, for the pinned ones).
    draining: AtomicU32,
    draining_slots: AtomicU64,
    /// Woken when such a request ends.
    drained: tokio::sync::Notify,
    /// The process serving a loopback node, as the last probe found it (0: none).
    local_pid: AtomicU32,
}

/// What a health probe found.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub healthy: bool,
    /// Why not, or what the node said.
    pub detail: String,
    /// Busy and total slots, from llama-server's `/slots`.
    pub slots: Option<(usize, usize)>,
    pub metrics: wire::NodeMetrics,
    pub latency: Duration,
    /// The resident memory of the node's process, when it runs on this machine.
    pub memory: Option<u64>,
}

impl RemoteNode {
    pub fn new(config: NodeConfig) -> Result<Self, String> {
        let api_key = match &config.api_key_env {
            None => None,
            Some(variable) => Some(std::env::var(variable).map_err(|_| {
                format!(
                    "node `{}`: the environment variable `{variable}` (its `api_key_env`) is not set",
                    config.name
                )
            })?),
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A fresh connection per request: servers close idle keep-alive connections
            // (llama-server after a few seconds), and a request sent on one that is closing
            // fails for no fault of the node. A connection costs far less than a token.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|err| format!("node `{}`: {err}", config.name))?;
        let info = ModelInfo {
            path: PathBuf::from(format!("{} ({})", config.name, config.url)),
            n_ctx: 8192,
            n_ctx_train: 8192,
            has_fim: false,
            slots: config.concurrency as usize,
        };
        Ok(RemoteNode(Arc::new(Inner {
            infill: AtomicBool::new(config.api == NodeApi::LlamaServer),
            context: AtomicU32::new(0),
            draining: AtomicU32::new(0),
            draining_slots: AtomicU64::new(0),
            drained: tokio::sync::Notify::new(),
            local_pid: AtomicU32::new(0),
            infill_checked: AtomicBool::new(false),
            slots: AtomicU32::new(0),
            pinned: AtomicU64::new(0),
            unpinned: AtomicU32::new(0),
            config,
            info,
            client,
            api_key,
        })))
    }

    pub fn config(&self) -> &NodeConfig {
        &self.0.config
    }

    /// Whether the node fills in the middle with its model's FIM tokens (`/infill`), as a
    /// probe found. Completions then send prefix, suffix and context by file.
    pub fn fills_in_the_middle(&self) -> bool {
        self.0.infill_checked.load(Ordering::Relaxed) && self.0.infill.load(Ordering::Relaxed)
    }

    /// The context per slot, once a probe has read it from llama-server's `/props`.
    pub fn context(&self) -> Option<u32> {
        Some(self.0.context.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// Asks the node whether it can serve: `/health` on llama-server (which answers 503
    /// while loading), `/v1/models` elsewhere; then the load figures llama-server offers.
    pub async fn probe(&self, timeout: Duration) -> Probe {
        let started = Instant::now();
        let inner = &self.0;
        let path = match inner.config.api {
            NodeApi::LlamaServer => "/health",
            NodeApi::Openai => "/v1/models",
        };
        let answer = tokio::time::timeout(timeout, inner.get(path)).await;
        let latency = started.elapsed();
        let (healthy, detail) = match answer {
            Err(_) => (false, format!("no answer to {path} within {timeout:?}")),
            Ok(Err(err)) => (false, err),
            Ok(Ok((status, _))) if status.is_success() => (true, "ok".to_owned()),
            Ok(Ok((status, body))) => (false, wire::error_message(status.as_u16(), &body)),
        };
        let mut probe = Probe {
            healthy,
            detail,
            slots: None,
            metrics: wire::NodeMetrics::default(),
            latency,
            memory: None,
        };
        if healthy {
            probe.memory = self.local_memory(timeout).await;
        }
        if healthy && inner.config.api == NodeApi::LlamaServer {
            if let Ok(Ok((status, body))) = tokio::time::timeout(timeout, inner.get("/props")).await
                && status.is_success()
                && let Some(n_ctx) = wire::parse_context(&body)
            {
                inner.context.store(n_ctx, Ordering::Relaxed);
            }
            if !inner.infill_checked.load(Ordering::Relaxed) {
                // A one-token fill: llama-server answers 501 when the model has no FIM tokens.
                let body =
                    serde_json::json!({ "input_prefix": "a", "input_suffix": "b", "n_predict": 1 });
                if let Ok(Ok(response)) =
                    tokio::time::timeout(timeout, inner.post("/infill", &body).send()).await
                {
                    let status = response.status();
                    if status == StatusCode::NOT_IMPLEMENTED {
                        inner.infill.store(false, Ordering::Relaxed);
                    }
                    if status.is_success() || status == StatusCode::NOT_IMPLEMENTED {
                        inner.infill_checked.store(true, Ordering::Relaxed);
                    }
                }
            }
            if let Ok(Ok((status, body))) = tokio::time::timeout(timeout, inner.get("/slots")).await
                && status.is_success()
            {
                probe.slots = wire::parse_slots(&body);
                if let Some((_, total)) = probe.slots {
                    inner.slots.store(total as u32, Ordering::Relaxed);
                }
            }
            if let Ok(Ok((status, body))) =
                tokio::time::timeout(timeout, inner.get("/metrics")).await
                && status.is_success()
            {
                probe.metrics = wire::parse_metrics(&String::from_utf8_lossy(&body));
            }
        }
        probe
    }
}

impl RemoteNode {
    /// The resident memory of the process serving this node, when it listens on loopback
    /// here: found through `/proc` off the runtime, within `timeout`.
    async fn local_memory(&self, timeout: Duration) -> Option<u64> {
        let url = self.0.config.url.clone();
        let known = Some(self.0.local_pid.load(Ordering::Relaxed)).filter(|&pid| pid > 0);
        let lookup = tokio::task::spawn_blocking(move || local::resident_memory(&url, known));
        let (pid, bytes) = tokio::time::timeout(timeout, lookup).await.ok()?.ok()??;
        self.0.local_pid.store(pid, Ordering::Relaxed);
        Some(bytes)
    }
}

impl Model for RemoteNode {
    fn info(&self) -> &ModelInfo {
        &self.0.info
    }

    fn submit(
        &self,
        slot: usize,
        request: GenerateRequest,
        cancel: Cancel,
        events: UnboundedSender<GenerationEvent>,
    ) {
        let inner = self.0.clone();
        http_runtime().spawn(async move {
            let result = inner.generate(slot, &request, &cancel, &events).await;
            let _ = events.send(GenerationEvent::Done(result));
        });
    }
}

impl Inner {
    fn error(&self, reason: impl Into<String>) -> ModelError {
        ModelError::Node {
            node: self.config.name.clone(),
            reason: reason.into(),
        }
    }

    fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        let request = self
            .client
            .post(format!("{}{path}", self.config.url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, Vec<u8>), String> {
        let mut request = self.client.get(format!("{}{path}", self.config.url));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(describe)?;
        let status = response.status();
        // Health and load answers are small; a node that sends more is not believed.
        let body = read_capped(response, 4 * 1024 * 1024).await?;
        Ok((status, body))
    }

    async fn generate(
        self: &Arc<Self>,
        slot: usize,
        request: &GenerateRequest,
        cancel: &Cancel,
        events: &UnboundedSender<GenerationEvent>,
    ) -> Result<Generation, ModelError> {
        let started = Instant::now();
        let deadline = request.time_limit.map(|limit| started + limit);
        let rendered = match (&self.config.api, &request.prompt) {
            (NodeApi::LlamaServer, Prompt::Chat(messages)) => {
                let body = wire::template_body(messages);
                let response = match self
                    .send(self.post("/apply-template", &body), cancel, deadline, None)
                    .await?
                {
                    Sent::Answer(response) => response,
                    Sent::Cancelled => return Ok(cancelled(started)),
                    Sent::OutOfTime => return Ok(out_of_time(started)),
                };
                let status = response.status();
                let body = self
                    .read_body(response, 4 * 1024 * 1024, deadline)
                    .await
                    .map_err(|err| self.error(err))?;
                if !status.is_success() {
                    return Err(self.error(wire::error_message(status.as_u16(), &body)));
                }
                Some(wire::rendered_prompt(&body).map_err(|err| self.error(err))?)
            }
            _ => None,
        };
        // The previous request on this slot (this document's last keystroke) may still be
        // reading its prompt: wait for it rather than queue behind it on the node, or take a
        // slot without this document's prefix. A request superseded meanwhile is never sent.
        if !self.wait_for_the_slot(slot, cancel, deadline).await {
            return Ok(if cancel.is_cancelled() {
                cancelled(started)
            } else {
                out_of_time(started)
            });
        }
        let claim = Arc::new(self.claim_slot(slot));
        let pin = match &*claim {
            SlotClaim::Pinned { slot, .. } => Some(SlotPin(*slot)),
            SlotClaim::Unpinned { .. } => None,
        };
        loop {
            let infill = self.infill.load(Ordering::Relaxed);
            let wire = wire::request_body(
                self.config.api,
                self.config.model.as_deref(),
                request,
                pin,
                rendered.as_deref(),
                infill,
            );
            let response = match self
                .send(
                    self.post(wire.path, &wire.body),
                    cancel,
                    deadline,
                    Some(&claim),
                )
                .await?
            {
                Sent::Answer(response) => response,
                Sent::Cancelled => return Ok(cancelled(started)),
                Sent::OutOfTime => return Ok(out_of_time(started)),
            };
            let status = response.status();
            if status == StatusCode::NOT_IMPLEMENTED && wire.path == "/infill" {
                // The node's model has no FIM tokens: continue the prefix instead, as the
                // embedded backend does.
                tracing::info!(node = %self.config.name, "no /infill on this node: continuing the prefix");
                self.infill.store(false, Ordering::Relaxed);
                continue;
            }
            if !status.is_success() {
                let body = self
                    .read_body(response, 64 * 1024, deadline)
                    .await
                    .unwrap_or_default();
                let reason = wire::error_message(status.as_u16(), &body);
                let busy_or_slow = [StatusCode::REQUEST_TIMEOUT, StatusCode::TOO_MANY_REQUESTS];
                if status.is_client_error() && !busy_or_slow.contains(&status) {
                    return Err(ModelError::Refused {
                        node: self.config.name.clone(),
                        reason,
                    });
                }
                return Err(self.error(reason));
            }
            let generation = self
                .stream(
                    response,
                    (request, wire.hidden),
                    cancel,
                    events,
                    started,
                    deadline,
                    &claim,
                )
                .await?;
            return self.check_grammar(request, generation);
        }
    }

    /// Pins the request to llama-server slot `slot` (modulo the slots `/slots` reported), or
    /// to another slot none of our requests holds, so that our requests never share one.
    /// llama-server refuses a slot id it does not have, and makes a request pinned to a
    /// busy slot wait for it (with one thread, it then hardly progresses at all, and
    /// cancelling such a waiting request left a llama-server spinning with nothing served).
    /// A request goes unpinned only when every slot is held; llama-server then puts it in
    /// whichever slot frees first, so nothing is pinned again until it is done.
    fn claim_slot(self: &Arc<Self>, slot: usize) -> SlotClaim {
        let slots = (self.slots.load(Ordering::Relaxed) as usize).min(64);
        let unpinned = |inner: &Arc<Self>| {
            inner.unpinned.fetch_add(1, Ordering::AcqRel);
            SlotClaim::Unpinned {
                inner: inner.clone(),
            }
        };
        if slots == 0 || self.unpinned.load(Ordering::Acquire) > 0 {
            return unpinned(self);
        }
        // The preferred slot first (its KV cache holds this document's prefix), then the rest.
        for candidate in (0..slots).map(|offset| (slot + offset) % slots) {
            let bit = 1u64 << candidate;
            if self.pinned.fetch_or(bit, Ordering::AcqRel) & bit == 0 {
                return SlotClaim::Pinned {
                    inner: self.clone(),
                    slot: candidate,
                };
            }
        }
        unpinned(self)
    }

    /// A whole (small) answer body, within the stall timeout and the request's deadline.
    async fn read_body(
        &self,
        response: reqwest::Response,
        cap: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, String> {
        let stall = Duration::from_secs(self.config.stall_seconds.into());
        let wait = until(deadline).map_or(stall, |left| left.min(stall));
        tokio::time::timeout(wait, read_capped(response, cap))
            .await
            .map_err(|_| format!("the answer stalled: nothing for {}s", wait.as_secs()))?
    }

    /// Sends the request and waits for the answer's head, within `first_token_seconds` and
    /// the request's own deadline: connecting and waiting for the head count against an
    /// interactive request's budget like every other wait. A generation request (`claim`)
    /// cancelled or out of time first goes on reading its prompt in the background.
    async fn send(
        self: &Arc<Self>,
        request: reqwest::RequestBuilder,
        cancel: &Cancel,
        deadline: Option<Instant>,
        claim: Option<&Arc<SlotClaim>>,
    ) -> Result<Sent, ModelError> {
        let first_token = Duration::from_secs(self.config.first_token_seconds.into());
        let wait = until(deadline).map_or(first_token, |left| left.min(first_token));
        let mut pending: PendingHead = Box::pin(request.send());
        let outcome = until_cancelled(cancel, tokio::time::timeout(wait, &mut pending)).await;
        let gave_up = match outcome {
            Some(Ok(Ok(response))) => return Ok(Sent::Answer(response)),
            Some(Ok(Err(err))) => return Err(self.error(describe(err))),
            Some(Err(_)) if !past(deadline) => {
                return Err(self.error(format!("no answer within {}s", wait.as_secs())));
            }
            Some(Err(_)) => Sent::OutOfTime,
            None => Sent::Cancelled,
        };
        if let Some(claim) = claim {
            self.finish_prefill(Prefill::Head(pending), claim.clone());
        }
        Ok(gave_up)
    }

    /// Lets a request that was given up before its first token finish reading its prompt on
    /// the node, in the background, within [`PREFILL_DRAIN`], holding its slot: the node
    /// keeps the prompt's cache for the next request. At most [`MAX_DRAINS`] per node;
    /// past that the connection closes at once, as it always did.
    fn finish_prefill(self: &Arc<Self>, prefill: Prefill, claim: Arc<SlotClaim>) {
        if self.draining.fetch_add(1, Ordering::AcqRel) >= MAX_DRAINS {
            self.draining.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let pinned = match &*claim {
            SlotClaim::Pinned { slot, .. } => 1u64 << *slot,
            SlotClaim::Unpinned { .. } => 0,
        };
        self.draining_slots.fetch_or(pinned, Ordering::AcqRel);
        let inner = self.clone();
        http_runtime().spawn(async move {
            let began = Instant::now();
            let _ = tokio::time::timeout(PREFILL_DRAIN, async {
                let mut response = match prefill {
                    Prefill::Head(pending) => match pending.await {
                        Ok(response) => response,
                        Err(_) => return,
                    },
                    Prefill::Body(response) => response,
                };
                // The first bytes of the answer: the prompt is read.
                let _ = response.chunk().await;
            })
            .await;
            tracing::debug!(node = %inner.config.name, "a request given up before its first token read its prompt to the end in {:?}", began.elapsed());
            inner.draining_slots.fetch_and(!pinned, Ordering::AcqRel);
            drop(claim);
            inner.draining.fetch_sub(1, Ordering::AcqRel);
            inner.drained.notify_waiters();
        });
    }

    /// Waits while the slot `slot` prefers is held by a request still reading its prompt
    /// in the background; false when cancelled or out of time first.
    async fn wait_for_the_slot(
        &self,
        slot: usize,
        cancel: &Cancel,
        deadline: Option<Instant>,
    ) -> bool {
        let slots = (self.slots.load(Ordering::Relaxed) as usize).min(64);
        if slots == 0 {
            return true;
        }
        let bit = 1u64 << (slot % slots);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.draining_slots.load(Ordering::Acquire) & bit == 0 {
                return true;
            }
            if cancel.is_cancelled() || past(deadline) {
                return false;
            }
            let wait = until(deadline).map_or(CANCEL_POLL, |left| left.min(CANCEL_POLL));
            let _ = tokio::time::timeout(wait, drained).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn stream(
        self: &Arc<Self>,
        mut response: reqwest::Response,
        (request, hidden): (&GenerateRequest, usize),
        cancel: &Cancel,
        events: &UnboundedSender<GenerationEvent>,
        started: Instant,
        deadline: Option<Instant>,
        claim: &Arc<SlotClaim>,
    ) -> Result<Generation, ModelError> {
        let max_bytes = 1024 * 1024 + request.max_tokens as usize * 4096;
        let first_token = Duration::from_secs(self.config.first_token_seconds.into());
        let stall = Duration::from_secs(self.config.stall_seconds.into());
        let mut decoder = SseDecoder::new(MAX_EVENT_LINE);
        let mut so_far = SoFar {
            text: String::new(),
            usage: Usage::default(),
            pieces: 0,
            max_tokens: request.max_tokens + if hidden > 0 { wire::HEALED_TOKENS } else { 0 },
            hidden,
        };
        let mut received = 0usize;
        let mut first_piece_at = None;
        let mut ended = false;
        let stop_reason = 'read: loop {
            let wait = if so_far.pieces == 0 {
                first_token
            } else {
                stall
            };
            let wait = match deadline {
                Some(deadline) => wait.min(deadline.saturating_duration_since(Instant::now())),
                None => wait,
            };
            let next = until_cancelled(cancel, tokio::time::timeout(wait, response.chunk())).await;
            let bytes = match next {
                None => break StopReason::Cancelled,
                Some(Err(_)) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    break StopReason::TimeLimit;
                }
                Some(Err(_)) => {
                    return Err(self.error(if so_far.pieces == 0 {
                        format!("no token within {}s", wait.as_secs())
                    } else {
                        format!("the stream stalled: nothing for {}s", wait.as_secs())
                    }));
                }
                Some(Ok(Err(err))) => return Err(self.error(describe(err))),
                Some(Ok(Ok(None))) => {
                    let rest = decoder.finish();
                    match rest {
                        Some(data) if !ended => {
                            if let Some(reason) = self.take(&data, &mut so_far, events, cancel)? {
                                break reason;
                            }
                        }
                        _ => {}
                    }
                    if ended {
                        break StopReason::EndOfGeneration;
                    }
                    return Err(self.error("the stream ended before the answer did"));
                }
                Some(Ok(Ok(Some(bytes)))) => bytes,
            };
            received += bytes.len();
            if received > max_bytes {
                return Err(self.error(format!(
                    "the answer passed {} MiB for {} tokens: the node is broken",
                    max_bytes / (1024 * 1024),
                    request.max_tokens
                )));
            }
            let datas = decoder.push(&bytes).map_err(|err| self.error(err))?;
            // Bytes arrived: the first piece, if any, is in them.
            if first_piece_at.is_none() && !datas.is_empty() {
                first_piece_at = Some(Instant::now());
            }
            for data in datas {
                if data.trim() == "[DONE]" {
                    ended = true;
                    continue;
                }
                if let Some(reason) = self.take(&data, &mut so_far, events, cancel)? {
                    break 'read reason;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break StopReason::TimeLimit;
            }
        };
        let given_up = matches!(stop_reason, StopReason::Cancelled | StopReason::TimeLimit);
        if given_up && received == 0 {
            self.finish_prefill(Prefill::Body(response), claim.clone());
        } else {
            drop(response);
        }
        let first = first_piece_at.unwrap_or_else(Instant::now);
        let SoFar {
            text,
            mut usage,
            pieces,
            ..
        } = so_far;
        usage.prompt_time = first.saturating_duration_since(started);
        usage.generation_time = first.elapsed();
        if usage.generated_tokens == 0 {
            usage.generated_tokens = pieces;
        }
        Ok(Generation {
            text,
            stop_reason,
            usage,
        })
    }

    /// Takes one event: streams its text and returns the stop reason when it is the last.
    fn take(
        &self,
        data: &str,
        so_far: &mut SoFar,
        events: &UnboundedSender<GenerationEvent>,
        cancel: &Cancel,
    ) -> Result<Option<StopReason>, ModelError> {
        let Some(chunk) = wire::parse_chunk(self.config.api, data).map_err(|e| self.error(e))?
        else {
            return Ok(Some(StopReason::EndOfGeneration));
        };
        let SoFar {
            text,
            usage,
            pieces,
            max_tokens,
            hidden,
        } = so_far;
        let mut chunk = chunk;
        if !chunk.text.is_empty() {
            *pieces += 1;
            cancel.note_decoded();
            if *hidden > 0 {
                // The healed word, written again by the node: not part of the answer.
                let cut = (*hidden).min(chunk.text.len());
                chunk.text = chunk.text.get(cut..).unwrap_or_default().to_owned();
                *hidden -= cut;
            }
            if !chunk.text.is_empty() {
                text.push_str(&chunk.text);
                let _ = events.send(GenerationEvent::Piece(chunk.text));
            }
            if *pieces > *max_tokens {
                // Every piece holds at least one token: a node that keeps sending past the
                // tokens asked for is stopped here, not trusted to stop itself. (At exactly
                // `max_tokens`, the node's last event, with its figures, is still to come.)
                return Ok(Some(StopReason::MaxTokens));
            }
        }
        if let Some(n) = chunk.prompt_tokens {
            usage.prompt_tokens = n;
            usage.evaluated_tokens = n;
        }
        if let Some(n) = chunk.evaluated_tokens {
            usage.evaluated_tokens = n;
        }
        if let Some(n) = chunk.generated_tokens {
            usage.generated_tokens = n;
        }
        Ok(chunk.finish.map(|finish| match finish {
            Finish::Length => StopReason::MaxTokens,
            Finish::Stop => StopReason::EndOfGeneration,
        }))
    }

    /// A finished answer to a JSON-schema request must be JSON: a node that ignored the
    /// grammar is a failing node, so the router can ask another.
    fn check_grammar(
        &self,
        request: &GenerateRequest,
        generation: Generation,
    ) -> Result<Generation, ModelError> {
        let finished = generation.stop_reason == StopReason::EndOfGeneration;
        if finished
            && matches!(request.grammar, Some(Grammar::JsonSchema(_)))
            && serde_json::from_str::<serde_json::Value>(&generation.text).is_err()
        {
            return Err(self.error(format!(
                "the answer breaks the requested JSON schema: `{}`",
                generation.text.chars().take(80).collect::<String>()
            )));
        }
        Ok(generation)
    }
}

/// What a streamed answer has brought so far.
struct SoFar {
    text: String,
    usage: Usage,
    pieces: u32,
    /// The tokens asked for: more pieces than this is a node that does not stop.
    max_tokens: u32,
    /// Bytes still to leave out of the answer's start (the healed word).
    hidden: usize,
}

/// How one request of ours sits on the node's slots; dropping it frees what it held.
enum SlotClaim {
    Pinned { inner: Arc<Inner>, slot: usize },
    Unpinned { inner: Arc<Inner> },
}

impl Drop for SlotClaim {
    fn drop(&mut self) {
        match self {
            SlotClaim::Pinned { inner, slot } => {
                inner.pinned.fetch_and(!(1u64 << *slot), Ordering::AcqRel);
            }
            SlotClaim::Unpinned { inner } => {
                inner.unpinned.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// What waiting for an answer's head came to.
enum Sent {
    Answer(reqwest::Response),
    Cancelled,
    /// The request's deadline passed first.
    OutOfTime,
}

/// A sent request waiting for its answer's head.
type PendingHead =
    std::pin::Pin<Box<dyn std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send>>;

/// A request given up before its first token, at the point it had reached.
enum Prefill {
    /// Still waiting for the answer's head.
    Head(PendingHead),
    /// The head arrived; no byte of the answer yet.
    Body(reqwest::Response),
}

/// The time left until `deadline`, if there is one.
fn until(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()))
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|deadline| Instant::now() >= deadline)
}

/// The deadline passed before the node said anything: nothing to show, in time.
fn out_of_time(started: Instant) -> Generation {
    Generation {
        stop_reason: StopReason::TimeLimit,
        ..cancelled(started)
    }
}

fn cancelled(started: Instant) -> Generation {
    Generation {
        text: String::new(),
        stop_reason: StopReason::Cancelled,
        usage: Usage {
            prompt_time: started.elapsed(),
            ..Usage::default()
        },
    }
}

/// Runs `future` unless the cancel flag goes up first (`None`).
async fn until_cancelled<T>(
    cancel: &Cancel,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(future);
    let mut poll = tokio::time::interval(CANCEL_POLL);
    loop {
        tokio::select! {
            value = &mut future => return Some(value),
            _ = poll.tick() => if cancel.is_cancelled() { return None },
        }
    }
}

async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        body.extend_from_slice(&chunk);
        if body.len() > cap {
            return Err(format!("the answer passed {cap} bytes"));
        }
    }
    Ok(body)
}

/// A transport error in words, without the URL's query or any header.
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    if err.is_connect() {
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&err);
        while let Some(inner) = source {
            if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                return format!("cannot connect: {io}");
            }
            source = inner.source();
        }
        return "cannot connect".to_owned();
    }
    if err.is_timeout() {
        return "timed out".to_owned();
    }
    let mut message = err.to_string();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&err);
    while let Some(inner) = source {
        message = format!("{message}: {inner}");
        source = inner.source();
    }
    message
}
