//! `textDocument/inlineCompletion` and `textDocument/completion` from the fast tier.
//!
//! The handler reads what it needs under the session lock (the plan is pure and quick), then
//! awaits the engine without the lock. Every bad case is an empty answer: no model yet, an
//! unknown document, a position past the end, a document too large to index.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use tower_lsp::lsp_types as lsp;

use crate::completion::Timing;
use crate::config::CompletionConfig;
use crate::core::completion::{CompletionInput, CompletionPlan, plan_completion};
use crate::core::index::language::Language;
use crate::core::position::{Position, PositionEncoding, offset_of, position_of};
use crate::models::ModelInfo;
use crate::workspace::{Key, Workspace};

/// The prompt's budget in bytes: about 1,500 tokens, a fraction of the fast tier's context.
const PROMPT_BUDGET_BYTES: usize = 6000;

/// Where the cursor is, and how the client counts columns.
pub struct At {
    pub position: lsp::Position,
    pub encoding: PositionEncoding,
}

pub struct Prepared {
    pub key: String,
    pub slot: usize,
    /// The text before the cursor, for the suggestion cache.
    pub prefix: String,
    pub plan: CompletionPlan,
    pub timing: Timing,
    /// The identifier being typed, and where it starts: completion items replace it.
    pub word: String,
    pub word_start: lsp::Position,
    pub cursor: lsp::Position,
}

/// Everything the engine needs for a completion at `position`, or `None` when there is
/// nothing sensible to complete.
pub fn prepare(
    workspace: &Workspace,
    key: Key,
    at: At,
    config: &CompletionConfig,
    model: &ModelInfo,
) -> Option<Prepared> {
    let At { position, encoding } = at;
    let (has_fim, slots, context_tokens) = (model.has_fim, model.slots, model.n_ctx);
    // The caller refreshed the index for every other edited document; this one's last
    // extraction is close enough for its enclosing definition (re-extracting it would cost
    // milliseconds on every keystroke).
    let document = workspace.document(&key)?;
    let text = document.text().clone();
    if text.len_bytes() as u64 > workspace.limits().index_bytes {
        return None;
    }
    let offset = offset_of(
        &text,
        Position::new(position.line, position.character),
        encoding,
    )
    .ok()?;
    let language =
        Language::from_lsp_id(document.language_id()).or_else(|| Language::from_path(&key));
    // The prompt may take about half of the context; the rest is for the answer.
    let budget = PROMPT_BUDGET_BYTES.min(context_tokens as usize * 2);
    let recent = workspace.recent_edits();
    let input = CompletionInput {
        path: &key,
        language,
        text: &text,
        offset,
        index: workspace.index(),
        has_fim,
        budget_bytes: budget,
        recent_edits: &recent,
    };
    let plan = plan_completion(&input);
    let prefix = text.byte_slice(..offset).to_string();
    let word: String = prefix
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let word_start = position_of(&text, offset - word.len(), encoding).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    Some(Prepared {
        slot: hasher.finish() as usize % slots.max(1),
        key,
        prefix,
        plan,
        timing: Timing {
            debounce: Duration::from_millis(config.debounce_ms.into()),
            budget: Duration::from_millis(config.budget_ms.into()),
        },
        word,
        word_start: lsp::Position::new(word_start.line, word_start.character),
        cursor: position,
    })
}

/// A completion item for editors without ghost text: it replaces the word being typed with
/// the word plus the suggestion, so that the editor's own filtering keeps it.
pub fn completion_item(prepared: &Prepared, suggestion: &str) -> lsp::CompletionItem {
    let first_line = suggestion.lines().next().unwrap_or_default();
    let new_text = format!("{}{suggestion}", prepared.word);
    lsp::CompletionItem {
        label: format!("{}{first_line}", prepared.word),
        kind: Some(lsp::CompletionItemKind::TEXT),
        detail: Some("tierls (fast tier)".into()),
        filter_text: Some(prepared.word.clone()),
        sort_text: Some("0".into()),
        text_edit: Some(lsp::CompletionTextEdit::Edit(lsp::TextEdit {
            range: lsp::Range::new(prepared.word_start, prepared.cursor),
            new_text,
        })),
        ..Default::default()
    }
}
