//! `[nodes.<name>]`: worker machines that run an inference server and the tiers they serve.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::tiers::{Bounded, Tier};

/// Which API a node speaks beyond the OpenAI-compatible one every server has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeApi {
    /// `/v1/completions` and `/v1/chat/completions` only (Ollama, vLLM, any server).
    #[default]
    Openai,
    /// llama.cpp's llama-server: also `/completion` with `cache_prompt`, slot pinning and
    /// grammars, `/infill`, `/apply-template`, `/health`, `/slots` and `/metrics`.
    LlamaServer,
}

impl std::fmt::Display for NodeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            NodeApi::Openai => "openai",
            NodeApi::LlamaServer => "llama-server",
        })
    }
}

/// One node as written in one source. A later source's node of the same name replaces it
/// whole: a node half from one file and half from another would surprise.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLayer {
    pub url: NodeUrl,
    #[serde(default)]
    pub api: NodeApi,
    pub tiers: TierList,
    /// The model name sent with each request (Ollama and vLLM route by it).
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub concurrency: Option<Bounded<1, 256>>,
    /// The environment variable that holds the API key; the key itself is never written
    /// in configuration, nor logged.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Seconds to wait for the first token before trying another node.
    #[serde(default)]
    pub first_token_seconds: Option<Bounded<1, 3600>>,
    /// Seconds without a byte mid-stream before the node counts as stalled.
    #[serde(default)]
    pub stall_seconds: Option<Bounded<1, 3600>>,
}

/// A node's resolved settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub name: String,
    /// The base URL without a trailing slash.
    pub url: String,
    pub api: NodeApi,
    pub tiers: Vec<Tier>,
    pub model: Option<String>,
    pub concurrency: u32,
    pub api_key_env: Option<String>,
    pub first_token_seconds: u32,
    pub stall_seconds: u32,
}

impl NodeConfig {
    /// A node with the default settings for everything but where it is and what it serves.
    pub fn new(name: &str, url: &str, api: NodeApi, tiers: &[Tier]) -> Self {
        NodeConfig {
            name: name.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            api,
            tiers: tiers.to_vec(),
            model: None,
            concurrency: 4,
            api_key_env: None,
            first_token_seconds: 60,
            stall_seconds: 30,
        }
    }

    pub fn resolve(name: &str, layer: &NodeLayer) -> Self {
        let defaults = NodeConfig::new(name, &layer.url.0, layer.api, &layer.tiers.0);
        NodeConfig {
            model: layer.model.clone(),
            concurrency: layer.concurrency.map_or(defaults.concurrency, |b| b.0),
            api_key_env: layer.api_key_env.clone(),
            first_token_seconds: layer
                .first_token_seconds
                .map_or(defaults.first_token_seconds, |b| b.0),
            stall_seconds: layer.stall_seconds.map_or(defaults.stall_seconds, |b| b.0),
            ..defaults
        }
    }

    /// The node that `tiers.<tier>.model = "http://…"` stands for.
    pub fn shorthand(tier: Tier, url: &str) -> Self {
        NodeConfig::new(&format!("{tier}-node"), url, NodeApi::Openai, &[tier])
    }

    pub fn serves(&self, tier: Tier) -> bool {
        self.tiers.contains(&tier)
    }
}

/// Every node by name.
pub type NodesLayer = BTreeMap<String, NodeLayer>;

/// An `http://` or `https://` base URL, checked while deserializing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeUrl(pub String);

impl<'de> Deserialize<'de> for NodeUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let rest = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() && !host.starts_with('/') && !host.contains(' ') => {
                Ok(NodeUrl(text.trim_end_matches('/').to_owned()))
            }
            _ => Err(serde::de::Error::custom(format!(
                "`{text}`: expected an http:// or https:// address such as http://127.0.0.1:8080"
            ))),
        }
    }
}

/// The tiers a node serves: at least one, each named once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierList(pub Vec<Tier>);

impl<'de> Deserialize<'de> for TierList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        let mut tiers = Vec::new();
        for name in &names {
            let tier = match name.as_str() {
                "fast" => Tier::Fast,
                "executor" => Tier::Executor,
                "planner" => Tier::Planner,
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "unknown tier `{other}`: expected fast, executor or planner"
                    )));
                }
            };
            if tiers.contains(&tier) {
                return Err(serde::de::Error::custom(format!(
                    "the {tier} tier is named twice"
                )));
            }
            tiers.push(tier);
        }
        if tiers.is_empty() {
            return Err(serde::de::Error::custom(
                "a node must serve at least one tier: fast, executor or planner",
            ));
        }
        Ok(TierList(tiers))
    }
}
