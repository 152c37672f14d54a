//! Every conversion between `lsp_types` and the core's and workspace layer's types, in both
//! directions: positions and ranges, URIs and workspace keys, symbol kinds, the client's
//! capabilities.

use ropey::Rope;
use tower_lsp::lsp_types as lsp;

use crate::core::document::TextChange;
use crate::core::index::extract::SymbolKind;
use crate::core::position::{Position, PositionEncoding, Range, position_of};
use crate::workspace::Key;

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

/// What the client can do, read once from its capabilities at `initialize`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientFeatures {
    pub encoding: PositionEncoding,
    /// The client shows `$/progress`.
    pub work_done_progress: bool,
    /// The client can watch files for us (`workspace/didChangeWatchedFiles`).
    pub watch_files: bool,
    /// The client opens documents we ask it to (`window/showDocument`).
    pub show_document: bool,
    /// The client takes versioned `documentChanges` in a `WorkspaceEdit`.
    pub document_changes: bool,
    /// The client creates files from a `WorkspaceEdit`.
    pub create_files: bool,
    /// The client asks the user about edits annotated `needsConfirmation`.
    pub change_annotations: bool,
}

pub fn client_features(capabilities: &lsp::ClientCapabilities) -> ClientFeatures {
    let window = capabilities.window.as_ref();
    let workspace = capabilities.workspace.as_ref();
    let edit = workspace.and_then(|workspace| workspace.workspace_edit.as_ref());
    ClientFeatures {
        encoding: negotiate_encoding(capabilities),
        work_done_progress: window
            .and_then(|window| window.work_done_progress)
            .unwrap_or(false),
        watch_files: workspace
            .and_then(|workspace| workspace.did_change_watched_files.as_ref())
            .and_then(|watched| watched.dynamic_registration)
            .unwrap_or(false),
        show_document: window
            .and_then(|window| window.show_document.as_ref())
            .is_some_and(|show| show.support),
        document_changes: edit.and_then(|edit| edit.document_changes).unwrap_or(false),
        create_files: edit
            .and_then(|edit| edit.resource_operations.as_ref())
            .is_some_and(|operations| operations.contains(&lsp::ResourceOperationKind::Create)),
        change_annotations: edit.is_some_and(|edit| edit.change_annotation_support.is_some()),
    }
}

/// How the workspace names a document: its path relative to `root` with `/` separators, or
/// its URI when it lies outside.
pub fn key(root: Option<&std::path::Path>, uri: &lsp::Url) -> Key {
    if let (Ok(path), Some(root)) = (uri.to_file_path(), root)
        && let Ok(relative) = path.strip_prefix(root)
    {
        return relative
            .components()
            .map(|part| part.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
    }
    uri.to_string()
}

/// The URI of a workspace key.
pub fn uri(root: Option<&std::path::Path>, key: &str) -> Option<lsp::Url> {
    if crate::workspace::is_outside(key) {
        return lsp::Url::parse(key).ok();
    }
    lsp::Url::from_file_path(root?.join(key)).ok()
}

/// A byte offset of `text` at an LSP position.
pub fn offset(text: &Rope, at: lsp::Position, encoding: PositionEncoding) -> Option<usize> {
    crate::core::position::offset_of(text, position(at), encoding).ok()
}

/// A byte range of `text` as an LSP range.
pub fn lsp_range(
    text: &Rope,
    bytes: &std::ops::Range<usize>,
    encoding: PositionEncoding,
) -> Option<lsp::Range> {
    let start = position_of(text, bytes.start, encoding).ok()?;
    let end = position_of(text, bytes.end, encoding).ok()?;
    Some(lsp::Range::new(
        lsp::Position::new(start.line, start.character),
        lsp::Position::new(end.line, end.character),
    ))
}

pub fn symbol_kind(kind: SymbolKind) -> lsp::SymbolKind {
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
        SymbolKind::Variable => lsp::SymbolKind::VARIABLE,
        SymbolKind::Type => lsp::SymbolKind::TYPE_PARAMETER,
        SymbolKind::Macro => lsp::SymbolKind::FUNCTION,
    }
}
