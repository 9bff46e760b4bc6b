//! CIDEr-D as pycocoevalcap's `cider_scorer.py` computes it (n = 4, σ = 6).

use std::collections::HashMap;

const SIGMA: f64 = 6.0;

type Grams<'a> = [HashMap<Vec<&'a str>, f64>; 4];

fn counts<'a>(words: &[&'a str]) -> Grams<'a> {
    let mut out: Grams<'a> = Default::default();
    for n in 1..=4 {
        if words.len() < n {
            break;
        }
        for w in words.windows(n) {
            *out[n - 1].entry(w.to_vec()).or_insert(0.0) += 1.0;
        }
    }
    out
}

/// tf-idf vectors per order, their norms, and the length (number of bigrams).
fn vec_of<'a>(g: &Grams<'a>, df: &HashMap<&[&str], f64>, log_n: f64) -> (Grams<'a>, [f64; 4], f64) {
    let mut vec: Grams<'a> = Default::default();
    let mut norm = [0.0; 4];
    let mut length = 0.0;
    for n in 0..4 {
        for (gram, &tf) in &g[n] {
            let d = df.get(gram.as_slice()).copied().unwrap_or(0.0).max(1.0);
            let w = tf * (log_n - d.ln());
            norm[n] += w * w;
            vec[n].insert(gram.clone(), w);
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
    let words_c: Vec<Vec<&str>> = candidates
        .iter()
        .map(|c| c.split_whitespace().collect())
        .collect();
    let words_r: Vec<Vec<Vec<&str>>> = references
        .iter()
        .map(|rs| rs.iter().map(|r| r.split_whitespace().collect()).collect())
        .collect();
    let cand: Vec<Grams> = words_c.iter().map(|w| counts(w)).collect();
    let refs: Vec<Vec<Grams>> = words_r
        .iter()
        .map(|rs| rs.iter().map(|w| counts(w)).collect())
        .collect();
    // Document frequency: images whose reference set contains the n-gram.
    let mut df: HashMap<&[&str], f64> = HashMap::new();
    for rs in &refs {
        let mut seen: std::collections::HashSet<&[&str]> = std::collections::HashSet::new();
        for r in rs {
            for order in r.iter() {
                for g in order.keys() {
                    seen.insert(g.as_slice());
                }
            }
        }
        for g in seen {
            *df.entry(g).or_insert(0.0) += 1.0;
        }
    }
    let log_n = (references.len() as f64).ln();
    let mut scores = Vec::with_capacity(candidates.len());
    for (c, rs) in cand.iter().zip(&refs) {
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
        scores.push(mean / rs.len() as f64 * 10.0);
    }
    scores
}
