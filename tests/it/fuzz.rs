//! Bounded property tests over random inputs: the framing pump and the plan decoder and
//! validator. `TIERLS_FUZZ_ITERATIONS` runs them longer (the default keeps `cargo test`
//! quick); the seed is printed so that a failure can be replayed with `TIERLS_FUZZ_SEED`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use serde_json::json;
use tierls::core::plan::{Workspace, validate};
use tierls::lsp::FrameReader;
use tierls::refactor::parse_plan;

use crate::support::TestServer;

fn iterations(default: usize) -> usize {
    std::env::var("TIERLS_FUZZ_ITERATIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn rng(name: &str) -> fastrand::Rng {
    let seed = std::env::var("TIERLS_FUZZ_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{name}: TIERLS_FUZZ_SEED={seed}");
    fastrand::Rng::with_seed(seed)
}

/// A stream of frames, some good and most broken in one of the ways clients break them.
fn random_stream(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.usize(1..12) {
        let body = match rng.u8(0..6) {
            0 => br#"{"jsonrpc":"2.0","method":"tierls/nothing","params":{}}"#.to_vec(),
            // A string id: the client numbers its own requests, and must not take this
            // request's answer for one of theirs.
            1 => br#"{"jsonrpc":"2.0","id":"fuzz","method":"$/x"}"#.to_vec(),
            2 => b"{oops".to_vec(),
            3 => (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect(),
            4 => b"[1,2,3]".to_vec(),
            _ => "{\"jsonrpc\":\"2.0\",\"method\":\"\u{202e}\"}"
                .as_bytes()
                .to_vec(),
        };
        let declared = match rng.u8(0..5) {
            0 => body.len() + rng.usize(1..20),
            1 => body.len().saturating_sub(rng.usize(1..5)),
            _ => body.len(),
        };
        match rng.u8(0..7) {
            0 => out.extend_from_slice(format!("Content-Lenght: {declared}\r\n\r\n").as_bytes()),
            1 => out.extend_from_slice(b"Content-Length: lots\r\n\r\n"),
            2 => out.extend_from_slice(format!("Content-Length: {declared}\n\n").as_bytes()),
            3 => out.extend(std::iter::repeat_n(b'x', rng.usize(0..300))),
            _ => out.extend_from_slice(format!("Content-Length: {declared}\r\n\r\n").as_bytes()),
        }
        out.extend_from_slice(&body);
    }
    out
}

#[tokio::test]
async fn the_framing_pump_ends_on_any_input() {
    let mut rng = rng("framing");
    for _ in 0..iterations(400) {
        let input = random_stream(&mut rng);
        let limit = Arc::new(AtomicUsize::new(1 << 16));
        let mut frames = FrameReader::new(std::io::Cursor::new(input.clone()), limit);
        let mut seen = 0usize;
        // Each frame consumes at least one byte: more frames than bytes is a loop.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), frames.next()).await {
                Err(_) => panic!("the reader blocked on {input:?}"),
                Ok(Ok(Some(_))) => seen += 1,
                Ok(Ok(None)) | Ok(Err(_)) => break,
            }
            assert!(seen <= input.len() + 1, "endless frames from {input:?}");
        }
    }
}

#[tokio::test]
async fn the_server_keeps_answering_after_random_input() {
    let mut rng = rng("server framing");
    let mut server = TestServer::start(&[]);
    server.initialize().await;
    server.open("doc.rs", "let x = 1;\n").await;
    for _ in 0..iterations(40) {
        server
            .client
            .send_bytes(&random_stream(&mut rng))
            .await
            .unwrap();
        // A frame that declares more than it holds takes its missing bytes from what comes
        // next: 32 bytes of blank lines cover the most the stream above may declare.
        server.client.send_bytes(&b"\r\n".repeat(16)).await.unwrap();
        let view = server.view("doc.rs").await;
        assert_eq!(view["result"]["text"], "let x = 1;\n", "{view}");
    }
    assert!(server.finish().await.clean);
}

/// A workspace where `src/a.rs` and `src/b.rs` exist with a few symbols.
struct Small;

impl Workspace for Small {
    fn symbols(&self, file: &str) -> Option<Vec<String>> {
        matches!(file, "src/a.rs" | "src/b.rs").then(|| vec!["f".into(), "S::m".into()])
    }
    fn exists(&self, file: &str) -> bool {
        self.symbols(file).is_some()
    }
}

fn random_path(rng: &mut fastrand::Rng) -> String {
    const PIECES: [&str; 14] = [
        "src", "a.rs", "b.rs", "..", ".", "/", "\\", ".git", "x", "\0", "new.rs", "C:", "~",
        "\u{202e}",
    ];
    (0..rng.usize(1..6))
        .map(|_| PIECES[rng.usize(..PIECES.len())])
        .collect::<Vec<_>>()
        .join(if rng.bool() { "/" } else { "" })
}

#[test]
fn the_plan_decoder_and_validator_hold_their_invariants() {
    let mut rng = rng("plans");
    let actions = [
        "replace_symbol",
        "insert_before",
        "insert_after",
        "delete_symbol",
        "create_file",
        "edit_file",
        "explode",
    ];
    for _ in 0..iterations(2000) {
        let count = rng.usize(0..12);
        let steps: Vec<serde_json::Value> = (0..count)
            .map(|_| {
                let deps: Vec<u32> = (0..rng.usize(0..4)).map(|_| rng.u32(0..12)).collect();
                let target = ["", "f", "S::m", "g"][rng.usize(..4)];
                json!({
                    "id": rng.u32(0..12),
                    "file": random_path(&mut rng),
                    "target": target,
                    "action": actions[rng.usize(..actions.len())],
                    "instruction": "x".repeat(rng.usize(0..3) * 250),
                    "depends_on": deps,
                })
            })
            .collect();
        let answer = json!({ "summary": "s", "steps": steps }).to_string();
        let Ok(raw) = parse_plan(&answer) else {
            continue;
        };
        let plan = validate("fuzz", &raw, &Small);
        let mut placed = HashSet::new();
        for step in &plan.steps {
            assert!(
                step.depends_on.iter().all(|dep| placed.contains(dep)),
                "{step:?} runs before its dependencies in {answer}"
            );
            assert!(placed.insert(step.id), "two steps {} in {answer}", step.id);
            assert!(
                !step
                    .file
                    .split('/')
                    .any(|part| part == ".." || part.is_empty()),
                "{} in {answer}",
                step.file
            );
            assert!(!step.file.starts_with('/') && !step.file.contains('\0'));
            assert!(!step.file.split('/').any(|part| part == ".git"));
        }
        for rejected in &plan.rejected {
            assert!(
                !placed.contains(&rejected.id),
                "step {} both runs and not",
                rejected.id
            );
        }
        assert!(plan.steps.len() <= 8);
    }
}
