//! A small seeded source of interferogram-like images for the training-loop tests: cheaper
//! than the physics generator's stream (`synth::stream`), which `train pretrain` uses.
//!
//! Sample `i` is a pure function of `(seed, i)`: a wrapped phase field made of one or two
//! Mogi-like radial deformation patterns (random centre, depth and 1–6 fringes), a planar
//! orbital ramp and a smooth turbulent screen, with phase noise that grows as coherence
//! drops; coherence is a smooth random field in [0.2, 1]. Channels follow the default
//! input format `[phase preview as gray, coherence]`, both in [0, 1]. It is not physics
//! (see `synth` for that), only images with fringe texture that differ per index.

use anyhow::{bail, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::data::array::Image;
use crate::data::augment::{gaussian_blur, sample_rng};
use crate::data::sample::{Sample, SampleSource, NUM_LABELS};

/// `len` fringe images of `size × size` drawn from `seed`.
#[derive(Debug, Clone)]
pub struct FringeSource {
    pub seed: u64,
    pub len: usize,
    pub size: usize,
}

impl FringeSource {
    pub fn new(seed: u64, len: usize, size: usize) -> Self {
        Self { seed, len, size }
    }

    fn smooth_field(&self, rng: &mut ChaCha8Rng, sigma: f64) -> Vec<f32> {
        let n = self.size * self.size;
        let noise: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut *rng)).collect();
        let im = Image::from_vec(1, self.size, self.size, noise).expect("sizes match");
        let mut v = gaussian_blur(&im, sigma).data;
        let (mean, var) = mean_var(&v);
        let sd = var.sqrt().max(1e-6);
        v.iter_mut().for_each(|x| *x = (*x - mean) / sd);
        v
    }

    /// The image of sample `index`.
    pub fn image(&self, index: usize) -> Image {
        let s = self.size;
        let mut rng = sample_rng(self.seed ^ 0xf41e_6e5e_0000_0001, index as u64);
        let mut phase = vec![0f32; s * s];
        let sources = rng.random_range(1..=2);
        for _ in 0..sources {
            let cx = rng.random_range(0.2..0.8) * s as f64;
            let cy = rng.random_range(0.2..0.8) * s as f64;
            let depth = rng.random_range(0.08..0.3) * s as f64;
            let fringes = rng.random_range(1.0..6.0);
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            for y in 0..s {
                for x in 0..s {
                    let r2 = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)) / depth.powi(2);
                    let u = (1.0 + r2).powf(-1.5);
                    phase[y * s + x] += (sign * fringes * std::f64::consts::TAU * u) as f32;
                }
            }
        }
        let (gx, gy) = (rng.random_range(-3.0..3.0), rng.random_range(-3.0..3.0));
        let turb_amp = rng.random_range(0.2..1.5) as f32;
        let turb = self.smooth_field(&mut rng, s as f64 / 12.0);
        let coh_field = self.smooth_field(&mut rng, s as f64 / 10.0);
        let coh_mean = rng.random_range(0.5..0.9) as f32;
        let mut coherence = vec![0f32; s * s];
        for y in 0..s {
            for x in 0..s {
                let i = y * s + x;
                let ramp = (gx * x as f64 + gy * y as f64) / s as f64;
                phase[i] += ramp as f32 + turb_amp * turb[i];
                let c = (coh_mean + 0.2 * coh_field[i]).clamp(0.2, 1.0);
                coherence[i] = c;
                let z: f32 = StandardNormal.sample(&mut rng);
                phase[i] += z * (1.0 - c) * 1.5;
            }
        }
        let gray: Vec<f32> = phase
            .iter()
            .map(|&p| {
                let w = p - std::f32::consts::TAU
                    * ((p + std::f32::consts::PI) / std::f32::consts::TAU).floor();
                (w + std::f32::consts::PI) / std::f32::consts::TAU
            })
            .collect();
        Image::from_planes(s, s, &[&gray, &coherence]).expect("sizes match")
    }
}

fn mean_var(v: &[f32]) -> (f32, f32) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, var as f32)
}

impl SampleSource for FringeSource {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Result<Sample> {
        if index >= self.len {
            bail!("fringe sample {index} out of range (0..{})", self.len);
        }
        Ok(Sample {
            id: format!("fringes-{index}"),
            frame_id: format!("fringes-{}", index % 64),
            image: self.image(index),
            mask: None,
            labels: [0.0; NUM_LABELS],
            caption: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_pure_functions_of_seed_and_index() {
        let src = FringeSource::new(3, 10, 32);
        let a = src.get(4).unwrap().image;
        assert_eq!(a.data, src.get(4).unwrap().image.data);
        assert_ne!(a.data, src.get(5).unwrap().image.data);
        assert_ne!(
            a.data,
            FringeSource::new(4, 10, 32).get(4).unwrap().image.data
        );
        assert_eq!((a.channels, a.height, a.width), (2, 32, 32));
        assert!(a.data.iter().all(|v| (0.0..=1.0).contains(v)));
        // Wrapped phase covers the whole range (fringes), coherence stays in [0.2, 1].
        let (lo, hi) = a
            .plane(0)
            .iter()
            .fold((1f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(lo < 0.1 && hi > 0.9, "{lo} {hi}");
        assert!(a.plane(1).iter().all(|&c| (0.2..=1.0).contains(&c)));
        assert!(src.get(10).is_err());
    }
}
