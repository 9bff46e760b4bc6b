//! Phase, wrapping, fringe counts, intensity labels and deformation masks (docs/architecture.md §2.2,
//! notes §3).
//!
//! - Phase with the LiCSAR/GAMMA sign: `φ = −(4π/λ)·d_LOS` (positive phase = range increase),
//!   λ = 0.055465763 m (Sentinel-1 C band); one fringe (2π) is λ/2 = 27.73 mm of LOS.
//! - Wrapping to (−π, π]: `w(x) = x − 2π·ceil((x − π)/2π)`.
//! - Intensity by complete cycles: `N = floor(ptp(d_LOS inside the mask)/(λ/2))`;
//!   Low N ≤ 1, Medium N ∈ {2, 3}, High N ≥ 4 (a deformation sample needs N ≥ 1).
//! - Mask: `|d_LOS| ≥ max(0.2·max|d_LOS|, λ/8)` on valid pixels, then a morphological closing
//!   with a disk; [`mask_polygons`] turns it into annotation polygons (outer boundaries in
//!   frame pixel coordinates, flat `[x0, y0, x1, y1, ...]`, x = column) that the data engine's
//!   rasteriser (`data::raster`) fills back to nearly the same pixels.

use std::f64::consts::PI;

use crate::data::annotation::{Intensity, Polygon};
use crate::data::raster::rasterize;

/// Sentinel-1 C-band radar wavelength (m).
pub const WAVELENGTH_M: f64 = 0.055465763;
/// LOS displacement of one fringe (one 2π cycle of phase), λ/2 (m).
pub const FRINGE_M: f64 = WAVELENGTH_M / 2.0;

/// Interferometric phase (rad, unwrapped) of a LOS displacement (m), LiCSAR sign.
pub fn phase_from_los(d_los: f64) -> f64 {
    -4.0 * PI / WAVELENGTH_M * d_los
}

/// LOS displacement (m) of an unwrapped phase (rad); inverse of [`phase_from_los`].
pub fn los_from_phase(phase: f64) -> f64 {
    -phase * WAVELENGTH_M / (4.0 * PI)
}

/// Wraps a phase to (−π, π] with `x − 2π·ceil((x − π)/2π)`. Non-finite input stays NaN.
pub fn wrap(x: f64) -> f64 {
    let two_pi = 2.0 * PI;
    let mut w = x - two_pi * ((x - PI) / two_pi).ceil();
    // Rounding in the product can land a hair outside the interval.
    if w <= -PI {
        w += two_pi;
    } else if w > PI {
        w -= two_pi;
    }
    w
}

/// Wrapped phase of a LOS displacement: `wrap(−4π/λ·d_LOS)`.
pub fn wrapped_phase(d_los: f64) -> f64 {
    wrap(phase_from_los(d_los))
}

/// Number of fringes (possibly fractional) in a LOS peak-to-peak range (m).
pub fn fringe_count(ptp_m: f64) -> f64 {
    ptp_m / FRINGE_M
}

/// Intensity label from a fringe count by the complete-cycles rule: N = floor(n);
/// Low N ≤ 1, Medium N ∈ {2, 3}, High N ≥ 4.
pub fn intensity_for_fringes(fringes: f64) -> Intensity {
    let complete = fringes.floor();
    if complete >= 4.0 {
        Intensity::High
    } else if complete >= 2.0 {
        Intensity::Medium
    } else {
        Intensity::Low
    }
}

/// Peak-to-peak LOS (m) over the pixels where `mask` is set (0 when the mask is empty).
pub fn peak_to_peak_in_mask(d_los: &[f64], mask: &[bool]) -> f64 {
    assert_eq!(d_los.len(), mask.len(), "d_los and mask differ in length");
    let (lo, hi) = d_los
        .iter()
        .zip(mask)
        .filter(|(_, &m)| m)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (&v, _)| {
            (lo.min(v), hi.max(v))
        });
    if hi >= lo {
        hi - lo
    } else {
        0.0
    }
}

/// Fringe count and intensity of a deformation's LOS field inside its mask.
pub fn fringes_and_intensity(d_los: &[f64], mask: &[bool]) -> (f64, Intensity) {
    let n = fringe_count(peak_to_peak_in_mask(d_los, mask));
    (n, intensity_for_fringes(n))
}

/// Parameters of the deformation-mask rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskRule {
    /// Fraction of the largest |d_LOS| (over valid pixels) a pixel must reach (0.2).
    pub relative: f64,
    /// Absolute floor on the threshold, metres (λ/8 ≈ 6.9 mm).
    pub absolute_m: f64,
    /// Radius in pixels of the disk used for the morphological closing (0 = no closing).
    pub closing_radius: usize,
}

impl Default for MaskRule {
    fn default() -> Self {
        Self {
            relative: 0.2,
            absolute_m: WAVELENGTH_M / 8.0,
            closing_radius: 2,
        }
    }
}

/// Deformation mask (row-major, `width × height`): `|d_LOS| ≥ max(relative·max|d_LOS|,
/// absolute)` on valid pixels (`valid = None`: all), then closed with a disk of
/// `closing_radius` (pixels outside the frame count as set for the erosion, so the closing
/// never eats into a mask that touches the frame edge). The closing may take in small
/// invalid (decorrelated) gaps enclosed by the signal, as a hand-drawn polygon would.
pub fn deformation_mask(
    d_los: &[f64],
    valid: Option<&[bool]>,
    width: usize,
    height: usize,
    rule: &MaskRule,
) -> Vec<bool> {
    assert_eq!(d_los.len(), width * height, "d_los is not width × height");
    if let Some(v) = valid {
        assert_eq!(v.len(), d_los.len(), "valid is not width × height");
    }
    let is_valid = |i: usize| valid.is_none_or(|v| v[i]);
    let peak = (0..d_los.len())
        .filter(|&i| is_valid(i) && d_los[i].is_finite())
        .map(|i| d_los[i].abs())
        .fold(0.0f64, f64::max);
    let threshold = (rule.relative * peak).max(rule.absolute_m);
    let mask: Vec<bool> = (0..d_los.len())
        .map(|i| is_valid(i) && d_los[i].abs() >= threshold)
        .collect();
    close(&mask, width, height, rule.closing_radius)
}

/// Half-widths of the rows of a disk of radius `r` (pixels with dx² + dy² ≤ r² + r, a
/// round-looking disk): entry `dy + r` is the largest `dx` of row `dy`.
fn disk_rows(r: usize) -> Vec<usize> {
    let r = r as isize;
    (-r..=r)
        .map(|dy| {
            let mut w = 0;
            while (w + 1) * (w + 1) + dy * dy <= r * r + r {
                w += 1;
            }
            w as usize
        })
        .collect()
}

/// Dilation (`dilate`) or erosion with the disk given by [`disk_rows`]. Pixels outside the
/// frame count as background for the dilation and as foreground for the erosion. Row
/// prefix counts make each output pixel cost one lookup per disk row.
fn morph(mask: &[bool], width: usize, height: usize, rows: &[usize], dilate: bool) -> Vec<bool> {
    let r = rows.len() / 2;
    // prefix[y·(width+1) + x] = set pixels of row y before column x.
    let mut prefix = vec![0u32; height * (width + 1)];
    for y in 0..height {
        let p = &mut prefix[y * (width + 1)..(y + 1) * (width + 1)];
        for (x, &m) in mask[y * width..(y + 1) * width].iter().enumerate() {
            p[x + 1] = p[x] + u32::from(m);
        }
    }
    // Summed-area table (sat[y·(width+1) + x] = set pixels above row y and left of column
    // x): a disk whose bounding box is empty (dilation) or full (erosion) needs no row
    // walk — most of a frame is far from a pattern's edge.
    let mut sat = vec![0u32; (height + 1) * (width + 1)];
    for y in 0..height {
        for x in 0..=width {
            sat[(y + 1) * (width + 1) + x] = sat[y * (width + 1) + x] + prefix[y * (width + 1) + x];
        }
    }
    let mut out = vec![false; mask.len()];
    for y in 0..height {
        let (y0, y1) = (y.saturating_sub(r), (y + r + 1).min(height));
        for x in 0..width {
            let (x0, x1) = (x.saturating_sub(r), (x + r + 1).min(width));
            let set = sat[y1 * (width + 1) + x1] + sat[y0 * (width + 1) + x0]
                - sat[y0 * (width + 1) + x1]
                - sat[y1 * (width + 1) + x0];
            if dilate && set == 0 {
                continue; // stays false
            }
            if !dilate && set as usize == (y1 - y0) * (x1 - x0) {
                out[y * width + x] = true;
                continue;
            }
            let mut hit = !dilate;
            for (k, &w) in rows.iter().enumerate() {
                let yy = y as isize + k as isize - r as isize;
                if yy < 0 || yy >= height as isize {
                    continue; // background for the dilation, foreground for the erosion
                }
                let (x0, x1) = (x.saturating_sub(w), (x + w + 1).min(width));
                let base = yy as usize * (width + 1);
                let count = prefix[base + x1] - prefix[base + x0];
                if dilate {
                    if count > 0 {
                        hit = true;
                        break;
                    }
                } else if count as usize != x1 - x0 {
                    hit = false;
                    break;
                }
            }
            out[y * width + x] = hit;
        }
    }
    out
}

/// Morphological closing (dilation, then erosion) with a disk of radius `radius`.
pub fn close(mask: &[bool], width: usize, height: usize, radius: usize) -> Vec<bool> {
    if radius == 0 {
        return mask.to_vec();
    }
    let se = disk_rows(radius);
    let dilated = morph(mask, width, height, &se, true);
    morph(&dilated, width, height, &se, false)
}

/// How [`mask_polygons`] turns a mask into polygons.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolygonOptions {
    /// Connected parts (8-connected) smaller than this many pixels are dropped as specks.
    pub min_area: usize,
    /// Douglas–Peucker tolerance in pixels for simplifying the traced boundary (0 = keep
    /// every boundary pixel).
    pub tolerance: f64,
}

impl Default for PolygonOptions {
    fn default() -> Self {
        Self {
            min_area: 8,
            tolerance: 0.75,
        }
    }
}

/// Clockwise 8-neighbourhood in image coordinates (y down), starting west.
const DIRS: [(isize, isize); 8] = [
    (-1, 0),
    (-1, -1),
    (0, -1),
    (1, -1),
    (1, 0),
    (1, 1),
    (0, 1),
    (-1, 1),
];

fn dir_index(dx: isize, dy: isize) -> usize {
    DIRS.iter()
        .position(|&d| d == (dx, dy))
        .expect("neighbour offset")
}

/// Labels 8-connected components of `mask` (0 = background, 1.. in raster-scan order of
/// each component's first pixel); returns the labels and each component's pixel count.
pub fn label_components(mask: &[bool], width: usize, height: usize) -> (Vec<u32>, Vec<usize>) {
    let mut labels = vec![0u32; mask.len()];
    let mut areas = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        let label = areas.len() as u32 + 1;
        let mut area = 0;
        labels[start] = label;
        stack.push(start);
        while let Some(i) = stack.pop() {
            area += 1;
            let (x, y) = ((i % width) as isize, (i / width) as isize);
            for (dx, dy) in DIRS {
                let (xx, yy) = (x + dx, y + dy);
                if xx < 0 || yy < 0 || xx >= width as isize || yy >= height as isize {
                    continue;
                }
                let j = yy as usize * width + xx as usize;
                if mask[j] && labels[j] == 0 {
                    labels[j] = label;
                    stack.push(j);
                }
            }
        }
        areas.push(area);
    }
    (labels, areas)
}

/// Outer boundary of the component `label` that contains pixel `start` (its first pixel in
/// raster order), traced clockwise through boundary pixel centres (Moore neighbourhood).
fn trace_boundary(
    labels: &[u32],
    width: usize,
    height: usize,
    start: usize,
    label: u32,
) -> Vec<(isize, isize)> {
    let inside = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && x < width as isize
            && y < height as isize
            && labels[y as usize * width + x as usize] == label
    };
    let s = ((start % width) as isize, (start / width) as isize);
    let mut contour = vec![s];
    let mut cur = s;
    // The pixel west of the first pixel in raster order is background.
    let mut back = 0usize;
    let mut first_move: Option<usize> = None;
    let limit = 4 * labels.len() + 16;
    for _ in 0..limit {
        let mut found = None;
        for k in 1..=8 {
            let d = (back + k) % 8;
            let (x, y) = (cur.0 + DIRS[d].0, cur.1 + DIRS[d].1);
            if inside(x, y) {
                found = Some(d);
                break;
            }
        }
        let Some(d) = found else {
            break; // an isolated pixel
        };
        if cur == s {
            match first_move {
                None => first_move = Some(d),
                Some(f) if f == d => break,
                Some(_) => {} // a junction through the start pixel: keep tracing
            }
        }
        let next = (cur.0 + DIRS[d].0, cur.1 + DIRS[d].1);
        // The last background neighbour examined, seen from `next`.
        let prev = DIRS[(d + 7) % 8];
        back = dir_index(cur.0 + prev.0 - next.0, cur.1 + prev.1 - next.1);
        cur = next;
        contour.push(cur);
    }
    // The ring closes on the start pixel; keep it once.
    if contour.len() > 1 && contour.last() == Some(&s) {
        contour.pop();
    }
    contour
}

/// Perpendicular distance of `p` from the segment `a`–`b`.
fn segment_distance(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    if len2 == 0.0 {
        return (p.0 - a.0).hypot(p.1 - a.1);
    }
    let t = (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0);
    (p.0 - a.0 - t * dx).hypot(p.1 - a.1 - t * dy)
}

fn douglas_peucker(points: &[(f64, f64)], tol: f64, keep: &mut [bool]) {
    let mut stack = vec![(0usize, points.len() - 1)];
    while let Some((i, j)) = stack.pop() {
        if j <= i + 1 {
            continue;
        }
        let (mut worst, mut at) = (-1.0, i);
        for k in i + 1..j {
            let d = segment_distance(points[k], points[i], points[j]);
            if d > worst {
                worst = d;
                at = k;
            }
        }
        if worst > tol {
            keep[at] = true;
            stack.push((i, at));
            stack.push((at, j));
        }
    }
}

/// Simplifies a closed ring with Douglas–Peucker (split at the point farthest from the first).
fn simplify_ring(ring: &[(isize, isize)], tol: f64) -> Vec<(f64, f64)> {
    let pts: Vec<(f64, f64)> = ring.iter().map(|&(x, y)| (x as f64, y as f64)).collect();
    if tol <= 0.0 || pts.len() <= 4 {
        return pts;
    }
    let far = (1..pts.len())
        .max_by(|&a, &b| {
            let da = (pts[a].0 - pts[0].0).hypot(pts[a].1 - pts[0].1);
            let db = (pts[b].0 - pts[0].0).hypot(pts[b].1 - pts[0].1);
            da.total_cmp(&db).then(b.cmp(&a))
        })
        .unwrap();
    let mut closed = pts.clone();
    closed.push(pts[0]);
    let mut keep = vec![false; closed.len()];
    keep[0] = true;
    keep[far] = true;
    douglas_peucker(&closed[..=far], tol, &mut keep[..=far]);
    douglas_peucker(&closed[far..], tol, &mut keep[far..]);
    let out: Vec<(f64, f64)> = pts
        .iter()
        .zip(&keep)
        .filter(|(_, &k)| k)
        .map(|(&p, _)| p)
        .collect();
    if out.len() >= 3 {
        out
    } else {
        pts
    }
}

/// Polygons (frame pixel coordinates, x = column, y = row) outlining the parts of `mask`:
/// one polygon per 8-connected part of at least `min_area` pixels, in raster order of each
/// part's first pixel. Each polygon is the part's outer boundary through boundary pixel
/// centres, so holes inside a part are filled; rasterising the polygons with
/// `data::raster` gives back the mask up to the simplification tolerance.
pub fn mask_polygons(
    mask: &[bool],
    width: usize,
    height: usize,
    opts: &PolygonOptions,
) -> Vec<Polygon> {
    assert_eq!(mask.len(), width * height, "mask is not width × height");
    let (labels, areas) = label_components(mask, width, height);
    let mut seen = vec![false; areas.len()];
    let mut polygons = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        if l == 0 || seen[l as usize - 1] {
            continue;
        }
        seen[l as usize - 1] = true;
        if areas[l as usize - 1] < opts.min_area.max(1) {
            continue;
        }
        let ring = trace_boundary(&labels, width, height, i, l);
        let vertices = simplify_ring(&ring, opts.tolerance);
        if vertices.len() >= 3 {
            polygons.push(Polygon::from_vertices(&vertices));
        }
    }
    polygons
}

/// Rasterises polygons back to a boolean mask with the data engine's rasteriser (what a
/// training mask made from the annotation will contain).
pub fn polygons_to_mask(polygons: &[Polygon], width: usize, height: usize) -> Vec<bool> {
    let raster = rasterize(height, width, polygons.iter().map(|p| (1u8, p)));
    raster.data.iter().map(|&v| v != 0).collect()
}

/// Intersection over union of two masks (1 when both are empty).
pub fn iou(a: &[bool], b: &[bool]) -> f64 {
    assert_eq!(a.len(), b.len(), "masks differ in size");
    let inter = a.iter().zip(b).filter(|(&x, &y)| x && y).count();
    let union = a.iter().zip(b).filter(|(&x, &y)| x || y).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::grid::Geometry;
    use crate::synth::los::{los_vector, project};
    use crate::synth::sources::{displacement, MogiParams, OkadaParams, Source};

    /// Closing by brute force over the disk's offsets (the definition).
    fn close_reference(mask: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
        let ri = r as isize;
        let mut se = Vec::new();
        for dy in -ri..=ri {
            for dx in -ri..=ri {
                if dx * dx + dy * dy <= ri * ri + ri {
                    se.push((dx, dy));
                }
            }
        }
        let pass = |m: &[bool], dilate: bool| -> Vec<bool> {
            let mut out = vec![false; m.len()];
            for y in 0..h as isize {
                for x in 0..w as isize {
                    let hit = |&(dx, dy): &(isize, isize)| {
                        let (xx, yy) = (x + dx, y + dy);
                        if xx < 0 || yy < 0 || xx >= w as isize || yy >= h as isize {
                            !dilate
                        } else {
                            m[(yy * w as isize + xx) as usize]
                        }
                    };
                    out[(y * w as isize + x) as usize] = if dilate {
                        se.iter().any(hit)
                    } else {
                        se.iter().all(hit)
                    };
                }
            }
            out
        };
        pass(&pass(mask, true), false)
    }

    #[test]
    fn closing_equals_the_brute_force_definition() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (w, h, density) in [(37, 23, 0.1), (16, 40, 0.4), (50, 50, 0.02), (9, 9, 0.7)] {
            let mask: Vec<bool> = (0..w * h).map(|_| rng.random_bool(density)).collect();
            for r in 0..=3 {
                assert_eq!(
                    close(&mask, w, h, r),
                    close_reference(&mask, w, h, r),
                    "{w}×{h} density {density} radius {r}"
                );
            }
        }
        // A disk of radius 2 has rows of half-widths 1, 2, 2, 2, 1 (r² + r = 6).
        assert_eq!(disk_rows(2), vec![1, 2, 2, 2, 1]);
    }

    #[test]
    fn wrap_edge_cases() {
        assert_eq!(wrap(PI), PI);
        assert_eq!(wrap(-PI), PI);
        assert_eq!(wrap(0.0), 0.0);
        for k in -5..=5 {
            let x = 2.0 * PI * k as f64;
            assert!(wrap(x).abs() < 1e-12, "wrap(2π·{k}) = {}", wrap(x));
            // Odd multiples of π land on +π (up to rounding, on the circle).
            let odd = wrap(PI + x);
            assert!((odd - PI).abs() < 1e-12 || (odd + PI).abs() < 1e-12);
            assert!(odd > -PI && odd <= PI);
        }
        for x in [3.0 * PI, -3.0 * PI, 5.0 * PI] {
            let w = wrap(x);
            assert!(
                w > -PI && w <= PI && (w.abs() - PI).abs() < 1e-12,
                "{x} → {w}"
            );
        }
        // Just past the ends.
        let e = 1e-9;
        assert!((wrap(PI + e) + PI - e).abs() < 1e-12);
        assert!((wrap(-PI - e) - PI + e).abs() < 1e-12);
        assert!((wrap(-PI + e) + PI - e).abs() < 1e-12);
        // Always in (−π, π] and equal on the circle.
        let mut x = -100.0;
        while x < 100.0 {
            let w = wrap(x);
            assert!(w > -PI && w <= PI);
            assert!((w.sin() - x.sin()).abs() < 1e-12 && (w.cos() - x.cos()).abs() < 1e-12);
            x += 0.377;
        }
        assert!(wrap(f64::NAN).is_nan());
    }

    #[test]
    fn phase_sign_and_fringe_size() {
        // Motion toward the satellite decreases the phase (LiCSAR); one fringe is λ/2.
        assert!(phase_from_los(0.01) < 0.0);
        assert!((phase_from_los(-FRINGE_M) - 2.0 * PI).abs() < 1e-12);
        assert!((FRINGE_M - 0.027_732_881_5).abs() < 1e-10);
        assert!((los_from_phase(phase_from_los(0.123)) - 0.123).abs() < 1e-15);
        assert!((wrapped_phase(FRINGE_M * 3.0)).abs() < 1e-9);
        assert!((fringe_count(0.0554657630) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn intensity_uses_complete_cycles() {
        assert_eq!(intensity_for_fringes(0.4), Intensity::Low);
        assert_eq!(intensity_for_fringes(1.0), Intensity::Low);
        assert_eq!(intensity_for_fringes(1.99), Intensity::Low);
        assert_eq!(intensity_for_fringes(2.0), Intensity::Medium);
        assert_eq!(intensity_for_fringes(3.99), Intensity::Medium);
        assert_eq!(intensity_for_fringes(4.0), Intensity::High);
        assert_eq!(intensity_for_fringes(17.3), Intensity::High);
        let d = [0.0, 0.02, -0.06, 0.5];
        let m = [true, true, true, false];
        let (n, i) = fringes_and_intensity(&d, &m);
        assert!((n - 0.08 / FRINGE_M).abs() < 1e-12);
        assert_eq!(i, Intensity::Medium);
        assert_eq!(peak_to_peak_in_mask(&d, &[false; 4]), 0.0);
    }

    #[test]
    fn mask_rule_thresholds_and_closes() {
        let (w, h) = (14, 5);
        let mut d = vec![0.0; w * h];
        // A 5×3 block at 0.1 m with a one-pixel dip inside; a weak pixel at 5 mm.
        for y in 1..4 {
            for x in 2..7 {
                d[y * w + x] = 0.1;
            }
        }
        d[2 * w + 4] = 0.01; // below 0.2·0.1 → hole, closed by the closing
        d[4 * w + 12] = 0.005; // below λ/8, far from the block → never set
        let m = deformation_mask(&d, None, w, h, &MaskRule::default());
        assert!(m[2 * w + 4], "closing fills the one-pixel hole");
        assert!(!m[4 * w + 12]);
        let open = deformation_mask(
            &d,
            None,
            w,
            h,
            &MaskRule {
                closing_radius: 0,
                ..MaskRule::default()
            },
        );
        assert!(!open[2 * w + 4]);
        assert_eq!(open.iter().filter(|&&v| v).count(), 14);
        // Invalid pixels are never thresholded in, and do not set the peak.
        let mut valid = vec![true; w * h];
        valid[w + 2] = false;
        d[w * h - 1] = 10.0;
        valid[w * h - 1] = false;
        let m = deformation_mask(
            &d,
            Some(&valid),
            w,
            h,
            &MaskRule {
                closing_radius: 0,
                ..MaskRule::default()
            },
        );
        assert!(!m[w + 2] && !m[w * h - 1] && m[w + 3]);
        // A mask that touches the frame edge keeps its edge pixels after closing.
        let full = vec![1.0; w * h];
        assert!(deformation_mask(&full, None, w, h, &MaskRule::default())
            .iter()
            .all(|&v| v));
    }

    fn blob_masks() -> Vec<(String, Vec<bool>, usize, usize)> {
        let g = Geometry::new(224, 224, 370.0);
        let (e, n) = g.surface_points();
        let los = los_vector(-12.0, 39.0);
        let sources = vec![
            (
                "mogi",
                Source::Mogi(MogiParams {
                    e: 2000.0,
                    n: -5000.0,
                    depth: 4000.0,
                    dv: 6e6,
                }),
            ),
            (
                "dyke",
                Source::Okada(OkadaParams {
                    e: -3000.0,
                    n: 4000.0,
                    depth: 2500.0,
                    strike: 20.0,
                    dip: 85.0,
                    rake: 0.0,
                    length: 9000.0,
                    width: 4000.0,
                    slip: 0.0,
                    opening: 0.8,
                }),
            ),
            (
                "strike-slip",
                Source::Okada(OkadaParams {
                    e: 0.0,
                    n: 0.0,
                    depth: 6000.0,
                    strike: 135.0,
                    dip: 80.0,
                    rake: 0.0,
                    length: 25000.0,
                    width: 10000.0,
                    slip: 1.5,
                    opening: 0.0,
                }),
            ),
            (
                "thrust",
                Source::Okada(OkadaParams {
                    e: 10000.0,
                    n: 8000.0,
                    depth: 7000.0,
                    strike: 300.0,
                    dip: 30.0,
                    rake: 90.0,
                    length: 20000.0,
                    width: 12000.0,
                    slip: 1.0,
                    opening: 0.0,
                }),
            ),
        ];
        let mut out = Vec::new();
        for (name, s) in sources {
            let d = project(&displacement(&s, 0.25, &e, &n), los);
            // Sprinkle invalid (decorrelated) pixels like a coherence mask would.
            let valid: Vec<bool> = (0..d.len()).map(|i| (i * 7919) % 23 != 0).collect();
            let m = deformation_mask(&d, Some(&valid), g.width, g.height, &MaskRule::default());
            out.push((name.to_string(), m, g.width, g.height));
        }
        out
    }

    #[test]
    fn polygons_rasterise_back_to_the_mask() {
        for (name, mask, w, h) in blob_masks() {
            let area = mask.iter().filter(|&&v| v).count();
            assert!(area > 100, "{name}: mask of {area} px");
            let polys = mask_polygons(&mask, w, h, &PolygonOptions::default());
            assert!(!polys.is_empty(), "{name}");
            let back = polygons_to_mask(&polys, w, h);
            let score = iou(&mask, &back);
            assert!(
                score >= 0.9,
                "{name}: IoU {score:.3} with {} polygons",
                polys.len()
            );
            let exact = mask_polygons(
                &mask,
                w,
                h,
                &PolygonOptions {
                    tolerance: 0.0,
                    ..Default::default()
                },
            );
            let exact_score = iou(&mask, &polygons_to_mask(&exact, w, h));
            assert!(
                exact_score >= 0.97,
                "{name}: unsimplified IoU {exact_score:.3}"
            );
            // Simplification keeps the vertex count moderate.
            let verts: usize = polys.iter().map(|p| p.num_vertices()).sum();
            let exact_verts: usize = exact.iter().map(|p| p.num_vertices()).sum();
            assert!(verts < exact_verts, "{name}: {verts} vs {exact_verts}");
        }
    }

    #[test]
    fn specks_are_dropped_and_holes_filled() {
        let (w, h) = (20, 12);
        let mut m = vec![false; w * h];
        // A 6×6 ring (hole in the middle) and a 2-pixel speck.
        for y in 2..8 {
            for x in 2..8 {
                m[y * w + x] = !(4..6).contains(&x) || !(4..6).contains(&y);
            }
        }
        m[10 * w + 15] = true;
        m[10 * w + 16] = true;
        let polys = mask_polygons(
            &m,
            w,
            h,
            &PolygonOptions {
                min_area: 3,
                tolerance: 0.0,
            },
        );
        assert_eq!(polys.len(), 1);
        let back = polygons_to_mask(&polys, w, h);
        for y in 2..8 {
            for x in 2..8 {
                assert!(back[y * w + x], "({x},{y}) should be filled");
            }
        }
        assert_eq!(back.iter().filter(|&&v| v).count(), 36);
        // Exactly the square: the ring's outer boundary is a 4-vertex rectangle after
        // simplification.
        let simple = mask_polygons(&m, w, h, &PolygonOptions::default());
        assert_eq!(simple[0].num_vertices(), 4, "{:?}", simple[0]);
        assert_eq!(polygons_to_mask(&simple, w, h), back);
        // Diagonal (8-connected) shapes and single-pixel-wide arms trace without looping.
        let mut diag = vec![false; w * h];
        for k in 0..8 {
            diag[(k + 2) * w + k + 3] = true;
            diag[(k + 2) * w + k + 4] = true;
        }
        let polys = mask_polygons(
            &diag,
            w,
            h,
            &PolygonOptions {
                min_area: 1,
                tolerance: 0.0,
            },
        );
        assert_eq!(polys.len(), 1);
        assert_eq!(polygons_to_mask(&polys, w, h), diag);
        assert!(mask_polygons(&vec![false; w * h], w, h, &PolygonOptions::default()).is_empty());
    }
}
