//! An open document's syntax tree, kept current edit by edit: tree-sitter reuses the old
//! tree for everything the edits did not touch.

use ropey::Rope;
use tree_sitter::{InputEdit, Parser, Point, Tree};

use super::extract::{FileSymbols, extract};
use super::language::Language;
use crate::core::document::ByteEdit;

pub struct LiveFile {
    pub language: Language,
    parser: Parser,
    tree: Tree,
}

impl LiveFile {
    /// Parses the whole document; `None` only if the grammar cannot be loaded.
    pub fn open(language: Language, text: &Rope) -> Option<(LiveFile, FileSymbols)> {
        let mut parser = Parser::new();
        parser.set_language(&language.grammar()).ok()?;
        let tree = parse_rope(&mut parser, text, None)?;
        let live = LiveFile {
            language,
            parser,
            tree,
        };
        let symbols = live.symbols(text);
        Some((live, symbols))
    }

    /// Applies `edits` to the old tree, reparses incrementally and extracts again.
    pub fn update(&mut self, text: &Rope, edits: &[ByteEdit]) -> FileSymbols {
        self.reparse(text, edits);
        self.symbols(text)
    }

    /// Applies `edits` to the old tree and reparses incrementally, without extracting.
    pub fn reparse(&mut self, text: &Rope, edits: &[ByteEdit]) {
        for edit in edits {
            self.tree.edit(&InputEdit {
                start_byte: edit.start,
                old_end_byte: edit.old_end,
                new_end_byte: edit.new_end,
                start_position: point(edit.start_point),
                old_end_position: point(edit.old_end_point),
                new_end_position: point(edit.new_end_point),
            });
        }
        if let Some(tree) = parse_rope(&mut self.parser, text, Some(&self.tree)) {
            self.tree = tree;
        }
    }

    /// The definitions and references of the current tree.
    pub fn symbols(&self, text: &Rope) -> FileSymbols {
        // Extraction reads names and signatures out of the text: one contiguous copy.
        extract(self.language, &self.tree, &text.to_string())
    }
}

fn point((row, column): (usize, usize)) -> Point {
    Point { row, column }
}

/// Parses straight from the rope's chunks, without copying the document.
fn parse_rope(parser: &mut Parser, text: &Rope, old: Option<&Tree>) -> Option<Tree> {
    let length = text.len_bytes();
    parser.parse_with_options(
        &mut |byte: usize, _: Point| -> &[u8] {
            if byte >= length {
                return &[];
            }
            let (chunk, chunk_start, _, _) = text.chunk_at_byte(byte);
            &chunk.as_bytes()[byte - chunk_start..]
        },
        old,
        None,
    )
}
