//! Checks each incoming body before tower-lsp sees it.
//!
//! tower-lsp stops reading for good after the first body it cannot decode (its codec sits on
//! tokio-util's `FramedRead`), so every body that is not a JSON-RPC message it can decode is
//! answered here with a JSON-RPC error and dropped.

use serde_json::{Value, json};
use tower_lsp::jsonrpc::{Request, Response};

/// What to do with one incoming body.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// A well-formed message: hand it to tower-lsp, as `rewritten` when that is set.
    /// `is_exit` marks the `exit` notification, after which nothing more is read.
    Forward {
        rewritten: Option<Vec<u8>>,
        is_exit: bool,
    },
    /// Answer with this error response and drop the body.
    Reject(Value),
}

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;

pub fn check(body: &[u8]) -> Verdict {
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(err) => {
            let message = format!(
                "Parse error: the body is not UTF-8 (at byte {})",
                err.valid_up_to()
            );
            return Verdict::Reject(error_response(Value::Null, PARSE_ERROR, &message));
        }
    };
    let mut value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => {
            let message = format!("Parse error: {err}");
            return Verdict::Reject(error_response(Value::Null, PARSE_ERROR, &message));
        }
    };
    if value.is_array() {
        let message = "Invalid request: LSP does not use JSON-RPC batches";
        return Verdict::Reject(error_response(Value::Null, INVALID_REQUEST, message));
    }
    // tower-lsp decodes an untagged enum of these two: mirror it exactly.
    let is_response = serde_json::from_value::<Response>(value.clone()).is_ok();
    let is_request = serde_json::from_value::<Request>(value.clone())
        .is_ok_and(|_| value.get("method").is_some_and(Value::is_string));
    if is_request
        && value.get("id").is_some_and(|id| !id.is_null())
        && value["method"]
            .as_str()
            .is_some_and(|method| method.starts_with("$/"))
    {
        // LSP: a `$/` request the server does not implement gets MethodNotFound (tower-lsp
        // would drop it unanswered, as it does `$/` notifications).
        let message = format!(
            "Method not found: {}",
            value["method"].as_str().unwrap_or("")
        );
        return Verdict::Reject(error_response(
            value["id"].clone(),
            METHOD_NOT_FOUND,
            &message,
        ));
    }
    if is_response || is_request {
        let is_exit = is_request && value["method"] == "exit";
        // Some clients send `"params": null` for `shutdown` and `exit`; tower-lsp refuses
        // that, JSON-RPC means it as "no params", so drop it.
        let rewritten = match value.get("params") {
            Some(Value::Null) => {
                value.as_object_mut().map(|object| object.remove("params"));
                serde_json::to_vec(&value).ok()
            }
            _ => None,
        };
        return Verdict::Forward { rewritten, is_exit };
    }
    let id = value
        .get("id")
        .filter(|id| id.is_number() || id.is_string())
        .cloned()
        .unwrap_or(Value::Null);
    let message = "Invalid request: not a JSON-RPC 2.0 request, notification or response";
    Verdict::Reject(error_response(id, INVALID_REQUEST, message))
}

pub fn error_response(id: Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}
