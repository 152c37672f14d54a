//! Convert out: the "plan this refactor" code actions at a range: plan from a `tierls: …`
//! comment, plan with an instruction the editor asks for, and execute or discard each
//! pending plan.

use serde_json::Value;
use tower_lsp::lsp_types::*;

use super::ext::{
    DISCARD_PLAN, EDIT_SELECTION, EXECUTE_PLAN, EditArguments, PLAN_REFACTOR, PlanArguments,
    PlanIdArguments,
};
use crate::core::index::language::Language;
use crate::core::plan::comment::instruction_comment;
use crate::workspace::Workspace;

/// The plan actions at `range` of `key`.
pub fn code_actions(
    workspace: &Workspace,
    pending: &[(u32, String)],
    uri: &Url,
    key: &str,
    range: Range,
) -> Vec<CodeActionOrCommand> {
    let mut actions = Vec::new();
    let action = |title: String, command: &str, arguments: Value| {
        CodeActionOrCommand::CodeAction(CodeAction {
            title: title.clone(),
            kind: Some(CodeActionKind::REFACTOR),
            command: Some(Command {
                title,
                command: command.to_owned(),
                arguments: Some(vec![arguments]),
            }),
            ..CodeAction::default()
        })
    };
    let plan_arguments = |range: Range, instruction: Option<String>| {
        serde_json::to_value(PlanArguments {
            uri: uri.clone(),
            range: Some(range),
            instruction,
        })
        .unwrap_or_default()
    };
    let edit_arguments = |range: Range, instruction: Option<String>| {
        serde_json::to_value(EditArguments {
            uri: uri.clone(),
            range,
            instruction,
        })
        .unwrap_or_default()
    };
    let selected = range.start != range.end;
    let id_arguments =
        |plan_id: u32| serde_json::to_value(PlanIdArguments { plan_id }).unwrap_or_default();
    if let Some(document) = workspace.document(key) {
        let language =
            Language::from_lsp_id(document.language_id()).or_else(|| Language::from_path(key));
        let (first, last) = (range.start.line as usize, range.end.line as usize);
        if let Some((instruction, line)) =
            instruction_comment(document.text(), language, first, last)
        {
            // The comment's line is the focus: the symbol around it, or the one right below.
            let line = line as u32;
            let comment_line = Range::new(Position::new(line, 0), Position::new(line + 1, 0));
            // Helix's way to edit a selection: the comment above it says how. The comment
            // is the instruction, not code to rewrite: the edit starts below it.
            let below = Range::new(comment_line.end, range.end.max(comment_line.end));
            let edited = if range.start < comment_line.end {
                below
            } else {
                range
            };
            if selected && edited.start < edited.end {
                actions.push(action(
                    format!("tierls: Edit: {}", shorten(&instruction)),
                    EDIT_SELECTION,
                    edit_arguments(edited, Some(instruction.clone())),
                ));
            }
            actions.push(action(
                format!("tierls: Plan: {}", shorten(&instruction)),
                PLAN_REFACTOR,
                plan_arguments(comment_line, Some(instruction)),
            ));
        }
    }
    if selected {
        actions.push(action(
            "tierls: Edit selection…".to_owned(),
            EDIT_SELECTION,
            edit_arguments(range, None),
        ));
    }
    actions.push(action(
        "tierls: Plan refactor…".to_owned(),
        PLAN_REFACTOR,
        plan_arguments(range, None),
    ));
    for (id, instruction) in pending {
        let what = shorten(instruction);
        actions.push(action(
            format!("tierls: Execute plan {id}: {what}"),
            EXECUTE_PLAN,
            id_arguments(*id),
        ));
        actions.push(action(
            format!("tierls: Discard plan {id}: {what}"),
            DISCARD_PLAN,
            id_arguments(*id),
        ));
    }
    actions
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
