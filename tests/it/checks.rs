//! `plan.check`: the user's check command on a scratch copy of the workspace, and what its
//! output says. Each hostile command of the issue is a test: the user's tree stays as it
//! was, the copy is removed, and every wait has its bound.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tierls::core::plan::failures::parse_failures;
use tierls::refactor::check::{CheckRun, CheckSpec, CheckStatus, run_check};

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("src/lib.rs"), "pub fn one() -> u32 {\n    1\n}\n").unwrap();
    std::fs::write(root.join(".gitignore"), "target/\n").unwrap();
    std::fs::create_dir_all(root.join("target")).unwrap();
    std::fs::write(root.join("target/big.bin"), vec![0u8; 4096]).unwrap();
    dir
}

/// Every file of the tree with its bytes, to compare before and after.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let relative = path.strip_prefix(root).unwrap().display().to_string();
                files.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(root, root, &mut files);
    files
}

fn check(root: &Path, command: &str, seconds: u64) -> CheckRun {
    let spec = CheckSpec {
        command: command.to_owned(),
        time_limit: Duration::from_secs(seconds),
        output_cap: 64 * 1024,
        cancel: None,
        links: ["node_modules", ".venv"].map(String::from).to_vec(),
    };
    let changed = BTreeMap::from([(
        "src/lib.rs".to_owned(),
        Some("pub fn one() -> u32 {\n    2\n}\n".to_owned()),
    )]);
    run_check(root, &changed, &spec, None).unwrap()
}

#[test]
fn the_check_sees_the_changed_files_over_the_unchanged_ones_and_not_the_ignored() {
    let dir = workspace();
    let before = tree(dir.path());
    let run = check(
        dir.path(),
        "cat src/lib.rs; ls target 2>/dev/null || echo 'no target folder'; test -f .gitignore",
        30,
    );
    assert_eq!(run.status, CheckStatus::Passed, "{}", run.output);
    assert_eq!(
        run.output,
        "pub fn one() -> u32 {\n    2\n}\nno target folder\n"
    );
    assert_eq!(tree(dir.path()), before);
}

#[test]
fn a_missing_command_is_named_as_such() {
    let dir = workspace();
    let run = check(dir.path(), "no-such-checker --all", 30);
    assert_eq!(run.status, CheckStatus::Failed { code: Some(127) });
    assert_eq!(
        run.verdict(),
        "could not run: the command was not found (exit 127)"
    );
    assert!(run.output.contains("no-such-checker"), "{}", run.output);
}

#[test]
fn a_check_that_hangs_is_stopped_with_its_whole_process_group() {
    let dir = workspace();
    let outside = tempfile::tempdir().unwrap();
    let pid_file = outside.path().join("pid");
    let command = format!("sleep 1000 & echo $! > {}; sleep 1000", pid_file.display());
    let run = check(dir.path(), &command, 1);
    assert_eq!(run.status, CheckStatus::TimedOut);
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let proc = Path::new("/proc").join(pid.trim());
    // SIGKILL lands asynchronously, and a killed process lingers as a zombie until it is
    // reaped: wait (at most 5 s) for it to be gone or a zombie.
    let running = || {
        std::fs::read_to_string(proc.join("stat"))
            .map(|stat| !stat.contains(") Z"))
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while running() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!running(), "the background sleep {} still runs", pid.trim());
}

#[test]
fn a_check_that_prints_100_mb_keeps_the_tail_only() {
    let dir = workspace();
    let run = check(
        dir.path(),
        "head -c 100000000 /dev/zero | tr '\\0' a; echo; echo the-last-line",
        120,
    );
    assert_eq!(run.status, CheckStatus::Passed);
    assert!(run.output.len() <= 64 * 1024, "{}", run.output.len());
    assert!(run.output.ends_with("the-last-line\n"));
    assert_eq!(run.dropped + run.output.len() as u64, 100_000_000 + 15);
}

#[test]
fn a_check_that_reads_stdin_gets_nothing_and_ends() {
    let dir = workspace();
    let run = check(dir.path(), "cat; echo read-nothing", 30);
    assert_eq!(run.status, CheckStatus::Passed);
    assert_eq!(run.output, "read-nothing\n");
}

#[test]
fn a_check_that_writes_into_its_folder_leaves_the_users_tree_alone() {
    let dir = workspace();
    let before = tree(dir.path());
    let outside = tempfile::tempdir().unwrap();
    let where_file = outside.path().join("where");
    let command = format!(
        "pwd > {}; echo junk > src/junk.rs; rm -f src/lib.rs .gitignore; mkdir -p out && echo x > out/x; exit 3",
        where_file.display()
    );
    let run = check(dir.path(), &command, 30);
    assert_eq!(run.status, CheckStatus::Failed { code: Some(3) });
    assert_eq!(run.verdict(), "failed (exit 3)");
    assert_eq!(tree(dir.path()), before);
    let scratch = std::fs::read_to_string(&where_file).unwrap();
    assert!(
        !Path::new(scratch.trim()).exists(),
        "the scratch copy {} was not removed",
        scratch.trim()
    );
}

#[test]
fn ignored_dependency_folders_are_linked_into_the_copy_and_others_are_not() {
    let dir = workspace();
    let root = dir.path();
    for folder in [
        "node_modules/left-pad",
        "web/node_modules/react",
        ".venv/bin",
    ] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    std::fs::write(
        root.join("node_modules/left-pad/index.js"),
        "module.exports = 1;\n",
    )
    .unwrap();
    std::fs::write(root.join("web/node_modules/react/index.js"), "react\n").unwrap();
    std::fs::write(root.join("web/app.js"), "require('react');\n").unwrap();
    std::fs::write(root.join(".venv/bin/python"), "venv\n").unwrap();
    // A folder named like a dependency folder but not ignored is copied, not linked.
    std::fs::create_dir_all(root.join("docs/node_modules")).unwrap();
    std::fs::write(root.join("docs/node_modules/notes.md"), "kept in git\n").unwrap();
    std::fs::write(
        root.join(".gitignore"),
        "target/\n/node_modules/\nweb/node_modules/\n.venv/\n",
    )
    .unwrap();
    let before = tree(root);
    let run = check(
        root,
        "cat node_modules/left-pad/index.js web/node_modules/react/index.js .venv/bin/python; \
         test -L node_modules && test -L web/node_modules && test -L .venv && echo linked; \
         test -L docs/node_modules || echo docs-copied; echo changed > docs/node_modules/notes.md; \
         ls target 2>/dev/null || echo 'no target folder'",
        30,
    );
    assert_eq!(run.status, CheckStatus::Passed, "{}", run.output);
    assert_eq!(
        run.output,
        "module.exports = 1;\nreact\nvenv\nlinked\ndocs-copied\nno target folder\n"
    );
    assert_eq!(tree(root), before);
}

/// The failures the common checkers print, as `file:line: message`, kept only for files
/// of the workspace.
#[test]
fn failures_are_read_from_each_checkers_output() {
    let outputs = [
        (
            "cargo check (long)",
            "error[E0061]: this function takes 2 arguments but 1 argument was supplied\n  --> src/checkout.rs:6:17\n   |\n6  |     let total = total_price(cart);\n   |                 ^^^^^^^^^^^------ an argument of type `&str` is missing\nerror: could not compile `shop` (lib) due to 1 previous error\n",
        ),
        (
            "cargo check --message-format short",
            "src/checkout.rs:6:17: error[E0061]: this function takes 2 arguments but 1 argument was supplied\n/home/u/.rustup/toolchains/x/lib/rustlib/src/rust/library/core/src/ops.rs:10:1: note: defined here\nerror: could not compile `shop` (lib) due to 1 previous error\n",
        ),
        (
            "npx tsc --noEmit",
            "src/cart.ts(12,5): error TS2554: Expected 2 arguments, but got 1.\nnode_modules/x/index.d.ts(1,1): error TS1: outside\n",
        ),
        (
            "pytest -x -q",
            "Traceback (most recent call last):\n  File \"/usr/lib/python3.11/runpy.py\", line 198, in _run_module_as_main\n  File \"shop/cart.py\", line 19, in checkout\n    return total_price(cart)\n           ^^^^^^^^^^^^^^^^^\nTypeError: total_price() missing 1 required positional argument: 'currency'\n",
        ),
        (
            "python -m compileall -q .",
            "*** Error compiling './shop/cart.py'...\n  File \"./shop/cart.py\", line 3\n    def total(:\n              ^\nSyntaxError: invalid syntax\n",
        ),
        (
            "gcc / clang / go vet",
            "src/main.c:3:5: error: implicit declaration of function 'totl'\n./cmd/main.go:4:2: fmt.Printf format %d has arg s of wrong type string\n",
        ),
        ("no locations", "Segmentation fault (core dumped)\n"),
    ];
    let known = [
        "src/checkout.rs",
        "src/cart.ts",
        "shop/cart.py",
        "src/main.c",
        "cmd/main.go",
    ];
    let resolve = |path: &str| {
        let path = path.trim_start_matches("./");
        known.contains(&path).then(|| path.to_owned())
    };
    let mut shown = String::new();
    for (checker, output) in outputs {
        shown.push_str(&format!("{checker}:\n"));
        for failure in parse_failures(output, &resolve) {
            shown.push_str(&format!(
                "  {}:{}: {}\n",
                failure.file, failure.line, failure.message
            ));
        }
    }
    insta::assert_snapshot!(shown);
}
