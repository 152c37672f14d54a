//! A scripted inference server on loopback, for the ways a worker node goes wrong that a
//! real llama-server cannot be made to show on demand: 500s, stalls, malformed streams,
//! endless answers. It speaks just enough HTTP/1.1 and records every request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the node answers a generation request.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Streams these pieces in llama-server's format, then stops.
    Answer(Vec<&'static str>),
    /// Streams these pieces, one every `Duration`.
    Slowly(Vec<&'static str>, Duration),
    /// Answers `500` with a JSON error.
    Fails,
    /// Answers `400`: the request is too long for the node's context.
    Refuses,
    /// Streams these pieces, then holds the connection open and says nothing.
    Stalls(Vec<&'static str>),
    /// Streams these pieces, then closes the connection without the last event.
    Dies(Vec<&'static str>),
    /// Streams these raw bytes as the event stream.
    Raw(&'static str),
    /// Streams events forever.
    Endless,
    /// Streams huge events (256 KiB each) forever.
    Flood,
    /// Streams one space every `Duration`, forever: always under the stall timer.
    Trickle(Duration),
    /// Reads the prompt for `Duration` (watching for the client to hang up), then sends the
    /// head and these pieces: llama-server sends its head once the first token is ready.
    PrefillBeforeHead(Duration, Vec<&'static str>),
    /// Sends the head, reads the prompt for `Duration` (watching for a hang-up), then
    /// streams these pieces.
    PrefillAfterHead(Duration, Vec<&'static str>),
}

/// A request the node received.
#[derive(Clone, Debug)]
pub struct Received {
    /// When the request's head and body had arrived.
    pub at: std::time::Instant,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

pub struct FakeNode {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Connections the client closed while the node was still streaming.
    pub hung_up: Arc<Mutex<u32>>,
    /// Prompts the client hung up on before the node had read them to the end.
    pub prefill_cut: Arc<Mutex<u32>>,
    /// Generation requests being served now.
    pub open: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeNode {
    /// Starts a node on the HTTP runtime the router uses, so it outlives each test's own.
    pub fn start(behaviour: Behaviour) -> FakeNode {
        let seen = Seen::default();
        let (sender, receiver) = std::sync::mpsc::channel();
        let shared = seen.clone();
        let task = tierls::models::remote::http_runtime().spawn(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            sender.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, behaviour.clone(), shared.clone()));
            }
        });
        let address = receiver.recv().unwrap();
        FakeNode {
            url: format!("http://{address}"),
            received: seen.received,
            hung_up: seen.hung_up,
            prefill_cut: seen.prefill_cut,
            open: seen.open,
            task,
        }
    }

    pub fn generation_requests(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| {
                !["/health", "/props", "/slots", "/metrics", "/v1/models"]
                    .contains(&r.path.as_str())
            })
            .cloned()
            .collect()
    }
}

/// An address where nothing listens: connections are refused.
pub fn refusing_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

/// What the node's connections share.
#[derive(Clone, Default)]
struct Seen {
    received: Arc<Mutex<Vec<Received>>>,
    hung_up: Arc<Mutex<u32>>,
    prefill_cut: Arc<Mutex<u32>>,
    open: Arc<Mutex<u32>>,
}

/// Counts a generation request as open while it lives.
struct Open(Arc<Mutex<u32>>);

impl Open {
    fn new(open: &Arc<Mutex<u32>>) -> Open {
        *open.lock().unwrap() += 1;
        Open(open.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        *self.0.lock().unwrap() -= 1;
    }
}

/// Reads the prompt for `time`; false when the client hung up first.
async fn read_the_prompt(stream: &mut TcpStream, time: Duration) -> bool {
    let mut byte = [0u8; 1];
    tokio::select! {
        _ = tokio::time::sleep(time) => true,
        _ = stream.read(&mut byte) => false,
    }
}

async fn serve(mut stream: TcpStream, behaviour: Behaviour, seen: Seen) {
    let Seen {
        received,
        hung_up,
        prefill_cut,
        open,
    } = seen;
    let Some((path, authorization, body)) = read_request(&mut stream).await else {
        return;
    };
    received.lock().unwrap().push(Received {
        at: std::time::Instant::now(),
        path: path.clone(),
        authorization,
        body,
    });
    if path == "/health" || path == "/v1/models" {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{\"status\":\"ok\"}")
            .await;
        return;
    }
    let fixed = match path.as_str() {
        "/apply-template" => Some(r#"{"prompt":"<rendered>"}"#),
        "/slots" => Some(r#"[{"id":0,"is_processing":false},{"id":1,"is_processing":false}]"#),
        "/props" => Some(r#"{"default_generation_settings":{"n_ctx":1024}}"#),
        _ => None,
    };
    if let Some(answer) = fixed {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            answer.len()
        );
        let _ = stream.write_all(format!("{head}{answer}").as_bytes()).await;
        return;
    }
    let failure = match behaviour {
        Behaviour::Fails => Some(("500 Internal Server Error", "the model crashed")),
        Behaviour::Refuses => Some((
            "400 Bad Request",
            "the request exceeds the available context size",
        )),
        _ => None,
    };
    if let Some((status, message)) = failure {
        let answer = serde_json::json!({ "error": { "message": message } }).to_string();
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            answer.len()
        );
        let _ = stream.write_all(format!("{head}{answer}").as_bytes()).await;
        return;
    }
    let _open = Open::new(&open);
    if let Behaviour::PrefillBeforeHead(time, _) = behaviour
        && !read_the_prompt(&mut stream, time).await
    {
        *prefill_cut.lock().unwrap() += 1;
        return;
    }
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    if let Behaviour::PrefillAfterHead(time, _) = behaviour
        && !read_the_prompt(&mut stream, time).await
    {
        *prefill_cut.lock().unwrap() += 1;
        return;
    }
    let event = |content: &str, stop: bool| {
        format!(
            "data: {}\n\n",
            serde_json::json!({ "content": content, "stop": stop, "stop_type": if stop { "eos" } else { "none" } })
        )
    };
    let result: std::io::Result<()> = async {
        match behaviour {
            Behaviour::Answer(pieces)
            | Behaviour::PrefillBeforeHead(_, pieces)
            | Behaviour::PrefillAfterHead(_, pieces) => {
                for piece in pieces {
                    stream.write_all(event(piece, false).as_bytes()).await?;
                }
                stream.write_all(event("", true).as_bytes()).await?;
            }
            Behaviour::Slowly(pieces, every) => {
                for piece in pieces {
                    tokio::time::sleep(every).await;
                    stream.write_all(event(piece, false).as_bytes()).await?;
                    stream.flush().await?;
                }
                stream.write_all(event("", true).as_bytes()).await?;
            }
            Behaviour::Stalls(pieces) => {
                for piece in pieces {
                    stream.write_all(event(piece, false).as_bytes()).await?;
                }
                stream.flush().await?;
                // Say nothing, and notice when the client gives up.
                let mut byte = [0u8; 1];
                let _ = stream.read(&mut byte).await;
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            Behaviour::Dies(pieces) => {
                for piece in pieces {
                    stream.write_all(event(piece, false).as_bytes()).await?;
                }
            }
            Behaviour::Raw(raw) => stream.write_all(raw.as_bytes()).await?,
            Behaviour::Endless => {
                let block = event(&"x".repeat(1000), false).repeat(64);
                loop {
                    stream.write_all(block.as_bytes()).await?;
                }
            }
            Behaviour::Flood => {
                let block = event(&"y".repeat(256 * 1024), false);
                loop {
                    stream.write_all(block.as_bytes()).await?;
                }
            }
            Behaviour::Trickle(every) => loop {
                stream.write_all(event(" ", false).as_bytes()).await?;
                stream.flush().await?;
                tokio::time::sleep(every).await;
            },
            Behaviour::Fails | Behaviour::Refuses => unreachable!(),
        }
        stream.flush().await
    }
    .await;
    if result.is_err() {
        *hung_up.lock().unwrap() += 1;
    }
}

/// The request line's path, the `Authorization` header and the JSON body.
async fn read_request(stream: &mut TcpStream) -> Option<(String, Option<String>, Value)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1)?.to_owned();
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buffer[head_end..]).unwrap_or(Value::Null);
    Some((path, header("authorization"), body))
}
