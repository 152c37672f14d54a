//! `textDocument/hover`'s conversion: the workspace layer's facts about the name under the
//! cursor become Markdown (`core::explain`), and the definition's source becomes the fast
//! tier's question, which the shell asks the explanation engine.

use tower_lsp::lsp_types as lsp;

use super::symbols::Texts;
use crate::core::explain::{HoverText, explanation_request, hover_markdown};
use crate::core::generation::GenerateRequest;
use crate::core::route;
use crate::workspace::queries::HoverFacts;

pub(super) struct Facts {
    pub markdown: String,
    /// What to ask the fast tier, and the key its answer is cached under.
    pub explain: Option<(GenerateRequest, u64)>,
    /// What the routing rule weighs: the definition's lines and its uses.
    pub route: route::HoverFacts,
}

pub(super) fn facts(texts: &Texts<'_>, facts: &HoverFacts) -> Facts {
    let found = &facts.definition;
    let text = texts.files.get(&found.file).map(|text| text.rope());
    let line = text
        .and_then(|rope| super::convert::lsp_range(rope, &found.name_range, texts.encoding))
        .map_or(0, |range| range.start.line + 1);
    let markdown = hover_markdown(&HoverText {
        signature: &found.signature,
        kind: found.kind,
        path: &found.path,
        file: &found.file,
        language: found.language,
        line,
        references: facts.references,
        reference_files: facts.reference_files,
        definitions: facts.definitions,
    });
    // A file changed on disk since it was indexed may no longer split there.
    let source = text.and_then(|rope| {
        rope.get_byte_slice(found.range.clone())
            .map(|slice| slice.to_string())
    });
    let route = route::HoverFacts {
        lines: source.as_deref().map_or(0, |source| source.lines().count()),
        references: facts.references,
        budget_ms: 0,
    };
    let explain = source.map(|source| explanation_request(&source, &found.name, found.language));
    Facts {
        markdown,
        explain,
        route,
    }
}

pub(super) fn hover(markdown: String) -> lsp::Hover {
    lsp::Hover {
        contents: lsp::HoverContents::Markup(lsp::MarkupContent {
            kind: lsp::MarkupKind::Markdown,
            value: markdown,
        }),
        range: None,
    }
}
