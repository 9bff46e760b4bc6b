//! Sentinel-1 line of sight (docs/architecture.md §2.2, notes §2).
//!
//! The unit vector points from the ground to the satellite:
//! `l = (−sin i·cos h, sin i·sin h, cos i)` (east, north, up), with h the heading (flight
//! azimuth, degrees clockwise from north) and i the incidence angle. The radar looks right,
//! so an ascending pass (h ≈ −12°) looks east and a descending pass (h ≈ 192°) looks west.
//! `d_LOS = u·l` is positive toward the satellite (range decrease, "uplift-positive").

use serde::{Deserialize, Serialize};

use super::grid::Geometry;
use super::sources::Displacement;

/// Typical Sentinel-1 ascending heading (degrees clockwise from north).
pub const S1_HEADING_ASCENDING: f64 = -12.0;
/// Typical Sentinel-1 descending heading.
pub const S1_HEADING_DESCENDING: f64 = 192.0;
/// Sentinel-1 IW incidence range across the three sub-swaths (degrees).
pub const S1_INCIDENCE_RANGE: (f64, f64) = (29.0, 46.0);

/// Incidence change across range of a Sentinel-1 IW swath: 29°→46° over ~250 km.
pub const S1_INCIDENCE_DEG_PER_KM: f64 = 17.0 / 250.0;

/// Orbit direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pass {
    Ascending,
    Descending,
}

impl Pass {
    /// The typical Sentinel-1 heading of this pass.
    pub fn heading(self) -> f64 {
        match self {
            Pass::Ascending => S1_HEADING_ASCENDING,
            Pass::Descending => S1_HEADING_DESCENDING,
        }
    }
}

/// Ground-to-satellite unit vector `[east, north, up]` for a heading and incidence (degrees).
pub fn los_vector(heading_deg: f64, incidence_deg: f64) -> [f64; 3] {
    let (sh, ch) = heading_deg.to_radians().sin_cos();
    let (si, ci) = incidence_deg.to_radians().sin_cos();
    [-si * ch, si * sh, ci]
}

/// Checks a heading and incidence for [`los_vector`]: finite, incidence in [0, 90).
pub fn validate_geometry(heading_deg: f64, incidence_deg: f64) -> Result<(), String> {
    if !heading_deg.is_finite() {
        return Err(format!(
            "--heading must be a finite number (got {heading_deg})"
        ));
    }
    if !(incidence_deg.is_finite() && (0.0..90.0).contains(&incidence_deg)) {
        return Err(format!(
            "--incidence must be in [0, 90) degrees (got {incidence_deg}; Sentinel-1 IW uses 29–46)"
        ));
    }
    Ok(())
}

/// LOS displacement `d_LOS = u·l` at every point (metres, positive toward the satellite).
pub fn project(displacement: &Displacement, los: [f64; 3]) -> Vec<f64> {
    displacement
        .ue
        .iter()
        .zip(&displacement.un)
        .zip(&displacement.uu)
        .map(|((e, n), u)| e * los[0] + n * los[1] + u * los[2])
        .collect()
}

/// Per-pixel LOS vectors of a frame whose incidence grows linearly across range:
/// `incidence_centre_deg` at the frame centre, `deg_per_km` per km of ground range along the
/// look direction (azimuth heading + 90°; [`S1_INCIDENCE_DEG_PER_KM`] for Sentinel-1).
/// Row-major like [`Geometry::surface_points`].
pub fn los_vectors_across_range(
    geometry: &Geometry,
    heading_deg: f64,
    incidence_centre_deg: f64,
    deg_per_km: f64,
) -> Vec<[f64; 3]> {
    let (sl, cl) = (heading_deg + 90.0).to_radians().sin_cos();
    let (e, n) = geometry.surface_points();
    e.iter()
        .zip(&n)
        .map(|(&e, &n)| {
            let range_km = (e * sl + n * cl) / 1000.0;
            los_vector(heading_deg, incidence_centre_deg + deg_per_km * range_km)
        })
        .collect()
}

/// LOS displacement with one LOS vector per point (see [`los_vectors_across_range`]).
pub fn project_each(displacement: &Displacement, los: &[[f64; 3]]) -> Vec<f64> {
    assert_eq!(displacement.len(), los.len(), "one LOS vector per point");
    (0..los.len())
        .map(|i| {
            let l = los[i];
            displacement.ue[i] * l[0] + displacement.un[i] * l[1] + displacement.uu[i] * l[2]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_vector_points_to_a_right_looking_satellite() {
        for (h, i) in [(-12.0, 29.0), (192.0, 46.0), (0.0, 0.0), (77.0, 38.5)] {
            let l = los_vector(h, i);
            let norm = l.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-15);
            assert!((l[2] - f64::cos(i.to_radians())).abs() < 1e-15);
        }
        // Ascending looks east: the satellite is to the west, so l has a negative east part;
        // descending looks west.
        let asc = los_vector(Pass::Ascending.heading(), 39.0);
        let desc = los_vector(Pass::Descending.heading(), 39.0);
        assert!(asc[0] < -0.6 && desc[0] > 0.6);
        // The look direction (−l horizontal) is 90° clockwise from the heading.
        let h = 30.0f64;
        let l = los_vector(h, 40.0);
        let look_az = (-l[0]).atan2(-l[1]).to_degrees();
        assert!((look_az - (h + 90.0)).abs() < 1e-12, "{look_az}");
        // Heading −12°, incidence 39° → (−0.6156, −0.1308, 0.7771).
        let l = los_vector(-12.0, 39.0);
        let want = [
            -39f64.to_radians().sin() * 12f64.to_radians().cos(),
            -39f64.to_radians().sin() * 12f64.to_radians().sin(),
            39f64.to_radians().cos(),
        ];
        for (a, b) in l.iter().zip(want) {
            assert!((a - b).abs() < 1e-15);
        }
        assert!((l[0] + 0.6156).abs() < 1e-4 && (l[1] + 0.1308).abs() < 1e-4);
        assert!((l[2] - 0.7771).abs() < 1e-4);
    }

    #[test]
    fn incidence_grows_toward_far_range() {
        let g = Geometry::new(64, 48, 1000.0);
        // Ascending (heading −12°) looks east: far range is east.
        let v = los_vectors_across_range(&g, -12.0, 38.0, S1_INCIDENCE_DEG_PER_KM);
        let inc = |row: usize, col: usize| v[g.index(row, col)][2].acos().to_degrees();
        assert!(inc(24, 63) > inc(24, 0));
        let across = inc(24, 63) - inc(24, 0);
        let want = S1_INCIDENCE_DEG_PER_KM * 63.0 * 12f64.to_radians().cos();
        assert!((across - want).abs() < 0.05, "{across} vs {want}");
        // Centre pixel ≈ the centre incidence; unit vectors throughout.
        assert!((inc(24, 32) - 38.0).abs() < 0.1);
        assert!(v
            .iter()
            .all(|l| (l.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-12));
        // With a constant incidence, project_each equals project.
        let d = Displacement {
            ue: vec![0.01; g.len()],
            un: vec![-0.02; g.len()],
            uu: vec![0.03; g.len()],
        };
        let flat = los_vectors_across_range(&g, 192.0, 35.0, 0.0);
        assert_eq!(
            project_each(&d, &flat),
            project(&d, los_vector(192.0, 35.0))
        );
    }

    #[test]
    fn projection_is_the_dot_product() {
        let d = Displacement {
            ue: vec![1.0, 0.0, 0.01],
            un: vec![0.0, 1.0, -0.02],
            uu: vec![0.0, 0.0, 0.05],
        };
        let l = los_vector(192.0, 35.0);
        let p = project(&d, l);
        assert_eq!(p[0], l[0]);
        assert_eq!(p[1], l[1]);
        assert!((p[2] - (0.01 * l[0] - 0.02 * l[1] + 0.05 * l[2])).abs() < 1e-17);
        assert!(validate_geometry(f64::NAN, 30.0)
            .unwrap_err()
            .contains("--heading"));
        assert!(validate_geometry(0.0, 95.0)
            .unwrap_err()
            .contains("--incidence"));
    }
}
