//! The completion engine around the fast tier: one suggestion in flight per document (a new
//! request cancels the old one, which stops decoding within a token), a debounce, a time
//! budget, and a cache that serves the rest of a suggestion while the user types its start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod explain;

use crate::core::completion::{CompletionPlan, finish_suggestion};
use crate::core::generation::{GenerateRequest, StopReason, Usage};
use crate::models::{Cancel, Model, ModelError, generate};
use crate::sync::lock;

#[derive(Clone, Debug, PartialEq)]
pub enum Completed {
    /// A suggestion for the cursor.
    Suggestion {
        text: String,
        from_cache: bool,
        usage: Option<Usage>,
    },
    /// Nothing to show: superseded, cancelled, or the model had nothing.
    Nothing,
}

/// How long to wait before asking the model, and how long it may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub debounce: Duration,
    pub budget: Duration,
}

/// What the engine did, for `tierls/completionStats` and `tierls bench completion`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineStats {
    pub requests: u32,
    pub cache_hits: u32,
    /// Generations stopped because a newer request (or the editor) cancelled them.
    pub cancelled: u32,
    /// Tokens decoded after their cancel was raised, summed, and the most for one request.
    pub wasted_tokens: u32,
    pub most_wasted_tokens: u32,
    /// Generations the time budget cut before they finished: their suggestion, if any, is
    /// only the start of what the model would have written.
    pub cut_by_budget: u32,
    /// One per finished generation, in order: the most recent [`MAX_SAMPLES`] to
    /// [`2 * MAX_SAMPLES`](MAX_SAMPLES) of them, so that a day-long session stays bounded.
    pub generations: Vec<GenerationSample>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationSample {
    pub prompt_tokens: u32,
    pub evaluated_tokens: u32,
    pub generated_tokens: u32,
    /// Time to the first generated token: prefill of the tokens not in the cache.
    pub first_token_ms: f64,
    pub total_ms: f64,
    /// The time budget ended it (see [`EngineStats::cut_by_budget`]).
    #[serde(default)]
    pub cut_by_budget: bool,
}

/// How many generation samples the statistics keep (at least).
pub const MAX_SAMPLES: usize = 512;

/// How many documents' last suggestions the cache keeps; a closed document's goes at once.
const MAX_CACHED_DOCUMENTS: usize = 64;

struct Cached {
    /// The document text before the cursor when the suggestion was made.
    prefix: String,
    suggestion: String,
}

#[derive(Default)]
pub struct CompletionEngine {
    inflight: Mutex<HashMap<String, Cancel>>,
    cache: Mutex<HashMap<String, Cached>>,
    stats: Mutex<EngineStats>,
}

impl CompletionEngine {
    /// The rest of the last suggestion for `document`, when the text before the cursor is
    /// the old one plus a start of that suggestion.
    pub fn from_cache(&self, document: &str, prefix: &str) -> Option<String> {
        let cache = lock(&self.cache);
        let cached = cache.get(document)?;
        let typed = prefix.strip_prefix(cached.prefix.as_str())?;
        let rest = cached.suggestion.strip_prefix(typed)?;
        (!rest.is_empty()).then(|| rest.to_owned())
    }

    pub fn stats(&self) -> EngineStats {
        lock(&self.stats).clone()
    }

    /// Cancels what runs for `document` (a newer request, or the document closed).
    pub fn cancel(&self, document: &str) {
        if let Some(cancel) = lock(&self.inflight).remove(document) {
            cancel.cancel();
        }
    }

    /// The document closed: cancel its work and drop its cached suggestion.
    pub fn forget(&self, document: &str) {
        self.cancel(document);
        lock(&self.cache).remove(document);
    }

    /// How many documents have a cached suggestion (for the memory benchmark and tests).
    pub fn cached_documents(&self) -> usize {
        lock(&self.cache).len()
    }

    /// Completes at the cursor: from the cache when it can, else from `model` on `slot`.
    pub async fn complete(
        &self,
        model: Arc<dyn Model>,
        slot: usize,
        document: &str,
        prefix: String,
        plan: CompletionPlan,
        timing: Timing,
    ) -> Result<Completed, ModelError> {
        lock(&self.stats).requests += 1;
        if let Some(rest) = self.from_cache(document, &prefix) {
            lock(&self.stats).cache_hits += 1;
            return Ok(Completed::Suggestion {
                text: rest,
                from_cache: true,
                usage: None,
            });
        }
        let cancel = Cancel::new();
        if let Some(previous) = lock(&self.inflight).insert(document.to_owned(), cancel.clone()) {
            previous.cancel();
        }
        // Dropping this future (the editor's `$/cancelRequest`) cancels the decode too.
        let _guard = CancelOnDrop(cancel.clone());
        if !timing.debounce.is_zero() {
            tokio::time::sleep(timing.debounce).await;
            if cancel.is_cancelled() {
                return Ok(Completed::Nothing);
            }
        }
        let request = GenerateRequest {
            time_limit: Some(timing.budget),
            ..plan.request()
        };
        let generation = generate(&*model, slot, request, cancel.clone()).await?;
        {
            let mut inflight = lock(&self.inflight);
            if inflight
                .get(document)
                .is_some_and(|current| current.same_as(&cancel))
            {
                inflight.remove(document);
            }
        }
        let cut_by_budget = generation.stop_reason == StopReason::TimeLimit;
        self.record(&cancel, &generation.usage, cut_by_budget);
        if generation.stop_reason == StopReason::Cancelled || cancel.is_cancelled() {
            return Ok(Completed::Nothing);
        }
        let text = finish_suggestion(&plan, &generation.text);
        if cut_by_budget {
            tracing::info!(
                document,
                budget_ms = timing.budget.as_millis() as u64,
                tokens = generation.usage.generated_tokens,
                "the completion was cut by its time budget: {}",
                if text.trim().is_empty() {
                    "nothing to suggest yet"
                } else {
                    "the suggestion is only its start"
                }
            );
        }
        if text.trim().is_empty() {
            return Ok(Completed::Nothing);
        }
        {
            let mut cache = lock(&self.cache);
            if cache.len() >= MAX_CACHED_DOCUMENTS && !cache.contains_key(document) {
                // Documents that never close (outside the root, or a client that does not
                // say): any one may go; the next request for it simply asks the model.
                if let Some(evicted) = cache.keys().next().cloned() {
                    cache.remove(&evicted);
                }
            }
            cache.insert(
                document.to_owned(),
                Cached {
                    prefix,
                    suggestion: text.clone(),
                },
            );
        }
        Ok(Completed::Suggestion {
            text,
            from_cache: false,
            usage: Some(generation.usage),
        })
    }

    fn record(&self, cancel: &Cancel, usage: &Usage, cut_by_budget: bool) {
        let mut stats = lock(&self.stats);
        if cancel.is_cancelled() {
            let wasted = cancel.decoded_after_cancel();
            stats.cancelled += 1;
            stats.wasted_tokens += wasted;
            stats.most_wasted_tokens = stats.most_wasted_tokens.max(wasted);
        } else {
            stats.generations.push(GenerationSample {
                prompt_tokens: usage.prompt_tokens,
                evaluated_tokens: usage.evaluated_tokens,
                generated_tokens: usage.generated_tokens,
                first_token_ms: usage.prompt_time.as_secs_f64() * 1000.0,
                total_ms: (usage.prompt_time + usage.generation_time).as_secs_f64() * 1000.0,
                cut_by_budget,
            });
            stats.cut_by_budget += u32::from(cut_by_budget);
            if stats.generations.len() >= 2 * MAX_SAMPLES {
                stats.generations.drain(..MAX_SAMPLES);
            }
        }
    }
}

struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
