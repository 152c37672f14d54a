//! VS Code for real: code-server (installed by `tests/setup.sh` through
//! `tests/code-server.sh`) with the packaged extension, driven by Playwright through Debian's
//! Chromium (`tests/editors/vscode_e2e.py`). Everything is checked from what VS Code shows and
//! does. Screenshots of each step stay in `target/vscode-e2e/<mode>/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::editors::packaged_extension;
use crate::support::copy_tree;

const TIERLS: &str = env!("CARGO_BIN_EXE_tierls");

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const HOW_TO_INSTALL: &str = "run tests/setup.sh (tests/code-server.sh installs code-server from npm and Playwright from PyPI; Debian's chromium and ripgrep come with apt-get)";

/// The code-server install `tests/code-server.sh` proved runs here (it records it in the
/// cache), or why there is none and how to get one: this test never passes without a real
/// VS Code.
fn find_install(cache: &Path, chromium: &str) -> Result<PathBuf, String> {
    let recorded = std::fs::read_to_string(cache.join("vscode-e2e-path")).map_err(|_| {
        format!("code-server is not installed for the real-editor test: {HOW_TO_INSTALL}")
    })?;
    let folder = PathBuf::from(recorded.trim());
    let complete = folder
        .join("node_modules/code-server/out/node/entry.js")
        .is_file()
        && folder.join("venv/bin/python").is_file();
    if !complete {
        return Err(format!(
            "the code-server install at {} is incomplete: {HOW_TO_INSTALL}",
            folder.display()
        ));
    }
    let runs = Command::new(chromium)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !runs {
        return Err(format!(
            "Chromium (`{chromium}`) is missing: {HOW_TO_INSTALL}"
        ));
    }
    Ok(folder)
}

fn install() -> PathBuf {
    let cache = std::env::var_os("TIERLS_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|dir| dir.join("tierls")))
        .expect("a cache folder");
    find_install(&cache, "chromium").unwrap_or_else(|why| panic!("{why}"))
}

/// A machine without code-server or Chromium fails the real-editor test with how to install
/// them, instead of passing without a VS Code.
#[test]
fn a_machine_without_code_server_or_chromium_is_told_how_to_install_them() {
    let cache = tempfile::tempdir().unwrap();
    let missing = find_install(cache.path(), "chromium").unwrap_err();
    assert!(
        missing.starts_with("code-server is not installed") && missing.contains("tests/setup.sh"),
        "{missing}"
    );
    let emptied = cache.path().join("vscode-e2e");
    std::fs::create_dir(&emptied).unwrap();
    std::fs::write(
        cache.path().join("vscode-e2e-path"),
        emptied.to_str().unwrap(),
    )
    .unwrap();
    let incomplete = find_install(cache.path(), "chromium").unwrap_err();
    assert!(incomplete.contains("is incomplete"), "{incomplete}");
    // A complete install, on a machine without Chromium.
    std::fs::create_dir_all(emptied.join("node_modules/code-server/out/node")).unwrap();
    std::fs::write(
        emptied.join("node_modules/code-server/out/node/entry.js"),
        "",
    )
    .unwrap();
    std::fs::create_dir_all(emptied.join("venv/bin")).unwrap();
    std::fs::write(emptied.join("venv/bin/python"), "").unwrap();
    let no_browser = find_install(cache.path(), "/nonexistent/chromium").unwrap_err();
    assert!(
        no_browser.starts_with("Chromium (`/nonexistent/chromium`) is missing")
            && no_browser.contains("apt-get"),
        "{no_browser}"
    );
    assert_eq!(find_install(cache.path(), "true").unwrap(), emptied);
}

/// Runs the driver in `mode` on a copy of the editor fixture; returns what it reported and the
/// workspace.
fn vscode(mode: &str) -> (Value, tempfile::TempDir) {
    let install = install();
    let packaged = packaged_extension();
    let workspace = tempfile::tempdir().unwrap();
    let fixture = repository().join("tests/fixtures/editors/rust");
    copy_tree(&fixture, workspace.path());
    std::fs::write(workspace.path().join(".git"), "").unwrap();
    std::fs::write(workspace.path().join("src/lib.rs"), "pub mod geometry;\n").unwrap();
    let home = tempfile::tempdir().unwrap();
    let original = fixture.join("src/geometry.rs");
    let expected = home.path().join("expected.rs");
    std::fs::write(
        &expected,
        planned(&std::fs::read_to_string(&original).unwrap()),
    )
    .unwrap();
    let artefacts = repository().join("target/vscode-e2e").join(mode);
    let _ = std::fs::remove_dir_all(&artefacts);
    let result_file = home.path().join("result.json");
    let status = Command::new(install.join("venv/bin/python"))
        .arg(repository().join("tests/editors/vscode_e2e.py"))
        .arg(mode)
        .env("VSCODE_E2E", &install)
        .env("VSIX", &packaged.vsix)
        .env("RESULT", &result_file)
        .env("ARTEFACTS", &artefacts)
        .env("HOME_DIR", home.path())
        .env("TIERLS_BIN", TIERLS)
        .env(
            "SCRIPT",
            repository().join("tests/fixtures/editors/scripted-models.json"),
        )
        .env("WORKSPACE", workspace.path().canonicalize().unwrap())
        .env("ORIGINAL", &original)
        .env("EXPECTED", &expected)
        .env("TEST_MODEL", tierls::models::embedded::test_model_path())
        .status()
        .expect("the driver runs");
    let text = std::fs::read_to_string(&result_file)
        .unwrap_or_else(|err| panic!("the driver ({status}) wrote no result: {err}"));
    let result: Value = serde_json::from_str(&text).unwrap();
    assert!(
        status.success() && result["ok"] == true,
        "vscode_e2e.py {mode} ({status}), screenshots in {}:\n{result:#}",
        artefacts.display()
    );
    eprintln!("vscode_e2e.py {mode}: {result:#}");
    (result, workspace)
}

/// The fixture after the scripted plan: `Circle::area` uses PI and loses its `tierls:` comment.
fn planned(original: &str) -> String {
    original.replace(
        "    // tierls: use std::f64::consts::PI in area\n    pub fn area(&self) -> f64 {\n        3.14 * self.radius * self.radius\n    }",
        "    /// The area of the circle.\n    pub fn area(&self) -> f64 {\n        std::f64::consts::PI * self.radius * self.radius\n    }",
    )
}

/// Ghost text from the test model while typing, accepted with Tab; keystroke-to-ghost-text
/// times against the server's own; "Plan refactor…" from the palette with its input box,
/// `$/progress` and Execute, saved to disk; the status bar through a restart.
#[test]
fn vscode_completes_plans_and_restarts_for_real() {
    let _turn = crate::support::one_model_at_a_time();
    let (result, _workspace) = vscode("flow");
    let status = result["status"].as_str().unwrap_or_default();
    assert!(
        status.starts_with("$(check) tierls") && status.contains("fast ●"),
        "{status}"
    );
    // Tab put the suggestion's first line into the document, after what was typed.
    let accepted = result["accepted_line"].as_str().unwrap();
    let ghost = result["ghost_first_line"].as_str().unwrap();
    assert!(!ghost.trim().is_empty(), "{result:#}");
    assert_eq!(
        accepted.trim_end(),
        format!("pub fn perimeter({ghost}").trim_end(),
        "{result:#}"
    );
    // Keys the model answered (not the suggestion cache): the headline figure.
    let latency = &result["latency"]["model"];
    assert_eq!(latency["samples"], 10, "{result:#}");
    assert!(
        latency["server_median_ms"].as_f64().unwrap()
            <= latency["editor_median_ms"].as_f64().unwrap(),
        "the editor shows ghost text after the server answered: {result:#}"
    );
    // The plan document VS Code opened, and the execution's `$/progress` as VS Code's own
    // window progress (not tierls' status item).
    let plan = result["plan_document"].as_str().unwrap_or_default();
    assert!(
        plan.contains("# Plan: use std::f64::consts::PI in area")
            && plan.contains("src/geometry.rs"),
        "{plan}"
    );
    assert!(
        result["progress_seen"][0]
            .as_str()
            .is_some_and(|text| text.contains("tierls: executing the plan")),
        "{result:#}"
    );
    assert_eq!(result["executed_on_disk"], true, "{result:#}");
    // The restart left the running state and came back with the tiers.
    let restart: Vec<&str> = result["restart_statusbar"]
        .as_array()
        .unwrap()
        .iter()
        .map(|text| text.as_str().unwrap_or("(no item)"))
        .collect();
    assert!(
        restart.iter().any(|text| !text.contains("fast ●")),
        "{restart:?}"
    );
    let after = result["status_after_restart"].as_str().unwrap_or_default();
    assert!(after.contains("fast ●"), "{after}");
}

/// No server binary: one message that says how to fix it, however many Rust files are
/// opened, and the status bar says the server failed.
#[test]
fn vscode_without_the_server_says_so_once() {
    let (result, _workspace) = vscode("missing");
    let messages: Vec<&str> = result["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("was not found") && messages[0].contains("cargo install"),
        "{messages:?}"
    );
    let status = result["status"].as_str().unwrap_or_default();
    assert!(status.starts_with("$(error) tierls"), "{status}");
}
