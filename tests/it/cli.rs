//! The built binary, spawned as an editor or a user would run it.

use std::process::Stdio;
use std::time::Duration;

use crate::support::copy_tree;
use serde_json::{Value, json};
use tierls::lsp::client::LspClient;

const TIERLS: &str = env!("CARGO_BIN_EXE_tierls");

fn run(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(TIERLS)
        .args(args)
        .output()
        .expect("run tierls");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_subcommands() {
    let (status, stdout, _) = run(&["--help"]);
    assert_eq!(status, 0);
    insta::assert_snapshot!("help", stdout);
}

#[test]
fn version_names_the_crate_version() {
    let (status, stdout, _) = run(&["--version"]);
    assert_eq!(
        (status, stdout.trim()),
        (0, concat!("tierls ", env!("CARGO_PKG_VERSION")))
    );
}

/// A copy of a plan fixture inside an outer folder that holds a file of its own, with a
/// `tierls.toml` whose executor tier runs the test model.
fn plan_workspace(fixture: &str, config: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("outside.rs"), "fn outside() {}\n").unwrap();
    let root = outer.path().join("workspace");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/plans")
        .join(fixture);
    copy_tree(&source, &root);
    std::fs::write(root.join("tierls.toml"), config).unwrap();
    (outer, root)
}

/// Every file under `root`, with its contents.
fn snapshot_tree(root: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let mut files = std::collections::BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                let relative = entry
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(
                    relative,
                    std::fs::read_to_string(entry.path()).unwrap_or_default(),
                );
            }
        }
    }
    files
}

fn run_in(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(TIERLS)
        .args(args)
        .env("TIERLS_CONFIG_DIR", "/nonexistent")
        .output()
        .expect("run tierls");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The whole flow on the real test model: the grammar gives a valid plan, the executor
/// writes whatever a 270M model writes, and the workspace is never corrupted: each file is
/// untouched or parses no worse than before, the report names exactly the files written,
/// and nothing outside the workspace changes. Routing would skip the planner for this
/// one-symbol refactor; it is turned off so the grammar-constrained planning pass runs.
#[test]
fn plan_runs_end_to_end_on_the_test_model() {
    let _turn = crate::support::one_model_at_a_time();
    let model = tierls::models::embedded::test_model_path();
    let config = format!(
        "[tiers.executor]\nmodel = {:?}\ncontext = 4096\nslots = 2\nchat_template = \"gemma\"\n\n[plan]\nmax_step_tokens = 256\n\n[routing]\nskip_planner = false\n",
        model.display().to_string()
    );
    let (outer, root) = plan_workspace("rust", &config);
    let before = snapshot_tree(&root);
    let (status, stdout, stderr) = run_in(&[
        "plan",
        "use std::f64::consts::PI instead of 3.14",
        "--workspace",
        root.to_str().unwrap(),
        "--focus",
        "src/geometry.rs:Circle",
        "--apply",
    ]);
    assert!(status == 0 || status == 1, "status {status}: {stderr}");
    assert!(
        stdout.starts_with("# Plan: use std::f64::consts::PI instead of 3.14"),
        "{stdout}"
    );
    assert!(stdout.contains("(the planner wrote "), "{stdout}");
    let after = snapshot_tree(&root);
    let mut changed = Vec::new();
    for (file, old) in &before {
        let new = &after[file];
        if new == old {
            continue;
        }
        changed.push(file.clone());
        if let Some(language) = tierls::core::index::language::Language::from_path(file) {
            let errors =
                |text: &str| tierls::core::plan::anchor::syntax_errors(language, text).len();
            assert!(
                errors(new) <= errors(old),
                "{file} got syntax errors:\n{new}"
            );
        }
    }
    let created: Vec<&String> = after
        .keys()
        .filter(|file| !before.contains_key(*file))
        .collect();
    let mut reported: Vec<String> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("wrote "))
        .map(str::to_owned)
        .collect();
    reported.sort();
    let mut written: Vec<String> = changed
        .into_iter()
        .chain(created.into_iter().cloned())
        .collect();
    written.sort();
    assert_eq!(reported, written, "{stdout}");
    let steps = stdout
        .lines()
        .filter(|line| line.starts_with("step "))
        .count();
    assert!(steps >= 1, "every step is reported: {stdout}");
    assert_eq!(
        snapshot_tree(outer.path())
            .keys()
            .filter(|f| !f.starts_with("workspace"))
            .count(),
        1,
        "nothing is written outside the workspace"
    );
}

/// Each way `tierls plan` cannot start says why, with exit status 2, and writes nothing.
#[test]
fn plan_refuses_what_it_cannot_do() {
    let model = tierls::models::embedded::test_model_path();
    let configured = format!(
        "[tiers.executor]\nmodel = {:?}\nchat_template = \"gemma\"\n",
        model.display().to_string()
    );
    let cases: [(&str, &str, &[&str]); 4] = [
        ("", "an empty instruction", &["plan", "  ", "--workspace"]),
        (
            "",
            "no model configured",
            &["plan", "rename x", "--workspace"],
        ),
        (
            &configured,
            "a focus outside the index",
            &[
                "plan",
                "rename x",
                "--focus",
                "src/missing.rs",
                "--workspace",
            ],
        ),
        (
            "[plan]\nmax_attempts = 0\n",
            "a bad setting",
            &["plan", "rename x", "--workspace"],
        ),
    ];
    let mut out = String::new();
    for (config, what, args) in cases {
        let (_outer, root) = plan_workspace("rust", config);
        let before = snapshot_tree(&root);
        let mut args: Vec<&str> = args.to_vec();
        args.push(root.to_str().unwrap());
        let (status, stdout, stderr) = run_in(&args);
        assert_eq!(status, 2, "{what}: {stdout}{stderr}");
        assert_eq!(snapshot_tree(&root), before);
        let message = stderr
            .lines()
            .filter(|line| line.starts_with("tierls: "))
            .collect::<Vec<_>>()
            .join("\n");
        out.push_str(&format!(
            "{what}:\n{}\n",
            message.replace(root.to_str().unwrap(), "<root>")
        ));
    }
    insta::assert_snapshot!(out);
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let (status, _, stderr) = run(&["serv"]);
    assert_eq!(status, 2);
    assert!(
        stderr.contains("unrecognized subcommand 'serv'"),
        "{stderr}"
    );
}

struct Spawned {
    child: tokio::process::Child,
    client: LspClient,
}

fn spawn_serve() -> Spawned {
    let mut child = tokio::process::Command::new(TIERLS)
        .arg("serve")
        .env("TIERLS_LOG", "debug")
        .env("TIERLS_CONFIG_DIR", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tierls serve");
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    Spawned {
        child,
        client: LspClient::new(stdout, stdin).with_timeout(Duration::from_secs(20)),
    }
}

async fn exit_code(mut spawned: Spawned) -> i32 {
    drop(spawned.client);
    let status = tokio::time::timeout(Duration::from_secs(10), spawned.child.wait())
        .await
        .unwrap()
        .unwrap();
    status.code().unwrap_or(-1)
}

/// Over real stdio: malformed input first, then a whole session; stdout carries nothing
/// but well-formed frames (a stray print would show up as a broken frame).
#[tokio::test]
async fn serve_over_stdio_survives_garbage_and_exits_cleanly() {
    let mut spawned = spawn_serve();
    let client = &mut spawned.client;
    client
        .send_bytes(b"Content-Length: 5\r\n\r\n{oops")
        .await
        .unwrap();
    client
        .send_bytes(b"Content-Lenght: 2\r\n\r\n{}")
        .await
        .unwrap();
    let init = client
        .request("initialize", json!({ "capabilities": {} }))
        .await
        .unwrap();
    assert_eq!(init["result"]["serverInfo"]["name"], "tierls");
    client.notify("initialized", json!({})).await.unwrap();
    client
        .notify("textDocument/didOpen", json!({ "textDocument": { "uri": "file:///tmp/x.rs", "languageId": "rust", "version": 1, "text": "a" } }))
        .await
        .unwrap();
    let shutdown = client.shutdown().await.unwrap();
    assert_eq!(shutdown["result"], Value::Null);
    let seen = client.drain(Duration::from_millis(500)).await.unwrap();
    let errors: Vec<&Value> = seen.iter().filter(|m| m.get("error").is_some()).collect();
    assert_eq!(errors.len(), 2, "one parse error per bad frame: {seen:?}");
    assert!(
        seen.iter()
            .all(|m| m.get("broken_frame").is_none() && m.get("unparsable").is_none()),
        "{seen:?}"
    );
    assert_eq!(exit_code(spawned).await, 0);
}

#[tokio::test]
async fn exit_without_shutdown_is_status_1() {
    let mut spawned = spawn_serve();
    spawned
        .client
        .request("initialize", json!({ "capabilities": {} }))
        .await
        .unwrap();
    spawned.client.notify("exit", Value::Null).await.unwrap();
    assert_eq!(exit_code(spawned).await, 1);
}

#[tokio::test]
async fn end_of_input_ends_the_server() {
    // Dropping the client closes the server's stdin before anything was said.
    assert_eq!(exit_code(spawn_serve()).await, 1);
}

#[test]
fn demo_runs_on_the_sample_workspace() {
    let _turn = crate::support::one_model_at_a_time();
    let (status, stdout, stderr) = run(&["demo"]);
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("the server's text (version 2) matches the editor's"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the server ended with exit status: 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("plan this refactor:")
            && stdout.contains("| # Plan: add a doc comment to total_area"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fast tier: ") && stdout.contains("generated, stopped by"),
        "{stdout}"
    );
}

#[test]
fn bench_models_prints_its_figures_side_by_side() {
    let _turn = crate::support::one_model_at_a_time();
    let (status, stdout, stderr) = run(&["bench", "models"]);
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    for figure in [
        "load:",
        "cold:",
        "warm:",
        "prefix reuse:",
        "grammar:",
        "drafting:",
        "rust total_area",
    ] {
        assert!(
            stdout.lines().any(|line| line.starts_with(figure)),
            "no {figure} in\n{stdout}"
        );
    }
    let (status, _, stderr) = run(&["bench", "nonsense"]);
    assert_eq!(status, 2);
    assert!(stderr.contains("unknown benchmark `nonsense`"), "{stderr}");
}

/// `tierls models` on a workspace whose `tierls.toml` is `toml` (`$MODEL` is the test model).
fn check_models(toml: &str, extra: &[&str]) -> (i32, String, String) {
    let workspace = tempfile::tempdir().unwrap();
    let model = tierls::models::embedded::test_model_path()
        .display()
        .to_string();
    std::fs::write(
        workspace.path().join("tierls.toml"),
        toml.replace("$MODEL", &model),
    )
    .unwrap();
    let dir = workspace.path().display().to_string();
    let mut args = vec!["models", "--workspace", &dir];
    args.extend_from_slice(extra);
    // An empty model cache of its own: the user's downloads are not listed.
    let cache = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(TIERLS)
        .args(&args)
        .env("TIERLS_CONFIG_DIR", "/nonexistent")
        .env("TIERLS_MODEL_CACHE", cache.path())
        .env(
            "TIERLS_TEST_MODEL",
            tierls::models::embedded::test_model_path(),
        )
        .output()
        .unwrap();
    let clean = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .replace(&model, "$MODEL")
            .replace(&dir, "$WORKSPACE")
            .replace(&cache.path().display().to_string(), "$MODEL_CACHE")
    };
    (
        output.status.code().unwrap_or(-1),
        clean(&output.stdout),
        clean(&output.stderr),
    )
}

#[test]
fn models_shows_each_tier_and_where_it_fits() {
    let toml = "[tiers.fast]\nmodel = \"$MODEL\"\ncontext = 8192\nslots = 2\n\n[tiers.executor]\nmodel = \"missing.gguf\"\n\n[tiers.planner]\nmodel = \"http://worker.local:8080\"\n";
    let (status, stdout, stderr) = check_models(toml, &[]);
    assert_eq!(status, 0, "{stderr}");
    let (machine, tiers) = stdout.split_once('\n').unwrap();
    assert!(machine.starts_with("machine: RAM "), "{machine}");
    // The machine line is this machine's; the table is the models' (and CPU only here).
    insta::assert_snapshot!("models_text", tiers);

    let (status, stdout, _) = check_models(toml, &["--json"]);
    assert_eq!(status, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["tiers"][0]["status"], "ok");
    assert_eq!(report["tiers"][0]["layers"], 18);
    assert_eq!(report["tiers"][0]["bytes"]["weights"], 246_587_904);
    assert_eq!(report["tiers"][1]["status"], "error");
    assert_eq!(report["tiers"][2]["status"], "remote");
    assert!(report["machine"]["ram_total"].as_u64().unwrap() > 0);
}

#[test]
fn models_says_which_tier_can_draft_for_which() {
    let other = crate::support::model_with_another_vocabulary();
    let toml = format!(
        "[tiers.fast]\nmodel = \"$MODEL\"\ndraft = \"model\"\n\n[tiers.executor]\nmodel = \"$MODEL\"\ndraft = \"model\"\n\n[tiers.planner]\nmodel = \"{}\"\ndraft = \"model\"\ndraft_max = 4\n",
        other.display()
    );
    let (status, stdout, stderr) = check_models(&toml, &[]);
    assert_eq!(status, 0, "{stderr}");
    let drafting: Vec<&str> = stdout
        .lines()
        .filter(|line| line.contains("draft"))
        .collect();
    assert_eq!(
        drafting,
        [
            "fast: not drafting: the fast tier cannot draft for itself",
            "executor: the fast tier's model drafts for it (the same vocabulary, 262144 tokens; up to 8 a draft)",
            "planner: not drafting: the fast tier's model gemma-3-270m-q4_k_m.gguf cannot draft for the planner's model other-vocabulary.gguf: their vocabularies have 262144 tokens each but not the same token texts",
        ],
        "{stdout}"
    );
    let (status, stdout, _) = check_models(&toml, &["--json"]);
    assert_eq!(status, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        report["tiers"][1]["drafting"]
            .as_str()
            .unwrap()
            .starts_with("the fast tier's model drafts for it")
    );
    // The executor's slot also holds a context of the fast tier's model (the same model
    // here): twice the KV cache and compute; the planner, refused, holds none.
    let bytes = |tier: usize, part: &str| report["tiers"][tier]["bytes"][part].as_u64().unwrap();
    for part in ["kv_cache", "compute"] {
        assert_eq!(bytes(1, part), 2 * bytes(0, part), "{part}");
        assert_eq!(bytes(2, part), bytes(0, part), "{part}");
    }
    assert_eq!(bytes(1, "weights"), bytes(0, "weights"));
}

#[test]
fn models_without_configuration_shows_the_test_model() {
    let (status, stdout, _) = check_models("", &[]);
    assert_eq!(status, 0);
    assert!(
        stdout.contains("no tier names a model: the fast tier shows the test model"),
        "{stdout}"
    );
    let fast = stdout
        .lines()
        .find(|line| line.starts_with("fast "))
        .unwrap_or_default();
    assert!(
        fast.contains("gemma-3-270m-q4_k_m.gguf  gemma3  268M    Q4_K_M"),
        "{stdout}"
    );
}

#[test]
fn models_with_a_broken_configuration_names_the_key() {
    let (status, stdout, stderr) = check_models("[tiers.fast]\ncontext = \"long\"\n", &[]);
    assert_eq!(status, 2);
    assert!(stdout.is_empty());
    assert_eq!(
        stderr.trim(),
        "tierls: $WORKSPACE/tierls.toml:2:11: key `tiers.fast.context`: invalid type: string \"long\", expected u32"
    );
}

#[test]
fn index_prints_statistics_json_and_the_repo_map() {
    let workspace = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sample-workspace"
    );
    let (status, stdout, stderr) = run(&["index", workspace]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.starts_with("indexed 3 files ("), "{stdout}");
    assert!(stdout.contains("languages: rust 2, python 1"), "{stdout}");

    let (status, stdout, _) = run(&["index", workspace, "--json"]);
    assert_eq!(status, 0);
    let stats: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(stats["files"], 3);
    assert_eq!(stats["skipped"]["unknown language"], 1, "tierls.toml");

    let (status, stdout, _) = run(&["index", workspace, "--map", "src/main.rs", "--tokens", "60"]);
    assert_eq!(status, 0);
    assert!(stdout.starts_with("src/shapes.rs:\n"), "{stdout}");

    let (status, _, stderr) = run(&["index", workspace, "--map", "src/nope.rs"]);
    assert_eq!(status, 2);
    assert!(stderr.contains("src/nope.rs: not in the index"), "{stderr}");
    let (status, _, stderr) = run(&["index", "/nonexistent/tree"]);
    assert_eq!(status, 2);
    assert!(
        stderr.contains("/nonexistent/tree: not a directory"),
        "{stderr}"
    );
}

#[test]
fn bench_index_compares_with_ctags_side_by_side() {
    let workspace = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sample-workspace"
    );
    let (status, stdout, stderr) = run(&["bench", "index", workspace]);
    assert_eq!(status, 0, "{stderr}");
    for figure in [
        "tierls: 3 files",
        "ctags",
        "keystroke in a 5,000-line Rust file",
        "repo map for",
        "the same symbols and references in 3 of 3 files",
    ] {
        assert!(stdout.contains(figure), "no {figure:?} in\n{stdout}");
    }
}

#[test]
fn bench_completion_replays_the_trace_through_the_server() {
    let _turn = crate::support::one_model_at_a_time();
    let (status, stdout, stderr) = run(&["bench", "completion"]);
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    for figure in [
        "trace: 88 keystrokes",
        "the first request (cold)",
        "requests while typing",
        "first token: cold",
        "tokens decoded after a cancel",
    ] {
        assert!(stdout.contains(figure), "no {figure:?} in\n{stdout}");
    }
    let (status, _, stderr) = run(&["bench", "completion", "/nonexistent/trace.json"]);
    assert_eq!(status, 2);
    assert!(stderr.contains("/nonexistent/trace.json"), "{stderr}");
}

#[test]
fn bench_plan_prints_the_split_and_the_parallel_figures() {
    let _turn = crate::support::one_model_at_a_time();
    let (status, stdout, stderr) = run(&["bench", "plan"]);
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    for figure in [
        "planner tokens",
        "executor tokens",
        "first try",
        "the executors wrote",
        "embedded, 1 slot x",
        "throughput",
        "scripted nodes at 10 ms/token, 1 node:",
    ] {
        assert!(stdout.contains(figure), "no {figure:?} in\n{stdout}");
    }
    for fixture in ["rust", "python", "typescript", "all"] {
        assert!(
            stdout.lines().any(|line| line.starts_with(fixture)),
            "no {fixture} row in\n{stdout}"
        );
    }
}

#[test]
fn bench_nodes_prints_two_nodes_against_one_and_the_router_against_embedded() {
    let _turn = crate::support::one_model_at_a_time();
    let (status, stdout, stderr) = run(&["bench", "nodes"]);
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    for figure in [
        "1 node:",
        "2 nodes:",
        "2 nodes / 1 node: throughput",
        "1 node + this machine / 1 node: throughput",
        "embedded:",
        "router -> llama-server:",
        "router / embedded:",
        "plan running, 2 slots (1 kept free):",
        "plan running / idle:",
    ] {
        assert!(stdout.contains(figure), "no {figure:?} in\n{stdout}");
    }
}

#[test]
fn a_workspace_that_is_a_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("README.md");
    std::fs::write(&file, "# not a folder\n").unwrap();
    for command in ["status", "models"] {
        let output = std::process::Command::new(TIERLS)
            .args([command, "--workspace"])
            .arg(&file)
            .env("TIERLS_CONFIG_DIR", dir.path().join("none"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "--workspace: {} is a file; give the workspace's folder",
                file.display()
            )),
            "{command}: {stderr}"
        );
    }
}

/// `tierls route`: the decision and its reasons for each case, without loading a model (the
/// model files named here do not exist), and clear errors for bad input.
#[test]
fn route_prints_the_decision_without_running_a_model() {
    let all = "[tiers.fast]\nmodel = \"models/fast.gguf\"\n[tiers.executor]\nmodel = \"models/executor.gguf\"\n[tiers.planner]\nmodel = \"models/planner.gguf\"\n";
    let no_planner =
        "[tiers.executor]\nmodel = \"models/executor.gguf\"\n[routing]\nescalate_after = 1\n";
    let no_skipping = "[tiers.executor]\nmodel = \"models/executor.gguf\"\n[tiers.planner]\nmodel = \"models/planner.gguf\"\n[routing]\nskip_planner = false\n";
    let bad_table = "[routing]\nskip_planner_lines = -3\n";
    let area = "src/geometry.rs:Circle::area";
    let cases: [(&str, &str, &[&str]); 11] = [
        (
            "every tier, one symbol",
            all,
            &["use std::f64::consts::PI", "--focus", area],
        ),
        (
            "every tier, a rename of the symbol",
            all,
            &["rename it to surface", "--focus", area],
        ),
        (
            "every tier, a rename inside it",
            all,
            &["rename the local radius to r", "--focus", area],
        ),
        (
            "every tier, every call site",
            all,
            &["use PI and update every call site", "--focus", area],
        ),
        (
            "every tier, two symbols",
            all,
            &[
                "use PI",
                "--focus",
                area,
                "--focus",
                "src/geometry.rs:Circle::perimeter",
            ],
        ),
        (
            "no planner, one symbol",
            no_planner,
            &["use PI", "--focus", area],
        ),
        (
            "skip_planner off",
            no_skipping,
            &["use PI", "--focus", area],
        ),
        ("an empty instruction", all, &["  ", "--focus", area]),
        ("no focus", all, &["use PI"]),
        (
            "an unknown symbol",
            all,
            &["use PI", "--focus", "src/geometry.rs:Square::area"],
        ),
        (
            "a bad [routing] table",
            bad_table,
            &["use PI", "--focus", area],
        ),
    ];
    let mut out = String::new();
    for (label, config, args) in cases {
        let (_outer, root) = plan_workspace("rust", config);
        let workspace = root.display().to_string();
        let mut all_args = vec!["route", "--workspace", workspace.as_str()];
        all_args.extend_from_slice(args);
        let (code, stdout, stderr) = run_in(&all_args);
        out.push_str(&format!("## {label} (exit {code})\n{stdout}"));
        if code != 0 {
            let error = stderr.lines().last().unwrap_or_default();
            out.push_str(&format!(
                "stderr: {}\n",
                error.replace(&workspace, "<root>")
            ));
        }
        out.push('\n');
    }
    insta::assert_snapshot!(out);
}
