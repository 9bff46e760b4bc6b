//! The cosine noise schedule (Nichol & Dhariwal 2021) and the algebra between `x_t`, `x₀`,
//! `ε` and `v` (Salimans & Ho 2022).
//!
//! `q(x_t | x₀) = N(√ᾱ_t x₀, (1 − ᾱ_t) I)` for discrete `t ∈ 0..T`, with
//! `ᾱ(t) = f(t)/f(0)`, `f(t) = cos²(((t+1)/T + s)/(1 + s) · π/2)`, `s = 0.008`, and each
//! `β_t = 1 − ᾱ_t/ᾱ_{t−1}` clipped to at most 0.999 (so `ᾱ` stays positive).

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// What the network predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The added noise `ε`.
    Epsilon,
    /// The velocity `v = √ᾱ ε − √(1−ᾱ) x₀`.
    V,
}

impl std::str::FromStr for Prediction {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "epsilon" | "eps" => Ok(Self::Epsilon),
            "v" => Ok(Self::V),
            _ => Err(format!("prediction {s:?}: expected epsilon or v")),
        }
    }
}

/// A discrete noise schedule: `ᾱ_t` for `t ∈ 0..T`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f64>,
}

/// Offset `s` of the cosine schedule.
pub const COSINE_OFFSET: f64 = 0.008;
/// Largest `β_t` of the cosine schedule.
pub const MAX_BETA: f64 = 0.999;

impl NoiseSchedule {
    /// The cosine schedule over `steps` timesteps.
    pub fn cosine(steps: usize) -> Result<Self> {
        if steps < 2 {
            candle_core::bail!("noise schedule: at least 2 timesteps, got {steps}")
        }
        let f = |t: f64| {
            let x = (t / steps as f64 + COSINE_OFFSET) / (1.0 + COSINE_OFFSET)
                * std::f64::consts::FRAC_PI_2;
            x.cos().powi(2)
        };
        let mut alphas_cumprod = Vec::with_capacity(steps);
        let mut prod = 1.0;
        for t in 0..steps {
            let beta = (1.0 - f(t as f64 + 1.0) / f(t as f64)).clamp(0.0, MAX_BETA);
            prod *= 1.0 - beta;
            alphas_cumprod.push(prod);
        }
        Ok(Self { alphas_cumprod })
    }

    /// Number of timesteps `T`.
    pub fn len(&self) -> usize {
        self.alphas_cumprod.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alphas_cumprod.is_empty()
    }

    /// `ᾱ_t`; `ᾱ_{−1}` (before any noise) is 1.
    pub fn alpha_bar(&self, t: Option<usize>) -> f64 {
        t.map_or(1.0, |t| self.alphas_cumprod[t])
    }

    /// All `ᾱ_t`.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// `S` timesteps for a sampler, evenly spaced from `T−1` down to 0 (`S ≤ T`), descending.
    pub fn respaced(&self, steps: usize) -> Result<Vec<usize>> {
        let t = self.len();
        if steps == 0 || steps > t {
            candle_core::bail!("sampling steps must be in 1..={t}, got {steps}")
        }
        let mut out: Vec<usize> = (0..steps)
            .map(|i| ((i as f64) * (t - 1) as f64 / (steps.max(2) - 1) as f64).round() as usize)
            .collect();
        if steps == 1 {
            out = vec![t - 1];
        }
        out.dedup();
        out.reverse();
        Ok(out)
    }

    /// Per-sample `(√ᾱ, √(1−ᾱ))` of timesteps `t`, each as `(B, 1, 1, 1)` like `like`.
    fn coefficients(&self, t: &[usize], like: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = t.len();
        let a: Vec<f32> = t
            .iter()
            .map(|&t| self.alphas_cumprod[t].sqrt() as f32)
            .collect();
        let s: Vec<f32> = t
            .iter()
            .map(|&t| (1.0 - self.alphas_cumprod[t]).sqrt() as f32)
            .collect();
        let mk = |v: Vec<f32>| -> Result<Tensor> {
            Tensor::from_vec(v, (b, 1, 1, 1), like.device())?.to_dtype(like.dtype())
        };
        Ok((mk(a)?, mk(s)?))
    }

    /// `x_t = √ᾱ x₀ + √(1−ᾱ) ε` for per-sample timesteps `t`.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: &[usize]) -> Result<Tensor> {
        let (a, s) = self.coefficients(t, x0)?;
        x0.broadcast_mul(&a)? + noise.broadcast_mul(&s)?
    }

    /// The regression target of `prediction` for `(x₀, ε, t)`.
    pub fn target(
        &self,
        prediction: Prediction,
        x0: &Tensor,
        noise: &Tensor,
        t: &[usize],
    ) -> Result<Tensor> {
        match prediction {
            Prediction::Epsilon => Ok(noise.clone()),
            Prediction::V => {
                let (a, s) = self.coefficients(t, x0)?;
                noise.broadcast_mul(&a)? - x0.broadcast_mul(&s)?
            }
        }
    }

    /// `(x̂₀, ε̂)` from the network output at `x_t` (all samples at timestep `t`).
    pub fn split_prediction(
        &self,
        prediction: Prediction,
        x_t: &Tensor,
        output: &Tensor,
        t: usize,
    ) -> Result<(Tensor, Tensor)> {
        let ab = self.alphas_cumprod[t];
        let (a, s) = (ab.sqrt(), (1.0 - ab).sqrt());
        match prediction {
            Prediction::Epsilon => {
                let x0 = ((x_t - (output * s)?)? / a)?;
                Ok((x0, output.clone()))
            }
            Prediction::V => {
                let x0 = ((x_t * a)? - (output * s)?)?;
                let eps = ((x_t * s)? + (output * a)?)?;
                Ok((x0, eps))
            }
        }
    }
}
