//! The router's decisions, as pure functions of each node's state and the clock: which node
//! takes a request, and how the circuit breaker moves on success, failure and probes.

use std::time::{Duration, Instant};

/// Interactive work (completions, hovers) goes ahead of batch work (plans, executor steps)
/// and always has a slot of its own on nodes that serve both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Interactive,
    Batch,
}

/// Consecutive failures that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 2;
const FIRST_COOLDOWN: Duration = Duration::from_secs(5);
const MAX_COOLDOWN: Duration = Duration::from_secs(60);
/// Weight of the newest sample in the latency averages.
const EMA_WEIGHT: f64 = 0.3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breaker {
    /// Requests flow; `failures` in a row so far.
    Closed { failures: u32 },
    /// No requests until `until`; then one request (or a probe) tries the node again.
    Open { until: Instant, cooldown: Duration },
    /// One trial request is in flight.
    HalfOpen,
}

/// What the router knows about one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeState {
    pub concurrency: u32,
    /// Whether the node also serves an interactive tier, so batch work leaves it a slot.
    pub serves_interactive: bool,
    pub busy_interactive: u32,
    pub busy_batch: u32,
    pub breaker: Breaker,
    /// The last health probe's verdict; `None` before the first probe.
    pub healthy: Option<bool>,
    /// Moving average of the time to the first token, in milliseconds.
    pub first_token_ms: Option<f64>,
    /// Moving average of the generation speed.
    pub tokens_per_second: Option<f64>,
    pub served: u64,
    pub failed: u64,
    pub last_error: Option<String>,
}

impl NodeState {
    pub fn new(concurrency: u32, serves_interactive: bool) -> Self {
        NodeState {
            concurrency: concurrency.max(1),
            serves_interactive,
            busy_interactive: 0,
            busy_batch: 0,
            breaker: Breaker::Closed { failures: 0 },
            healthy: None,
            first_token_ms: None,
            tokens_per_second: None,
            served: 0,
            failed: 0,
            last_error: None,
        }
    }

    pub fn busy(&self) -> u32 {
        self.busy_interactive + self.busy_batch
    }

    /// Whether the node may take requests at all now (its capacity aside).
    pub fn available(&self, now: Instant) -> bool {
        if self.healthy == Some(false) {
            return false;
        }
        match self.breaker {
            Breaker::Closed { .. } => true,
            Breaker::Open { until, .. } => now >= until,
            Breaker::HalfOpen => false,
        }
    }

    /// Whether the node has a slot for a request of `priority`.
    pub fn has_room(&self, priority: Priority) -> bool {
        let total = self.busy() < self.concurrency;
        match priority {
            Priority::Interactive => total,
            Priority::Batch => {
                let reserved = u32::from(self.serves_interactive && self.concurrency > 1);
                total && self.busy_batch < self.concurrency - reserved
            }
        }
    }

    /// Lower is better: the expected wait for a first token, grown by the load.
    fn score(&self) -> f64 {
        let latency = self.first_token_ms.unwrap_or(0.0);
        (latency + 1.0) * (1.0 + f64::from(self.busy()) / f64::from(self.concurrency))
    }

    pub fn start(&mut self, priority: Priority, now: Instant) {
        if let Breaker::Open { until, .. } = self.breaker
            && now >= until
        {
            self.breaker = Breaker::HalfOpen;
        }
        match priority {
            Priority::Interactive => self.busy_interactive += 1,
            Priority::Batch => self.busy_batch += 1,
        }
    }

    fn finish(&mut self, priority: Priority) {
        match priority {
            Priority::Interactive => {
                self.busy_interactive = self.busy_interactive.saturating_sub(1)
            }
            Priority::Batch => self.busy_batch = self.busy_batch.saturating_sub(1),
        }
    }

    pub fn succeeded(
        &mut self,
        priority: Priority,
        first_token: Duration,
        tokens_per_second: Option<f64>,
    ) {
        self.finish(priority);
        self.served += 1;
        self.breaker = Breaker::Closed { failures: 0 };
        self.healthy = Some(true);
        let ms = first_token.as_secs_f64() * 1000.0;
        self.first_token_ms = Some(average(self.first_token_ms, ms));
        if let Some(speed) = tokens_per_second {
            self.tokens_per_second = Some(average(self.tokens_per_second, speed));
        }
    }

    /// A request that ended without a fault of the node's (cancelled, or cut by its own
    /// time limit) frees its slot and changes nothing else.
    pub fn released(&mut self, priority: Priority) {
        self.finish(priority);
        if self.breaker == Breaker::HalfOpen {
            self.breaker = Breaker::Closed { failures: 0 };
        }
    }

    pub fn failed(&mut self, priority: Priority, error: String, now: Instant) {
        self.finish(priority);
        self.failed += 1;
        self.last_error = Some(error);
        self.breaker = match self.breaker {
            Breaker::Closed { failures } if failures + 1 < FAILURES_TO_OPEN => Breaker::Closed {
                failures: failures + 1,
            },
            Breaker::Closed { .. } => Breaker::Open {
                until: now + FIRST_COOLDOWN,
                cooldown: FIRST_COOLDOWN,
            },
            // The trial failed: cool down twice as long.
            Breaker::HalfOpen | Breaker::Open { .. } => {
                let cooldown = match self.breaker {
                    Breaker::Open { cooldown, .. } => cooldown,
                    _ => FIRST_COOLDOWN,
                };
                let cooldown = (cooldown * 2).min(MAX_COOLDOWN);
                Breaker::Open {
                    until: now + cooldown,
                    cooldown,
                }
            }
        };
    }

    /// A health probe's verdict. A healthy probe closes a breaker whose cooldown is over;
    /// it does not cut a cooldown short.
    pub fn probed(&mut self, healthy: bool, detail: &str, now: Instant) {
        self.healthy = Some(healthy);
        if !healthy {
            self.last_error = Some(detail.to_owned());
        } else if let Breaker::Open { until, .. } = self.breaker
            && now >= until
        {
            self.breaker = Breaker::Closed { failures: 0 };
        }
    }

    /// One word for the status displays.
    pub fn health(&self, now: Instant) -> &'static str {
        match (self.healthy, self.breaker) {
            (_, Breaker::Open { until, .. }) if now < until => "cooling down",
            (_, Breaker::HalfOpen) => "trying again",
            (Some(false), _) => "down",
            (None, _) => "unknown",
            (Some(true), _) => "healthy",
        }
    }
}

fn average(old: Option<f64>, sample: f64) -> f64 {
    match old {
        None => sample,
        Some(old) => old + EMA_WEIGHT * (sample - old),
    }
}

/// What the router can do with a request now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Send it to the node at this index.
    Node(usize),
    /// Some node could take it once a slot frees up.
    Wait,
    /// No node can take it: all are down, cooling down, excluded, or there are none.
    Nowhere,
}

/// Picks a node among `nodes` (the ones that serve the request's tier), skipping the
/// `excluded` ones (those that already failed this request). Batch work waits while
/// interactive requests wait for a slot, so that the next slot to free up is theirs.
pub fn choose(
    nodes: &[&NodeState],
    excluded: &[usize],
    priority: Priority,
    interactive_waiting: bool,
    now: Instant,
) -> Choice {
    let candidates: Vec<usize> = (0..nodes.len())
        .filter(|i| !excluded.contains(i) && nodes[*i].available(now))
        .collect();
    if candidates.is_empty() {
        return Choice::Nowhere;
    }
    if priority == Priority::Batch && interactive_waiting {
        return Choice::Wait;
    }
    candidates
        .iter()
        .copied()
        .filter(|&i| nodes[i].has_room(priority))
        .min_by(|&a, &b| nodes[a].score().total_cmp(&nodes[b].score()))
        .map_or(Choice::Wait, Choice::Node)
}

/// The wait before trying another node after `attempt` failures.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(4)).min(Duration::from_secs(2))
}

#[cfg(test)]
mod tests;
