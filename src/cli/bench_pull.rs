//! `tierls bench pull`: downloading a model from a hub on loopback, side by side with the
//! bare transfer (the same bytes read and dropped): what the part file, the sha256 and the
//! checks cost, and what a resume after a cut saves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::output;
use crate::core::budget::human_bytes;
use crate::core::hub::HubModel;
use crate::models::hub::{Hub, Quiet};
use crate::models::loopback_hub::{HubFile, LoopbackHub, Repo};

const SIZE: usize = 256 << 20;
const REPO: &str = "bench/model-GGUF";
const FILE: &str = "model-Q4_K_M.gguf";

pub async fn bench() -> anyhow::Result<()> {
    // Bytes that do not compress or repeat: an xorshift stream.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let bytes: Vec<u8> = (0..SIZE / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    let bytes = Arc::new(bytes);
    let model = HubModel::parse(&format!("{REPO}:Q4_K_M")).map_err(anyhow::Error::msg)?;
    output::line(&format!(
        "a {} GGUF from a hub on loopback (127.0.0.1), best of 3",
        human_bytes(SIZE as u64)
    ));

    let hub = serve(&bytes, None);
    let bare = best_of(3, || transfer(&hub.url)).await?;
    let fetched = best_of(3, || async {
        let cache = tempfile::tempdir()?;
        let started = Instant::now();
        Hub::new(&hub.url, None, cache.path().to_owned())
            .fetch(&model, &mut Quiet)
            .await?;
        Ok(started.elapsed())
    })
    .await?;
    output::line(&format!(
        "bare transfer {:.0} MiB/s; tierls fetch (part file, sha256, size check, rename) {:.0} MiB/s => the fetch takes {:.2}x the bare transfer's time",
        rate(bare),
        rate(fetched),
        fetched.as_secs_f64() / bare.as_secs_f64().max(1e-9),
    ));

    // Cut at half way on the first request: the second asks for the rest only.
    let cut = serve(&bytes, Some(SIZE / 2));
    let cache = tempfile::tempdir()?;
    let started = Instant::now();
    Hub::new(&cut.url, None, cache.path().to_owned())
        .fetch(&model, &mut Quiet)
        .await?;
    let resumed = started.elapsed();
    let ranges: Vec<String> = cut
        .downloads_of(FILE)
        .iter()
        .map(|request| request.range.clone().unwrap_or_else(|| "whole".into()))
        .collect();
    output::line(&format!(
        "cut at half way: fetched in {:.2} s ({:.2}x an uncut fetch) over {} requests ({}); bytes sent {} for a {} file (a restart would send {})",
        resumed.as_secs_f64(),
        resumed.as_secs_f64() / fetched.as_secs_f64().max(1e-9),
        ranges.len(),
        ranges.join(", "),
        human_bytes(cut.sent.load(std::sync::atomic::Ordering::Relaxed)),
        human_bytes(SIZE as u64),
        human_bytes(SIZE as u64 + SIZE as u64 / 2),
    ));
    Ok(())
}

fn serve(bytes: &Arc<Vec<u8>>, cut: Option<usize>) -> LoopbackHub {
    let file = HubFile {
        bytes: bytes.clone(),
        cut: cut.map(|at| (1, at)),
        ..HubFile::default()
    };
    LoopbackHub::start(BTreeMap::from([(
        REPO.to_owned(),
        Repo {
            files: BTreeMap::from([(FILE.to_owned(), file)]),
            token: None,
        },
    )]))
}

/// The file read from the hub and dropped: the transport alone.
async fn transfer(url: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut response = reqwest::get(format!("{url}/{REPO}/resolve/main/{FILE}"))
        .await?
        .error_for_status()?;
    let mut received = 0;
    while let Some(chunk) = response.chunk().await? {
        received += chunk.len();
    }
    anyhow::ensure!(received == SIZE, "the bare transfer got {received} bytes");
    Ok(started.elapsed())
}

async fn best_of<F, Fut>(runs: usize, mut run: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Duration>>,
{
    let mut best = Duration::MAX;
    for _ in 0..runs {
        best = best.min(run().await.context("a run failed")?);
    }
    Ok(best)
}

fn rate(elapsed: Duration) -> f64 {
    SIZE as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9)
}
