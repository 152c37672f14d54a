//! The documents the editor has open, keyed by workspace key (see `crate::workspace::Key`).

use std::collections::HashMap;

use super::document::{ByteEdit, ChangeError, Document, TextChange};
use super::position::PositionEncoding;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("document {uri} is not open")]
    NotOpen { uri: String },
    #[error("document {uri}: {source}")]
    Change {
        uri: String,
        #[source]
        source: ChangeError,
    },
}

#[derive(Debug, Default)]
pub struct DocumentStore {
    documents: HashMap<String, Document>,
}

impl DocumentStore {
    /// Opens a document; returns the document it replaced when the URI was already open.
    pub fn open(&mut self, uri: &str, document: Document) -> Option<Document> {
        self.documents.insert(uri.to_owned(), document)
    }

    pub fn change(
        &mut self,
        uri: &str,
        version: i32,
        changes: &[TextChange],
        encoding: PositionEncoding,
    ) -> Result<Vec<ByteEdit>, StoreError> {
        let document = self
            .documents
            .get_mut(uri)
            .ok_or_else(|| StoreError::NotOpen {
                uri: uri.to_owned(),
            })?;
        document
            .apply_changes(version, changes, encoding)
            .map_err(|source| StoreError::Change {
                uri: uri.to_owned(),
                source,
            })
    }

    pub fn close(&mut self, uri: &str) -> Result<Document, StoreError> {
        self.documents
            .remove(uri)
            .ok_or_else(|| StoreError::NotOpen {
                uri: uri.to_owned(),
            })
    }

    pub fn get(&self, uri: &str) -> Option<&Document> {
        self.documents.get(uri)
    }

    /// The open documents, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Document)> {
        self.documents
            .iter()
            .map(|(key, document)| (key.as_str(), document))
    }

    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }
}
