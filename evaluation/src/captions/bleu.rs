//! BLEU-1..4 as pycocoevalcap's `bleu_scorer.py` computes it (option `closest`).

use super::ngrams::{counts, Vocab};

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
        let mut vocab = Vocab::default();
        let c = vocab.words(candidate);
        let r: Vec<Vec<u32>> = references.iter().map(|r| vocab.words(r)).collect();
        Self::from_ids(&c, &r)
    }

    /// Counts from interned words.
    pub fn from_ids(candidate: &[u32], references: &[Vec<u32>]) -> Self {
        let mut max_ref = counts(&[]);
        let mut reflens = Vec::with_capacity(references.len());
        for r in references {
            reflens.push(r.len());
            for (n, order) in counts(r).into_iter().enumerate() {
                for (gram, count) in order {
                    let e = max_ref[n].entry(gram).or_insert(0.0);
                    *e = e.max(count);
                }
            }
        }
        let testlen = candidate.len();
        let mut guess = [0.0; 4];
        let mut correct = [0.0; 4];
        for (k, g) in guess.iter_mut().enumerate() {
            *g = testlen.saturating_sub(k) as f64;
        }
        for (n, order) in counts(candidate).into_iter().enumerate() {
            for (gram, count) in order {
                let m = max_ref[n].get(&gram).copied().unwrap_or(0.0);
                correct[n] += count.min(m);
            }
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
