//! `[tiers.fast]`, `[tiers.executor]`, `[tiers.planner]`: which model serves each tier and how.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::core::budget::CacheType;
use crate::core::draft::{DEFAULT_DRAFT_MATCH, DEFAULT_DRAFT_TOKENS, DraftMode};
use crate::core::hub::HubModel;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Fast,
    Executor,
    Planner,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Fast, Tier::Executor, Tier::Planner];
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Tier::Fast => "fast",
            Tier::Executor => "executor",
            Tier::Planner => "planner",
        })
    }
}

/// Where a tier's model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file run in this process.
    File(PathBuf),
    /// An inference server speaking the OpenAI-compatible API (a worker node).
    Remote(String),
    /// A model on Hugging Face: `hf://owner/repo/file.gguf` or `hf://owner/repo:QUANT`,
    /// fetched into the model cache (`models::hub`).
    HuggingFace(HubModel),
}

impl<'de> Deserialize<'de> for ModelSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.starts_with("hf://") {
            return HubModel::parse(&text)
                .map(ModelSource::HuggingFace)
                .map_err(serde::de::Error::custom);
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            return Ok(ModelSource::Remote(text));
        }
        if text.trim().is_empty() {
            return Err(serde::de::Error::custom("an empty model path"));
        }
        Ok(ModelSource::File(PathBuf::from(text)))
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::File(path) => write!(f, "{}", path.display()),
            ModelSource::Remote(url) => f.write_str(url),
            ModelSource::HuggingFace(model) => model.fmt(f),
        }
    }
}

/// How many layers go to the GPU: chosen from the memory budget, or fixed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GpuLayers {
    #[default]
    Auto,
    Count(u32),
}

impl<'de> Deserialize<'de> for GpuLayers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Count(u32),
            Word(String),
        }
        match Written::deserialize(deserializer) {
            Ok(Written::Count(count)) => Ok(GpuLayers::Count(count)),
            Ok(Written::Word(word)) if word == "auto" => Ok(GpuLayers::Auto),
            _ => Err(serde::de::Error::custom(
                "expected \"auto\" or a number of layers",
            )),
        }
    }
}

/// A number checked against a range while deserializing, so that the error names the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounded<const MIN: u32, const MAX: u32>(pub u32);

impl<'de, const MIN: u32, const MAX: u32> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u32::deserialize(deserializer)?;
        if (MIN..=MAX).contains(&value) {
            Ok(Bounded(value))
        } else {
            Err(serde::de::Error::custom(format!(
                "{value} is out of range: expected {MIN} to {MAX}"
            )))
        }
    }
}

/// One tier as written in one source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierLayer {
    pub model: Option<ModelSource>,
    pub context: Option<Bounded<256, 1_048_576>>,
    pub slots: Option<Bounded<1, 64>>,
    pub gpu_layers: Option<GpuLayers>,
    pub cache_type: Option<CacheType>,
    pub chat_template: Option<String>,
    pub draft: Option<DraftKind>,
    pub draft_max: Option<Bounded<1, 64>>,
    pub draft_min_match: Option<Bounded<1, 6>>,
}

/// `tiers.<tier>.draft`: how the embedded backend drafts tokens for speculative decoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DraftKind {
    #[default]
    Off,
    /// From the prompt and the answer so far (prompt lookup).
    Lookup,
    /// From the fast tier's model, when it shares this tier's vocabulary.
    Model,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TiersLayer {
    pub fast: TierLayer,
    pub executor: TierLayer,
    pub planner: TierLayer,
}

/// A tier's resolved settings; `model` is `None` until some source names one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierConfig {
    pub model: Option<ModelSource>,
    pub context: u32,
    pub slots: u32,
    pub gpu_layers: GpuLayers,
    pub cache_type: CacheType,
    /// A chat template for models whose GGUF has none: the name of one built into
    /// llama.cpp (`gemma`, `chatml`, `llama3`...) or the template text.
    pub chat_template: Option<String>,
    pub draft: DraftKind,
    pub draft_max: u32,
    pub draft_min_match: u32,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig {
            model: None,
            context: 4096,
            slots: 1,
            gpu_layers: GpuLayers::Auto,
            cache_type: CacheType::F16,
            chat_template: None,
            draft: DraftKind::Off,
            draft_max: DEFAULT_DRAFT_TOKENS as u32,
            draft_min_match: DEFAULT_DRAFT_MATCH as u32,
        }
    }
}

impl TierConfig {
    pub(super) fn merge(&mut self, layer: &TierLayer) {
        if let Some(model) = &layer.model {
            self.model = Some(model.clone());
        }
        if let Some(Bounded(context)) = layer.context {
            self.context = context;
        }
        if let Some(Bounded(slots)) = layer.slots {
            self.slots = slots;
        }
        if let Some(gpu_layers) = layer.gpu_layers {
            self.gpu_layers = gpu_layers;
        }
        if let Some(cache_type) = layer.cache_type {
            self.cache_type = cache_type;
        }
        if let Some(template) = &layer.chat_template {
            self.chat_template = Some(template.clone());
        }
        if let Some(draft) = layer.draft {
            self.draft = draft;
        }
        if let Some(Bounded(max)) = layer.draft_max {
            self.draft_max = max;
        }
        if let Some(Bounded(min_match)) = layer.draft_min_match {
            self.draft_min_match = min_match;
        }
    }

    /// The drafting the embedded backend does for this tier.
    pub fn draft_mode(&self) -> DraftMode {
        match self.draft {
            DraftKind::Off => DraftMode::Off,
            DraftKind::Lookup => DraftMode::Lookup {
                max_tokens: self.draft_max as usize,
                min_match: self.draft_min_match as usize,
            },
            DraftKind::Model => DraftMode::Model {
                max_tokens: self.draft_max as usize,
            },
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tiers {
    pub fast: TierConfig,
    pub executor: TierConfig,
    pub planner: TierConfig,
}

impl Tiers {
    pub fn get(&self, tier: Tier) -> &TierConfig {
        match tier {
            Tier::Fast => &self.fast,
            Tier::Executor => &self.executor,
            Tier::Planner => &self.planner,
        }
    }
}
