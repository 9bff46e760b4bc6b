//! Caption-conditioned denoising diffusion: a UNet with self- and cross-attention
//! ([`unet`]), the cosine noise schedule with ε- and v-prediction ([`schedule`]), DDIM and
//! DDPM samplers with classifier-free guidance ([`sampler`]) and weight EMA ([`ema`]).
//!
//! The image is the suite's model input `[cos φ, sin φ, coherence]` with coherence mapped
//! to `[−1, 1]` (`2c − 1`), so every channel lives in `[−1, 1]`.

pub mod ema;
pub mod sampler;
pub mod schedule;
pub mod unet;

pub use ema::{init_ema, is_ema, swap_in_ema, update_ema, EMA_PREFIX};
pub use sampler::{guide, randn, sample, SamplerConfig, SamplerKind};
pub use schedule::{NoiseSchedule, Prediction};
pub use unet::{empty_context, mse, UNet, UNetConfig};

#[cfg(test)]
mod tests;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::text::{TextEncoder, TextEncoderConfig, TextStates};

/// Shape of a [`TextToInsar`] model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// The conditioner (trained jointly with the UNet).
    pub text: TextEncoderConfig,
    pub unet: UNetConfig,
    pub prediction: Prediction,
    /// Timesteps `T` of the cosine schedule.
    pub timesteps: usize,
}

impl GeneratorConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.text.validate()?;
        self.unet.validate()?;
        if self.unet.context_dim != self.text.d_model {
            return Err(format!(
                "unet.context_dim {} must equal text.d_model {}",
                self.unet.context_dim, self.text.d_model
            ));
        }
        if self.timesteps < 2 {
            return Err(format!("timesteps = {} must be at least 2", self.timesteps));
        }
        Ok(())
    }
}

/// Text encoder + UNet: a caption-conditioned denoiser (variables `text.*` and `unet.*`).
#[derive(Debug, Clone)]
pub struct TextToInsar {
    text: TextEncoder,
    unet: UNet,
    schedule: NoiseSchedule,
    cfg: GeneratorConfig,
}

impl TextToInsar {
    pub fn new(cfg: &GeneratorConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        Ok(Self {
            text: TextEncoder::new(&cfg.text, vb.pp("text"))?,
            unet: UNet::new(&cfg.unet, vb.pp("unet"))?,
            schedule: NoiseSchedule::cosine(cfg.timesteps)?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// Text states of right-padded token ids `(B, T)`; an all-padding row is the null
    /// condition. `rng`: dropout (training).
    pub fn encode_text(&self, tokens: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<TextStates> {
        self.text.forward(tokens, rng)
    }

    /// Network output for `x_t` at integer timesteps `t`.
    pub fn denoise(&self, x_t: &Tensor, t: &[usize], text: &TextStates) -> Result<Tensor> {
        let tv: Vec<f32> = t.iter().map(|&t| t as f32).collect();
        let tt = Tensor::from_vec(tv, t.len(), x_t.device())?;
        self.unet
            .forward(x_t, &tt, &text.states, &text.padding_mask)
    }

    /// The training loss (MSE to the ε or v target) of clean images `x0` at timesteps `t`
    /// with noise `noise`, conditioned on `tokens`.
    pub fn loss(
        &self,
        x0: &Tensor,
        tokens: &Tensor,
        t: &[usize],
        noise: &Tensor,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let text = self.encode_text(tokens, rng)?;
        let x_t = self.schedule.add_noise(x0, noise, t)?;
        let target = self.schedule.target(self.cfg.prediction, x0, noise, t)?;
        mse(&self.denoise(&x_t, t, &text)?, &target)
    }

    /// Samples images for `tokens` `(B, T)` from `noise` `(B, C, H, W)` with guidance
    /// `scale` (the unconditional branch uses all-padding tokens; skipped when `scale == 1`).
    pub fn generate(
        &self,
        tokens: &Tensor,
        noise: Tensor,
        scale: f64,
        sampler: &SamplerConfig,
        rng: &mut ChaCha8Rng,
        on_step: impl FnMut(usize),
    ) -> Result<Tensor> {
        let (b, tl) = tokens.dims2()?;
        let pad = Tensor::full(self.cfg.text.pad_id, (b, tl), tokens.device())?;
        let detach = |t: TextStates| TextStates {
            states: t.states.detach(),
            padding_mask: t.padding_mask,
        };
        let cond = detach(self.encode_text(tokens, None)?);
        let uncond = detach(self.encode_text(&pad, None)?);
        let both = TextStates {
            states: Tensor::cat(&[&cond.states, &uncond.states], 0)?,
            padding_mask: Tensor::cat(&[&cond.padding_mask, &uncond.padding_mask], 0)?,
        };
        let cfg = SamplerConfig {
            prediction: self.cfg.prediction,
            ..*sampler
        };
        sample(
            &self.schedule,
            &cfg,
            noise,
            |x, t| {
                if scale == 1.0 {
                    return self.denoise(x, &vec![t; b], &cond);
                }
                if scale == 0.0 {
                    return self.denoise(x, &vec![t; b], &uncond);
                }
                let x2 = Tensor::cat(&[x, x], 0)?;
                let out = self.denoise(&x2, &vec![t; 2 * b], &both)?;
                guide(&out.narrow(0, 0, b)?, &out.narrow(0, b, b)?, scale)
            },
            rng,
            on_step,
        )
    }
}

/// `[cos, sin, coherence ∈ [0, 1]]` → the model's `[−1, 1]³` (coherence `2c − 1`).
pub fn to_model_range(x: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let head = x.narrow(1, 0, c - 1)?;
    let coh = x.narrow(1, c - 1, 1)?.affine(2.0, -1.0)?;
    Tensor::cat(&[&head, &coh], 1)?.to_dtype(DType::F32)
}

/// Inverse of [`to_model_range`].
pub fn from_model_range(x: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let head = x.narrow(1, 0, c - 1)?;
    let coh = x.narrow(1, c - 1, 1)?.affine(0.5, 0.5)?;
    Tensor::cat(&[&head, &coh], 1)
}
