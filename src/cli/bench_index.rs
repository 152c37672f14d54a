//! `tierls bench index PATH`: indexing a tree cold against Universal Ctags on the same tree,
//! one keystroke in a 5,000-line file, and a repo map, side by side.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ropey::Rope;

use super::index::{peak_memory, scan_with_progress_bar};
use super::output;
use crate::core::budget::human_bytes;
use crate::core::document::{Document, TextChange};
use crate::core::index::language::Language;
use crate::core::index::live::LiveFile;
use crate::core::index::repo_map::{
    GRAPH_ROWS_PER_STEP, RepoMapRequest, build_graph_step, last_recomputed_rows, repo_map,
};
use crate::core::position::{Position, PositionEncoding, Range};
use crate::workspace::{DiskIndexed, Limits};

pub fn run(path: PathBuf) -> ExitCode {
    if !path.is_dir() {
        output::error(&format!("{}: not a directory", path.display()));
        return ExitCode::from(2);
    }
    output::line(&format!("tree: {}", path.display()));
    let memory_before = peak_memory().unwrap_or(0);
    let (mut workspace, stats) = scan_with_progress_bar(&path, Limits::default());
    let index = workspace.index();
    let summary = index.stats();
    let ours = stats.elapsed;
    let our_memory = peak_memory().unwrap_or(0);
    output::line(&format!(
        "tierls: {} files, {} definitions, {} references in {:.2} s, peak memory {} (+{} for the index), resident after the scan {}",
        summary.files,
        summary.definitions,
        summary.references,
        ours.as_secs_f64(),
        human_bytes(our_memory),
        human_bytes(our_memory.saturating_sub(memory_before)),
        human_bytes(resident_memory().unwrap_or(0)),
    ));
    let parts: Vec<String> = index
        .memory_by_part()
        .into_iter()
        .map(|(part, bytes)| format!("{part} {}", human_bytes(bytes as u64)))
        .collect();
    output::line(&format!(
        "the index's memory by part (heap and inline, before allocator overhead): {}",
        parts.join(", ")
    ));
    // ctags gets exactly the files tierls indexed (it knows no .gitignore of its own).
    let files: Vec<PathBuf> = index
        .files()
        .map(|(_, entry)| path.join(&entry.path))
        .collect();
    let ctags_idle = ctags(&files);
    match ctags_idle {
        Some((elapsed, memory, tags)) => output::line(&format!(
            "ctags on the same {} files: {tags} tags in {:.2} s, peak memory {} => tierls takes {:.2}x the time of ctags",
            files.len(),
            elapsed.as_secs_f64(),
            human_bytes(memory),
            ours.as_secs_f64() / elapsed.as_secs_f64().max(1e-9),
        )),
        None => output::line("ctags: not run (Universal Ctags is not installed)"),
    }

    let sample: Vec<(PathBuf, Language)> = index
        .files()
        .map(|(_, entry)| (path.join(&entry.path), entry.language))
        .collect();
    if let Some(extraction) = extraction_times(&sample) {
        output::line(&extraction);
    }

    let keystrokes = keystroke_times();
    output::line(&format!(
        "keystroke in a 5,000-line Rust file (edit + incremental reparse, what the server does per keystroke): median {:.2} ms, p95 {:.2} ms over {} keystrokes; extracting its symbols when the index is next read: {:.2} ms; a full parse: {:.2} ms",
        ms(keystrokes.median),
        ms(keystrokes.p95),
        keystrokes.count,
        ms(keystrokes.extract),
        ms(keystrokes.full_parse),
    ));

    if let Some(lookups) = prefix_lookup_times(index) {
        output::line(&format!(
            "names by prefix (what completion asks while a name is typed, 32 at most): median {:.3} ms, p95 {:.3} ms over {} lookups of 1 to 4 characters",
            ms(lookups.median),
            ms(lookups.p95),
            lookups.count,
        ));
    }

    // A warm start: the same tree through the persisted index, written by one scan and
    // revalidated by the next (a cache of its own, so the user's is not touched).
    if let Some(warm) = warm_start(&path) {
        output::line(&warm);
    }

    // The repo map for the file that uses the most names, as a plan would ask for it: the
    // first builds the file graph, the next reuses it after an edit of that file.
    let focus = index
        .files()
        .max_by_key(|(id, _)| index.used_names(*id).len())
        .map(|(_, entry)| (entry.path.clone(), entry.language));
    if let Some((focus, language)) = focus {
        let request = RepoMapRequest {
            focus_files: &[focus.as_str()],
            focus_names: &[],
            token_budget: 2048,
        };
        // Built first in steps, as the server does before its first plan.
        let mut steps = Vec::new();
        loop {
            let started = Instant::now();
            let built = build_graph_step(workspace.index(), GRAPH_ROWS_PER_STEP);
            steps.push(started.elapsed());
            if built {
                break;
            }
        }
        let rows = last_recomputed_rows(workspace.index());
        let started = Instant::now();
        let map = repo_map(workspace.index(), &request);
        let first = started.elapsed();
        let mut again: Vec<Duration> = (0..5)
            .map(|_| {
                let started = Instant::now();
                repo_map(workspace.index(), &request);
                started.elapsed()
            })
            .collect();
        again.sort();
        let reindexed = std::fs::read_to_string(path.join(&focus))
            .ok()
            .and_then(|text| {
                let tree = crate::core::index::extract::parse(language, &text, None)?;
                Some(DiskIndexed {
                    language,
                    symbols: crate::core::index::extract::extract(language, &tree, &text),
                    bytes: text.len(),
                })
            });
        workspace.apply_disk(&focus, reindexed);
        let started = Instant::now();
        let after_edit_map = repo_map(workspace.index(), &request);
        let after_edit = started.elapsed();
        output::line(&format!(
            "repo map for {focus} (2,048 tokens, {} lines): graph of {rows} files built in {:.1} ms ({} steps, longest {:.1} ms); first map {:.1} ms, again {:.1} ms (median of 5); after that file is reindexed {:.1} ms ({} rows recomputed, same map: {})",
            map.lines().count(),
            ms(steps.iter().sum()),
            steps.len(),
            ms(steps.iter().copied().max().unwrap_or_default()),
            ms(first),
            ms(again[again.len() / 2]),
            ms(after_edit),
            last_recomputed_rows(workspace.index()),
            if map == after_edit_map { "yes" } else { "no" },
        ));
    }
    drop(workspace);

    // The same cold scan and ctags run again with one CPU-bound process beside them.
    if let Some((ctags_alone, _, _)) = ctags_idle
        && let Some(load) = BusyProcess::start()
    {
        let (_, loaded_stats) = scan_with_progress_bar(&path, Limits::default());
        let ctags_loaded = ctags(&files);
        drop(load);
        if let Some((ctags_loaded, _, _)) = ctags_loaded {
            let ours_slowdown = loaded_stats.elapsed.as_secs_f64() / ours.as_secs_f64().max(1e-9);
            let ctags_slowdown = ctags_loaded.as_secs_f64() / ctags_alone.as_secs_f64().max(1e-9);
            output::line(&format!(
                "with one CPU-bound process running: tierls {:.2} s ({ours_slowdown:.2}x its idle time), ctags {:.2} s ({ctags_slowdown:.2}x) => tierls slows {:.2}x as much as ctags",
                loaded_stats.elapsed.as_secs_f64(),
                ctags_loaded.as_secs_f64(),
                ours_slowdown / ctags_slowdown,
            ));
        }
    }
    ExitCode::SUCCESS
}

/// A shell spinning in a loop for as long as this lives: the "other work on the machine".
struct BusyProcess(std::process::Child);

impl BusyProcess {
    fn start() -> Option<BusyProcess> {
        let child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(BusyProcess(child))
    }
}

impl Drop for BusyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmRSS` of this process, in bytes: what it holds now.
fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Scans `root` through a new cache twice: what writing it costs and how fast the next
/// start is.
fn warm_start(root: &std::path::Path) -> Option<String> {
    let folder = tempfile::tempdir().ok()?;
    let cache_file = folder.path().join("bench.index");
    let options = crate::scan::ScanOptions::default();
    let scan = || {
        let started = Instant::now();
        let mut index = crate::core::index::table::Index::default();
        let stats = crate::scan::cache::scan_with_cache(
            root,
            &cache_file,
            &options,
            &mut index,
            &mut |_, _| {},
        );
        (started.elapsed(), stats.from_cache, index.files().count())
    };
    let (writing, _, _) = scan();
    let (warm, reused, files) = scan();
    let size = std::fs::metadata(&cache_file).map_or(0, |metadata| metadata.len());
    Some(format!(
        "warm start through the persisted index: {:.2} s ({reused} of {files} files unchanged, unparsed) against {:.2} s for the scan that wrote it; cache file {}",
        warm.as_secs_f64(),
        writing.as_secs_f64(),
        human_bytes(size),
    ))
}

/// At most this many files are extracted both ways (see [`extraction_times`]).
const EXTRACTION_SAMPLE: usize = 2_000;

/// Extraction through the one-walk matcher against tree-sitter's query cursor, on an even
/// sample of the indexed files: each parsed once, extracted both ways, the results compared.
fn extraction_times(files: &[(PathBuf, Language)]) -> Option<String> {
    use crate::core::index::extract::{extract, extract_with_query_cursor, parse};
    let every = files.len().div_ceil(EXTRACTION_SAMPLE).max(1);
    let (mut parsing, mut walking, mut querying) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut sampled, mut same) = (0, 0);
    let max_bytes = crate::scan::ScanOptions::default().max_file_bytes;
    for (path, language) in files.iter().step_by(every) {
        let Ok(text) = crate::scan::read_source(path, max_bytes) else {
            continue;
        };
        let started = Instant::now();
        let Some(tree) = parse(*language, &text, None) else {
            continue;
        };
        parsing += started.elapsed();
        let started = Instant::now();
        let walked = extract(*language, &tree, &text);
        walking += started.elapsed();
        let started = Instant::now();
        let queried = extract_with_query_cursor(*language, &tree, &text);
        querying += started.elapsed();
        sampled += 1;
        same += usize::from(walked == queried);
    }
    (sampled > 0).then(|| {
        format!(
            "extracting symbols from {sampled} files (one indexed file in {every}, each parsed once in {:.2} s in all): one walk of the tree {:.2} s, tree-sitter's query cursor {:.2} s => {:.2}x faster; the same symbols and references in {same} of {sampled} files",
            parsing.as_secs_f64(),
            walking.as_secs_f64(),
            querying.as_secs_f64(),
            querying.as_secs_f64() / walking.as_secs_f64().max(1e-9),
        )
    })
}

/// Universal Ctags over `files`: its time, its peak memory and the tags it wrote.
fn ctags(files: &[PathBuf]) -> Option<(Duration, u64, usize)> {
    let mut list = tempfile::NamedTempFile::new().ok()?;
    for file in files {
        use std::io::Write;
        writeln!(list, "{}", file.display()).ok()?;
    }
    let output_file = tempfile::NamedTempFile::new().ok()?;
    let started = Instant::now();
    let mut child = std::process::Command::new("ctags")
        .arg("-f")
        .arg(output_file.path())
        .arg("-L")
        .arg(list.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    // Its peak memory, read while it runs (its high-water mark only grows).
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Some(hwm) = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|status| vm_hwm(&status))
        {
            peak = peak.max(hwm);
        }
        match child.try_wait().ok()? {
            Some(status) => break status,
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let elapsed = started.elapsed();
    if !status.success() {
        return None;
    }
    let tags = std::fs::read(output_file.path())
        .ok()?
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty() && !line.starts_with(b"!_"))
        .count();
    Some((elapsed, peak, tags))
}

/// `VmHWM` of a `/proc/PID/status`, in bytes.
fn vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

struct Keystrokes {
    median: Duration,
    p95: Duration,
    count: usize,
    full_parse: Duration,
    extract: Duration,
}

/// Types characters one by one into the middle of a generated 5,000-line file, as an editor
/// sends them, timing what the server does for each.
fn keystroke_times() -> Keystrokes {
    let function = "pub fn compute_value(input: &[u32], factor: u32) -> u64 {\n    let mut total = 0u64;\n    for value in input {\n        total += (*value as u64) * factor as u64;\n    }\n    total\n}\n\n";
    let text = function.repeat(5000 / 8);
    let rope = Rope::from_str(&text);
    let started = Instant::now();
    let (mut live, _) = LiveFile::open(Language::Rust, &rope).expect("the Rust grammar loads");
    let full_parse = started.elapsed();
    let mut document = Document::new(&text, 1, "rust");
    let line = 2500;
    let (mut times, mut extract_times) = (Vec::new(), Vec::new());
    for (i, ch) in "let extra_value = compute_value(&input, 3);"
        .chars()
        .enumerate()
    {
        let at = Position::new(line, 4 + i as u32);
        let change = TextChange {
            range: Some(Range::new(at, at)),
            text: ch.to_string(),
        };
        let started = Instant::now();
        let edits = document
            .apply_changes(2 + i as i32, &[change], PositionEncoding::Utf16)
            .expect("a valid edit");
        live.reparse(document.text(), &edits);
        times.push(started.elapsed());
        let extracting = Instant::now();
        live.symbols(document.text());
        extract_times.push(extracting.elapsed());
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let count = times.len();
    times.sort();
    Keystrokes {
        median: times[count / 2],
        p95: times[count * 95 / 100],
        count,
        full_parse,
        extract: median(&mut extract_times),
    }
}

struct Lookups {
    median: Duration,
    p95: Duration,
    count: usize,
}

/// Times prefix lookups as completion makes them: the first one to four characters of
/// defined names spread over the tree.
fn prefix_lookup_times(index: &crate::core::index::table::Index) -> Option<Lookups> {
    let files: Vec<_> = index.files().collect();
    let step = (files.len() / 500).max(1);
    let prefixes: Vec<String> = files
        .iter()
        .step_by(step)
        .filter_map(|(_, entry)| entry.symbol(0))
        .flat_map(|symbol| {
            let name: Vec<char> = symbol.name().chars().collect();
            (1..=4.min(name.len())).map(move |length| name[..length].iter().collect::<String>())
        })
        .collect();
    if prefixes.is_empty() {
        return None;
    }
    let mut times: Vec<Duration> = prefixes
        .iter()
        .map(|prefix| {
            let started = Instant::now();
            std::hint::black_box(index.names_with_prefix(prefix, 32));
            started.elapsed()
        })
        .collect();
    times.sort();
    let count = times.len();
    Some(Lookups {
        median: times[count / 2],
        p95: times[count * 95 / 100],
        count,
    })
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
