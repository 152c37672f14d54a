//! A small LSP client: what `tierls demo` and the tests use to drive a real server.
//!
//! Every wait has a time limit, so a server that stops answering fails a test or the demo
//! with a message instead of hanging it.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::framing::{FrameReader, write_frame};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no answer within {0:?} while waiting for {1}")]
    Timeout(Duration, String),
    #[error("the server closed the connection")]
    Closed,
    #[error("writing to the server failed: {0}")]
    Io(#[from] std::io::Error),
}

pub struct LspClient {
    writer: Box<dyn AsyncWrite + Unpin + Send>,
    incoming: mpsc::UnboundedReceiver<Value>,
    next_id: i64,
    /// Notifications and server-to-client requests not yet taken.
    notifications: Vec<Value>,
    /// Results for the server's requests, by method.
    answers: std::collections::HashMap<String, Value>,
    timeout: Duration,
}

impl LspClient {
    /// Starts reading the server's messages on a task of its own.
    pub fn new<R, W>(reader: R, writer: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, incoming) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut frames = FrameReader::new(reader, Arc::new(AtomicUsize::new(usize::MAX)));
            while let Ok(Some(frame)) = frames.next().await {
                let message = match frame {
                    Ok(body) => serde_json::from_slice(&body)
                        .unwrap_or_else(|err| json!({ "unparsable": err.to_string() })),
                    Err(err) => json!({ "broken_frame": err.to_string() }),
                };
                if sender.send(message).is_err() {
                    break;
                }
            }
        });
        LspClient {
            writer: Box::new(writer),
            incoming,
            next_id: 1,
            notifications: Vec::new(),
            answers: std::collections::HashMap::new(),
            timeout: Duration::from_secs(30),
        }
    }

    /// A client of a server running as `child` (`tierls serve` with piped stdin and
    /// stdout); `None` when its pipes were not captured.
    pub fn of_child(child: &mut tokio::process::Child) -> Option<Self> {
        Some(LspClient::new(child.stdout.take()?, child.stdin.take()?))
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.set_timeout(timeout);
        self
    }

    /// How long each wait for the server lasts from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a request and returns the whole response message (`result` or `error`).
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.send_raw(&serde_json::to_vec(&message).unwrap_or_default())
            .await?;
        self.response_to(json!(id), method).await
    }

    /// Waits for the response with this id, keeping everything else that arrives meanwhile.
    pub async fn response_to(&mut self, id: Value, what: &str) -> Result<Value, ClientError> {
        loop {
            let message = self.next_message(what).await?;
            if message.get("method").is_none() && message.get("id") == Some(&id) {
                return Ok(message);
            }
            self.keep(message).await?;
        }
    }

    pub async fn notify(&mut self, method: &str, params: Value) -> Result<(), ClientError> {
        let message = json!({ "jsonrpc": "2.0", "method": method, "params": params });
        self.send_raw(&serde_json::to_vec(&message).unwrap_or_default())
            .await
    }

    /// Sends one framed body, which need not be valid JSON.
    pub async fn send_raw(&mut self, body: &[u8]) -> Result<(), ClientError> {
        Ok(write_frame(&mut self.writer, body).await?)
    }

    /// Sends bytes exactly as given, without framing.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer.write_all(bytes).await?;
        Ok(self.writer.flush().await?)
    }

    /// The next message of any kind.
    pub async fn next_message(&mut self, what: &str) -> Result<Value, ClientError> {
        match tokio::time::timeout(self.timeout, self.incoming.recv()).await {
            Ok(Some(message)) => Ok(message),
            Ok(None) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout(self.timeout, what.to_owned())),
        }
    }

    /// The next message if one arrives within `wait`.
    pub async fn next_message_within(
        &mut self,
        wait: Duration,
    ) -> Result<Option<Value>, ClientError> {
        match tokio::time::timeout(wait, self.incoming.recv()).await {
            Ok(Some(message)) => Ok(Some(message)),
            Ok(None) => Err(ClientError::Closed),
            Err(_) => Ok(None),
        }
    }

    /// Sends a request without waiting for its answer; returns its id.
    pub async fn send_request(&mut self, method: &str, params: Value) -> Result<i64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.send_raw(&serde_json::to_vec(&message).unwrap_or_default())
            .await?;
        Ok(id)
    }

    /// Waits for a notification (or server request) with this method, taking it.
    pub async fn wait_for(&mut self, method: &str) -> Result<Value, ClientError> {
        if let Some(index) = self
            .notifications
            .iter()
            .position(|m| m["method"] == method)
        {
            return Ok(self.notifications.remove(index));
        }
        loop {
            let message = self.next_message(method).await?;
            if message["method"] == method {
                self.answer_if_request(&message).await?;
                return Ok(message);
            }
            self.keep(message).await?;
        }
    }

    /// Everything kept so far plus whatever arrives until the server has been quiet for
    /// `quiet`: logs travel on their own task, so they may trail the response they explain.
    pub async fn drain(&mut self, quiet: Duration) -> Result<Vec<Value>, ClientError> {
        loop {
            match tokio::time::timeout(quiet, self.incoming.recv()).await {
                Ok(Some(message)) => self.keep(message).await?,
                Ok(None) | Err(_) => return Ok(self.take_notifications()),
            }
        }
    }

    /// Puts messages back, to be found by later waits.
    pub fn keep_all(&mut self, messages: Vec<Value>) {
        self.notifications.splice(0..0, messages);
    }

    /// Everything kept so far, oldest first.
    pub fn take_notifications(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.notifications)
    }

    /// Sends `shutdown` and `exit`; the caller then waits for the server to end.
    pub async fn shutdown(&mut self) -> Result<Value, ClientError> {
        let response = self.request("shutdown", Value::Null).await?;
        self.notify("exit", Value::Null).await?;
        Ok(response)
    }

    async fn keep(&mut self, message: Value) -> Result<(), ClientError> {
        self.answer_if_request(&message).await?;
        self.notifications.push(message);
        Ok(())
    }

    /// Answers the server's `method` requests with `result` from now on.
    pub fn answer_with(&mut self, method: &str, result: Value) {
        self.answers.insert(method.to_owned(), result);
    }

    /// Server-to-client requests get the answer set with `answer_with`, else an empty
    /// success, the answer of a client that has nothing to add.
    async fn answer_if_request(&mut self, message: &Value) -> Result<(), ClientError> {
        if let (Some(id), Some(method)) = (message.get("id"), message.get("method")) {
            let result = method
                .as_str()
                .and_then(|method| self.answers.get(method))
                .cloned()
                .unwrap_or(Value::Null);
            let reply = json!({ "jsonrpc": "2.0", "id": id, "result": result });
            self.send_raw(&serde_json::to_vec(&reply).unwrap_or_default())
                .await?;
        }
        Ok(())
    }
}
