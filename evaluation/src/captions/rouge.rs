//! ROUGE-L as pycocoevalcap's `rouge.py` computes it (β = 1.2, independent maxima).

const BETA: f64 = 1.2;

/// ROUGE-L of one tokenized candidate against its references (words: `split(' ')`, so an
/// empty string is one empty word).
pub fn rouge_l(candidate: &str, references: &[String]) -> f64 {
    let c: Vec<&str> = candidate.split(' ').collect();
    let mut prec_max = 0.0f64;
    let mut rec_max = 0.0f64;
    for r in references {
        let r: Vec<&str> = r.split(' ').collect();
        let lcs = lcs_length(&r, &c) as f64;
        prec_max = prec_max.max(lcs / c.len() as f64);
        rec_max = rec_max.max(lcs / r.len() as f64);
    }
    if prec_max != 0.0 && rec_max != 0.0 {
        ((1.0 + BETA * BETA) * prec_max * rec_max) / (rec_max + BETA * BETA * prec_max)
    } else {
        0.0
    }
}

/// Length of the longest common subsequence.
fn lcs_length(a: &[&str], b: &[&str]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_behaviour() {
        assert_eq!(lcs_length(&["a", "b", "c", "d"], &["b", "x", "d"]), 2);
        assert_eq!(rouge_l("", &["".to_string()]), 1.0);
        assert_eq!(rouge_l("a b", &["c".to_string()]), 0.0);
        // Independent maxima: P from the first reference, R from the second.
        let refs = vec!["a b".to_string(), "a b c d e f g h".to_string()];
        let p = 1.0;
        let r = 3.0 / 8.0;
        let expected = (1.0 + 1.44) * p * r / (r + 1.44 * p);
        let p2 = 2.0f64 / 3.0;
        let r2 = 1.0f64;
        let expected2 = (1.0 + 1.44) * p2.max(p) * r2.max(r) / (r2.max(r) + 1.44 * p2.max(p));
        let got = rouge_l("a b c", &refs);
        assert!((got - expected2).abs() < 1e-15 && (got - expected).abs() > 1e-3);
    }
}
