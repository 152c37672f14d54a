//! Offset conversions checked against a naive reference on random text.

use ropey::Rope;
use tierls::core::position::{Position, PositionEncoding, PositionError, offset_of, position_of};

/// A deliberately simple model of LSP positions over a `&str`, written without ropey.
pub mod reference {
    use tierls::core::position::Position;

    #[derive(Clone, Copy, Debug)]
    pub enum Encoding {
        Utf8,
        Utf16,
        Utf32,
    }

    fn width(ch: char, encoding: Encoding) -> u32 {
        match encoding {
            Encoding::Utf8 => ch.len_utf8() as u32,
            Encoding::Utf16 => ch.len_utf16() as u32,
            Encoding::Utf32 => 1,
        }
    }

    /// `(start, end of content)` byte offsets of each line; terminators are `\r\n`, `\n`, `\r`.
    pub fn lines(text: &str) -> Vec<(usize, usize)> {
        let bytes = text.as_bytes();
        let mut lines = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    lines.push((start, i));
                    i += 2;
                    start = i;
                }
                b'\r' | b'\n' => {
                    lines.push((start, i));
                    i += 1;
                    start = i;
                }
                _ => i += 1,
            }
        }
        lines.push((start, bytes.len()));
        lines
    }

    /// `None` when the position is past the last line or inside a character.
    pub fn offset_of(text: &str, position: Position, encoding: Encoding) -> Option<usize> {
        let (start, end) = *lines(text).get(position.line as usize)?;
        let mut units = 0;
        for (index, ch) in text[start..end].char_indices() {
            if units == position.character {
                return Some(start + index);
            }
            units += width(ch, encoding);
            if units > position.character {
                return None;
            }
        }
        Some(end) // At or past the end of the line.
    }

    /// `None` when the offset is not a character boundary or is past the end.
    pub fn position_of(text: &str, offset: usize, encoding: Encoding) -> Option<Position> {
        if !text.is_char_boundary(offset) {
            return None;
        }
        let lines = lines(text);
        let line = lines.iter().rposition(|&(start, _)| start <= offset)?;
        let (start, end) = lines[line];
        let character = text[start..offset.min(end)]
            .chars()
            .map(|ch| width(ch, encoding))
            .sum();
        Some(Position::new(line as u32, character))
    }

    /// Random text over ASCII, multi-byte characters and all three line endings.
    pub fn random_text(rng: &mut fastrand::Rng, max_pieces: usize) -> String {
        const PIECES: &[&str] = &[
            "a", "b", " ", "\t", "é", "日", "😀", "\n", "\r\n", "\r", "xyz",
        ];
        (0..rng.usize(..=max_pieces))
            .map(|_| PIECES[rng.usize(..PIECES.len())])
            .collect()
    }

    /// A random ordered byte range on character boundaries, never splitting a CRLF.
    pub fn random_range(rng: &mut fastrand::Rng, text: &str) -> (usize, usize) {
        let boundaries: Vec<usize> = (0..=text.len())
            .filter(|&i| {
                text.is_char_boundary(i)
                    && !(i > 0
                        && text.as_bytes()[i - 1] == b'\r'
                        && text.as_bytes().get(i) == Some(&b'\n'))
            })
            .collect();
        let a = boundaries[rng.usize(..boundaries.len())];
        let b = boundaries[rng.usize(..boundaries.len())];
        (a.min(b), a.max(b))
    }
}

use reference::Encoding;

const ENCODINGS: [(PositionEncoding, Encoding); 3] = [
    (PositionEncoding::Utf8, Encoding::Utf8),
    (PositionEncoding::Utf16, Encoding::Utf16),
    (PositionEncoding::Utf32, Encoding::Utf32),
];

fn is_inside_crlf(text: &str, offset: usize) -> bool {
    offset > 0
        && text.as_bytes()[offset - 1] == b'\r'
        && text.as_bytes().get(offset) == Some(&b'\n')
}

#[test]
fn offsets_to_positions_match_the_reference() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..400 {
        let text = reference::random_text(&mut rng, 60);
        let rope = Rope::from_str(&text);
        for (encoding, reference_encoding) in ENCODINGS {
            for offset in 0..=text.len() + 1 {
                let ours = position_of(&rope, offset, encoding).ok();
                let expected = reference::position_of(&text, offset, reference_encoding);
                assert_eq!(ours, expected, "offset {offset} of {text:?} in {encoding}");
                // Every position names one offset, except inside a CRLF, which LSP cannot name.
                if let Some(position) = ours.filter(|_| !is_inside_crlf(&text, offset)) {
                    assert_eq!(
                        offset_of(&rope, position, encoding),
                        Ok(offset),
                        "{position} in {text:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn positions_to_offsets_match_the_reference() {
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..400 {
        let text = reference::random_text(&mut rng, 60);
        let rope = Rope::from_str(&text);
        let line_count = reference::lines(&text).len() as u32;
        for (encoding, reference_encoding) in ENCODINGS {
            for line in 0..=line_count {
                for character in 0..40 {
                    let position = Position::new(line, character);
                    let ours = offset_of(&rope, position, encoding).ok();
                    let expected = reference::offset_of(&text, position, reference_encoding);
                    assert_eq!(ours, expected, "{position} of {text:?} in {encoding}");
                }
            }
        }
    }
}

/// Each failure names what is wrong, as the editor's log will show it.
#[test]
fn errors_say_what_is_wrong() {
    let rope = Rope::from_str("a😀b\r\nsecond");
    let cases = [
        offset_of(&rope, Position::new(2, 0), PositionEncoding::Utf16),
        offset_of(&rope, Position::new(0, 2), PositionEncoding::Utf16),
        offset_of(&rope, Position::new(0, 3), PositionEncoding::Utf8),
        position_of(&rope, 99, PositionEncoding::Utf16).map(|_| 0),
        position_of(&rope, 2, PositionEncoding::Utf16).map(|_| 0),
    ];
    let shown: Vec<String> = cases
        .into_iter()
        .map(|case| {
            case.map_or_else(
                |err: PositionError| err.to_string(),
                |offset| format!("Ok({offset})"),
            )
        })
        .collect();
    insta::assert_snapshot!(shown.join("\n"), @r"
    line 2 is past the end of the document, which has 2 lines
    character 2 on line 0 falls inside a character (utf-16 code units)
    character 3 on line 0 falls inside a character (utf-8 code units)
    byte offset 99 is past the end of the document, which has 14 bytes
    byte offset 2 is not on a character boundary
    ");
}
