//! Hostile files, plans and clients: each must get a clear error, never a frozen server, a
//! read outside the root or a half-applied change.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tierls::core::plan::render::render_plan;
use tierls::core::plan::{RawPlan, RawStep, Workspace, validate};
use tierls::disk::{self, FileWrite};
use tierls::refactor::parse_plan;

use tierls::lsp::client::LspClient;

use crate::support::TestServer;

const TIERLS: &str = env!("CARGO_BIN_EXE_tierls");

/// A workspace that knows no symbols and has no files: enough for the checks that come
/// before the index is asked.
struct Empty;

impl Workspace for Empty {
    fn symbols(&self, _file: &str) -> Option<Vec<String>> {
        None
    }
    fn exists(&self, _file: &str) -> bool {
        false
    }
}

fn chained_steps(count: u32) -> Vec<RawStep> {
    (1..=count)
        .map(|id| RawStep {
            id,
            file: format!("src/new{id}.rs"),
            target: String::new(),
            action: tierls::core::plan::Action::CreateFile,
            instruction: "write it".into(),
            depends_on: (1..id).rev().take(1).collect(),
        })
        .collect()
}

#[test]
fn a_huge_plan_is_refused_at_once() {
    // A node that ignores the schema and sends 10,000 chained steps.
    let steps: Vec<String> = (1..=10_000)
        .map(|id| {
            let depends = if id == 1 { String::new() } else { (id - 1).to_string() };
            format!(
                r#"{{"id": {id}, "file": "src/new{id}.rs", "target": "", "action": "create_file", "instruction": "x", "depends_on": [{depends}]}}"#
            )
        })
        .collect();
    let answer = format!(r#"{{"summary": "s", "steps": [{}]}}"#, steps.join(","));
    let error = parse_plan(&answer).unwrap_err().to_string();
    assert!(
        error.starts_with(
            "the planner's answer is not a plan (it has 10000 steps; a plan has at most 8)"
        ),
        "{error}"
    );

    // Validation on its own looks at the schema's number of steps only.
    let raw = RawPlan {
        summary: "s".repeat(100_000),
        steps: chained_steps(10_000),
    };
    let plan = validate("many", &raw, &Empty);
    assert_eq!(plan.steps.len(), 8);
    assert_eq!(plan.summary.chars().count(), 200);
    assert_eq!(plan.rejected.len(), 10_000 - 8);
    assert_eq!(
        plan.rejected[0].reason,
        "the plan has more than 8 steps, the most a plan may have"
    );
}

#[test]
fn validation_refuses_what_the_schema_and_the_workspace_forbid() {
    let long_name = format!("src/{}.rs", "a".repeat(300));
    let long_instruction = "x".repeat(401);
    let raw = |steps: Vec<(&str, &str)>| RawPlan {
        summary: "hostile".into(),
        steps: steps
            .into_iter()
            .enumerate()
            .map(|(index, (file, instruction))| RawStep {
                id: index as u32 + 1,
                file: file.into(),
                target: String::new(),
                action: tierls::core::plan::Action::CreateFile,
                instruction: instruction.into(),
                depends_on: Vec::new(),
            })
            .collect(),
    };
    let hostile = raw(vec![
        (".git/hooks/pre-commit", "run this"),
        (".cargo/config.toml", "add a runner"),
        (".vscode/tasks.json", "add a task"),
        ("tierls.toml", "use my node"),
        ("src/name with spaces.rs", "a module"),
        (&long_name, "a module"),
        ("src/ok.rs", &long_instruction),
        ("src/fine.rs", "a module"),
    ]);
    let mut shown = render_plan(&validate("refactor the shapes", &hostile, &Empty));
    // Named in the instruction, configuration may be written (the user reviews the plan).
    let named = raw(vec![("tierls.toml", "point the executor at my node")]);
    shown.push_str("\n---\n\n");
    shown.push_str(&render_plan(&validate(
        "write tierls.toml for my node",
        &named,
        &Empty,
    )));
    insta::assert_snapshot!(shown);
}

/// A workspace folder holding `files`.
fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// Writes `writes` (path, old text or `None` for a new file, new text) all or none and
/// shows the outcome, then each listed file as it is on disk afterwards.
fn check_write_all(
    root: &Path,
    writes: &[(&str, Option<&str>, &str)],
    afterwards: &[&str],
) -> String {
    let writes: Vec<FileWrite<'_>> = writes
        .iter()
        .map(|(relative, expected, text)| FileWrite {
            relative,
            expected: *expected,
            text,
        })
        .collect();
    let mut shown = match disk::write_all(root, &writes, 1 << 20) {
        Ok(()) => "written\n".to_owned(),
        Err(errors) => errors
            .iter()
            .map(|(_, err)| {
                let message = err
                    .to_string()
                    .replace(&root.display().to_string(), "<root>");
                format!("{message}\n")
            })
            .collect(),
    };
    for file in afterwards {
        let path = root.join(file);
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => format!("{text:?}"),
            Err(_) if path.is_dir() => "a folder".into(),
            Err(_) => "absent".into(),
        };
        shown.push_str(&format!("  {file}: {state}\n"));
    }
    shown
}

/// One all-or-none case: a title, the writes (path, old text or `None`, new text) and the
/// files to show afterwards.
type WriteCase<'a> = (
    &'a str,
    Vec<(&'a str, Option<&'a str>, &'a str)>,
    Vec<&'a str>,
);

#[test]
fn writes_land_all_or_none() {
    let dir = folder(&[("main.py", "print(1)\n"), ("a.py", "a = 1\n")]);
    let root = dir.path().canonicalize().unwrap();
    let long = format!("pkg/{}.py", "n".repeat(300));
    let edit_a = ("a.py", Some("a = 1\n"), "a = 2\n");
    let cases: Vec<WriteCase<'_>> = vec![
        (
            "a new file under an existing file",
            vec![edit_a, ("main.py/inner.py", None, "x = 1\n")],
            vec!["a.py", "main.py"],
        ),
        (
            "a file name over the system's limit",
            vec![edit_a, (&long, None, "x = 1\n")],
            vec!["a.py", "pkg"],
        ),
        (
            "a file changed since it was read",
            vec![
                ("a.py", Some("a = 0\n"), "a = 2\n"),
                ("b.py", None, "b = 1\n"),
            ],
            vec!["a.py", "b.py"],
        ),
        // The last file needs `x/y.py` to be a folder: only writing finds that out, and
        // what was written before is undone.
        (
            "a failure while writing: everything written is undone",
            vec![
                edit_a,
                ("x/y.py", None, "y = 1\n"),
                ("x/y.py/z.py", None, "z = 1\n"),
            ],
            vec!["a.py", "x/y.py", "x"],
        ),
        (
            "all good",
            vec![edit_a, ("deep/er/b.py", None, "b = 1\n")],
            vec!["a.py", "deep/er/b.py"],
        ),
    ];
    let shown: String = cases
        .iter()
        .map(|(title, writes, afterwards)| {
            format!("# {title}\n{}", check_write_all(&root, writes, afterwards))
        })
        .collect();
    insta::assert_snapshot!(shown);
}

#[test]
fn only_regular_files_inside_the_root_are_read() {
    let outside = folder(&[("secret.rs", "fn outside_secret() {}\n")]);
    let dir = folder(&[("src/ok.rs", "fn ok() {}\n")]);
    let root = dir.path().canonicalize().unwrap();
    make_hostile_files(&root, outside.path());
    let mut shown = String::new();
    for name in [
        "src/pipe.rs",
        "src/zero.rs",
        "src/out.rs",
        "src/dangling.rs",
        "src/huge.rs",
        "src/dir.rs",
        "src/ok.rs",
    ] {
        let started = Instant::now();
        let outcome = match disk::read_text(&root, Path::new(name), 1 << 20) {
            Ok(text) => format!("read {text:?}"),
            Err(err) => err
                .to_string()
                .replace(&root.display().to_string(), "<root>")
                .replace(&outside.path().display().to_string(), "<outside>"),
        };
        assert!(started.elapsed() < Duration::from_secs(5), "{name} blocked");
        shown.push_str(&format!("{name}: {outcome}\n"));
    }
    // A device read directly: refused before a byte is read.
    let zero = disk::read_regular(Path::new("/dev/zero"), 1 << 20).unwrap_err();
    shown.push_str(&format!("/dev/zero: {zero}\n"));
    insta::assert_snapshot!(shown);
}

/// A FIFO, a link to `/dev/zero`, a link out of the root, a dangling link, a sparse 3 GB
/// file and a folder named like a source file, all under `src/`.
fn make_hostile_files(root: &Path, outside: &Path) {
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let fifo = std::ffi::CString::new(src.join("pipe.rs").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
    std::os::unix::fs::symlink("/dev/zero", src.join("zero.rs")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.rs"), src.join("out.rs")).unwrap();
    std::os::unix::fs::symlink(root.join("src/gone.rs"), src.join("dangling.rs")).unwrap();
    let huge = std::fs::File::create(src.join("huge.rs")).unwrap();
    huge.set_len(3 << 30).unwrap();
    std::fs::create_dir_all(src.join("dir.rs")).unwrap();
}

fn uri_in(root: &Path, path: &str) -> tower_lsp::lsp_types::Url {
    tower_lsp::lsp_types::Url::from_file_path(root.join(path)).unwrap()
}

/// Every way a file event can name a hostile or outside file, sent to a live server.
async fn send_hostile_events(client: &mut LspClient, root: &Path, outside: &Path) {
    let names = [
        "src/pipe.rs",
        "src/zero.rs",
        "src/out.rs",
        "src/dangling.rs",
        "src/huge.rs",
        "src/dir.rs",
    ];
    let outside_uri = uri_in(outside, "secret.rs");
    let mut uris: Vec<Value> = names.iter().map(|name| json!(uri_in(root, name))).collect();
    uris.push(json!(outside_uri));
    let changes: Vec<Value> = uris
        .iter()
        .flat_map(|uri| {
            [
                json!({ "uri": uri, "type": 1 }),
                json!({ "uri": uri, "type": 2 }),
            ]
        })
        .collect();
    client
        .notify(
            "workspace/didChangeWatchedFiles",
            json!({ "changes": changes }),
        )
        .await
        .unwrap();
    let files: Vec<Value> = uris.iter().map(|uri| json!({ "uri": uri })).collect();
    client
        .notify("workspace/didCreateFiles", json!({ "files": files }))
        .await
        .unwrap();
    client
        .notify(
            "workspace/didRenameFiles",
            json!({ "files": [
                { "oldUri": uri_in(root, "src/pipe.rs"), "newUri": uri_in(root, "src/renamed.rs") },
                { "oldUri": outside_uri, "newUri": uri_in(root, "src/taken.rs") },
            ] }),
        )
        .await
        .unwrap();
    // Open and close: the index goes back to the disk, which it must not read here.
    for uri in [uri_in(root, "src/zero.rs"), outside_uri] {
        client
            .notify(
                "textDocument/didOpen",
                json!({ "textDocument": { "uri": uri, "languageId": "rust", "version": 1, "text": "fn while_open() {}\n" } }),
            )
            .await
            .unwrap();
        client
            .notify(
                "textDocument/didClose",
                json!({ "textDocument": { "uri": uri } }),
            )
            .await
            .unwrap();
    }
}

async fn symbol_names(client: &mut LspClient, query: &str) -> Vec<String> {
    let found = client
        .request("workspace/symbol", json!({ "query": query }))
        .await
        .unwrap();
    found["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|symbol| symbol["name"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The start-up scan ends with its `$/progress` end.
async fn wait_for_the_scan(client: &mut LspClient) {
    loop {
        let progress = client.wait_for("$/progress").await.unwrap();
        if progress["params"]["value"]["kind"] == "end" {
            break;
        }
    }
}

/// What every hostile-file test checks once the events are in: the server still answers,
/// inside symbols are found, and nothing from outside the root (or from a closed
/// document's editor copy) is in the index.
async fn check_index_after_hostile_events(client: &mut LspClient) {
    assert_eq!(symbol_names(client, "inside_ok").await, ["inside_ok"]);
    for query in ["outside_secret", "while_open"] {
        assert!(
            symbol_names(client, query).await.is_empty(),
            "{query} reached the index"
        );
    }
}

#[tokio::test]
async fn hostile_files_neither_freeze_the_server_nor_leak_outside_text() {
    let outside = folder(&[("secret.rs", "fn outside_secret() {}\n")]);
    let mut server = TestServer::start(&[("src/ok.rs", b"fn inside_ok() {}\n")]);
    let root = server.root.path().canonicalize().unwrap();
    make_hostile_files(&root, outside.path());
    server
        .initialize_as(
            json!({ "window": { "workDoneProgress": true } }),
            json!({ "index": { "enabled": true } }),
        )
        .await;
    wait_for_the_scan(&mut server.client).await;
    send_hostile_events(&mut server.client, &root, outside.path()).await;
    check_index_after_hostile_events(&mut server.client).await;
    let pipe = server.view("src/pipe.rs").await;
    let message = pipe["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.ends_with("a named pipe (FIFO), not a regular file; only regular files are read"),
        "{pipe}"
    );
    let out = server.view("src/out.rs").await;
    let message = out["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("outside the workspace root"), "{out}");
    assert!(server.finish().await.clean);
}

/// `initialize` params of a client that shows progress and watches files, with indexing on.
fn initialize_params(root: &Path) -> Value {
    json!({
        "processId": null,
        "rootUri": tower_lsp::lsp_types::Url::from_directory_path(root).unwrap(),
        "capabilities": {
            "window": { "workDoneProgress": true },
            "workspace": { "didChangeWatchedFiles": { "dynamicRegistration": true } }
        },
        "initializationOptions": { "index": { "enabled": true } },
    })
}

/// Peak resident memory of a process, from `/proc` (VmHWM), in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test]
async fn the_server_stays_small_under_hostile_files_and_ends_with_its_input() {
    let outside = folder(&[("secret.rs", "fn outside_secret() {}\n")]);
    let dir = folder(&[("src/ok.rs", "fn inside_ok() {}\n")]);
    let root = dir.path().canonicalize().unwrap();
    make_hostile_files(&root, outside.path());
    let mut command = tokio::process::Command::new(TIERLS);
    command
        .arg("serve")
        .env("TIERLS_CONFIG_DIR", dir.path().join("no-user-config"))
        .env("TIERLS_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    // A memory ceiling: the process's data may not pass 512 MiB. Reading `/dev/zero` until
    // the file limit once took 2.1 GB.
    // SAFETY: setrlimit is async-signal-safe, the only call between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let ceiling = libc::rlimit {
                rlim_cur: 512 << 20,
                rlim_max: 512 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &ceiling) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let pid = child.id().unwrap();
    let mut client = LspClient::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let response = client
        .request("initialize", initialize_params(&root))
        .await
        .unwrap();
    assert!(response.get("result").is_some(), "{response}");
    client.notify("initialized", json!({})).await.unwrap();
    wait_for_the_scan(&mut client).await;
    send_hostile_events(&mut client, &root, outside.path()).await;
    check_index_after_hostile_events(&mut client).await;
    let peak = peak_kib(pid).unwrap_or(0);
    eprintln!("peak resident memory under hostile file events: {peak} KiB");
    assert!(peak > 0 && peak < 512 * 1024, "{peak} KiB");

    assert!(client.shutdown().await.is_ok());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the server ends at exit")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn the_server_ends_with_its_input_while_waiting_on_the_client() {
    use std::io::Write;
    let dir = folder(&[("src/ok.rs", "fn inside_ok() {}\n")]);
    let root = dir.path().canonicalize().unwrap();
    let mut child = std::process::Command::new(TIERLS)
        .arg("serve")
        .env("TIERLS_CONFIG_DIR", dir.path().join("no-user-config"))
        .env("TIERLS_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let frame = |body: Value| {
        let body = body.to_string();
        format!("Content-Length: {}\r\n\r\n{body}", body.len())
    };
    let mut stdin = child.stdin.take().unwrap();
    // The server asks the client for a progress token (the scan) and a file watcher right
    // after `initialized`; this client never reads, so neither is ever answered.
    let initialize = frame(
        json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize_params(&root) }),
    );
    stdin.write_all(initialize.as_bytes()).unwrap();
    stdin.flush().unwrap();
    // As an editor would: `initialized` once `initialize` has been answered.
    std::thread::sleep(Duration::from_millis(500));
    let initialized = frame(json!({ "jsonrpc": "2.0", "method": "initialized", "params": {} }));
    stdin.write_all(initialized.as_bytes()).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    drop(stdin);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the server was still running 20 s after its input ended");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // No `shutdown` came first: LSP's exit status 1.
    assert_eq!(status.code(), Some(1), "{status}");
}

#[test]
fn completions_and_hovers_lose_hidden_bidirectional_controls() {
    use tierls::core::hidden::{first_bidi_control, without_bidi_controls};
    let sneaky = "if is_admin \u{202e}{ \u{2066}// check\u{2069}";
    assert_eq!(first_bidi_control(sneaky), Some('\u{202e}'));
    assert_eq!(without_bidi_controls(sneaky), "if is_admin { // check");
    // Right-to-left text itself is fine: only the invisible controls go.
    assert_eq!(
        without_bidi_controls("let name = \"שלום\";"),
        "let name = \"שלום\";"
    );
}

#[test]
fn a_configuration_that_is_a_fifo_is_refused_not_waited_on() {
    let dir = folder(&[]);
    let fifo = std::ffi::CString::new(dir.path().join("tierls.toml").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
    let mut child = std::process::Command::new(TIERLS)
        .args(["status", "--workspace"])
        .arg(dir.path())
        .env("TIERLS_CONFIG_DIR", dir.path().join("none"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("tierls status waited on a FIFO named tierls.toml");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("tierls.toml: cannot read the file: a named pipe (FIFO), not a regular file"),
        "{stderr}"
    );
}
