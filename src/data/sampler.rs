//! Epoch orderings for the training loop: a plain shuffle and class-balanced oversampling
//! (pick a class uniformly, then a sample of that class), as the reference trainers do.
//! Both draw only from the `ChaCha8Rng` they are given, so an epoch's order is a pure
//! function of the RNG state.

use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::sample::{LabelVector, NUM_LABELS};

/// Every index in `0..len` once, in random order.
pub fn shuffled_order(len: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(rng);
    order
}

/// Oversampling by class: each draw picks one of the non-empty classes uniformly, then one
/// of its samples uniformly (with replacement).
#[derive(Debug, Clone)]
pub struct ClassBalancedSampler {
    /// Sample indices per class key (only non-empty classes are kept).
    classes: Vec<(usize, Vec<usize>)>,
    epoch_len: usize,
}

impl ClassBalancedSampler {
    /// Groups samples by an integer class key (e.g. 0 = no deformation, 1 = deformation,
    /// as the reference's 50/50 sampler). An epoch has `keys.len()` draws.
    pub fn from_keys(keys: &[usize]) -> Result<Self> {
        ensure!(!keys.is_empty(), "cannot sample from an empty dataset");
        let max = keys.iter().copied().max().unwrap_or(0);
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); max + 1];
        for (i, &k) in keys.iter().enumerate() {
            groups[k].push(i);
        }
        let classes = groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .collect();
        Ok(Self {
            classes,
            epoch_len: keys.len(),
        })
    }

    /// Groups multi-label samples by their rarest positive label (0 when none is set, i.e.
    /// non-deformation; otherwise 1 + the label index), so that a sample with a Spheroid
    /// and a Sill counts as Spheroid.
    pub fn from_labels(labels: &[LabelVector]) -> Result<Self> {
        let mut freq = [0usize; NUM_LABELS];
        for l in labels {
            for (f, &v) in freq.iter_mut().zip(l) {
                if v > 0.5 {
                    *f += 1;
                }
            }
        }
        // The Deformation entry (index 0) is set with every type; it only decides when no
        // more specific entry is present.
        let keys: Vec<usize> = labels
            .iter()
            .map(|l| {
                let specific = (1..NUM_LABELS)
                    .filter(|&i| l[i] > 0.5)
                    .min_by_key(|&i| (freq[i], i));
                match specific {
                    Some(i) => 1 + i,
                    None if l[0] > 0.5 => 1,
                    None => 0,
                }
            })
            .collect();
        Self::from_keys(&keys)
    }

    /// Draws per epoch (the dataset size unless changed).
    pub fn with_epoch_len(mut self, epoch_len: usize) -> Self {
        self.epoch_len = epoch_len;
        self
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// One epoch of sample indices.
    pub fn epoch(&self, rng: &mut ChaCha8Rng) -> Vec<usize> {
        (0..self.epoch_len)
            .map(|_| {
                let (_, members) = &self.classes[rng.random_range(0..self.classes.len())];
                members[rng.random_range(0..members.len())]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = shuffled_order(100, &mut ChaCha8Rng::seed_from_u64(1));
        let b = shuffled_order(100, &mut ChaCha8Rng::seed_from_u64(1));
        let c = shuffled_order(100, &mut ChaCha8Rng::seed_from_u64(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn balanced_sampler_equalises_classes() {
        // 990 negatives, 10 positives: each class should get about half the draws.
        let keys: Vec<usize> = (0..1000).map(|i| usize::from(i % 100 == 0)).collect();
        let s = ClassBalancedSampler::from_keys(&keys)
            .unwrap()
            .with_epoch_len(20_000);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let epoch = s.epoch(&mut rng);
        let positives = epoch.iter().filter(|&&i| keys[i] == 1).count();
        assert!((9_500..10_500).contains(&positives), "{positives}");
        assert_eq!(epoch, s.epoch(&mut ChaCha8Rng::seed_from_u64(3)));
        assert!(ClassBalancedSampler::from_keys(&[]).is_err());
    }

    #[test]
    fn rarest_label_decides_the_class() {
        let mut none = [0.0; NUM_LABELS];
        let mut sill = none;
        sill[0] = 1.0;
        sill[3] = 1.0;
        let mut both = sill;
        both[4] = 1.0; // Spheroid, rarer than Sill here
        none[0] = 0.0;
        let labels = vec![none, sill, sill, sill, both];
        let s = ClassBalancedSampler::from_labels(&labels).unwrap();
        assert_eq!(s.num_classes(), 3);
        let keys: Vec<usize> = s.classes.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![0, 4, 5]);
        assert_eq!(s.classes[2].1, vec![4]);
    }
}
