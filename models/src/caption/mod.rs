//! Image captioning: a ResNet encoder, its C4/C5 feature maps turned into a sequence of
//! visual tokens ([`VisualMemory`]), and a pre-LN transformer decoder ([`CaptionDecoder`])
//! with causal self-attention and cross-attention to those tokens; label-smoothed
//! cross-entropy ([`label_smoothed_cross_entropy`]); batched greedy decoding and beam search
//! ([`search`]).
//!
//! Everything is built from ops with a backward (`crate::nn`: composed LayerNorm, softmax and
//! attention; docs/architecture.md §6), and tested to give every trainable variable a gradient.
//!
//! # Variable names
//!
//! ```text
//! encoder.*                                     the ResNet (see crate::encoder)
//! memory.proj.{i}.{weight,bias}                 1×1 projection of feature level i to d_model
//! memory.level_embed                            (levels, d_model), only with ≥ 2 levels
//! memory.norm.{weight,bias}                     LayerNorm of the visual tokens
//! decoder.embed_tokens.weight                   (vocab, d_model); also the output projection when tied
//! decoder.embed_positions.weight                (max_len, d_model), learned positions only
//! decoder.layers.{j}.self_attn_layer_norm.*     pre-LN before causal self-attention
//! decoder.layers.{j}.self_attn.{q,k,v,out}_proj.*
//! decoder.layers.{j}.encoder_attn_layer_norm.*  pre-LN before cross-attention
//! decoder.layers.{j}.encoder_attn.{q,k,v,out}_proj.*
//! decoder.layers.{j}.final_layer_norm.*         pre-LN before the feed-forward block
//! decoder.layers.{j}.fc1.*, fc2.*               feed-forward d → ff_dim → d (GELU)
//! decoder.layer_norm.*                          final LayerNorm
//! decoder.lm_head.weight                        (vocab, d_model), untied output only
//! labels.head.{weight,bias}                     (num_labels, C5): frame labels from max-pooled C5
//! labels.token.{weight,bias}                    (d_model, num_labels): label probabilities → one memory token
//! labels.mask.{weight,bias}                     1×1 conv C5 → 1: share of deformation pixels per C5 cell
//! ```
//!
//! # Label head
//!
//! With [`CaptionConfig::labels`] set, a linear head reads the frame's multi-label vector
//! (deformation, activity types, intensities) from the max-pooled C5 map
//! ([`CaptionModel::encode_with_labels`] gives its logits). Training adds its BCE to the
//! caption loss, which gives the encoder the direct supervision the classifier gets: through
//! the caption loss alone the encoder learns slowly, and the decoder falls back on the most
//! frequent sentences. With `label_token`, the head's sigmoid
//! probabilities are projected to `d_model` and appended to the visual memory as one more
//! token (attribute-conditioned captioning, Yao et al. 2017), so the decoder reads the
//! image's facts from one place. With `mask`, a 1×1 convolution on C5 also learns the share
//! of deformation pixels of each C5 cell from the training masks (where the deformation is,
//! which the labels do not say; the classifier's auxiliary mask loss).

pub mod decoder;
pub mod loss;
pub mod memory;
pub mod search;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::encoder::{EncoderConfig, ResNet};
use crate::nn::{global_max_pool, linear};

pub use decoder::{CaptionDecoder, DecoderCache, DecoderConfig, PositionKind};
pub use loss::label_smoothed_cross_entropy;
pub use memory::{MemoryConfig, VisualMemory};
pub use search::{beam_search, greedy, Hypothesis, SearchConfig};

/// Architecture of a [`CaptionModel`]. Presets: [`CaptionConfig::preset`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionConfig {
    pub encoder: EncoderConfig,
    pub memory: MemoryConfig,
    pub decoder: DecoderConfig,
    /// The auxiliary label head (see the [module docs](self)); `None` in runs saved before it.
    #[serde(default)]
    pub labels: Option<LabelHeadConfig>,
}

/// Shape of the auxiliary label head of a [`CaptionModel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelHeadConfig {
    /// Entries of the label vector (10 for Hephaestus).
    pub num_labels: usize,
    /// Append the label probabilities to the visual memory as one token.
    pub label_token: bool,
    /// A mask head on C5 (training signal only).
    #[serde(default)]
    pub mask: bool,
}

/// What [`CaptionModel::encode_with_labels`] returns.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Visual tokens `(B, M, d_model)` (the label token last, when configured).
    pub memory: Tensor,
    /// Label logits `(B, num_labels)` of the label head, when the model has one.
    pub label_logits: Option<Tensor>,
    /// Mask logits `(B, 1, h5, w5)` on the C5 grid, when the model has a mask head.
    pub mask_logits: Option<Tensor>,
}

impl CaptionConfig {
    /// Names accepted by [`CaptionConfig::preset`].
    pub const PRESETS: [&'static str; 3] = ["tiny", "small", "base"];

    /// `tiny`: tiny ResNet, d 128, 2 layers (CPU tests and the default CPU run); `small`:
    /// tiny ResNet, d 256, 3 layers; `base`: ResNet-18, d 512, 6 layers, 8 heads (GPU).
    pub fn preset(name: &str, vocab_size: usize) -> std::result::Result<Self, String> {
        let (encoder, d, layers, heads) = match name {
            "tiny" => (EncoderConfig::tiny(), 128, 2, 4),
            "small" => (EncoderConfig::tiny(), 256, 3, 4),
            "base" => (EncoderConfig::resnet18(), 512, 6, 8),
            other => {
                return Err(format!(
                    "unknown caption preset {other:?} (expected one of {})",
                    Self::PRESETS.join(", ")
                ))
            }
        };
        Ok(Self {
            encoder,
            memory: MemoryConfig::default(),
            decoder: DecoderConfig {
                vocab_size,
                d_model: d,
                num_layers: layers,
                num_heads: heads,
                ff_dim: 4 * d,
                ..DecoderConfig::default()
            },
            labels: None,
        })
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        self.encoder.validate()?;
        self.memory.validate()?;
        if let Some(l) = &self.labels {
            if l.num_labels == 0 {
                return Err("labels.num_labels must be at least 1".into());
            }
        }
        self.decoder.validate()
    }
}

/// How the encoder runs inside [`CaptionModel::encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderMode {
    /// Trained with the decoder: BatchNorm uses (and updates) batch statistics.
    Train,
    /// Frozen (pretrained encoder, `--freeze-encoder`): running statistics and no gradient.
    Frozen,
    /// Inference: running statistics.
    Eval,
}

/// The label head's layers.
#[derive(Debug, Clone)]
struct LabelHead {
    head: Linear,
    token: Option<Linear>,
    mask: Option<candle_nn::Conv2d>,
}

/// Encoder + visual memory (+ label head) + decoder.
#[derive(Debug, Clone)]
pub struct CaptionModel {
    encoder: ResNet,
    memory: VisualMemory,
    labels: Option<LabelHead>,
    decoder: CaptionDecoder,
    cfg: CaptionConfig,
}

impl CaptionModel {
    /// Builds the model on `vb` (`encoder.`, `memory.`, `decoder.` prefixes).
    pub fn new(cfg: &CaptionConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let encoder = ResNet::new(&cfg.encoder, vb.pp("encoder"))?;
        let channels = cfg.encoder.feature_channels();
        let memory = VisualMemory::new(
            &cfg.memory,
            &channels,
            cfg.decoder.d_model,
            cfg.decoder.layer_norm_eps,
            vb.pp("memory"),
        )?;
        let decoder = CaptionDecoder::new(&cfg.decoder, vb.pp("decoder"))?;
        let labels = match &cfg.labels {
            Some(l) => Some(LabelHead {
                head: linear(channels[3], l.num_labels, vb.pp("labels.head"))?,
                token: if l.label_token {
                    Some(linear(
                        l.num_labels,
                        cfg.decoder.d_model,
                        vb.pp("labels.token"),
                    )?)
                } else {
                    None
                },
                mask: if l.mask {
                    Some(candle_nn::conv2d(
                        channels[3],
                        1,
                        1,
                        candle_nn::Conv2dConfig::default(),
                        vb.pp("labels.mask"),
                    )?)
                } else {
                    None
                },
            }),
            None => None,
        };
        Ok(Self {
            encoder,
            memory,
            labels,
            decoder,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &CaptionConfig {
        &self.cfg
    }

    pub fn encoder(&self) -> &ResNet {
        &self.encoder
    }

    pub fn decoder(&self) -> &CaptionDecoder {
        &self.decoder
    }

    /// The visual tokens `(B, M, d_model)` of images `(B, in_channels, H, W)`.
    pub fn encode(&self, images: &Tensor, mode: EncoderMode) -> Result<Tensor> {
        Ok(self.encode_with_labels(images, mode)?.memory)
    }

    /// The visual tokens and, with a label head, its logits, from one encoder pass.
    pub fn encode_with_labels(&self, images: &Tensor, mode: EncoderMode) -> Result<Encoded> {
        let out = self
            .encoder
            .forward_t(images, matches!(mode, EncoderMode::Train))?;
        let features: [Tensor; 4] = if mode == EncoderMode::Frozen {
            out.features
                .iter()
                .map(|f| f.detach())
                .collect::<Vec<_>>()
                .try_into()
                .map_err(|_| candle_core::Error::Msg("four feature levels".into()))?
        } else {
            out.features
        };
        let Some(labels) = &self.labels else {
            return Ok(Encoded {
                memory: self.memory.forward(&features, None)?,
                label_logits: None,
                mask_logits: None,
            });
        };
        let mask_logits = match &labels.mask {
            Some(conv) if mode == EncoderMode::Train => Some(conv.forward(&features[3])?),
            _ => None,
        };
        let logits = labels.head.forward(&global_max_pool(&features[3])?)?;
        let token = match &labels.token {
            // Composed sigmoid (the documented results were trained with it).
            Some(proj) => Some(
                proj.forward(&((logits.neg()?.exp()? + 1.0)?.recip()?))?
                    .unsqueeze(1)?,
            ),
            None => None,
        };
        Ok(Encoded {
            memory: self.memory.forward(&features, token.as_ref())?,
            label_logits: Some(logits),
            mask_logits,
        })
    }

    /// Sigmoid probabilities `(B, num_labels)` of the label head in evaluation mode (`None`
    /// without one).
    pub fn predict_labels(&self, images: &Tensor) -> Result<Option<Tensor>> {
        match self
            .encode_with_labels(images, EncoderMode::Eval)?
            .label_logits
        {
            Some(l) => Ok(Some(candle_nn::ops::sigmoid(&l.detach())?)),
            None => Ok(None),
        }
    }

    /// Teacher-forced logits `(B, T, vocab)` for `input_ids` `(B, T)` (`[BOS]` first, right
    /// padded). `dropout`: the RNG of the decoder's dropout masks (`None` = evaluation).
    pub fn forward(
        &self,
        images: &Tensor,
        input_ids: &Tensor,
        mode: EncoderMode,
        dropout: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let memory = self.encode(images, mode)?;
        self.decoder.forward(&memory, input_ids, dropout)
    }

    /// Label-smoothed cross-entropy of `sequences` `(B, T+1)` (`[BOS] … [EOS] [PAD]…`):
    /// positions `0..T` predict positions `1..=T`; padding targets are ignored.
    pub fn loss(
        &self,
        images: &Tensor,
        sequences: &Tensor,
        label_smoothing: f64,
        mode: EncoderMode,
        dropout: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let b = sequences.dim(0)?;
        let rows = Tensor::arange(0u32, b as u32, sequences.device())?;
        self.loss_grouped(
            images,
            &[(rows, sequences.clone())],
            label_smoothing,
            mode,
            dropout,
        )
    }

    /// [`Self::loss`] with the batch's sequences in groups of similar length: `groups` holds,
    /// per group, its rows of the batch (`u32` indices into `images`) and their sequences
    /// `(n_g, T_g + 1)`, each group padded only to its own longest sequence. The encoder runs
    /// once on the whole batch (BatchNorm statistics as in [`Self::loss`]); the result is the
    /// mean over every non-padding target of the batch, so it equals [`Self::loss`] on the
    /// batch padded to its longest sequence, while the decoder's cost follows each group's
    /// length instead of the batch's longest.
    pub fn loss_grouped(
        &self,
        images: &Tensor,
        groups: &[(Tensor, Tensor)],
        label_smoothing: f64,
        mode: EncoderMode,
        dropout: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let memory = self.encode(images, mode)?;
        self.caption_loss(&memory, groups, label_smoothing, dropout)
    }

    /// The caption cross-entropy of `groups` (see [`Self::loss_grouped`]) given the memory
    /// (`(B, M, d_model)`, e.g. of [`Self::encode_with_labels`], whose label and mask logits
    /// the caller scores against its targets).
    pub fn caption_loss(
        &self,
        memory: &Tensor,
        groups: &[(Tensor, Tensor)],
        label_smoothing: f64,
        mut dropout: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let pad = self.cfg.decoder.pad_id;
        let mut total: Option<Tensor> = None;
        let mut count = 0usize;
        for (rows, sequences) in groups {
            let (_, t1) = sequences.dims2()?;
            if t1 < 2 {
                candle_core::bail!("caption sequences need at least [BOS] and one target token")
            }
            let target = sequences.narrow(1, 1, t1 - 1)?.flatten_all()?;
            let n = target
                .to_dtype(DType::U32)?
                .to_vec1::<u32>()?
                .iter()
                .filter(|&&t| t != pad)
                .count();
            if n == 0 {
                continue;
            }
            let input = sequences.narrow(1, 0, t1 - 1)?;
            let logits = self.decoder.forward(
                &memory.index_select(rows, 0)?,
                &input,
                dropout.as_deref_mut(),
            )?;
            let v = logits.dim(2)?;
            let mean = label_smoothed_cross_entropy(
                &logits.reshape(((), v))?,
                &target,
                pad,
                label_smoothing,
            )?;
            let sum = (mean * n as f64)?;
            total = Some(match total {
                Some(t) => (t + sum)?,
                None => sum,
            });
            count += n;
        }
        match total {
            Some(t) => t / count as f64,
            None => candle_core::bail!("cross-entropy: every target is padding"),
        }
    }

    /// Beam search (greedy for width 1) for every image; hypotheses best first.
    pub fn generate(&self, images: &Tensor, cfg: &SearchConfig) -> Result<Vec<Vec<Hypothesis>>> {
        let memory = self.encode(images, EncoderMode::Eval)?.detach();
        if cfg.beam_width == 1 {
            Ok(greedy(&self.decoder, &memory, cfg)?
                .into_iter()
                .map(|h| vec![h])
                .collect())
        } else {
            beam_search(&self.decoder, &memory, cfg)
        }
    }

    /// Dtype of the model's parameters.
    pub fn dtype(&self) -> DType {
        self.decoder.dtype()
    }
}

#[cfg(test)]
mod tests;
