//! Completion prompts: what the fast tier sees for a cursor, and how its answer is trimmed.
//!
//! The prompt holds the text around the cursor under a budget plus context from the index:
//! the definitions of the identifiers just before the cursor, found in other files. Models
//! with FIM tokens get prefix and suffix; others continue the prefix.

use ropey::Rope;

pub mod context;
pub mod cursor;
pub mod imports;

use super::generation::{ContextChunk, FimContext, GenerateRequest, Prompt};
use super::index::language::Language;
use super::index::table::Index;

pub struct CompletionInput<'a> {
    /// The document's index key (workspace-relative path).
    pub path: &'a str,
    pub language: Option<Language>,
    pub text: &'a Rope,
    /// The cursor, as a byte offset.
    pub offset: usize,
    pub index: &'a Index,
    pub has_fim: bool,
    /// The prompt's budget in bytes (about four per token).
    pub budget_bytes: usize,
    /// Lines the user edited lately, most recent first; those of other files become context.
    pub recent_edits: &'a [RecentEdit],
}

/// A line the user edited, as it reads after the edit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentEdit {
    pub path: String,
    pub line: String,
}

/// Finish the current line, or write a block when the cursor opens one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Line,
    Block,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletionPlan {
    pub prompt: Prompt,
    pub stop: Vec<String>,
    pub max_tokens: u32,
    pub mode: Mode,
    /// The indentation of the cursor's line: a block ends where a line goes left of it.
    pub indent: usize,
    /// The rest of the cursor's line, which a suggestion must not repeat.
    pub line_suffix: String,
    /// The cursor is right after a letter, digit or underscore (in a word or at its end):
    /// the prompt ends mid-token, so the backend heals it (`GenerateRequest::heal`).
    pub heal: bool,
}

impl CompletionPlan {
    /// The request for the model, without a time limit (the caller's budget sets one).
    pub fn request(&self) -> GenerateRequest {
        GenerateRequest {
            prompt: self.prompt.clone(),
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            time_limit: None,
            grammar: None,
            heal: self.heal,
        }
    }
}

/// The context takes at most this share of the budget.
const CONTEXT_SHARE: usize = 4;

pub fn plan_completion(input: &CompletionInput<'_>) -> CompletionPlan {
    let text = input.text;
    let offset = input.offset.min(text.len_bytes());
    let line = text.byte_to_line(offset);
    let line_start = text.line_to_byte(line);
    let line_prefix = text.byte_slice(line_start..offset).to_string();
    let line_end = line_start + text.line(line).len_bytes();
    let line_suffix: String = text
        .byte_slice(offset..line_end)
        .to_string()
        .trim_end_matches(['\n', '\r'])
        .to_owned();
    let indent = line_prefix.len() - line_prefix.trim_start().len();

    let previous_line = if line > 0 {
        text.line(line - 1).to_string()
    } else {
        String::new()
    };
    // A block is wanted on an empty line that opens one, or on an empty line of a body the
    // syntax tree knows (the index's enclosing definition); otherwise the line is finished.
    let blank_line = line_prefix.trim().is_empty() && line_suffix.trim().is_empty();
    let opens_block = previous_line.trim_end().ends_with(['{', ':', '(', '[']);
    let in_body = input
        .index
        .enclosing(input.path, offset)
        .and_then(|found| found.symbol.body())
        .is_some_and(|body| body.start < offset && offset < body.end);
    let mode = if blank_line && (opens_block || in_body) {
        Mode::Block
    } else {
        Mode::Line
    };

    let (context, chunks) = context_lines(input, offset);
    let budget = input.budget_bytes.max(64);
    let context = fit_lines(&context, budget / CONTEXT_SHARE);
    // A heading without a single definition under it is noise.
    let kept_lines = context.lines().count();
    let context = if kept_lines < 2 {
        String::new()
    } else {
        context + "\n"
    };
    // The chunks are the kept lines (after the heading, and the enclosing definition when
    // it is there, which the prefix's own file holds).
    let chunks: Vec<ContextChunk> = chunks
        .into_iter()
        .filter(|(line, _)| *line < kept_lines)
        .map(|(_, chunk)| chunk)
        .collect();
    let remaining = budget.saturating_sub(context.len());
    // Three quarters of what is left before the cursor, the rest after it.
    let suffix_budget = if input.has_fim { remaining / 4 } else { 0 };
    let prefix_budget = remaining - suffix_budget;
    // Copy only the window the budget allows: a large file's text is never copied whole.
    let prefix_start = char_floor(text, offset.saturating_sub(prefix_budget));
    let suffix_end = char_ceil(
        text,
        offset.saturating_add(suffix_budget).min(text.len_bytes()),
    );
    let prefix = text.byte_slice(prefix_start..offset).to_string();
    let suffix = text.byte_slice(offset..suffix_end).to_string();
    // A window cut mid-line starts (or ends) at the nearest whole line.
    let prefix = if prefix_start > 0 {
        from_line_start(prefix)
    } else {
        prefix
    };
    let suffix = if suffix_end < text.len_bytes() {
        to_line_end(suffix)
    } else {
        suffix
    };

    let prompt = if input.has_fim {
        Prompt::Fim {
            prefix,
            suffix,
            context: FimContext {
                comments: context,
                chunks,
            },
        }
    } else {
        Prompt::Text(format!("{context}{prefix}"))
    };
    let (stop, max_tokens) = match mode {
        Mode::Line => (vec!["\n".to_owned()], 48),
        Mode::Block => (vec!["\n\n\n".to_owned()], 160),
    };
    CompletionPlan {
        prompt,
        stop,
        max_tokens,
        mode,
        indent,
        heal: line_prefix
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_'),
        line_suffix,
    }
}

/// Comment lines for the model: the enclosing definition when its start is far above the
/// cursor, then the context chosen for the cursor (`context::choose_context`). Also the
/// same facts from other files as chunks by file, each with the number of its comment line.
fn context_lines(
    input: &CompletionInput<'_>,
    offset: usize,
) -> (String, Vec<(usize, ContextChunk)>) {
    let Some(language) = input.language else {
        return (String::new(), Vec::new());
    };
    let comment = match language {
        Language::Python => "#",
        _ => "//",
    };
    let mut lines = Vec::new();
    let mut chunks = Vec::new();
    if let Some(enclosing) = input.index.enclosing(input.path, offset)
        && enclosing.symbol.range().start + input.budget_bytes / 2 < offset
    {
        lines.push(format!(
            "{comment} Inside {}: {}",
            input.path,
            enclosing.detail().signature
        ));
    }
    for line in context::choose_context(input, offset) {
        lines.push(match line.text.strip_prefix("edited: ") {
            Some(edited) => format!("{comment} edited in {}: {edited}", line.path),
            None => format!("{comment} {}: {}", line.path, line.text),
        });
        // Line 0 is the heading.
        chunks.push((lines.len(), context::chunk(&line)));
    }
    if lines.is_empty() {
        return (String::new(), Vec::new());
    }
    let mut context = format!("{comment} Context from the workspace:\n");
    for line in lines {
        context.push_str(&line);
        context.push('\n');
    }
    (context, chunks)
}

/// The start of the character that holds byte `offset`.
fn char_floor(text: &Rope, offset: usize) -> usize {
    text.char_to_byte(text.byte_to_char(offset))
}

/// The end of the character that holds byte `offset` (or `offset`, on a boundary).
fn char_ceil(text: &Rope, offset: usize) -> usize {
    let floor = char_floor(text, offset);
    if floor == offset {
        offset
    } else {
        text.char_to_byte(text.byte_to_char(offset) + 1)
    }
}

/// The first lines of `text` that fit in `budget` bytes, whole lines only.
fn fit_lines(text: &str, budget: usize) -> String {
    let mut fitted = String::new();
    for line in text.split_inclusive('\n') {
        if fitted.len() + line.len() > budget {
            break;
        }
        fitted.push_str(line);
    }
    fitted
}

/// `text` without its first, partial line, unless that would leave nothing.
fn from_line_start(text: String) -> String {
    match text.find('\n') {
        Some(newline) if newline + 1 < text.len() => text[newline + 1..].to_owned(),
        _ => text,
    }
}

/// `text` up to its last line end, when it has one.
fn to_line_end(text: String) -> String {
    match text.rfind('\n') {
        Some(newline) => text[..=newline].to_owned(),
        None => text,
    }
}

/// Trims what the model wrote into a suggestion: one line in line mode, up to the end of the
/// block in block mode, without the text the line already has after the cursor.
pub fn finish_suggestion(plan: &CompletionPlan, generated: &str) -> String {
    let generated = &super::hidden::without_bidi_controls(generated);
    let mut suggestion = match plan.mode {
        Mode::Line => generated.split('\n').next().unwrap_or_default().to_owned(),
        Mode::Block => {
            let mut kept = Vec::new();
            for (i, line) in generated.split('\n').enumerate() {
                let indent = line.len() - line.trim_start().len();
                // A line left of the cursor's indentation closes the block.
                if i > 0 && !line.trim().is_empty() && indent < plan.indent {
                    break;
                }
                kept.push(line);
            }
            kept.join("\n")
        }
    };
    suggestion.truncate(suggestion.trim_end().len());
    let suffix = plan.line_suffix.trim_end();
    if !suffix.is_empty() {
        // The model often closes what the line closes already: drop the repeat.
        if let Some(cut) = (1..=suffix.len())
            .rev()
            .filter(|&n| suffix.is_char_boundary(n))
            .find(|&n| suggestion.ends_with(&suffix[..n]))
        {
            suggestion.truncate(suggestion.len() - cut);
        }
    }
    suggestion.trim_end().to_owned()
}
