//! Task heads on the shared encoder: the 10-label classifier ([`Classifier`]) and the
//! 7-class segmentation decoder ([`Segmenter`], an FPN over C2–C5), plus what both share:
//! how much of the encoder trains ([`EncoderMode`]) and which variables an optimizer gets
//! ([`is_trainable`]), and sliding-window inference over whole frames ([`window`]).
//!
//! # Variable names
//!
//! ```text
//! encoder.*                      the ResNet, torchvision names (see crate::encoder): a SimCLR or
//!                                MoCo checkpoint's `encoder.*` tensors load into it unchanged
//! classifier.layers.{i}.*        classification MLP (one layer = linear probe)
//! decoder.lateral.{0..3}.*       FPN 1×1 lateral convolutions on C2..C5
//! decoder.smooth.{0..3}.*        FPN 3×3 output convolutions P2..P5
//! decoder.scale.{0..3}.{j}.*     semantic-FPN upsampling branches (conv 3×3 → GroupNorm → ReLU)
//! decoder.classifier.*           final 1×1 convolution to the class logits
//! ```
//!
//! # Freezing
//!
//! Candle has no `requires_grad` switch: a variable is frozen by (a) cutting the graph before
//! it so that no gradient reaches it and (b) not handing it to the optimizer.
//! [`EncoderMode::Linear`] runs the whole encoder in evaluation mode with detached outputs
//! (a linear probe: BatchNorm statistics stay as pretrained, the backward pass never enters
//! the encoder); [`EncoderMode::Finetune`] trains the stages from `unfreeze_from` on and
//! freezes the ones before it the same way ([`crate::encoder::ResNet::forward_frozen_t`]).
//! [`is_trainable`] gives the matching optimizer filter.

pub mod classifier;
pub mod segmentation;
#[cfg(test)]
mod testing;
pub mod tta;
pub mod window;

use serde::{Deserialize, Serialize};

pub use classifier::{
    threshold_predictions, Classifier, ClassifierConfig, ClassifierLoss, GlobalPool, NUM_LABELS,
};
pub use segmentation::{
    dice_loss, resize_bilinear, segmentation_loss, FpnConfig, Segmenter, SegmenterConfig,
    NUM_CLASSES,
};
pub use tta::TestTimeAugment;
pub use window::{
    blend_weights, predict_frame_map, predict_frame_windows, window_starts, Blender, WindowPlan,
};

use crate::encoder::{EncoderOutput, ResNet};
use crate::nn::check::is_running_statistic;
use candle_core::{Result, Tensor};

/// An encoder stage, in forward order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// `conv1`, `bn1` (and the max pool).
    #[default]
    Stem,
    Layer1,
    Layer2,
    Layer3,
    Layer4,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Stem,
        Stage::Layer1,
        Stage::Layer2,
        Stage::Layer3,
        Stage::Layer4,
    ];

    /// Position in forward order (stem 0, `layer{k}` k).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The stage an encoder variable (name relative to the encoder, e.g. `layer2.0.conv1.weight`
    /// or `bn1.bias`) belongs to; `None` for a name that is not a ResNet variable.
    pub fn of_encoder_var(name: &str) -> Option<Stage> {
        let first = name.split('.').next()?;
        match first {
            "conv1" | "bn1" => Some(Stage::Stem),
            "layer1" => Some(Stage::Layer1),
            "layer2" => Some(Stage::Layer2),
            "layer3" => Some(Stage::Layer3),
            "layer4" => Some(Stage::Layer4),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> std::result::Result<Stage, String> {
        match s {
            "stem" => Ok(Stage::Stem),
            "layer1" => Ok(Stage::Layer1),
            "layer2" => Ok(Stage::Layer2),
            "layer3" => Ok(Stage::Layer3),
            "layer4" => Ok(Stage::Layer4),
            other => Err(format!(
                "unknown encoder stage {other:?} (expected stem, layer1, layer2, layer3 or layer4)"
            )),
        }
    }
}

/// How much of the encoder a head trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum EncoderMode {
    /// Linear probe: the encoder is frozen (evaluation-mode BatchNorm, no gradient).
    Linear,
    /// Fine-tuning of the stages from `unfreeze_from` to `layer4`; the earlier ones are
    /// frozen like in [`EncoderMode::Linear`]. `stem` (the default) trains everything.
    Finetune {
        #[serde(default)]
        unfreeze_from: Stage,
    },
}

impl Default for EncoderMode {
    fn default() -> Self {
        EncoderMode::Finetune {
            unfreeze_from: Stage::Stem,
        }
    }
}

impl EncoderMode {
    /// Number of leading encoder stages that are frozen (0 = all train, 5 = linear probe).
    pub fn frozen_stages(self) -> usize {
        match self {
            EncoderMode::Linear => ResNet::STAGES,
            EncoderMode::Finetune { unfreeze_from } => unfreeze_from.index(),
        }
    }

    /// Whether the encoder stage `stage` is trained.
    pub fn trains(self, stage: Stage) -> bool {
        stage.index() >= self.frozen_stages()
    }

    /// `linear`, `finetune` (whole encoder) or `finetune:<stage>` (from that stage on).
    pub fn parse(s: &str) -> std::result::Result<EncoderMode, String> {
        match s.split_once(':') {
            None if s == "linear" => Ok(EncoderMode::Linear),
            None if s == "finetune" => Ok(EncoderMode::default()),
            Some(("finetune", stage)) => Ok(EncoderMode::Finetune {
                unfreeze_from: Stage::parse(stage)?,
            }),
            _ => Err(format!(
                "unknown encoder mode {s:?} (expected linear, finetune or finetune:<stage>)"
            )),
        }
    }

    /// Runs `encoder` on `x` with this mode's frozen stages; `train` is the mode of the rest.
    pub fn encode(self, encoder: &ResNet, x: &Tensor, train: bool) -> Result<EncoderOutput> {
        encoder.forward_frozen_t(x, self.frozen_stages(), train)
    }
}

/// Whether the head-model variable `name` (with its `encoder.` / `classifier.` / `decoder.`
/// prefix) is trained by back-propagation under `mode`: never a BatchNorm running statistic,
/// always a head variable, an encoder variable only when its stage trains.
pub fn is_trainable(name: &str, mode: EncoderMode) -> bool {
    if is_running_statistic(name) {
        return false;
    }
    match name.strip_prefix("encoder.") {
        None => true,
        Some(rest) => Stage::of_encoder_var(rest).is_some_and(|s| mode.trains(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::EncoderConfig;
    use crate::nn::check::{gradient_gaps, random_projection, seeded_randn};
    use crate::nn::seeded_var_builder;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn mode_parsing_and_serde() {
        assert_eq!(EncoderMode::parse("linear").unwrap(), EncoderMode::Linear);
        assert_eq!(
            EncoderMode::parse("finetune").unwrap(),
            EncoderMode::Finetune {
                unfreeze_from: Stage::Stem
            }
        );
        let m = EncoderMode::parse("finetune:layer3").unwrap();
        assert_eq!(m.frozen_stages(), 3);
        assert!(!m.trains(Stage::Layer2) && m.trains(Stage::Layer3));
        assert!(EncoderMode::parse("finetune:layer9")
            .unwrap_err()
            .contains("layer9"));
        assert!(EncoderMode::parse("probe").is_err());
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"mode":"finetune","unfreeze_from":"layer3"}"#);
        assert_eq!(serde_json::from_str::<EncoderMode>(&json).unwrap(), m);
        assert_eq!(
            serde_json::from_str::<EncoderMode>(r#"{"mode":"linear"}"#).unwrap(),
            EncoderMode::Linear
        );
        assert_eq!(EncoderMode::Linear.frozen_stages(), 5);
    }

    #[test]
    fn trainable_names_follow_the_mode() {
        let m = EncoderMode::Finetune {
            unfreeze_from: Stage::Layer2,
        };
        assert!(is_trainable(
            "classifier.layers.0.weight",
            EncoderMode::Linear
        ));
        assert!(!is_trainable(
            "encoder.layer4.0.conv1.weight",
            EncoderMode::Linear
        ));
        assert!(!is_trainable("encoder.bn1.weight", m));
        assert!(!is_trainable("encoder.layer1.0.bn2.bias", m));
        assert!(is_trainable("encoder.layer2.0.downsample.0.weight", m));
        assert!(!is_trainable("encoder.layer3.0.bn1.running_mean", m));
        assert!(!is_trainable("decoder.scale.0.0.norm.running_var", m));
        assert!(!is_trainable("encoder.fc.weight", m));
    }

    /// Frozen stages: eval-mode values, no gradient, no running-stat update; the trained
    /// stages: batch statistics and gradients.
    #[test]
    fn partially_frozen_encoder() -> Result<()> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 4, DType::F32, &dev);
        let net = ResNet::new(&EncoderConfig::tiny(), vb)?;
        let x = seeded_randn((2, 2, 32, 32), 1, &dev)?.to_dtype(DType::F32)?;
        let eval = net.forward_t(&x, false)?;
        let stats_before: Vec<f32> = varmap.data().lock().unwrap()["layer1.0.bn1.running_mean"]
            .as_tensor()
            .to_vec1()?;
        let out = net.forward_frozen_t(&x, 2, true)?;
        // Stem and layer1 frozen: C2 equals the eval output exactly and has no graph.
        let d = (&out.features[0] - &eval.features[0])?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        assert!(!out.features[0].track_op());
        let stats_after: Vec<f32> = varmap.data().lock().unwrap()["layer1.0.bn1.running_mean"]
            .as_tensor()
            .to_vec1()?;
        assert_eq!(stats_before, stats_after, "a frozen BatchNorm moved");
        // layer2 onwards trains with batch statistics: C3 differs from the eval output.
        let d3 = (&out.features[1] - &eval.features[1])?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d3 > 1e-4);
        let mut loss = random_projection(&out.pooled, 1)?;
        for (i, f) in out.features.iter().enumerate() {
            loss = (loss + random_projection(f, 2 + i as u64)?)?;
        }
        let grads = loss.backward()?;
        let mode = EncoderMode::Finetune {
            unfreeze_from: Stage::Layer2,
        };
        let prefixed = |n: &str| format!("encoder.{n}");
        // Exactly the trainable variables have gradients.
        let gaps = gradient_gaps(&varmap, &grads, |n| is_trainable(&prefixed(n), mode))?;
        assert!(gaps.is_empty(), "{gaps:?}");
        let data = varmap.data().lock().unwrap();
        for (name, var) in data.iter() {
            if !is_running_statistic(name) && !is_trainable(&prefixed(name), mode) {
                assert!(
                    grads.get(var.as_tensor()).is_none(),
                    "{name} got a gradient"
                );
            }
        }
        drop(data);
        // Fully frozen: eval values (with the running statistics as they are now), nothing
        // tracks; too many stages is an error.
        let eval = net.forward_t(&x, false)?;
        let lin = EncoderMode::Linear.encode(&net, &x, true)?;
        assert!(!lin.pooled.track_op() && lin.features.iter().all(|f| !f.track_op()));
        let d = (&lin.pooled - &eval.pooled)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        assert!(net.forward_frozen_t(&x, 6, true).is_err());
        Ok(())
    }
}
