//! What this machine has: RAM, and GPUs with their memory.
//!
//! GPUs come from llama.cpp's own device list when this build has a GPU back end (what it
//! reports is what offloading will use); otherwise from `nvidia-smi`, AMD's sysfs files and
//! Apple's unified memory, so that `tierls models` can say a GPU exists that this build
//! cannot use.

use std::ffi::CStr;

use llama_cpp_sys_2 as sys;

use crate::core::budget::{Gpu, Machine};

pub fn detect() -> Machine {
    super::embedded::init_backend();
    // SAFETY: a plain query of the initialised backend.
    let gpu_offload = unsafe { sys::llama_supports_gpu_offload() };
    let mut gpus = ggml_gpus();
    if gpus.is_empty() {
        gpus = nvidia_gpus();
        gpus.extend(amd_gpus());
    }
    let (ram_total, ram_available) = ram();
    if cfg!(target_os = "macos") && gpus.is_empty() {
        // Apple silicon: the GPU shares RAM.
        gpus.push(Gpu {
            name: "Apple GPU (unified memory)".into(),
            total: ram_total,
            free: ram_available,
        });
    }
    Machine {
        gpus,
        ram_total,
        ram_available,
        gpu_offload,
    }
}

fn ggml_gpus() -> Vec<Gpu> {
    let mut gpus = Vec::new();
    // SAFETY: indices stay below `ggml_backend_dev_count`; the out-pointers are valid.
    unsafe {
        for index in 0..sys::ggml_backend_dev_count() {
            let device = sys::ggml_backend_dev_get(index);
            let kind = sys::ggml_backend_dev_type(device);
            if kind != sys::GGML_BACKEND_DEVICE_TYPE_GPU
                && kind != sys::GGML_BACKEND_DEVICE_TYPE_IGPU
            {
                continue;
            }
            let (mut free, mut total) = (0usize, 0usize);
            sys::ggml_backend_dev_memory(device, &mut free, &mut total);
            let description = sys::ggml_backend_dev_description(device);
            let name = if description.is_null() {
                format!("GPU {index}")
            } else {
                CStr::from_ptr(description).to_string_lossy().into_owned()
            };
            gpus.push(Gpu {
                name,
                total: total as u64,
                free: free as u64,
            });
        }
    }
    gpus
}

fn nvidia_gpus() -> Vec<Gpu> {
    let output = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,memory.free",
            "--format=csv,noheader,nounits",
        ])
        .output();
    let Some(output) = output.ok().filter(|output| output.status.success()) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(parse_nvidia_line)
        .collect()
}

/// `NVIDIA GeForce RTX 4090, 24564, 23000` (MiB).
pub fn parse_nvidia_line(line: &str) -> Option<Gpu> {
    let mut fields = line.rsplitn(3, ',').map(str::trim);
    let free: u64 = fields.next()?.parse().ok()?;
    let total: u64 = fields.next()?.parse().ok()?;
    let name = fields.next()?.to_owned();
    Some(Gpu {
        name,
        total: total * 1024 * 1024,
        free: free * 1024 * 1024,
    })
}

fn amd_gpus() -> Vec<Gpu> {
    let Ok(cards) = std::fs::read_dir("/sys/class/drm") else {
        return Vec::new();
    };
    let read_number = |path: std::path::PathBuf| -> Option<u64> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    let mut gpus = Vec::new();
    for card in cards.flatten() {
        let name = card.file_name().to_string_lossy().into_owned();
        // `card0`, not `card0-DP-1` (connectors).
        if !name.starts_with("card") || name.contains('-') {
            continue;
        }
        let device = card.path().join("device");
        let (Some(total), Some(used)) = (
            read_number(device.join("mem_info_vram_total")),
            read_number(device.join("mem_info_vram_used")),
        ) else {
            continue;
        };
        gpus.push(Gpu {
            name: format!("AMD GPU ({name})"),
            total,
            free: total.saturating_sub(used),
        });
    }
    gpus
}

/// Total and available RAM in bytes.
fn ram() -> (u64, u64) {
    #[cfg(target_os = "linux")]
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        return parse_meminfo(&meminfo);
    }
    #[cfg(target_os = "macos")]
    if let Ok(output) = std::process::Command::new("sysctl")
        .args(["-n", "hw.memsize"])
        .output()
    {
        let total = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        return (total, total / 2);
    }
    (0, 0)
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(meminfo: &str) -> (u64, u64) {
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
            * 1024
    };
    (field("MemTotal:"), field("MemAvailable:"))
}
