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
