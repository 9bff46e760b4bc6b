//! Text encoder shared by retrieval (the text tower of the dual encoder) and generation (the
//! conditioner whose token states the UNet cross-attends to).
//!
//! A pre-LN transformer encoder (Xiong et al. 2020): token embedding scaled by √d, sinusoidal
//! or learned positions, `num_layers` × [bidirectional self-attention with a key-padding mask,
//! GELU feed-forward], final LayerNorm. Built only from ops with a backward
//! (docs/architecture.md §6): the suite's LayerNorm and attention, never candle-nn's fused
//! ones.
//!
//! Input: token ids `(B, T)` right-padded with `pad_id` (the caption tokenizer's `[BOS] … [EOS]`
//! sequences). Output: [`TextStates`] — every token's state and the padding mask, with
//! [`TextStates::mean_pool`] for one vector per text. Padded positions' states are computed
//! (they attend to the real tokens) but every pooling and attention that consumes them masks
//! them out.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Embedding, Init, Linear, VarBuilder};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::caption::PositionKind;
use crate::nn::{
    layer_norm, linear, multi_head_attention, sinusoidal_position_embedding, AttentionConfig,
    LayerNorm, MultiHeadAttention, SeededDropout,
};

/// Shape of a [`TextEncoder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEncoderConfig {
    /// The tokenizer's vocabulary size.
    pub vocab_size: usize,
    pub d_model: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Hidden width of the feed-forward blocks.
    pub ff_dim: usize,
    /// Longest sequence, `[BOS]` and `[EOS]` included.
    pub max_len: usize,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub positions: PositionKind,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_id: u32,
}

fn default_eps() -> f64 {
    1e-5
}

impl Default for TextEncoderConfig {
    fn default() -> Self {
        Self {
            vocab_size: 512,
            d_model: 128,
            num_layers: 2,
            num_heads: 4,
            ff_dim: 512,
            max_len: 96,
            dropout: 0.1,
            positions: PositionKind::default(),
            layer_norm_eps: default_eps(),
            pad_id: 0,
        }
    }
}

impl TextEncoderConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.vocab_size < 2 || self.d_model == 0 || self.num_layers == 0 || self.ff_dim == 0 {
            return Err(format!(
                "text encoder sizes must be positive (vocab ≥ 2): {self:?}"
            ));
        }
        if self.num_heads == 0 || self.d_model % self.num_heads != 0 {
            return Err(format!(
                "text encoder: {} heads do not divide d_model {}",
                self.num_heads, self.d_model
            ));
        }
        if self.d_model % 2 != 0 {
            return Err(format!(
                "text encoder d_model must be even (sine positions), got {}",
                self.d_model
            ));
        }
        if self.max_len == 0 {
            return Err("text encoder max_len must be ≥ 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.pad_id as usize >= self.vocab_size {
            return Err(format!(
                "pad id {} must be below vocab_size {}",
                self.pad_id, self.vocab_size
            ));
        }
        Ok(())
    }
}

/// Output of [`TextEncoder::forward`].
#[derive(Debug, Clone)]
pub struct TextStates {
    /// `(B, T, d_model)`, after the final LayerNorm.
    pub states: Tensor,
    /// `(B, T)` `u8`, 1 = padding (the convention of [`MultiHeadAttention`]).
    pub padding_mask: Tensor,
}

impl TextStates {
    /// Mean of the non-padding states, `(B, d_model)`. A fully padded row gives zeros.
    pub fn mean_pool(&self) -> Result<Tensor> {
        let keep = self
            .padding_mask
            .to_dtype(self.states.dtype())?
            .affine(-1.0, 1.0)?; // (B, T), 1 = token
        let count = keep.sum_keepdim(1)?.clamp(1.0, f64::INFINITY)?; // (B, 1)
        let summed = self
            .states
            .broadcast_mul(&keep.unsqueeze(D::Minus1)?)?
            .sum(1)?;
        summed.broadcast_div(&count)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn_layer_norm: LayerNorm,
    self_attn: MultiHeadAttention,
    final_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl EncoderLayer {
    fn new(cfg: &TextEncoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            self_attn_layer_norm: layer_norm(d, eps, vb.pp("self_attn_layer_norm"))?,
            self_attn: multi_head_attention(
                AttentionConfig::self_attention(d, cfg.num_heads),
                vb.pp("self_attn"),
            )?,
            final_layer_norm: layer_norm(d, eps, vb.pp("final_layer_norm"))?,
            fc1: linear(d, cfg.ff_dim, vb.pp("fc1"))?,
            fc2: linear(cfg.ff_dim, d, vb.pp("fc2"))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        padding_mask: &Tensor,
        drop: &SeededDropout,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let mut dropout = |t: Tensor| -> Result<Tensor> {
            match rng.as_deref_mut() {
                Some(r) => drop.forward(&t, true, r),
                None => Ok(t),
            }
        };
        let h = self.self_attn_layer_norm.forward(x)?;
        let x = (x + dropout(
            self.self_attn
                .self_attention(&h, Some(padding_mask), false)?,
        )?)?;
        let h = self.final_layer_norm.forward(&x)?;
        let h = self.fc2.forward(&self.fc1.forward(&h)?.gelu_erf()?)?;
        &x + dropout(h)?
    }
}

/// The text encoder. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct TextEncoder {
    embed_tokens: Embedding,
    embed_positions: Option<Tensor>,
    layers: Vec<EncoderLayer>,
    layer_norm: LayerNorm,
    dropout: SeededDropout,
    cfg: TextEncoderConfig,
}

impl TextEncoder {
    pub fn new(cfg: &TextEncoderConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let d = cfg.d_model;
        // N(0, 1/d), scaled by √d in the forward: unit-variance token inputs.
        let emb = vb.get_with_hints(
            (cfg.vocab_size, d),
            "embed_tokens.weight",
            Init::Randn {
                mean: 0.0,
                stdev: (d as f64).powf(-0.5),
            },
        )?;
        let embed_positions = match cfg.positions {
            PositionKind::Learned => Some(vb.get_with_hints(
                (cfg.max_len, d),
                "embed_positions.weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?),
            PositionKind::Sinusoidal => None,
        };
        let layers = (0..cfg.num_layers)
            .map(|j| EncoderLayer::new(cfg, vb.pp("layers").pp(j)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens: Embedding::new(emb, d),
            embed_positions,
            layers,
            layer_norm: layer_norm(d, cfg.layer_norm_eps, vb.pp("layer_norm"))?,
            dropout: SeededDropout::new(cfg.dropout)?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &TextEncoderConfig {
        &self.cfg
    }

    /// Token states of `tokens` `(B, T)` (`u32`, right-padded with `pad_id`). `rng`: dropout
    /// on (training) when given.
    pub fn forward(&self, tokens: &Tensor, mut rng: Option<&mut ChaCha8Rng>) -> Result<TextStates> {
        let (_, t) = tokens.dims2()?;
        if t == 0 || t > self.cfg.max_len {
            candle_core::bail!(
                "text encoder: sequences of 1..={} tokens expected, got {t}",
                self.cfg.max_len
            )
        }
        let tokens = tokens.to_dtype(DType::U32)?;
        let pad = Tensor::full(self.cfg.pad_id, tokens.shape(), tokens.device())?;
        let padding_mask = tokens.eq(&pad)?;
        let d = self.cfg.d_model;
        let tok = (self.embed_tokens.forward(&tokens)? * (d as f64).sqrt())?;
        let pos = match &self.embed_positions {
            Some(table) => table.narrow(0, 0, t)?,
            None => sinusoidal_position_embedding(t, d, tok.dtype(), tok.device())?,
        };
        let mut x = tok.broadcast_add(&pos.unsqueeze(0)?)?;
        if let Some(r) = rng.as_deref_mut() {
            x = self.dropout.forward(&x, true, r)?;
        }
        for layer in &self.layers {
            x = layer.forward(&x, &padding_mask, &self.dropout, rng.as_deref_mut())?;
        }
        Ok(TextStates {
            states: self.layer_norm.forward(&x)?,
            padding_mask,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::{gradient_gaps, random_projection};
    use crate::nn::seeded_var_builder;
    use candle_core::Device;
    use candle_nn::VarMap;
    use rand::SeedableRng;

    fn build(cfg: &TextEncoderConfig, seed: u64) -> (VarMap, TextEncoder) {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let enc = TextEncoder::new(cfg, vb).expect("text encoder");
        (varmap, enc)
    }

    fn tiny() -> TextEncoderConfig {
        TextEncoderConfig {
            vocab_size: 20,
            d_model: 16,
            num_layers: 2,
            num_heads: 2,
            ff_dim: 32,
            max_len: 8,
            dropout: 0.1,
            ..Default::default()
        }
    }

    fn tokens(rows: &[&[u32]]) -> Tensor {
        let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let flat: Vec<u32> = rows
            .iter()
            .flat_map(|r| r.iter().copied().chain(std::iter::repeat(0)).take(t))
            .collect();
        Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu).unwrap()
    }

    #[test]
    fn every_trainable_variable_gets_a_gradient() -> Result<()> {
        let mut learned = tiny();
        learned.positions = PositionKind::Learned;
        for cfg in [tiny(), learned] {
            let (varmap, enc) = build(&cfg, 3);
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let out = enc.forward(&tokens(&[&[1, 5, 6, 2], &[1, 7, 2]]), Some(&mut rng))?;
            let loss =
                (random_projection(&out.states, 1)? + random_projection(&out.mean_pool()?, 2)?)?;
            let grads = loss.backward()?;
            let gaps = gradient_gaps(&varmap, &grads, |_| true)?;
            assert!(gaps.is_empty(), "no gradient for {gaps:?}");
        }
        Ok(())
    }

    #[test]
    fn padding_does_not_change_the_real_tokens() -> Result<()> {
        let (_, enc) = build(&tiny(), 5);
        let short = enc.forward(&tokens(&[&[1, 9, 4, 2]]), None)?;
        let padded = enc.forward(&tokens(&[&[1, 9, 4, 2], &[1, 3, 3, 3, 3, 2]]), None)?;
        let a = short.states.squeeze(0)?;
        let b = padded.states.get(0)?.narrow(0, 0, 4)?;
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "padding changed real states by {diff}");
        let pa = short.mean_pool()?.squeeze(0)?;
        let pb = padded.mean_pool()?.get(0)?;
        let diff = (pa - pb)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "padding changed the pooled vector by {diff}");
        assert_eq!(
            padded.padding_mask.get(0)?.to_vec1::<u8>()?,
            vec![0, 0, 0, 0, 1, 1]
        );
        Ok(())
    }

    #[test]
    fn word_order_matters_and_eval_is_deterministic() -> Result<()> {
        let (_, enc) = build(&tiny(), 7);
        let a = enc.forward(&tokens(&[&[1, 5, 6, 2]]), None)?.mean_pool()?;
        let a2 = enc.forward(&tokens(&[&[1, 5, 6, 2]]), None)?.mean_pool()?;
        let b = enc.forward(&tokens(&[&[1, 6, 5, 2]]), None)?.mean_pool()?;
        let same = (&a - &a2)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let swapped = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(same, 0.0);
        assert!(swapped > 1e-3, "positions ignored: {swapped}");
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() {
        let (_, enc) = build(&tiny(), 1);
        let too_long = Tensor::ones((1, 9), DType::U32, &Device::Cpu).unwrap();
        assert!(enc.forward(&too_long, None).is_err());
        let mut bad = tiny();
        bad.num_heads = 3;
        assert!(bad.validate().is_err());
        bad = tiny();
        bad.pad_id = 20;
        assert!(bad.validate().is_err());
    }
}
