//! `tierls status`: the worker nodes (probed now) and what serves each tier.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::models::render_table;
use super::output;
use crate::config::Tier;
use crate::models::router::serve_nodes;
use crate::models::tiers::TierSet;

const COLUMNS: [&str; 10] = [
    "node", "url", "api", "tiers", "health", "busy", "slots", "probe", "memory", "error",
];

/// Exit status 0 when every node is healthy, 1 when some is not, 2 on a configuration error.
pub fn run(workspace: Option<PathBuf>, as_json: bool) -> ExitCode {
    let workspace = workspace.unwrap_or_else(|| PathBuf::from("."));
    let config = match super::workspace_config(&workspace) {
        Ok(config) => config,
        Err(errors) => return super::config_errors(errors),
    };
    let tiers = TierSet::new(crate::models::machine::detect());
    let mut notes: Vec<String> = tiers
        .configure_all(&config.tiers, Some(&workspace))
        .into_iter()
        .map(|(tier, problem)| format!("the {tier} tier: {problem}"))
        .collect();
    let (router, node_notes) = crate::models::remote::block_on_http({
        let tiers = tiers.clone();
        let nodes = config.nodes.clone();
        async move { serve_nodes(&tiers, &nodes).await }
    });
    notes.extend(node_notes);
    let nodes: Vec<Value> = router
        .as_ref()
        .map(|router| router.status())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|node| serde_json::to_value(node).ok())
        .collect();
    let tier_rows: Vec<Value> = Tier::ALL
        .iter()
        .map(|&tier| {
            let (model, state) = tiers.describe(tier);
            json!({ "tier": tier.to_string(), "model": model, "state": state.name() })
        })
        .collect();
    let healthy = nodes.iter().all(|node| node["health"] == "healthy");
    if as_json {
        let report = json!({ "nodes": nodes, "tiers": tier_rows, "notes": notes });
        output::line(&serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        if nodes.is_empty() {
            output::line("no worker nodes are configured ([nodes.<name>] in tierls.toml)");
        } else {
            let mut table = vec![COLUMNS.map(String::from).to_vec()];
            table.extend(nodes.iter().map(node_cells));
            for line in render_table(&table) {
                output::line(&line);
            }
        }
        output::line("");
        for row in &tier_rows {
            output::line(&format!(
                "{:<9} {} ({})",
                row["tier"].as_str().unwrap_or_default(),
                row["model"].as_str().unwrap_or("no model"),
                row["state"].as_str().unwrap_or_default()
            ));
        }
        for note in &notes {
            output::line(&format!("note: {note}"));
        }
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn node_cells(node: &Value) -> Vec<String> {
    let text = |key: &str| node[key].as_str().unwrap_or("-").to_owned();
    let tiers: Vec<&str> = node["tiers"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let slots = match (&node["slots"]["busy"], &node["slots"]["total"]) {
        (Value::Number(busy), Value::Number(total)) => format!("{busy}/{total}"),
        _ => "-".to_owned(),
    };
    vec![
        text("name"),
        text("url"),
        text("api"),
        tiers.join(","),
        text("health"),
        format!("{}/{}", node["busy"], node["concurrency"]),
        slots,
        node["probeMs"]
            .as_u64()
            .map_or("-".to_owned(), |ms| format!("{ms} ms")),
        node["memoryBytes"]
            .as_u64()
            .map_or("-".to_owned(), crate::core::budget::human_bytes),
        text("lastError"),
    ]
}
