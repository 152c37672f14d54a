//! What a model is asked and what it answers: the same for every backend.

use std::time::Duration;

/// The text a model continues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// Plain text to continue.
    Text(String),
    /// Fill in the middle: the backend uses the model's FIM tokens when it has them and
    /// falls back to continuing the prefix alone when it has none.
    Fim {
        /// The code before the cursor.
        prefix: String,
        suffix: String,
        /// What other files say, for the model to know the names it may use.
        context: FimContext,
    },
    /// A conversation, rendered with the model's own chat template. When the last message
    /// is the assistant's, it is the start of the answer, which the model continues.
    Chat(Vec<ChatMessage>),
}

/// Repository context for fill in the middle, in both shapes backends take it: comment
/// lines to put before the prefix, or chunks by file for servers that place them with the
/// model's own file tokens (llama-server's `input_extra`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FimContext {
    /// Comment lines, each ending in a newline; empty when there is no context.
    pub comments: String,
    pub chunks: Vec<ContextChunk>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextChunk {
    /// The file the text comes from (workspace-relative).
    pub path: String,
    pub text: String,
}

impl FimContext {
    /// The text a backend without repository-level FIM continues: the context as comments,
    /// then the prefix.
    pub fn before(&self, prefix: &str) -> String {
        format!("{}{prefix}", self.comments)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }
}

/// A constraint on the shape of the output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grammar {
    /// A GBNF grammar whose start rule is `root`.
    Gbnf(String),
    /// A JSON schema, turned into a grammar by llama.cpp.
    JsonSchema(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    pub max_tokens: u32,
    /// Generation stops before the first occurrence of any of these; it is not in the text.
    pub stop: Vec<String>,
    pub time_limit: Option<Duration>,
    pub grammar: Option<Grammar>,
    /// Token healing: the prompt ends inside the text being written (a word half typed), so
    /// the backend backs it up to a token boundary and makes the answer start with what it
    /// took off; the answer comes back without that text.
    pub heal: bool,
}

impl GenerateRequest {
    pub fn text(prompt: impl Into<String>, max_tokens: u32) -> Self {
        GenerateRequest {
            prompt: Prompt::Text(prompt.into()),
            max_tokens,
            stop: Vec::new(),
            time_limit: None,
            grammar: None,
            heal: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    StopSequence,
    MaxTokens,
    TimeLimit,
    Cancelled,
}

/// Token counts and timings of one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Prompt tokens actually evaluated: the rest came from the reused KV cache.
    pub evaluated_tokens: u32,
    pub generated_tokens: u32,
    /// Whether the prompt used the model's fill-in-the-middle tokens.
    pub used_fim: bool,
    pub prompt_time: Duration,
    pub generation_time: Duration,
    /// Tokens proposed by drafting (speculative decoding), and those the model agreed with.
    pub drafted_tokens: u32,
    pub accepted_tokens: u32,
    /// Drafts a draft model did not make because its own tier was answering a request.
    pub draft_yields: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub text: String,
    pub stop_reason: StopReason,
    pub usage: Usage,
}

/// Finds stop sequences in streamed text, holding back only what could still become one.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text produced but not yet released, because it may be the start of a stop sequence.
    pending: String,
}

/// What one piece of streamed text amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text that is safe to show; generation goes on.
    Continue(String),
    /// A stop sequence was found: this text precedes it, and generation ends.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    pub fn push(&mut self, piece: &str) -> StopOutcome {
        self.pending.push_str(piece);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|stop| self.pending.find(stop.as_str()))
            .min();
        if let Some(at) = first_stop {
            let before = self.pending[..at].to_owned();
            self.pending.clear();
            return StopOutcome::Stopped(before);
        }
        // Hold back the longest tail that is a proper prefix of some stop sequence.
        let held = self
            .stops
            .iter()
            .flat_map(|stop| {
                (1..stop.len())
                    .rev()
                    .filter(|&n| stop.is_char_boundary(n))
                    .find(|&n| self.pending.ends_with(&stop[..n]))
            })
            .max()
            .unwrap_or(0);
        let release = self.pending.len() - held;
        let released = self.pending[..release].to_owned();
        self.pending.drain(..release);
        StopOutcome::Continue(released)
    }

    /// What is still held back when generation ends for another reason.
    pub fn finish(self) -> String {
        self.pending
    }
}
