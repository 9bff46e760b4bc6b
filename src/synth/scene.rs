//! Scene sampling: everything random about one synthetic interferogram, drawn up front.
//!
//! A [`Scene`] is a pure function of `(config, seed, index)`: [`SceneConfig::scene`] derives
//! one ChaCha stream per sample from the seed and the index (`set_stream(index)`), so a sample
//! never depends on which thread made it or on the samples before it. The rendering
//! (`generate.rs`) draws its random fields from sub-seeds recorded in the scene, in a fixed
//! order, so the same holds for the images.
//!
//! What is drawn (ranges in `notes/synth-physics.md`):
//! - a LiCSAR-like frame from a fixed pool per seed (`frame_pool` frames, each with its own
//!   track, pass direction, volcano and terrain seed, so a frame split keeps volcanoes apart);
//! - Sentinel-1 acquisition dates on the 6-day grid between October 2014 and November 2021,
//!   with the temporal baselines of the real data (6–48 days typical, some long pairs);
//! - the render style: `licsar2020` or `gamma`, or `mixed` = by date, as LiCSAR changed its
//!   renderer in October 2020;
//! - the class (configurable proportions) and the deformation sources: Mogi, Dyke (Okada
//!   tensile, steep), Sill (Okada tensile, flat), Spheroid (Yang), Earthquake (Okada shear
//!   with a strike-slip, normal or thrust mechanism), Unidentified (penny-shaped crack);
//!   several well-separated sources per frame with probability `crowd_rate`;
//! - for every source a target fringe count from the intensity proportions: the generator
//!   scales the source strength (displacements are linear in ΔV / opening / slip) to reach
//!   it, then measures the real count, so labels always come from the physics;
//! - nuisance strengths: atmosphere (stratified coefficient, turbulent σ), orbital ramp,
//!   coherence (land cover, baseline), processing errors, glacier fringes, artifacts, corruption.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::annotation::{ActivityType, Date, Intensity};

/// How the phase preview is coloured.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum StyleChoice {
    /// LiCSAR after October 2020: RdYlBu_r over [−π, π], no amplitude.
    Licsar2020,
    /// LiCSAR before October 2020: GAMMA 16-colour rainbow × amplitude brightness.
    Gamma,
    /// By acquisition date, as LiCSAR did (secondary date from 2020-10-01 on → licsar2020).
    #[default]
    Mixed,
}

/// The style one frame is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenderStyle {
    Licsar2020,
    Gamma,
}

/// Relative weights of the scene classes (normalised when sampling).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassProportions {
    /// No deformation (atmosphere and noise only).
    pub none: f64,
    pub mogi: f64,
    pub dyke: f64,
    pub sill: f64,
    pub spheroid: f64,
    pub earthquake: f64,
    pub unidentified: f64,
}

impl Default for ClassProportions {
    /// Enough positives to learn from (half the frames), not the real 1 % rate; within the
    /// positives the types are spread more evenly than Hephaestus' (Sill 65 %).
    fn default() -> Self {
        Self {
            none: 0.5,
            mogi: 0.12,
            dyke: 0.09,
            sill: 0.12,
            spheroid: 0.06,
            earthquake: 0.06,
            unidentified: 0.05,
        }
    }
}

impl ClassProportions {
    /// Parses `none=0.5,mogi=0.1,...` (missing classes keep their default weight).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut p = Self::default();
        for part in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected CLASS=WEIGHT"))?;
            let v: f64 = v
                .trim()
                .parse()
                .map_err(|e| format!("{part:?}: weight: {e}"))?;
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{part:?}: weight must be finite and ≥ 0"));
            }
            match k.trim().to_ascii_lowercase().as_str() {
                "none" | "non_deformation" => p.none = v,
                "mogi" => p.mogi = v,
                "dyke" => p.dyke = v,
                "sill" => p.sill = v,
                "spheroid" => p.spheroid = v,
                "earthquake" => p.earthquake = v,
                "unidentified" => p.unidentified = v,
                other => {
                    return Err(format!(
                        "unknown class {other:?} (none, mogi, dyke, sill, spheroid, earthquake, unidentified)"
                    ))
                }
            }
        }
        p.check()?;
        Ok(p)
    }

    fn weights(&self) -> [(Option<ActivityType>, f64); 7] {
        [
            (None, self.none),
            (Some(ActivityType::Mogi), self.mogi),
            (Some(ActivityType::Dyke), self.dyke),
            (Some(ActivityType::Sill), self.sill),
            (Some(ActivityType::Spheroid), self.spheroid),
            (Some(ActivityType::Earthquake), self.earthquake),
            (Some(ActivityType::Unidentified), self.unidentified),
        ]
    }

    pub fn check(&self) -> Result<(), String> {
        let w = self.weights();
        if w.iter().any(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            return Err("class weights must be finite and ≥ 0".into());
        }
        if w.iter().map(|(_, v)| v).sum::<f64>() <= 0.0 {
            return Err("class weights sum to 0".into());
        }
        Ok(())
    }

    fn draw(&self, rng: &mut impl Rng) -> Option<ActivityType> {
        let w = self.weights();
        let total: f64 = w.iter().map(|(_, v)| v).sum();
        let mut u = rng.random::<f64>() * total;
        for (class, v) in w {
            if u < v {
                return class;
            }
            u -= v;
        }
        w.iter().rev().find(|(_, v)| *v > 0.0).and_then(|(c, _)| *c)
    }

    /// Weights of the deformation classes only (for extra sources in crowded frames).
    fn draw_deformation(&self, rng: &mut impl Rng) -> ActivityType {
        let only = Self { none: 0.0, ..*self };
        if only.check().is_err() {
            return ActivityType::Mogi;
        }
        only.draw(rng).unwrap_or(ActivityType::Mogi)
    }
}

/// Multipliers and rates of the nuisance signals. 1.0 is the realistic default; 0 switches a
/// signal off (then its annotation flag is never set).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NuisanceStrengths {
    /// Scales both atmospheric screens (stratified coefficient and turbulent σ).
    pub atmosphere: f64,
    /// Scales the orbital ramp gradient.
    pub orbital: f64,
    /// Scales decorrelation (1 − coherence) and so the phase noise.
    pub decorrelation: f64,
    /// Probability of a processing error (debursting or swath merging).
    pub processing_error_rate: f64,
    /// Probability of glacier fringes (frames with a glaciated summit).
    pub glacier_rate: f64,
    /// Probability of image artifacts.
    pub artifact_rate: f64,
    /// Probability of a corrupted frame.
    pub corrupted_rate: f64,
    /// Goldstein filter exponent (0 = unfiltered).
    pub goldstein_alpha: f64,
}

impl Default for NuisanceStrengths {
    /// Hephaestus rates for the rare flags (processing error 2.5 %, glacier 0.4 %, artifacts
    /// 0.3 %, corrupted 1.6 %), LiCSAR's filter strength.
    fn default() -> Self {
        Self {
            atmosphere: 1.0,
            orbital: 1.0,
            decorrelation: 1.0,
            processing_error_rate: 0.025,
            glacier_rate: 0.004,
            artifact_rate: 0.003,
            corrupted_rate: 0.016,
            goldstein_alpha: 0.8,
        }
    }
}

impl NuisanceStrengths {
    /// Everything off: clean deformation on coherent land.
    pub fn off() -> Self {
        Self {
            atmosphere: 0.0,
            orbital: 0.0,
            decorrelation: 0.0,
            processing_error_rate: 0.0,
            glacier_rate: 0.0,
            artifact_rate: 0.0,
            corrupted_rate: 0.0,
            goldstein_alpha: 0.0,
        }
    }

    pub fn check(&self) -> Result<(), String> {
        let scales = [
            ("atmosphere", self.atmosphere),
            ("orbital", self.orbital),
            ("decorrelation", self.decorrelation),
            ("goldstein_alpha", self.goldstein_alpha),
        ];
        for (name, v) in scales {
            if !(v.is_finite() && (0.0..=10.0).contains(&v)) {
                return Err(format!("nuisance {name} = {v:?} is outside [0, 10]"));
            }
        }
        let rates = [
            ("processing_error_rate", self.processing_error_rate),
            ("glacier_rate", self.glacier_rate),
            ("artifact_rate", self.artifact_rate),
            ("corrupted_rate", self.corrupted_rate),
        ];
        for (name, v) in rates {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(format!("nuisance {name} = {v:?} is outside [0, 1]"));
            }
        }
        Ok(())
    }
}

/// Relative weights of the intensity classes a volcanic source is scaled to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntensityProportions {
    pub low: f64,
    pub medium: f64,
    pub high: f64,
}

impl Default for IntensityProportions {
    /// Hephaestus: Low 43 %, Medium 25 %, High 32 % of the labelled intensities.
    fn default() -> Self {
        Self {
            low: 0.4,
            medium: 0.3,
            high: 0.3,
        }
    }
}

impl IntensityProportions {
    fn draw(&self, rng: &mut impl Rng) -> Intensity {
        let total = self.low + self.medium + self.high;
        let u = rng.random::<f64>() * total;
        if u < self.low {
            Intensity::Low
        } else if u < self.low + self.medium {
            Intensity::Medium
        } else {
            Intensity::High
        }
    }
}

/// Everything configurable about generated scenes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneConfig {
    pub width: usize,
    pub height: usize,
    /// Ground pixel spacing in metres (Hephaestus previews ≈ 370 m).
    pub pixel_m: f64,
    pub style: StyleChoice,
    pub classes: ClassProportions,
    pub intensities: IntensityProportions,
    /// Probability that a deformation frame holds 2–4 sources (`is_crowd`); Hephaestus: ≈ 18 %.
    pub crowd_rate: f64,
    /// Number of distinct frames (volcanoes) per seed; Hephaestus has 38.
    pub frame_pool: usize,
    pub nuisance: NuisanceStrengths,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            width: 512,
            height: 512,
            pixel_m: 370.0,
            style: StyleChoice::Mixed,
            classes: ClassProportions::default(),
            intensities: IntensityProportions::default(),
            crowd_rate: 0.18,
            frame_pool: 38,
            nuisance: NuisanceStrengths::default(),
        }
    }
}

/// Deformation source geometry, in the parameter names of `insar-mm physics displacement`
/// (SI units, angles in degrees, positions in metres from the frame centre). The strength
/// (`dv`, `opening`, `slip`, `pressure_over_mu`) is a unit-sized value with the right sign;
/// the generator rescales it to the target fringe count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", content = "params", rename_all = "lowercase")]
pub enum SourceParams {
    Mogi {
        e: f64,
        n: f64,
        depth: f64,
        dv: f64,
    },
    Okada {
        e: f64,
        n: f64,
        depth: f64,
        strike: f64,
        dip: f64,
        rake: f64,
        length: f64,
        width: f64,
        slip: f64,
        opening: f64,
    },
    Penny {
        e: f64,
        n: f64,
        depth: f64,
        radius: f64,
        pressure_over_mu: f64,
    },
    Spheroid {
        e: f64,
        n: f64,
        depth: f64,
        semi_major: f64,
        aspect_ratio: f64,
        pressure_over_mu: f64,
        mu: f64,
        plunge: f64,
        trend: f64,
    },
}

impl SourceParams {
    /// Surface position `(e, n)` of the source centre.
    pub fn position(&self) -> (f64, f64) {
        match *self {
            SourceParams::Mogi { e, n, .. }
            | SourceParams::Okada { e, n, .. }
            | SourceParams::Penny { e, n, .. }
            | SourceParams::Spheroid { e, n, .. } => (e, n),
        }
    }

    /// The same source with its strength multiplied by `k` (displacement is linear in it).
    pub fn scaled(&self, k: f64) -> Self {
        let mut s = self.clone();
        match &mut s {
            SourceParams::Mogi { dv, .. } => *dv *= k,
            SourceParams::Okada { slip, opening, .. } => {
                *slip *= k;
                *opening *= k;
            }
            SourceParams::Penny {
                pressure_over_mu, ..
            }
            | SourceParams::Spheroid {
                pressure_over_mu, ..
            } => *pressure_over_mu *= k,
        }
        s
    }
}

/// One deformation source of a scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneSource {
    pub activity: ActivityType,
    pub params: SourceParams,
    /// Intensity class the strength is scaled to (`None` for earthquakes, which Hephaestus
    /// does not grade; they still get a fringe target).
    pub target_intensity: Intensity,
    /// Target number of LOS fringes (peak-to-peak inside the mask / (λ/2)).
    pub target_fringes: f64,
    /// Inflation (uplift, Unrest) or deflation (Rebound); earthquakes: true.
    pub inflation: bool,
}

/// The frame a scene belongs to: same ID, pass, volcano and terrain for every pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameInfo {
    pub frame_id: String,
    pub ascending: bool,
    /// Flight azimuth, degrees clockwise from north.
    pub heading_deg: f64,
    /// Incidence at the frame centre.
    pub incidence_deg: f64,
    /// Seed of the terrain (volcano + background + sea level), fixed per frame.
    pub terrain_seed: u64,
    /// First acquisition of the 6-day grid (days since 1970), fixed per frame.
    pub epoch_day: i64,
}

/// What a nuisance twin ([`SceneConfig::nuisance_twin`]) keeps of its scene's terrain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TwinTerrain {
    /// The frame's terrain: the twin is another pair of the same frame.
    #[default]
    Same,
    /// Another terrain: only the deformation sources (and the frame geometry) are shared;
    /// the mask, where the deformation is observable, can change where water or
    /// decorrelation moves.
    Redrawn,
}

/// Nuisance parameters drawn for one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NuisanceParams {
    /// Spread of each acquisition's stratified delay gradient, m of delay per km of height
    /// (the differenced gradient has √2 times this spread; 0.006 is typical).
    pub strat_spread_m_per_km: f64,
    /// Standard deviation of the turbulent screen, metres.
    pub turb_sigma_m: f64,
    /// Scale of the orbital ramp gradient (1 = S1 residuals of 0–3 cm per 100 km).
    pub orbital_scale: f64,
    /// Scale of decorrelation (1 − coherence).
    pub decorrelation: f64,
    /// 0 none, 2 debursting, 3 swath merging.
    pub processing_error: u8,
    pub glacier: bool,
    pub artifacts: bool,
    pub corrupted: bool,
    pub goldstein_alpha: f64,
}

/// Everything random about one synthetic interferogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub index: u64,
    pub unique_id: u64,
    pub width: usize,
    pub height: usize,
    pub pixel_m: f64,
    pub frame: FrameInfo,
    pub primary: Date,
    pub secondary: Date,
    pub style: RenderStyle,
    pub sources: Vec<SceneSource>,
    pub nuisance: NuisanceParams,
    /// Seed of every random field of this pair (atmosphere, noise, speckle, errors).
    pub field_seed: u64,
    /// A nuisance twin's own seed for the nuisance fields (atmosphere, ramp, coherence,
    /// noise, errors, artefacts, amplitude); `None` = `field_seed`. The frame edges keep
    /// `field_seed`, so a twin has the same valid pixels and deformation mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nuisance_seed: Option<u64>,
}

impl Scene {
    pub fn baseline_days(&self) -> i64 {
        self.primary.days_until(self.secondary)
    }
}

/// LiCSAR renderer change (licsar_proc, October 2020).
pub fn style_change_date() -> Date {
    Date {
        year: 2020,
        month: 10,
        day: 1,
    }
}

/// The first and last Sentinel-1 dates of Hephaestus.
const FIRST_DAY: (u16, u8, u8) = (2014, 10, 7);
const LAST_DAY: (u16, u8, u8) = (2021, 11, 14);

fn day_number(d: (u16, u8, u8)) -> i64 {
    Date {
        year: d.0,
        month: d.1,
        day: d.2,
    }
    .days_since_epoch()
}

/// The calendar date `days` after 1970-01-01 (Howard Hinnant's civil_from_days).
pub fn date_from_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    Date {
        year: (y + i64::from(m <= 2)) as u16,
        month: m as u8,
        day: d as u8,
    }
}

/// The RNG of `(seed, stream)`: one independent ChaCha stream per sample.
pub fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Mixed into a scene's field seed for the RNG of its nuisance twins.
const TWIN_SALT: u64 = 0x7717_0a1f_5eed_0001;

/// Stream ids above this are frame streams (sample indices stay below it).
const FRAME_STREAM_BASE: u64 = 1 << 62;

/// Temporal baselines and their Hephaestus frequencies (6–48 days typical; the rest is
/// drawn from 54–414 days).
const BASELINES: [(i64, f64); 7] = [
    (6, 0.14),
    (12, 0.225),
    (18, 0.12),
    (24, 0.21),
    (36, 0.10),
    (48, 0.08),
    (0, 0.125),
];

impl SceneConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.width < 16 || self.height < 16 || self.width > 8192 || self.height > 8192 {
            return Err(format!(
                "size {}x{} must lie in 16..=8192 on both sides",
                self.width, self.height
            ));
        }
        if !(self.pixel_m.is_finite() && (10.0..=5000.0).contains(&self.pixel_m)) {
            return Err(format!(
                "pixel size {} m is outside 10..=5000",
                self.pixel_m
            ));
        }
        if !(0.0..=1.0).contains(&self.crowd_rate) {
            return Err(format!("crowd rate {} is outside [0, 1]", self.crowd_rate));
        }
        if self.frame_pool == 0 {
            return Err("frame pool must hold at least one frame".into());
        }
        let i = self.intensities;
        if [i.low, i.medium, i.high]
            .iter()
            .any(|v| !(v.is_finite() && *v >= 0.0))
            || i.low + i.medium + i.high <= 0.0
        {
            return Err("intensity weights must be ≥ 0 and not all 0".into());
        }
        self.classes.check()?;
        self.nuisance.check()
    }

    /// Frame `k` of the pool under `seed`.
    pub fn frame(&self, seed: u64, k: u64) -> FrameInfo {
        let mut rng = stream_rng(seed, FRAME_STREAM_BASE + k);
        let track = rng.random_range(1..=175u32);
        let ascending = rng.random_bool(0.5);
        let burst = rng.random_range(0..13_000u32);
        let swaths: u32 = rng.random_range(0..=999_999u32);
        let frame_id = format!(
            "{track:03}{}_{burst:05}_{swaths:06}",
            if ascending { 'A' } else { 'D' }
        );
        // Sentinel-1: ascending ≈ −10…−13°, descending ≈ 190…193°.
        let heading_deg = if ascending {
            -rng.random_range(10.0..13.0)
        } else {
            rng.random_range(190.0..193.0)
        };
        let incidence_deg = rng.random_range(31.0..44.0);
        let terrain_seed = rng.next_u64();
        let epoch_day = day_number(FIRST_DAY) + rng.random_range(0..6);
        FrameInfo {
            frame_id,
            ascending,
            heading_deg,
            incidence_deg,
            terrain_seed,
            epoch_day,
        }
    }

    /// Sample `index` under `seed`; uniqueID = index + 1.
    pub fn scene(&self, seed: u64, index: u64) -> Scene {
        let mut rng = stream_rng(seed, index);
        let frame_no = rng.random_range(0..self.frame_pool as u64);
        let frame = self.frame(seed, frame_no);

        // Dates on the frame's 6-day acquisition grid.
        let baseline = draw_baseline(&mut rng);
        let last = day_number(LAST_DAY) - baseline;
        let slots = ((last - frame.epoch_day) / 6).max(1);
        let primary_day = frame.epoch_day + 6 * rng.random_range(0..slots);
        let primary = date_from_days(primary_day);
        let secondary = date_from_days(primary_day + baseline);
        let style = self.style_for(secondary);

        let anchor = self.volcano(&frame);
        let mut sources = self.draw_sources(&mut rng, anchor);
        let nuisance = self.draw_nuisance(&mut rng, baseline);
        if nuisance.corrupted {
            // Hephaestus never labels deformation on a corrupted frame.
            sources.clear();
        }
        let field_seed = rng.next_u64();
        Scene {
            index,
            unique_id: index + 1,
            width: self.width,
            height: self.height,
            pixel_m: self.pixel_m,
            frame,
            primary,
            secondary,
            style,
            sources,
            nuisance,
            field_seed,
            nuisance_seed: None,
        }
    }

    /// Nuisance twin `draw` of `scene` (a scene of this config): the same frame, terrain
    /// and deformation sources (so the same mask and labels), with independent nuisance
    /// draws — acquisition dates (hence temporal decorrelation and, for the mixed style,
    /// the renderer), atmosphere, orbital ramp, coherence and noise, processing errors,
    /// glacier and artefact flags. A corrupted frame stays corrupted (it never carries
    /// deformation). SimCLR uses two twins as a positive pair (issue 21): what they share
    /// is what the encoder should keep. With [`TwinTerrain::Redrawn`] the twin also gets
    /// another terrain (elevation, water, radar geometry: the coherence pattern and the
    /// topography-correlated delay), so that only the deformation is shared.
    pub fn nuisance_twin(&self, scene: &Scene, draw: u64, terrain: TwinTerrain) -> Scene {
        let mut rng = stream_rng(scene.field_seed ^ TWIN_SALT, draw);
        let frame = &scene.frame;
        let baseline = draw_baseline(&mut rng);
        let last = day_number(LAST_DAY) - baseline;
        let slots = ((last - frame.epoch_day) / 6).max(1);
        let primary_day = frame.epoch_day + 6 * rng.random_range(0..slots);
        let primary = date_from_days(primary_day);
        let secondary = date_from_days(primary_day + baseline);
        let mut nuisance = self.draw_nuisance(&mut rng, baseline);
        nuisance.corrupted = scene.nuisance.corrupted;
        let nuisance_seed = Some(rng.next_u64());
        let mut frame = frame.clone();
        if terrain == TwinTerrain::Redrawn {
            frame.terrain_seed = rng.next_u64();
        }
        Scene {
            primary,
            secondary,
            style: self.style_for(secondary),
            nuisance,
            nuisance_seed,
            frame,
            ..scene.clone()
        }
    }

    /// The renderer of a pair whose later acquisition is `secondary`.
    fn style_for(&self, secondary: Date) -> RenderStyle {
        match self.style {
            StyleChoice::Licsar2020 => RenderStyle::Licsar2020,
            StyleChoice::Gamma => RenderStyle::Gamma,
            StyleChoice::Mixed if secondary >= style_change_date() => RenderStyle::Licsar2020,
            StyleChoice::Mixed => RenderStyle::Gamma,
        }
    }

    /// The terrain of a frame (fixed by its terrain seed); the generator builds the same.
    pub fn terrain_spec(&self, frame: &FrameInfo) -> super::terrain::TerrainSpec {
        let g = super::grid::Geometry::new(self.width, self.height, self.pixel_m);
        super::terrain::TerrainSpec::random(g, &mut stream_rng(frame.terrain_seed, 0))
    }

    /// Position and radius (m) of the frame's main volcano.
    fn volcano(&self, frame: &FrameInfo) -> (f64, f64, f64) {
        let spec = self.terrain_spec(frame);
        spec.edifices
            .first()
            .map_or((0.0, 0.0, 5000.0), |e| (e.east, e.north, e.radius_m))
    }

    fn draw_sources(&self, rng: &mut ChaCha8Rng, volcano: (f64, f64, f64)) -> Vec<SceneSource> {
        let Some(first) = self.classes.draw(rng) else {
            return Vec::new();
        };
        let count = if rng.random_bool(self.crowd_rate) {
            // Hephaestus crowds: 2 (65 %), 3 (24 %), 4 (11 %).
            let u = rng.random::<f64>();
            if u < 0.65 {
                2
            } else if u < 0.89 {
                3
            } else {
                4
            }
        } else {
            1
        };
        let half_w = self.width as f64 * self.pixel_m / 2.0;
        let half_h = self.height as f64 * self.pixel_m / 2.0;
        let mut out: Vec<SceneSource> = Vec::with_capacity(count);
        for k in 0..count {
            // Crowds repeat the first type half of the time ("Two sill-type patterns").
            let activity = if k == 0 || rng.random_bool(0.5) {
                first
            } else {
                self.classes.draw_deformation(rng)
            };
            // Keep sources inside the central 70 % and apart from each other, so every
            // pattern has its own polygon.
            let min_sep = 0.35 * half_w.min(half_h);
            let mut pos = (0.0, 0.0);
            for attempt in 0..30 {
                // Volcanic sources sit under the volcano (within about its radius) most of
                // the time; earthquakes and the rest anywhere in the central part.
                let near =
                    activity != ActivityType::Earthquake && attempt < 10 && rng.random_bool(0.75);
                pos = if near {
                    let r = volcano.2.clamp(2000.0, 15000.0) * rng.random::<f64>().sqrt();
                    let t = rng.random_range(0.0..std::f64::consts::TAU);
                    (
                        (volcano.0 + r * t.cos()).clamp(-0.7 * half_w, 0.7 * half_w),
                        (volcano.1 + r * t.sin()).clamp(-0.7 * half_h, 0.7 * half_h),
                    )
                } else {
                    (
                        rng.random_range(-0.7..0.7) * half_w,
                        rng.random_range(-0.7..0.7) * half_h,
                    )
                };
                let far = out.iter().all(|s| {
                    let (e, n) = s.params.position();
                    ((e - pos.0).powi(2) + (n - pos.1).powi(2)).sqrt() > min_sep
                });
                if far {
                    break;
                }
            }
            out.push(self.draw_source(rng, activity, pos));
        }
        out
    }

    fn draw_source(
        &self,
        rng: &mut ChaCha8Rng,
        activity: ActivityType,
        (e, n): (f64, f64),
    ) -> SceneSource {
        // Hephaestus: Rebound in 7 % of the deformation interferograms (mostly Mogi and
        // Sill deflation); dykes and earthquakes are not "deflating".
        let deflating = match activity {
            ActivityType::Mogi | ActivityType::Sill | ActivityType::Spheroid => {
                rng.random_bool(0.2)
            }
            ActivityType::Unidentified => rng.random_bool(0.15),
            ActivityType::Dyke | ActivityType::Earthquake => false,
        };
        let sign = if deflating { -1.0 } else { 1.0 };
        let target_intensity = if activity == ActivityType::Earthquake {
            Intensity::None
        } else {
            self.intensities.draw(rng)
        };
        let target_fringes = match target_intensity {
            Intensity::Low => rng.random_range(1.15..1.9),
            Intensity::Medium => rng.random_range(2.15..3.9),
            // Log-uniform 4.2–12 (dykes up to 20): dense fringes decorrelate like real ones.
            Intensity::High => {
                let top: f64 = if activity == ActivityType::Dyke {
                    20.0
                } else {
                    12.0
                };
                (rng.random_range(4.2f64.ln()..top.ln())).exp()
            }
            Intensity::None => (rng.random_range(3.0f64.ln()..20.0f64.ln())).exp(),
        };
        let params = match activity {
            ActivityType::Mogi => SourceParams::Mogi {
                e,
                n,
                depth: rng.random_range(2000.0..8000.0),
                dv: sign * 1.0e6,
            },
            ActivityType::Sill => {
                let length = rng.random_range(3000.0..12000.0);
                SourceParams::Okada {
                    e,
                    n,
                    depth: rng.random_range(1500.0..4500.0),
                    strike: rng.random_range(0.0..360.0),
                    dip: rng.random_range(0.0..4.0),
                    rake: 0.0,
                    length,
                    width: length * rng.random_range(0.5..1.0),
                    slip: 0.0,
                    opening: sign * 0.5,
                }
            }
            ActivityType::Dyke => {
                let dip: f64 = rng.random_range(75.0..90.0);
                let top = rng.random_range(0.0..2000.0);
                let bottom = top + rng.random_range(2000.0..6000.0);
                SourceParams::Okada {
                    e,
                    n,
                    depth: (top + bottom) / 2.0,
                    strike: rng.random_range(0.0..360.0),
                    dip,
                    rake: 0.0,
                    length: rng.random_range(4000.0..15000.0),
                    width: (bottom - top) / dip.to_radians().sin(),
                    slip: 0.0,
                    opening: 0.5,
                }
            }
            ActivityType::Spheroid => {
                let semi_major: f64 = rng.random_range(1000.0..3000.0);
                SourceParams::Spheroid {
                    e,
                    n,
                    depth: rng.random_range(2.0 * semi_major.max(2500.0)..9000.0),
                    semi_major,
                    aspect_ratio: rng.random_range(0.2..0.8),
                    pressure_over_mu: sign * 1e-3,
                    mu: 3.0e10,
                    plunge: rng.random_range(20.0..89.0),
                    trend: rng.random_range(0.0..360.0),
                }
            }
            ActivityType::Earthquake => {
                // Mechanism: strike-slip 40 %, normal 30 %, thrust 30 % (dips by type).
                let u = rng.random::<f64>();
                let (dip, rake) = if u < 0.4 {
                    (
                        rng.random_range(60.0..90.0),
                        if rng.random_bool(0.5) { 0.0 } else { 180.0 }
                            + rng.random_range(-15.0..15.0),
                    )
                } else if u < 0.7 {
                    (
                        rng.random_range(40.0..60.0),
                        -90.0 + rng.random_range(-20.0..20.0),
                    )
                } else {
                    (
                        rng.random_range(20.0..40.0),
                        90.0 + rng.random_range(-20.0..20.0),
                    )
                };
                let length: f64 = rng.random_range(5000.0..30000.0);
                let width = (length * rng.random_range(0.4..0.8)).min(20000.0);
                let top = rng.random_range(500.0..5000.0);
                let dip_rad = f64::to_radians(dip);
                SourceParams::Okada {
                    e,
                    n,
                    depth: top + width / 2.0 * dip_rad.sin(),
                    strike: rng.random_range(0.0..360.0),
                    dip,
                    rake,
                    length,
                    width,
                    slip: 1.0,
                    opening: 0.0,
                }
            }
            ActivityType::Unidentified => SourceParams::Penny {
                e,
                n,
                depth: rng.random_range(1000.0..4000.0),
                radius: rng.random_range(1000.0..4000.0),
                pressure_over_mu: sign * 1e-3,
            },
        };
        SceneSource {
            activity,
            params,
            target_intensity,
            target_fringes,
            inflation: !deflating,
        }
    }

    fn draw_nuisance(&self, rng: &mut ChaCha8Rng, baseline: i64) -> NuisanceParams {
        let s = &self.nuisance;
        // Stratified: per-acquisition spread around 0.6 cm/km, varying from pair to pair
        // (the differenced gradient is mostly below 1 cm/km, up to 3 cm/km).
        let strat = 0.006 * rng.random_range(0.4..1.6) * s.atmosphere;
        // Turbulent σ 0.25–1 cm (log-uniform), 5 % heavy cases to 2 cm, 15 % calm pairs:
        // after looking at the gallery, the note's 0.3–1.5 cm gave too many frames with
        // several turbulent fringes per patch (the checklist: 0.5–2 fringes over tens of km).
        let u = rng.random::<f64>();
        let turb = if u < 0.15 {
            rng.random_range(0.0005..0.0025)
        } else if u < 0.95 {
            rng.random_range(0.0025f64.ln()..0.01f64.ln()).exp()
        } else {
            rng.random_range(0.01..0.02)
        } * s.atmosphere;
        let decorrelation = s.decorrelation * (1.0 + (baseline as f64 / 60.0).min(3.0)) / 2.0;
        let processing_error = if rng.random_bool(s.processing_error_rate) {
            // Hephaestus: swath merging 324, debursting 172.
            if rng.random_bool(0.65) {
                3
            } else {
                2
            }
        } else {
            0
        };
        NuisanceParams {
            strat_spread_m_per_km: strat,
            turb_sigma_m: turb,
            orbital_scale: s.orbital,
            decorrelation,
            processing_error,
            glacier: rng.random_bool(s.glacier_rate),
            artifacts: rng.random_bool(s.artifact_rate),
            corrupted: rng.random_bool(s.corrupted_rate),
            goldstein_alpha: s.goldstein_alpha,
        }
    }
}

/// Typical extent of a real Hephaestus frame preview (pixels), for placing sources of real
/// annotations on frames of another size.
const REAL_FRAME_PX: (f64, f64) = (1100.0, 920.0);

/// A stable 64-bit hash of a string (FNV-1a), for per-frame seeds of real frame IDs.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A scene that reproduces a real annotation (`--from-annotations`): its uniqueID, frame
/// ID (pass from the `A`/`D` letter), dates, one source per deformation pattern of the same
/// type and intensity placed where its polygon lies, and nuisance signals chosen to give its
/// flags. `attempt` selects another draw of everything random (the caller retries until the
/// measured labels match).
pub fn scene_for_annotation(
    config: &SceneConfig,
    seed: u64,
    index: u64,
    attempt: u64,
    real: &crate::data::annotation::Annotation,
) -> Scene {
    let mut rng = stream_rng(seed ^ attempt.wrapping_mul(0x9e37_79b9_7f4a_7c15), index);
    let mut frame = config.frame(seed, fnv1a(&real.frame_id) % (1 << 40));
    frame.frame_id = real.frame_id.clone();
    let pass = real.frame_id.as_bytes().get(3).copied();
    let ascending = match pass {
        Some(b'A') => true,
        Some(b'D') => false,
        _ => frame.ascending,
    };
    if ascending != frame.ascending {
        let jitter = (fnv1a(&real.frame_id) % 3000) as f64 / 1000.0;
        frame.heading_deg = if ascending {
            -(10.0 + jitter)
        } else {
            190.0 + jitter
        };
        frame.ascending = ascending;
    }
    let style = match config.style {
        StyleChoice::Licsar2020 => RenderStyle::Licsar2020,
        StyleChoice::Gamma => RenderStyle::Gamma,
        StyleChoice::Mixed if real.secondary_date >= style_change_date() => RenderStyle::Licsar2020,
        StyleChoice::Mixed => RenderStyle::Gamma,
    };
    let (w, h) = (config.width as f64, config.height as f64);
    let mut sources = Vec::new();
    for d in real.deformations() {
        let (cx, cy) = d
            .polygon
            .map(|p| {
                let n = p.num_vertices().max(1) as f64;
                let (sx, sy) = p
                    .vertices()
                    .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
                (sx / n, sy / n)
            })
            .unwrap_or((w / 2.0, h / 2.0));
        let (fx, fy) = if cx < w && cy < h {
            (cx / w, cy / h)
        } else {
            (cx / REAL_FRAME_PX.0, cy / REAL_FRAME_PX.1)
        };
        let (fx, fy) = (fx.clamp(0.15, 0.85), fy.clamp(0.15, 0.85));
        let pos = (
            (fx - 0.5) * w * config.pixel_m,
            (0.5 - fy) * h * config.pixel_m,
        );
        let mut src = config.draw_source(&mut rng, d.activity, pos);
        if d.activity != ActivityType::Earthquake {
            let target = match d.intensity {
                Intensity::None => src.target_intensity,
                i => i,
            };
            src.target_intensity = target;
            src.target_fringes = match target {
                Intensity::Low => rng.random_range(1.15..1.9),
                Intensity::Medium => rng.random_range(2.15..3.9),
                _ => rng.random_range(4.2f64.ln()..10.0f64.ln()).exp(),
            };
        }
        // Phase: Rebound = deflation, Unrest = inflation.
        let deflate = real.phase == crate::data::annotation::Phase::Rebound
            && !matches!(d.activity, ActivityType::Dyke | ActivityType::Earthquake);
        if deflate == src.inflation {
            src.params = src.params.scaled(-1.0);
            src.inflation = !deflate;
        }
        sources.push(src);
    }
    let atm = real.atmospheric_fringes;
    let nuisance = NuisanceParams {
        strat_spread_m_per_km: if atm & 1 == 1 {
            rng.random_range(0.012..0.025)
        } else {
            0.0005
        },
        turb_sigma_m: if atm & 2 == 2 {
            rng.random_range(0.008..0.02)
        } else {
            0.001
        },
        orbital_scale: if real.orbital_fringes > 0 { 4.0 } else { 0.5 },
        decorrelation: if real.no_info > 0 {
            10.0
        } else if real.low_coherence > 0 {
            2.5
        } else {
            0.3
        },
        processing_error: real.processing_error,
        glacier: real.glacier_fringes > 0,
        artifacts: real.image_artifacts > 0,
        corrupted: real.corrupted > 0,
        goldstein_alpha: config.nuisance.goldstein_alpha,
    };
    Scene {
        index,
        unique_id: real.unique_id,
        width: config.width,
        height: config.height,
        pixel_m: config.pixel_m,
        frame,
        primary: real.primary_date,
        secondary: real.secondary_date,
        style,
        sources,
        nuisance,
        field_seed: rng.next_u64(),
        nuisance_seed: None,
    }
}

fn draw_baseline(rng: &mut impl Rng) -> i64 {
    let u = rng.random::<f64>();
    let mut acc = 0.0;
    for (days, p) in BASELINES {
        acc += p;
        if u < acc {
            if days > 0 {
                return days;
            }
            break;
        }
    }
    6 * rng.random_range(9..=69)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_day_numbers() {
        for days in [-1000, 0, 16_000, 18_536, 18_900, 19_000, 20_000] {
            let d = date_from_days(days);
            assert_eq!(d.days_since_epoch(), days, "{d}");
            assert!(Date::new(d.year, d.month, d.day).is_ok());
        }
        assert_eq!(date_from_days(0).to_string(), "19700101");
        assert_eq!(date_from_days(18_322).to_string(), "20200301");
    }

    #[test]
    fn scenes_are_pure_functions_of_seed_and_index() {
        let c = SceneConfig::default();
        assert_eq!(c.scene(7, 11), c.scene(7, 11));
        assert_ne!(c.scene(7, 11), c.scene(7, 12));
        assert_ne!(c.scene(7, 11), c.scene(8, 11));
        // Frames are shared: the same frame ID always carries the same pass and terrain.
        let mut seen = std::collections::HashMap::new();
        for i in 0..300 {
            let s = c.scene(3, i);
            let prev = seen.insert(s.frame.frame_id.clone(), s.frame.clone());
            if let Some(prev) = prev {
                assert_eq!(prev, s.frame);
            }
        }
        assert!(
            seen.len() <= c.frame_pool && seen.len() > 20,
            "{}",
            seen.len()
        );
    }

    #[test]
    fn dates_baselines_and_styles_are_sentinel1_like() {
        let c = SceneConfig::default();
        let mut styles = [0usize; 2];
        let mut typical = 0;
        for i in 0..2000 {
            let s = c.scene(1, i);
            let b = s.baseline_days();
            assert!(b >= 6 && b % 6 == 0 && b <= 414, "{b}");
            typical += usize::from(b <= 48);
            assert!(s.primary >= date_from_days(day_number(FIRST_DAY)));
            assert!(s.secondary <= date_from_days(day_number(LAST_DAY)));
            assert_eq!((s.primary.days_since_epoch() - s.frame.epoch_day) % 6, 0);
            let want = if s.secondary >= style_change_date() {
                RenderStyle::Licsar2020
            } else {
                RenderStyle::Gamma
            };
            assert_eq!(s.style, want);
            styles[usize::from(s.style == RenderStyle::Gamma)] += 1;
            let f = &s.frame;
            assert_eq!(f.frame_id.len(), 17, "{}", f.frame_id);
            assert_eq!(f.ascending, f.frame_id.as_bytes()[3] == b'A');
            assert_eq!(f.ascending, f.heading_deg < 0.0);
        }
        assert!(typical > 1650 && typical < 1850, "{typical}");
        assert!(styles[0] > 200 && styles[1] > 1000, "{styles:?}");
    }

    #[test]
    fn class_proportions_are_followed_and_configurable() {
        let mut c = SceneConfig::default();
        let n = 3000;
        let pos = (0..n)
            .filter(|&i| !c.scene(5, i).sources.is_empty())
            .count();
        assert!((1300..1700).contains(&pos), "{pos}");
        c.classes = ClassProportions::parse(
            "none=0,mogi=0,dyke=1,sill=0,spheroid=0,earthquake=0,unidentified=0",
        )
        .unwrap();
        c.crowd_rate = 0.0;
        for i in 0..100 {
            let s = c.scene(5, i);
            assert_eq!(s.sources.len(), 1);
            assert_eq!(s.sources[0].activity, ActivityType::Dyke);
        }
        assert!(ClassProportions::parse("volcano=1").is_err());
        assert!(ClassProportions::parse("mogi=-1").is_err());
        assert!(ClassProportions::parse(
            "none=0,mogi=0,dyke=0,sill=0,spheroid=0,earthquake=0,unidentified=0"
        )
        .is_err());
    }

    #[test]
    fn crowds_sources_signs_and_targets_are_consistent() {
        let c = SceneConfig {
            crowd_rate: 0.5,
            ..SceneConfig::default()
        };
        let mut crowds = 0;
        for i in 0..1000 {
            let s = c.scene(9, i);
            crowds += usize::from(s.sources.len() > 1);
            for src in &s.sources {
                let (e, n) = src.params.position();
                assert!(e.abs() < 0.7 * 512.0 * 370.0 / 2.0 && n.abs() < 0.7 * 512.0 * 370.0 / 2.0);
                match src.target_intensity {
                    Intensity::Low => assert!((1.0..2.0).contains(&src.target_fringes)),
                    Intensity::Medium => assert!((2.0..4.0).contains(&src.target_fringes)),
                    Intensity::High => assert!(src.target_fringes >= 4.0),
                    Intensity::None => assert_eq!(src.activity, ActivityType::Earthquake),
                }
                if matches!(src.activity, ActivityType::Dyke | ActivityType::Earthquake) {
                    assert!(src.inflation);
                }
                if let SourceParams::Okada { dip, width, .. } = src.params {
                    assert!((0.0..=90.0).contains(&dip) && width > 0.0);
                }
            }
        }
        // Half the frames deform (default classes), half of those are crowds.
        assert!((190..330).contains(&crowds), "{crowds}");
    }

    #[test]
    fn scaling_multiplies_only_the_strength() {
        let p = SourceParams::Okada {
            e: 1.0,
            n: 2.0,
            depth: 3.0,
            strike: 4.0,
            dip: 5.0,
            rake: 6.0,
            length: 7.0,
            width: 8.0,
            slip: 0.5,
            opening: -0.25,
        };
        let SourceParams::Okada {
            slip, opening, e, ..
        } = p.scaled(4.0)
        else {
            unreachable!()
        };
        assert_eq!((slip, opening, e), (2.0, -1.0, 1.0));
    }

    #[test]
    fn bad_configs_are_rejected_with_the_field_name() {
        let mut c = SceneConfig {
            pixel_m: 0.0,
            ..SceneConfig::default()
        };
        assert!(c.check().unwrap_err().contains("pixel"));
        c.pixel_m = 370.0;
        c.nuisance.corrupted_rate = 2.0;
        assert!(c.check().unwrap_err().contains("corrupted_rate"));
        c.nuisance.corrupted_rate = 0.0;
        c.width = 4;
        assert!(c.check().unwrap_err().contains("size"));
    }
}
