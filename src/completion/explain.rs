//! The hover's explanation from the fast tier: asked within the hover budget, cached by the
//! hash of the definition it explains, in a cache of bounded size.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::core::generation::{GenerateRequest, StopReason};
use crate::models::{Cancel, Model, generate};
use crate::sync::lock;

/// How many explanations are kept; the oldest goes first.
pub const MAX_EXPLANATIONS: usize = 512;

#[derive(Default)]
pub struct ExplainEngine {
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    by_hash: HashMap<u64, String>,
    /// Insertion order, oldest first.
    order: VecDeque<u64>,
}

impl ExplainEngine {
    /// The explanation of the definition behind `hash`: the cached one, else `model`'s
    /// answer to `request` when it comes within `budget` (on the model's last slot, which
    /// completions use least). `None` when there is none in time.
    pub async fn explain(
        &self,
        model: Option<Arc<dyn Model>>,
        mut request: GenerateRequest,
        hash: u64,
        budget: Duration,
    ) -> Option<String> {
        if let Some(cached) = lock(&self.cache).by_hash.get(&hash).cloned() {
            return Some(cached);
        }
        let model = model.filter(|_| !budget.is_zero())?;
        request.time_limit = Some(budget);
        let slot = model.info().slots.saturating_sub(1);
        let answer = generate(&*model, slot, request, Cancel::new()).await.ok()?;
        if answer.stop_reason == StopReason::TimeLimit {
            return None;
        }
        let text = crate::core::hidden::without_bidi_controls(answer.text.trim());
        self.remember(hash, text.clone());
        Some(text)
    }

    fn remember(&self, hash: u64, text: String) {
        let mut cache = lock(&self.cache);
        if cache.by_hash.insert(hash, text).is_none() {
            cache.order.push_back(hash);
        }
        while cache.order.len() > MAX_EXPLANATIONS {
            if let Some(oldest) = cache.order.pop_front() {
                cache.by_hash.remove(&oldest);
            }
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.cache).by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
