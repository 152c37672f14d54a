//! `textDocument/hover`: the structural facts of the symbol under the cursor from the index,
//! always; a one-sentence explanation from the fast tier when it arrives within the hover
//! budget, cached by the definition's content.

use std::hash::{Hash, Hasher};

use tower_lsp::lsp_types as lsp;

use super::session::Session;
use super::symbols::Texts;
use crate::core::generation::GenerateRequest;
use crate::core::index::language::Language;
use crate::core::position::{Position, offset_of};

/// The definition source a model may explain, at most this long.
const SOURCE_BYTES: usize = 1500;

pub struct Facts {
    pub markdown: String,
    /// What to ask the fast tier, and the key its answer is cached under.
    pub explain: Option<(GenerateRequest, u64)>,
}

pub fn facts(
    session: &Session,
    texts: &mut Texts<'_>,
    uri: &lsp::Url,
    position: lsp::Position,
) -> Option<Facts> {
    let key = session.index_key(uri);
    let document = session.documents.get(uri.as_str())?;
    let offset = offset_of(
        document.text(),
        Position::new(position.line, position.character),
        session.encoding,
    )
    .ok()?;
    let name = session.index.name_at(&key, offset)?.to_owned();
    let mut definitions = session.index.definitions(&name);
    definitions.sort_by_key(|found| {
        (
            found.path != key,
            found.path.to_owned(),
            found.symbol.range.start,
        )
    });
    let found = *definitions.first()?;
    let references = session.index.references(&name);
    let files: std::collections::HashSet<&str> = references.iter().map(|(path, _)| *path).collect();
    let line = texts
        .range(found.path, &found.symbol.name_range)
        .map_or(0, |range| range.start.line + 1);
    let fence = found.language.name();
    let mut markdown = format!(
        "```{fence}\n{}\n```\n{} `{}` · defined in `{}:{line}` · {} reference{} in {} file{}",
        found.symbol.signature,
        found.symbol.kind.name(),
        found.symbol.path,
        found.path,
        references.len(),
        if references.len() == 1 { "" } else { "s" },
        files.len(),
        if files.len() == 1 { "" } else { "s" },
    );
    if definitions.len() > 1 {
        markdown.push_str(&format!(
            " · {} definitions with this name",
            definitions.len()
        ));
    }
    let source = texts.rope(found.path).and_then(|rope| {
        let range = found.symbol.range.clone();
        // A file changed on disk since it was indexed may no longer split there.
        rope.get_byte_slice(range).map(|slice| slice.to_string())
    });
    let explain = source.map(|source| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut hasher);
        let mut cut = source.len().min(SOURCE_BYTES);
        while !source.is_char_boundary(cut) {
            cut -= 1;
        }
        let comment = if found.language == Language::Python {
            "#"
        } else {
            "//"
        };
        let prompt = format!(
            "{}\n\n{comment} In one sentence, `{}`",
            &source[..cut],
            found.symbol.name
        );
        let request = GenerateRequest {
            stop: vec!["\n".into()],
            ..GenerateRequest::text(prompt, 48)
        };
        (request, hasher.finish())
    });
    Some(Facts { markdown, explain })
}
