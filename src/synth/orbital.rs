//! Orbital (long-wavelength) ramps (notes/synth-physics.md §5) and the `orbital_fringes`
//! annotation rule.
//!
//! A ramp is an apparent LOS displacement in metres (same units as the deformation),
//! `a_e·e + a_n·n + q_ee·e² + q_en·e·n + q_nn·n²` with `e`, `n` in metres from the frame
//! centre.

use rand::Rng;

use super::atmosphere::{robust_ptp, FRINGE_M};
use super::grid::{Field, Geometry};

/// A planar or quadratic ramp (coefficients in m/m and m/m²).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Ramp {
    pub a_e: f64,
    pub a_n: f64,
    pub q_ee: f64,
    pub q_en: f64,
    pub q_nn: f64,
}

/// Strength of random ramps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RampParams {
    /// Typical maximum gradient (m/m): S1 residual ramps 0–3e−7 (0–3 cm per 100 km).
    pub max_gradient: f64,
    /// Probability of a strong ramp (an orbit or ionosphere error), drawn up to
    /// `strong_gradient` instead.
    pub strong_probability: f64,
    pub strong_gradient: f64,
    /// Probability that the ramp has a quadratic part (curvature up to ±30 % of the planar
    /// change across the frame).
    pub quadratic_probability: f64,
}

impl Default for RampParams {
    fn default() -> Self {
        Self {
            max_gradient: 3e-7,
            strong_probability: 0.02,
            strong_gradient: 1.2e-6,
            quadratic_probability: 0.3,
        }
    }
}

impl Ramp {
    /// A random ramp for `geometry`: uniform direction, gradient magnitude uniform in
    /// `[0, max_gradient]` as `max·u²` (or in `[max_gradient, strong_gradient]` for a strong ramp).
    pub fn random(geometry: Geometry, params: &RampParams, rng: &mut impl Rng) -> Self {
        let strong = rng.random::<f64>() < params.strong_probability;
        let g = if strong && params.strong_gradient > params.max_gradient {
            rng.random_range(params.max_gradient..params.strong_gradient)
        } else {
            // Skewed toward small residuals: |g| = max·u².
            let u: f64 = rng.random();
            u * u * params.max_gradient
        };
        let az = rng.random_range(0.0..std::f64::consts::TAU);
        let mut ramp = Ramp {
            a_e: g * az.sin(),
            a_n: g * az.cos(),
            ..Default::default()
        };
        if rng.random::<f64>() < params.quadratic_probability {
            // Curvature scaled so the quadratic change across the half-frame is ±30 % of
            // the planar change across it.
            let half =
                (geometry.width.max(geometry.height) as f64 * geometry.pixel_m / 2.0).max(1.0);
            let k = 0.3 * g / half;
            ramp.q_ee = rng.random_range(-k..=k);
            ramp.q_en = rng.random_range(-k..=k);
            ramp.q_nn = rng.random_range(-k..=k);
        }
        ramp
    }

    /// Value (m) at (`e`, `n`).
    pub fn at(&self, e: f64, n: f64) -> f64 {
        self.a_e * e + self.a_n * n + self.q_ee * e * e + self.q_en * e * n + self.q_nn * n * n
    }

    /// The ramp over `geometry` (apparent LOS displacement, m), zero mean over the frame.
    pub fn field(&self, geometry: Geometry) -> Field {
        let mut f = Field::zeros(geometry);
        for row in 0..geometry.height {
            let n = geometry.north(row);
            for col in 0..geometry.width {
                f.data[geometry.index(row, col)] = self.at(geometry.east(col), n) as f32;
            }
        }
        super::atmosphere::reference_to_mean(&mut f.data, None);
        f
    }
}

/// Fringes of ramp across the frame at which `orbital_fringes` is set.
pub const ORBITAL_FLAG_FRINGES: f64 = 1.0;

/// The `orbital_fringes` flag: the ramp's robust peak-to-peak over the valid pixels
/// (2nd–98th percentile) spans at least [`ORBITAL_FLAG_FRINGES`] fringe, i.e. a reader
/// sees a whole long-wavelength fringe cross the frame. With the default
/// [`RampParams`] an 80 km frame reaches it only for strong ramps.
pub fn orbital_fringes(ramp_m: &Field, valid: Option<&[bool]>) -> bool {
    robust_ptp(&ramp_m.data, valid) / FRINGE_M >= ORBITAL_FLAG_FRINGES
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn planar_ramp_has_the_requested_gradient() {
        let g = Geometry::new(100, 80, 370.0);
        let r = Ramp {
            a_e: 2e-7,
            a_n: -1e-7,
            ..Default::default()
        };
        let f = r.field(g);
        let de = (f.get(10, 60) - f.get(10, 20)) as f64 / (40.0 * 370.0);
        let dn = (f.get(10, 20) - f.get(50, 20)) as f64 / (40.0 * 370.0);
        assert!(
            (de - 2e-7).abs() < 1e-9 && (dn + 1e-7).abs() < 1e-9,
            "{de} {dn}"
        );
        let mean = f.data.iter().map(|&x| x as f64).sum::<f64>() / g.len() as f64;
        assert!(mean.abs() < 1e-9);
    }

    #[test]
    fn flag_rule_threshold() {
        let g = Geometry::new(200, 200, 370.0);
        let width = 200.0 * 370.0 * 0.96; // 2nd–98th percentile span of a planar ramp
        let grad = |fringes: f64| fringes * FRINGE_M / width;
        let below = Ramp {
            a_e: grad(0.95),
            ..Default::default()
        }
        .field(g);
        let above = Ramp {
            a_e: grad(1.05),
            ..Default::default()
        }
        .field(g);
        assert!(!orbital_fringes(&below, None));
        assert!(orbital_fringes(&above, None));
        // Only valid pixels count.
        let valid: Vec<bool> = (0..g.len()).map(|i| i % 200 < 10).collect();
        assert!(!orbital_fringes(&above, Some(&valid)));
    }

    #[test]
    fn random_ramps_are_mostly_small_and_deterministic() {
        let g = Geometry::new(224, 224, 370.0);
        let p = RampParams::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 2000;
        let mut flagged = 0;
        for _ in 0..n {
            let r = Ramp::random(g, &p, &mut rng);
            let grad = r.a_e.hypot(r.a_n);
            assert!(grad <= p.strong_gradient);
            if orbital_fringes(&r.field(g), None) {
                flagged += 1;
            }
        }
        let rate = flagged as f64 / n as f64;
        assert!(rate > 0.005 && rate < 0.08, "flag rate {rate}");
        let a = Ramp::random(g, &p, &mut ChaCha8Rng::seed_from_u64(5));
        let b = Ramp::random(g, &p, &mut ChaCha8Rng::seed_from_u64(5));
        assert_eq!(a, b);
    }
}
