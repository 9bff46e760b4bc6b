//! Terrain without a DEM download (notes/synth-physics.md §6): volcanic edifices (strato,
//! shield, caldera) on a fractal (FFT power-law) background, sea level for coastal and
//! island volcanoes, and a radar-geometry amplitude image with multiplicative speckle.
//!
//! Elevations are metres above sea level; water pixels hold the sea surface (0 m) and are
//! flagged in [`Terrain::water`].

use rand::Rng;
use rand_distr::{Distribution, Gamma};

use super::atmosphere::{power_law_field, Spectrum};
use super::fastmath::fill_standard_normal;
use super::grid::{Field, Geometry};

/// Edifice type (notes §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdificeKind {
    /// Steep cone `H·exp(−(r/R)^p)`, H 1–3.5 km, R 3–12 km, with a summit crater.
    Strato,
    /// Broad, gentle dome: H 0.5–1.5 km, R 15–40 km, slopes of a few degrees.
    Shield,
    /// Low broad edifice with a flat-floored ring depression 100–600 m deep.
    Caldera,
}

/// One volcanic edifice, centred at (`east`, `north`) metres from the frame centre.
#[derive(Debug, Clone, PartialEq)]
pub struct Edifice {
    pub kind: EdificeKind,
    pub east: f64,
    pub north: f64,
    /// Height above the surrounding base (m).
    pub height_m: f64,
    /// Characteristic radius R (m) of `exp(−(r/R)^p)`.
    pub radius_m: f64,
    /// Profile exponent p.
    pub exponent: f64,
    /// Minor/major axis ratio (1 = circular) and azimuth of the major axis (degrees from north).
    pub aspect: f64,
    pub azimuth_deg: f64,
    /// Summit crater (strato) or caldera depth (m) and radius (m); 0 depth = none.
    pub crater_depth_m: f64,
    pub crater_radius_m: f64,
}

impl Edifice {
    /// A random edifice of `kind` at (`east`, `north`), with the ranges of notes §6.
    pub fn random(kind: EdificeKind, east: f64, north: f64, rng: &mut impl Rng) -> Self {
        let aspect = rng.random_range(0.7..1.0);
        let azimuth_deg = rng.random_range(0.0..180.0);
        match kind {
            EdificeKind::Strato => {
                let radius_m = rng.random_range(3_000.0..12_000.0);
                Self {
                    kind,
                    east,
                    north,
                    height_m: rng.random_range(1_000.0..3_500.0),
                    radius_m,
                    exponent: rng.random_range(1.2..2.0),
                    aspect,
                    azimuth_deg,
                    crater_depth_m: rng.random_range(100.0..500.0),
                    crater_radius_m: rng.random_range(300.0..1_000.0),
                }
            }
            EdificeKind::Shield => Self {
                kind,
                east,
                north,
                height_m: rng.random_range(500.0..1_500.0),
                radius_m: rng.random_range(15_000.0..40_000.0),
                exponent: rng.random_range(1.8..3.0),
                aspect,
                azimuth_deg,
                crater_depth_m: if rng.random::<f64>() < 0.5 {
                    rng.random_range(50.0..200.0)
                } else {
                    0.0
                },
                crater_radius_m: rng.random_range(1_000.0..3_000.0),
            },
            EdificeKind::Caldera => Self {
                kind,
                east,
                north,
                height_m: rng.random_range(300.0..1_500.0),
                radius_m: rng.random_range(8_000.0..25_000.0),
                exponent: rng.random_range(1.5..2.5),
                aspect,
                azimuth_deg,
                crater_depth_m: rng.random_range(100.0..600.0),
                crater_radius_m: rng.random_range(2_000.0..8_000.0),
            },
        }
    }

    /// Elliptical distance (m) of (`e`, `n`) from the centre (major axis = circular units).
    fn distance(&self, e: f64, n: f64) -> f64 {
        let (s, c) = self.azimuth_deg.to_radians().sin_cos();
        let (de, dn) = (e - self.east, n - self.north);
        let along = de * s + dn * c;
        let across = -de * c + dn * s;
        (along * along + (across / self.aspect) * (across / self.aspect)).sqrt()
    }

    /// Edifice profile without crater/caldera (m above base).
    fn cone(&self, r: f64) -> f64 {
        self.height_m * (-(r / self.radius_m).powf(self.exponent)).exp()
    }

    /// Distance (m) beyond which the edifice adds less than 1 cm (its profile is cut
    /// there, which keeps terrain synthesis cheap for small parasitic cones).
    pub fn reach_m(&self) -> f64 {
        let core = self.radius_m
            * (self.height_m.max(0.01) / 0.01)
                .ln()
                .max(0.0)
                .powf(1.0 / self.exponent);
        core.max(4.0 * self.crater_radius_m)
    }

    /// Height (m above base) at (`e`, `n`).
    pub fn height_at(&self, e: f64, n: f64) -> f64 {
        let r = self.distance(e, n);
        let h = self.cone(r);
        if self.crater_depth_m <= 0.0 {
            return h;
        }
        match self.kind {
            EdificeKind::Strato | EdificeKind::Shield => {
                h - self.crater_depth_m * (-(r / self.crater_radius_m).powi(2)).exp()
            }
            EdificeKind::Caldera => {
                // Flat floor `rim − depth` inside the ring fault, steep walls ~8 % of Rc.
                let rim = self.cone(self.crater_radius_m);
                let floor = rim - self.crater_depth_m;
                let w = 0.08 * self.crater_radius_m;
                let s = smoothstep((self.crater_radius_m - r) / w + 0.5);
                (1.0 - s) * h + s * floor
            }
        }
    }
}

fn smoothstep(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

/// Where the volcano sits relative to the sea.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting {
    /// No water in the frame.
    Inland,
    /// The base slopes down to the sea along a random direction; the coastline passes at
    /// `coast_m` metres from the frame centre.
    Coastal { azimuth_deg: f64, coast_m: f64 },
    /// The base lies `depth_m` below sea level: only the edifice emerges.
    Island { depth_m: f64 },
}

/// Everything needed to build a terrain deterministically.
#[derive(Debug, Clone, PartialEq)]
pub struct TerrainSpec {
    pub edifices: Vec<Edifice>,
    pub setting: Setting,
    /// Base elevation (m a.s.l.) for inland settings.
    pub base_m: f64,
    /// RMS (m) and 2-D spectral slope of the fractal background.
    pub roughness_rms_m: f64,
    pub roughness_beta: f64,
}

impl TerrainSpec {
    /// A random volcano for a frame of `geometry`: the main edifice within the central
    /// 40 % of the frame, 0–3 parasitic cones, 70 % inland, 20 % coastal, 10 % island.
    pub fn random(geometry: Geometry, rng: &mut impl Rng) -> Self {
        let kinds = [
            EdificeKind::Strato,
            EdificeKind::Shield,
            EdificeKind::Caldera,
        ];
        let kind = kinds[rng.random_range(0..3)];
        Self::random_of_kind(geometry, kind, rng)
    }

    /// [`TerrainSpec::random`] with a fixed main edifice kind.
    pub fn random_of_kind(geometry: Geometry, kind: EdificeKind, rng: &mut impl Rng) -> Self {
        let half_w = geometry.width as f64 * geometry.pixel_m / 2.0;
        let half_h = geometry.height as f64 * geometry.pixel_m / 2.0;
        let e0 = rng.random_range(-0.4..0.4) * half_w;
        let n0 = rng.random_range(-0.4..0.4) * half_h;
        let main = Edifice::random(kind, e0, n0, rng);
        let mut edifices = vec![main.clone()];
        let n_parasitic = if kind == EdificeKind::Strato {
            rng.random_range(0..=3)
        } else {
            rng.random_range(0..=1)
        };
        for _ in 0..n_parasitic {
            let ang = rng.random_range(0.0..std::f64::consts::TAU);
            let dist = rng.random_range(0.5..2.0) * main.radius_m.min(20_000.0);
            let mut cone = Edifice::random(
                EdificeKind::Strato,
                e0 + dist * ang.sin(),
                n0 + dist * ang.cos(),
                rng,
            );
            cone.height_m = rng.random_range(50.0..400.0);
            cone.radius_m = rng.random_range(500.0..2_500.0);
            cone.crater_depth_m *= 0.2;
            cone.crater_radius_m *= 0.3;
            edifices.push(cone);
        }
        let u: f64 = rng.random();
        let setting = if u < 0.7 {
            Setting::Inland
        } else if u < 0.9 {
            Setting::Coastal {
                azimuth_deg: rng.random_range(0.0..360.0),
                coast_m: main.radius_m * rng.random_range(0.8..2.5),
            }
        } else {
            Setting::Island {
                depth_m: rng.random_range(100.0..1_000.0),
            }
        };
        Self {
            edifices,
            setting,
            base_m: rng.random_range(0.0..2_000.0),
            roughness_rms_m: (rng.random_range(30f64.ln()..300f64.ln())).exp(),
            roughness_beta: rng.random_range(3.0..4.0),
        }
    }
}

/// A terrain: surface elevation, water mask and the spec that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Terrain {
    /// Surface height (m a.s.l.); water pixels hold 0 (the sea surface).
    pub elevation: Field,
    /// True where the pixel is sea (no data in interferograms).
    pub water: Vec<bool>,
    pub spec: TerrainSpec,
}

impl Terrain {
    /// Share of pixels that are water.
    pub fn water_fraction(&self) -> f64 {
        if self.water.is_empty() {
            return 0.0;
        }
        self.water.iter().filter(|&&w| w).count() as f64 / self.water.len() as f64
    }
}

/// Fractal (fractional Brownian) background: zero mean, RMS `rms_m`, 2-D spectral slope
/// `beta` (3–4 ≈ Hurst 0.5–1), on a padded grid (no periodic wrap-around).
pub fn fractal_background(geometry: Geometry, rms_m: f64, beta: f64, rng: &mut impl Rng) -> Field {
    // Wavelengths up to half the frame (the edifice and base set the larger shape); the
    // FFT grid is padded by that much, so opposite edges stay independent.
    let outer = 0.5 * geometry.width.max(geometry.height) as f64 * geometry.pixel_m;
    let mut f = power_law_field(geometry, &Spectrum::power_law(beta, outer), rng);
    for x in &mut f.data {
        *x *= rms_m as f32;
    }
    f
}

/// Builds the terrain of `spec` (the fractal background is the only random part).
pub fn build_terrain(geometry: Geometry, spec: &TerrainSpec, rng: &mut impl Rng) -> Terrain {
    let mut elevation =
        fractal_background(geometry, spec.roughness_rms_m, spec.roughness_beta, rng);
    let (az_s, az_c) = match spec.setting {
        Setting::Coastal { azimuth_deg, .. } => azimuth_deg.to_radians().sin_cos(),
        _ => (0.0, 1.0),
    };
    let reach2: Vec<f64> = spec
        .edifices
        .iter()
        .map(|ed| ed.reach_m().powi(2))
        .collect();
    for row in 0..geometry.height {
        let n = geometry.north(row);
        for col in 0..geometry.width {
            let e = geometry.east(col);
            let base = match spec.setting {
                Setting::Inland => spec.base_m,
                // Coastal plain rising inland at 1 %: 0 m at the coastline, which lies
                // `coast_m` from the centre toward `azimuth_deg`.
                Setting::Coastal { coast_m, .. } => 0.01 * (coast_m - (e * az_s + n * az_c)),
                Setting::Island { depth_m } => -depth_m,
            };
            let mut h = base;
            for (ed, reach2) in spec.edifices.iter().zip(&reach2) {
                let (de, dn) = (e - ed.east, n - ed.north);
                if de * de + dn * dn < *reach2 {
                    h += ed.height_at(e, n);
                }
            }
            elevation.data[geometry.index(row, col)] += h as f32;
        }
    }
    if matches!(spec.setting, Setting::Inland) {
        // Inland terrain never dips below sea level (a lowland stays land).
        let min = elevation.data.iter().copied().fold(f32::INFINITY, f32::min);
        if min < 1.0 {
            for h in &mut elevation.data {
                *h += 1.0 - min;
            }
        }
    }
    let water: Vec<bool> = elevation.data.iter().map(|&h| h <= 0.0).collect();
    for (h, &w) in elevation.data.iter_mut().zip(&water) {
        if w {
            *h = 0.0;
        }
    }
    Terrain {
        elevation,
        water,
        spec: spec.clone(),
    }
}

/// Random terrain for `geometry` ([`TerrainSpec::random`] then [`build_terrain`]).
pub fn random_terrain(geometry: Geometry, rng: &mut impl Rng) -> Terrain {
    let spec = TerrainSpec::random(geometry, rng);
    build_terrain(geometry, &spec, rng)
}

/// Elevation gradient (∂h/∂east, ∂h/∂north) in m/m by central differences (one-sided at
/// the borders).
pub fn gradient(elevation: &Field) -> (Vec<f32>, Vec<f32>) {
    let g = elevation.geometry;
    let (w, h) = (g.width, g.height);
    let mut ge = vec![0.0f32; g.len()];
    let mut gn = vec![0.0f32; g.len()];
    let px = g.pixel_m as f32;
    for r in 0..h {
        for c in 0..w {
            let (c0, c1) = (c.saturating_sub(1), (c + 1).min(w - 1));
            let (r0, r1) = (r.saturating_sub(1), (r + 1).min(h - 1));
            let i = g.index(r, c);
            if c1 > c0 {
                ge[i] = (elevation.get(r, c1) - elevation.get(r, c0)) / ((c1 - c0) as f32 * px);
            }
            if r1 > r0 {
                // Row index grows southward.
                gn[i] = (elevation.get(r0, c) - elevation.get(r1, c)) / ((r1 - r0) as f32 * px);
            }
        }
    }
    (ge, gn)
}

/// Local radar geometry of each pixel, from the look direction.
#[derive(Debug, Clone, PartialEq)]
pub struct RadarGeometry {
    /// Local incidence angle in the plane of incidence (radians): `i − α`, where α is the
    /// terrain slope facing the radar. ≤ 0 means layover, ≥ π/2 shadow.
    pub local_incidence: Vec<f32>,
}

impl RadarGeometry {
    /// True where the pixel is in layover (slope facing the radar steeper than incidence).
    pub fn layover(&self, i: usize) -> bool {
        Self::is_layover(self.local_incidence[i])
    }
    /// True where the pixel is in radar shadow.
    pub fn shadow(&self, i: usize) -> bool {
        Self::is_shadow(self.local_incidence[i])
    }
    /// Layover from a local incidence angle (for loops over the angles themselves).
    #[inline(always)]
    pub fn is_layover(local_incidence: f32) -> bool {
        local_incidence <= 0.0
    }
    /// Radar shadow from a local incidence angle.
    #[inline(always)]
    pub fn is_shadow(local_incidence: f32) -> bool {
        local_incidence >= std::f32::consts::FRAC_PI_2
    }
}

/// Local incidence angles for a satellite with `heading_deg` (flight azimuth, clockwise
/// from north) looking right at `incidence_deg`. The horizontal direction toward the
/// satellite is `(−cos h, sin h)` (east, north), from the LOS vector of docs/architecture.md §2.2.
pub fn radar_geometry(elevation: &Field, heading_deg: f64, incidence_deg: f64) -> RadarGeometry {
    let (ge, gn) = gradient(elevation);
    let h = heading_deg.to_radians();
    let (te, tn) = (-(h.cos()) as f32, h.sin() as f32);
    let inc = incidence_deg.to_radians() as f32;
    let local_incidence = ge
        .iter()
        .zip(&gn)
        .map(|(&de, &dn)| {
            // Height rising *away* from the satellite tilts the surface toward it.
            let alpha = (-(de * te + dn * tn)).atan();
            inc - alpha
        })
        .collect();
    RadarGeometry { local_incidence }
}

/// Noise-free radar brightness (power, flat land = 1): `cos θ_loc / cos i` backscatter
/// times the geocoding foreshortening gain `sin i / sin θ_loc` (capped at 6: slopes facing
/// the radar are bright), layover at the cap, shadow at the noise floor 0.02, water 0.05.
pub fn radar_hillshade(terrain: &Terrain, heading_deg: f64, incidence_deg: f64) -> Field {
    let geo = radar_geometry(&terrain.elevation, heading_deg, incidence_deg);
    radar_hillshade_from(terrain, &geo, incidence_deg)
}

/// [`radar_hillshade`] from the terrain's [`radar_geometry`] for the same look (computed
/// once per frame by the generator).
pub fn radar_hillshade_from(terrain: &Terrain, geo: &RadarGeometry, incidence_deg: f64) -> Field {
    let inc = incidence_deg.to_radians() as f32;
    let mut out = Field::zeros(terrain.elevation.geometry);
    for (i, v) in out.data.iter_mut().enumerate() {
        let t = geo.local_incidence[i];
        *v = if terrain.water[i] {
            0.05
        } else if geo.layover(i) {
            6.0
        } else if geo.shadow(i) {
            0.02
        } else {
            let gain = (inc.sin() / t.sin()).min(6.0);
            (t.cos() / inc.cos() * gain).clamp(0.02, 6.0)
        };
    }
    out
}

/// Amplitude image (power) for the GAMMA-style rendering: [`radar_hillshade`] times
/// multiplicative speckle `Gamma(looks, 1/looks)` (mean 1; LiCSAR multilooks ≈ 80).
pub fn amplitude(
    terrain: &Terrain,
    heading_deg: f64,
    incidence_deg: f64,
    looks: f64,
    rng: &mut impl Rng,
) -> Field {
    speckle(
        &radar_hillshade(terrain, heading_deg, incidence_deg),
        looks,
        rng,
    )
}

/// Looks from which [`speckle`] draws its Gamma deviates by the Wilson–Hilferty transform.
const WILSON_HILFERTY_LOOKS: f64 = 10.0;

/// `hillshade` times multiplicative speckle `Gamma(looks, 1/looks)` (the random part of
/// [`amplitude`]). From 10 looks on (LiCSAR's ≈ 80) the deviates are Wilson–Hilferty
/// cubes of normals, `(1 − 1/9k + z/(3√k))³` (mean and variance within O(1/k²) of the
/// Gamma's, tested), drawn in bulk; below, exact Gamma draws.
pub fn speckle(hillshade: &Field, looks: f64, rng: &mut impl Rng) -> Field {
    let mut a = hillshade.clone();
    let looks = looks.max(1.0);
    if looks >= WILSON_HILFERTY_LOOKS {
        let mut z = vec![0f32; a.data.len()];
        fill_standard_normal(rng, &mut z);
        let c = (1.0 / (9.0 * looks)) as f32;
        let (offset, scale) = (1.0 - c, c.sqrt());
        for (v, z) in a.data.iter_mut().zip(&z) {
            let b = (offset + scale * z).max(0.0);
            *v *= b * b * b;
        }
    } else {
        let speckle = Gamma::new(looks as f32, 1.0 / looks as f32).expect("looks ≥ 1");
        for v in &mut a.data {
            *v *= speckle.sample(rng);
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn spec(kind: EdificeKind, setting: Setting) -> TerrainSpec {
        let mut ed = Edifice::random(kind, 0.0, 0.0, &mut rng(1));
        ed.aspect = 1.0;
        TerrainSpec {
            edifices: vec![ed],
            setting,
            base_m: 500.0,
            roughness_rms_m: 0.0,
            roughness_beta: 3.5,
        }
    }

    #[test]
    fn strato_peaks_at_the_rim_of_its_crater_and_decays() {
        let ed = Edifice {
            kind: EdificeKind::Strato,
            east: 1000.0,
            north: -2000.0,
            height_m: 2500.0,
            radius_m: 6000.0,
            exponent: 1.5,
            aspect: 1.0,
            azimuth_deg: 0.0,
            crater_depth_m: 300.0,
            crater_radius_m: 600.0,
        };
        let centre = ed.height_at(1000.0, -2000.0);
        assert!((centre - 2200.0).abs() < 1e-9);
        let rim = ed.height_at(1000.0 + 800.0, -2000.0);
        assert!(rim > centre, "crater floor below the rim");
        // Radially symmetric and monotone outside the crater.
        let mut last = f64::INFINITY;
        for k in 1..30 {
            let r = 1000.0 + k as f64 * 1000.0;
            let a = ed.height_at(1000.0 + r, -2000.0);
            let b = ed.height_at(1000.0, -2000.0 - r);
            assert!((a - b).abs() < 1e-9);
            assert!(a < last && a >= 0.0);
            last = a;
        }
        assert!(last < 1.0);
    }

    #[test]
    fn edifices_vanish_beyond_their_reach() {
        let mut r = rng(11);
        for kind in [
            EdificeKind::Strato,
            EdificeKind::Shield,
            EdificeKind::Caldera,
        ] {
            for _ in 0..20 {
                let ed = Edifice::random(kind, 500.0, -300.0, &mut r);
                let reach = ed.reach_m();
                for az in 0..8 {
                    let a = az as f64 * std::f64::consts::FRAC_PI_4;
                    let h = ed.height_at(500.0 + reach * a.sin(), -300.0 + reach * a.cos());
                    assert!(h.abs() <= 0.0101, "{kind:?} {h} at {reach}");
                }
            }
        }
    }

    #[test]
    fn caldera_has_a_flat_floor_below_its_rim() {
        let mut ed = Edifice::random(EdificeKind::Caldera, 0.0, 0.0, &mut rng(2));
        ed.aspect = 1.0;
        let rc = ed.crater_radius_m;
        let floor = ed.height_at(0.0, 0.0);
        let inner = ed.height_at(0.5 * rc, 0.0);
        let rim = ed.height_at(1.1 * rc, 0.0);
        assert!((floor - inner).abs() < 1e-6, "floor {floor} vs {inner}");
        assert!(
            rim - floor > 0.9 * ed.crater_depth_m,
            "{rim} {floor} {}",
            ed.crater_depth_m
        );
    }

    #[test]
    fn island_is_surrounded_by_water_and_inland_has_none() {
        let g = Geometry::new(96, 96, 370.0);
        let mut s = spec(EdificeKind::Strato, Setting::Island { depth_m: 300.0 });
        s.edifices[0].height_m = 2000.0;
        let t = build_terrain(g, &s, &mut rng(3));
        assert!(!t.water[g.index(48, 48)], "summit is land");
        for (r, c) in [(0, 0), (0, 95), (95, 0), (95, 95)] {
            assert!(t.water[g.index(r, c)], "corner ({r},{c}) is sea");
            assert_eq!(t.elevation.get(r, c), 0.0);
        }
        assert!(t.water_fraction() > 0.3 && t.water_fraction() < 1.0);
        let inland = build_terrain(g, &spec(EdificeKind::Shield, Setting::Inland), &mut rng(3));
        assert_eq!(inland.water_fraction(), 0.0);
        // Rough inland terrain still stays above sea level.
        let mut rough = spec(EdificeKind::Shield, Setting::Inland);
        rough.base_m = 0.0;
        rough.roughness_rms_m = 300.0;
        assert_eq!(build_terrain(g, &rough, &mut rng(4)).water_fraction(), 0.0);
    }

    #[test]
    fn coast_puts_the_sea_on_the_requested_side() {
        let g = Geometry::new(100, 100, 370.0);
        let mut s = spec(
            EdificeKind::Strato,
            Setting::Coastal {
                azimuth_deg: 90.0,
                coast_m: 5_000.0,
            },
        );
        s.edifices[0].radius_m = 3_000.0;
        let t = build_terrain(g, &s, &mut rng(5));
        // Sea to the east beyond the coast, land to the west.
        assert!(t.water[g.index(50, 99)]);
        assert!(!t.water[g.index(50, 0)]);
    }

    #[test]
    fn random_specs_cover_settings_and_are_deterministic() {
        let g = Geometry::new(64, 64, 370.0);
        let mut r = rng(6);
        let mut seen = [0usize; 3];
        for _ in 0..200 {
            let s = TerrainSpec::random(g, &mut r);
            seen[match s.setting {
                Setting::Inland => 0,
                Setting::Coastal { .. } => 1,
                Setting::Island { .. } => 2,
            }] += 1;
            assert!((30.0..=300.0).contains(&s.roughness_rms_m));
        }
        assert!(seen.iter().all(|&n| n > 5), "{seen:?}");
        assert_eq!(
            random_terrain(g, &mut rng(9)),
            random_terrain(g, &mut rng(9))
        );
    }

    #[test]
    fn fractal_background_has_the_requested_rms() {
        let g = Geometry::new(80, 60, 370.0);
        let f = fractal_background(g, 150.0, 3.5, &mut rng(7));
        let rms = (f.data.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / g.len() as f64).sqrt();
        assert!((rms - 150.0).abs() < 0.01, "{rms}");
    }

    #[test]
    fn gradient_of_a_plane_is_exact() {
        let g = Geometry::new(7, 5, 100.0);
        let mut f = Field::zeros(g);
        for r in 0..5 {
            for c in 0..7 {
                f.data[g.index(r, c)] = (0.1 * g.east(c) + 0.2 * g.north(r)) as f32;
            }
        }
        let (ge, gn) = gradient(&f);
        assert!(ge.iter().all(|&x| (x - 0.1).abs() < 1e-5));
        assert!(gn.iter().all(|&x| (x - 0.2).abs() < 1e-5));
    }

    /// Ascending (heading −12°) looks east: the satellite is to the west, so slopes facing
    /// west are bright, east-facing slopes dark, flat ground 1.
    #[test]
    fn hillshade_brightens_slopes_facing_the_radar() {
        let g = Geometry::new(41, 41, 370.0);
        let s = spec(EdificeKind::Strato, Setting::Inland);
        let t = build_terrain(g, &s, &mut rng(8));
        let a = radar_hillshade(&t, -12.0, 37.0);
        let c = 20;
        let west = a.get(c, c - 6);
        let east = a.get(c, c + 6);
        assert!(west > 1.2 && east < 0.9, "west {west} east {east}");
        let flat = Terrain {
            elevation: Field::zeros(g),
            water: vec![false; g.len()],
            spec: s.clone(),
        };
        let af = radar_hillshade(&flat, -12.0, 37.0);
        assert!(af.data.iter().all(|&x| (x - 1.0).abs() < 1e-5));
        // Descending mirrors it.
        let d = radar_hillshade(&t, 192.0, 37.0);
        assert!(d.get(c, c + 6) > 1.2 && d.get(c, c - 6) < 0.9);
        // Speckle keeps the mean and spreads like 1/√L.
        let sp = amplitude(&flat, -12.0, 37.0, 16.0, &mut rng(9));
        let m = sp.data.iter().map(|&x| x as f64).sum::<f64>() / g.len() as f64;
        let sd =
            (sp.data.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / g.len() as f64).sqrt();
        assert!(
            (m - 1.0).abs() < 0.03 && (sd - 0.25).abs() < 0.03,
            "{m} {sd}"
        );
    }

    #[test]
    fn speckle_has_the_gamma_moments_on_both_paths() {
        // Gamma(k, 1/k): mean 1, variance 1/k, skewness 2/√k. 80 looks (LiCSAR) and 10 use
        // the Wilson–Hilferty cube, 4 the exact Gamma draws.
        let g = Geometry::new(1000, 1000, 100.0);
        let ones = Field {
            geometry: g,
            data: vec![1.0; g.len()],
        };
        for looks in [80.0, 10.0, 4.0] {
            let sp = speckle(&ones, looks, &mut rng(3));
            assert!(sp.data.iter().all(|&v| v.is_finite() && v >= 0.0));
            let n = g.len() as f64;
            let m = sp.data.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var = sp.data.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
            let skew =
                sp.data.iter().map(|&x| (x as f64 - m).powi(3)).sum::<f64>() / n / var.powf(1.5);
            // Standard errors (n = 1e6): mean √(1/k)/1000, variance ≈ 0.2 %, skewness ≈ 1 %.
            let se = (1.0 / looks).sqrt() / 1000.0;
            assert!((m - 1.0).abs() < 5.0 * se, "{looks} looks: mean {m}");
            assert!(
                (var * looks - 1.0).abs() < 0.015,
                "{looks} looks: variance {var}"
            );
            let want = 2.0 / looks.sqrt();
            assert!(
                (skew / want - 1.0).abs() < 0.06,
                "{looks} looks: skewness {skew} vs {want}"
            );
        }
    }

    #[test]
    fn steep_slopes_make_layover_and_shadow() {
        let g = Geometry::new(3, 1, 100.0);
        // Rises 200 m per 100 m toward the east (63°): ascending satellite in the west
        // sees it face-on (layover); descending satellite in the east sees its back (shadow).
        let f = Field {
            geometry: g,
            data: vec![0.0, 200.0, 400.0],
        };
        let asc = radar_geometry(&f, 0.0, 37.0);
        assert!(asc.layover(1));
        let desc = radar_geometry(&f, 180.0, 37.0);
        assert!(desc.shadow(1));
    }
}
