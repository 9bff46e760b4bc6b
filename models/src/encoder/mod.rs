//! The shared image encoder (ResNet-18/34/50 and a tiny CPU variant) and its contrastive
//! pretraining heads (SimCLR, MoCo v2).
//!
//! # Variable names
//!
//! The encoder's variables follow torchvision's `ResNet` state dict (minus `fc` and
//! `num_batches_tracked`), relative to the prefix of the `VarBuilder` it is built on
//! (`encoder.` in the contrastive models):
//!
//! ```text
//! conv1.weight                                   stem conv, (stem_width, in_channels, k, k)
//! bn1.{weight,bias,running_mean,running_var}
//! layer{1..4}.{j}.conv1.weight, bn1.*            BasicBlock: 3×3 → 3×3
//! layer{1..4}.{j}.conv2.weight, bn2.*            Bottleneck: 1×1 → 3×3 (stride here) → 1×1
//! layer{1..4}.{j}.conv3.weight, bn3.*            (Bottleneck only)
//! layer{1..4}.0.downsample.0.weight              1×1 projection shortcut, when shape changes
//! layer{1..4}.0.downsample.1.*                   its BatchNorm
//! ```
//!
//! So a torchvision checkpoint converted to safetensors (with `conv1.weight` adapted to the
//! input channels) loads into an `encoder.`-prefixed `VarMap` by renaming keys only.
//!
//! The contrastive models add `projector.layers.{0,1}.*` (SimCLR/MoCo projection MLP) and,
//! for MoCo, `momentum.encoder.*`, `momentum.projector.*` (the key encoder, an EMA of the
//! online one) and `moco.queue`, `moco.queue_ptr`. None of the `momentum.*`/`moco.*`
//! variables or the BatchNorm running statistics receive gradients; see
//! [`is_trainable_name`].

pub mod moco;
pub mod resnet;
pub mod simclr;

use serde::{Deserialize, Serialize};

pub use moco::{MoCo, MoCoConfig, MoCoOutput};
pub use resnet::{EncoderOutput, ResNet, StemPool};
pub use simclr::{
    contrastive_accuracy, nt_xent, ContrastiveOutput, ProjectionConfig, SimClr, SimClrConfig,
};

/// Residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34); expansion 1.
    Basic,
    /// 1×1 → 3×3 → 1×1 (ResNet-50+); expansion 4, stride on the 3×3 (torchvision v1.5).
    Bottleneck,
}

impl BlockKind {
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// Architecture of a [`ResNet`] encoder. Presets: [`EncoderConfig::preset`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    pub block: BlockKind,
    /// Residual blocks per stage (`layer1..layer4`).
    pub layers: [usize; 4],
    /// Base width ("planes") per stage; a stage outputs `width · expansion` channels.
    pub widths: [usize; 4],
    /// Output channels of the stem convolution.
    pub stem_width: usize,
    /// Stem kernel size (stride 2, padding `k/2`); 7 in torchvision.
    #[serde(default = "default_stem_kernel")]
    pub stem_kernel: usize,
    /// Input channels: 2 for `[phase, coherence]` (docs/architecture.md §2.1), 3 for `[cos φ, sin φ, coh]`.
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// Start the last BatchNorm of every residual block at γ = 0 (each block starts as the
    /// identity; Goyal et al. 2017). Off by default, as in torchvision.
    #[serde(default)]
    pub zero_init_residual: bool,
    #[serde(default = "default_bn_momentum")]
    pub bn_momentum: f64,
    #[serde(default = "default_bn_eps")]
    pub bn_eps: f64,
}

fn default_stem_kernel() -> usize {
    7
}
fn default_in_channels() -> usize {
    2
}
fn default_bn_momentum() -> f64 {
    0.1
}
fn default_bn_eps() -> f64 {
    1e-5
}

impl EncoderConfig {
    /// Names accepted by [`EncoderConfig::preset`].
    pub const PRESETS: [&'static str; 4] = ["tiny", "resnet18", "resnet34", "resnet50"];

    fn standard(block: BlockKind, layers: [usize; 4]) -> Self {
        Self {
            block,
            layers,
            widths: [64, 128, 256, 512],
            stem_width: 64,
            stem_kernel: default_stem_kernel(),
            in_channels: default_in_channels(),
            zero_init_residual: false,
            bn_momentum: default_bn_momentum(),
            bn_eps: default_bn_eps(),
        }
    }

    /// ResNet-18 layout at a quarter of the width with one block per stage (≈0.3 M
    /// parameters, 128-d pooled output): for CPU tests and quick CPU runs at 64–128 px.
    pub fn tiny() -> Self {
        Self {
            widths: [16, 32, 64, 128],
            stem_width: 16,
            ..Self::standard(BlockKind::Basic, [1, 1, 1, 1])
        }
    }

    pub fn resnet18() -> Self {
        Self::standard(BlockKind::Basic, [2, 2, 2, 2])
    }

    pub fn resnet34() -> Self {
        Self::standard(BlockKind::Basic, [3, 4, 6, 3])
    }

    pub fn resnet50() -> Self {
        Self::standard(BlockKind::Bottleneck, [3, 4, 6, 3])
    }

    /// The preset called `name` (one of [`EncoderConfig::PRESETS`]).
    pub fn preset(name: &str) -> Result<Self, String> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "resnet18" => Ok(Self::resnet18()),
            "resnet34" => Ok(Self::resnet34()),
            "resnet50" => Ok(Self::resnet50()),
            other => Err(format!(
                "unknown encoder preset {other:?} (expected one of {})",
                Self::PRESETS.join(", ")
            )),
        }
    }

    pub fn with_in_channels(mut self, in_channels: usize) -> Self {
        self.in_channels = in_channels;
        self
    }

    /// Channels of C2..C5 (outputs of `layer1..layer4`), at strides 4, 8, 16, 32.
    pub fn feature_channels(&self) -> [usize; 4] {
        self.widths.map(|w| w * self.block.expansion())
    }

    /// Width of the pooled output vector (channels of C5).
    pub fn out_dim(&self) -> usize {
        self.feature_channels()[3]
    }

    /// Checks the values a hand-written config could get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.in_channels == 0 || self.stem_width == 0 || self.widths.contains(&0) {
            return Err(format!(
                "encoder widths and channels must be positive: {self:?}"
            ));
        }
        if self.layers.contains(&0) {
            return Err(format!(
                "every encoder stage needs at least one block: {:?}",
                self.layers
            ));
        }
        if self.stem_kernel == 0 || self.stem_kernel % 2 == 0 {
            return Err(format!("stem_kernel must be odd, got {}", self.stem_kernel));
        }
        if !(0.0..=1.0).contains(&self.bn_momentum) || (self.bn_eps.is_nan() || self.bn_eps <= 0.0)
        {
            return Err(format!(
                "bn_momentum must be in [0, 1] and bn_eps > 0, got {} and {}",
                self.bn_momentum, self.bn_eps
            ));
        }
        Ok(())
    }
}

/// Whether the variable `name` of a contrastive model's `VarMap` is trained by back-prop:
/// not a BatchNorm running statistic, not part of the MoCo key encoder (`momentum.*`, updated
/// by EMA) and not the MoCo queue (`moco.*`). Optimizers should receive only these.
pub fn is_trainable_name(name: &str) -> bool {
    !crate::nn::check::is_running_statistic(name)
        && !name
            .split('.')
            .any(|part| part == "momentum" || part == "moco")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_serde() {
        for name in EncoderConfig::PRESETS {
            let cfg = EncoderConfig::preset(name).unwrap();
            cfg.validate().unwrap();
            let json = serde_json::to_string(&cfg).unwrap();
            let back: EncoderConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, cfg);
        }
        assert_eq!(
            EncoderConfig::resnet50().feature_channels(),
            [256, 512, 1024, 2048]
        );
        assert_eq!(EncoderConfig::resnet18().out_dim(), 512);
        assert_eq!(EncoderConfig::tiny().out_dim(), 128);
        let err = EncoderConfig::preset("resnet101").unwrap_err();
        assert!(err.contains("tiny, resnet18"), "{err}");
        // Defaults fill optional fields; unknown fields are rejected.
        let cfg: EncoderConfig = serde_json::from_str(
            r#"{"block":"basic","layers":[1,1,1,1],"widths":[8,8,8,8],"stem_width":8}"#,
        )
        .unwrap();
        assert_eq!((cfg.in_channels, cfg.stem_kernel), (2, 7));
        assert!(serde_json::from_str::<EncoderConfig>(
            r#"{"block":"basic","layers":[1,1,1,1],"widths":[8,8,8,8],"stem_width":8,"fc":3}"#
        )
        .is_err());
        let mut bad = EncoderConfig::tiny();
        bad.layers[2] = 0;
        assert!(bad.validate().is_err());
        bad = EncoderConfig::tiny();
        bad.stem_kernel = 4;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn trainable_names() {
        assert!(is_trainable_name("encoder.layer1.0.bn1.weight"));
        assert!(!is_trainable_name("encoder.layer1.0.bn1.running_var"));
        assert!(!is_trainable_name("momentum.encoder.conv1.weight"));
        assert!(!is_trainable_name("moco.queue"));
    }
}
