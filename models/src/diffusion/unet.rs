//! A text-conditioned UNet for ε/v prediction (the DDPM / latent-diffusion layout, small).
//!
//! - Residual blocks: GroupNorm → SiLU → 3×3 conv, plus a per-channel shift from the
//!   timestep (and pooled text) embedding, GroupNorm → SiLU → 3×3 conv, 1×1 skip when the
//!   width changes.
//! - Attention blocks (at the levels of `attention_levels` and in the middle): GroupNorm +
//!   self-attention over the pixels, LayerNorm + cross-attention to the text token states,
//!   LayerNorm + a SiLU feed-forward, each residual.
//! - Down: 3×3 conv with stride 2 (im2col: Candle's strided CPU conv backward is broken,
//!   docs/architecture.md §6). Up: nearest ×2 ([`upsample_nearest2d_scale`], accumulating
//!   backward) then a 3×3 conv. One skip per level, concatenated on the way up.
//! - Conditioning: a learned `null_token` is prepended to the text states (never masked), so
//!   an empty caption (all padding) still has a key to attend to and is the classifier-free
//!   guidance null condition; the masked mean of the text states goes through a linear
//!   layer into the timestep embedding.
//!
//! Only ops with a backward are used (composed softmax and LayerNorm, candle-nn's composed
//! GroupNorm, im2col convolutions).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::nn::{
    conv2d, conv2d_im2col, group_norm, layer_norm, linear, multi_head_attention,
    timestep_embedding, torch_default_init, upsample_nearest2d_scale, AttentionConfig, GroupNorm,
    LayerNorm, MultiHeadAttention,
};

/// Shape of a [`UNet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    pub in_channels: usize,
    /// Width of the first level.
    pub base_channels: usize,
    /// Width of level `l` = `base_channels · channel_mult[l]`; one level per entry, each but
    /// the last halving the resolution.
    pub channel_mult: Vec<usize>,
    /// Residual blocks per level.
    pub res_blocks: usize,
    /// Levels (indices into `channel_mult`) with attention blocks; the middle always has one.
    pub attention_levels: Vec<usize>,
    pub heads: usize,
    pub groups: usize,
    /// Width of the text token states.
    pub context_dim: usize,
}

impl UNetConfig {
    /// The preset names of [`UNetConfig::preset`].
    pub const PRESETS: [&'static str; 3] = ["test", "tiny", "small"];

    /// `test` (gradient checks), `tiny` (the CPU default at 32²) or `small`.
    pub fn preset(name: &str, context_dim: usize) -> std::result::Result<Self, String> {
        let (base, mult, res, attn): (usize, Vec<usize>, usize, Vec<usize>) = match name {
            "test" => (8, vec![1, 2], 1, vec![1]),
            "tiny" => (32, vec![1, 2, 2], 1, vec![2]),
            "small" => (64, vec![1, 2, 2, 2], 2, vec![2, 3]),
            _ => {
                return Err(format!(
                    "UNet preset {name:?}: expected one of {}",
                    Self::PRESETS.join(", ")
                ))
            }
        };
        Ok(Self {
            in_channels: 3,
            base_channels: base,
            channel_mult: mult,
            res_blocks: res,
            attention_levels: attn,
            heads: 4,
            groups: if base >= 32 { 8 } else { 4 },
            context_dim,
        })
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.channel_mult.is_empty() || self.res_blocks == 0 || self.in_channels == 0 {
            return Err(
                "UNet: needs at least one level, one residual block and one input channel".into(),
            );
        }
        for (l, m) in self.channel_mult.iter().enumerate() {
            let c = self.base_channels * m;
            if c == 0 || c % self.groups != 0 || c % self.heads != 0 {
                return Err(format!(
                    "UNet level {l}: width {c} must be a positive multiple of groups {} and heads {}",
                    self.groups, self.heads
                ));
            }
        }
        if let Some(l) = self
            .attention_levels
            .iter()
            .find(|&&l| l >= self.channel_mult.len())
        {
            return Err(format!("UNet: attention level {l} does not exist"));
        }
        if self.context_dim == 0 {
            return Err("UNet: context_dim must be positive".into());
        }
        Ok(())
    }

    /// The side must be divisible by this (one halving per level but the last).
    pub fn size_multiple(&self) -> usize {
        1 << (self.channel_mult.len() - 1)
    }

    fn width(&self, level: usize) -> usize {
        self.base_channels * self.channel_mult[level]
    }

    fn time_dim(&self) -> usize {
        4 * self.base_channels
    }
}

fn conv3(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    conv2d(cin, cout, 3, cfg, true, torch_default_init(cin * 9), vb)
}

#[derive(Debug, Clone)]
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
}

impl ResBlock {
    fn new(cin: usize, cout: usize, cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        let g = cfg.groups;
        let gin = if cin % g == 0 { g } else { 1 };
        let skip = if cin != cout {
            Some(conv2d(
                cin,
                cout,
                1,
                Conv2dConfig::default(),
                true,
                torch_default_init(cin),
                vb.pp("skip"),
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: group_norm(gin, cin, 1e-5, vb.pp("norm1"))?,
            conv1: conv3(cin, cout, 1, vb.pp("conv1"))?,
            time: linear(cfg.time_dim(), cout, vb.pp("time"))?,
            norm2: group_norm(g, cout, 1e-5, vb.pp("norm2"))?,
            conv2: conv3(cout, cout, 1, vb.pp("conv2"))?,
            skip,
        })
    }

    fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let h = conv2d_im2col(&self.conv1, &self.norm1.forward(x)?.silu()?)?;
        let shift = self
            .time
            .forward(&temb.silu()?)?
            .unsqueeze(2)?
            .unsqueeze(3)?;
        let h = h.broadcast_add(&shift)?;
        let h = conv2d_im2col(&self.conv2, &self.norm2.forward(&h)?.silu()?)?;
        let skip = match &self.skip {
            Some(c) => conv2d_im2col(c, x)?,
            None => x.clone(),
        };
        skip + h
    }
}

#[derive(Debug, Clone)]
struct AttnBlock {
    norm: GroupNorm,
    self_attn: MultiHeadAttention,
    norm_cross: LayerNorm,
    cross_attn: MultiHeadAttention,
    norm_ff: LayerNorm,
    ff1: Linear,
    ff2: Linear,
}

impl AttnBlock {
    fn new(c: usize, cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: group_norm(cfg.groups, c, 1e-5, vb.pp("norm"))?,
            self_attn: multi_head_attention(
                AttentionConfig::self_attention(c, cfg.heads),
                vb.pp("self_attn"),
            )?,
            norm_cross: layer_norm(c, 1e-5, vb.pp("norm_cross"))?,
            cross_attn: multi_head_attention(
                AttentionConfig::cross_attention(c, cfg.heads, cfg.context_dim),
                vb.pp("cross_attn"),
            )?,
            norm_ff: layer_norm(c, 1e-5, vb.pp("norm_ff"))?,
            ff1: linear(c, 2 * c, vb.pp("ff1"))?,
            ff2: linear(2 * c, c, vb.pp("ff2"))?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let tokens = |t: &Tensor| -> Result<Tensor> {
            t.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()
        };
        let normed = tokens(&self.norm.forward(x)?)?;
        let mut seq = (tokens(x)? + self.self_attn.self_attention(&normed, None, false)?)?;
        let q = self.norm_cross.forward(&seq)?;
        seq = (&seq + self.cross_attn.cross_attention(&q, context, Some(mask))?)?;
        let f = self
            .ff2
            .forward(&self.ff1.forward(&self.norm_ff.forward(&seq)?)?.silu()?)?;
        seq = (seq + f)?;
        seq.transpose(1, 2)?.reshape((b, c, h, w))
    }
}

#[derive(Debug, Clone)]
struct Level {
    res: Vec<ResBlock>,
    attn: Vec<AttnBlock>,
}

/// The denoising network.
#[derive(Debug, Clone)]
pub struct UNet {
    cfg: UNetConfig,
    time1: Linear,
    time2: Linear,
    text_pool: Linear,
    null_token: Tensor,
    conv_in: Conv2d,
    down: Vec<Level>,
    downsample: Vec<Conv2d>,
    mid_res1: ResBlock,
    mid_attn: AttnBlock,
    mid_res2: ResBlock,
    up: Vec<Level>,
    upsample: Vec<Conv2d>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    pub fn new(cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let td = cfg.time_dim();
        let levels = cfg.channel_mult.len();
        let c0 = cfg.width(0);
        let mut down = Vec::new();
        let mut downsample = Vec::new();
        let mut cin = c0;
        for l in 0..levels {
            let c = cfg.width(l);
            let vl = vb.pp(format!("down.{l}"));
            let mut res = Vec::new();
            let mut attn = Vec::new();
            for r in 0..cfg.res_blocks {
                res.push(ResBlock::new(cin, c, cfg, vl.pp(format!("res.{r}")))?);
                cin = c;
                if cfg.attention_levels.contains(&l) {
                    attn.push(AttnBlock::new(c, cfg, vl.pp(format!("attn.{r}")))?);
                }
            }
            down.push(Level { res, attn });
            if l + 1 < levels {
                downsample.push(conv3(c, c, 2, vb.pp(format!("downsample.{l}")))?);
            }
        }
        let cm = cfg.width(levels - 1);
        let mid_res1 = ResBlock::new(cm, cm, cfg, vb.pp("mid.res1"))?;
        let mid_attn = AttnBlock::new(cm, cfg, vb.pp("mid.attn"))?;
        let mid_res2 = ResBlock::new(cm, cm, cfg, vb.pp("mid.res2"))?;
        let mut up = Vec::new();
        let mut upsample = Vec::new();
        let mut ch = cm;
        for l in (0..levels).rev() {
            let c = cfg.width(l);
            let vl = vb.pp(format!("up.{l}"));
            let mut res = Vec::new();
            let mut attn = Vec::new();
            for r in 0..cfg.res_blocks {
                let cin = if r == 0 { ch + c } else { c };
                res.push(ResBlock::new(cin, c, cfg, vl.pp(format!("res.{r}")))?);
                if cfg.attention_levels.contains(&l) {
                    attn.push(AttnBlock::new(c, cfg, vl.pp(format!("attn.{r}")))?);
                }
            }
            up.push(Level { res, attn });
            ch = c;
            if l > 0 {
                upsample.push(conv3(c, c, 1, vb.pp(format!("upsample.{l}")))?);
            }
        }
        Ok(Self {
            time1: linear(cfg.base_channels, td, vb.pp("time.0"))?,
            time2: linear(td, td, vb.pp("time.1"))?,
            text_pool: linear(cfg.context_dim, td, vb.pp("text_pool"))?,
            null_token: vb.get_with_hints(
                (1, 1, cfg.context_dim),
                "null_token",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )?,
            conv_in: conv3(cfg.in_channels, c0, 1, vb.pp("conv_in"))?,
            down,
            downsample,
            mid_res1,
            mid_attn,
            mid_res2,
            up,
            upsample,
            norm_out: group_norm(cfg.groups, c0, 1e-5, vb.pp("norm_out"))?,
            conv_out: conv3(c0, cfg.in_channels, 1, vb.pp("conv_out"))?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// Network output `(B, C, H, W)` for noisy images `x` `(B, C, H, W)`, timesteps `t`
    /// `(B,)` (float), text states `context` `(B, T, context_dim)` and their padding mask
    /// `(B, T)` (`u8`, 1 = padding; an all-padding row is the null condition).
    pub fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        context: &Tensor,
        padding_mask: &Tensor,
    ) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let m = self.cfg.size_multiple();
        if h % m != 0 || w % m != 0 {
            candle_core::bail!("UNet: image side {h}×{w} must be a multiple of {m}")
        }
        let (cb, tl, _) = context.dims3()?;
        if cb != b || padding_mask.dims() != [b, tl] {
            candle_core::bail!(
                "UNet: context {:?} / mask {:?} do not match batch {b}",
                context.shape(),
                padding_mask.shape()
            )
        }
        // Pooled text: masked mean (0 for an empty caption).
        let keep = padding_mask
            .to_dtype(context.dtype())?
            .affine(-1.0, 1.0)?
            .unsqueeze(2)?;
        let count = keep.sum_keepdim(1)?.clamp(1f32, f32::MAX)?;
        let pooled = context
            .broadcast_mul(&keep)?
            .sum(1)?
            .broadcast_div(&count.squeeze(2)?)?;
        let temb = timestep_embedding(t, self.cfg.base_channels, 10_000.0)?.to_dtype(x.dtype())?;
        let temb = self.time2.forward(&self.time1.forward(&temb)?.silu()?)?;
        let temb = (temb + self.text_pool.forward(&pooled)?)?;
        // The null token first, never masked.
        let null = self.null_token.to_dtype(context.dtype())?.broadcast_as((
            b,
            1,
            self.cfg.context_dim,
        ))?;
        let ctx = Tensor::cat(&[&null, context], 1)?;
        let mask = Tensor::cat(
            &[
                &Tensor::zeros((b, 1), padding_mask.dtype(), padding_mask.device())?,
                padding_mask,
            ],
            1,
        )?;

        let mut hcur = conv2d_im2col(&self.conv_in, x)?;
        let mut skips = Vec::new();
        for (l, level) in self.down.iter().enumerate() {
            for (r, res) in level.res.iter().enumerate() {
                hcur = res.forward(&hcur, &temb)?;
                if let Some(a) = level.attn.get(r) {
                    hcur = a.forward(&hcur, &ctx, &mask)?;
                }
            }
            skips.push(hcur.clone());
            if let Some(d) = self.downsample.get(l) {
                hcur = conv2d_im2col(d, &hcur)?;
            }
        }
        hcur = self.mid_res1.forward(&hcur, &temb)?;
        hcur = self.mid_attn.forward(&hcur, &ctx, &mask)?;
        hcur = self.mid_res2.forward(&hcur, &temb)?;
        for (i, level) in self.up.iter().enumerate() {
            let skip = skips.pop().expect("one skip per level");
            hcur = Tensor::cat(&[&hcur, &skip], 1)?;
            for (r, res) in level.res.iter().enumerate() {
                hcur = res.forward(&hcur, &temb)?;
                if let Some(a) = level.attn.get(r) {
                    hcur = a.forward(&hcur, &ctx, &mask)?;
                }
            }
            if let Some(u) = self.upsample.get(i) {
                hcur = conv2d_im2col(u, &upsample_nearest2d_scale(&hcur, 2, 2)?)?;
            }
        }
        let out = conv2d_im2col(&self.conv_out, &self.norm_out.forward(&hcur)?.silu()?)?;
        debug_assert_eq!(out.dims4()?, (b, self.cfg.in_channels, h, w));
        Ok(out)
    }
}

/// Mean squared error over every element.
pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

/// An all-padding mask `(B, T)` and zero states `(B, T, d)`: the unconditional input when no
/// text encoder is used.
pub fn empty_context(
    b: usize,
    t: usize,
    d: usize,
    device: &candle_core::Device,
) -> Result<(Tensor, Tensor)> {
    Ok((
        Tensor::zeros((b, t, d), DType::F32, device)?,
        Tensor::ones((b, t), DType::U8, device)?,
    ))
}
