//! Train/val/test splits (`insar-mm data split`), stored as a JSON file of uniqueIDs.
//!
//! - Frame split (default): whole LiCSAR frames go to one part, so no frame (hence no
//!   interferogram) is in two parts and val/test are disjoint. Deterministic for a seed.
//!   Every deformation class found in at least three frames is placed in every part
//!   (rarest class first, one of its frames per part that lacks it); classes in fewer
//!   frames are reported with the parts they miss. The remaining frames go, largest
//!   first, to the part furthest below its target share of interferograms. Frames can
//!   also be pinned to the test part (`--test-frames`, e.g. the reference's 13 test frames).
//! - Temporal split: by primary date, `train < val_from ≤ val < test_from ≤ test`
//!   (the Thalia protocol); boundaries given or chosen from the fractions. Interferograms
//!   whose secondary date reaches into a later part are counted in the summary.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::annotation::{ActivityType, Annotation, Date};
use super::atomic::write_atomic;
use super::json::parse_json;

/// One part of a split.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Train,
    Val,
    Test,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Train, Part::Val, Part::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        }
    }

    /// 0, 1, 2 for train, val, test.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the split was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum SplitMethod {
    Frame {
        seed: u64,
        /// Target shares of interferograms for train, val, test.
        fractions: [f64; 3],
        /// Frames pinned to the test part.
        #[serde(default)]
        test_frames: Vec<String>,
    },
    Temporal {
        /// First primary date of the val part (`YYYYMMDD`).
        val_from: Date,
        /// First primary date of the test part.
        test_from: Date,
    },
}

/// Counts for one part.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartSummary {
    pub interferograms: usize,
    pub deformation: usize,
    pub frames: usize,
    /// Interferograms containing each activity type.
    pub activity_types: BTreeMap<String, usize>,
}

/// A deformation class missing from some parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unrepresented {
    pub class: String,
    /// Frames containing the class.
    pub frames: usize,
    pub missing_from: Vec<Part>,
}

/// A split: sorted uniqueIDs per part plus how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    #[serde(flatten)]
    pub method: SplitMethod,
    pub train: Vec<u64>,
    pub val: Vec<u64>,
    pub test: Vec<u64>,
    /// Frames per part (frame split: disjoint).
    pub frames: BTreeMap<Part, Vec<String>>,
    pub summary: BTreeMap<Part, PartSummary>,
    pub unrepresented: Vec<Unrepresented>,
    /// Temporal split: interferograms whose secondary date falls in a later part's period.
    #[serde(default)]
    pub straddling: usize,
}

impl Split {
    /// The uniqueIDs of one part, sorted.
    pub fn ids(&self, part: Part) -> &[u64] {
        match part {
            Part::Train => &self.train,
            Part::Val => &self.val,
            Part::Test => &self.test,
        }
    }

    /// The part holding `unique_id`, if any.
    pub fn part_of(&self, unique_id: u64) -> Option<Part> {
        Part::ALL
            .into_iter()
            .find(|&p| self.ids(p).binary_search(&unique_id).is_ok())
    }

    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("{}: cannot read split", path.display()))?;
        let split: Split =
            parse_json(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        split
            .validate()
            .with_context(|| format!("{}: invalid split", path.display()))?;
        Ok(split)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        write_atomic(path, text.as_bytes())
    }

    /// Checks the invariants: sorted parts, no uniqueID in two parts.
    pub fn validate(&self) -> Result<()> {
        for part in Part::ALL {
            let ids = self.ids(part);
            ensure!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "{part} ids are not sorted and unique"
            );
        }
        for (a, b) in [
            (Part::Train, Part::Val),
            (Part::Train, Part::Test),
            (Part::Val, Part::Test),
        ] {
            if let Some(id) = self
                .ids(a)
                .iter()
                .find(|id| self.ids(b).binary_search(id).is_ok())
            {
                bail!("uniqueID {id} is in both {a} and {b}");
            }
        }
        Ok(())
    }
}

struct FrameInfo<'a> {
    id: &'a str,
    size: usize,
    classes: BTreeSet<ActivityType>,
}

fn group_frames(annotations: &[Annotation]) -> Vec<FrameInfo<'_>> {
    let mut frames: BTreeMap<&str, FrameInfo> = BTreeMap::new();
    for a in annotations {
        let f = frames
            .entry(a.frame_id.as_str())
            .or_insert_with(|| FrameInfo {
                id: a.frame_id.as_str(),
                size: 0,
                classes: BTreeSet::new(),
            });
        f.size += 1;
        if a.is_deformation() {
            f.classes.extend(a.activity_type.iter().copied());
        }
    }
    frames.into_values().collect()
}

fn check_fractions(fractions: [f64; 3]) -> Result<()> {
    ensure!(
        fractions.iter().all(|f| f.is_finite() && *f >= 0.0)
            && (fractions.iter().sum::<f64>() - 1.0).abs() < 1e-6,
        "fractions {fractions:?} must be non-negative and sum to 1"
    );
    Ok(())
}

/// Number of randomised greedy attempts of the frame split.
const FRAME_SPLIT_ATTEMPTS: u64 = 64;
/// An attempt whose part shares are all within this of their targets is good enough.
const SHARE_TOLERANCE: f64 = 0.02;

/// One greedy frame assignment (see the module documentation).
struct Attempt {
    assigned: Vec<Part>,
    /// `(class, frames containing it, parts missing it)`.
    missing: Vec<(ActivityType, usize, Vec<Part>)>,
    /// Largest deviation of a part's share of interferograms from its target share.
    imbalance: f64,
}

fn frame_attempt(
    frames: &[FrameInfo],
    rng: &mut ChaCha8Rng,
    target: [f64; 3],
    pinned: &[bool],
    parts: &[Part],
) -> Attempt {
    let mut order: Vec<usize> = (0..frames.len()).collect();
    order.shuffle(rng);
    let mut assigned: Vec<Option<Part>> = pinned.iter().map(|&p| p.then_some(Part::Test)).collect();
    let mut load = [0usize; 3];
    for (i, f) in frames.iter().enumerate() {
        if pinned[i] {
            load[Part::Test.index()] += f.size;
        }
    }
    let has = |assigned: &[Option<Part>], part: Part, class: ActivityType| {
        (0..frames.len()).any(|i| assigned[i] == Some(part) && frames[i].classes.contains(&class))
    };
    // Rarest classes first, so that their few frames are not used up by commoner classes.
    let mut classes: Vec<(usize, ActivityType)> = ActivityType::ALL
        .iter()
        .map(|&c| (frames.iter().filter(|f| f.classes.contains(&c)).count(), c))
        .filter(|(n, _)| *n > 0)
        .collect();
    classes.sort();
    for &(_, class) in &classes {
        for &part in parts {
            if has(&assigned, part, class) {
                continue;
            }
            let candidates: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| assigned[i].is_none() && frames[i].classes.contains(&class))
                .collect();
            let Some(&first) = candidates.first() else {
                continue;
            };
            // Val/test are small: prefer a frame that fits their remaining room.
            let room = target[part.index()] - load[part.index()] as f64;
            let pick = if part == Part::Train {
                first
            } else {
                candidates
                    .iter()
                    .copied()
                    .find(|&i| frames[i].size as f64 <= room)
                    .or_else(|| candidates.iter().copied().min_by_key(|&i| frames[i].size))
                    .unwrap_or(first)
            };
            assigned[pick] = Some(part);
            load[part.index()] += frames[pick].size;
        }
    }
    let missing = classes
        .iter()
        .filter_map(|&(n, class)| {
            let lacking: Vec<Part> = parts
                .iter()
                .copied()
                .filter(|&p| !has(&assigned, p, class))
                .collect();
            (!lacking.is_empty()).then_some((class, n, lacking))
        })
        .collect();
    // The rest: largest first, each to the part furthest below its target.
    let mut rest: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| assigned[i].is_none())
        .collect();
    rest.sort_by_key(|&i| std::cmp::Reverse(frames[i].size));
    for i in rest {
        let deficit = |p: &Part| target[p.index()] - load[p.index()] as f64;
        let part = parts
            .iter()
            .copied()
            .max_by(|a, b| {
                deficit(a)
                    .total_cmp(&deficit(b))
                    .then(b.index().cmp(&a.index()))
            })
            .unwrap_or(Part::Train);
        assigned[i] = Some(part);
        load[part.index()] += frames[i].size;
    }
    let total: f64 = load.iter().sum::<usize>().max(1) as f64;
    let imbalance = (0..3)
        .map(|k| (load[k] as f64 - target[k]).abs() / total)
        .fold(0.0, f64::max);
    Attempt {
        assigned: assigned
            .into_iter()
            .map(|p| p.unwrap_or(Part::Train))
            .collect(),
        missing,
        imbalance,
    }
}

/// Frame-based split (see the module documentation). Several seeded greedy attempts are
/// made; the kept one misses the fewest (class, part) pairs among classes found in enough
/// frames and is the first within 2 points of the target shares (else the most balanced).
pub fn frame_split(
    annotations: &[Annotation],
    seed: u64,
    fractions: [f64; 3],
    test_frames: &[String],
) -> Result<Split> {
    check_fractions(fractions)?;
    ensure!(!annotations.is_empty(), "no annotations to split");
    let frames = group_frames(annotations);
    for f in test_frames {
        ensure!(
            frames.iter().any(|i| i.id == f),
            "--test-frames: frame {f} has no annotation"
        );
    }
    let pinned: Vec<bool> = frames
        .iter()
        .map(|f| test_frames.iter().any(|t| t == f.id))
        .collect();
    let total: usize = frames.iter().map(|f| f.size).sum();
    let target = fractions.map(|f| f * total as f64);
    // Parts that receive frames here (test is fixed when frames are pinned; empty parts
    // are not filled).
    let parts: Vec<Part> = if test_frames.is_empty() {
        vec![Part::Train, Part::Test, Part::Val]
    } else {
        vec![Part::Train, Part::Val]
    }
    .into_iter()
    .filter(|p| *p == Part::Train || fractions[p.index()] > 0.0)
    .collect();
    // A class is "representable" when it has a frame for every part.
    let serious = |a: &Attempt| {
        a.missing
            .iter()
            .filter(|(_, n, _)| *n >= parts.len())
            .map(|(_, _, lacking)| lacking.len())
            .sum::<usize>()
    };
    // The first attempt (in seed order) with the fewest misses that is within tolerance
    // of the target shares; failing that, the most balanced among the fewest misses.
    // Taking the first rather than the optimum keeps different seeds giving different splits.
    let attempts: Vec<Attempt> = (0..FRAME_SPLIT_ATTEMPTS)
        .map(|attempt| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(attempt);
            frame_attempt(&frames, &mut rng, target, &pinned, &parts)
        })
        .collect();
    let fewest = attempts.iter().map(&serious).min().unwrap_or(0);
    let candidates = attempts.into_iter().filter(|a| serious(a) == fewest);
    let mut best: Option<Attempt> = None;
    for a in candidates {
        if a.imbalance <= SHARE_TOLERANCE {
            best = Some(a);
            break;
        }
        if best.as_ref().is_none_or(|b| a.imbalance < b.imbalance) {
            best = Some(a);
        }
    }
    let best = best.context("no split attempt")?;
    let part_of_frame: BTreeMap<&str, Part> = frames
        .iter()
        .zip(&best.assigned)
        .map(|(f, p)| (f.id, *p))
        .collect();
    let mut split = build(
        annotations,
        |a| part_of_frame[a.frame_id.as_str()],
        SplitMethod::Frame {
            seed,
            fractions,
            test_frames: test_frames.to_vec(),
        },
    );
    split.unrepresented = unrepresented(&split, annotations, fractions);
    Ok(split)
}

/// The primary date at which the cumulative share of interferograms first reaches `share`.
fn date_quantile(sorted_dates: &[Date], share: f64) -> Option<Date> {
    let k = ((sorted_dates.len() as f64) * share).ceil() as usize;
    sorted_dates
        .get(k.min(sorted_dates.len().saturating_sub(1)))
        .copied()
}

/// Temporal split by primary date. Without explicit boundaries they are chosen so that
/// the parts hold about `fractions` of the interferograms (all interferograms with the same
/// primary date stay together).
pub fn temporal_split(
    annotations: &[Annotation],
    fractions: [f64; 3],
    val_from: Option<Date>,
    test_from: Option<Date>,
) -> Result<Split> {
    check_fractions(fractions)?;
    ensure!(!annotations.is_empty(), "no annotations to split");
    let mut dates: Vec<Date> = annotations.iter().map(|a| a.primary_date).collect();
    dates.sort_unstable();
    let val_from = match val_from {
        Some(d) => d,
        None => date_quantile(&dates, fractions[0]).context("no dates")?,
    };
    let test_from = match test_from {
        Some(d) => d,
        None => date_quantile(&dates, fractions[0] + fractions[1]).context("no dates")?,
    };
    ensure!(
        val_from <= test_from,
        "--val-from {val_from} must not be after --test-from {test_from}"
    );
    let part = |d: Date| {
        if d < val_from {
            Part::Train
        } else if d < test_from {
            Part::Val
        } else {
            Part::Test
        }
    };
    let mut split = build(
        annotations,
        |a| part(a.primary_date),
        SplitMethod::Temporal {
            val_from,
            test_from,
        },
    );
    split.straddling = annotations
        .iter()
        .filter(|a| part(a.secondary_date) != part(a.primary_date))
        .count();
    split.unrepresented = unrepresented(&split, annotations, fractions);
    Ok(split)
}

/// Classes present in the data but absent from some part that should receive data.
fn unrepresented(
    split: &Split,
    annotations: &[Annotation],
    fractions: [f64; 3],
) -> Vec<Unrepresented> {
    ActivityType::ALL
        .iter()
        .filter_map(|class| {
            let frames: BTreeSet<&str> = annotations
                .iter()
                .filter(|a| a.is_deformation() && a.activity_type.contains(class))
                .map(|a| a.frame_id.as_str())
                .collect();
            let missing: Vec<Part> = Part::ALL
                .into_iter()
                .filter(|p| *p == Part::Train || fractions[p.index()] > 0.0)
                .filter(|p| !split.summary[p].activity_types.contains_key(class.as_str()))
                .collect();
            (!frames.is_empty() && !missing.is_empty()).then(|| Unrepresented {
                class: class.to_string(),
                frames: frames.len(),
                missing_from: missing,
            })
        })
        .collect()
}

fn build(
    annotations: &[Annotation],
    part_of: impl Fn(&Annotation) -> Part,
    method: SplitMethod,
) -> Split {
    let mut ids: [Vec<u64>; 3] = Default::default();
    let mut frames: [BTreeSet<String>; 3] = Default::default();
    let mut summary: BTreeMap<Part, PartSummary> = Part::ALL
        .into_iter()
        .map(|p| (p, PartSummary::default()))
        .collect();
    for a in annotations {
        let p = part_of(a);
        ids[p.index()].push(a.unique_id);
        frames[p.index()].insert(a.frame_id.clone());
        let s = summary.entry(p).or_default();
        s.interferograms += 1;
        if a.is_deformation() {
            s.deformation += 1;
            for t in a.activity_set() {
                *s.activity_types.entry(t.to_string()).or_default() += 1;
            }
        }
    }
    for (p, s) in summary.iter_mut() {
        s.frames = frames[p.index()].len();
    }
    let [mut train, mut val, mut test] = ids;
    for v in [&mut train, &mut val, &mut test] {
        v.sort_unstable();
        v.dedup();
    }
    let [f_train, f_val, f_test] = frames;
    Split {
        method,
        train,
        val,
        test,
        frames: [
            (Part::Train, f_train),
            (Part::Val, f_val),
            (Part::Test, f_test),
        ]
        .into_iter()
        .map(|(p, f)| (p, f.into_iter().collect()))
        .collect(),
        summary,
        unrepresented: Vec::new(),
        straddling: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::annotation::parse_annotation;

    fn ann(uid: u64, frame: &str, date: &str, types: &[&str]) -> Annotation {
        let label = if types.is_empty() {
            "Non_Deformation"
        } else {
            "Deformation"
        };
        let types_json: Vec<String> = types.iter().map(|t| format!("\"{t}\"")).collect();
        let ints: Vec<&str> = types.iter().map(|_| "\"Low\"").collect();
        let polys: Vec<&str> = types.iter().map(|_| "[1,1,5,1,5,5]").collect();
        let json = format!(
            r#"{{"uniqueID":{uid},"frameID":"{frame}","primary_date":"{date}","secondary_date":"{date}",
            "corrupted":0,"processing_error":0,"glacier_fringes":0,"orbital_fringes":0,"atmospheric_fringes":0,
            "low_coherence":0,"no_info":0,"image_artifacts":0,"label":["{label}"],"activity_type":[{}],
            "intensity_level":[{}],"phase":"Rest","confidence":0.8,"segmentation_mask":[{}],"is_crowd":0,"caption":"x"}}"#,
            types_json.join(","),
            ints.join(","),
            polys.join(",")
        );
        parse_annotation(json.as_bytes()).unwrap()
    }

    fn toy() -> Vec<Annotation> {
        let mut v = Vec::new();
        let mut uid = 0;
        for f in 0..12 {
            for k in 0..(5 + f * 3) {
                uid += 1;
                let types: &[&str] = match (f % 4, k % 7) {
                    (0, 0) => &["Sill"],
                    (1, 0) => &["Dyke"],
                    (2, 1) => &["Sill", "Mogi"],
                    _ => &[],
                };
                let day = 1 + (k % 28);
                v.push(ann(
                    uid,
                    &format!("F{f:02}"),
                    &format!("2019{:02}{day:02}", 1 + (f % 12)),
                    types,
                ));
            }
        }
        // Spheroid only in two frames: cannot be in all three parts.
        v.push(ann(10_000, "F00", "20200101", &["Spheroid"]));
        v.push(ann(10_001, "F05", "20200101", &["Spheroid"]));
        v
    }

    #[test]
    fn frame_split_is_deterministic_and_leak_free() {
        let anns = toy();
        let a = frame_split(&anns, 7, [0.7, 0.15, 0.15], &[]).unwrap();
        let b = frame_split(&anns, 7, [0.7, 0.15, 0.15], &[]).unwrap();
        assert_eq!(a, b);
        a.validate().unwrap();
        let total = a.train.len() + a.val.len() + a.test.len();
        assert_eq!(total, anns.len());
        let frame_part: std::collections::HashMap<&str, Part> = anns
            .iter()
            .map(|x| (x.frame_id.as_str(), a.part_of(x.unique_id).unwrap()))
            .collect();
        for x in &anns {
            assert_eq!(
                frame_part[x.frame_id.as_str()],
                a.part_of(x.unique_id).unwrap(),
                "frame leak"
            );
        }
        for class in ["Sill", "Dyke", "Mogi"] {
            for p in Part::ALL {
                assert!(
                    a.summary[&p].activity_types.contains_key(class),
                    "{class} missing from {p}"
                );
            }
        }
        assert_eq!(a.unrepresented.len(), 1);
        assert_eq!(a.unrepresented[0].class, "Spheroid");
        assert_eq!(a.unrepresented[0].missing_from, vec![Part::Val]);
        let distinct: std::collections::BTreeSet<String> = (0..20)
            .map(|seed| {
                format!(
                    "{:?}",
                    frame_split(&anns, seed, [0.7, 0.15, 0.15], &[])
                        .unwrap()
                        .frames
                )
            })
            .collect();
        assert!(distinct.len() > 1, "seeds give different splits");
    }

    #[test]
    fn pinned_test_frames_stay_in_test() {
        let anns = toy();
        let s = frame_split(&anns, 1, [0.8, 0.1, 0.1], &["F03".into(), "F07".into()]).unwrap();
        assert_eq!(
            s.frames[&Part::Test],
            vec!["F03".to_string(), "F07".to_string()]
        );
        assert!(frame_split(&anns, 1, [0.8, 0.1, 0.1], &["nope".into()]).is_err());
        assert!(frame_split(&anns, 1, [0.8, 0.1, 0.2], &[]).is_err());
    }

    #[test]
    fn temporal_split_orders_parts_by_primary_date() {
        let anns = toy();
        let d = |s: &str| s.parse::<Date>().unwrap();
        let s = temporal_split(
            &anns,
            [0.8, 0.1, 0.1],
            Some(d("20190601")),
            Some(d("20191001")),
        )
        .unwrap();
        s.validate().unwrap();
        for x in &anns {
            let expect = if x.primary_date < d("20190601") {
                Part::Train
            } else if x.primary_date < d("20191001") {
                Part::Val
            } else {
                Part::Test
            };
            assert_eq!(s.part_of(x.unique_id), Some(expect));
        }
        let auto = temporal_split(&anns, [0.8, 0.1, 0.1], None, None).unwrap();
        let n = anns.len() as f64;
        assert!(
            (auto.train.len() as f64 / n - 0.8).abs() < 0.1,
            "{}",
            auto.train.len()
        );
    }

    #[test]
    fn split_file_round_trips() {
        let anns = toy();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("split.json");
        for s in [
            frame_split(&anns, 5, [0.8, 0.1, 0.1], &[]).unwrap(),
            temporal_split(&anns, [0.8, 0.1, 0.1], None, None).unwrap(),
        ] {
            s.write(&path).unwrap();
            assert_eq!(Split::read(&path).unwrap(), s);
        }
        std::fs::write(&path, r#"{"method":"frame","train":"x"}"#).unwrap();
        let err = Split::read(&path).unwrap_err().to_string();
        assert!(err.contains("split.json"), "{err}");
    }

    #[test]
    fn overlapping_split_files_are_rejected() {
        let anns = toy();
        let mut s = frame_split(&anns, 3, [0.8, 0.1, 0.1], &[]).unwrap();
        let moved = s.test[0];
        s.val.push(moved);
        s.val.sort_unstable();
        assert!(s.validate().unwrap_err().to_string().contains("both"));
    }
}
