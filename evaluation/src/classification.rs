//! Classification metrics with scikit-learn's conventions (`zero_division = 0`).
//!
//! - **Multi-label** (`labels` has the shape of `scores`, values 0/1): a class is predicted
//!   when its score ≥ the threshold (scores are probabilities, e.g. sigmoid outputs).
//! - **Single-label** (`labels` is one class index per sample, `scores` N × C): the
//!   prediction is the arg-max (first maximum on ties).
//!
//! Per class: precision, recall, F1, support, AP (step-wise, sklearn's
//! `average_precision_score`) and AUROC (`roc_auc_score`, ties counted ½); `null` when
//! undefined (no positive or no negative sample). Averages over **all** C classes:
//! macro (mean of per-class values; macro-F1 is the mean of per-class F1), micro (pooled
//! counts) and weighted (by support); multi-label adds the `samples` average and subset
//! accuracy, single-label reports accuracy and the C × C confusion matrix (rows = truth).

use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::npy::Matrix;

/// Metrics of one class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassMetrics {
    /// Class name.
    pub name: String,
    /// TP / (TP + FP), 0 when nothing was predicted.
    pub precision: f64,
    /// TP / (TP + FN), 0 when the class never occurs.
    pub recall: f64,
    /// 2PR / (P + R), 0 when undefined.
    pub f1: f64,
    /// Number of true occurrences.
    pub support: usize,
    /// Average precision of the scores (`None` without positives).
    pub ap: Option<f64>,
    /// Area under the ROC curve (`None` without positives or without negatives).
    pub auroc: Option<f64>,
    /// True positives, false positives, false negatives, true negatives.
    pub tp: usize,
    #[allow(missing_docs)]
    pub fp: usize,
    #[allow(missing_docs)]
    pub fn_: usize,
    #[allow(missing_docs)]
    pub tn: usize,
}

/// Precision, recall and F1 of one averaging scheme.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Average {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
}

/// All classification metrics.
#[derive(Debug, Clone, Serialize)]
pub struct ClassificationReport {
    /// `"multi-label"` or `"single-label"`.
    pub task: &'static str,
    /// Decision threshold (multi-label, one for every class).
    pub threshold: Option<f64>,
    /// Per-class decision thresholds (multi-label, [`evaluate_per_class`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Vec<f64>>,
    /// Number of samples.
    pub samples: usize,
    /// Per-class metrics.
    pub classes: Vec<ClassMetrics>,
    /// Unweighted mean over classes.
    pub macro_avg: Average,
    /// Pooled counts.
    pub micro_avg: Average,
    /// Support-weighted mean.
    pub weighted_avg: Average,
    /// Per-sample average (multi-label only).
    pub samples_avg: Option<Average>,
    /// Mean AP over the classes where it is defined.
    #[serde(rename = "mAP")]
    pub map: Option<f64>,
    /// Mean AUROC over the classes where it is defined.
    pub macro_auroc: Option<f64>,
    /// Accuracy (single-label) or subset accuracy = exact match (multi-label).
    pub accuracy: f64,
    /// Single-label: C × C counts, rows = true class, columns = predicted class.
    /// Multi-label: per class `[[tn, fp], [fn, tp]]` (sklearn's multilabel layout).
    pub confusion: Vec<Vec<Vec<usize>>>,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

fn f1(p: f64, r: f64) -> f64 {
    ratio(2.0 * p * r, p + r)
}

/// Counts of a binary decision (positive = `true`) and the metrics of Bountos et al.'s
/// Table II derived from them, with scikit-learn's `zero_division = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct BinaryConfusion {
    /// True positives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// False negatives.
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// True negatives.
    pub tn: usize,
}

impl BinaryConfusion {
    /// Counts `(truth, prediction)` pairs; the slices must have the same length.
    pub fn from_predictions(truth: &[bool], pred: &[bool]) -> Result<Self> {
        if truth.len() != pred.len() {
            return Err(EvalError::input(format!(
                "{} true labels but {} predictions",
                truth.len(),
                pred.len()
            )));
        }
        let mut c = Self::default();
        for (&t, &p) in truth.iter().zip(pred) {
            c.add(t, p);
        }
        Ok(c)
    }

    /// Predicts positive where `score ≥ threshold`; scores and threshold must be finite.
    pub fn from_scores(scores: &[f64], truth: &[bool], threshold: f64) -> Result<Self> {
        if !threshold.is_finite() {
            return Err(EvalError::input("the threshold must be finite"));
        }
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            return Err(EvalError::input(format!(
                "score {} of sample {i} is not finite",
                scores[i]
            )));
        }
        let pred: Vec<bool> = scores.iter().map(|&s| s >= threshold).collect();
        Self::from_predictions(truth, &pred)
    }

    /// Adds one `(truth, prediction)` pair.
    pub fn add(&mut self, truth: bool, pred: bool) {
        match (truth, pred) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (true, false) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }

    /// Number of samples.
    pub fn total(&self) -> usize {
        self.tp + self.fp + self.fn_ + self.tn
    }

    /// (TP + TN) / total, 0 for no samples.
    pub fn accuracy(&self) -> f64 {
        ratio((self.tp + self.tn) as f64, self.total() as f64)
    }

    /// TP / (TP + FP), 0 when nothing was predicted positive.
    pub fn precision(&self) -> f64 {
        ratio(self.tp as f64, (self.tp + self.fp) as f64)
    }

    /// TP / (TP + FN), 0 without positives.
    pub fn recall(&self) -> f64 {
        ratio(self.tp as f64, (self.tp + self.fn_) as f64)
    }

    /// 2PR / (P + R), 0 when undefined.
    pub fn f1(&self) -> f64 {
        f1(self.precision(), self.recall())
    }
}

/// Average precision as sklearn computes it (distinct thresholds, step-wise).
pub fn average_precision(scores: &[f64], truth: &[bool]) -> Option<f64> {
    let positives = truth.iter().filter(|&&t| t).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut prev_recall, mut ap) = (0usize, 0usize, 0.0, 0.0);
    let mut k = 0;
    while k < order.len() {
        let s = scores[order[k]];
        while k < order.len() && scores[order[k]] == s {
            if truth[order[k]] {
                tp += 1;
            } else {
                fp += 1;
            }
            k += 1;
        }
        let recall = tp as f64 / positives as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Some(ap)
}

/// AUROC (Mann-Whitney U with average ranks for ties = sklearn's trapezoidal ROC area).
pub fn auroc(scores: &[f64], truth: &[bool]) -> Option<f64> {
    let p = truth.iter().filter(|&&t| t).count();
    let n = truth.len() - p;
    if p == 0 || n == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut k = 0;
    while k < order.len() {
        let mut j = k;
        while j < order.len() && scores[order[j]] == scores[order[k]] {
            j += 1;
        }
        let avg_rank = (k + 1 + j) as f64 / 2.0;
        rank_sum += avg_rank * order[k..j].iter().filter(|&&i| truth[i]).count() as f64;
        k = j;
    }
    Some((rank_sum - (p * (p + 1)) as f64 / 2.0) / (p as f64 * n as f64))
}

/// Computes the report. `names` (optional) must have one name per score column.
pub fn evaluate(
    scores: &Matrix,
    labels: &Matrix,
    threshold: f64,
    names: Option<&[String]>,
) -> Result<ClassificationReport> {
    if !threshold.is_finite() {
        return Err(EvalError::input("--threshold must be finite"));
    }
    let mut r = evaluate_at(scores, labels, &vec![threshold; scores.cols], names)?;
    r.threshold = (r.task == "multi-label").then_some(threshold);
    Ok(r)
}

/// [`evaluate`] with one decision threshold per class (multi-label; e.g. chosen on a
/// validation set with [`best_f1_threshold`]).
pub fn evaluate_per_class(
    scores: &Matrix,
    labels: &Matrix,
    thresholds: &[f64],
    names: Option<&[String]>,
) -> Result<ClassificationReport> {
    if thresholds.len() != scores.cols || thresholds.iter().any(|t| !t.is_finite()) {
        return Err(EvalError::input(format!(
            "{} finite thresholds needed (one per class), got {thresholds:?}",
            scores.cols
        )));
    }
    let mut r = evaluate_at(scores, labels, thresholds, names)?;
    if r.task == "multi-label" {
        r.thresholds = Some(thresholds.to_vec());
    }
    Ok(r)
}

/// The decision threshold that maximises F1 of one binary label: the midpoint between two
/// consecutive distinct scores (or just below the lowest), highest F1 first, then the
/// highest threshold (fewest positives). `None` without positive samples.
pub fn best_f1_threshold(scores: &[f64], truth: &[bool]) -> Option<f64> {
    best_f1(scores, truth).map(|(_, cut)| cut)
}

/// The highest F1 any threshold reaches on one binary label, and that threshold (as
/// [`best_f1_threshold`]). `None` without positive samples.
pub fn best_f1(scores: &[f64], truth: &[bool]) -> Option<(f64, f64)> {
    let positives = truth.iter().filter(|&&t| t).count();
    if positives == 0 || scores.len() != truth.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut best: Option<(f64, f64)> = None;
    for (k, &i) in order.iter().enumerate() {
        if truth[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        // Predicting positive for every score ≥ scores[i]: cut below it, unless the next
        // score ties (the cut must separate distinct scores).
        let next = order.get(k + 1).map(|&j| scores[j]);
        if next == Some(scores[i]) {
            continue;
        }
        let f1 = 2.0 * tp as f64 / (2 * tp + fp + (positives - tp)) as f64;
        let cut = match next {
            Some(v) => 0.5 * (scores[i] + v),
            None => scores[i] - 1e-6 * scores[i].abs().max(1.0),
        };
        if best.is_none_or(|(f, _)| f1 > f) {
            best = Some((f1, cut));
        }
    }
    best
}

fn evaluate_at(
    scores: &Matrix,
    labels: &Matrix,
    thresholds: &[f64],
    names: Option<&[String]>,
) -> Result<ClassificationReport> {
    let (n, c) = (scores.rows, scores.cols);
    if n == 0 || c == 0 {
        return Err(EvalError::input(format!("scores are empty ({n}×{c})")));
    }
    if labels.rows != n {
        return Err(EvalError::input(format!(
            "scores have {n} samples (rows) but labels have {}",
            labels.rows
        )));
    }
    scores.check_finite("scores")?;
    labels.check_finite("labels")?;
    let names: Vec<String> = match names {
        Some(v) if v.len() != c => {
            return Err(EvalError::input(format!(
                "{} names for {c} score columns",
                v.len()
            )))
        }
        Some(v) => v.to_vec(),
        None => (0..c).map(|k| k.to_string()).collect(),
    };
    let multi = labels.cols == c && !(c == 1 && labels.shape.len() == 1);
    let (truth, pred): (Vec<bool>, Vec<bool>) = if multi {
        if let Some(k) = labels.data.iter().position(|&v| v != 0.0 && v != 1.0) {
            return Err(EvalError::input(format!(
                "multi-label labels must be 0 or 1; found {} at sample {}, class {}",
                labels.data[k],
                k / c,
                k % c
            )));
        }
        (
            labels.data.iter().map(|&v| v == 1.0).collect(),
            scores
                .data
                .iter()
                .enumerate()
                .map(|(i, &s)| s >= thresholds[i % c])
                .collect(),
        )
    } else if labels.cols == 1 {
        let mut t = vec![false; n * c];
        let mut p = vec![false; n * c];
        for i in 0..n {
            let y = labels.data[i];
            if y < 0.0 || y.fract() != 0.0 || y >= c as f64 {
                return Err(EvalError::input(format!(
                    "single-label labels must be class indices 0..{}; found {y} at sample {i}",
                    c - 1
                )));
            }
            t[i * c + y as usize] = true;
            let row = scores.row(i);
            let mut best = 0;
            for (k, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = k;
                }
            }
            p[i * c + best] = true;
        }
        (t, p)
    } else {
        return Err(EvalError::input(format!(
            "labels must be N×{c} (multi-label 0/1) or N (single-label class indices); got {}×{}",
            labels.rows, labels.cols
        )));
    };
    let mut classes = Vec::with_capacity(c);
    for k in 0..c {
        let col_t: Vec<bool> = (0..n).map(|i| truth[i * c + k]).collect();
        let col_s: Vec<f64> = (0..n).map(|i| scores.data[i * c + k]).collect();
        let mut counts = BinaryConfusion::default();
        for (i, &t) in col_t.iter().enumerate() {
            counts.add(t, pred[i * c + k]);
        }
        let BinaryConfusion { tp, fp, fn_, tn } = counts;
        classes.push(ClassMetrics {
            name: names[k].clone(),
            precision: counts.precision(),
            recall: counts.recall(),
            f1: counts.f1(),
            support: tp + fn_,
            ap: average_precision(&col_s, &col_t),
            auroc: auroc(&col_s, &col_t),
            tp,
            fp,
            fn_,
            tn,
        });
    }
    let mean = |f: &dyn Fn(&ClassMetrics) -> f64| classes.iter().map(f).sum::<f64>() / c as f64;
    let macro_avg = Average {
        precision: mean(&|m| m.precision),
        recall: mean(&|m| m.recall),
        f1: mean(&|m| m.f1),
    };
    let (tp, fp, fn_): (usize, usize, usize) = classes
        .iter()
        .fold((0, 0, 0), |a, m| (a.0 + m.tp, a.1 + m.fp, a.2 + m.fn_));
    let mp = ratio(tp as f64, (tp + fp) as f64);
    let mr = ratio(tp as f64, (tp + fn_) as f64);
    let micro_avg = Average {
        precision: mp,
        recall: mr,
        f1: f1(mp, mr),
    };
    let total_support: usize = classes.iter().map(|m| m.support).sum();
    let weighted = |f: &dyn Fn(&ClassMetrics) -> f64| {
        ratio(
            classes.iter().map(|m| f(m) * m.support as f64).sum::<f64>(),
            total_support as f64,
        )
    };
    let weighted_avg = Average {
        precision: weighted(&|m| m.precision),
        recall: weighted(&|m| m.recall),
        f1: weighted(&|m| m.f1),
    };
    let exact = (0..n)
        .filter(|&i| (0..c).all(|k| truth[i * c + k] == pred[i * c + k]))
        .count();
    let samples_avg = multi.then(|| {
        let (mut sp, mut sr, mut sf) = (0.0, 0.0, 0.0);
        for i in 0..n {
            let t = &truth[i * c..(i + 1) * c];
            let p = &pred[i * c..(i + 1) * c];
            let inter = t.iter().zip(p).filter(|(a, b)| **a && **b).count() as f64;
            let np = p.iter().filter(|&&b| b).count() as f64;
            let nt = t.iter().filter(|&&b| b).count() as f64;
            let (pi, ri) = (ratio(inter, np), ratio(inter, nt));
            sp += pi;
            sr += ri;
            sf += f1(pi, ri);
        }
        Average {
            precision: sp / n as f64,
            recall: sr / n as f64,
            f1: sf / n as f64,
        }
    });
    let defined_mean =
        |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let confusion = if multi {
        classes
            .iter()
            .map(|m| vec![vec![m.tn, m.fp], vec![m.fn_, m.tp]])
            .collect()
    } else {
        let mut cm = vec![vec![0usize; c]; c];
        for i in 0..n {
            let t = (0..c)
                .position(|k| truth[i * c + k])
                .expect("one true class");
            let p = (0..c)
                .position(|k| pred[i * c + k])
                .expect("one predicted class");
            cm[t][p] += 1;
        }
        vec![cm]
    };
    Ok(ClassificationReport {
        task: if multi { "multi-label" } else { "single-label" },
        threshold: None,
        thresholds: None,
        samples: n,
        map: defined_mean(classes.iter().filter_map(|m| m.ap).collect()),
        macro_auroc: defined_mean(classes.iter().filter_map(|m| m.auroc).collect()),
        classes,
        macro_avg,
        micro_avg,
        weighted_avg,
        samples_avg,
        accuracy: exact as f64 / n as f64,
        confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ap_and_auroc_by_hand() {
        let s = [0.9, 0.8, 0.7, 0.6];
        let t = [true, false, true, false];
        assert!((average_precision(&s, &t).unwrap() - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-15);
        assert!((auroc(&s, &t).unwrap() - 0.75).abs() < 1e-15);
        // All tied: AUROC 0.5, AP = prevalence.
        assert_eq!(auroc(&[0.5; 4], &t), Some(0.5));
        assert_eq!(average_precision(&[0.5; 4], &t), Some(0.5));
        assert_eq!(average_precision(&s, &[false; 4]), None);
        assert_eq!(auroc(&s, &[true; 4]), None);
    }

    #[test]
    fn binary_confusion_by_hand() {
        // truth:  1 1 1 0 0 0 0 1 ; scores thresholded at 0.5.
        let truth = [true, true, true, false, false, false, false, true];
        let scores = [0.9, 0.5, 0.2, 0.7, 0.1, 0.49, 0.0, 0.8];
        let c = BinaryConfusion::from_scores(&scores, &truth, 0.5).unwrap();
        assert_eq!(
            c,
            BinaryConfusion {
                tp: 3,
                fp: 1,
                fn_: 1,
                tn: 3
            }
        );
        assert_eq!(c.total(), 8);
        assert_eq!(c.accuracy(), 0.75);
        assert_eq!(c.precision(), 0.75);
        assert_eq!(c.recall(), 0.75);
        assert!((c.f1() - 0.75).abs() < 1e-15);
        // P = 1/2, R = 1/3 → F1 = 2·(1/6)/(5/6) = 0.4.
        let c = BinaryConfusion::from_predictions(
            &[true, true, true, false, false],
            &[true, false, false, true, false],
        )
        .unwrap();
        assert_eq!((c.tp, c.fp, c.fn_, c.tn), (1, 1, 2, 1));
        assert_eq!(c.precision(), 0.5);
        assert!((c.recall() - 1.0 / 3.0).abs() < 1e-15);
        assert!((c.f1() - 0.4).abs() < 1e-15);
        assert_eq!(c.accuracy(), 0.4);
        // Nothing predicted positive, no positives, no samples: zero_division = 0.
        let none = BinaryConfusion::from_predictions(&[false, false], &[false, false]).unwrap();
        assert_eq!(
            (none.precision(), none.recall(), none.f1(), none.accuracy()),
            (0.0, 0.0, 0.0, 1.0)
        );
        assert_eq!(BinaryConfusion::default().accuracy(), 0.0);
        // The JSON keys are the paper's.
        let json = serde_json::to_value(c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"tp": 1, "fp": 1, "fn": 2, "tn": 1})
        );
        // Bad input is an error, not a panic.
        assert!(BinaryConfusion::from_predictions(&[true], &[])
            .unwrap_err()
            .to_string()
            .contains("1 true labels but 0 predictions"));
        assert!(BinaryConfusion::from_scores(&[f64::NAN], &[true], 0.5)
            .unwrap_err()
            .to_string()
            .contains("sample 0"));
        assert!(BinaryConfusion::from_scores(&[0.1], &[true], f64::NAN).is_err());
    }

    #[test]
    fn macro_f1_is_mean_of_per_class_f1() {
        // Single-label, 3 classes; class 2 never true.
        let scores = Matrix::new(
            4,
            3,
            vec![0.9, 0.1, 0.0, 0.2, 0.7, 0.1, 0.1, 0.2, 0.7, 0.6, 0.3, 0.1],
        )
        .unwrap();
        let mut labels = Matrix::new(4, 1, vec![0.0, 1.0, 1.0, 0.0]).unwrap();
        labels.shape = vec![4];
        let r = evaluate(&scores, &labels, 0.5, None).unwrap();
        assert_eq!(r.task, "single-label");
        assert_eq!(
            r.confusion[0],
            vec![vec![2, 0, 0], vec![0, 1, 1], vec![0, 0, 0]]
        );
        let f = [1.0, f1(1.0, 0.5), 0.0];
        assert!((r.macro_avg.f1 - f.iter().sum::<f64>() / 3.0).abs() < 1e-15);
        assert_eq!(r.micro_avg.f1, r.accuracy);
        let bad = Matrix::new(4, 1, vec![0.0, 3.0, 1.0, 0.0]).unwrap();
        assert!(evaluate(&scores, &bad, 0.5, None)
            .unwrap_err()
            .to_string()
            .contains("class indices"));
    }

    #[test]
    fn best_f1_threshold_by_hand() {
        // Sorted scores 0.9(1) 0.8(0) 0.7(1) 0.4(1) 0.2(0): cutting below 0.4 gives
        // TP 3, FP 1, FN 0 → F1 6/7, the best; the cut is the midpoint 0.3.
        let s = [0.7, 0.2, 0.9, 0.4, 0.8];
        let t = [true, false, true, true, false];
        let cut = best_f1_threshold(&s, &t).unwrap();
        assert!((cut - 0.3).abs() < 1e-12, "{cut}");
        let (f1, cut) = best_f1(&s, &t).unwrap();
        assert!((f1 - 6.0 / 7.0).abs() < 1e-12 && (cut - 0.3).abs() < 1e-12);
        // Separable: the highest cut that keeps every positive.
        let cut = best_f1_threshold(&[0.1, 0.6, 0.8], &[false, true, true]).unwrap();
        assert!((cut - 0.35).abs() < 1e-12, "{cut}");
        // Ties are never split; no positives → None.
        let cut = best_f1_threshold(&[0.5, 0.5, 0.1], &[true, false, false]).unwrap();
        assert!((cut - 0.3).abs() < 1e-12, "{cut}");
        assert_eq!(best_f1_threshold(&[0.3, 0.2], &[false, false]), None);
        // The lowest score as the cut: just below it.
        let cut = best_f1_threshold(&[0.2, 0.1], &[true, true]).unwrap();
        assert!(cut < 0.1 && cut > 0.09, "{cut}");
    }

    #[test]
    fn per_class_thresholds_apply_per_column() {
        let scores = Matrix::new(3, 2, vec![0.9, 0.2, 0.4, 0.3, 0.1, 0.05]).unwrap();
        let labels = Matrix::new(3, 2, vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0]).unwrap();
        let global = evaluate(&scores, &labels, 0.5, None).unwrap();
        assert_eq!((global.classes[0].tp, global.classes[1].tp), (1, 0));
        let r = evaluate_per_class(&scores, &labels, &[0.35, 0.15], None).unwrap();
        assert_eq!((r.classes[0].tp, r.classes[0].fp), (2, 0));
        assert_eq!((r.classes[1].tp, r.classes[1].fp), (2, 0));
        assert_eq!(r.threshold, None);
        assert_eq!(r.thresholds.as_deref(), Some(&[0.35, 0.15][..]));
        assert_eq!(r.accuracy, 1.0);
        assert!(evaluate_per_class(&scores, &labels, &[0.5], None).is_err());
        assert!(evaluate_per_class(&scores, &labels, &[0.5, f64::NAN], None).is_err());
    }
}
