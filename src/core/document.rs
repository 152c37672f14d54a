//! One text document as the editor sees it: its text, version and language.

use ropey::Rope;

use super::position::{PositionEncoding, PositionError, Range, byte_range_of};

/// One edit of a `didChange`: a range to replace, or the whole text when `range` is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextChange {
    pub range: Option<Range>,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("version {received} is not newer than the current version {current}")]
    StaleVersion { current: i32, received: i32 },
    #[error("change {index}: {source}")]
    BadRange {
        index: usize,
        #[source]
        source: PositionError,
    },
}

/// One applied change in bytes and (row, byte column) points: what an incremental parser
/// needs to reuse its old tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteEdit {
    pub start: usize,
    pub old_end: usize,
    pub new_end: usize,
    pub start_point: (usize, usize),
    pub old_end_point: (usize, usize),
    pub new_end_point: (usize, usize),
}

impl ByteEdit {
    /// Replacing the whole of `old` with `new`.
    fn whole(old: &Rope, new: &str) -> ByteEdit {
        let new_rope = Rope::from_str(new);
        ByteEdit {
            start: 0,
            old_end: old.len_bytes(),
            new_end: new.len(),
            start_point: (0, 0),
            old_end_point: point_of(old, old.len_bytes()),
            new_end_point: point_of(&new_rope, new.len()),
        }
    }
}

/// The row and byte column of a byte offset on a character boundary.
fn point_of(text: &Rope, offset: usize) -> (usize, usize) {
    let row = text.byte_to_line(offset);
    (row, offset - text.line_to_byte(row))
}

#[derive(Clone, Debug)]
pub struct Document {
    text: Rope,
    version: i32,
    language_id: String,
}

impl Document {
    pub fn new(text: &str, version: i32, language_id: impl Into<String>) -> Self {
        Document {
            text: Rope::from_str(text),
            version,
            language_id: language_id.into(),
        }
    }

    pub fn text(&self) -> &Rope {
        &self.text
    }

    pub fn version(&self) -> i32 {
        self.version
    }

    pub fn language_id(&self) -> &str {
        &self.language_id
    }

    /// Applies the changes of one `didChange` in order, all or none: a bad change leaves the
    /// document exactly as it was, so the store never holds a half-applied edit.
    pub fn apply_changes(
        &mut self,
        version: i32,
        changes: &[TextChange],
        encoding: PositionEncoding,
    ) -> Result<Vec<ByteEdit>, ChangeError> {
        if version <= self.version {
            return Err(ChangeError::StaleVersion {
                current: self.version,
                received: version,
            });
        }
        // Cloning a rope is O(1): the clone shares nodes until they are edited.
        let mut text = self.text.clone();
        let mut edits = Vec::with_capacity(changes.len());
        for (index, change) in changes.iter().enumerate() {
            match change.range {
                None => {
                    edits.push(ByteEdit::whole(&text, &change.text));
                    text = Rope::from_str(&change.text);
                }
                Some(range) => {
                    let bytes = byte_range_of(&text, range, encoding)
                        .map_err(|source| ChangeError::BadRange { index, source })?;
                    let start_point = point_of(&text, bytes.start);
                    let old_end_point = point_of(&text, bytes.end);
                    let start = text.byte_to_char(bytes.start);
                    let end = text.byte_to_char(bytes.end);
                    text.remove(start..end);
                    text.insert(start, &change.text);
                    let new_end = bytes.start + change.text.len();
                    edits.push(ByteEdit {
                        start: bytes.start,
                        old_end: bytes.end,
                        new_end,
                        start_point,
                        old_end_point,
                        new_end_point: point_of(&text, new_end),
                    });
                }
            }
        }
        self.text = text;
        self.version = version;
        Ok(edits)
    }
}
