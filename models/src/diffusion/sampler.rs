//! Samplers: DDIM with η = 0 (Song et al. 2021, deterministic, any number of steps) and
//! DDPM ancestral sampling (Ho et al. 2020) on a respaced timestep sequence, plus
//! classifier-free guidance (Ho & Salimans 2022).
//!
//! A sampler sees the network only through `denoise(x_t, t)`, which returns the (guided)
//! network output at timestep `t` for the whole batch; [`guide`] combines a conditional and
//! an unconditional output.

use candle_core::{Device, Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::schedule::{NoiseSchedule, Prediction};

/// Which sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// Deterministic DDIM (η = 0).
    Ddim,
    /// DDPM ancestral sampling (posterior variance `β̃`).
    Ddpm,
}

impl std::str::FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ddim" => Ok(Self::Ddim),
            "ddpm" => Ok(Self::Ddpm),
            _ => Err(format!("sampler {s:?}: expected ddim or ddpm")),
        }
    }
}

/// Options of [`sample`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    pub kind: SamplerKind,
    /// Network evaluations (timesteps visited), at most `T`.
    pub steps: usize,
    pub prediction: Prediction,
    /// Clamp `x̂₀` to `[−1, 1]` at every step (the data range).
    pub clip_x0: bool,
}

/// `u + w·(c − u)`: classifier-free guidance of the conditional output `c` by the
/// unconditional `u` (`w = 1`: plain conditional, `w = 0`: unconditional).
pub fn guide(cond: &Tensor, uncond: &Tensor, scale: f64) -> Result<Tensor> {
    uncond + ((cond - uncond)? * scale)?
}

/// Standard-normal noise of `shape` drawn from `rng` (f32 on `device`).
pub fn randn(
    shape: impl Into<candle_core::Shape>,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let v: Vec<f32> = (0..shape.elem_count())
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Tensor::from_vec(v, shape, device)
}

/// Runs the reverse process from `x_T` (`noise`) to `x₀`. `on_step(i)` is called after
/// each of the `cfg.steps` network evaluations; `rng` draws the DDPM noise.
pub fn sample(
    schedule: &NoiseSchedule,
    cfg: &SamplerConfig,
    noise: Tensor,
    mut denoise: impl FnMut(&Tensor, usize) -> Result<Tensor>,
    rng: &mut ChaCha8Rng,
    mut on_step: impl FnMut(usize),
) -> Result<Tensor> {
    let ts = schedule.respaced(cfg.steps)?;
    let mut x = noise;
    for (i, &t) in ts.iter().enumerate() {
        let prev = ts.get(i + 1).copied();
        // Detached: sampling needs no graph, and a tracked chain would keep every step's
        // activations alive (tens of GB over 50 steps).
        let out = denoise(&x, t)?.detach();
        let (mut x0, mut eps) = schedule.split_prediction(cfg.prediction, &x, &out, t)?;
        let ab = schedule.alpha_bar(Some(t));
        if cfg.clip_x0 {
            x0 = x0.clamp(-1f32, 1f32)?;
            // The noise consistent with the clipped x̂₀.
            eps = ((&x - (&x0 * ab.sqrt())?)? / (1.0 - ab).sqrt())?;
        }
        let ab_prev = schedule.alpha_bar(prev);
        x = match cfg.kind {
            SamplerKind::Ddim => ((&x0 * ab_prev.sqrt())? + (&eps * (1.0 - ab_prev).sqrt())?)?,
            SamplerKind::Ddpm => {
                // Posterior q(x_prev | x_t, x₀) of the respaced chain.
                let alpha = ab / ab_prev;
                let beta = 1.0 - alpha;
                let c0 = ab_prev.sqrt() * beta / (1.0 - ab);
                let ct = alpha.sqrt() * (1.0 - ab_prev) / (1.0 - ab);
                let mean = ((&x0 * c0)? + (&x * ct)?)?;
                match prev {
                    None => mean,
                    Some(_) => {
                        let var = beta * (1.0 - ab_prev) / (1.0 - ab);
                        let z = randn(x.shape(), rng, x.device())?.to_dtype(x.dtype())?;
                        (mean + (z * var.max(0.0).sqrt())?)?
                    }
                }
            }
        };
        x = x.detach();
        on_step(i);
    }
    Ok(x)
}
