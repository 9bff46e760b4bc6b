//! CIDEr-D as pycocoevalcap's `cider_scorer.py` computes it (n = 4, σ = 6).

use rayon::prelude::*;

use super::ngrams::{counts, FastMap, Vocab};

const SIGMA: f64 = 6.0;

type Grams = [FastMap<u128, f64>; 4];

/// tf-idf vectors per order, their (unclipped) norms, and the length (number of bigrams,
/// as the reference code counts it).
fn vec_of(g: &Grams, df: &Grams, log_n: f64) -> (Grams, [f64; 4], f64) {
    let mut vec: Grams = Default::default();
    let mut norm = [0.0; 4];
    let mut length = 0.0;
    for n in 0..4 {
        vec[n].reserve(g[n].len());
        for (gram, &tf) in &g[n] {
            let d = df[n].get(gram).copied().unwrap_or(0.0).max(1.0);
            let w = tf * (log_n - d.ln());
            norm[n] += w * w;
            vec[n].insert(*gram, w);
            if n == 1 {
                length += tf;
            }
        }
        norm[n] = norm[n].sqrt();
    }
    (vec, norm, length)
}

/// Per-image CIDEr-D for tokenized candidates and references (one entry per image of the
/// evaluated set: the document frequencies come from these references only).
pub fn cider_d(candidates: &[String], references: &[Vec<String>]) -> Vec<f64> {
    assert_eq!(candidates.len(), references.len());
    let mut vocab = Vocab::default();
    let cand_ids: Vec<Vec<u32>> = candidates.iter().map(|c| vocab.words(c)).collect();
    let ref_ids: Vec<Vec<Vec<u32>>> = references
        .iter()
        .map(|rs| rs.iter().map(|r| vocab.words(r)).collect())
        .collect();
    let cand: Vec<Grams> = cand_ids.par_iter().map(|w| counts(w)).collect();
    let refs: Vec<Vec<Grams>> = ref_ids
        .par_iter()
        .map(|rs| rs.iter().map(|w| counts(w)).collect())
        .collect();
    // Document frequency: images whose reference set contains the n-gram.
    let mut df: Grams = Default::default();
    for rs in &refs {
        let mut seen: Grams = Default::default();
        for r in rs {
            for n in 0..4 {
                for g in r[n].keys() {
                    seen[n].insert(*g, 1.0);
                }
            }
        }
        for n in 0..4 {
            for g in seen[n].keys() {
                *df[n].entry(*g).or_insert(0.0) += 1.0;
            }
        }
    }
    let log_n = (references.len() as f64).ln();
    cand.par_iter()
        .zip(refs.par_iter())
        .map(|(c, rs)| {
            let (vc, nc, lc) = vec_of(c, &df, log_n);
            let mut score = [0.0f64; 4];
            for r in rs {
                let (vr, nr, lr) = vec_of(r, &df, log_n);
                let delta = lc - lr;
                for n in 0..4 {
                    let mut val = 0.0;
                    for (gram, &wc) in &vc[n] {
                        if let Some(&wr) = vr[n].get(gram) {
                            val += wc.min(wr) * wr;
                        }
                    }
                    if nc[n] != 0.0 && nr[n] != 0.0 {
                        val /= nc[n] * nr[n];
                    }
                    val *= (-(delta * delta) / (2.0 * SIGMA * SIGMA)).exp();
                    score[n] += val;
                }
            }
            let mean = score.iter().sum::<f64>() / 4.0;
            mean / rs.len() as f64 * 10.0
        })
        .collect()
}
