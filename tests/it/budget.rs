//! The memory budget: GGUF headers read by ggml, estimates, and placements on made-up machines.

use tierls::config::{GpuLayers, TierConfig};
use tierls::core::budget::{
    CacheType, Gpu, Machine, ModelShape, Placement, RunSettings, estimate, fit_hint, human_bytes,
    place, quantization_that_fits,
};
use tierls::models::embedded::test_model_path;
use tierls::models::fit::plan_load;
use tierls::models::gguf::GgufHeader;

const GIB: u64 = 1024 * 1024 * 1024;

/// A 70B-class model (Llama 3 70B geometry) at Q4_K_M, and a 7B one.
fn shape(parameters: u64, n_layer: u32, n_embd: u32, n_head: u32, n_head_kv: u32) -> ModelShape {
    let weights_bytes = (parameters as f64 * 4.89 / 8.0) as u64;
    ModelShape {
        parameters,
        weights_bytes,
        repeating_layer_bytes: weights_bytes * 95 / 100,
        n_layer,
        n_embd,
        n_head,
        n_head_kv,
        key_length: n_embd / n_head,
        value_length: n_embd / n_head,
        n_ctx_train: 131_072,
        sliding_window: None,
        n_vocab: 128_256,
    }
}

fn machine(gpu_gib: Option<u64>, ram_gib: u64, gpu_offload: bool) -> Machine {
    Machine {
        gpus: gpu_gib
            .map(|gib| Gpu {
                name: format!("GPU{gib}"),
                total: gib * GIB,
                free: gib * GIB,
            })
            .into_iter()
            .collect(),
        ram_total: ram_gib * GIB,
        ram_available: ram_gib * GIB,
        gpu_offload,
    }
}

/// One line per (model, machine): the estimate, where it goes, and what would fit better.
fn check_placement(cases: &[(&str, ModelShape, &str, Machine)]) -> String {
    let settings = RunSettings {
        n_ctx: 8192,
        slots: 1,
        cache_type: CacheType::F16,
        n_batch: 512,
    };
    cases
        .iter()
        .map(|(model, shape, machine_name, machine)| {
            let estimate = estimate(shape, &settings);
            let placement = place(shape, &estimate, machine);
            let available = machine
                .gpus
                .first()
                .filter(|_| machine.gpu_offload)
                .map_or(machine.ram_available, |gpu| gpu.free);
            let hint = match placement {
                Placement::DoesNotFit { .. } => fit_hint(shape, &estimate, machine),
                _ => format!(
                    "all on one device from {}",
                    quantization_that_fits(shape, &estimate, available).unwrap_or("none")
                ),
            };
            format!(
                "{model} on {machine_name}: weights {} + kv {} + compute {} => {placement}; {hint}",
                human_bytes(estimate.weights),
                human_bytes(estimate.kv_cache),
                human_bytes(estimate.compute),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn placements_on_typical_machines() {
    let llama70 = shape(70_600_000_000, 80, 8192, 64, 8);
    let llama8 = shape(8_000_000_000, 32, 4096, 32, 8);
    let shown = check_placement(&[
        (
            "8B",
            llama8.clone(),
            "24 GiB GPU",
            machine(Some(24), 64, true),
        ),
        (
            "8B",
            llama8.clone(),
            "8 GiB GPU",
            machine(Some(8), 64, true),
        ),
        (
            "8B",
            llama8.clone(),
            "CPU build with a 24 GiB GPU",
            machine(Some(24), 64, false),
        ),
        ("8B", llama8, "no GPU, 4 GiB RAM", machine(None, 4, false)),
        (
            "70B",
            llama70.clone(),
            "24 GiB GPU + 64 GiB RAM",
            machine(Some(24), 64, true),
        ),
        (
            "70B",
            llama70.clone(),
            "24 GiB GPU + 16 GiB RAM",
            machine(Some(24), 16, true),
        ),
        (
            "70B",
            llama70,
            "no GPU, 32 GiB RAM",
            machine(None, 32, false),
        ),
    ]);
    insta::assert_snapshot!("placements", shown);
}

#[test]
fn kv_cache_grows_with_context_slots_and_cache_type() {
    let shape = shape(32_000_000_000, 64, 5120, 40, 8);
    // Qwen2.5-32B-like geometry at f16: 256 KiB per token, 8 GiB at 32k (product.md).
    let per_token = estimate(
        &shape,
        &RunSettings {
            n_ctx: 1,
            slots: 1,
            cache_type: CacheType::F16,
            n_batch: 1,
        },
    )
    .kv_cache;
    assert_eq!(per_token, 256 * 1024);
    let at_32k = estimate(
        &shape,
        &RunSettings {
            n_ctx: 32_768,
            slots: 1,
            cache_type: CacheType::F16,
            n_batch: 512,
        },
    );
    assert_eq!(at_32k.kv_cache, 8 * GIB);
    let two_slots = estimate(
        &shape,
        &RunSettings {
            n_ctx: 32_768,
            slots: 2,
            cache_type: CacheType::F16,
            n_batch: 512,
        },
    );
    assert_eq!(two_slots.kv_cache, 16 * GIB);
    let q8 = estimate(
        &shape,
        &RunSettings {
            n_ctx: 32_768,
            slots: 1,
            cache_type: CacheType::Q8_0,
            n_batch: 512,
        },
    );
    assert_eq!(q8.kv_cache, 8 * GIB * 17 / 32);
}

#[test]
fn the_test_model_header_is_read_without_its_weights() {
    let header = GgufHeader::read(&test_model_path()).unwrap();
    let shape = &header.shape;
    let shown = format!(
        "architecture {} name {:?}\nquantization {} main tensor type {}\nparameters {} weights {} of a {} file\n\
         layers {} embedding {} heads {} kv heads {} key/value {}/{}\ncontext {} sliding window {:?} vocabulary {}\n\
         tensors {} fim {} chat template {}",
        header.architecture,
        header.name,
        header.quantization(),
        header.main_tensor_type(),
        shape.parameters,
        shape.weights_bytes,
        header.file_bytes,
        shape.n_layer,
        shape.n_embd,
        shape.n_head,
        shape.n_head_kv,
        shape.key_length,
        shape.value_length,
        shape.n_ctx_train,
        shape.sliding_window,
        shape.n_vocab,
        header.tensors.len(),
        header.has_fim_tokens,
        header.has_chat_template,
    );
    insta::assert_snapshot!("test_model_header", shown);
}

#[test]
fn bad_model_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = std::fs::read(test_model_path()).unwrap();
    let half = dir.path().join("half.gguf");
    std::fs::write(&half, &model[..model.len() / 2]).unwrap();
    let header_cut = dir.path().join("header-cut.gguf");
    std::fs::write(&header_cut, &model[..64 * 1024]).unwrap();
    let text = dir.path().join("text.gguf");
    std::fs::write(&text, "not a model").unwrap();
    let shown: Vec<String> = [dir.path().join("missing.gguf"), text, header_cut, half]
        .iter()
        .map(|path| {
            GgufHeader::read(path)
                .unwrap_err()
                .to_string()
                .replace(&dir.path().display().to_string(), "$DIR")
        })
        .collect();
    insta::assert_snapshot!("bad_headers", shown.join("\n"));
}

#[test]
fn a_tier_that_does_not_fit_is_refused_with_what_would_fit() {
    let tier = TierConfig {
        context: 32_768,
        slots: 4,
        ..TierConfig::default()
    };
    let small = Machine {
        gpus: Vec::new(),
        ram_total: 2 * GIB,
        ram_available: 2 * GIB,
        gpu_offload: false,
    };
    let err = plan_load(&test_model_path(), &tier, &small)
        .unwrap_err()
        .to_string();
    let err = err.replace(&test_model_path().display().to_string(), "$MODEL");
    insta::assert_snapshot!(err, @"model $MODEL: does not fit: it needs 5.5 GiB, 1.8 GiB available; its weights fit: lower `context` or `slots` to shrink the KV cache and compute buffers");

    let too_long = TierConfig {
        context: 65_536,
        ..TierConfig::default()
    };
    let err = plan_load(&test_model_path(), &too_long, &machine(None, 64, false))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "context of 65536 tokens is longer than the model's training context of 32768"
    );
}

#[test]
fn gpu_layers_follow_the_budget_unless_fixed() {
    let big_gpu = machine(Some(24), 64, true);
    // The compute buffers (~550 MiB) and the embeddings go first; layers share the rest.
    let tiny_gpu = Machine {
        gpus: vec![Gpu {
            name: "small".into(),
            total: 900 * 1024 * 1024,
            free: 900 * 1024 * 1024,
        }],
        ..machine(None, 64, true)
    };
    let auto = TierConfig::default();
    let all = plan_load(&test_model_path(), &auto, &big_gpu).unwrap();
    assert_eq!(
        all.options.n_gpu_layers, 19,
        "18 layers and the output layer"
    );
    let partial = plan_load(&test_model_path(), &auto, &tiny_gpu).unwrap();
    assert!(
        partial.options.n_gpu_layers > 0 && partial.options.n_gpu_layers < 18,
        "{}",
        partial.placement
    );
    let cpu = plan_load(&test_model_path(), &auto, &machine(None, 64, false)).unwrap();
    assert_eq!(cpu.options.n_gpu_layers, 0);
    let fixed = TierConfig {
        gpu_layers: GpuLayers::Count(5),
        ..TierConfig::default()
    };
    assert_eq!(
        plan_load(&test_model_path(), &fixed, &big_gpu)
            .unwrap()
            .options
            .n_gpu_layers,
        5
    );
}

#[test]
fn machine_probes_parse_what_the_system_prints() {
    use tierls::models::machine::{parse_meminfo, parse_nvidia_line};
    let meminfo =
        "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   20480000 kB\n";
    assert_eq!(
        parse_meminfo(meminfo),
        (24_576_000 * 1024, 20_480_000 * 1024)
    );
    assert_eq!(parse_meminfo("garbage"), (0, 0));
    let gpu = parse_nvidia_line("NVIDIA GeForce RTX 4090, 24564, 23000").unwrap();
    assert_eq!(
        (gpu.name.as_str(), gpu.total, gpu.free),
        ("NVIDIA GeForce RTX 4090", 24564 << 20, 23000 << 20)
    );
    assert_eq!(parse_nvidia_line("No devices were found"), None);
}
