//! What the models are shown beyond the instruction: the planner, the focus symbols and the
//! repo map; an executor, the definitions its code uses.

use std::collections::BTreeSet;

use super::anchor::locate;
use super::prompt::{PlannerInput, TargetSource};
use crate::core::index::extract::{IndexedSymbol, SymbolKind};
use crate::core::index::repo_map::{RepoMapRequest, estimate_tokens, repo_map};
use crate::core::index::table::{Entry, Found, Index};

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
            if definition.path == file && definition.symbol_path() == target {
                continue;
            }
            found.push(format!(
                "{}: {}",
                definition.path,
                definition.detail().signature
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

/// The longest line of a reference site shown, in characters.
const MAX_SITE_CHARS: usize = 160;

/// Where a focus symbol is used, as the planner is shown it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    /// The symbol's qualified path, and the name its uses are found by.
    pub path: String,
    pub name: String,
    /// How many files define the name: above 1, a site may use another definition.
    pub definitions: usize,
    pub sites: Vec<ReferenceSite>,
    /// Every site found and the files they are in, shown or not.
    pub total_sites: usize,
    pub total_files: usize,
}

/// One use: its file, the innermost symbol it sits in (`""` at the top level), its line
/// (1-based) and that line's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceSite {
    pub file: String,
    pub enclosing: String,
    pub line: usize,
    pub text: String,
}

/// How many files define `name` (a type and its `impl` in one file are one definition).
pub fn defining_files(index: &Index, name: &str) -> usize {
    let mut files: Vec<&str> = index
        .definitions(name)
        .iter()
        .map(|found| found.path)
        .collect();
    files.dedup();
    files.len()
}

/// The symbols one focus item is about, in its file's entry.
fn chosen_symbols<'i>(entry: Entry<'i>, item: &Focus) -> Result<Vec<Found<'i>>, String> {
    match item {
        Focus::File(_) => Ok(Vec::new()),
        Focus::Symbol { path, .. } => entry
            .symbols()
            .find(|symbol| symbol.symbol_path() == path.as_str())
            .map(|symbol| vec![symbol])
            .ok_or_else(|| format!("{} has no symbol `{path}`", item.file())),
        Focus::Selection { range, .. } => Ok(selected_symbols(entry, range)),
    }
}

/// What [`references_of`] spends on a site at least: its path, its line (a token or more:
/// it holds the name) and the punctuation.
fn least_site_cost(file: &str) -> usize {
    estimate_tokens(file) + 5
}

/// The files whose text [`planner_input`] needs besides the focus files: those holding the
/// uses of the focus symbols that can fit in `budget` tokens, in path order. Each symbol's
/// sites are priced at [`least_site_cost`], so no site the planner is shown lies in a file
/// left unread, and the files read stay within what the budget can show.
pub fn reference_files(index: &Index, focus: &[Focus], budget: usize) -> Vec<String> {
    let mut files = BTreeSet::new();
    for item in focus {
        let Some(entry) = index.file(item.file()) else {
            continue;
        };
        for symbol in chosen_symbols(entry, item).unwrap_or_default() {
            let mut spent = 0;
            for (file, _) in index.references(symbol.name()) {
                spent += least_site_cost(file);
                if spent > budget {
                    break;
                }
                files.insert(file.to_owned());
            }
        }
    }
    files.into_iter().collect()
}

/// Where each focus symbol is used, under `budget` tokens for all of them: sites in path
/// order, then by position, each with the symbol it sits in.
fn references_of(
    index: &Index,
    texts: &std::collections::BTreeMap<String, String>,
    targets: &[(&str, Found<'_>)],
    budget: usize,
) -> Vec<References> {
    let mut spent = 0;
    let mut all = Vec::new();
    for (_, symbol) in targets {
        let found = index.references(symbol.name());
        let mut references = References {
            path: symbol.symbol_path().into_owned(),
            name: symbol.name().to_owned(),
            definitions: defining_files(index, symbol.name()),
            total_sites: found.len(),
            total_files: found
                .iter()
                .map(|(file, _)| *file)
                .collect::<BTreeSet<_>>()
                .len(),
            sites: Vec::new(),
        };
        for (file, range) in found {
            let Some(text) = texts.get(file) else {
                continue;
            };
            let Some(before) = text.get(..range.start) else {
                continue;
            };
            let line_start = before.rfind('\n').map_or(0, |at| at + 1);
            let line_end = text[range.start..]
                .find('\n')
                .map_or(text.len(), |at| range.start + at);
            let line: String = text[line_start..line_end]
                .trim()
                .chars()
                .take(MAX_SITE_CHARS)
                .collect();
            let enclosing = index
                .enclosing(file, range.start)
                .map(|symbol| symbol.symbol_path().into_owned())
                .unwrap_or_default();
            // Never below `least_site_cost`: the line holds the name, so it is a token at least.
            let cost =
                estimate_tokens(&line) + estimate_tokens(file) + estimate_tokens(&enclosing) + 4;
            // In path order to the end of the budget: the sites shown are the first ones.
            if spent + cost > budget {
                break;
            }
            spent += cost;
            references.sites.push(ReferenceSite {
                file: file.to_owned(),
                enclosing,
                line: before.matches('\n').count() + 1,
                text: line,
            });
        }
        all.push(references);
    }
    all
}

/// The planner's share of tokens for each part of its prompt.
#[derive(Clone, Copy, Debug)]
pub struct PromptBudget {
    /// The repo map (`plan.map_tokens`).
    pub map_tokens: usize,
    /// The focus symbols' reference sites (`plan.reference_tokens`).
    pub reference_tokens: usize,
}

/// Builds the planner's input: the focus symbols' source (from `texts`, each focus file's
/// current text, and those of [`reference_files`]), the symbols of the focus files, where
/// the focus symbols are used, and the repo map.
pub fn planner_input(
    index: &Index,
    texts: &std::collections::BTreeMap<String, String>,
    instruction: &str,
    focus: &[Focus],
    budget: PromptBudget,
) -> Result<PlannerInput, String> {
    let mut targets = Vec::new();
    // The targets shown, whose uses the planner sees too.
    let mut shown: Vec<(&str, Found<'_>)> = Vec::new();
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
        for symbol in chosen_symbols(entry, item)? {
            let path = symbol.symbol_path().into_owned();
            let Some(located) = locate(entry.language, text, &path) else {
                continue;
            };
            let source = located.display(text);
            shown.push((file, symbol));
            targets.push(TargetSource {
                file: file.to_owned(),
                path,
                kind: symbol.symbol.kind.name().to_owned(),
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
                .symbols()
                .take(MAX_LISTED_SYMBOLS)
                .map(|found| {
                    let kind = found.symbol.kind.name().to_owned();
                    (found.symbol_path().into_owned(), kind)
                })
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
            token_budget: budget.map_tokens,
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
    let references = references_of(index, texts, &shown, budget.reference_tokens);
    for site in references.iter().flat_map(|references| &references.sites) {
        if !files_shown.contains(&site.file) {
            files_shown.push(site.file.clone());
        }
    }
    let mut allowed: Vec<(String, Vec<String>)> = files_shown
        .into_iter()
        .map(|file| {
            let symbols = index.file(&file).map_or_else(Vec::new, |entry| {
                let mut paths: Vec<String> = Vec::new();
                for symbol in entry.symbols().take(MAX_LISTED_SYMBOLS) {
                    let symbol_path = symbol.symbol_path();
                    if !paths.iter().any(|path| *path == symbol_path) {
                        paths.push(symbol_path.into_owned());
                    }
                }
                paths
            });
            (file, symbols)
        })
        .collect();
    // Every symbol a use sits in is a target a step may name, however far down its file.
    for site in references.iter().flat_map(|references| &references.sites) {
        if let Some((_, symbols)) = allowed.iter_mut().find(|(file, _)| *file == site.file)
            && !site.enclosing.is_empty()
            && !symbols.contains(&site.enclosing)
        {
            symbols.push(site.enclosing.clone());
        }
    }
    Ok(PlannerInput {
        instruction: instruction.trim().to_owned(),
        targets,
        file_symbols,
        references,
        repo_map: map,
        allowed,
    })
}

/// The symbols a selection is about: the outermost ones it covers whole, else the
/// innermost one around it, else the one starting right after it (a `tierls:` comment
/// above a function is about that function).
fn selected_symbols<'i>(entry: Entry<'i>, range: &std::ops::Range<usize>) -> Vec<Found<'i>> {
    let symbols = &entry.file().symbols;
    let covered = |symbol: &IndexedSymbol| {
        !range.is_empty() && range.start <= symbol.range().start && symbol.range().end <= range.end
    };
    let outermost: Vec<usize> = (0..symbols.len())
        .filter(|&index| {
            covered(&symbols[index])
                && !symbols[index]
                    .parent()
                    .is_some_and(|parent| covered(&symbols[parent]))
        })
        .collect();
    if !outermost.is_empty() {
        return (outermost.into_iter())
            .filter_map(|index| entry.symbol(index))
            .collect();
    }
    let around = entry
        .symbols()
        .filter(|found| {
            let symbol = found.symbol;
            symbol.range().start <= range.start && range.end <= symbol.range().end
        })
        .min_by_key(|found| found.symbol.range().len());
    let below = entry
        .symbols()
        .filter(|found| {
            let start = found.symbol.range().start;
            start >= range.end && start - range.end < 200
        })
        .min_by_key(|found| found.symbol.range().start);
    // The symbol right below wins when it lies inside the one around (a method below a
    // comment in its class).
    let chosen = match (around, below) {
        (Some(around), Some(below)) if around.symbol.range().end >= below.symbol.range().end => {
            Some(below)
        }
        (None, below) => below,
        (around, _) => around,
    };
    chosen.into_iter().collect()
}

/// The most symbols one "edit with instruction" rewrites.
pub const MAX_EDIT_SYMBOLS: usize = 8;

/// The symbols an instruction edit of `range` in `text` rewrites: the innermost symbol that
/// holds the whole selection (blank space at its ends aside), or, when the selection spans
/// several of its members (or several top-level symbols), those members. An `impl` block is
/// never the target while the selection touches one of its items: its path names the type
/// too, and the item is what the user pointed at. Errors say why nothing can be sent to a
/// model.
pub fn edit_targets<'e>(
    entry: Entry<'e>,
    text: &ropey::Rope,
    range: &std::ops::Range<usize>,
) -> Result<Vec<Found<'e>>, String> {
    let range = without_blank_ends(text, range);
    if range.is_empty() {
        return Err("the selection is empty: select the code to edit".to_owned());
    }
    let symbols = &entry.file().symbols;
    let intersects = |symbol: &IndexedSymbol| {
        symbol.range().start < range.end && range.start < symbol.range().end
    };
    let container = symbols
        .iter()
        .enumerate()
        .filter(|(_, symbol)| {
            symbol.range().start <= range.start && range.end <= symbol.range().end
        })
        .min_by_key(|(_, symbol)| symbol.range().len())
        .map(|(index, _)| index);
    let members: Vec<Found<'e>> = entry
        .symbols()
        .filter(|found| found.symbol.parent() == container && intersects(found.symbol))
        .collect();
    let in_an_impl = container.is_some_and(|index| symbols[index].kind == SymbolKind::Impl);
    let targets = match (container, members.len()) {
        (_, 2..) => members,
        (Some(_), 1) if in_an_impl => members,
        (Some(container), _) => entry.symbol(container).into_iter().collect(),
        (None, 1) => members,
        (None, _) => {
            return Err(
                "the selection covers no symbol: select inside a function, method or type (use \"Plan refactor…\" for code outside them)"
                    .to_owned(),
            );
        }
    };
    if targets.len() > MAX_EDIT_SYMBOLS {
        return Err(format!(
            "the selection spans {} symbols; an edit rewrites at most {MAX_EDIT_SYMBOLS}: select less, or use \"Plan refactor…\"",
            targets.len()
        ));
    }
    Ok(targets)
}

/// `range` without the whitespace at its ends: a selection made by whole lines starts in
/// the indentation before the symbol it means.
fn without_blank_ends(
    text: &ropey::Rope,
    range: &std::ops::Range<usize>,
) -> std::ops::Range<usize> {
    let end = range.end.min(text.len_bytes());
    let start = range.start.min(end);
    let selected = text.byte_slice(start..end);
    let blank = |c: &char| c.is_whitespace();
    let leading: usize = selected.chars().take_while(blank).map(char::len_utf8).sum();
    if start + leading == end {
        return start..start;
    }
    let trailing: usize = selected
        .chars_at(selected.len_chars())
        .reversed()
        .take_while(blank)
        .map(char::len_utf8)
        .sum();
    start + leading..end - trailing
}
