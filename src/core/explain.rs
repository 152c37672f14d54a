//! The hover: the structural facts of a symbol as Markdown, and the question the fast tier
//! is asked to explain it in one sentence.

use std::hash::{Hash, Hasher};

use crate::core::generation::GenerateRequest;
use crate::core::index::extract::SymbolKind;
use crate::core::index::language::Language;

/// The definition source a model may explain, at most this long.
const SOURCE_BYTES: usize = 1500;

/// What a hover says of a definition.
pub struct HoverText<'a> {
    pub signature: &'a str,
    pub kind: SymbolKind,
    pub path: &'a str,
    pub file: &'a str,
    pub language: Language,
    /// 1-based; 0 when unknown.
    pub line: u32,
    pub references: usize,
    pub reference_files: usize,
    pub definitions: usize,
}

pub fn hover_markdown(facts: &HoverText<'_>) -> String {
    let plural = |count: usize| if count == 1 { "" } else { "s" };
    let mut markdown = format!(
        "```{}\n{}\n```\n{} `{}` · defined in `{}:{}` · {} reference{} in {} file{}",
        facts.language.name(),
        facts.signature,
        facts.kind.name(),
        facts.path,
        facts.file,
        facts.line,
        facts.references,
        plural(facts.references),
        facts.reference_files,
        plural(facts.reference_files),
    );
    if facts.definitions > 1 {
        markdown.push_str(&format!(
            " · {} definitions with this name",
            facts.definitions
        ));
    }
    markdown
}

/// The explanation appended to a hover, with the tier that wrote it ("fast tier",
/// "executor").
pub fn with_explanation(markdown: &str, explanation: &str, by: &str) -> String {
    format!("{markdown}\n\n---\n*{by}:* {explanation}")
}

/// The fast tier's question about `source` (a definition named `name`), and the key its
/// answer is cached under: the hash of the source.
pub fn explanation_request(source: &str, name: &str, language: Language) -> (GenerateRequest, u64) {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut hasher);
    let mut cut = source.len().min(SOURCE_BYTES);
    while !source.is_char_boundary(cut) {
        cut -= 1;
    }
    let comment = language.line_comment();
    let prompt = format!("{}\n\n{comment} In one sentence, `{name}`", &source[..cut]);
    let request = GenerateRequest {
        stop: vec!["\n".into()],
        ..GenerateRequest::text(prompt, 48)
    };
    (request, hasher.finish())
}
