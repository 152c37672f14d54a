//! From a syntax tree to definitions and references, with the language's tags query.
//!
//! Broken code is normal input: tree-sitter recovers, and whatever the query still finds is
//! kept.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use tree_sitter::{Node, Parser, Query, QueryCursor, StreamingIterator, Tree};

use super::language::Language;
use super::table::NameId;
use super::tag_patterns::{Capture, Role, TagPatterns};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SymbolKind {
    Function,
    Method,
    Class,
    Struct,
    Enum,
    Interface,
    Trait,
    Impl,
    Module,
    Constant,
    /// A module-level variable (`let`/`var` in JavaScript and TypeScript, Go's `var`).
    Variable,
    Type,
    Macro,
}

impl SymbolKind {
    pub(super) fn from_capture(suffix: &str) -> Option<SymbolKind> {
        Some(match suffix {
            "function" => SymbolKind::Function,
            "method" => SymbolKind::Method,
            "class" => SymbolKind::Class,
            "struct" => SymbolKind::Struct,
            "enum" => SymbolKind::Enum,
            "interface" => SymbolKind::Interface,
            "trait" => SymbolKind::Trait,
            "impl" => SymbolKind::Impl,
            "module" => SymbolKind::Module,
            "constant" => SymbolKind::Constant,
            "variable" => SymbolKind::Variable,
            "type" => SymbolKind::Type,
            "macro" => SymbolKind::Macro,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SymbolKind::Function => "function",
            SymbolKind::Method => "method",
            SymbolKind::Class => "class",
            SymbolKind::Struct => "struct",
            SymbolKind::Enum => "enum",
            SymbolKind::Interface => "interface",
            SymbolKind::Trait => "trait",
            SymbolKind::Impl => "impl",
            SymbolKind::Module => "module",
            SymbolKind::Constant => "constant",
            SymbolKind::Variable => "variable",
            SymbolKind::Type => "type",
            SymbolKind::Macro => "macro",
        }
    }

    /// Kinds whose members or value a completion wants to see.
    fn has_outline(self) -> bool {
        self.holds_methods()
            || matches!(
                self,
                SymbolKind::Enum | SymbolKind::Constant | SymbolKind::Variable | SymbolKind::Type
            )
    }

    /// Kinds whose nested functions are methods.
    fn holds_methods(self) -> bool {
        matches!(
            self,
            SymbolKind::Class
                | SymbolKind::Struct
                | SymbolKind::Interface
                | SymbolKind::Trait
                | SymbolKind::Impl
        )
    }
}

/// One definition in a file. Ranges are byte ranges of the file's text.
///
/// Compact, since a large tree holds millions of them; offsets are 32-bit (no indexed file
/// comes near 4 GiB); its signature and outline are kept apart, compressed with their
/// neighbours' (see [`Details`]), where they were once two thirds of its bytes. What names
/// it is `Key`: as extraction makes it, its qualified path (which ends with the name), inline
/// up to 24 bytes (56 bytes in all); as the index keeps it, its name's id in the index's
/// interner (36 bytes in all: see [`IndexedSymbol`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symbol<Key = CompactString> {
    pub kind: SymbolKind,
    /// The qualified path, or the name's id.
    key: Key,
    /// The name's length: its range is `name_start..name_start + name_len` (see
    /// [`MAX_NAME_BYTES`]).
    name_len: u16,
    /// The lengths of its signature and outline, which [`Details`] holds.
    signature_len: u16,
    outline_len: u16,
    name_start: u32,
    range: [u32; 2],
    /// `NO_BODY` when the definition has none.
    body: [u32; 2],
    /// `NO_PARENT` at the top level.
    parent: u32,
}

/// A definition as the index keeps it: its name by id, where a C tree's two million
/// definitions once held their names a second time, a million of them on the heap. Its
/// path is rebuilt from its parents' names (see `table::Found::symbol_path`).
pub type IndexedSymbol = Symbol<NameId>;

const NO_BODY: [u32; 2] = [u32::MAX, u32::MAX];

/// The longest name a definition may have: a longer "identifier" is no code a person
/// wrote (a generated or hostile file), and extraction skips its definition.
pub const MAX_NAME_BYTES: usize = 1024;
const NO_PARENT: u32 = u32::MAX;

/// What a [`Symbol`] is made of, before it is packed.
#[derive(Clone, Debug)]
pub struct SymbolParts<'a> {
    pub kind: SymbolKind,
    /// The qualified path within the file: `Shape::area`, `Circle.area`. Ends with the name.
    pub path: &'a str,
    pub name_len: usize,
    pub name_range: Range<usize>,
    /// The whole definition.
    pub range: Range<usize>,
    /// The definition's body, when it has one.
    pub body: Option<Range<usize>>,
    /// The definition without its body, on one line.
    pub signature: &'a str,
    /// The index of the enclosing symbol in the same file.
    pub parent: Option<usize>,
    /// For a type or a constant, what it holds in brief (see [`OUTLINE_BYTES`]).
    pub outline: &'a str,
}

impl Symbol {
    /// Packs `parts`, but for its signature and outline, which the caller keeps in a
    /// [`Details`] (see [`SymbolsBuilder`]). Offsets past 4 GiB or a name longer than its path
    /// (neither of which extraction makes) are cut to fit, and so is a name past
    /// [`MAX_NAME_BYTES`] (which extraction skips).
    fn new(parts: &SymbolParts<'_>, signature_len: usize, outline_len: usize) -> Symbol {
        let offset = |at: usize| u32::try_from(at).unwrap_or(u32::MAX - 1);
        let pair = |range: &Range<usize>| [offset(range.start), offset(range.end)];
        let name_len = parts.name_len.min(parts.path.len()).min(MAX_NAME_BYTES);
        Symbol {
            kind: parts.kind,
            key: parts.path.into(),
            name_len: name_len as u16,
            signature_len: signature_len as u16,
            outline_len: outline_len as u16,
            name_start: offset(parts.name_range.start),
            range: pair(&parts.range),
            body: parts.body.as_ref().map_or(NO_BODY, pair),
            parent: parts.parent.map_or(NO_PARENT, offset),
        }
    }

    /// The name as written at the definition.
    pub fn name(&self) -> &str {
        let start = self.key.len().saturating_sub(self.name_len as usize);
        // Checked: a symbol decoded from a damaged cache reads as empty, never panics.
        self.key.get(start..).unwrap_or_default()
    }

    /// The qualified path within the file: `Shape::area`, `Circle.area`.
    pub fn path(&self) -> &str {
        &self.key
    }

    /// The same definition keyed by `key` instead, and nested in `parent`.
    pub fn rekeyed<Key>(&self, key: Key, parent: Option<usize>) -> Symbol<Key> {
        Symbol {
            kind: self.kind,
            key,
            name_len: self.name_len,
            signature_len: self.signature_len,
            outline_len: self.outline_len,
            name_start: self.name_start,
            range: self.range,
            body: self.body,
            parent: parent.map_or(NO_PARENT, |parent| parent as u32),
        }
    }
}

impl IndexedSymbol {
    /// Its name's id in the index.
    pub fn name_id(&self) -> NameId {
        self.key
    }
}

impl<Key> Symbol<Key> {
    /// How long its signature is, in bytes, without unpacking it (a repo map's cost).
    pub fn signature_len(&self) -> usize {
        self.signature_len as usize
    }

    fn details_len(&self) -> usize {
        self.signature_len as usize + self.outline_len as usize
    }

    /// The name's byte range.
    pub fn name_range(&self) -> Range<usize> {
        let start = self.name_start as usize;
        start..start + self.name_len as usize
    }

    /// The whole definition.
    pub fn range(&self) -> Range<usize> {
        self.range[0] as usize..self.range[1] as usize
    }

    /// The definition's body, when it has one.
    pub fn body(&self) -> Option<Range<usize>> {
        (self.body != NO_BODY).then(|| self.body[0] as usize..self.body[1] as usize)
    }

    /// The index of the enclosing symbol in the same file.
    pub fn parent(&self) -> Option<usize> {
        (self.parent != NO_PARENT).then_some(self.parent as usize)
    }
}

/// A symbol's signature and outline, unpacked from its file's [`Details`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detail {
    /// The definition without its body, on one line: `fn area(&self) -> f64`.
    pub signature: String,
    /// For a type or a constant, what it holds in brief: the lines of its definition at its
    /// own level (fields, method signatures, a value), whitespace collapsed, at most
    /// `OUTLINE_BYTES`. Empty for other kinds.
    pub outline: String,
}

/// How many symbols' signatures and outlines are compressed together. A chunk of 32 is
/// about 2 KiB of text, which lz4 unpacks in a microsecond or two: cheap for the few
/// symbols a request reads, and large enough for the repetition in a file's signatures
/// (`static int`, `#define REG_`, parameter types) to compress.
const DETAIL_CHUNK: usize = 32;

/// How a chunk is stored: its first byte says.
const CHUNK_PLAIN: u8 = 0;
const CHUNK_LZ4: u8 = 1;

/// The signatures and outlines of a file's symbols, in chunks of [`DETAIL_CHUNK`] symbols,
/// each chunk compressed with lz4 (or kept plain when that is no smaller). On a kernel tree
/// they were a third of the index's memory as plain strings, and they are read a few at a
/// time: a hover, a completion's context, a repo map's chosen lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    chunks: Vec<Box<[u8]>>,
}

impl Details {
    /// Symbol `index`'s signature and outline; empty when they cannot be unpacked (only a
    /// damaged cache could make that: the chunk's lengths come from its symbols).
    pub fn get<Key>(&self, symbols: &[Symbol<Key>], index: usize) -> Detail {
        self.unpack(symbols, index).unwrap_or_default()
    }

    fn unpack<Key>(&self, symbols: &[Symbol<Key>], index: usize) -> Option<Detail> {
        let chunk = self.chunks.get(index / DETAIL_CHUNK)?;
        let first = index / DETAIL_CHUNK * DETAIL_CHUNK;
        let members = symbols.get(first..(first + DETAIL_CHUNK).min(symbols.len()))?;
        let symbol = symbols.get(index)?;
        let total: usize = members.iter().map(Symbol::<Key>::details_len).sum();
        let (&how, packed) = chunk.split_first()?;
        let text = match how {
            CHUNK_PLAIN => Cow::Borrowed(packed),
            CHUNK_LZ4 => {
                let mut text = vec![0; total];
                let written = lz4_flex::block::decompress_into(packed, &mut text).ok()?;
                (written == total).then_some(Cow::Owned(text))?
            }
            _ => return None,
        };
        let start: usize = members[..index - first]
            .iter()
            .map(Symbol::<Key>::details_len)
            .sum();
        let signature_end = start + symbol.signature_len as usize;
        let slice = |range: Range<usize>| std::str::from_utf8(text.get(range)?).ok();
        Some(Detail {
            signature: slice(start..signature_end)?.to_owned(),
            outline: slice(signature_end..start + symbol.details_len())?.to_owned(),
        })
    }

    /// What it holds on the heap, for the index's memory figures.
    pub fn bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Box<[u8]>>()
            + self.chunks.iter().map(|chunk| chunk.len()).sum::<usize>()
    }
}

impl Serialize for Details {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Bytes<'b>(&'b [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }
        serializer.collect_seq(self.chunks.iter().map(|chunk| Bytes(chunk)))
    }
}

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Chunk(Box<[u8]>);
        impl<'de> Deserialize<'de> for Chunk {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_bytes(ChunkBytes)
            }
        }
        struct ChunkBytes;
        impl serde::de::Visitor<'_> for ChunkBytes {
            type Value = Chunk;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a chunk of signatures and outlines")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Chunk, E> {
                Ok(Chunk(bytes.into()))
            }
        }
        let chunks: Vec<Chunk> = Vec::deserialize(deserializer)?;
        Ok(Details {
            chunks: chunks.into_iter().map(|chunk| chunk.0).collect(),
        })
    }
}

/// Packs a file's symbols, in order, with their details.
#[derive(Default)]
pub struct SymbolsBuilder {
    symbols: Vec<Symbol>,
    chunks: Vec<Box<[u8]>>,
    /// The current chunk's text, not yet compressed.
    pending: Vec<u8>,
}

impl SymbolsBuilder {
    pub fn with_capacity(symbols: usize) -> Self {
        SymbolsBuilder {
            symbols: Vec::with_capacity(symbols),
            chunks: Vec::with_capacity(symbols.div_ceil(DETAIL_CHUNK)),
            pending: Vec::new(),
        }
    }

    /// Adds a symbol. A signature or outline past 64 KiB (extraction makes none) is cut.
    pub fn push(&mut self, parts: SymbolParts<'_>) {
        let signature = prefix_within(parts.signature, u16::MAX as usize);
        let outline = prefix_within(parts.outline, u16::MAX as usize);
        self.symbols
            .push(Symbol::new(&parts, signature.len(), outline.len()));
        self.pending.extend_from_slice(signature.as_bytes());
        self.pending.extend_from_slice(outline.as_bytes());
        if self.symbols.len().is_multiple_of(DETAIL_CHUNK) {
            self.close_chunk();
        }
    }

    fn close_chunk(&mut self) {
        let packed = lz4_flex::block::compress(&self.pending);
        let (how, bytes) = if packed.len() < self.pending.len() {
            (CHUNK_LZ4, &packed[..])
        } else {
            (CHUNK_PLAIN, &self.pending[..])
        };
        let mut chunk = Vec::with_capacity(bytes.len() + 1);
        chunk.push(how);
        chunk.extend_from_slice(bytes);
        self.chunks.push(chunk.into_boxed_slice());
        self.pending.clear();
    }

    pub fn finish(mut self) -> (Vec<Symbol>, Details) {
        if !self.symbols.len().is_multiple_of(DETAIL_CHUNK) {
            self.close_chunk();
        }
        (
            self.symbols,
            Details {
                chunks: self.chunks,
            },
        )
    }
}

/// The longest prefix of `text` within `limit` bytes that ends on a character boundary.
fn prefix_within(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The longest outline a symbol keeps: context for a completion, not the definition.
pub const OUTLINE_BYTES: usize = 240;

/// A use of a name: the name's number in its file's [`FileSymbols::names`] and its byte
/// range. Twelve bytes: a large file has tens of thousands of them, most repeating a few
/// hundred names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    pub name: u32,
    pub start: u32,
    pub end: u32,
}

impl Reference {
    pub fn range(&self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSymbols {
    pub symbols: Vec<Symbol>,
    /// The symbols' signatures and outlines.
    pub details: Details,
    /// The names the references use, each once, in the order of their first use.
    pub names: NameList,
    /// Uses of names, in the order of the text.
    pub references: Vec<Reference>,
    /// Whether the tree has syntax errors (what was found is still kept).
    pub has_errors: bool,
}

/// A file's used names, each once, back to back in one string. One allocation where a
/// vector of boxed names took one a name: a large tree has millions, made by the scan's
/// threads and freed by the index's once interned, and those frees were a tenth of a warm
/// start. Stored in the cache as a plain sequence of strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameList {
    text: String,
    /// Where each name ends in `text`.
    ends: Vec<u32>,
}

impl NameList {
    pub fn push(&mut self, name: &str) {
        self.text.push_str(name);
        self.ends.push(self.text.len() as u32);
    }

    pub fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)? as usize;
        let start = index
            .checked_sub(1)
            .map_or(0, |before| self.ends[before] as usize);
        self.text.get(start..end)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|index| self.get(index).unwrap_or_default())
    }
}

impl Serialize for NameList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for NameList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Names;
        /// Copies one name into the list, whether the input lends it or not.
        struct Push<'l>(&'l mut NameList);
        impl<'de> serde::de::DeserializeSeed<'de> for Push<'_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_str(self)
            }
        }
        impl serde::de::Visitor<'_> for Push<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<(), E> {
                self.0.push(name);
                Ok(())
            }
        }
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = NameList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of names")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<NameList, A::Error> {
                let mut names = NameList::default();
                // A hostile length is not trusted for more than a modest reservation.
                names
                    .ends
                    .reserve(seq.size_hint().unwrap_or(0).min(1 << 16));
                while seq.next_element_seed(Push(&mut names))?.is_some() {}
                Ok(names)
            }
        }
        deserializer.deserialize_seq(Names)
    }
}

impl FileSymbols {
    /// Symbol `index`'s signature and outline.
    pub fn detail(&self, index: usize) -> Detail {
        self.details.get(&self.symbols, index)
    }

    pub fn reference_name(&self, reference: &Reference) -> &str {
        self.names.get(reference.name as usize).unwrap_or_default()
    }

    /// Every use: the name and its byte range.
    pub fn uses(&self) -> impl Iterator<Item = (&str, Range<usize>)> {
        self.references
            .iter()
            .map(|reference| (self.reference_name(reference), reference.range()))
    }
}

/// A definition while its file is read: its nesting and path are settled before it is
/// packed into a [`Symbol`].
struct Draft<'t> {
    kind: SymbolKind,
    name: &'t str,
    path: Cow<'t, str>,
    name_range: Range<usize>,
    range: Range<usize>,
    body: Option<Range<usize>>,
    parent: Option<usize>,
}

thread_local! {
    /// One parser per thread, kept from file to file: a scan parses tens of thousands.
    static PARSER: RefCell<Parser> = RefCell::new(Parser::new());
}

/// Parses `text`, reusing `old` (already edited to match) when given.
pub fn parse(language: Language, text: &str, old: Option<&Tree>) -> Option<Tree> {
    let run = |parser: &mut Parser| {
        // Nothing of an earlier parse carries over (one that stopped would resume).
        parser.reset();
        parser.set_language(&language.grammar()).ok()?;
        parser.parse(text, old)
    };
    PARSER
        .try_with(|parser| match parser.try_borrow_mut() {
            Ok(mut parser) => run(&mut parser),
            Err(_) => run(&mut Parser::new()),
        })
        .unwrap_or_else(|_| run(&mut Parser::new()))
}

/// The tags query's matches through tree-sitter's query cursor.
fn for_each_query_match<'tree>(
    query: &Query,
    tree: &'tree Tree,
    text: &str,
    found: &mut dyn FnMut(usize, &[Capture<'tree>]),
) {
    let roles: Vec<Role> = query
        .capture_names()
        .iter()
        .map(|name| Role::from_capture_name(name))
        .collect();
    let mut captures = Vec::new();
    let mut cursor = QueryCursor::new();
    let mut matches = cursor.matches(query, tree.root_node(), text.as_bytes());
    while let Some(found_match) = matches.next() {
        captures.clear();
        captures.extend(found_match.captures().iter().map(|capture| Capture {
            role: roles[capture.index as usize],
            node: capture.node,
        }));
        found(found_match.pattern_index, &captures);
    }
}

/// The definitions and references of a parsed file.
pub fn extract(language: Language, tree: &Tree, text: &str) -> FileSymbols {
    extract_by(language, tree, text, language.tag_patterns())
}

/// [`extract`] through tree-sitter's query cursor whatever the query: what the one-walk
/// matcher is checked against (tests, `tierls bench index`).
pub fn extract_with_query_cursor(language: Language, tree: &Tree, text: &str) -> FileSymbols {
    extract_by(language, tree, text, None)
}

fn extract_by(
    language: Language,
    tree: &Tree,
    text: &str,
    patterns: Option<&TagPatterns>,
) -> FileSymbols {
    let Ok(query) = language.query() else {
        return FileSymbols {
            has_errors: tree.root_node().has_error(),
            ..FileSymbols::default()
        };
    };
    let mut definitions: Vec<(usize, Draft, Option<&str>)> = Vec::new();
    let mut references = Vec::new();
    let mut take = |pattern_index: usize, captures: &[Capture<'_>]| {
        let mut name_node = None;
        let mut definition = None;
        let mut reference = false;
        let mut container = None;
        for capture in captures {
            match capture.role {
                Role::Name => name_node = Some(capture.node),
                Role::Container => container = Some(node_text(capture.node, text)),
                Role::Definition(kind) => definition = Some((kind, capture.node)),
                Role::Reference => reference = true,
                Role::Other => {}
            }
        }
        let Some(name_node) = name_node else { return };
        let name_text = node_text(name_node, text);
        if name_text.is_empty() || name_text.len() > MAX_NAME_BYTES {
            return;
        }
        if let Some((kind, node)) = definition {
            let draft = Draft {
                kind,
                name: name_text,
                path: Cow::Borrowed(name_text),
                name_range: name_node.byte_range(),
                range: node.byte_range(),
                body: node
                    .child_by_field_name("body")
                    .map(|body| body.byte_range()),
                parent: None,
            };
            definitions.push((pattern_index, draft, container));
        } else if reference {
            references.push((name_node.byte_range(), name_text));
        }
    };
    match patterns {
        Some(patterns) => patterns.for_each_match(tree.root_node(), &mut take),
        None => for_each_query_match(query, tree, text, &mut take),
    }

    // Where two patterns define the same name, the earlier pattern (the more specific, or
    // the language's own rather than an inherited one) wins.
    definitions.sort_by_key(|(pattern, draft, _)| (draft.name_range.start, *pattern));
    definitions.dedup_by(|later, earlier| later.1.name_range == earlier.1.name_range);
    // Outer definitions first, so that nesting can be read off a stack.
    definitions.sort_by(|a, b| {
        (a.1.range.start, std::cmp::Reverse(a.1.range.end))
            .cmp(&(b.1.range.start, std::cmp::Reverse(b.1.range.end)))
    });

    let separator = language.separator();
    let mut drafts: Vec<Draft> = Vec::with_capacity(definitions.len());
    let mut open: Vec<usize> = Vec::new();
    for (_, mut draft, container) in definitions {
        while open.last().is_some_and(|&top| {
            drafts[top].range.end < draft.range.end || drafts[top].range.end <= draft.range.start
        }) {
            open.pop();
        }
        let parent = open.last().copied();
        draft.parent = parent;
        if let Some(parent) = parent {
            let parent = &drafts[parent];
            if draft.kind == SymbolKind::Function && parent.kind.holds_methods() {
                draft.kind = SymbolKind::Method;
            }
            draft.path = Cow::Owned(format!("{}{separator}{}", parent.path, draft.name));
        } else if let Some(container) = container {
            draft.path = Cow::Owned(format!("{container}{separator}{}", draft.name));
        }
        open.push(drafts.len());
        drafts.push(draft);
    }

    let mut symbols = SymbolsBuilder::with_capacity(drafts.len());
    for (i, draft) in drafts.iter().enumerate() {
        let outline = if draft.kind.has_outline() {
            outline(text, &drafts, i)
        } else {
            String::new()
        };
        symbols.push(SymbolParts {
            kind: draft.kind,
            path: &draft.path,
            name_len: draft.name.len(),
            name_range: draft.name_range.clone(),
            range: draft.range.clone(),
            body: draft.body.clone(),
            signature: &signature(text, draft.range.clone(), draft.body.clone()),
            parent: draft.parent,
            outline: &outline,
        });
    }
    let (symbols, details) = symbols.finish();

    // A definition's own name is not a use of it.
    let mut definition_names: Vec<Range<usize>> = drafts
        .iter()
        .map(|draft| draft.name_range.clone())
        .collect();
    definition_names.sort_by_key(|range| range.start);
    references.retain(|(range, _)| {
        // Offsets are stored in 32 bits; no indexed file comes near 4 GiB.
        range.end <= u32::MAX as usize
            && definition_names
                .binary_search_by_key(&range.start, |range| range.start)
                .is_err()
    });
    references.sort_by_key(|(range, _)| range.start);
    references.dedup_by(|a, b| a.0 == b.0);
    let (names, references) = number_names(references);

    FileSymbols {
        symbols,
        details,
        names,
        references,
        has_errors: tree.root_node().has_error(),
    }
}

/// Each name stored once, and the uses by number: the names are copied out of the text
/// once per file instead of once per use.
fn number_names(uses: Vec<(Range<usize>, &str)>) -> (NameList, Vec<Reference>) {
    let mut numbers: HashMap<&str, u32> = HashMap::new();
    let mut names = NameList::default();
    let references = uses
        .into_iter()
        .map(|(range, name)| {
            let number = *numbers.entry(name).or_insert_with(|| {
                names.push(name);
                names.len() as u32 - 1
            });
            Reference {
                name: number,
                start: range.start as u32,
                end: range.end as u32,
            }
        })
        .collect();
    (names, references)
}

fn node_text<'t>(node: Node<'_>, text: &'t str) -> &'t str {
    text.get(node.byte_range()).unwrap_or_default()
}

/// The definition up to its body, whitespace collapsed: `fn area(&self) -> f64`.
fn signature(text: &str, range: Range<usize>, body: Option<Range<usize>>) -> String {
    let end = match &body {
        Some(body) if body.start > range.start => body.start,
        _ => text[range.clone()]
            .find('\n')
            .map_or(range.end, |newline| range.start + newline),
    };
    let mut signature = String::new();
    for word in text
        .get(range.start..end)
        .unwrap_or_default()
        .split_whitespace()
    {
        if !signature.is_empty() {
            signature.push(' ');
        }
        signature.push_str(word);
    }
    if signature.chars().count() > 200 {
        signature = signature.chars().take(199).collect::<String>() + "…";
    }
    signature
}

/// The lines of symbol `i` after its first, at its own level: lines inside its children's
/// bodies (method bodies) are left out, and so are blank lines, comments and lone brackets.
fn outline(text: &str, symbols: &[Draft], i: usize) -> String {
    let symbol = &symbols[i];
    let Some(definition) = text.get(symbol.range.clone()) else {
        return String::new();
    };
    let nested: Vec<Range<usize>> = symbols[i + 1..]
        .iter()
        .take_while(|child| child.range.start < symbol.range.end)
        .filter(|child| child.parent == Some(i))
        .filter_map(|child| child.body.clone())
        .collect();
    let mut outline = String::new();
    let mut line_start = symbol.range.start;
    for line in definition.split_inclusive('\n') {
        let start = line_start;
        line_start += line.len();
        if start == symbol.range.start {
            continue;
        }
        // Python bodies start at their first statement, after its indentation.
        let content = start + (line.len() - line.trim_start().len());
        if nested
            .iter()
            .any(|body| body.start <= content && content < body.end)
        {
            continue;
        }
        let line = line.trim();
        let noise = line.is_empty()
            || line.chars().all(|c| "{}()[];,".contains(c))
            || ["//", "#", "/*", "*", "\"\"\"", "\'\'\'"]
                .iter()
                .any(|start| line.starts_with(start));
        if noise {
            continue;
        }
        let line = line.trim_end_matches(['{', ':']).split_whitespace();
        let line = line.collect::<Vec<_>>().join(" ");
        if outline.len() + line.len() + 2 > OUTLINE_BYTES {
            outline.push_str(" …");
            break;
        }
        if !outline.is_empty() {
            outline.push_str(if outline.ends_with([',', ';']) {
                " "
            } else {
                "; "
            });
        }
        outline.push_str(&line);
    }
    outline
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Symbol `i` of [`built`]: its signature says its number, its outline (empty for
    /// every third) repeats a field up to four times.
    fn signature_of(i: usize) -> String {
        format!("struct Item{i} é")
    }

    fn outline_of(i: usize) -> String {
        if i.is_multiple_of(3) {
            String::new()
        } else {
            format!("field_{i}: u32, ").repeat(i % 5)
        }
    }

    fn built(count: usize) -> (Vec<Symbol>, Details) {
        let mut builder = SymbolsBuilder::with_capacity(count);
        for i in 0..count {
            let path = format!("Item{i}");
            builder.push(SymbolParts {
                kind: SymbolKind::Struct,
                path: &path,
                name_len: path.len(),
                name_range: i * 10..i * 10 + 3,
                range: i * 10..i * 10 + 9,
                body: None,
                signature: &signature_of(i),
                parent: None,
                outline: &outline_of(i),
            });
        }
        builder.finish()
    }

    #[test]
    fn a_symbol_is_56_bytes_36_indexed_and_a_name_past_the_limit_defines_nothing() {
        assert_eq!(std::mem::size_of::<Symbol>(), 56);
        assert_eq!(std::mem::size_of::<IndexedSymbol>(), 36);
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let fits = "y".repeat(MAX_NAME_BYTES);
        let text = format!("fn {long}() {{}}\nfn {fits}() {{}}\nfn short() {{ {long}(); }}\n");
        let tree = parse(Language::Rust, &text, None).unwrap();
        let found = extract(Language::Rust, &tree, &text);
        let names: Vec<&str> = found.symbols.iter().map(Symbol::name).collect();
        assert_eq!(names, [fits.as_str(), "short"]);
        assert_eq!(&text[found.symbols[0].name_range()], fits);
        assert_eq!(found.detail(1).signature, "fn short()");
    }

    #[test]
    fn details_come_back_as_they_went_in_across_chunks() {
        let count = DETAIL_CHUNK * 3 + 5;
        let (symbols, details) = built(count);
        assert_eq!(details.chunks.len(), 4);
        assert!(
            details.chunks.iter().any(|chunk| chunk[0] == CHUNK_LZ4),
            "repetitive text is compressed"
        );
        let encoded = postcard::to_allocvec(&details).unwrap();
        let decoded: Details = postcard::from_bytes(&encoded).unwrap();
        assert_eq!(decoded, details);
        for i in 0..count {
            let detail = decoded.get(&symbols, i);
            assert_eq!(detail.signature, signature_of(i));
            assert_eq!(detail.outline, outline_of(i), "symbol {i}");
        }
        assert_eq!(
            decoded.get(&symbols, count),
            Detail::default(),
            "past the end"
        );
    }

    /// What a damaged cache could hold: every way a chunk can be wrong reads as empty
    /// details, never a panic or a wrong text.
    #[test]
    fn details_that_do_not_unpack_read_as_empty() {
        let (symbols, details) = built(DETAIL_CHUNK + 1);
        let damaged = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut chunks = details.chunks.clone();
            let mut chunk = chunks[0].to_vec();
            edit(&mut chunk);
            chunks[0] = chunk.into_boxed_slice();
            Details { chunks }.get(&symbols, 1)
        };
        let empty = Detail::default();
        assert_eq!(damaged(&|chunk| chunk[0] = 7), empty, "an unknown tag");
        assert_eq!(
            damaged(&|chunk| chunk.truncate(chunk.len() / 2)),
            empty,
            "cut short"
        );
        assert_eq!(damaged(&|chunk| chunk.clear()), empty, "no tag at all");
        assert_eq!(
            damaged(&|chunk| chunk.iter_mut().skip(1).for_each(|b| *b = 0xff)),
            empty,
            "garbage"
        );
        assert_eq!(
            damaged(&|chunk| *chunk = [&[CHUNK_PLAIN][..], &[0xc3; 4096]].concat()),
            empty,
            "not UTF-8"
        );
        // Lengths that the chunk does not hold: symbols from another file.
        let (others, _) = built(3);
        assert_eq!(details.get(&others, 1), empty);
        assert_eq!(Details::default().get(&symbols, 0), empty, "no chunks");
    }
}
