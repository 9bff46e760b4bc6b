//! Okada (1985) rectangular dislocation in an elastic half-space: strike-slip (U1), dip-slip
//! (U2) and tensile (U3) components, surface displacement (notes §1.2).
//!
//! Native frame ([`okada85`]): x along strike, y to the left of strike, z up; the reference
//! point is on the surface above the start of the fault's lower edge, `d` is the depth of that
//! lower edge, the fault spans ξ ∈ [0, L] along strike and η ∈ [0, W] up-dip, and it dips
//! toward −y (to the right of strike). Vertical faults use the cos δ = 0 branch of the
//! I-terms; singular points follow Okada (1992): `atan(ξη/(qR)) = 0` when q = 0,
//! `ln(R+η) → −ln(R−η)` and `1/(R+η) = 0` when R + η = 0, `1/(R+ξ) = 0` when R + ξ = 0,
//! `I5 = 0` when ξ = 0. Coordinates within 1e-12 of the fault size of zero are snapped to
//! zero first (as DC3D does with its EPS), so grid points that fall on an edge's extension
//! take the limit form instead of a rounding-noise sign.
//!
//! Geographic wrapper ([`OkadaParams`]): the fault is placed by the surface projection of its
//! centroid and the centroid depth, `width` is down-dip, strike is clockwise from north,
//! dip 0–90° to the right of strike, rake the hanging-wall slip direction
//! (U1 = slip·cos rake, U2 = slip·sin rake), `opening` the tensile U3.

use serde::{Deserialize, Serialize};

use super::{check_finite, check_positive, check_range};

/// Rectangular dislocation placed by its centroid (metres, degrees).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OkadaParams {
    /// Surface projection of the centroid, east (m).
    pub e: f64,
    /// Surface projection of the centroid, north (m).
    pub n: f64,
    /// Centroid depth (m, positive down).
    pub depth: f64,
    /// Degrees clockwise from north; the fault dips to the right of strike.
    pub strike: f64,
    /// Degrees from horizontal, 0–90.
    pub dip: f64,
    /// Degrees: 0 left-lateral, 90 thrust, −90 normal, 180 right-lateral.
    pub rake: f64,
    /// Along-strike length L (m).
    pub length: f64,
    /// Down-dip width W (m).
    pub width: f64,
    /// Shear slip (m).
    pub slip: f64,
    /// Tensile opening (m; positive = opening, negative = closing).
    pub opening: f64,
}

/// Sine and cosine of an angle in degrees, exact at multiples of 90°.
pub(crate) fn sin_cos_deg(deg: f64) -> (f64, f64) {
    let r = deg.rem_euclid(360.0);
    if r == 0.0 {
        (0.0, 1.0)
    } else if r == 90.0 {
        (1.0, 0.0)
    } else if r == 180.0 {
        (0.0, -1.0)
    } else if r == 270.0 {
        (-1.0, 0.0)
    } else {
        r.to_radians().sin_cos()
    }
}

impl OkadaParams {
    pub fn validate(&self) -> Result<(), String> {
        check_finite("e", self.e)?;
        check_finite("n", self.n)?;
        check_positive("depth", self.depth)?;
        check_finite("strike", self.strike)?;
        check_range("dip", self.dip, 0.0, 90.0)?;
        check_finite("rake", self.rake)?;
        check_positive("length", self.length)?;
        check_positive("width", self.width)?;
        check_finite("slip", self.slip)?;
        check_finite("opening", self.opening)?;
        let top = self.top_depth();
        if top < -1e-9 * self.width {
            return Err(format!(
                "params.depth {} is too shallow for width {} at dip {}: the top edge would be \
                 {:.3} m above the surface (need depth ≥ width/2·sin(dip) = {:.3})",
                self.depth,
                self.width,
                self.dip,
                -top,
                self.depth - top
            ));
        }
        Ok(())
    }

    /// Depth of the top edge, `depth − (W/2)·sin δ` (0 for a surface rupture).
    pub fn top_depth(&self) -> f64 {
        self.depth - 0.5 * self.width * sin_cos_deg(self.dip).0
    }

    /// Depth of the bottom edge, `depth + (W/2)·sin δ`.
    pub fn bottom_depth(&self) -> f64 {
        self.depth + 0.5 * self.width * sin_cos_deg(self.dip).0
    }

    /// Potency L·W·slip (m³); seismic moment = μ·potency.
    pub fn potency(&self) -> f64 {
        self.length * self.width * self.slip.abs()
    }

    /// The fault with its trigonometry precomputed, for evaluation at many points.
    pub fn fault(&self) -> Fault {
        let (sin_s, cos_s) = sin_cos_deg(self.strike);
        let (sin_d, cos_d) = sin_cos_deg(self.dip);
        let (sin_r, cos_r) = sin_cos_deg(self.rake);
        Fault {
            e: self.e,
            n: self.n,
            sin_s,
            cos_s,
            sin_d,
            cos_d,
            bottom: self.depth + 0.5 * self.width * sin_d,
            length: self.length,
            width: self.width,
            u: [self.slip * cos_r, self.slip * sin_r, self.opening],
        }
    }
}

/// An [`OkadaParams`] fault ready for evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    e: f64,
    n: f64,
    sin_s: f64,
    cos_s: f64,
    sin_d: f64,
    cos_d: f64,
    bottom: f64,
    length: f64,
    width: f64,
    u: [f64; 3],
}

impl Fault {
    /// Displacement (east, north, up) at the surface point `(e, n)`.
    pub fn displacement(&self, poisson: f64, e: f64, n: f64) -> [f64; 3] {
        let (de, dn) = (e - self.e, n - self.n);
        let x = de * self.sin_s + dn * self.cos_s + 0.5 * self.length;
        let y = -de * self.cos_s + dn * self.sin_s + 0.5 * self.width * self.cos_d;
        let [ux, uy, uz] = okada85_trig(
            x,
            y,
            self.bottom,
            self.sin_d,
            self.cos_d,
            self.length,
            self.width,
            self.u,
            poisson,
        );
        [
            ux * self.sin_s - uy * self.cos_s,
            ux * self.cos_s + uy * self.sin_s,
            uz,
        ]
    }
}

/// Okada (1985) surface displacement `(ux, uy, uz)` in the native frame (see the module
/// docs): point `(x, y)`, lower-edge depth `d`, dip in degrees, `u = [U1, U2, U3]`.
#[allow(clippy::too_many_arguments)]
pub fn okada85(
    x: f64,
    y: f64,
    d: f64,
    dip_deg: f64,
    length: f64,
    width: f64,
    u: [f64; 3],
    poisson: f64,
) -> [f64; 3] {
    let (sd, cd) = sin_cos_deg(dip_deg);
    okada85_trig(x, y, d, sd, cd, length, width, u, poisson)
}

/// Below this cos δ the general I-terms lose digits (their 1/cos²δ factors amplify rounding
/// to ~1e-4 relative at cos δ = 2e-6, measured); between 0 and this value the displacement
/// is interpolated linearly in cos δ between the vertical branch (cos δ = 0) and the
/// general branch at cos δ = NEAR_VERTICAL_COS (error ~1e-6 relative).
const NEAR_VERTICAL_COS: f64 = 1e-3;

#[allow(clippy::too_many_arguments)]
fn okada85_trig(
    x: f64,
    y: f64,
    d: f64,
    sd: f64,
    cd: f64,
    length: f64,
    width: f64,
    u: [f64; 3],
    poisson: f64,
) -> [f64; 3] {
    if cd > 0.0 && cd < NEAR_VERTICAL_COS {
        let t = NEAR_VERTICAL_COS;
        let v = okada85_trig(x, y, d, 1.0, 0.0, length, width, u, poisson);
        let g = okada85_trig(x, y, d, (1.0 - t * t).sqrt(), t, length, width, u, poisson);
        let f = cd / t;
        return [0, 1, 2].map(|k| v[k] + f * (g[k] - v[k]));
    }
    let cd = cd.max(0.0);
    let a = 1.0 - 2.0 * poisson;
    let eps = 1e-12 * (length + width + d);
    let snap = |v: f64| if v.abs() < eps { 0.0 } else { v };
    let p = y * cd + d * sd;
    let q = snap(y * sd - d * cd);
    let mut total = [[0.0f64; 3]; 3];
    for (xi, eta, sign) in [
        (x, p, 1.0),
        (x, p - width, -1.0),
        (x - length, p, -1.0),
        (x - length, p - width, 1.0),
    ] {
        let c = corner(snap(xi), snap(eta), q, sd, cd, a);
        for (t, cm) in total.iter_mut().zip(&c) {
            for (tv, cv) in t.iter_mut().zip(cm) {
                *tv += sign * cv;
            }
        }
    }
    let tp = 2.0 * std::f64::consts::PI;
    let mut out = [0.0; 3];
    for (k, o) in out.iter_mut().enumerate() {
        *o = -u[0] / tp * total[0][k] - u[1] / tp * total[1][k] + u[2] / tp * total[2][k];
    }
    out
}

/// The bracketed terms of Okada's eqs. (25)–(30) at one corner `(ξ, η)`:
/// `[strike-slip, dip-slip, tensile]`, each `[x, y, z]` (before the ∓U/2π factors).
fn corner(xi: f64, eta: f64, q: f64, sd: f64, cd: f64, a: f64) -> [[f64; 3]; 3] {
    let r2 = xi * xi + eta * eta + q * q;
    if r2 == 0.0 {
        // The observation point is the corner itself (a surface-rupture end): genuinely
        // singular, contributes nothing.
        return [[0.0; 3]; 3];
    }
    let r = r2.sqrt();
    let xx = (xi * xi + q * q).sqrt();
    let yt = eta * cd + q * sd;
    let dt = eta * sd - q * cd;
    // ln(R+η) and 1/(R+η), cancellation-free for η < 0, Okada 1992 rule when R+η = 0.
    let (ln_re, inv_re) = if eta >= 0.0 {
        let re = r + eta;
        (re.ln(), 1.0 / re)
    } else {
        let num = xi * xi + q * q;
        if num == 0.0 {
            (-(r - eta).ln(), 0.0)
        } else {
            let re = num / (r - eta);
            (re.ln(), 1.0 / re)
        }
    };
    // 1/(R+ξ), likewise.
    let inv_rx = if xi >= 0.0 {
        1.0 / (r + xi)
    } else {
        let num = eta * eta + q * q;
        if num == 0.0 {
            0.0
        } else {
            (r - xi) / num
        }
    };
    let theta = if q == 0.0 {
        0.0
    } else {
        (xi * eta / (q * r)).atan()
    };
    let rd = r + dt;
    let (i1, i2, i3, i4, i5);
    if cd != 0.0 {
        i5 = if xi == 0.0 {
            0.0
        } else {
            a * 2.0 / cd
                * ((eta * (xx + q * cd) + xx * (r + xx) * sd) / (xi * (r + xx) * cd)).atan()
        };
        i4 = a / cd * (rd.ln() - sd * ln_re);
        i3 = a * (yt / (cd * rd) - ln_re) + sd / cd * i4;
        i2 = a * (-ln_re) - i3;
        i1 = a * (-xi / (cd * rd)) - sd / cd * i5;
    } else {
        i1 = -0.5 * a * xi * q / (rd * rd);
        i3 = 0.5 * a * (eta / rd + yt * q / (rd * rd) - ln_re);
        i4 = -a * q / rd;
        i5 = -a * xi * sd / rd;
        i2 = a * (-ln_re) - i3;
    }
    let xq_rre = xi * q * inv_re / r;
    let strike = [
        xq_rre + theta + i1 * sd,
        yt * q * inv_re / r + q * cd * inv_re + i2 * sd,
        dt * q * inv_re / r + q * sd * inv_re + i4 * sd,
    ];
    let dip = [
        q / r - i3 * sd * cd,
        yt * q * inv_rx / r + cd * theta - i1 * sd * cd,
        dt * q * inv_rx / r + sd * theta - i5 * sd * cd,
    ];
    let tensile = [
        q * q * inv_re / r - i3 * sd * sd,
        -dt * q * inv_rx / r - sd * (xq_rre - theta) - i1 * sd * sd,
        yt * q * inv_rx / r + cd * (xq_rre - theta) - i5 * sd * sd,
    ];
    [strike, dip, tensile]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Okada (1985) Table 2 rounds to 4 significant digits.
    fn assert_table(got: [f64; 3], want: [f64; 3], what: &str) {
        for k in 0..3 {
            let tol = if want[k] == 0.0 {
                1e-12
            } else {
                6e-4 * want[k].abs()
            };
            assert!(
                (got[k] - want[k]).abs() <= tol,
                "{what} component {k}: got {:.6e}, Okada 1985 Table 2 {:.4e}",
                got[k],
                want[k]
            );
        }
    }

    const SS: [f64; 3] = [1.0, 0.0, 0.0];
    const DS: [f64; 3] = [0.0, 1.0, 0.0];
    const TF: [f64; 3] = [0.0, 0.0, 1.0];

    #[test]
    fn table2_case2_general_dip() {
        let f = |u| okada85(2.0, 3.0, 4.0, 70.0, 3.0, 2.0, u, 0.25);
        assert_table(f(SS), [-8.689e-3, -4.298e-3, -2.747e-3], "case 2 strike");
        assert_table(f(DS), [-4.682e-3, -3.527e-2, -3.564e-2], "case 2 dip");
        assert_table(f(TF), [-2.660e-4, 1.056e-2, 3.214e-3], "case 2 tensile");
    }

    #[test]
    fn table2_case3_vertical_fault_singular_point() {
        // x = y = 0 on a vertical fault: q = 0 and ξ = 0 at two corners.
        let f = |u| okada85(0.0, 0.0, 4.0, 90.0, 3.0, 2.0, u, 0.25);
        assert_table(f(SS), [0.0, 5.253e-3, 0.0], "case 3 strike");
        assert_table(f(DS), [0.0, 0.0, 0.0], "case 3 dip");
        assert_table(f(TF), [1.223e-2, 0.0, -1.606e-2], "case 3 tensile");
    }

    #[test]
    fn table2_case4_dip_minus_90_as_rake_180() {
        // Okada's δ = −90° case, written as δ = 90°, d = 6 and a reversed strike-slip
        // (the IPGP okada85 checklist's equivalent).
        let f = |u| okada85(0.0, 0.0, 6.0, 90.0, 3.0, 2.0, u, 0.25);
        assert_table(f([-1.0, 0.0, 0.0]), [0.0, -1.303e-3, 0.0], "case 4 strike");
        assert_table(f(DS), [0.0, 0.0, 0.0], "case 4 dip");
        assert_table(f(TF), [3.507e-3, 0.0, -7.740e-3], "case 4 tensile");
    }

    fn params(dip: f64, rake: f64, slip: f64, opening: f64) -> OkadaParams {
        OkadaParams {
            e: 0.0,
            n: 0.0,
            depth: 0.0,
            strike: 90.0,
            dip,
            rake,
            length: 3.0,
            width: 2.0,
            slip,
            opening,
        }
    }

    #[test]
    fn geographic_centroid_wrapper_reproduces_table2() {
        // Strike 90°: x = east, y = north. Move Okada's reference point to the centroid.
        for (x, y, d, dip, rake, slip, opening, want) in [
            (
                2.0,
                3.0,
                4.0,
                70.0,
                0.0,
                1.0,
                0.0,
                [-8.689e-3, -4.298e-3, -2.747e-3],
            ),
            (
                2.0,
                3.0,
                4.0,
                70.0,
                90.0,
                1.0,
                0.0,
                [-4.682e-3, -3.527e-2, -3.564e-2],
            ),
            (
                2.0,
                3.0,
                4.0,
                70.0,
                0.0,
                0.0,
                1.0,
                [-2.660e-4, 1.056e-2, 3.214e-3],
            ),
            (0.0, 0.0, 4.0, 90.0, 0.0, 1.0, 0.0, [0.0, 5.253e-3, 0.0]),
            (
                0.0,
                0.0,
                4.0,
                90.0,
                0.0,
                0.0,
                1.0,
                [1.223e-2, 0.0, -1.606e-2],
            ),
            (0.0, 0.0, 6.0, 90.0, 180.0, 1.0, 0.0, [0.0, -1.303e-3, 0.0]),
        ] {
            let mut p = params(dip, rake, slip, opening);
            let (sd, cd) = sin_cos_deg(dip);
            p.depth = d - 0.5 * p.width * sd;
            p.validate().unwrap();
            let got = p
                .fault()
                .displacement(0.25, x - 0.5 * p.length, y - 0.5 * p.width * cd);
            assert_table(got, want, &format!("geographic dip {dip} rake {rake}"));
        }
    }

    fn grid() -> Vec<(f64, f64)> {
        let mut pts = Vec::new();
        for i in -6..=6 {
            for j in -6..=6 {
                pts.push((i as f64 * 1370.0 + 15.0, j as f64 * 1130.0 + 40.0));
            }
        }
        pts
    }

    #[test]
    fn vertical_strike_slip_is_antisymmetric() {
        // North-striking vertical strike-slip fault centred at the origin: uu is odd under
        // each mirror (e → −e and n → −n), the horizontal field is even under the point
        // reflection (e, n) → (−e, −n), and uu changes sign with it too.
        let mut p = params(90.0, 0.0, 1.5, 0.0);
        p.strike = 0.0;
        p.length = 10_000.0;
        p.width = 6_000.0;
        p.depth = 5_000.0;
        let f = p.fault();
        for (e, n) in grid() {
            let [ue, un, uu] = f.displacement(0.25, e, n);
            let [me, mn, mu] = f.displacement(0.25, -e, n);
            assert!((uu + mu).abs() < 1e-12, "uu not odd in e at ({e},{n})");
            assert!((ue - me).abs() < 1e-12 && (un + mn).abs() < 1e-12);
            let [ne, nn, nu] = f.displacement(0.25, e, -n);
            assert!((uu + nu).abs() < 1e-12, "uu not odd in n at ({e},{n})");
            assert!((ue + ne).abs() < 1e-12 && (un - nn).abs() < 1e-12);
            let [pe, pn, pu] = f.displacement(0.25, -e, -n);
            assert!((ue + pe).abs() < 1e-12 && (un + pn).abs() < 1e-12 && (uu - pu).abs() < 1e-12);
        }
        // Left-lateral on a north-striking fault: the east side moves north.
        assert!(f.displacement(0.25, 3000.0, 0.0)[1] > 0.0);
        assert!(f.displacement(0.25, -3000.0, 0.0)[1] < 0.0);
    }

    #[test]
    fn dip_slip_and_tensile_are_mirror_symmetric_along_strike() {
        // Pure dip-slip and tensile dislocations are symmetric about the plane through the
        // centroid perpendicular to strike: u_along changes sign, the rest is unchanged.
        for (rake, slip, opening, dip) in [
            (90.0, 1.0, 0.0, 35.0),
            (-90.0, 0.7, 0.0, 60.0),
            (0.0, 0.0, 0.5, 85.0),
            (0.0, 0.0, 1.0, 0.0),
            (0.0, 0.0, 0.4, 90.0),
        ] {
            let mut p = params(dip, rake, slip, opening);
            p.strike = 0.0; // along-strike = north
            p.length = 8_000.0;
            p.width = 4_000.0;
            p.depth = 3_000.0;
            let f = p.fault();
            for (e, n) in grid() {
                let [ue, un, uu] = f.displacement(0.25, e, n);
                let [me, mn, mu] = f.displacement(0.25, e, -n);
                let tol = 1e-12;
                assert!(
                    (ue - me).abs() < tol && (un + mn).abs() < tol && (uu - mu).abs() < tol,
                    "rake {rake} opening {opening} dip {dip} at ({e},{n})"
                );
            }
        }
    }

    #[test]
    fn vertical_dyke_and_horizontal_sill_are_symmetric_across_strike() {
        // A vertical tensile dyke and a horizontal sill are also symmetric across strike.
        for dip in [90.0, 0.0] {
            let mut p = params(dip, 0.0, 0.0, 1.0);
            p.strike = 30.0;
            p.length = 6_000.0;
            p.width = 3_000.0;
            p.depth = 2_500.0;
            let f = p.fault();
            let (s, c) = sin_cos_deg(30.0);
            for (a, b) in grid() {
                // a along strike, b across strike (positive = right of strike).
                let (e1, n1) = (a * s + b * c, a * c - b * s);
                let (e2, n2) = (a * s - b * c, a * c + b * s);
                let u1 = f.displacement(0.25, e1, n1);
                let u2 = f.displacement(0.25, e2, n2);
                let across1 = u1[0] * c - u1[1] * s;
                let across2 = u2[0] * c - u2[1] * s;
                assert!((u1[2] - u2[2]).abs() < 1e-12, "dip {dip}");
                assert!((across1 + across2).abs() < 1e-12, "dip {dip}");
            }
            // Opening lifts the surface above the centre (sill) or pushes it apart (dyke).
            let centre = f.displacement(0.25, 0.0, 0.0);
            if dip == 0.0 {
                assert!(centre[2] > 0.0);
            }
        }
    }

    #[test]
    fn thrust_uplifts_the_hanging_wall_and_normal_fault_subsides_it() {
        for (rake, sign) in [(90.0, 1.0), (-90.0, -1.0)] {
            let mut p = params(40.0, rake, 1.0, 0.0);
            p.strike = 0.0; // dips east
            p.length = 20_000.0;
            p.width = 10_000.0;
            p.depth = 5_000.0;
            let f = p.fault();
            let (mut best, mut at) = (0.0f64, 0.0);
            for k in -40..=40 {
                let e = k as f64 * 500.0;
                let uu = f.displacement(0.25, e, 0.0)[2];
                if uu * sign > best {
                    best = uu * sign;
                    at = e;
                }
            }
            // The largest motion of the dominant sign lies over the hanging wall (east of the
            // surface projection of the top edge).
            let top_e = -0.5 * p.width * sin_cos_deg(40.0).1;
            assert!(
                best > 0.05 && at > top_e,
                "rake {rake}: peak {best} at {at}"
            );
        }
    }

    #[test]
    fn far_field_tensile_sill_matches_point_crack() {
        // A small horizontal sill far from the point is the point crack
        // uz = 3·ΔV·d³/(2π·R⁵) (independent of ν).
        let mut p = params(0.0, 0.0, 0.0, 1.0);
        p.length = 10.0;
        p.width = 10.0;
        p.depth = 2000.0;
        let dv = 100.0;
        let f = p.fault();
        for r in [0.0, 1000.0, 2500.0] {
            let uz = f.displacement(0.3, r, 0.0)[2];
            let big_r = (r * r + 4.0e6f64).sqrt();
            let want = 3.0 * dv * 8.0e9 / (2.0 * std::f64::consts::PI * big_r.powi(5));
            assert!((uz - want).abs() < 1e-4 * want, "r {r}: {uz} vs {want}");
        }
    }

    #[test]
    fn near_vertical_dips_join_the_vertical_branch_smoothly() {
        let at = |dip: f64| {
            let mut p = params(dip, 30.0, 1.0, 0.5);
            p.length = 5000.0;
            p.width = 3000.0;
            p.depth = 2000.0;
            p.fault().displacement(0.25, 1234.0, -876.0)
        };
        let v = at(90.0);
        // Approaching 90° the change is linear in the dip (no rounding blow-up): the
        // differences to the vertical value scale with 90° − dip.
        let d1 = at(89.99);
        let d2 = at(89.999);
        let d3 = at(89.9999);
        for k in 0..3 {
            let (a, b, c) = (d1[k] - v[k], d2[k] - v[k], d3[k] - v[k]);
            assert!((b - 0.1 * a).abs() < 0.02 * a.abs() + 1e-10, "{k}: {a} {b}");
            assert!(
                (c - 0.01 * a).abs() < 0.02 * a.abs() + 1e-10,
                "{k}: {a} {c}"
            );
        }
    }

    #[test]
    fn surface_rupture_is_finite_off_the_trace() {
        let mut p = params(60.0, 90.0, 2.0, 0.0);
        p.length = 10_000.0;
        p.width = 8_000.0;
        p.depth = 0.5 * 8_000.0 * sin_cos_deg(60.0).0; // top edge at the surface
        p.validate().unwrap();
        let f = p.fault();
        for (e, n) in grid() {
            let u = f.displacement(0.25, e, n);
            assert!(u.iter().all(|v| v.is_finite()), "({e},{n}) {u:?}");
        }
        // Shallower than the geometry allows is rejected.
        p.depth *= 0.9;
        assert!(p.validate().unwrap_err().contains("too shallow"));
    }
}
