//! Caption scores by the facts the captions state ([`super::facts`]), not by their words.
//!
//! Every candidate and reference caption (one of each per image) is parsed with
//! [`parse_facts`]. Then:
//!
//! - **binary facts** are scored as detection problems over all images, the reference as
//!   truth: `deformation` (the caption describes deformation), one fact per type
//!   (`type_mogi` … `type_unidentified`), per type group (`group_concentric`,
//!   `group_elongated`, `group_earthquake`), per intensity (`intensity_low`, `_medium`,
//!   `_high`), the atmosphere (`turbulent`, `stratified`) and the quality flags
//!   (`low_coherence`, `processing_error`, `orbital`, `glacier`, `corrupted`, `no_info`).
//!   Each has true/false positives, false negatives, precision, recall and F1 (a ratio with
//!   a zero denominator is 0, as scikit-learn's `zero_division=0`);
//! - **`fact_f1`** is the macro mean of the F1 of the facts in [`MACRO_FACTS`] (every fact
//!   above except the type groups, which repeat the types) that are positive in at least one
//!   reference; the facts that entered are listed in [`FactScores::macro_facts`].
//!   **`fact_f1_micro`** pools their counts;
//! - among the images where both reference and candidate describe deformation
//!   ([`FactScores::both_deformation`]): `group_accuracy` / `type_accuracy` (the set of
//!   type groups / types equal to the reference's, over images whose reference names a
//!   type), `intensity_accuracy` (set of intensities equal, over images whose reference
//!   names one), `count_accuracy` (number of patterns equal), and over images whose
//!   reference gives a location: `location_overlap` (the candidate's cells meet the
//!   reference's; a candidate without a location misses), `location_exact` (same cell set)
//!   and `location_iou` (mean intersection over union of the cell sets, 0 for a candidate
//!   without a location). A "wider area" location is every cell. Each is `None` when its
//!   denominator is 0;
//! - **diversity**: distinct candidate captions (after trimming) and the vocabulary
//!   (distinct PTB tokens over all candidates).

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use super::facts::{parse_facts, Activity, Level, ParsedFacts, TypeGroup};
use super::tokenizer::tokenize;

/// Detection counts and scores of one binary fact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct BinaryScores {
    /// Candidate and reference both state the fact.
    pub tp: usize,
    /// The candidate states it, the reference does not.
    pub fp: usize,
    /// The reference states it, the candidate does not.
    #[serde(rename = "fn")]
    pub fn_: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl BinaryScores {
    /// Scores from counts (0 where a denominator is 0).
    pub fn from_counts(tp: usize, fp: usize, fn_: usize) -> Self {
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 = ratio(2 * tp, 2 * tp + fp + fn_);
        Self {
            tp,
            fp,
            fn_,
            precision,
            recall,
            f1,
        }
    }

    /// References that state the fact.
    pub fn support(&self) -> usize {
        self.tp + self.fn_
    }
}

/// An accuracy over a subset of images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SubsetAccuracy {
    /// Images in the subset (the denominator).
    pub images: usize,
    /// Fraction right; `None` when `images` is 0.
    pub accuracy: Option<f64>,
}

impl SubsetAccuracy {
    fn from_sum(sum: f64, images: usize) -> Self {
        Self {
            images,
            accuracy: (images > 0).then(|| sum / images as f64),
        }
    }
}

/// The facts that enter the macro fact-F1 (when positive in at least one reference).
pub const MACRO_FACTS: [&str; 18] = [
    "deformation",
    "type_mogi",
    "type_dyke",
    "type_sill",
    "type_spheroid",
    "type_earthquake",
    "type_unidentified",
    "intensity_low",
    "intensity_medium",
    "intensity_high",
    "turbulent",
    "stratified",
    "low_coherence",
    "processing_error",
    "orbital",
    "glacier",
    "corrupted",
    "no_info",
];

/// Fact scores of a set of candidate captions against one reference caption per image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FactScores {
    /// Number of images.
    pub images: usize,
    /// Deformation presence (the headline fact).
    pub deformation: BinaryScores,
    /// Macro mean F1 over [`FactScores::macro_facts`] (0 when that list is empty).
    pub fact_f1: f64,
    /// F1 of the pooled counts of the same facts.
    pub fact_f1_micro: f64,
    /// The facts of [`MACRO_FACTS`] with at least one positive reference.
    pub macro_facts: Vec<String>,
    /// Every binary fact by name (see the module documentation).
    pub facts: BTreeMap<String, BinaryScores>,
    /// Images where both reference and candidate describe deformation.
    pub both_deformation: usize,
    pub group_accuracy: SubsetAccuracy,
    pub type_accuracy: SubsetAccuracy,
    pub intensity_accuracy: SubsetAccuracy,
    pub count_accuracy: SubsetAccuracy,
    pub location_overlap: SubsetAccuracy,
    pub location_exact: SubsetAccuracy,
    /// Mean IoU of the cell sets (in `accuracy`).
    pub location_iou: SubsetAccuracy,
    /// Distinct candidate captions (after trimming).
    pub distinct_captions: usize,
    /// Distinct PTB tokens over all candidates.
    pub vocabulary: usize,
}

impl FactScores {
    /// JSON with the field names above (`facts` keyed by fact name).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("fact scores serialise")
    }
}

/// The binary facts of one parsed caption, by name, in a fixed order.
pub fn binary_facts(f: &ParsedFacts) -> Vec<(String, bool)> {
    let mut out = vec![("deformation".to_string(), f.has_deformation())];
    for a in Activity::ALL {
        out.push((format!("type_{}", a.name()), f.activities.contains(&a)));
    }
    let groups = f.groups();
    for g in TypeGroup::ALL {
        out.push((format!("group_{}", g.name()), groups.contains(&g)));
    }
    for l in Level::ALL {
        out.push((
            format!("intensity_{}", l.name()),
            f.intensities.contains(&l),
        ));
    }
    for (name, v) in [
        ("turbulent", f.turbulent),
        ("stratified", f.stratified),
        ("low_coherence", f.low_coherence),
        ("processing_error", f.processing_error.is_some()),
        ("orbital", f.orbital),
        ("glacier", f.glacier),
        ("corrupted", f.corrupted),
        ("no_info", f.no_info),
    ] {
        out.push((name.to_string(), v));
    }
    out
}

/// Parses candidates and references (one each per image, same order) and scores them.
///
/// Panics when the two lists differ in length.
pub fn fact_scores<C, R>(candidates: &[C], references: &[R]) -> FactScores
where
    C: AsRef<str> + Sync,
    R: AsRef<str> + Sync,
{
    assert_eq!(
        candidates.len(),
        references.len(),
        "one candidate per reference caption"
    );
    let cands: Vec<ParsedFacts> = candidates
        .par_iter()
        .map(|c| parse_facts(c.as_ref()))
        .collect();
    let refs: Vec<ParsedFacts> = references
        .par_iter()
        .map(|r| parse_facts(r.as_ref()))
        .collect();
    let mut scores = fact_scores_parsed(&cands, &refs);
    let distinct: BTreeSet<&str> = candidates.iter().map(|c| c.as_ref().trim()).collect();
    scores.distinct_captions = distinct.len();
    let vocab: BTreeSet<String> = candidates
        .par_iter()
        .map(|c| {
            tokenize(c.as_ref())
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect::<BTreeSet<String>>()
        })
        .reduce(BTreeSet::new, |mut a, b| {
            a.extend(b);
            a
        });
    scores.vocabulary = vocab.len();
    scores
}

/// Scores already parsed captions (the diversity fields are left 0: they need the text).
pub fn fact_scores_parsed(cands: &[ParsedFacts], refs: &[ParsedFacts]) -> FactScores {
    assert_eq!(cands.len(), refs.len(), "one candidate per reference");
    let mut counts: Vec<(String, [usize; 3])> = Vec::new();
    let mut both = 0usize;
    let (mut group, mut group_n) = (0.0, 0usize);
    let (mut types, mut types_n) = (0.0, 0usize);
    let (mut ints, mut ints_n) = (0.0, 0usize);
    let mut count_ok = 0.0;
    let (mut overlap, mut exact, mut iou, mut loc_n) = (0.0, 0.0, 0.0, 0usize);
    for (c, r) in cands.iter().zip(refs) {
        let cb = binary_facts(c);
        let rb = binary_facts(r);
        if counts.is_empty() {
            counts = cb.iter().map(|(n, _)| (n.clone(), [0; 3])).collect();
        }
        for (k, ((_, cv), (_, rv))) in cb.iter().zip(&rb).enumerate() {
            let slot = &mut counts[k].1;
            match (cv, rv) {
                (true, true) => slot[0] += 1,
                (true, false) => slot[1] += 1,
                (false, true) => slot[2] += 1,
                (false, false) => {}
            }
        }
        if !(c.has_deformation() && r.has_deformation()) {
            continue;
        }
        both += 1;
        let hit = |b: bool| if b { 1.0 } else { 0.0 };
        if !r.activities.is_empty() {
            types_n += 1;
            types += hit(c.activities == r.activities);
            group_n += 1;
            group += hit(c.groups() == r.groups());
        }
        if !r.intensities.is_empty() {
            ints_n += 1;
            ints += hit(c.intensities == r.intensities);
        }
        count_ok += hit(c.pattern_count == r.pattern_count);
        if !r.cells.is_empty() {
            loc_n += 1;
            overlap += hit(!c.cells.intersection(r.cells).is_empty());
            exact += hit(c.cells == r.cells);
            iou += if c.cells.is_empty() {
                0.0
            } else {
                c.cells.iou(r.cells)
            };
        }
    }
    if counts.is_empty() {
        counts = binary_facts(&ParsedFacts::default())
            .into_iter()
            .map(|(n, _)| (n, [0; 3]))
            .collect();
    }
    let facts: BTreeMap<String, BinaryScores> = counts
        .iter()
        .map(|(n, [tp, fp, fn_])| (n.clone(), BinaryScores::from_counts(*tp, *fp, *fn_)))
        .collect();
    let macro_facts: Vec<String> = MACRO_FACTS
        .iter()
        .filter(|n| facts.get(**n).is_some_and(|s| s.support() > 0))
        .map(|n| n.to_string())
        .collect();
    let fact_f1 = if macro_facts.is_empty() {
        0.0
    } else {
        macro_facts.iter().map(|n| facts[n].f1).sum::<f64>() / macro_facts.len() as f64
    };
    let pooled = macro_facts.iter().fold([0usize; 3], |acc, n| {
        let s = &facts[n];
        [acc[0] + s.tp, acc[1] + s.fp, acc[2] + s.fn_]
    });
    FactScores {
        images: cands.len(),
        deformation: facts["deformation"],
        fact_f1,
        fact_f1_micro: BinaryScores::from_counts(pooled[0], pooled[1], pooled[2]).f1,
        macro_facts,
        facts,
        both_deformation: both,
        group_accuracy: SubsetAccuracy::from_sum(group, group_n),
        type_accuracy: SubsetAccuracy::from_sum(types, types_n),
        intensity_accuracy: SubsetAccuracy::from_sum(ints, ints_n),
        count_accuracy: SubsetAccuracy::from_sum(count_ok, both),
        location_overlap: SubsetAccuracy::from_sum(overlap, loc_n),
        location_exact: SubsetAccuracy::from_sum(exact, loc_n),
        location_iou: SubsetAccuracy::from_sum(iou, loc_n),
        distinct_captions: 0,
        vocabulary: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: &str = "Turbulent mixing effect or wave-like patterns caused by liquid and solid particles of the atmosphere can be detected around the area. No deformation activity can be detected. ";
    const SILL_LOW_BOTTOM: &str =
        "A sill-type deformation pattern of low intensity is detected at the bottom of the image.";
    const SILL_HIGH_BL: &str =
        "A sill-type deformation pattern of high intensity can be detected on the bottom-left side.";
    const DYKE_LOW_TR: &str = "Vertical stratification effect can be detected on the left side. A dyke-type deformation pattern of low intensity can be detected on the top-right side.";
    const MOGI_LOW_BOTTOM: &str =
        "A mogi-type deformation pattern of low intensity is detected at the bottom of the image.";

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn hand_computed_example() {
        // image: reference / candidate
        // 0: sill low bottom  / sill high bottom-left   both def; types =, groups =, int ≠, loc overlap (1/3)
        // 1: dyke low top-right / mogi low bottom       both def; types ≠, groups ≠, int =, loc miss
        // 2: none (turbulent) / sill low bottom         candidate FP deformation
        // 3: sill low bottom / none (turbulent)         candidate FN deformation
        // 4: none / none                                TN
        let refs = [SILL_LOW_BOTTOM, DYKE_LOW_TR, NONE, SILL_LOW_BOTTOM, NONE];
        let cands = [SILL_HIGH_BL, MOGI_LOW_BOTTOM, SILL_LOW_BOTTOM, NONE, NONE];
        let s = fact_scores(&cands, &refs);
        assert_eq!(s.images, 5);
        // deformation: tp 2 (0, 1), fp 1 (2), fn 1 (3).
        assert_eq!(
            (s.deformation.tp, s.deformation.fp, s.deformation.fn_),
            (2, 1, 1)
        );
        assert!(close(s.deformation.precision, 2.0 / 3.0));
        assert!(close(s.deformation.recall, 2.0 / 3.0));
        assert!(close(s.deformation.f1, 2.0 / 3.0));
        // sill: refs 0, 3; cands 0, 2 → tp 1, fp 1, fn 1.
        let sill = s.facts["type_sill"];
        assert_eq!((sill.tp, sill.fp, sill.fn_), (1, 1, 1));
        // dyke: ref 1 only, never predicted → f1 0; mogi: predicted, never a reference.
        assert!(close(s.facts["type_dyke"].f1, 0.0));
        assert_eq!(s.facts["type_mogi"].fp, 1);
        // intensity low: refs 0,1,3; cands 1,2 → tp 1 (1), fp 1 (2), fn 2 (0, 3).
        let low = s.facts["intensity_low"];
        assert_eq!((low.tp, low.fp, low.fn_), (1, 1, 2));
        assert!(close(low.f1, 2.0 / 5.0));
        // turbulent: refs 2, 4; cands 3, 4 → tp 1, fp 1, fn 1. stratified: ref 1 only.
        let turb = s.facts["turbulent"];
        assert_eq!((turb.tp, turb.fp, turb.fn_), (1, 1, 1));
        assert!(close(s.facts["stratified"].f1, 0.0));
        // The macro runs over the facts with a positive reference: deformation, sill, dyke,
        // intensity_low, turbulent, stratified.
        assert_eq!(
            s.macro_facts,
            [
                "deformation",
                "type_dyke",
                "type_sill",
                "intensity_low",
                "turbulent",
                "stratified"
            ]
        );
        let want = (2.0 / 3.0 + 0.0 + 0.5 + 0.4 + 0.5 + 0.0) / 6.0;
        assert!(close(s.fact_f1, want), "{} vs {want}", s.fact_f1);
        // Pooled: tp 2+0+1+1+1+0 = 5, fp 1+0+1+1+1+0 = 4, fn 1+1+1+2+1+1 = 7.
        assert!(close(s.fact_f1_micro, 10.0 / 21.0));
        // Conditional accuracies over images 0 and 1.
        assert_eq!(s.both_deformation, 2);
        assert_eq!(s.type_accuracy.images, 2);
        assert!(close(s.type_accuracy.accuracy.unwrap(), 0.5));
        assert!(close(s.group_accuracy.accuracy.unwrap(), 0.5));
        assert!(close(s.intensity_accuracy.accuracy.unwrap(), 0.5));
        assert!(close(s.count_accuracy.accuracy.unwrap(), 1.0));
        // Location: 0 = bottom row vs bottom-left cell (overlap, IoU 1/3); 1 = top-right vs
        // bottom row (miss).
        assert!(close(s.location_overlap.accuracy.unwrap(), 0.5));
        assert!(close(s.location_exact.accuracy.unwrap(), 0.0));
        assert!(close(s.location_iou.accuracy.unwrap(), (1.0 / 3.0) / 2.0));
        // Diversity: 4 distinct candidates (NONE twice).
        assert_eq!(s.distinct_captions, 4);
        let json = s.to_json();
        assert_eq!(json["facts"]["type_sill"]["fn"], 1);
        assert_eq!(json["deformation"]["tp"], 2);
        assert!(json["location_exact"]["accuracy"].is_number());
    }

    #[test]
    fn constant_caption_and_vocabulary() {
        let refs = [SILL_LOW_BOTTOM, NONE, NONE];
        let cands = [NONE, NONE, " Turbulent mixing effect or wave-like patterns caused by liquid and solid particles of the atmosphere can be detected around the area. No deformation activity can be detected."];
        let s = fact_scores(&cands, &refs);
        assert_eq!(s.distinct_captions, 1, "trimmed captions are the same");
        // The PTB tokens of NONE without punctuation.
        let tokens = tokenize(NONE);
        let v: BTreeSet<&str> = tokens.split(' ').collect();
        assert_eq!(s.vocabulary, v.len());
        assert_eq!(s.deformation.tp, 0);
        assert!(close(s.deformation.f1, 0.0));
        assert_eq!(s.both_deformation, 0);
        assert_eq!(s.type_accuracy.accuracy, None);
        assert!(s.to_json()["type_accuracy"]["accuracy"].is_null());
        // Perfect candidates.
        let s = fact_scores(&refs, &refs);
        assert!(close(s.fact_f1, 1.0) && close(s.deformation.f1, 1.0));
        assert_eq!(s.location_exact.accuracy, Some(1.0));
        // Empty input.
        let e = fact_scores::<&str, &str>(&[], &[]);
        assert_eq!(e.images, 0);
        assert!(e.macro_facts.is_empty() && close(e.fact_f1, 0.0));
    }
}
