//! The harness: a real server in memory (tokio duplex) or the built binary over stdio,
//! driven by the same LSP client the demo uses.

use std::path::Path;

use serde_json::{Value, json};
use tempfile::TempDir;
use tierls::lsp::client::LspClient;
use tierls::lsp::{self, Outcome, ServerOptions};
use tokio::task::JoinHandle;
use tower_lsp::lsp_types::Url;

pub struct TestServer {
    pub client: LspClient,
    pub root: TempDir,
    server: JoinHandle<Outcome>,
}

impl TestServer {
    /// A server in memory over a workspace holding `files` (path, contents).
    pub fn start(files: &[(&str, &[u8])]) -> TestServer {
        Self::start_with(files, ServerOptions::default())
    }

    /// A server in memory whose tiers are served by the given models.
    pub fn start_with_models(
        files: &[(&str, &[u8])],
        models: Vec<(
            tierls::config::Tier,
            std::sync::Arc<dyn tierls::models::Model>,
        )>,
    ) -> TestServer {
        Self::start_with(
            files,
            ServerOptions {
                provided_models: models,
                ..ServerOptions::default()
            },
        )
    }

    fn start_with(files: &[(&str, &[u8])], options: ServerOptions) -> TestServer {
        let root = tempfile::tempdir().expect("temporary workspace");
        for (path, contents) in files {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        // No user configuration: nothing of the machine running the tests leaks in.
        let (client, server) = lsp::start_in_memory(ServerOptions {
            user_config: None,
            ..options
        });
        TestServer {
            client,
            root,
            server,
        }
    }

    /// `initialize` + `initialized`, offering these position encodings; returns the result.
    /// Indexing is off unless `options` turns it on: its log lines would interleave with
    /// what a test is about.
    pub async fn initialize_with(&mut self, encodings: &[&str], mut options: Value) -> Value {
        if options.is_null() {
            options = json!({});
        }
        if options.get("index").is_none() {
            options["index"] = json!({ "enabled": false });
        }
        let params = json!({
            "processId": null,
            "rootUri": self.root_uri(),
            "capabilities": { "general": { "positionEncodings": encodings } },
            "initializationOptions": options,
        });
        let response = self.client.request("initialize", params).await.unwrap();
        self.client.notify("initialized", json!({})).await.unwrap();
        response["result"].clone()
    }

    /// `initialize` + `initialized` with these client capabilities and options.
    pub async fn initialize_as(&mut self, capabilities: Value, options: Value) -> Value {
        let params = json!({
            "processId": null,
            "rootUri": self.root_uri(),
            "capabilities": capabilities,
            "initializationOptions": options,
        });
        let response = self.client.request("initialize", params).await.unwrap();
        self.client.notify("initialized", json!({})).await.unwrap();
        response["result"].clone()
    }

    pub async fn initialize(&mut self) -> Value {
        self.initialize_with(&["utf-16"], Value::Null).await
    }

    pub fn root_uri(&self) -> Url {
        Url::from_directory_path(self.root.path().canonicalize().unwrap()).unwrap()
    }

    pub fn uri(&self, path: &str) -> Url {
        Url::from_file_path(self.root.path().canonicalize().unwrap().join(path)).unwrap()
    }

    pub async fn open(&mut self, path: &str, text: &str) {
        self.open_as(path, "rust", text).await;
    }

    pub async fn open_as(&mut self, path: &str, language_id: &str, text: &str) {
        let uri = self.uri(path);
        self.client
            .notify(
                "textDocument/didOpen",
                json!({ "textDocument": { "uri": uri, "languageId": language_id, "version": 1, "text": text } }),
            )
            .await
            .unwrap();
    }

    pub async fn change(&mut self, path: &str, version: i32, changes: Value) {
        let uri = self.uri(path);
        self.client
            .notify(
                "textDocument/didChange",
                json!({ "textDocument": { "uri": uri, "version": version }, "contentChanges": changes }),
            )
            .await
            .unwrap();
    }

    pub async fn close(&mut self, path: &str) {
        let uri = self.uri(path);
        self.client
            .notify(
                "textDocument/didClose",
                json!({ "textDocument": { "uri": uri } }),
            )
            .await
            .unwrap();
    }

    /// The server's view of a document: `{source, version, text}` or the error.
    pub async fn view(&mut self, path: &str) -> Value {
        let uri = self.uri(path);
        self.client
            .request("tierls/viewDocument", json!({ "uri": uri }))
            .await
            .unwrap()
    }

    pub async fn text_of(&mut self, path: &str) -> String {
        let view = self.view(path).await;
        view["result"]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text: {view}"))
            .to_owned()
    }

    /// A request answered only after every message sent before it has been handled.
    pub async fn round_trip(&mut self) {
        let response = self
            .client
            .request("tierls/noSuchMethod", json!({}))
            .await
            .unwrap();
        assert_eq!(response["error"]["code"], -32601, "{response}");
    }

    /// `shutdown` + `exit`, then waits for the server to end.
    pub async fn finish(mut self) -> Outcome {
        let response = self.client.shutdown().await.unwrap();
        assert!(
            response.get("error").is_none() && response.get("result") == Some(&Value::Null),
            "shutdown: {response}"
        );
        self.wait().await
    }

    /// `exit` without `shutdown`, then waits for the server to end.
    pub async fn exit(mut self) -> Outcome {
        self.client.notify("exit", Value::Null).await.unwrap();
        self.wait().await
    }

    async fn wait(self) -> Outcome {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.server)
            .await
            .expect("the server ends after exit")
            .unwrap()
    }
}

/// One line per message, readable in a snapshot: what the client saw. Responses come
/// first, then `showMessage`s, then `logMessage`s, each in arrival order: the three travel
/// separately, so their interleaving is not deterministic.
pub fn transcript(messages: &[Value], root: &Path) -> String {
    let root = root.canonicalize().unwrap().display().to_string();
    let mut messages: Vec<&Value> = messages.iter().collect();
    messages.sort_by_key(|message| match message["method"].as_str() {
        None => 0,
        Some("window/showMessage") => 1,
        Some(_) => 2,
    });
    messages
        .into_iter()
        .map(|message| describe(message).replace(&root, "$ROOT"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn describe(message: &Value) -> String {
    if let Some(method) = message["method"].as_str() {
        let params = &message["params"];
        return match method {
            "window/logMessage" | "window/showMessage" => {
                let kind = match params["type"].as_i64() {
                    Some(1) => "error",
                    Some(2) => "warning",
                    Some(3) => "info",
                    _ => "log",
                };
                format!(
                    "{method} [{kind}] {}",
                    params["message"].as_str().unwrap_or_default()
                )
            }
            _ => format!("{method} {params}"),
        };
    }
    if let Some(error) = message.get("error") {
        return format!(
            "response id={} error {}: {}",
            message["id"],
            error["code"],
            error["message"].as_str().unwrap_or_default()
        );
    }
    format!("response id={} result {}", message["id"], message["result"])
}

/// Copies the folder `from` (recursively) into `to`, creating it.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Held by every test that runs a real model (here or in a child process). llama.cpp's
/// threads spin while they wait for work, so two models decoding at once on this 2-core
/// machine slow each other down tenfold or more; one at a time finishes sooner.
pub fn one_model_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits for a log line containing `needle`, keeping the others for later waits.
pub async fn wait_for_log(server: &mut TestServer, needle: &str) {
    let mut others = Vec::new();
    loop {
        let log = server.client.wait_for("window/logMessage").await.unwrap();
        if log["params"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains(needle)
        {
            break;
        }
        others.push(log);
    }
    server.client.keep_all(others);
}

/// The test model with one token's text changed (`<start_of_image>` spelt
/// `<start_of_imagE>`, the same length, so the file stays a valid GGUF that loads): the same
/// architecture and vocabulary size, another vocabulary. Made once per test run.
pub fn model_with_another_vocabulary() -> &'static Path {
    static PATH: std::sync::OnceLock<(TempDir, std::path::PathBuf)> = std::sync::OnceLock::new();
    let (_, path) = PATH.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other-vocabulary.gguf");
        let mut bytes = std::fs::read(tierls::models::embedded::test_model_path()).unwrap();
        let token = b"<start_of_image>";
        let at = bytes
            .windows(token.len())
            .position(|window| window == token)
            .expect("the test model's vocabulary has <start_of_image>");
        bytes[at + token.len() - 2] = b'E';
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    });
    path
}

/// Indexes `source` as the file `path` of `language`.
pub fn index_source(
    index: &mut tierls::core::index::table::Index,
    path: &str,
    language: tierls::core::index::language::Language,
    source: &str,
) {
    let tree = tierls::core::index::extract::parse(language, source, None).unwrap();
    index.upsert(
        path,
        language,
        tierls::core::index::extract::extract(language, &tree, source),
        source.len(),
    );
}
