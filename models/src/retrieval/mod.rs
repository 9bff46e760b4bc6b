//! Text–image retrieval: a CLIP-style dual encoder and its contrastive losses.
//!
//! - Image tower: the shared [`ResNet`] encoder (variables `encoder.*`, so any encoder of
//!   the suite loads into it) → global pool of C5 ([`GlobalPool`]: average, maximum or
//!   both) → linear `image_projection`.
//! - Text tower: the shared [`TextEncoder`] (`text.*`) → mean of the non-padding states →
//!   linear `text_projection`.
//! - Both embeddings are L2-normalised; the similarity of an image and a text is their dot
//!   product (cosine). Training multiplies it by a learned scale `exp(logit_scale)`, clamped
//!   at [`DualEncoderConfig::max_logit_scale`] (CLIP: initial temperature 0.07, scale ≤ 100).
//!
//! Losses ([`contrastive_loss`]): plain symmetric InfoNCE (the paired item is the only
//! positive), and two variants for InSAR captions, which repeat heavily (in-batch pairs with
//! the same caption facts are not negatives): [`LossKind::MultiPositive`] averages the
//! log-likelihood over every positive (SupCon-style), [`LossKind::MaskFalseNegatives`] keeps
//! InfoNCE but drops the other positives from the denominator.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, Linear, VarBuilder};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::encoder::{EncoderConfig, ResNet};
use crate::heads::GlobalPool;
use crate::nn::{l2_normalize, linear, masked_fill};
use crate::text::{TextEncoder, TextEncoderConfig};

/// Shape of a [`DualEncoder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DualEncoderConfig {
    pub image: EncoderConfig,
    /// How C5 becomes the image vector (runs saved before this key: average).
    #[serde(default)]
    pub pool: GlobalPool,
    pub text: TextEncoderConfig,
    /// Width of the shared embedding space.
    pub embed_dim: usize,
    /// Initial temperature τ (the scale starts at 1/τ).
    pub init_temperature: f64,
    /// Upper bound of `logit_scale` (log of the largest scale).
    pub max_logit_scale: f64,
    /// Entries of an auxiliary label head on the pooled image vector (`labels.head`: the
    /// frame's multi-label vector, a training signal that keeps the image tower's features
    /// about deformation and its type); 0 = none (runs saved before this key).
    #[serde(default)]
    pub num_labels: usize,
}

impl DualEncoderConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.image.validate()?;
        self.text.validate()?;
        if self.embed_dim == 0 {
            return Err("embed_dim must be positive".into());
        }
        if !(self.init_temperature > 0.0 && self.init_temperature.is_finite()) {
            return Err(format!(
                "init_temperature must be > 0, got {}",
                self.init_temperature
            ));
        }
        if !self.max_logit_scale.is_finite() || self.max_logit_scale < -self.init_temperature.ln() {
            return Err(format!(
                "max_logit_scale {} is below the initial log scale {}",
                self.max_logit_scale,
                -self.init_temperature.ln()
            ));
        }
        Ok(())
    }
}

/// How in-batch pairs other than the diagonal count in [`contrastive_loss`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Symmetric InfoNCE: only the paired item is positive; every other one is a negative.
    InfoNce,
    /// Every positive of the mask is a target: `−(1/|P_i|) Σ_{j∈P_i} log softmax(s_i)_j`.
    MultiPositive,
    /// InfoNCE on the diagonal with the other positives removed from the denominator.
    MaskFalseNegatives,
}

impl LossKind {
    pub const ALL: [LossKind; 3] = [
        LossKind::InfoNce,
        LossKind::MultiPositive,
        LossKind::MaskFalseNegatives,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LossKind::InfoNce => "info-nce",
            LossKind::MultiPositive => "multi-positive",
            LossKind::MaskFalseNegatives => "mask-false-negatives",
        }
    }
}

/// The dual encoder. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct DualEncoder {
    encoder: ResNet,
    image_projection: Linear,
    text: TextEncoder,
    text_projection: Linear,
    labels: Option<Linear>,
    logit_scale: Tensor,
    cfg: DualEncoderConfig,
}

/// What [`DualEncoder::embed_images_with_labels`] returns.
#[derive(Debug, Clone)]
pub struct ImageEmbedding {
    /// L2-normalised embeddings `(B, embed_dim)`.
    pub embedding: Tensor,
    /// Logits `(B, num_labels)` of the label head, when the model has one.
    pub label_logits: Option<Tensor>,
}

impl DualEncoder {
    pub fn new(cfg: &DualEncoderConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let encoder = ResNet::new(&cfg.image, vb.pp("encoder"))?;
        let text = TextEncoder::new(&cfg.text, vb.pp("text"))?;
        let logit_scale =
            vb.get_with_hints((), "logit_scale", Init::Const(-cfg.init_temperature.ln()))?;
        let pooled_width = cfg.pool.width(cfg.image.out_dim());
        Ok(Self {
            image_projection: linear(pooled_width, cfg.embed_dim, vb.pp("image_projection"))?,
            text_projection: linear(cfg.text.d_model, cfg.embed_dim, vb.pp("text_projection"))?,
            labels: match cfg.num_labels {
                0 => None,
                n => Some(linear(pooled_width, n, vb.pp("labels.head"))?),
            },
            encoder,
            text,
            logit_scale,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &DualEncoderConfig {
        &self.cfg
    }

    pub fn encoder(&self) -> &ResNet {
        &self.encoder
    }

    /// L2-normalised image embeddings `(B, embed_dim)` of `images` `(B, C, H, W)`; `train`
    /// is BatchNorm's mode. `frozen_stages` of the encoder are frozen
    /// ([`ResNet::forward_frozen_t`]).
    pub fn embed_images(
        &self,
        images: &Tensor,
        train: bool,
        frozen_stages: usize,
    ) -> Result<Tensor> {
        Ok(self
            .embed_images_with_labels(images, train, frozen_stages)?
            .embedding)
    }

    /// As [`Self::embed_images`], with the label head's logits when the model has one.
    pub fn embed_images_with_labels(
        &self,
        images: &Tensor,
        train: bool,
        frozen_stages: usize,
    ) -> Result<ImageEmbedding> {
        let enc = self
            .encoder
            .forward_frozen_t(images, frozen_stages, train)?;
        let pooled = self.cfg.pool.apply(&enc)?;
        let label_logits = match &self.labels {
            Some(head) => Some(head.forward(&pooled)?),
            None => None,
        };
        Ok(ImageEmbedding {
            embedding: l2_normalize(&self.image_projection.forward(&pooled)?, 1e-12)?,
            label_logits,
        })
    }

    /// L2-normalised text embeddings `(B, embed_dim)` of `tokens` `(B, T)` (right-padded
    /// with the pad id); dropout on when `rng` is given.
    pub fn embed_texts(&self, tokens: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let pooled = self.text.forward(tokens, rng)?.mean_pool()?;
        l2_normalize(&self.text_projection.forward(&pooled)?, 1e-12)
    }

    /// The clamped learned scale `exp(min(logit_scale, max_logit_scale))` (a scalar tensor
    /// on the graph).
    pub fn scale(&self) -> Result<Tensor> {
        self.logit_scale.minimum(self.cfg.max_logit_scale)?.exp()
    }
}

/// The symmetric contrastive loss of paired, L2-normalised embeddings `image` and `text`
/// `(B, D)` (row `i` of each belong together): the mean of the image→text and text→image
/// cross-entropies of the logits `scale · image · textᵀ`. `positives` `(B, B)` (any numeric
/// dtype, non-zero = positive; symmetric, with a non-zero diagonal) marks the pairs that
/// count as matches for [`LossKind::MultiPositive`] and [`LossKind::MaskFalseNegatives`];
/// [`LossKind::InfoNce`] ignores it.
pub fn contrastive_loss(
    image: &Tensor,
    text: &Tensor,
    scale: &Tensor,
    positives: &Tensor,
    kind: LossKind,
) -> Result<Tensor> {
    let (b, _) = image.dims2()?;
    let logits = image.matmul(&text.t()?)?.broadcast_mul(scale)?;
    let eye = Tensor::eye(b, logits.dtype(), logits.device())?;
    let pos = positives
        .to_dtype(DType::F32)?
        .ne(0f64)?
        .to_dtype(logits.dtype())?
        .maximum(&eye)?;
    let directional = |l: &Tensor| -> Result<Tensor> {
        match kind {
            LossKind::InfoNce => {
                let logp = candle_nn::ops::log_softmax(l, D::Minus1)?;
                logp.mul(&eye)?.sum(1)?.neg()?.mean_all()
            }
            LossKind::MultiPositive => {
                let logp = candle_nn::ops::log_softmax(l, D::Minus1)?;
                let count = pos.sum(1)?;
                logp.mul(&pos)?.sum(1)?.div(&count)?.neg()?.mean_all()
            }
            LossKind::MaskFalseNegatives => {
                let others = (&pos - &eye)?.ne(0f64)?;
                let l = masked_fill(l, &others, crate::nn::ops::mask_fill_value(l.dtype()))?;
                let logp = candle_nn::ops::log_softmax(&l, D::Minus1)?;
                logp.mul(&eye)?.sum(1)?.neg()?.mean_all()
            }
        }
    };
    let i2t = directional(&logits)?;
    let t2i = directional(&logits.t()?.contiguous()?)?;
    (i2t + t2i)? * 0.5
}

#[cfg(test)]
mod tests;
