//! What a plan changes, as line edits for the editor and as a unified diff for people.

use std::ops::Range;

use similar::{DiffOp, TextDiff};

/// Replace the whole lines `range` (bytes of the old text) with `new_text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineEdit {
    pub range: Range<usize>,
    pub new_text: String,
}

/// The smallest set of whole-line replacements that turns `old` into `new`. Whole lines
/// keep edits small and readable in the editor's undo history.
pub fn line_edits(old: &str, new: &str) -> Vec<LineEdit> {
    let diff = TextDiff::from_lines(old, new);
    let old_starts = line_starts(old);
    let new_starts = line_starts(new);
    let mut edits: Vec<LineEdit> = Vec::new();
    for op in diff.ops() {
        let (old_lines, new_lines) = match *op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index,
                old_len,
                new_index,
            } => (old_index..old_index + old_len, new_index..new_index),
            DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            } => (old_index..old_index, new_index..new_index + new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (
                old_index..old_index + old_len,
                new_index..new_index + new_len,
            ),
        };
        let range = old_starts[old_lines.start]..old_starts[old_lines.end];
        let new_text = new[new_starts[new_lines.start]..new_starts[new_lines.end]].to_owned();
        // Adjacent operations (a delete next to an insert) become one edit.
        match edits.last_mut() {
            Some(last) if last.range.end == range.start => {
                last.range.end = range.end;
                last.new_text.push_str(&new_text);
            }
            _ => edits.push(LineEdit { range, new_text }),
        }
    }
    edits
}

/// Byte offsets of each line start, plus the end of the text.
fn line_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(text.match_indices('\n').map(|(at, _)| at + 1));
    if *starts.last().unwrap_or(&0) != text.len() {
        starts.push(text.len());
    }
    starts
}

/// A unified diff with three lines of context; `old` is `None` for a new file.
pub fn unified(path: &str, old: Option<&str>, new: &str) -> String {
    let before = old.unwrap_or("");
    let old_name = if old.is_some() {
        format!("a/{path}")
    } else {
        "/dev/null".to_owned()
    };
    TextDiff::from_lines(before, new)
        .unified_diff()
        .context_radius(3)
        .header(&old_name, &format!("b/{path}"))
        .to_string()
}
