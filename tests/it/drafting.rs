//! Speculative decoding in the embedded backend, on the real test model, drafting by prompt
//! lookup and with a draft model (the test model drafting for itself: the mechanics, not the
//! speed). A draft is verified in one batch; llama.cpp's batched kernels round differently
//! from its one-token decode, so at a near tie the greedy choice can differ from decoding
//! without drafts (measured: 14 of these 20 prompts come out byte for byte the same with
//! lookup). What must hold at every edge is tested here: the limits, stop sequences,
//! grammars, the context's end, cancelling, and a draft model that differs, is busy, or goes.

use std::sync::Arc;
use std::time::Duration;

use tierls::config::{DraftKind, Tier, TierConfig};
use tierls::core::draft::DraftMode;
use tierls::core::generation::{GenerateRequest, Generation, Grammar, StopReason};
use tierls::models::embedded::{EmbeddedModel, EmbeddedOptions, test_model_path};
use tierls::models::tiers::TierSet;
use tierls::models::{Cancel, GenerationEvent, Model, generate, machine};

const LOOKUP: DraftMode = DraftMode::Lookup {
    max_tokens: 8,
    min_match: 2,
};

const MODEL: DraftMode = DraftMode::Model { max_tokens: 8 };

/// A model drafting with `draft`; with [`MODEL`], the test model loaded a second time drafts
/// for it (returned too, to keep it loaded).
fn drafting_model(
    draft: DraftMode,
    n_ctx: u32,
) -> (Arc<EmbeddedModel>, Option<Arc<EmbeddedModel>>) {
    let target = model(draft, n_ctx);
    if draft != MODEL {
        return (target, None);
    }
    let fast = model(DraftMode::Off, n_ctx);
    target.set_drafter(Some(fast.as_drafter()));
    (target, Some(fast))
}

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
    let total = TOTAL;
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

/// The answers of `draft`'s mode keep every limit of their requests and mostly match the
/// answers without drafting; the model's own figures are the sum of its answers'.
async fn check_limits_and_sameness(draft: DraftMode) {
    let requests = prompts();
    let off = answers(&model(DraftMode::Off, 2048), &requests).await;
    let (drafting, _fast) = drafting_model(draft, 2048);
    let drafted_answers = answers(&drafting, &requests).await;
    let (mut same, mut drafted, mut accepted) = (0, 0, 0);
    for ((request, off), answer) in requests.iter().zip(&off).zip(&drafted_answers) {
        drafted += answer.usage.drafted_tokens;
        accepted += answer.usage.accepted_tokens;
        same += usize::from(off.text == answer.text);
        let shown = format!("{draft:?}: {:?} ({:?})", answer.text, answer.stop_reason);
        assert!(
            answer.usage.generated_tokens <= request.max_tokens,
            "{shown}"
        );
        assert!(
            answer.usage.accepted_tokens <= answer.usage.drafted_tokens,
            "{shown}"
        );
        for stop in &request.stop {
            assert!(!answer.text.contains(stop.as_str()), "{shown}");
        }
        if request.grammar.is_some() && answer.stop_reason == StopReason::EndOfGeneration {
            serde_json::from_str::<serde_json::Value>(&answer.text)
                .unwrap_or_else(|err| panic!("{err}: {shown}"));
        }
    }
    // The stop sequence and the three-token limit end where no drafting ends.
    assert_eq!(drafted_answers[16].stop_reason, StopReason::StopSequence);
    assert_eq!(
        (
            drafted_answers[17].stop_reason,
            drafted_answers[17].usage.generated_tokens
        ),
        (StopReason::MaxTokens, 3)
    );
    assert!(
        same >= requests.len() / 2 && accepted > 0,
        "{draft:?}: {same} of {} the same; drafted {drafted}, accepted {accepted}",
        requests.len()
    );
    let stats = drafting.drafting().unwrap();
    assert_eq!(
        (stats.requests, stats.drafted, stats.accepted, stats.yielded),
        (requests.len() as u64, drafted.into(), accepted.into(), 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_drafting_keeps_every_limit_and_mostly_the_same_text() {
    let _turn = crate::support::one_model_at_a_time();
    check_limits_and_sameness(LOOKUP).await;
    assert_eq!(model(DraftMode::Off, 512).drafting(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_model_keeps_every_limit_and_mostly_the_same_text() {
    let _turn = crate::support::one_model_at_a_time();
    check_limits_and_sameness(MODEL).await;
}

/// A copy-heavy prompt that fills a small context: drafts are cut to the room left, and the
/// answer ends at the context's end, as without drafting.
#[tokio::test]
async fn a_draft_never_runs_past_the_context() {
    let _turn = crate::support::one_model_at_a_time();
    for draft in [LOOKUP, MODEL] {
        fills_the_context(draft).await;
    }
}

async fn fills_the_context(draft: DraftMode) {
    let body = "    total += circle.area();\n".repeat(12);
    let prompt = format!("fn f() {{\n{body}}}\n\nfn g() {{\n{body}");
    let n_ctx = 256;
    let (drafting, _fast) = drafting_model(draft, n_ctx);
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
    for draft in [LOOKUP, MODEL] {
        cancel_after_three_pieces(draft).await;
    }
}

async fn cancel_after_three_pieces(draft: DraftMode) {
    let (drafting, _fast) = drafting_model(draft, 2048);
    let cancel = Cancel::new();
    let generation = copy_three_times(&*drafting, 400, cancel.clone(), || cancel.cancel()).await;
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

const TOTAL: &str = "pub fn total_area(circles: &[Circle]) -> f64 {\n    let mut total = 0.0;\n    for circle in circles {\n        total += circle.area();\n    }\n    total\n}";

/// Streams the answer to a prompt of [`TOTAL`] three times (copy-heavy: drafts are long),
/// running `at_third_piece` when the third piece of the answer arrives.
async fn copy_three_times(
    model: &dyn Model,
    max_tokens: u32,
    cancel: Cancel,
    at_third_piece: impl FnOnce(),
) -> Generation {
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    model.submit(
        0,
        GenerateRequest::text(format!("{TOTAL}\n\n{TOTAL}\n\n{TOTAL}"), max_tokens),
        cancel,
        sender,
    );
    let mut at_third_piece = Some(at_third_piece);
    let mut pieces = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(120), events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            GenerationEvent::Piece(_) => {
                pieces += 1;
                if pieces == 3
                    && let Some(act) = at_third_piece.take()
                {
                    act();
                }
            }
            GenerationEvent::Done(result) => return result.unwrap(),
        }
    }
}

/// Completions come first: while the draft model's own tier answers a request, the model it
/// drafts for decodes without drafts, and counts each draft it did not make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_model_yields_while_its_own_tier_is_answering() {
    let _turn = crate::support::one_model_at_a_time();
    let (target, fast) = drafting_model(MODEL, 2048);
    let fast = fast.unwrap();
    let request = GenerateRequest::text(format!("{TOTAL}\n\n{TOTAL}"), 24);

    // A long answer of the fast tier's, running when the target's request starts.
    let (sender, mut fast_events) = tokio::sync::mpsc::unbounded_channel();
    let busy = Cancel::new();
    fast.submit(
        0,
        GenerateRequest::text("1, 2, 3, 4, 5, 6, 7, 8,", 100_000),
        busy.clone(),
        sender,
    );
    let yielding = generate(&*target, 0, request.clone(), Cancel::new())
        .await
        .unwrap();
    busy.cancel();
    while let Some(event) = fast_events.recv().await {
        if matches!(event, GenerationEvent::Done(_)) {
            break;
        }
    }
    assert!(
        yielding.usage.draft_yields > 0 && yielding.usage.drafted_tokens == 0,
        "{:?}",
        yielding.usage
    );
    assert_eq!(yielding.usage.generated_tokens, 24);

    // With the fast tier idle again, the same request drafts.
    let drafting = generate(&*target, 0, request, Cancel::new()).await.unwrap();
    assert!(
        drafting.usage.drafted_tokens > 0 && drafting.usage.draft_yields == 0,
        "{:?}",
        drafting.usage
    );
    assert_eq!(
        target.drafting().unwrap().yielded,
        u64::from(yielding.usage.draft_yields)
    );
}

/// The tiers of one machine: the fast tier runs `fast`, the executor the test model and
/// drafts with the fast tier's model.
fn tiers_drafting_with(fast: &std::path::Path) -> Arc<TierSet> {
    let tiers = TierSet::new(machine::detect());
    let config = |draft| TierConfig {
        context: 2048,
        draft,
        ..TierConfig::default()
    };
    tiers
        .configure(Tier::Fast, fast.to_owned(), &config(DraftKind::Off))
        .unwrap();
    tiers
        .configure(Tier::Executor, test_model_path(), &config(DraftKind::Model))
        .unwrap();
    tiers
}

/// What a tier answers to a copy-heavy request, run to the end.
async fn executor_answer(tiers: &TierSet) -> Generation {
    let model = tiers.get(Tier::Executor).unwrap();
    let area = "pub fn area(&self) -> f64 {\n    3.14 * self.radius * self.radius\n}";
    generate(
        &*model,
        0,
        GenerateRequest::text(rewrite("area", area, "is unchanged"), 48),
        Cancel::new(),
    )
    .await
    .unwrap()
}

/// The executor still answers, without drafts.
async fn answers_without_drafts(tiers: &TierSet) {
    let answer = executor_answer(tiers).await;
    assert!(answer.usage.generated_tokens > 0, "{:?}", answer.usage);
    assert_eq!(answer.usage.drafted_tokens, 0, "{:?}", answer.usage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_a_tier_that_drafts_with_a_model_loads_and_connects_the_fast_tier() {
    let _turn = crate::support::one_model_at_a_time();
    let tiers = tiers_drafting_with(&test_model_path());
    tokio::task::block_in_place(|| tiers.load(Tier::Executor)).unwrap();
    assert!(tiers.embedded(Tier::Fast).is_some(), "the fast tier loaded");
    let note = tiers.drafting_note(Tier::Executor).unwrap();
    assert!(
        note.starts_with("drafting with the fast tier's model "),
        "{note}"
    );
    let answer = executor_answer(&tiers).await;
    assert!(answer.usage.accepted_tokens > 0, "{:?}", answer.usage);
    assert_eq!(tiers.drafting_note(Tier::Fast), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_model_with_another_vocabulary_is_refused_by_name() {
    let _turn = crate::support::one_model_at_a_time();
    let other = crate::support::model_with_another_vocabulary();
    let tiers = tiers_drafting_with(other);
    tokio::task::block_in_place(|| tiers.load(Tier::Executor)).unwrap();
    assert!(tiers.embedded(Tier::Fast).is_some(), "the fast tier loaded");
    assert_eq!(
        tiers.drafting_note(Tier::Executor).unwrap(),
        "not drafting: the fast tier's model other-vocabulary.gguf cannot draft for the executor's model gemma-3-270m-q4_k_m.gguf: their vocabularies have 262144 tokens each but not the same token texts"
    );
    assert_eq!(tiers.embedded(Tier::Executor).unwrap().drafts_with(), None);
    answers_without_drafts(&tiers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_model_that_fails_to_load_leaves_the_tier_running_without_drafts() {
    let _turn = crate::support::one_model_at_a_time();
    // Configured (its header read), then gone before it loads.
    let dir = tempfile::tempdir().unwrap();
    let fast = dir.path().join("fast.gguf");
    if std::fs::hard_link(test_model_path(), &fast).is_err() {
        std::fs::copy(test_model_path(), &fast).unwrap();
    }
    let tiers = tiers_drafting_with(&fast);
    std::fs::remove_file(&fast).unwrap();
    tokio::task::block_in_place(|| tiers.load(Tier::Executor)).unwrap();
    assert!(tiers.embedded(Tier::Fast).is_none());
    let note = tiers.drafting_note(Tier::Executor).unwrap();
    assert!(
        note.starts_with("not drafting: the fast tier has no model loaded"),
        "{note}"
    );
    answers_without_drafts(&tiers).await;
}

/// The flow rule unloads the fast tier while the executor is answering with its drafts: the
/// answer goes on to its end without drafting, the drafter is withdrawn, and the next
/// answers do not draft until the fast tier is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_model_unloaded_mid_request_stops_drafting_and_the_answer_ends_well() {
    let _turn = crate::support::one_model_at_a_time();
    let tiers = tiers_drafting_with(&test_model_path());
    tokio::task::block_in_place(|| tiers.load(Tier::Executor)).unwrap();
    let executor = tiers.embedded(Tier::Executor).unwrap();
    assert!(
        executor.drafts_with().is_some(),
        "connected before the answer"
    );
    let generation =
        copy_three_times(&*executor, 160, Cancel::new(), || tiers.unload(Tier::Fast)).await;
    assert_eq!(
        (generation.stop_reason, generation.usage.generated_tokens),
        (StopReason::MaxTokens, 160),
        "{generation:?}"
    );
    assert_eq!(executor.drafts_with(), None);
    assert!(
        tiers
            .drafting_note(Tier::Executor)
            .unwrap()
            .starts_with("not drafting: the fast tier has no model loaded")
    );
    answers_without_drafts(&tiers).await;
    // Back: connected again.
    tokio::task::block_in_place(|| tiers.load(Tier::Fast)).unwrap();
    assert!(executor.drafts_with().is_some());
}
