//! `tierls models`: each tier's model, its memory needs, and where it fits on this machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};

use super::output;
use crate::config::{DraftKind, ModelSource, Tier, TierConfig};
use crate::core::budget::{Machine, human_bytes};
use crate::models::embedded::test_model_path;
use crate::models::fit::{LoadPlan, plan_load_drafted};
use crate::models::gguf::GgufHeader;
use crate::models::hub::{Hub, cached_models, model_cache};
use crate::models::machine;
use crate::models::tiers::model_drafting;

pub fn run(workspace: Option<PathBuf>, as_json: bool) -> ExitCode {
    let workspace = workspace.unwrap_or_else(|| PathBuf::from("."));
    let mut tiers = match super::workspace_config(&workspace) {
        Ok(config) => config.tiers,
        Err(errors) => return super::config_errors(errors),
    };
    let configured = Tier::ALL
        .iter()
        .any(|&tier| tiers.get(tier).model.is_some());
    if !configured {
        // With nothing configured, the fast tier runs the test model, as the demo does.
        tiers.fast.model = Some(ModelSource::File(test_model_path()));
    }
    let machine = machine::detect();
    // The fast tier first: a tier it drafts for counts a context of its model.
    let mut rows: Vec<Row> = Vec::new();
    for tier in Tier::ALL {
        let drafter = rows.first().and_then(|fast: &Row| match &fast.outcome {
            Outcome::Planned(plan) => Some(plan.header.clone()),
            _ => None,
        });
        rows.push(Row::new(
            tier,
            tiers.get(tier),
            &workspace,
            &machine,
            drafter.as_ref(),
        ));
    }
    let cache = model_cache();
    let cached = cached_models(&cache);
    if as_json {
        let report = json!({
            "machine": machine_json(&machine),
            "cache": cache,
            "cached": cached.iter().map(|(name, bytes)| json!({"model": name, "bytes": bytes})).collect::<Vec<_>>(),
            "tiers": rows.iter().map(|row| {
                let mut json = row.to_json();
                if let (Some(fields), Some(drafting)) = (json.as_object_mut(), row.drafting(&rows)) {
                    fields.insert("drafting".into(), json!(drafting));
                }
                json
            }).collect::<Vec<_>>(),
        });
        output::line(&serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        output::line(&describe_machine(&machine));
        if !configured {
            output::line("no tier names a model: the fast tier shows the test model");
        }
        let mut table = vec![COLUMNS.map(String::from).to_vec()];
        table.extend(rows.iter().map(Row::cells));
        for line in render_table(&table) {
            output::line(&line);
        }
        for note in rows.iter().flat_map(Row::notes) {
            output::line(&note);
        }
        for row in &rows {
            if let Some(drafting) = row.drafting(&rows) {
                output::line(&format!("{}: {drafting}", row.tier));
            }
        }
        output::line(&format!(
            "downloaded models in {}: {}",
            cache.display(),
            if cached.is_empty() { "none" } else { "" }
        ));
        for (name, bytes) in &cached {
            output::line(&format!("  {name}  {}", human_bytes(*bytes)));
        }
    }
    ExitCode::SUCCESS
}

fn planned(
    path: &Path,
    tier_config: &TierConfig,
    machine: &Machine,
    drafter: Option<&GgufHeader>,
) -> Outcome {
    match plan_load_drafted(path, tier_config, machine, drafter) {
        Ok(plan) => Outcome::Planned(Box::new(plan)),
        Err(err) => Outcome::Failed(err.to_string()),
    }
}

struct Row {
    tier: Tier,
    source: Option<ModelSource>,
    tier_config: TierConfig,
    outcome: Outcome,
}

enum Outcome {
    NotConfigured,
    Remote,
    Unsupported(String),
    Planned(Box<LoadPlan>),
    Failed(String),
}

impl Row {
    fn new(
        tier: Tier,
        tier_config: &TierConfig,
        workspace: &Path,
        machine: &Machine,
        drafter: Option<&GgufHeader>,
    ) -> Row {
        let outcome = match &tier_config.model {
            None => Outcome::NotConfigured,
            Some(ModelSource::Remote(_)) => Outcome::Remote,
            Some(ModelSource::HuggingFace(model)) => {
                match Hub::from_env(model_cache()).cached(model) {
                    Some(path) => planned(&path, tier_config, machine, drafter),
                    None => Outcome::Unsupported(format!(
                        "not downloaded yet: `tierls pull {model}` fetches it"
                    )),
                }
            }
            Some(ModelSource::File(path)) => {
                let path = if path.is_absolute() {
                    path.clone()
                } else {
                    workspace.join(path)
                };
                planned(&path, tier_config, machine, drafter)
            }
        };
        Row {
            tier,
            source: tier_config.model.clone(),
            tier_config: tier_config.clone(),
            outcome,
        }
    }

    /// The row's cells, in the order of [`COLUMNS`].
    fn cells(&self) -> Vec<String> {
        let model = match &self.source {
            None => "-".to_owned(),
            Some(ModelSource::File(path)) => path.file_name().map_or_else(
                || path.display().to_string(),
                |name| name.to_string_lossy().into_owned(),
            ),
            Some(source) => source.to_string(),
        };
        let context = format!("{}×{}", self.tier_config.context, self.tier_config.slots);
        let mut cells = vec![self.tier.to_string(), model];
        match &self.outcome {
            Outcome::Planned(plan) => {
                let (shape, estimate) = (&plan.header.shape, &plan.estimate);
                cells.extend([
                    plan.header.architecture.clone(),
                    format!("{:.0}M", shape.parameters as f64 / 1e6),
                    plan.header.quantization(),
                    context,
                    human_bytes(estimate.weights),
                    human_bytes(estimate.kv_cache),
                    human_bytes(estimate.compute),
                    human_bytes(estimate.total()),
                    format!(
                        "{} (gpu_layers {})",
                        plan.placement, plan.options.n_gpu_layers
                    ),
                ]);
            }
            other => {
                let status = match other {
                    Outcome::NotConfigured => "not configured".to_owned(),
                    Outcome::Remote => "remote worker node: see `tierls status`".to_owned(),
                    Outcome::Unsupported(why) | Outcome::Failed(why) => format!("error: {why}"),
                    Outcome::Planned(_) => unreachable!("handled above"),
                };
                cells.extend(["-", "-", "-"].map(String::from));
                cells.push(context);
                cells.extend(["-", "-", "-", "-"].map(String::from));
                cells.push(status);
            }
        }
        cells
    }

    /// What does not fit in a cell: the full model path and a better quantization.
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(ModelSource::File(path)) = &self.source {
            notes.push(format!("{}: {}", self.tier, path.display()));
        }
        if let Outcome::Planned(plan) = &self.outcome
            && let Some(quantization) = plan.better_fit
        {
            notes.push(format!(
                "{}: a {quantization} quantization would fit better",
                self.tier
            ));
        }
        notes
    }

    /// How this tier drafts for speculative decoding, and for `draft = "model"` whether the
    /// fast tier's model can draft for it (the same check the server makes at load).
    fn drafting(&self, rows: &[Row]) -> Option<String> {
        match self.tier_config.draft {
            DraftKind::Off => None,
            DraftKind::Lookup => Some(format!(
                "drafts by prompt lookup (up to {} tokens after a match of {})",
                self.tier_config.draft_max, self.tier_config.draft_min_match
            )),
            DraftKind::Model => {
                let Outcome::Planned(plan) = &self.outcome else {
                    return Some("not drafting: its model is not a file on this machine".into());
                };
                let target = (self.path().unwrap_or(Path::new("?")), &plan.header);
                let fast = rows
                    .iter()
                    .find(|row| row.tier == Tier::Fast)
                    .and_then(|row| match (&row.outcome, row.path()) {
                        (Outcome::Planned(plan), Some(path)) => Some((path, &plan.header)),
                        _ => None,
                    });
                Some(match model_drafting(self.tier, target, fast) {
                    Ok(()) => format!(
                        "the fast tier's model drafts for it (the same vocabulary, {} tokens; up to {} a draft)",
                        plan.header
                            .vocabulary
                            .map_or(0, |vocabulary| vocabulary.size),
                        self.tier_config.draft_max
                    ),
                    Err(reason) => format!("not drafting: {reason}"),
                })
            }
        }
    }

    fn path(&self) -> Option<&Path> {
        match &self.source {
            Some(ModelSource::File(path)) => Some(path),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        let mut row = json!({
            "tier": self.tier.to_string(),
            "model": self.source.as_ref().map(|source| source.to_string()),
            "context": self.tier_config.context,
            "slots": self.tier_config.slots,
        });
        let status = match &self.outcome {
            Outcome::NotConfigured => json!({ "status": "not configured" }),
            Outcome::Remote => json!({ "status": "remote" }),
            Outcome::Unsupported(why) | Outcome::Failed(why) => {
                json!({ "status": "error", "error": why })
            }
            Outcome::Planned(plan) => json!({
                "status": "ok",
                "architecture": plan.header.architecture,
                "parameters": plan.header.shape.parameters,
                "tensor_type": plan.header.quantization(),
                "layers": plan.header.shape.n_layer,
                "context_trained": plan.header.shape.n_ctx_train,
                "has_fim_tokens": plan.header.has_fim_tokens,
                "has_chat_template": plan.header.has_chat_template,
                "bytes": {
                    "weights": plan.estimate.weights,
                    "kv_cache": plan.estimate.kv_cache,
                    "compute": plan.estimate.compute,
                    "total": plan.estimate.total(),
                },
                "placement": plan.placement.to_string(),
                "gpu_layers": plan.options.n_gpu_layers,
                "better_fit": plan.better_fit,
            }),
        };
        if let (Some(row), Value::Object(status)) = (row.as_object_mut(), status) {
            row.extend(status);
        }
        row
    }
}

const COLUMNS: [&str; 11] = [
    "tier",
    "model",
    "arch",
    "params",
    "quant",
    "context",
    "weights",
    "KV cache",
    "compute",
    "total",
    "placement",
];

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub(super) fn render_table(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    if c + 1 == row.len() {
                        cell.clone()
                    } else {
                        format!("{cell:<width$}", width = widths[c])
                    }
                })
                .collect();
            cells.join("  ")
        })
        .collect()
}

fn describe_machine(machine: &Machine) -> String {
    let gpus = if machine.gpus.is_empty() {
        "none found".to_owned()
    } else {
        machine
            .gpus
            .iter()
            .map(|gpu| {
                format!(
                    "{} ({} free of {})",
                    gpu.name,
                    human_bytes(gpu.free),
                    human_bytes(gpu.total)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let offload = if machine.gpu_offload {
        "yes"
    } else {
        "no: this build has no GPU back end (build with --features cuda, vulkan or metal)"
    };
    format!(
        "machine: RAM {} ({} available); GPUs: {gpus}; GPU offload: {offload}",
        human_bytes(machine.ram_total),
        human_bytes(machine.ram_available)
    )
}

fn machine_json(machine: &Machine) -> Value {
    json!({
        "ram_total": machine.ram_total,
        "ram_available": machine.ram_available,
        "gpu_offload": machine.gpu_offload,
        "gpus": machine.gpus.iter().map(|gpu| json!({ "name": gpu.name, "total": gpu.total, "free": gpu.free })).collect::<Vec<_>>(),
    })
}
