//! Processing errors and image defects (notes/synth-physics.md §5; flag meanings from the
//! real captions, notes/hephaestus.md):
//!
//! - `processing_error = 2` ("processing error during the debursting step"): constant
//!   phase steps along S1 IW burst borders, straight lines perpendicular to the flight
//!   track (E–W rotated by the heading), every ≈ 20 km in azimuth ([`burst_error`]).
//! - `processing_error = 3` ("related to swath merging. Missing information."): a phase
//!   step along a sub-swath border parallel to the track, plus a no-data band of missing
//!   bursts next to it ([`subswath_error`]).
//! - `glacier_fringes`: dense fringes from ice flow on high ground ([`glacier_motion`]).
//! - `image_artifacts`: stripes or a displaced block in the rendered phase
//!   ([`image_artifact`]).
//! - `corrupted`: frames broken beyond use — mostly missing, sheared rows, or random
//!   phase ([`corrupt_frame`]).
//!
//! Phase offsets are in radians (added to the phase after the LOS → phase conversion);
//! glacier motion is an apparent LOS displacement in metres like the other signals.

use std::f32::consts::PI;

use rand::Rng;

use super::atmosphere::{robust_ptp, FRINGE_M};
use super::coherence::wrap;
use super::grid::{Field, Geometry};
use super::terrain::{gradient, Terrain};

/// Which processing error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcessingErrorKind {
    /// Burst discontinuities (debursting / ESD residual): annotation code 2.
    Burst,
    /// Sub-swath merge step with missing data: annotation code 3.
    Subswath,
}

impl ProcessingErrorKind {
    /// The Hephaestus `processing_error` code.
    pub fn code(self) -> u8 {
        match self {
            ProcessingErrorKind::Burst => 2,
            ProcessingErrorKind::Subswath => 3,
        }
    }
}

/// A processing error: a phase offset field and pixels it leaves without data.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessingError {
    pub kind: ProcessingErrorKind,
    /// Phase offset (radians) to add before wrapping.
    pub phase: Field,
    /// True where the error removed the data (sub-swath: missing bursts).
    pub missing: Vec<bool>,
    /// Signed distance (m) of each border line from the frame centre, along its normal.
    pub borders_m: Vec<f64>,
}

/// Unit vector (east, north) of the flight direction for `heading_deg`.
fn along_track(heading_deg: f64) -> (f64, f64) {
    let h = heading_deg.to_radians();
    (h.sin(), h.cos())
}

/// A random phase step magnitude in radians: 0.8–π with a random sign (always visible).
fn step(rng: &mut impl Rng) -> f32 {
    let m = rng.random_range(0.8..PI);
    if rng.random::<bool>() {
        m
    } else {
        -m
    }
}

/// Burst discontinuities: burst borders every `burst_m` (≈ 20 km, randomised ±10 %) in
/// azimuth, one border at least inside the frame. Each burst gets a constant offset (a
/// random walk of visible steps at 1–3 consecutive borders, smaller jitter elsewhere) plus
/// a small linear azimuth ramp within the burst (an ESD residual).
pub fn burst_error(geometry: Geometry, heading_deg: f64, rng: &mut impl Rng) -> ProcessingError {
    let burst_m = 20_000.0 * rng.random_range(0.9..1.1);
    let (ae, an) = along_track(heading_deg);
    let half_extent = 0.5
        * ((geometry.width as f64 * geometry.pixel_m * ae).abs()
            + (geometry.height as f64 * geometry.pixel_m * an).abs());
    // Borders at s = offset + k·burst_m; put one within the central half of the frame.
    let offset = rng.random_range(-0.5..0.5) * half_extent.min(burst_m);
    let k_min = ((-half_extent - offset) / burst_m).floor() as i64 - 1;
    let k_max = ((half_extent - offset) / burst_m).ceil() as i64 + 1;
    let n_bursts = (k_max - k_min + 1) as usize;
    // Offsets per burst: visible steps at a run of borders, jitter elsewhere.
    let first_step = rng.random_range(0..n_bursts.max(2) - 1);
    let run = rng.random_range(1..=3);
    let mut offsets = Vec::with_capacity(n_bursts);
    let mut acc = 0.0f32;
    for b in 0..n_bursts {
        if b > 0 {
            let visible = b > first_step && b <= first_step + run;
            acc += if visible {
                step(rng)
            } else {
                rng.random_range(-0.15..0.15)
            };
        }
        offsets.push(acc);
    }
    // Make sure the border inside the frame (k = 0, between bursts −k_min − 1 and −k_min)
    // shows a visible step.
    let inside = (-k_min) as usize;
    if (offsets[inside] - offsets[inside - 1]).abs() < 0.8 {
        let s = step(rng);
        for o in offsets.iter_mut().skip(inside) {
            *o += s;
        }
    }
    let ramps: Vec<f32> = (0..n_bursts).map(|_| rng.random_range(-0.3..0.3)).collect();
    let mut phase = Field::zeros(geometry);
    for row in 0..geometry.height {
        let n = geometry.north(row);
        for col in 0..geometry.width {
            let s = geometry.east(col) * ae + n * an;
            let kf = (s - offset) / burst_m;
            let k = kf.floor();
            let b = ((k as i64 - k_min).clamp(0, n_bursts as i64 - 1)) as usize;
            let within = (kf - k) as f32 - 0.5; // −0.5..0.5 inside the burst
            phase.data[geometry.index(row, col)] = offsets[b] + ramps[b] * within;
        }
    }
    let borders_m = (k_min..=k_max)
        .map(|k| offset + k as f64 * burst_m)
        .filter(|s| s.abs() <= half_extent)
        .collect();
    ProcessingError {
        kind: ProcessingErrorKind::Burst,
        phase,
        missing: vec![false; geometry.len()],
        borders_m,
    }
}

/// Sub-swath merge error: a border parallel to the track through the central 60 % of the
/// frame with a visible phase step across it, and a band of missing data (one or more
/// missing bursts) 3–15 km wide on one side of it over part of its length.
pub fn subswath_error(geometry: Geometry, heading_deg: f64, rng: &mut impl Rng) -> ProcessingError {
    let (ae, an) = along_track(heading_deg);
    // Across-track coordinate ρ = e·an − n·ae (perpendicular to the flight direction).
    let half_across = 0.5
        * ((geometry.width as f64 * geometry.pixel_m * an).abs()
            + (geometry.height as f64 * geometry.pixel_m * ae).abs());
    let half_along = 0.5
        * ((geometry.width as f64 * geometry.pixel_m * ae).abs()
            + (geometry.height as f64 * geometry.pixel_m * an).abs());
    let border = rng.random_range(-0.6..0.6) * half_across;
    let jump = step(rng);
    let band = rng.random_range(3_000.0..15_000.0);
    let side = if rng.random::<bool>() { 1.0 } else { -1.0 };
    // Missing bursts: an along-track interval covering 30–100 % of the frame.
    let len = rng.random_range(0.3..1.0) * 2.0 * half_along;
    let start = rng.random_range(-half_along..(half_along - len).max(-half_along + 1.0));
    let mut phase = Field::zeros(geometry);
    let mut missing = vec![false; geometry.len()];
    for row in 0..geometry.height {
        let n = geometry.north(row);
        for col in 0..geometry.width {
            let e = geometry.east(col);
            let rho = e * an - n * ae;
            let s = e * ae + n * an;
            let i = geometry.index(row, col);
            if rho > border {
                phase.data[i] = jump;
            }
            let d = (rho - border) * side;
            if (0.0..band).contains(&d) && s >= start && s <= start + len {
                missing[i] = true;
            }
        }
    }
    ProcessingError {
        kind: ProcessingErrorKind::Subswath,
        phase,
        missing,
        borders_m: vec![border],
    }
}

/// Ice flow on the high ground of a terrain.
#[derive(Debug, Clone, PartialEq)]
pub struct Glacier {
    /// Apparent LOS displacement (m) over the pair.
    pub displacement: Field,
    /// Glaciated pixels.
    pub mask: Vec<bool>,
    /// Elevation of the ice line (m).
    pub ice_line_m: f64,
}

/// Box blur with radius `r` (clamped borders), used to smooth slopes before the flow model.
fn box_blur(f: &Field, r: usize) -> Field {
    let g = f.geometry;
    let mut tmp = Field::zeros(g);
    let mut out = Field::zeros(g);
    for row in 0..g.height {
        for col in 0..g.width {
            let (a, b) = (col.saturating_sub(r), (col + r).min(g.width - 1));
            let s: f32 = (a..=b).map(|c| f.get(row, c)).sum();
            tmp.data[g.index(row, col)] = s / (b - a + 1) as f32;
        }
    }
    for row in 0..g.height {
        let (a, b) = (row.saturating_sub(r), (row + r).min(g.height - 1));
        for col in 0..g.width {
            let s: f32 = (a..=b).map(|rr| tmp.get(rr, col)).sum();
            out.data[g.index(row, col)] = s / (b - a + 1) as f32;
        }
    }
    out
}

/// Glacier flow for a pair of `days`: ice above an ice line (the 93rd–98th percentile of
/// land elevation, at least 1500 m a.s.l. unless the terrain is lower) flows downslope
/// parallel to the (smoothed) surface at 1–5 cm/day scaled by `sqrt(slope/0.1)`, fading in
/// over 150 m above the ice line; projected on the LOS vector of `heading_deg` /
/// `incidence_deg` (docs/architecture.md §2.2). Returns an empty mask when no land is high enough.
pub fn glacier_motion(
    terrain: &Terrain,
    heading_deg: f64,
    incidence_deg: f64,
    days: f64,
    rng: &mut impl Rng,
) -> Glacier {
    let g = terrain.elevation.geometry;
    let mut land: Vec<f32> = terrain
        .elevation
        .data
        .iter()
        .zip(&terrain.water)
        .filter(|(_, &w)| !w)
        .map(|(&h, _)| h)
        .collect();
    let q = rng.random_range(0.93..0.98);
    let v0 = rng.random_range(0.01..0.05); // m/day
    let mut displacement = Field::zeros(g);
    let mut mask = vec![false; g.len()];
    if land.len() < 2 {
        return Glacier {
            displacement,
            mask,
            ice_line_m: f64::INFINITY,
        };
    }
    let k = ((land.len() - 1) as f64 * q) as usize;
    let hq = *land.select_nth_unstable_by(k, f32::total_cmp).1;
    let max = land.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let ice_line = if max > 1600.0 { hq.max(1500.0) } else { hq };
    let smooth = box_blur(&terrain.elevation, 2);
    let (ge, gn) = gradient(&smooth);
    let (hs, hc) = heading_deg.to_radians().sin_cos();
    let inc = incidence_deg.to_radians();
    let l = [
        (-inc.sin() * hc) as f32,
        (inc.sin() * hs) as f32,
        inc.cos() as f32,
    ];
    for i in 0..g.len() {
        let h = terrain.elevation.data[i];
        if terrain.water[i] || h <= ice_line {
            continue;
        }
        mask[i] = true;
        let slope = ge[i].hypot(gn[i]);
        if slope < 1e-6 {
            continue;
        }
        let fade = ((h - ice_line) / 150.0).clamp(0.0, 1.0);
        let speed = (v0 * days) as f32 * fade * (slope / 0.1).sqrt().min(3.0);
        // Downslope horizontal direction and the surface-parallel sinking.
        let (de, dn) = (-ge[i] / slope, -gn[i] / slope);
        let cos_t = 1.0 / (1.0 + slope * slope).sqrt();
        let (ue, un, uu) = (
            speed * cos_t * de,
            speed * cos_t * dn,
            -speed * cos_t * slope,
        );
        displacement.data[i] = ue * l[0] + un * l[1] + uu * l[2];
    }
    Glacier {
        displacement,
        mask,
        ice_line_m: ice_line as f64,
    }
}

/// `glacier_fringes` rule: 1 when the glacier's LOS displacement spans at least one fringe
/// (robust peak-to-peak over the glaciated pixels), else 0.
pub fn glacier_fringes(glacier: &Glacier) -> u8 {
    u8::from(robust_ptp(&glacier.displacement.data, Some(&glacier.mask)) >= FRINGE_M)
}

/// Kind of image artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    /// 2–6 thin (1–3 px) straight stripes along rows or columns with constant phase.
    Stripes,
    /// A rectangular block (10–25 % of each side) replaced by a displaced copy of
    /// another part of the frame (a tiling error).
    DisplacedBlock,
}

/// Applies a random image artifact to the wrapped phase in place; returns its kind and
/// the pixels it changed.
pub fn image_artifact(phase: &mut Field, rng: &mut impl Rng) -> (ArtifactKind, Vec<bool>) {
    let g = phase.geometry;
    let mut changed = vec![false; g.len()];
    if g.is_empty() {
        return (ArtifactKind::Stripes, changed);
    }
    if rng.random::<bool>() {
        let horizontal = rng.random::<bool>();
        let n = rng.random_range(2..=6);
        let along = if horizontal { g.height } else { g.width };
        for _ in 0..n {
            let at = rng.random_range(0..along);
            let w = rng.random_range(1..=3);
            let value = rng.random_range(-PI..PI);
            for k in at..(at + w).min(along) {
                let len = if horizontal { g.width } else { g.height };
                for j in 0..len {
                    let i = if horizontal {
                        g.index(k, j)
                    } else {
                        g.index(j, k)
                    };
                    phase.data[i] = value;
                    changed[i] = true;
                }
            }
        }
        (ArtifactKind::Stripes, changed)
    } else {
        let bw = ((g.width as f64 * rng.random_range(0.1..0.25)) as usize).max(1);
        let bh = ((g.height as f64 * rng.random_range(0.1..0.25)) as usize).max(1);
        let (r0, c0) = (
            rng.random_range(0..=g.height - bh),
            rng.random_range(0..=g.width - bw),
        );
        let (sr, sc) = (
            rng.random_range(0..=g.height - bh),
            rng.random_range(0..=g.width - bw),
        );
        let src = phase.clone();
        let offset = rng.random_range(-PI..PI);
        for r in 0..bh {
            for c in 0..bw {
                let i = g.index(r0 + r, c0 + c);
                phase.data[i] = wrap(src.get(sr + r, sc + c) + offset);
                changed[i] = true;
            }
        }
        (ArtifactKind::DisplacedBlock, changed)
    }
}

/// How a corrupted frame is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CorruptionKind {
    /// 55–90 % of the frame lost in large bands.
    MostlyMissing,
    /// Blocks of rows shifted sideways by 5–30 % of the width (a broken mosaic).
    ShearedRows,
    /// The phase is replaced by uniform noise (a failed interferogram).
    RandomPhase,
}

/// Corrupts a frame in place (phase and validity); returns how.
pub fn corrupt_frame(phase: &mut Field, valid: &mut [bool], rng: &mut impl Rng) -> CorruptionKind {
    let g = phase.geometry;
    assert_eq!(
        valid.len(),
        g.len(),
        "corrupt_frame: mask does not match the phase"
    );
    match rng.random_range(0..3) {
        0 => {
            let target = rng.random_range(0.55..0.9);
            let horizontal = rng.random::<bool>();
            let along = if horizontal { g.height } else { g.width };
            let cut = ((along as f64) * target).round() as usize;
            let from_start = rng.random::<bool>();
            for row in 0..g.height {
                for col in 0..g.width {
                    let k = if horizontal { row } else { col };
                    let lost = if from_start {
                        k < cut
                    } else {
                        k >= along - cut
                    };
                    if lost {
                        valid[g.index(row, col)] = false;
                    }
                }
            }
            CorruptionKind::MostlyMissing
        }
        1 => {
            let src = phase.clone();
            let src_valid = valid.to_vec();
            let mut row = 0;
            while row < g.height {
                let block = rng.random_range(g.height / 10 + 1..=g.height / 4 + 1);
                let shift = (g.width as f64 * rng.random_range(0.05..0.3)) as usize
                    * if rng.random::<bool>() {
                        1
                    } else {
                        g.width.saturating_sub(1)
                    };
                for r in row..(row + block).min(g.height) {
                    for c in 0..g.width {
                        let sc = (c + shift) % g.width.max(1);
                        phase.data[g.index(r, c)] = src.get(r, sc);
                        valid[g.index(r, c)] = src_valid[g.index(r, sc)];
                    }
                }
                row += block;
            }
            CorruptionKind::ShearedRows
        }
        _ => {
            for p in &mut phase.data {
                *p = rng.random_range(-PI..PI);
            }
            CorruptionKind::RandomPhase
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::terrain::{build_terrain, Edifice, EdificeKind, Setting, TerrainSpec};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    /// Steps between neighbouring pixels along the direction (de, dn) in pixel units.
    fn max_jump(f: &Field) -> f32 {
        let g = f.geometry;
        let mut m = 0.0f32;
        for r in 0..g.height - 1 {
            for c in 0..g.width - 1 {
                m = m.max((f.get(r, c) - f.get(r + 1, c)).abs());
                m = m.max((f.get(r, c) - f.get(r, c + 1)).abs());
            }
        }
        m
    }

    #[test]
    fn burst_steps_lie_on_lines_perpendicular_to_the_track() {
        let g = Geometry::new(224, 224, 370.0);
        for seed in 0..20 {
            for heading in [-12.0, 192.0] {
                let e = burst_error(g, heading, &mut rng(seed));
                assert_eq!(e.kind.code(), 2);
                assert!(!e.borders_m.is_empty());
                assert!(max_jump(&e.phase) >= 0.8, "no visible step");
                // Constant along the burst border direction (perpendicular to the track)
                // away from the borders: compare pixels displaced along (cos h, −sin h).
                let (ae, an) = along_track(heading);
                for (r, c) in [(100usize, 100usize), (50, 150), (180, 30)] {
                    let s = g.east(c) * ae + g.north(r) * an;
                    if e.borders_m.iter().all(|b| (s - b).abs() > 2.0 * 370.0) {
                        let v = e.phase.get(r, c);
                        // 10 px along the border direction ≈ constant (within the ramp).
                        let dc = (10.0 * an).round() as isize;
                        let dr = (10.0 * ae).round() as isize;
                        let (r2, c2) = ((r as isize + dr) as usize, (c as isize + dc) as usize);
                        let s2 = g.east(c2) * ae + g.north(r2) * an;
                        if e.borders_m
                            .iter()
                            .all(|b| (s - b).signum() == (s2 - b).signum())
                        {
                            assert!((e.phase.get(r2, c2) - v).abs() < 0.05);
                        }
                    }
                }
            }
        }
        assert_eq!(
            burst_error(g, -12.0, &mut rng(3)),
            burst_error(g, -12.0, &mut rng(3))
        );
    }

    #[test]
    fn subswath_error_steps_across_the_track_and_removes_data() {
        let g = Geometry::new(200, 180, 370.0);
        for seed in 0..20 {
            let e = subswath_error(g, -12.0, &mut rng(seed));
            assert_eq!(e.kind.code(), 3);
            let missing = e.missing.iter().filter(|&&m| m).count();
            assert!(missing > 0, "no missing data");
            assert!(missing < g.len() / 2);
            // The offset takes exactly two values: 0 and the step.
            let mut vals: Vec<f32> = e.phase.data.clone();
            vals.sort_by(f32::total_cmp);
            vals.dedup();
            assert_eq!(vals.len(), 2);
            assert!((vals[1] - vals[0]).abs() >= 0.8);
        }
    }

    fn high_terrain() -> Terrain {
        let g = Geometry::new(120, 120, 370.0);
        let mut ed = Edifice::random(EdificeKind::Strato, 0.0, 0.0, &mut rng(1));
        ed.height_m = 3500.0;
        ed.radius_m = 9000.0;
        ed.crater_depth_m = 0.0;
        let spec = TerrainSpec {
            edifices: vec![ed],
            setting: Setting::Inland,
            base_m: 1000.0,
            roughness_rms_m: 30.0,
            roughness_beta: 3.5,
        };
        build_terrain(g, &spec, &mut rng(2))
    }

    #[test]
    fn glaciers_sit_on_high_ground_and_make_fringes() {
        let t = high_terrain();
        let gl = glacier_motion(&t, -12.0, 37.0, 24.0, &mut rng(3));
        let n = gl.mask.iter().filter(|&&m| m).count();
        assert!(n > 0 && n < t.water.len() / 10, "{n}");
        assert!(gl.ice_line_m >= 1500.0);
        for (i, &m) in gl.mask.iter().enumerate() {
            if m {
                assert!(t.elevation.data[i] as f64 > gl.ice_line_m);
            } else {
                assert_eq!(gl.displacement.data[i], 0.0);
            }
        }
        assert_eq!(glacier_fringes(&gl), 1);
        // A 1-day pair moves too little for a fringe.
        let short = glacier_motion(&t, -12.0, 37.0, 0.2, &mut rng(3));
        assert_eq!(glacier_fringes(&short), 0);
    }

    #[test]
    fn artifacts_and_corruption_change_the_frame() {
        let g = Geometry::new(64, 48, 370.0);
        let base = Field::zeros(g);
        let mut kinds = std::collections::HashSet::new();
        for seed in 0..30 {
            let mut p = base.clone();
            let (kind, changed) = image_artifact(&mut p, &mut rng(seed));
            kinds.insert(kind);
            let n = changed.iter().filter(|&&c| c).count();
            assert!(n > 0 && n < g.len() / 2);
            for (i, &c) in changed.iter().enumerate() {
                if !c {
                    assert_eq!(p.data[i], 0.0);
                }
                assert!(p.data[i].abs() <= PI);
            }
        }
        assert_eq!(kinds.len(), 2);
        let mut kinds = std::collections::HashSet::new();
        for seed in 0..30 {
            let mut p = Field {
                geometry: g,
                data: (0..g.len()).map(|i| wrap(i as f32 * 0.01)).collect(),
            };
            let orig = p.clone();
            let mut valid = vec![true; g.len()];
            let kind = corrupt_frame(&mut p, &mut valid, &mut rng(seed));
            kinds.insert(kind);
            match kind {
                CorruptionKind::MostlyMissing => {
                    let lost = valid.iter().filter(|&&v| !v).count() as f64 / g.len() as f64;
                    assert!((0.5..=0.92).contains(&lost), "{lost}");
                }
                CorruptionKind::ShearedRows | CorruptionKind::RandomPhase => {
                    assert_ne!(p, orig);
                }
            }
        }
        assert_eq!(kinds.len(), 3);
    }
}
