//! Conversions between `lsp_types` and the core's types, in both directions.

use tower_lsp::lsp_types as lsp;

use crate::core::document::TextChange;
use crate::core::position::{Position, PositionEncoding, Range};

pub fn position(position: lsp::Position) -> Position {
    Position::new(position.line, position.character)
}

pub fn range(range: lsp::Range) -> Range {
    Range::new(position(range.start), position(range.end))
}

pub fn text_change(change: lsp::TextDocumentContentChangeEvent) -> TextChange {
    TextChange {
        range: change.range.map(range),
        text: change.text,
    }
}

/// UTF-8 when the client offers it (no conversion work for us), else the LSP default.
pub fn negotiate_encoding(capabilities: &lsp::ClientCapabilities) -> PositionEncoding {
    let offered = capabilities
        .general
        .as_ref()
        .and_then(|general| general.position_encodings.as_ref());
    let offers_utf8 = offered.is_some_and(|kinds| kinds.contains(&lsp::PositionEncodingKind::UTF8));
    if offers_utf8 {
        PositionEncoding::Utf8
    } else {
        PositionEncoding::Utf16
    }
}

pub fn encoding_kind(encoding: PositionEncoding) -> lsp::PositionEncodingKind {
    lsp::PositionEncodingKind::new(encoding.as_lsp_name())
}
