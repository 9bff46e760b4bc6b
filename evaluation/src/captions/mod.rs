//! Caption metrics identical to pycocoevalcap 1.2 (`COCOEvalCap`): BLEU-1..4, ROUGE-L and
//! CIDEr-D on PTB-tokenized text. METEOR and SPICE are not computed. Besides them, the
//! InSAR fact metrics ([`facts`], [`fact_metrics`]) score captions by the facts they state.
//!
//! The evaluated set is the set of images in the result file (as in `COCOEvalCap`): every
//! result image must exist in the references and have at least one reference caption, and
//! appear once. Reference images without a result are not evaluated (they are counted in
//! [`CaptionScores::images_without_result`]).

pub mod bleu;
pub mod cider;
pub mod fact_metrics;
pub mod facts;
pub mod ngrams;
pub mod rouge;
pub mod tokenizer;

pub use fact_metrics::{fact_scores, FactScores};
pub use facts::{parse_facts, ParsedFacts};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::error::{EvalError, Result};

/// An image id as it appears in the COCO files (an integer or a string).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageId {
    /// Integer id (COCO's usual form).
    Int(i64),
    /// String id.
    Str(String),
}

impl std::fmt::Display for ImageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageId::Int(i) => write!(f, "{i}"),
            ImageId::Str(s) => write!(f, "{s}"),
        }
    }
}

impl ImageId {
    fn from_json(v: &Value) -> Option<ImageId> {
        match v {
            Value::Number(n) => n.as_i64().map(ImageId::Int),
            Value::String(s) => Some(ImageId::Str(s.clone())),
            _ => None,
        }
    }
}

/// References (COCO annotation format) and one candidate per evaluated image.
#[derive(Debug, Clone, Default)]
pub struct CaptionSet {
    /// Evaluated images, in reference-file order.
    pub ids: Vec<ImageId>,
    /// Raw reference captions, per evaluated image.
    pub references: Vec<Vec<String>>,
    /// Raw candidate caption, per evaluated image.
    pub candidates: Vec<String>,
    /// Reference images that have no result (not evaluated).
    pub images_without_result: usize,
}

/// Corpus and per-image caption scores.
#[derive(Debug, Clone, Serialize)]
pub struct CaptionScores {
    /// Corpus BLEU-1..4 (counts summed over the corpus).
    #[serde(rename = "Bleu_1")]
    pub bleu1: f64,
    #[serde(rename = "Bleu_2")]
    #[allow(missing_docs)]
    pub bleu2: f64,
    #[serde(rename = "Bleu_3")]
    #[allow(missing_docs)]
    pub bleu3: f64,
    #[serde(rename = "Bleu_4")]
    #[allow(missing_docs)]
    pub bleu4: f64,
    /// Mean ROUGE-L.
    #[serde(rename = "ROUGE_L")]
    pub rouge_l: f64,
    /// Mean CIDEr-D (0-10 scale; papers often print ×100).
    #[serde(rename = "CIDEr")]
    pub cider: f64,
    /// Number of evaluated images.
    pub images: usize,
    /// Reference images without a result (not evaluated).
    pub images_without_result: usize,
    /// Per-image scores, in evaluation order (`None` unless requested).
    #[serde(skip)]
    pub per_image: Option<Vec<(ImageId, ImageScores)>>,
}

/// Scores of one image.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ImageScores {
    /// Per-image BLEU-1.
    #[serde(rename = "Bleu_1")]
    pub bleu1: f64,
    #[serde(rename = "Bleu_2")]
    #[allow(missing_docs)]
    pub bleu2: f64,
    #[serde(rename = "Bleu_3")]
    #[allow(missing_docs)]
    pub bleu3: f64,
    #[serde(rename = "Bleu_4")]
    #[allow(missing_docs)]
    pub bleu4: f64,
    /// ROUGE-L.
    #[serde(rename = "ROUGE_L")]
    pub rouge_l: f64,
    /// CIDEr-D.
    #[serde(rename = "CIDEr")]
    pub cider: f64,
}

impl CaptionScores {
    /// JSON with pycocoevalcap's metric names; `per_image` keyed by image id when present.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("scores serialise");
        if let Some(per) = &self.per_image {
            let mut map = serde_json::Map::new();
            for (id, s) in per {
                map.insert(
                    id.to_string(),
                    serde_json::to_value(s).expect("scores serialise"),
                );
            }
            v["per_image"] = Value::Object(map);
        }
        v
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(EvalError::file(path, "empty file"));
    }
    serde_json::from_slice(&bytes).map_err(|e| EvalError::file(path, format!("invalid JSON: {e}")))
}

impl CaptionSet {
    /// Loads COCO references (`{"images": [{"id"}], "annotations": [{"image_id", "caption"}]}`)
    /// and COCO results (`[{"image_id", "caption"}]`).
    pub fn load(refs: &Path, results: &Path) -> Result<CaptionSet> {
        let r = read_json(refs)?;
        let s = read_json(results)?;
        CaptionSet::from_json(&r, &s).map_err(|e| match e {
            EvalError::Input(m) if m.starts_with("references") => EvalError::file(refs, m),
            EvalError::Input(m) => EvalError::file(results, m),
            other => other,
        })
    }

    /// Builds the set from parsed COCO reference and result JSON. Error messages start
    /// with "references" or "results" to say which input is at fault.
    pub fn from_json(refs: &Value, results: &Value) -> Result<CaptionSet> {
        let images = refs
            .get("images")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                EvalError::input("references: no \"images\" list (COCO annotation format expected)")
            })?;
        let anns = refs
            .get("annotations")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                EvalError::input(
                    "references: no \"annotations\" list (COCO annotation format expected)",
                )
            })?;
        let mut order: Vec<ImageId> = Vec::with_capacity(images.len());
        let mut caps: HashMap<ImageId, Vec<String>> = HashMap::with_capacity(images.len());
        for (k, img) in images.iter().enumerate() {
            let id = img.get("id").and_then(ImageId::from_json).ok_or_else(|| {
                EvalError::input(format!(
                    "references: images[{k}] has no integer or string \"id\""
                ))
            })?;
            if caps.insert(id.clone(), Vec::new()).is_some() {
                return Err(EvalError::input(format!(
                    "references: duplicate image id {id} in \"images\""
                )));
            }
            order.push(id);
        }
        for (k, ann) in anns.iter().enumerate() {
            let id = ann
                .get("image_id")
                .and_then(ImageId::from_json)
                .ok_or_else(|| {
                    EvalError::input(format!("references: annotations[{k}] has no \"image_id\""))
                })?;
            let cap = ann.get("caption").and_then(Value::as_str).ok_or_else(|| {
                EvalError::input(format!(
                    "references: annotations[{k}] has no string \"caption\""
                ))
            })?;
            caps.get_mut(&id)
                .ok_or_else(|| {
                    EvalError::input(format!("references: annotations[{k}] refers to image id {id}, which is not in \"images\""))
                })?
                .push(cap.to_string());
        }
        let list = results.as_array().ok_or_else(|| {
            EvalError::input(
                "results: expected a list of {\"image_id\", \"caption\"} (COCO result format)",
            )
        })?;
        if list.is_empty() {
            return Err(EvalError::input("results: the list is empty"));
        }
        let mut cand: HashMap<ImageId, String> = HashMap::with_capacity(list.len());
        for (k, r) in list.iter().enumerate() {
            let id = r
                .get("image_id")
                .and_then(ImageId::from_json)
                .ok_or_else(|| {
                    EvalError::input(format!(
                        "results: entry {k} has no integer or string \"image_id\""
                    ))
                })?;
            let cap = r.get("caption").and_then(Value::as_str).ok_or_else(|| {
                EvalError::input(format!(
                    "results: entry {k} (image {id}) has no string \"caption\""
                ))
            })?;
            match caps.get(&id) {
                None => {
                    return Err(EvalError::input(format!(
                        "results: image id {id} is not in the references"
                    )))
                }
                Some(v) if v.is_empty() => {
                    return Err(EvalError::input(format!(
                        "references: image id {id} has no reference caption"
                    )))
                }
                Some(_) => {}
            }
            if cand.insert(id.clone(), cap.to_string()).is_some() {
                return Err(EvalError::input(format!(
                    "results: duplicate image id {id} (one caption per image)"
                )));
            }
        }
        let mut set = CaptionSet::default();
        for id in order {
            match cand.remove(&id) {
                Some(c) => {
                    set.references.push(caps.remove(&id).unwrap_or_default());
                    set.candidates.push(c);
                    set.ids.push(id);
                }
                None => set.images_without_result += 1,
            }
        }
        Ok(set)
    }

    /// Tokenizes everything and computes the scores.
    pub fn evaluate(&self, per_image: bool) -> Result<CaptionScores> {
        if self.ids.is_empty() {
            return Err(EvalError::input("no image to evaluate"));
        }
        let cands: Vec<String> = self
            .candidates
            .par_iter()
            .map(|c| tokenizer::tokenize(c))
            .collect();
        let refs: Vec<Vec<String>> = self
            .references
            .par_iter()
            .map(|rs| rs.iter().map(|r| tokenizer::tokenize(r)).collect())
            .collect();
        Ok(score_tokenized(
            &self.ids,
            &cands,
            &refs,
            per_image,
            self.images_without_result,
        ))
    }
}

/// Scores already tokenized text (one candidate and ≥ 1 references per image).
pub fn score_tokenized(
    ids: &[ImageId],
    cands: &[String],
    refs: &[Vec<String>],
    per_image: bool,
    images_without_result: usize,
) -> CaptionScores {
    let bleu: Vec<bleu::BleuCounts> = cands
        .par_iter()
        .zip(refs.par_iter())
        .map(|(c, r)| bleu::BleuCounts::new(c, r))
        .collect();
    let rouge: Vec<f64> = cands
        .par_iter()
        .zip(refs.par_iter())
        .map(|(c, r)| rouge::rouge_l(c, r))
        .collect();
    let cider = cider::cider_d(cands, refs);
    let mut total = bleu::BleuCounts::default();
    for b in &bleu {
        total.add(b);
    }
    let corpus = total.scores();
    let per = per_image.then(|| {
        ids.iter()
            .enumerate()
            .map(|(k, id)| {
                let b = bleu[k].scores();
                (
                    id.clone(),
                    ImageScores {
                        bleu1: b[0],
                        bleu2: b[1],
                        bleu3: b[2],
                        bleu4: b[3],
                        rouge_l: rouge[k],
                        cider: cider[k],
                    },
                )
            })
            .collect()
    });
    CaptionScores {
        bleu1: corpus[0],
        bleu2: corpus[1],
        bleu3: corpus[2],
        bleu4: corpus[3],
        rouge_l: mean(&rouge),
        cider: mean(&cider),
        images: ids.len(),
        images_without_result,
        per_image: per,
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sorted map helper for callers that want per-image scores by id.
pub fn per_image_map(scores: &CaptionScores) -> BTreeMap<ImageId, ImageScores> {
    scores.per_image.iter().flatten().cloned().collect()
}
