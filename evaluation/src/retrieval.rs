//! Retrieval metrics from a query × gallery similarity matrix (VSE++ conventions).
//!
//! Ranking: gallery items by descending similarity. Ties are broken pessimistically: an
//! irrelevant item with the same score as a relevant one is ranked before it (relevant
//! items tied among themselves keep gallery order). The rank of a query is the 0-based
//! position of its best-ranked relevant item; `R@K` is the fraction of queries with
//! rank < K (0-1, not percent), `medr = floor(median rank) + 1`, `meanr = mean rank + 1`.
//! AP is non-interpolated: the mean over relevant items of precision at their positions
//! (sklearn's `average_precision_score` when there are no ties); mAP is its mean.

pub mod relevance;

use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::npy::Matrix;

/// Retrieval scores.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalScores {
    /// Fraction of queries whose best relevant item is ranked first.
    #[serde(rename = "R@1")]
    pub r1: f64,
    /// Fraction with a relevant item in the top 5.
    #[serde(rename = "R@5")]
    pub r5: f64,
    /// Fraction with a relevant item in the top 10.
    #[serde(rename = "R@10")]
    pub r10: f64,
    /// floor(median 0-based rank) + 1.
    pub medr: f64,
    /// Mean 0-based rank + 1.
    pub meanr: f64,
    /// Mean average precision over queries.
    #[serde(rename = "mAP")]
    pub map: f64,
    /// Number of queries.
    pub queries: usize,
    /// Gallery size.
    pub gallery: usize,
    /// Per-query 0-based rank of the best relevant item.
    #[serde(skip)]
    pub ranks: Vec<usize>,
}

/// Computes the retrieval scores. `relevant[q]` lists the relevant gallery columns of
/// query row `q` (at least one each).
pub fn evaluate(similarity: &Matrix, relevant: &[Vec<usize>]) -> Result<RetrievalScores> {
    let (nq, ng) = (similarity.rows, similarity.cols);
    if nq == 0 || ng == 0 {
        return Err(EvalError::input(format!(
            "the similarity matrix is empty ({nq}×{ng})"
        )));
    }
    if relevant.len() != nq {
        return Err(EvalError::input(format!(
            "{} relevance lists for {nq} query rows (one list per row)",
            relevant.len()
        )));
    }
    similarity.check_finite("similarity")?;
    let mut ranks = Vec::with_capacity(nq);
    let mut aps = Vec::with_capacity(nq);
    for (q, rel) in relevant.iter().enumerate() {
        if rel.is_empty() {
            return Err(EvalError::input(format!(
                "query {q} has no relevant gallery item"
            )));
        }
        let mut is_rel = vec![false; ng];
        for &g in rel {
            if g >= ng {
                return Err(EvalError::input(format!(
                    "query {q}: relevant index {g} is out of range (gallery has {ng} columns)"
                )));
            }
            if is_rel[g] {
                return Err(EvalError::input(format!(
                    "query {q}: relevant index {g} listed twice"
                )));
            }
            is_rel[g] = true;
        }
        let s = similarity.row(q);
        let mut order: Vec<usize> = (0..ng).collect();
        // Descending score; on ties irrelevant first (pessimistic), then gallery order.
        order.sort_by(|&a, &b| {
            s[b].total_cmp(&s[a])
                .then(is_rel[a].cmp(&is_rel[b]))
                .then(a.cmp(&b))
        });
        let mut found = 0usize;
        let mut ap = 0.0;
        let mut best = None;
        for (pos, &g) in order.iter().enumerate() {
            if is_rel[g] {
                found += 1;
                best.get_or_insert(pos);
                ap += found as f64 / (pos + 1) as f64;
                if found == rel.len() {
                    break;
                }
            }
        }
        ranks.push(best.expect("at least one relevant item"));
        aps.push(ap / rel.len() as f64);
    }
    let n = nq as f64;
    let recall = |k: usize| ranks.iter().filter(|&&r| r < k).count() as f64 / n;
    let mut sorted = ranks.clone();
    sorted.sort_unstable();
    let median = if nq % 2 == 1 {
        sorted[nq / 2] as f64
    } else {
        (sorted[nq / 2 - 1] + sorted[nq / 2]) as f64 / 2.0
    };
    Ok(RetrievalScores {
        r1: recall(1),
        r5: recall(5),
        r10: recall(10),
        medr: median.floor() + 1.0,
        meanr: ranks.iter().sum::<usize>() as f64 / n + 1.0,
        map: aps.iter().sum::<f64>() / n,
        queries: nq,
        gallery: ng,
        ranks,
    })
}

/// Parses the relevance JSON: a list, per query row, of gallery indices (a bare integer
/// stands for a one-item list).
pub fn parse_relevant(v: &serde_json::Value) -> Result<Vec<Vec<usize>>> {
    let list = v.as_array().ok_or_else(|| {
        EvalError::input("expected a JSON list (per query row) of relevant gallery indices")
    })?;
    list.iter()
        .enumerate()
        .map(|(q, item)| {
            let idx = |x: &serde_json::Value| {
                x.as_u64().map(|i| i as usize).ok_or_else(|| {
                    EvalError::input(format!(
                        "query {q}: {x} is not a non-negative integer index"
                    ))
                })
            };
            match item {
                serde_json::Value::Array(a) => a.iter().map(idx).collect(),
                other => Ok(vec![idx(other)?]),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_ties_and_errors() {
        // 3 queries × 4 gallery items.
        let s = Matrix::new(
            3,
            4,
            vec![0.9, 0.1, 0.5, 0.3, 0.2, 0.2, 0.2, 0.2, 0.1, 0.4, 0.3, 0.8],
        )
        .unwrap();
        let rel = vec![vec![0], vec![1], vec![1, 2]];
        let r = evaluate(&s, &rel).unwrap();
        // Query 1: all tied, pessimistic: 3 irrelevant items first → rank 3.
        assert_eq!(r.ranks, vec![0, 3, 1]);
        assert!((r.r1 - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(r.r5, 1.0);
        assert_eq!(r.medr, 2.0);
        assert!((r.meanr - (4.0 / 3.0 + 1.0)).abs() < 1e-15);
        let ap2 = (1.0 / 2.0 + 2.0 / 3.0) / 2.0;
        assert!((r.map - (1.0 + 0.25 + ap2) / 3.0).abs() < 1e-15);
        // Even count: median of ranks 0 and 3 is 1.5 → floor + 1 = 2.
        let r2 = evaluate(&Matrix::new(2, 4, s.data[..8].to_vec()).unwrap(), &rel[..2]).unwrap();
        assert_eq!(r2.medr, 2.0);
        assert!(evaluate(&s, &rel[..2])
            .unwrap_err()
            .to_string()
            .contains("3 query rows"));
        assert!(evaluate(&s, &[vec![0], vec![4], vec![1]])
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        assert!(evaluate(&s, &[vec![0], vec![], vec![1]])
            .unwrap_err()
            .to_string()
            .contains("no relevant"));
    }
}
