//! Symbols from the index: `textDocument/documentSymbol`, `workspace/symbol` and
//! `textDocument/definition`.
//!
//! Byte ranges become positions with the document's text: the editor's copy when it is open,
//! the disk's otherwise.

use std::collections::HashMap;
use std::ops::Range as Bytes;

use ropey::Rope;
use tower_lsp::lsp_types as lsp;

use super::session::Session;
use crate::core::index::extract::SymbolKind;
use crate::core::position::{PositionEncoding, position_of};

/// Texts of the files a response needs: the editor's copy when open, else the disk's.
///
/// The disk is never read under the session lock: a handler runs once with no disk texts,
/// which records the files it wanted ([`Texts::wanted`]); they are read with the lock
/// released ([`read_from_disk`]), and the handler runs again with them.
pub(super) struct Texts<'s> {
    session: &'s Session,
    from_disk: HashMap<String, Option<Rope>>,
    wanted: Vec<String>,
}

impl<'s> Texts<'s> {
    /// Texts with what was read from disk so far.
    pub(super) fn new(session: &'s Session, from_disk: HashMap<String, Option<Rope>>) -> Self {
        Texts {
            session,
            from_disk,
            wanted: Vec::new(),
        }
    }

    /// The text of `key`: the editor's copy when open, else the disk's if it was read.
    pub(super) fn rope(&mut self, key: &str) -> Option<&Rope> {
        let session = self.session;
        if let Some(uri) = session.uri_of(key)
            && let Some(document) = session.documents.get(uri.as_str())
        {
            return Some(document.text());
        }
        if !self.from_disk.contains_key(key) {
            if !self.wanted.iter().any(|wanted| wanted == key) {
                self.wanted.push(key.to_owned());
            }
            return None;
        }
        self.from_disk.get(key)?.as_ref()
    }

    /// The files this pass wanted from disk and did not have.
    pub(super) fn wanted(self) -> Vec<String> {
        self.wanted
    }
    pub(super) fn range(&mut self, key: &str, bytes: &Bytes<usize>) -> Option<lsp::Range> {
        let encoding = self.session.encoding;
        to_lsp_range(self.rope(key)?, bytes, encoding)
    }
}

/// Reads `keys` from disk (call it with the session lock released). Only workspace files,
/// through the one confined reader; what cannot be read is `None`.
pub(super) fn read_from_disk(
    root: Option<&std::path::Path>,
    keys: Vec<String>,
    max_bytes: u64,
) -> HashMap<String, Option<Rope>> {
    keys.into_iter()
        .map(|key| {
            let text = root.filter(|_| !key.contains("://")).and_then(|root| {
                crate::disk::read_text(root, std::path::Path::new(&key), max_bytes)
                    .ok()
                    .map(|text| Rope::from_str(&text))
            });
            (key, text)
        })
        .collect()
}

pub(super) fn to_lsp_range(
    rope: &Rope,
    bytes: &Bytes<usize>,
    encoding: PositionEncoding,
) -> Option<lsp::Range> {
    let start = position_of(rope, bytes.start, encoding).ok()?;
    let end = position_of(rope, bytes.end, encoding).ok()?;
    Some(lsp::Range::new(
        lsp::Position::new(start.line, start.character),
        lsp::Position::new(end.line, end.character),
    ))
}

fn kind(kind: SymbolKind) -> lsp::SymbolKind {
    match kind {
        SymbolKind::Function => lsp::SymbolKind::FUNCTION,
        SymbolKind::Method => lsp::SymbolKind::METHOD,
        SymbolKind::Class => lsp::SymbolKind::CLASS,
        SymbolKind::Struct => lsp::SymbolKind::STRUCT,
        SymbolKind::Enum => lsp::SymbolKind::ENUM,
        SymbolKind::Interface | SymbolKind::Trait => lsp::SymbolKind::INTERFACE,
        SymbolKind::Impl => lsp::SymbolKind::OBJECT,
        SymbolKind::Module => lsp::SymbolKind::MODULE,
        SymbolKind::Constant => lsp::SymbolKind::CONSTANT,
        SymbolKind::Type => lsp::SymbolKind::TYPE_PARAMETER,
        SymbolKind::Macro => lsp::SymbolKind::FUNCTION,
    }
}

/// The symbols of one document, nested as in the source.
pub fn document_symbols(
    session: &Session,
    texts: &mut Texts<'_>,
    uri: &lsp::Url,
) -> Option<Vec<lsp::DocumentSymbol>> {
    let key = session.index_key(uri);
    let entry = session.index.file(&key)?;
    let mut converted: Vec<Option<lsp::DocumentSymbol>> = entry
        .symbols
        .iter()
        .map(|symbol| {
            #[allow(deprecated)] // `deprecated` is a required field of the struct.
            Some(lsp::DocumentSymbol {
                name: symbol.name.clone(),
                detail: Some(symbol.signature.clone()),
                kind: kind(symbol.kind),
                tags: None,
                deprecated: None,
                range: texts.range(&key, &symbol.range)?,
                selection_range: texts.range(&key, &symbol.name_range)?,
                children: None,
            })
        })
        .collect();
    // Children come after their parents: attach them bottom-up.
    for index in (0..entry.symbols.len()).rev() {
        let Some(parent) = entry.symbols[index].parent else {
            continue;
        };
        if let Some(child) = converted[index].take()
            && let Some(parent) = converted[parent].as_mut()
        {
            parent
                .children
                .get_or_insert_with(Vec::new)
                .insert(0, child);
        }
    }
    Some(
        entry
            .symbols
            .iter()
            .zip(converted)
            .filter(|(symbol, _)| symbol.parent.is_none())
            .filter_map(|(_, converted)| converted)
            .collect(),
    )
}

/// `workspace/symbol`: definitions whose name matches the query.
pub fn workspace_symbols(
    session: &Session,
    texts: &mut Texts<'_>,
    query: &str,
) -> Vec<lsp::SymbolInformation> {
    session
        .index
        .search(query, 256)
        .into_iter()
        .filter_map(|found| {
            let location = lsp::Location {
                uri: session.uri_of(found.path)?,
                range: texts.range(found.path, &found.symbol.name_range)?,
            };
            #[allow(deprecated)]
            Some(lsp::SymbolInformation {
                name: found.symbol.path.clone(),
                kind: kind(found.symbol.kind),
                tags: None,
                deprecated: None,
                location,
                container_name: container(&found.symbol.path, &found.symbol.name),
            })
        })
        .collect()
}

fn container(path: &str, name: &str) -> Option<String> {
    let container = path.strip_suffix(name)?.trim_end_matches([':', '.']);
    (!container.is_empty()).then(|| container.to_owned())
}

/// `textDocument/definition`: the definitions of the name under the cursor, this file's first.
pub fn definitions(
    session: &Session,
    texts: &mut Texts<'_>,
    uri: &lsp::Url,
    position: lsp::Position,
) -> Option<Vec<lsp::Location>> {
    let key = session.index_key(uri);
    let document = session.documents.get(uri.as_str())?;
    let offset = crate::core::position::offset_of(
        document.text(),
        crate::core::position::Position::new(position.line, position.character),
        session.encoding,
    )
    .ok()?;
    let name = session.index.name_at(&key, offset)?.to_owned();
    let mut found = session.index.definitions(&name);
    found.sort_by_key(|found| {
        (
            found.path != key,
            found.path.to_owned(),
            found.symbol.range.start,
        )
    });
    Some(
        found
            .into_iter()
            .filter_map(|found| {
                Some(lsp::Location {
                    uri: session.uri_of(found.path)?,
                    range: texts.range(found.path, &found.symbol.name_range)?,
                })
            })
            .collect(),
    )
}
