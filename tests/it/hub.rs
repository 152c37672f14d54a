//! Models from Hugging Face: references, the fetch into the model cache and every way it
//! goes wrong, against a loopback server that speaks the hub's API (`models::loopback_hub`); then the
//! real test model pulled by `tierls pull` and served by a tier named `hf://…`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tierls::core::hub::HubModel;
use tierls::models::hub::{Hub, Quiet};

use tierls::models::hub::sha256_hex;
use tierls::models::loopback_hub::{HubFile, LoopbackHub, Repo};

const REPO: &str = "tester/tiny-GGUF";

/// Bytes that look like nothing in particular.
fn some_bytes(length: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..length).map(|_| rng.u8(..)).collect()
}

fn repo(files: &[(&str, HubFile)]) -> BTreeMap<String, Repo> {
    let files = files
        .iter()
        .map(|(path, file)| (path.to_string(), file.clone()))
        .collect();
    BTreeMap::from([(REPO.to_owned(), Repo { files, token: None })])
}

/// Fetches `reference` from `hub` into `cache`; an error's text has the hub's address and
/// the cache folder replaced by `{hub}` and `{cache}`.
async fn fetch(
    hub: &LoopbackHub,
    cache: &Path,
    reference: &str,
    tune: impl FnOnce(&mut Hub),
) -> Result<PathBuf, String> {
    let model = HubModel::parse(reference)?;
    let mut client = Hub::new(&hub.url, None, cache.to_owned());
    tune(&mut client);
    client
        .fetch(&model, &mut Quiet)
        .await
        .map_err(|err| normalise(&err.to_string(), hub, cache))
}

fn normalise(text: &str, hub: &LoopbackHub, cache: &Path) -> String {
    text.replace(&hub.url, "{hub}")
        .replace(&cache.display().to_string(), "{cache}")
}

/// The files under the cache, relative, with their sizes: what a fetch left behind.
fn cache_listing(cache: &Path) -> Vec<String> {
    let mut found: Vec<String> = walkdir::WalkDir::new(cache)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| {
            let relative = entry
                .path()
                .strip_prefix(cache)
                .unwrap()
                .display()
                .to_string();
            format!("{relative} ({} bytes)", entry.metadata().unwrap().len())
        })
        .collect();
    found.sort();
    found
}

#[test]
fn references_parse_or_say_what_is_wrong() {
    let cases = [
        "hf://tester/tiny-GGUF/tiny-Q4_K_M.gguf",
        "hf://tester/tiny-GGUF/sub/dir/tiny-Q8_0-00001-of-00002.gguf",
        "hf://tester/tiny-GGUF:Q4_K_M",
        "tester/tiny-GGUF:q8_0",
        "tester/tiny-GGUF/tiny.gguf",
        // Hostile or mistaken.
        "hf://tester/tiny-GGUF/../../../etc/passwd.gguf",
        "hf://../tiny-GGUF/tiny.gguf",
        "hf://tester/./tiny.gguf",
        "hf://tester/tiny-GGUF/sub//tiny.gguf",
        "hf://tester/tiny-GGUF/tiny.safetensors",
        "hf://tester/tiny-GGUF:",
        "hf://tester/tiny-GGUF:Q4 K",
        "hf://tester",
        "hf://te$ter/tiny/tiny.gguf",
        "hf://tester/tiny-GGUF/C:\\tiny.gguf",
    ];
    let lines: Vec<String> = cases
        .iter()
        .map(|case| match HubModel::parse(case) {
            Ok(model) => format!("{case} => {model:?}"),
            Err(err) => format!("{case} => error: {err}"),
        })
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[tokio::test]
async fn a_file_is_fetched_verified_and_then_used_offline() {
    let bytes = some_bytes(300_000, 1);
    let hub = LoopbackHub::start(repo(&[
        ("tiny-Q4_K_M.gguf", HubFile::new(bytes.clone())),
        ("README.md", HubFile::new(b"# tiny".to_vec())),
    ]));
    let cache = tempfile::tempdir().unwrap();
    let reference = format!("hf://{REPO}/tiny-Q4_K_M.gguf");
    let path = fetch(&hub, cache.path(), &reference, |_| {}).await.unwrap();
    assert_eq!(
        path,
        cache.path().join("hf").join(REPO).join("tiny-Q4_K_M.gguf")
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    // Nothing but the model (and its lock) is left: no part, no identity file.
    assert_eq!(
        cache_listing(cache.path()),
        [
            "hf/tester/tiny-GGUF/tiny-Q4_K_M.gguf (300000 bytes)",
            "hf/tester/tiny-GGUF/tiny-Q4_K_M.gguf.lock (0 bytes)",
        ]
    );
    let asked = hub.requests.lock().unwrap().len();
    // With the hub gone, both the file and the quantization come from the cache.
    let address = hub.url.clone();
    drop(hub);
    let offline = Hub::new(&address, None, cache.path().to_owned());
    for reference in [reference.as_str(), "hf://tester/tiny-GGUF:Q4_K_M"] {
        let model = HubModel::parse(reference).unwrap();
        assert_eq!(
            offline.fetch(&model, &mut Quiet).await.unwrap(),
            path,
            "{reference}"
        );
    }
    assert_eq!(asked, 2, "one listing and one download");
}

#[tokio::test]
async fn a_quantization_picks_its_file_or_lists_the_ones_there_are() {
    let hub = LoopbackHub::start(repo(&[
        ("tiny-Q4_K_M.gguf", HubFile::new(some_bytes(1000, 2))),
        ("tiny-Q4_K.gguf", HubFile::new(some_bytes(1000, 3))),
        ("mmproj-tiny-Q8_0.gguf", HubFile::new(some_bytes(1000, 4))),
        ("tiny-Q8_0.gguf", HubFile::new(some_bytes(1000, 5))),
        ("README.md", HubFile::new(b"# tiny".to_vec())),
    ]));
    let cache = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for quant in ["Q4_K", "q4_k_m", "Q8_0", "Q5_K_M"] {
        let outcome = fetch(&hub, cache.path(), &format!("{REPO}:{quant}"), |_| {}).await;
        lines.push(match outcome {
            Ok(path) => format!(
                "{quant} => {}",
                path.strip_prefix(cache.path()).unwrap().display()
            ),
            Err(err) => format!("{quant} => error: {err}"),
        });
    }
    insta::assert_snapshot!(lines.join("\n"));
}

#[tokio::test]
async fn a_split_gguf_is_fetched_whole() {
    let parts: Vec<Vec<u8>> = (0..3)
        .map(|i| some_bytes(70_000 + i * 10, 10 + i as u64))
        .collect();
    let hub = LoopbackHub::start(repo(&[
        (
            "Q8_0/tiny-Q8_0-00001-of-00003.gguf",
            HubFile::new(parts[0].clone()),
        ),
        (
            "Q8_0/tiny-Q8_0-00002-of-00003.gguf",
            HubFile::new(parts[1].clone()),
        ),
        (
            "Q8_0/tiny-Q8_0-00003-of-00003.gguf",
            HubFile::new(parts[2].clone()),
        ),
        ("tiny-Q4_K_M.gguf", HubFile::new(some_bytes(100, 9))),
    ]));
    let cache = tempfile::tempdir().unwrap();
    // Named by its second part or by its quantization: the first part is what loads.
    for reference in [
        format!("hf://{REPO}/Q8_0/tiny-Q8_0-00002-of-00003.gguf"),
        format!("hf://{REPO}:Q8_0"),
    ] {
        let path = fetch(&hub, cache.path(), &reference, |_| {}).await.unwrap();
        assert!(
            path.ends_with("Q8_0/tiny-Q8_0-00001-of-00003.gguf"),
            "{path:?}"
        );
    }
    let folder = cache.path().join("hf").join(REPO).join("Q8_0");
    for (i, part) in parts.iter().enumerate() {
        let name = format!("tiny-Q8_0-0000{}-of-00003.gguf", i + 1);
        assert_eq!(&std::fs::read(folder.join(&name)).unwrap(), part, "{name}");
        assert_eq!(hub.downloads_of(&format!("Q8_0/{name}")).len(), 1, "{name}");
    }
    // A split file with a part missing from the repository is refused before any download.
    let broken = LoopbackHub::start(repo(&[(
        "tiny-00001-of-00002.gguf",
        HubFile::new(some_bytes(100, 20)),
    )]));
    let other = tempfile::tempdir().unwrap();
    let err = fetch(
        &broken,
        other.path(),
        &format!("hf://{REPO}/tiny-00001-of-00002.gguf"),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("`tiny-00002-of-00002.gguf` is missing"),
        "{err}"
    );
    assert!(
        cache_listing(other.path()).is_empty(),
        "{:?}",
        cache_listing(other.path())
    );
}

#[tokio::test]
async fn refusals_say_what_to_do() {
    let mut repos = repo(&[("tiny-Q4_K_M.gguf", HubFile::new(some_bytes(1000, 30)))]);
    repos.insert(
        "tester/gated".into(),
        Repo {
            files: BTreeMap::from([(
                "gated-Q4_K_M.gguf".into(),
                HubFile::new(some_bytes(500, 31)),
            )]),
            token: Some("hf_secret".into()),
        },
    );
    let hub = LoopbackHub::start(repos);
    let cache = tempfile::tempdir().unwrap();
    let refused = crate::fake_node::refusing_url();
    let mut lines = Vec::new();
    for (case, reference, token, endpoint) in [
        (
            "no such repository",
            "hf://tester/nothing/x.gguf",
            None,
            None,
        ),
        (
            "no such file",
            "hf://tester/tiny-GGUF/other.gguf",
            None,
            None,
        ),
        (
            "gated, no token",
            "hf://tester/gated/gated-Q4_K_M.gguf",
            None,
            None,
        ),
        (
            "gated, wrong token",
            "hf://tester/gated/gated-Q4_K_M.gguf",
            Some("hf_wrong"),
            None,
        ),
        (
            "hub unreachable",
            "hf://tester/tiny-GGUF:Q4_K_M",
            None,
            Some(refused.clone()),
        ),
    ] {
        let outcome = fetch(&hub, cache.path(), reference, |client| {
            *client = Hub::new(
                endpoint.as_deref().unwrap_or(&hub.url),
                token.map(str::to_owned),
                cache.path().to_owned(),
            );
        })
        .await;
        let text = match outcome {
            Ok(path) => format!("fetched {}", path.display()),
            Err(err) => err.replace(&refused, "{unreachable}"),
        };
        // The transport's own words after the address vary by platform: cut them.
        let text = text
            .split(": error sending request")
            .next()
            .unwrap()
            .to_owned();
        lines.push(format!("{case}: {text}"));
    }
    // With the right token the gated model comes, and the token went along.
    let path = fetch(
        &hub,
        cache.path(),
        "hf://tester/gated/gated-Q4_K_M.gguf",
        |client| {
            *client = Hub::new(&hub.url, Some("hf_secret".into()), cache.path().to_owned());
        },
    )
    .await
    .unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), 500);
    let downloads = hub.downloads_of("gated-Q4_K_M.gguf");
    assert_eq!(
        downloads.last().unwrap().authorization.as_deref(),
        Some("Bearer hf_secret")
    );
    insta::assert_snapshot!(lines.join("\n"));
    assert!(
        !cache
            .path()
            .join("hf/tester/gated/gated-Q4_K_M.gguf.part")
            .exists(),
        "a refused download leaves no part"
    );
}

#[tokio::test]
async fn a_cut_connection_resumes_where_it_stopped() {
    let bytes = some_bytes(500_000, 40);
    let mut file = HubFile::new(bytes.clone());
    // The first two downloads stop after 150,000 bytes.
    file.cut = Some((2, 150_000));
    let hub = LoopbackHub::start(repo(&[("tiny-Q4_K_M.gguf", file)]));
    let cache = tempfile::tempdir().unwrap();
    let path = fetch(&hub, cache.path(), &format!("{REPO}:Q4_K_M"), |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    let ranges: Vec<Option<String>> = hub
        .downloads_of("tiny-Q4_K_M.gguf")
        .into_iter()
        .map(|request| request.range)
        .collect();
    assert_eq!(
        ranges,
        [
            None,
            Some("bytes=150000-".into()),
            Some("bytes=300000-".into())
        ]
    );
}

#[tokio::test]
async fn a_part_left_by_an_earlier_run_is_resumed_and_a_stale_one_is_not() {
    let bytes = some_bytes(200_000, 50);
    let hub = LoopbackHub::start(repo(&[("tiny-Q4_K_M.gguf", HubFile::new(bytes.clone()))]));
    let cache = tempfile::tempdir().unwrap();
    let folder = cache.path().join("hf").join(REPO);
    std::fs::create_dir_all(&folder).unwrap();
    // What a killed `tierls pull` leaves: the first 80,000 bytes and what they are of.
    std::fs::write(folder.join("tiny-Q4_K_M.gguf.part"), &bytes[..80_000]).unwrap();
    std::fs::write(
        folder.join("tiny-Q4_K_M.gguf.part.id"),
        format!("200000 {}", sha256_hex(&bytes)),
    )
    .unwrap();
    let path = fetch(&hub, cache.path(), &format!("{REPO}:Q4_K_M"), |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let ranges: Vec<Option<String>> = hub
        .downloads_of("tiny-Q4_K_M.gguf")
        .into_iter()
        .map(|request| request.range)
        .collect();
    assert_eq!(ranges, [Some("bytes=80000-".into())]);

    // A part of another version of the file (the repository changed since) starts over.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(folder.join("tiny-Q4_K_M.gguf.part"), some_bytes(80_000, 51)).unwrap();
    std::fs::write(folder.join("tiny-Q4_K_M.gguf.part.id"), "200000 0000").unwrap();
    let path = fetch(&hub, cache.path(), &format!("{REPO}:Q4_K_M"), |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(
        hub.downloads_of("tiny-Q4_K_M.gguf").last().unwrap().range,
        None
    );
}

#[tokio::test]
async fn a_body_shorter_than_its_length_keeps_the_part_and_says_so() {
    let bytes = some_bytes(100_000, 60);
    let mut file = HubFile::new(bytes.clone());
    file.short_by = Some(1000);
    let hub = LoopbackHub::start(repo(&[("tiny-Q4_K_M.gguf", file)]));
    let cache = tempfile::tempdir().unwrap();
    let err = fetch(&hub, cache.path(), &format!("{REPO}:Q4_K_M"), |_| {})
        .await
        .unwrap_err();
    // The transport's own words for the cut vary: keep ours.
    let err = err.split(" tries (").next().unwrap().to_owned();
    insta::assert_snapshot!(err, @"tiny-Q4_K_M.gguf: the download stopped at 99000 of 100000 bytes after 4");
    assert_eq!(
        cache_listing(cache.path()),
        [
            "hf/tester/tiny-GGUF/tiny-Q4_K_M.gguf.lock (0 bytes)",
            "hf/tester/tiny-GGUF/tiny-Q4_K_M.gguf.part (99000 bytes)",
            format!(
                "hf/tester/tiny-GGUF/tiny-Q4_K_M.gguf.part.id ({} bytes)",
                7 + 64
            )
            .as_str(),
        ]
    );
}

#[tokio::test]
async fn a_checksum_that_does_not_match_removes_the_download() {
    let mut file = HubFile::new(some_bytes(100_000, 70));
    file.listed_sha256 = Some("ab".repeat(32));
    let hub = LoopbackHub::start(repo(&[("tiny-Q4_K_M.gguf", file)]));
    let cache = tempfile::tempdir().unwrap();
    let err = fetch(&hub, cache.path(), &format!("{REPO}:Q4_K_M"), |_| {})
        .await
        .unwrap_err();
    assert!(
        err.starts_with("tiny-Q4_K_M.gguf: the download's sha256 is ")
            && err.ends_with(&format!(
                "the hub lists {}; the download was removed",
                "ab".repeat(32)
            )),
        "{err}"
    );
    assert_eq!(
        cache_listing(cache.path()),
        ["hf/tester/tiny-GGUF/tiny-Q4_K_M.gguf.lock (0 bytes)"]
    );
}

#[tokio::test]
async fn a_disk_without_room_is_refused_before_writing() {
    let hub = LoopbackHub::start(repo(&[(
        "tiny-Q4_K_M.gguf",
        HubFile::new(some_bytes(100_000, 80)),
    )]));
    let cache = tempfile::tempdir().unwrap();
    let err = fetch(&hub, cache.path(), &format!("{REPO}:Q4_K_M"), |client| {
        client.max_bytes = Some(50_000);
    })
    .await
    .unwrap_err();
    assert_eq!(
        err,
        "tiny-Q4_K_M.gguf: needs 100000 bytes more but {cache}/hf/tester/tiny-GGUF has room for 50000"
    );
    assert!(hub.downloads_of("tiny-Q4_K_M.gguf").is_empty());
    // Nothing written but the file's lock.
    assert_eq!(
        cache_listing(cache.path()),
        ["hf/tester/tiny-GGUF/tiny-Q4_K_M.gguf.lock (0 bytes)"]
    );
}

#[tokio::test]
async fn two_fetches_of_one_model_download_it_once() {
    let bytes = some_bytes(640 * 1024, 90);
    let mut file = HubFile::new(bytes.clone());
    // Slow enough that the second fetch starts while the first downloads.
    file.pace = Some(Duration::from_millis(40));
    let hub = LoopbackHub::start(repo(&[("tiny-Q4_K_M.gguf", file)]));
    let cache = tempfile::tempdir().unwrap();
    let reference = format!("{REPO}:Q4_K_M");
    let (first, second) = tokio::join!(
        fetch(&hub, cache.path(), &reference, |_| {}),
        fetch(&hub, cache.path(), &reference, |_| {}),
    );
    assert_eq!(first.unwrap(), second.unwrap());
    assert_eq!(hub.downloads_of("tiny-Q4_K_M.gguf").len(), 1);
    let path = cache.path().join("hf").join(REPO).join("tiny-Q4_K_M.gguf");
    assert_eq!(std::fs::read(path).unwrap(), bytes);
}

const TIERLS: &str = env!("CARGO_BIN_EXE_tierls");

/// The hub serving the real test model, as `unsloth/gemma-3-270m-it-GGUF` does.
fn hub_with_the_test_model() -> LoopbackHub {
    let bytes = std::fs::read(tierls::models::embedded::test_model_path())
        .expect("the test model (tests/setup.sh fetches it)");
    LoopbackHub::start(BTreeMap::from([(
        "tester/gemma-3-270m-GGUF".to_owned(),
        Repo {
            files: BTreeMap::from([("gemma-3-270m-Q4_K_M.gguf".to_owned(), HubFile::new(bytes))]),
            token: None,
        },
    )]))
}

#[test]
fn tierls_pull_fetches_the_test_model_and_models_lists_it() {
    let hub = hub_with_the_test_model();
    let cache = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(
        workspace.path().join("tierls.toml"),
        "[tiers.fast]\nmodel = \"hf://tester/gemma-3-270m-GGUF:Q4_K_M\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let output = std::process::Command::new(TIERLS)
            .args(args)
            .env("HF_ENDPOINT", &hub.url)
            .env("TIERLS_MODEL_CACHE", cache.path())
            .env("TIERLS_CONFIG_DIR", "/nonexistent")
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let workspace_arg = workspace.path().display().to_string();
    // Before the pull, `models` says how to get it.
    let (_, before, stderr) = run(&["models", "--workspace", &workspace_arg]);
    assert!(
        before.contains("not downloaded yet: `tierls pull hf://tester/gemma-3-270m-GGUF:Q4_K_M`"),
        "{before}\n{stderr}"
    );
    let (status, stdout, stderr) = run(&["pull", "tester/gemma-3-270m-GGUF:Q4_K_M"]);
    assert_eq!(status, Some(0), "{stdout}\n{stderr}");
    let expected = cache
        .path()
        .join("hf/tester/gemma-3-270m-GGUF/gemma-3-270m-Q4_K_M.gguf");
    assert!(
        stdout.starts_with(&format!(
            "hf://tester/gemma-3-270m-GGUF:Q4_K_M: {} (",
            expected.display()
        )),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(&expected).unwrap(),
        std::fs::read(tierls::models::embedded::test_model_path()).unwrap()
    );
    // Now the tier's row reads the cached file's header, and the cache is listed.
    let (status, after, stderr) = run(&["models", "--workspace", &workspace_arg, "--json"]);
    assert_eq!(status, Some(0), "{after}\n{stderr}");
    let report: Value = serde_json::from_str(&after).unwrap();
    let fast = &report["tiers"][0];
    assert!(fast["error"].is_null(), "{fast}");
    assert_eq!(
        report["cached"][0]["model"],
        "hf://tester/gemma-3-270m-GGUF/gemma-3-270m-Q4_K_M.gguf"
    );
    assert_eq!(
        report["cached"][0]["bytes"].as_u64(),
        Some(std::fs::metadata(&expected).unwrap().len())
    );
    // A bad reference is a usage error that says what a reference looks like.
    let (status, _, stderr) = run(&["pull", "hf://tester/../x.gguf"]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("is not a Hugging Face name"), "{stderr}");
}

/// An editor session whose fast tier is `hf://…`: the server downloads the model with
/// `$/progress`, then serves completions from it.
#[tokio::test]
async fn a_tier_named_on_the_hub_downloads_with_progress_and_then_serves() {
    let _turn = crate::support::one_model_at_a_time();
    let hub = hub_with_the_test_model();
    let cache = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(
        workspace.path().join("tierls.toml"),
        "[tiers.fast]\nmodel = \"hf://tester/gemma-3-270m-GGUF:Q4_K_M\"\n",
    )
    .unwrap();
    let mut child = tokio::process::Command::new(TIERLS)
        .arg("serve")
        .env("TIERLS_LOG", "info")
        .env("TIERLS_CONFIG_DIR", "/nonexistent")
        .env("HF_ENDPOINT", &hub.url)
        .env("TIERLS_MODEL_CACHE", cache.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut client = tierls::lsp::client::LspClient::of_child(&mut child)
        .unwrap()
        .with_timeout(Duration::from_secs(120));
    let root = tower_lsp::lsp_types::Url::from_directory_path(workspace.path()).unwrap();
    client
        .request(
            "initialize",
            json!({ "rootUri": root, "capabilities": { "window": { "workDoneProgress": true } },
                    "initializationOptions": { "index": { "enabled": false } } }),
        )
        .await
        .unwrap();
    client.notify("initialized", json!({})).await.unwrap();
    // The download's progress, from its begin to its end.
    let mut titles = Vec::new();
    loop {
        let progress = client.wait_for("$/progress").await.unwrap();
        if progress["params"]["token"] != "tierls/download/fast" {
            continue;
        }
        let value = &progress["params"]["value"];
        titles.push(value["kind"].as_str().unwrap_or_default().to_owned());
        if value["kind"] == "begin" {
            assert_eq!(value["title"], "tierls: downloading the fast tier's model");
        }
        if value["kind"] == "end" {
            break;
        }
    }
    assert_eq!(titles.first().map(String::as_str), Some("begin"));
    assert!(titles.iter().any(|kind| kind == "report"), "{titles:?}");
    // Then the tier loads from the cache and answers.
    loop {
        let log = client.wait_for("window/logMessage").await.unwrap();
        let message = log["params"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.contains("could not load") && !message.contains("keeps its model"),
            "{message}"
        );
        if message.contains("the fast tier now runs") {
            break;
        }
    }
    assert!(
        cache
            .path()
            .join("hf/tester/gemma-3-270m-GGUF/gemma-3-270m-Q4_K_M.gguf")
            .is_file()
    );
    // The editor's status shows the fast tier ready on the cached file.
    let status = client.request("tierls/status", Value::Null).await.unwrap();
    let fast = &status["result"]["tiers"][0];
    assert_eq!(fast["tier"], "fast", "{status}");
    assert_eq!(fast["state"], "ready", "{status}");
    assert!(
        fast["model"]
            .as_str()
            .is_some_and(|model| model.ends_with("gemma-3-270m-Q4_K_M.gguf")),
        "{status}"
    );
    client.shutdown().await.unwrap();
}

/// A hub whose listing names files outside the repository (`../…`, absolute, backslashes):
/// they are not files of it, and nothing is written outside the cache's repository folder.
#[tokio::test]
async fn a_hostile_listing_cannot_write_outside_the_cache() {
    let hub = LoopbackHub::start(repo(&[
        (
            "../../escape-Q4_K_M.gguf",
            HubFile::new(some_bytes(100, 100)),
        ),
        ("/etc/abs-Q4_K_M.gguf", HubFile::new(some_bytes(100, 101))),
        (
            "sub\\..\\..\\win-Q4_K_M.gguf",
            HubFile::new(some_bytes(100, 102)),
        ),
    ]));
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let err = fetch(&hub, &cache, &format!("{REPO}:Q4_K_M"), |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        err,
        "hf://tester/tiny-GGUF:Q4_K_M: tester/tiny-GGUF has no GGUF for Q4_K_M; it has no GGUF files"
    );
    assert!(
        hub.requests
            .lock()
            .unwrap()
            .iter()
            .all(|r| !r.path.contains("/resolve/"))
    );
    let written: Vec<_> = walkdir::WalkDir::new(root.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .collect();
    assert!(written.is_empty(), "{written:?}");
}
