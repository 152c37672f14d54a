//! Typed configuration: `tierls.toml` files and editor settings, validated at the edge.
//!
//! Each source is read into a [`ConfigLayer`] (every key optional, unknown keys rejected);
//! layers merge in order of precedence into a [`Config`] whose every field has a value.
//! Precedence, lowest first: defaults, the user's `tierls.toml`, the workspace's
//! `tierls.toml`, LSP `initializationOptions`, `workspace/didChangeConfiguration`.

mod error;
mod load;
mod nodes;
mod sources;
mod tiers;

pub use error::ConfigError;
pub use load::{CONFIG_FILE_NAME, load_file, parse_settings, parse_toml, user_config_path};
pub use nodes::{NodeApi, NodeConfig, NodeLayer, NodesLayer};
pub use sources::ConfigSources;
pub use tiers::{
    Bounded, DraftKind, GpuLayers, ModelSource, Tier, TierConfig, TierLayer, Tiers, TiersLayer,
};

use serde::Deserialize;
use std::fmt;

use crate::core::route::Rules;

/// The resolved configuration the server runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub log: LogConfig,
    pub limits: Limits,
    pub tiers: Tiers,
    pub index: IndexConfig,
    pub completion: CompletionConfig,
    pub plan: PlanConfig,
    /// Which tier does each piece of model work.
    pub routing: Rules,
    /// Worker nodes, by name.
    pub nodes: Vec<NodeConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanConfig {
    /// The repo map's share of the planner's prompt, in tokens.
    pub map_tokens: u32,
    /// The focus symbols' reference sites' share of the planner's prompt, in tokens.
    pub reference_tokens: u32,
    /// The most jobs one fan-out step (`update_references`) expands into.
    pub max_fan_out: u32,
    /// The command that checks a plan's result on a scratch copy of the workspace.
    pub check: Option<String>,
    /// The most seconds one run of the check may take.
    pub check_seconds: u32,
    /// Ignored folders linked into the check's scratch copy rather than left out.
    pub check_links: Vec<String>,
    /// Repair rounds by the executors after a failing check, before the planner revises.
    pub max_rounds: u32,
    /// The most seconds the check loop's rounds may take together.
    pub repair_seconds: u32,
    /// Answers asked of the executor per step (the first included) before the step fails.
    pub max_attempts: u32,
    /// The most tokens an executor may write for one step.
    pub max_step_tokens: u32,
    /// The most seconds one executor answer may take.
    pub step_seconds: u32,
    /// The most seconds the planner's answer may take.
    pub planner_seconds: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletionConfig {
    /// Wait this long after a keystroke before asking the model (a newer keystroke cancels).
    pub debounce_ms: u32,
    /// Stop generating a suggestion after this long and show what there is.
    pub budget_ms: u32,
    /// A hover waits this long for the fast tier's explanation, then shows the facts alone.
    pub hover_budget_ms: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexConfig {
    /// Whether the server scans the workspace at start.
    pub enabled: bool,
    /// Files larger than this are not indexed (nor parsed when open).
    pub max_file_bytes: u64,
    /// Whether the index is persisted in tierls' cache folder and revalidated at the next
    /// start instead of built again.
    pub cache: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// The most verbose level mirrored to the editor with `window/logMessage`.
    pub level: LogLevel,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// JSON-RPC messages larger than this are refused with an error (and skipped unread).
    pub max_message_bytes: usize,
    /// Files read from disk larger than this are refused.
    pub max_file_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log: LogConfig {
                level: LogLevel::Info,
            },
            limits: Limits {
                max_message_bytes: 256 * MIB as usize,
                max_file_bytes: 64 * MIB,
            },
            tiers: Tiers::default(),
            index: IndexConfig {
                enabled: true,
                max_file_bytes: 1024 * 1024,
                cache: true,
            },
            completion: CompletionConfig {
                debounce_ms: 30,
                budget_ms: 1500,
                hover_budget_ms: 800,
            },
            plan: PlanConfig {
                map_tokens: 1024,
                reference_tokens: 2048,
                max_fan_out: 256,
                check: None,
                check_seconds: 600,
                check_links: ["node_modules", ".venv", "venv"].map(String::from).to_vec(),
                max_rounds: 2,
                repair_seconds: 1800,
                max_attempts: 3,
                max_step_tokens: 1024,
                step_seconds: 300,
                planner_seconds: 900,
            },
            routing: Rules::default(),
            nodes: Vec::new(),
        }
    }
}

const MIB: u64 = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        })
    }
}

/// One source of configuration, as written: every key optional, unknown keys rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigLayer {
    pub log: LogLayer,
    pub limits: LimitsLayer,
    pub tiers: TiersLayer,
    pub index: IndexLayer,
    pub completion: CompletionLayer,
    pub plan: PlanLayer,
    pub routing: RoutingLayer,
    pub nodes: NodesLayer,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingLayer {
    pub skip_planner: Option<bool>,
    pub skip_planner_lines: Option<tiers::Bounded<1, 100_000>>,
    pub mechanical_tier: Option<MechanicalTier>,
    pub fast_step_lines: Option<tiers::Bounded<1, 10_000>>,
    pub escalate_after: Option<tiers::Bounded<0, 10>>,
    pub hover_executor_lines: Option<tiers::Bounded<1, 1_000_000>>,
    pub hover_executor_references: Option<tiers::Bounded<1, 1_000_000>>,
}

/// `routing.mechanical_tier`: `"fast"` or `"executor"` (the planner never takes the small
/// steps first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MechanicalTier(pub Tier);

impl<'de> Deserialize<'de> for MechanicalTier {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "fast" => Ok(MechanicalTier(Tier::Fast)),
            "executor" => Ok(MechanicalTier(Tier::Executor)),
            "planner" => Err(serde::de::Error::custom(
                "\"planner\" cannot take mechanical steps first: expected \"fast\" or \"executor\"",
            )),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not a tier: expected \"fast\" or \"executor\""
            ))),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanLayer {
    pub map_tokens: Option<tiers::Bounded<0, 32768>>,
    pub reference_tokens: Option<tiers::Bounded<0, 65536>>,
    pub max_fan_out: Option<tiers::Bounded<1, 10000>>,
    pub check: Option<CheckCommand>,
    pub check_seconds: Option<tiers::Bounded<1, 7200>>,
    pub check_links: Option<FolderNames>,
    pub max_rounds: Option<tiers::Bounded<0, 10>>,
    pub repair_seconds: Option<tiers::Bounded<1, 14400>>,
    pub max_attempts: Option<tiers::Bounded<1, 10>>,
    pub max_step_tokens: Option<tiers::Bounded<16, 32768>>,
    pub step_seconds: Option<tiers::Bounded<1, 3600>>,
    pub planner_seconds: Option<tiers::Bounded<1, 7200>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompletionLayer {
    pub debounce_ms: Option<tiers::Bounded<0, 5000>>,
    pub budget_ms: Option<tiers::Bounded<50, 60000>>,
    pub hover_budget_ms: Option<tiers::Bounded<0, 60000>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexLayer {
    pub enabled: Option<bool>,
    pub max_file_kb: Option<Kilobytes>,
    pub cache: Option<bool>,
}

/// A check command: one line of shell, not empty, at most 2,000 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckCommand(pub String);

impl<'de> Deserialize<'de> for CheckCommand {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let command = String::deserialize(deserializer)?;
        let trimmed = command.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 2000 || trimmed.contains('\0') {
            return Err(serde::de::Error::custom(
                "expected a command of 1 to 2000 characters, such as \"cargo check --message-format short\"",
            ));
        }
        Ok(CheckCommand(trimmed.to_owned()))
    }
}

/// A folder's name (one path segment, not `.` or `..`), checked while deserializing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderName(pub String);

impl<'de> Deserialize<'de> for FolderName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        let plain = !name.is_empty()
            && name.len() <= 255
            && name != "."
            && name != ".."
            && !name.contains(['/', '\\', '\0']);
        if plain {
            Ok(FolderName(name))
        } else {
            Err(serde::de::Error::custom(format!(
                "{name:?} is not a folder name: expected one name such as \"node_modules\", without `/`"
            )))
        }
    }
}

/// At most 32 folder names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderNames(pub Vec<String>);

impl<'de> Deserialize<'de> for FolderNames {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<FolderName>::deserialize(deserializer)?;
        if names.len() > 32 {
            return Err(serde::de::Error::custom(format!(
                "{} folder names: at most 32 are allowed",
                names.len()
            )));
        }
        Ok(FolderNames(names.into_iter().map(|name| name.0).collect()))
    }
}

/// A size in KiB between 1 and 1048576 (1 GiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kilobytes(pub u64);

impl<'de> Deserialize<'de> for Kilobytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(deserializer)?;
        if (1..=1_048_576).contains(&value) {
            Ok(Kilobytes(value))
        } else {
            Err(serde::de::Error::custom(format!(
                "{value} is out of range: expected a size in KiB from 1 to 1048576"
            )))
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogLayer {
    pub level: Option<LogLevel>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsLayer {
    pub max_message_mb: Option<Megabytes>,
    pub max_file_mb: Option<Megabytes>,
}

/// A size in MiB between 1 and 4096, checked while deserializing so that the error points
/// at the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Megabytes(pub u64);

impl<'de> Deserialize<'de> for Megabytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(deserializer)?;
        if (1..=4096).contains(&value) {
            Ok(Megabytes(value))
        } else {
            Err(serde::de::Error::custom(format!(
                "{value} is out of range: expected a size in MiB from 1 to 4096"
            )))
        }
    }
}

impl RoutingLayer {
    fn merge_into(&self, rules: &mut Rules) {
        if let Some(skip) = self.skip_planner {
            rules.skip_planner = skip;
        }
        if let Some(MechanicalTier(tier)) = self.mechanical_tier {
            rules.mechanical_tier = tier;
        }
        for (value, target) in [
            (
                self.skip_planner_lines.map(|b| b.0),
                &mut rules.skip_planner_lines,
            ),
            (
                self.fast_step_lines.map(|b| b.0),
                &mut rules.fast_step_lines,
            ),
            (self.escalate_after.map(|b| b.0), &mut rules.escalate_after),
            (
                self.hover_executor_lines.map(|b| b.0),
                &mut rules.hover_executor_lines,
            ),
            (
                self.hover_executor_references.map(|b| b.0),
                &mut rules.hover_executor_references,
            ),
        ] {
            if let Some(value) = value {
                *target = value;
            }
        }
    }
}

impl Config {
    /// Merges layers given from lowest to highest precedence over the defaults.
    pub fn from_layers<'a>(layers: impl IntoIterator<Item = &'a ConfigLayer>) -> Config {
        let mut config = Config::default();
        let mut nodes = NodesLayer::new();
        for layer in layers {
            nodes.extend(layer.nodes.clone());
            if let Some(level) = layer.log.level {
                config.log.level = level;
            }
            if let Some(Megabytes(mb)) = layer.limits.max_message_mb {
                config.limits.max_message_bytes = (mb * MIB) as usize;
            }
            if let Some(Megabytes(mb)) = layer.limits.max_file_mb {
                config.limits.max_file_bytes = mb * MIB;
            }
            if let Some(tiers::Bounded(ms)) = layer.completion.debounce_ms {
                config.completion.debounce_ms = ms;
            }
            if let Some(tiers::Bounded(ms)) = layer.completion.budget_ms {
                config.completion.budget_ms = ms;
            }
            if let Some(tiers::Bounded(ms)) = layer.completion.hover_budget_ms {
                config.completion.hover_budget_ms = ms;
            }
            let plan = &layer.plan;
            for (value, target) in [
                (plan.map_tokens.map(|b| b.0), &mut config.plan.map_tokens),
                (
                    plan.reference_tokens.map(|b| b.0),
                    &mut config.plan.reference_tokens,
                ),
                (plan.max_fan_out.map(|b| b.0), &mut config.plan.max_fan_out),
                (
                    plan.check_seconds.map(|b| b.0),
                    &mut config.plan.check_seconds,
                ),
                (plan.max_rounds.map(|b| b.0), &mut config.plan.max_rounds),
                (
                    plan.repair_seconds.map(|b| b.0),
                    &mut config.plan.repair_seconds,
                ),
                (
                    plan.max_attempts.map(|b| b.0),
                    &mut config.plan.max_attempts,
                ),
                (
                    plan.max_step_tokens.map(|b| b.0),
                    &mut config.plan.max_step_tokens,
                ),
                (
                    plan.step_seconds.map(|b| b.0),
                    &mut config.plan.step_seconds,
                ),
                (
                    plan.planner_seconds.map(|b| b.0),
                    &mut config.plan.planner_seconds,
                ),
            ] {
                if let Some(value) = value {
                    *target = value;
                }
            }
            if let Some(CheckCommand(command)) = &plan.check {
                config.plan.check = Some(command.clone());
            }
            if let Some(FolderNames(names)) = &plan.check_links {
                config.plan.check_links = names.clone();
            }
            layer.routing.merge_into(&mut config.routing);
            if let Some(enabled) = layer.index.enabled {
                config.index.enabled = enabled;
            }
            if let Some(cache) = layer.index.cache {
                config.index.cache = cache;
            }
            if let Some(Kilobytes(kb)) = layer.index.max_file_kb {
                config.index.max_file_bytes = kb * 1024;
            }
            for (tier, layer) in [
                (&mut config.tiers.fast, &layer.tiers.fast),
                (&mut config.tiers.executor, &layer.tiers.executor),
                (&mut config.tiers.planner, &layer.tiers.planner),
            ] {
                tier.merge(layer);
            }
        }
        config.nodes = nodes
            .iter()
            .map(|(name, node)| NodeConfig::resolve(name, node))
            .collect();
        // `model = "http://…"` in a tier is a node of its own that serves that tier.
        for tier in Tier::ALL {
            if let Some(ModelSource::Remote(url)) = &config.tiers.get(tier).model {
                config.nodes.push(NodeConfig::shorthand(tier, url));
            }
        }
        config
    }
}
