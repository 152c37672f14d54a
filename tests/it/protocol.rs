//! The protocol layer: initialize, shutdown, and every malformed message the server survives.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestServer, transcript};

const QUIET: Duration = Duration::from_millis(500);
const DOC: &str = "let x = 1;\n";

/// Initializes (with `options` as `initializationOptions`), opens `doc.rs`, sends `raw`
/// exactly as given, then asks for the document. The snapshot holds every message the
/// client received, then the server's text: proof that it is still up and consistent.
async fn check_raw(name: &str, options: Value, raw: &[u8]) {
    let mut server = TestServer::start(&[]);
    server.initialize_with(&["utf-16"], options).await;
    server.open("doc.rs", DOC).await;
    server.client.drain(QUIET).await.unwrap();
    server.client.send_bytes(raw).await.unwrap();
    let view = server.view("doc.rs").await;
    let received = server.client.drain(QUIET).await.unwrap();
    let snapshot = format!(
        "{}\n--- then tierls/viewDocument: version {} text {:?}",
        transcript(&received, server.root.path()),
        view["result"]["version"],
        view["result"]["text"].as_str().unwrap_or("<none>"),
    );
    insta::assert_snapshot!(name, snapshot);
    assert!(server.finish().await.clean);
}

fn frame(body: &str) -> Vec<u8> {
    format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

#[tokio::test]
async fn initialize_negotiates_utf8_and_lists_capabilities() {
    let mut server = TestServer::start(&[]);
    let mut result = server
        .initialize_with(&["utf-16", "utf-8"], Value::Null)
        .await;
    assert_eq!(result["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
    result["serverInfo"]["version"] = json!("[version]");
    insta::assert_json_snapshot!("initialize_result", result);
    assert!(server.finish().await.clean);
}

#[tokio::test]
async fn initialize_falls_back_to_utf16() {
    for offered in [json!(["utf-32"]), json!([]), Value::Null] {
        let mut server = TestServer::start(&[]);
        let params = json!({ "capabilities": { "general": { "positionEncodings": offered } } });
        let response = server.client.request("initialize", params).await.unwrap();
        assert_eq!(
            response["result"]["capabilities"]["positionEncoding"], "utf-16",
            "offered {offered}"
        );
        assert!(server.finish().await.clean);
    }
}

#[tokio::test]
async fn request_before_initialize_is_refused() {
    let mut server = TestServer::start(&[]);
    let response = server
        .client
        .request("tierls/viewDocument", json!({ "uri": "file:///x.rs" }))
        .await
        .unwrap();
    insta::assert_snapshot!(transcript(&[response], server.root.path()), @"response id=1 error -32002: Server not initialized");
    // The session still initializes normally afterwards.
    let result = server.initialize().await;
    assert_eq!(result["serverInfo"]["name"], "tierls");
    assert!(server.finish().await.clean);
}

#[tokio::test]
async fn unknown_request_gets_method_not_found() {
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tierls/noSuchMethod","params":{}}"#;
    check_raw("unknown_request", Value::Null, &frame(body)).await;
}

#[tokio::test]
async fn dollar_request_gets_method_not_found() {
    // LSP: `$/` notifications may be ignored, but a `$/` request must be answered.
    let body = r#"{"jsonrpc":"2.0","id":8,"method":"$/somethingNew","params":{}}"#;
    check_raw("dollar_request", Value::Null, &frame(body)).await;
}

#[tokio::test]
async fn unknown_notification_is_ignored() {
    let body = r#"{"jsonrpc":"2.0","method":"tierls/noSuchNotification","params":{}}"#;
    check_raw("unknown_notification", Value::Null, &frame(body)).await;
}

#[tokio::test]
async fn body_that_is_not_json() {
    check_raw("not_json", Value::Null, b"Content-Length: 5\r\n\r\n{oops").await;
}

#[tokio::test]
async fn json_that_is_not_jsonrpc() {
    check_raw(
        "not_jsonrpc",
        Value::Null,
        &frame(r#"{"id":3,"hello":"world"}"#),
    )
    .await;
}

#[tokio::test]
async fn empty_object() {
    check_raw("empty_object", Value::Null, &frame("{}")).await;
}

#[tokio::test]
async fn jsonrpc_batch() {
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"shutdown"}]"#;
    check_raw("batch", Value::Null, &frame(body)).await;
}

#[tokio::test]
async fn body_that_is_not_utf8() {
    let mut raw = b"Content-Length: 4\r\n\r\n".to_vec();
    raw.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
    check_raw("not_utf8", Value::Null, &raw).await;
}

#[tokio::test]
async fn misspelt_header_then_a_good_message() {
    let mut raw = b"Content-Lenght: 5\r\n\r\n{oops".to_vec();
    raw.extend(frame(
        r#"{"jsonrpc":"2.0","id":"after","method":"tierls/noSuchMethod"}"#,
    ));
    check_raw("misspelt_header", Value::Null, &raw).await;
}

#[tokio::test]
async fn content_length_that_is_not_a_number() {
    let mut raw = b"Content-Length: lots\r\n\r\n".to_vec();
    raw.extend(frame(
        r#"{"jsonrpc":"2.0","id":"after","method":"tierls/noSuchMethod"}"#,
    ));
    check_raw("bad_content_length", Value::Null, &raw).await;
}

#[tokio::test]
async fn garbage_between_messages() {
    let mut raw = b"hello there\r\n\x00\x01\x02 more garbage\n".to_vec();
    raw.extend(frame(
        r#"{"jsonrpc":"2.0","id":"after","method":"tierls/noSuchMethod"}"#,
    ));
    check_raw("garbage", Value::Null, &raw).await;
}

#[tokio::test]
async fn unsupported_charset() {
    let body = r#"{"jsonrpc":"2.0","id":9,"method":"tierls/noSuchMethod"}"#;
    let raw = format!(
        "Content-Length: {}\r\nContent-Type: application/vscode-jsonrpc; charset=latin1\r\n\r\n{body}",
        body.len()
    );
    check_raw("unsupported_charset", Value::Null, raw.as_bytes()).await;
}

#[tokio::test]
async fn message_over_the_configured_limit_is_skipped_unread() {
    // 2 MiB of text in a didChange, with the limit set to 1 MiB.
    let big = "x".repeat(2 * 1024 * 1024);
    let body = json!({
        "jsonrpc": "2.0", "method": "textDocument/didChange",
        "params": { "textDocument": { "uri": "file:///nowhere/doc.rs", "version": 2 },
                    "contentChanges": [{ "text": big }] },
    });
    let options = json!({ "limits": { "max_message_mb": 1 } });
    check_raw("over_limit", options, &frame(&body.to_string())).await;
}

#[tokio::test]
async fn shutdown_then_exit_ends_cleanly_and_exit_alone_does_not() {
    let mut server = TestServer::start(&[]);
    server.initialize().await;
    assert!(server.finish().await.clean);

    let mut server = TestServer::start(&[]);
    server.initialize().await;
    assert!(!server.exit().await.clean);
}
