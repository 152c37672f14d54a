//! Plans: what the planner answers, checked against the workspace before anything runs.
//!
//! The planner answers JSON constrained by [`PLAN_SCHEMA`]; the shell decodes it into a
//! [`RawPlan`] and [`validate`] turns that into a [`Plan`] whose every step names a file inside
//! the workspace and a symbol the index knows, or reports why not.

pub mod anchor;
pub mod comment;
pub mod context;
pub mod diff;
pub mod failures;
pub mod fan_out;
pub mod land;
pub mod path;
pub mod prompt;
pub mod render;
pub mod repair;
mod validate;

pub use validate::{Workspace, validate};

use serde::Deserialize;

/// The most steps a plan may have.
pub const MAX_STEPS: u32 = 8;

/// The JSON schema the planner's answer is constrained by, built so that a model that
/// follows it cannot write most invalid plans:
/// - steps are numbered 1, 2, 3... in order, and step k may depend only on steps before
///   it, so a plan cannot depend on itself, on a missing step or in a cycle;
/// - when `files` is not empty, a step that changes a file names one of them, with one of
///   that file's symbols (or none, for edit_file); only create_file names a new path;
/// - the action comes first, then the file, so that they decide what may follow;
/// - at most [`MAX_STEPS`] steps, and every string is short.
///
/// Servers that ignore grammars are covered by [`validate`], which checks all of it again.
pub fn plan_schema(files: &[(String, Vec<String>)]) -> String {
    let free = r#"{ "type": "string", "maxLength": 160 }"#;
    let edit_actions = r#""replace_symbol", "insert_before", "insert_after", "delete_symbol", "edit_file", "update_references""#;
    let step_shapes = |id: u32| -> Vec<String> {
        let depends_on = if id == 1 {
            r#"{ "type": "array", "maxItems": 0 }"#.to_owned()
        } else {
            format!(
                r#"{{ "type": "array", "maxItems": {}, "items": {} }}"#,
                id - 1,
                json_enum((1..id).map(|earlier| earlier.to_string()))
            )
        };
        let shape = |actions: &str, file: &str, target: &str| {
            format!(
                r#"{{ "type": "object", "properties": {{ "id": {{ "enum": [{id}] }}, "action": {{ "enum": [{actions}] }}, "file": {file}, "target": {target}, "instruction": {{ "type": "string", "maxLength": 400 }}, "depends_on": {depends_on} }}, "required": ["id", "action", "file", "target", "instruction", "depends_on"], "additionalProperties": false }}"#
            )
        };
        let mut shapes = Vec::new();
        if files.is_empty() {
            shapes.push(shape(edit_actions, free, free));
            shapes.push(shape(r#""create_file""#, free, r#"{ "enum": [""] }"#));
            return shapes;
        }
        for (file, symbols) in files {
            let targets = json_enum(
                symbols
                    .iter()
                    .chain([&String::new()])
                    .map(|target| json_string(target)),
            );
            let file = json_enum(std::iter::once(json_string(file)));
            shapes.push(shape(edit_actions, &file, &targets));
        }
        let new_file = r#"{ "type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_./-]{0,80}[.][a-z]{1,4}$" }"#;
        shapes.push(shape(r#""create_file""#, new_file, r#"{ "enum": [""] }"#));
        shapes
    };
    let definitions: Vec<String> = (1..=MAX_STEPS)
        .map(|id| {
            format!(
                r#""step{id}": {{ "anyOf": [{}] }}"#,
                step_shapes(id).join(", ")
            )
        })
        .collect();
    let plans: Vec<String> = (1..=MAX_STEPS)
        .map(|count| {
            let items: Vec<String> = (1..=count)
                .map(|id| format!(r##"{{ "$ref": "#/$defs/step{id}" }}"##))
                .collect();
            format!(
                r#"{{ "type": "array", "prefixItems": [{}] }}"#,
                items.join(", ")
            )
        })
        .collect();
    format!(
        r#"{{
  "$defs": {{
    {}
  }},
  "type": "object",
  "properties": {{
    "summary": {{ "type": "string", "maxLength": 200 }},
    "steps": {{ "anyOf": [
      {}
    ] }}
  }},
  "required": ["summary", "steps"],
  "additionalProperties": false
}}"#,
        definitions.join(",\n    "),
        plans.join(",\n      ")
    )
}

fn json_enum(values: impl Iterator<Item = String>) -> String {
    format!(
        r#"{{ "enum": [{}] }}"#,
        values.collect::<Vec<_>>().join(", ")
    )
}

/// A JSON string literal (the core writes its one piece of JSON by hand).
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

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
    /// Change every use of a symbol: expanded from the index into one job per symbol that
    /// uses it ([`fan_out`]) before anything runs.
    UpdateReferences,
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
            Action::UpdateReferences => "update_references",
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
                | Action::UpdateReferences
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
    /// The fan-out step this job was expanded from.
    pub part_of: Option<u32>,
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
    /// The fan-out steps, each expanded into jobs among `steps`.
    pub fan_outs: Vec<fan_out::FanOut>,
    /// Who planned it and why, from the routing rule: "executor, as a one-step plan (no
    /// planning pass) — one symbol, 14 lines". Empty when nobody asked the rule.
    pub planned_by: String,
}

impl Plan {
    pub fn step(&self, id: u32) -> Option<&Step> {
        self.steps.iter().find(|step| step.id == id)
    }

    /// The fan-out whose first job is `step`: where a listing shows the fan-out as the one
    /// step the planner wrote.
    pub fn fan_out_starting_at(&self, step: &Step) -> Option<&fan_out::FanOut> {
        let fan_out = self
            .fan_outs
            .iter()
            .find(|f| Some(f.step) == step.part_of)?;
        (fan_out.jobs.first() == Some(&step.id)).then_some(fan_out)
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
