//! Completions from the fast tier: the exact prompt, the trimming, and the editor flow on the
//! real test model.

use std::time::Duration;

use ropey::Rope;
use serde_json::{Value, json};
use tierls::core::completion::{
    CompletionInput, Mode, RecentEdit, finish_suggestion, plan_completion,
};
use tierls::core::generation::Prompt;
use tierls::core::index::language::Language;
use tierls::core::index::table::Index;
use tierls::models::embedded::test_model_path;

use crate::support::{TestServer, index_source, wait_for_log};

const SHAPES: &str = "pub struct Circle {\n    pub radius: f64,\n}\n\npub fn circle_area(circle: &Circle) -> f64 {\n    3.14 * circle.radius * circle.radius\n}\n";

/// The plan for the cursor marked `$0` in `source` (a Rust file `src/main.rs` beside
/// `src/shapes.rs`): the exact prompt the model receives, then the generation settings.
fn check_prompt(source: &str, has_fim: bool, budget_bytes: usize) -> String {
    let offset = source.find("$0").expect("a $0 cursor");
    let text = source.replace("$0", "");
    let mut index = Index::default();
    index_source(&mut index, "src/shapes.rs", Language::Rust, SHAPES);
    let rope = Rope::from_str(&text);
    // Lately edited lines: the other file's goes into the context, this file's does not.
    let recent = [
        RecentEdit {
            path: "src/shapes.rs".into(),
            line: "pub fn circle_area(circle: &Circle) -> f64 {\n".into(),
        },
        RecentEdit {
            path: "src/main.rs".into(),
            line: "    let circle = Circle { radius: 2.0 };\n".into(),
        },
    ];
    let input = CompletionInput {
        path: "src/main.rs",
        language: Some(Language::Rust),
        text: &rope,
        offset,
        index: &index,
        has_fim,
        budget_bytes,
        recent_edits: &recent,
    };
    let plan = plan_completion(&input);
    let prompt = match &plan.prompt {
        Prompt::Text(text) => format!("<text>\n{text}</text>"),
        Prompt::Fim {
            prefix,
            suffix,
            context,
        } => {
            let chunks: String = context
                .chunks
                .iter()
                .map(|chunk| format!("<chunk {}>{}</chunk>\n", chunk.path, chunk.text))
                .collect();
            format!(
                "<context>\n{}</context>\n{chunks}<prefix>\n{prefix}</prefix>\n<suffix>\n{suffix}</suffix>",
                context.comments
            )
        }
        Prompt::Chat(_) => unreachable!("completions never chat"),
    };
    format!(
        "{prompt}\nmode {:?}, stop {:?}, max tokens {}, indent {}, rest of line {:?}",
        plan.mode, plan.stop, plan.max_tokens, plan.indent, plan.line_suffix
    )
}

const MAIN: &str = "mod shapes;\nuse shapes::{Circle, circle_area};\n\nfn main() {\n    let circle = Circle { radius: 2.0 };\n    let area = circle_area($0);\n    println!(\"{area}\");\n}\n";

#[test]
fn the_prompt_without_fim_tokens() {
    insta::assert_snapshot!("prompt_prefix_only", check_prompt(MAIN, false, 6000));
}

#[test]
fn the_prompt_with_fim_tokens() {
    insta::assert_snapshot!("prompt_fim", check_prompt(MAIN, true, 6000));
}

/// A name defined in 200 files (and the same signature in several of them) is too generic to
/// take a slot unless an import ties it to the cursor: the other names before the cursor
/// get theirs, and nothing is listed twice.
#[test]
fn a_name_defined_in_many_files_does_not_take_every_slot() {
    let mut index = Index::default();
    index_source(&mut index, "src/shapes.rs", Language::Rust, SHAPES);
    for i in 0..200 {
        // Three of each signature: the duplicates add nothing.
        let source = format!("pub fn get_value(from{}: u32) -> u32 {{ 0 }}\n", i / 3);
        index_source(
            &mut index,
            &format!("src/values/v{i}.rs"),
            Language::Rust,
            &source,
        );
    }
    let text = Rope::from_str(
        "fn main() {\n    let circle = circle_area(&c);\n    let value = get_value(1);\n    \n}\n",
    );
    let offset = text.line_to_byte(3) + 4;
    let input = CompletionInput {
        path: "src/main.rs",
        language: Some(Language::Rust),
        text: &text,
        offset,
        index: &index,
        has_fim: false,
        budget_bytes: 4000,
        recent_edits: &[],
    };
    let Prompt::Text(prompt) = plan_completion(&input).prompt else {
        panic!("a text prompt without FIM tokens");
    };
    let context: Vec<&str> = prompt
        .lines()
        .filter(|line| line.starts_with("// "))
        .collect();
    let values = context
        .iter()
        .filter(|line| line.contains("get_value"))
        .count();
    assert!(values <= 2, "{prompt}");
    assert!(
        context
            .iter()
            .any(|line| line.contains("pub fn circle_area")),
        "{prompt}"
    );
    let mut unique = context.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), context.len(), "{prompt}");
    assert!(prompt.len() <= 4000, "{}", prompt.len());
}

#[test]
fn a_small_budget_keeps_the_nearest_lines() {
    insta::assert_snapshot!("prompt_small_budget", check_prompt(MAIN, true, 160));
}

#[test]
fn a_cursor_that_opens_a_block_asks_for_a_block() {
    let source = "fn double(x: u32) -> u32 {\n    $0\n}\n";
    let shown = check_prompt(source, false, 6000);
    assert!(
        shown.ends_with(
            "mode Block, stop [\"\\n\\n\\n\"], max tokens 160, indent 4, rest of line \"\""
        ),
        "{shown}"
    );
}

#[test]
fn suggestions_are_trimmed_to_the_line_or_block_and_do_not_repeat_the_suffix() {
    let line = |source: &str, generated: &str| {
        let offset = source.find("$0").unwrap();
        let text = Rope::from_str(&source.replace("$0", ""));
        let index = Index::default();
        let input = CompletionInput {
            path: "a.rs",
            language: Some(Language::Rust),
            text: &text,
            offset,
            index: &index,
            has_fim: false,
            budget_bytes: 1000,
            recent_edits: &[],
        };
        let plan = plan_completion(&input);
        (plan.mode, finish_suggestion(&plan, generated))
    };
    assert_eq!(
        line("let x = f($0);\n", "a, b);\nlet y = 2;"),
        (Mode::Line, "a, b".to_owned())
    );
    assert_eq!(
        line("let x = f($0)\n", "a, b)   "),
        (Mode::Line, "a, b".to_owned())
    );
    let block = "fn f() {\n    $0\n}\n";
    assert_eq!(
        line(block, "let a = 1;\n    a + 1\n}\nfn g() {}"),
        (Mode::Block, "let a = 1;\n    a + 1".to_owned())
    );
}

/// A server whose fast tier runs the test model, ready to complete.
async fn server_with_model(files: &[(&str, &[u8])], tier: Value) -> TestServer {
    let mut server = TestServer::start(files);
    let options = json!({ "tiers": { "fast": tier }, "completion": { "debounce_ms": 0, "budget_ms": 20000 } });
    server.initialize_with(&["utf-16"], options).await;
    loop {
        let log = server.client.wait_for("window/logMessage").await.unwrap();
        let message = log["params"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains("could not load"), "{message}");
        if message.contains("the fast tier is ready") {
            return server;
        }
    }
}

fn model_tier() -> Value {
    json!({ "model": test_model_path(), "context": 2048 })
}

async fn inline(server: &mut TestServer, path: &str, line: u32, character: u32) -> Value {
    let uri = server.uri(path);
    let response = server
        .client
        .request("textDocument/inlineCompletion", json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": character }, "context": { "triggerKind": 2 } }))
        .await
        .unwrap();
    assert!(response.get("error").is_none(), "{response}");
    response["result"]["items"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_completion_with_the_test_model_and_the_cache_while_typing() {
    let _turn = crate::support::one_model_at_a_time();
    let mut server = server_with_model(&[("src/lib.rs", b"")], model_tier()).await;
    let text = "// Adds two numbers.\npub fn add(a: i32, b: i32) -> i32 {\n    a + \n}\n";
    server.open("src/lib.rs", text).await;
    let items = inline(&mut server, "src/lib.rs", 2, 8).await;
    let suggestion = items[0]["insertText"]
        .as_str()
        .expect("a suggestion")
        .to_owned();
    assert!(
        !suggestion.is_empty() && !suggestion.contains('\n'),
        "{suggestion:?}"
    );
    assert_eq!(
        items[0]["range"]["start"],
        json!({ "line": 2, "character": 8 })
    );

    // Typing the suggestion's first character: the rest comes from the cache.
    let first = suggestion.chars().next().unwrap();
    if suggestion.chars().count() > 1 && first != '\n' {
        server.change("src/lib.rs", 2, json!([{ "range": { "start": { "line": 2, "character": 8 }, "end": { "line": 2, "character": 8 } }, "text": first.to_string() }])).await;
        let character = 8 + first.len_utf16() as u32;
        let items = inline(&mut server, "src/lib.rs", 2, character).await;
        assert_eq!(
            items[0]["insertText"].as_str().unwrap(),
            &suggestion[first.len_utf8()..]
        );
    }

    // Completion items for editors without ghost text.
    let uri = server.uri("src/lib.rs");
    let list = server
        .client
        .request(
            "textDocument/completion",
            json!({ "textDocument": { "uri": uri }, "position": { "line": 2, "character": 8 } }),
        )
        .await
        .unwrap();
    assert_eq!(list["result"]["isIncomplete"], true);
    assert!(list["result"]["items"].as_array().unwrap().len() <= 1);
    assert!(server.finish().await.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_positions_and_documents_give_empty_answers() {
    let _turn = crate::support::one_model_at_a_time();
    let mut server = server_with_model(
        &[("src/lib.rs", b"")],
        json!({ "model": test_model_path(), "context": 256 }),
    )
    .await;
    server.open("src/lib.rs", "fn main() {}\n").await;
    assert_eq!(
        inline(&mut server, "src/lib.rs", 40, 0).await,
        json!([]),
        "a position past the end"
    );
    assert_eq!(
        inline(&mut server, "src/never-opened.rs", 0, 0).await,
        json!([]),
        "a document never opened"
    );
    let huge = "let x = 1;\n".repeat(500_000); // 5 MB
    server.open("src/huge.rs", &huge).await;
    assert_eq!(
        inline(&mut server, "src/huge.rs", 10, 0).await,
        json!([]),
        "a 5 MB document"
    );
    // A context of 256 tokens: the prompt is cut to fit, the request still answers.
    let long = "fn f() -> u32 { 1 }\n".repeat(400);
    server.open("src/long.rs", &long).await;
    let items = inline(&mut server, "src/long.rs", 400, 0).await;
    assert!(items.as_array().unwrap().len() <= 1);
    // An empty document and an unknown language still answer.
    server.open("src/empty.rs", "").await;
    assert!(
        inline(&mut server, "src/empty.rs", 0, 0)
            .await
            .as_array()
            .unwrap()
            .len()
            <= 1
    );
    server
        .open_as("notes.txt", "plaintext", "Dear diary, today")
        .await;
    assert!(
        inline(&mut server, "notes.txt", 0, 17)
            .await
            .as_array()
            .unwrap()
            .len()
            <= 1
    );
    assert!(server.finish().await.clean);
}

#[tokio::test]
async fn without_a_model_completions_are_empty_and_a_broken_model_is_reported() {
    // No fast tier configured.
    let mut server = TestServer::start(&[]);
    server.initialize().await;
    server.open("a.rs", "fn main() {\n").await;
    assert_eq!(inline(&mut server, "a.rs", 1, 0).await, json!([]));
    assert!(server.finish().await.clean);

    // A model file that is not a model: an error message, and completions stay empty.
    let mut server = TestServer::start(&[("broken.gguf", b"not a model")]);
    server
        .initialize_with(
            &["utf-16"],
            json!({ "tiers": { "fast": { "model": "broken.gguf" } } }),
        )
        .await;
    let shown = server.client.wait_for("window/showMessage").await.unwrap();
    assert!(
        shown["params"]["message"]
            .as_str()
            .unwrap()
            .contains("broken.gguf: not a GGUF file"),
        "{shown}"
    );
    server.open("a.rs", "fn main() {\n").await;
    assert_eq!(inline(&mut server, "a.rs", 1, 0).await, json!([]));
    let _ = server.client.drain(Duration::from_millis(100)).await;
    assert!(server.finish().await.clean);
}

const HOVER_SHAPES: &str = "pub struct Circle {\n    pub radius: f64,\n}\n\n/// The area of a circle.\npub fn circle_area(circle: &Circle) -> f64 {\n    3.14 * circle.radius * circle.radius\n}\n";
const HOVER_MAIN: &str = "mod shapes;\nfn main() {\n    let area = shapes::circle_area(&shapes::Circle { radius: 1.0 });\n    let again = shapes::circle_area(&shapes::Circle { radius: 2.0 });\n}\n";

async fn hover(server: &mut TestServer, path: &str, line: u32, character: u32) -> Value {
    let uri = server.uri(path);
    let response = server.client.request("textDocument/hover", json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": character } })).await.unwrap();
    response["result"].clone()
}

#[tokio::test]
async fn hover_shows_the_facts_from_the_index() {
    let files: &[(&str, &[u8])] = &[
        ("src/shapes.rs", HOVER_SHAPES.as_bytes()),
        ("src/main.rs", HOVER_MAIN.as_bytes()),
    ];
    let mut server = TestServer::start(files);
    server
        .initialize_with(&["utf-16"], json!({ "index": { "enabled": true } }))
        .await;
    wait_for_log(&mut server, "indexed 2 files").await;
    server.open("src/main.rs", HOVER_MAIN).await;
    let shown = hover(&mut server, "src/main.rs", 2, 24).await;
    insta::assert_snapshot!("hover_facts", shown["contents"]["value"].as_str().unwrap());
    // Nothing under the cursor, and a position past the end: no hover, no error.
    assert_eq!(hover(&mut server, "src/main.rs", 1, 0).await, Value::Null);
    assert_eq!(hover(&mut server, "src/main.rs", 99, 0).await, Value::Null);
    assert!(server.finish().await.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hover_adds_the_fast_tiers_explanation_and_caches_it() {
    let _turn = crate::support::one_model_at_a_time();
    let files: &[(&str, &[u8])] = &[
        ("src/shapes.rs", HOVER_SHAPES.as_bytes()),
        ("src/main.rs", HOVER_MAIN.as_bytes()),
    ];
    let mut server = TestServer::start(files);
    let options = json!({ "index": { "enabled": true }, "tiers": { "fast": model_tier() }, "completion": { "hover_budget_ms": 20000 } });
    server.initialize_with(&["utf-16"], options).await;
    wait_for_log(&mut server, "the fast tier is ready").await;
    wait_for_log(&mut server, "indexed 2 files").await;
    server.open("src/main.rs", HOVER_MAIN).await;
    let first = hover(&mut server, "src/main.rs", 2, 24).await;
    let text = first["contents"]["value"].as_str().unwrap().to_owned();
    assert!(
        text.starts_with("```rust\npub fn circle_area(circle: &Circle) -> f64\n```"),
        "{text}"
    );
    // The same definition again: the explanation comes from the cache, word for word.
    let second = hover(&mut server, "src/main.rs", 3, 25).await;
    assert_eq!(second, first);
    assert!(server.finish().await.clean);
}

#[tokio::test]
async fn while_the_model_is_still_loading_completions_are_empty_at_once() {
    let _turn = crate::support::one_model_at_a_time();
    let mut server = TestServer::start(&[]);
    let options = json!({ "tiers": { "fast": model_tier() }, "completion": { "debounce_ms": 0 } });
    server.initialize_with(&["utf-16"], options).await;
    server.open("a.rs", "fn main() {\n").await;
    // Asked right after start, while the model loads (that takes half a second or more):
    // an empty answer, not a wait for the load.
    assert_eq!(inline(&mut server, "a.rs", 1, 0).await, json!([]));
    wait_for_log(&mut server, "the fast tier is ready").await;
    let items = inline(&mut server, "a.rs", 1, 0).await;
    assert!(items.as_array().unwrap().len() <= 1);
    assert!(server.finish().await.clean);
}

#[test]
fn a_blank_line_inside_a_body_known_to_the_index_asks_for_a_block() {
    let source = "fn total(values: &[u32]) -> u32 {\n    let mut sum = 0;\n\n    sum\n}\n";
    let offset = source.find("\n\n").unwrap() + 1;
    let text = Rope::from_str(source);
    let mut index = Index::default();
    index_source(&mut index, "a.rs", Language::Rust, source);
    let input = CompletionInput {
        path: "a.rs",
        language: Some(Language::Rust),
        text: &text,
        offset,
        index: &index,
        has_fim: false,
        budget_bytes: 1000,
        recent_edits: &[],
    };
    assert_eq!(plan_completion(&input).mode, Mode::Block);
    let empty = Index::default();
    let without_index = CompletionInput {
        index: &empty,
        ..input
    };
    assert_eq!(
        plan_completion(&without_index).mode,
        Mode::Line,
        "the text alone does not open a block here"
    );
}

#[test]
fn budgets_that_cut_through_multi_byte_characters_do_not_panic() {
    // Whatever the parity, one of the two cuts falls inside a two-byte `é`.
    for pad in ["", "a"] {
        let source = format!(
            "// {pad}{}\nfn main() {{\n    let x = 1;$0\n}}\n",
            "é".repeat(900)
        );
        for budget in [100, 101, 6000] {
            let shown = check_prompt(&source, true, budget);
            assert!(shown.contains("let x = 1;"), "{shown}");
        }
    }
}

/// A suggestion the time budget cuts is still offered (it is the start of the model's
/// line), and marked: counted in `tierls/completionStats`, its sample flagged, and said in
/// the log. One that finishes in time is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suggestion_cut_by_the_budget_is_marked_in_the_stats_and_the_log() {
    use std::sync::Arc;
    use tierls::config::Tier;
    use tierls::models::scripted::ScriptedModel;

    let line = "a + b + c + d + e + f + g + h + i + j + k + l";
    let slow = ScriptedModel::new(1)
        .answer("b: i32", &[line])
        .answer("x: i32", &["x * 2"])
        .per_token(Duration::from_millis(100));
    let mut server =
        TestServer::start_with_models(&[("src/lib.rs", b"")], vec![(Tier::Fast, Arc::new(slow))]);
    server
        .initialize_with(
            &["utf-16"],
            json!({ "completion": { "debounce_ms": 0, "budget_ms": 500 } }),
        )
        .await;
    let text = "pub fn add(a: i32, b: i32) -> i32 {\n    \n}\n";
    server.open("src/lib.rs", text).await;
    let items = inline(&mut server, "src/lib.rs", 1, 4).await;
    let suggestion = items[0]["insertText"].as_str().expect("a suggestion");
    assert!(
        !suggestion.is_empty() && line.starts_with(suggestion) && suggestion.len() < line.len(),
        "{suggestion:?}"
    );
    wait_for_log(&mut server, "the completion was cut by its time budget").await;

    server
        .open("src/double.rs", "pub fn double(x: i32) -> i32 {\n    \n}\n")
        .await;
    let items = inline(&mut server, "src/double.rs", 1, 4).await;
    assert_eq!(items[0]["insertText"], "x * 2");

    let stats = server
        .client
        .request("tierls/completionStats", Value::Null)
        .await
        .unwrap();
    let stats = &stats["result"];
    assert_eq!(stats["cutByBudget"], 1, "{stats}");
    let cut: Vec<&Value> = stats["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sample| &sample["cutByBudget"])
        .collect();
    assert_eq!(cut, [&json!(true), &json!(false)], "{stats}");
    assert!(server.finish().await.clean);
}

/// The context comes from other files' newest text: a definition typed into an open file
/// and not saved reaches the next completion in another file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_comes_from_the_newest_text_of_files_being_edited() {
    use std::sync::Arc;
    use tierls::config::Tier;
    use tierls::models::scripted::ScriptedModel;

    let model = Arc::new(ScriptedModel::new(1).answer("def brand_new_helper(value)", &["lper(2)"]));
    let mut server = TestServer::start_with_models(
        &[
            (
                "app/helpers.py",
                b"def old_helper(value):\n    return value\n",
            ),
            ("app/main.py", b""),
        ],
        vec![(Tier::Fast, model.clone())],
    );
    server
        .initialize_with(
            &["utf-16"],
            json!({ "index": { "enabled": true }, "completion": { "debounce_ms": 0 } }),
        )
        .await;
    wait_for_log(&mut server, "indexed 2 files").await;
    server
        .open_as(
            "app/helpers.py",
            "python",
            "def old_helper(value):\n    return value\n",
        )
        .await;
    server
        .change(
            "app/helpers.py",
            2,
            json!([{ "range": { "start": { "line": 2, "character": 0 }, "end": { "line": 2, "character": 0 } },
                     "text": "\n\ndef brand_new_helper(value):\n    return value * 2\n" }]),
        )
        .await;
    let text =
        "from app.helpers import brand_new_helper\n\n\ndef run():\n    return brand_new_he\n";
    server.open_as("app/main.py", "python", text).await;
    let items = inline(&mut server, "app/main.py", 4, 23).await;
    assert_eq!(items[0]["insertText"], "lper(2)", "{:#?}", model.prompts());
    assert!(server.finish().await.clean);
}
