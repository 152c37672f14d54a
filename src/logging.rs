//! Logging: `tracing` to stderr, and to each editor session with `window/logMessage`.
//!
//! stdout is the protocol channel, so nothing here ever writes to it. Events reach an editor
//! when they happen inside that session's `lsp_session` span (the LSP shell instruments its
//! whole server with one), so two servers in one process (as in the tests) never see each
//! other's logs.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, filter};

use crate::config::LogLevel;
use crate::sync::lock;

/// The name of the span that marks everything one editor session does.
pub const SESSION_SPAN: &str = "lsp_session";

/// One event on its way to an editor.
#[derive(Clone, Debug)]
pub struct LogRecord {
    pub level: Level,
    pub message: String,
}

/// Installs the process-wide subscriber once: stderr filtered by `TIERLS_LOG` (default
/// `info`), plus the layer that forwards to editor sessions.
pub fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let stderr_filter = EnvFilter::try_from_env("TIERLS_LOG").unwrap_or_else(|_| {
            EnvFilter::new("warn,tierls=info,llama-cpp-2=error,llama_cpp_2=error")
        });
        let stderr = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_filter(stderr_filter);
        // Only our own events go to editors: tower-lsp traces every message it writes, and
        // forwarding those would feed back into themselves.
        let to_sessions = SessionLayer.with_filter(filter::filter_fn(|metadata| {
            metadata.target().starts_with("tierls")
        }));
        let buffers = LlamaBufferLayer.with_filter(filter::filter_fn(|metadata| {
            metadata.target().starts_with("llama")
        }));
        // A second `init` (tests that embed several servers) must not panic.
        let _ = tracing_subscriber::registry()
            .with(stderr)
            .with(to_sessions)
            .with(buffers)
            .try_init();
    });
}

/// A registered editor session: its id goes into the session span, its receiver yields the
/// records for that editor.
pub struct SessionLog {
    pub id: u64,
    pub records: UnboundedReceiver<LogRecord>,
}

struct SessionSink {
    sender: UnboundedSender<LogRecord>,
    level: LogLevel,
}

fn sinks() -> &'static Mutex<HashMap<u64, SessionSink>> {
    static SINKS: OnceLock<Mutex<HashMap<u64, SessionSink>>> = OnceLock::new();
    SINKS.get_or_init(Default::default)
}

pub fn register_session(level: LogLevel) -> SessionLog {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (sender, records) = unbounded_channel();
    lock_sinks().insert(id, SessionSink { sender, level });
    SessionLog { id, records }
}

pub fn set_session_level(id: u64, level: LogLevel) {
    if let Some(sink) = lock_sinks().get_mut(&id) {
        sink.level = level;
    }
}

pub fn unregister_session(id: u64) {
    lock_sinks().remove(&id);
}

fn lock_sinks() -> std::sync::MutexGuard<'static, HashMap<u64, SessionSink>> {
    lock(sinks())
}

fn level_allows(configured: LogLevel, level: Level) -> bool {
    let wanted = match level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Info,
        Level::DEBUG => LogLevel::Debug,
        Level::TRACE => LogLevel::Trace,
    };
    wanted <= configured
}

/// Bytes llama.cpp reported allocating for its buffers (weights, KV cache, compute, output)
/// in this process: the reference the memory estimate is checked against.
pub fn llama_cpp_allocated_bytes() -> u64 {
    LLAMA_BUFFER_BYTES.load(Ordering::Relaxed)
}

static LLAMA_BUFFER_BYTES: AtomicU64 = AtomicU64::new(0);

/// Adds up llama.cpp's `... buffer size = 12.00 MiB` log lines.
struct LlamaBufferLayer;

impl<S: Subscriber> Layer<S> for LlamaBufferLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut message = MessageVisitor::default();
        event.record(&mut message);
        if let Some(bytes) = parse_buffer_size(&message.message) {
            LLAMA_BUFFER_BYTES.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

/// `CPU KV buffer size =    60.00 MiB` → bytes.
pub fn parse_buffer_size(line: &str) -> Option<u64> {
    let (_, after) = line.split_once("buffer size =")?;
    let mut words = after.split_whitespace();
    let value: f64 = words.next()?.parse().ok()?;
    let scale = match words.next()? {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((value * scale) as u64)
}

struct SessionTag(u64);

struct SessionLayer;

impl<S> Layer<S> for SessionLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != SESSION_SPAN {
            return;
        }
        let mut visitor = SessionIdVisitor(None);
        attrs.record(&mut visitor);
        if let (Some(session), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(SessionTag(session));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(session) = scope
            .from_root()
            .find_map(|span| span.extensions().get::<SessionTag>().map(|tag| tag.0))
        else {
            return;
        };
        let level = *event.metadata().level();
        let sinks = lock_sinks();
        let Some(sink) = sinks.get(&session) else {
            return;
        };
        if !level_allows(sink.level, level) {
            return;
        }
        let mut message = MessageVisitor::default();
        event.record(&mut message);
        // A closed receiver means the session is ending; the record still went to stderr.
        let _ = sink.sender.send(LogRecord {
            level,
            message: message.finish(),
        });
    }
}

struct SessionIdVisitor(Option<u64>);

impl Visit for SessionIdVisitor {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "id" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl MessageVisitor {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else {
            format!("{}{}", self.message, self.fields)
        }
    }
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}
