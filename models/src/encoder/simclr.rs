//! SimCLR (Chen et al. 2020), as used for InSAR by Bountos et al. (GRSL 2021): the encoder,
//! a 2-layer projection MLP, and the NT-Xent loss with τ = 0.5 over two augmented views.
//!
//! The two views are encoded as one `2B` batch, so BatchNorm statistics cover both (as in the
//! reference implementations). Variables: `encoder.*` (see the [module docs](super)),
//! `projector.layers.{0,1}.*`.

use candle_core::{DType, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{EncoderConfig, ResNet};
use crate::nn::ops::{mask_fill_value, masked_fill};
use crate::nn::{l2_normalize, mlp, Activation, Mlp, MlpConfig};

/// The projection head `Linear(d, hidden) → [BN] → ReLU → Linear(hidden, out_dim)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionConfig {
    /// Hidden width; `None` = the encoder's output width (SimCLR).
    #[serde(default)]
    pub hidden_dim: Option<usize>,
    /// Width of the embedding the loss compares (128 in SimCLR and MoCo v2).
    #[serde(default = "default_projection_dim")]
    pub out_dim: usize,
    /// BatchNorm after the hidden layer (SimCLR v2); off in SimCLR v1 and MoCo v2.
    #[serde(default)]
    pub batch_norm: bool,
}

fn default_projection_dim() -> usize {
    128
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        Self {
            hidden_dim: None,
            out_dim: default_projection_dim(),
            batch_norm: false,
        }
    }
}

impl ProjectionConfig {
    pub(crate) fn build(&self, in_dim: usize, vb: VarBuilder) -> Result<Mlp> {
        let cfg = MlpConfig {
            dims: vec![in_dim, self.hidden_dim.unwrap_or(in_dim), self.out_dim],
            activation: Activation::Relu,
            batch_norm: self.batch_norm,
        };
        mlp(&cfg, vb)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimClrConfig {
    pub encoder: EncoderConfig,
    #[serde(default)]
    pub projection: ProjectionConfig,
    /// NT-Xent temperature τ (0.5 in Bountos et al. 2021).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

fn default_temperature() -> f64 {
    0.5
}

impl SimClrConfig {
    pub fn new(encoder: EncoderConfig) -> Self {
        Self {
            encoder,
            projection: ProjectionConfig::default(),
            temperature: default_temperature(),
        }
    }
}

/// Loss and similarity logits of one contrastive step.
#[derive(Debug, Clone)]
pub struct ContrastiveOutput {
    /// Scalar loss (mean over anchors).
    pub loss: Tensor,
    /// `(anchors, candidates)` logits (similarity / τ; excluded candidates very negative).
    pub logits: Tensor,
    /// `(anchors,)` index of each anchor's positive candidate (`u32`).
    pub targets: Tensor,
}

impl ContrastiveOutput {
    /// Instance-discrimination top-`k` accuracy: the share of anchors whose positive ranks
    /// among the `k` most similar candidates (chance ≈ k / candidates).
    pub fn accuracy(&self, k: usize) -> Result<f64> {
        contrastive_accuracy(&self.logits, &self.targets, k)
    }
}

/// Share of rows of `logits` `(N, C)` whose `targets[i]` entry is among the `k` largest
/// (counting only strictly larger entries, so ties favour the positive).
pub fn contrastive_accuracy(logits: &Tensor, targets: &Tensor, k: usize) -> Result<f64> {
    let logits: Vec<Vec<f32>> = logits.detach().to_dtype(DType::F32)?.to_vec2()?;
    let targets: Vec<u32> = targets.to_dtype(DType::U32)?.to_vec1()?;
    if logits.len() != targets.len() || logits.is_empty() {
        candle_core::bail!(
            "contrastive_accuracy: {} rows of logits for {} targets",
            logits.len(),
            targets.len()
        )
    }
    let mut hits = 0usize;
    for (row, &t) in logits.iter().zip(&targets) {
        let Some(&pos) = row.get(t as usize) else {
            candle_core::bail!(
                "contrastive_accuracy: target {t} out of {} candidates",
                row.len()
            )
        };
        let better = row.iter().filter(|&&v| v > pos).count();
        if better < k {
            hits += 1;
        }
    }
    Ok(hits as f64 / targets.len() as f64)
}

/// NT-Xent (normalised temperature-scaled cross-entropy) over two batches of embeddings
/// `z1`, `z2` `(B, D)` where `z1[i]` and `z2[i]` are views of the same image. Each of the
/// `2B` embeddings is an anchor; its positive is the other view, the `2B − 2` other
/// embeddings are negatives; cosine similarities are divided by `temperature`.
pub fn nt_xent(z1: &Tensor, z2: &Tensor, temperature: f64) -> Result<ContrastiveOutput> {
    let (b, d) = z1.dims2()?;
    if z2.dims() != [b, d] || b < 2 {
        candle_core::bail!(
            "nt_xent needs two (B ≥ 2, D) batches of the same shape, got {:?} and {:?}",
            z1.shape(),
            z2.shape()
        )
    }
    if temperature.is_nan() || temperature <= 0.0 {
        candle_core::bail!("nt_xent: temperature must be positive, got {temperature}")
    }
    let z = l2_normalize(&Tensor::cat(&[z1, z2], 0)?, 1e-12)?;
    let sim = (z.matmul(&z.t()?)? / temperature)?;
    let n = 2 * b;
    let eye: Vec<u8> = (0..n * n).map(|i| u8::from(i / n == i % n)).collect();
    let eye = Tensor::from_vec(eye, (n, n), z.device())?;
    let logits = masked_fill(&sim, &eye, mask_fill_value(sim.dtype()))?;
    let targets: Vec<u32> = (0..n).map(|i| ((i + b) % n) as u32).collect();
    let targets = Tensor::from_vec(targets, n, z.device())?;
    let loss = candle_nn::loss::cross_entropy(&logits, &targets)?;
    Ok(ContrastiveOutput {
        loss,
        logits,
        targets,
    })
}

/// Encoder + projection head trained with NT-Xent.
#[derive(Debug, Clone)]
pub struct SimClr {
    encoder: ResNet,
    projector: Mlp,
    temperature: f64,
}

impl SimClr {
    /// Builds `encoder.*` and `projector.*` on `vb`.
    pub fn new(cfg: &SimClrConfig, vb: VarBuilder) -> Result<Self> {
        let encoder = ResNet::new(&cfg.encoder, vb.pp("encoder"))?;
        let projector = cfg
            .projection
            .build(cfg.encoder.out_dim(), vb.pp("projector"))?;
        if cfg.temperature.is_nan() || cfg.temperature <= 0.0 {
            candle_core::bail!(
                "SimCLR temperature must be positive, got {}",
                cfg.temperature
            )
        }
        Ok(Self {
            encoder,
            projector,
            temperature: cfg.temperature,
        })
    }

    pub fn encoder(&self) -> &ResNet {
        &self.encoder
    }

    pub fn encoder_mut(&mut self) -> &mut ResNet {
        &mut self.encoder
    }

    /// Pooled features `(B, d)` and projections `(B, out_dim)` of `x`.
    pub fn project(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let pooled = self.encoder.forward_t(x, train)?.pooled;
        let z = self.projector.forward_t(&pooled, train)?;
        Ok((pooled, z))
    }

    /// NT-Xent loss of two views `(B, C, H, W)` of the same `B` images.
    pub fn forward_t(
        &self,
        view1: &Tensor,
        view2: &Tensor,
        train: bool,
    ) -> Result<ContrastiveOutput> {
        if view1.dims() != view2.dims() {
            candle_core::bail!(
                "SimCLR views differ in shape: {:?} vs {:?}",
                view1.shape(),
                view2.shape()
            )
        }
        let b = view1.dim(0)?;
        let (_, z) = self.project(&Tensor::cat(&[view1, view2], 0)?, train)?;
        nt_xent(&z.narrow(0, 0, b)?, &z.narrow(0, b, b)?, self.temperature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::is_trainable_name;
    use crate::nn::check::{finite_difference_check, gradient_gaps, seeded_randn};
    use crate::nn::seeded_var_builder;
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    fn rows(rows: &[&[f64]], device: &Device) -> Result<Tensor> {
        let d = rows.first().map_or(0, |r| r.len());
        let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_vec(flat, (rows.len(), d), device)
    }

    #[test]
    fn nt_xent_hand_computed_orthogonal_case() -> Result<()> {
        // Views identical, images orthogonal: each anchor sees logits {positive 1/τ = 2,
        // two negatives 0}, so loss = −ln(e² / (e² + 2)) = ln(1 + 2e⁻²) for every anchor.
        let dev = Device::Cpu;
        let z = rows(&[&[1.0, 0.0], &[0.0, 3.0]], &dev)?; // norms differ: cosine ignores them
        let out = nt_xent(&z, &z, 0.5)?;
        let expected = (1.0 + 2.0 * (-2.0f64).exp()).ln();
        let loss = out.loss.to_scalar::<f64>()?;
        assert!((loss - expected).abs() < 1e-12, "{loss} vs {expected}");
        assert_eq!(out.targets.to_vec1::<u32>()?, vec![2, 3, 0, 1]);
        assert_eq!(out.accuracy(1)?, 1.0);
        Ok(())
    }

    #[test]
    fn nt_xent_hand_computed_general_case() -> Result<()> {
        // z1 = [(1,0), (0,1)], z2 = [(0.6,0.8), (1,0)] (all unit norm), τ = 0.5.
        // Cosines: a0·a1 = 0, a0·b0 = 0.6, a0·b1 = 1, a1·b0 = 0.8, a1·b1 = 0, b0·b1 = 0.6.
        // Anchor a0: pos b0 (0.6), negs a1 (0), b1 (1)  → −ln(e^1.2 / (e^1.2 + e^0 + e^2))
        // Anchor a1: pos b1 (0),   negs a0 (0), b0 (0.8) → −ln(1 / (1 + 1 + e^1.6))
        // Anchor b0: pos a0 (0.6), negs a1 (0.8), b1 (0.6) → −ln(e^1.2 / (e^1.2 + e^1.6 + e^1.2))
        // Anchor b1: pos a1 (0),   negs a0 (1), b0 (0.6) → −ln(1 / (1 + e^2 + e^1.2))
        let dev = Device::Cpu;
        let z1 = rows(&[&[1.0, 0.0], &[0.0, 1.0]], &dev)?;
        let z2 = rows(&[&[0.6, 0.8], &[1.0, 0.0]], &dev)?;
        let e = f64::exp;
        let l = [
            -(e(1.2) / (e(1.2) + 1.0 + e(2.0))).ln(),
            -(1.0 / (2.0 + e(1.6))).ln(),
            -(e(1.2) / (2.0 * e(1.2) + e(1.6))).ln(),
            -(1.0 / (1.0 + e(2.0) + e(1.2))).ln(),
        ];
        let expected = l.iter().sum::<f64>() / 4.0;
        let out = nt_xent(&z1, &z2, 0.5)?;
        let loss = out.loss.to_scalar::<f64>()?;
        assert!((loss - expected).abs() < 1e-12, "{loss} vs {expected}");
        assert!((expected - 1.727_586_856_8).abs() < 1e-9); // numeric value (Python)
                                                            // Top-1: a0 ranks b1 above its positive, a1 ranks b0 above, b0 ranks a1 above,
                                                            // b1 ranks a0 and b0 above → 0 / 4; top-2: a0, a1, b0 hit → 3 / 4.
        assert_eq!(out.accuracy(1)?, 0.0);
        assert_eq!(out.accuracy(2)?, 0.75);
        assert_eq!(out.accuracy(3)?, 1.0);
        Ok(())
    }

    #[test]
    fn nt_xent_gradient_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let z1 = Var::from_tensor(&seeded_randn((3, 4), 1, &dev)?)?;
        let z2 = Var::from_tensor(&seeded_randn((3, 4), 2, &dev)?)?;
        let loss = || Ok(nt_xent(z1.as_tensor(), z2.as_tensor(), 0.5)?.loss);
        let check = finite_difference_check(&[&z1, &z2], loss, 1e-6)?;
        assert!(check.relative_error() < 1e-8, "{check:?}");
        assert!(nt_xent(z1.as_tensor(), &z2.as_tensor().narrow(0, 0, 2)?, 0.5).is_err());
        assert!(nt_xent(z1.as_tensor(), z2.as_tensor(), 0.0).is_err());
        Ok(())
    }

    #[test]
    fn every_trainable_variable_gets_a_gradient() -> Result<()> {
        for batch_norm in [false, true] {
            let varmap = VarMap::new();
            let mut cfg = SimClrConfig::new(EncoderConfig::tiny());
            cfg.projection.batch_norm = batch_norm;
            cfg.projection.out_dim = 16;
            let model = SimClr::new(
                &cfg,
                seeded_var_builder(&varmap, 1, DType::F32, &Device::Cpu),
            )?;
            let v1 = seeded_randn((4, 2, 32, 32), 2, &Device::Cpu)?.to_dtype(DType::F32)?;
            let v2 = seeded_randn((4, 2, 32, 32), 3, &Device::Cpu)?.to_dtype(DType::F32)?;
            let out = model.forward_t(&v1, &v2, true)?;
            let loss = out.loss.to_scalar::<f32>()?;
            assert!(loss.is_finite() && loss > 0.0);
            assert_eq!(out.logits.dims(), &[8, 8]);
            let grads = out.loss.backward()?;
            let gaps = gradient_gaps(&varmap, &grads, is_trainable_name)?;
            assert!(gaps.is_empty(), "no gradient for {gaps:?}");
            assert!(varmap
                .data()
                .lock()
                .unwrap()
                .contains_key("projector.layers.1.weight"));
        }
        Ok(())
    }

    #[test]
    fn a_few_sgd_steps_lower_the_loss_and_lift_accuracy() -> Result<()> {
        // 8 random "images", two noisy views each; plain SGD on the trainable variables.
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let mut cfg = SimClrConfig::new(EncoderConfig::tiny());
        cfg.projection.out_dim = 32;
        let model = SimClr::new(&cfg, seeded_var_builder(&varmap, 3, DType::F32, &dev))?;
        let images = seeded_randn((8, 2, 32, 32), 10, &dev)?;
        let view = |seed| -> Result<Tensor> {
            (&images + (seeded_randn((8, 2, 32, 32), seed, &dev)? * 0.5)?)?.to_dtype(DType::F32)
        };
        let (v1, v2) = (view(11)?, view(12)?);
        let trainable: Vec<Var> = {
            let data = varmap.data().lock().unwrap();
            data.iter()
                .filter(|(n, _)| is_trainable_name(n))
                .map(|(_, v)| v.clone())
                .collect()
        };
        let first = model.forward_t(&v1, &v2, true)?;
        let (loss0, acc0) = (first.loss.to_scalar::<f32>()?, first.accuracy(1)?);
        let mut last = (loss0, acc0);
        for _ in 0..12 {
            let out = model.forward_t(&v1, &v2, true)?;
            let grads = out.loss.backward()?;
            for v in &trainable {
                if let Some(g) = grads.get(v.as_tensor()) {
                    v.set(&(v.as_tensor() - (g * 0.1)?)?)?;
                }
            }
            last = (out.loss.to_scalar::<f32>()?, out.accuracy(1)?);
        }
        // Chance top-1 is 1/15; ln(15) ≈ 2.7 is the loss of uninformative embeddings.
        assert!(last.0 < 0.7 * loss0, "loss {loss0} → {}", last.0);
        assert!(last.1 >= 0.75 && last.1 > acc0, "top-1 {acc0} → {}", last.1);
        Ok(())
    }

    #[test]
    fn accuracy_rejects_bad_shapes() -> Result<()> {
        let logits = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
        let t = Tensor::new(&[0u32, 5], &Device::Cpu)?;
        assert!(contrastive_accuracy(&logits, &t, 1).is_err());
        let t = Tensor::new(&[0u32], &Device::Cpu)?;
        assert!(contrastive_accuracy(&logits, &t, 1).is_err());
        Ok(())
    }
}
