//! Plans: what the planner answers, checked against the workspace before anything runs.
//!
//! The planner answers JSON constrained by [`PLAN_SCHEMA`]; the shell decodes it into a
//! [`RawPlan`] and [`validate`] turns that into a [`Plan`] whose every step names a file inside
//! the workspace and a symbol the index knows, or reports why not.

pub mod anchor;
pub mod context;
pub mod diff;
pub mod land;
pub mod path;
pub mod prompt;
pub mod render;
mod validate;

pub use validate::{Workspace, validate};

use serde::Deserialize;

/// The JSON schema the planner's answer is constrained by. Bounds keep a small model from
/// rambling: a plan has at most 8 steps and every string is short.
pub const PLAN_SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "summary": { "type": "string", "maxLength": 200 },
    "steps": {
      "type": "array",
      "minItems": 1,
      "maxItems": 8,
      "items": {
        "type": "object",
        "properties": {
          "id": { "type": "integer", "minimum": 1, "maximum": 99 },
          "file": { "type": "string", "maxLength": 160 },
          "target": { "type": "string", "maxLength": 160 },
          "action": { "enum": ["replace_symbol", "insert_before", "insert_after", "delete_symbol", "create_file", "edit_file"] },
          "instruction": { "type": "string", "maxLength": 400 },
          "depends_on": { "type": "array", "maxItems": 8, "items": { "type": "integer", "minimum": 1, "maximum": 99 } }
        },
        "required": ["id", "file", "target", "action", "instruction", "depends_on"],
        "additionalProperties": false
      }
    }
  },
  "required": ["summary", "steps"],
  "additionalProperties": false
}"#;

/// The planner's answer as written, before any check.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RawPlan {
    pub summary: String,
    pub steps: Vec<RawStep>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RawStep {
    pub id: u32,
    pub file: String,
    #[serde(default)]
    pub target: String,
    pub action: Action,
    pub instruction: String,
    #[serde(default)]
    pub depends_on: Vec<u32>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Rewrite a symbol: the executor answers the whole new definition.
    ReplaceSymbol,
    /// Add new code before a symbol.
    InsertBefore,
    /// Add new code after a symbol.
    InsertAfter,
    /// Remove a symbol; no model is needed.
    DeleteSymbol,
    /// Write a new file.
    CreateFile,
    /// Rewrite a whole (small) file.
    EditFile,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::ReplaceSymbol => "replace_symbol",
            Action::InsertBefore => "insert_before",
            Action::InsertAfter => "insert_after",
            Action::DeleteSymbol => "delete_symbol",
            Action::CreateFile => "create_file",
            Action::EditFile => "edit_file",
        }
    }

    /// Whether the step is anchored to a symbol of an existing file.
    pub fn needs_symbol(self) -> bool {
        matches!(
            self,
            Action::ReplaceSymbol
                | Action::InsertBefore
                | Action::InsertAfter
                | Action::DeleteSymbol
        )
    }

    /// Whether an executor writes code for the step.
    pub fn needs_executor(self) -> bool {
        self != Action::DeleteSymbol
    }
}

/// A step that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub id: u32,
    /// Workspace-relative, `/`-separated, normalised.
    pub file: String,
    /// The symbol's qualified path; empty for whole-file actions.
    pub target: String,
    pub action: Action,
    pub instruction: String,
    pub depends_on: Vec<u32>,
}

/// Why a step of the planner's answer cannot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub id: u32,
    pub reason: String,
}

/// A checked plan: the steps that can run, in an order where dependencies come first, and
/// the ones that cannot, with the reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub instruction: String,
    pub summary: String,
    pub steps: Vec<Step>,
    pub rejected: Vec<Rejected>,
}

impl Plan {
    pub fn step(&self, id: u32) -> Option<&Step> {
        self.steps.iter().find(|step| step.id == id)
    }

    /// Every distinct file the plan touches, in step order.
    pub fn files(&self) -> Vec<&str> {
        let mut files: Vec<&str> = Vec::new();
        for step in &self.steps {
            if !files.contains(&step.file.as_str()) {
                files.push(&step.file);
            }
        }
        files
    }
}
