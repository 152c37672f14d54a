//! Every conversion between byte offsets and editor positions lives here.
//!
//! A position is a zero-based line and a column counted in the negotiated encoding's code
//! units: UTF-8 bytes, UTF-16 code units or Unicode scalar values. Lines end at `\n`, `\r\n`
//! or a lone `\r`, exactly as LSP defines them (ropey is built with `cr_lines` only).

use ropey::Rope;
use std::fmt;

/// The unit in which a position's `character` counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PositionEncoding {
    Utf8,
    /// The LSP default, and what a client gets unless it offers another.
    #[default]
    Utf16,
    Utf32,
}

impl PositionEncoding {
    /// Code units that `ch` takes in this encoding.
    pub fn width(self, ch: char) -> u32 {
        match self {
            PositionEncoding::Utf8 => ch.len_utf8() as u32,
            PositionEncoding::Utf16 => ch.len_utf16() as u32,
            PositionEncoding::Utf32 => 1,
        }
    }

    /// The name LSP uses for this encoding (`positionEncoding`).
    pub fn as_lsp_name(self) -> &'static str {
        match self {
            PositionEncoding::Utf8 => "utf-8",
            PositionEncoding::Utf16 => "utf-16",
            PositionEncoding::Utf32 => "utf-32",
        }
    }

    pub fn from_lsp_name(name: &str) -> Option<Self> {
        match name {
            "utf-8" => Some(PositionEncoding::Utf8),
            "utf-16" => Some(PositionEncoding::Utf16),
            "utf-32" => Some(PositionEncoding::Utf32),
            _ => None,
        }
    }
}

impl fmt::Display for PositionEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_lsp_name())
    }
}

/// A zero-based line and a column in code units of some [`PositionEncoding`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: u32,
    pub character: u32,
}

impl Position {
    pub fn new(line: u32, character: u32) -> Self {
        Position { line, character }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.character)
    }
}

/// A half-open range between two positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Range {
    pub start: Position,
    pub end: Position,
}

impl Range {
    pub fn new(start: Position, end: Position) -> Self {
        Range { start, end }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("line {line} is past the end of the document, which has {line_count} lines")]
    LineOutOfRange { line: u32, line_count: usize },
    #[error(
        "character {character} on line {line} falls inside a character ({encoding} code units)"
    )]
    InsideCharacter {
        line: u32,
        character: u32,
        encoding: PositionEncoding,
    },
    #[error("byte offset {offset} is past the end of the document, which has {len} bytes")]
    OffsetOutOfRange { offset: usize, len: usize },
    #[error("byte offset {offset} is not on a character boundary")]
    NotCharBoundary { offset: usize },
    #[error("range {range} ends before it starts")]
    ReversedRange { range: Range },
}

/// The byte offset of `position`.
///
/// A `character` past the end of its line means the end of the line (the LSP rule); a line
/// past the end of the document and a column inside a character are errors, because they
/// mean the client and the server disagree about the text.
pub fn offset_of(
    text: &Rope,
    position: Position,
    encoding: PositionEncoding,
) -> Result<usize, PositionError> {
    let line_index = position.line as usize;
    if line_index >= text.len_lines() {
        return Err(PositionError::LineOutOfRange {
            line: position.line,
            line_count: text.len_lines(),
        });
    }
    let mut offset = text.line_to_byte(line_index);
    let mut units = 0u32;
    for ch in text.line(line_index).chars() {
        if is_line_terminator(ch) || units >= position.character {
            break;
        }
        let width = encoding.width(ch);
        if units + width > position.character {
            return Err(PositionError::InsideCharacter {
                line: position.line,
                character: position.character,
                encoding,
            });
        }
        units += width;
        offset += ch.len_utf8();
    }
    Ok(offset)
}

/// The position of byte `offset`. An offset between the `\r` and `\n` of a CRLF maps to the
/// end of its line, the only position LSP can name there.
pub fn position_of(
    text: &Rope,
    offset: usize,
    encoding: PositionEncoding,
) -> Result<Position, PositionError> {
    if offset > text.len_bytes() {
        return Err(PositionError::OffsetOutOfRange {
            offset,
            len: text.len_bytes(),
        });
    }
    if text.char_to_byte(text.byte_to_char(offset)) != offset {
        return Err(PositionError::NotCharBoundary { offset });
    }
    let line_index = text.byte_to_line(offset);
    let line_start = text.line_to_byte(line_index);
    let before = text.byte_slice(line_start..offset);
    let character = before
        .chars()
        .take_while(|&ch| !is_line_terminator(ch))
        .map(|ch| encoding.width(ch))
        .sum();
    Ok(Position {
        line: line_index as u32,
        character,
    })
}

/// The byte range of `range`, checked to be in order.
pub fn byte_range_of(
    text: &Rope,
    range: Range,
    encoding: PositionEncoding,
) -> Result<std::ops::Range<usize>, PositionError> {
    let start = offset_of(text, range.start, encoding)?;
    let end = offset_of(text, range.end, encoding)?;
    if end < start {
        return Err(PositionError::ReversedRange { range });
    }
    Ok(start..end)
}

fn is_line_terminator(ch: char) -> bool {
    ch == '\n' || ch == '\r'
}
