//! Branch-free approximations of `atan2`, `pow`, `exp` and `sin_cos` for per-pixel loops:
//! libm calls keep a loop from vectorising and were a large share of the generator's time.
//! Each is tested against the libm function; none is meant for anything that needs the
//! last ulp. The loops that use them are marked
//! `#[multiversion::multiversion(targets("x86_64+avx2+fma"))]`: compiled again for AVX2 and
//! picked at run time, with identical results (Rust never fuses `a·b + c` by itself).

/// `atan2(y, x)` for finite inputs, in [−π, π]: atan on [0, 1] by an odd polynomial
/// (least-squares fit of degree 15, max error 1.5e-7 rad ≈ one f32 ulp at π, tested
/// against `atan2`), then the octant. Branch-free and without a libm call (`atan2f` was
/// 8 % of the generator's time in phase noise and the Goldstein output), so loops over
/// pixels vectorise. `(0, 0)` gives 0 like `atan2`; the sign of a zero `y` is ignored.
#[inline(always)]
pub fn atan2_approx(y: f32, x: f32) -> f32 {
    use std::f32::consts::{FRAC_PI_2, PI};
    const C: [f32; 8] = [
        0.999_999_34,
        -0.333_298_6,
        0.199_465_66,
        -0.139_086_29,
        0.096_421_97,
        -0.055_912_33,
        0.021_862_96,
        -0.004_054_57,
    ];
    let (ax, ay) = (x.abs(), y.abs());
    let (lo, hi) = (ax.min(ay), ax.max(ay));
    let t = if hi > 0.0 { lo / hi } else { 0.0 };
    let t2 = t * t;
    let mut p = C[7];
    for &c in C[..7].iter().rev() {
        p = p * t2 + c;
    }
    let r = t * p;
    let r = if ay > ax { FRAC_PI_2 - r } else { r };
    let r = if x < 0.0 { PI - r } else { r };
    if y < 0.0 {
        -r
    } else {
        r
    }
}

/// `x^a` for `x ≥ 0` as `2^(a·log2 x)` with polynomial `log2` and `exp2` (relative error
/// < 3e-5, tested): filter weights and 8-bit brightness need no more, and `powf` was a
/// third of the filter's cost. 0 for `x ≤ 0` (and NaN), ∞ for `x = ∞` and on overflow,
/// 0 for subnormal `x` and on underflow, like `powf` for `a > 0`.
///
/// Branch-free (every special case is a select after the arithmetic), so loops over
/// slices ([`pow_approx_slice`]) vectorise; the arithmetic of the normal path is the same
/// sequence of operations as the scalar series, so results do not depend on the caller.
#[inline(always)]
pub(crate) fn pow_approx(x: f32, a: f32) -> f32 {
    let r = exp2_approx(a * log2_normal(x));
    // Special cases of x, as selects: zero and subnormal x (for negative x and NaN the
    // last select decides).
    let r = if x < f32::MIN_POSITIVE { 0.0 } else { r };
    let r = if x == f32::INFINITY { x } else { r };
    if x > 0.0 {
        r
    } else {
        0.0
    }
}

/// `log2 x` for a normal positive `x` (no checks: zero, subnormals, ∞ and NaN give
/// garbage): exponent plus `log2 m`, m ∈ [1, 2), from the odd `atanh` series of
/// t = (m − 1)/(m + 1) ≤ 1/3, up to t⁹ (absolute error < 3e-6, tested).
#[inline(always)]
fn log2_normal(x: f32) -> f32 {
    let bits = x.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let atanh = t * (1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 / 9.0))));
    e as f32 + atanh * (2.0 / std::f32::consts::LN_2)
}

/// Fills `out` with independent standard normal deviates, two per 64-bit draw of `rng`:
/// Box–Muller on two 24-bit uniforms, `√(−2 ln u₁)·(cos, sin)(2π u₂ − π)` with
/// u₁ ∈ (0, 1] (so the radius is finite; the tails end at 5.77σ, a 1-in-10⁸ event) and the
/// branch-free [`log2_normal`] / [`sin_cos_approx`], so the arithmetic vectorises. Half
/// the generator calls of a ziggurat sampler (`rand_distr::StandardNormal` draws one u64
/// per deviate) and no per-sample branches; the moments and the CDF are tested. The draws
/// are `rng.fill` of u64 words (little-endian bytes: the same on every platform).
pub fn fill_standard_normal(rng: &mut impl rand::Rng, out: &mut [f32]) {
    let mut words = vec![0u64; out.len().div_ceil(2)];
    rng.fill(&mut words[..]);
    box_muller(&words, out);
}

#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn box_muller(words: &[u64], out: &mut [f32]) {
    use std::f32::consts::{LN_2, PI, TAU};
    const UNIT: f32 = 1.0 / 16_777_216.0; // 2^-24
    let mut pairs = out.chunks_exact_mut(2);
    let deviates = |w: u64| {
        let u1 = (((w >> 40) + 1) as f32) * UNIT;
        let u2 = (((w >> 8) & 0x00ff_ffff) as f32) * UNIT;
        let r = (-2.0 * LN_2 * log2_normal(u1)).max(0.0).sqrt();
        let (s, c) = sin_cos_approx(TAU * u2 - PI);
        (r * c, r * s)
    };
    for (pair, &w) in (&mut pairs).zip(words) {
        let (a, b) = deviates(w);
        pair[0] = a;
        pair[1] = b;
    }
    if let [last] = pairs.into_remainder() {
        *last = deviates(words[words.len() - 1]).0;
    }
}

/// [`pow_approx`] of every element, in place (vectorised).
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub(crate) fn pow_approx_slice(xs: &mut [f32], a: f32) {
    for x in xs.iter_mut() {
        *x = pow_approx(*x, a);
    }
}

/// `2^y` by range reduction and a Taylor series (relative error < 2e-7 in the normal
/// range, tested); ∞ above 127, 0 below −126 (no subnormals), NaN for NaN. Branch-free.
#[inline(always)]
fn exp2_approx(y: f32) -> f32 {
    // 2^y = 2^k · 2^f, f ∈ [−0.5, 0.5], 2^f = e^(f·ln2) by its Taylor series.
    // k = round(y) (halves up) = floor(y + 127.5) − 127 without a libm call or a
    // saturating float → int cast (either keeps the loop from vectorising): y is clamped
    // (out of range the result is replaced below, in range the clamp changes nothing; a
    // NaN y gives a NaN z and result whatever k is), v + 2^23 holds the integer nearest v
    // in its low mantissa bits, and one comparison turns nearest into floor.
    let v = y.clamp(-126.0, 127.0) + 127.5;
    let nearest = ((v + 8_388_608.0).to_bits() & 0x007f_ffff) as i32;
    let ki = nearest - i32::from(nearest as f32 > v) - 127;
    let k = ki as f32;
    let z = (y - k) * std::f32::consts::LN_2;
    let p = 1.0
        + z * (1.0
            + z * (0.5 + z * (1.0 / 6.0 + z * (1.0 / 24.0 + z * (1.0 / 120.0 + z / 720.0)))));
    let r = p * f32::from_bits(((ki + 127) as u32) << 23);
    // Out of range (as selects, not branches).
    let r = if y > 127.0 { f32::INFINITY } else { r };
    if y < -126.0 {
        0.0
    } else {
        r
    }
}

/// `e^x` as [`exp2_approx`]`(x·log2 e)`: relative error < 2e-6 for |x| ≤ 20 (the rounding
/// of `x·log2 e` grows with |x|; tested), 0 below x ≈ −87.3, ∞ above ≈ 88.0. Branch-free,
/// so loops over pixels vectorise (`expf` was a tenth of the coherence map's cost).
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    exp2_approx(x * std::f32::consts::LOG2_E)
}

/// `(sin x, cos x)` for |x| ≤ 1e5 (the generator calls it with wrapped phases): reduction
/// by the nearest multiple of π/2 (Cody–Waite, two-part constant), Taylor polynomials on
/// [−π/4, π/4], the quadrant by selects. Absolute error < 3e-7 on wrapped phases and
/// < 1e-6 out to 1e4 (tested against f64), so `e^{iφ}` of every pixel vectorises instead
/// of calling `sincosf`.
#[inline(always)]
pub fn sin_cos_approx(x: f32) -> (f32, f32) {
    use std::f32::consts::FRAC_2_PI;
    // π/2 = HI + LO with HI exact in few bits, so k·HI is exact for |k| < 2^16.
    const HI: f32 = 1.570_312_5;
    const LO: f32 = 4.838_268e-4;
    let kf = x * FRAC_2_PI;
    // round(kf) without a libm call (exact for |kf| < 2^22): add and subtract 1.5·2^23.
    let k = (kf + 12_582_912.0) - 12_582_912.0;
    let r = (x - k * HI) - k * LO;
    let r2 = r * r;
    let s =
        r * (1.0 + r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 / 362_880.0))));
    let c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 / 40_320.0)));
    // Quadrant q = k mod 4 (two's complement keeps negative k right).
    let q = (k as i32) & 3;
    let (s1, c1) = if q & 1 == 1 { (c, -s) } else { (s, c) };
    if q & 2 == 2 {
        (-s1, -c1)
    } else {
        (s1, c1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    #[test]
    fn atan2_approx_matches_atan2() {
        let mut worst = 0.0f64;
        let mut state = 0x1234_5678_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as f32 / u32::MAX as f32 * 2.0 - 1.0
        };
        for k in 0..400_000 {
            // Scales from tiny to large, all four quadrants, and the axes / diagonals.
            let scale = 10f32.powi(k % 9 - 4);
            let (y, x) = match k % 50 {
                0 => (0.0, next() * scale),
                1 => (next() * scale, 0.0),
                2 => {
                    let v = next() * scale;
                    (v, v)
                }
                3 => {
                    let v = next() * scale;
                    (v, -v)
                }
                _ => (next() * scale, next() * scale),
            };
            let want = (y as f64).atan2(x as f64);
            let got = atan2_approx(y, x) as f64;
            // ±π are the same angle (the sign of a zero y is ignored).
            let d = (got - want).abs();
            worst = worst.max(d.min((d - std::f64::consts::TAU).abs()));
        }
        assert!(worst < 5e-7, "max error {worst} rad");
        assert_eq!(atan2_approx(0.0, 0.0), 0.0);
        assert_eq!(atan2_approx(0.0, 1.0), 0.0);
        assert_eq!(atan2_approx(1.0, 0.0), std::f32::consts::FRAC_PI_2);
        assert_eq!(atan2_approx(-1.0, 0.0), -std::f32::consts::FRAC_PI_2);
        assert_eq!(atan2_approx(0.0, -1.0), PI);
        assert!(atan2_approx(-1e-30, -1.0) < 0.0);
    }

    /// The branchy scalar form `pow_approx` had before it was made vectorisable.
    fn pow_approx_branchy(x: f32, a: f32) -> f32 {
        if x.is_nan() || x <= 0.0 {
            return 0.0;
        }
        if x == f32::INFINITY {
            return x;
        }
        let bits = x.to_bits();
        if bits < 0x0080_0000 {
            return 0.0;
        }
        let e = ((bits >> 23) & 0xff) as i32 - 127;
        let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
        let t = (m - 1.0) / (m + 1.0);
        let t2 = t * t;
        let atanh = t * (1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 / 9.0))));
        let log2 = e as f32 + atanh * (2.0 / std::f32::consts::LN_2);
        let y = a * log2;
        if y < -126.0 {
            return 0.0;
        }
        if y > 127.0 {
            return f32::INFINITY;
        }
        let k = ((y + 127.5) as i32 - 127) as f32;
        let z = (y - k) * std::f32::consts::LN_2;
        let p = 1.0
            + z * (1.0
                + z * (0.5 + z * (1.0 / 6.0 + z * (1.0 / 24.0 + z * (1.0 / 120.0 + z / 720.0)))));
        p * f32::from_bits(((k as i32 + 127) as u32) << 23)
    }

    /// The branch-free form gives the same bits as the branchy one (generated content
    /// does not depend on which is used), including halfway `k` roundings and specials.
    #[test]
    fn pow_approx_is_bit_identical_to_the_branchy_form() {
        let mut state = 0x2545_F491_u32;
        let mut xs: Vec<f32> = (0..400_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                f32::from_bits(state)
            })
            .collect();
        // Exact powers of two make y = a·e land on halves (k rounding ties).
        xs.extend((-149..=127).map(|e| 2f32.powi(e)));
        xs.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-40]);
        for a in [0.35f32, 0.5, 0.8, 1.0, 1.5, 5.0] {
            let mut v = xs.clone();
            pow_approx_slice(&mut v, a);
            for (x, y) in xs.iter().zip(&v) {
                let want = pow_approx_branchy(*x, a);
                assert!(
                    want.to_bits() == y.to_bits() || (want.is_nan() && y.is_nan()),
                    "{x:e}^{a}: {y:e} vs {want:e}"
                );
            }
        }
    }

    #[test]
    fn pow_approx_matches_powf() {
        let mut worst = 0.0f64;
        for a in [0.1f32, 0.3, 0.5, 0.8, 0.95, 1.0, 1.5] {
            let mut x = 1e-30f32;
            while x < 1e30 {
                let want = (x as f64).powf(a as f64);
                let got = pow_approx(x, a) as f64;
                // Within the normal f32 range (beyond it: 0 or ∞, like powf).
                if (1e-37..1e38).contains(&want) {
                    worst = worst.max(((got - want) / want).abs());
                }
                x *= 1.013;
            }
        }
        assert!(worst < 3e-5, "relative error {worst}");
        assert_eq!(pow_approx(0.0, 0.8), 0.0);
        assert_eq!(pow_approx(-1.0, 0.8), 0.0);
        assert_eq!(pow_approx(1.0, 0.8), 1.0);
        assert_eq!(pow_approx(1e30, 1.5), f32::INFINITY);
        assert_eq!(pow_approx(f32::NAN, 0.8), 0.0);
        assert_eq!(pow_approx(f32::INFINITY, 0.8), f32::INFINITY);
        assert_eq!(pow_approx(f32::NEG_INFINITY, 0.8), 0.0);
        assert_eq!(pow_approx(1e-40, 0.8), 0.0, "subnormal input");
        assert_eq!(pow_approx(1e-30, 5.0), 0.0, "underflow");
        // The slice form is the same function, element by element (special cases too).
        let xs = [
            0.0f32,
            -2.0,
            1e-40,
            1e-30,
            0.37,
            1.0,
            3.5,
            7e12,
            1e30,
            f32::INFINITY,
        ];
        for a in [0.35f32, 0.8, 5.0] {
            let mut v = xs;
            pow_approx_slice(&mut v, a);
            for (x, y) in xs.iter().zip(&v) {
                assert_eq!(pow_approx(*x, a).to_bits(), y.to_bits(), "{x}^{a}");
            }
        }
    }

    #[test]
    fn exp_approx_matches_exp() {
        let mut worst = 0.0f64;
        let mut x = -20.0f32;
        while x <= 20.0 {
            let want = (x as f64).exp();
            let got = exp_approx(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_7;
        }
        assert!(worst < 2e-6, "relative error {worst} on [-20, 20]");
        // Out to the f32 range the error grows with |x| (rounding of x·log2 e) but stays small.
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp_approx(x) as f64;
            assert!(((got - want) / want).abs() < 1e-5, "e^{x}: {got} vs {want}");
            x += 0.01;
        }
        for (x, want) in [
            (0.0f32, 1.0f32),
            (1.0, std::f32::consts::E),
            (-1.0, 1.0 / std::f32::consts::E),
        ] {
            assert!(
                (exp_approx(x) - want).abs() <= 2.0 * f32::EPSILON * want,
                "e^{x}"
            );
        }
        assert_eq!(exp_approx(-100.0), 0.0);
        assert_eq!(exp_approx(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_approx(100.0), f32::INFINITY);
        assert_eq!(exp_approx(f32::INFINITY), f32::INFINITY);
        assert!(exp_approx(f32::NAN).is_nan());
        // The slice of a vectorised loop gives the scalar bits.
        let xs: Vec<f32> = (0..1000).map(|k| k as f32 * 0.031 - 15.0).collect();
        let v: Vec<f32> = xs.iter().map(|&x| exp_approx(x)).collect();
        for (x, y) in xs.iter().zip(&v) {
            assert_eq!(exp_approx(*x).to_bits(), y.to_bits());
        }
    }

    #[test]
    fn sin_cos_approx_matches_sin_cos() {
        let err = |x: f32| {
            let (s, c) = sin_cos_approx(x);
            let (ws, wc) = (x as f64).sin_cos();
            (s as f64 - ws).abs().max((c as f64 - wc).abs())
        };
        let mut worst = 0.0f64;
        let mut check = |x: f32| worst = worst.max(err(x));
        // Wrapped phases densely, every quadrant boundary, then larger arguments.
        let mut x = -3.5f32;
        while x <= 3.5 {
            check(x);
            x += 1.3e-5;
        }
        for k in -8..=8 {
            let b = k as f32 * std::f32::consts::FRAC_PI_4;
            for d in [-1e-6f32, 0.0, 1e-6] {
                check(b + d);
            }
        }
        assert!(worst < 3e-7, "max error {worst} on wrapped phases");
        let mut x = -1e4f32;
        while x <= 1e4 {
            assert!(err(x) < 1e-6, "sin/cos {x}: error {}", err(x));
            x += 0.37;
        }
        assert_eq!(sin_cos_approx(0.0), (0.0, 1.0));
        let (s, c) = sin_cos_approx(std::f32::consts::PI);
        assert!(s.abs() < 1e-7 && (c + 1.0).abs() < 1e-7);
    }

    #[test]
    fn log2_normal_matches_log2() {
        let mut worst = 0.0f64;
        for k in 0..200_000 {
            // 1e-8 … 1e8, log-spaced, plus powers of two.
            let x = 10f32.powf(-8.0 + 16.0 * k as f32 / 200_000.0);
            worst = worst.max((log2_normal(x) as f64 - (x as f64).log2()).abs());
        }
        assert!(worst < 3e-6, "max error {worst}");
        for e in -20..20 {
            assert_eq!(log2_normal(2f32.powi(e)), e as f32);
        }
    }

    #[test]
    fn fill_standard_normal_is_standard_normal() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let n = 1_000_001; // odd: the last deviate comes from a pair's first half
        let mut z = vec![0f32; n];
        fill_standard_normal(&mut rng, &mut z);
        assert!(z.iter().all(|v| v.is_finite() && v.abs() < 5.8));
        let nf = n as f64;
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / nf;
        let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / nf;
        let skew = z.iter().map(|&v| (v as f64 - mean).powi(3)).sum::<f64>() / nf;
        let kurt = z.iter().map(|&v| (v as f64 - mean).powi(4)).sum::<f64>() / nf / (var * var);
        // Standard errors at n = 1e6: mean 1e-3, variance 1.4e-3, skewness 2.4e-3,
        // kurtosis 4.9e-3; bounds at ≈ 4 standard errors.
        assert!(mean.abs() < 4e-3, "mean {mean}");
        assert!((var - 1.0).abs() < 6e-3, "variance {var}");
        assert!(skew.abs() < 1e-2, "skewness {skew}");
        assert!((kurt - 3.0).abs() < 2e-2, "kurtosis {kurt}");
        // Kolmogorov–Smirnov distance to Φ (5 % critical value at n = 1e6: 1.36e-3).
        let mut sorted: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        sorted.sort_by(f64::total_cmp);
        let phi = |x: f64| 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
        let ks = sorted
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let f = phi(x);
                (f - i as f64 / nf)
                    .abs()
                    .max(((i + 1) as f64 / nf - f).abs())
            })
            .fold(0.0, f64::max);
        assert!(ks < 1.36e-3, "KS distance {ks}");
        // The two deviates of a pair are uncorrelated (and so independent, being jointly
        // normal by construction).
        let pairs = n / 2;
        let corr = (0..pairs)
            .map(|i| z[2 * i] as f64 * z[2 * i + 1] as f64)
            .sum::<f64>()
            / pairs as f64;
        assert!(corr.abs() < 6e-3, "pair correlation {corr}");
        // Same seed, same deviates; a different seed, different ones.
        let mut again = vec![0f32; n];
        fill_standard_normal(&mut rand_chacha::ChaCha8Rng::seed_from_u64(11), &mut again);
        assert_eq!(z, again);
        fill_standard_normal(&mut rand_chacha::ChaCha8Rng::seed_from_u64(12), &mut again);
        assert_ne!(z[..100], again[..100]);
    }
}
