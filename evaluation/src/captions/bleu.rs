//! BLEU-1..4 as pycocoevalcap's `bleu_scorer.py` computes it (option `closest`).

use std::collections::HashMap;

const TINY: f64 = 1e-15;
const SMALL: f64 = 1e-9;

/// Counts of one image (or summed over the corpus).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BleuCounts {
    /// Candidate length in words.
    pub testlen: f64,
    /// Closest reference length (ties go to the shorter reference).
    pub reflen: f64,
    /// Number of candidate n-grams, n = 1..4.
    pub guess: [f64; 4],
    /// Clipped matching n-grams, n = 1..4.
    pub correct: [f64; 4],
}

impl BleuCounts {
    /// Counts for one tokenized candidate against its tokenized references
    /// (words: Python `str.split()`, any whitespace).
    pub fn new(candidate: &str, references: &[String]) -> Self {
        let mut max_ref: HashMap<Vec<&str>, usize> = HashMap::new();
        let mut reflens = Vec::with_capacity(references.len());
        for r in references {
            let words: Vec<&str> = r.split_whitespace().collect();
            reflens.push(words.len());
            for (gram, count) in ngram_counts(&words) {
                let e = max_ref.entry(gram).or_insert(0);
                *e = (*e).max(count);
            }
        }
        let words: Vec<&str> = candidate.split_whitespace().collect();
        let testlen = words.len();
        let mut guess = [0.0; 4];
        let mut correct = [0.0; 4];
        for (k, g) in guess.iter_mut().enumerate() {
            *g = testlen.saturating_sub(k) as f64;
        }
        for (gram, count) in ngram_counts(&words) {
            let m = max_ref.get(&gram).copied().unwrap_or(0);
            correct[gram.len() - 1] += count.min(m) as f64;
        }
        // Closest reference length; on a tie the shorter one (tuple ordering).
        let reflen = reflens
            .iter()
            .map(|&l| ((l as i64 - testlen as i64).abs(), l))
            .min()
            .map(|(_, l)| l)
            .unwrap_or(0);
        BleuCounts {
            testlen: testlen as f64,
            reflen: reflen as f64,
            guess,
            correct,
        }
    }

    /// Adds another image's counts (corpus accumulation).
    pub fn add(&mut self, other: &BleuCounts) {
        self.testlen += other.testlen;
        self.reflen += other.reflen;
        for k in 0..4 {
            self.guess[k] += other.guess[k];
            self.correct[k] += other.correct[k];
        }
    }

    /// BLEU-1..4 from these counts, with pycocoevalcap's constants and brevity penalty.
    pub fn scores(&self) -> [f64; 4] {
        let mut out = [0.0; 4];
        let mut b = 1.0f64;
        for (k, o) in out.iter_mut().enumerate() {
            b *= (self.correct[k] + TINY) / (self.guess[k] + SMALL);
            *o = b.powf(1.0 / (k as f64 + 1.0));
        }
        let ratio = (self.testlen + TINY) / (self.reflen + SMALL);
        if ratio < 1.0 {
            let bp = (1.0 - 1.0 / ratio).exp();
            for v in out.iter_mut() {
                *v *= bp;
            }
        }
        out
    }
}

/// n-gram counts for n = 1..4 (the key's length is n).
fn ngram_counts<'a>(words: &[&'a str]) -> HashMap<Vec<&'a str>, usize> {
    let mut counts = HashMap::new();
    for n in 1..=4 {
        if words.len() < n {
            break;
        }
        for w in words.windows(n) {
            *counts.entry(w.to_vec()).or_insert(0) += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_of_the_reference() {
        let refs = vec!["a b c d e".to_string()];
        let same = BleuCounts::new("a b c d e", &refs).scores();
        // p_n = (5-n+1)/(5-n+1 + 1e-9), and the brevity penalty applies because
        // (5 + 1e-15)/(5 + 1e-9) < 1: never exactly 1.
        let bp = (1.0f64 - (5.0 + 1e-9) / (5.0 + 1e-15)).exp();
        assert!(bp < 1.0);
        let mut b = 1.0f64;
        for (k, v) in same.iter().enumerate() {
            let guess = (5 - k) as f64;
            b *= (guess + 1e-15) / (guess + 1e-9);
            assert_eq!(*v, b.powf(1.0 / (k as f64 + 1.0)) * bp);
            assert!(*v < 1.0 && *v > 0.999999999, "{v}");
        }
        // Empty candidate: brevity penalty underflows to exactly 0.
        assert_eq!(BleuCounts::new("", &refs).scores(), [0.0; 4]);
        // Tie on closest length goes to the shorter reference.
        let refs = vec!["x x x x".to_string(), "y y".to_string()];
        assert_eq!(BleuCounts::new("a b c", &refs).reflen, 2.0);
    }
}
