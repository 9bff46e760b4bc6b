//! Pre-LN transformer decoder (Vaswani et al. 2017 with the LayerNorm before each sub-layer,
//! Xiong et al. 2020): token embedding (scaled by √d, fairseq-style), learned or sinusoidal
//! positions, `num_layers` × [causal self-attention, cross-attention to the visual memory,
//! GELU feed-forward], final LayerNorm, output projection tied to the token embedding by
//! default.
//!
//! Sequences are right-padded: with the causal mask a real token never sees a later padding
//! token, so self-attention needs no padding mask; the padded positions' outputs are ignored
//! by the loss ([`super::label_smoothed_cross_entropy`]).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Embedding, Init, Linear, VarBuilder};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::nn::{
    layer_norm, linear, multi_head_attention, sinusoidal_position_embedding, AttentionConfig,
    LayerNorm, MultiHeadAttention, SeededDropout,
};

/// Position encoding of the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionKind {
    /// Fixed sine/cosine table (no parameters).
    #[default]
    Sinusoidal,
    /// A learned `(max_len, d_model)` table.
    Learned,
}

/// Shape of a [`CaptionDecoder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    /// Output classes = the tokenizer's vocabulary size.
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
    /// Use the token embedding as the output projection.
    #[serde(default = "yes")]
    pub tie_embeddings: bool,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_id: u32,
    #[serde(default = "default_bos")]
    pub bos_id: u32,
    #[serde(default = "default_eos")]
    pub eos_id: u32,
}

fn yes() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-5
}
fn default_bos() -> u32 {
    1
}
fn default_eos() -> u32 {
    2
}

impl Default for DecoderConfig {
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
            tie_embeddings: true,
            layer_norm_eps: default_eps(),
            pad_id: 0,
            bos_id: default_bos(),
            eos_id: default_eos(),
        }
    }
}

impl DecoderConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.vocab_size < 3 || self.d_model == 0 || self.num_layers == 0 || self.ff_dim == 0 {
            return Err(format!(
                "decoder sizes must be positive (vocab ≥ 3): {self:?}"
            ));
        }
        if self.num_heads == 0 || self.d_model % self.num_heads != 0 {
            return Err(format!(
                "decoder: {} heads do not divide d_model {}",
                self.num_heads, self.d_model
            ));
        }
        if self.d_model % 4 != 0 {
            return Err(format!(
                "decoder d_model must be a multiple of 4 (2-D sine positions), got {}",
                self.d_model
            ));
        }
        if self.max_len < 2 {
            return Err(format!("decoder max_len must be ≥ 2, got {}", self.max_len));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        let v = self.vocab_size as u32;
        if self.pad_id >= v || self.bos_id >= v || self.eos_id >= v {
            return Err(format!(
                "special token ids ({}, {}, {}) must be below vocab_size {v}",
                self.pad_id, self.bos_id, self.eos_id
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn_layer_norm: LayerNorm,
    self_attn: MultiHeadAttention,
    encoder_attn_layer_norm: LayerNorm,
    encoder_attn: MultiHeadAttention,
    final_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl DecoderLayer {
    fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            self_attn_layer_norm: layer_norm(d, eps, vb.pp("self_attn_layer_norm"))?,
            self_attn: multi_head_attention(
                AttentionConfig::self_attention(d, cfg.num_heads),
                vb.pp("self_attn"),
            )?,
            encoder_attn_layer_norm: layer_norm(d, eps, vb.pp("encoder_attn_layer_norm"))?,
            encoder_attn: multi_head_attention(
                AttentionConfig::cross_attention(d, cfg.num_heads, d),
                vb.pp("encoder_attn"),
            )?,
            final_layer_norm: layer_norm(d, eps, vb.pp("final_layer_norm"))?,
            fc1: linear(d, cfg.ff_dim, vb.pp("fc1"))?,
            fc2: linear(cfg.ff_dim, d, vb.pp("fc2"))?,
        })
    }

    /// One layer on `x` `(B, T, d)`. With `past` (incremental decoding, `T` = 1): `past`
    /// holds the self-attention inputs of the earlier positions, the new position attends to
    /// them and to itself, and is appended to `past`.
    fn forward(
        &self,
        x: &Tensor,
        memory: &Tensor,
        past: Option<&mut Option<Tensor>>,
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
        let attended = match past {
            None => self.self_attn.self_attention(&h, None, true)?,
            Some(past) => {
                let keys = match past.take() {
                    Some(p) => Tensor::cat(&[&p, &h], 1)?,
                    None => h.clone(),
                };
                // Causal with the queries as the last positions of `keys`: the newest
                // position sees every cached one and itself.
                let out = self
                    .self_attn
                    .forward_with_weights(&h, &keys, None, true)?
                    .0;
                *past = Some(keys);
                out
            }
        };
        let x = (x + dropout(attended)?)?;
        let h = self.encoder_attn_layer_norm.forward(&x)?;
        let x = (&x + dropout(self.encoder_attn.cross_attention(&h, memory, None)?)?)?;
        let h = self.final_layer_norm.forward(&x)?;
        let h = self.fc2.forward(&self.fc1.forward(&h)?.gelu_erf()?)?;
        &x + dropout(h)?
    }
}

/// The caption decoder. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct CaptionDecoder {
    embed_tokens: Embedding,
    embed_positions: Option<Tensor>,
    layers: Vec<DecoderLayer>,
    layer_norm: LayerNorm,
    lm_head: Tensor,
    dropout: SeededDropout,
    cfg: DecoderConfig,
}

impl CaptionDecoder {
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let d = cfg.d_model;
        // N(0, 1/d), scaled by √d in the forward: unit-variance inputs and, tied, logits of
        // unit scale at initialisation (fairseq's transformer).
        let std = (d as f64).powf(-0.5);
        let emb = vb.get_with_hints(
            (cfg.vocab_size, d),
            "embed_tokens.weight",
            Init::Randn {
                mean: 0.0,
                stdev: std,
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
            .map(|j| DecoderLayer::new(cfg, vb.pp("layers").pp(j)))
            .collect::<Result<Vec<_>>>()?;
        let layer_norm = layer_norm(d, cfg.layer_norm_eps, vb.pp("layer_norm"))?;
        let lm_head = if cfg.tie_embeddings {
            emb.clone()
        } else {
            vb.get_with_hints(
                (cfg.vocab_size, d),
                "lm_head.weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
            )?
        };
        Ok(Self {
            embed_tokens: Embedding::new(emb, d),
            embed_positions,
            layers,
            layer_norm,
            lm_head,
            dropout: SeededDropout::new(cfg.dropout)?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.lm_head.dtype()
    }

    /// Final hidden states `(B, T, d_model)` of `input_ids` `(B, T)` attending to `memory`
    /// `(B, M, d_model)`.
    pub fn hidden(
        &self,
        memory: &Tensor,
        input_ids: &Tensor,
        mut dropout: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let (bm, _, dm) = memory.dims3()?;
        if bm != b || dm != self.cfg.d_model {
            candle_core::bail!(
                "decoder: {b} sequences need memory (B={b}, M, {}), got {:?}",
                self.cfg.d_model,
                memory.shape()
            )
        }
        if t > self.cfg.max_len {
            candle_core::bail!(
                "decoder: sequence of {t} tokens exceeds max_len {}",
                self.cfg.max_len
            )
        }
        let d = self.cfg.d_model;
        let tok = (self.embed_tokens.forward(input_ids)? * (d as f64).sqrt())?;
        let pos = match &self.embed_positions {
            Some(table) => table.narrow(0, 0, t)?,
            None => sinusoidal_position_embedding(t, d, tok.dtype(), tok.device())?,
        };
        let mut x = tok.broadcast_add(&pos.unsqueeze(0)?)?;
        if let Some(r) = dropout.as_deref_mut() {
            x = self.dropout.forward(&x, true, r)?;
        }
        for layer in &self.layers {
            x = layer.forward(&x, memory, None, &self.dropout, dropout.as_deref_mut())?;
        }
        self.layer_norm.forward(&x)
    }

    /// Output logits `(…, vocab)` of hidden states `(…, d_model)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let mut dims = hidden.dims().to_vec();
        let d = dims.pop().unwrap_or(0);
        let flat = hidden.reshape(((), d))?.matmul(&self.lm_head.t()?)?;
        dims.push(self.cfg.vocab_size);
        flat.reshape(dims)
    }

    /// Teacher-forced logits `(B, T, vocab)`.
    pub fn forward(
        &self,
        memory: &Tensor,
        input_ids: &Tensor,
        dropout: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        self.logits(&self.hidden(memory, input_ids, dropout)?)
    }

    /// Log-probabilities `(B, vocab)` of the token after the last position of `input_ids`
    /// (recomputes the whole prefix; [`Self::next_token_log_probs_cached`] is the incremental
    /// equivalent used by the searches).
    pub fn next_token_log_probs(&self, memory: &Tensor, input_ids: &Tensor) -> Result<Tensor> {
        let h = self.hidden(memory, input_ids, None)?;
        let t = h.dim(1)?;
        let last = h.narrow(1, t - 1, 1)?.squeeze(1)?;
        candle_nn::ops::log_softmax(&self.logits(&last)?, D::Minus1)
    }

    /// An empty [`DecoderCache`] for incremental decoding.
    pub fn new_cache(&self) -> DecoderCache {
        DecoderCache {
            past: vec![None; self.layers.len()],
            len: 0,
        }
    }

    /// Incremental decoding: log-probabilities `(N, vocab)` of the token after `tokens`
    /// `(N,)`, the newest token of each of `N` sequences whose earlier positions are in
    /// `cache` (empty before the first token, `[BOS]`); appends the new position to `cache`.
    /// Equals [`Self::next_token_log_probs`] on the whole prefix, at one position's cost per
    /// layer instead of the prefix's (the FFN and cross-attention of earlier positions are not
    /// recomputed).
    pub fn next_token_log_probs_cached(
        &self,
        memory: &Tensor,
        tokens: &Tensor,
        cache: &mut DecoderCache,
    ) -> Result<Tensor> {
        let n = tokens.dim(0)?;
        let (bm, _, dm) = memory.dims3()?;
        if bm != n || dm != self.cfg.d_model || cache.past.len() != self.layers.len() {
            candle_core::bail!(
                "decoder: {n} tokens need memory (N={n}, M, {}) and a cache of {} layers, got {:?} and {}",
                self.cfg.d_model,
                self.layers.len(),
                memory.shape(),
                cache.past.len()
            )
        }
        if let Some(Some(p)) = cache.past.first() {
            if p.dim(0)? != n {
                candle_core::bail!("decoder cache holds {} rows, got {n} tokens", p.dim(0)?)
            }
        }
        let t = cache.len;
        if t >= self.cfg.max_len {
            candle_core::bail!("decoder: position {t} exceeds max_len {}", self.cfg.max_len)
        }
        let d = self.cfg.d_model;
        let tok = (self.embed_tokens.forward(&tokens.unsqueeze(1)?)? * (d as f64).sqrt())?;
        let pos = match &self.embed_positions {
            Some(table) => table.narrow(0, t, 1)?,
            None => sinusoidal_position_embedding(t + 1, d, tok.dtype(), tok.device())?
                .narrow(0, t, 1)?,
        };
        let mut x = tok.broadcast_add(&pos.unsqueeze(0)?)?;
        for (layer, past) in self.layers.iter().zip(cache.past.iter_mut()) {
            x = layer.forward(&x, memory, Some(past), &self.dropout, None)?;
        }
        cache.len += 1;
        let h = self.layer_norm.forward(&x)?.squeeze(1)?;
        candle_nn::ops::log_softmax(&self.logits(&h)?, D::Minus1)
    }
}

/// The state of incremental decoding ([`CaptionDecoder::next_token_log_probs_cached`]): per
/// layer, the self-attention inputs `(N, t, d_model)` of the `t` positions decoded so far.
#[derive(Debug, Clone)]
pub struct DecoderCache {
    past: Vec<Option<Tensor>>,
    len: usize,
}

impl DecoderCache {
    /// Positions decoded so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the sequences `rows` `(N',)` (u32 indices, repeats allowed) in that order: a
    /// finished caption leaving the batch, beam hypotheses continuing from their parents.
    pub fn select(&mut self, rows: &Tensor) -> Result<()> {
        for p in self.past.iter_mut().flatten() {
            *p = p.index_select(rows, 0)?;
        }
        Ok(())
    }
}
