//! `tierls: <instruction>` comments: the way to ask for a plan in an editor without a
//! prompt box (Helix), and a code action's title everywhere.

use ropey::Rope;

use crate::core::index::language::Language;

/// How far above the cursor a `tierls:` comment is looked for, in lines.
pub const COMMENT_LINES_ABOVE: usize = 20;

/// What may start a comment line when the language is unknown.
const ANY_COMMENT: [&str; 6] = ["//", "#", "--", "/*", "*", ";"];

/// A `tierls: <instruction>` comment on lines `first..=last` or up to
/// [`COMMENT_LINES_ABOVE`] lines above them, nearest first, with its line.
pub fn instruction_comment(
    text: &Rope,
    language: Option<Language>,
    first: usize,
    last: usize,
) -> Option<(String, usize)> {
    let last = last.min(text.len_lines().saturating_sub(1));
    let first = first.saturating_sub(COMMENT_LINES_ABOVE);
    (first..=last).rev().find_map(|line| {
        let content = text.line(line).to_string();
        let trimmed = content.trim_start();
        if !starts_comment(trimmed, language) {
            return None;
        }
        let (_, after) = trimmed.split_once("tierls:")?;
        let instruction = after.trim().trim_end_matches("*/").trim();
        (!instruction.is_empty()).then(|| (instruction.to_owned(), line))
    })
}

fn starts_comment(line: &str, language: Option<Language>) -> bool {
    match language {
        // Block comments and their continuation lines, in the C family.
        Some(language) if language.line_comment() == "//" => ["//", "/*", "*"]
            .iter()
            .any(|token| line.starts_with(token)),
        Some(language) => line.starts_with(language.line_comment()),
        None => ANY_COMMENT.iter().any(|token| line.starts_with(token)),
    }
}
