//! The two LiCSAR preview palettes (notes/synth-physics.md §7).
//!
//! - [`rdylbu_r`]: matplotlib/ColorBrewer **RdYlBu_r**, which LiCSAR's GMT `pha.cpt`
//!   matches within 10/255, as matplotlib's 256-entry lookup table (linear interpolation
//!   of the 11 ColorBrewer anchors at `i/255`, rounded to 8 bits). Phase `φ ∈ [−π, π]`
//!   maps to `x = (φ + π)/2π` and entry `min(floor(256·x), 255)`.
//! - [`GAMMA_RAINBOW`]: the GAMMA standard rainbow of LiCSBAS `cmap_insar`, 16
//!   piecewise-constant colours, colour `k` centred on `x = k/16` (the first straddles the
//!   wrap): index `round(16·x) mod 16`.

use std::f32::consts::{PI, TAU};
use std::sync::OnceLock;

/// Wraps to (−π, π] with `x − 2π·ceil((x − π)/2π)` (docs/architecture.md §2.2).
pub fn wrap(x: f32) -> f32 {
    let w = x - TAU * ((x - PI) / TAU).ceil();
    // Guard rounding at the boundary: the interval is half-open at −π.
    if w <= -PI {
        w + TAU
    } else {
        w
    }
}

/// ColorBrewer RdYlBu (11 classes), red → blue; RdYlBu_r is this list reversed.
const RDYLBU: [[u8; 3]; 11] = [
    [165, 0, 38],
    [215, 48, 39],
    [244, 109, 67],
    [253, 174, 97],
    [254, 224, 144],
    [255, 255, 191],
    [224, 243, 248],
    [171, 217, 233],
    [116, 173, 209],
    [69, 117, 180],
    [49, 54, 149],
];

/// The GAMMA standard rainbow (LiCSBAS `cmap_insar`), 16 colours for x = 0/16 … 15/16.
pub const GAMMA_RAINBOW: [[u8; 3]; 16] = [
    [255, 156, 153],
    [255, 193, 116],
    [255, 231, 78],
    [240, 255, 69],
    [203, 255, 106],
    [165, 255, 144],
    [127, 255, 182],
    [90, 255, 219],
    [55, 255, 255],
    [92, 217, 255],
    [130, 179, 255],
    [167, 142, 255],
    [205, 104, 255],
    [243, 66, 255],
    [255, 80, 229],
    [255, 118, 191],
];

/// The 256-entry RdYlBu_r table (dark blue at −π, pale yellow at 0, dark red at +π).
pub fn rdylbu_r() -> &'static [[u8; 3]; 256] {
    static LUT: OnceLock<[[u8; 3]; 256]> = OnceLock::new();
    LUT.get_or_init(|| {
        let mut lut = [[0u8; 3]; 256];
        for (i, entry) in lut.iter_mut().enumerate() {
            let x = i as f64 / 255.0 * 10.0; // position among the 11 anchors
            let k = (x.floor() as usize).min(9);
            let t = x - k as f64;
            // Reversed: anchor j of RdYlBu_r is RDYLBU[10 - j].
            let a = RDYLBU[10 - k];
            let b = RDYLBU[10 - (k + 1)];
            for ch in 0..3 {
                let v = a[ch] as f64 * (1.0 - t) + b[ch] as f64 * t;
                entry[ch] = v.round() as u8;
            }
        }
        lut
    })
}

/// Normalised position `x = (φ + π)/2π` of a phase, clamped to [0, 1].
#[inline]
fn position(phase: f32) -> f32 {
    ((phase + PI) / TAU).clamp(0.0, 1.0)
}

/// RdYlBu_r table index of a phase in [−π, π] (values outside are clamped; NaN → 0).
#[inline]
pub fn rdylbu_index(phase: f32) -> usize {
    let x = position(phase);
    if x.is_nan() {
        return 0;
    }
    ((x * 256.0) as usize).min(255)
}

/// RdYlBu_r colour of a phase in [−π, π].
#[inline]
pub fn rdylbu_color(phase: f32) -> [u8; 3] {
    rdylbu_r()[rdylbu_index(phase)]
}

/// Centre phase of RdYlBu_r entry `index` (the inverse of [`rdylbu_index`] within a bin).
pub fn rdylbu_phase(index: usize) -> f32 {
    -PI + (index as f32 + 0.5) * TAU / 256.0
}

/// GAMMA rainbow colour index of a phase (any value; the wheel is cyclic).
#[inline]
pub fn gamma_index(phase: f32) -> usize {
    let x = (phase + PI) / TAU;
    if !x.is_finite() {
        return 0;
    }
    (round_half_away(x * 16.0) as i64).rem_euclid(16) as usize
}

/// `x.round()` (halves away from zero) without a libm call — the x86-64 baseline has no
/// rounding instruction, and `roundf` was 1.5 % of the generator's time in the per-pixel
/// colour code. Same value as `round` for every `x` (up to the sign of a zero result).
#[inline]
pub(crate) fn round_half_away(x: f32) -> f32 {
    // Beyond 2^23 every float is an integer; NaN and ±∞ take the same path.
    if x.is_nan() || x.abs() >= 8_388_608.0 {
        return x.round();
    }
    let t = x as i32; // toward zero
                      // Exact: |f| < 1, same sign as x. Branch-free below: the fractions are random, so
                      // branches would be mispredicted.
    let f = x - t as f32;
    (t + i32::from(f >= 0.5) - i32::from(f <= -0.5)) as f32
}

/// Centre phase of GAMMA colour `index`, wrapped to (−π, π].
pub fn gamma_phase(index: usize) -> f32 {
    wrap(-PI + index as f32 * TAU / 16.0)
}

/// Index of the table entry nearest to `rgb` (squared RGB distance; first on ties).
pub fn nearest(table: &[[u8; 3]], rgb: [u8; 3]) -> usize {
    let d = |c: &[u8; 3]| -> i32 { (0..3).map(|k| (c[k] as i32 - rgb[k] as i32).pow(2)).sum() };
    let mut best = 0;
    let mut best_d = i32::MAX;
    for (i, c) in table.iter().enumerate() {
        let dc = d(c);
        if dc < best_d {
            best = i;
            best_d = dc;
        }
    }
    best
}

/// The palette a LiCSAR phase preview was drawn with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Palette {
    /// RdYlBu_r over [−π, π] (LiCSAR after October 2020).
    RdYlBuR,
    /// The GAMMA rainbow times an amplitude brightness (LiCSAR before October 2020).
    Gamma,
}

/// GAMMA pixels whose channels differ by less than this carry no phase: GAMMA draws
/// low-coherence pixels as gray backscatter, and very dark pixels have no usable hue.
/// (RdYlBu_r has near-gray entries of its own, so there the misfit decides.)
const GRAY_SPREAD: u8 = 16;

/// RdYlBu_r pixels farther than this (squared RGB distance) from every table entry carry
/// no phase (gray, black, foreign colours).
const RDYLBU_MAX_MISFIT: f32 = 40.0 * 40.0;

/// Pixels sampled to choose the palette of an image.
const PALETTE_SAMPLE: usize = 4096;

/// Best phase and squared RGB misfit of `rgb` under `palette`. GAMMA colours are scaled by
/// an unknown brightness `b ∈ [0, 1]`, fitted per entry by least squares.
fn fit_color(palette: Palette, rgb: [u8; 3]) -> (f32, f32) {
    let p = rgb.map(f32::from);
    match palette {
        Palette::RdYlBuR => {
            let lut = rdylbu_r();
            let i = nearest(lut, rgb);
            let d: f32 = (0..3).map(|k| (p[k] - f32::from(lut[i][k])).powi(2)).sum();
            (rdylbu_phase(i), d)
        }
        Palette::Gamma => {
            let mut best = (0.0, f32::INFINITY);
            for (k, c) in GAMMA_RAINBOW.iter().enumerate() {
                let c = c.map(f32::from);
                let cc: f32 = c.iter().map(|v| v * v).sum();
                let b = ((0..3).map(|j| p[j] * c[j]).sum::<f32>() / cc).clamp(0.0, 1.0);
                let d: f32 = (0..3).map(|j| (p[j] - b * c[j]).powi(2)).sum();
                if d < best.1 {
                    best = (gamma_phase(k), d);
                }
            }
            best
        }
    }
}

fn has_hue(rgb: [u8; 3]) -> bool {
    let (lo, hi) = (rgb.iter().min(), rgb.iter().max());
    matches!((lo, hi), (Some(&lo), Some(&hi)) if hi - lo >= GRAY_SPREAD)
}

/// The wrapped phase behind a LiCSAR phase preview, read back from its colours: the
/// inverse of [`rdylbu_color`] and of the GAMMA rendering (hue only; the amplitude
/// brightness is fitted away). The palette is chosen per image as the one that explains
/// its colours best. Returns the palette and the phase per pixel, NaN where `valid` is
/// false or the pixel carries no phase (GAMMA: gray or near-black; RdYlBu_r: far from
/// every table entry). `rgb` is interleaved, 3 bytes per
/// pixel. Resolution: 1/256 cycle (RdYlBu_r) or 1/16 cycle (GAMMA).
pub fn decode_preview(rgb: &[u8], valid: &[bool]) -> (Palette, Vec<f32>) {
    let rgb: Vec<[u8; 3]> = rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
    let usable: Vec<usize> = (0..rgb.len())
        .filter(|&i| valid[i] && has_hue(rgb[i]))
        .collect();
    let step = usable.len().div_ceil(PALETTE_SAMPLE).max(1);
    let misfit = |palette| -> f64 {
        usable
            .iter()
            .step_by(step)
            .map(|&i| f64::from(fit_color(palette, rgb[i]).1))
            .sum()
    };
    let palette = if misfit(Palette::Gamma) < misfit(Palette::RdYlBuR) {
        Palette::Gamma
    } else {
        Palette::RdYlBuR
    };
    // Previews use few distinct colours (256, or 16 hues × brightness levels): memoise.
    let mut memo: std::collections::HashMap<[u8; 3], (f32, f32)> = std::collections::HashMap::new();
    let mut phase = vec![f32::NAN; rgb.len()];
    for (i, &c) in rgb.iter().enumerate() {
        if !valid[i] || (palette == Palette::Gamma && !has_hue(c)) {
            continue;
        }
        let &mut (phi, misfit) = memo.entry(c).or_insert_with(|| fit_color(palette, c));
        if palette == Palette::Gamma || misfit <= RDYLBU_MAX_MISFIT {
            phase[i] = phi;
        }
    }
    (palette, phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_away_matches_round() {
        let mut xs = vec![
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            254.5,
            255.49998,
            0.49999997,
            -0.49999997,
            8_388_607.5,
            8_388_608.0,
            -8_388_607.5,
            1e10,
            -1e10,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        // A sweep through the colour range at sub-ulp-of-a-half resolution, and bit patterns.
        xs.extend((0..=600_000).map(|k| k as f32 * (256.0 / 600_000.0) - 0.5));
        let mut state = 0x9E37_79B9_u32;
        xs.extend((0..200_000).map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            f32::from_bits(state)
        }));
        for x in xs {
            let (got, want) = (round_half_away(x), x.round());
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "{x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn rdylbu_r_endpoints_and_anchors() {
        let lut = rdylbu_r();
        assert_eq!(lut[0], [49, 54, 149]);
        assert_eq!(lut[255], [165, 0, 38]);
        // Matplotlib's table: entry 51 is x = 0.2 exactly, the 3rd anchor (116, 173, 209).
        assert_eq!(lut[51], [116, 173, 209]);
        assert_eq!(lut[204], [244, 109, 67]);
        // Pale yellow straddles φ = 0 (x = 0.5, halfway between entries 127 and 128).
        assert_eq!(rdylbu_color(0.0), lut[128]);
        for c in [lut[127], lut[128]] {
            assert!(c[0] >= 250 && c[1] >= 250 && c[2] >= 185, "{c:?}");
        }
        assert_eq!(rdylbu_color(-PI), [49, 54, 149]);
        assert_eq!(rdylbu_color(PI), [165, 0, 38]);
        assert_eq!(rdylbu_color(-10.0), [49, 54, 149]);
        assert_eq!(rdylbu_index(f32::NAN), 0);
    }

    #[test]
    fn rdylbu_round_trip_within_a_bin() {
        let lut = rdylbu_r();
        let bin = TAU / 256.0;
        let mut worst = 0.0f32;
        for k in 0..=4000 {
            let phi = -PI + TAU * k as f32 / 4000.0;
            let back = rdylbu_phase(nearest(lut, rdylbu_color(phi)));
            worst = worst.max((back - phi).abs());
        }
        // Rounding makes a few neighbouring entries identical; the nearest colour then
        // names the first of them, still within 1.5 bins.
        assert!(worst <= 1.5 * bin + 1e-5, "worst {worst} vs bin {bin}");
        let distinct = (1..256).filter(|&i| lut[i] != lut[i - 1]).count();
        assert!(distinct >= 250, "{distinct}");
    }

    #[test]
    fn gamma_rainbow_bins_and_round_trip() {
        assert_eq!(gamma_index(-PI), 0);
        assert_eq!(gamma_index(PI), 0); // the first colour straddles the wrap
        assert_eq!(gamma_index(0.0), 8); // x = 1/2
        assert_eq!(GAMMA_RAINBOW[gamma_index(0.0)], [55, 255, 255]);
        // Bin edges at (k + 1/2)/16.
        let edge = -PI + 0.5 * TAU / 16.0;
        assert_eq!(gamma_index(edge - 1e-3), 0);
        assert_eq!(gamma_index(edge + 1e-3), 1);
        // Cyclic.
        assert_eq!(gamma_index(1.0), gamma_index(1.0 + TAU));
        let bin = TAU / 16.0;
        for k in 0..1000 {
            let phi = -PI + TAU * (k as f32 + 0.5) / 1000.0;
            let back = gamma_phase(nearest(&GAMMA_RAINBOW, GAMMA_RAINBOW[gamma_index(phi)]));
            let d = super::wrap(back - phi).abs();
            assert!(d <= 0.5 * bin + 1e-5, "{phi} → {back}");
        }
        // All 16 colours are distinct.
        for (i, a) in GAMMA_RAINBOW.iter().enumerate() {
            assert!(GAMMA_RAINBOW[..i].iter().all(|b| b != a));
        }
    }

    /// Renders `phase` with both palettes (GAMMA at a varying brightness) and reads it back.
    #[test]
    fn previews_decode_back_to_their_phase() {
        let n = 2000;
        let phases: Vec<f32> = (0..n)
            .map(|k| -PI + TAU * (k as f32 + 0.5) / n as f32)
            .collect();
        let valid = vec![true; n];
        let rdylbu: Vec<u8> = phases.iter().flat_map(|&p| rdylbu_color(p)).collect();
        let (palette, back) = decode_preview(&rdylbu, &valid);
        assert_eq!(palette, Palette::RdYlBuR);
        for (p, b) in phases.iter().zip(&back) {
            assert!(super::wrap(b - p).abs() <= 1.5 * TAU / 256.0 + 1e-5);
        }
        let gamma: Vec<u8> = phases
            .iter()
            .enumerate()
            .flat_map(|(k, &p)| {
                let v = 0.35 + 0.65 * ((k * 37) % 100) as f32 / 100.0;
                GAMMA_RAINBOW[gamma_index(p)].map(|c| (c as f32 * v).round() as u8)
            })
            .collect();
        let (palette, back) = decode_preview(&gamma, &valid);
        assert_eq!(palette, Palette::Gamma);
        for (p, b) in phases.iter().zip(&back) {
            let d = super::wrap(b - p).abs();
            assert!(d <= 0.5 * TAU / 16.0 + 1e-4, "{p} → {b}");
        }
    }

    #[test]
    fn gray_dark_and_invalid_pixels_have_no_phase() {
        let rgb = [120, 120, 120, 5, 9, 3, 49, 54, 149, 49, 54, 149];
        let (palette, phase) = decode_preview(&rgb, &[true, true, true, false]);
        assert_eq!(palette, Palette::RdYlBuR);
        assert!(phase[0].is_nan() && phase[1].is_nan() && phase[3].is_nan());
        assert!((phase[2] - rdylbu_phase(0)).abs() < 1e-6);
        let (_, none) = decode_preview(&[], &[]);
        assert!(none.is_empty());
    }
}
