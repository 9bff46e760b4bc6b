//! Which gallery items are relevant to a query in InSAR text–image retrieval, and the scores
//! of both retrieval directions.
//!
//! InSAR captions repeat heavily (the most frequent built-in caption covers ~15 % of the
//! frames), so "the one paired caption" is a poor notion of relevance. Relevance here is by
//! the facts a caption states ([`crate::captions::facts::parse_facts`]):
//!
//! - [`Relevance::Caption`]: the normalised caption text is identical;
//! - [`Relevance::Facts`]: deformation status, the set of type *groups* (concentric volcanic:
//!   Mogi/spheroid/sill/unidentified; elongated: dyke; earthquake) and the set of intensities
//!   agree — Mogi sources, deep spheroids and deep dykes draw the same fringes;
//! - [`Relevance::ExactType`]: as `Facts` with the exact activity types;
//! - [`Relevance::Location`]: as `Facts`, and the deformation cells (3×3 grid) agree.
//!
//! A free-text query may state fewer facts than a caption ("dyke-type deformation"):
//! [`query_matches`] asks only that every fact the query states holds for the caption.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::{evaluate, RetrievalScores};
use crate::captions::facts::{
    parse_facts, Activity, CellSet, DeformationStatus, Level, ParsedFacts, TypeGroup,
};
use crate::error::{EvalError, Result};
use crate::npy::Matrix;

/// A notion of relevance between two captions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Relevance {
    Caption,
    Facts,
    ExactType,
    Location,
}

impl Relevance {
    /// Every notion, in report order.
    pub const ALL: [Relevance; 4] = [
        Relevance::Caption,
        Relevance::Facts,
        Relevance::ExactType,
        Relevance::Location,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Relevance::Caption => "caption",
            Relevance::Facts => "facts",
            Relevance::ExactType => "exact-type",
            Relevance::Location => "location",
        }
    }
}

/// The key two captions must share to be relevant to each other under a [`Relevance`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RelevanceKey {
    Caption(String),
    Facts {
        status: DeformationStatus,
        groups: BTreeSet<TypeGroup>,
        intensities: BTreeSet<Level>,
    },
    ExactType {
        status: DeformationStatus,
        activities: BTreeSet<Activity>,
        intensities: BTreeSet<Level>,
    },
    Location {
        status: DeformationStatus,
        groups: BTreeSet<TypeGroup>,
        intensities: BTreeSet<Level>,
        cells: CellSet,
    },
}

/// A caption lower-cased with runs of white space collapsed and a final full stop dropped.
pub fn normalize_caption(caption: &str) -> String {
    let s = caption.split_whitespace().collect::<Vec<_>>().join(" ");
    s.trim_end_matches('.').trim().to_lowercase()
}

/// The key of `caption` under `relevance`.
pub fn relevance_key(caption: &str, relevance: Relevance) -> RelevanceKey {
    if relevance == Relevance::Caption {
        return RelevanceKey::Caption(normalize_caption(caption));
    }
    key_of_facts(&parse_facts(caption), relevance)
        .unwrap_or_else(|| RelevanceKey::Caption(normalize_caption(caption)))
}

/// The fact key of already parsed facts (`None` for [`Relevance::Caption`]).
pub fn key_of_facts(f: &ParsedFacts, relevance: Relevance) -> Option<RelevanceKey> {
    let status = f.deformation;
    Some(match relevance {
        Relevance::Caption => return None,
        Relevance::Facts => RelevanceKey::Facts {
            status,
            groups: f.groups(),
            intensities: f.intensities.clone(),
        },
        Relevance::ExactType => RelevanceKey::ExactType {
            status,
            activities: f.activities.clone(),
            intensities: f.intensities.clone(),
        },
        Relevance::Location => RelevanceKey::Location {
            status,
            groups: f.groups(),
            intensities: f.intensities.clone(),
            cells: f.cells,
        },
    })
}

/// For each query key, the gallery positions with the same key (possibly none).
pub fn relevant_by_key(queries: &[RelevanceKey], gallery: &[RelevanceKey]) -> Vec<Vec<usize>> {
    let mut index: HashMap<&RelevanceKey, Vec<usize>> = HashMap::new();
    for (i, k) in gallery.iter().enumerate() {
        index.entry(k).or_default().push(i);
    }
    queries
        .iter()
        .map(|k| index.get(k).cloned().unwrap_or_default())
        .collect()
}

/// Whether every fact `query` states holds for `caption`: a stated deformation status must
/// match, every named type group (and exact type, when the query names one that is not the
/// only one of its group) must be among the caption's, every named intensity among the
/// caption's, and named cells must overlap the caption's. A query stating nothing about
/// deformation matches everything.
pub fn query_matches(query: &ParsedFacts, caption: &ParsedFacts) -> bool {
    let states_deformation = query.has_deformation()
        || query.deformation == DeformationStatus::NoInformation
        || !query.activities.is_empty()
        || !query.intensities.is_empty();
    if !states_deformation {
        return true;
    }
    if query.deformation != caption.deformation {
        return false;
    }
    let groups = caption.groups();
    if !query.groups().is_subset(&groups) {
        return false;
    }
    if !query.intensities.is_subset(&caption.intensities) {
        return false;
    }
    if !query.cells.is_empty()
        && !caption.cells.is_empty()
        && query.cells.intersection(caption.cells).is_empty()
    {
        return false;
    }
    true
}

/// The scores of both directions over one set of paired images and captions (item `i` of
/// the similarity's rows is caption `i`, column `j` image `j`): text → image ranks the images
/// for each caption, image → text the captions for each image; relevant items are those
/// with the same key. `mR` is the mean of the six recalls, in percent.
#[derive(Debug, Clone, Serialize)]
pub struct BidirectionalScores {
    pub relevance: Relevance,
    pub text_to_image: RetrievalScores,
    pub image_to_text: RetrievalScores,
    #[serde(rename = "mR")]
    pub mean_recall: f64,
}

/// Scores a caption × image similarity of paired items (row `i` and column `i` belong
/// together) under `relevance`, with the caption of each pair giving its key.
pub fn bidirectional(
    text_image: &Matrix,
    captions: &[String],
    relevance: Relevance,
) -> Result<BidirectionalScores> {
    let n = captions.len();
    if text_image.rows != n || text_image.cols != n {
        return Err(EvalError::input(format!(
            "{}×{} similarity for {n} image–caption pairs (expected {n}×{n})",
            text_image.rows, text_image.cols
        )));
    }
    let keys: Vec<RelevanceKey> = captions
        .iter()
        .map(|c| relevance_key(c, relevance))
        .collect();
    let rel = relevant_by_key(&keys, &keys);
    let t2i = evaluate(text_image, &rel)?;
    let i2t = evaluate(&transpose(text_image), &rel)?;
    Ok(BidirectionalScores {
        relevance,
        mean_recall: mean_recall(&t2i, &i2t),
        text_to_image: t2i,
        image_to_text: i2t,
    })
}

/// The mean of R@1, R@5, R@10 of both directions, in percent.
pub fn mean_recall(a: &RetrievalScores, b: &RetrievalScores) -> f64 {
    100.0 * (a.r1 + a.r5 + a.r10 + b.r1 + b.r5 + b.r10) / 6.0
}

/// The transposed matrix.
pub fn transpose(m: &Matrix) -> Matrix {
    let mut data = vec![0.0; m.rows * m.cols];
    for r in 0..m.rows {
        for c in 0..m.cols {
            data[c * m.rows + r] = m.data[r * m.cols + c];
        }
    }
    Matrix::new(m.cols, m.rows, data).expect("same number of values")
}

/// Okapi BM25 over a fixed set of documents (lower-cased words of letters and digits),
/// `k1 = 1.2`, `b = 0.75`, idf `ln(1 + (N − df + ½)/(df + ½))`: the text matcher of the
/// caption-then-match baseline.
#[derive(Debug, Clone)]
pub struct Bm25 {
    docs: Vec<HashMap<String, f64>>,
    lengths: Vec<f64>,
    mean_length: f64,
    df: HashMap<String, f64>,
}

/// The words BM25 counts: maximal runs of ASCII letters or digits, lower-cased.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

impl Bm25 {
    pub fn new<S: AsRef<str>>(docs: &[S]) -> Self {
        let mut df: HashMap<String, f64> = HashMap::new();
        let mut tfs = Vec::with_capacity(docs.len());
        let mut lengths = Vec::with_capacity(docs.len());
        for d in docs {
            let w = words(d.as_ref());
            lengths.push(w.len() as f64);
            let mut tf: HashMap<String, f64> = HashMap::new();
            for t in w {
                *tf.entry(t).or_default() += 1.0;
            }
            for t in tf.keys() {
                *df.entry(t.clone()).or_default() += 1.0;
            }
            tfs.push(tf);
        }
        let mean_length = if lengths.is_empty() {
            0.0
        } else {
            lengths.iter().sum::<f64>() / lengths.len() as f64
        };
        Self {
            docs: tfs,
            lengths,
            mean_length,
            df,
        }
    }

    /// The BM25 score of every document for `query` (a repeated query word counts once).
    pub fn scores(&self, query: &str) -> Vec<f64> {
        let (k1, b) = (1.2, 0.75);
        let n = self.docs.len() as f64;
        let terms: BTreeSet<String> = words(query).into_iter().collect();
        self.docs
            .iter()
            .zip(&self.lengths)
            .map(|(tf, &len)| {
                terms
                    .iter()
                    .map(|t| {
                        let Some(&f) = tf.get(t) else { return 0.0 };
                        let df = self.df.get(t).copied().unwrap_or(0.0);
                        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                        let norm = if self.mean_length > 0.0 {
                            len / self.mean_length
                        } else {
                            1.0
                        };
                        idf * f * (k1 + 1.0) / (f + k1 * (1.0 - b + b * norm))
                    })
                    .sum()
            })
            .collect()
    }
}

/// The 10-label vector (`[Deformation, Mogi, Dyke, Sill, Spheroid, Earthquake, Unidentified,
/// Low, Medium, High]`, the Hephaestus multi-label order) that a caption's facts state; all
/// zeros without deformation.
pub fn label_vector(f: &ParsedFacts) -> [f64; 10] {
    let mut v = [0.0; 10];
    if !f.has_deformation() {
        return v;
    }
    v[0] = 1.0;
    for (k, a) in Activity::ALL.iter().enumerate() {
        if f.activities.contains(a) {
            v[1 + k] = 1.0;
        }
    }
    for (k, l) in Level::ALL.iter().enumerate() {
        if f.intensities.contains(l) {
            v[7 + k] = 1.0;
        }
    }
    v
}

/// The classifier-facts baseline: for each query caption (rows) and image (columns), the
/// log-likelihood of the query's label vector ([`label_vector`]) under the image's
/// independent label probabilities `probs` (clamped to [1e-6, 1 − 1e-6]).
pub fn classifier_similarity(queries: &[String], probs: &[Vec<f32>]) -> Result<Matrix> {
    let targets: Vec<[f64; 10]> = queries
        .iter()
        .map(|q| label_vector(&parse_facts(q)))
        .collect();
    let mut data = Vec::with_capacity(queries.len() * probs.len());
    for t in &targets {
        for p in probs {
            if p.len() != 10 {
                return Err(EvalError::input(format!(
                    "{} label probabilities per image, expected 10",
                    p.len()
                )));
            }
            let ll: f64 = t
                .iter()
                .zip(p)
                .map(|(&y, &q)| {
                    let q = f64::from(q).clamp(1e-6, 1.0 - 1e-6);
                    y * q.ln() + (1.0 - y) * (1.0 - q).ln()
                })
                .sum();
            data.push(ll);
        }
    }
    Matrix::new(queries.len(), probs.len(), data)
}

/// The caption-then-match baseline: BM25 of each query caption (rows) against each image's
/// generated caption (columns, the BM25 documents).
pub fn caption_match_similarity(queries: &[String], generated: &[String]) -> Result<Matrix> {
    let bm = Bm25::new(generated);
    let data: Vec<f64> = queries.iter().flat_map(|q| bm.scores(q)).collect();
    Matrix::new(queries.len(), generated.len(), data)
}

/// A seeded uniform random similarity (the chance baseline).
pub fn random_similarity(rows: usize, cols: usize, seed: u64) -> Result<Matrix> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Matrix::new(
        rows,
        cols,
        (0..rows * cols).map(|_| rng.random::<f64>()).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOGI_HIGH: &str =
        "A mogi-type deformation pattern of high intensity can be detected in the centre.";
    const SILL_HIGH: &str =
        "A sill-type deformation pattern of high intensity can be detected on the left side.";
    const DYKE_HIGH: &str =
        "A dyke-type deformation pattern of high intensity can be detected in the centre.";
    const NONE: &str = "No deformation activity can be detected.";

    #[test]
    fn keys_group_types_as_the_physics_allows() {
        let k = |c, r| relevance_key(c, r);
        assert_eq!(
            k(MOGI_HIGH, Relevance::Facts),
            k(SILL_HIGH, Relevance::Facts)
        );
        assert_ne!(
            k(MOGI_HIGH, Relevance::Facts),
            k(DYKE_HIGH, Relevance::Facts)
        );
        assert_ne!(
            k(MOGI_HIGH, Relevance::ExactType),
            k(SILL_HIGH, Relevance::ExactType)
        );
        assert_ne!(
            k(MOGI_HIGH, Relevance::Location),
            k(SILL_HIGH, Relevance::Location)
        );
        assert_eq!(
            k(MOGI_HIGH, Relevance::Caption),
            k(
                "a mogi-type deformation pattern of high  intensity can be detected in the centre",
                Relevance::Caption
            )
        );
        let q = parse_facts("dyke-type deformation");
        assert!(query_matches(&q, &parse_facts(DYKE_HIGH)));
        assert!(!query_matches(&q, &parse_facts(MOGI_HIGH)));
        assert!(!query_matches(&q, &parse_facts(NONE)));
        assert!(query_matches(
            &parse_facts("interferogram"),
            &parse_facts(NONE)
        ));
    }

    #[test]
    fn bidirectional_scores_count_fact_matches_as_hits() {
        let caps: Vec<String> = [MOGI_HIGH, SILL_HIGH, DYKE_HIGH, NONE]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // Caption 0 (mogi) ranks image 1 (sill) first: a hit by facts, not by caption.
        let s = Matrix::new(
            4,
            4,
            vec![
                0.5, 0.9, 0.1, 0.0, //
                0.0, 0.9, 0.1, 0.0, //
                0.0, 0.0, 0.9, 0.1, //
                0.0, 0.0, 0.1, 0.9,
            ],
        )
        .unwrap();
        let f = bidirectional(&s, &caps, Relevance::Facts).unwrap();
        assert_eq!(f.text_to_image.r1, 1.0);
        let c = bidirectional(&s, &caps, Relevance::Caption).unwrap();
        assert_eq!(c.text_to_image.r1, 0.75);
        assert!((c.mean_recall - 100.0 * (0.75 + 1.0 + 1.0 + 0.75 + 1.0 + 1.0) / 6.0).abs() < 1e-9);
        assert!(bidirectional(&s, &caps[..3], Relevance::Facts).is_err());
    }

    #[test]
    fn bm25_prefers_documents_sharing_rare_words() {
        let docs = [MOGI_HIGH, DYKE_HIGH, NONE];
        let bm = Bm25::new(&docs);
        let s = bm.scores("dyke high");
        assert!(s[1] > s[0] && s[0] > s[2], "{s:?}");
        assert!(bm.scores("").iter().all(|&v| v == 0.0));
    }

    #[test]
    fn classifier_facts_prefer_images_whose_labels_match() {
        let q = vec![DYKE_HIGH.to_string(), NONE.to_string()];
        let mut dyke = vec![0.05f32; 10];
        dyke[0] = 0.9;
        dyke[2] = 0.9;
        dyke[9] = 0.8;
        let none = vec![0.05f32; 10];
        let s = classifier_similarity(&q, &[dyke, none]).unwrap();
        assert!(s.row(0)[0] > s.row(0)[1] && s.row(1)[1] > s.row(1)[0]);
        assert_eq!(label_vector(&parse_facts(DYKE_HIGH))[..3], [1.0, 0.0, 1.0]);
        assert!(classifier_similarity(&q, &[vec![0.5; 3]]).is_err());
    }
}
