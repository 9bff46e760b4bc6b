//! Goldstein–Werner adaptive interferogram filter (Goldstein & Werner 1998; GAMMA `adf`,
//! which LiCSAR runs before its previews: α = 1, window 32).
//!
//! The complex interferogram `m·e^{iφ}` is cut into overlapping `window × window` patches
//! (step `window/2`). Each patch's spectrum `S` is multiplied by `H = |S̃|^α`, where `S̃` is
//! `|S|` smoothed by a 3×3 box (circularly in frequency) and `H` is scaled to unit RMS so
//! every patch blends with comparable weight. The filtered patches are inverse transformed
//! and blended with separable triangular weights (which sum to a constant for a step of
//! half the window, so no seams); the output phase is the argument of the blend.
//! Invalid pixels enter with zero magnitude and come out unchanged.

use rustfft::num_complex::Complex32;

use super::atmosphere::with_planner;
use super::fastmath::{atan2_approx, pow_approx_slice, sin_cos_approx};
use super::grid::Field;

/// Filter settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GoldsteinParams {
    /// Filter exponent α (0 = no filtering, LiCSAR 1.0; typical 0.5–1).
    pub alpha: f32,
    /// Patch size (power of two ≥ 8 recommended; LiCSAR/GAMMA 32).
    pub window: usize,
}

impl Default for GoldsteinParams {
    fn default() -> Self {
        Self {
            alpha: 1.0,
            window: 32,
        }
    }
}

/// Patch origins along an axis of length `n`: every `step` from `−step` (patches hang
/// over the borders, zero-filled outside, so every pixel lies in the inner half of some
/// patch and circular wrap-around in a patch never dominates at the image edges) until the
/// inner half of a patch reaches the end.
fn origins(n: usize, window: usize, step: usize) -> Vec<isize> {
    let mut v = Vec::new();
    let mut o = -(step as isize);
    loop {
        v.push(o);
        if o + (3 * window / 4) as isize >= n as isize {
            break;
        }
        o += step as isize;
    }
    v
}

/// Filters the wrapped phase `phase` (radians) with magnitude `magnitude` (e.g. the
/// observed coherence or amplitude; `None` = 1), skipping pixels where `valid` is false.
/// Returns the filtered wrapped phase in (−π, π]. Frames smaller than the window are
/// filtered with the largest power-of-two window that fits (unchanged below 4 pixels).
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub fn goldstein(
    phase: &Field,
    magnitude: Option<&Field>,
    valid: Option<&[bool]>,
    params: &GoldsteinParams,
) -> Field {
    let g = phase.geometry;
    let (w, h) = (g.width, g.height);
    let mut window = params.window.max(4);
    let min_side = w.min(h);
    if window > min_side {
        window = 1 << (usize::BITS - 1 - min_side.max(1).leading_zeros());
    }
    if window < 4 || params.alpha == 0.0 {
        return phase.clone();
    }
    let step = window / 2;
    let n = window * window;
    // Input complex interferogram.
    // Input complex interferogram, one plain loop over slices so it vectorises.
    let mut z = vec![Complex32::new(0.0, 0.0); g.len()];
    for (i, (zi, &p)) in z.iter_mut().zip(&phase.data).enumerate() {
        let ok = valid.is_none_or(|v| v[i]);
        let m = magnitude.map_or(1.0, |m| m.data[i].max(0.0));
        let m = if ok { m } else { 0.0 };
        let (sin, cos) = sin_cos_approx(p);
        *zi = Complex32::new(m * cos, m * sin);
    }
    // Triangular blending weights, strictly positive so every pixel is covered.
    let tri: Vec<f32> = (0..window)
        .map(|k| {
            let x = (k as f32 + 0.5) / window as f32;
            1.0 - (2.0 * x - 1.0).abs()
        })
        .collect();
    let mut acc = vec![Complex32::new(0.0, 0.0); g.len()];
    let rows = origins(h, window, step);
    let cols = origins(w, window, step);
    let (fwd, inv) = with_planner(|p| (p.plan_fft_forward(window), p.plan_fft_inverse(window)));
    let mut scratch = vec![
        Complex32::new(0.0, 0.0);
        fwd.get_inplace_scratch_len()
            .max(inv.get_inplace_scratch_len())
    ];
    let mut patch = vec![Complex32::new(0.0, 0.0); n];
    let mut tmp = vec![Complex32::new(0.0, 0.0); n];
    let mut mag = vec![0.0f32; n];
    let mut smooth = vec![0.0f32; n];
    let mut tmp_re = vec![0.0f32; n];
    // 2-D transforms with one transpose each way: the forward transform leaves the
    // spectrum transposed in `tmp` (the weighting is the same either way: the 3×3 box is
    // symmetric), and the inverse transform starts from that layout and ends in `patch`'s.
    let transform =
        |from: &mut [Complex32], to: &mut [Complex32], scratch: &mut [Complex32], inverse: bool| {
            let plan = if inverse { &inv } else { &fwd };
            plan.process_with_scratch(from, scratch);
            for r in 0..window {
                for c in 0..window {
                    to[c * window + r] = from[r * window + c];
                }
            }
            plan.process_with_scratch(to, scratch);
        };
    for &r0 in &rows {
        for &c0 in &cols {
            let mut energy = 0.0f32;
            // Columns of the patch inside the image.
            let ca = (-c0).max(0) as usize;
            let cb = (w as isize - c0).min(window as isize) as usize;
            for r in 0..window {
                let dst = &mut patch[r * window..(r + 1) * window];
                dst.fill(Complex32::new(0.0, 0.0));
                let rr = r0 + r as isize;
                if rr < 0 || rr >= h as isize || ca >= cb {
                    continue;
                }
                let base = rr as usize * w;
                let src =
                    &z[base + (c0 + ca as isize) as usize..base + (c0 + cb as isize) as usize];
                dst[ca..cb].copy_from_slice(src);
                energy += src.iter().map(|v| v.norm_sqr()).sum::<f32>();
            }
            if energy == 0.0 {
                continue;
            }
            transform(&mut patch, &mut tmp, &mut scratch, false);
            for (m, v) in mag.iter_mut().zip(&tmp) {
                *m = v.norm_sqr().sqrt();
            }
            // 3×3 circular box smoothing of |S|, separably: circular row sums of 3,
            // then circular column sums of 3.
            for r in 0..window {
                let m = &mag[r * window..(r + 1) * window];
                let h = &mut tmp_re[r * window..(r + 1) * window];
                h[0] = m[window - 1] + m[0] + m[1];
                for (o, t) in h[1..window - 1].iter_mut().zip(m.windows(3)) {
                    *o = t[0] + t[1] + t[2];
                }
                h[window - 1] = m[window - 2] + m[window - 1] + m[0];
            }
            for r in 0..window {
                let up = &tmp_re[((r + window - 1) % window) * window..][..window];
                let mid = &tmp_re[r * window..][..window];
                let down = &tmp_re[((r + 1) % window) * window..][..window];
                let out = &mut smooth[r * window..(r + 1) * window];
                for (o, ((a, b), c)) in out.iter_mut().zip(up.iter().zip(mid).zip(down)) {
                    *o = (a + b + c) / 9.0;
                }
            }
            let mut sumsq = 0.0f32;
            if params.alpha == 1.0 {
                sumsq = smooth.iter().map(|s| s * s).sum();
            } else if params.alpha == 0.5 {
                for s in smooth.iter_mut() {
                    *s = s.sqrt();
                    sumsq += *s * *s;
                }
            } else {
                pow_approx_slice(&mut smooth, params.alpha);
                sumsq = smooth.iter().map(|s| s * s).sum();
            }
            let norm = if sumsq > 0.0 {
                (n as f32 / sumsq).sqrt()
            } else {
                0.0
            };
            for (v, s) in tmp.iter_mut().zip(&smooth) {
                *v *= s * norm;
            }
            transform(&mut tmp, &mut patch, &mut scratch, true);
            let scale = 1.0 / n as f32;
            for r in 0..window {
                let rr = r0 + r as isize;
                if rr < 0 || rr >= h as isize || ca >= cb {
                    continue;
                }
                let wr = tri[r] * scale;
                let base = rr as usize * w;
                let dst = &mut acc
                    [base + (c0 + ca as isize) as usize..base + (c0 + cb as isize) as usize];
                for ((d, v), wc) in dst
                    .iter_mut()
                    .zip(&patch[r * window + ca..r * window + cb])
                    .zip(&tri[ca..cb])
                {
                    *d += v * (wr * wc);
                }
            }
        }
    }
    // Arguments of every pixel in one pass that vectorises; [−π, π] → (−π, π] (−π is π,
    // what `wrap` would do).
    let args: Vec<f32> = acc
        .iter()
        .map(|a| {
            let arg = atan2_approx(a.im, a.re);
            if arg <= -std::f32::consts::PI {
                std::f32::consts::PI
            } else {
                arg
            }
        })
        .collect();
    let mut out = phase.clone();
    for (i, ((o, a), arg)) in out.data.iter_mut().zip(&acc).zip(args).enumerate() {
        if valid.is_none_or(|v| v[i]) && a.norm_sqr() > 0.0 {
            *o = arg;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::coherence::{add_phase_noise, constant, phase_noise, wrap};
    use crate::synth::grid::Geometry;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn circ_rms(a: &Field, b: &Field) -> f64 {
        let s: f64 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| (wrap(x - y) as f64).powi(2))
            .sum();
        (s / a.data.len() as f64).sqrt()
    }

    fn fringes(g: Geometry, period_px: f32) -> Field {
        let mut f = Field::zeros(g);
        for r in 0..g.height {
            for c in 0..g.width {
                f.data[g.index(r, c)] =
                    wrap(std::f32::consts::TAU * (c as f32 * 0.8 + r as f32 * 0.6) / period_px);
            }
        }
        f
    }

    #[test]
    fn origins_cover_the_axis() {
        assert_eq!(origins(32, 32, 16), vec![-16, 0, 16]);
        assert_eq!(origins(64, 32, 16), vec![-16, 0, 16, 32, 48]);
        assert_eq!(origins(70, 32, 16), vec![-16, 0, 16, 32, 48]);
        assert_eq!(origins(8, 8, 4), vec![-4, 0, 4]);
        // Every pixel sits in the inner half of some patch.
        for n in [9usize, 32, 70, 224] {
            let o = origins(n, 32, 16);
            for p in 0..n as isize {
                assert!(o.iter().any(|&s| p >= s + 8 && p < s + 24), "{n} {p}");
            }
        }
    }

    /// A clean fringe pattern (a single spectral peak) passes unchanged; noise shrinks.
    #[test]
    fn keeps_clean_fringes_and_removes_noise() {
        let g = Geometry::new(100, 90, 370.0);
        let clean = fringes(g, 12.0);
        let p = GoldsteinParams::default();
        let f = goldstein(&clean, None, None, &p);
        assert!(circ_rms(&f, &clean) < 0.05, "{}", circ_rms(&f, &clean));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let noise = phase_noise(&constant(g, 0.5), 4.0, &mut rng);
        let noisy = add_phase_noise(&clean, &noise);
        let before = circ_rms(&noisy, &clean);
        let after = circ_rms(&goldstein(&noisy, None, None, &p), &clean);
        assert!(after < 0.6 * before, "before {before} after {after}");
        // Stronger filtering removes more.
        let weak = circ_rms(
            &goldstein(
                &noisy,
                None,
                None,
                &GoldsteinParams {
                    alpha: 0.3,
                    window: 32,
                },
            ),
            &clean,
        );
        assert!(after < weak && weak < before, "{after} {weak} {before}");
        // α = 0 is the identity.
        assert_eq!(
            goldstein(
                &noisy,
                None,
                None,
                &GoldsteinParams {
                    alpha: 0.0,
                    window: 32
                }
            ),
            noisy
        );
    }

    #[test]
    fn invalid_pixels_are_untouched_and_small_frames_work() {
        let g = Geometry::new(40, 40, 370.0);
        let clean = fringes(g, 10.0);
        let valid: Vec<bool> = (0..g.len()).map(|i| i % 40 < 30).collect();
        let mut input = clean.clone();
        for (i, &ok) in valid.iter().enumerate() {
            if !ok {
                input.data[i] = 1.234;
            }
        }
        let f = goldstein(&input, None, Some(&valid), &GoldsteinParams::default());
        for (i, &ok) in valid.iter().enumerate() {
            if !ok {
                assert_eq!(f.data[i], 1.234);
            }
        }
        let small = Geometry::new(12, 9, 370.0);
        let s = goldstein(
            &fringes(small, 6.0),
            None,
            None,
            &GoldsteinParams::default(),
        );
        assert!(s
            .data
            .iter()
            .all(|x| x.is_finite() && x.abs() <= std::f32::consts::PI));
        let tiny = Geometry::new(3, 3, 370.0);
        let t = fringes(tiny, 6.0);
        assert_eq!(goldstein(&t, None, None, &GoldsteinParams::default()), t);
    }
}
