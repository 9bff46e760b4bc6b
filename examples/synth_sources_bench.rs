//! Timing of the deformation sources alone (a benchmark, not a test): for the sources the
//! scene sampler draws (default class mix, `--size`, default 224×224 at 370 m), the mean
//! cost per source type of the exact LOS field (every pixel), of the adaptive field the
//! generator uses (`los_field_adaptive`), and the worst adaptive misfit relative to the
//! source's peak.
//!
//! `cargo run --release --example synth_sources_bench [-- --sources N --size 224]`
//! (one thread: `RAYON_NUM_THREADS=1`).

use std::collections::BTreeMap;
use std::time::Instant;

use insar_mm::synth::generate::{los_field, los_field_adaptive, physics_source};
use insar_mm::synth::grid::Geometry;
use insar_mm::synth::los::los_vector;
use insar_mm::synth::scene::SceneConfig;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let wanted = arg("--sources", 120);
    let size = arg("--size", 224);
    let config = SceneConfig {
        width: size,
        height: size,
        ..SceneConfig::default()
    };
    let g = Geometry::new(size, size, config.pixel_m);
    // (count, exact ms, adaptive ms, worst relative misfit) per activity type.
    let mut stats: BTreeMap<String, (usize, f64, f64, f64)> = BTreeMap::new();
    let mut seen = 0;
    let mut index = 0u64;
    while seen < wanted {
        let scene = config.scene(7, index);
        index += 1;
        let los = los_vector(scene.frame.heading_deg, scene.frame.incidence_deg);
        for src in &scene.sources {
            let s = physics_source(&src.params);
            let t = Instant::now();
            let exact = std::hint::black_box(los_field(&s, g, los, 1));
            let t_exact = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let fast = std::hint::black_box(los_field_adaptive(&s, g, los));
            let t_fast = t.elapsed().as_secs_f64() * 1e3;
            let peak = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let misfit = exact
                .iter()
                .zip(&fast)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
                / peak.max(f64::MIN_POSITIVE);
            let e = stats
                .entry(format!("{:?} ({})", src.activity, s.name()))
                .or_default();
            e.0 += 1;
            e.1 += t_exact;
            e.2 += t_fast;
            e.3 = e.3.max(misfit);
            seen += 1;
        }
    }
    println!(
        "{size}×{size} at {} m, {seen} sources from {index} scenes, {} thread(s):",
        config.pixel_m,
        rayon::current_num_threads()
    );
    println!(
        "  {:<28} {:>5} {:>11} {:>13} {:>14}",
        "type", "n", "exact ms", "adaptive ms", "worst misfit"
    );
    for (k, (n, a, b, m)) in &stats {
        println!(
            "  {k:<28} {n:>5} {:>11.2} {:>13.2} {:>14.1e}",
            a / *n as f64,
            b / *n as f64,
            m
        );
    }
}
