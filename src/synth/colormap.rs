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
    ((x * 16.0).round() as i64).rem_euclid(16) as usize
}

/// Centre phase of GAMMA colour `index`, wrapped to (−π, π].
pub fn gamma_phase(index: usize) -> f32 {
    super::coherence::wrap(-PI + index as f32 * TAU / 16.0)
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

#[cfg(test)]
mod tests {
    use super::*;

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
            let d = super::super::coherence::wrap(back - phi).abs();
            assert!(d <= 0.5 * bin + 1e-5, "{phi} → {back}");
        }
        // All 16 colours are distinct.
        for (i, a) in GAMMA_RAINBOW.iter().enumerate() {
            assert!(GAMMA_RAINBOW[..i].iter().all(|b| b != a));
        }
    }
}
