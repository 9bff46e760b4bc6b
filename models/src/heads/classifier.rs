//! Multi-label classification head: the encoder's pooled vector → an MLP (one layer = linear
//! probe) → 10 logits `[Deformation, Mogi, Dyke, Sill, Spheroid, Earthquake, Unidentified,
//! Low, Medium, High]` (docs/architecture.md §2.1), trained with the numerically stable BCE-with-logits
//! (optionally per-class positive weights) or the sigmoid focal loss.
//!
//! An optional mask head (`mask_head`), a 1×1 convolution on C5, predicts per C5 cell the
//! share of deformation pixels. It is an auxiliary training signal only: it tells the
//! encoder *where* the pattern is, which the frame-level labels never say; the scores do
//! not use it.
//!
//! Variables: `encoder.*`, `classifier.layers.{i}.{weight,bias}`, and with the mask head
//! `classifier.mask.{weight,bias}`.

use candle_core::{DType, Module, ModuleT, Result, Tensor};
use candle_nn::{conv2d, Conv2d, Conv2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};

use super::{is_trainable, EncoderMode};
use crate::encoder::{EncoderConfig, EncoderOutput, ResNet};
use crate::nn::{
    bce_with_logits, global_max_pool, mlp, sigmoid_focal_loss, Activation, Mlp, MlpConfig,
};

/// Length of the Hephaestus multi-label vector.
pub const NUM_LABELS: usize = 10;

/// Training loss of the classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClassifierLoss {
    /// Mean binary cross-entropy with logits over batch × labels.
    #[default]
    Bce,
    /// Sigmoid focal loss (Lin et al. 2017): `γ` (2 in the paper) and optional `α`.
    Focal {
        #[serde(default = "default_gamma")]
        gamma: f64,
        #[serde(default)]
        alpha: Option<f64>,
    },
}

fn default_gamma() -> f64 {
    2.0
}

/// How the C5 feature map becomes the head's input vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GlobalPool {
    /// Global average (the encoder's pooled vector; ImageNet-style classification).
    #[default]
    Avg,
    /// Global maximum: a small pattern anywhere in the frame (a deformation covering 2 % of
    /// it) is not diluted by the rest of the frame.
    Max,
    /// Average and maximum concatenated (twice the width).
    AvgMax,
}

impl GlobalPool {
    /// Width of the pooled vector of a `channels`-wide feature map.
    pub fn width(self, channels: usize) -> usize {
        match self {
            GlobalPool::AvgMax => 2 * channels,
            GlobalPool::Avg | GlobalPool::Max => channels,
        }
    }

    /// The pooled vector `(B, width)` of an encoder's output (its C5 map).
    pub fn apply(self, enc: &EncoderOutput) -> Result<Tensor> {
        let c5 = &enc.features[3];
        match self {
            GlobalPool::Avg => Ok(enc.pooled.clone()),
            GlobalPool::Max => global_max_pool(c5),
            GlobalPool::AvgMax => Tensor::cat(&[&enc.pooled, &global_max_pool(c5)?], 1),
        }
    }
}

/// Architecture and loss of a [`Classifier`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    pub encoder: EncoderConfig,
    /// Hidden widths of the head MLP; empty (the default) is a single linear layer.
    #[serde(default)]
    pub hidden: Vec<usize>,
    #[serde(default = "default_num_labels")]
    pub num_labels: usize,
    #[serde(default = "default_mode")]
    pub mode: EncoderMode,
    #[serde(default)]
    pub loss: ClassifierLoss,
    /// Per-label weight of the positive term of the BCE (PyTorch's `pos_weight`), e.g.
    /// negatives/positives per label for rare labels. Ignored by the focal loss.
    #[serde(default)]
    pub pos_weight: Option<Vec<f64>>,
    /// Pooling of C5 into the head input (runs saved before this option: `avg`).
    #[serde(default)]
    pub pool: GlobalPool,
    /// Adds the auxiliary mask head (trained with [`Classifier::mask_loss`]).
    #[serde(default)]
    pub mask_head: bool,
}

fn default_num_labels() -> usize {
    NUM_LABELS
}

fn default_mode() -> EncoderMode {
    EncoderMode::Linear
}

impl ClassifierConfig {
    /// A linear probe on `encoder` with the BCE loss.
    pub fn new(encoder: EncoderConfig) -> Self {
        Self {
            encoder,
            hidden: Vec::new(),
            num_labels: NUM_LABELS,
            mode: EncoderMode::Linear,
            loss: ClassifierLoss::Bce,
            pos_weight: None,
            pool: GlobalPool::Avg,
            mask_head: false,
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        self.encoder.validate()?;
        if self.num_labels == 0 || self.hidden.contains(&0) {
            return Err(format!(
                "classifier widths must be positive: labels {}, hidden {:?}",
                self.num_labels, self.hidden
            ));
        }
        if let Some(w) = &self.pos_weight {
            if w.len() != self.num_labels || w.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(format!(
                    "pos_weight needs {} finite non-negative values, got {w:?}",
                    self.num_labels
                ));
            }
        }
        if let ClassifierLoss::Focal { gamma, alpha } = self.loss {
            if gamma.is_nan() || gamma < 0.0 || alpha.is_some_and(|a| !(0.0..=1.0).contains(&a)) {
                return Err(format!(
                    "focal loss needs gamma ≥ 0 and alpha in [0, 1], got {gamma}, {alpha:?}"
                ));
            }
        }
        Ok(())
    }
}

/// Encoder + multi-label head.
#[derive(Debug, Clone)]
pub struct Classifier {
    encoder: ResNet,
    head: Mlp,
    mask_head: Option<Conv2d>,
    cfg: ClassifierConfig,
}

impl Classifier {
    /// Builds the model on `vb` (root of the `VarMap`): `encoder.*` and `classifier.*`.
    pub fn new(cfg: &ClassifierConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let encoder = ResNet::new(&cfg.encoder, vb.pp("encoder"))?;
        let mut dims = vec![cfg.pool.width(cfg.encoder.out_dim())];
        dims.extend_from_slice(&cfg.hidden);
        dims.push(cfg.num_labels);
        let head = mlp(
            &MlpConfig {
                dims,
                activation: Activation::Relu,
                batch_norm: false,
            },
            vb.pp("classifier"),
        )?;
        let mask_head = if cfg.mask_head {
            let c5 = cfg.encoder.out_dim();
            Some(conv2d(
                c5,
                1,
                1,
                Conv2dConfig::default(),
                vb.pp("classifier.mask"),
            )?)
        } else {
            None
        };
        Ok(Self {
            encoder,
            head,
            mask_head,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ClassifierConfig {
        &self.cfg
    }

    pub fn encoder(&self) -> &ResNet {
        &self.encoder
    }

    /// Changes which encoder stages train (e.g. a linear probe, then fine-tuning).
    pub fn set_mode(&mut self, mode: EncoderMode) {
        self.cfg.mode = mode;
    }

    /// Whether the variable `name` of this model's `VarMap` is trained in the current mode.
    pub fn is_trainable(&self, name: &str) -> bool {
        is_trainable(name, self.cfg.mode)
    }

    /// Logits `(B, num_labels)` for images `(B, in_channels, H, W)`. Frozen stages run in
    /// evaluation mode whatever `train` says.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward_with_mask_t(x, train, false)?.0)
    }

    /// Whether the model has the auxiliary mask head.
    pub fn has_mask_head(&self) -> bool {
        self.mask_head.is_some()
    }

    /// Logits `(B, num_labels)` and, when `with_mask` and the model has a mask head, the
    /// mask logits `(B, 1, h5, w5)` on the C5 grid, from one encoder pass.
    pub fn forward_with_mask_t(
        &self,
        x: &Tensor,
        train: bool,
        with_mask: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let enc = self.cfg.mode.encode(&self.encoder, x, train)?;
        let c5 = &enc.features[3];
        let mask = match &self.mask_head {
            Some(conv) if with_mask => Some(conv.forward(c5)?),
            _ => None,
        };
        let pooled = self.cfg.pool.apply(&enc)?;
        Ok((self.head.forward_t(&pooled, train)?, mask))
    }

    /// Mean BCE-with-logits of mask logits `(B, 1, h, w)` against the share of deformation
    /// pixels in each cell (same shape, values in [0, 1]).
    pub fn mask_loss(mask_logits: &Tensor, cell_shares: &Tensor) -> Result<Tensor> {
        bce_with_logits(mask_logits, cell_shares, None)
    }

    /// Sigmoid probabilities `(B, num_labels)` in evaluation mode.
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::sigmoid(&self.forward_t(x, false)?.detach())
    }

    /// The configured loss of `logits` against `targets` (same shape, values in [0, 1]).
    pub fn loss(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (_, n) = logits.dims2()?;
        if n != self.cfg.num_labels {
            candle_core::bail!(
                "classifier loss: {n} logits per sample for {} labels",
                self.cfg.num_labels
            )
        }
        match self.cfg.loss {
            ClassifierLoss::Bce => match &self.cfg.pos_weight {
                None => bce_with_logits(logits, targets, None),
                Some(w) => {
                    let w = Tensor::from_slice(w, w.len(), logits.device())?
                        .to_dtype(logits.dtype())?;
                    bce_with_logits(logits, targets, Some(&w))
                }
            },
            ClassifierLoss::Focal { gamma, alpha } => {
                sigmoid_focal_loss(logits, targets, gamma, alpha)
            }
        }
    }
}

/// Thresholds probabilities `(B, L)` at `threshold` into 0/1 rows.
pub fn threshold_predictions(probs: &Tensor, threshold: f64) -> Result<Vec<Vec<u8>>> {
    let p: Vec<Vec<f32>> = probs.to_dtype(DType::F32)?.to_vec2()?;
    Ok(p.into_iter()
        .map(|row| {
            row.into_iter()
                .map(|v| u8::from(v as f64 >= threshold))
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::testing::{blob_dataset, snapshot, train_steps};
    use crate::heads::Stage;
    use crate::nn::check::{gradient_gaps, is_running_statistic, seeded_randn};
    use crate::nn::seeded_var_builder;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn build(cfg: &ClassifierConfig, seed: u64) -> (VarMap, Classifier) {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let model = Classifier::new(cfg, vb).unwrap();
        (varmap, model)
    }

    fn input(b: usize, s: usize, seed: u64) -> Tensor {
        seeded_randn((b, 2, s, s), seed, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    }

    #[test]
    fn config_serde_and_validation() {
        let mut cfg = ClassifierConfig::new(EncoderConfig::tiny());
        cfg.loss = ClassifierLoss::Focal {
            gamma: 2.0,
            alpha: Some(0.25),
        };
        cfg.hidden = vec![64];
        cfg.mode = EncoderMode::Finetune {
            unfreeze_from: Stage::Layer3,
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(
            serde_json::from_str::<ClassifierConfig>(&json).unwrap(),
            cfg
        );
        // Defaults: linear probe, BCE, 10 labels.
        let enc = serde_json::to_string(&EncoderConfig::tiny()).unwrap();
        let min: ClassifierConfig =
            serde_json::from_str(&format!(r#"{{"encoder":{enc}}}"#)).unwrap();
        assert_eq!(min, ClassifierConfig::new(EncoderConfig::tiny()));
        let mut bad = ClassifierConfig::new(EncoderConfig::tiny());
        bad.pos_weight = Some(vec![1.0; 3]);
        assert!(bad.validate().unwrap_err().contains("pos_weight"));
        bad.pos_weight = None;
        bad.loss = ClassifierLoss::Focal {
            gamma: -1.0,
            alpha: None,
        };
        assert!(bad.validate().is_err());
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        assert!(Classifier::new(&bad, vb).is_err());
    }

    #[test]
    fn shapes_names_and_wrong_input() -> Result<()> {
        let mut cfg = ClassifierConfig::new(EncoderConfig::tiny());
        cfg.hidden = vec![32];
        let (varmap, model) = build(&cfg, 1);
        let logits = model.forward_t(&input(3, 32, 2), false)?;
        assert_eq!(logits.dims(), &[3, NUM_LABELS]);
        let p = model.predict(&input(3, 32, 2))?;
        let p: Vec<Vec<f32>> = p.to_vec2()?;
        assert!(p.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
        let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        for n in [
            "encoder.conv1.weight",
            "classifier.layers.0.weight",
            "classifier.layers.1.bias",
        ] {
            assert!(names.iter().any(|k| k == n), "{n} missing");
        }
        // Three channels for a two-channel encoder: a clear error, not a panic.
        let bad = seeded_randn((1, 3, 32, 32), 0, &Device::Cpu)?.to_dtype(DType::F32)?;
        let err = model.forward_t(&bad, false).unwrap_err().to_string();
        assert!(err.contains("(batch, 2, height, width)"), "{err}");
        let targets = Tensor::zeros((3, 4), DType::F32, &Device::Cpu)?;
        assert!(model.loss(&logits, &targets).is_err());
        // No mask head: no mask logits, and no mask variables.
        assert!(model
            .forward_with_mask_t(&input(3, 32, 2), false, true)?
            .1
            .is_none());
        assert!(!names.iter().any(|k| k.starts_with("classifier.mask")));
        // With one: a logit per C5 cell, the same scores, the mask variables.
        cfg.mask_head = true;
        let (varmap, with_mask) = build(&cfg, 1);
        let (same, mask) = with_mask.forward_with_mask_t(&input(3, 32, 2), false, true)?;
        assert_eq!(mask.unwrap().dims(), &[3, 1, 1, 1]);
        let d = (&same - &with_mask.forward_t(&input(3, 32, 2), false)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        for n in ["classifier.mask.weight", "classifier.mask.bias"] {
            assert!(names.iter().any(|k| k == n), "{n} missing");
        }
        Ok(())
    }

    #[test]
    fn every_trainable_variable_gets_a_gradient() -> Result<()> {
        let targets = Tensor::from_vec(
            (0..2 * NUM_LABELS)
                .map(|i| (i % 3 == 0) as u8 as f32)
                .collect::<Vec<_>>(),
            (2, NUM_LABELS),
            &Device::Cpu,
        )?;
        for ((mode, loss, hidden), pool) in [
            (EncoderMode::default(), ClassifierLoss::Bce, vec![16]),
            (
                EncoderMode::Finetune {
                    unfreeze_from: Stage::Layer2,
                },
                ClassifierLoss::Focal {
                    gamma: 2.0,
                    alpha: Some(0.25),
                },
                vec![],
            ),
            (EncoderMode::Linear, ClassifierLoss::Bce, vec![]),
        ]
        .into_iter()
        .zip([GlobalPool::AvgMax, GlobalPool::Max, GlobalPool::Avg])
        {
            let mut cfg = ClassifierConfig::new(EncoderConfig::tiny());
            cfg.pool = pool;
            cfg.mode = mode;
            cfg.loss = loss;
            cfg.hidden = hidden;
            cfg.pos_weight = Some((0..NUM_LABELS).map(|i| 1.0 + i as f64).collect());
            // The fine-tuned case trains the auxiliary mask head too.
            cfg.mask_head = pool == GlobalPool::AvgMax;
            let (varmap, model) = build(&cfg, 3);
            let (logits, mask) = model.forward_with_mask_t(&input(2, 32, 4), true, true)?;
            let mut loss = model.loss(&logits, &targets)?;
            assert_eq!(mask.is_some(), cfg.mask_head);
            if let Some(mask) = mask {
                let shares = candle_nn::ops::sigmoid(&seeded_randn(mask.dims(), 9, &Device::Cpu)?)?
                    .to_dtype(DType::F32)?;
                loss = (loss + Classifier::mask_loss(&mask, &shares)?)?;
            }
            let grads = loss.backward()?;
            let gaps = gradient_gaps(&varmap, &grads, |n| model.is_trainable(n))?;
            assert!(gaps.is_empty(), "{mode:?}: no gradient for {gaps:?}");
            // Frozen variables get none at all (no wasted backward work).
            for (name, var) in varmap.data().lock().unwrap().iter() {
                if !model.is_trainable(name) && !is_running_statistic(name) {
                    assert!(grads.get(var.as_tensor()).is_none(), "{mode:?}: {name}");
                }
            }
        }
        Ok(())
    }

    /// Fine-tuning fits a small synthetic multi-label set perfectly.
    #[test]
    fn finetuning_overfits_a_tiny_set() -> Result<()> {
        let data = blob_dataset(16, 32, 7)?;
        let mut cfg = ClassifierConfig::new(EncoderConfig::tiny());
        cfg.mode = EncoderMode::default();
        let (varmap, model) = build(&cfg, 11);
        let loss_at = |m: &Classifier| -> Result<f32> {
            m.loss(&m.forward_t(&data.images, false)?, &data.labels)?
                .to_scalar::<f32>()
        };
        let initial = loss_at(&model)?;
        train_steps(
            &varmap,
            |n| model.is_trainable(n),
            3e-3,
            60,
            || model.loss(&model.forward_t(&data.images, true)?, &data.labels),
        )?;
        let final_loss = loss_at(&model)?;
        let pred = threshold_predictions(&model.predict(&data.images)?, 0.5)?;
        let truth = threshold_predictions(&data.labels, 0.5)?;
        assert_eq!(pred, truth, "loss {initial} → {final_loss}");
        assert!(final_loss < 0.1 * initial, "loss {initial} → {final_loss}");
        Ok(())
    }

    /// A linear probe trains the head only: every encoder variable, running statistics
    /// included, is bit-identical afterwards, even when the optimizer is handed all of them.
    #[test]
    fn linear_probe_leaves_the_encoder_unchanged() -> Result<()> {
        let data = blob_dataset(8, 32, 3)?;
        let (varmap, model) = build(&ClassifierConfig::new(EncoderConfig::tiny()), 5);
        let before = snapshot(&varmap)?;
        let first = model
            .loss(&model.forward_t(&data.images, true)?, &data.labels)?
            .to_scalar::<f32>()?;
        train_steps(
            &varmap,
            |_| true,
            1e-2,
            10,
            || model.loss(&model.forward_t(&data.images, true)?, &data.labels),
        )?;
        let after = snapshot(&varmap)?;
        let last = model
            .loss(&model.forward_t(&data.images, true)?, &data.labels)?
            .to_scalar::<f32>()?;
        let mut head_moved = false;
        for (name, v) in &before {
            if name.starts_with("encoder.") {
                assert_eq!(v, &after[name], "{name} changed");
            } else {
                head_moved |= v != &after[name];
            }
        }
        assert!(head_moved, "the head did not train");
        assert!(last < first, "loss {first} → {last}");
        Ok(())
    }

    /// The documented naming contract: a SimCLR model's `encoder.*` variables cover the
    /// classifier's encoder exactly and, copied by name, give the same encoder.
    #[test]
    fn simclr_encoder_weights_load_by_name() -> Result<()> {
        use crate::encoder::{SimClr, SimClrConfig};
        let sim_vm = VarMap::new();
        let sim = SimClr::new(
            &SimClrConfig::new(EncoderConfig::tiny()),
            seeded_var_builder(&sim_vm, 1, DType::F32, &Device::Cpu),
        )?;
        let (vm, model) = build(&ClassifierConfig::new(EncoderConfig::tiny()), 2);
        let x = input(2, 32, 3);
        let before = model.encoder().forward_t(&x, false)?.pooled;
        let mut target = vm.clone();
        let mut copied = 0;
        for (name, var) in sim_vm.data().lock().unwrap().iter() {
            if name.starts_with("encoder.") {
                target.set_one(name, var.as_tensor())?;
                copied += 1;
            }
        }
        let ours = vm
            .data()
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("encoder."))
            .count();
        assert_eq!(copied, ours);
        let a = model.encoder().forward_t(&x, false)?.pooled;
        let b = sim.encoder().forward_t(&x, false)?.pooled;
        let d = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        let moved = (&a - &before)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(moved > 0.0, "the copy changed nothing");
        Ok(())
    }
}
