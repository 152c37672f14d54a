//! From a syntax tree to definitions and references, with the language's tags query.
//!
//! Broken code is normal input: tree-sitter recovers, and whatever the query still finds is
//! kept.

use std::collections::HashMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use tree_sitter::{Node, Parser, QueryCursor, StreamingIterator, Tree};

use super::language::Language;

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
    fn from_capture(suffix: &str) -> Option<SymbolKind> {
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symbol {
    pub name: String,
    pub kind: SymbolKind,
    /// The qualified path within the file: `Shape::area`, `Circle.area`.
    pub path: String,
    pub name_range: Range<usize>,
    /// The whole definition.
    pub range: Range<usize>,
    /// The definition's body, when it has one.
    pub body: Option<Range<usize>>,
    /// The definition without its body, on one line.
    pub signature: String,
    /// The index of the enclosing symbol in the same file.
    pub parent: Option<usize>,
    /// For a type or a constant, what it holds in brief: the lines of its definition at its
    /// own level (fields, method signatures, a value), whitespace collapsed, at most
    /// `OUTLINE_BYTES`. Empty for other kinds.
    pub outline: String,
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
    /// The names the references use, each once, in the order of their first use.
    pub names: Vec<Box<str>>,
    /// Uses of names, in the order of the text.
    pub references: Vec<Reference>,
    /// Whether the tree has syntax errors (what was found is still kept).
    pub has_errors: bool,
}

impl FileSymbols {
    pub fn reference_name(&self, reference: &Reference) -> &str {
        self.names
            .get(reference.name as usize)
            .map_or("", |name| name)
    }

    /// Every use: the name and its byte range.
    pub fn uses(&self) -> impl Iterator<Item = (&str, Range<usize>)> {
        self.references
            .iter()
            .map(|reference| (self.reference_name(reference), reference.range()))
    }
}

/// Parses `text`, reusing `old` (already edited to match) when given.
pub fn parse(language: Language, text: &str, old: Option<&Tree>) -> Option<Tree> {
    let mut parser = Parser::new();
    parser.set_language(&language.grammar()).ok()?;
    parser.parse(text, old)
}

/// The definitions and references of a parsed file.
pub fn extract(language: Language, tree: &Tree, text: &str) -> FileSymbols {
    let Ok(query) = language.query() else {
        return FileSymbols {
            has_errors: tree.root_node().has_error(),
            ..FileSymbols::default()
        };
    };
    let names = query.capture_names();
    let mut definitions: Vec<(usize, Symbol, Option<String>)> = Vec::new();
    let mut references = Vec::new();
    let mut cursor = QueryCursor::new();
    let mut matches = cursor.matches(query, tree.root_node(), text.as_bytes());
    while let Some(found) = matches.next() {
        let mut name_node = None;
        let mut definition = None;
        let mut reference = false;
        let mut container = None;
        for capture in found.captures() {
            let capture_name = names[capture.index as usize];
            if capture_name == "name" {
                name_node = Some(capture.node);
            } else if capture_name == "container" {
                container = Some(node_text(capture.node, text).to_owned());
            } else if let Some(kind) = capture_name.strip_prefix("definition.") {
                definition = SymbolKind::from_capture(kind).map(|kind| (kind, capture.node));
            } else if capture_name.starts_with("reference.") {
                reference = true;
            }
        }
        let Some(name_node) = name_node else { continue };
        let name_text = node_text(name_node, text);
        if name_text.is_empty() {
            continue;
        }
        if let Some((kind, node)) = definition {
            let name = name_text.to_owned();
            let body = node
                .child_by_field_name("body")
                .map(|body| body.byte_range());
            let symbol = Symbol {
                signature: signature(text, node.byte_range(), body.clone()),
                path: name.clone(),
                name,
                kind,
                name_range: name_node.byte_range(),
                range: node.byte_range(),
                body,
                parent: None,
                outline: String::new(),
            };
            definitions.push((found.pattern_index, symbol, container));
        } else if reference {
            references.push((name_node.byte_range(), name_text));
        }
    }

    // Where two patterns define the same name, the earlier pattern (the more specific, or
    // the language's own rather than an inherited one) wins.
    definitions.sort_by_key(|(pattern, symbol, _)| (symbol.name_range.start, *pattern));
    definitions.dedup_by(|later, earlier| later.1.name_range == earlier.1.name_range);
    // Outer definitions first, so that nesting can be read off a stack.
    definitions.sort_by(|a, b| {
        (a.1.range.start, std::cmp::Reverse(a.1.range.end))
            .cmp(&(b.1.range.start, std::cmp::Reverse(b.1.range.end)))
    });

    let separator = language.separator();
    let mut symbols: Vec<Symbol> = Vec::with_capacity(definitions.len());
    let mut open: Vec<usize> = Vec::new();
    for (_, mut symbol, container) in definitions {
        while open.last().is_some_and(|&top| {
            symbols[top].range.end < symbol.range.end
                || symbols[top].range.end <= symbol.range.start
        }) {
            open.pop();
        }
        let parent = open.last().copied();
        symbol.parent = parent;
        if let Some(parent) = parent {
            let parent = &symbols[parent];
            if symbol.kind == SymbolKind::Function && parent.kind.holds_methods() {
                symbol.kind = SymbolKind::Method;
            }
            symbol.path = format!("{}{separator}{}", parent.path, symbol.name);
        } else if let Some(container) = container {
            symbol.path = format!("{container}{separator}{}", symbol.name);
        }
        open.push(symbols.len());
        symbols.push(symbol);
    }

    for i in 0..symbols.len() {
        if symbols[i].kind.has_outline() {
            symbols[i].outline = outline(text, &symbols, i);
        }
    }

    // A definition's own name is not a use of it.
    let mut definition_names: Vec<Range<usize>> = symbols
        .iter()
        .map(|symbol| symbol.name_range.clone())
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
        names,
        references,
        has_errors: tree.root_node().has_error(),
    }
}

/// Each name stored once, and the uses by number: the names are copied out of the text
/// once per file instead of once per use.
fn number_names(uses: Vec<(Range<usize>, &str)>) -> (Vec<Box<str>>, Vec<Reference>) {
    let mut numbers: HashMap<&str, u32> = HashMap::new();
    let mut names: Vec<Box<str>> = Vec::new();
    let references = uses
        .into_iter()
        .map(|(range, name)| {
            let number = *numbers.entry(name).or_insert_with(|| {
                names.push(name.into());
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
fn outline(text: &str, symbols: &[Symbol], i: usize) -> String {
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
