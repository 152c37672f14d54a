//! Speculative decoding in the embedded backend, on the real test model. A draft is verified
//! in one batch; llama.cpp's batched kernels round differently from its one-token decode, so
//! at a near tie the greedy choice can differ from decoding without drafts (measured: 14 of
//! these 20 prompts come out byte for byte the same). What must hold at every edge is
//! tested here: the limits, stop sequences, grammars, the context's end and cancelling.

use std::sync::Arc;
use std::time::Duration;

use tierls::core::draft::DraftMode;
use tierls::core::generation::{GenerateRequest, Generation, Grammar, StopReason};
use tierls::models::embedded::{EmbeddedModel, EmbeddedOptions, test_model_path};
use tierls::models::{Cancel, GenerationEvent, Model, generate};

const LOOKUP: DraftMode = DraftMode::Lookup {
    max_tokens: 8,
    min_match: 2,
};

fn model(draft: DraftMode, n_ctx: u32) -> Arc<EmbeddedModel> {
    let options = EmbeddedOptions {
        n_ctx,
        threads: 2,
        draft,
        ..EmbeddedOptions::default()
    };
    Arc::new(EmbeddedModel::load(&test_model_path(), &options).expect("the test model loads"))
}

/// An executor-style prompt: a function shown, then asked back with a small change.
fn rewrite(name: &str, body: &str, change: &str) -> String {
    format!(
        "Here is a function:\n\n{body}\n\nRewrite `{name}` so that it {change}. Write the whole function:\n\n"
    )
}

fn prompts() -> Vec<GenerateRequest> {
    let area = "pub fn area(&self) -> f64 {\n    3.14 * self.radius * self.radius\n}";
    let total = "pub fn total_area(circles: &[Circle]) -> f64 {\n    let mut total = 0.0;\n    for circle in circles {\n        total += circle.area();\n    }\n    total\n}";
    let python = "def apply_discount(price, code):\n    if code == \"HALF\":\n        return price / 2\n    if code == \"TENTH\":\n        return price * 0.9\n    return price";
    let ts = "find(id: string): User | undefined {\n  for (const user of this.users) {\n    if (user.id === id) {\n      return user;\n    }\n  }\n  return undefined;\n}";
    let mut requests: Vec<GenerateRequest> = [
        rewrite("area", area, "uses std::f64::consts::PI"),
        rewrite("total_area", total, "sums with an iterator"),
        rewrite("apply_discount", python, "returns early for unknown codes"),
        rewrite("find", ts, "uses Array.prototype.find"),
        rewrite("total_area", total, "is documented"),
        format!("{total}\n\n{total}\n\n"),
        format!("{python}\n\n# The same, again:\n{python}\n"),
        "fn main() {\n    println!(\"hello\");\n    println!(\"hello\");\n    println!(\"".into(),
        "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,".into(),
        "The quick brown fox jumps over the lazy dog. The quick brown".into(),
        "// A function that adds two numbers.\nfn add(a: i32, b: i32) -> i32 {\n".into(),
        "def fib(n):\n".into(),
        "Once upon a time".into(),
        "SELECT name, email FROM users WHERE".into(),
        "import os\nimport sys\nimport".into(),
        "<ul>\n  <li>one</li>\n  <li>two</li>\n  <li>".into(),
    ]
    .into_iter()
    .map(|prompt| GenerateRequest::text(&prompt, 96))
    .collect();
    // A stop sequence the draft may run across.
    let mut stopped = GenerateRequest::text(format!("{total}\n\n{total}"), 96);
    stopped.stop = vec!["circle.area".into()];
    requests.push(stopped);
    // Fewer tokens allowed than a draft proposes.
    requests.push(GenerateRequest::text(format!("{area}\n\n{area}"), 3));
    // A grammar: a drafted token the grammar rejects ends the draft.
    requests.push(GenerateRequest {
        grammar: Some(Grammar::JsonSchema(
            r#"{"type":"object","properties":{"names":{"type":"array","maxItems":4,"items":{"type":"string","maxLength":12}}},"required":["names"]}"#.into(),
        )),
        ..GenerateRequest::text("{\"names\": [\"area\", \"area\", \"area\"]}\nThe same JSON again:\n", 64)
    });
    requests.push(GenerateRequest::text(
        rewrite("area", area, "is unchanged"),
        64,
    ));
    requests
}

/// Each prompt through a model of `draft`'s mode, one after another on one slot.
async fn answers(model: &EmbeddedModel, requests: &[GenerateRequest]) -> Vec<Generation> {
    let mut out = Vec::new();
    for request in requests {
        out.push(
            generate(model, 0, request.clone(), Cancel::new())
                .await
                .unwrap(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_drafting_keeps_every_limit_and_mostly_the_same_text() {
    let _turn = crate::support::one_model_at_a_time();
    let requests = prompts();
    let off = answers(&model(DraftMode::Off, 2048), &requests).await;
    let drafting = model(LOOKUP, 2048);
    let lookup = answers(&drafting, &requests).await;
    let (mut same, mut drafted, mut accepted) = (0, 0, 0);
    for ((request, off), lookup) in requests.iter().zip(&off).zip(&lookup) {
        drafted += lookup.usage.drafted_tokens;
        accepted += lookup.usage.accepted_tokens;
        same += usize::from(off.text == lookup.text);
        let shown = format!("{:?} ({:?})", lookup.text, lookup.stop_reason);
        assert!(
            lookup.usage.generated_tokens <= request.max_tokens,
            "{shown}"
        );
        assert!(
            lookup.usage.accepted_tokens <= lookup.usage.drafted_tokens,
            "{shown}"
        );
        for stop in &request.stop {
            assert!(!lookup.text.contains(stop.as_str()), "{shown}");
        }
        if request.grammar.is_some() && lookup.stop_reason == StopReason::EndOfGeneration {
            serde_json::from_str::<serde_json::Value>(&lookup.text)
                .unwrap_or_else(|err| panic!("{err}: {shown}"));
        }
    }
    // The stop sequence and the three-token limit end where no drafting ends.
    assert_eq!(lookup[16].stop_reason, StopReason::StopSequence);
    assert_eq!(
        (lookup[17].stop_reason, lookup[17].usage.generated_tokens),
        (StopReason::MaxTokens, 3)
    );
    assert!(
        same >= requests.len() / 2 && accepted > 0,
        "{same} of {} the same; drafted {drafted}, accepted {accepted}",
        requests.len()
    );
    // The model's own figures are the sum of its answers'.
    let stats = drafting.drafting().unwrap();
    assert_eq!(
        (stats.requests, stats.drafted, stats.accepted),
        (requests.len() as u64, drafted.into(), accepted.into())
    );
    assert_eq!(model(DraftMode::Off, 512).drafting(), None);
}

/// A copy-heavy prompt that fills a small context: drafts are cut to the room left, and the
/// answer ends at the context's end, as without drafting.
#[tokio::test]
async fn a_draft_never_runs_past_the_context() {
    let _turn = crate::support::one_model_at_a_time();
    let body = "    total += circle.area();\n".repeat(12);
    let prompt = format!("fn f() {{\n{body}}}\n\nfn g() {{\n{body}");
    let n_ctx = 256;
    let drafting = model(LOOKUP, n_ctx);
    let request = GenerateRequest::text(&prompt, 400);
    let generation = generate(&*drafting, 0, request, Cancel::new())
        .await
        .unwrap();
    assert_eq!(
        generation.stop_reason,
        StopReason::MaxTokens,
        "{generation:?}"
    );
    assert!(
        generation.usage.prompt_tokens + generation.usage.generated_tokens <= n_ctx,
        "{:?}",
        generation.usage
    );
    assert!(
        generation.usage.accepted_tokens > 0,
        "{:?}",
        generation.usage
    );
}

/// A cancel stops a drafting generation within one decode: a draft batch counts as one.
#[tokio::test]
async fn cancelling_stops_a_drafting_generation_within_one_batch() {
    let _turn = crate::support::one_model_at_a_time();
    let drafting = model(LOOKUP, 2048);
    let total = "pub fn total_area(circles: &[Circle]) -> f64 {\n    let mut total = 0.0;\n    for circle in circles {\n        total += circle.area();\n    }\n    total\n}";
    let cancel = Cancel::new();
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    drafting.submit(
        0,
        GenerateRequest::text(format!("{total}\n\n{total}\n\n{total}"), 400),
        cancel.clone(),
        sender,
    );
    let mut pieces = 0;
    let generation = loop {
        match tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            GenerationEvent::Piece(_) => {
                pieces += 1;
                if pieces == 3 {
                    cancel.cancel();
                }
            }
            GenerationEvent::Done(result) => break result.unwrap(),
        }
    };
    assert_eq!(
        generation.stop_reason,
        StopReason::Cancelled,
        "{generation:?}"
    );
    assert!(
        cancel.decoded_after_cancel() <= 1,
        "{} decodes after the cancel",
        cancel.decoded_after_cancel()
    );
}
