//! Coherence maps, decorrelation phase noise and the `low_coherence` / `no_info` rules
//! (notes/synth-physics.md §5).
//!
//! The true coherence γ of each pixel comes from land cover (a smooth random field split
//! into bare/urban and vegetated ground), temporal decorrelation
//! `γ(t) = γ∞ + (γ0 − γ∞)·e^{−t/τ}` (Rocca 2007) with cover-dependent γ∞ and τ, snow above
//! an optional snowline, radar geometry (layover/shadow and steep slopes facing the radar)
//! and water (γ = 0, no data).
//!
//! Phase noise follows the multilook interferogram statistics: the L-look average of
//! `z1·z2*` for unit-power circular Gaussian pairs with correlation γ has mean γ (along the
//! signal phase), variance `(1 + γ²)/(2L)` along it and `(1 − γ²)/(2L)` across it. We draw
//! that average (central-limit form, exact in mean and covariance), so the phase error is
//! its argument and the observed coherence its modulus — the estimator bias at low γ
//! (`≈ √(π/4L)` at γ = 0) comes for free. At γ → 0 the phase is uniform.

use rand::Rng;

use super::atmosphere::{coarse_factor, power_law_pair_coarse, Spectrum};
use super::fastmath::{atan2_approx, exp_approx, fill_standard_normal};
use super::grid::{Field, Geometry};
use super::terrain::{radar_geometry, RadarGeometry, Terrain};

/// Scene-level coherence parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoherenceParams {
    /// Temporal baseline of the pair (days).
    pub temporal_baseline_days: f64,
    /// Share of land that is vegetated (low long-term coherence, fast decorrelation).
    pub vegetation_fraction: f64,
    /// Long-term coherence γ∞ of bare ground / lava / urban areas.
    pub bare_long_term: f64,
    /// Decorrelation time τ (days) of vegetated ground.
    pub vegetation_tau_days: f64,
    /// Elevation (m) above which snow and ice decorrelate the signal (`None`: no snow).
    pub snowline_m: Option<f64>,
    /// Satellite heading and incidence (degrees), for layover/shadow.
    pub heading_deg: f64,
    pub incidence_deg: f64,
}

impl CoherenceParams {
    /// Random scene parameters for a pair of `days` (vegetation share from arid 5 % to
    /// tropical 90 %, snowline on half the scenes).
    pub fn random(days: f64, heading_deg: f64, incidence_deg: f64, rng: &mut impl Rng) -> Self {
        Self {
            temporal_baseline_days: days,
            vegetation_fraction: rng.random_range(0.05..0.9),
            bare_long_term: rng.random_range(0.45..0.85),
            vegetation_tau_days: rng.random_range(4.0..15.0),
            snowline_m: if rng.random::<f64>() < 0.5 {
                Some(rng.random_range(1_800.0..5_000.0))
            } else {
                None
            },
            heading_deg,
            incidence_deg,
        }
    }
}

/// Short-term coherence γ0 (after a few days) and decorrelation of bare ground.
const GAMMA0: f32 = 0.92;
const BARE_TAU_DAYS: f32 = 150.0;
const VEG_LONG_TERM: f32 = 0.04;

/// True coherence map γ ∈ [0, 0.98] (water 0). Random parts: the land-cover field and a
/// finer texture field (one FFT for both).
pub fn coherence_map(terrain: &Terrain, params: &CoherenceParams, rng: &mut impl Rng) -> Field {
    let geo = radar_geometry(&terrain.elevation, params.heading_deg, params.incidence_deg);
    coherence_map_with(terrain, &geo, params, rng)
}

/// [`coherence_map`] with the terrain's [`radar_geometry`] for the look of `params`
/// already computed (the generator keeps it per frame).
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub fn coherence_map_with(
    terrain: &Terrain,
    geo: &RadarGeometry,
    params: &CoherenceParams,
    rng: &mut impl Rng,
) -> Field {
    let g = terrain.elevation.geometry;
    // Both fields are smooth at the pixel scale (f^−3: < 3 % of the variance lies at
    // wavelengths under 4 px at 370 m), so they are drawn on a grid of ≤ 750 m and
    // interpolated.
    let factor = coarse_factor(g.pixel_m, 750.0);
    let (cover, texture) =
        power_law_pair_coarse(g, &Spectrum::power_law(3.0, 30_000.0), factor, rng);
    // Threshold at the (1 − vegetation share) quantile of the land-cover field.
    let frac = params.vegetation_fraction.clamp(0.0, 1.0);
    let mut sorted = cover.data.clone();
    let k = (((sorted.len().max(1) - 1) as f64) * (1.0 - frac)).round() as usize;
    let threshold = if sorted.is_empty() {
        0.0
    } else {
        *sorted.select_nth_unstable_by(k, f32::total_cmp).1
    };
    let inc = params.incidence_deg.to_radians() as f32;
    let t = params.temporal_baseline_days.max(0.0) as f32;
    let veg_tau = params.vegetation_tau_days.max(0.1) as f32;
    let bare_inf = params.bare_long_term as f32;
    let (ln_bare_tau, ln_veg_tau) = (BARE_TAU_DAYS.ln(), veg_tau.ln());
    // One branch-free pass over all pixels (vectorises); water, layover and shadow are
    // selects, the snow line a second pass only when there is one.
    let mut out = Field::zeros(g);
    for ((o, (&c, &tex)), &loc) in out
        .data
        .iter_mut()
        .zip(cover.data.iter().zip(&texture.data))
        .zip(&geo.local_incidence)
    {
        // Soft vegetation indicator (transition width ~0.25 σ of the cover field).
        let v = 1.0 / (1.0 + exp_approx(-(c - threshold) / 0.12));
        let gamma_inf =
            ((1.0 - v) * bare_inf + v * VEG_LONG_TERM) * (1.0 + 0.25 * tex).clamp(0.3, 1.5);
        let gamma_inf = gamma_inf.min(GAMMA0);
        let tau = exp_approx((1.0 - v) * ln_bare_tau + v * ln_veg_tau);
        let gamma = gamma_inf + (GAMMA0 - gamma_inf) * exp_approx(-t / tau);
        // Steep slopes facing the radar: range-spectrum (geometric) decorrelation (layover
        // is capped below instead).
        let geometric = if !RadarGeometry::is_layover(loc) && loc < inc {
            (loc / inc).sqrt()
        } else {
            1.0
        };
        *o = gamma * geometric;
    }
    if let Some(snow) = params.snowline_m {
        for (o, &z) in out.data.iter_mut().zip(&terrain.elevation.data) {
            *o *= 1.0 - 0.85 * smoothstep((z - snow as f32) / 300.0);
        }
    }
    for ((o, &loc), &water) in out
        .data
        .iter_mut()
        .zip(&geo.local_incidence)
        .zip(&terrain.water)
    {
        let radar_blind = RadarGeometry::is_layover(loc) || RadarGeometry::is_shadow(loc);
        let y = if radar_blind { o.min(0.08) } else { *o };
        *o = if water { 0.0 } else { y.clamp(0.0, 0.98) };
    }
    out
}

fn smoothstep(x: f32) -> f32 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

/// Phase noise (radians) drawn from the coherence, and the coherence an `L`-look
/// estimator would observe (what `.geo.cc.png` shows).
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseNoise {
    pub noise: Field,
    pub observed_coherence: Field,
}

/// Draws decorrelation phase noise for true coherence `gamma` with `looks` looks (LiCSAR
/// multilooks 20×4 = 80; fewer looks → noisier). See the module docs for the statistics.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub fn phase_noise(gamma: &Field, looks: f64, rng: &mut impl Rng) -> PhaseNoise {
    let g = gamma.geometry;
    let l = looks.max(1.0) as f32;
    let mut noise = Field::zeros(g);
    let mut observed = Field::zeros(g);
    // The draws first (the along-track parts, then the across-track parts), the arithmetic
    // in a separate pass that vectorises.
    fill_standard_normal(rng, &mut noise.data);
    fill_standard_normal(rng, &mut observed.data);
    for ((n, o), &y) in noise
        .data
        .iter_mut()
        .zip(observed.data.iter_mut())
        .zip(&gamma.data)
    {
        let y = y.clamp(0.0, 1.0);
        let (a, b) = (*n, *o);
        let along = y + a * ((1.0 + y * y) / (2.0 * l)).sqrt();
        let across = b * ((1.0 - y * y) / (2.0 * l)).sqrt();
        *n = atan2_approx(across, along);
        // |z| without hypot's overflow care: both parts are O(1).
        *o = (along * along + across * across).sqrt().min(1.0);
    }
    PhaseNoise {
        noise,
        observed_coherence: observed,
    }
}

pub use crate::data::colormap::wrap;

/// Adds decorrelation noise to a phase (radians) and wraps to (−π, π].
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub fn add_phase_noise(phase: &Field, noise: &PhaseNoise) -> Field {
    Field {
        geometry: phase.geometry,
        data: phase
            .data
            .iter()
            .zip(&noise.noise.data)
            .map(|(&p, &n)| wrap(p + n))
            .collect(),
    }
}

/// Coherence below which a pixel counts as decorrelated for the flags.
pub const LOW_COHERENCE: f32 = 0.3;
/// Share of valid pixels below [`LOW_COHERENCE`] that sets `low_coherence`.
pub const LOW_COHERENCE_SHARE: f64 = 0.35;
/// Coherence below which a pixel carries no information.
pub const NO_INFO_COHERENCE: f32 = 0.15;
/// Share of the frame without information that sets `no_info`.
pub const NO_INFO_SHARE: f64 = 0.8;

/// `low_coherence` rule: at least 35 % of the valid (land, in-frame) pixels have true
/// coherence below 0.3 — noisy areas are a visible part of the image. Always false when
/// no pixel is valid.
pub fn low_coherence(gamma: &Field, valid: &[bool]) -> bool {
    let (low, n) = gamma
        .data
        .iter()
        .zip(valid)
        .filter(|(_, &ok)| ok)
        .fold((0usize, 0usize), |(l, n), (&y, _)| {
            (l + usize::from(y < LOW_COHERENCE), n + 1)
        });
    n > 0 && low as f64 / n as f64 >= LOW_COHERENCE_SHARE
}

/// `no_info` rule: at least 80 % of the whole frame is either no-data (invalid) or has
/// true coherence below 0.15 — "very noisy, no information can be extracted".
pub fn no_info(gamma: &Field, valid: &[bool]) -> bool {
    let n = gamma.data.len();
    if n == 0 {
        return true;
    }
    let bad = gamma
        .data
        .iter()
        .zip(valid)
        .filter(|(&y, &ok)| !ok || y < NO_INFO_COHERENCE)
        .count();
    bad as f64 / n as f64 >= NO_INFO_SHARE
}

/// Uniform coherence field (handy for tests and for callers without terrain).
pub fn constant(geometry: Geometry, gamma: f32) -> Field {
    Field {
        geometry,
        data: vec![gamma; geometry.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::terrain::{build_terrain, Edifice, EdificeKind, Setting, TerrainSpec};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::f32::consts::PI;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn terrain(setting: Setting) -> Terrain {
        let g = Geometry::new(96, 96, 370.0);
        let mut ed = Edifice::random(EdificeKind::Strato, 0.0, 0.0, &mut rng(1));
        ed.height_m = 3000.0;
        ed.radius_m = 6000.0;
        ed.crater_depth_m = 0.0;
        let spec = TerrainSpec {
            edifices: vec![ed],
            setting,
            base_m: 200.0,
            roughness_rms_m: 50.0,
            roughness_beta: 3.5,
        };
        build_terrain(g, &spec, &mut rng(2))
    }

    fn params(days: f64, veg: f64) -> CoherenceParams {
        CoherenceParams {
            temporal_baseline_days: days,
            vegetation_fraction: veg,
            bare_long_term: 0.7,
            vegetation_tau_days: 8.0,
            snowline_m: None,
            heading_deg: -12.0,
            incidence_deg: 37.0,
        }
    }

    fn mean(v: &[f32]) -> f64 {
        v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
    }

    #[test]
    fn wrap_edge_cases() {
        assert_eq!(wrap(PI), PI);
        assert!((wrap(-PI) - PI).abs() < 1e-6);
        assert!(wrap(0.0).abs() < 1e-7);
        assert!(wrap(2.0 * PI).abs() < 1e-6);
        assert!((wrap(3.0 * PI) - PI).abs() < 1e-5);
        for k in -50..50 {
            let x = k as f32 * 0.37;
            let w = wrap(x);
            assert!(w > -PI && w <= PI);
            assert!(
                ((x - w) / (2.0 * PI)).fract().abs() < 1e-4
                    || ((x - w) / (2.0 * PI)).fract().abs() > 1.0 - 1e-4
            );
        }
    }

    #[test]
    fn coherence_decays_with_baseline_and_vegetation() {
        let t = terrain(Setting::Inland);
        let short = coherence_map(&t, &params(6.0, 0.5), &mut rng(3));
        let long = coherence_map(&t, &params(96.0, 0.5), &mut rng(3));
        assert!(short.data.iter().zip(&long.data).all(|(a, b)| a >= b));
        assert!(mean(&short.data) > mean(&long.data) + 0.05);
        let arid = coherence_map(&t, &params(24.0, 0.05), &mut rng(4));
        let tropical = coherence_map(&t, &params(24.0, 0.9), &mut rng(4));
        assert!(
            mean(&arid.data) > mean(&tropical.data) + 0.2,
            "{} {}",
            mean(&arid.data),
            mean(&tropical.data)
        );
        assert!(short.data.iter().all(|&y| (0.0..=0.98).contains(&y)));
        // Deterministic.
        assert_eq!(short, coherence_map(&t, &params(6.0, 0.5), &mut rng(3)));
    }

    #[test]
    fn water_is_incoherent_and_snow_decorrelates_the_summit() {
        let t = terrain(Setting::Island { depth_m: 400.0 });
        let g = t.elevation.geometry;
        let c = coherence_map(&t, &params(12.0, 0.2), &mut rng(5));
        for (i, &w) in t.water.iter().enumerate() {
            if w {
                assert_eq!(c.data[i], 0.0);
            }
        }
        let mut p = params(12.0, 0.0);
        let plain = coherence_map(&t, &p, &mut rng(6));
        p.snowline_m = Some(2000.0);
        let snowy = coherence_map(&t, &p, &mut rng(6));
        let summit = g.index(48, 48);
        assert!(t.elevation.data[summit] > 2400.0);
        assert!(snowy.data[summit] < 0.3 * plain.data[summit] + 1e-6);
        assert!(snowy.data[g.index(2, 2)] == plain.data[g.index(2, 2)]);
    }

    #[test]
    fn phase_noise_statistics_match_coherence() {
        let g = Geometry::new(200, 100, 370.0);
        // γ = 1: no noise.
        let pn = phase_noise(&constant(g, 1.0), 80.0, &mut rng(7));
        assert!(pn.noise.data.iter().all(|&x| x.abs() < 1e-6));
        // High coherence: small circular variance; σ² ≈ (1 − γ²)/(2γ²L).
        let y = 0.7f32;
        let l = 80.0;
        let pn = phase_noise(&constant(g, y), l as f64, &mut rng(8));
        let var = mean(&pn.noise.data.iter().map(|x| x * x).collect::<Vec<_>>());
        let expect = ((1.0 - y * y) / (2.0 * y * y * l)) as f64;
        assert!((var / expect - 1.0).abs() < 0.12, "{var} vs {expect}");
        // Observed coherence is unbiased at high γ.
        assert!((mean(&pn.observed_coherence.data) - 0.7).abs() < 0.01);
        // γ = 0: uniform phase (mean resultant length ≈ 0, variance π²/3) and a biased
        // observed coherence √(π/4L).
        let pn = phase_noise(&constant(g, 0.0), l as f64, &mut rng(9));
        let (c, s) = pn.noise.data.iter().fold((0.0f64, 0.0f64), |(c, s), &x| {
            (c + x.cos() as f64, s + x.sin() as f64)
        });
        assert!((c.hypot(s) / g.len() as f64) < 0.02);
        let var = mean(&pn.noise.data.iter().map(|x| x * x).collect::<Vec<_>>());
        assert!((var - (PI * PI / 3.0) as f64).abs() < 0.1, "{var}");
        let bias = (std::f64::consts::PI / (4.0 * l as f64)).sqrt();
        assert!((mean(&pn.observed_coherence.data) - bias).abs() < 0.01);
        let noisy = add_phase_noise(&constant(g, 3.0), &pn);
        assert!(noisy.data.iter().all(|&x| x > -PI && x <= PI));
    }

    #[test]
    fn flag_rules() {
        let g = Geometry::new(10, 10, 370.0);
        let all = vec![true; 100];
        assert!(!low_coherence(&constant(g, 0.8), &all));
        assert!(low_coherence(&constant(g, 0.2), &all));
        let mut mixed = constant(g, 0.8);
        for i in 0..34 {
            mixed.data[i] = 0.1;
        }
        assert!(!low_coherence(&mixed, &all));
        mixed.data[34] = 0.1;
        assert!(low_coherence(&mixed, &all));
        assert!(!no_info(&mixed, &all));
        // 60 % no-data + 20 % decorrelated land = 80 % → no information.
        let valid: Vec<bool> = (0..100).map(|i| i >= 60).collect();
        let mut c = constant(g, 0.9);
        for i in 60..80 {
            c.data[i] = 0.05;
        }
        assert!(no_info(&c, &valid));
        c.data[79] = 0.5;
        assert!(!no_info(&c, &valid));
        assert!(!low_coherence(&c, &[false; 100]));
    }
}
