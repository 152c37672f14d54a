//! `tierls index PATH`: scan a workspace and print what the index holds, or its repo map.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use super::output;
use crate::core::budget::human_bytes;
use crate::core::index::repo_map::{RepoMapRequest, repo_map};
use crate::core::index::table::Index;
use crate::scan::{ScanStats, Skip};
use crate::workspace::{Limits, Workspace};

pub fn run(path: PathBuf, as_json: bool, map: Vec<String>, tokens: usize, cache: bool) -> ExitCode {
    if !path.is_dir() {
        output::error(&format!("{}: not a directory", path.display()));
        return ExitCode::from(2);
    }
    let (workspace, stats) = scan_with_cache_and_progress_bar(&path, Limits::default(), cache);
    let index = workspace.index();
    if !map.is_empty() {
        let focus: Vec<&str> = map.iter().map(String::as_str).collect();
        for file in &focus {
            if index.file(file).is_none() {
                output::error(&format!(
                    "{file}: not in the index (give a path relative to {})",
                    path.display()
                ));
                return ExitCode::from(2);
            }
        }
        let request = RepoMapRequest {
            focus_files: &focus,
            focus_names: &[],
            token_budget: tokens,
        };
        output::line(repo_map(index, &request).trim_end());
        return ExitCode::SUCCESS;
    }
    if as_json {
        output::line(&serde_json::to_string_pretty(&stats_json(index, &stats)).unwrap_or_default());
    } else {
        for line in describe(index, &stats) {
            output::line(&line);
        }
    }
    ExitCode::SUCCESS
}

/// Scans `root` with the size limits of its configuration, with a spinner on stderr.
pub fn scan_configured(root: &Path, config: &crate::config::Config) -> Workspace {
    let limits = Limits {
        index_bytes: config.index.max_file_bytes,
        read_bytes: config.limits.max_file_bytes,
    };
    scan_with_progress_bar(root, limits).0
}

/// Scans `root` into a workspace with a spinner on stderr (the total is unknown until the
/// walk ends).
pub fn scan_with_progress_bar(root: &Path, limits: Limits) -> (Workspace, ScanStats) {
    scan_with_cache_and_progress_bar(root, limits, false)
}

/// [`scan_with_progress_bar`], through the persisted index when `cache` is set.
pub fn scan_with_cache_and_progress_bar(
    root: &Path,
    limits: Limits,
    cache: bool,
) -> (Workspace, ScanStats) {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} indexing {pos} files ({per_sec}) {wide_msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let result = Workspace::scanned_with(root, limits, 0, cache, &mut |seen, path| {
        bar.set_position(seen as u64);
        if seen % 64 == 0 {
            bar.set_message(path.to_owned());
        }
    });
    bar.finish_and_clear();
    result
}

fn describe(index: &Index, stats: &ScanStats) -> Vec<String> {
    let summary = index.stats();
    let mut lines = vec![
        format!(
            "indexed {} files ({}) in {:.2} s ({} unchanged since the cache): {} definitions, {} references, {} files with syntax errors",
            summary.files,
            human_bytes(summary.bytes as u64),
            stats.elapsed.as_secs_f64(),
            stats.from_cache,
            summary.definitions,
            summary.references,
            summary.files_with_errors
        ),
        format!(
            "languages: {}",
            summary
                .languages
                .iter()
                .map(|(name, files)| format!("{name} {files}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    let skipped: Vec<String> = Skip::ALL
        .iter()
        .filter(|reason| stats.skipped(**reason) > 0)
        .map(|reason| format!("{} {}", reason.name(), stats.skipped(*reason)))
        .collect();
    lines.push(format!(
        "skipped: {}",
        if skipped.is_empty() {
            "none".into()
        } else {
            skipped.join(", ")
        }
    ));
    if let Some(peak) = peak_memory() {
        lines.push(format!("peak memory: {}", human_bytes(peak)));
    }
    lines
}

fn stats_json(index: &Index, stats: &ScanStats) -> serde_json::Value {
    let summary = index.stats();
    json!({
        "files": summary.files,
        "bytes": summary.bytes,
        "definitions": summary.definitions,
        "references": summary.references,
        "files_with_syntax_errors": summary.files_with_errors,
        "languages": summary.languages.iter().map(|(name, files)| json!({ "language": name, "files": files })).collect::<Vec<_>>(),
        "skipped": Skip::ALL.iter().map(|reason| (reason.name().to_owned(), json!(stats.skipped(*reason)))).collect::<serde_json::Map<_, _>>(),
        "seconds": stats.elapsed.as_secs_f64(),
        "unchanged_since_the_cache": stats.from_cache,
        "peak_memory_bytes": peak_memory(),
    })
}

/// This process's peak resident memory (Linux `VmHWM`).
pub fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
