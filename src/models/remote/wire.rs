//! What goes over the wire to an inference server and how its streamed answer is read:
//! request bodies for each endpoint, server-sent events, and the chunks inside them. Pure
//! functions of their input, so every malformed answer has a test without a server.

use serde_json::{Value, json};

use crate::config::NodeApi;
use crate::core::generation::{ChatMessage, GenerateRequest, Grammar, Prompt};

/// One HTTP request: the path under the node's base URL and the JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct WireRequest {
    pub path: &'static str,
    pub body: Value,
    /// Bytes the answer starts with that are not the answer: the word token healing took
    /// off the prompt, which the node writes again.
    pub hidden: usize,
}

/// Tokens allowed on top of the answer's for the healed word written again.
pub const HEALED_TOKENS: u32 = 4;

/// At most this much of a half-typed word is healed on a node.
const MAX_HEALED_BYTES: usize = 48;

/// Token healing on llama-server: the half-typed word at the prompt's end comes off, and a
/// grammar makes the answer start with it, so the model finishes the word in its own
/// tokens. The OpenAI dialect has no grammar (vLLM's `guided_regex` and Ollama's formats
/// are not the same across servers): a node speaking it gets the prompt as it is.
fn healed_word(api: NodeApi, request: &GenerateRequest) -> Option<String> {
    if api != NodeApi::LlamaServer || !request.heal || request.grammar.is_some() {
        return None;
    }
    let text = match &request.prompt {
        Prompt::Text(text) => text.as_str(),
        Prompt::Fim { prefix, .. } => prefix.as_str(),
        Prompt::Chat(_) => return None,
    };
    let word: String = text
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (!word.is_empty() && word.len() <= MAX_HEALED_BYTES && word.len() < text.len()).then_some(word)
}

/// A GBNF grammar whose answers start with `word` and go on freely.
fn starting_with(word: &str) -> String {
    let escaped: String = word
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_string()
            } else {
                format!("\\U{:08X}", c as u32)
            }
        })
        .collect();
    format!("root ::= \"{escaped}\" .*")
}

/// Where a node's KV cache for this request lives: llama-server keeps a slot's cache, so a
/// document pinned to a slot reuses its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotPin(pub usize);

/// The request for `request` on a node speaking `api`. `rendered` is the chat rendered by
/// llama-server's own template (`/apply-template`), when the node is llama-server and the
/// prompt is a chat; the answer's prefill is appended to it here.
pub fn request_body(
    api: NodeApi,
    model: Option<&str>,
    request: &GenerateRequest,
    pin: Option<SlotPin>,
    rendered: Option<&str>,
    infill: bool,
) -> WireRequest {
    let healed = healed_word(api, request);
    let cut = |text: &str| match &healed {
        Some(word) => text[..text.len() - word.len()].to_owned(),
        None => text.to_owned(),
    };
    let mut wire = match (api, &request.prompt) {
        // Repository-level FIM: llama-server places each file's chunk with the model's own
        // file-separator tokens.
        (
            NodeApi::LlamaServer,
            Prompt::Fim {
                prefix,
                suffix,
                context,
            },
        ) if infill => WireRequest {
            path: "/infill",
            hidden: 0,
            body: json!({
                "input_prefix": cut(prefix),
                "input_suffix": suffix,
                "input_extra": context.chunks.iter()
                    .map(|chunk| json!({ "filename": chunk.path, "text": chunk.text }))
                    .collect::<Vec<_>>(),
            }),
        },
        (NodeApi::LlamaServer, prompt) => WireRequest {
            path: "/completion",
            hidden: 0,
            body: json!({ "prompt": cut(&llama_prompt(prompt, rendered)) }),
        },
        (NodeApi::Openai, Prompt::Chat(messages)) => WireRequest {
            path: "/v1/chat/completions",
            hidden: 0,
            body: json!({ "messages": openai_messages(messages) }),
        },
        (NodeApi::Openai, Prompt::Text(text)) => WireRequest {
            path: "/v1/completions",
            hidden: 0,
            body: json!({ "prompt": text }),
        },
        // Without `/infill`, fill in the middle continues the prefix, as the embedded
        // backend does for models without FIM tokens.
        (
            NodeApi::Openai,
            Prompt::Fim {
                prefix, context, ..
            },
        ) => WireRequest {
            path: "/v1/completions",
            hidden: 0,
            body: json!({ "prompt": context.before(prefix) }),
        },
    };
    let body = wire.body.as_object_mut().expect("bodies are objects");
    body.insert("stream".into(), json!(true));
    if !request.stop.is_empty() {
        body.insert("stop".into(), json!(request.stop));
    }
    match api {
        NodeApi::LlamaServer => {
            body.insert("n_predict".into(), json!(request.max_tokens));
            body.insert("cache_prompt".into(), json!(true));
            body.insert("temperature".into(), json!(0.0));
            if let Some(SlotPin(slot)) = pin {
                body.insert("id_slot".into(), json!(slot));
            }
            match &request.grammar {
                Some(Grammar::Gbnf(gbnf)) => {
                    body.insert("grammar".into(), json!(gbnf));
                }
                Some(Grammar::JsonSchema(schema)) => {
                    body.insert("json_schema".into(), parse_schema(schema));
                }
                None => {
                    if let Some(word) = &healed {
                        body.insert("grammar".into(), json!(starting_with(word)));
                        // The word written again takes tokens of its own.
                        body.insert(
                            "n_predict".into(),
                            json!(request.max_tokens + HEALED_TOKENS),
                        );
                        wire.hidden = word.len();
                    }
                }
            }
        }
        NodeApi::Openai => {
            body.insert("max_tokens".into(), json!(request.max_tokens));
            body.insert("temperature".into(), json!(0.0));
            if let Some(model) = model {
                body.insert("model".into(), json!(model));
            }
            // The OpenAI API has JSON schemas (vLLM and Ollama honour them) but no GBNF;
            // a GBNF request goes without and the answer is checked by its reader.
            if let Some(Grammar::JsonSchema(schema)) = &request.grammar {
                body.insert(
                    "response_format".into(),
                    json!({ "type": "json_schema",
                            "json_schema": { "name": "answer", "strict": true,
                                             "schema": parse_schema(schema) } }),
                );
            }
        }
    }
    wire
}

fn parse_schema(schema: &str) -> Value {
    serde_json::from_str(schema).unwrap_or_else(|_| json!({}))
}

fn llama_prompt(prompt: &Prompt, rendered: Option<&str>) -> String {
    match prompt {
        Prompt::Text(text) => text.clone(),
        Prompt::Fim {
            prefix, context, ..
        } => context.before(prefix),
        Prompt::Chat(messages) => {
            let prefill = match messages.last() {
                Some(last) if last.role == "assistant" => last.content.as_str(),
                _ => "",
            };
            format!("{}{prefill}", rendered.unwrap_or_default())
        }
    }
}

/// The conversation llama-server's `/apply-template` renders: all but a trailing assistant
/// message, which is the answer's start and is appended after the generation prompt.
pub fn template_body(messages: &[ChatMessage]) -> Value {
    let asked = match messages.last() {
        Some(last) if last.role == "assistant" => &messages[..messages.len() - 1],
        _ => messages,
    };
    json!({ "messages": openai_messages(asked) })
}

fn openai_messages(messages: &[ChatMessage]) -> Value {
    messages
        .iter()
        .map(|message| json!({ "role": message.role, "content": message.content }))
        .collect()
}

/// The rendered prompt in `/apply-template`'s answer.
pub fn rendered_prompt(answer: &[u8]) -> Result<String, String> {
    let value: Value = serde_json::from_slice(answer)
        .map_err(|err| format!("`/apply-template` answered malformed JSON ({err})"))?;
    value["prompt"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "`/apply-template` answered without a `prompt`".to_owned())
}

/// The request continued after `generated` was already streamed by a node that then
/// failed: another node picks up where it stopped.
pub fn continuation(request: &GenerateRequest, generated: &str, pieces: u32) -> GenerateRequest {
    let mut next = request.clone();
    next.max_tokens = request.max_tokens.saturating_sub(pieces).max(1);
    if generated.is_empty() {
        return next;
    }
    // The half-typed word was written again already: the prompt goes on from the answer.
    next.heal = false;
    next.prompt = match &request.prompt {
        Prompt::Text(text) => Prompt::Text(format!("{text}{generated}")),
        Prompt::Fim {
            prefix,
            suffix,
            context,
        } => Prompt::Fim {
            prefix: format!("{prefix}{generated}"),
            suffix: suffix.clone(),
            context: context.clone(),
        },
        Prompt::Chat(messages) => {
            let mut messages = messages.clone();
            match messages.last_mut() {
                Some(last) if last.role == "assistant" => last.content.push_str(generated),
                _ => messages.push(ChatMessage::new("assistant", generated)),
            }
            Prompt::Chat(messages)
        }
    };
    next
}

/// Splits a byte stream into server-sent events' `data` fields. A line longer than the
/// limit is an error: a node that streams one endless line is broken, not slow.
#[derive(Debug)]
pub struct SseDecoder {
    buffer: Vec<u8>,
    data: String,
    max_line: usize,
}

impl SseDecoder {
    pub fn new(max_line: usize) -> Self {
        SseDecoder {
            buffer: Vec::new(),
            data: String::new(),
            max_line,
        }
    }

    /// Feeds bytes; returns the events they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = std::str::from_utf8(&line)
                .map_err(|_| "the event stream is not UTF-8".to_owned())?
                .trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(std::mem::take(&mut self.data));
                }
            } else if let Some(data) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(data.strip_prefix(' ').unwrap_or(data));
            } else if line.starts_with(':')
                || line.starts_with("event:")
                || line.starts_with("id:")
                || line.starts_with("retry:")
            {
                // Comments (keep-alives) and fields tierls does not use.
            } else {
                return Err(format!(
                    "the event stream has a line that is not an event field: `{}`",
                    line.chars().take(80).collect::<String>()
                ));
            }
        }
        if self.buffer.len() > self.max_line {
            return Err(format!(
                "the event stream has a line longer than {} bytes",
                self.max_line
            ));
        }
        Ok(events)
    }

    /// What is left when the stream ends: a last event without its blank line.
    pub fn finish(&mut self) -> Option<String> {
        if !self.buffer.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buffer)).into_owned();
            if let Some(data) = rest.trim_end().strip_prefix("data:") {
                self.data.push_str(data.trim_start());
            }
        }
        (!self.data.is_empty()).then(|| std::mem::take(&mut self.data))
    }
}

/// One streamed chunk of an answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    pub text: String,
    /// Set on the last chunk: `stop`, `length`, `eos`, `limit`…
    pub finish: Option<Finish>,
    pub prompt_tokens: Option<u32>,
    /// Prompt tokens the node evaluated (the rest came from its cache).
    pub evaluated_tokens: Option<u32>,
    pub generated_tokens: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// End of generation or a stop sequence.
    Stop,
    /// The token limit.
    Length,
}

/// Reads one event's data. `[DONE]` ends OpenAI streams: `Ok(None)`.
pub fn parse_chunk(api: NodeApi, data: &str) -> Result<Option<Chunk>, String> {
    if data.trim() == "[DONE]" {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(data).map_err(|err| {
        format!(
            "a streamed event is not JSON ({err}): `{}`",
            data.chars().take(80).collect::<String>()
        )
    })?;
    if let Some(error) = value.get("error") {
        let message = error["message"].as_str().unwrap_or("no message");
        return Err(format!("the node reported an error: {message}"));
    }
    let text_of = |v: &Value| v.as_str().map(str::to_owned);
    match api {
        NodeApi::LlamaServer if value.get("content").is_some() => {
            let content =
                text_of(&value["content"]).ok_or("a streamed event's `content` is not a string")?;
            let done = value["stop"].as_bool().unwrap_or(false);
            let finish = done.then(|| {
                if value["stop_type"] == "limit" || value["truncated"] == true {
                    Finish::Length
                } else {
                    Finish::Stop
                }
            });
            let timings = &value["timings"];
            Ok(Some(Chunk {
                text: content,
                finish,
                prompt_tokens: value["tokens_evaluated"].as_u64().map(|n| n as u32),
                evaluated_tokens: timings["prompt_n"].as_u64().map(|n| n as u32),
                generated_tokens: timings["predicted_n"]
                    .as_u64()
                    .or(value["tokens_predicted"].as_u64())
                    .map(|n| n as u32),
            }))
        }
        _ => {
            let choice = value["choices"]
                .get(0)
                .ok_or("a streamed event has neither `choices` nor `content`")?;
            let text = text_of(&choice["text"])
                .or_else(|| text_of(&choice["delta"]["content"]))
                .unwrap_or_default();
            let finish = match choice["finish_reason"].as_str() {
                None => None,
                Some("length") => Some(Finish::Length),
                Some(_) => Some(Finish::Stop),
            };
            let usage = &value["usage"];
            Ok(Some(Chunk {
                text,
                finish,
                prompt_tokens: usage["prompt_tokens"].as_u64().map(|n| n as u32),
                evaluated_tokens: None,
                generated_tokens: usage["completion_tokens"].as_u64().map(|n| n as u32),
            }))
        }
    }
}

/// What a node's error answer says, for the message the user sees.
pub fn error_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .or(v["error"].as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| text.trim().to_owned());
    if message.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {message}")
    }
}

/// The load figures llama-server's `/metrics` (Prometheus text) reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeMetrics {
    pub requests_processing: Option<f64>,
    pub requests_deferred: Option<f64>,
    pub tokens_per_second: Option<f64>,
}

pub fn parse_metrics(text: &str) -> NodeMetrics {
    let mut metrics = NodeMetrics::default();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        match name {
            "llamacpp:requests_processing" => metrics.requests_processing = Some(value),
            "llamacpp:requests_deferred" => metrics.requests_deferred = Some(value),
            "llamacpp:predicted_tokens_seconds" => metrics.tokens_per_second = Some(value),
            _ => {}
        }
    }
    metrics
}

/// The context per slot in llama-server's `/props`.
pub fn parse_context(answer: &[u8]) -> Option<u32> {
    let props: Value = serde_json::from_slice(answer).ok()?;
    let n_ctx = props["default_generation_settings"]["n_ctx"]
        .as_u64()
        .or(props["n_ctx"].as_u64())?;
    u32::try_from(n_ctx).ok()
}

/// How many of llama-server's slots (`/slots`) are busy, and how many there are.
pub fn parse_slots(answer: &[u8]) -> Option<(usize, usize)> {
    let slots: Vec<Value> = serde_json::from_slice(answer).ok()?;
    let busy = slots
        .iter()
        .filter(|slot| slot["is_processing"].as_bool().unwrap_or(false))
        .count();
    Some((busy, slots.len()))
}

#[cfg(test)]
mod tests;
