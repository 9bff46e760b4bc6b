//! Segmentation metrics (mmsegmentation conventions): one confusion matrix accumulated
//! over the whole dataset, pixels whose ground truth is the ignore index excluded; per
//! class IoU = TP/(TP+FP+FN), Dice = 2TP/(2TP+FP+FN), Acc = TP/(TP+FN); mIoU, mDice and
//! mAcc are NaN-means (a class absent from both prediction and truth is skipped, reported
//! as `null`); aAcc = Σ TP / valid pixels.
//!
//! Grouped scores ([`Confusion::grouped`]) merge classes into groups before scoring: a
//! pixel of one class predicted as another class of the same group counts as right. For
//! the Hephaestus mask ids, [`activity_group_classes`] gives the groups the fringes can tell
//! apart (the [`TypeGroup`]s of the caption facts): concentric volcanic (Mogi, spheroid,
//! sill, unidentified), elongated intrusion (dyke) and earthquake.

use serde::Serialize;

use crate::captions::facts::{Activity, TypeGroup};
use crate::error::{EvalError, Result};

/// A dataset-level confusion matrix (rows = truth, columns = prediction).
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    /// Number of classes K.
    pub classes: usize,
    /// Ground-truth value that is ignored.
    pub ignore_index: Option<u32>,
    /// K × K counts, row-major.
    pub counts: Vec<u64>,
}

/// Per-class and averaged scores.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentationScores {
    /// Per-class IoU (`null` when the class is in neither prediction nor truth).
    #[serde(rename = "IoU")]
    pub iou: Vec<Option<f64>>,
    /// Per-class Dice.
    #[serde(rename = "Dice")]
    pub dice: Vec<Option<f64>>,
    /// Per-class accuracy (recall; `null` when the class never occurs in the truth).
    #[serde(rename = "Acc")]
    pub acc: Vec<Option<f64>>,
    /// NaN-mean IoU.
    #[serde(rename = "mIoU")]
    pub miou: f64,
    /// NaN-mean Dice.
    #[serde(rename = "mDice")]
    pub mdice: f64,
    /// NaN-mean accuracy.
    #[serde(rename = "mAcc")]
    pub macc: f64,
    /// Overall pixel accuracy.
    #[serde(rename = "aAcc")]
    pub aacc: f64,
    /// Pixels counted (ignore excluded).
    pub pixels: u64,
    /// The confusion matrix, K × K (rows = truth).
    pub confusion: Vec<Vec<u64>>,
}

/// Scores of classes merged into groups ([`Confusion::grouped`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupScores {
    /// Group names, in the order given.
    pub names: Vec<String>,
    /// IoU of each group against everything outside it (`null` when the group is in neither
    /// prediction nor truth).
    pub iou: Vec<Option<f64>>,
    /// Ground-truth pixels of each group.
    pub support: Vec<u64>,
    /// Mean IoU over the groups present in the ground truth (`null` when none is): a group
    /// predicted but absent from the truth is not averaged in (its false positives still
    /// lower the IoU of the groups they were taken from).
    pub miou_present: Option<f64>,
}

/// The Hephaestus mask classes of each source-type group, as the caption facts group the
/// types ([`Activity::group`]): mask id = 1 + the type's index in [`Activity::ALL`] (Mogi 1,
/// Dyke 2, Sill 3, Spheroid 4, Earthquake 5, Unidentified 6; 0 is background, in no group).
/// Groups in [`TypeGroup::ALL`] order: concentric `[1, 3, 4, 6]`, elongated `[2]`,
/// earthquake `[5]`.
pub fn activity_group_classes() -> Vec<(TypeGroup, Vec<usize>)> {
    TypeGroup::ALL
        .iter()
        .map(|&g| {
            let classes = Activity::ALL
                .iter()
                .enumerate()
                .filter(|(_, a)| a.group() == g)
                .map(|(i, _)| i + 1)
                .collect();
            (g, classes)
        })
        .collect()
}

impl Confusion {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize, ignore_index: Option<u32>) -> Result<Confusion> {
        if classes == 0 {
            return Err(EvalError::input("--num-classes must be at least 1"));
        }
        Ok(Confusion {
            classes,
            ignore_index,
            counts: vec![0; classes * classes],
        })
    }

    /// Adds one image. Labels ≥ K (other than the ignore index in the truth) are errors,
    /// as are a prediction equal to the ignore index where the truth is valid.
    pub fn add(&mut self, pred: &[u32], truth: &[u32]) -> Result<()> {
        if pred.len() != truth.len() {
            return Err(EvalError::input(format!(
                "prediction has {} pixels, ground truth {}",
                pred.len(),
                truth.len()
            )));
        }
        let k = self.classes as u32;
        let mut local = vec![0u64; self.counts.len()];
        for (i, (&p, &t)) in pred.iter().zip(truth).enumerate() {
            if Some(t) == self.ignore_index {
                continue;
            }
            if t >= k {
                return Err(EvalError::input(format!(
                    "ground truth has class {t} ≥ --num-classes {k} at pixel {i}"
                )));
            }
            if p >= k {
                return Err(EvalError::input(format!(
                    "prediction has class {p} ≥ --num-classes {k} at pixel {i}"
                )));
            }
            local[(t * k + p) as usize] += 1;
        }
        for (c, l) in self.counts.iter_mut().zip(local) {
            *c += l;
        }
        Ok(())
    }

    /// The scores.
    pub fn scores(&self) -> Result<SegmentationScores> {
        let k = self.classes;
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return Err(EvalError::input("no valid pixel (all ignored or no image)"));
        }
        let mut iou = Vec::with_capacity(k);
        let mut dice = Vec::with_capacity(k);
        let mut acc = Vec::with_capacity(k);
        let mut correct = 0u64;
        for c in 0..k {
            let tp = self.counts[c * k + c];
            let row: u64 = self.counts[c * k..(c + 1) * k].iter().sum();
            let col: u64 = (0..k).map(|r| self.counts[r * k + c]).sum();
            let (fn_, fp) = (row - tp, col - tp);
            correct += tp;
            let union = tp + fp + fn_;
            iou.push((union > 0).then(|| tp as f64 / union as f64));
            dice.push((union > 0).then(|| 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64));
            acc.push((row > 0).then(|| tp as f64 / row as f64));
        }
        let nanmean = |v: &[Option<f64>]| {
            let d: Vec<f64> = v.iter().flatten().copied().collect();
            if d.is_empty() {
                f64::NAN
            } else {
                d.iter().sum::<f64>() / d.len() as f64
            }
        };
        Ok(SegmentationScores {
            miou: nanmean(&iou),
            mdice: nanmean(&dice),
            macc: nanmean(&acc),
            aacc: correct as f64 / total as f64,
            iou,
            dice,
            acc,
            pixels: total,
            confusion: self.counts.chunks(k).map(<[u64]>::to_vec).collect(),
        })
    }

    /// Scores of `groups` (name, member classes): per group TP = truth and prediction both
    /// in the group, FN = truth in it and prediction outside, FP = the reverse; IoU =
    /// TP/(TP+FP+FN). Classes in no group (e.g. background) only count as "outside". A class
    /// outside `0..K` or in two groups is an error.
    pub fn grouped(&self, groups: &[(&str, &[usize])]) -> Result<GroupScores> {
        let k = self.classes;
        let mut owner: Vec<Option<usize>> = vec![None; k];
        for (g, (name, classes)) in groups.iter().enumerate() {
            for &c in *classes {
                if c >= k {
                    return Err(EvalError::input(format!(
                        "group {name}: class {c} ≥ the {k} classes"
                    )));
                }
                if let Some(other) = owner[c] {
                    return Err(EvalError::input(format!(
                        "class {c} is in groups {} and {name}",
                        groups[other].0
                    )));
                }
                owner[c] = Some(g);
            }
        }
        let n = groups.len();
        let (mut tp, mut fn_, mut fp) = (vec![0u64; n], vec![0u64; n], vec![0u64; n]);
        for t in 0..k {
            for p in 0..k {
                let count = self.counts[t * k + p];
                match (owner[t], owner[p]) {
                    (Some(a), Some(b)) if a == b => tp[a] += count,
                    (a, b) => {
                        if let Some(a) = a {
                            fn_[a] += count;
                        }
                        if let Some(b) = b {
                            fp[b] += count;
                        }
                    }
                }
            }
        }
        let iou: Vec<Option<f64>> = (0..n)
            .map(|g| {
                let union = tp[g] + fp[g] + fn_[g];
                (union > 0).then(|| tp[g] as f64 / union as f64)
            })
            .collect();
        let support: Vec<u64> = (0..n).map(|g| tp[g] + fn_[g]).collect();
        let present: Vec<f64> = (0..n)
            .filter(|&g| support[g] > 0)
            .filter_map(|g| iou[g])
            .collect();
        Ok(GroupScores {
            names: groups.iter().map(|(name, _)| name.to_string()).collect(),
            miou_present: (!present.is_empty())
                .then(|| present.iter().sum::<f64>() / present.len() as f64),
            iou,
            support,
        })
    }

    /// [`Self::grouped`] over the source-type groups of the Hephaestus mask ids
    /// ([`activity_group_classes`]); needs at least 7 classes.
    pub fn activity_groups(&self) -> Result<GroupScores> {
        let groups = activity_group_classes();
        let named: Vec<(&str, &[usize])> = groups
            .iter()
            .map(|(g, c)| (g.name(), c.as_slice()))
            .collect();
        self.grouped(&named)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_level_and_ignore() {
        let mut cm = Confusion::new(3, Some(255)).unwrap();
        cm.add(&[0, 0, 1, 1], &[0, 1, 1, 255]).unwrap();
        cm.add(&[0, 0], &[0, 0]).unwrap();
        let s = cm.scores().unwrap();
        assert_eq!(s.pixels, 5);
        assert_eq!(s.iou[0], Some(3.0 / 4.0));
        assert_eq!(s.iou[1], Some(0.5));
        assert_eq!(s.iou[2], None);
        assert!((s.miou - 0.625).abs() < 1e-15);
        assert_eq!(s.dice[1], Some(2.0 / 3.0));
        assert_eq!(s.aacc, 0.8);
        let e = cm.add(&[0], &[3]).unwrap_err().to_string();
        assert!(
            e.contains("class 3") && e.contains("--num-classes 3"),
            "{e}"
        );
        assert!(cm.add(&[7], &[0]).is_err());
        assert!(Confusion::new(2, None).unwrap().scores().is_err());
    }

    #[test]
    fn activity_groups_follow_the_caption_facts() {
        let g = activity_group_classes();
        let want: Vec<(TypeGroup, Vec<usize>)> = vec![
            (TypeGroup::Concentric, vec![1, 3, 4, 6]),
            (TypeGroup::Elongated, vec![2]),
            (TypeGroup::Earthquake, vec![5]),
        ];
        assert_eq!(g, want);
    }

    /// A hand-made 7-class confusion matrix, grouped by hand.
    #[test]
    fn grouped_iou_merges_classes_of_a_group() {
        let mut cm = Confusion::new(7, None).unwrap();
        let mut add = |t: u32, p: u32, n: usize| {
            cm.add(&vec![p; n], &vec![t; n]).unwrap();
        };
        // (truth, prediction, pixels)
        add(0, 0, 50); // background right
        add(1, 1, 4); // Mogi as Mogi
        add(1, 4, 3); // Mogi as Spheroid: same group, a hit
        add(1, 0, 2); // Mogi missed
        add(4, 2, 1); // Spheroid as Dyke: concentric missed, elongated false alarm
        add(2, 2, 5); // Dyke right
        add(0, 2, 2); // background taken by Dyke
        add(0, 5, 3); // background taken by Earthquake (absent from the truth)
        let s = cm.activity_groups().unwrap();
        assert_eq!(s.names, ["concentric", "elongated", "earthquake"]);
        // Concentric: TP 4 + 3 = 7, FN 2 + 1 = 3, FP 0 → 7/10.
        // Elongated: TP 5, FN 0, FP 1 + 2 = 3 → 5/8.
        // Earthquake: TP 0, FN 0, FP 3 → 0, but absent from the truth: not averaged.
        assert_eq!(s.iou, vec![Some(0.7), Some(0.625), Some(0.0)]);
        assert_eq!(s.support, vec![10, 5, 0]);
        assert!((s.miou_present.unwrap() - (0.7 + 0.625) / 2.0).abs() < 1e-15);
        // The per-type IoU of Mogi is lower: 4 / (9 + 0) — the group forgives the mix-up.
        assert!(cm.scores().unwrap().iou[1].unwrap() < 0.7);
        // A group that never occurs anywhere is null; no group present → no mean.
        let mut bg = Confusion::new(7, None).unwrap();
        bg.add(&[0, 0], &[0, 0]).unwrap();
        let e = bg.activity_groups().unwrap();
        assert_eq!(e.iou, vec![None, None, None]);
        assert_eq!(e.miou_present, None);
        // Bad groups.
        let err = cm.grouped(&[("a", &[1]), ("b", &[1, 2])]).unwrap_err();
        assert!(
            err.to_string().contains("class 1 is in groups a and b"),
            "{err}"
        );
        assert!(cm.grouped(&[("a", &[7])]).is_err());
        assert!(Confusion::new(3, None).unwrap().activity_groups().is_err());
    }
}
