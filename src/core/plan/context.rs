//! What the models are shown beyond the instruction: the planner, the focus symbols and the
//! repo map; an executor, the definitions its code uses.

use std::collections::BTreeSet;

use super::anchor::locate;
use super::prompt::{PlannerInput, TargetSource};
use crate::core::index::extract::Symbol;
use crate::core::index::repo_map::{RepoMapRequest, repo_map};
use crate::core::index::table::Index;

/// Definitions in the index named by identifiers of `source`, as `file: signature`, leaving
/// out `file`'s own `target` and names defined in many places (they say little).
pub fn used_definitions(
    index: &Index,
    source: &str,
    file: &str,
    target: &str,
    limit: usize,
) -> Vec<String> {
    let words: BTreeSet<&str> = source
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|word| word.len() > 2 && !word.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    let mut found = Vec::new();
    for word in words {
        let definitions = index.definitions(word);
        if definitions.is_empty() || definitions.len() > 3 {
            continue;
        }
        for definition in definitions {
            if definition.path == file && definition.symbol.path == target {
                continue;
            }
            found.push(format!(
                "{}: {}",
                definition.path, definition.symbol.signature
            ));
        }
    }
    found.sort();
    found.dedup();
    found.truncate(limit);
    found
}

/// What a plan is about: a symbol by path, or a selection (byte range) in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Focus {
    File(String),
    Symbol {
        file: String,
        path: String,
    },
    Selection {
        file: String,
        range: std::ops::Range<usize>,
    },
}

impl Focus {
    pub fn file(&self) -> &str {
        match self {
            Focus::File(file) | Focus::Symbol { file, .. } | Focus::Selection { file, .. } => file,
        }
    }
}

/// The most symbols of a focus file the planner is shown.
const MAX_LISTED_SYMBOLS: usize = 80;

/// Builds the planner's input: the focus symbols' source (from `texts`, each focus file's
/// current text), the symbols of the focus files, and the repo map under `map_tokens`.
pub fn planner_input(
    index: &Index,
    texts: &std::collections::BTreeMap<String, String>,
    instruction: &str,
    focus: &[Focus],
    map_tokens: usize,
) -> Result<PlannerInput, String> {
    let mut targets = Vec::new();
    let mut files: Vec<&str> = Vec::new();
    for item in focus {
        let file = item.file();
        let entry = index
            .file(file)
            .ok_or_else(|| format!("{file} is not a source file in the index"))?;
        let text = texts
            .get(file)
            .ok_or_else(|| format!("{file} could not be read"))?;
        if !files.contains(&file) {
            files.push(file);
        }
        let chosen: Vec<&Symbol> = match item {
            Focus::File(_) => Vec::new(),
            Focus::Symbol { path, .. } => {
                let symbol = entry
                    .symbols
                    .iter()
                    .find(|symbol| &symbol.path == path)
                    .ok_or_else(|| format!("{file} has no symbol `{path}`"))?;
                vec![symbol]
            }
            Focus::Selection { range, .. } => selected_symbols(&entry.symbols, range),
        };
        for symbol in chosen {
            let Some(located) = locate(entry.language, text, &symbol.path) else {
                continue;
            };
            let source = located.display(text);
            targets.push(TargetSource {
                file: file.to_owned(),
                path: symbol.path.clone(),
                kind: symbol.kind.name().to_owned(),
                language: entry.language.name().to_owned(),
                source,
            });
        }
    }
    let file_symbols = files
        .iter()
        .filter_map(|file| {
            let entry = index.file(file)?;
            let listed = entry
                .symbols
                .iter()
                .take(MAX_LISTED_SYMBOLS)
                .map(|symbol| (symbol.path.clone(), symbol.kind.name().to_owned()))
                .collect();
            Some(((*file).to_owned(), listed))
        })
        .collect();
    let names: Vec<&str> = targets.iter().map(|target| target.path.as_str()).collect();
    let map = repo_map(
        index,
        &RepoMapRequest {
            focus_files: &files,
            focus_names: &names,
            token_budget: map_tokens,
        },
    );
    let mut files_shown: Vec<String> = files.iter().map(|file| (*file).to_owned()).collect();
    for line in map.lines() {
        if let Some(file) = line.strip_suffix(':')
            && !line.starts_with(' ')
            && !files_shown.iter().any(|shown| shown == file)
        {
            files_shown.push(file.to_owned());
        }
    }
    let allowed = files_shown
        .into_iter()
        .map(|file| {
            let symbols = index.file(&file).map_or_else(Vec::new, |entry| {
                let mut paths: Vec<String> = Vec::new();
                for symbol in entry.symbols.iter().take(MAX_LISTED_SYMBOLS) {
                    if !paths.contains(&symbol.path) {
                        paths.push(symbol.path.clone());
                    }
                }
                paths
            });
            (file, symbols)
        })
        .collect();
    Ok(PlannerInput {
        instruction: instruction.trim().to_owned(),
        targets,
        file_symbols,
        repo_map: map,
        allowed,
    })
}

/// The symbols a selection is about: the outermost ones it covers whole, else the
/// innermost one around it, else the one starting right after it (a `tierls:` comment
/// above a function is about that function).
fn selected_symbols<'s>(symbols: &'s [Symbol], range: &std::ops::Range<usize>) -> Vec<&'s Symbol> {
    let covered = |symbol: &Symbol| {
        !range.is_empty() && range.start <= symbol.range.start && symbol.range.end <= range.end
    };
    let outermost: Vec<&Symbol> = symbols
        .iter()
        .filter(|symbol| {
            covered(symbol)
                && !symbol
                    .parent
                    .is_some_and(|parent| covered(&symbols[parent]))
        })
        .collect();
    if !outermost.is_empty() {
        return outermost;
    }
    let around = symbols
        .iter()
        .filter(|symbol| symbol.range.start <= range.start && range.end <= symbol.range.end)
        .min_by_key(|symbol| symbol.range.len());
    let below = symbols
        .iter()
        .filter(|symbol| symbol.range.start >= range.end && symbol.range.start - range.end < 200)
        .min_by_key(|symbol| symbol.range.start);
    // The symbol right below wins when it lies inside the one around (a method below a
    // comment in its class).
    let chosen = match (around, below) {
        (Some(around), Some(below)) if around.range.end >= below.range.end => Some(below),
        (None, below) => below,
        (around, _) => around,
    };
    chosen.into_iter().collect()
}
