//! The exact conversations the planner and the executors receive.

use super::context::References;
use super::{Action, Plan, Step};
use crate::core::generation::ChatMessage;

const PLANNER_SYSTEM: &str = "You plan code refactors. You never write code yourself: another model carries out each step of your plan, seeing only that step.
Answer with a JSON plan:
- summary: one sentence.
- steps, each with:
  - id: 1, 2, 3...
  - file: the workspace-relative path of the file the step changes.
  - target: the qualified path of the symbol the step changes, exactly as listed; empty for create_file and edit_file.
  - action: replace_symbol (rewrite the target), insert_before or insert_after (add new code next to the target), delete_symbol, create_file (write a new file), edit_file (rewrite a whole small file), update_references (change every use of the target, wherever it is used: one step for all of them).
  - instruction: what to do in this step, precise enough to do without seeing the other steps.
  - depends_on: the ids of the steps that must be done first.
Use as few steps as the request needs. Name only files and symbols listed below, or a new file for create_file.
Example, for \"rename parse to parse_line\":
{\"summary\": \"Rename parse to parse_line.\", \"steps\": [{\"id\": 1, \"action\": \"replace_symbol\", \"file\": \"src/reader.rs\", \"target\": \"Reader::parse\", \"instruction\": \"Rename the method to parse_line.\", \"depends_on\": []}, {\"id\": 2, \"action\": \"update_references\", \"file\": \"src/reader.rs\", \"target\": \"Reader::parse\", \"instruction\": \"Call parse_line instead of parse.\", \"depends_on\": [1]}]}";

const EXECUTOR_SYSTEM: &str = "You carry out one step of a refactor plan. Answer with only the code the step asks for, in one fenced code block, with no explanation.";

/// A symbol the request is about, with its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSource {
    pub file: String,
    pub path: String,
    pub kind: String,
    /// The fence tag: the language's name.
    pub language: String,
    pub source: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlannerInput {
    pub instruction: String,
    pub targets: Vec<TargetSource>,
    /// The symbols of each focus file, as `(path, kind)`: the targets a step may name.
    pub file_symbols: Vec<(String, Vec<(String, String)>)>,
    /// Where each target is used, under its token budget.
    pub references: Vec<References>,
    /// The repo map, already cut to its token budget.
    pub repo_map: String,
    /// Every file the planner is shown (the focus files, then the repo map's) with the
    /// symbols a step may target in it: the plan grammar allows only these pairs.
    pub allowed: Vec<(String, Vec<String>)>,
}

pub fn planner_prompt(input: &PlannerInput) -> Vec<ChatMessage> {
    let mut user = format!("Request: {}\n", input.instruction.trim());
    for target in &input.targets {
        user.push_str(&format!(
            "\nTarget: `{}` ({}) in {}\n```{}\n{}\n```\n",
            target.path, target.kind, target.file, target.language, target.source
        ));
    }
    for (file, symbols) in &input.file_symbols {
        user.push_str(&format!("\nSymbols of {file}:\n"));
        for (path, kind) in symbols {
            user.push_str(&format!("- `{path}` ({kind})\n"));
        }
    }
    for references in &input.references {
        push_references(&mut user, references);
    }
    if !input.repo_map.trim().is_empty() {
        user.push_str(&format!(
            "\nThe most relevant definitions elsewhere in the repository:\n{}\n",
            input.repo_map.trim_end()
        ));
    }
    vec![
        ChatMessage::new("system", PLANNER_SYSTEM),
        ChatMessage::new("user", &user),
    ]
}

/// "Where `total_price` is used: 24 sites in 24 files, each with the symbol it is in:"
fn push_references(user: &mut String, references: &References) {
    let plural = |count: usize, one: &str, many: &str| {
        format!("{count} {}", if count == 1 { one } else { many })
    };
    if references.total_sites == 0 {
        user.push_str(&format!(
            "\n`{}` is not used anywhere else in the workspace.\n",
            references.path
        ));
        return;
    }
    user.push_str(&format!(
        "\nWhere `{}` is used: {} in {}, each with the symbol it is in:\n",
        references.path,
        plural(references.total_sites, "site", "sites"),
        plural(references.total_files, "file", "files"),
    ));
    for site in &references.sites {
        let within = match site.enclosing.as_str() {
            "" => "(top level)".to_owned(),
            enclosing => format!("`{enclosing}`"),
        };
        user.push_str(&format!(
            "- {} {within} line {}: {}\n",
            site.file, site.line, site.text
        ));
    }
    let left_out = references.total_sites - references.sites.len();
    if left_out > 0 {
        user.push_str(&format!(
            "({} not shown.)\n",
            plural(left_out, "more site is", "more sites are")
        ));
    }
    if references.definitions > 1 {
        user.push_str(&format!(
            "`{}` is defined in {} places and uses are found by name: some of these may use another definition.\n",
            references.name, references.definitions
        ));
    }
}

/// What an executor is shown for one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorInput<'a> {
    pub plan: &'a Plan,
    pub step: &'a Step,
    /// The fence tag of the step's file.
    pub language: &'a str,
    /// The target's source (or the whole file for edit_file); empty for create_file.
    pub source: &'a str,
    /// Signatures of the definitions the source uses, as `file: signature`.
    pub definitions: &'a [String],
    /// Earlier answers to this step and why each was refused, oldest first.
    pub attempts: &'a [(String, String)],
}

pub fn executor_prompt(input: &ExecutorInput<'_>) -> Vec<ChatMessage> {
    let step = input.step;
    let mut user = format!("The plan: {}\n", input.plan.summary);
    for other in &input.plan.steps {
        // A fan-out's jobs read as the one step the planner wrote.
        if other.part_of.is_some() {
            if let Some(fan_out) = input.plan.fan_out_starting_at(other) {
                user.push_str(&format!(
                    "{}. update_references {} `{}`: {} ({} jobs, one for each symbol that uses it)\n",
                    fan_out.step,
                    fan_out.file,
                    fan_out.symbol,
                    fan_out.instruction,
                    fan_out.jobs.len()
                ));
            }
            continue;
        }
        user.push_str(&format!(
            "{}. {} {}{}: {}\n",
            other.id,
            other.action.name(),
            other.file,
            if other.target.is_empty() {
                String::new()
            } else {
                format!(" `{}`", other.target)
            },
            other.instruction
        ));
    }
    user.push_str(&format!("\nYour step: {}. {}\n", step.id, step.instruction));
    let fenced = |text: &str| format!("```{}\n{}\n```\n", input.language, text);
    match step.action {
        Action::ReplaceSymbol => user.push_str(&format!(
            "Rewrite `{}` in {}. Its current source is below; answer the whole new definition, with its comments, and nothing else.\n{}",
            step.target, step.file, fenced(input.source)
        )),
        Action::InsertBefore | Action::InsertAfter => user.push_str(&format!(
            "Write the new code to insert {} `{}` in {}. `{}` is shown for context: do not repeat it.\n{}",
            if step.action == Action::InsertBefore { "before" } else { "after" },
            step.target, step.file, step.target, fenced(input.source)
        )),
        Action::CreateFile => {
            user.push_str(&format!("Write the whole of the new file {}.\n", step.file))
        }
        Action::EditFile => user.push_str(&format!(
            "Rewrite the whole file {}; answer the complete new file.\n{}",
            step.file,
            fenced(input.source)
        )),
        Action::DeleteSymbol | Action::UpdateReferences => {}
    }
    if !input.definitions.is_empty() {
        user.push_str("\nDefinitions it uses:\n");
        for definition in input.definitions {
            user.push_str(&format!("- {definition}\n"));
        }
    }
    let mut messages = vec![
        ChatMessage::new("system", EXECUTOR_SYSTEM),
        ChatMessage::new("user", &user),
    ];
    for (answer, reason) in input.attempts {
        messages.push(ChatMessage::new("assistant", &fenced(answer)));
        messages.push(ChatMessage::new(
            "user",
            &format!("That answer was refused: {reason}. Answer again with the corrected code."),
        ));
    }
    // The answer starts inside a code block, so the closing fence ends it.
    messages.push(ChatMessage::new(
        "assistant",
        &format!("```{}\n", input.language),
    ));
    messages
}

/// How a conversation reads in snapshots and logs.
pub fn render_conversation(messages: &[ChatMessage]) -> String {
    messages
        .iter()
        .map(|message| {
            format!(
                "<{}>\n{}\n</{}>\n",
                message.role, message.content, message.role
            )
        })
        .collect()
}
