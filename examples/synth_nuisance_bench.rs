//! Timing of the synthetic nuisance-signal and rendering functions (a benchmark, not a
//! test): per-function cost at 224×224 and 1000×900, and the throughput of a pipeline
//! with everything on (terrain, amplitude, stratified + turbulent atmosphere, ramp,
//! coherence, phase noise, Goldstein, processing error, both renderings and PNG encoding)
//! on `--threads` threads (default 2).
//!
//! `cargo run --release --example synth_nuisance_bench [-- --threads N --seconds S]`

use std::time::Instant;

use anyhow::Result;
use insar_mm::data::png::{encode_png, PngColor};
use insar_mm::synth::atmosphere::{self, StratifiedParams};
use insar_mm::synth::coherence::{self, CoherenceParams};
use insar_mm::synth::errors;
use insar_mm::synth::goldstein::{goldstein, GoldsteinParams};
use insar_mm::synth::grid::{Field, Geometry};
use insar_mm::synth::orbital::{Ramp, RampParams};
use insar_mm::synth::render::{self, GammaStyle};
use insar_mm::synth::terrain;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn time<T>(label: &str, reps: usize, mut f: impl FnMut(usize) -> T) -> f64 {
    let _ = std::hint::black_box(f(0));
    let t = Instant::now();
    for k in 0..reps {
        std::hint::black_box(f(k + 1));
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
    println!("  {label:<28} {ms:9.3} ms");
    ms
}

/// One full sample; returns the two PNG byte counts so nothing is optimised away.
fn sample(g: Geometry, seed: u64) -> Result<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let heading = -12.0;
    let inc = 37.0;
    let t = terrain::random_terrain(g, &mut rng);
    let amp = terrain::amplitude(&t, heading, inc, 80.0, &mut rng);
    let land: Vec<bool> = t.water.iter().map(|w| !w).collect();
    let strat = atmosphere::stratified(
        &t.elevation,
        Some(&land),
        &StratifiedParams::default(),
        &mut rng,
    );
    let sigma = atmosphere::random_turbulence_sigma(&mut rng);
    let turb = atmosphere::turbulent(g, sigma, &mut rng);
    let ramp = Ramp::random(g, &RampParams::default(), &mut rng).field(g);
    let _level = atmosphere::atmospheric_fringes(&strat.field, &turb, Some(&land));
    let _orb = insar_mm::synth::orbital::orbital_fringes(&ramp, Some(&land));
    let k = -4.0 * std::f32::consts::PI / atmosphere::WAVELENGTH_M as f32;
    let mut phase = Field::zeros(g);
    for i in 0..g.len() {
        phase.data[i] = k * (strat.field.data[i] + turb.data[i] + ramp.data[i]);
    }
    let perr = errors::burst_error(g, heading, &mut rng);
    for (p, o) in phase.data.iter_mut().zip(&perr.phase.data) {
        *p += o;
    }
    let cp = CoherenceParams::random(12.0, heading, inc, &mut rng);
    let gamma = coherence::coherence_map(&t, &cp, &mut rng);
    let noise = coherence::phase_noise(&gamma, 20.0, &mut rng);
    let noisy = coherence::add_phase_noise(&phase, &noise);
    let filtered = goldstein(
        &noisy,
        Some(&noise.observed_coherence),
        Some(&land),
        &GoldsteinParams::default(),
    );
    let _low = coherence::low_coherence(&gamma, &land);
    let a = render::render_licsar2020(&filtered, &land)?;
    let b = render::render_gamma(
        &filtered,
        &land,
        &GammaStyle {
            amplitude: &amp,
            coherence: Some(&noise.observed_coherence),
            cc_min: 0.2,
        },
    )?;
    let c = render::render_coherence(&noise.observed_coherence, &land)?;
    let pa = encode_png(
        g.width,
        g.height,
        PngColor::Rgba,
        if seed % 2 == 0 { &a } else { &b },
    )?;
    let pc = encode_png(g.width, g.height, PngColor::GrayAlpha, &c)?;
    Ok(pa.len() + pc.len())
}

fn per_function(g: Geometry, reps: usize) -> Result<()> {
    println!(
        "{}×{} at {} m, mean of {reps}:",
        g.width, g.height, g.pixel_m
    );
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let t = terrain::random_terrain(g, &mut rng);
    let land: Vec<bool> = t.water.iter().map(|w| !w).collect();
    let r = |k: usize| ChaCha8Rng::seed_from_u64(k as u64);
    let mut total = 0.0;
    total += time("terrain::random_terrain", reps, |k| {
        terrain::random_terrain(g, &mut r(k))
    });
    total += time("terrain::amplitude", reps, |k| {
        terrain::amplitude(&t, -12.0, 37.0, 80.0, &mut r(k))
    });
    total += time("atmosphere::stratified", reps, |k| {
        atmosphere::stratified(
            &t.elevation,
            Some(&land),
            &StratifiedParams::default(),
            &mut r(k),
        )
    });
    let turb = atmosphere::turbulent(g, 0.01, &mut r(0));
    total += time("atmosphere::turbulent", reps, |k| {
        atmosphere::turbulent(g, 0.01, &mut r(k))
    });
    total += time("atmosphere::atmospheric_fringes", reps, |_| {
        atmosphere::atmospheric_fringes(&turb, &turb, Some(&land))
    });
    total += time("orbital Ramp::field", reps, |k| {
        Ramp::random(g, &RampParams::default(), &mut r(k)).field(g)
    });
    let cp = CoherenceParams::random(12.0, -12.0, 37.0, &mut r(0));
    let gamma = coherence::coherence_map(&t, &cp, &mut r(0));
    total += time("coherence::coherence_map", reps, |k| {
        coherence::coherence_map(&t, &cp, &mut r(k))
    });
    let noise = coherence::phase_noise(&gamma, 20.0, &mut r(0));
    total += time("coherence::phase_noise", reps, |k| {
        coherence::phase_noise(&gamma, 20.0, &mut r(k))
    });
    let noisy = coherence::add_phase_noise(&turb, &noise);
    total += time("goldstein (α=1, 32, step 16)", reps, |_| {
        goldstein(
            &noisy,
            Some(&noise.observed_coherence),
            Some(&land),
            &GoldsteinParams::default(),
        )
    });
    total += time("errors::burst_error", reps, |k| {
        errors::burst_error(g, -12.0, &mut r(k))
    });
    total += time("errors::subswath_error", reps, |k| {
        errors::subswath_error(g, -12.0, &mut r(k))
    });
    total += time("errors::glacier_motion", reps, |k| {
        errors::glacier_motion(&t, -12.0, 37.0, 12.0, &mut r(k))
    });
    total += time("render::render_licsar2020", reps, |_| {
        render::render_licsar2020(&noisy, &land)
    });
    let amp = terrain::amplitude(&t, -12.0, 37.0, 80.0, &mut r(0));
    let style = GammaStyle {
        amplitude: &amp,
        coherence: Some(&gamma),
        cc_min: 0.2,
    };
    total += time("render::render_gamma", reps, |_| {
        render::render_gamma(&noisy, &land, &style)
    });
    total += time("render::render_coherence", reps, |_| {
        render::render_coherence(&gamma, &land)
    });
    let rgba = render::render_licsar2020(&noisy, &land)?;
    total += time("encode_png RGBA", reps, |_| {
        encode_png(g.width, g.height, PngColor::Rgba, &rgba)
    });
    println!("  {:<28} {total:9.3} ms", "sum");
    Ok(())
}

fn throughput(g: Geometry, threads: usize, seconds: f64) -> Result<f64> {
    let start = Instant::now();
    let counts: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut n = 0usize;
                    let mut seed = t as u64;
                    while start.elapsed().as_secs_f64() < seconds {
                        sample(g, seed).expect("sample");
                        seed += threads as u64;
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let n: usize = counts.iter().sum();
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: f64| -> f64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let threads = arg("--threads", 2.0) as usize;
    let seconds = arg("--seconds", 5.0);
    per_function(Geometry::new(224, 224, 370.0), 50)?;
    per_function(Geometry::new(1000, 900, 370.0), 3)?;
    let small = throughput(Geometry::new(224, 224, 370.0), threads, seconds)?;
    println!("full pipeline 224×224: {small:.1} samples/s on {threads} threads");
    let large = throughput(Geometry::new(1000, 900, 370.0), threads, seconds)?;
    println!("full pipeline 1000×900: {large:.2} frames/s on {threads} threads");
    Ok(())
}
