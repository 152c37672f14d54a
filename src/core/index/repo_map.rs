//! The repo map: the definitions most relevant to some focus files, as signatures, under a
//! token budget.
//!
//! Files are ranked by a PageRank over the graph "file A uses a name that file B defines",
//! personalised to the focus; a definition scores the rank that flows to it along those
//! edges. Names defined in many files (`new`, `main`) say little and are left out.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::table::{FileId, Index};

/// Names defined in more files than this carry no signal.
const MAX_DEFINING_FILES: usize = 32;
const DAMPING: f64 = 0.85;
const ITERATIONS: usize = 30;

pub struct RepoMapRequest<'a> {
    /// Workspace-relative paths the map is about; their own definitions are left out (the
    /// caller shows those in full).
    pub focus_files: &'a [&'a str],
    /// Names whose definitions come first.
    pub focus_names: &'a [&'a str],
    pub token_budget: usize,
}

/// Rough tokens of `text`: code runs at about four bytes per token in common tokenizers.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(4)
}

/// Long compound names (`parse_headers`, `RepoMapRequest`) point at one thing; short ones
/// (`len`, `get`) are shared by many types that a name-based index cannot tell apart.
fn specificity(name: &str) -> f64 {
    let compound = name.contains('_') || name.chars().skip(1).any(char::is_uppercase);
    if name.len() >= 8 && compound {
        10.0
    } else if name.len() <= 3 {
        0.1
    } else {
        1.0
    }
}

pub fn repo_map(index: &Index, request: &RepoMapRequest<'_>) -> String {
    // Everything below runs in path order, and sums in the same order every time: the map
    // is a function of the files' contents and the request, never of the scan order.
    let mut files: Vec<(FileId, &str)> = index
        .files()
        .map(|(id, entry)| (id, entry.path.as_str()))
        .collect();
    files.sort_by_key(|(_, path)| *path);
    let files: Vec<FileId> = files.into_iter().map(|(id, _)| id).collect();
    if files.is_empty() {
        return String::new();
    }
    let n = files.len();
    let position: HashMap<FileId, usize> =
        files.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let focus: HashSet<usize> = request
        .focus_files
        .iter()
        .filter_map(|path| index.file_id(path).map(|id| position[&id]))
        .collect();

    // The weight each use gives to each definition of the name; summed per pair of files
    // for the ranking, and spent per definition afterwards.
    let uses_of = |from: usize| {
        let file = files[from];
        index
            .name_uses(file)
            .into_iter()
            .filter_map(move |(name, count)| {
                let defining = index.defining(name);
                let mut defining_files: Vec<FileId> =
                    defining.iter().map(|(file, _)| *file).collect();
                defining_files.dedup();
                let only_here = defining_files
                    .iter()
                    .all(|defining_file| *defining_file == file);
                if defining.is_empty() || defining_files.len() > MAX_DEFINING_FILES || only_here {
                    return None;
                }
                let weight =
                    specificity(index.name(name)) * (count as f64).sqrt() / defining.len() as f64;
                Some((name, weight))
            })
    };
    let mut edges: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    for (from, out) in edges.iter_mut().enumerate() {
        let mut targets: BTreeMap<usize, f64> = BTreeMap::new();
        for (name, weight) in uses_of(from) {
            for (defining_file, _) in index.defining(name) {
                if *defining_file != files[from] {
                    *targets.entry(position[defining_file]).or_default() += weight;
                }
            }
        }
        *out = targets.into_iter().collect();
    }

    // PageRank personalised to the focus (uniform without one).
    let personal: Vec<f64> = if focus.is_empty() {
        vec![1.0 / n as f64; n]
    } else {
        (0..n)
            .map(|i| {
                if focus.contains(&i) {
                    1.0 / focus.len() as f64
                } else {
                    0.0
                }
            })
            .collect()
    };
    let out_weight: Vec<f64> = edges
        .iter()
        .map(|out| out.iter().map(|edge| edge.1).sum())
        .collect();
    let mut rank = personal.clone();
    for _ in 0..ITERATIONS {
        let mut next: Vec<f64> = personal.iter().map(|p| (1.0 - DAMPING) * p).collect();
        let mut dangling = 0.0;
        for from in 0..n {
            if out_weight[from] == 0.0 {
                dangling += rank[from];
                continue;
            }
            for &(to, weight) in &edges[from] {
                next[to] += DAMPING * rank[from] * weight / out_weight[from];
            }
        }
        for (i, value) in next.iter_mut().enumerate() {
            *value += DAMPING * dangling * personal[i];
        }
        rank = next;
    }

    // A definition's score is the rank that flows to it; files with no rank to give are
    // skipped (with a focus, most of a large tree).
    let mut scores: HashMap<(FileId, usize), f64> = HashMap::new();
    let max_rank = rank.iter().copied().fold(0.0, f64::max);
    for from in 0..n {
        if out_weight[from] == 0.0 || rank[from] < max_rank * 1e-6 {
            continue;
        }
        for (name, weight) in uses_of(from) {
            for &(defining_file, symbol_index) in index.defining(name) {
                if defining_file != files[from] {
                    *scores
                        .entry((defining_file, symbol_index as usize))
                        .or_default() += rank[from] * weight / out_weight[from];
                }
            }
        }
    }
    let focus_names: HashSet<&str> = request.focus_names.iter().copied().collect();
    let mut candidates: Vec<((FileId, usize), f64)> = Vec::new();
    for (position_of_file, &file) in files.iter().enumerate() {
        if focus.contains(&position_of_file) {
            continue;
        }
        let Some(entry) = index.entry(file) else {
            continue;
        };
        for (symbol_index, symbol) in entry.symbols.iter().enumerate() {
            let mut score = scores.get(&(file, symbol_index)).copied().unwrap_or(0.0);
            // Unreferenced definitions still rank by their file, below referenced ones.
            score += rank[position_of_file] * 1e-3;
            if focus_names.contains(symbol.name.as_str()) {
                score += 10.0;
            }
            candidates.push(((file, symbol_index), score));
        }
    }
    let place = |(file, symbol_index): (FileId, usize)| {
        (
            index.entry(file).map_or("", |entry| entry.path.as_str()),
            symbol_index,
        )
    };
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(place(a.0).cmp(&place(b.0))));

    // Take the best until the budget is spent, then print them grouped by file, in order.
    let mut chosen: BTreeMap<(usize, String), Vec<usize>> = BTreeMap::new();
    let mut file_order: HashMap<FileId, usize> = HashMap::new();
    let mut spent = 0;
    for ((file, symbol_index), _) in candidates {
        let Some(entry) = index.entry(file) else {
            continue;
        };
        let symbol = &entry.symbols[symbol_index];
        let is_new_file = !file_order.contains_key(&file);
        let cost = estimate_tokens(&symbol.signature)
            + 2
            + if is_new_file {
                estimate_tokens(&entry.path) + 2
            } else {
                0
            };
        if spent + cost > request.token_budget {
            continue;
        }
        spent += cost;
        let order = file_order.len();
        let order = *file_order.entry(file).or_insert(order);
        chosen
            .entry((order, entry.path.clone()))
            .or_default()
            .push(symbol_index);
    }
    let mut map = String::new();
    for ((_, path), mut symbol_indices) in chosen {
        let Some(entry) = index.file(&path) else {
            continue;
        };
        symbol_indices.sort_by_key(|&i| entry.symbols[i].range.start);
        map.push_str(&path);
        map.push_str(":\n");
        for i in symbol_indices {
            let symbol = &entry.symbols[i];
            let depth =
                std::iter::successors(symbol.parent, |&parent| entry.symbols[parent].parent)
                    .count();
            map.push_str(&"  ".repeat(depth + 1));
            map.push_str(&symbol.signature);
            map.push('\n');
        }
    }
    map
}
