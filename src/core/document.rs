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
    ) -> Result<(), ChangeError> {
        if version <= self.version {
            return Err(ChangeError::StaleVersion {
                current: self.version,
                received: version,
            });
        }
        // Cloning a rope is O(1): the clone shares nodes until they are edited.
        let mut text = self.text.clone();
        for (index, change) in changes.iter().enumerate() {
            match change.range {
                None => text = Rope::from_str(&change.text),
                Some(range) => {
                    let bytes = byte_range_of(&text, range, encoding)
                        .map_err(|source| ChangeError::BadRange { index, source })?;
                    let start = text.byte_to_char(bytes.start);
                    let end = text.byte_to_char(bytes.end);
                    text.remove(start..end);
                    text.insert(start, &change.text);
                }
            }
        }
        self.text = text;
        self.version = version;
        Ok(())
    }
}
