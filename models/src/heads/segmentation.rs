//! Segmentation head: a feature pyramid (Lin et al. 2017) over the encoder's C2–C5 with the
//! semantic-FPN decoder of Kirillov et al. (2019), giving 7-class logits (background + the
//! six activity types, docs/architecture.md §2.1) at the input resolution. Loss: pixel cross-entropy
//! (optionally class-weighted) plus an optional soft Dice term.
//!
//! Every resampling here has a correct, accumulating backward (docs/architecture.md §6): the top-down path
//! uses [`crate::nn::upsample_nearest2d`] (its input also feeds the smoothing convolution),
//! and the ×2 steps of the semantic branches and the final resize to the input size use
//! [`resize_bilinear`], PyTorch's `interpolate(mode="bilinear", align_corners=False)` written
//! as two matrix products with fixed interpolation matrices (candle's own bilinear upsample
//! has no backward).
//!
//! Variables: `encoder.*`, `decoder.lateral.{0..3}.*` (1×1, on C2..C5),
//! `decoder.smooth.{0..3}.*` (3×3), `decoder.scale.{i}.{j}.{conv,norm}.*` (the `max(1, i)`
//! conv → GroupNorm → ReLU blocks of level `i`), `decoder.classifier.*` (1×1).

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, VarBuilder};
use serde::{Deserialize, Serialize};

use super::{is_trainable, EncoderMode};
use crate::encoder::{EncoderConfig, ResNet};
use crate::nn::{
    conv2d, conv2d_im2col, group_norm, torch_default_init, upsample_nearest2d,
    KAIMING_NORMAL_FAN_OUT,
};

/// Background + Mogi, Dyke, Sill, Spheroid, Earthquake, Unidentified.
pub const NUM_CLASSES: usize = 7;

/// Widths of the decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpnConfig {
    /// Channels of the pyramid levels P2..P5 (256 in the FPN paper).
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// Channels of the semantic branches and of their sum (128 in Kirillov et al.).
    #[serde(default = "default_channels")]
    pub head_channels: usize,
    /// GroupNorm groups in the semantic branches (32 in Kirillov et al.); must divide
    /// `head_channels`.
    #[serde(default = "default_groups")]
    pub groups: usize,
}

fn default_channels() -> usize {
    64
}
fn default_groups() -> usize {
    8
}

impl Default for FpnConfig {
    fn default() -> Self {
        Self {
            channels: default_channels(),
            head_channels: default_channels(),
            groups: default_groups(),
        }
    }
}

/// Architecture and loss of a [`Segmenter`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmenterConfig {
    pub encoder: EncoderConfig,
    #[serde(default)]
    pub fpn: FpnConfig,
    #[serde(default = "default_num_classes")]
    pub num_classes: usize,
    #[serde(default)]
    pub mode: EncoderMode,
    /// Weight of the soft Dice loss added to the cross-entropy (0 = cross-entropy only).
    #[serde(default)]
    pub dice_weight: f64,
    /// Per-class cross-entropy weights (PyTorch's `weight`), e.g. to lift the rare
    /// deformation classes against the background.
    #[serde(default)]
    pub class_weights: Option<Vec<f64>>,
}

fn default_num_classes() -> usize {
    NUM_CLASSES
}

impl SegmenterConfig {
    /// Whole-encoder fine-tuning, default decoder, cross-entropy only.
    pub fn new(encoder: EncoderConfig) -> Self {
        Self {
            encoder,
            fpn: FpnConfig::default(),
            num_classes: NUM_CLASSES,
            mode: EncoderMode::default(),
            dice_weight: 0.0,
            class_weights: None,
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        self.encoder.validate()?;
        let f = &self.fpn;
        if f.channels == 0 || f.head_channels == 0 || self.num_classes < 2 {
            return Err(format!(
                "segmentation decoder needs positive widths and ≥ 2 classes: {f:?}, {} classes",
                self.num_classes
            ));
        }
        if f.groups == 0 || f.head_channels % f.groups != 0 {
            return Err(format!(
                "fpn.groups {} must divide fpn.head_channels {}",
                f.groups, f.head_channels
            ));
        }
        if !self.dice_weight.is_finite() || self.dice_weight < 0.0 {
            return Err(format!("dice_weight must be ≥ 0, got {}", self.dice_weight));
        }
        if let Some(w) = &self.class_weights {
            if w.len() != self.num_classes
                || w.iter().any(|v| !v.is_finite() || *v < 0.0)
                || w.iter().all(|v| *v == 0.0)
            {
                return Err(format!(
                    "class_weights needs {} finite non-negative values, not all zero, got {w:?}",
                    self.num_classes
                ));
            }
        }
        Ok(())
    }
}

/// conv 3×3 → GroupNorm → ReLU.
#[derive(Debug, Clone)]
struct ConvBlock {
    conv: Conv2d,
    norm: GroupNorm,
}

impl ConvBlock {
    fn new(in_c: usize, out_c: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv: conv2d(
                in_c,
                out_c,
                3,
                cfg,
                false,
                KAIMING_NORMAL_FAN_OUT,
                vb.pp("conv"),
            )?,
            norm: group_norm(groups, out_c, 1e-5, vb.pp("norm"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.norm.forward(&conv2d_im2col(&self.conv, x)?)?.relu()
    }
}

/// Encoder + FPN decoder.
#[derive(Debug, Clone)]
pub struct Segmenter {
    encoder: ResNet,
    lateral: Vec<Conv2d>,
    smooth: Vec<Conv2d>,
    scale: Vec<Vec<ConvBlock>>,
    classifier: Conv2d,
    cfg: SegmenterConfig,
}

fn plain_conv(in_c: usize, out_c: usize, k: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        ..Default::default()
    };
    conv2d(
        in_c,
        out_c,
        k,
        cfg,
        true,
        torch_default_init(in_c * k * k),
        vb,
    )
}

impl Segmenter {
    /// Builds the model on `vb` (root of the `VarMap`): `encoder.*` and `decoder.*`.
    pub fn new(cfg: &SegmenterConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let encoder = ResNet::new(&cfg.encoder, vb.pp("encoder"))?;
        let dec = vb.pp("decoder");
        let (d, h) = (cfg.fpn.channels, cfg.fpn.head_channels);
        let feature_channels = cfg.encoder.feature_channels();
        let mut lateral = Vec::with_capacity(4);
        let mut smooth = Vec::with_capacity(4);
        let mut scale = Vec::with_capacity(4);
        for (i, &c) in feature_channels.iter().enumerate() {
            lateral.push(plain_conv(c, d, 1, dec.pp(format!("lateral.{i}")))?);
            smooth.push(plain_conv(d, d, 3, dec.pp(format!("smooth.{i}")))?);
            let blocks = (0..i.max(1))
                .map(|j| {
                    let in_c = if j == 0 { d } else { h };
                    ConvBlock::new(in_c, h, cfg.fpn.groups, dec.pp(format!("scale.{i}.{j}")))
                })
                .collect::<Result<Vec<_>>>()?;
            scale.push(blocks);
        }
        let classifier = plain_conv(h, cfg.num_classes, 1, dec.pp("classifier"))?;
        Ok(Self {
            encoder,
            lateral,
            smooth,
            scale,
            classifier,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &SegmenterConfig {
        &self.cfg
    }

    pub fn encoder(&self) -> &ResNet {
        &self.encoder
    }

    pub fn set_mode(&mut self, mode: EncoderMode) {
        self.cfg.mode = mode;
    }

    /// Whether the variable `name` of this model's `VarMap` is trained in the current mode.
    pub fn is_trainable(&self, name: &str) -> bool {
        is_trainable(name, self.cfg.mode)
    }

    /// Logits `(B, num_classes, H, W)` for images `(B, in_channels, H, W)`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, height, width) = x.dims4()?;
        let enc = self.cfg.mode.encode(&self.encoder, x, train)?;
        // Top-down pathway: P5 = lateral(C5), P_i = lateral(C_i) + nearest-up(P_{i+1}).
        let mut p: Vec<Tensor> = Vec::with_capacity(4);
        for i in (0..4).rev() {
            let lat = conv2d_im2col(&self.lateral[i], &enc.features[i])?;
            let merged = match p.last() {
                None => lat,
                Some(above) => {
                    let (_, _, lh, lw) = lat.dims4()?;
                    (lat + upsample_nearest2d(above, lh, lw)?)?
                }
            };
            p.push(merged);
        }
        p.reverse();
        // Semantic branches: each level to stride 4 (conv blocks with ×2 bilinear steps to
        // the next finer level's exact size), summed.
        let sizes: Vec<(usize, usize)> = p
            .iter()
            .map(|t| t.dims4().map(|(_, _, h, w)| (h, w)))
            .collect::<Result<_>>()?;
        let mut sum: Option<Tensor> = None;
        for (i, level) in p.iter().enumerate() {
            let mut h = conv2d_im2col(&self.smooth[i], level)?;
            for (j, block) in self.scale[i].iter().enumerate() {
                h = block.forward(&h)?;
                if i > 0 {
                    let (th, tw) = sizes[i - 1 - j];
                    h = resize_bilinear(&h, th, tw)?;
                }
            }
            sum = Some(match sum {
                None => h,
                Some(s) => (s + h)?,
            });
        }
        let sum = sum.ok_or_else(|| candle_core::Error::Msg("no pyramid levels".into()))?;
        let logits = conv2d_im2col(&self.classifier, &sum)?;
        resize_bilinear(&logits, height, width)
    }

    /// Class probabilities `(B, num_classes, H, W)` in evaluation mode.
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::softmax(&self.forward_t(x, false)?.detach(), 1)
    }

    /// The configured loss of `logits` `(B, C, H, W)` against class ids `(B, H, W)`.
    pub fn loss(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        segmentation_loss(
            logits,
            targets,
            self.cfg.class_weights.as_deref(),
            self.cfg.dice_weight,
        )
    }
}

/// Cross-entropy of logits `(B, C, H, W)` against class ids `(B, H, W)` (any integer dtype),
/// averaged over pixels — with `class_weights`, PyTorch's weighted mean
/// `Σ w[t]·(−log p_t) / Σ w[t]` — plus `dice_weight` × [`dice_loss`].
pub fn segmentation_loss(
    logits: &Tensor,
    targets: &Tensor,
    class_weights: Option<&[f64]>,
    dice_weight: f64,
) -> Result<Tensor> {
    let (b, c, h, w) = logits.dims4()?;
    if targets.dims() != [b, h, w] {
        candle_core::bail!(
            "segmentation loss: logits {:?} need targets of shape ({b}, {h}, {w}), got {:?}",
            logits.shape(),
            targets.shape()
        )
    }
    let targets = targets.to_dtype(DType::U32)?;
    let max_id = targets.max_all()?.to_scalar::<u32>()?;
    if max_id as usize >= c {
        candle_core::bail!("segmentation loss: class id {max_id} with only {c} classes")
    }
    let log_p = candle_nn::ops::log_softmax(logits, 1)?;
    let idx = targets.unsqueeze(1)?;
    let nll = log_p.gather(&idx, 1)?.neg()?; // (B, 1, H, W)
    let ce = match class_weights {
        None => nll.mean_all()?,
        Some(cw) => {
            if cw.len() != c {
                candle_core::bail!(
                    "segmentation loss: {} class weights for {c} classes",
                    cw.len()
                )
            }
            let cw = Tensor::from_slice(cw, c, logits.device())?.to_dtype(logits.dtype())?;
            let wt = cw
                .index_select(&idx.flatten_all()?, 0)?
                .reshape((b, 1, h, w))?;
            let denom = wt.sum_all()?;
            (nll * &wt)?.sum_all()?.broadcast_div(&denom)?
        }
    };
    if dice_weight == 0.0 {
        return Ok(ce);
    }
    ce + (dice_loss(logits, &targets)? * dice_weight)?
}

/// Soft multi-class Dice loss `1 − mean_c (2 Σ p·t + 1) / (Σ p + Σ t + 1)` with softmax
/// probabilities `p`, one-hot targets `t`, sums over the batch and pixels (so a class absent
/// from the batch and not predicted scores 1, not 0).
pub fn dice_loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (_, c, _, _) = logits.dims4()?;
    let p = candle_nn::ops::softmax(logits, 1)?;
    let classes = Tensor::arange(0u32, c as u32, logits.device())?.reshape((1, c, 1, 1))?;
    let onehot = targets
        .to_dtype(DType::U32)?
        .unsqueeze(1)?
        .broadcast_eq(&classes)?
        .to_dtype(logits.dtype())?;
    let sum_over =
        |t: &Tensor| -> Result<Tensor> { t.transpose(0, 1)?.flatten_from(1)?.sum(D::Minus1) };
    let inter = sum_over(&(&p * &onehot)?)?;
    let denom = (sum_over(&p)? + sum_over(&onehot)?)?;
    let dice = ((inter * 2.0)? + 1.0)?.div(&(denom + 1.0)?)?;
    dice.mean_all()?.affine(-1.0, 1.0)
}

/// Bilinear resize of `(B, C, H, W)` to `(B, C, out_h, out_w)` with PyTorch's
/// `align_corners=False` rule, as `M_h · x · M_wᵀ` with fixed interpolation matrices: the
/// backward is two matrix products (candle's `upsample_bilinear2d` has none).
pub fn resize_bilinear(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if out_h == 0 || out_w == 0 || h == 0 || w == 0 {
        candle_core::bail!("resize_bilinear: empty size {h}×{w} → {out_h}×{out_w}")
    }
    if (h, w) == (out_h, out_w) {
        return Ok(x.clone());
    }
    let (dev, dt) = (x.device(), x.dtype());
    let mw_t = interpolation_matrix_t(w, out_w, dev)?.to_dtype(dt)?; // (w, out_w)
    let mh_t = interpolation_matrix_t(h, out_h, dev)?.to_dtype(dt)?; // (h, out_h)
    let y = x.contiguous()?.reshape((b * c * h, w))?.matmul(&mw_t)?; // (bch, out_w)
    let y = y
        .reshape((b * c, h, out_w))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * c * out_w, h))?
        .matmul(&mh_t)?; // (bc·out_w, out_h)
    y.reshape((b * c, out_w, out_h))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, c, out_h, out_w))
}

/// Transposed 1-D interpolation matrix `(n_in, n_out)`: column `o` holds the weights of
/// output `o` (PyTorch: `src = max((o + ½)·n_in/n_out − ½, 0)`, neighbours `⌊src⌋` and
/// `min(⌊src⌋ + 1, n_in − 1)`).
fn interpolation_matrix_t(n_in: usize, n_out: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f64; n_in * n_out];
    let scale = n_in as f64 / n_out as f64;
    for o in 0..n_out {
        let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let l = src - i0 as f64;
        m[i0 * n_out + o] += 1.0 - l;
        m[i1 * n_out + o] += l;
    }
    Tensor::from_vec(m, (n_in, n_out), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::testing::{blob_dataset, snapshot, train_steps};
    use crate::heads::Stage;
    use crate::nn::check::max_abs_diff;
    use crate::nn::check::{
        finite_difference_check, gradient_gaps, is_running_statistic, random_projection,
        seeded_randn,
    };
    use crate::nn::seeded_var_builder;
    use candle_core::Var;
    use candle_nn::VarMap;

    fn build(cfg: &SegmenterConfig, seed: u64) -> (VarMap, Segmenter) {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let model = Segmenter::new(cfg, vb).unwrap();
        (varmap, model)
    }

    #[test]
    fn bilinear_matches_candle_forward_and_torch_values() -> Result<()> {
        let dev = Device::Cpu;
        let x = seeded_randn((2, 3, 5, 7), 0, &dev)?.to_dtype(DType::F32)?;
        for (oh, ow) in [(10, 14), (20, 28), (8, 9), (3, 4), (5, 7)] {
            let ours = resize_bilinear(&x, oh, ow)?;
            let theirs = x.upsample_bilinear2d(oh, ow, false)?;
            assert!(max_abs_diff(&ours, &theirs) < 1e-5, "{oh}×{ow}");
        }
        // torch.nn.functional.interpolate([[0, 1, 2, 3]], size=8, mode="linear") by hand.
        let row = Tensor::new(&[0f64, 1.0, 2.0, 3.0], &dev)?.reshape((1, 1, 1, 4))?;
        let up: Vec<f64> = resize_bilinear(&row, 1, 8)?.flatten_all()?.to_vec1()?;
        assert_eq!(up, vec![0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]);
        assert!(resize_bilinear(&row, 0, 3).is_err());
        Ok(())
    }

    #[test]
    fn bilinear_gradient_matches_finite_differences() -> Result<()> {
        let x = Var::from_tensor(&seeded_randn((1, 2, 3, 4), 1, &Device::Cpu)?)?;
        for (oh, ow) in [(6, 8), (7, 5), (2, 3)] {
            // x also feeds a second consumer: gradients must accumulate.
            let loss = || {
                let up = resize_bilinear(x.as_tensor(), oh, ow)?;
                random_projection(&up, 3)? + random_projection(x.as_tensor(), 4)?
            };
            let check = finite_difference_check(&[&x], loss, 1e-6)?;
            assert!(check.relative_error() < 1e-8, "{oh}×{ow}: {check:?}");
        }
        Ok(())
    }

    #[test]
    fn loss_reference_values_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        // One image, 2×1 pixels, 3 classes.
        let logits = Var::from_tensor(&Tensor::new(
            &[[[[2.0f64], [0.0]], [[1.0], [0.0]], [[0.0], [3.0]]]],
            &dev,
        )?)?;
        let targets = Tensor::new(&[[[0u32], [2]]], &dev)?;
        let lse = |v: [f64; 3]| v.iter().map(|x| x.exp()).sum::<f64>().ln();
        let nll0 = lse([2.0, 1.0, 0.0]) - 2.0;
        let nll1 = lse([0.0, 0.0, 3.0]) - 3.0;
        let ce = segmentation_loss(logits.as_tensor(), &targets, None, 0.0)?.to_scalar::<f64>()?;
        assert!((ce - (nll0 + nll1) / 2.0).abs() < 1e-12);
        let w = [1.0, 5.0, 3.0];
        let wce =
            segmentation_loss(logits.as_tensor(), &targets, Some(&w), 0.0)?.to_scalar::<f64>()?;
        assert!((wce - (nll0 + 3.0 * nll1) / 4.0).abs() < 1e-12);
        // Dice by hand.
        let sm = |v: [f64; 3]| {
            let z: f64 = v.iter().map(|x| x.exp()).sum();
            v.map(|x| x.exp() / z)
        };
        let (p0, p1) = (sm([2.0, 1.0, 0.0]), sm([0.0, 0.0, 3.0]));
        let t = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        let mut dice = 0.0;
        for c in 0..3 {
            let inter = p0[c] * t[0][c] + p1[c] * t[1][c];
            let denom = p0[c] + p1[c] + t[0][c] + t[1][c];
            dice += (2.0 * inter + 1.0) / (denom + 1.0);
        }
        let expected = 1.0 - dice / 3.0;
        let d = dice_loss(logits.as_tensor(), &targets)?.to_scalar::<f64>()?;
        assert!((d - expected).abs() < 1e-12);
        let both =
            segmentation_loss(logits.as_tensor(), &targets, None, 0.5)?.to_scalar::<f64>()?;
        assert!((both - (ce + 0.5 * expected)).abs() < 1e-12);
        for (cw, dw) in [(None, 0.0), (Some(&w[..]), 1.0)] {
            let check = finite_difference_check(
                &[&logits],
                || segmentation_loss(logits.as_tensor(), &targets, cw, dw),
                1e-6,
            )?;
            assert!(check.relative_error() < 1e-8, "{check:?}");
        }
        // Bad targets: clear errors.
        let bad = Tensor::new(&[[[0u32], [3]]], &dev)?;
        let err = segmentation_loss(logits.as_tensor(), &bad, None, 0.0).unwrap_err();
        assert!(err.to_string().contains("class id 3"), "{err}");
        let bad = Tensor::new(&[[[0u32, 1]]], &dev)?;
        assert!(segmentation_loss(logits.as_tensor(), &bad, None, 0.0).is_err());
        Ok(())
    }

    #[test]
    fn output_shapes_and_validation() -> Result<()> {
        let (_, model) = build(&SegmenterConfig::new(EncoderConfig::tiny()), 0);
        // Sizes that are not multiples of 32 come back at exactly the input size.
        for (h, w) in [(32, 32), (40, 56), (37, 45)] {
            let x = seeded_randn((2, 2, h, w), 1, &Device::Cpu)?.to_dtype(DType::F32)?;
            assert_eq!(model.forward_t(&x, false)?.dims(), &[2, NUM_CLASSES, h, w]);
        }
        let p =
            model.predict(&seeded_randn((1, 2, 32, 32), 1, &Device::Cpu)?.to_dtype(DType::F32)?)?;
        let s = p.sum(1)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-5));
        let mut bad = SegmenterConfig::new(EncoderConfig::tiny());
        bad.fpn.groups = 5;
        assert!(bad.validate().unwrap_err().contains("groups"));
        bad = SegmenterConfig::new(EncoderConfig::tiny());
        bad.class_weights = Some(vec![1.0; 3]);
        assert!(bad.validate().is_err());
        bad.class_weights = None;
        bad.dice_weight = -1.0;
        assert!(bad.validate().is_err());
        let json = serde_json::to_string(&SegmenterConfig::new(EncoderConfig::tiny())).unwrap();
        assert_eq!(
            serde_json::from_str::<SegmenterConfig>(&json).unwrap(),
            SegmenterConfig::new(EncoderConfig::tiny())
        );
        Ok(())
    }

    #[test]
    fn every_trainable_variable_gets_a_gradient() -> Result<()> {
        let data = blob_dataset(2, 32, 1)?;
        for (mode, dice, cw) in [
            (EncoderMode::default(), 0.0, None),
            (
                EncoderMode::Finetune {
                    unfreeze_from: Stage::Layer3,
                },
                1.0,
                Some(vec![0.5, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0]),
            ),
            (EncoderMode::Linear, 0.5, None),
        ] {
            let mut cfg = SegmenterConfig::new(EncoderConfig::tiny());
            cfg.mode = mode;
            cfg.dice_weight = dice;
            cfg.class_weights = cw;
            let (varmap, model) = build(&cfg, 2);
            let logits = model.forward_t(&data.images, true)?;
            let grads = model.loss(&logits, &data.masks)?.backward()?;
            let gaps = gradient_gaps(&varmap, &grads, |n| model.is_trainable(n))?;
            assert!(gaps.is_empty(), "{mode:?}: no gradient for {gaps:?}");
            for (name, var) in varmap.data().lock().unwrap().iter() {
                if !model.is_trainable(name) && !is_running_statistic(name) {
                    assert!(grads.get(var.as_tensor()).is_none(), "{mode:?}: {name}");
                }
            }
        }
        Ok(())
    }

    /// Intersection over union per class from predicted and true ids.
    fn ious(pred: &[u32], truth: &[u32], classes: usize) -> Vec<Option<f64>> {
        (0..classes as u32)
            .map(|c| {
                let inter = pred
                    .iter()
                    .zip(truth)
                    .filter(|(p, t)| **p == c && **t == c)
                    .count();
                let union = pred
                    .iter()
                    .zip(truth)
                    .filter(|(p, t)| **p == c || **t == c)
                    .count();
                (union > 0).then(|| inter as f64 / union as f64)
            })
            .collect()
    }

    /// Fine-tuning fits a small synthetic set to near-perfect pixel accuracy and mIoU.
    #[test]
    fn finetuning_overfits_a_tiny_set() -> Result<()> {
        let data = blob_dataset(12, 32, 21)?;
        let mut cfg = SegmenterConfig::new(EncoderConfig::tiny());
        cfg.fpn = FpnConfig {
            channels: 32,
            head_channels: 32,
            groups: 8,
        };
        cfg.dice_weight = 0.5;
        let (varmap, model) = build(&cfg, 13);
        train_steps(
            &varmap,
            |n| model.is_trainable(n),
            5e-3,
            80,
            || model.loss(&model.forward_t(&data.images, true)?, &data.masks),
        )?;
        let pred: Vec<u32> = model
            .predict(&data.images)?
            .argmax(1)?
            .flatten_all()?
            .to_vec1()?;
        let truth: Vec<u32> = data.masks.flatten_all()?.to_vec1()?;
        let acc =
            pred.iter().zip(&truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64;
        let per_class = ious(&pred, &truth, NUM_CLASSES);
        let present: Vec<f64> = per_class.iter().flatten().copied().collect();
        let miou = present.iter().sum::<f64>() / present.len() as f64;
        assert!(
            acc > 0.97 && miou > 0.85,
            "accuracy {acc}, IoU {per_class:?}"
        );
        Ok(())
    }

    #[test]
    fn linear_probe_leaves_the_encoder_unchanged() -> Result<()> {
        let data = blob_dataset(4, 32, 5)?;
        let mut cfg = SegmenterConfig::new(EncoderConfig::tiny());
        cfg.mode = EncoderMode::Linear;
        let (varmap, model) = build(&cfg, 7);
        let before = snapshot(&varmap)?;
        train_steps(
            &varmap,
            |_| true,
            1e-2,
            3,
            || model.loss(&model.forward_t(&data.images, true)?, &data.masks),
        )?;
        let after = snapshot(&varmap)?;
        let mut decoder_moved = false;
        for (name, v) in &before {
            if name.starts_with("encoder.") {
                assert_eq!(v, &after[name], "{name} changed");
            } else {
                decoder_moved |= v != &after[name];
            }
        }
        assert!(decoder_moved);
        Ok(())
    }
}
