//! The symbol table of a workspace: every file's definitions and references, by path and by
//! name.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use hashbrown::HashTable;

use super::extract::{Detail, Details, FileSymbols, IndexedSymbol, Symbol};
use super::language::Language;
use super::packed_references::{PackedReferences, StoredReference};
use super::repo_graph::{MAX_DEFINING_FILES, RepoGraph};

/// At most this many paths under a folder are looked at for its own files.
const FOLDER_SCAN: usize = 4096;

/// The journal of names whose definitions changed holds at most this many entries; a repo
/// graph further behind is rebuilt whole (about as cheap as reading a longer journal).
const JOURNAL_LIMIT: usize = 1 << 16;

/// The most names [`Index::reserve_names`] makes room for (about 140 MiB of hash table and
/// spans): a Linux kernel tree has about 2.2 million.
const MAX_RESERVED_NAMES: usize = 1 << 23;

/// A file's number in this index; stable until the file is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameId(pub u32);

/// Names stored once: a large tree repeats the same few hundred thousand names millions of
/// times in its references. One copy of each, back to back in one string, found again by the
/// xxh3 of the text through a table of bare ids (four bytes a slot: the text it compares
/// against is in `text`, and a hash is recomputed from it when the table grows).
#[derive(Debug, Default)]
struct Interner {
    text: String,
    /// Where each name is in `text`, by id (see [`Span`]).
    spans: Vec<Span>,
    by_hash: HashTable<NameId>,
}

fn name_hash(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

impl Interner {
    fn intern(&mut self, name: &str) -> NameId {
        self.intern_hashed(name, name_hash(name))
    }

    /// [`intern`](Self::intern) with the name's hash given (a test forces collisions).
    fn intern_hashed(&mut self, name: &str, hash: u64) -> NameId {
        if let Some(id) = self.get_hashed(name, hash) {
            return id;
        }
        let id = NameId(self.spans.len() as u32);
        self.spans.push(Span::new(self.text.len(), name.len()));
        self.text.push_str(name);
        let Interner {
            text,
            spans,
            by_hash,
        } = self;
        by_hash.insert_unique(hash, id, |&id| name_hash(span_text(text, spans, id)));
        id
    }

    fn get(&self, name: &str) -> Option<NameId> {
        self.get_hashed(name, name_hash(name))
    }

    fn reserve(&mut self, additional: usize) {
        let Interner {
            text,
            spans,
            by_hash,
        } = self;
        by_hash.reserve(additional, |&id| name_hash(span_text(text, spans, id)));
        spans.reserve(additional);
    }

    fn get_hashed(&self, name: &str, hash: u64) -> Option<NameId> {
        self.by_hash
            .find(hash, |&id| self.name(id) == name)
            .copied()
    }

    fn name(&self, id: NameId) -> &str {
        span_text(&self.text, &self.spans, id)
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    /// Bytes held: the text, the spans and the hash table (a slot and a control byte).
    fn bytes(&self) -> usize {
        use std::mem::size_of;
        self.text.capacity()
            + self.spans.capacity() * size_of::<Span>()
            + self.by_hash.capacity() * (size_of::<NameId>() + 1)
    }
}

/// A name's place in the interner's text in 8 bytes (a large tree has millions of names):
/// 40 bits of start (1 TiB of names) and 24 bits of length. A name of 16 MiB or more (no
/// identifier) keeps only its first 16 MiB − 1 bytes, is never found again by its text, and
/// is interned anew each time: wasteful, never wrong about any other name.
#[derive(Clone, Copy, Debug)]
struct Span(u64);

impl Span {
    const LENGTH_BITS: u32 = 24;
    const MAX_LENGTH: usize = (1 << Self::LENGTH_BITS) - 1;

    fn new(start: usize, length: usize) -> Span {
        Span(((start as u64) << Self::LENGTH_BITS) | length.min(Self::MAX_LENGTH) as u64)
    }

    fn range(self) -> Range<usize> {
        let start = (self.0 >> Self::LENGTH_BITS) as usize;
        start..start + (self.0 as usize & Self::MAX_LENGTH)
    }
}

fn span_text<'t>(text: &'t str, spans: &[Span], id: NameId) -> &'t str {
    // A clamped span can end inside a character: such a name reads as empty.
    text.get(spans[id.0 as usize].range()).unwrap_or_default()
}

/// A definition: the file and the symbol's number in it.
type Place = (FileId, u32);
/// No file has this id: a slot in [`Definitions::one`] with it holds no place but a mark.
const NOT_A_FILE: FileId = FileId(u32::MAX);
const NO_PLACE: Place = (NOT_A_FILE, u32::MAX);

/// Where each name is defined, in path order. By name id (ids are dense, so a vector is the
/// map), eight bytes a name: most names have one definition or none (names only used), and
/// only names with more keep a list, found by its number (where a hash map by name took a
/// third more: 400,000 of a kernel's names have more than one definition).
#[derive(Debug, Default)]
struct Definitions {
    /// The name's one place, `NO_PLACE`, or `(NOT_A_FILE, k)`: its places are `lists[k]`.
    one: Vec<Place>,
    lists: Vec<Vec<Place>>,
    /// Numbers of lists emptied, to be reused.
    free_lists: Vec<u32>,
}

/// What a name's slot says.
enum Slot {
    Empty,
    One(Place),
    List(usize),
}

impl Definitions {
    fn slot(&self, name: NameId) -> Slot {
        match self.one.get(name.0 as usize) {
            None | Some(&NO_PLACE) => Slot::Empty,
            Some(&(NOT_A_FILE, list)) => Slot::List(list as usize),
            Some(&place) => Slot::One(place),
        }
    }

    fn get(&self, name: NameId) -> &[Place] {
        match self.slot(name) {
            Slot::Empty => &[],
            Slot::List(list) => self.lists.get(list).map_or(&[], Vec::as_slice),
            Slot::One(_) => std::slice::from_ref(&self.one[name.0 as usize]),
        }
    }

    /// A list for `places`; its mark.
    fn new_list(&mut self, places: Vec<Place>) -> Place {
        let list = match self.free_lists.pop() {
            Some(free) => {
                self.lists[free as usize] = places;
                free
            }
            None => {
                self.lists.push(places);
                self.lists.len() as u32 - 1
            }
        };
        (NOT_A_FILE, list)
    }

    /// Adds `place` after the places `is_before` says come first; whether it is the name's
    /// first.
    fn insert(&mut self, name: NameId, place: Place, is_before: impl Fn(Place) -> bool) -> bool {
        let at = name.0 as usize;
        if at >= self.one.len() {
            self.one.resize(at + 1, NO_PLACE);
        }
        match self.slot(name) {
            Slot::Empty => {
                self.one[at] = place;
                true
            }
            Slot::List(list) => {
                let places = &mut self.lists[list];
                let index = places.partition_point(|&other| is_before(other));
                places.insert(index, place);
                false
            }
            Slot::One(single) => {
                let places = if is_before(single) {
                    vec![single, place]
                } else {
                    vec![place, single]
                };
                self.one[at] = self.new_list(places);
                false
            }
        }
    }

    /// Changes the name's places with `edit`, kept compact after; whether the name had
    /// places and has none now.
    fn edit(&mut self, name: NameId, edit: impl FnOnce(&mut Vec<Place>)) -> bool {
        let at = name.0 as usize;
        let mut places = match self.slot(name) {
            Slot::Empty => return false,
            Slot::List(list) => {
                self.free_lists.push(list as u32);
                std::mem::take(&mut self.lists[list])
            }
            Slot::One(single) => vec![single],
        };
        edit(&mut places);
        self.one[at] = match places.as_slice() {
            [] => NO_PLACE,
            [single] => *single,
            _ => self.new_list(places),
        };
        self.one[at] == NO_PLACE
    }

    /// The names with at least one definition, and their places.
    fn iter(&self) -> impl Iterator<Item = (NameId, &[Place])> {
        (0..self.one.len())
            .map(|name| NameId(name as u32))
            .map(|name| (name, self.get(name)))
            .filter(|(_, places)| !places.is_empty())
    }

    fn bytes(&self) -> usize {
        use std::mem::size_of;
        self.one.capacity() * size_of::<Place>()
            + self.lists.capacity() * size_of::<Vec<Place>>()
            + self.free_lists.capacity() * size_of::<u32>()
            + (self.lists.iter())
                .map(|places| places.capacity() * size_of::<Place>())
                .sum::<usize>()
    }
}

/// Defined names in this many before a merge, at the least (see [`DefinedNames`]).
const MERGE_AT: usize = 1024;

/// The names that have definitions, in the order of their text, for prefix lookups (a name
/// being typed is a range of them). Ids, not strings (the text is the interner's): a sorted
/// run, and the names defined since it was last merged, which every lookup scans. While a
/// scan loads the index the tail is merged once it is as long as the run, so a load of n
/// names moves about 2n ids in all (an eighth, as before, moved about 9n: each move reads a
/// name's text from wherever the interner has it, and on a kernel that was a fifth of the
/// warm start); a lookup meanwhile scans a tail of names interned one after another, which
/// lie side by side in the interner's text. Once the index is [settled](Index::settle) the
/// tail is merged every [`MERGE_AT`] names, so the keystroke path scans a short one. A name
/// whose last definition went stays until the next merge; lookups skip it.
#[derive(Debug, Default)]
struct DefinedNames {
    sorted: Vec<NameId>,
    recent: Vec<NameId>,
    /// Names that lost their last definition since the last merge (a scan loses none, and
    /// its merges then skip the sweep).
    undefined: usize,
    /// Set by [`Index::settle`]: the bulk load is over and lookups come first.
    settled: bool,
}

impl DefinedNames {
    /// `name` has its first definition.
    fn insert(&mut self, name: NameId, names: &Interner, definitions: &Definitions) {
        self.recent.push(name);
        let tail = if self.settled {
            MERGE_AT
        } else {
            MERGE_AT.max(self.sorted.len())
        };
        if self.recent.len() > tail {
            self.merge(names, definitions);
        }
    }

    fn settle(&mut self, names: &Interner, definitions: &Definitions) {
        if !self.recent.is_empty() || self.undefined > 0 {
            self.merge(names, definitions);
        }
        self.settled = true;
    }

    fn merge(&mut self, names: &Interner, definitions: &Definitions) {
        let mut recent = std::mem::take(&mut self.recent);
        // Sorted by the names' first eight bytes, read once each; the text settles ties.
        let mut keyed: Vec<(u64, NameId)> = recent
            .iter()
            .map(|&name| (order_key(names.name(name)), name))
            .collect();
        keyed.sort_unstable_by(|(a_key, a), (b_key, b)| {
            a_key
                .cmp(b_key)
                .then_with(|| names.name(*a).cmp(names.name(*b)))
        });
        recent.clear();
        recent.extend(keyed.into_iter().map(|(_, name)| name));
        let old = std::mem::take(&mut self.sorted);
        let mut merged = Vec::with_capacity(old.len() + recent.len());
        let (mut old, mut recent) = (old.into_iter().peekable(), recent.into_iter().peekable());
        loop {
            let next = match (old.peek(), recent.peek()) {
                (Some(a), Some(b)) if names.name(*a) <= names.name(*b) => old.next(),
                (Some(_), Some(_)) | (None, Some(_)) => recent.next(),
                (Some(_), None) => old.next(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        // One text is one id: a name defined again before a merge is there twice.
        merged.dedup();
        if self.undefined > 0 {
            merged.retain(|name| !definitions.get(*name).is_empty());
            self.undefined = 0;
        }
        self.sorted = merged;
    }

    /// Defined names that start with `prefix`, in order, at most `limit`.
    fn with_prefix<'n>(
        &self,
        prefix: &str,
        limit: usize,
        names: &'n Interner,
        definitions: &Definitions,
    ) -> Vec<&'n str> {
        let defined = |name: &NameId| !definitions.get(*name).is_empty();
        let start = self
            .sorted
            .partition_point(|name| names.name(*name) < prefix);
        let mut found: Vec<NameId> = self.sorted[start..]
            .iter()
            .take_while(|name| names.name(**name).starts_with(prefix))
            .filter(|name| defined(name))
            .take(limit)
            .copied()
            .collect();
        found.extend(
            self.recent
                .iter()
                .filter(|name| names.name(**name).starts_with(prefix) && defined(name)),
        );
        found.sort_unstable_by(|a, b| names.name(*a).cmp(names.name(*b)));
        found.dedup();
        found.truncate(limit);
        found.into_iter().map(|name| names.name(name)).collect()
    }

    fn bytes(&self) -> usize {
        (self.sorted.capacity() + self.recent.capacity()) * std::mem::size_of::<NameId>()
    }
}

/// A name's first eight bytes as a number that orders as the text does (a shorter name is
/// padded with zeros, which no identifier holds).
fn order_key(name: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let head = &name.as_bytes()[..name.len().min(8)];
    bytes[..head.len()].copy_from_slice(head);
    u64::from_be_bytes(bytes)
}

#[derive(Debug)]
pub struct FileEntry {
    pub path: String,
    pub language: Language,
    /// Its definitions, by name id: read their names and paths through an [`Entry`].
    pub symbols: Vec<IndexedSymbol>,
    /// What stands before the name in the path of a symbol whose path is not its parent's
    /// and a separator (a Go method's receiver type, `Shape.`), by symbol number, in order.
    prefixes: Box<[(u32, NameId)]>,
    /// The symbols' signatures and outlines.
    details: Details,
    references: PackedReferences,
    pub bytes: usize,
    pub has_errors: bool,
    /// The index's generation when this entry was last written (upserted or renamed).
    version: u64,
}

impl FileEntry {
    /// Symbol `index`'s signature and outline.
    pub fn detail(&self, index: usize) -> Detail {
        self.details.get(&self.symbols, index)
    }
}

/// A file in the index, with what it takes to read its symbols' names (the index's
/// interned names).
#[derive(Clone, Copy, Debug)]
pub struct Entry<'i> {
    pub id: FileId,
    file: &'i FileEntry,
    names: &'i Interner,
}

impl std::ops::Deref for Entry<'_> {
    type Target = FileEntry;

    fn deref(&self) -> &FileEntry {
        self.file
    }
}

impl<'i> Entry<'i> {
    /// The entry itself, for as long as the index is borrowed.
    pub fn file(self) -> &'i FileEntry {
        self.file
    }

    /// The file's path, for as long as the index is borrowed.
    pub fn path(self) -> &'i str {
        &self.file.path
    }

    /// Symbol `index`, with its name and path.
    pub fn symbol(self, index: usize) -> Option<Found<'i>> {
        Some(Found {
            file: self.id,
            path: &self.file.path,
            language: self.file.language,
            symbol: self.file.symbols.get(index)?,
            index,
            entry: self,
        })
    }

    /// Every symbol, in the file's order.
    pub fn symbols(self) -> impl Iterator<Item = Found<'i>> {
        (0..self.file.symbols.len()).filter_map(move |index| self.symbol(index))
    }

    fn prefix(self, index: usize) -> Option<&'i str> {
        let prefixes = &self.file.prefixes;
        let at = prefixes
            .binary_search_by_key(&(index as u32), |(symbol, _)| *symbol)
            .ok()?;
        Some(self.names.name(prefixes[at].1))
    }
}

/// A definition found in the index.
#[derive(Clone, Copy, Debug)]
pub struct Found<'i> {
    pub file: FileId,
    /// The file's path.
    pub path: &'i str,
    pub language: Language,
    pub symbol: &'i IndexedSymbol,
    pub index: usize,
    pub entry: Entry<'i>,
}

impl<'i> Found<'i> {
    /// Its signature and outline.
    pub fn detail(&self) -> Detail {
        self.entry.detail(self.index)
    }

    /// The name as written at the definition.
    pub fn name(&self) -> &'i str {
        self.entry.names.name(self.symbol.name_id())
    }

    /// The qualified path within the file: `Shape::area`, `Circle.area`, rebuilt from the
    /// names of the symbols it is nested in (borrowed for a top-level one, most of them).
    pub fn symbol_path(&self) -> Cow<'i, str> {
        let prefix = self.entry.prefix(self.index);
        if prefix.is_none() && self.symbol.parent().is_none() {
            return Cow::Borrowed(self.name());
        }
        // Parents come before their children (checked when the file was added), so this
        // ends.
        let mut names = vec![self.name()];
        let mut at = *self;
        let head = loop {
            if let Some(prefix) = self.entry.prefix(at.index) {
                break prefix;
            }
            match at
                .symbol
                .parent()
                .and_then(|parent| self.entry.symbol(parent))
            {
                Some(parent) => {
                    names.push(parent.name());
                    at = parent;
                }
                None => break "",
            }
        };
        if head.is_empty() && names.len() == 1 {
            return Cow::Borrowed(names[0]);
        }
        let separator = self.language.separator();
        let mut path = head.to_owned();
        for (i, name) in names.iter().rev().enumerate() {
            if i > 0 {
                path.push_str(separator);
            }
            path.push_str(name);
        }
        Cow::Owned(path)
    }

    /// The symbol it is nested in.
    pub fn parent(&self) -> Option<Found<'i>> {
        self.entry.symbol(self.symbol.parent()?)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub files: usize,
    pub bytes: usize,
    pub definitions: usize,
    pub references: usize,
    pub files_with_errors: usize,
    /// Files per language, by name.
    pub languages: Vec<(&'static str, usize)>,
}

#[derive(Debug, Default)]
pub struct Index {
    names: Interner,
    files: Vec<Option<FileEntry>>,
    free: Vec<FileId>,
    /// Ordered, so that a folder's files are one range (a Go package, a module's folder).
    by_path: BTreeMap<String, FileId>,
    definitions: Definitions,
    /// The names that have definitions, ordered: a name being typed is a range of it.
    defined_names: DefinedNames,
    /// Bumped by every change.
    generation: u64,
    /// The names whose definitions changed, with the generation of the change: what the
    /// repo graph reads to know whose rows are stale.
    journal: Vec<(u64, NameId)>,
    /// Changes up to this generation were dropped from the journal.
    journal_floor: u64,
    /// The repo map's file graph, kept between requests (see [`RepoGraph`]).
    repo_graph: Mutex<RepoGraph>,
}

impl Index {
    /// Adds or replaces a file's symbols.
    pub fn upsert(
        &mut self,
        path: &str,
        language: Language,
        found: FileSymbols,
        bytes: usize,
    ) -> FileId {
        let names: Vec<NameId> = found
            .symbols
            .iter()
            .map(|symbol| self.names.intern(symbol.name()))
            .collect();
        let (symbols, prefixes) = self.keyed(language, &found.symbols, &names);
        // Users' rows depend on how many definitions of a name a file holds, not on where
        // in it they are: only names whose count changed are journaled (an edit inside a
        // body touches none).
        // Nothing of it before a repo graph exists: typing costs no journal until then.
        let changed = if self.keeps_journal() {
            count_changes(&self.defined_names_of(path), &names)
        } else {
            Vec::new()
        };
        let spread_before = self.spread(&changed);
        self.forget(path);
        self.generation += 1;
        let id = self.free.pop().unwrap_or_else(|| {
            self.files.push(None);
            FileId(self.files.len() as u32 - 1)
        });
        let used: Vec<NameId> = found
            .names
            .iter()
            .map(|name| self.names.intern(name))
            .collect();
        let mut references = Vec::with_capacity(found.references.len());
        references.extend(found.references.iter().filter_map(|reference| {
            let name = *used.get(reference.name as usize)?;
            // A use whose range is not its name's length cannot come from extraction.
            let length = reference.end.checked_sub(reference.start);
            (length == Some(self.names.name(name).len() as u32)).then_some(StoredReference {
                name,
                start: reference.start,
            })
        }));
        self.files[id.0 as usize] = Some(FileEntry {
            path: path.to_owned(),
            language,
            symbols,
            prefixes,
            details: found.details,
            references: PackedReferences::pack(references),
            bytes,
            has_errors: found.has_errors,
            version: self.generation,
        });
        self.by_path.insert(path.to_owned(), id);
        for (index, name) in names.into_iter().enumerate() {
            let place = (id, index as u32);
            let files = &self.files;
            let key = place_key(files, place);
            let first = self
                .definitions
                .insert(name, place, |other| place_key(files, other) < key);
            if first {
                self.defined_names
                    .insert(name, &self.names, &self.definitions);
            }
        }
        // After the new definitions are in: the spread after the change includes them.
        self.journal_names(&changed, &spread_before);
        id
    }

    /// A file's symbols keyed by their names' ids, and the prefixes of the paths that do not
    /// follow from their parents' (see [`Found::symbol_path`]): every path reads back as
    /// extraction wrote it.
    fn keyed(
        &mut self,
        language: Language,
        symbols: &[Symbol],
        names: &[NameId],
    ) -> (Vec<IndexedSymbol>, Box<[(u32, NameId)]>) {
        let separator = language.separator();
        let mut keyed = Vec::with_capacity(symbols.len());
        let mut prefixes = Vec::new();
        for (index, (symbol, &name)) in symbols.iter().zip(names).enumerate() {
            // Extraction puts a parent before its children; a parent anywhere else (a
            // damaged cache) is dropped, so that a path's walk up its parents always ends.
            let parent = symbol.parent().filter(|&parent| parent < index);
            let path = symbol.path();
            let prefix = &path[..path.len() - symbol.name().len()];
            let follows = match parent {
                Some(parent) => {
                    let parent_path = symbols[parent].path();
                    prefix.len() == parent_path.len() + separator.len()
                        && prefix.starts_with(parent_path)
                        && prefix.ends_with(separator)
                }
                None => prefix.is_empty(),
            };
            if !follows {
                prefixes.push((index as u32, self.names.intern(prefix)));
            }
            keyed.push(symbol.rekeyed(name, parent));
        }
        (keyed, prefixes.into_boxed_slice())
    }

    /// Forgets a file; `false` when it was not indexed.
    pub fn remove(&mut self, path: &str) -> bool {
        let names = self.journaled_names_of(path);
        let spread_before = self.spread(&names);
        if !self.forget(path) {
            return false;
        }
        self.generation += 1;
        self.journal_names(&names, &spread_before);
        true
    }

    /// [`defined_names_of`](Self::defined_names_of) when a change must be journaled, else
    /// nothing.
    fn journaled_names_of(&mut self, path: &str) -> Vec<NameId> {
        if !self.keeps_journal() {
            return Vec::new();
        }
        self.defined_names_of(path)
    }

    /// The ids of the names `path` defines, once per definition.
    fn defined_names_of(&self, path: &str) -> Vec<NameId> {
        self.file(path)
            .into_iter()
            .flat_map(|entry| &entry.file().symbols)
            .map(IndexedSymbol::name_id)
            .collect()
    }

    /// In how many files each of `names` is defined (counted up to one past what the repo
    /// graph looks at); nothing while no repo graph was built (the scan at start-up).
    fn spread(&mut self, names: &[NameId]) -> HashMap<NameId, usize> {
        if !self.keeps_journal() {
            return HashMap::new();
        }
        names
            .iter()
            .map(|name| (*name, self.defining_file_count(*name)))
            .collect()
    }

    fn defining_file_count(&self, name: NameId) -> usize {
        let places = self.defining(name);
        if places.is_empty() {
            return 0;
        }
        // Sorted by path: a file's definitions are neighbours.
        let files = 1 + places
            .windows(2)
            .filter(|pair| pair[0].0 != pair[1].0)
            .take(MAX_DEFINING_FILES)
            .count();
        files.min(MAX_DEFINING_FILES + 1)
    }

    /// Journals a change of `names`' definitions. A name defined in too many files to say
    /// anything to the repo graph, before and after, is left out: deleting one of the
    /// thousand files that define `new` costs its users nothing.
    fn journal_names(&mut self, names: &[NameId], spread_before: &HashMap<NameId, usize>) {
        if !self.keeps_journal() {
            return;
        }
        let generation = self.generation;
        for &name in names {
            let after = self.defining_file_count(name);
            let before = spread_before.get(&name).copied().unwrap_or(0);
            if before.min(after) <= MAX_DEFINING_FILES {
                self.journal.push((generation, name));
            }
        }
        if self.journal.len() > JOURNAL_LIMIT {
            self.journal.clear();
            self.journal_floor = generation;
        }
    }

    /// The journal is for a repo graph to catch up; before one is begun there is nothing
    /// to catch up with (it will be built whole).
    fn keeps_journal(&mut self) -> bool {
        self.repo_graph
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .needs_journal()
    }

    /// Drops a file from the tables (the journal is the caller's).
    fn forget(&mut self, path: &str) -> bool {
        let Some(id) = self.by_path.remove(path) else {
            return false;
        };
        if let Some(entry) = self.files[id.0 as usize].take() {
            for symbol in &entry.symbols {
                if self.definitions.edit(symbol.name_id(), |places| {
                    places.retain(|(file, _)| *file != id)
                }) {
                    self.defined_names.undefined += 1;
                }
            }
        }
        self.free.push(id);
        true
    }

    /// Moves a file's symbols to a new path, replacing what was indexed there.
    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        if from == to || !self.by_path.contains_key(from) {
            return false;
        }
        self.remove(to);
        // Users sort the files a name leads to by path: the names defined here are touched.
        let moved = self.journaled_names_of(from);
        let spread = self.spread(&moved);
        let Some(id) = self.by_path.remove(from) else {
            return false;
        };
        self.generation += 1;
        self.journal_names(&moved, &spread);
        let generation = self.generation;
        if let Some(entry) = self.files[id.0 as usize].as_mut() {
            entry.path = to.to_owned();
            entry.version = generation;
        }
        self.by_path.insert(to.to_owned(), id);
        // The file's definitions move in the order of their names' places.
        let names: Vec<NameId> = self
            .entry(id)
            .map(|entry| entry.symbols.iter().map(IndexedSymbol::name_id).collect())
            .unwrap_or_default();
        let files = &self.files;
        for name in names {
            let emptied = self.definitions.edit(name, |places| {
                places.sort_by(|a, b| place_key(files, *a).cmp(&place_key(files, *b)));
            });
            debug_assert!(!emptied, "sorting drops no place");
        }
        true
    }

    pub fn file_id(&self, path: &str) -> Option<FileId> {
        self.by_path.get(path).copied()
    }

    pub fn file(&self, path: &str) -> Option<Entry<'_>> {
        self.by_path.get(path).and_then(|id| self.entry(*id))
    }

    pub fn entry(&self, id: FileId) -> Option<Entry<'_>> {
        let file = self.files.get(id.0 as usize)?.as_ref()?;
        Some(Entry {
            id,
            file,
            names: &self.names,
        })
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, Entry<'_>)> {
        (0..self.files.len())
            .filter_map(|id| self.entry(FileId(id as u32)).map(|entry| (entry.id, entry)))
    }

    /// Every definition named `name`.
    pub fn definitions(&self, name: &str) -> Vec<Found<'_>> {
        let Some(id) = self.names.get(name) else {
            return Vec::new();
        };
        self.definitions
            .get(id)
            .iter()
            .filter_map(|&(file, index)| self.found(file, index as usize))
            .collect()
    }

    fn found(&self, file: FileId, index: usize) -> Option<Found<'_>> {
        self.entry(file)?.symbol(index)
    }

    /// Starts a bulk load (a scan): the ordered tables are merged lazily until
    /// [`settle`](Self::settle). A new index starts in this state.
    pub fn begin_bulk_load(&mut self) {
        self.defined_names.settled = false;
    }

    /// Makes room for `names` distinct names at once (a scan that knows about how many it
    /// will meet), where growing the name table step by step rehashes every name in it at
    /// each step: on a kernel tree that was a twelfth of a warm start. At most
    /// [`MAX_RESERVED_NAMES`], whatever `names` says.
    pub fn reserve_names(&mut self, names: usize) {
        let additional = names
            .min(MAX_RESERVED_NAMES)
            .saturating_sub(self.names.len());
        self.names.reserve(additional);
    }

    /// Ends a bulk load: what it added is merged into the ordered tables at once, and later
    /// changes keep them merged in small steps, so that lookups on the keystroke path stay
    /// O(log n). Calling it again costs nothing.
    pub fn settle(&mut self) {
        self.defined_names.settle(&self.names, &self.definitions);
    }

    /// Defined names that start with `prefix` (case-sensitive), in order, at most `limit`.
    pub fn names_with_prefix(&self, prefix: &str, limit: usize) -> Vec<&str> {
        if prefix.is_empty() {
            return Vec::new();
        }
        self.defined_names
            .with_prefix(prefix, limit, &self.names, &self.definitions)
    }

    /// The files directly in folder `dir` (`""` for the root), in path order, at most `limit`.
    pub fn files_in_dir(&self, dir: &str, limit: usize) -> Vec<Entry<'_>> {
        let start = if dir.is_empty() {
            String::new()
        } else {
            format!("{}/", dir.trim_end_matches('/'))
        };
        self.by_path
            .range::<str, _>((
                std::ops::Bound::Included(start.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(path, _)| path.starts_with(&start))
            // A folder with a large tree under it: its own files are looked for in a bounded
            // stretch.
            .take(FOLDER_SCAN)
            .filter(|(path, _)| !path[start.len()..].contains('/'))
            .take(limit)
            .filter_map(|(_, id)| self.entry(*id))
            .collect()
    }

    /// The numbers of the definitions nested directly in `file`'s symbol number `parent` (a
    /// type's methods).
    pub fn children(file: &FileEntry, parent: usize) -> impl Iterator<Item = usize> + '_ {
        file.symbols
            .iter()
            .enumerate()
            .skip(parent + 1)
            .take_while(move |(_, symbol)| symbol.range().start < file.symbols[parent].range().end)
            .filter(move |(_, symbol)| symbol.parent() == Some(parent))
            .map(|(index, _)| index)
    }

    /// Every use of `name`: the file and the byte range, by path and then position.
    pub fn references(&self, name: &str) -> Vec<(&str, Range<usize>)> {
        let Some(id) = self.names.get(name) else {
            return Vec::new();
        };
        let mut found: Vec<(&str, Range<usize>)> = self
            .files()
            .flat_map(|(_, entry)| {
                let entry = entry.file();
                entry
                    .references
                    .iter()
                    .filter(move |reference| reference.name == id)
                    .map(move |reference| (entry.path.as_str(), self.reference_range(&reference)))
            })
            .collect();
        found.sort_by(|a, b| (a.0, a.1.start).cmp(&(b.0, b.1.start)));
        found
    }

    fn reference_range(&self, reference: &StoredReference) -> Range<usize> {
        let start = reference.start as usize;
        start..start + self.names.name(reference.name).len()
    }

    /// The innermost definition that contains `offset`, with where it is.
    pub fn enclosing(&self, path: &str, offset: usize) -> Option<Found<'_>> {
        let file = self.file_id(path)?;
        let index = self
            .entry(file)?
            .symbols
            .iter()
            .enumerate()
            .filter(|(_, symbol)| symbol.range().contains(&offset))
            .min_by_key(|(_, symbol)| symbol.range().len())?
            .0;
        self.found(file, index)
    }

    /// The name at `offset`: a reference or a definition's name.
    pub fn name_at(&self, path: &str, offset: usize) -> Option<&str> {
        let entry = self.file(path)?;
        let reference = entry
            .references
            .iter()
            .find(|reference| {
                let range = self.reference_range(reference);
                (range.start..=range.end).contains(&offset)
            })
            .map(|reference| self.names.name(reference.name));
        reference.or_else(|| {
            entry
                .symbols
                .iter()
                .find(|symbol| {
                    (symbol.name_range().start..=symbol.name_range().end).contains(&offset)
                })
                .map(|symbol| self.names.name(symbol.name_id()))
        })
    }

    /// The names a file uses, with how often, in the order of their ids (which follow the
    /// scan order: a caller that sums over them must not depend on it).
    pub fn name_uses(&self, file: FileId) -> Vec<(NameId, u32)> {
        let Some(entry) = self.entry(file) else {
            return Vec::new();
        };
        let mut names: Vec<NameId> = entry
            .references
            .iter()
            .map(|reference| reference.name)
            .collect();
        names.sort_unstable();
        let mut uses: Vec<(NameId, u32)> = Vec::new();
        for name in names {
            match uses.last_mut() {
                Some((last, count)) if *last == name => *count += 1,
                _ => uses.push((name, 1)),
            }
        }
        uses
    }

    /// Where `name` is defined: files and symbol indices.
    pub fn defining(&self, name: NameId) -> &[(FileId, u32)] {
        self.definitions.get(name)
    }

    pub fn name(&self, name: NameId) -> &str {
        self.names.name(name)
    }

    /// The names a file uses, with how often.
    pub fn used_names(&self, file: FileId) -> HashMap<&str, u32> {
        let mut used = HashMap::new();
        if let Some(entry) = self.entry(file) {
            for reference in entry.references.iter() {
                *used.entry(self.names.name(reference.name)).or_insert(0) += 1;
            }
        }
        used
    }

    /// Definitions whose name matches `query`, best first: exact, then prefix, then
    /// substring, then the query's letters in order (all case-insensitive).
    pub fn search(&self, query: &str, limit: usize) -> Vec<Found<'_>> {
        let query = query.to_lowercase();
        let mut scored: Vec<(u8, usize, Found<'_>)> = Vec::new();
        for (name, places) in self.definitions.iter() {
            let lower = self.names.name(name).to_lowercase();
            let score = if lower == query {
                0
            } else if lower.starts_with(&query) {
                1
            } else if lower.contains(&query) {
                2
            } else if is_subsequence(&query, &lower) {
                3
            } else {
                continue;
            };
            for &(file, index) in places {
                if let Some(found) = self.found(file, index as usize) {
                    scored.push((score, lower.len(), found));
                }
            }
        }
        scored.sort_by(|a, b| {
            (a.0, a.1, a.2.path, a.2.symbol_path()).cmp(&(b.0, b.1, b.2.path, b.2.symbol_path()))
        });
        scored
            .into_iter()
            .take(limit)
            .map(|(_, _, found)| found)
            .collect()
    }

    /// Bumped by every change to the index.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The generation a file's entry was last written at.
    pub fn version(&self, file: FileId) -> Option<u64> {
        self.entry(file).map(|entry| entry.version)
    }

    /// How many file ids there are (some may be free).
    pub fn file_slots(&self) -> usize {
        self.files.len()
    }

    /// How many names were ever interned; every [`NameId`] is below it.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// The names a file's references use, once per reference.
    pub fn referenced_names(&self, file: FileId) -> impl Iterator<Item = NameId> + '_ {
        self.entry(file).into_iter().flat_map(|entry| {
            entry
                .file()
                .references
                .iter()
                .map(|reference| reference.name)
        })
    }

    /// The names whose definitions changed after generation `seen`, or `None` when the
    /// journal no longer reaches back that far.
    pub fn definition_changes_since(&self, seen: u64) -> Option<Vec<NameId>> {
        if seen < self.journal_floor {
            return None;
        }
        let start = self
            .journal
            .partition_point(|(generation, _)| *generation <= seen);
        let mut names: Vec<NameId> = self.journal[start..]
            .iter()
            .map(|(_, name)| *name)
            .collect();
        names.sort_unstable();
        names.dedup();
        Some(names)
    }

    /// The repo map's cached graph; its caller brings it up to date first.
    pub(super) fn repo_graph(&self) -> MutexGuard<'_, RepoGraph> {
        // A panic while the graph was updated leaves rows that are each whole; the next
        // update recomputes whatever it finds stale.
        self.repo_graph
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Roughly where the index's memory goes, part by part, in bytes: what each holds inline
    /// plus what its strings hold on the heap (allocator overhead not counted).
    pub fn memory_by_part(&self) -> Vec<(&'static str, usize)> {
        use std::mem::size_of;
        let mut symbol_structs = 0;
        let (mut prefixes, mut details) = (0, 0);
        let mut references = 0;
        let mut file_paths = 0;
        for (_, entry) in self.files() {
            symbol_structs += entry.symbols.capacity() * size_of::<IndexedSymbol>();
            prefixes += entry.prefixes.len() * size_of::<(u32, NameId)>();
            details += entry.details.bytes();
            references += entry.references.bytes();
            file_paths += entry.path.capacity() * 2;
        }
        let name_tables = self.names.bytes();
        let defined_names = self.defined_names.bytes();
        let definitions = self.definitions.bytes();
        vec![
            ("symbol structs", symbol_structs),
            ("path prefixes (receivers)", prefixes),
            ("signatures and outlines, compressed", details),
            ("references", references),
            ("file paths", file_paths),
            ("interned names", name_tables),
            ("names with definitions", defined_names),
            ("definitions by name", definitions),
        ]
    }

    pub fn stats(&self) -> IndexStats {
        let mut stats = IndexStats::default();
        let mut languages: HashMap<&'static str, usize> = HashMap::new();
        for (_, entry) in self.files() {
            stats.files += 1;
            stats.bytes += entry.bytes;
            stats.definitions += entry.symbols.len();
            stats.references += entry.references.len();
            stats.files_with_errors += usize::from(entry.has_errors);
            *languages.entry(entry.language.name()).or_default() += 1;
        }
        stats.languages = languages.into_iter().collect();
        stats
            .languages
            .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        stats
    }
}

/// Where a definition sorts among those of its name: by path, then by its place in the
/// file. Never by file id, which follows the order files were scanned in.
fn place_key(files: &[Option<FileEntry>], (file, index): (FileId, u32)) -> (&str, u32) {
    let path = files[file.0 as usize]
        .as_ref()
        .map_or("", |entry| entry.path.as_str());
    (path, index)
}

/// The names defined a different number of times in `new` than in `old`.
fn count_changes(old: &[NameId], new: &[NameId]) -> Vec<NameId> {
    let mut difference: BTreeMap<NameId, i64> = BTreeMap::new();
    for name in old {
        *difference.entry(*name).or_default() -= 1;
    }
    for name in new {
        *difference.entry(*name).or_default() += 1;
    }
    difference
        .into_iter()
        .filter(|(_, difference)| *difference != 0)
        .map(|(name, _)| name)
        .collect()
}

fn is_subsequence(needle: &str, haystack: &str) -> bool {
    let mut letters = haystack.chars();
    needle
        .chars()
        .all(|wanted| letters.any(|letter| letter == wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two names with one hash (xxh3 collisions cannot be found by hand, so one is made):
    /// each keeps its own id and text.
    #[test]
    fn names_whose_hashes_collide_stay_apart() {
        let mut names = Interner::default();
        let hash = 42;
        let first = names.intern_hashed("first_name", hash);
        let second = names.intern_hashed("second_name", hash);
        assert_ne!(first, second);
        assert_eq!(names.get_hashed("first_name", hash), Some(first));
        assert_eq!(names.get_hashed("second_name", hash), Some(second));
        assert_eq!(names.intern_hashed("second_name", hash), second);
        assert_eq!(names.name(second), "second_name");
        assert_eq!(names.get_hashed("third_name", hash), None);
        // The table grows (rehashing from the text): every name is found by its own hash.
        let many: Vec<NameId> = (0..10_000)
            .map(|i| names.intern(&format!("n{i}")))
            .collect();
        for (i, id) in many.iter().enumerate() {
            assert_eq!(names.get(&format!("n{i}")), Some(*id));
        }
        assert_eq!(names.get("first_name"), Some(first));
    }

    /// Symbols as only a damaged cache could hold them (a parent after its child, a parent
    /// of its own, a path that does not follow from its parent's, a name that is not the
    /// path's end): every name and path reads back as it went in, and a walk up the parents
    /// ends.
    #[test]
    fn paths_read_back_whatever_the_parents_say() {
        use super::super::extract::{SymbolKind, SymbolParts, SymbolsBuilder};
        // (path, name length, parent)
        let given: [(&str, usize, Option<usize>); 7] = [
            ("Outer", 5, None),
            ("Outer::inner", 5, Some(0)),
            ("Other::stray", 5, Some(0)),
            ("ahead", 5, Some(5)),
            ("self_parent", 11, Some(4)),
            ("Recv.method", 6, None),
            ("é", 1, None),
        ];
        let mut builder = SymbolsBuilder::with_capacity(given.len());
        for (i, (path, name_len, parent)) in given.iter().enumerate() {
            builder.push(SymbolParts {
                kind: SymbolKind::Function,
                path,
                name_len: *name_len,
                name_range: i * 10..i * 10 + 2,
                range: i * 10..i * 10 + 9,
                body: None,
                signature: "",
                parent: *parent,
                outline: "",
            });
        }
        let (symbols, details) = builder.finish();
        let extracted: Vec<(String, String)> = (symbols.iter())
            .map(|symbol| (symbol.name().to_owned(), symbol.path().to_owned()))
            .collect();
        let found = FileSymbols {
            symbols,
            details,
            ..FileSymbols::default()
        };
        let mut index = Index::default();
        index.upsert("a.rs", Language::Rust, found, 100);
        let entry = index.file("a.rs").unwrap();
        let read: Vec<(String, String)> = (entry.symbols())
            .map(|symbol| (symbol.name().to_owned(), symbol.symbol_path().into_owned()))
            .collect();
        assert_eq!(read, extracted);
        // "é" cut inside its character names nothing and keeps its whole path.
        assert_eq!(read[6], (String::new(), "é".to_owned()));
        let parents: Vec<Option<usize>> = entry.symbols.iter().map(|s| s.parent()).collect();
        assert_eq!(
            parents,
            [None, Some(0), Some(0), None, None, None, None],
            "a parent at or after its child is dropped"
        );
        assert_eq!(entry.prefixes.len(), 3, "stray, method and é keep a prefix");
    }

    /// A span keeps starts past 4 GiB and clamps a length past 24 bits; a name longer than
    /// that is interned without being mistaken for another.
    #[test]
    fn spans_keep_large_starts_and_clamp_huge_names() {
        let far = Span::new(5_000_000_000, 7);
        assert_eq!(far.range(), 5_000_000_000..5_000_000_007);
        assert_eq!(Span::new(3, 1 << 30).range(), 3..3 + Span::MAX_LENGTH);
        let mut names = Interner::default();
        let short = names.intern("short");
        let huge = "x".repeat(Span::MAX_LENGTH + 10);
        let first = names.intern(&huge);
        assert_ne!(first, short);
        assert_eq!(names.name(first).len(), Span::MAX_LENGTH);
        assert_eq!(names.get("short"), Some(short));
        assert_eq!(
            names.get(&huge[..Span::MAX_LENGTH]),
            None,
            "a clamped name is no other"
        );
    }
}
