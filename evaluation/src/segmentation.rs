//! Segmentation metrics (mmsegmentation conventions): one confusion matrix accumulated
//! over the whole dataset, pixels whose ground truth is the ignore index excluded; per
//! class IoU = TP/(TP+FP+FN), Dice = 2TP/(2TP+FP+FN), Acc = TP/(TP+FN); mIoU, mDice and
//! mAcc are NaN-means (a class absent from both prediction and truth is skipped, reported
//! as `null`); aAcc = Σ TP / valid pixels.

use serde::Serialize;

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
}
