//! A scripted model for deterministic tests and benchmarks of prompts, plans and edits: it
//! answers from a script instead of weights, through the same `Model` interface, and
//! remembers every prompt it received.
//!
//! It streams its answers token by token (a "token" is four bytes), honours stop sequences,
//! the token limit, the time limit and cancellation like the embedded backend does.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::{Cancel, GenerationEvent, Model, ModelInfo};
use crate::core::generation::{
    GenerateRequest, Generation, Prompt, StopMatcher, StopOutcome, StopReason, Usage,
};
use crate::core::plan::prompt::render_conversation;
use crate::sync::lock;

/// Answers, in turn, the prompts that contain `needle`; the last answer repeats.
struct Rule {
    needle: String,
    answers: Vec<String>,
    used: usize,
}

pub struct ScriptedModel {
    info: ModelInfo,
    rules: Mutex<Vec<Rule>>,
    prompts: Mutex<Vec<String>>,
    /// How long each token takes: a stand-in for decoding time.
    per_token: Duration,
    /// `submit` panics on prompts containing this: a stand-in for a bug in a backend.
    panics_on: Option<String>,
    /// Answers the prompts no rule matches (a real model, for a half-scripted run).
    otherwise: Option<std::sync::Arc<dyn Model>>,
}

impl ScriptedModel {
    pub fn new(slots: usize) -> Self {
        ScriptedModel {
            info: ModelInfo {
                path: PathBuf::from("scripted"),
                n_ctx: 32768,
                n_ctx_train: 32768,
                has_fim: false,
                slots: slots.max(1),
            },
            rules: Mutex::default(),
            prompts: Mutex::default(),
            per_token: Duration::ZERO,
            panics_on: None,
            otherwise: None,
        }
    }

    /// Sends the prompts no rule matches to `model` (which then speaks for this one's
    /// context size and slots); they are remembered like the others.
    pub fn otherwise(mut self, model: std::sync::Arc<dyn Model>) -> Self {
        self.info = model.info().clone();
        self.otherwise = Some(model);
        self
    }

    /// Prompts containing `needle` get `answers`, one per prompt, the last repeating. The
    /// first rule that matches wins.
    pub fn answer(self, needle: &str, answers: &[&str]) -> Self {
        lock(&self.rules).push(Rule {
            needle: needle.to_owned(),
            answers: answers.iter().map(|answer| (*answer).to_owned()).collect(),
            used: 0,
        });
        self
    }

    pub fn per_token(mut self, per_token: Duration) -> Self {
        self.per_token = per_token;
        self
    }

    /// Panics in `submit` on every prompt containing `needle`.
    pub fn panics_on(mut self, needle: &str) -> Self {
        self.panics_on = Some(needle.to_owned());
        self
    }

    /// Every prompt received, rendered as text, in order.
    pub fn prompts(&self) -> Vec<String> {
        lock(&self.prompts).clone()
    }

    /// `None` when no rule matches.
    fn next_answer(&self, prompt: &str) -> Option<String> {
        let mut rules = lock(&self.rules);
        let rule = rules
            .iter_mut()
            .find(|rule| prompt.contains(&rule.needle))?;
        let answer = rule.answers[rule.used.min(rule.answers.len() - 1)].clone();
        rule.used += 1;
        Some(answer)
    }
}

pub fn render_prompt(prompt: &Prompt) -> String {
    match prompt {
        Prompt::Text(text) => text.clone(),
        Prompt::Fim {
            prefix,
            suffix,
            context,
        } => format!("{}<fim-hole>{suffix}", context.before(prefix)),
        Prompt::Chat(messages) => render_conversation(messages),
    }
}

impl Model for ScriptedModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn submit(
        &self,
        slot: usize,
        request: GenerateRequest,
        cancel: Cancel,
        events: UnboundedSender<GenerationEvent>,
    ) {
        let prompt = render_prompt(&request.prompt);
        if let Some(needle) = self
            .panics_on
            .as_deref()
            .filter(|needle| prompt.contains(needle))
        {
            panic!("the scripted model was told to fail on `{needle}`");
        }
        let answer = self.next_answer(&prompt);
        lock(&self.prompts).push(prompt.clone());
        let answer = match (answer, &self.otherwise) {
            (Some(answer), _) => answer,
            (None, Some(model)) => return model.submit(slot, request, cancel, events),
            (None, None) => String::new(),
        };
        let per_token = self.per_token;
        let prompt_tokens = prompt.len().div_ceil(4) as u32;
        std::thread::spawn(move || {
            let result = stream(&answer, &request, &cancel, per_token, &events);
            let usage = Usage {
                prompt_tokens,
                evaluated_tokens: prompt_tokens,
                ..result.1
            };
            let _ = events.send(GenerationEvent::Done(Ok(Generation {
                text: result.0,
                stop_reason: result.2,
                usage,
            })));
        });
    }
}

fn stream(
    answer: &str,
    request: &GenerateRequest,
    cancel: &Cancel,
    per_token: Duration,
    events: &UnboundedSender<GenerationEvent>,
) -> (String, Usage, StopReason) {
    let started = Instant::now();
    let mut usage = Usage::default();
    let mut text = String::new();
    let mut matcher = StopMatcher::new(&request.stop);
    let mut rest = answer;
    let reason = loop {
        if cancel.is_cancelled() {
            break StopReason::Cancelled;
        }
        if rest.is_empty() {
            break StopReason::EndOfGeneration;
        }
        if usage.generated_tokens >= request.max_tokens {
            break StopReason::MaxTokens;
        }
        if request
            .time_limit
            .is_some_and(|limit| started.elapsed() >= limit)
        {
            break StopReason::TimeLimit;
        }
        let mut cut = rest.len().min(4);
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        if !per_token.is_zero() {
            std::thread::sleep(per_token);
        }
        usage.generated_tokens += 1;
        cancel.note_decoded();
        match matcher.push(piece) {
            StopOutcome::Continue(released) => {
                text.push_str(&released);
                let _ = events.send(GenerationEvent::Piece(released));
            }
            StopOutcome::Stopped(released) => {
                text.push_str(&released);
                let _ = events.send(GenerationEvent::Piece(released));
                usage.generation_time = started.elapsed();
                return (text, usage, StopReason::StopSequence);
            }
        }
    };
    if reason != StopReason::Cancelled {
        text.push_str(&matcher.finish());
    }
    usage.generation_time = started.elapsed();
    (text, usage, reason)
}
