//! Scene → rendered interferogram + Hephaestus annotation.
//!
//! The chain, in the order the signals are added (each stage draws from its own ChaCha
//! stream `(scene.field_seed, stage)`, so switching one signal off leaves the others
//! unchanged):
//!
//! 1. terrain of the frame (fixed per frame: volcano, fractal background, sea);
//! 2. deformation: every source's displacement projected on the frame's LOS, its strength
//!    scaled to the scene's target fringe count, then *measured*: mask (`|d_LOS| ≥
//!    max(0.2·max, λ/8)`, closed), fringe count and intensity inside the mask (docs/architecture.md §2.2);
//! 3. stratified + turbulent atmosphere → `atmospheric_fringes`; orbital ramp →
//!    `orbital_fringes`; glacier flow → `glacier_fringes`;
//! 4. coherence (terrain, baseline, water; plus decorrelation where deformation fringes are
//!    too dense to survive, as in real data) → phase noise, `low_coherence`, `no_info`;
//! 5. processing errors (burst / sub-swath steps) → `processing_error`, Goldstein filter,
//!    image artifacts, corruption, tilted frame edges;
//! 6. rendering (LiCSAR 2020 or GAMMA style), coherence PNG, annotation + caption.
//!
//! Every flag is set from the signal that was actually added, measured with the rule of
//! the module that made it; the polygons are traced from the measured masks.

use std::path::Path;

use anyhow::{Context, Result};
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;

use super::atmosphere::{atmospheric_fringes, stratified, turbulent, two_ranks, StratifiedParams};
use super::captions::{caption, CaptionFacts, CaptionStyle, Cell, PatternFact};
use super::coherence::{
    add_phase_noise, low_coherence, no_info, phase_noise, CoherenceParams, LOW_COHERENCE,
};
use super::errors::{
    burst_error, corrupt_frame, glacier_fringes, glacier_motion, image_artifact, subswath_error,
};
use super::fastmath::exp_approx;
use super::goldstein::{goldstein, GoldsteinParams};
use super::grid::{Field, Geometry};
use super::los::los_vector;
use super::orbital::{orbital_fringes, Ramp, RampParams};
use super::phase::{
    deformation_mask, fringes_and_intensity, mask_polygons, MaskRule, PolygonOptions,
};
use super::render::{
    encode_phase_npy, render_coherence, render_gamma, render_licsar2020, GammaStyle,
};
use super::scene::{stream_rng, RenderStyle, Scene, SceneSource, SourceParams};
use super::sources::{
    Evaluator, MogiParams, OkadaParams, PennyParams, Source, SpheroidParams, DEFAULT_POISSON,
};
use super::terrain::{
    build_terrain, radar_geometry, radar_hillshade_from, speckle, RadarGeometry, Terrain,
    TerrainSpec,
};
use crate::data::annotation::{ActivityType, Annotation, Intensity, Label, Phase, Polygon};
use crate::data::array::ClassMask;
use crate::data::frames::InterferogramFiles;
use crate::data::png::{encode_png, PngColor};
use crate::data::raster::rasterize;

/// Stream ids of the stages (fixed forever: changing one changes every sample).
mod stage {
    pub const STRATIFIED: u64 = 1;
    pub const TURBULENT: u64 = 2;
    pub const ORBITAL: u64 = 3;
    pub const GLACIER: u64 = 4;
    pub const COHERENCE: u64 = 5;
    pub const NOISE: u64 = 6;
    pub const ERRORS: u64 = 7;
    pub const ARTIFACTS: u64 = 8;
    pub const EDGES: u64 = 9;
    pub const AMPLITUDE: u64 = 10;
    pub const CAPTION: u64 = 11;
}

/// Multilook count behind the phase noise: the Hephaestus previews are LiCSAR products
/// (20×4 looks) shrunk further to ≈ 370 m, but the filter and the PNG keep the noise of
/// decorrelated areas visible; 20 reproduces that look.
const LOOKS: f64 = 20.0;

/// Phase gradient (radians per pixel) above which fringes decorrelate: at 370 m/px a
/// fringe needs ≥ 3–4 px to survive filtering (notes §9.2).
const DENSE_FRINGE_RAD_PER_PX: f32 = 1.6;

/// The terrain seed is a frame property: build the spec from it (as the scene sampler does
/// when it places sources under the volcano).
pub fn terrain_spec(scene: &Scene) -> TerrainSpec {
    TerrainSpec::random(
        geometry(scene),
        &mut stream_rng(scene.frame.terrain_seed, 0),
    )
}

/// What the generator keeps per frame: the terrain and, for the frame's look, its radar
/// geometry (coherence) and noise-free hillshade (GAMMA amplitude).
#[derive(Debug)]
pub struct FrameTerrain {
    pub terrain: Terrain,
    pub radar: RadarGeometry,
    pub hillshade: Field,
}

/// Memory the frame cache may hold (bytes; at least 8 frames are kept whatever the size).
const FRAME_CACHE_BYTES: usize = 512 << 20;

/// The terrain of the scene's frame: a pure function of the frame's terrain seed, look and
/// geometry, so every pair of a frame shows the same volcano. Kept in a cache shared by
/// all threads (frames repeat across samples; the lock is only held to find the entry,
/// and a frame is built once even when two threads ask for it at the same time).
pub fn frame_terrain(scene: &Scene) -> std::sync::Arc<FrameTerrain> {
    use std::sync::{Arc, Mutex, OnceLock};
    type Key = (u64, usize, usize, u64, u64, u64);
    type Slot = Arc<OnceLock<Arc<FrameTerrain>>>;
    static CACHE: Mutex<Vec<(Key, Slot)>> = Mutex::new(Vec::new());
    let g = geometry(scene);
    let (heading, incidence) = (scene.frame.heading_deg, scene.frame.incidence_deg);
    let key = (
        scene.frame.terrain_seed,
        scene.width,
        scene.height,
        scene.pixel_m.to_bits(),
        heading.to_bits(),
        incidence.to_bits(),
    );
    let slot = {
        // A panic elsewhere cannot leave the list inconsistent: keep using it.
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        match cache.iter().find(|(k, _)| *k == key) {
            Some((_, slot)) => slot.clone(),
            None => {
                // elevation, local incidence, hillshade (f32) + water (bool) per pixel.
                let bytes = g.len().max(1) * 13;
                let capacity = (FRAME_CACHE_BYTES / bytes).clamp(8, 64);
                while cache.len() >= capacity {
                    cache.remove(0);
                }
                let slot = Slot::default();
                cache.push((key, slot.clone()));
                slot
            }
        }
    };
    slot.get_or_init(|| {
        let terrain = build_terrain(
            g,
            &terrain_spec(scene),
            &mut stream_rng(scene.frame.terrain_seed, 1),
        );
        let radar = radar_geometry(&terrain.elevation, heading, incidence);
        let hillshade = radar_hillshade_from(&terrain, &radar, incidence);
        Arc::new(FrameTerrain {
            terrain,
            radar,
            hillshade,
        })
    })
    .clone()
}

fn geometry(scene: &Scene) -> Geometry {
    Geometry::new(scene.width, scene.height, scene.pixel_m)
}

/// The physics source of a scene source.
pub fn physics_source(p: &SourceParams) -> Source {
    match *p {
        SourceParams::Mogi { e, n, depth, dv } => Source::Mogi(MogiParams { e, n, depth, dv }),
        SourceParams::Okada {
            e,
            n,
            depth,
            strike,
            dip,
            rake,
            length,
            width,
            slip,
            opening,
        } => Source::Okada(OkadaParams {
            e,
            n,
            depth,
            strike,
            dip,
            rake,
            length,
            width,
            slip,
            opening,
        }),
        SourceParams::Penny {
            e,
            n,
            depth,
            radius,
            pressure_over_mu,
        } => Source::Penny(PennyParams {
            e,
            n,
            depth,
            radius,
            pressure_over_mu,
        }),
        SourceParams::Spheroid {
            e,
            n,
            depth,
            semi_major,
            aspect_ratio,
            pressure_over_mu,
            mu,
            plunge,
            trend,
        } => Source::Spheroid(SpheroidParams {
            e,
            n,
            depth,
            semi_major,
            aspect_ratio,
            pressure_over_mu,
            mu,
            plunge,
            trend,
        }),
    }
}

/// Largest distance (m) from the source centre to a pixel centre of the frame (the penny
/// crack tabulates its profile that far).
fn frame_reach(source: &Source, g: Geometry) -> f64 {
    let (se, sn) = source.position();
    let (w, h) = (g.width.max(1), g.height.max(1));
    [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)]
        .iter()
        .map(|&(r, c)| (g.east(c) - se).hypot(g.north(r) - sn))
        .fold(0.0, f64::max)
}

/// LOS component of the displacement at one point.
#[inline]
fn los_at(eval: &Evaluator, los: [f64; 3], e: f64, n: f64) -> f64 {
    let d = eval.at(e, n);
    d[0] * los[0] + d[1] * los[1] + d[2] * los[2]
}

/// Pixel indices `0, stride, 2·stride, …` plus the last one.
fn grid_nodes(n: usize, stride: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).step_by(stride.max(1)).collect();
    if *v.last().unwrap_or(&0) != n.saturating_sub(1) {
        v.push(n - 1);
    }
    v
}

/// Values at the nodes `rows × cols` (row-major), evaluated in parallel (each point on
/// its own, so the result does not depend on the thread count).
fn eval_nodes(
    eval: &Evaluator,
    g: Geometry,
    los: [f64; 3],
    rows: &[usize],
    cols: &[usize],
) -> Vec<f64> {
    use rayon::prelude::*;
    rows.par_iter()
        .flat_map_iter(|&r| {
            let n = g.north(r);
            cols.iter().map(move |&c| los_at(eval, los, g.east(c), n))
        })
        .collect()
}

/// Bilinear interpolation of node values (`rows × cols`, row-major) onto every pixel.
fn interpolate_nodes(coarse: &[f64], rows: &[usize], cols: &[usize], g: Geometry) -> Vec<f64> {
    let nc = cols.len();
    // For each fine index: the coarse interval and the weight.
    let locate = |nodes: &[usize], x: usize| -> (usize, f64) {
        if nodes.len() < 2 {
            return (0, 0.0);
        }
        let k = nodes
            .partition_point(|&v| v <= x)
            .saturating_sub(1)
            .min(nodes.len() - 2);
        let t = (x as f64 - nodes[k] as f64) / (nodes[k + 1] - nodes[k]) as f64;
        (k, t)
    };
    let col_w: Vec<(usize, f64)> = (0..g.width).map(|x| locate(cols, x)).collect();
    let mut out = vec![0.0; g.len()];
    for y in 0..g.height {
        let (ry, ty) = locate(rows, y);
        let ry1 = (ry + 1).min(rows.len() - 1);
        for (x, &(cx, tx)) in col_w.iter().enumerate() {
            let cx1 = (cx + 1).min(nc - 1);
            let a = coarse[ry * nc + cx] * (1.0 - tx) + coarse[ry * nc + cx1] * tx;
            let b = coarse[ry1 * nc + cx] * (1.0 - tx) + coarse[ry1 * nc + cx1] * tx;
            out[y * g.width + x] = a * (1.0 - ty) + b * ty;
        }
    }
    out
}

/// LOS displacement (m) of `source` on the frame, evaluated on every `stride`-th pixel (and
/// the last row/column) and interpolated bilinearly in between (`stride` 1: every pixel
/// exactly).
pub fn los_field(source: &Source, g: Geometry, los: [f64; 3], stride: usize) -> Vec<f64> {
    let eval = Evaluator::new(source, DEFAULT_POISSON, frame_reach(source, g));
    let (cols, rows) = (grid_nodes(g.width, stride), grid_nodes(g.height, stride));
    let coarse = eval_nodes(&eval, g, los, &rows, &cols);
    if stride <= 1 {
        return coarse;
    }
    interpolate_nodes(&coarse, &rows, &cols, g)
}

/// Cell size (pixels) of [`los_field_adaptive`]: cells are checked on their half-stride
/// nodes and either interpolated from them or evaluated at every pixel.
pub const ADAPTIVE_CELL: usize = 8;
/// Largest accepted interpolation misfit of a cell, relative to the largest |d_LOS| on the
/// node grid (1e-3: the misfit of the half-stride interpolation actually used is ≈ 4×
/// smaller, ≈ 0.03 rad of phase on a 20-fringe pattern).
pub const ADAPTIVE_TOLERANCE: f64 = 1e-3;

/// LOS displacement (m) of `source` on the frame, adaptively: evaluated exactly on every
/// 4th pixel (and the last row/column); each 8×8 cell whose 4th-pixel values are predicted
/// by bilinear interpolation from its corners within [`ADAPTIVE_TOLERANCE`] (relative to
/// the field's peak) is filled by bilinear interpolation of the 4th-pixel grid, every other
/// cell (sharp shallow sources, surface ruptures, peaks) is evaluated at every pixel. The
/// fields are smooth at preview scale except near such features, so this costs ~1/10 of a
/// full evaluation and stays within ~1e-4 of the peak everywhere (tested against
/// [`los_field`] at stride 1).
pub fn los_field_adaptive(source: &Source, g: Geometry, los: [f64; 3]) -> Vec<f64> {
    use rayon::prelude::*;
    let half = ADAPTIVE_CELL / 2;
    let eval = Evaluator::new(source, DEFAULT_POISSON, frame_reach(source, g));
    if g.width < ADAPTIVE_CELL || g.height < ADAPTIVE_CELL {
        return los_field(source, g, los, 1);
    }
    let (cols, rows) = (grid_nodes(g.width, half), grid_nodes(g.height, half));
    let nodes = eval_nodes(&eval, g, los, &rows, &cols);
    let nc = cols.len();
    let peak = nodes.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let tol = ADAPTIVE_TOLERANCE * peak;
    // Cells: node-index ranges between the even node indices (and the last node).
    let bounds = |len: usize| -> Vec<usize> {
        let mut v: Vec<usize> = (0..len).step_by(2).collect();
        if *v.last().unwrap_or(&0) != len - 1 {
            v.push(len - 1);
        }
        v
    };
    let (cb, rb) = (bounds(cols.len()), bounds(rows.len()));
    let mut refine: Vec<(usize, usize, usize, usize)> = Vec::new();
    for rw in rb.windows(2) {
        let (r0, r1) = (rw[0], rw[1]);
        for cw in cb.windows(2) {
            let (c0, c1) = (cw[0], cw[1]);
            let v = |r: usize, c: usize| nodes[r * nc + c];
            let (y0, y1) = (rows[r0] as f64, rows[r1] as f64);
            let (x0, x1) = (cols[c0] as f64, cols[c1] as f64);
            let mut misfit = 0.0f64;
            let mut checked = 0;
            for (r, &yr) in rows.iter().enumerate().take(r1 + 1).skip(r0) {
                let ty = (yr as f64 - y0) / (y1 - y0);
                for (c, &xc) in cols.iter().enumerate().take(c1 + 1).skip(c0) {
                    if (r == r0 || r == r1) && (c == c0 || c == c1) {
                        continue;
                    }
                    let tx = (xc as f64 - x0) / (x1 - x0);
                    let top = v(r0, c0) * (1.0 - tx) + v(r0, c1) * tx;
                    let bottom = v(r1, c0) * (1.0 - tx) + v(r1, c1) * tx;
                    let guess = top * (1.0 - ty) + bottom * ty;
                    let d = (guess - v(r, c)).abs();
                    misfit = if d.is_nan() {
                        f64::INFINITY
                    } else {
                        misfit.max(d)
                    };
                    checked += 1;
                }
            }
            // A cell without check nodes (a 1-node strip) or non-finite values: exact.
            if checked == 0 || misfit > tol || !tol.is_finite() {
                refine.push((rows[r0], rows[r1], cols[c0], cols[c1]));
            }
        }
    }
    let mut out = interpolate_nodes(&nodes, &rows, &cols, g);
    let exact: Vec<Vec<f64>> = refine
        .par_iter()
        .map(|&(ya, yb, xa, xb)| {
            let mut v = Vec::with_capacity((yb - ya + 1) * (xb - xa + 1));
            for y in ya..=yb {
                let n = g.north(y);
                for x in xa..=xb {
                    v.push(los_at(&eval, los, g.east(x), n));
                }
            }
            v
        })
        .collect();
    for (&(ya, yb, xa, xb), vals) in refine.iter().zip(&exact) {
        let mut k = 0;
        for y in ya..=yb {
            for x in xa..=xb {
                out[g.index(y, x)] = vals[k];
                k += 1;
            }
        }
    }
    out
}

/// One deformation pattern as measured on the rendered frame.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub activity: ActivityType,
    /// The source with its final (scaled) strength.
    pub source: Source,
    pub inflation: bool,
    /// Fringes (peak-to-peak LOS inside the mask / (λ/2)).
    pub fringes: f64,
    /// Intensity by the complete-cycles rule (the annotation says `None` for earthquakes).
    pub intensity: Intensity,
    /// The measured mask (row-major, `width × height`).
    pub mask: Vec<bool>,
    pub polygon: Polygon,
}

/// A rendered frame with its annotation and the fields behind it.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub scene: Scene,
    pub annotation: Annotation,
    pub patterns: Vec<Pattern>,
    /// `.geo.diff.png` pixels, RGBA.
    pub diff_rgba: Vec<u8>,
    /// `.geo.cc.png` pixels, gray + alpha.
    pub cc_gray_alpha: Vec<u8>,
    /// Final wrapped phase (radians) as rendered.
    pub phase: Field,
    /// Observed coherence (what the `.geo.cc.png` shows).
    pub coherence: Field,
    pub valid: Vec<bool>,
}

impl Rendered {
    pub fn width(&self) -> usize {
        self.scene.width
    }

    pub fn height(&self) -> usize {
        self.scene.height
    }

    /// Class-id mask of the measured deformation (later patterns win, like the rasteriser).
    pub fn physics_mask(&self) -> ClassMask {
        let mut m = ClassMask::zeros(self.height(), self.width());
        for p in &self.patterns {
            for (v, &on) in m.data.iter_mut().zip(&p.mask) {
                if on {
                    *v = p.activity.mask_class();
                }
            }
        }
        m
    }

    /// Class-id mask rasterised from the annotation's polygons (what trainers see).
    pub fn annotation_mask(&self) -> ClassMask {
        rasterize(
            self.height(),
            self.width(),
            self.annotation.class_polygons(),
        )
    }

    /// PNG bytes of the phase preview and the coherence.
    pub fn encode_pngs(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let (w, h) = (self.width(), self.height());
        Ok((
            encode_png(w, h, PngColor::Rgba, &self.diff_rgba)?,
            encode_png(w, h, PngColor::GrayAlpha, &self.cc_gray_alpha)?,
        ))
    }

    /// Writes the raw-frame files and the annotation under `root` (Hephaestus layout);
    /// with `float_phase`, also `<p>_<s>.geo.diff.npy` (wrapped phase, NaN no-data).
    pub fn write(&self, root: &Path, float_phase: bool) -> Result<()> {
        let a = &self.annotation;
        let files =
            InterferogramFiles::canonical(root, &a.frame_id, a.primary_date, a.secondary_date);
        let (diff, cc) = self.encode_pngs()?;
        crate::data::atomic::write_atomic(&files.phase, &diff)?;
        let cc_path = files
            .coherence
            .as_ref()
            .context("canonical names include coherence")?;
        crate::data::atomic::write_atomic(cc_path, &cc)?;
        if float_phase {
            let npy = files.phase.with_extension("npy");
            crate::data::atomic::write_atomic(&npy, &encode_phase_npy(&self.phase, &self.valid)?)?;
        }
        a.write_to(&root.join(crate::data::dataset::ANNOTATIONS))?;
        Ok(())
    }
}

/// What to keep from a real annotation when rendering to match it.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Use this caption instead of writing one.
    pub caption: Option<String>,
    /// Keep these flags as the annotation's (when the signal could not reproduce them).
    pub confidence: Option<f64>,
}

fn stage_rng(scene: &Scene, k: u64) -> ChaCha8Rng {
    let seed = match k {
        // A nuisance twin shares these with its scene.
        stage::EDGES | stage::CAPTION => scene.field_seed,
        _ => scene.nuisance_seed.unwrap_or(scene.field_seed),
    };
    stream_rng(seed, k)
}

/// A scaled source as measured: (scale, d_LOS in m, deformation mask, fringe count, intensity).
type Measured = (f64, Vec<f64>, Vec<bool>, f64, Intensity);

/// Scales a unit-strength LOS field to the target fringe count, then measures it. Returns
/// `None` when the pattern cannot be made visible on valid pixels.
fn scale_and_measure(
    src: &SceneSource,
    unit: &[f64],
    valid: &[bool],
    g: Geometry,
) -> Option<Measured> {
    let shape_rule = MaskRule {
        relative: 0.2,
        absolute_m: 0.0,
        closing_radius: 0,
    };
    let shape = deformation_mask(unit, Some(valid), g.width, g.height, &shape_rule);
    let (unit_fringes, _) = fringes_and_intensity(unit, &shape);
    if !(unit_fringes.is_finite() && unit_fringes > 0.0) {
        return None;
    }
    let mut k = src.target_fringes / unit_fringes;
    for _ in 0..6 {
        let d: Vec<f64> = unit.iter().map(|v| v * k).collect();
        let mask = deformation_mask(&d, Some(valid), g.width, g.height, &MaskRule::default());
        let (n, intensity) = fringes_and_intensity(&d, &mask);
        if n >= 1.0 && mask.iter().any(|&m| m) {
            return Some((k, d, mask, n, intensity));
        }
        k *= 1.3;
    }
    None
}

/// One polygon per pattern: the outline of its largest part when that holds most of the
/// mask, otherwise the convex hull of all its parts (a dyke's two lobes, an earthquake's
/// four), as an annotator draws one polygon around the whole pattern.
fn pattern_polygon(mask: &[bool], g: Geometry) -> Option<Polygon> {
    let opts = PolygonOptions::default();
    let polys = mask_polygons(mask, g.width, g.height, &opts);
    let total = mask.iter().filter(|&&m| m).count();
    if polys.is_empty() || total == 0 {
        return None;
    }
    if polys.len() == 1 {
        return polys.into_iter().next();
    }
    let raster = |p: &Polygon| {
        rasterize(g.height, g.width, [(1u8, p)])
            .data
            .iter()
            .zip(mask)
            .filter(|(&r, &m)| r != 0 && m)
            .count()
    };
    let (best, covered) = polys
        .iter()
        .map(|p| (p, raster(p)))
        .max_by_key(|(_, c)| *c)
        .expect("non-empty");
    if covered as f64 >= 0.9 * total as f64 {
        return Some(best.clone());
    }
    let points: Vec<(f64, f64)> = polys
        .iter()
        .flat_map(|p| p.vertices().collect::<Vec<_>>())
        .collect();
    let hull = convex_hull(&points);
    (hull.len() >= 3).then(|| Polygon::from_vertices(&hull))
}

/// Andrew's monotone chain (counter-clockwise, no collinear points).
fn convex_hull(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut p = points.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let cross = |o: (f64, f64), a: (f64, f64), b: (f64, f64)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut lower: Vec<(f64, f64)> = Vec::new();
    for &q in &p {
        while lower.len() >= 2 && cross(lower[lower.len() - 2], lower[lower.len() - 1], q) <= 0.0 {
            lower.pop();
        }
        lower.push(q);
    }
    let mut upper: Vec<(f64, f64)> = Vec::new();
    for &q in p.iter().rev() {
        while upper.len() >= 2 && cross(upper[upper.len() - 2], upper[upper.len() - 1], q) <= 0.0 {
            upper.pop();
        }
        upper.push(q);
    }
    lower.pop();
    upper.pop();
    lower.extend(upper);
    lower
}

/// Per-cell share of `flag` among valid pixels of the 3×3 grid.
fn cell_shares(flag: impl Fn(usize) -> bool, valid: &[bool], g: Geometry) -> [[f64; 3]; 3] {
    let mut hit = [[0usize; 3]; 3];
    let mut all = [[0usize; 3]; 3];
    for row in 0..g.height {
        let r = (row * 3 / g.height).min(2);
        for col in 0..g.width {
            let i = g.index(row, col);
            if !valid[i] {
                continue;
            }
            let c = (col * 3 / g.width).min(2);
            all[r][c] += 1;
            hit[r][c] += usize::from(flag(i));
        }
    }
    let mut out = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            out[r][c] = if all[r][c] > 0 {
                hit[r][c] as f64 / all[r][c] as f64
            } else {
                0.0
            };
        }
    }
    out
}

/// Per-cell robust peak-to-peak of a field (metres) over valid pixels.
fn cell_ptp(field: &Field, valid: &[bool]) -> [[f64; 3]; 3] {
    let g = field.geometry;
    let mut vals: Vec<Vec<f32>> = vec![Vec::new(); 9];
    for row in (0..g.height).step_by(2) {
        let r = (row * 3 / g.height).min(2);
        for col in (0..g.width).step_by(2) {
            let i = g.index(row, col);
            if valid[i] {
                vals[r * 3 + (col * 3 / g.width).min(2)].push(field.data[i]);
            }
        }
    }
    let mut out = [[0.0; 3]; 3];
    for (k, v) in vals.iter_mut().enumerate() {
        if v.len() < 8 {
            continue;
        }
        let n = v.len();
        let (lo, hi) = two_ranks(v, n / 50, n - 1 - n / 50);
        out[k / 3][k % 3] = f64::from(hi - lo);
    }
    out
}

fn cells_where(v: &[[f64; 3]; 3], keep: impl Fn(f64) -> bool) -> Vec<Cell> {
    let mut out = Vec::new();
    for (r, row) in v.iter().enumerate() {
        for (c, &x) in row.iter().enumerate() {
            if keep(x) {
                out.push((r, c));
            }
        }
    }
    out
}

/// The cells holding the strongest part of a field (≥ 70 % of the largest cell value).
fn strongest_cells(v: &[[f64; 3]; 3]) -> Vec<Cell> {
    let max = v.iter().flatten().copied().fold(0.0, f64::max);
    if max <= 0.0 {
        return Vec::new();
    }
    cells_where(v, |x| x >= 0.7 * max)
}

/// Renders `scene` into an interferogram and its annotation.
pub fn render_scene(
    scene: &Scene,
    caption_style: CaptionStyle,
    overrides: &Overrides,
) -> Result<Rendered> {
    let g = geometry(scene);
    let n = scene.nuisance.clone();
    let days = scene.baseline_days() as f64;
    let (heading, incidence) = (scene.frame.heading_deg, scene.frame.incidence_deg);
    let los = los_vector(heading, incidence);

    // 1. Terrain (fixed per frame) and the valid (land, in-frame) pixels.
    let frame = frame_terrain(scene);
    let terrain = &frame.terrain;
    let mut valid: Vec<bool> = terrain.water.iter().map(|&w| !w).collect();
    frame_edges(scene, g, &mut valid, &mut stage_rng(scene, stage::EDGES));

    // 2. Deformation, scaled and measured source by source.
    // Adaptive evaluation: exact wherever the field is not smooth at the 8-pixel scale
    // (sharp peaks of shallow sources, surface ruptures), interpolated elsewhere.
    let mut defo = vec![0.0f64; g.len()];
    let mut patterns: Vec<Pattern> = Vec::new();
    for src in &scene.sources {
        let unit_source = physics_source(&src.params);
        let unit = los_field_adaptive(&unit_source, g, los);
        let Some((k, d, mask, fringes, intensity)) = scale_and_measure(src, &unit, &valid, g)
        else {
            continue;
        };
        let Some(polygon) = pattern_polygon(&mask, g) else {
            continue;
        };
        for (a, b) in defo.iter_mut().zip(&d) {
            *a += b;
        }
        patterns.push(Pattern {
            activity: src.activity,
            source: physics_source(&src.params.scaled(k)),
            inflation: src.inflation,
            fringes,
            intensity,
            mask,
            polygon,
        });
    }

    // 3. Atmosphere, orbit, glacier (apparent LOS displacement, m).
    let strat = stratified(
        &terrain.elevation,
        Some(&valid),
        &StratifiedParams {
            spread_m_per_km: n.strat_spread_m_per_km,
            incidence_deg: incidence,
            ..StratifiedParams::default()
        },
        &mut stage_rng(scene, stage::STRATIFIED),
    );
    let turb = turbulent(g, n.turb_sigma_m, &mut stage_rng(scene, stage::TURBULENT));
    let atmospheric = atmospheric_fringes(&strat.field, &turb, Some(&valid));
    let ramp = if n.orbital_scale > 0.0 {
        let d = RampParams::default();
        Ramp::random(
            g,
            &RampParams {
                // Half the note's residual range: on 512-px (190 km) frames the full
                // range flagged orbital fringes in a quarter of the gallery (real: 0.7 %).
                max_gradient: 0.5 * d.max_gradient * n.orbital_scale,
                strong_gradient: d.strong_gradient * n.orbital_scale,
                ..d
            },
            &mut stage_rng(scene, stage::ORBITAL),
        )
        .field(g)
    } else {
        Field::zeros(g)
    };
    let orbital = orbital_fringes(&ramp, Some(&valid));
    let glacier = n.glacier.then(|| {
        glacier_motion(
            terrain,
            heading,
            incidence,
            days,
            &mut stage_rng(scene, stage::GLACIER),
        )
    });
    let glacier_flag = glacier.as_ref().map_or(0, glacier_fringes);

    let mut total = vec![0.0f32; g.len()];
    for (i, t) in total.iter_mut().enumerate() {
        let mut v = defo[i] as f32 + strat.field.data[i] + turb.data[i] + ramp.data[i];
        if let Some(gl) = &glacier {
            v += gl.displacement.data[i];
        }
        *t = v;
    }
    let to_phase = -(4.0 * std::f32::consts::PI / super::phase::WAVELENGTH_M as f32);
    let mut phase = Field {
        geometry: g,
        data: total.iter().map(|&d| d * to_phase).collect(),
    };

    // 5a. Processing errors add phase steps (and may remove data) before wrapping.
    let mut processing_error = 0;
    if n.processing_error != 0 {
        let mut rng = stage_rng(scene, stage::ERRORS);
        let err = if n.processing_error == 2 {
            burst_error(g, heading, &mut rng)
        } else {
            subswath_error(g, heading, &mut rng)
        };
        for (p, e) in phase.data.iter_mut().zip(&err.phase.data) {
            *p += e;
        }
        for (v, &m) in valid.iter_mut().zip(&err.missing) {
            *v &= !m;
        }
        processing_error = err.kind.code();
    }

    // 4. Coherence: land cover, baseline, terrain; dense deformation fringes decorrelate.
    let mut crng = stage_rng(scene, stage::COHERENCE);
    let cparams = CoherenceParams::random(days, heading, incidence, &mut crng);
    let mut gamma =
        super::coherence::coherence_map_with(terrain, &frame.radar, &cparams, &mut crng);
    let k = n.decorrelation as f32;
    for y in gamma.data.iter_mut() {
        *y = (1.0 - (1.0 - *y) * k).clamp(0.0, 0.98);
    }
    let dense = dense_fringes(&defo, g);
    let mut dense_in_defo = 0usize;
    let mut defo_pixels = 0usize;
    for i in 0..g.len() {
        if dense[i] > 0.0 {
            gamma.data[i] *= exp_approx(-dense[i]);
        }
        if patterns.iter().any(|p| p.mask[i]) && valid[i] {
            defo_pixels += 1;
            dense_in_defo += usize::from(dense[i] > 0.5);
        }
    }
    for (y, &ok) in gamma.data.iter_mut().zip(&valid) {
        if !ok {
            *y = 0.0;
        }
    }
    let noise = phase_noise(&gamma, LOOKS, &mut stage_rng(scene, stage::NOISE));
    let mut wrapped = add_phase_noise(&phase, &noise);
    if n.goldstein_alpha > 0.0 {
        wrapped = goldstein(
            &wrapped,
            Some(&noise.observed_coherence),
            Some(&valid),
            &GoldsteinParams {
                alpha: n.goldstein_alpha as f32,
                window: 32,
            },
        );
    }
    // 5b. Artifacts and corruption act on the finished product.
    let mut image_artifacts = 0;
    if n.artifacts {
        image_artifact(&mut wrapped, &mut stage_rng(scene, stage::ARTIFACTS));
        image_artifacts = 1;
    }
    let mut corrupted = 0;
    if n.corrupted {
        corrupt_frame(
            &mut wrapped,
            &mut valid,
            &mut stage_rng(scene, stage::ARTIFACTS),
        );
        corrupted = 1;
    }
    let low_coh = low_coherence(&gamma, &valid);
    let no_information = no_info(&gamma, &valid);

    // 6. Rendering.
    let diff_rgba = match scene.style {
        RenderStyle::Licsar2020 => render_licsar2020(&wrapped, &valid)?,
        RenderStyle::Gamma => {
            let amp = speckle(
                &frame.hillshade,
                80.0,
                &mut stage_rng(scene, stage::AMPLITUDE),
            );
            render_gamma(
                &wrapped,
                &valid,
                &GammaStyle {
                    amplitude: &amp,
                    coherence: Some(&noise.observed_coherence),
                    cc_min: 0.2,
                },
            )?
        }
    };
    let mut coherence = noise.observed_coherence;
    for (c, &ok) in coherence.data.iter_mut().zip(&valid) {
        if !ok {
            *c = 0.0;
        }
    }
    let cc_gray_alpha = render_coherence(&coherence, &valid)?;

    // Annotation.
    let volcanic: Vec<&Pattern> = patterns
        .iter()
        .filter(|p| p.activity != ActivityType::Earthquake)
        .collect();
    let quake = patterns
        .iter()
        .any(|p| p.activity == ActivityType::Earthquake);
    let mut label = Vec::new();
    if !volcanic.is_empty() {
        label.push(Label::Deformation);
    }
    if quake {
        label.push(Label::Earthquake);
    }
    if label.is_empty() {
        label.push(Label::NonDeformation);
    }
    let phase_label = if patterns.is_empty() {
        Phase::Rest
    } else if volcanic.is_empty() {
        Phase::None
    } else if volcanic.iter().any(|p| p.inflation) {
        Phase::Unrest
    } else {
        Phase::Rebound
    };
    let intensity_level: Vec<Intensity> = patterns
        .iter()
        .map(|p| {
            if p.activity == ActivityType::Earthquake {
                Intensity::None
            } else {
                p.intensity
            }
        })
        .collect();
    let noise_share = cell_shares(|i| gamma.data[i] < LOW_COHERENCE, &valid, g);
    let noise_in_deformation = defo_pixels > 0 && dense_in_defo as f64 >= 0.05 * defo_pixels as f64;
    let facts = CaptionFacts {
        corrupted: corrupted == 1,
        no_info: no_information && patterns.is_empty(),
        processing_error,
        glacier: glacier_flag > 0,
        orbital,
        artifacts: image_artifacts == 1,
        atmospheric,
        low_coherence: low_coh,
        patterns: patterns
            .iter()
            .zip(&intensity_level)
            .map(|(p, &i)| PatternFact {
                activity: p.activity,
                intensity: i,
                centroid: centroid(&p.mask, g),
            })
            .collect(),
        noise_cells: cells_where(&noise_share, |s| s >= 0.4),
        turbulence_cells: strongest_cells(&cell_ptp(&turb, &valid)),
        stratified_cells: strongest_cells(&cell_ptp(&strat.field, &valid)),
        noise_in_deformation,
        baseline_days: scene.baseline_days(),
    };
    let caption_text = match &overrides.caption {
        Some(c) => c.clone(),
        None => caption(&facts, caption_style, &mut stage_rng(scene, stage::CAPTION)),
    };
    let confidence = overrides.confidence.unwrap_or_else(|| {
        if patterns.is_empty() {
            0.8
        } else {
            // Harder to see → less sure: weak patterns under strong atmosphere, noisy or
            // erroneous frames each cost 0.1 (Hephaestus: 0.8 for most, down to 0.5).
            let weak = patterns.iter().any(|p| p.fringes < 2.0) && atmospheric >= 2;
            let cost =
                u8::from(weak) + u8::from(low_coh) + u8::from(processing_error != 0 || orbital);
            (0.8 - 0.1 * f64::from(cost)).max(0.5)
        }
    });
    let annotation = Annotation {
        unique_id: scene.unique_id,
        frame_id: scene.frame.frame_id.clone(),
        primary_date: scene.primary,
        secondary_date: scene.secondary,
        corrupted,
        processing_error,
        glacier_fringes: glacier_flag,
        orbital_fringes: u8::from(orbital),
        atmospheric_fringes: atmospheric,
        low_coherence: u8::from(low_coh),
        no_info: u8::from(no_information),
        image_artifacts,
        label,
        activity_type: patterns.iter().map(|p| p.activity).collect(),
        intensity_level,
        phase: phase_label,
        confidence: (confidence * 10.0).round() / 10.0,
        segmentation_mask: patterns.iter().map(|p| p.polygon.clone()).collect(),
        is_crowd: u8::from(patterns.len() > 1),
        caption: caption_text,
    };
    Ok(Rendered {
        scene: scene.clone(),
        annotation,
        patterns,
        diff_rgba,
        cc_gray_alpha,
        phase: wrapped,
        coherence,
        valid,
    })
}

/// Decorrelation strength from dense deformation fringes: 0 where the deformation phase
/// gradient is below [`DENSE_FRINGE_RAD_PER_PX`], growing above it.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn dense_fringes(defo_m: &[f64], g: Geometry) -> Vec<f32> {
    let k = (4.0 * std::f64::consts::PI / super::phase::WAVELENGTH_M) as f32;
    let mut out = vec![0.0f32; g.len()];
    if g.width < 2 || g.height < 2 {
        return out;
    }
    for row in 0..g.height {
        for col in 0..g.width {
            let i = g.index(row, col);
            let (c0, c1) = (col.saturating_sub(1), (col + 1).min(g.width - 1));
            let (r0, r1) = (row.saturating_sub(1), (row + 1).min(g.height - 1));
            let gx =
                (defo_m[g.index(row, c1)] - defo_m[g.index(row, c0)]) as f32 / (c1 - c0) as f32;
            let gy =
                (defo_m[g.index(r1, col)] - defo_m[g.index(r0, col)]) as f32 / (r1 - r0) as f32;
            // sqrt, not hypot: the gradients are far from overflow and hypot is a libm call.
            let grad = k * (gx * gx + gy * gy).sqrt();
            if grad > DENSE_FRINGE_RAD_PER_PX {
                out[i] = (grad / DENSE_FRINGE_RAD_PER_PX - 1.0) * 2.0;
            }
        }
    }
    out
}

/// Centroid of a mask as fractions of the frame (x right, y down); the centre when empty.
fn centroid(mask: &[bool], g: Geometry) -> (f64, f64) {
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0usize);
    for row in 0..g.height {
        for col in 0..g.width {
            if mask[g.index(row, col)] {
                sx += col as f64 + 0.5;
                sy += row as f64 + 0.5;
                n += 1;
            }
        }
    }
    if n == 0 {
        return (0.5, 0.5);
    }
    (
        sx / n as f64 / g.width as f64,
        sy / n as f64 / g.height as f64,
    )
}

/// LiCSAR frames are parallelograms tilted by the heading: 40 % of the crops show a straight
/// no-data border across a corner or side.
fn frame_edges(scene: &Scene, g: Geometry, valid: &mut [bool], rng: &mut ChaCha8Rng) {
    if !rng.random_bool(0.4) {
        return;
    }
    let tilt = (scene.frame.heading_deg.rem_euclid(180.0)).to_radians();
    // Border direction along track (heading), on the left or right side of the frame;
    // or across track near the top or bottom.
    let along = rng.random_bool(0.6);
    let (dx, dy) = if along {
        (tilt.sin(), -tilt.cos())
    } else {
        (tilt.cos(), tilt.sin())
    };
    let depth = rng.random_range(0.04..0.2);
    let side = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    // Normal of the border line, pointing out of the frame.
    let (nx, ny) = (-dy * side, dx * side);
    let (cx, cy) = (g.width as f64 / 2.0, g.height as f64 / 2.0);
    let half_extent = (nx.abs() * cx + ny.abs() * cy).max(1.0);
    let limit = half_extent * (1.0 - 2.0 * depth);
    for row in 0..g.height {
        for col in 0..g.width {
            let d = (col as f64 + 0.5 - cx) * nx + (row as f64 + 0.5 - cy) * ny;
            if d > limit {
                valid[g.index(row, col)] = false;
            }
        }
    }
    let _ = rng.next_u32();
}

/// How [`generate_dataset`] writes.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    pub seed: u64,
    /// Also write the float wrapped phase (`.geo.diff.npy`).
    pub float_phase: bool,
    pub caption_style: CaptionStyle,
}

/// What [`generate_dataset`] made.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DatasetReport {
    pub frames: usize,
    pub deformation: usize,
    /// Interferograms per activity type.
    pub activity_types: std::collections::BTreeMap<String, usize>,
    pub intensities: std::collections::BTreeMap<String, usize>,
    /// `--from-annotations`: renders whose measured labels equal the real ones
    /// (label vector and number of patterns) / whose flags all equal the real ones.
    pub labels_matched: usize,
    pub flags_matched: usize,
    pub seconds: f64,
}

impl DatasetReport {
    fn add(&mut self, a: &Annotation) {
        self.frames += 1;
        self.deformation += usize::from(a.is_deformation());
        for t in a.activity_set() {
            *self.activity_types.entry(t.to_string()).or_default() += 1;
        }
        for i in a.intensity_set() {
            *self.intensities.entry(i.to_string()).or_default() += 1;
        }
    }
}

/// Renders `count` scenes of `config` (sample indices `0..count`) in parallel and writes
/// them under `out` in the Hephaestus layout. Sample `i` depends only on `(seed, i)`, so
/// the bytes are the same whatever the thread count. `tick` is called once per frame.
pub fn generate_dataset(
    config: &super::scene::SceneConfig,
    count: usize,
    out: &Path,
    options: &DatasetOptions,
    tick: &(dyn Fn() + Sync),
) -> Result<DatasetReport> {
    use rayon::prelude::*;
    if let Err(e) = config.check() {
        anyhow::bail!("{e}");
    }
    let start = std::time::Instant::now();
    let annotations: Vec<Annotation> = (0..count)
        .into_par_iter()
        .map(|i| -> Result<Annotation> {
            let scene = config.scene(options.seed, i as u64);
            let r = render_scene(&scene, options.caption_style, &Overrides::default())
                .with_context(|| format!("rendering sample {i}"))?;
            r.write(out, options.float_phase)
                .with_context(|| format!("writing sample {i} to {}", out.display()))?;
            tick();
            Ok(r.annotation)
        })
        .collect::<Result<_>>()?;
    let mut report = DatasetReport::default();
    for a in &annotations {
        report.add(a);
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Attempts per real annotation before keeping the closest render.
const MATCH_ATTEMPTS: u64 = 6;

/// The flags of an annotation, for comparing renders with real annotations.
fn flags(a: &Annotation) -> [u8; 8] {
    [
        a.corrupted,
        a.processing_error,
        u8::from(a.glacier_fringes > 0),
        a.orbital_fringes,
        a.atmospheric_fringes,
        a.low_coherence,
        a.no_info,
        a.image_artifacts,
    ]
}

/// Whether a render reproduces the real annotation's labels: same label vector, same
/// number of patterns, same phase.
pub fn labels_match(real: &Annotation, made: &Annotation) -> bool {
    real.label_vector() == made.label_vector()
        && real.deformations().len() == made.deformations().len()
        && (real.phase == made.phase || !real.is_deformation())
}

/// `--from-annotations`: renders one interferogram per real annotation whose labels
/// (types, intensities, number of polygons, phase) and flags match it, keeping its uniqueID,
/// frame ID, dates and real caption. Each annotation gets up to [`MATCH_ATTEMPTS`] scenes;
/// the first full match (else the closest) is written with the *measured* labels and
/// polygons, so the annotation always describes the image.
pub fn generate_from_annotations(
    config: &super::scene::SceneConfig,
    real: &[Annotation],
    out: &Path,
    options: &DatasetOptions,
    tick: &(dyn Fn() + Sync),
) -> Result<DatasetReport> {
    use rayon::prelude::*;
    if let Err(e) = config.check() {
        anyhow::bail!("{e}");
    }
    let start = std::time::Instant::now();
    let results: Vec<(Annotation, bool, bool)> = real
        .par_iter()
        .enumerate()
        .map(|(i, a)| -> Result<(Annotation, bool, bool)> {
            let overrides = Overrides {
                caption: Some(a.caption.clone()),
                confidence: Some(a.confidence),
            };
            let mut best: Option<(u32, Rendered)> = None;
            for attempt in 0..MATCH_ATTEMPTS {
                let scene =
                    super::scene::scene_for_annotation(config, options.seed, i as u64, attempt, a);
                let r = render_scene(&scene, options.caption_style, &overrides)
                    .with_context(|| format!("rendering uniqueID {}", a.unique_id))?;
                let lab = labels_match(a, &r.annotation);
                let fl = flags(a) == flags(&r.annotation);
                let score = 2 * u32::from(lab) + u32::from(fl);
                if best.as_ref().is_none_or(|(s, _)| score > *s) {
                    best = Some((score, r));
                }
                if lab && fl {
                    break;
                }
            }
            let (score, r) = best.expect("at least one attempt");
            r.write(out, options.float_phase).with_context(|| {
                format!("writing uniqueID {} to {}", a.unique_id, out.display())
            })?;
            tick();
            Ok((r.annotation, score >= 2, score % 2 == 1))
        })
        .collect::<Result<_>>()?;
    let mut report = DatasetReport::default();
    for (a, lab, fl) in &results {
        report.add(a);
        report.labels_matched += usize::from(*lab);
        report.flags_matched += usize::from(*fl);
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn okada(depth: f64, dip: f64, width: f64, slip: f64, opening: f64) -> Source {
        Source::Okada(OkadaParams {
            e: 1500.0,
            n: -2500.0,
            depth,
            strike: 33.0,
            dip,
            rake: -80.0,
            length: 12_000.0,
            width,
            slip,
            opening,
        })
    }

    /// The adaptive field equals the exact one within the tolerance everywhere, including
    /// surface ruptures (discontinuous), shallow peaks and sources off the frame, and the
    /// labels measured from it (mask, fringes) are the same.
    #[test]
    fn adaptive_field_matches_the_exact_field() {
        let sources = [
            // A dyke reaching the surface (top edge at 0 m): a discontinuity across the trace.
            okada(2500.0, 85.0, 5000.0 / 85f64.to_radians().sin(), 0.0, 0.5),
            // A shallow normal fault and a sill.
            okada(3000.0, 50.0, 6000.0, 1.0, 0.0),
            okada(1500.0, 2.0, 6000.0, 0.0, 0.5),
            Source::Mogi(MogiParams {
                e: -9000.0,
                n: 4000.0,
                depth: 2000.0,
                dv: 1e6,
            }),
            Source::Penny(PennyParams {
                e: 0.0,
                n: 0.0,
                depth: 1000.0,
                radius: 4000.0,
                pressure_over_mu: 1e-3,
            }),
            Source::Spheroid(SpheroidParams {
                e: 3000.0,
                n: 2000.0,
                depth: 6000.0,
                semi_major: 2500.0,
                aspect_ratio: 0.4,
                pressure_over_mu: 1e-3,
                mu: 3e10,
                plunge: 40.0,
                trend: 120.0,
            }),
            // Far outside the frame: only a gentle gradient is left.
            Source::Mogi(MogiParams {
                e: 60_000.0,
                n: 0.0,
                depth: 5000.0,
                dv: 1e7,
            }),
        ];
        let los = los_vector(-12.0, 37.0);
        for (g, src) in [
            Geometry::new(224, 224, 370.0),
            Geometry::new(101, 67, 370.0),
        ]
        .iter()
        .flat_map(|g| sources.iter().map(move |s| (*g, s)))
        {
            let exact = los_field(src, g, los, 1);
            let fast = los_field_adaptive(src, g, los);
            let peak = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let worst = exact
                .iter()
                .zip(&fast)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                worst <= ADAPTIVE_TOLERANCE * peak,
                "{} on {}×{}: misfit {worst:e} of peak {peak:e}",
                src.name(),
                g.width,
                g.height
            );
            // Scaled to 6 fringes, the labels agree.
            let k = 6.0 * crate::synth::phase::FRINGE_M / peak;
            let (e, f): (Vec<f64>, Vec<f64>) = (
                exact.iter().map(|v| v * k).collect(),
                fast.iter().map(|v| v * k).collect(),
            );
            let rule = MaskRule::default();
            let (me, mf) = (
                deformation_mask(&e, None, g.width, g.height, &rule),
                deformation_mask(&f, None, g.width, g.height, &rule),
            );
            let differ = me.iter().zip(&mf).filter(|(a, b)| a != b).count();
            let area = me.iter().filter(|&&m| m).count();
            assert!(
                differ <= 5.max(area / 100),
                "{}: {differ} of {area} mask pixels differ",
                src.name()
            );
            let (ne, nf) = (
                fringes_and_intensity(&e, &me).0,
                fringes_and_intensity(&f, &mf).0,
            );
            assert!(
                (ne - nf).abs() < 0.01,
                "{}: fringes {ne} vs {nf}",
                src.name()
            );
        }
    }

    #[test]
    fn grid_nodes_end_on_the_last_pixel() {
        assert_eq!(grid_nodes(9, 4), vec![0, 4, 8]);
        assert_eq!(grid_nodes(10, 4), vec![0, 4, 8, 9]);
        assert_eq!(grid_nodes(3, 1), vec![0, 1, 2]);
    }
}
