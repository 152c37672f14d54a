//! Symbols as the editor receives them: `textDocument/documentSymbol`, `workspace/symbol`
//! and `textDocument/definition`, converted from the workspace layer's answers. Byte ranges
//! become positions with each file's current text (the editor's copy, else the disk's,
//! read off the lock); a symbol whose file cannot be read is left out.

use std::collections::HashMap;
use std::path::Path;

use tower_lsp::lsp_types as lsp;

use super::convert::{lsp_range, symbol_kind, uri};
use crate::core::position::PositionEncoding;
use crate::workspace::queries::SymbolAt;
use crate::workspace::{FileText, Key};

/// The files' texts and what converting ranges needs.
pub(super) struct Texts<'a> {
    pub root: Option<&'a Path>,
    pub encoding: PositionEncoding,
    pub files: &'a HashMap<Key, FileText>,
}

impl Texts<'_> {
    fn range(&self, file: &str, bytes: &std::ops::Range<usize>) -> Option<lsp::Range> {
        lsp_range(self.files.get(file)?.rope(), bytes, self.encoding)
    }

    fn location(&self, symbol: &SymbolAt) -> Option<lsp::Location> {
        Some(lsp::Location {
            uri: uri(self.root, &symbol.file)?,
            range: self.range(&symbol.file, &symbol.name_range)?,
        })
    }
}

/// The symbols of one document, nested as in the source.
pub(super) fn document_symbols(
    texts: &Texts<'_>,
    symbols: &[SymbolAt],
) -> Vec<lsp::DocumentSymbol> {
    let mut converted: Vec<Option<lsp::DocumentSymbol>> = symbols
        .iter()
        .map(|symbol| {
            #[allow(deprecated)] // `deprecated` is a required field of the struct.
            Some(lsp::DocumentSymbol {
                name: symbol.name.clone(),
                detail: Some(symbol.signature.clone()),
                kind: symbol_kind(symbol.kind),
                tags: None,
                deprecated: None,
                range: texts.range(&symbol.file, &symbol.range)?,
                selection_range: texts.range(&symbol.file, &symbol.name_range)?,
                children: None,
            })
        })
        .collect();
    // Children come after their parents: attach them bottom-up.
    for index in (0..symbols.len()).rev() {
        let Some(parent) = symbols[index].parent else {
            continue;
        };
        if let Some(child) = converted[index].take()
            && let Some(parent) = converted.get_mut(parent).and_then(Option::as_mut)
        {
            parent
                .children
                .get_or_insert_with(Vec::new)
                .insert(0, child);
        }
    }
    symbols
        .iter()
        .zip(converted)
        .filter(|(symbol, _)| symbol.parent.is_none())
        .filter_map(|(_, converted)| converted)
        .collect()
}

/// `workspace/symbol`'s answer.
pub(super) fn symbol_information(
    texts: &Texts<'_>,
    symbols: &[SymbolAt],
) -> Vec<lsp::SymbolInformation> {
    symbols
        .iter()
        .filter_map(|symbol| {
            #[allow(deprecated)]
            Some(lsp::SymbolInformation {
                name: symbol.path.clone(),
                kind: symbol_kind(symbol.kind),
                tags: None,
                deprecated: None,
                location: texts.location(symbol)?,
                container_name: symbol.container(),
            })
        })
        .collect()
}

/// `textDocument/definition`'s locations.
pub(super) fn locations(texts: &Texts<'_>, symbols: &[SymbolAt]) -> Vec<lsp::Location> {
    symbols
        .iter()
        .filter_map(|symbol| texts.location(symbol))
        .collect()
}
