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

/// The class key of each multi-label sample: 0 when no label is set (non-deformation),
/// otherwise 1 + the index of its rarest positive label (frequencies counted over `labels`),
/// so that a sample with a Spheroid and a Sill counts as Spheroid.
pub fn rarest_label_keys(labels: &[LabelVector]) -> Vec<usize> {
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
    labels
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
        .collect()
}

/// A seeded subset of `n` of the samples with class `keys`, stratified so that it keeps the
/// class mix: each class gets `n × its share` samples (largest remainders round), and every
/// class present gets at least one while `n` allows (taken from the largest classes). The
/// members of a class are drawn uniformly without replacement. Returns sorted indices; all of
/// them when `n >= keys.len()`.
pub fn stratified_subset(keys: &[usize], n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    if n >= keys.len() {
        return (0..keys.len()).collect();
    }
    let mut classes: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &k) in keys.iter().enumerate() {
        classes.entry(k).or_default().push(i);
    }
    let total = keys.len() as f64;
    let exact: Vec<f64> = classes
        .values()
        .map(|m| n as f64 * m.len() as f64 / total)
        .collect();
    let mut take: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    // Largest remainders (ties: the class with the smaller key) fill up to n.
    let mut order: Vec<usize> = (0..take.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    // The remainders sum to less than the number of classes: one pass suffices.
    let left = n - take.iter().sum::<usize>();
    for &c in order.iter().take(left) {
        take[c] += 1;
    }
    // Every class at least once, paid for by the currently largest allocation.
    if n >= take.len() {
        for c in 0..take.len() {
            if take[c] == 0 {
                let donor = (0..take.len())
                    .max_by_key(|&d| (take[d], std::cmp::Reverse(d)))
                    .expect("at least one class");
                take[donor] -= 1;
                take[c] = 1;
            }
        }
    }
    let mut out = Vec::with_capacity(n);
    for (members, &k) in classes.values().zip(&take) {
        let mut members = members.clone();
        members.shuffle(rng);
        out.extend_from_slice(&members[..k]);
    }
    out.sort_unstable();
    out
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
        Self::from_keys(&rarest_label_keys(labels))
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
    fn stratified_subset_keeps_the_class_mix() {
        // 900 of class 0, 90 of class 3, 9 of class 7, 1 of class 9.
        let keys: Vec<usize> = (0..1000)
            .map(|i| match i {
                0..900 => 0,
                900..990 => 3,
                990..999 => 7,
                _ => 9,
            })
            .collect();
        let count = |sub: &[usize], k: usize| sub.iter().filter(|&&i| keys[i] == k).count();
        let sub = stratified_subset(&keys, 100, &mut ChaCha8Rng::seed_from_u64(5));
        assert_eq!(sub.len(), 100);
        assert!(sub.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        // Exact shares 90 / 9 / 0.9 / 0.1: the rare class still gets one, from class 0.
        assert_eq!(
            [
                count(&sub, 0),
                count(&sub, 3),
                count(&sub, 7),
                count(&sub, 9)
            ],
            [89, 9, 1, 1]
        );
        assert_eq!(
            sub,
            stratified_subset(&keys, 100, &mut ChaCha8Rng::seed_from_u64(5))
        );
        assert_ne!(
            sub,
            stratified_subset(&keys, 100, &mut ChaCha8Rng::seed_from_u64(6))
        );
        // Fewer slots than classes: largest remainders only.
        let two = stratified_subset(&keys, 2, &mut ChaCha8Rng::seed_from_u64(5));
        assert_eq!([count(&two, 0), count(&two, 3)], [2, 0]);
        assert_eq!(
            stratified_subset(&keys, 5000, &mut ChaCha8Rng::seed_from_u64(5)),
            (0..1000).collect::<Vec<_>>()
        );
        // Keys of multi-label vectors: the rarest positive label decides.
        let mut a = [0.0f32; NUM_LABELS];
        a[0] = 1.0;
        a[3] = 1.0;
        let mut b = a;
        b[4] = 1.0;
        assert_eq!(
            rarest_label_keys(&[[0.0; NUM_LABELS], a, a, b]),
            vec![0, 4, 4, 5]
        );
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
