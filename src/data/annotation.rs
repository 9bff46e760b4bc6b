//! The Hephaestus annotation schema (one JSON file per interferogram, docs/architecture.md §2.1).
//!
//! The types accept every irregularity of the 19,919 real files: lists of unequal length,
//! `"None"` strings, surrounding whitespace and any letter case in enum strings,
//! `intensity_level` as a string or a list, repeated and unsorted activity lists, integer or
//! float polygon coordinates, and a flat `segmentation_mask` list (one polygon) as the
//! reference code accepts. They serialise with the field names, order and shapes of the real
//! files, so the generator can write annotations through them and a real file read and
//! written back is the same JSON value.
//!
//! Strictness: a missing field, a wrong type or an unknown enum value is an error; use
//! [`parse_annotation`] to get an error naming the field (`label[0]: unknown label "X"`).
//! Fields outside the schema are ignored.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::sample::{LabelVector, NUM_LABELS};

/// Defines a string enum that parses leniently (trimmed, any case) and writes its canonical
/// Hephaestus spelling.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling used in the Hephaestus files.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let t = s.trim();
                $(if t.eq_ignore_ascii_case($text) { return Ok($name::$variant); })+
                let valid: Vec<&str> = vec![$($text),+];
                Err(format!("unknown {} {:?} (expected one of: {})", $what, s, valid.join(", ")))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(de::Error::custom)
            }
        }
    };
}

string_enum!(
    /// An entry of the `label` list.
    Label, "label", {
        NonDeformation => "Non_Deformation",
        Deformation => "Deformation",
        Earthquake => "Earthquake",
    }
);

string_enum!(
    /// An entry of `activity_type`: the source type of one deformation pattern.
    ActivityType, "activity type", {
        Mogi => "Mogi",
        Dyke => "Dyke",
        Sill => "Sill",
        Spheroid => "Spheroid",
        Earthquake => "Earthquake",
        Unidentified => "Unidentified",
    }
);

string_enum!(
    /// An entry of `intensity_level`; `None` is what earthquake entries carry.
    Intensity, "intensity level", {
        Low => "Low",
        Medium => "Medium",
        High => "High",
        None => "None",
    }
);

string_enum!(
    /// Volcano phase; `None` for the earthquake-only interferograms.
    Phase, "phase", {
        Rest => "Rest",
        Unrest => "Unrest",
        Rebound => "Rebound",
        None => "None",
    }
);

impl ActivityType {
    /// Class id in segmentation masks (docs/architecture.md §2.1): Mogi 1 … Unidentified 6.
    pub fn mask_class(self) -> u8 {
        match self {
            ActivityType::Mogi => 1,
            ActivityType::Dyke => 2,
            ActivityType::Sill => 3,
            ActivityType::Spheroid => 4,
            ActivityType::Earthquake => 5,
            ActivityType::Unidentified => 6,
        }
    }

    /// The activity type of mask class `id` (1..=6).
    pub fn from_mask_class(id: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.mask_class() == id)
    }

    /// Index in the 10-label vector (equal to the mask class id).
    pub fn label_index(self) -> usize {
        usize::from(self.mask_class())
    }
}

impl Intensity {
    /// Index in the 10-label vector; `None` has no entry.
    pub fn label_index(self) -> Option<usize> {
        match self {
            Intensity::Low => Some(7),
            Intensity::Medium => Some(8),
            Intensity::High => Some(9),
            Intensity::None => None,
        }
    }

    /// The `save_crops` integer code (0 Low, 1 Medium, 2 High; `None` maps to 0 as there).
    pub fn patch_code(self) -> u8 {
        match self {
            Intensity::Low | Intensity::None => 0,
            Intensity::Medium => 1,
            Intensity::High => 2,
        }
    }
}

impl Phase {
    /// The `save_crops` integer code (0 Rest, 1 Unrest, 2 Rebound; `None` maps to 0 as there).
    pub fn patch_code(self) -> u8 {
        match self {
            Phase::Rest | Phase::None => 0,
            Phase::Unrest => 1,
            Phase::Rebound => 2,
        }
    }
}

/// A calendar date written `YYYYMMDD` in the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Date {
    pub fn new(year: u16, month: u8, day: u8) -> Result<Self, String> {
        if !(1..=12).contains(&month) {
            return Err(format!("month {month} is not in 1..=12"));
        }
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days_in_month = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        if day == 0 || day > days_in_month[usize::from(month - 1)] {
            return Err(format!("day {day} does not exist in {year:04}-{month:02}"));
        }
        Ok(Self { year, month, day })
    }

    /// Days since 1970-01-01 (proleptic Gregorian calendar).
    pub fn days_since_epoch(self) -> i64 {
        // Howard Hinnant's days_from_civil.
        let (m, d) = (i64::from(self.month), i64::from(self.day));
        let y = i64::from(self.year) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// Signed number of days from `self` to `later`.
    pub fn days_until(self, later: Date) -> i64 {
        later.days_since_epoch() - self.days_since_epoch()
    }

    /// `YYYY-MM-DD`, for human-readable output.
    pub fn iso(self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

impl FromStr for Date {
    type Err = String;
    /// Accepts `YYYYMMDD` (the file format) and `YYYY-MM-DD`, surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let digits: String = if t.len() == 10 && t.as_bytes()[4] == b'-' && t.as_bytes()[7] == b'-'
        {
            format!("{}{}{}", &t[0..4], &t[5..7], &t[8..10])
        } else {
            t.to_string()
        };
        if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid date {s:?} (expected YYYYMMDD)"));
        }
        let parse = |r: std::ops::Range<usize>| digits[r].parse::<u16>().unwrap_or(0);
        let (y, m, d) = (parse(0..4), parse(4..6), parse(6..8));
        Date::new(y, m as u8, d as u8).map_err(|e| format!("invalid date {s:?}: {e}"))
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// One polygon as stored: a flat `[x0, y0, x1, y1, …]` list of frame-pixel coordinates
/// (x = column, y = row), floats in the real files.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Polygon(pub Vec<f64>);

/// Largest accepted coordinate magnitude: far beyond any frame, small enough for the
/// rasteriser's 16.16 fixed point.
const MAX_COORDINATE: f64 = 1.0e7;

impl Polygon {
    /// Builds a polygon from vertices `(x, y)`.
    pub fn from_vertices(vertices: &[(f64, f64)]) -> Self {
        Polygon(vertices.iter().flat_map(|&(x, y)| [x, y]).collect())
    }

    /// Vertices `(x, y)`.
    pub fn vertices(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.0.chunks_exact(2).map(|c| (c[0], c[1]))
    }

    pub fn num_vertices(&self) -> usize {
        self.0.len() / 2
    }

    /// Vertices truncated toward zero, as the reference code does (`int(x)`) before
    /// `cv.fillPoly`.
    pub fn integer_vertices(&self) -> Vec<(i64, i64)> {
        self.vertices()
            .map(|(x, y)| (x.trunc() as i64, y.trunc() as i64))
            .collect()
    }

    fn validate(&self) -> Result<(), String> {
        if self.0.len() % 2 != 0 {
            return Err(format!(
                "has {} coordinates; a polygon is a flat [x0, y0, x1, y1, ...] list of even length",
                self.0.len()
            ));
        }
        if self.num_vertices() < 3 {
            return Err(format!(
                "has {} vertices; a polygon needs at least 3",
                self.num_vertices()
            ));
        }
        if let Some(c) = self
            .0
            .iter()
            .find(|c| !c.is_finite() || c.abs() > MAX_COORDINATE)
        {
            return Err(format!("has coordinate {c}, outside ±{MAX_COORDINATE:e}"));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Polygon {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let coords = Vec::<f64>::deserialize(d)?;
        let polygon = Polygon(coords);
        polygon.validate().map_err(de::Error::custom)?;
        Ok(polygon)
    }
}

/// An entry of `segmentation_mask`: a polygon, or a number of a flat single polygon.
enum MaskItem {
    Number(f64),
    Polygon(Vec<f64>),
}

impl<'de> Deserialize<'de> for MaskItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = MaskItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a polygon (a list of numbers) or a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<MaskItem, E> {
                Ok(MaskItem::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MaskItem, E> {
                Ok(MaskItem::Number(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MaskItem, E> {
                Ok(MaskItem::Number(v as f64))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MaskItem, A::Error> {
                let mut coords = Vec::with_capacity(seq.size_hint().unwrap_or(32));
                while let Some(c) = seq.next_element::<f64>()? {
                    coords.push(c);
                }
                Ok(MaskItem::Polygon(coords))
            }
        }
        d.deserialize_any(ItemVisitor)
    }
}

/// `segmentation_mask`: a list of polygons; a flat list of numbers is one polygon (the
/// reference code wraps it the same way).
fn deserialize_polygons<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Polygon>, D::Error> {
    struct PolygonsVisitor;
    impl<'de> Visitor<'de> for PolygonsVisitor {
        type Value = Vec<Polygon>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of polygons (flat [x0, y0, x1, y1, ...] number lists)")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut polygons = Vec::new();
            let mut flat = Vec::new();
            while let Some(item) = seq.next_element::<MaskItem>()? {
                match item {
                    MaskItem::Number(v) => flat.push(v),
                    MaskItem::Polygon(coords) => polygons.push(Polygon(coords)),
                }
            }
            if !flat.is_empty() && !polygons.is_empty() {
                return Err(de::Error::custom(
                    "mixes numbers and lists; expected a list of polygons or one flat polygon",
                ));
            }
            if !flat.is_empty() {
                polygons.push(Polygon(flat));
            }
            for (i, p) in polygons.iter().enumerate() {
                p.validate()
                    .map_err(|e| de::Error::custom(format!("polygon {i} {e}")))?;
            }
            Ok(polygons)
        }
    }
    d.deserialize_seq(PolygonsVisitor)
}

/// `intensity_level`: a list, or a single string (older releases of the dataset).
fn deserialize_intensities<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Intensity>, D::Error> {
    struct IntensitiesVisitor;
    impl<'de> Visitor<'de> for IntensitiesVisitor {
        type Value = Vec<Intensity>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of intensity levels or one intensity string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.parse().map_err(E::custom)?])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element::<Intensity>()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_any(IntensitiesVisitor)
}

/// One Hephaestus annotation (fields exactly as Listing 1 of the paper, in file order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    #[serde(rename = "uniqueID")]
    pub unique_id: u64,
    #[serde(rename = "frameID")]
    pub frame_id: String,
    pub primary_date: Date,
    pub secondary_date: Date,
    pub corrupted: u8,
    /// 0 none, 2 debursting error, 3 swath-merging error.
    pub processing_error: u8,
    pub glacier_fringes: u8,
    pub orbital_fringes: u8,
    /// 0 none, 1 vertical stratification, 2 turbulent mixing, 3 both (inferred from captions).
    pub atmospheric_fringes: u8,
    pub low_coherence: u8,
    pub no_info: u8,
    pub image_artifacts: u8,
    pub label: Vec<Label>,
    /// One entry per deformation pattern (usually one per polygon; see [`Annotation::deformations`]).
    pub activity_type: Vec<ActivityType>,
    #[serde(deserialize_with = "deserialize_intensities")]
    pub intensity_level: Vec<Intensity>,
    pub phase: Phase,
    pub confidence: f64,
    #[serde(deserialize_with = "deserialize_polygons")]
    pub segmentation_mask: Vec<Polygon>,
    pub is_crowd: u8,
    /// The caption exactly as written (leading/trailing and double spaces included);
    /// [`Annotation::clean_caption`] normalises it.
    pub caption: String,
}

/// One deformation pattern: an activity type, its intensity and its polygon when it has one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deformation<'a> {
    pub activity: ActivityType,
    pub intensity: Intensity,
    pub polygon: Option<&'a Polygon>,
}

impl Deformation<'_> {
    /// The class id this pattern's polygon is drawn with.
    pub fn mask_class(&self) -> u8 {
        self.activity.mask_class()
    }
}

/// A disagreement inside one annotation that the loader tolerates but reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inconsistency {
    pub unique_id: u64,
    pub message: String,
}

impl Annotation {
    /// Whether the interferogram shows any deformation (volcanic or earthquake): the label
    /// list holds something other than `Non_Deformation`.
    pub fn is_deformation(&self) -> bool {
        self.label.iter().any(|l| *l != Label::NonDeformation)
    }

    /// The 10-label vector `[Deformation, Mogi, Dyke, Sill, Spheroid, Earthquake,
    /// Unidentified, Low, Medium, High]` with the reference's set-membership semantics:
    /// an entry is 1 when the value occurs anywhere in `activity_type` / `intensity_level`
    /// (multiplicity and order ignored, `None` intensities ignored). A `Non_Deformation`
    /// interferogram is all zeros whatever its lists say.
    pub fn label_vector(&self) -> LabelVector {
        let mut v = [0.0; NUM_LABELS];
        if !self.is_deformation() {
            return v;
        }
        v[0] = 1.0;
        for a in &self.activity_type {
            v[a.label_index()] = 1.0;
        }
        for i in &self.intensity_level {
            if let Some(k) = i.label_index() {
                v[k] = 1.0;
            }
        }
        v
    }

    /// Distinct activity types present, sorted.
    pub fn activity_set(&self) -> BTreeSet<ActivityType> {
        self.activity_type.iter().copied().collect()
    }

    /// Distinct intensities present (including `None`), sorted.
    pub fn intensity_set(&self) -> BTreeSet<Intensity> {
        self.intensity_level.iter().copied().collect()
    }

    /// The intensity of deformation pattern `i`: `intensity_level[i]` when the list is long
    /// enough; otherwise a single-entry list applies to every pattern (e.g. uniqueID 850:
    /// two types, one intensity), and anything else gives `None` (unknown).
    pub fn intensity_of(&self, i: usize) -> Intensity {
        match (self.intensity_level.get(i), self.intensity_level.as_slice()) {
            (Some(&v), _) => v,
            (None, [only]) => *only,
            _ => Intensity::None,
        }
    }

    /// The deformation patterns, pairing polygon `i` with `activity_type[i]` and
    /// [`intensity_of(i)`](Self::intensity_of).
    ///
    /// When the lists differ in length (2 real files): activity types beyond the last
    /// polygon become patterns without a polygon (they still count in the label vector),
    /// and a polygon beyond the last activity type is `Unidentified`. Empty for
    /// `Non_Deformation`.
    pub fn deformations(&self) -> Vec<Deformation<'_>> {
        if !self.is_deformation() {
            return Vec::new();
        }
        let n = self.activity_type.len().max(self.segmentation_mask.len());
        (0..n)
            .map(|i| Deformation {
                activity: self
                    .activity_type
                    .get(i)
                    .copied()
                    .unwrap_or(ActivityType::Unidentified),
                intensity: self.intensity_of(i),
                polygon: self.segmentation_mask.get(i),
            })
            .collect()
    }

    /// `(class id, polygon)` in file order: what [`crate::data::raster`] draws (the later
    /// polygon wins where they overlap).
    pub fn class_polygons(&self) -> Vec<(u8, &Polygon)> {
        self.deformations()
            .into_iter()
            .filter_map(|d| d.polygon.map(|p| (d.mask_class(), p)))
            .collect()
    }

    /// Temporal baseline in days (secondary − primary).
    pub fn temporal_baseline_days(&self) -> i64 {
        self.primary_date.days_until(self.secondary_date)
    }

    /// The interferogram name used by the raw layout: `<primary>_<secondary>`.
    pub fn interferogram_name(&self) -> String {
        format!("{}_{}", self.primary_date, self.secondary_date)
    }

    /// The caption with surrounding whitespace removed and runs of spaces collapsed.
    pub fn clean_caption(&self) -> String {
        clean_caption(&self.caption)
    }

    /// Disagreements between fields (unequal list lengths, a label without the matching
    /// lists, …): tolerated, listed by `data stats`.
    pub fn inconsistencies(&self) -> Vec<Inconsistency> {
        let mut out = Vec::new();
        let mut note = |message: String| {
            out.push(Inconsistency {
                unique_id: self.unique_id,
                message,
            })
        };
        let (n_poly, n_type, n_int) = (
            self.segmentation_mask.len(),
            self.activity_type.len(),
            self.intensity_level.len(),
        );
        if n_poly != n_type || n_type != n_int {
            note(format!(
                "{n_poly} polygon(s), {n_type} activity type(s), {n_int} intensity level(s)"
            ));
        }
        if self.label.is_empty() {
            note("empty label list".into());
        }
        let non_def = self.label.contains(&Label::NonDeformation);
        if non_def && self.is_deformation() {
            note("label lists Non_Deformation together with a deformation".into());
        }
        if !self.is_deformation() && (n_type > 0 || n_poly > 0) {
            note("Non_Deformation with activity types or polygons".into());
        }
        if self.is_deformation() && n_poly == 0 {
            note("deformation without a polygon".into());
        }
        if self.primary_date > self.secondary_date {
            note(format!(
                "primary date {} is after secondary date {}",
                self.primary_date, self.secondary_date
            ));
        }
        out
    }

    /// The JSON text as the real files lay it out (2-space indentation).
    pub fn to_json_pretty(&self) -> String {
        // Serialising plain data to a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes `<dir>/<uniqueID>.json` atomically, laid out like the real files; returns
    /// the path. This is how the generator writes annotations.
    pub fn write_to(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("{}.json", self.unique_id));
        super::atomic::write_atomic(&path, self.to_json_pretty().as_bytes())?;
        Ok(path)
    }
}

/// Trims and collapses runs of whitespace into single spaces.
pub fn clean_caption(caption: &str) -> String {
    caption.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses one annotation file's bytes. The error names the failing field path
/// (`label[0]: unknown label "X" …`, `missing field `caption``) and the line/column.
pub fn parse_annotation(bytes: &[u8]) -> Result<Annotation, String> {
    super::json::parse_json(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SILL: &str = r#"{
  "uniqueID": 1000, "frameID": "128D_09016_110500",
  "primary_date": "20190115", "secondary_date": "20190127",
  "corrupted": 0, "processing_error": 0, "glacier_fringes": 0, "orbital_fringes": 0,
  "atmospheric_fringes": 2, "low_coherence": 0, "no_info": 0, "image_artifacts": 0,
  "label": ["Deformation"], "activity_type": ["Sill"], "intensity_level": ["Low"],
  "phase": "Unrest", "confidence": 0.8,
  "segmentation_mask": [[254.5, 533.5, 253.4, 534.9, 252.2, 536.9]],
  "is_crowd": 0, "caption": " A sill-type  pattern.  "
}"#;

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(SILL).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn parses_real_shape_and_derives_labels() {
        let a = parse_annotation(SILL.as_bytes()).unwrap();
        assert_eq!(a.unique_id, 1000);
        assert_eq!(a.primary_date, Date::new(2019, 1, 15).unwrap());
        assert_eq!(a.temporal_baseline_days(), 12);
        assert_eq!(a.interferogram_name(), "20190115_20190127");
        let v = a.label_vector();
        assert_eq!(v, [1., 0., 0., 1., 0., 0., 0., 1., 0., 0.]);
        assert_eq!(a.class_polygons().len(), 1);
        assert_eq!(a.class_polygons()[0].0, 3);
        assert_eq!(a.clean_caption(), "A sill-type pattern.");
        assert!(a.inconsistencies().is_empty());
    }

    #[test]
    fn tolerates_the_real_irregularities() {
        // Whitespace and case in enum strings, a single intensity string, "None".
        let a = parse_annotation(with("label", r#"[" deformation "]"#).as_bytes()).unwrap();
        assert!(a.is_deformation());
        let a = parse_annotation(with("intensity_level", r#""High""#).as_bytes()).unwrap();
        assert_eq!(a.intensity_level, vec![Intensity::High]);
        let a = parse_annotation(with("phase", r#""None""#).as_bytes()).unwrap();
        assert_eq!(a.phase, Phase::None);
        // A flat polygon list is one polygon; integer coordinates are fine.
        let a =
            parse_annotation(with("segmentation_mask", "[1, 2, 30, 4, 5, 60]").as_bytes()).unwrap();
        assert_eq!(
            a.segmentation_mask,
            vec![Polygon(vec![1., 2., 30., 4., 5., 60.])]
        );
    }

    #[test]
    fn unequal_lists_follow_the_documented_pairing() {
        // uniqueID 850: one polygon, ["Sill", "Mogi"], ["High"].
        let mut a = parse_annotation(SILL.as_bytes()).unwrap();
        a.activity_type = vec![ActivityType::Sill, ActivityType::Mogi];
        a.intensity_level = vec![Intensity::High];
        let d = a.deformations();
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].activity, d[0].intensity),
            (ActivityType::Sill, Intensity::High)
        );
        assert!(d[0].polygon.is_some());
        assert_eq!(
            (d[1].activity, d[1].intensity),
            (ActivityType::Mogi, Intensity::High)
        );
        assert!(d[1].polygon.is_none());
        assert_eq!(a.label_vector(), [1., 1., 0., 1., 0., 0., 0., 0., 0., 1.]);
        assert_eq!(a.inconsistencies().len(), 1);
        // Two intensities for three types: the third is unknown.
        a.activity_type.push(ActivityType::Dyke);
        a.intensity_level = vec![Intensity::High, Intensity::Low];
        assert_eq!(a.intensity_of(2), Intensity::None);
        // A polygon without a type is Unidentified.
        a.activity_type.clear();
        assert_eq!(a.class_polygons()[0].0, 6);
    }

    #[test]
    fn non_deformation_is_all_zeros() {
        let mut a = parse_annotation(SILL.as_bytes()).unwrap();
        a.label = vec![Label::NonDeformation];
        assert_eq!(a.label_vector(), [0.0; NUM_LABELS]);
        assert!(a.deformations().is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (with("label", r#"["Volcano"]"#), "label[0]"),
            (with("corrupted", r#""yes""#), "corrupted"),
            (with("processing_error", "300"), "processing_error"),
            (with("primary_date", r#""20190231""#), "primary_date"),
            (
                with("segmentation_mask", "[[1, 2, 3]]"),
                "segmentation_mask",
            ),
            (
                with("segmentation_mask", "[[1, 2, 3, 4]]"),
                "segmentation_mask",
            ),
            (with("intensity_level", r#"["Huge"]"#), "intensity_level"),
            (with("confidence", "[]"), "confidence"),
        ];
        for (json, field) in cases {
            let err = parse_annotation(json.as_bytes()).unwrap_err();
            assert!(err.contains(field), "{err} should name {field}");
        }
        let mut v: serde_json::Value = serde_json::from_str(SILL).unwrap();
        v.as_object_mut().unwrap().remove("caption");
        let err = parse_annotation(v.to_string().as_bytes()).unwrap_err();
        assert!(err.contains("missing field `caption`"), "{err}");
        let err = parse_annotation(&SILL.as_bytes()[..100]).unwrap_err();
        assert!(err.contains("EOF"), "{err}");
    }

    #[test]
    fn round_trip_is_lossless() {
        let a = parse_annotation(SILL.as_bytes()).unwrap();
        let text = a.to_json_pretty();
        let b = parse_annotation(text.as_bytes()).unwrap();
        assert_eq!(a, b);
        let original: serde_json::Value = serde_json::from_str(SILL).unwrap();
        let written: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(original, written);
    }

    #[test]
    fn dates_count_days_across_leap_years() {
        let d = |s: &str| s.parse::<Date>().unwrap();
        assert_eq!(d("19700101").days_since_epoch(), 0);
        assert_eq!(d("20200228").days_until(d("20200301")), 2);
        assert_eq!(d("20190228").days_until(d("20190301")), 1);
        assert_eq!(d("2021-11-20"), d("20211120"));
        assert!("20210229".parse::<Date>().is_err());
        assert!("2021112".parse::<Date>().is_err());
    }

    #[test]
    fn mask_classes_match_design() {
        let ids: Vec<u8> = ActivityType::ALL.iter().map(|a| a.mask_class()).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
        for a in ActivityType::ALL {
            assert_eq!(ActivityType::from_mask_class(a.mask_class()), Some(*a));
            assert_eq!(
                super::super::sample::LABEL_NAMES[a.label_index()],
                a.as_str()
            );
        }
    }
}
