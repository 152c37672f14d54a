//! `tierls bench quality [REPO]`: completion quality on holes cut in a repository (default:
//! the fixture the project ships, four languages with names defined across files). Prints,
//! side by side in one run: context recall (the needed definition is in the prompt), exact
//! first lines and similarity with the workspace index against the file alone, per
//! language; mid-word holes with and without token healing; the prompt's tokens; and the
//! prompt build time on a 20,000-file index.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::bench::timed;
use super::index::scan_with_progress_bar;
use super::output;
use crate::core::completion::{
    CompletionInput, CompletionPlan, finish_suggestion, plan_completion,
};
use crate::core::generation::GenerateRequest;
use crate::core::holes::{Hole, cut_holes, prompt_has_definition, similarity};
use crate::core::index::extract::{extract, parse};
use crate::core::index::language::Language;
use crate::core::index::table::Index;
use crate::models::Model;
use crate::models::embedded::{EmbeddedModel, EmbeddedOptions, test_model_path};
use crate::workspace::Limits;

/// The prompt's budget, as the server gives the fast tier (`lsp::completion`).
const BUDGET_BYTES: usize = 6000;

fn default_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quality")
}

pub fn run(repo: Option<PathBuf>, model: Option<PathBuf>) -> ExitCode {
    let repo = repo.unwrap_or_else(default_repo);
    if !repo.is_dir() {
        output::error(&format!("{}: not a directory", repo.display()));
        return ExitCode::from(2);
    }
    super::bench::run_async(bench(repo, model.unwrap_or_else(test_model_path)))
}

/// One way of asking, and what came back.
#[derive(Clone, Copy, Debug, Default)]
struct Score {
    holes: usize,
    recalled: usize,
    exact: usize,
    /// Answers that start with the needed name (what cross-file context is for), whatever
    /// follows it.
    name_right: usize,
    similarity: f64,
    prompt_tokens: u64,
}

/// One answer, scored.
struct Scored {
    recalled: bool,
    exact: bool,
    name_right: bool,
    similarity: f64,
}

impl Score {
    fn add(&mut self, scored: &Scored, prompt_tokens: u32) {
        self.holes += 1;
        self.recalled += usize::from(scored.recalled);
        self.exact += usize::from(scored.exact);
        self.name_right += usize::from(scored.name_right);
        self.similarity += scored.similarity;
        self.prompt_tokens += u64::from(prompt_tokens);
    }

    fn name_share(&self) -> f64 {
        percent(self.name_right, self.holes)
    }

    fn recall(&self) -> f64 {
        percent(self.recalled, self.holes)
    }

    fn exact_share(&self) -> f64 {
        percent(self.exact, self.holes)
    }

    fn mean_similarity(&self) -> f64 {
        self.similarity / self.holes.max(1) as f64
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// The scores of one language: at the start of names, alone and with the index, and in the
/// middle of names with the index, without healing and with it.
#[derive(Default)]
struct Row {
    alone: Score,
    indexed: Score,
    mid_word_plain: Score,
    mid_word_healed: Score,
}

async fn bench(repo: PathBuf, model_path: PathBuf) -> anyhow::Result<()> {
    output::line(&format!("repository: {}", repo.display()));
    let (workspace, _) = scan_with_progress_bar(&repo, Limits::default());
    let index = workspace.index();
    let mut holes: Vec<(Hole, String)> = Vec::new();
    for (_, entry) in index.files() {
        let text = std::fs::read_to_string(repo.join(&entry.path))?;
        for hole in cut_holes(index, &entry.path, entry.language, &text) {
            holes.push((hole, text.clone()));
        }
    }
    holes.sort_by(|a, b| (&a.0.path, a.0.offset).cmp(&(&b.0.path, b.0.offset)));
    let at_start = holes.iter().filter(|(hole, _)| !hole.mid_word).count();
    output::line(&format!(
        "holes: {} at the start of a name defined in another file, {} in the middle of one",
        at_start,
        holes.len() - at_start
    ));

    // The prompt build's figure first: it needs no model.
    let (p50, p95, slowest) = large_index_build_times();
    output::line(&format!(
        "prompt build on a 20,000-file index (a name defined in 200 files, 5,000 imports in the file): p50 {p50:.3} ms, p95 {p95:.3} ms (goal: p95 <= 2 ms); slowest cursor {slowest:?}"
    ));
    let options = EmbeddedOptions {
        n_ctx: 4096,
        slots: 1,
        ..EmbeddedOptions::default()
    };
    output::line(&format!("model: {}", model_path.display()));
    let loaded =
        tokio::task::spawn_blocking(move || EmbeddedModel::load(&model_path, &options)).await??;
    let model: &dyn Model = &loaded;
    let has_fim = model.info().has_fim;

    let bar = ProgressBar::new(holes.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} holes ({per_sec}) {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows: BTreeMap<&'static str, Row> = BTreeMap::new();
    let mut build_times = Vec::new();
    for (hole, full) in &holes {
        bar.set_message(format!("{}:{}", hole.path, hole.offset));
        let text = hole.text(full);
        let alone = file_alone(&hole.path, hole.language, &text.to_string());
        let row = rows.entry(hole.language.name()).or_default();
        let started = Instant::now();
        let indexed_plan = plan(hole, &text, index, has_fim);
        build_times.push(started.elapsed());
        let (answer, tokens) = answer(model, &indexed_plan).await?;
        let indexed = scored(index, hole, &indexed_plan, &answer);
        if hole.mid_word {
            row.mid_word_plain.add(&indexed, tokens);
            // Token healing: the same prompt, answered with the healed first token.
            let mut healed_plan = indexed_plan.clone();
            healed_plan.heal = true;
            let (answer, tokens) = answer_healed(model, &healed_plan).await?;
            let healed = scored(index, hole, &healed_plan, &answer);
            row.mid_word_healed.add(&healed, tokens);
        } else {
            row.indexed.add(&indexed, tokens);
            let alone_plan = plan(hole, &text, &alone, has_fim);
            let (answer, tokens) = self::answer(model, &alone_plan).await?;
            let scored_alone = scored(index, hole, &alone_plan, &answer);
            row.alone.add(&scored_alone, tokens);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    output::line(
        "language    holes | recall alone  indexed | exact alone  indexed   gain | name right alone indexed | similarity alone indexed | prompt tokens alone indexed",
    );
    let mut total = Row::default();
    for (language, row) in &rows {
        print_row(language, row);
        merge(&mut total, row);
    }
    print_row("all", &total);
    output::line(
        "mid-word    holes | exact plain  healed | name right plain healed | similarity plain healed",
    );
    for (language, row) in rows.iter().chain(std::iter::once((&"all", &total))) {
        output::line(&format!(
            "{language:<10} {:>6} | {:>10.0}% {:>6.0}% | {:>15.0}% {:>5.0}% | {:>15.2} {:>6.2}",
            row.mid_word_plain.holes,
            row.mid_word_plain.exact_share(),
            row.mid_word_healed.exact_share(),
            row.mid_word_plain.name_share(),
            row.mid_word_healed.name_share(),
            row.mid_word_plain.mean_similarity(),
            row.mid_word_healed.mean_similarity(),
        ));
    }
    let (p50, p95) = percentiles(&mut build_times);
    output::line(&format!(
        "prompt build on this repository: p50 {:.3} ms, p95 {:.3} ms over {} holes",
        p50,
        p95,
        build_times.len()
    ));
    Ok(())
}

fn merge(total: &mut Row, row: &Row) {
    for (into, from) in [
        (&mut total.alone, &row.alone),
        (&mut total.indexed, &row.indexed),
        (&mut total.mid_word_plain, &row.mid_word_plain),
        (&mut total.mid_word_healed, &row.mid_word_healed),
    ] {
        into.holes += from.holes;
        into.recalled += from.recalled;
        into.exact += from.exact;
        into.name_right += from.name_right;
        into.similarity += from.similarity;
        into.prompt_tokens += from.prompt_tokens;
    }
}

fn print_row(language: &str, row: &Row) {
    let gain = if row.alone.exact == 0 {
        "n/a".to_owned()
    } else {
        format!(
            "{:+.0}%",
            (row.indexed.exact as f64 / row.alone.exact as f64 - 1.0) * 100.0
        )
    };
    output::line(&format!(
        "{language:<10} {:>6} | {:>11.0}% {:>7.0}% | {:>10.0}% {:>7.0}% {:>6} | {:>15.0}% {:>6.0}% | {:>16.2} {:>7.2} | {:>19.0} {:>7.0}",
        row.indexed.holes,
        row.alone.recall(),
        row.indexed.recall(),
        row.alone.exact_share(),
        row.indexed.exact_share(),
        gain,
        row.alone.name_share(),
        row.indexed.name_share(),
        row.alone.mean_similarity(),
        row.indexed.mean_similarity(),
        row.alone.prompt_tokens as f64 / row.alone.holes.max(1) as f64,
        row.indexed.prompt_tokens as f64 / row.indexed.holes.max(1) as f64,
    ));
}

/// An index that knows only the hole's own file: the completion without workspace context.
fn file_alone(path: &str, language: Language, text: &str) -> Index {
    let mut index = Index::default();
    if let Some(tree) = parse(language, text, None) {
        index.upsert(path, language, extract(language, &tree, text), text.len());
    }
    index
}

fn plan(hole: &Hole, text: &ropey::Rope, index: &Index, has_fim: bool) -> CompletionPlan {
    plan_completion(&CompletionInput {
        path: &hole.path,
        language: Some(hole.language),
        text,
        offset: hole.offset,
        index,
        has_fim,
        budget_bytes: BUDGET_BYTES,
        recent_edits: &[],
    })
}

/// Whether the prompt held the needed definition, whether the answer is the line's rest
/// exactly, and how close it came.
fn scored(index: &Index, hole: &Hole, plan: &CompletionPlan, answer: &str) -> Scored {
    let expected = hole.expected.trim_end();
    let answer = answer.trim_end();
    // The rest of the needed name from the cursor, and the character after it in the line.
    let name_rest = expected
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(expected, |end| &expected[..end]);
    let name_right = answer.starts_with(name_rest)
        && !answer[name_rest.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_');
    Scored {
        recalled: prompt_has_definition(index, plan, &hole.path, &hole.needed),
        exact: answer == expected,
        name_right,
        similarity: similarity(answer, expected),
    }
}

async fn answer(model: &dyn Model, plan: &CompletionPlan) -> anyhow::Result<(String, u32)> {
    let request = GenerateRequest {
        heal: false,
        ..plan.request()
    };
    let (generation, _) = timed(model, 0, request).await?;
    Ok((
        finish_suggestion(plan, &generation.text),
        generation.usage.prompt_tokens,
    ))
}

async fn answer_healed(model: &dyn Model, plan: &CompletionPlan) -> anyhow::Result<(String, u32)> {
    let (generation, _) = timed(model, 0, plan.request()).await?;
    Ok((
        finish_suggestion(plan, &generation.text),
        generation.usage.prompt_tokens,
    ))
}

fn percentiles(times: &mut [Duration]) -> (f64, f64) {
    times.sort_unstable();
    let at = |share: f64| {
        let index = ((times.len() as f64 - 1.0) * share).round() as usize;
        times
            .get(index)
            .map_or(0.0, |time| time.as_secs_f64() * 1000.0)
    };
    (at(0.5), at(0.95))
}

/// The prompt build on a synthetic 20,000-file index with the hostile cases in it: p50,
/// p95, and the line whose cursor took longest.
fn large_index_build_times() -> (f64, f64, String) {
    let (index, text, cursors) = crate::core::holes::large_index_case(20_000);
    let rope = ropey::Rope::from_str(&text);
    let mut times = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for _ in 0..5 {
        for &offset in &cursors {
            let started = Instant::now();
            let plan = plan_completion(&CompletionInput {
                path: "src/app/main.py",
                language: Some(Language::Python),
                text: &rope,
                offset,
                index: &index,
                has_fim: false,
                budget_bytes: BUDGET_BYTES,
                recent_edits: &[],
            });
            let took = started.elapsed();
            times.push(took);
            std::hint::black_box(plan);
            if took > slowest.0 {
                let line = text[..offset].lines().last().unwrap_or_default();
                slowest = (took, line.trim().to_owned());
            }
        }
    }
    let (p50, p95) = percentiles(&mut times);
    (p50, p95, slowest.1)
}
