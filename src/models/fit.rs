//! Deciding how to load a tier's model on this machine: its memory estimate, where it fits,
//! and the options the embedded backend is started with.

use std::path::Path;

use super::ModelError;
use super::embedded::EmbeddedOptions;
use super::gguf::GgufHeader;
use crate::config::{GpuLayers, TierConfig};
use crate::core::budget::{
    Machine, MemoryEstimate, Placement, RunSettings, estimate, fit_hint, human_bytes, place,
    quantization_that_fits,
};
use crate::core::draft::{DraftMode, check_vocabularies};

/// Prompt tokens per decode call: llama.cpp's default batch.
const N_BATCH: u32 = 512;

#[derive(Clone, Debug)]
pub struct LoadPlan {
    pub header: GgufHeader,
    pub estimate: MemoryEstimate,
    pub placement: Placement,
    /// The best quantization that would fit entirely on the GPU (or in RAM without one),
    /// when this one does not.
    pub better_fit: Option<&'static str>,
    pub options: EmbeddedOptions,
}

/// Reads the model's header (no weights) and decides how to run it as `tier` says.
pub fn plan_load(
    path: &Path,
    tier: &TierConfig,
    machine: &Machine,
) -> Result<LoadPlan, ModelError> {
    plan_load_drafted(path, tier, machine, None)
}

/// [`plan_load`] for a tier that the fast tier's model (`drafter`, its header) may draft
/// for: with `draft = "model"` and a shared vocabulary, each slot also holds a context of
/// the draft model (its KV cache and compute buffers; the weights are the fast tier's).
pub fn plan_load_drafted(
    path: &Path,
    tier: &TierConfig,
    machine: &Machine,
    drafter: Option<&GgufHeader>,
) -> Result<LoadPlan, ModelError> {
    let header = GgufHeader::read(path)?;
    let trained = header.shape.n_ctx_train;
    if trained > 0 && tier.context > trained {
        return Err(ModelError::ContextTooLong {
            requested: tier.context,
            trained,
        });
    }
    let settings = RunSettings {
        n_ctx: tier.context,
        slots: tier.slots,
        cache_type: tier.cache_type,
        n_batch: N_BATCH,
    };
    let mut estimate = estimate(&header.shape, &settings);
    if let (DraftMode::Model { .. }, Some(drafter)) = (tier.draft_mode(), drafter)
        && let (Some(target), Some(draft)) = (&header.vocabulary, &drafter.vocabulary)
        && check_vocabularies(target, draft).is_ok()
    {
        let draft_context = crate::core::budget::estimate(&drafter.shape, &settings);
        estimate.kv_cache += draft_context.kv_cache;
        estimate.compute += draft_context.compute;
    }
    let placement = place(&header.shape, &estimate, machine);
    let target = match machine
        .gpus
        .iter()
        .filter(|_| machine.gpu_offload)
        .map(|gpu| gpu.free)
        .max()
    {
        Some(vram) => vram,
        None => machine.ram_available,
    };
    let better_fit = match placement {
        Placement::AllOnGpu { .. } => None,
        Placement::CpuOnly if !machine.gpu_offload => None,
        _ => quantization_that_fits(&header.shape, &estimate, target)
            .filter(|q| !header.quantization().eq_ignore_ascii_case(q)),
    };
    let n_gpu_layers = match (tier.gpu_layers, &placement) {
        (GpuLayers::Count(count), _) => count,
        // Layers plus the output layer: llama.cpp counts it as one more.
        (GpuLayers::Auto, Placement::AllOnGpu { .. }) => header.shape.n_layer + 1,
        (GpuLayers::Auto, Placement::Partial { layers, .. }) => *layers,
        (GpuLayers::Auto, Placement::CpuOnly | Placement::DoesNotFit { .. }) => 0,
    };
    if let Placement::DoesNotFit { needed, available } = placement {
        return Err(ModelError::DoesNotFit {
            path: path.to_owned(),
            needed: human_bytes(needed),
            available: human_bytes(available),
            hint: fit_hint(&header.shape, &estimate, machine),
        });
    }
    let options = EmbeddedOptions {
        n_ctx: tier.context,
        n_gpu_layers,
        slots: tier.slots as usize,
        n_batch: N_BATCH,
        cache_type: tier.cache_type,
        chat_template: tier.chat_template.clone(),
        draft: tier.draft_mode(),
        ..EmbeddedOptions::default()
    };
    Ok(LoadPlan {
        header,
        estimate,
        placement,
        better_fit,
        options,
    })
}
