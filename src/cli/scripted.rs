//! `tierls serve --scripted-models FILE`: tiers served by scripted models, so that editor
//! tests get the same plan and code on every run. Hidden from `--help`: it is not a feature.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Tier;
use crate::lsp::ProvidedModels;
use crate::models::scripted::ScriptedModel;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    needle: String,
    answers: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Script {
    /// How long each four-byte token takes, so that an editor can see work in progress.
    per_token_ms: u64,
    fast: Vec<Rule>,
    executor: Vec<Rule>,
    planner: Vec<Rule>,
}

pub fn load(path: &Path) -> Result<ProvidedModels, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
    let script: Script =
        serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
    let mut models: ProvidedModels = Vec::new();
    for (tier, rules) in [
        (Tier::Fast, script.fast),
        (Tier::Executor, script.executor),
        (Tier::Planner, script.planner),
    ] {
        if rules.is_empty() {
            continue;
        }
        let mut model = ScriptedModel::new(1).per_token(Duration::from_millis(script.per_token_ms));
        for rule in &rules {
            let answers: Vec<&str> = rule.answers.iter().map(String::as_str).collect();
            model = model.answer(&rule.needle, &answers);
        }
        models.push((tier, Arc::new(model)));
    }
    Ok(models)
}
