//! Questions the front ends ask of the index, answered as owned values so that the lock is
//! released before anything converts them (byte ranges become positions with the files'
//! texts from a [`super::Snapshot`], read off the lock).

use std::collections::HashSet;
use std::ops::Range;

use super::{Key, Workspace};
use crate::core::index::extract::SymbolKind;
use crate::core::index::language::Language;
use crate::core::index::table::Found;

/// The most symbols `workspace/symbol` answers with.
pub const SEARCH_LIMIT: usize = 256;

/// A symbol of the index, copied out.
#[derive(Clone, Debug)]
pub struct SymbolAt {
    pub file: Key,
    pub language: Language,
    pub name: String,
    /// The qualified path (`Cart::total`).
    pub path: String,
    pub kind: SymbolKind,
    pub signature: String,
    pub range: Range<usize>,
    pub name_range: Range<usize>,
    /// The enclosing symbol's position in the file's list.
    pub parent: Option<usize>,
}

impl SymbolAt {
    fn of(found: &Found<'_>) -> Self {
        let symbol = found.symbol;
        SymbolAt {
            file: found.path.to_owned(),
            language: found.language,
            name: found.name().to_owned(),
            path: found.symbol_path().into_owned(),
            kind: symbol.kind,
            signature: found.detail().signature,
            range: symbol.range(),
            name_range: symbol.name_range(),
            parent: symbol.parent(),
        }
    }

    /// The container of a qualified path (`Cart` for `Cart::total`).
    pub fn container(&self) -> Option<String> {
        let container = self
            .path
            .strip_suffix(&self.name)?
            .trim_end_matches([':', '.']);
        (!container.is_empty()).then(|| container.to_owned())
    }
}

/// What a hover shows of the name under the cursor.
#[derive(Clone, Debug)]
pub struct HoverFacts {
    /// The definition shown: this file's first, else the first by path.
    pub definition: SymbolAt,
    pub definitions: usize,
    pub references: usize,
    pub reference_files: usize,
}

impl Workspace {
    /// The symbols of one file, in source order (parents before their children).
    pub fn document_symbols(&self, key: &str) -> Option<Vec<SymbolAt>> {
        let entry = self.index().file(key)?;
        Some(entry.symbols().map(|found| SymbolAt::of(&found)).collect())
    }

    /// Definitions whose name matches `query`, best first.
    pub fn search(&self, query: &str) -> Vec<SymbolAt> {
        self.index()
            .search(query, SEARCH_LIMIT)
            .iter()
            .map(SymbolAt::of)
            .collect()
    }

    /// The definitions of the name at `offset` of `key`, this file's first.
    pub fn definitions_at(&self, key: &str, offset: usize) -> Option<Vec<SymbolAt>> {
        let name = self.index().name_at(key, offset)?;
        let mut found = self.index().definitions(name);
        found.sort_by_key(|found| {
            (
                found.path != key,
                found.path.to_owned(),
                found.symbol.range().start,
            )
        });
        Some(found.iter().map(SymbolAt::of).collect())
    }

    /// The facts a hover shows for the name at `offset` of `key`.
    pub fn hover_facts(&self, key: &str, offset: usize) -> Option<HoverFacts> {
        let definitions = self.definitions_at(key, offset)?;
        let definition = definitions.first()?.clone();
        let references = self.index().references(&definition.name);
        let files: HashSet<&str> = references.iter().map(|(path, _)| *path).collect();
        Some(HoverFacts {
            definition,
            definitions: definitions.len(),
            references: references.len(),
            reference_files: files.len(),
        })
    }
}
