//! A plan's landing as the editor receives it: one `WorkspaceEdit` of whole-line edits,
//! versioned by the documents the landing was computed on.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tower_lsp::lsp_types::*;

use super::convert::{ClientFeatures, lsp_range, uri};
use crate::core::plan::diff::line_edits;
use crate::core::plan::land::Landing;

/// Why the user must look at an edit before it is applied: its change annotation.
pub(super) struct Confirmation {
    id: &'static str,
    label: String,
    description: &'static str,
}

impl Confirmation {
    /// An edit whose `plan.check` still fails; `label` says how.
    pub(super) fn check_fails(label: String) -> Self {
        Confirmation {
            id: "tierls-check-fails",
            label,
            description: "tierls: plan.check fails on this change",
        }
    }

    /// An instruction edit, shown as a diff for review; `label` is the instruction.
    pub(super) fn review(label: String) -> Self {
        Confirmation {
            id: "tierls-review",
            label,
            description: "tierls: review the model's edit before it is applied",
        }
    }
}

/// The landing as one `WorkspaceEdit`: versioned `TextDocumentEdit`s (and `CreateFile`
/// for new files) when the client takes `documentChanges`, else plain `changes`. With
/// `confirm` (why the user must look first) and a client that asks about annotated edits,
/// every edit needs the user's confirmation.
pub(super) fn workspace_edit(
    client: &ClientFeatures,
    root: Option<&Path>,
    landing: &Landing,
    versions: &BTreeMap<String, Option<i32>>,
    confirm: Option<&Confirmation>,
) -> std::result::Result<WorkspaceEdit, String> {
    let annotate = client.document_changes && client.change_annotations && confirm.is_some();
    let annotation = confirm
        .filter(|_| annotate)
        .map(|confirm| confirm.id.to_owned());
    let encoding = client.encoding;
    let mut operations = Vec::new();
    let mut changes: HashMap<Url, Vec<TextEdit>> = HashMap::new();
    for file in &landing.files {
        let uri = uri(root, &file.file).ok_or_else(|| format!("{} has no URI", file.file))?;
        let base = file.base.clone().unwrap_or_default();
        let rope = ropey::Rope::from_str(&base);
        let edits: Vec<TextEdit> = line_edits(&base, &file.text)
            .into_iter()
            .filter_map(|edit| {
                Some(TextEdit {
                    range: lsp_range(&rope, &edit.range, encoding)?,
                    new_text: edit.new_text,
                })
            })
            .collect();
        if file.base.is_none() {
            if !(client.document_changes && client.create_files) {
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
                    annotation_id: annotation.clone(),
                },
            )));
        }
        if client.document_changes {
            operations.push(DocumentChangeOperation::Edit(TextDocumentEdit {
                text_document: OptionalVersionedTextDocumentIdentifier {
                    uri,
                    version: versions.get(&file.file).copied().flatten(),
                },
                edits: edits
                    .into_iter()
                    .map(|edit| match &annotation {
                        Some(id) => OneOf::Right(AnnotatedTextEdit {
                            text_edit: edit,
                            annotation_id: id.clone(),
                        }),
                        None => OneOf::Left(edit),
                    })
                    .collect(),
            }));
        } else {
            changes.insert(uri, edits);
        }
    }
    Ok(if client.document_changes {
        let change_annotations = annotation.zip(confirm).map(|(id, confirm)| {
            HashMap::from([(
                id,
                ChangeAnnotation {
                    label: confirm.label.clone(),
                    needs_confirmation: Some(true),
                    description: Some(confirm.description.to_owned()),
                },
            )])
        });
        WorkspaceEdit {
            document_changes: Some(DocumentChanges::Operations(operations)),
            change_annotations,
            ..WorkspaceEdit::default()
        }
    } else {
        WorkspaceEdit {
            changes: Some(changes),
            ..WorkspaceEdit::default()
        }
    })
}
