//! Forward + backward time per step of the encoders on the CPU, with the stem max-pool as
//! the custom kernel or as the 9-shifted-views emulation, plus the pool alone.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo bench -p insar-mm-models --bench encoder_step [-- FILTER...]
//! ```
//! A FILTER keeps the cases whose name contains it (e.g. `resnet18/224`). Run one case per
//! process to read its peak memory (the `peak RSS` column is the process high-water mark).
//! Timings are medians over `STEPS` steps (default 5) after one warm-up step.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarMap;
use insar_mm_models::encoder::{EncoderConfig, ResNet, StemPool};
use insar_mm_models::nn::check::{random_projection, seeded_randn};
use insar_mm_models::nn::{max_pool2d, max_pool2d_composed, seeded_var_builder, MaxPool2dConfig};

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time of all the process's threads, in seconds (`/proc/self/task/*/schedstat`):
/// unlike wall time it barely moves when other processes compete for the cores.
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .sum::<f64>()
        / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn input(shape: (usize, usize, usize, usize), seed: u64) -> Result<Tensor> {
    seeded_randn(shape, seed, &Device::Cpu)?.to_dtype(DType::F32)
}

/// (forward s, backward s, CPU s of the whole step) medians of one encoder step.
fn encoder_step(
    preset: &str,
    size: usize,
    batch: usize,
    pool: StemPool,
    steps: usize,
) -> Result<(f64, f64, f64)> {
    let cfg = EncoderConfig::preset(preset).map_err(candle_core::Error::Msg)?;
    let varmap = VarMap::new();
    let mut net = ResNet::new(
        &cfg,
        seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu),
    )?;
    net.set_stem_pool(pool);
    let x = input((batch, cfg.in_channels, size, size), 1)?;
    let (mut fwd, mut bwd, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for step in 0..=steps {
        let c = cpu_seconds();
        let t = Instant::now();
        let out = net.forward_t(&x, true)?;
        let loss = random_projection(&out.pooled, 2)?;
        let t_fwd = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = loss.backward()?;
        drop(grads);
        let t_bwd = t.elapsed().as_secs_f64();
        if step > 0 {
            fwd.push(t_fwd);
            bwd.push(t_bwd);
            cpu.push(cpu_seconds() - c);
        }
    }
    Ok((median(fwd), median(bwd), median(cpu)))
}

/// Forward + backward of the stem pool alone, (kernel s, shifted views s).
fn pool_step(shape: (usize, usize, usize, usize), steps: usize) -> Result<(f64, f64)> {
    let x = candle_core::Var::from_tensor(&input(shape, 3)?)?;
    let mut times = [Vec::new(), Vec::new()];
    for step in 0..=steps {
        for (k, times) in times.iter_mut().enumerate() {
            let t = Instant::now();
            let y = if k == 0 {
                max_pool2d(x.as_tensor(), MaxPool2dConfig::RESNET_STEM)?
            } else {
                max_pool2d_composed(x.as_tensor(), MaxPool2dConfig::RESNET_STEM)?
            };
            let g = y.sum_all()?.backward()?;
            drop(g);
            if step > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
    }
    let [a, b] = times;
    Ok((median(a), median(b)))
}

fn main() -> Result<()> {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let keep = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let steps: usize = std::env::var("STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!(
        "threads: {} (RAYON_NUM_THREADS), steps: {steps} (median after 1 warm-up)",
        candle_core::utils::get_num_threads()
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>8} {:>9} {:>10}",
        "case", "fwd ms", "bwd ms", "step ms", "img/s", "CPU ms", "peak RSS"
    );
    for (preset, size, batch) in [
        ("tiny", 64, 32),
        ("tiny", 224, 8),
        ("resnet18", 64, 32),
        ("resnet18", 224, 8),
    ] {
        for (pool, pool_name) in [
            (StemPool::Kernel, "kernel"),
            (StemPool::ShiftedViews, "shifted-views"),
        ] {
            let name = format!("{preset}/{size}/b{batch}/{pool_name}");
            if !keep(&name) {
                continue;
            }
            let (f, b, cpu) = encoder_step(preset, size, batch, pool, steps)?;
            println!(
                "{name:<34} {:>9.1} {:>9.1} {:>9.1} {:>8.1} {:>9.1} {:>7.0} MB",
                f * 1e3,
                b * 1e3,
                (f + b) * 1e3,
                batch as f64 / (f + b),
                cpu * 1e3,
                peak_rss_mb()
            );
        }
    }
    // The stem pool's input in ResNet-18: 64 channels at half the image size.
    for (size, batch) in [(64, 32), (224, 8)] {
        let name = format!("pool-only/{size}/b{batch}");
        if !keep(&name) {
            continue;
        }
        let (k, s) = pool_step((batch, 64, size / 2, size / 2), steps)?;
        println!(
            "{name:<34} kernel {:.1} ms, shifted views {:.1} ms (fwd+bwd), {:.1}× faster",
            k * 1e3,
            s * 1e3,
            s / k
        );
    }
    Ok(())
}
