//! The memory budget: how much a model needs for a context, and where it fits.
//!
//! Pure arithmetic over facts read elsewhere (the GGUF header, the machine), so that every
//! decision can be tested with made-up machines.

use std::fmt;

/// A model's size and attention geometry, from its GGUF header.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelShape {
    pub parameters: u64,
    pub weights_bytes: u64,
    /// The bytes of the `blk.N.*` tensors: what offloading layer by layer moves.
    pub repeating_layer_bytes: u64,
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub key_length: u32,
    pub value_length: u32,
    pub n_ctx_train: u32,
    pub sliding_window: Option<u32>,
    pub n_vocab: u32,
}

/// The element type of the KV cache (llama.cpp's `--cache-type-k/v`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheType {
    #[default]
    F16,
    Q8_0,
    Q4_0,
}

impl CacheType {
    /// Bytes per element, block overhead included.
    pub fn bytes_per_element(self) -> f64 {
        match self {
            CacheType::F16 => 2.0,
            CacheType::Q8_0 => 34.0 / 32.0,
            CacheType::Q4_0 => 18.0 / 32.0,
        }
    }
}

/// How a model is run: what the estimate depends on besides the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunSettings {
    pub n_ctx: u32,
    pub slots: u32,
    pub cache_type: CacheType,
    pub n_batch: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub kv_cache: u64,
    pub compute: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.compute
    }
}

/// Weights, plus a full KV cache per slot (sliding-window layers are counted at full size:
/// tierls runs them with `swa_full` so that prefixes can be reused), plus llama.cpp's compute
/// buffers per slot: it reserves the logits of a whole batch, the attention scores of a batch
/// over the context, and the activations of a batch.
pub fn estimate(shape: &ModelShape, settings: &RunSettings) -> MemoryEstimate {
    let kv_per_token = shape.n_layer as f64
        * shape.n_head_kv as f64
        * (shape.key_length + shape.value_length) as f64
        * settings.cache_type.bytes_per_element();
    let kv_cache = (kv_per_token * settings.n_ctx as f64 * settings.slots as f64) as u64;
    let batch = settings.n_batch.min(settings.n_ctx) as u64;
    let logits = shape.n_vocab as u64 * batch * 4;
    let scores = shape.n_head as u64 * batch * settings.n_ctx as u64 * 4;
    let activations = 8 * shape.n_embd as u64 * batch * 4;
    // Each slot is a llama.cpp context of its own, with its own compute buffers.
    let compute = (logits + scores + activations) * settings.slots as u64;
    MemoryEstimate {
        weights: shape.weights_bytes,
        kv_cache,
        compute,
    }
}

/// Memory of one device that can hold model layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    pub name: String,
    pub total: u64,
    pub free: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub gpus: Vec<Gpu>,
    pub ram_total: u64,
    pub ram_available: u64,
    /// Whether this build of llama.cpp can offload to a GPU at all.
    pub gpu_offload: bool,
}

/// Where a model goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    AllOnGpu { gpu: String },
    Partial { gpu: String, layers: u32, of: u32 },
    CpuOnly,
    DoesNotFit { needed: u64, available: u64 },
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::AllOnGpu { gpu } => write!(f, "all layers on {gpu}"),
            Placement::Partial { gpu, layers, of } => {
                write!(f, "{layers} of {of} layers on {gpu}, the rest on the CPU")
            }
            Placement::CpuOnly => f.write_str("CPU only"),
            Placement::DoesNotFit { needed, available } => {
                write!(
                    f,
                    "does not fit: needs {}, {} available",
                    human_bytes(*needed),
                    human_bytes(*available)
                )
            }
        }
    }
}

/// Keeps some memory for everything else: the OS, the editor, other tiers' spikes.
const HEADROOM: f64 = 0.9;

/// Chooses GPU, partial offload, CPU, or nothing, for a model needing `estimate`.
pub fn place(shape: &ModelShape, estimate: &MemoryEstimate, machine: &Machine) -> Placement {
    let ram = (machine.ram_available as f64 * HEADROOM) as u64;
    let gpu = machine
        .gpus
        .iter()
        .filter(|_| machine.gpu_offload)
        .max_by_key(|gpu| gpu.free);
    if let Some(gpu) = gpu {
        let vram = (gpu.free as f64 * HEADROOM) as u64;
        if estimate.total() <= vram {
            return Placement::AllOnGpu {
                gpu: gpu.name.clone(),
            };
        }
        // A layer brings its weights and its share of the KV cache; the compute buffers and
        // the non-repeating tensors (embeddings, output) are reserved first.
        let n_layer = shape.n_layer.max(1) as u64;
        let per_layer = (shape.repeating_layer_bytes + estimate.kv_cache) / n_layer;
        let fixed = estimate.compute
            + (estimate.weights - shape.repeating_layer_bytes.min(estimate.weights));
        let layers = vram
            .saturating_sub(fixed)
            .checked_div(per_layer)
            .unwrap_or(0);
        let layers = layers.min(n_layer);
        let on_cpu = (n_layer - layers) * per_layer;
        if layers > 0 && on_cpu <= ram {
            return Placement::Partial {
                gpu: gpu.name.clone(),
                layers: layers as u32,
                of: shape.n_layer,
            };
        }
    }
    if estimate.total() <= ram {
        Placement::CpuOnly
    } else {
        Placement::DoesNotFit {
            needed: estimate.total(),
            available: usable_memory(machine),
        }
    }
}

/// All the memory a model can spread over: RAM, plus the largest GPU when this build can
/// offload to it.
pub fn usable_memory(machine: &Machine) -> u64 {
    let vram = machine
        .gpus
        .iter()
        .filter(|_| machine.gpu_offload)
        .map(|gpu| gpu.free)
        .max()
        .unwrap_or(0);
    ((machine.ram_available + vram) as f64 * HEADROOM) as u64
}

/// What would make a model that does not fit, fit: a smaller quantization, or less context.
pub fn fit_hint(shape: &ModelShape, estimate: &MemoryEstimate, machine: &Machine) -> String {
    let available = (usable_memory(machine) as f64 / HEADROOM) as u64;
    if let Some(quantization) = quantization_that_fits(shape, estimate, available) {
        return format!("quantized to {quantization} it would fit");
    }
    if estimate.weights < usable_memory(machine) {
        return "its weights fit: lower `context` or `slots` to shrink the KV cache and compute buffers".into();
    }
    "no quantization of it fits this machine".into()
}

/// llama.cpp quantizations, best first, with their bits per weight.
pub const QUANTIZATIONS: [(&str, f64); 7] = [
    ("Q8_0", 8.50),
    ("Q6_K", 6.56),
    ("Q5_K_M", 5.70),
    ("Q4_K_M", 4.89),
    ("Q3_K_M", 3.91),
    ("IQ3_XS", 3.30),
    ("Q2_K", 2.63),
];

/// The best quantization whose weights, with the same context, fit in `available` bytes.
pub fn quantization_that_fits(
    shape: &ModelShape,
    estimate: &MemoryEstimate,
    available: u64,
) -> Option<&'static str> {
    let budget = (available as f64 * HEADROOM) as u64;
    QUANTIZATIONS.iter().find_map(|&(name, bits)| {
        let weights = (shape.parameters as f64 * bits / 8.0) as u64;
        (weights + estimate.kv_cache + estimate.compute <= budget).then_some(name)
    })
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
