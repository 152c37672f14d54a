//! Anchoring an executor's code to the file: find the step's symbol by its qualified path in
//! the file as it is now, check that it is still what the executor read, splice, reparse.
//!
//! The same splice runs while the plan executes and again when a file changed under the
//! plan (the user typed meanwhile): a step whose symbol is untouched lands where the symbol
//! now is; one whose symbol changed is refused, never applied blindly.

use std::ops::Range;

use tree_sitter::Node;

use super::Action;
use crate::core::index::extract::{extract, parse};
use crate::core::index::language::Language;

/// The most a step may write: more is a runaway model, not a refactor.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The most a whole-file step may rewrite: executors answer whole files only for small ones.
pub const MAX_EDIT_FILE_BYTES: usize = 16 * 1024;

/// A symbol found in a file's current text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// From the first comment or attribute line that belongs to the symbol to its end.
    pub range: Range<usize>,
    /// The whitespace before the symbol on its first line.
    pub indent: String,
}

impl Located {
    /// The symbol's exact text: what a splice checks is still there.
    pub fn source<'t>(&self, text: &'t str) -> &'t str {
        &text[self.range.clone()]
    }

    /// The symbol's text as a model should read it: every line at its real indentation,
    /// less the indentation all lines share.
    pub fn display(&self, text: &str) -> String {
        dedent(&format!("{}{}", self.indent, self.source(text)))
    }
}

/// Removes the indentation that all non-blank lines share.
pub fn dedent(code: &str) -> String {
    let common = code
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    code.lines()
        .map(|line| line.get(common..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One step's result, ready to splice: what it read and what it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepEdit {
    pub step: u32,
    pub file: String,
    pub action: Action,
    pub target: String,
    /// The symbol's source (or the whole file) the executor was shown; empty for a new file.
    pub read: String,
    /// The executor's code, cleaned; empty for a deletion.
    pub code: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpliceError {
    #[error("{file} does not exist")]
    FileMissing { file: String },
    #[error("{file} already exists")]
    FileExists { file: String },
    #[error("{file} is not in a language tierls parses")]
    UnknownLanguage { file: String },
    #[error("`{target}` is no longer in {file}")]
    SymbolGone { file: String, target: String },
    #[error("`{target}` in {file} changed since the step read it")]
    SymbolChanged { file: String, target: String },
    #[error("{file} changed since the step read it")]
    FileChanged { file: String },
    #[error(
        "{file} is {bytes} bytes, over the {MAX_EDIT_FILE_BYTES} an edit_file step may rewrite"
    )]
    FileTooLarge { file: String, bytes: usize },
    #[error("the code has syntax errors: {}", .errors.join("; "))]
    SyntaxErrors { errors: Vec<String> },
    #[error("step on `{target}` is a fan-out, which runs as the jobs it expands into")]
    NotExpanded { target: String },
}

/// Finds `target` (a qualified symbol path) in `text`.
pub fn locate(language: Language, text: &str, target: &str) -> Option<Located> {
    let tree = parse(language, text, None)?;
    let symbols = extract(language, &tree, text);
    let symbol = symbols
        .symbols
        .iter()
        .find(|symbol| symbol.path() == target)?;
    let start = leading_lines_start(language, text, symbol.range().start);
    let line_start = text[..start].rfind('\n').map_or(0, |at| at + 1);
    Some(Located {
        range: start..symbol.range().end,
        indent: text[line_start..start].to_owned(),
    })
}

/// Comment, attribute and decorator lines right above a definition belong to it: a
/// rewritten symbol comes with its documentation, and a deleted one takes it along.
fn leading_lines_start(language: Language, text: &str, start: usize) -> usize {
    let prefixes: &[&str] = match language {
        Language::Rust => &["///", "//", "#[", "/*", "*"],
        Language::Python => &["#", "@"],
        Language::Go => &["//"],
        Language::Java | Language::JavaScript | Language::TypeScript | Language::Tsx => {
            &["//", "/*", "*", "@"]
        }
        Language::C | Language::Cpp => &["//", "/*", "*"],
    };
    let mut line_start = text[..start].rfind('\n').map_or(0, |at| at + 1);
    if !text[line_start..start].trim().is_empty() {
        // Something else shares the line: the symbol starts where the index says.
        return start;
    }
    let mut best = start;
    while line_start > 0 {
        let previous_start = text[..line_start - 1].rfind('\n').map_or(0, |at| at + 1);
        let line = &text[previous_start..line_start - 1];
        let trimmed = line.trim_start();
        if trimmed.is_empty() || !prefixes.iter().any(|prefix| trimmed.starts_with(prefix)) {
            break;
        }
        best = previous_start + (line.len() - trimmed.len());
        line_start = previous_start;
    }
    best
}

/// Applies one step to a file's current text (`None`: the file does not exist yet) and
/// returns the new text, or why the step cannot land.
pub fn splice(text: Option<&str>, edit: &StepEdit) -> Result<String, SpliceError> {
    let file = edit.file.clone();
    if edit.action == Action::UpdateReferences {
        return Err(SpliceError::NotExpanded {
            target: edit.target.clone(),
        });
    }
    let language = Language::from_path(&edit.file);
    if edit.action == Action::CreateFile {
        if text.is_some() {
            return Err(SpliceError::FileExists { file });
        }
        let new = with_final_newline(edit.code.trim_end());
        if let Some(language) = language {
            check_syntax(language, "", &new, 0..new.len())?;
        }
        return Ok(new);
    }
    let text = text.ok_or_else(|| SpliceError::FileMissing { file: file.clone() })?;
    if edit.action == Action::EditFile {
        if text != edit.read {
            return Err(SpliceError::FileChanged { file });
        }
        if text.len() > MAX_EDIT_FILE_BYTES {
            return Err(SpliceError::FileTooLarge {
                file,
                bytes: text.len(),
            });
        }
        let new = with_final_newline(edit.code.trim_end());
        if let Some(language) = language {
            check_syntax(language, text, &new, 0..new.len())?;
        }
        return Ok(new);
    }
    let language = language.ok_or_else(|| SpliceError::UnknownLanguage { file: file.clone() })?;
    let located = locate(language, text, &edit.target).ok_or_else(|| SpliceError::SymbolGone {
        file: file.clone(),
        target: edit.target.clone(),
    })?;
    if located.source(text) != edit.read {
        return Err(SpliceError::SymbolChanged {
            file,
            target: edit.target.clone(),
        });
    }
    let Range { start, end } = located.range;
    let code = reindent(&edit.code, &located.indent);
    let indent = &located.indent;
    // What replaces which bytes, and where the executor's code starts in it.
    let (replaced, inserted, code_at) = match edit.action {
        Action::ReplaceSymbol => (start..end, code.clone(), 0),
        Action::InsertBefore => (start..start, format!("{code}\n\n{indent}"), 0),
        Action::InsertAfter => (end..end, format!("\n\n{indent}{code}"), 2 + indent.len()),
        Action::DeleteSymbol => (deletion_range(text, start, end), String::new(), 0),
        Action::CreateFile | Action::EditFile | Action::UpdateReferences => {
            unreachable!("handled above")
        }
    };
    let new = format!(
        "{}{inserted}{}",
        &text[..replaced.start],
        &text[replaced.end..]
    );
    let written_start = replaced.start + code_at;
    let written = written_start..written_start + if inserted.is_empty() { 0 } else { code.len() };
    check_syntax(language, text, &new, written)?;
    Ok(new)
}

/// A deleted symbol takes its indentation, its line end and one blank line with it.
fn deletion_range(text: &str, start: usize, end: usize) -> Range<usize> {
    let line_start = text[..start].rfind('\n').map_or(0, |at| at + 1);
    let start = if text[line_start..start].trim().is_empty() {
        line_start
    } else {
        start
    };
    let mut end = end;
    for _ in 0..2 {
        let rest = &text[end..];
        let line_end = rest.find('\n').map_or(rest.len(), |at| at + 1);
        if rest[..line_end].trim().is_empty() && line_end > 0 {
            end += line_end;
        } else {
            break;
        }
    }
    start..end
}

fn with_final_newline(code: &str) -> String {
    format!("{code}\n")
}

/// Removes the code's common indentation and indents every line after the first by
/// `indent`: the first line lands where the symbol started, after its indentation.
pub fn reindent(code: &str, indent: &str) -> String {
    dedent(code.trim_matches('\n').trim_end())
        .lines()
        .enumerate()
        .map(|(n, line)| {
            if n == 0 || line.is_empty() {
                line.to_owned()
            } else {
                format!("{indent}{line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Refuses `new` when it has more syntax errors than `old`; names the new ones, with lines
/// counted from the start of `written` (the executor's code), so that the feedback points
/// into what the executor wrote.
fn check_syntax(
    language: Language,
    old: &str,
    new: &str,
    written: Range<usize>,
) -> Result<(), SpliceError> {
    let before = syntax_errors(language, old).len();
    let after = syntax_errors(language, new);
    if after.len() <= before {
        return Ok(());
    }
    let first_line = new[..written.start].matches('\n').count();
    let inside: Vec<&SyntaxError> = after
        .iter()
        .filter(|error| error.range.start >= written.start && error.range.start <= written.end)
        .collect();
    // Errors outside the written code still come from it (an unclosed brace breaks what
    // follows): name those when the code itself parses.
    let shown = if inside.is_empty() {
        after.iter().collect()
    } else {
        inside
    };
    let errors: Vec<String> = shown
        .iter()
        .take(5)
        .map(|error| {
            let line = new[..error.range.start].matches('\n').count();
            let relative = line.saturating_sub(first_line) + 1;
            format!("line {relative}: {}", error.message)
        })
        .collect();
    Err(SpliceError::SyntaxErrors { errors })
}

/// A place where the parser had to recover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub range: Range<usize>,
    pub message: String,
}

/// Every error and missing node of `text`'s tree.
pub fn syntax_errors(language: Language, text: &str) -> Vec<SyntaxError> {
    let Some(tree) = parse(language, text, None) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    collect_errors(tree.root_node(), text, &mut errors);
    errors
}

fn collect_errors(node: Node<'_>, text: &str, errors: &mut Vec<SyntaxError>) {
    if !node.has_error() {
        return;
    }
    if node.is_missing() {
        errors.push(SyntaxError {
            range: node.byte_range(),
            message: format!("missing `{}`", node.kind()),
        });
        return;
    }
    if node.is_error() {
        let found: String = text[node.byte_range()].chars().take(40).collect();
        let found = found.lines().next().unwrap_or("").trim().to_owned();
        errors.push(SyntaxError {
            range: node.byte_range(),
            message: format!("unexpected `{found}`"),
        });
        return;
    }
    let mut cursor = node.walk();
    for child in node.children(&mut cursor) {
        collect_errors(child, text, errors);
    }
}

/// Why an executor's answer is not usable code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerProblem {
    #[error("the answer is empty")]
    Empty,
    #[error("the answer was cut off at the token limit")]
    Truncated,
    #[error("the answer is {bytes} bytes, over the {MAX_ANSWER_BYTES} a step may write")]
    Enormous { bytes: usize },
    #[error(
        "the answer holds the invisible bidirectional control character U+{:04X}, which makes code read differently from how it runs: write it without",
        *codepoint as u32
    )]
    HiddenControl { codepoint: char },
}

/// The code in an executor's answer: the first fenced block when there is one (models
/// wrap code in fences even when told not to), else the whole answer.
pub fn clean_answer(answer: &str, truncated: bool) -> Result<String, AnswerProblem> {
    if answer.len() > MAX_ANSWER_BYTES {
        return Err(AnswerProblem::Enormous {
            bytes: answer.len(),
        });
    }
    let code = match answer.find("```") {
        Some(open) => {
            let after_fence = &answer[open + 3..];
            // The fence's own line holds the language tag, if any.
            let body_start = after_fence
                .find('\n')
                .map_or(after_fence.len(), |at| at + 1);
            let body = &after_fence[body_start..];
            match body.find("```") {
                Some(close) => &body[..close],
                None if truncated => return Err(AnswerProblem::Truncated),
                None => body,
            }
        }
        None if truncated => return Err(AnswerProblem::Truncated),
        None => answer,
    };
    let code = code.trim_matches('\n').trim_end();
    if code.trim().is_empty() {
        return Err(AnswerProblem::Empty);
    }
    if let Some(codepoint) = crate::core::hidden::first_bidi_control(code) {
        return Err(AnswerProblem::HiddenControl { codepoint });
    }
    Ok(code.to_owned())
}
