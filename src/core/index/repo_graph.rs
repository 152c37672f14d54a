//! The file graph the repo map ranks ("file A uses a name that file B defines"), kept
//! between requests and brought up to date per changed file.
//!
//! A file's row (the names it uses with their weights, and the files those lead to) depends
//! on its own references and on where each of those names is defined. So a row is recomputed
//! when its file changed, or when it uses a name whose set of definitions changed; the index
//! journals both (file versions, and the names each change touched). Every other row is
//! reused: an edit in one file costs that file and its users, not the tree.

use super::table::{FileId, Index, NameId};

/// Names defined in more files than this carry no signal.
pub(super) const MAX_DEFINING_FILES: usize = 32;

/// One file's outgoing side of the graph.
#[derive(Debug)]
pub(super) struct Row {
    /// The index's generation when this row was computed.
    computed_at: u64,
    /// The names this file uses that lead elsewhere, with their weights, by name id.
    pub(super) uses: Vec<(NameId, f64)>,
    /// The files those names are defined in, by id, with the summed weights.
    pub(super) edges: Vec<(FileId, f64)>,
    /// The sum of `edges`' weights.
    pub(super) out_weight: f64,
}

/// The rows in path order, flattened for the ranking's thirty passes over every edge.
#[derive(Debug, Default)]
pub(super) struct Flat {
    /// The files in path order: a file's position is its place here.
    pub(super) files: Vec<FileId>,
    /// Each file slot's position; `usize::MAX` for a free slot.
    pub(super) position: Vec<usize>,
    /// Where each position's edges start in `to` and `share`; one more than `files`.
    pub(super) offsets: Vec<usize>,
    /// The position an edge leads to.
    pub(super) to: Vec<u32>,
    /// The edge's weight over its file's outgoing weight: the part of the rank it carries.
    pub(super) share: Vec<f64>,
}

/// The cached graph. Rows are indexed by file id.
#[derive(Debug, Default)]
pub struct RepoGraph {
    /// The index generation the rows reflect; `None` before the first build.
    seen: Option<u64>,
    /// A first build under way in steps: the generation it began at, the next file slot.
    building: Option<(u64, usize)>,
    rows: Vec<Option<Row>>,
    flat: Flat,
    /// Rows (re)computed by the last update or build steps: what an edit cost.
    pub(super) last_recomputed: usize,
    scratch: Scratch,
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

impl RepoGraph {
    /// Builds the graph from nothing, at most `max_rows` rows a call, and says whether it is
    /// built; a server calls it in steps before its first plan, each under a short lock, so
    /// that the map does not build the whole graph under its caller's lock. Rows computed
    /// in earlier steps stay: whatever changed since the build began is found stale by the
    /// next update, as a change after any build is.
    pub(super) fn build_step(&mut self, index: &Index, max_rows: usize) -> bool {
        if self.seen.is_some() {
            return true;
        }
        let (began, mut slot) = match self.building {
            Some(building) => building,
            None => {
                self.rows.clear();
                (index.generation(), 0)
            }
        };
        self.rows.resize_with(index.file_slots(), || None);
        let generation = index.generation();
        let mut computed = 0;
        while slot < self.rows.len() && computed < max_rows {
            let file = FileId(slot as u32);
            self.rows[slot] = index
                .version(file)
                .map(|_| row(index, file, generation, &mut self.scratch));
            computed += usize::from(self.rows[slot].is_some());
            slot += 1;
        }
        self.last_recomputed += computed;
        if slot < self.rows.len() {
            self.building = Some((began, slot));
            return false;
        }
        self.building = None;
        self.seen = Some(began);
        self.flatten(index);
        true
    }

    /// Brings the rows up to date with `index`.
    pub(super) fn update(&mut self, index: &Index) {
        let generation = index.generation();
        self.last_recomputed = 0;
        let changed_names = loop {
            match self.seen {
                None => {
                    self.build_step(index, usize::MAX);
                }
                Some(seen) if seen == generation => return,
                Some(seen) => match index.definition_changes_since(seen) {
                    Some(changed) => break changed,
                    // The journal no longer reaches back to it: every row again.
                    None => {
                        self.seen = None;
                        self.building = None;
                    }
                },
            }
        };
        self.rows.resize_with(index.file_slots(), || None);
        // A bit per name: the test below runs once per reference in the tree.
        let mut changed = vec![0u64; index.name_count().div_ceil(64)];
        for name in &changed_names {
            changed[name.0 as usize / 64] |= 1 << (name.0 % 64);
        }
        let is_changed = |name: NameId| changed[name.0 as usize / 64] & (1 << (name.0 % 64)) != 0;
        let mut recomputed = 0;
        for slot in 0..self.rows.len() {
            let file = FileId(slot as u32);
            let Some(version) = index.version(file) else {
                self.rows[slot] = None;
                continue;
            };
            let stale = match &self.rows[slot] {
                None => true,
                Some(row) => {
                    version > row.computed_at
                        || (!changed_names.is_empty()
                            && index.referenced_names(file).any(is_changed))
                }
            };
            if stale {
                self.rows[slot] = Some(row(index, file, generation, &mut self.scratch));
                recomputed += 1;
            }
        }
        self.seen = Some(generation);
        self.last_recomputed += recomputed;
        // Any change may move files in path order (a rename, a new file): a few
        // milliseconds, against the thirty passes it saves each a lookup and a division.
        self.flatten(index);
    }

    fn flatten(&mut self, index: &Index) {
        let mut files: Vec<(FileId, &str)> = index
            .files()
            .map(|(id, entry)| (id, entry.path()))
            .collect();
        files.sort_by_key(|(_, path)| *path);
        let flat = &mut self.flat;
        flat.files.clear();
        flat.files.extend(files.into_iter().map(|(id, _)| id));
        flat.position.clear();
        flat.position.resize(index.file_slots(), usize::MAX);
        for (at, id) in flat.files.iter().enumerate() {
            flat.position[id.0 as usize] = at;
        }
        let rows: Vec<Option<&Row>> = flat
            .files
            .iter()
            .map(|file| self.rows[file.0 as usize].as_ref())
            .collect();
        let edges: usize = rows.iter().flatten().map(|row| row.edges.len()).sum();
        flat.offsets.clear();
        flat.offsets.reserve(rows.len() + 1);
        flat.to.clear();
        flat.to.reserve(edges);
        flat.share.clear();
        flat.share.reserve(edges);
        flat.offsets.push(0);
        for row in rows {
            if let Some(row) = row {
                flat.to.extend(
                    row.edges
                        .iter()
                        .map(|(to, _)| flat.position[to.0 as usize] as u32),
                );
                flat.share
                    .extend(row.edges.iter().map(|(_, weight)| weight / row.out_weight));
            }
            flat.offsets.push(flat.to.len());
        }
    }

    /// Whether the index must journal its changes for this graph: once a build has begun,
    /// rows computed before a change must learn of it.
    pub(super) fn needs_journal(&self) -> bool {
        self.seen.is_some() || self.building.is_some()
    }

    pub(super) fn row(&self, file: FileId) -> Option<&Row> {
        self.rows.get(file.0 as usize).and_then(Option::as_ref)
    }

    pub(super) fn flat(&self) -> &Flat {
        &self.flat
    }
}

/// Edge weights are summed in fixed point, 32 bits after the point: integer sums are the
/// same whatever order the names come in, and that order follows name ids, i.e. the scan.
/// (Sorting each file's names by their text instead cost most of a first build.)
const FIXED_POINT: f64 = (1u64 << 32) as f64;

fn to_fixed(weight: f64) -> u64 {
    // `as` saturates: a weight past 2^32 (never seen: it would take a name used 10^17
    // times) is capped, not wrapped.
    (weight * FIXED_POINT).round() as u64
}

/// What computing rows needs besides the index, kept between rows: the summed weight
/// towards each file so far (indexed by file id), and which files it touched.
#[derive(Debug, Default)]
struct Scratch {
    towards: Vec<u64>,
    touched: Vec<FileId>,
}

/// Computes `file`'s row from the index as it is now.
fn row(index: &Index, file: FileId, generation: u64, scratch: &mut Scratch) -> Row {
    let mut uses = Vec::new();
    scratch.towards.resize(index.file_slots(), 0);
    for (name, count) in index.name_uses(file) {
        let defining = index.defining(name);
        if defining.is_empty() {
            continue;
        }
        // In path order: a file's definitions are neighbours.
        let defining_files = 1 + defining
            .windows(2)
            .filter(|pair| pair[0].0 != pair[1].0)
            .count();
        let only_here = defining
            .iter()
            .all(|(defining_file, _)| *defining_file == file);
        if defining_files > MAX_DEFINING_FILES || only_here {
            continue;
        }
        let weight = specificity(index.name(name)) * (count as f64).sqrt() / defining.len() as f64;
        uses.push((name, weight));
        let fixed = to_fixed(weight);
        for &(defining_file, _) in defining {
            if defining_file == file {
                continue;
            }
            let towards = &mut scratch.towards[defining_file.0 as usize];
            if *towards == 0 {
                scratch.touched.push(defining_file);
            }
            *towards = towards.saturating_add(fixed);
        }
    }
    scratch.touched.sort_unstable();
    let mut out_weight = 0u64;
    let edges = scratch
        .touched
        .drain(..)
        .filter_map(|to| {
            let weight = std::mem::take(&mut scratch.towards[to.0 as usize]);
            out_weight = out_weight.saturating_add(weight);
            (weight > 0).then(|| (to, weight as f64 / FIXED_POINT))
        })
        .collect();
    Row {
        computed_at: generation,
        uses,
        edges,
        out_weight: out_weight as f64 / FIXED_POINT,
    }
}
