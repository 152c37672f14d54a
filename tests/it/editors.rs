//! The editor integrations, each against the real server: Neovim headless (Debian's
//! package) with the plugin in `editors/neovim`, and the VS Code extension's unit tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::copy_tree;
use serde_json::Value;

const TIERLS: &str = env!("CARGO_BIN_EXE_tierls");

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the Neovim script in `mode` on a copy of the editor fixture; returns what it
/// reported and the workspace.
fn neovim(mode: &str) -> (Value, tempfile::TempDir) {
    let workspace = tempfile::tempdir().unwrap();
    copy_tree(
        &repository().join("tests/fixtures/editors/rust"),
        workspace.path(),
    );
    std::fs::write(workspace.path().join(".git"), "").unwrap();
    let result_file = workspace.path().join("result.json");
    let status = Command::new("nvim")
        .args(["--headless", "-u", "NONE", "-i", "NONE", "-c"])
        .arg(format!(
            "luafile {}",
            repository().join("tests/editors/neovim_e2e.lua").display()
        ))
        .env("MODE", mode)
        .env("RESULT", &result_file)
        .env("PLUGIN", repository().join("editors/neovim"))
        .env("TIERLS_BIN", TIERLS)
        .env(
            "SCRIPT",
            repository().join("tests/fixtures/editors/scripted-models.json"),
        )
        .env("WORKSPACE", workspace.path().canonicalize().unwrap())
        .env("TEST_MODEL", tierls::models::embedded::test_model_path())
        .env("TIERLS_CONFIG_DIR", "/nonexistent")
        .env("XDG_STATE_HOME", workspace.path().join("state"))
        .status()
        .expect("nvim runs (tests/setup.sh installs Debian's neovim)");
    let text = std::fs::read_to_string(&result_file)
        .unwrap_or_else(|err| panic!("nvim ({status}) wrote no result: {err}"));
    let result: Value = serde_json::from_str(&text).unwrap();
    assert!(
        status.success() && result["ok"] == true,
        "nvim {status}: {result:#}"
    );
    (result, workspace)
}

/// Completion, hover, the plan code action from a `tierls:` comment, Neovim applying the
/// `WorkspaceEdit` and writing the file, `:TierlsEdit` on a selection, a discarded plan, and
/// a server restart.
#[test]
fn neovim_plans_and_writes_through_the_real_server() {
    let _turn = crate::support::one_model_at_a_time();
    let (result, workspace) = neovim("flow");
    assert!(
        result["completion"]
            .as_str()
            .is_some_and(|text| !text.is_empty()),
        "{result:#}"
    );
    let hover = result["hover"].as_str().unwrap_or_default();
    assert!(hover.contains("area"), "{result:#}");
    assert_eq!(
        result["plan_action"],
        "tierls: Plan: use std::f64::consts::PI in area"
    );
    assert_eq!(result["executed"]["applied"], true, "{result:#}");
    let on_disk = std::fs::read_to_string(workspace.path().join("src/geometry.rs")).unwrap();
    let expected = std::fs::read_to_string(repository().join("tests/fixtures/editors/rust/src/geometry.rs"))
        .unwrap()
        .replace(
            "    // tierls: use std::f64::consts::PI in area\n    pub fn area(&self) -> f64 {\n        3.14 * self.radius * self.radius\n    }",
            "    /// The area of the circle.\n    pub fn area(&self) -> f64 {\n        std::f64::consts::PI * self.radius * self.radius\n    }",
        )
        // `:TierlsEdit` on lines inside `total_area`.
        .replace(
            "pub fn total_area(circles: &[Circle]) -> f64 {\n    let mut total = 0.0;\n    for circle in circles {\n        total += circle.area();\n    }\n    total\n}",
            "pub fn total_area(circles: &[Circle]) -> f64 {\n    circles.iter().map(Circle::area).sum()\n}",
        );
    assert_eq!(on_disk, expected);
    assert_eq!(result["unchanged_after_discard"], true, "{result:#}");
    assert_eq!(result["modified_after_discard"], false, "{result:#}");
    assert_eq!(result["reconnected"], true, "{result:#}");
    let status = result["status"].as_str().unwrap_or_default();
    assert!(
        status.contains("executor: ready (scripted)") && status.contains("fast: "),
        "{status}"
    );
}

/// The messages the plugin showed the user.
fn notes(result: &Value) -> Vec<&str> {
    result["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

/// No server binary: the plugin says so, with the fix, once for any number of files.
#[test]
fn neovim_without_the_server_says_how_to_fix_it_once() {
    let (result, _) = neovim("missing");
    let notes = notes(&result);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("was not found") && notes[0].contains("cargo install"),
        "{notes:?}"
    );
}

/// A server that dies at start: one message naming the command to run, no restart loop.
#[test]
fn neovim_with_a_crashing_server_reports_once() {
    let (result, _) = neovim("crash");
    let notes = notes(&result);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("exited at start (exit code 3)"),
        "{notes:?}"
    );
}

fn npm(folder: &Path, args: &[&str]) -> std::process::Output {
    Command::new("npm")
        .args(args)
        .current_dir(folder)
        .output()
        .expect("npm runs")
}

/// What `npm test` printed and where `npm run package` put the `.vsix`.
pub(crate) struct PackagedExtension {
    pub tested: String,
    pub vsix: PathBuf,
}

/// Builds, unit-tests and packages the VS Code extension once per test run: two tests use it,
/// and two builds at once would race on `out/` and on the `.vsix`.
pub(crate) fn packaged_extension() -> &'static PackagedExtension {
    static PACKAGED: std::sync::OnceLock<PackagedExtension> = std::sync::OnceLock::new();
    PACKAGED.get_or_init(|| {
        let folder: PathBuf = repository().join("editors/vscode");
        assert!(
            folder.join("node_modules").exists(),
            "the extension's npm packages are missing: run tests/setup.sh"
        );
        let output = |args: &[&str]| {
            let done = npm(&folder, args);
            let out = format!(
                "{}{}",
                String::from_utf8_lossy(&done.stdout),
                String::from_utf8_lossy(&done.stderr)
            );
            assert!(done.status.success(), "npm {args:?}: {out}");
            out
        };
        let tested = output(&["test"]);
        output(&["run", "package"]);
        PackagedExtension {
            tested,
            vsix: folder.join("tierls.vsix"),
        }
    })
}

/// The VS Code extension builds with tsc, its logic passes its unit tests, and one command
/// packages it as a `.vsix`.
#[test]
fn vscode_extension_builds_tests_and_packages() {
    let packaged = packaged_extension();
    let out = &packaged.tested;
    assert!(
        out.contains("# fail 0") && out.contains("# pass 11"),
        "{out}"
    );
    let vsix = std::fs::read(&packaged.vsix).unwrap();
    assert_eq!(&vsix[..2], b"PK", "a .vsix is a zip");
}

/// Helix: every language tierls indexes gets tierls beside its own servers.
#[test]
fn helix_languages_add_tierls_beside_each_language_server() {
    let text = std::fs::read_to_string(repository().join("editors/helix/languages.toml")).unwrap();
    let config: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(
        config["language-server"]["tierls"]["command"].as_str(),
        Some("tierls")
    );
    assert_eq!(
        config["language-server"]["tierls"]["args"][0].as_str(),
        Some("serve")
    );
    let mut names = Vec::new();
    for language in config["language"].as_array().unwrap() {
        let servers: Vec<&str> = language["language-servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        assert_eq!(servers.last(), Some(&"tierls"), "{language}");
        assert!(
            servers.len() >= 2,
            "tierls runs beside the language's own server: {language}"
        );
        names.push(language["name"].as_str().unwrap().to_owned());
    }
    for expected in [
        "rust",
        "python",
        "javascript",
        "typescript",
        "tsx",
        "go",
        "c",
        "cpp",
        "java",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
}
