//! Metrics of text-to-InSAR generation that need no model: prompt fidelity (agreement of
//! judged facts with a prompt's facts, and the shuffled-prompt control), the physics
//! intensity rule on a wrapped phase (complete fringes), and memorisation (nearest
//! training-image distances).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::captions::facts::{parse_facts, Level, TypeGroup};

/// The facts a fidelity check compares: deformation presence, the type group (when the
/// text names exactly one group) and the intensity (when it names exactly one level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreFacts {
    pub deformation: bool,
    pub group: Option<TypeGroup>,
    pub intensity: Option<Level>,
}

impl CoreFacts {
    /// The core facts a caption states ([`parse_facts`]).
    pub fn of_caption(caption: &str) -> Self {
        let f = parse_facts(caption);
        let groups = f.groups();
        let deformation = f.has_deformation();
        Self {
            deformation,
            group: if deformation && groups.len() == 1 {
                groups.into_iter().next()
            } else {
                None
            },
            intensity: if deformation && f.intensities.len() == 1 {
                f.intensities.into_iter().next()
            } else {
                None
            },
        }
    }
}

/// Agreement of judged facts with target facts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fidelity {
    /// Share of samples whose judged deformation presence equals the target's.
    pub presence: f64,
    /// Among targets with one type group: share judged as deformation of that group.
    pub group: f64,
    /// Among targets with one intensity: share judged at that intensity.
    pub intensity: f64,
    pub n_presence: usize,
    pub n_group: usize,
    pub n_intensity: usize,
}

fn share(hits: usize, n: usize) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        hits as f64 / n as f64
    }
}

/// Agreement of `judged[i]` with `target[order[i]]` (`order`: identity for matched prompts,
/// a derangement for the shuffled control). A judged intensity of `None` never matches.
pub fn fidelity(judged: &[CoreFacts], targets: &[CoreFacts], order: &[usize]) -> Fidelity {
    let (mut hp, mut n_p, mut hg, mut n_g, mut hi, mut n_i) = (0, 0, 0, 0, 0, 0);
    for (j, &k) in judged.iter().zip(order) {
        let t = &targets[k];
        n_p += 1;
        hp += usize::from(j.deformation == t.deformation);
        if let Some(g) = t.group {
            n_g += 1;
            hg += usize::from(j.deformation && j.group == Some(g));
        }
        if let Some(l) = t.intensity {
            n_i += 1;
            hi += usize::from(j.intensity == Some(l));
        }
    }
    Fidelity {
        presence: share(hp, n_p),
        group: share(hg, n_g),
        intensity: share(hi, n_i),
        n_presence: n_p,
        n_group: n_g,
        n_intensity: n_i,
    }
}

/// A seeded permutation of `0..n` with no fixed point (`n ≥ 2`; the identity for `n < 2`).
pub fn derangement(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if n < 2 {
        return order;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    loop {
        order.shuffle(&mut rng);
        if order.iter().enumerate().all(|(i, &k)| i != k) {
            return order;
        }
    }
}

/// Unwraps a wrapped phase `(height × width`, row-major) by integrating wrapped
/// differences along a breadth-first tree from the centre (Itoh's method in 2-D; no
/// residue handling, enough for smooth fringes).
pub fn unwrap_phase(phase: &[f32], width: usize, height: usize) -> Vec<f64> {
    use std::f64::consts::{PI, TAU};
    let n = width * height;
    let mut out = vec![f64::NAN; n];
    if n == 0 || phase.len() != n {
        return out;
    }
    let wrap = |d: f64| d - TAU * ((d + PI) / TAU).floor();
    let start = (height / 2) * width + width / 2;
    out[start] = f64::from(phase[start]);
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(i) = queue.pop_front() {
        let (r, c) = (i / width, i % width);
        let mut next = Vec::with_capacity(4);
        if r > 0 {
            next.push(i - width);
        }
        if r + 1 < height {
            next.push(i + width);
        }
        if c > 0 {
            next.push(i - 1);
        }
        if c + 1 < width {
            next.push(i + 1);
        }
        for j in next {
            if out[j].is_nan() {
                out[j] = out[i] + wrap(f64::from(phase[j]) - f64::from(phase[i]));
                queue.push_back(j);
            }
        }
    }
    out
}

/// Complete fringes of a wrapped phase: `⌊(p98 − p2 of the unwrapped phase) / 2π⌋` (the
/// physics generator's rule `N = ⌊ptp / (λ/2)⌋`, with percentiles instead of the extremes
/// so that a few noisy pixels do not add a fringe).
pub fn complete_fringes(phase: &[f32], width: usize, height: usize) -> u32 {
    let mut u: Vec<f64> = unwrap_phase(phase, width, height)
        .into_iter()
        .filter(|v| v.is_finite())
        .collect();
    if u.len() < 2 {
        return 0;
    }
    u.sort_by(f64::total_cmp);
    let q = |p: f64| u[((u.len() - 1) as f64 * p).round() as usize];
    ((q(0.98) - q(0.02)) / std::f64::consts::TAU)
        .floor()
        .max(0.0) as u32
}

/// The generator's intensity of `n` complete fringes: Low ≤ 1, Medium 2–3, High ≥ 4.
pub fn intensity_of_fringes(n: u32) -> Level {
    match n {
        0 | 1 => Level::Low,
        2 | 3 => Level::Medium,
        _ => Level::High,
    }
}

/// Root-mean-square distance of each query to its nearest reference (all the same length).
pub fn nearest_distances(queries: &[&[f32]], refs: &[&[f32]]) -> Vec<f64> {
    queries
        .iter()
        .map(|q| {
            refs.iter()
                .map(|r| {
                    let s: f64 = q
                        .iter()
                        .zip(r.iter())
                        .map(|(&a, &b)| f64::from(a - b).powi(2))
                        .sum();
                    (s / q.len().max(1) as f64).sqrt()
                })
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

/// Median of finite values (NaN when none).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_facts_of_captions() {
        let f = CoreFacts::of_caption(
            "a mogi-type deformation pattern of high intensity can be detected in the centre.",
        );
        assert!(f.deformation);
        assert_eq!(f.group, Some(TypeGroup::Concentric));
        assert_eq!(f.intensity, Some(Level::High));
        let none = CoreFacts::of_caption("no deformation activity can be detected.");
        assert!(!none.deformation && none.group.is_none() && none.intensity.is_none());
    }

    #[test]
    fn fidelity_matched_and_shuffled() {
        let a = CoreFacts {
            deformation: true,
            group: Some(TypeGroup::Elongated),
            intensity: Some(Level::Low),
        };
        let b = CoreFacts {
            deformation: false,
            group: None,
            intensity: None,
        };
        let targets = [a, b, a, b];
        let m = fidelity(&targets, &targets, &[0, 1, 2, 3]);
        assert_eq!((m.presence, m.group, m.intensity), (1.0, 1.0, 1.0));
        assert_eq!((m.n_presence, m.n_group, m.n_intensity), (4, 2, 2));
        let s = fidelity(&targets, &targets, &[1, 0, 3, 2]);
        assert_eq!((s.presence, s.group, s.intensity), (0.0, 0.0, 0.0));
        let d = derangement(10, 3);
        assert!(d.iter().enumerate().all(|(i, &k)| i != k));
        let mut sorted = d.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(derangement(10, 3), d);
    }

    #[test]
    fn fringes_of_a_ramp_and_intensity_rule() {
        use std::f32::consts::{PI, TAU};
        let (w, h) = (32, 32);
        // A ramp of 4.5·2π across the image, wrapped.
        let phase: Vec<f32> = (0..w * h)
            .map(|i| {
                let x = (i % w) as f32 / (w - 1) as f32 * 4.5 * TAU;
                x - TAU * ((x + PI) / TAU).floor()
            })
            .collect();
        let u = unwrap_phase(&phase, w, h);
        let ptp =
            u.iter().cloned().fold(f64::MIN, f64::max) - u.iter().cloned().fold(f64::MAX, f64::min);
        assert!((ptp - 4.5 * std::f64::consts::TAU).abs() < 1e-3, "{ptp}");
        // 4 complete fringes.
        assert_eq!(complete_fringes(&phase, w, h), 4);
        assert_eq!(complete_fringes(&vec![0.3; w * h], w, h), 0);
        assert_eq!(intensity_of_fringes(1), Level::Low);
        assert_eq!(intensity_of_fringes(3), Level::Medium);
        assert_eq!(intensity_of_fringes(4), Level::High);
    }

    #[test]
    fn nearest_distance_and_median() {
        let refs: [&[f32]; 2] = [&[0.0, 0.0], &[1.0, 1.0]];
        let q: [&[f32]; 2] = [&[0.9, 1.0], &[0.0, 0.2]];
        let d = nearest_distances(&q, &refs);
        assert!((d[0] - (0.01f64 / 2.0).sqrt()).abs() < 1e-6);
        assert!((d[1] - (0.04f64 / 2.0).sqrt()).abs() < 1e-6);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
