//! A plan's landing as the editor receives it: the files as they are now (the editor's
//! copy with its version, else the disk's), and one `WorkspaceEdit` of whole-line edits.

use std::collections::{BTreeMap, HashMap};

use tower_lsp::lsp_types::*;

use super::session::Session;
use super::symbols::to_lsp_range;
use crate::core::plan::Plan;
use crate::core::plan::diff::line_edits;
use crate::core::plan::land::Landing;
use crate::core::position::PositionEncoding;

/// Each file the plan touches as it is now, with its version when the editor has it
/// open: the editor's copy, else the disk's; `None` when it does not exist.
pub(super) fn current_files(
    session: &Session,
    plan: &Plan,
) -> BTreeMap<String, (Option<String>, Option<i32>)> {
    let root = session.root.clone().unwrap_or_default();
    plan.files()
        .into_iter()
        .map(|file| {
            let open = session
                .uri_of(file)
                .and_then(|uri| session.documents.get(uri.as_str()))
                .map(|document| (Some(document.text().to_string()), Some(document.version())));
            let state = open.unwrap_or_else(|| {
                let text = match crate::disk::confine(&root, file) {
                    Ok(path) if crate::disk::exists(&path) => crate::disk::read_text(
                        &root,
                        std::path::Path::new(file),
                        session.config.limits.max_file_bytes,
                    )
                    .map_err(|err| tracing::warn!("a plan step cannot read its file: {err}"))
                    .ok(),
                    _ => None,
                };
                (text, None)
            });
            (file.to_owned(), state)
        })
        .collect()
}

/// The landing as one `WorkspaceEdit`: versioned `TextDocumentEdit`s (and `CreateFile`
/// for new files) when the client takes `documentChanges`, else plain `changes`.
pub(super) fn workspace_edit(
    session: &Session,
    landing: &Landing,
    versions: &BTreeMap<String, Option<i32>>,
) -> std::result::Result<WorkspaceEdit, String> {
    let encoding: PositionEncoding = session.encoding;
    let mut operations = Vec::new();
    let mut changes: HashMap<Url, Vec<TextEdit>> = HashMap::new();
    for file in &landing.files {
        let uri = session
            .uri_of(&file.file)
            .ok_or_else(|| format!("{} has no URI", file.file))?;
        let base = file.base.clone().unwrap_or_default();
        let rope = ropey::Rope::from_str(&base);
        let edits: Vec<TextEdit> = line_edits(&base, &file.text)
            .into_iter()
            .filter_map(|edit| {
                Some(TextEdit {
                    range: to_lsp_range(&rope, &edit.range, encoding)?,
                    new_text: edit.new_text,
                })
            })
            .collect();
        if file.base.is_none() {
            if !(session.document_changes && session.create_files) {
                return Err(format!(
                    "the plan creates {}, and this editor cannot create files through an edit; nothing was changed",
                    file.file
                ));
            }
            operations.push(DocumentChangeOperation::Op(ResourceOp::Create(
                CreateFile {
                    uri: uri.clone(),
                    options: Some(CreateFileOptions {
                        overwrite: Some(false),
                        ignore_if_exists: Some(false),
                    }),
                    annotation_id: None,
                },
            )));
        }
        if session.document_changes {
            operations.push(DocumentChangeOperation::Edit(TextDocumentEdit {
                text_document: OptionalVersionedTextDocumentIdentifier {
                    uri,
                    version: versions.get(&file.file).copied().flatten(),
                },
                edits: edits.into_iter().map(OneOf::Left).collect(),
            }));
        } else {
            changes.insert(uri, edits);
        }
    }
    Ok(if session.document_changes {
        WorkspaceEdit {
            document_changes: Some(DocumentChanges::Operations(operations)),
            ..WorkspaceEdit::default()
        }
    } else {
        WorkspaceEdit {
            changes: Some(changes),
            ..WorkspaceEdit::default()
        }
    })
}
