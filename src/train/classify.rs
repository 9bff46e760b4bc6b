//! Multi-label classification (`insar-mm train classify`): the 10-label Hephaestus vector
//! (`[Deformation, Mogi, Dyke, Sill, Spheroid, Earthquake, Unidentified, Low, Medium, High]`)
//! predicted by a [`Classifier`] (encoder + MLP head) trained with BCE-with-logits (or the
//! focal loss) on whole frames resized to `data.image_size`.
//!
//! - `--encoder RUN` starts from a pretrained encoder (a `train pretrain` run, or another
//!   head run); `mode` chooses a linear probe (`linear`), whole fine-tuning (`finetune`) or
//!   fine-tuning from a stage on (`finetune:layer3`).
//! - Optional class-balanced oversampling (`data.balanced`) and label-preserving
//!   augmentations (`[augment]`, default flips and 90° rotations).
//! - Validation scores the val split with `insar_mm_eval::classification` (threshold
//!   `threshold`): `val_macro_f1` (mean F1 over the 10 labels, sklearn's zero-division 0),
//!   `val_deformation_f1` (the Deformation entry: deformation vs none) and `val_map`; the
//!   best checkpoint is kept by `val_macro_f1` (configurable in `[train]`).
//! - At the end the best model (else the last) chooses on the val split its test-time
//!   augmentation (`tune_test_time_augment`, by the best-checkpoint metric) and its per-label
//!   thresholds (`tune_thresholds`), and is scored on the test split; the report (per-label
//!   P/R/F1/support/AP/AUROC, averages, the choice) goes to `test_scores.json`.
//!
//! The run's `config.json` records `task = "classify"` and the resolved architecture
//! (`model`), which is all `predict`/`eval` need to rebuild the model.
//!
//! Library entry point: [`run`] with a [`ClassifyRun`] (data directory, built-in data or
//! samples in memory; optional encoder; mode; seed; output directory; device).

use std::borrow::Cow;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use insar_mm_eval::classification::{best_f1, evaluate, evaluate_per_class, ClassificationReport};
use insar_mm_eval::npy::Matrix;
use insar_mm_models::encoder::EncoderConfig;
use insar_mm_models::heads::{
    Classifier, ClassifierConfig, ClassifierLoss, EncoderMode, GlobalPool, TestTimeAugment,
};
use insar_mm_models::nn::seeded_var_builder;
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::driver::{Batch, BestMetric, MetricMode, StepOutput, TrainTask};
use super::encoder_init::EncoderInit;
use super::heads::recipe::HeadConfig;
use super::heads::{choose_test_time_augment, EpochOrder, HeadData, LabeledPart, TtaChoice};
use super::optim::OptimConfig;
use super::schedule::ScheduleConfig;
use crate::data::array::{batch_tensor, ClassMask, Image};
use crate::data::augment::{sample_rng, AugmentConfig, Augmenter};
use crate::data::resample::resize_area;
use crate::data::sample::{LabelVector, LABEL_NAMES, NUM_LABELS};

/// The `task` of a classification run.
pub const TASK: &str = "classify";

/// Label-preserving augmentations: flips and 90° rotations only (a crop could cut the
/// deformation out and change the labels).
pub fn default_augment() -> AugmentConfig {
    let mut a = AugmentConfig::none();
    a.hflip = 0.5;
    a.vflip = 0.5;
    a.rot90 = 0.5;
    a
}

pub use super::heads::recipe::mode_name;

/// The config of `train classify`, as resolved and saved to `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifyConfig {
    /// Always `"classify"` (what `predict`/`eval` check).
    pub task: String,
    /// Encoder architecture when no `--encoder` is given: tiny, resnet18, resnet34, resnet50.
    pub preset: String,
    /// Base width override of the preset (stage widths `[w, 2w, 4w, 8w]`).
    pub width: Option<usize>,
    pub seed: u64,
    /// `linear` (frozen encoder), `finetune` or `finetune:<stage>`.
    #[serde(with = "super::heads::recipe::mode_text")]
    pub mode: EncoderMode,
    /// Where the encoder starts (`--encoder`): `auto` (the shipped pretrained encoder when
    /// the preset is tiny, else random), `shipped`, `none` (random) or a run folder. A run
    /// records what `auto` resolved to. Runs saved before it (`encoder_run`) still read.
    #[serde(alias = "encoder_run")]
    pub encoder: EncoderInit,
    /// Hidden widths of the head MLP (empty = one linear layer).
    pub hidden: Vec<usize>,
    /// Pooling of the C5 map into the head input: avg, max or avg-max.
    pub pool: GlobalPool,
    pub loss: ClassifierLoss,
    /// Per-label positive weights of the BCE (10 values).
    pub pos_weight: Option<Vec<f64>>,
    /// Weight of the auxiliary mask loss (0 = off): a mask head on C5 learns the share of
    /// deformation pixels in each cell from the training masks, so the encoder learns where
    /// the pattern is. Training only; the scores do not use it. A deformation sample without
    /// a mask is left out of this loss. Runs saved before this key read as 0.
    #[serde(default)]
    pub mask_loss_weight: f64,
    /// Decision threshold on the sigmoid scores for P/R/F1 (validation during training, and
    /// every label the tuning leaves alone).
    pub threshold: f64,
    /// After training, choose each label's threshold on the validation split by
    /// `threshold_rule` for the test report, `eval` and `predict`; labels without a
    /// validation positive keep `threshold`.
    pub tune_thresholds: bool,
    /// How a label's threshold follows from its validation scores.
    pub threshold_rule: ThresholdRule,
    /// The per-label thresholds chosen at the end of the run (written to config.json).
    pub thresholds: Option<Vec<f64>>,
    /// Views each image is scored in after training (threshold tuning, the test report,
    /// `eval`, `predict`): `none`, `flips` or `dihedral`; the sigmoid scores are averaged.
    /// Validation during training scores the plain image.
    pub test_time_augment: TestTimeAugment,
    /// After training, choose `test_time_augment` among none, flips and dihedral by the
    /// best-checkpoint metric on the val split (thresholds tuned for each) and save the
    /// choice; a tie keeps the fewer views.
    pub tune_test_time_augment: bool,
    /// Validation samples scored per validation (the first ones; 0 = all).
    pub val_samples: usize,
    pub data: HeadData,
    pub augment: AugmentConfig,
    /// The resolved architecture (filled when the run starts).
    pub model: Option<ClassifierConfig>,
    pub optim: OptimConfig,
    pub schedule: ScheduleConfig,
    pub train: super::config::TrainSection,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        Self {
            task: TASK.into(),
            preset: "tiny".into(),
            width: None,
            seed: 42,
            mode: EncoderMode::default(),
            encoder: EncoderInit::default(),
            hidden: Vec::new(),
            pool: GlobalPool::Max,
            loss: ClassifierLoss::Bce,
            pos_weight: None,
            mask_loss_weight: 1.0,
            threshold: 0.5,
            tune_thresholds: true,
            threshold_rule: ThresholdRule::HalfBestF1,
            thresholds: None,
            test_time_augment: TestTimeAugment::None,
            tune_test_time_augment: true,
            val_samples: 0,
            // Native resolution: fringes a few pixels apart do not survive shrinking.
            data: HeadData {
                image_size: 224,
                batch_size: 32,
                balanced: false,
                ..HeadData::default()
            },
            augment: default_augment(),
            model: None,
            optim: OptimConfig::Adamw {
                lr: 2e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-4,
            },
            schedule: ScheduleConfig::Cosine {
                warmup_steps: 20,
                min_lr_ratio: 0.01,
            },
            train: super::config::TrainSection {
                epochs: Some(20),
                checkpoint_every: 100,
                log_every: 10,
                validate_every: 50,
                clip_grad_norm: Some(5.0),
                best_metric: Some(BestMetric {
                    name: "val_macro_f1".into(),
                    mode: MetricMode::Max,
                }),
                ..super::config::TrainSection::default()
            },
        }
    }
}

impl ClassifyConfig {
    /// The decision threshold of every label: the tuned ones, else `threshold`.
    pub fn decision_thresholds(&self) -> Vec<f64> {
        self.thresholds
            .clone()
            .unwrap_or_else(|| vec![self.threshold; NUM_LABELS])
    }

    /// Checks the settings; errors name the key.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.task == TASK,
            "task = {:?}: a classify config has task = \"classify\"",
            self.task
        );
        self.data.validate()?;
        ensure!(
            self.threshold > 0.0 && self.threshold < 1.0,
            "threshold = {:?} must be in (0, 1)",
            self.threshold
        );
        if let Some(t) = &self.thresholds {
            ensure!(
                t.len() == NUM_LABELS && t.iter().all(|v| v.is_finite()),
                "thresholds: {NUM_LABELS} finite values needed, got {t:?}"
            );
        }
        ensure!(
            self.mask_loss_weight.is_finite() && self.mask_loss_weight >= 0.0,
            "mask_loss_weight = {:?} must be finite and ≥ 0",
            self.mask_loss_weight
        );
        self.augment.validate()?;
        if let Some(m) = &self.model {
            m.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
            ensure!(
                m.mask_head || self.mask_loss_weight == 0.0,
                "mask_loss_weight = {} but the saved model has no mask head",
                self.mask_loss_weight
            );
            ensure!(
                m.encoder.in_channels == self.data.input_format.channels(),
                "data.input_format gives {} channels but the model takes {}",
                self.data.input_format.channels(),
                m.encoder.in_channels
            );
        } else {
            self.architecture(None)?
                .validate()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        self.optim.validate()?;
        self.schedule.validate()?;
        Ok(())
    }

    /// The architecture on `encoder` (default: the preset's, with the input format's
    /// channels).
    pub fn architecture(&self, encoder: Option<EncoderConfig>) -> Result<ClassifierConfig> {
        let encoder = match encoder {
            Some(e) => e,
            None => super::heads::preset_encoder(
                &self.preset,
                self.width,
                self.data.input_format.channels(),
            )?,
        };
        Ok(ClassifierConfig {
            encoder,
            hidden: self.hidden.clone(),
            num_labels: NUM_LABELS,
            mode: self.mode,
            loss: self.loss.clone(),
            pos_weight: self.pos_weight.clone(),
            pool: self.pool,
            mask_head: self.mask_loss_weight > 0.0,
        })
    }
}

/// The classifier of `arch` on a fresh `VarMap`, initialised from `seed`.
pub fn build_model(
    arch: &ClassifierConfig,
    seed: u64,
    device: &Device,
) -> Result<(VarMap, Classifier)> {
    let varmap = VarMap::new();
    let model = Classifier::new(arch, seeded_var_builder(&varmap, seed, DType::F32, device))?;
    Ok((varmap, model))
}

/// Sigmoid scores `(N, 10)` of `images` in evaluation mode, `batch` at a time, averaged
/// over the `tta` views of each image.
pub fn predict_scores(
    model: &Classifier,
    images: &[&Image],
    batch: usize,
    tta: TestTimeAugment,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch.max(1)) {
        let x = batch_tensor(chunk, device)?;
        let p: Vec<Vec<f32>> = tta
            .scores(&x, |v| model.predict(v))?
            .to_dtype(DType::F32)?
            .to_vec2()?;
        out.extend(p);
    }
    Ok(out)
}

/// The multi-label report (insar-mm-eval, sklearn conventions) of `scores` against `labels`.
pub fn score_labels(
    scores: &[Vec<f32>],
    labels: &[LabelVector],
    thresholds: &[f64],
) -> Result<ClassificationReport> {
    ensure!(!scores.is_empty(), "no samples to score");
    let n = scores.len();
    let s = Matrix::new(
        n,
        NUM_LABELS,
        scores.iter().flatten().map(|&v| f64::from(v)).collect(),
    )?;
    let y = Matrix::new(
        n,
        NUM_LABELS,
        labels
            .iter()
            .flatten()
            .map(|&v| if v > 0.5 { 1.0 } else { 0.0 })
            .collect(),
    )?;
    let names: Vec<String> = LABEL_NAMES.iter().map(|s| s.to_string()).collect();
    Ok(match thresholds {
        [t, rest @ ..] if rest.iter().all(|r| r == t) => evaluate(&s, &y, *t, Some(&names))?,
        _ => evaluate_per_class(&s, &y, thresholds, Some(&names))?,
    })
}

/// How [`tune_thresholds`] turns one label's validation scores into its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdRule {
    /// The cut with the highest validation F1. On a small validation split its position is
    /// noise where F1 is flat over a wide range of cuts (the README's measurements).
    BestF1,
    /// Half the highest validation F1: the F1-optimal threshold of a calibrated classifier
    /// (Lipton, Elkan & Naryanaswamy 2014, "Optimal thresholding of classifiers to maximize
    /// F1 measure"). Only the height of the F1 curve is estimated, not where its maximum
    /// lies, which is far more stable on a small split; the BCE-trained sigmoids are near
    /// calibrated when the training split has the test split's label mix (`balanced = false`).
    #[default]
    HalfBestF1,
}

/// Per-label thresholds tuned on `scores` / `labels` by `rule`; `fallback` for labels
/// without a positive.
pub fn tune_thresholds(
    scores: &[Vec<f32>],
    labels: &[LabelVector],
    fallback: f64,
    rule: ThresholdRule,
) -> Vec<f64> {
    (0..NUM_LABELS)
        .map(|k| {
            let s: Vec<f64> = scores.iter().map(|r| f64::from(r[k])).collect();
            let t: Vec<bool> = labels.iter().map(|l| l[k] > 0.5).collect();
            match (best_f1(&s, &t), rule) {
                (None, _) => fallback,
                (Some((_, cut)), ThresholdRule::BestF1) => cut,
                (Some((f1, _)), ThresholdRule::HalfBestF1) => 0.5 * f1,
            }
        })
        .collect()
}

/// The report of `model` on `part` (scores averaged over the `tta` views).
pub fn score_part(
    model: &Classifier,
    part: &LabeledPart,
    thresholds: &[f64],
    batch: usize,
    tta: TestTimeAugment,
    device: &Device,
) -> Result<ClassificationReport> {
    score_labels(
        &part_scores(model, part, batch, tta, device)?,
        &part.labels,
        thresholds,
    )
}

/// Sigmoid scores of every sample of `part` (averaged over the `tta` views).
pub fn part_scores(
    model: &Classifier,
    part: &LabeledPart,
    batch: usize,
    tta: TestTimeAugment,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let images: Vec<&Image> = part.images.iter().collect();
    predict_scores(model, &images, batch, tta, device)
}

/// `test_scores.json` / `eval classify` JSON: the report plus the deformation-vs-none
/// scores (the Deformation label) up front.
pub fn report_json(
    r: &ClassificationReport,
    extra: serde_json::Value,
) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(r)?;
    let d = &r.classes[0];
    v["deformation_vs_none"] = json!({
        "precision": d.precision, "recall": d.recall, "f1": d.f1, "support": d.support,
        "tp": d.tp, "fp": d.fp, "fn": d.fn_, "tn": d.tn,
    });
    if let (Some(obj), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        obj.extend(e);
    }
    Ok(v)
}

/// Classification as a [`TrainTask`].
pub struct ClassifyTask {
    model: Classifier,
    train: LabeledPart,
    val: LabeledPart,
    order: EpochOrder,
    augmenter: Augmenter,
    batch: usize,
    threshold: f64,
    mask_loss_weight: f64,
    device: Device,
}

/// One augmented training batch of [`ClassifyTask`].
pub struct ClassifyBatch {
    /// `(B, C, S, S)` images.
    pub images: Tensor,
    /// `(B, 10)` label vectors.
    pub labels: Tensor,
    /// The augmented masks (only with the mask loss): a negative without a mask has an
    /// empty one, a deformation sample without one `None` (unknown).
    pub masks: Vec<Option<ClassMask>>,
}

impl ClassifyTask {
    pub fn new(
        cfg: &ClassifyConfig,
        model: Classifier,
        train: LabeledPart,
        mut val: LabeledPart,
        device: &Device,
    ) -> Result<Self> {
        val.truncate(cfg.val_samples);
        if cfg.mask_loss_weight > 0.0 {
            let unknown = (0..train.len())
                .filter(|&i| mask_is_unknown(&train, i))
                .count();
            if unknown > 0 {
                log::warn!(
                    "mask_loss_weight = {}: {unknown} of {} deformation training samples have \
                     no mask and are left out of the mask loss",
                    cfg.mask_loss_weight,
                    train.labels.iter().filter(|l| l[0] > 0.0).count()
                );
            }
        }
        Ok(Self {
            model,
            order: EpochOrder::new(&train.labels, cfg.data.balanced, cfg.seed)?,
            train,
            val,
            augmenter: Augmenter::new(cfg.augment.clone())?,
            batch: cfg.data.batch_size,
            threshold: cfg.threshold,
            mask_loss_weight: cfg.mask_loss_weight,
            device: device.clone(),
        })
    }

    pub fn model(&self) -> &Classifier {
        &self.model
    }

    /// The augmented training samples `indices` (masks only with the mask loss); sample `k`
    /// of the batch draws from `sample_rng(seed, k)` (independent of the thread count).
    pub fn batch_tensors(&self, indices: &[usize], seed: u64) -> Result<ClassifyBatch> {
        let with_masks = self.mask_loss_weight > 0.0;
        let (images, masks): (Vec<Image>, Vec<Option<ClassMask>>) = indices
            .par_iter()
            .enumerate()
            .map(|(k, &i)| {
                let mut rng = sample_rng(seed, k as u64);
                let mask = if with_masks {
                    mask_target(
                        self.train.masks[i].as_ref(),
                        &self.train.labels[i],
                        &self.train.images[i],
                    )
                } else {
                    None
                };
                self.augmenter
                    .apply(&self.train.images[i], mask.as_deref(), &mut rng)
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let refs: Vec<&Image> = images.iter().collect();
        let x = batch_tensor(&refs, &self.device)?;
        let y: Vec<f32> = indices
            .iter()
            .flat_map(|&i| self.train.labels[i].iter().copied())
            .collect();
        let y = Tensor::from_vec(y, (indices.len(), NUM_LABELS), &self.device)?;
        Ok(ClassifyBatch {
            images: x,
            labels: y,
            masks,
        })
    }
}

impl TrainTask for ClassifyTask {
    fn len(&self) -> usize {
        self.train.len()
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn step(&mut self, batch: Batch<'_>) -> Result<StepOutput> {
        let indices = self.order.batch(&batch);
        let seed: u64 = batch.rng.random();
        let b = self.batch_tensors(&indices, seed)?;
        let with_mask = self.mask_loss_weight > 0.0;
        let (logits, mask_logits) = self.model.forward_with_mask_t(&b.images, true, with_mask)?;
        let loss = self.model.loss(&logits, &b.labels)?;
        let mask_loss = match mask_logits {
            Some(m) => known_mask_loss(&m, &b.masks)?,
            None => None,
        };
        let Some(mask_loss) = mask_loss else {
            return Ok(StepOutput {
                loss,
                metrics: Vec::new(),
            });
        };
        let total = (loss + mask_loss.affine(self.mask_loss_weight, 0.0)?)?;
        let mask_loss = mask_loss.to_scalar::<f32>()? as f64;
        Ok(StepOutput {
            loss: total,
            metrics: vec![("mask_loss".into(), mask_loss)],
        })
    }

    fn validate(&mut self) -> Result<Vec<(String, f64)>> {
        if self.val.is_empty() {
            return Ok(Vec::new());
        }
        let r = score_part(
            &self.model,
            &self.val,
            &[self.threshold; NUM_LABELS],
            self.batch.max(32),
            TestTimeAugment::None,
            &self.device,
        )?;
        Ok(val_metrics(&r))
    }
}

/// The mask-loss target of a training sample with `mask`, `labels` and `image`: its mask;
/// an empty one for a negative without a mask; `None` (unknown) for a deformation sample
/// without one.
pub fn mask_target<'a>(
    mask: Option<&'a ClassMask>,
    labels: &LabelVector,
    image: &Image,
) -> Option<Cow<'a, ClassMask>> {
    match mask {
        Some(m) => Some(Cow::Borrowed(m)),
        None if labels[0] > 0.0 => None,
        None => Some(Cow::Owned(ClassMask::zeros(image.height, image.width))),
    }
}

/// The mask loss (BCE against [`deformation_cell_shares`]) of `mask_logits` `(B, 1, h, w)`
/// over the batch rows whose mask is known; `None` when none is.
pub fn known_mask_loss(
    mask_logits: &Tensor,
    masks: &[Option<ClassMask>],
) -> Result<Option<Tensor>> {
    let (known, known_masks): (Vec<u32>, Vec<&ClassMask>) = masks
        .iter()
        .enumerate()
        .filter_map(|(k, m)| Some((k as u32, m.as_ref()?)))
        .unzip();
    if known.is_empty() {
        return Ok(None);
    }
    let (_, _, h, w) = mask_logits.dims4()?;
    let device = mask_logits.device();
    let shares = deformation_cell_shares(&known_masks, h, w)?;
    let shares = Tensor::from_vec(shares, (known.len(), 1, h, w), device)?;
    let rows = if known.len() == masks.len() {
        mask_logits.clone()
    } else {
        mask_logits.index_select(&Tensor::new(known.as_slice(), device)?, 0)?
    };
    Ok(Some(Classifier::mask_loss(&rows, &shares)?))
}

/// Whether training sample `i` is a deformation sample without a mask (left out of the
/// mask loss).
fn mask_is_unknown(part: &LabeledPart, i: usize) -> bool {
    part.masks[i].is_none() && part.labels[i][0] > 0.0
}

/// The share of deformation pixels (any class id > 0) of each mask in each cell of an
/// `h × w` grid over it (area averaging), flattened mask-major: the mask head's targets.
pub fn deformation_cell_shares(masks: &[&ClassMask], h: usize, w: usize) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(masks.len() * h * w);
    for m in masks {
        let binary = Image {
            channels: 1,
            height: m.height,
            width: m.width,
            data: m.data.iter().map(|&v| f32::from(v > 0)).collect(),
        };
        out.extend(resize_area(&binary, h, w)?.data);
    }
    Ok(out)
}

/// The validation metrics of a val-split report (what `validate` logs and the best
/// checkpoint and the test-time augmentation are chosen by).
fn val_metrics(r: &ClassificationReport) -> Vec<(String, f64)> {
    let mut out = vec![
        ("val_macro_f1".into(), r.macro_avg.f1),
        ("val_deformation_f1".into(), r.classes[0].f1),
    ];
    if let Some(m) = r.map {
        out.push(("val_map".into(), m));
    }
    out
}

/// Chooses on the val split the views (`tune_test_time_augment`) and per-label thresholds
/// (`tune_thresholds`) that `cfg`'s predictions use from now on, and writes them into `cfg`.
/// Each candidate view set gets thresholds tuned on its own scores before the best-checkpoint
/// metric compares them. Returns the view choice when one was made.
fn tune_on_val(
    cfg: &mut ClassifyConfig,
    model: &Classifier,
    val: &LabeledPart,
    batch: usize,
    device: &Device,
) -> Result<Option<TtaChoice>> {
    if val.is_empty() || !(cfg.tune_thresholds || cfg.tune_test_time_augment) {
        return Ok(None);
    }
    let candidates = if cfg.tune_test_time_augment {
        &TestTimeAugment::ALL[..]
    } else {
        std::slice::from_ref(&cfg.test_time_augment)
    };
    let by = cfg.train.best_metric.clone().unwrap_or(BestMetric {
        name: "val_macro_f1".into(),
        mode: MetricMode::Max,
    });
    let mut thresholds = Vec::with_capacity(candidates.len());
    let choice = choose_test_time_augment(candidates, &by, |tta| {
        let scores = part_scores(model, val, batch, tta, device)?;
        let t = if cfg.tune_thresholds {
            tune_thresholds(&scores, &val.labels, cfg.threshold, cfg.threshold_rule)
        } else {
            cfg.decision_thresholds()
        };
        let metrics = val_metrics(&score_labels(&scores, &val.labels, &t)?);
        thresholds.push(t);
        Ok(metrics)
    })?;
    let chosen = candidates
        .iter()
        .position(|&c| c == choice.chosen)
        .context("the chosen view set is a candidate")?;
    if cfg.tune_thresholds {
        let t = thresholds.swap_remove(chosen);
        log::info!("per-label thresholds tuned on the val split: {t:.3?}");
        cfg.thresholds = Some(t);
    }
    cfg.test_time_augment = choice.chosen;
    Ok(cfg.tune_test_time_augment.then_some(choice))
}

impl HeadConfig for ClassifyConfig {
    const TASK: &'static str = TASK;
    const NOUN: &'static str = "classification";
    const MIN_EVAL_BATCH: usize = 32;
    type Arch = ClassifierConfig;
    type Model = Classifier;
    type Task = ClassifyTask;
    type Report = ClassificationReport;

    crate::head_config_fields!();

    fn validate(&self) -> Result<()> {
        ClassifyConfig::validate(self)
    }
    fn architecture(&self, encoder: Option<EncoderConfig>) -> Result<ClassifierConfig> {
        ClassifyConfig::architecture(self, encoder)
    }
    fn arch_encoder(arch: &ClassifierConfig) -> &EncoderConfig {
        &arch.encoder
    }
    fn build(arch: &ClassifierConfig, seed: u64, device: &Device) -> Result<(VarMap, Classifier)> {
        build_model(arch, seed, device)
    }
    fn is_trainable(model: &Classifier, name: &str) -> bool {
        model.is_trainable(name)
    }
    fn new_task(
        &self,
        model: Classifier,
        train: LabeledPart,
        val: LabeledPart,
        device: &Device,
    ) -> Result<ClassifyTask> {
        ClassifyTask::new(self, model, train, val, device)
    }
    fn task_parts(task: &ClassifyTask) -> (&Classifier, &LabeledPart) {
        (&task.model, &task.val)
    }
    fn tune_on_val(
        &mut self,
        model: &Classifier,
        val: &LabeledPart,
        batch: usize,
        device: &Device,
    ) -> Result<Option<TtaChoice>> {
        tune_on_val(self, model, val, batch, device)
    }
    fn score_test(
        &self,
        model: &Classifier,
        test: &LabeledPart,
        batch: usize,
        device: &Device,
        extra: serde_json::Value,
    ) -> Result<(ClassificationReport, serde_json::Value)> {
        let report = score_part(
            model,
            test,
            &self.decision_thresholds(),
            batch,
            self.test_time_augment,
            device,
        )?;
        let mut extra = extra;
        extra["test_time_augment"] = json!(self.test_time_augment);
        let v = report_json(&report, extra)?;
        Ok((report, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::checkpoint::RunDir;
    use insar_mm_models::heads::Stage;
    use std::path::Path;

    #[test]
    fn an_edited_run_config_is_validated_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ClassifyConfig::default();
        cfg.model = Some(cfg.architecture(None).unwrap());
        RunDir::new(dir.path()).write_config(&cfg).unwrap();
        ClassifyConfig::read(dir.path()).unwrap();
        for size in [0, 100_000] {
            cfg.data.image_size = size;
            RunDir::new(dir.path()).write_config(&cfg).unwrap();
            let err = format!("{:#}", ClassifyConfig::read(dir.path()).unwrap_err());
            assert!(
                err.contains("config.json") && err.contains("data.image_size"),
                "{err}"
            );
        }
    }

    #[test]
    fn config_file_merges_over_defaults_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "mode = \"finetune:layer3\"\n[data]\nbatch_size = 8\n[loss]\nkind = \"focal\"\ngamma = 2.0\n",
        )
        .unwrap();
        let cfg = ClassifyConfig::from_file(&path).unwrap();
        let def = ClassifyConfig::default();
        assert_eq!(cfg.data.batch_size, 8);
        assert_eq!(cfg.data.image_size, def.data.image_size);
        assert_eq!(
            cfg.encoder_mode().unwrap(),
            EncoderMode::Finetune {
                unfreeze_from: Stage::Layer3
            }
        );
        assert_eq!(
            cfg.loss,
            ClassifierLoss::Focal {
                gamma: 2.0,
                alpha: None
            }
        );
        cfg.validate().unwrap();
        let shipped = ClassifyConfig::from_file(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/classify-tiny.toml"
        )))
        .unwrap();
        assert_eq!(
            shipped, def,
            "configs/classify-tiny.toml = the built-in defaults"
        );
        std::fs::write(&path, "[data]\nbatch_sise = 8\n").unwrap();
        let err = format!("{:#}", ClassifyConfig::from_file(&path).unwrap_err());
        assert!(
            err.contains("batch_sise") && err.contains("c.toml"),
            "{err}"
        );
        // `mode` is typed: an unknown mode fails when the file is read, naming the key.
        std::fs::write(&path, "mode = \"probe\"\n").unwrap();
        let err = format!("{:#}", ClassifyConfig::from_file(&path).unwrap_err());
        assert!(
            err.contains("mode") && err.contains("probe") && err.contains("c.toml"),
            "{err}"
        );
        std::fs::write(&path, "mode = \"finetune:layer3\"\n").unwrap();
        let cfg = ClassifyConfig::from_file(&path).unwrap();
        assert_eq!(mode_name(cfg.mode), "finetune:layer3");
        for (bad, key) in [
            (
                ClassifyConfig {
                    task: "segment".into(),
                    ..def.clone()
                },
                "task",
            ),
            (
                ClassifyConfig {
                    threshold: 1.5,
                    ..def.clone()
                },
                "threshold",
            ),
            (
                ClassifyConfig {
                    preset: "huge".into(),
                    ..def.clone()
                },
                "huge",
            ),
            (
                ClassifyConfig {
                    mask_loss_weight: -1.0,
                    ..def.clone()
                },
                "mask_loss_weight",
            ),
            (
                ClassifyConfig {
                    mask_loss_weight: f64::NAN,
                    ..def.clone()
                },
                "mask_loss_weight",
            ),
        ] {
            let err = format!("{:#}", bad.validate().unwrap_err());
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn mask_shares_average_each_cell() {
        // 4×4 mask: class 3 fills the top-left 2×2 block, class 1 one pixel bottom-right.
        let mut data = vec![0u8; 16];
        for i in [0, 1, 4, 5] {
            data[i] = 3;
        }
        data[15] = 1;
        let m = ClassMask {
            height: 4,
            width: 4,
            data,
        };
        let empty = ClassMask::zeros(4, 4);
        let shares = deformation_cell_shares(&[&m, &empty], 2, 2).unwrap();
        assert_eq!(shares, vec![1.0, 0.0, 0.0, 0.25, 0.0, 0.0, 0.0, 0.0]);
        // Uneven cells (4 → 3): every cell is a share, and the mean is kept.
        let shares = deformation_cell_shares(&[&m], 3, 3).unwrap();
        assert!(shares.iter().all(|v| (0.0..=1.0).contains(v)), "{shares:?}");
        let mean = shares.iter().sum::<f32>() / 9.0;
        assert!((mean - 5.0 / 16.0).abs() < 1e-6, "{mean}");
    }

    /// The mask-loss targets: a negative without a mask has an empty one, a deformation
    /// sample without one is left out, and the rows that are in get the gradient.
    #[test]
    fn mask_loss_leaves_out_positives_without_a_mask() {
        use rand::SeedableRng;
        let cfg = ClassifyConfig::default();
        let arch = cfg.architecture(None).unwrap();
        assert!(cfg.mask_loss_weight > 0.0 && arch.mask_head);
        let (varmap, model) = build_model(&arch, 1, &Device::Cpu).unwrap();
        let mut part = LabeledPart::default();
        let mut blob = ClassMask::zeros(64, 64);
        blob.data[..200].fill(2);
        for (id, positive, mask) in [
            ("negative-without-mask", false, None),
            ("positive-without-mask", true, None),
            ("positive-with-mask", true, Some(blob)),
        ] {
            let mut labels = [0.0; NUM_LABELS];
            labels[0] = f32::from(u8::from(positive));
            part.ids.push(id.into());
            let mut image = Image::zeros(3, 64, 64);
            for (k, v) in image.data.iter_mut().enumerate() {
                *v = (k as f32 * 0.37 + id.len() as f32).sin();
            }
            part.images.push(image);
            part.labels.push(labels);
            part.masks.push(mask);
            part.source_sizes.push((64, 64));
        }
        let mut task =
            ClassifyTask::new(&cfg, model, part, LabeledPart::default(), &Device::Cpu).unwrap();
        let b = task.batch_tensors(&[0, 1, 2], 5).unwrap();
        let empty = b.masks[0].as_ref().unwrap();
        assert!(empty.data.iter().all(|&v| v == 0) && empty.height == 64);
        assert!(b.masks[1].is_none());
        assert_eq!(
            b.masks[2]
                .as_ref()
                .unwrap()
                .data
                .iter()
                .filter(|&&v| v == 2)
                .count(),
            200
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut step = |indices: &[usize]| {
            task.step(Batch {
                indices,
                step: 0,
                epoch: 0,
                micro: 0,
                rng: &mut rng,
            })
            .unwrap()
        };
        // Only the unknown sample: no mask loss at all.
        assert!(step(&[1, 1]).metrics.is_empty());
        let out = step(&[0, 1, 2]);
        let (name, value) = &out.metrics[0];
        assert!(name == "mask_loss" && value.is_finite() && *value > 0.0);
        let grads = out.loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        let g = grads
            .get(data["classifier.mask.weight"].as_tensor())
            .unwrap();
        let g = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(g > 0.0);
    }

    /// A run saved before the mask loss existed reads as one without it.
    #[test]
    fn runs_without_the_mask_key_read_as_no_mask_loss() {
        let mut v = serde_json::to_value(ClassifyConfig::default()).unwrap();
        v.as_object_mut().unwrap().remove("mask_loss_weight");
        let old: ClassifyConfig = serde_json::from_value(v).unwrap();
        assert_eq!(old.mask_loss_weight, 0.0);
        assert!(!old.architecture(None).unwrap().mask_head);
    }

    #[test]
    fn mode_names_round_trip() {
        for s in ["linear", "finetune", "finetune:layer2", "finetune:layer4"] {
            assert_eq!(mode_name(EncoderMode::parse(s).unwrap()), s);
        }
    }

    #[test]
    fn scores_follow_the_labels() {
        let labels: Vec<LabelVector> = (0..6)
            .map(|i| {
                let mut l = [0.0; NUM_LABELS];
                if i % 2 == 0 {
                    l[0] = 1.0;
                    l[1] = 1.0;
                }
                l
            })
            .collect();
        let perfect: Vec<Vec<f32>> = labels.iter().map(|l| l.to_vec()).collect();
        let r = score_labels(&perfect, &labels, &[0.5; NUM_LABELS]).unwrap();
        assert_eq!(r.classes[0].f1, 1.0);
        assert_eq!(r.classes[0].name, "Deformation");
        assert_eq!(r.classes[0].support, 3);
        // Everything predicted "deformation": precision 0.5, recall 1.
        let all: Vec<Vec<f32>> = (0..6).map(|_| vec![0.9; NUM_LABELS]).collect();
        let r = score_labels(&all, &labels, &[0.5; NUM_LABELS]).unwrap();
        assert_eq!(r.classes[0].precision, 0.5);
        assert_eq!(r.classes[0].recall, 1.0);
        let v = report_json(&r, json!({"split": "test"})).unwrap();
        assert_eq!(v["deformation_vs_none"]["fp"], 3);
        assert_eq!(v["split"], "test");
    }

    #[test]
    fn tuned_thresholds_separate_validation_scores() {
        // Deformation scores 0.2..0.4 for positives, 0.05..0.15 for negatives: a 0.5
        // threshold finds nothing, the tuned one (0.175) everything.
        let labels: Vec<LabelVector> = (0..6)
            .map(|i| {
                let mut l = [0.0; NUM_LABELS];
                l[0] = (i < 3) as u8 as f32;
                l
            })
            .collect();
        let scores: Vec<Vec<f32>> = [0.2f32, 0.3, 0.4, 0.05, 0.1, 0.15]
            .iter()
            .map(|&s| {
                let mut r = vec![0.01; NUM_LABELS];
                r[0] = s;
                r
            })
            .collect();
        // The separable label: F1 1 at the cut 0.175, so half-best-F1 puts it at 0.5.
        let half = tune_thresholds(&scores, &labels, 0.3, ThresholdRule::HalfBestF1);
        assert!((half[0] - 0.5).abs() < 1e-12, "{half:?}");
        assert!(half[1..].iter().all(|&v| v == 0.3), "{half:?}");
        let t = tune_thresholds(&scores, &labels, 0.5, ThresholdRule::BestF1);
        assert!((t[0] - 0.175).abs() < 1e-6, "{t:?}");
        assert!(
            t[1..].iter().all(|&v| v == 0.5),
            "no positives → fallback: {t:?}"
        );
        assert_eq!(
            score_labels(&scores, &labels, &[0.5; NUM_LABELS])
                .unwrap()
                .classes[0]
                .f1,
            0.0
        );
        let r = score_labels(&scores, &labels, &t).unwrap();
        assert_eq!(r.classes[0].f1, 1.0);
        assert_eq!(r.thresholds.as_deref(), Some(&t[..]));
        let mut cfg = ClassifyConfig::default();
        assert_eq!(cfg.decision_thresholds(), vec![0.5; NUM_LABELS]);
        cfg.thresholds = Some(t.clone());
        assert_eq!(cfg.decision_thresholds(), t);
        cfg.thresholds = Some(vec![0.5; 3]);
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("thresholds"));
    }
}
