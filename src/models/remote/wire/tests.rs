use super::*;
use crate::core::generation::{ChatMessage, ContextChunk, FimContext};

fn request(prompt: Prompt, grammar: Option<Grammar>) -> GenerateRequest {
    GenerateRequest {
        prompt,
        max_tokens: 32,
        stop: vec!["\n".to_owned()],
        time_limit: None,
        grammar,
        heal: false,
    }
}

fn chat() -> Prompt {
    Prompt::Chat(vec![
        ChatMessage::new("user", "Write a function."),
        ChatMessage::new("assistant", "```rust\n"),
    ])
}

/// Each endpoint's request, as `POST path` and the pretty JSON body.
fn check_body(
    api: NodeApi,
    prompt: Prompt,
    grammar: Option<Grammar>,
    rendered: Option<&str>,
    infill: bool,
) -> String {
    let wire = request_body(
        api,
        Some("coder"),
        &request(prompt, grammar),
        Some(SlotPin(1)),
        rendered,
        infill,
    );
    format!(
        "POST {}\n{}",
        wire.path,
        serde_json::to_string_pretty(&wire.body).unwrap()
    )
}

#[test]
fn request_bodies() {
    let fim = || Prompt::Fim {
        prefix: "fn main() {".into(),
        suffix: "}".into(),
        context: FimContext {
            comments: "// Context from the workspace:\n// src/shapes.rs: fn area(r: f64) -> f64\n"
                .into(),
            chunks: vec![ContextChunk {
                path: "src/shapes.rs".into(),
                text: "fn area(r: f64) -> f64\n".into(),
            }],
        },
    };
    let schema = || Some(Grammar::JsonSchema(r#"{"type":"object"}"#.into()));
    let shown = [
        check_body(
            NodeApi::LlamaServer,
            Prompt::Text("let x =".into()),
            None,
            None,
            true,
        ),
        check_body(NodeApi::LlamaServer, fim(), None, None, true),
        check_body(NodeApi::LlamaServer, fim(), None, None, false),
        check_body(
            NodeApi::LlamaServer,
            chat(),
            schema(),
            Some("<user>Write a function.<model>"),
            true,
        ),
        check_body(
            NodeApi::LlamaServer,
            Prompt::Text("x".into()),
            Some(Grammar::Gbnf("root ::= \"a\"".into())),
            None,
            true,
        ),
        check_body(
            NodeApi::Openai,
            Prompt::Text("let x =".into()),
            None,
            None,
            true,
        ),
        check_body(NodeApi::Openai, fim(), None, None, true),
        check_body(NodeApi::Openai, chat(), schema(), None, true),
    ]
    .join("\n\n");
    insta::assert_snapshot!(shown);
}

#[test]
fn the_template_gets_the_conversation_without_the_answer_prefill() {
    let Prompt::Chat(messages) = chat() else {
        unreachable!()
    };
    assert_eq!(
        template_body(&messages),
        json!({ "messages": [{ "role": "user", "content": "Write a function." }] })
    );
    assert_eq!(
        rendered_prompt(br#"{"prompt":"<p>"}"#),
        Ok("<p>".to_owned())
    );
    assert!(
        rendered_prompt(b"{oops")
            .unwrap_err()
            .contains("malformed JSON")
    );
    assert!(
        rendered_prompt(b"{}")
            .unwrap_err()
            .contains("without a `prompt`")
    );
}

#[test]
fn a_continuation_starts_where_the_failed_node_stopped() {
    let text = continuation(&request(Prompt::Text("a".into()), None), "bc", 2);
    assert_eq!(
        (text.prompt, text.max_tokens),
        (Prompt::Text("abc".into()), 30)
    );
    let fim = continuation(
        &request(
            Prompt::Fim {
                prefix: "a".into(),
                suffix: "z".into(),
                context: FimContext::default(),
            },
            None,
        ),
        "b",
        40,
    );
    assert_eq!(
        (fim.prompt, fim.max_tokens),
        (
            Prompt::Fim {
                prefix: "ab".into(),
                suffix: "z".into(),
                context: FimContext::default(),
            },
            1
        )
    );
    let Prompt::Chat(messages) = continuation(&request(chat(), None), "fn f", 1).prompt else {
        unreachable!()
    };
    assert_eq!(messages.last().unwrap().content, "```rust\nfn f");
    let asked = Prompt::Chat(vec![ChatMessage::new("user", "hi")]);
    let Prompt::Chat(messages) = continuation(&request(asked, None), "hel", 1).prompt else {
        unreachable!()
    };
    assert_eq!(
        messages.last().unwrap(),
        &ChatMessage::new("assistant", "hel")
    );
}

/// Feeds `parts` to a decoder; shows each event, or the error that stopped it.
fn check_sse(parts: &[&[u8]]) -> String {
    let mut decoder = SseDecoder::new(64);
    let mut shown = Vec::new();
    for part in parts {
        match decoder.push(part) {
            Ok(events) => shown.extend(events.into_iter().map(|e| format!("event {e:?}"))),
            Err(err) => {
                shown.push(format!("error: {err}"));
                return shown.join("\n");
            }
        }
    }
    if let Some(rest) = decoder.finish() {
        shown.push(format!("last {rest:?}"));
    }
    shown.join("\n")
}

#[test]
fn server_sent_events() {
    let shown = [
        (
            "split across chunks",
            check_sse(&[b"data: {\"a\"", b":1}\n", b"\ndata: [DONE]\n\n"]),
        ),
        (
            "crlf, comments and other fields",
            check_sse(&[b": keep-alive\r\nevent: x\r\ndata: 1\r\n\r\n"]),
        ),
        (
            "two data lines make one event",
            check_sse(&[b"data: a\ndata: b\n\n"]),
        ),
        (
            "a last event without its blank line",
            check_sse(&[b"data: 1\n\ndata: 2"]),
        ),
        ("not an event field", check_sse(&[b"<html>oops</html>\n"])),
        ("an endless line", check_sse(&[&[b'x'; 100]])),
        ("not UTF-8", check_sse(&[b"data: \xff\n\n"])),
    ]
    .map(|(case, shown)| format!("{case}:\n{shown}"))
    .join("\n\n");
    insta::assert_snapshot!(shown);
}

fn check_chunk(api: NodeApi, data: &str) -> String {
    match parse_chunk(api, data) {
        Ok(Some(chunk)) => format!("{chunk:?}"),
        Ok(None) => "end".to_owned(),
        Err(err) => format!("error: {err}"),
    }
}

#[test]
fn streamed_chunks() {
    use NodeApi::{LlamaServer, Openai};
    let shown = [
        check_chunk(LlamaServer, r#"{"content":"fn","stop":false}"#),
        check_chunk(
            LlamaServer,
            r#"{"content":"","stop":true,"stop_type":"eos","tokens_evaluated":12,"timings":{"prompt_n":3,"predicted_n":7}}"#,
        ),
        check_chunk(LlamaServer, r#"{"content":"","stop":true,"stop_type":"limit"}"#),
        check_chunk(LlamaServer, r#"{"content":7}"#),
        check_chunk(Openai, r#"{"choices":[{"text":"fn","finish_reason":null}]}"#),
        check_chunk(Openai, r#"{"choices":[{"delta":{"content":"x"},"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":9}}"#),
        check_chunk(Openai, "[DONE]"),
        check_chunk(Openai, r#"{"error":{"message":"model not found"}}"#),
        check_chunk(Openai, r#"{"id":1}"#),
        check_chunk(Openai, "{not json"),
    ]
    .join("\n");
    insta::assert_snapshot!(shown);
}

#[test]
fn error_answers_metrics_and_slots() {
    assert_eq!(
        error_message(500, br#"{"error":{"message":"boom"}}"#),
        "HTTP 500: boom"
    );
    assert_eq!(error_message(502, b""), "HTTP 502");
    assert_eq!(error_message(404, b"Not Found\n"), "HTTP 404: Not Found");
    let metrics = parse_metrics(
        "# HELP x\nllamacpp:requests_processing 2\nllamacpp:requests_deferred 1\nllamacpp:predicted_tokens_seconds 81.5\nother 3\nbroken\n",
    );
    assert_eq!(
        metrics,
        NodeMetrics {
            requests_processing: Some(2.0),
            requests_deferred: Some(1.0),
            tokens_per_second: Some(81.5),
        }
    );
    assert_eq!(
        parse_slots(br#"[{"id":0,"is_processing":true},{"id":1,"is_processing":false}]"#),
        Some((1, 2))
    );
    assert_eq!(parse_slots(b"{}"), None);
    assert_eq!(
        parse_context(br#"{"default_generation_settings":{"n_ctx":2048},"total_slots":2}"#),
        Some(2048)
    );
    assert_eq!(parse_context(b"[]"), None);
}

/// Token healing: on llama-server the half-typed word comes off the prompt (or the infill
/// prefix) and a grammar makes the answer start with it; the OpenAI dialect and a request
/// with its own grammar go as they are.
#[test]
fn healed_request_bodies() {
    let healed = |api, prompt: Prompt, grammar: Option<Grammar>, infill| {
        let request = GenerateRequest {
            heal: true,
            ..request(prompt, grammar)
        };
        let wire = request_body(api, None, &request, None, None, infill);
        format!(
            "POST {} (hidden {})\n{}",
            wire.path,
            wire.hidden,
            serde_json::to_string_pretty(&wire.body).unwrap()
        )
    };
    let fim = || Prompt::Fim {
        prefix: "let total = naïve_to".into(),
        suffix: ";\n".into(),
        context: FimContext::default(),
    };
    let text = || Prompt::Text("x = apply_disc".into());
    let shown = [
        healed(NodeApi::LlamaServer, text(), None, false),
        healed(NodeApi::LlamaServer, fim(), None, true),
        healed(
            NodeApi::LlamaServer,
            Prompt::Text("apply_disc".into()),
            None,
            false,
        ),
        healed(
            NodeApi::LlamaServer,
            text(),
            Some(Grammar::Gbnf("root ::= \"a\"".into())),
            false,
        ),
        healed(NodeApi::Openai, text(), None, false),
    ]
    .join("\n\n");
    insta::assert_snapshot!(shown);
}

#[test]
fn a_continuation_after_a_healed_word_does_not_heal_again() {
    let request = GenerateRequest {
        heal: true,
        ..request(Prompt::Text("x = apply_disc".into()), None)
    };
    let next = continuation(&request, "ount(", 2);
    assert!(!next.heal);
    assert_eq!(next.prompt, Prompt::Text("x = apply_discount(".into()));
}
