//! The completion engine around the fast tier: one suggestion in flight per document (a new
//! request cancels the old one, which stops decoding within a token), a debounce, a time
//! budget, and a cache that serves the rest of a suggestion while the user types its start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::core::completion::{CompletionPlan, finish_suggestion};
use crate::core::generation::{GenerateRequest, StopReason, Usage};
use crate::models::{Cancel, Model, ModelError, generate};

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

struct Cached {
    /// The document text before the cursor when the suggestion was made.
    prefix: String,
    suggestion: String,
}

/// How long to wait before asking the model, and how long it may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub debounce: Duration,
    pub budget: Duration,
}

#[derive(Default)]
pub struct CompletionEngine {
    inflight: Mutex<HashMap<String, Cancel>>,
    cache: Mutex<HashMap<String, Cached>>,
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

    /// Cancels what runs for `document` (a newer request, or the document closed).
    pub fn cancel(&self, document: &str) {
        if let Some(cancel) = lock(&self.inflight).remove(document) {
            cancel.cancel();
        }
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
        if let Some(rest) = self.from_cache(document, &prefix) {
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
            prompt: plan.prompt.clone(),
            max_tokens: plan.max_tokens,
            stop: plan.stop.clone(),
            time_limit: Some(timing.budget),
            grammar: None,
        };
        let generation = generate(&*model, slot, request, cancel.clone()).await?;
        {
            let mut inflight = lock(&self.inflight);
            if inflight
                .get(document)
                .is_some_and(|current| Arc::ptr_eq(&current.flag(), &cancel.flag()))
            {
                inflight.remove(document);
            }
        }
        if generation.stop_reason == StopReason::Cancelled {
            return Ok(Completed::Nothing);
        }
        let text = finish_suggestion(&plan, &generation.text);
        if text.trim().is_empty() {
            return Ok(Completed::Nothing);
        }
        lock(&self.cache).insert(
            document.to_owned(),
            Cached {
                prefix,
                suggestion: text.clone(),
            },
        );
        Ok(Completed::Suggestion {
            text,
            from_cache: false,
            usage: Some(generation.usage),
        })
    }
}

struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
