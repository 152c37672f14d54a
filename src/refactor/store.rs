//! Plans waiting for the user's decision, and the cancel flags of plan work running.

use std::collections::{BTreeMap, HashMap};

use crate::core::plan::Plan;
use crate::models::Cancel;

#[derive(Default)]
pub struct PlanStore {
    next_id: u32,
    pending: BTreeMap<u32, Plan>,
    /// By progress token.
    running: HashMap<String, Cancel>,
}

/// A waiting plan, as `tierls/status` lists it.
#[derive(Clone, Debug)]
pub struct PendingPlan {
    pub id: u32,
    pub instruction: String,
    pub steps: usize,
}

impl PlanStore {
    /// Keeps `plan` until the user executes or discards it; returns its id.
    pub fn add(&mut self, plan: Plan) -> u32 {
        self.next_id += 1;
        self.pending.insert(self.next_id, plan);
        self.next_id
    }

    /// Puts back a plan that could not run (no executor yet), under its id.
    pub fn put_back(&mut self, id: u32, plan: Plan) {
        self.pending.insert(id, plan);
    }

    /// Takes a plan out: a plan runs at most once.
    pub fn take(&mut self, id: u32) -> Option<Plan> {
        self.pending.remove(&id)
    }

    pub fn pending(&self) -> impl Iterator<Item = (u32, &Plan)> {
        self.pending.iter().map(|(id, plan)| (*id, plan))
    }

    pub fn summary(&self) -> Vec<PendingPlan> {
        self.pending
            .iter()
            .map(|(id, plan)| PendingPlan {
                id: *id,
                instruction: plan.instruction.clone(),
                steps: plan.steps.len(),
            })
            .collect()
    }

    pub fn start(&mut self, token: String, cancel: Cancel) {
        self.running.insert(token, cancel);
    }

    pub fn finish(&mut self, token: &str) {
        self.running.remove(token);
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Cancels the work behind `token`; false when none runs under it.
    pub fn cancel(&self, token: &str) -> bool {
        match self.running.get(token) {
            Some(cancel) => {
                cancel.cancel();
                true
            }
            None => false,
        }
    }
}
