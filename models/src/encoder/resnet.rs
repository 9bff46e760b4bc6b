//! ResNet encoders (He et al. 2016; torchvision layout and initialisation) returning the
//! pooled vector and the C2–C5 feature maps. Variable names: see the [module docs](super).

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

use super::{BlockKind, EncoderConfig};
use crate::nn::{
    add_relu, batch_norm, conv2d, conv2d_im2col, conv2d_on_data, global_avg_pool, max_pool2d,
    max_pool2d_composed, BatchNorm, BatchNormOptions, MaxPool2dConfig, KAIMING_NORMAL_FAN_OUT,
};

/// Output of [`ResNet::forward_t`].
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// Global-average-pooled C5, `(B, out_dim)`.
    pub pooled: Tensor,
    /// `[C2, C3, C4, C5]`: outputs of `layer1..layer4`, `(B, C_i, ⌈H/s⌉, ⌈W/s⌉)` for
    /// strides 4, 8, 16, 32.
    pub features: [Tensor; 4],
}

/// Implementation of the stem's 3×3/stride-2 max pool (for benchmarks; results are equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StemPool {
    /// [`max_pool2d`]: the custom CPU kernel with its backward (composed form elsewhere).
    #[default]
    Kernel,
    /// [`max_pool2d_composed`]: maximum of 9 shifted views (the usual Candle workaround).
    ShiftedViews,
}

fn conv(
    in_c: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    conv2d(in_c, out_c, k, cfg, false, KAIMING_NORMAL_FAN_OUT, vb)
}

/// Conv → BN pair of a projection shortcut (`downsample.0`, `downsample.1`).
#[derive(Debug, Clone)]
struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

#[derive(Debug, Clone)]
struct Block {
    /// `(conv, bn)` in order; ReLU between them, the last one's output is added to the
    /// shortcut before the final ReLU.
    convs: Vec<(Conv2d, BatchNorm)>,
    downsample: Option<Downsample>,
}

impl Block {
    fn new(
        kind: BlockKind,
        in_c: usize,
        planes: usize,
        stride: usize,
        cfg: &EncoderConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let bn_opts = |last: bool| BatchNormOptions {
            eps: cfg.bn_eps,
            momentum: cfg.bn_momentum,
            zero_init_weight: last && cfg.zero_init_residual,
        };
        let out_c = planes * kind.expansion();
        // (in, out, kernel, stride) of each convolution.
        let shapes: Vec<(usize, usize, usize, usize)> = match kind {
            BlockKind::Basic => vec![(in_c, planes, 3, stride), (planes, planes, 3, 1)],
            BlockKind::Bottleneck => vec![
                (in_c, planes, 1, 1),
                (planes, planes, 3, stride),
                (planes, out_c, 1, 1),
            ],
        };
        let n = shapes.len();
        let mut convs = Vec::with_capacity(n);
        for (i, (ci, co, k, s)) in shapes.into_iter().enumerate() {
            let c = conv(ci, co, k, s, k / 2, vb.pp(format!("conv{}", i + 1)))?;
            let b = batch_norm(co, bn_opts(i + 1 == n), vb.pp(format!("bn{}", i + 1)))?;
            convs.push((c, b));
        }
        let downsample = if stride != 1 || in_c != out_c {
            Some(Downsample {
                conv: conv(in_c, out_c, 1, stride, 0, vb.pp("downsample.0"))?,
                bn: batch_norm(out_c, bn_opts(false), vb.pp("downsample.1"))?,
            })
        } else {
            None
        };
        Ok(Self { convs, downsample })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.convs.len() - 1;
        for (i, (c, bn)) in self.convs.iter().enumerate() {
            let z = conv2d_im2col(c, &h)?;
            h = if i < last {
                bn.forward_relu_t(&z, train)?
            } else {
                bn.forward_t(&z, train)?
            };
        }
        let shortcut = match &self.downsample {
            Some(d) => d.bn.forward_t(&conv2d_im2col(&d.conv, x)?, train)?,
            None => x.clone(),
        };
        add_relu(&h, &shortcut)
    }
}

/// A ResNet without its classifier: stem (conv k×k/2 → BN → ReLU → max-pool 3×3/2), four
/// residual stages, global average pooling.
#[derive(Debug, Clone)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    stages: [Vec<Block>; 4],
    cfg: EncoderConfig,
    stem_pool: StemPool,
}

impl ResNet {
    /// Builds the encoder on `vb` (use [`crate::nn::seeded_var_builder`] for reproducible
    /// initialisation): Kaiming-normal fan-out convolutions, BN weight 1 / bias 0 (0 for the
    /// last BN of each block with `zero_init_residual`).
    pub fn new(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let k = cfg.stem_kernel;
        let conv1 = conv(cfg.in_channels, cfg.stem_width, k, 2, k / 2, vb.pp("conv1"))?;
        let bn_opts = BatchNormOptions {
            eps: cfg.bn_eps,
            momentum: cfg.bn_momentum,
            zero_init_weight: false,
        };
        let bn1 = batch_norm(cfg.stem_width, bn_opts, vb.pp("bn1"))?;
        let mut in_c = cfg.stem_width;
        let mut stages: [Vec<Block>; 4] = Default::default();
        for (s, stage) in stages.iter_mut().enumerate() {
            let stride = if s == 0 { 1 } else { 2 };
            let vb_stage = vb.pp(format!("layer{}", s + 1));
            for j in 0..cfg.layers[s] {
                let block_stride = if j == 0 { stride } else { 1 };
                stage.push(Block::new(
                    cfg.block,
                    in_c,
                    cfg.widths[s],
                    block_stride,
                    cfg,
                    vb_stage.pp(j),
                )?);
                in_c = cfg.widths[s] * cfg.block.expansion();
            }
        }
        Ok(Self {
            conv1,
            bn1,
            stages,
            cfg: cfg.clone(),
            stem_pool: StemPool::default(),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    pub fn out_dim(&self) -> usize {
        self.cfg.out_dim()
    }

    /// Chooses the stem max-pool implementation (benchmarks only; outputs are identical).
    pub fn set_stem_pool(&mut self, pool: StemPool) {
        self.stem_pool = pool;
    }

    /// Encodes `x` `(B, in_channels, H, W)`. `train` selects BatchNorm's mode: batch
    /// statistics (and running-stat updates) in training, running statistics in evaluation.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<EncoderOutput> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != self.cfg.in_channels {
            candle_core::bail!(
                "encoder expects (batch, {}, height, width) input, got {:?}",
                self.cfg.in_channels,
                x.shape()
            )
        }
        // In training the input is data: skip computing its (unused) gradient (see
        // `conv2d_on_data`). Evaluation keeps candle's tiled convolution, whose memory does
        // not grow with the batch the way the unfolded patches do.
        let stem = if train {
            conv2d_on_data(&self.conv1, x)?
        } else {
            self.conv1.forward(x)?
        };
        let h = self.bn1.forward_relu_t(&stem, train)?;
        let mut h = match self.stem_pool {
            StemPool::Kernel => max_pool2d(&h, MaxPool2dConfig::RESNET_STEM)?,
            StemPool::ShiftedViews => max_pool2d_composed(&h, MaxPool2dConfig::RESNET_STEM)?,
        };
        let mut features = Vec::with_capacity(4);
        for stage in &self.stages {
            for block in stage {
                h = block.forward_t(&h, train)?;
            }
            features.push(h.clone());
        }
        let pooled = global_avg_pool(&h)?;
        let features: [Tensor; 4] = features
            .try_into()
            .map_err(|_| candle_core::Error::Msg("encoder: expected four stages".into()))?;
        Ok(EncoderOutput { pooled, features })
    }
}

impl ResNet {
    /// Number of freezable stages: the stem (`conv1`, `bn1`) and `layer1..layer4`.
    pub const STAGES: usize = 5;

    /// [`ResNet::forward_t`] with the first `frozen` of the [`ResNet::STAGES`] stages (stem,
    /// `layer1`, …, `layer4`) frozen: they run with BatchNorm in evaluation mode (running
    /// statistics, which they do not update) and their output is detached, so the backward
    /// pass stops there and costs nothing for them. The remaining stages run in mode `train`.
    /// `frozen = 0` is `forward_t`; `frozen = 5` is a fully frozen encoder (linear probe),
    /// whose outputs carry no graph at all.
    pub fn forward_frozen_t(
        &self,
        x: &Tensor,
        frozen: usize,
        train: bool,
    ) -> Result<EncoderOutput> {
        if frozen == 0 {
            return self.forward_t(x, train);
        }
        if frozen > Self::STAGES {
            candle_core::bail!("encoder: cannot freeze {frozen} of {} stages", Self::STAGES)
        }
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != self.cfg.in_channels {
            candle_core::bail!(
                "encoder expects (batch, {}, height, width) input, got {:?}",
                self.cfg.in_channels,
                x.shape()
            )
        }
        // The stem is frozen here (frozen ≥ 1): evaluation mode, plain convolution.
        let h = self.bn1.forward_t(&self.conv1.forward(x)?, false)?.relu()?;
        let h = match self.stem_pool {
            StemPool::Kernel => max_pool2d(&h, MaxPool2dConfig::RESNET_STEM)?,
            StemPool::ShiftedViews => max_pool2d_composed(&h, MaxPool2dConfig::RESNET_STEM)?,
        };
        let mut h = h.detach();
        let mut features = Vec::with_capacity(4);
        for (s, stage) in self.stages.iter().enumerate() {
            let stage_frozen = s + 1 < frozen;
            for block in stage {
                h = block.forward_t(&h, train && !stage_frozen)?;
            }
            if stage_frozen {
                h = h.detach();
            }
            features.push(h.clone());
        }
        let pooled = global_avg_pool(&h)?;
        let features: [Tensor; 4] = features
            .try_into()
            .map_err(|_| candle_core::Error::Msg("encoder: expected four stages".into()))?;
        Ok(EncoderOutput { pooled, features })
    }
}

impl ModuleT for ResNet {
    /// The pooled vector only.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(ResNet::forward_t(self, x, train)?.pooled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::{gradient_gaps, is_running_statistic, random_projection, seeded_randn};
    use crate::nn::seeded_var_builder;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn build(cfg: &EncoderConfig, seed: u64) -> (VarMap, ResNet) {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let net = ResNet::new(cfg, vb).unwrap();
        (varmap, net)
    }

    fn input(b: usize, c: usize, s: usize, seed: u64) -> Tensor {
        seeded_randn((b, c, s, s), seed, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    }

    fn param_count(varmap: &VarMap) -> usize {
        varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| !is_running_statistic(k))
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    #[test]
    fn parameter_counts_match_torchvision() {
        // torchvision resnet18/34/50 minus fc (512·1000+1000 / 2048·1000+1000), with a
        // 2-channel stem instead of 3 (64·49 fewer weights).
        let stem_diff = 64 * 49;
        let cases = [
            (EncoderConfig::resnet18(), 11_689_512 - 513_000 - stem_diff),
            (EncoderConfig::resnet34(), 21_797_672 - 513_000 - stem_diff),
            (
                EncoderConfig::resnet50(),
                25_557_032 - 2_049_000 - stem_diff,
            ),
        ];
        for (cfg, expected) in cases {
            let (varmap, _) = build(&cfg, 0);
            assert_eq!(param_count(&varmap), expected, "{cfg:?}");
        }
        let (varmap, _) = build(&EncoderConfig::tiny(), 0);
        let n = param_count(&varmap);
        assert!((200_000..600_000).contains(&n), "tiny has {n} parameters");
    }

    #[test]
    fn torchvision_names() {
        let (varmap, _) = build(&EncoderConfig::resnet50(), 0);
        let data = varmap.data().lock().unwrap();
        for name in [
            "conv1.weight",
            "bn1.running_var",
            "layer1.0.conv3.weight",
            "layer1.0.downsample.0.weight",
            "layer1.0.downsample.1.bias",
            "layer4.2.bn3.weight",
        ] {
            assert!(data.contains_key(name), "{name} missing");
        }
        assert_eq!(data["layer2.0.conv2.weight"].dims(), &[128, 128, 3, 3]);
        assert_eq!(data["conv1.weight"].dims(), &[64, 2, 7, 7]);
        assert!(!data.contains_key("layer1.1.downsample.0.weight"));
    }

    #[test]
    fn feature_shapes_for_every_preset() -> Result<()> {
        for name in EncoderConfig::PRESETS {
            let cfg = EncoderConfig::preset(name).unwrap().with_in_channels(3);
            let (_, net) = build(&cfg, 1);
            // 40 is not a multiple of 32: every stride rounds up like PyTorch's.
            let out = net.forward_t(&input(2, 3, 40, 2), false)?;
            let ch = cfg.feature_channels();
            let sizes = [10, 5, 3, 2];
            for i in 0..4 {
                assert_eq!(
                    out.features[i].dims(),
                    &[2, ch[i], sizes[i], sizes[i]],
                    "{name} C{}",
                    i + 2
                );
            }
            assert_eq!(out.pooled.dims(), &[2, cfg.out_dim()]);
            assert!(net.forward_t(&input(2, 2, 40, 2), false).is_err());
        }
        Ok(())
    }

    #[test]
    fn every_trainable_variable_gets_a_gradient_for_every_preset() -> Result<()> {
        for name in EncoderConfig::PRESETS {
            let cfg = EncoderConfig::preset(name).unwrap();
            let (varmap, net) = build(&cfg, 3);
            let out = net.forward_t(&input(2, 2, 32, 4), true)?;
            // Use every output so that every stage's gradient is checked.
            let mut loss = random_projection(&out.pooled, 5)?;
            for (i, f) in out.features.iter().enumerate() {
                loss = (loss + random_projection(f, 6 + i as u64)?)?;
            }
            let grads = loss.backward()?;
            let gaps = gradient_gaps(&varmap, &grads, |n| !is_running_statistic(n))?;
            assert!(gaps.is_empty(), "{name}: no gradient for {gaps:?}");
        }
        Ok(())
    }

    #[test]
    fn eval_mode_uses_running_statistics() -> Result<()> {
        let (varmap, net) = build(&EncoderConfig::tiny(), 5);
        let x = input(4, 2, 32, 6);
        let first = net.forward_t(&x, false)?.pooled;
        // Eval is deterministic and does not depend on the batch composition.
        let single = net.forward_t(&x.narrow(0, 0, 1)?, false)?.pooled;
        let diff = (first.narrow(0, 0, 1)? - &single)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "eval output depends on the batch: {diff}");
        // Training mode changes the running stats, hence the eval output, and differs from it.
        let train_out = net.forward_t(&x, true)?.pooled;
        let after = net.forward_t(&x, false)?.pooled;
        let moved = (&first - &after)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(moved > 1e-6, "running statistics did not move");
        let vs_train = (&train_out - &after)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(vs_train > 1e-4);
        let rm: Vec<f32> = varmap.data().lock().unwrap()["bn1.running_mean"]
            .as_tensor()
            .to_vec1()?;
        assert!(rm.iter().any(|v| *v != 0.0));
        // Batch-stat training on one image with a 1×1 C5 is refused, not silently wrong.
        assert!(net.forward_t(&input(1, 2, 32, 1), true).is_err());
        Ok(())
    }

    #[test]
    fn initialisation_is_seeded_and_torchvision_like() -> Result<()> {
        let (a, net_a) = build(&EncoderConfig::tiny(), 9);
        let (_, net_b) = build(&EncoderConfig::tiny(), 9);
        let x = input(2, 2, 32, 1);
        let ya: Vec<f32> = net_a
            .forward_t(&x, false)?
            .pooled
            .flatten_all()?
            .to_vec1()?;
        let yb: Vec<f32> = net_b
            .forward_t(&x, false)?
            .pooled
            .flatten_all()?
            .to_vec1()?;
        assert_eq!(ya, yb);
        let data = a.data().lock().unwrap();
        // Kaiming normal, fan-out, ReLU gain: std √(2 / (out·k·k)).
        let w: Vec<f32> = data["layer3.0.conv2.weight"]
            .as_tensor()
            .flatten_all()?
            .to_vec1()?;
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        let expected = (2.0f32 / (64.0 * 9.0)).sqrt();
        assert!((std / expected - 1.0).abs() < 0.05, "{std} vs {expected}");
        let g: Vec<f32> = data["layer3.0.bn2.weight"].as_tensor().to_vec1()?;
        assert!(g.iter().all(|v| *v == 1.0));
        drop(data);

        let mut cfg = EncoderConfig::tiny();
        cfg.zero_init_residual = true;
        let (z, net) = build(&cfg, 9);
        let data = z.data().lock().unwrap();
        let g: Vec<f32> = data["layer3.0.bn2.weight"].as_tensor().to_vec1()?;
        assert!(g.iter().all(|v| *v == 0.0));
        let g1: Vec<f32> = data["layer3.0.bn1.weight"].as_tensor().to_vec1()?;
        assert!(g1.iter().all(|v| *v == 1.0));
        drop(data);
        // Zero-initialised γ still receives a gradient (it is what starts the branch).
        let out = net.forward_t(&x, true)?;
        let grads = random_projection(&out.pooled, 1)?.backward()?;
        let gaps = gradient_gaps(&z, &grads, |n| n.ends_with("bn2.weight"))?;
        assert!(gaps.is_empty(), "{gaps:?}");
        Ok(())
    }

    #[test]
    fn kernel_and_shifted_view_stem_pools_agree() -> Result<()> {
        let (varmap, mut net) = build(&EncoderConfig::tiny(), 2);
        let x = input(2, 2, 48, 3);
        let a = net.forward_t(&x, false)?.pooled;
        let ga = random_projection(&a, 1)?.backward()?;
        net.set_stem_pool(StemPool::ShiftedViews);
        let b = net.forward_t(&x, false)?.pooled;
        let gb = random_projection(&b, 1)?.backward()?;
        let d = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        let w = varmap.data().lock().unwrap()["conv1.weight"].clone();
        let d = (ga.get(w.as_tensor()).unwrap() - gb.get(w.as_tensor()).unwrap())?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-4, "stem gradient differs by {d}");
        Ok(())
    }
}
