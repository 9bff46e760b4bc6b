//! Pressurised prolate spheroid (Yang, Davis & Dieterich 1988, JGR 93:4249–4257) with the
//! corrections of Newman et al. (2006, JVGR, appendix) and the tilt fix `C0 = z0/sin θ`
//! (Yang's `C0 = y0 cos θ + z0 sin θ` is a typo that only matters for tilted spheroids), as in
//! the USGS dMODELS `yang`/`yangpar`/`yangint` (notes §1.4).
//!
//! The source is a line of double forces and centres of dilatation between the foci ±c along
//! the axis; the surface displacement is the closed-form primitive evaluated at ξ = ±c.
//! The published formulas are singular for an exactly vertical axis (θ = 90°) and for a sphere
//! (b/a = 1). dMODELS clamps θ to 89.99° and b/a to 0.99; at 89.99° the 3/cos²θ factors of
//! f1, f2 amplify rounding to several percent of the signal near the axis (measured), so θ is
//! clamped to 89.9° here (rounding noise ≲ 1e-4 of the peak), and b/a to 0.99. The 0.1°
//! tilt left by the clamp is not negligible for elongated spheroids (0.4 % north–south
//! asymmetry at b/a = 0.4, measured), so a clamped spheroid is evaluated tilted both ways
//! (trend φ and φ + 180°) and averaged: the first-order tilt effect cancels and the field of
//! a vertical spheroid is radially symmetric to ~1e-5. The centre is at `depth`;
//! the axis plunges `plunge` degrees from horizontal and rises toward the azimuth `trend`
//! (degrees clockwise from north): the shallow tip lies on the `trend` side, and so does the
//! uplift maximum (tested).

use serde::{Deserialize, Serialize};

use super::okada::sin_cos_deg;
use super::{check_finite, check_positive, check_range};

/// Prolate spheroid source (metres, degrees).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpheroidParams {
    pub e: f64,
    pub n: f64,
    /// Depth of the centre (m, positive down).
    pub depth: f64,
    /// Semi-major axis a (m).
    pub semi_major: f64,
    /// b/a, in [0.01, 1] (values above 0.99 are evaluated at 0.99).
    pub aspect_ratio: f64,
    /// Excess pressure over shear modulus ΔP/μ (dimensionless).
    pub pressure_over_mu: f64,
    /// Shear modulus μ (Pa); the displacement depends on ΔP/μ only.
    pub mu: f64,
    /// Plunge of the major axis from horizontal, degrees in [1, 90] (90 = vertical; values
    /// above 89.9 are evaluated at 89.9).
    pub plunge: f64,
    /// Azimuth (degrees clockwise from north) toward which the axis rises: the shallow tip's
    /// side.
    pub trend: f64,
}

const MAX_PLUNGE: f64 = 89.9;
const MAX_ASPECT: f64 = 0.99;

impl SpheroidParams {
    pub fn validate(&self) -> Result<(), String> {
        check_finite("e", self.e)?;
        check_finite("n", self.n)?;
        check_positive("depth", self.depth)?;
        check_positive("semi_major", self.semi_major)?;
        check_range("aspect_ratio", self.aspect_ratio, 0.01, 1.0)?;
        check_finite("pressure_over_mu", self.pressure_over_mu)?;
        check_positive("mu", self.mu)?;
        check_range("plunge", self.plunge, 1.0, 90.0)?;
        check_finite("trend", self.trend)?;
        // The whole spheroid must lie below the surface.
        let (s, c) = sin_cos_deg(self.plunge);
        let b = self.semi_major * self.aspect_ratio;
        let half_height = ((self.semi_major * s).powi(2) + (b * c).powi(2)).sqrt();
        if self.depth <= half_height {
            return Err(format!(
                "params.depth {} must exceed the spheroid's vertical half-extent {:.1} \
                 (semi_major {}, aspect_ratio {}, plunge {})",
                self.depth, half_height, self.semi_major, self.aspect_ratio, self.plunge
            ));
        }
        Ok(())
    }

    /// Volume change `π·a·b²·ΔP/μ` (m³), the dMODELS convention (Mogi's ΔV = π·a³·ΔP/μ for a
    /// sphere). b/a is used as given, not clamped.
    pub fn volume_change(&self) -> f64 {
        let b = self.semi_major * self.aspect_ratio;
        std::f64::consts::PI * self.semi_major * b * b * self.pressure_over_mu
    }

    /// Precomputes the source strengths (Yang's a1, b1, P_dila) for evaluation.
    pub fn model(&self, poisson: f64) -> SpheroidModel {
        let a = self.semi_major;
        let b = a * self.aspect_ratio.min(MAX_ASPECT);
        let mu = self.mu;
        let lambda = 2.0 * mu * poisson / (1.0 - 2.0 * poisson);
        let p = self.pressure_over_mu * mu;
        let nu = poisson;
        let pi = std::f64::consts::PI;
        // yangpar: Yang et al. (1988) with Newman et al. (2006) corrections.
        let c = (a * a - b * b).sqrt();
        let (a2, a3, b2) = (a * a, a * a * a, b * b);
        let (c2, c3, c4, c5) = (c * c, c * c * c, c.powi(4), c.powi(5));
        let ac = (a - c) / (a + c);
        let coef1 = 2.0 * pi * a * b2;
        let den1 = 8.0 * pi * (1.0 - nu);
        let q = 3.0 / den1;
        let r = (1.0 - 2.0 * nu) / den1;
        let ia = -coef1 * (2.0 / (a * c2) + ac.ln() / c3);
        let iaa = -coef1 * (2.0 / (3.0 * a3 * c2) + 2.0 / (a * c4) + ac.ln() / c5);
        let a11 = 2.0 * r * (ia - 4.0 * pi);
        let a12 = -2.0 * r * (ia + 4.0 * pi);
        let a21 = q * a2 * iaa + r * ia - 1.0;
        let a22 = -q * a2 * iaa - ia * (2.0 * r - q);
        let den2 = 3.0 * lambda + 2.0 * mu;
        let num2 = 3.0 * a22 - a12;
        let den3 = a11 * a22 - a12 * a21;
        let num3 = a11 - 3.0 * a21;
        let pdila = p * (2.0 * mu / den2) * (num2 - num3) / den3;
        let pstar = p / den2 * (num2 * lambda + 2.0 * (lambda + mu) * num3) / den3;
        let a1 = -2.0 * b2 * pdila;
        let b1 = 3.0 * (b2 / c2) * pdila + 2.0 * (1.0 - 2.0 * nu) * pstar;
        let theta = self.plunge.min(MAX_PLUNGE).to_radians();
        let (sin_phi, cos_phi) = sin_cos_deg(self.trend);
        SpheroidModel {
            e: self.e,
            n: self.n,
            z0: self.depth,
            a,
            b,
            c,
            a1,
            b1,
            pdila,
            mu,
            nu,
            sin_t: theta.sin(),
            cos_t: theta.cos(),
            sin_phi,
            cos_phi,
            clamped: self.plunge >= MAX_PLUNGE,
        }
    }
}

/// A spheroid ready for evaluation.
#[derive(Debug, Clone, Copy)]
pub struct SpheroidModel {
    e: f64,
    n: f64,
    z0: f64,
    a: f64,
    b: f64,
    c: f64,
    a1: f64,
    b1: f64,
    pdila: f64,
    mu: f64,
    nu: f64,
    sin_t: f64,
    cos_t: f64,
    sin_phi: f64,
    cos_phi: f64,
    /// Plunge clamped from (near) vertical: average the two tilt directions.
    clamped: bool,
}

impl SpheroidModel {
    /// Displacement (east, north, up) at the surface point `(e, n)`.
    pub fn displacement(&self, e: f64, n: f64) -> [f64; 3] {
        let u = self.displacement_for_trend(e, n, self.sin_phi, self.cos_phi);
        if !self.clamped {
            return u;
        }
        let v = self.displacement_for_trend(e, n, -self.sin_phi, -self.cos_phi);
        [0, 1, 2].map(|k| 0.5 * (u[k] + v[k]))
    }

    fn displacement_for_trend(&self, e: f64, n: f64, sin_phi: f64, cos_phi: f64) -> [f64; 3] {
        let (xn, yn) = (e - self.e, n - self.n);
        // Rotate into the frame of Yang's Figure 3 (axis in the x2–x3 plane).
        let xp = cos_phi * xn - sin_phi * yn;
        let yp = sin_phi * xn + cos_phi * yn;
        let up = self.primitive(xp, yp, self.c);
        let um = self.primitive(xp, yp, -self.c);
        let ux = -up[0] - um[0];
        let uy = -up[1] - um[1];
        let uz = up[2] + um[2];
        [
            cos_phi * ux + sin_phi * uy,
            -sin_phi * ux + cos_phi * uy,
            uz,
        ]
    }

    /// Yang et al. (1988) eqs. (1)–(8): the primitive of the displacement at ξ = `csi`, for a
    /// surface point (z = 0) in the rotated frame.
    fn primitive(&self, x1: f64, x2: f64, csi: f64) -> [f64; 3] {
        let (sint, cost) = (self.sin_t, self.cos_t);
        let nu = self.nu;
        let (a1, b1) = (self.a1, self.b1);
        let z0 = self.z0;
        let csi2 = csi * cost;
        let csi3 = csi * sint;
        let x3 = -z0;
        let xbar3 = z0;
        let y1 = x1;
        let y2 = x2 - csi2;
        let y3 = x3 - csi3;
        let ybar3 = xbar3 + csi3;
        let r2 = x2 * sint - x3 * cost;
        let q2 = x2 * sint + xbar3 * cost;
        let r3 = x2 * cost + x3 * sint;
        let q3 = -x2 * cost + xbar3 * sint;
        let rbar3 = r3 - csi;
        let qbar3 = q3 + csi;
        let big_r1 = (y1 * y1 + y2 * y2 + y3 * y3).sqrt();
        let big_r2 = (y1 * y1 + y2 * y2 + ybar3 * ybar3).sqrt();
        let c0 = z0 / sint;
        let beta_num = q2 * cost + (1.0 + sint) * (big_r2 + qbar3);
        let beta_den = cost * y1;
        let atanb = if beta_den == 0.0 {
            std::f64::consts::FRAC_PI_2.copysign(beta_num)
        } else {
            (beta_num / beta_den).atan()
        };
        let drbar3 = big_r1 + rbar3;
        let dqbar3 = big_r2 + qbar3;
        let dybar3 = big_r2 + ybar3;
        let lrbar3 = drbar3.ln();
        let lqbar3 = dqbar3.ln();
        let lybar3 = dybar3.ln();
        let k = 3.0 - 4.0 * nu;
        let astar1 = a1 / (big_r1 * drbar3) + b1 * (lrbar3 + (r3 + csi) / drbar3);
        let astarbar1 = -a1 / (big_r2 * dqbar3) - b1 * (lqbar3 + (q3 - csi) / dqbar3);
        let aa1 = csi / big_r1 + lrbar3;
        let abar1 = csi / big_r2 - lqbar3;
        let aa2 = big_r1 - r3 * lrbar3;
        let abar2 = big_r2 - q3 * lqbar3;
        let aa3 = csi * rbar3 / big_r1 + big_r1;
        let abar3 = csi * qbar3 / big_r2 - big_r2;
        let bstar = (a1 / big_r1 + 2.0 * b1 * aa2) + k * (a1 / big_r2 + 2.0 * b1 * abar2);
        let bb = csi * (csi + c0) / big_r2 - abar2 - c0 * lqbar3;
        // Newman et al. (2006): F*1, F*2, F1, F2 vanish at the free surface.
        let f1 = csi * y1 / dybar3
            + 3.0 / (cost * cost) * (y1 * sint * lybar3 - y1 * lqbar3 + 2.0 * q2 * atanb)
            + 2.0 * y1 * lqbar3
            - 4.0 * xbar3 * atanb / cost;
        let f2 = csi * y2 / dybar3
            + 3.0 / (cost * cost)
                * (q2 * sint * lqbar3 - q2 * lybar3
                    + 2.0 * y1 * sint * atanb
                    + cost * (big_r2 - ybar3))
            - 2.0 * cost * abar2
            + 2.0 / cost * (xbar3 * lybar3 - q3 * lqbar3);
        let f3 = 1.0 / cost * (q2 * lqbar3 - q2 * sint * lybar3 + 2.0 * y1 * atanb)
            + 2.0 * sint * abar2
            + q3 * lybar3
            - csi;
        let cstar = (self.a * self.b * self.b / (csi * csi * csi)) / (16.0 * self.mu * (1.0 - nu));
        let cdila = 2.0 * cstar * self.pdila;
        let m = 4.0 * (1.0 - nu) * (1.0 - 2.0 * nu);
        let ustar1 = cstar * (astar1 * y1 + k * astarbar1 * y1);
        let ustar2 = cstar * (sint * (astar1 * r2 + k * astarbar1 * q2) + cost * bstar);
        let ustar3 = cstar * (-cost * (astar1 * r2 + k * astarbar1 * q2) + sint * bstar);
        let udila1 = cdila * ((aa1 * y1 + k * abar1 * y1) - m * f1);
        let udila2 = cdila
            * (sint * (aa1 * r2 + k * abar1 * q2) - m * f2
                + 4.0 * (1.0 - nu) * cost * (aa2 + abar2)
                + cost * (aa3 - k * abar3));
        let udila3 = cdila
            * (cost * (-aa1 * r2 + k * abar1 * q2)
                + m * f3
                + 4.0 * (1.0 - nu) * sint * (aa2 + abar2)
                + sint * (aa3 + k * abar3 - 2.0 * k * bb));
        [ustar1 + udila1, ustar2 + udila2, ustar3 + udila3]
    }
}

#[cfg(test)]
mod tests {
    use super::super::mogi::MogiParams;
    use super::*;

    fn params() -> SpheroidParams {
        SpheroidParams {
            e: 0.0,
            n: 0.0,
            depth: 3000.0,
            semi_major: 1000.0,
            aspect_ratio: 0.99,
            pressure_over_mu: 1e-3,
            mu: 3e10,
            plunge: 90.0,
            trend: 0.0,
        }
    }

    #[test]
    fn near_spherical_spheroid_approaches_mogi() {
        let s = params();
        s.validate().unwrap();
        let m = MogiParams {
            e: 0.0,
            n: 0.0,
            depth: 3000.0,
            dv: std::f64::consts::PI * 1e9 * 1e-3,
        };
        let model = s.model(0.25);
        let peak = m.displacement(0.25, 0.0, 0.0)[2];
        for r in [0.0, 1000.0, 2500.0, 5000.0, 9000.0] {
            let [ue, un, uu] = model.displacement(r, 0.0);
            let [me, _, mu] = m.displacement(0.25, r, 0.0);
            assert!((uu - mu).abs() < 0.05 * peak, "r {r}: uz {uu} vs Mogi {mu}");
            assert!((ue - me).abs() < 0.05 * peak, "r {r}: ur {ue} vs Mogi {me}");
            assert!(un.abs() < 1e-3 * peak);
        }
        // Near the axis the field is smooth (no rounding blow-up at the clamped plunge).
        for (x, y) in [(0.0, 0.0), (1.0, 0.0), (0.0, -1.0), (-3.0, 2.0)] {
            let [ue, un, _] = model.displacement(x, y);
            let expect = 2.7e-5 * 1.0f64.max(x.hypot(y));
            assert!(ue.hypot(un) < 2.0 * expect, "({x},{y}): {ue} {un}");
        }
        let uu0 = model.displacement(0.0, 0.0)[2];
        assert!((uu0 / peak - 1.0).abs() < 0.05, "{uu0} vs {peak}");
        // The shear modulus only scales P; the displacement depends on P/μ.
        let other = SpheroidParams { mu: 1e9, ..s }
            .model(0.25)
            .displacement(1234.0, 567.0);
        let base = model.displacement(1234.0, 567.0);
        for (o, b) in other.iter().zip(base) {
            assert!((o - b).abs() < 1e-9 * peak);
        }
    }

    #[test]
    fn vertical_spheroid_is_radially_symmetric() {
        let s = SpheroidParams {
            aspect_ratio: 0.4,
            ..params()
        };
        let model = s.model(0.25);
        let r = 2700.0;
        let reference = model.displacement(r, 0.0);
        for k in 1..8 {
            let a = k as f64 * std::f64::consts::PI / 4.0;
            let [ue, un, uu] = model.displacement(r * a.cos(), r * a.sin());
            let ur = ue * a.cos() + un * a.sin();
            assert!(
                (uu - reference[2]).abs() < 1e-4 * reference[2].abs(),
                "{k}: {uu}"
            );
            assert!(
                (ur - reference[0]).abs() < 1e-4 * reference[0].abs(),
                "{k}: {ur}"
            );
        }
        assert!(reference[2] > 0.0 && reference[0] > 0.0);
    }

    #[test]
    fn tilted_spheroid_shifts_uplift_toward_its_shallow_tip() {
        // Plunge 30°, trend 90°: the axis rises toward the east. The uplift maximum moves
        // east of the centre (over the shallow tip) and the field stays symmetric about the
        // trend line.
        let s = SpheroidParams {
            aspect_ratio: 0.3,
            plunge: 30.0,
            trend: 90.0,
            depth: 4000.0,
            semi_major: 2000.0,
            ..params()
        };
        s.validate().unwrap();
        let model = s.model(0.25);
        let (mut best, mut at) = (f64::MIN, 0.0);
        for k in -60..=60 {
            let e = k as f64 * 100.0;
            let uu = model.displacement(e, 0.0)[2];
            if uu > best {
                best = uu;
                at = e;
            }
        }
        assert!(at > 200.0, "peak at {at}");
        for e in [-3000.0, 0.0, 2500.0] {
            let a = model.displacement(e, 1500.0);
            let b = model.displacement(e, -1500.0);
            assert!((a[2] - b[2]).abs() < 1e-9 * best && (a[1] + b[1]).abs() < 1e-9 * best);
        }
        // Rotating the trend by 90° rotates the field.
        let rot = SpheroidParams { trend: 0.0, ..s }.model(0.25);
        let u = model.displacement(1800.0, 700.0);
        let v = rot.displacement(-700.0, 1800.0);
        assert!((u[2] - v[2]).abs() < 1e-9 * best);
    }

    #[test]
    fn rejects_a_spheroid_that_reaches_the_surface() {
        let s = SpheroidParams {
            depth: 900.0,
            ..params()
        };
        assert!(s.validate().unwrap_err().contains("half-extent"));
    }
}
