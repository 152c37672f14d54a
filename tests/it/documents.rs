//! Document sync through the real server: incremental edits, encodings, and bad changes.

use std::time::Duration;

use serde_json::{Value, json};

use crate::positions::reference;
use crate::support::{TestServer, transcript};

const QUIET: Duration = Duration::from_millis(500);

fn edit(start: (u32, u32), end: (u32, u32), text: &str) -> Value {
    json!({ "range": { "start": { "line": start.0, "character": start.1 },
                       "end": { "line": end.0, "character": end.1 } }, "text": text })
}

/// Opens `doc.rs` with `text` under `encoding`, sends each `(version, changes)` as one
/// didChange, and snapshots what the client was told and the server's final text.
async fn check_changes(name: &str, encoding: &str, text: &str, steps: &[(i32, Vec<Value>)]) {
    let mut server = TestServer::start(&[]);
    server.initialize_with(&[encoding], Value::Null).await;
    server.open("doc.rs", text).await;
    for (version, changes) in steps {
        server.change("doc.rs", *version, json!(changes)).await;
    }
    let view = server.view("doc.rs").await;
    let received = server.client.drain(QUIET).await.unwrap();
    let snapshot = format!(
        "{}\n--- version {} text:\n{}",
        transcript(&received, server.root.path()),
        view["result"]["version"],
        view["result"]["text"].as_str().unwrap_or("<none>"),
    );
    insta::assert_snapshot!(name, snapshot);
    assert!(server.finish().await.clean);
}

#[tokio::test]
async fn incremental_edits_in_utf16() {
    // "😀" is two UTF-16 code units, "é" one, "日" one.
    let text = "fn main() {\n    let s = \"😀é\";\n}\n";
    check_changes(
        "utf16_edits",
        "utf-16",
        text,
        &[
            (2, vec![edit((1, 15), (1, 15), "日")]), // after 😀 (column 13 + 2)
            (3, vec![edit((1, 17), (1, 17), "!")]),  // after é and 日
            (4, vec![edit((0, 3), (0, 7), "start")]),
        ],
    )
    .await;
}

#[tokio::test]
async fn incremental_edits_in_utf8() {
    let text = "let s = \"😀é\";\n";
    // In UTF-8 "😀" is 4 bytes and "é" 2: column 13 is just after them.
    check_changes(
        "utf8_edits",
        "utf-8",
        text,
        &[(2, vec![edit((0, 15), (0, 15), "+")])],
    )
    .await;
}

#[tokio::test]
async fn edits_across_crlf_and_lone_cr_lines() {
    let text = "one\r\ntwo\rthree\nfour";
    check_changes(
        "crlf_edits",
        "utf-16",
        text,
        &[
            (2, vec![edit((1, 3), (2, 0), " | ")]), // joins "two" and "three" over a lone CR
            (3, vec![edit((0, 3), (1, 0), "; ")]),  // joins over a CRLF
            (4, vec![edit((1, 99), (1, 99), ".")]), // a column past the end means the line end
        ],
    )
    .await;
}

#[tokio::test]
async fn several_changes_in_one_notification_and_a_full_replace() {
    check_changes(
        "batched_changes",
        "utf-16",
        "abc\ndef\n",
        &[
            (
                2,
                vec![
                    edit((0, 0), (0, 1), "A"),
                    edit((1, 2), (1, 3), "F"),
                    edit((2, 0), (2, 0), "ghi"),
                ],
            ),
            (
                3,
                vec![json!({ "text": "replaced\n" }), edit((0, 8), (0, 8), "!")],
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn change_for_a_document_never_opened() {
    let mut server = TestServer::start(&[]);
    server.initialize().await;
    server
        .change("never-opened.rs", 2, json!([edit((0, 0), (0, 0), "x")]))
        .await;
    let view = server.view("never-opened.rs").await;
    let received = server.client.drain(QUIET).await.unwrap();
    let root = server
        .root
        .path()
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    let snapshot = format!(
        "{}\n--- view: {}",
        transcript(&received, server.root.path()),
        view["error"]["message"]
    );
    insta::assert_snapshot!("change_never_opened", snapshot.replace(&root, "$ROOT"));
    assert!(server.finish().await.clean);
}

#[tokio::test]
async fn change_past_the_end_of_the_document() {
    check_changes(
        "past_end",
        "utf-16",
        "one\ntwo",
        &[
            (2, vec![edit((5, 0), (5, 0), "lost")]),
            (3, vec![edit((1, 3), (1, 3), "!")]), // the next good change still applies
        ],
    )
    .await;
}

#[tokio::test]
async fn change_inside_a_surrogate_pair() {
    check_changes(
        "inside_surrogate_pair",
        "utf-16",
        "a😀b\n",
        &[(2, vec![edit((0, 2), (0, 2), "x")])],
    )
    .await;
}

#[tokio::test]
async fn change_inside_a_utf8_sequence() {
    check_changes(
        "inside_utf8_sequence",
        "utf-8",
        "aé\n",
        &[(2, vec![edit((0, 2), (0, 2), "x")])],
    )
    .await;
}

#[tokio::test]
async fn version_that_goes_backwards_or_repeats() {
    check_changes(
        "stale_versions",
        "utf-16",
        "v1\n",
        &[
            (5, vec![edit((0, 2), (0, 2), "-five")]),
            (4, vec![edit((0, 0), (0, 0), "four-")]),
            (5, vec![edit((0, 0), (0, 0), "five-again-")]),
            (6, vec![edit((0, 0), (0, 0), "six-")]),
        ],
    )
    .await;
}

#[tokio::test]
async fn reversed_range_and_a_bad_change_amid_good_ones() {
    check_changes(
        "reversed_and_atomic",
        "utf-16",
        "abcdef\n",
        &[
            (2, vec![edit((0, 4), (0, 2), "x")]),
            // All or nothing: the good first change is not applied either.
            (
                3,
                vec![edit((0, 0), (0, 1), "A"), edit((9, 0), (9, 0), "x")],
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn open_twice_and_close_unknown() {
    let mut server = TestServer::start(&[]);
    server.initialize().await;
    server.open("doc.rs", "first\n").await;
    server.open("doc.rs", "second\n").await;
    server.close("other.rs").await;
    let text = server.text_of("doc.rs").await;
    let received = server.client.drain(QUIET).await.unwrap();
    let snapshot = format!(
        "{}\n--- text: {text:?}",
        transcript(&received, server.root.path())
    );
    insta::assert_snapshot!(
        "open_twice_close_unknown",
        snapshot.replace(&server.root_uri().to_string(), "$ROOT_URI/")
    );
    assert!(server.finish().await.clean);
}

#[tokio::test]
async fn a_50_mb_document_opens_edits_and_closes() {
    let line = "let value = compute(1, 2, 3); // 😀 padding padding padding\n";
    let text = line.repeat(50 * 1024 * 1024 / line.len() + 1);
    assert!(text.len() >= 50 * 1024 * 1024);
    let lines = text.lines().count() as u32;
    let mut server = TestServer::start(&[]);
    server.initialize().await;
    server.open("huge.rs", &text).await;
    server
        .change(
            "huge.rs",
            2,
            json!([
                edit((lines, 0), (lines, 0), "// end\n"),
                edit((0, 0), (0, 3), "const")
            ]),
        )
        .await;
    let view = server.view("huge.rs").await;
    let server_text = view["result"]["text"].as_str().unwrap();
    assert_eq!(server_text.len(), text.len() + "// end\n".len() + 2);
    assert!(server_text.starts_with("const value") && server_text.ends_with("padding\n// end\n"));
    server.close("huge.rs").await;
    let received = server.client.drain(QUIET).await.unwrap();
    assert!(
        received
            .iter()
            .all(|m| m["params"]["type"] != 1 && m["params"]["type"] != 2),
        "{received:?}"
    );
    assert!(server.finish().await.clean);
}

/// A burst of edits sent without waiting: tower-lsp polls handlers concurrently, so this
/// fails if any handler awaits before it mutates the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_edits_leaves_the_same_text_as_the_client() {
    let mut rng = fastrand::Rng::with_seed(2026);
    let mut text = String::from("fn main() {\n    println!(\"héllo 😀\");\r\n}\n");
    let mut server = TestServer::start(&[]);
    server.initialize().await;
    server.open("burst.rs", &text).await;
    for version in 2..1002 {
        let (start, end) = reference::random_range(&mut rng, &text);
        let insert = ["x", "é", "😀", "\n", "\r\n", "", "fn f() {}\n", "日本"][rng.usize(..8)];
        let start_pos = reference::position_of(&text, start, reference::Encoding::Utf16).unwrap();
        let end_pos = reference::position_of(&text, end, reference::Encoding::Utf16).unwrap();
        text.replace_range(start..end, insert);
        server
            .change(
                "burst.rs",
                version,
                json!([edit(
                    (start_pos.line, start_pos.character),
                    (end_pos.line, end_pos.character),
                    insert
                )]),
            )
            .await;
    }
    let view = server.view("burst.rs").await;
    assert_eq!(view["result"]["version"], 1001);
    assert_eq!(view["result"]["text"].as_str().unwrap(), text);
    assert!(server.finish().await.clean);
}

/// Reads a file the editor has not opened, checking what comes back.
async fn check_disk(name: &str, files: &[(&str, &[u8])], path: &str, options: Value) {
    let mut server = TestServer::start(files);
    server.initialize_with(&["utf-16"], options).await;
    let view = if path.starts_with('/') {
        server
            .client
            .request(
                "tierls/viewDocument",
                json!({ "uri": format!("file://{path}") }),
            )
            .await
            .unwrap()
    } else {
        server.view(path).await
    };
    let root = server
        .root
        .path()
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    let shown = match view.get("result") {
        Some(result) => format!(
            "{} {:?}",
            result["source"],
            result["text"].as_str().unwrap_or_default()
        ),
        None => format!(
            "error {}: {}",
            view["error"]["code"],
            view["error"]["message"].as_str().unwrap_or_default()
        ),
    };
    insta::assert_snapshot!(name, shown.replace(&root, "$ROOT"));
    assert!(server.finish().await.clean);
}

#[tokio::test]
async fn unopened_file_is_read_from_disk() {
    check_disk(
        "disk_text",
        &[("src/a.rs", "fn a() {}\n".as_bytes())],
        "src/a.rs",
        Value::Null,
    )
    .await;
}

#[tokio::test]
async fn invalid_utf8_on_disk() {
    check_disk(
        "disk_not_utf8",
        &[("bad.rs", b"fn a() { \"\xff\xfe\" }\n")],
        "bad.rs",
        Value::Null,
    )
    .await;
}

#[tokio::test]
async fn binary_file_on_disk() {
    check_disk(
        "disk_binary",
        &[("image.rs", b"\x89PNG\r\n\x1a\n\x00\x00")],
        "image.rs",
        Value::Null,
    )
    .await;
}

#[tokio::test]
async fn file_over_the_size_limit() {
    let big = vec![b'a'; 2 * 1024 * 1024];
    let options = json!({ "limits": { "max_file_mb": 1 } });
    check_disk("disk_too_large", &[("big.rs", &big)], "big.rs", options).await;
}

#[tokio::test]
async fn file_outside_the_workspace() {
    check_disk("disk_outside_root", &[], "/etc/passwd", Value::Null).await;
}

#[tokio::test]
async fn missing_file() {
    check_disk("disk_missing", &[], "missing.rs", Value::Null).await;
}

#[cfg(unix)]
#[tokio::test]
async fn symbolic_link_that_leads_outside_the_workspace() {
    let mut server = TestServer::start(&[]);
    std::os::unix::fs::symlink("/etc/passwd", server.root.path().join("link.rs")).unwrap();
    server.initialize().await;
    let view = server.view("link.rs").await;
    let message = view["error"]["message"].as_str().unwrap().to_owned();
    let root = server
        .root
        .path()
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    insta::assert_snapshot!(message.replace(&root, "$ROOT"), @"$ROOT/link.rs: outside the workspace root $ROOT");
    assert!(server.finish().await.clean);
}
