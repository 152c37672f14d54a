//! The LSP shell: the only module that knows `tower_lsp` and `lsp_types`.
//!
//! [`run`] puts a framing guard in front of tower-lsp (see `guard.rs` for why), serves one
//! editor session, and forwards that session's logs to the editor.

mod catch_panic;
pub mod client;
mod completion;
mod convert;
mod downloads;
pub mod ext;
mod framing;
mod guard;
mod hover;
mod indexing;
mod nodes;
mod plan_actions;
mod plan_edit;
mod plan_reports;
mod plan_run;
mod plans;
mod progress;
mod reload;
mod server;
mod session;
mod startup;
mod status;
mod symbols;

pub use framing::{FrameError, FrameReader, write_frame};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tower_lsp::lsp_types::MessageType;
use tower_lsp::{Client, LspService, Server};
use tracing::Instrument;

use crate::config::Config;
use crate::logging::{self, LogRecord};

/// What a server is started with, decided by the caller (the CLI reads the environment; tests
/// pass explicit values so that nothing of the machine leaks in).
/// Models already running, by the tier they serve.
pub type ProvidedModels = Vec<(
    crate::config::Tier,
    std::sync::Arc<dyn crate::models::Model>,
)>;

#[derive(Clone, Default)]
pub struct ServerOptions {
    /// The user's `tierls.toml`, if any.
    pub user_config: Option<PathBuf>,
    /// Models already running, serving these tiers instead of what the configuration names
    /// (tests give scripted models here).
    pub provided_models: ProvidedModels,
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `shutdown` came before the input ended or `exit` arrived: exit status 0, else 1.
    pub clean: bool,
}

/// State shared between the framing pumps and the server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub max_message_bytes: Arc<AtomicUsize>,
    pub shutdown_requested: AtomicBool,
    pub log_session: u64,
}

/// How long the server may finish in-flight work after its input ended.
const INPUT_CLOSED_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves one editor session over `input`/`output` until `exit` or the end of input.
pub async fn run<I, O>(input: I, output: O, options: ServerOptions) -> Outcome
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
{
    logging::init();
    let defaults = Config::default();
    let log = logging::register_session(defaults.log.level);
    let shared = Arc::new(Shared {
        max_message_bytes: Arc::new(AtomicUsize::new(defaults.limits.max_message_bytes)),
        shutdown_requested: AtomicBool::new(false),
        log_session: log.id,
    });

    let (to_server, server_input) = tokio::io::duplex(1 << 16);
    let (server_output, from_server) = tokio::io::duplex(1 << 16);
    let (rejections_tx, rejections_rx) = mpsc::unbounded_channel();

    let backend_shared = shared.clone();
    let (service, socket) = LspService::build(move |client| {
        tokio::spawn(forward_logs(client.clone(), log.records));
        server::Backend::new(client, backend_shared, options)
    })
    .custom_method(ext::VIEW_DOCUMENT, server::Backend::view_document)
    .custom_method(ext::INLINE_COMPLETION, server::Backend::inline_completion)
    .custom_method(ext::COMPLETION_STATS, server::Backend::completion_stats)
    .custom_method(ext::STATUS, server::Backend::status)
    .custom_method(
        "window/workDoneProgress/cancel",
        server::Backend::work_done_progress_cancel,
    )
    .finish();

    // Handlers never await while others wait on them, so a generous limit only keeps slow
    // requests from holding up document notifications behind them.
    let serve = Server::new(server_input, server_output, socket)
        .concurrency_level(64)
        .serve(catch_panic::CatchPanic(service));
    let pump_in = pump_input(
        input,
        to_server,
        rejections_tx,
        shared.max_message_bytes.clone(),
    );
    let pump_out = pump_output(from_server, rejections_rx, output);

    let span =
        tracing::info_span!(target: "tierls", logging::SESSION_SPAN, id = shared.log_session);
    async {
        // The input pump ends at `exit` or at end of input, which ends tower-lsp, which
        // ends the output pump.
        // Handlers waiting on the client (`window/workDoneProgress/create`, a registration)
        // would keep tower-lsp alive after its input closed: the server ends at most
        // `INPUT_CLOSED_GRACE` after the input does, whatever is in flight.
        tokio::select! {
            _ = async { tokio::join!(serve, pump_out) } => {}
            _ = async { pump_in.await; tokio::time::sleep(INPUT_CLOSED_GRACE).await } => {
                tracing::warn!(target: "tierls", "the input ended with requests in flight: stopping");
            }
        }
    }
    .instrument(span)
    .await;

    logging::unregister_session(shared.log_session);
    Outcome {
        clean: shared.shutdown_requested.load(Ordering::SeqCst),
    }
}

/// Starts a server in memory and returns a client connected to it, with the server's task:
/// what tests and `tierls bench completion` drive.
pub fn start_in_memory(
    options: ServerOptions,
) -> (client::LspClient, tokio::task::JoinHandle<Outcome>) {
    let (client_end, server_end) = tokio::io::duplex(1 << 20);
    let (server_read, server_write) = tokio::io::split(server_end);
    let (client_read, client_write) = tokio::io::split(client_end);
    let server = tokio::spawn(run(server_read, server_write, options));
    (client::LspClient::new(client_read, client_write), server)
}

/// Serves an editor on this process's stdin and stdout.
pub async fn serve_stdio(options: ServerOptions) -> Outcome {
    run(tokio::io::stdin(), tokio::io::stdout(), options).await
}

async fn pump_input<I: AsyncRead + Unpin>(
    input: I,
    mut to_server: tokio::io::DuplexStream,
    rejections: mpsc::UnboundedSender<Value>,
    max_message_bytes: Arc<AtomicUsize>,
) {
    let mut frames = FrameReader::new(input, max_message_bytes);
    loop {
        let frame = match frames.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(err) => {
                tracing::error!(target: "tierls", "reading from the client failed: {err}");
                break;
            }
        };
        let body = match frame {
            Ok(body) => body,
            Err(err) => {
                tracing::warn!(target: "tierls", "dropped a malformed message: {err}");
                let code = guard::PARSE_ERROR;
                let reply =
                    guard::error_response(Value::Null, code, &format!("Parse error: {err}"));
                let _ = rejections.send(reply);
                continue;
            }
        };
        match guard::check(&body) {
            guard::Verdict::Forward { rewritten, is_exit } => {
                let body = rewritten.as_deref().unwrap_or(&body);
                if write_frame(&mut to_server, body).await.is_err() || is_exit {
                    // Closing tower-lsp's input is what ends it: it only notices `exit`
                    // when it tries to read the next message.
                    break;
                }
            }
            guard::Verdict::Reject(reply) => {
                let message = reply["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                tracing::warn!(target: "tierls", "dropped a malformed message: {message}");
                let _ = rejections.send(reply);
            }
        }
    }
}

/// Writes tower-lsp's frames and our rejections to the real output, whole frames only.
async fn pump_output<O: AsyncWrite + Unpin>(
    from_server: tokio::io::DuplexStream,
    mut rejections: mpsc::UnboundedReceiver<Value>,
    mut output: O,
) {
    let mut frames = FrameReader::new(from_server, Arc::new(AtomicUsize::new(usize::MAX)));
    let mut rejections_open = true;
    loop {
        let body = tokio::select! {
            frame = frames.next() => match frame {
                Ok(Some(Ok(body))) => body,
                Ok(Some(Err(err))) => {
                    tracing::error!(target: "tierls", "tower-lsp wrote a broken frame: {err}");
                    continue;
                }
                Ok(None) | Err(_) => break,
            },
            reply = rejections.recv(), if rejections_open => match reply {
                Some(reply) => serde_json::to_vec(&reply).unwrap_or_default(),
                None => { rejections_open = false; continue; }
            },
        };
        let body = advertise_inline_completion(body);
        if write_frame(&mut output, &body).await.is_err() {
            break; // The client is gone; nothing is left to tell it.
        }
    }
}

/// Adds `inlineCompletionProvider` to the `initialize` result: lsp-types 0.94 has no field for
/// this LSP 3.18 capability, so tower-lsp cannot send it.
fn advertise_inline_completion(body: Vec<u8>) -> Vec<u8> {
    let looks_like_it = |needle: &[u8]| body.windows(needle.len()).any(|window| window == needle);
    if !looks_like_it(b"\"serverInfo\"") || !looks_like_it(b"\"capabilities\"") {
        return body;
    }
    let Ok(mut message) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    match message
        .pointer_mut("/result/capabilities")
        .and_then(Value::as_object_mut)
    {
        Some(capabilities) => {
            capabilities.insert("inlineCompletionProvider".into(), Value::Bool(true));
            serde_json::to_vec(&message).unwrap_or(body)
        }
        None => body,
    }
}

async fn forward_logs(client: Client, mut records: mpsc::UnboundedReceiver<LogRecord>) {
    while let Some(record) = records.recv().await {
        let kind = match record.level {
            tracing::Level::ERROR => MessageType::ERROR,
            tracing::Level::WARN => MessageType::WARNING,
            tracing::Level::INFO => MessageType::INFO,
            _ => MessageType::LOG,
        };
        client.log_message(kind, record.message).await;
    }
}

/// A request that could not be carried out (LSP's `RequestFailed`, -32803), with why.
pub(crate) fn request_failed(message: impl Into<String>) -> tower_lsp::jsonrpc::Error {
    tower_lsp::jsonrpc::Error {
        code: tower_lsp::jsonrpc::ErrorCode::ServerError(-32803),
        message: message.into().into(),
        data: None,
    }
}
