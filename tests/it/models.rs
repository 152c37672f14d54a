//! The embedded llama.cpp backend on the real test model (Gemma 3 270M, no FIM tokens).

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tierls::core::generation::{GenerateRequest, Generation, Grammar, Prompt, StopReason};
use tierls::models::embedded::{EmbeddedModel, EmbeddedOptions, test_model_path};
use tierls::models::{Cancel, GenerationEvent, Model, ModelError, generate};

fn options(n_ctx: u32) -> EmbeddedOptions {
    EmbeddedOptions {
        n_ctx,
        threads: 2,
        ..EmbeddedOptions::default()
    }
}

/// A model of its own, so that no other test touches its KV cache.
fn fresh_model(n_ctx: u32) -> EmbeddedModel {
    let path = test_model_path();
    assert!(
        path.exists(),
        "the test model is missing at {}: run tests/setup.sh",
        path.display()
    );
    EmbeddedModel::load(&path, &options(n_ctx)).expect("the test model loads")
}

/// One model shared by the tests that do not care about cache state (one slot each).
fn shared_model() -> Arc<EmbeddedModel> {
    static MODEL: OnceLock<Arc<EmbeddedModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = test_model_path();
            let options = EmbeddedOptions {
                slots: 4,
                ..options(2048)
            };
            Arc::new(EmbeddedModel::load(&path, &options).expect("the test model loads"))
        })
        .clone()
}

/// Runs one request and returns the streamed pieces with the result.
async fn run(
    model: &dyn Model,
    slot: usize,
    request: GenerateRequest,
) -> (Vec<String>, Result<Generation, ModelError>) {
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    model.submit(slot, request, Cancel::new(), sender);
    let mut pieces = Vec::new();
    while let Some(event) = events.recv().await {
        match event {
            GenerationEvent::Piece(piece) => pieces.push(piece),
            GenerationEvent::Done(result) => return (pieces, result),
        }
    }
    panic!("the worker ended without a result");
}

const CODE_PROMPT: &str = "// A function that adds two numbers.\nfn add(a: i32, b: i32) -> i32 {\n";

#[tokio::test]
async fn generates_and_streams_text() {
    let _turn = crate::support::one_model_at_a_time();
    let model = shared_model();
    let (pieces, result) = run(&*model, 0, GenerateRequest::text(CODE_PROMPT, 24)).await;
    let generation = result.unwrap();
    assert!(!generation.text.is_empty());
    assert_eq!(
        pieces.concat(),
        generation.text,
        "the stream adds up to the text"
    );
    assert!(matches!(
        generation.stop_reason,
        StopReason::MaxTokens | StopReason::EndOfGeneration
    ));
    assert!(generation.usage.generated_tokens >= 1 && generation.usage.generated_tokens <= 24);
    assert!(generation.usage.prompt_tokens > 10);
    assert!(!model.info().has_fim, "Gemma 3 270M has no FIM tokens");
}

#[tokio::test]
async fn a_follow_up_evaluates_only_the_new_tokens() {
    let _turn = crate::support::one_model_at_a_time();
    let model = fresh_model(2048);
    let prefix = CODE_PROMPT.repeat(20);
    let first = generate(
        &model,
        0,
        GenerateRequest::text(prefix.clone(), 4),
        Cancel::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        first.usage.evaluated_tokens, first.usage.prompt_tokens,
        "a cold cache evaluates everything"
    );

    let follow_up = format!("{prefix}    let sum = a + b;\n");
    let second = generate(
        &model,
        0,
        GenerateRequest::text(follow_up, 4),
        Cancel::new(),
    )
    .await
    .unwrap();
    let new_tokens = second.usage.prompt_tokens - first.usage.prompt_tokens;
    assert!(
        second.usage.evaluated_tokens <= new_tokens + 2,
        "evaluated {} of {} tokens; only about {new_tokens} are new",
        second.usage.evaluated_tokens,
        second.usage.prompt_tokens
    );

    // The same prompt again evaluates a single token (the last, for its logits).
    let same = format!("{prefix}    let sum = a + b;\n");
    let third = generate(&model, 0, GenerateRequest::text(same, 4), Cancel::new())
        .await
        .unwrap();
    assert_eq!(third.usage.evaluated_tokens, 1);
}

#[tokio::test]
async fn stops_before_a_stop_sequence() {
    let _turn = crate::support::one_model_at_a_time();
    // Two fresh models decode the prompt in the same pieces, so greedy output is identical.
    let free = generate(
        &fresh_model(512),
        0,
        GenerateRequest::text(CODE_PROMPT, 32),
        Cancel::new(),
    )
    .await
    .unwrap();
    let chars: Vec<char> = free.text.chars().collect();
    assert!(chars.len() > 6, "need some text to cut: {:?}", free.text);
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let expected = &free.text[..free.text.find(&stop).unwrap()];

    let request = GenerateRequest {
        stop: vec![stop.clone()],
        ..GenerateRequest::text(CODE_PROMPT, 32)
    };
    let stopped = generate(&fresh_model(512), 0, request, Cancel::new())
        .await
        .unwrap();
    assert_eq!(
        stopped.stop_reason,
        StopReason::StopSequence,
        "stop {stop:?} in {:?}",
        free.text
    );
    assert_eq!(stopped.text, expected);
}

#[tokio::test]
async fn cancelling_stops_within_one_token() {
    let _turn = crate::support::one_model_at_a_time();
    let model = shared_model();
    let cancel = Cancel::new();
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    model.submit(
        1,
        GenerateRequest::text(CODE_PROMPT, 500),
        cancel.clone(),
        sender,
    );
    let mut pieces_at_cancel = None;
    let mut pieces = 0u32;
    let generation = loop {
        match events.recv().await.unwrap() {
            GenerationEvent::Piece(_) => {
                pieces += 1;
                if pieces == 3 {
                    cancel.cancel();
                    pieces_at_cancel = Some(pieces);
                }
            }
            GenerationEvent::Done(result) => break result.unwrap(),
        }
    };
    assert_eq!(generation.stop_reason, StopReason::Cancelled);
    let at_cancel = pieces_at_cancel.expect("three pieces before the end");
    assert!(
        generation.usage.generated_tokens <= at_cancel + 1,
        "{} tokens after cancelling at {at_cancel}",
        generation.usage.generated_tokens
    );
}

#[tokio::test]
async fn a_time_limit_ends_generation() {
    let _turn = crate::support::one_model_at_a_time();
    let model = shared_model();
    let request = GenerateRequest {
        time_limit: Some(Duration::from_millis(50)),
        ..GenerateRequest::text(CODE_PROMPT, 2000)
    };
    let generation = generate(&*model, 2, request, Cancel::new()).await.unwrap();
    assert!(
        matches!(
            generation.stop_reason,
            StopReason::TimeLimit | StopReason::EndOfGeneration
        ),
        "{generation:?}"
    );
    assert!(generation.usage.generated_tokens < 2000);
}

#[tokio::test]
async fn a_json_schema_keeps_even_the_small_model_well_formed() {
    let _turn = crate::support::one_model_at_a_time();
    let model = shared_model();
    let schema = r#"{"type":"object","properties":{"steps":{"type":"array","maxItems":3,"items":{"type":"string","maxLength":24}}},"required":["steps"],"additionalProperties":false}"#;
    let request = GenerateRequest {
        grammar: Some(Grammar::JsonSchema(schema.into())),
        heal: false,
        ..GenerateRequest::text("A plan to rename the function add to sum, as JSON:\n", 400)
    };
    let generation = generate(&*model, 3, request, Cancel::new()).await.unwrap();
    let plan: serde_json::Value = serde_json::from_str(&generation.text)
        .unwrap_or_else(|err| panic!("{err}: {:?}", generation.text));
    let steps = plan["steps"].as_array().expect("steps is an array");
    assert!(
        steps.len() <= 3
            && steps
                .iter()
                .all(|s| s.as_str().is_some_and(|s| s.chars().count() <= 24)),
        "{plan}"
    );
}

#[tokio::test]
async fn a_gbnf_grammar_constrains_the_answer() {
    let _turn = crate::support::one_model_at_a_time();
    let model = shared_model();
    let request = GenerateRequest {
        grammar: Some(Grammar::Gbnf(r#"root ::= "yes" | "no""#.into())),
        heal: false,
        ..GenerateRequest::text("Is the sky blue? Answer: ", 8)
    };
    let generation = generate(&*model, 0, request, Cancel::new()).await.unwrap();
    assert!(
        ["yes", "no"].contains(&generation.text.as_str()),
        "{:?}",
        generation.text
    );
}

#[tokio::test]
async fn fill_in_the_middle_falls_back_to_the_prefix_without_fim_tokens() {
    let _turn = crate::support::one_model_at_a_time();
    let model = shared_model();
    let request = GenerateRequest {
        prompt: Prompt::Fim {
            prefix: CODE_PROMPT.into(),
            suffix: "}\n".into(),
            context: Default::default(),
        },
        ..GenerateRequest::text("", 4)
    };
    let fim = generate(&*model, 1, request, Cancel::new()).await.unwrap();
    let plain = generate(
        &*model,
        2,
        GenerateRequest::text(CODE_PROMPT, 4),
        Cancel::new(),
    )
    .await
    .unwrap();
    assert!(!fim.usage.used_fim);
    assert_eq!(fim.usage.prompt_tokens, plain.usage.prompt_tokens);
}

/// Bad inputs: each is an error value that names the file or the limit.
fn check_error(result: Result<impl std::fmt::Debug, ModelError>, dir: &Path) -> String {
    let err = result.expect_err("an error");
    err.to_string()
        .replace(&dir.display().to_string(), "$DIR")
        .replace(&test_model_path().display().to_string(), "$MODEL")
}

#[tokio::test]
async fn bad_models_and_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let not_gguf = dir.path().join("notes.gguf");
    std::fs::write(&not_gguf, "just text, not a model\n").unwrap();
    let truncated = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(test_model_path()).unwrap();
    std::fs::write(&truncated, &bytes[..1024 * 1024]).unwrap();
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, "").unwrap();

    let model = shared_model();
    let long_prompt = "word ".repeat(3000);
    let mut shown = vec![
        check_error(
            EmbeddedModel::load(&dir.path().join("missing.gguf"), &options(512)).map(|_| ()),
            dir.path(),
        ),
        check_error(
            EmbeddedModel::load(&not_gguf, &options(512)).map(|_| ()),
            dir.path(),
        ),
        check_error(
            EmbeddedModel::load(&empty, &options(512)).map(|_| ()),
            dir.path(),
        ),
        check_error(
            EmbeddedModel::load(&truncated, &options(512)).map(|_| ()),
            dir.path(),
        ),
        check_error(
            EmbeddedModel::load(&test_model_path(), &options(100_000)).map(|_| ()),
            dir.path(),
        ),
    ];
    for request in [
        GenerateRequest::text(long_prompt, 8),
        GenerateRequest {
            grammar: Some(Grammar::Gbnf("root ::= (".into())),
            heal: false,
            ..GenerateRequest::text("x", 8)
        },
        GenerateRequest {
            grammar: Some(Grammar::JsonSchema("{not json".into())),
            heal: false,
            ..GenerateRequest::text("x", 8)
        },
    ] {
        shown.push(check_error(
            generate(&*model, 0, request, Cancel::new()).await,
            dir.path(),
        ));
    }
    // The model still serves after all of that.
    let after = generate(
        &*model,
        0,
        GenerateRequest::text(CODE_PROMPT, 2),
        Cancel::new(),
    )
    .await
    .unwrap();
    assert!(after.usage.generated_tokens >= 1);
    insta::assert_snapshot!("bad_models", shown.join("\n"));
}

#[test]
fn loading_reports_progress_and_can_be_cancelled() {
    let fractions = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = fractions.clone();
    let model = EmbeddedModel::load_with(
        &test_model_path(),
        &options(512),
        &Cancel::new(),
        move |fraction| seen.lock().unwrap().push(fraction),
    );
    assert!(model.is_ok());
    let fractions = fractions.lock().unwrap();
    assert!(
        fractions.len() > 1 && fractions.last() == Some(&1.0),
        "{fractions:?}"
    );

    let cancel = Cancel::new();
    cancel.cancel();
    let err = EmbeddedModel::load_with(&test_model_path(), &options(512), &cancel, |_| {})
        .err()
        .unwrap();
    assert!(matches!(err, ModelError::LoadCancelled { .. }), "{err}");
    assert!(
        err.to_string()
            .ends_with("gemma-3-270m-q4_k_m.gguf: loading was cancelled"),
        "{err}"
    );
}

#[tokio::test]
async fn chat_prompts_use_the_models_template_or_say_it_has_none() {
    let _turn = crate::support::one_model_at_a_time();
    let model = shared_model();
    let messages = vec![
        tierls::core::generation::ChatMessage::new("system", "You answer in one word."),
        tierls::core::generation::ChatMessage::new("user", "Name a colour."),
    ];
    // The test model is a base model: no template of its own.
    let request = GenerateRequest {
        prompt: Prompt::Chat(messages.clone()),
        ..GenerateRequest::text("", 4)
    };
    let err = generate(&*model, 0, request, Cancel::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ModelError::NoChatTemplate { .. }), "{err}");
    // llama.cpp's built-in Gemma template renders the same conversation.
    let rendered = model.render_chat(&messages, Some("gemma")).unwrap();
    insta::assert_snapshot!("gemma_chat", rendered);
}
