//! The repo map: the definitions most relevant to some focus files, as signatures, under a
//! token budget.
//!
//! Files are ranked by a PageRank over the graph "file A uses a name that file B defines",
//! personalised to the focus; a definition scores the rank that flows to it along those
//! edges. Names defined in many files (`new`, `main`) say little and are left out.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::repo_graph::RepoGraph;
use super::table::{FileId, Index};

const DAMPING: f64 = 0.85;
const ITERATIONS: usize = 30;
/// Candidates are ordered this many at a time: a budget is spent long before most of a
/// large tree's definitions are looked at.
const SELECTION_CHUNK: usize = 4096;

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

/// What the last [`repo_map`] cost: how many files' graph rows it had to recompute.
pub fn last_recomputed_rows(index: &Index) -> usize {
    index.repo_graph().last_recomputed
}

/// A candidate for the map: one definition (a file's position in path order, the symbol's
/// index), or every definition of the file from `first` on that scores the file's floor.
#[derive(Clone, Copy, Debug)]
enum Place {
    One { at: usize, symbol_index: usize },
    Rest { at: usize, first: usize },
}

impl Place {
    /// Where it sorts among candidates of the same score: by its (first) definition's place.
    fn key(self) -> (usize, usize) {
        match self {
            Place::One { at, symbol_index } => (at, symbol_index),
            Place::Rest { at, first } => (at, first),
        }
    }
}

/// Files' rows a server computes in one step of [`build_graph_step`], under one lock:
/// about 10 ms on the kernel's files.
pub const GRAPH_ROWS_PER_STEP: usize = 1000;

/// Builds the repo map's graph ahead of the first map, at most `max_rows` files' rows a
/// call; true once it is built (see `RepoGraph::build_step`).
pub fn build_graph_step(index: &Index, max_rows: usize) -> bool {
    index.repo_graph().build_step(index, max_rows)
}

pub fn repo_map(index: &Index, request: &RepoMapRequest<'_>) -> String {
    let mut graph = index.repo_graph();
    graph.update(index);
    map_from_graph(index, &graph, request)
}

fn map_from_graph(index: &Index, graph: &RepoGraph, request: &RepoMapRequest<'_>) -> String {
    // Everything below runs in path order, and sums in the same order every time: the map
    // is a function of the files' contents and the request, never of the scan order.
    let flat = graph.flat();
    let files = &flat.files;
    let position = &flat.position;
    if files.is_empty() {
        return String::new();
    }
    let n = files.len();
    let focus: HashSet<usize> = request
        .focus_files
        .iter()
        .filter_map(|path| index.file_id(path).map(|id| position[id.0 as usize]))
        .collect();
    let rows: Vec<_> = files
        .iter()
        .map(|file| graph.row(*file).expect("the graph was brought up to date"))
        .collect();

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
    let mut rank = personal.clone();
    let mut next = vec![0.0; n];
    for _ in 0..ITERATIONS {
        for (value, p) in next.iter_mut().zip(&personal) {
            *value = (1.0 - DAMPING) * p;
        }
        let mut dangling = 0.0;
        for (from, edges) in flat.offsets.windows(2).enumerate() {
            let edges = edges[0]..edges[1];
            if edges.is_empty() {
                dangling += rank[from];
                continue;
            }
            let flow = DAMPING * rank[from];
            for (&to, &share) in flat.to[edges.clone()].iter().zip(&flat.share[edges]) {
                next[to as usize] += flow * share;
            }
        }
        for (i, value) in next.iter_mut().enumerate() {
            *value += DAMPING * dangling * personal[i];
        }
        std::mem::swap(&mut rank, &mut next);
    }

    // A definition's score is the rank that flows to it from the files that use its name,
    // its own file aside; files with no rank to give are skipped (with a focus, most of a
    // large tree). What flows is summed per name first (in path order), then handed to
    // each of the name's definitions once: a name used by a thousand files costs its
    // definitions one visit, not a thousand.
    let max_rank = rank.iter().copied().fold(0.0, f64::max);
    let gives = |from: usize| rows[from].out_weight > 0.0 && rank[from] >= max_rank * 1e-6;
    let mut flow = vec![0.0; index.name_count()];
    let mut givers = vec![0u32; index.name_count()];
    let mut flowing = Vec::new();
    for (from, row) in rows.iter().enumerate() {
        if !gives(from) {
            continue;
        }
        for &(name, weight) in &row.uses {
            let slot = name.0 as usize;
            if givers[slot] == 0 {
                flowing.push(name);
            }
            givers[slot] += 1;
            flow[slot] += rank[from] * weight / row.out_weight;
        }
    }
    let mut scores: Vec<Option<Box<[f64]>>> = vec![None; n];
    for name in flowing {
        let slot = name.0 as usize;
        for &(defining_file, symbol_index) in index.defining(name) {
            let at = position[defining_file.0 as usize];
            // The file's own use of the name gives nothing to its own definitions.
            let own = rows[at]
                .uses
                .binary_search_by_key(&name, |(used, _)| *used)
                .ok()
                .filter(|_| gives(at))
                .map(|i| rank[at] * rows[at].uses[i].1 / rows[at].out_weight);
            let score = match own {
                Some(_) if givers[slot] == 1 => continue,
                Some(own) => flow[slot] - own,
                None => flow[slot],
            };
            let file_scores = scores[at].get_or_insert_with(|| {
                let symbols = index.entry(defining_file).map_or(0, |e| e.symbols.len());
                vec![0.0; symbols].into_boxed_slice()
            });
            if let Some(slot) = file_scores.get_mut(symbol_index as usize) {
                *slot = score;
            }
        }
    }
    let mut focus_definitions: HashMap<usize, Vec<usize>> = HashMap::new();
    for name in request.focus_names {
        for found in index.definitions(name) {
            let at = position[found.file.0 as usize];
            focus_definitions.entry(at).or_default().push(found.index);
        }
    }
    // A definition's whole score: what flows to it, its file's rank (so unreferenced
    // definitions still rank by their file, below referenced ones), and the focus bonus.
    let floor_of = |at: usize| rank[at] * 1e-3;
    let score = |at: usize, symbol_index: usize, bonus: Option<&Vec<usize>>| {
        let flowed = scores[at]
            .as_ref()
            .map_or(0.0, |file_scores| file_scores[symbol_index]);
        let bonus = bonus.is_some_and(|bonus| bonus.contains(&symbol_index));
        flowed + floor_of(at) + if bonus { 10.0 } else { 0.0 }
    };
    // Definitions with a score, and those without in path order: they follow every scored
    // one, in that order, when the budget has room left. The definitions of a file that
    // score its floor and nothing more (most of a large tree's, once the rank has spread)
    // are one candidate, unfolded when it is reached: they have the same score and come
    // in the order of their places, so the order is that of one candidate each.
    let mut candidates: Vec<(Place, f64)> = Vec::new();
    let mut unscored: Vec<Place> = Vec::new();
    for (at, &file) in files.iter().enumerate() {
        if focus.contains(&at) {
            continue;
        }
        let Some(entry) = index.entry(file) else {
            continue;
        };
        let symbols = entry.symbols.len();
        if symbols == 0 {
            continue;
        }
        let floor = floor_of(at);
        let bonus = focus_definitions.get(&at);
        if scores[at].is_none() && bonus.is_none() {
            let whole = Place::Rest { at, first: 0 };
            if floor > 0.0 {
                candidates.push((whole, floor));
            } else {
                unscored.push(whole);
            }
            continue;
        }
        let mut rest = false;
        for symbol_index in 0..symbols {
            let one = Place::One { at, symbol_index };
            match score(at, symbol_index, bonus) {
                at_floor if at_floor == floor && floor > 0.0 => {
                    if !rest {
                        rest = true;
                        let first = symbol_index;
                        candidates.push((Place::Rest { at, first }, floor));
                    }
                }
                positive if positive > 0.0 => candidates.push((one, positive)),
                _ => unscored.push(one),
            }
        }
    }
    let better =
        |a: &(Place, f64), b: &(Place, f64)| b.1.total_cmp(&a.1).then(a.0.key().cmp(&b.0.key()));

    // Take the best until the budget is spent, then print them grouped by file, in order.
    let mut chosen: BTreeMap<(usize, String), Vec<usize>> = BTreeMap::new();
    let mut file_order: HashMap<FileId, usize> = HashMap::new();
    let mut spent = 0;
    // No definition costs less than this: once it does not fit, nothing does.
    const LEAST_COST: usize = 2;
    let mut remaining = candidates.as_mut_slice();
    let ordered = std::iter::from_fn(|| {
        if remaining.is_empty() {
            return None;
        }
        let take = remaining.len().min(SELECTION_CHUNK);
        if take < remaining.len() {
            remaining.select_nth_unstable_by(take - 1, better);
        }
        let (chunk, rest) = std::mem::take(&mut remaining).split_at_mut(take);
        chunk.sort_by(better);
        remaining = rest;
        Some(chunk.iter().map(|(place, _)| *place).collect::<Vec<_>>())
    })
    .flatten()
    .chain(unscored)
    .flat_map(|place| {
        let (at, symbols, whole) = match place {
            Place::One { at, symbol_index } => (at, symbol_index..symbol_index + 1, false),
            Place::Rest { at, first } => {
                let symbols = index
                    .entry(files[at])
                    .map_or(0, |entry| entry.symbols.len());
                (at, first..symbols, true)
            }
        };
        let bonus = focus_definitions.get(&at);
        symbols
            .filter(move |&i| !whole || score(at, i, bonus) == floor_of(at))
            .map(move |symbol_index| (at, symbol_index))
    });
    for (at, symbol_index) in ordered {
        if spent + LEAST_COST > request.token_budget {
            break;
        }
        let file = files[at];
        let Some(entry) = index.entry(file) else {
            continue;
        };
        let symbol = &entry.symbols[symbol_index];
        let is_new_file = !file_order.contains_key(&file);
        let cost = symbol.signature_len().div_ceil(4)
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
        symbol_indices.sort_by_key(|&i| entry.symbols[i].range().start);
        map.push_str(&path);
        map.push_str(":\n");
        for i in symbol_indices {
            let symbol = &entry.symbols[i];
            let depth =
                std::iter::successors(symbol.parent(), |&parent| entry.symbols[parent].parent())
                    .count();
            map.push_str(&"  ".repeat(depth + 1));
            map.push_str(&entry.detail(i).signature);
            map.push('\n');
        }
    }
    map
}
