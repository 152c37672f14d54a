//! A check command's output as `file:line: message` failures, for the formats the common
//! checkers print: rustc and cargo (long and `--message-format short`), gcc, clang and
//! `go vet` (`file:line:col: message`), tsc (`file(line,col): error …`), Python tracebacks
//! and `compileall` (`File "file", line N`). Paths are kept only when `resolve` maps them to
//! a workspace file; everything else stays in the raw output the user is shown.

use crate::core::index::extract::{extract, parse};
use crate::core::index::language::Language;

/// One failure a check reported, in a workspace file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Failure {
    /// Workspace-relative.
    pub file: String,
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// The failures of `after` that `before` did not report, matched by file and message
/// (lines move when code is added above a failure).
pub fn new_failures(before: &[Failure], after: &[Failure]) -> Vec<Failure> {
    after
        .iter()
        .filter(|failure| {
            !before
                .iter()
                .any(|old| old.file == failure.file && old.message == failure.message)
        })
        .cloned()
        .collect()
}

/// The most failures read from one output: a check that prints thousands says enough in
/// its first ones.
pub const MAX_FAILURES: usize = 200;

/// The failures in `output`, each once, in the order printed. `resolve` turns a path as the
/// checker printed it into a workspace-relative one, or `None` when it is not a workspace
/// file (a library, the standard library, a generated file outside the tree).
pub fn parse_failures(output: &str, resolve: &dyn Fn(&str) -> Option<String>) -> Vec<Failure> {
    let mut failures: Vec<Failure> = Vec::new();
    let mut push = |failure: Failure| {
        if failures.len() < MAX_FAILURES && !failures.contains(&failure) {
            failures.push(failure);
        }
    };
    let lines: Vec<&str> = output.lines().collect();
    // rustc's long form: `error[E0061]: message` … `  --> file:line:col`.
    let mut headline: Option<&str> = None;
    // Python: the last workspace frame of a traceback, waiting for its exception line.
    let mut frame: Option<(String, usize)> = None;
    for line in &lines {
        let trimmed = line.trim();
        if let Some(message) = rust_headline(trimmed) {
            headline = Some(message);
            continue;
        }
        if let Some(location) = trimmed.strip_prefix("--> ") {
            if let (Some(message), Some((path, number))) = (headline, file_and_line(location))
                && let Some(file) = resolve(path)
            {
                push(Failure {
                    file,
                    line: number,
                    message: message.to_owned(),
                });
            }
            headline = None;
            continue;
        }
        if let Some((path, number)) = python_frame(trimmed) {
            if let Some(file) = resolve(path) {
                frame = Some((file, number));
            }
            continue;
        }
        if let Some((file, number)) = frame.take() {
            if is_python_exception(trimmed) {
                push(Failure {
                    file,
                    line: number,
                    message: trimmed.to_owned(),
                });
                continue;
            }
            // Source lines and carets sit between a frame and its exception.
            frame = Some((file, number));
        }
        if let Some((path, number, message)) = tsc_line(trimmed).or_else(|| colon_line(trimmed))
            && let Some(file) = resolve(path)
        {
            push(Failure {
                file,
                line: number,
                message: message.to_owned(),
            });
        }
    }
    failures
}

/// `error[E0061]: this function takes 2 arguments`: rustc's long form names the file on a
/// `-->` line below.
fn rust_headline(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("error")?;
    let rest = match rest.strip_prefix('[') {
        Some(code) => code.split_once(']')?.1,
        None => rest,
    };
    rest.strip_prefix(": ")
        .filter(|message| !message.is_empty())
        .map(|_| line)
}

/// `src/a.rs:6:17` or `src/a.rs:6` → the path and the line.
fn file_and_line(location: &str) -> Option<(&str, usize)> {
    let (rest, last) = location.rsplit_once(':')?;
    let last: usize = last.trim().parse().ok()?;
    if let Some((path, line)) = rest.rsplit_once(':')
        && let Ok(line) = line.parse::<usize>()
        && !path.is_empty()
    {
        return Some((path, line));
    }
    (!rest.is_empty()).then_some((rest, last))
}

/// `File "shop/cart.py", line 19, in checkout` → the path and the line.
fn python_frame(line: &str) -> Option<(&str, usize)> {
    let rest = line.strip_prefix("File \"")?;
    let (path, rest) = rest.split_once("\", line ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((path, digits.parse().ok()?))
}

/// `TypeError: total_price() missing 1 required positional argument` and the like.
fn is_python_exception(line: &str) -> bool {
    let Some((name, _)) = line.split_once(':') else {
        return false;
    };
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
        && (name.ends_with("Error") || name.ends_with("Exception") || name.ends_with("Warning"))
}

/// `src/a.ts(3,5): error TS2554: Expected 2 arguments, but got 1.`
fn tsc_line(line: &str) -> Option<(&str, usize, &str)> {
    let (head, message) = line.split_once("): ")?;
    let (path, position) = head.rsplit_once('(')?;
    let number = position.split(',').next()?.parse().ok()?;
    Some((path, number, message))
}

/// `src/a.rs:6:17: error: …`, `a.c:3:5: warning: …`, `./x.go:4:2: …`, `a.py:3: …`.
fn colon_line(line: &str) -> Option<(&str, usize, &str)> {
    let (path, rest) = line.split_once(':')?;
    let (number, rest) = rest.split_once(':')?;
    let number = number.parse().ok()?;
    // An optional column.
    let rest = match rest.split_once(':') {
        Some((column, after)) if column.parse::<usize>().is_ok() => after,
        _ => rest,
    };
    let message = rest.trim();
    (!path.is_empty() && !path.contains(char::is_whitespace) && !message.is_empty())
        .then_some((path, number, message))
}

/// The innermost symbol of `text` that holds `line` (1-based): the code a failure there
/// belongs to.
pub fn symbol_at_line(language: Language, text: &str, line: usize) -> Option<String> {
    let start = if line <= 1 {
        0
    } else {
        text.match_indices('\n').nth(line - 2)?.0 + 1
    };
    let end = text[start..].find('\n').map_or(text.len(), |at| start + at);
    let tree = parse(language, text, None)?;
    let symbols = extract(language, &tree, text).symbols;
    symbols
        .iter()
        .filter(|symbol| symbol.range().start <= end && start < symbol.range().end)
        .min_by_key(|symbol| symbol.range().len())
        .map(|symbol| symbol.path().to_owned())
}
