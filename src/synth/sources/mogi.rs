//! Mogi (1958) point source of volume change ΔV at depth d (notes §1.1):
//! `u = (1 − ν)·ΔV/π · (Δe, Δn, d)/R³`, `R² = Δe² + Δn² + d²`.
//!
//! ΔV is the volume change of the source cavity (the surface uplift volume is 2(1 − ν)·ΔV);
//! in pressure form ΔV = π·a³·ΔP/μ for a sphere of radius a ≪ d.

use serde::{Deserialize, Serialize};

use super::{check_finite, check_positive};

/// Mogi source: centre `(e, n)` (m), `depth` (m, positive down), volume change `dv` (m³).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MogiParams {
    pub e: f64,
    pub n: f64,
    pub depth: f64,
    pub dv: f64,
}

impl MogiParams {
    pub fn validate(&self) -> Result<(), String> {
        check_finite("e", self.e)?;
        check_finite("n", self.n)?;
        check_positive("depth", self.depth)?;
        check_finite("dv", self.dv)
    }

    /// Displacement (east, north, up) at the surface point `(e, n)`.
    pub fn displacement(&self, poisson: f64, e: f64, n: f64) -> [f64; 3] {
        let (dx, dy, d) = (e - self.e, n - self.n, self.depth);
        let r2 = dx * dx + dy * dy + d * d;
        let c = (1.0 - poisson) * self.dv / std::f64::consts::PI / (r2 * r2.sqrt());
        [c * dx, c * dy, c * d]
    }

    /// Peak uplift `(1 − ν)·ΔV/(π·d²)`, directly above the source.
    pub fn max_uplift(&self, poisson: f64) -> f64 {
        (1.0 - poisson) * self.dv / (std::f64::consts::PI * self.depth * self.depth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_closed_form() {
        let m = MogiParams {
            e: 1000.0,
            n: -500.0,
            depth: 3000.0,
            dv: 2.0e6,
        };
        let [ue, un, uu] = m.displacement(0.25, 1000.0, -500.0);
        assert_eq!((ue, un), (0.0, 0.0));
        // 0.2387·ΔV/d² for ν = 0.25.
        let expect = 0.75 * 2.0e6 / (std::f64::consts::PI * 9.0e6);
        assert!((uu - expect).abs() < 1e-15 * expect.abs().max(1.0));
        assert!((uu - m.max_uplift(0.25)).abs() < 1e-15);
        assert!((uu - 0.238_732_414_6 * 2.0e6 / 9.0e6).abs() < 1e-10);
        // 4 km east of the source: R = 5 km, uu = C·d/R³, ue = C·Δe/R³.
        let [ue, un, uu] = m.displacement(0.25, 5000.0, -500.0);
        let c = 0.75 * 2.0e6 / std::f64::consts::PI;
        assert!((ue - c * 4000.0 / 1.25e11).abs() < 1e-15);
        assert!(un.abs() < 1e-18);
        assert!((uu - c * 3000.0 / 1.25e11).abs() < 1e-15);
    }

    #[test]
    fn is_radially_symmetric() {
        let m = MogiParams {
            e: 0.0,
            n: 0.0,
            depth: 2500.0,
            dv: -1.0e6,
        };
        let r = 3700.0;
        let reference = m.displacement(0.25, r, 0.0);
        for k in 1..12 {
            let a = k as f64 * std::f64::consts::PI / 6.0;
            let [ue, un, uu] = m.displacement(0.25, r * a.cos(), r * a.sin());
            assert!((uu - reference[2]).abs() < 1e-15);
            let ur = ue * a.cos() + un * a.sin();
            let ut = -ue * a.sin() + un * a.cos();
            assert!((ur - reference[0]).abs() < 1e-15);
            assert!(ut.abs() < 1e-15);
        }
        // Deflation: subsidence and inward motion.
        assert!(reference[2] < 0.0 && reference[0] < 0.0);
    }
}
