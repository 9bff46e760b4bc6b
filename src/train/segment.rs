//! Semantic segmentation (`insar-mm train segment`): 7 classes (background, Mogi, Dyke, Sill,
//! Spheroid, Earthquake, Unidentified) predicted by a [`Segmenter`] (encoder + FPN decoder
//! over C2–C5) trained with pixel cross-entropy plus an optional soft Dice term, on whole
//! frames and their rasterised masks resized to `data.image_size` (bilinear images, nearest
//! masks).
//!
//! - `--encoder RUN` / `mode`, class-balanced oversampling and augmentations as in
//!   [`super::classify`] (masks follow every geometric transform).
//! - Validation accumulates one confusion matrix over the val split
//!   (`insar_mm_eval::segmentation`, mmsegmentation rules): `val_miou` (NaN-mean over the 7
//!   classes), `val_miou_deformation` (mean IoU over the deformation classes present in the
//!   ground truth), `val_iou_any_deformation` (the six types merged against background),
//!   `val_grouped_miou` (mean IoU over the source-type groups present in the ground truth:
//!   concentric volcanic = Mogi, spheroid, sill, unidentified; elongated = dyke;
//!   earthquake; background not averaged in) and `val_aacc`; the best checkpoint is kept by
//!   `val_miou`.
//! - At the end the best model (else the last) is scored on the test split; per-class IoU,
//!   Dice, accuracy and pixel counts go to `test_scores.json`.
//!
//! Scores are computed at the model resolution (`data.image_size`).

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use insar_mm_eval::segmentation::{Confusion, GroupScores, SegmentationScores};
use insar_mm_models::encoder::EncoderConfig;
use insar_mm_models::heads::{EncoderMode, FpnConfig, Segmenter, SegmenterConfig, TestTimeAugment};
use insar_mm_models::nn::seeded_var_builder;
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::classify::default_augment;
use super::driver::{Batch, BestMetric, MetricMode, StepOutput, TrainTask};
use super::encoder_init::EncoderInit;
use super::heads::recipe::HeadConfig;
use super::heads::{choose_test_time_augment, EpochOrder, HeadData, LabeledPart, TtaChoice};
use super::optim::OptimConfig;
use super::schedule::ScheduleConfig;
use crate::data::array::{batch_tensor, ClassMask, Image};
use crate::data::augment::{sample_rng, AugmentConfig, Augmenter};
use crate::data::sample::{MASK_CLASS_NAMES, NUM_MASK_CLASSES};

/// The `task` of a segmentation run.
pub const TASK: &str = "segment";

/// The config of `train segment`, as resolved and saved to `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentConfig {
    /// Always `"segment"` (what `predict`/`eval` check).
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
    pub fpn: FpnConfig,
    /// Weight of the soft Dice loss added to the cross-entropy (0 = cross-entropy only).
    pub dice_weight: f64,
    /// Per-class cross-entropy weights (7 values).
    pub class_weights: Option<Vec<f64>>,
    /// Views each image is predicted in for the test report, `eval` and `predict`: `none`,
    /// `flips` or `dihedral`; the probability maps, each taken back to the image's
    /// orientation, are averaged. Validation during training predicts the plain image.
    pub test_time_augment: TestTimeAugment,
    /// After training, choose `test_time_augment` among none, flips and dihedral by the
    /// best-checkpoint metric on the val split and save the choice; a tie keeps the fewer
    /// views.
    pub tune_test_time_augment: bool,
    /// Validation samples scored per validation (the first ones; 0 = all).
    pub val_samples: usize,
    pub data: HeadData,
    pub augment: AugmentConfig,
    /// The resolved architecture (filled when the run starts).
    pub model: Option<SegmenterConfig>,
    pub optim: OptimConfig,
    pub schedule: ScheduleConfig,
    pub train: super::config::TrainSection,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            task: TASK.into(),
            preset: "tiny".into(),
            width: None,
            seed: 42,
            mode: EncoderMode::default(),
            encoder: EncoderInit::default(),
            fpn: FpnConfig::default(),
            dice_weight: 1.0,
            // Deformation is ≈ 2 % of the pixels: unweighted, the loss settles on background.
            class_weights: Some(vec![0.1, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
            test_time_augment: TestTimeAugment::None,
            tune_test_time_augment: true,
            val_samples: 0,
            data: HeadData {
                image_size: 112,
                batch_size: 16,
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
                epochs: Some(12),
                checkpoint_every: 100,
                log_every: 10,
                validate_every: 100,
                clip_grad_norm: Some(5.0),
                best_metric: Some(BestMetric {
                    name: "val_miou".into(),
                    mode: MetricMode::Max,
                }),
                ..super::config::TrainSection::default()
            },
        }
    }
}

impl SegmentConfig {
    /// Checks the settings; errors name the key.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.task == TASK,
            "task = {:?}: a segment config has task = \"segment\"",
            self.task
        );
        self.data.validate()?;
        self.augment.validate()?;
        let arch = match &self.model {
            Some(m) => m.clone(),
            None => self.architecture(None)?,
        };
        arch.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(
            arch.encoder.in_channels == self.data.input_format.channels(),
            "data.input_format gives {} channels but the model takes {}",
            self.data.input_format.channels(),
            arch.encoder.in_channels
        );
        self.optim.validate()?;
        self.schedule.validate()?;
        Ok(())
    }

    /// The architecture on `encoder` (default: the preset's).
    pub fn architecture(&self, encoder: Option<EncoderConfig>) -> Result<SegmenterConfig> {
        let encoder = match encoder {
            Some(e) => e,
            None => super::heads::preset_encoder(
                &self.preset,
                self.width,
                self.data.input_format.channels(),
            )?,
        };
        Ok(SegmenterConfig {
            encoder,
            fpn: self.fpn.clone(),
            num_classes: NUM_MASK_CLASSES,
            mode: self.mode,
            dice_weight: self.dice_weight,
            class_weights: self.class_weights.clone(),
        })
    }
}

/// The segmenter of `arch` on a fresh `VarMap`, initialised from `seed`.
pub fn build_model(
    arch: &SegmenterConfig,
    seed: u64,
    device: &Device,
) -> Result<(VarMap, Segmenter)> {
    let varmap = VarMap::new();
    let model = Segmenter::new(arch, seeded_var_builder(&varmap, seed, DType::F32, device))?;
    Ok((varmap, model))
}

/// Class probabilities `(B, K, S, S)` of `images` in evaluation mode (averaged over the
/// `tta` views), `batch` at a time, reduced by `each` (called with the probabilities of one
/// chunk).
pub fn for_each_prediction(
    model: &Segmenter,
    images: &[&Image],
    batch: usize,
    tta: TestTimeAugment,
    device: &Device,
    mut each: impl FnMut(usize, &Tensor) -> Result<()>,
) -> Result<()> {
    let mut start = 0;
    for chunk in images.chunks(batch.max(1)) {
        let x = batch_tensor(chunk, device)?;
        let p = tta.maps(&x, |v| model.predict(v))?;
        each(start, &p)?;
        start += chunk.len();
    }
    Ok(())
}

/// Arg-max class ids `(B, H·W)` of probabilities `(B, K, H, W)`.
pub fn argmax_classes(probs: &Tensor) -> Result<Vec<Vec<u32>>> {
    let (b, _, h, w) = probs.dims4()?;
    let ids = probs.argmax(1)?.to_dtype(DType::U32)?.reshape((b, h * w))?;
    Ok(ids.to_vec2()?)
}

/// Scores and the summary numbers of a confusion matrix.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentReport {
    pub scores: SegmentationScores,
    /// Pixels of each class in the ground truth.
    pub support: Vec<u64>,
    /// Mean IoU over the deformation classes (1..7) present in the ground truth (`None`
    /// when there is none).
    pub miou_deformation: Option<f64>,
    /// IoU of "any deformation" against the background, the six types merged (where the
    /// deformation is, whatever its type; `None` when neither truth nor prediction has any).
    pub iou_any_deformation: Option<f64>,
    /// Of the deformation pixels found as deformation (any type), the share given their
    /// true type (`None` when none was found): the typing half of the error.
    pub type_accuracy: Option<f64>,
    /// [`Self::miou_deformation`] had every found deformation pixel been given its true
    /// type: the ceiling that this localisation allows (the localisation half).
    pub miou_deformation_true_type: Option<f64>,
    /// IoU of the source-type groups the fringes can tell apart (concentric volcanic:
    /// Mogi, spheroid, sill, unidentified; elongated: dyke; earthquake), a mix-up inside a
    /// group counting as right; `groups.miou_present` is the grouped mIoU, the mean over the
    /// groups present in the ground truth (background excluded).
    pub groups: GroupScores,
    pub images: usize,
}

impl SegmentReport {
    pub fn from_confusion(cm: &Confusion, images: usize) -> Result<Self> {
        let scores = cm.scores()?;
        let support: Vec<u64> = scores.confusion.iter().map(|r| r.iter().sum()).collect();
        let present: Vec<f64> = (1..cm.classes)
            .filter(|&c| support[c] > 0)
            .filter_map(|c| scores.iou[c])
            .collect();
        let miou_deformation =
            (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64);
        let cells = &scores.confusion;
        let (mut hit, mut missed, mut false_alarm) = (0u64, 0u64, 0u64);
        for (truth, row) in cells.iter().enumerate() {
            for (pred, &n) in row.iter().enumerate() {
                match (truth > 0, pred > 0) {
                    (true, true) => hit += n,
                    (true, false) => missed += n,
                    (false, true) => false_alarm += n,
                    (false, false) => {}
                }
            }
        }
        let union = hit + missed + false_alarm;
        let iou_any_deformation = (union > 0).then(|| hit as f64 / union as f64);
        let typed_right: u64 = (1..cm.classes).map(|c| cells[c][c]).sum();
        let type_accuracy = (hit > 0).then(|| typed_right as f64 / hit as f64);
        // With true types a class keeps the pixels found anywhere in the deformation and
        // loses only what background takes from it or it takes from background.
        let true_type_iou = |c: usize| {
            let found: u64 = cells[c][1..].iter().sum();
            let union = found + cells[c][0] + cells[0][c];
            (union > 0).then(|| found as f64 / union as f64)
        };
        let ceiling: Vec<f64> = (1..cm.classes)
            .filter(|&c| support[c] > 0)
            .filter_map(true_type_iou)
            .collect();
        let miou_deformation_true_type =
            (!ceiling.is_empty()).then(|| ceiling.iter().sum::<f64>() / ceiling.len() as f64);
        let groups = cm.activity_groups()?;
        Ok(Self {
            scores,
            support,
            groups,
            miou_deformation,
            iou_any_deformation,
            type_accuracy,
            miou_deformation_true_type,
            images,
        })
    }

    /// `test_scores.json` / `eval segment` JSON.
    pub fn to_json(&self, extra: serde_json::Value) -> Result<serde_json::Value> {
        let mut v = serde_json::to_value(&self.scores)?;
        v["names"] = json!(MASK_CLASS_NAMES);
        v["support"] = json!(self.support);
        v["mIoU_deformation_present"] = json!(self.miou_deformation);
        v["IoU_any_deformation"] = json!(self.iou_any_deformation);
        v["type_accuracy_found_deformation"] = json!(self.type_accuracy);
        v["mIoU_deformation_present_true_type"] = json!(self.miou_deformation_true_type);
        v["grouped_mIoU"] = json!(self.groups.miou_present);
        let by_name = |vals: Vec<serde_json::Value>| -> serde_json::Map<String, serde_json::Value> {
            self.groups.names.iter().cloned().zip(vals).collect()
        };
        v["group_iou"] = by_name(self.groups.iou.iter().map(|x| json!(x)).collect()).into();
        v["group_support"] = by_name(self.groups.support.iter().map(|x| json!(x)).collect()).into();
        v["images"] = json!(self.images);
        if let (Some(obj), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            obj.extend(e);
        }
        Ok(v)
    }

    /// A per-class table.
    pub fn print(&self) {
        let s = &self.scores;
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.4}"));
        println!(
            "{:<14} {:>8} {:>8} {:>8} {:>12}",
            "class", "IoU", "Dice", "Acc", "gt pixels"
        );
        for (c, (((iou, dice), acc), support)) in s
            .iou
            .iter()
            .zip(&s.dice)
            .zip(&s.acc)
            .zip(&self.support)
            .enumerate()
        {
            println!(
                "{:<14} {:>8} {:>8} {:>8} {:>12}",
                MASK_CLASS_NAMES.get(c).copied().unwrap_or("?"),
                opt(*iou),
                opt(*dice),
                opt(*acc),
                support
            );
        }
        println!(
            "mIoU {:.4}  mIoU (deformation classes present) {}  IoU (any deformation vs background) {}  mDice {:.4}  mAcc {:.4}  aAcc {:.4}  ({} images, {} pixels)",
            s.miou,
            opt(self.miou_deformation),
            opt(self.iou_any_deformation),
            s.mdice,
            s.macc,
            s.aacc,
            self.images,
            s.pixels
        );
        println!(
            "type accuracy on the deformation pixels found {}  mIoU (deformation classes present) had they been typed right {}",
            opt(self.type_accuracy),
            opt(self.miou_deformation_true_type)
        );
        let per_group: Vec<String> = self
            .groups
            .names
            .iter()
            .zip(&self.groups.iou)
            .map(|(name, iou)| format!("{name} {}", opt(*iou)))
            .collect();
        println!(
            "grouped mIoU (source-type groups present: concentric = Mogi/Spheroid/Sill/Unidentified, elongated = Dyke, earthquake) {}  group IoU: {}",
            opt(self.groups.miou_present),
            per_group.join(", ")
        );
    }
}

/// The report of `model` on `part` (every sample needs a mask; predictions averaged over
/// the `tta` views).
pub fn score_part(
    model: &Segmenter,
    part: &LabeledPart,
    batch: usize,
    tta: TestTimeAugment,
    device: &Device,
) -> Result<SegmentReport> {
    ensure!(!part.is_empty(), "no samples to score");
    let mut cm = Confusion::new(NUM_MASK_CLASSES, None)?;
    let images: Vec<&Image> = part.images.iter().collect();
    for_each_prediction(model, &images, batch, tta, device, |start, probs| {
        for (k, pred) in argmax_classes(probs)?.into_iter().enumerate() {
            let i = start + k;
            let mask = part.masks[i]
                .as_ref()
                .with_context(|| format!("sample {}: no mask", part.ids[i]))?;
            let truth: Vec<u32> = mask.data.iter().map(|&v| u32::from(v)).collect();
            cm.add(&pred, &truth)
                .with_context(|| format!("sample {}", part.ids[i]))?;
        }
        Ok(())
    })?;
    SegmentReport::from_confusion(&cm, part.len())
}

/// Segmentation as a [`TrainTask`].
pub struct SegmentTask {
    model: Segmenter,
    train: LabeledPart,
    val: LabeledPart,
    order: EpochOrder,
    augmenter: Augmenter,
    batch: usize,
    device: Device,
}

impl SegmentTask {
    pub fn new(
        cfg: &SegmentConfig,
        model: Segmenter,
        train: LabeledPart,
        mut val: LabeledPart,
        device: &Device,
    ) -> Result<Self> {
        if let Some(i) = train.masks.iter().position(Option::is_none) {
            anyhow::bail!("training sample {} has no mask", train.ids[i]);
        }
        val.truncate(cfg.val_samples);
        Ok(Self {
            model,
            order: EpochOrder::new(&train.labels, cfg.data.balanced, cfg.seed)?,
            train,
            val,
            augmenter: Augmenter::new(cfg.augment.clone())?,
            batch: cfg.data.batch_size,
            device: device.clone(),
        })
    }

    pub fn model(&self) -> &Segmenter {
        &self.model
    }

    /// Augmented images `(B, C, S, S)` and class ids `(B, S, S)` of training samples
    /// `indices`; sample `k` of the batch draws from `sample_rng(seed, k)`.
    pub fn batch_tensors(&self, indices: &[usize], seed: u64) -> Result<(Tensor, Tensor)> {
        let pairs: Vec<(Image, ClassMask)> = indices
            .par_iter()
            .enumerate()
            .map(|(k, &i)| {
                let mut rng = sample_rng(seed, k as u64);
                let (im, m) = self.augmenter.apply(
                    &self.train.images[i],
                    self.train.masks[i].as_ref(),
                    &mut rng,
                )?;
                Ok((im, m.context("augmentation lost the mask")?))
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&Image> = pairs.iter().map(|p| &p.0).collect();
        let x = batch_tensor(&refs, &self.device)?;
        let (h, w) = (refs[0].height, refs[0].width);
        let ids: Vec<u32> = pairs
            .iter()
            .flat_map(|p| p.1.data.iter().map(|&v| u32::from(v)))
            .collect();
        let y = Tensor::from_vec(ids, (indices.len(), h, w), &self.device)?;
        Ok((x, y))
    }
}

impl TrainTask for SegmentTask {
    fn len(&self) -> usize {
        self.train.len()
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn step(&mut self, batch: Batch<'_>) -> Result<StepOutput> {
        let indices = self.order.batch(&batch);
        let seed: u64 = batch.rng.random();
        let (x, y) = self.batch_tensors(&indices, seed)?;
        let logits = self.model.forward_t(&x, true)?;
        let loss = self.model.loss(&logits, &y)?;
        Ok(StepOutput {
            loss,
            metrics: Vec::new(),
        })
    }

    fn validate(&mut self) -> Result<Vec<(String, f64)>> {
        if self.val.is_empty() {
            return Ok(Vec::new());
        }
        let r = score_part(
            &self.model,
            &self.val,
            self.batch.max(16),
            TestTimeAugment::None,
            &self.device,
        )?;
        Ok(val_metrics(&r))
    }
}

/// The validation metrics of a val-split report (what `validate` logs and the best
/// checkpoint and the test-time augmentation are chosen by).
fn val_metrics(r: &SegmentReport) -> Vec<(String, f64)> {
    let mut out = vec![
        ("val_miou".into(), r.scores.miou),
        ("val_aacc".into(), r.scores.aacc),
    ];
    if let Some(d) = r.iou_any_deformation {
        out.push(("val_iou_any_deformation".into(), d));
    }
    if let Some(d) = r.miou_deformation {
        out.push(("val_miou_deformation".into(), d));
    }
    if let Some(d) = r.groups.miou_present {
        out.push(("val_grouped_miou".into(), d));
    }
    out
}

/// Chooses `cfg.test_time_augment` on the val split by the best-checkpoint metric
/// (`tune_test_time_augment`).
fn tune_on_val(
    cfg: &mut SegmentConfig,
    model: &Segmenter,
    val: &LabeledPart,
    batch: usize,
    device: &Device,
) -> Result<Option<TtaChoice>> {
    if val.is_empty() || !cfg.tune_test_time_augment {
        return Ok(None);
    }
    let by = cfg.train.best_metric.clone().unwrap_or(BestMetric {
        name: "val_miou".into(),
        mode: MetricMode::Max,
    });
    let choice = choose_test_time_augment(&TestTimeAugment::ALL, &by, |tta| {
        Ok(val_metrics(&score_part(model, val, batch, tta, device)?))
    })?;
    cfg.test_time_augment = choice.chosen;
    Ok(Some(choice))
}

impl HeadConfig for SegmentConfig {
    const TASK: &'static str = TASK;
    const NOUN: &'static str = "segmentation";
    const MIN_EVAL_BATCH: usize = 16;
    type Arch = SegmenterConfig;
    type Model = Segmenter;
    type Task = SegmentTask;
    type Report = SegmentReport;

    crate::head_config_fields!();

    fn validate(&self) -> Result<()> {
        SegmentConfig::validate(self)
    }
    fn architecture(&self, encoder: Option<EncoderConfig>) -> Result<SegmenterConfig> {
        SegmentConfig::architecture(self, encoder)
    }
    fn arch_encoder(arch: &SegmenterConfig) -> &EncoderConfig {
        &arch.encoder
    }
    fn build(arch: &SegmenterConfig, seed: u64, device: &Device) -> Result<(VarMap, Segmenter)> {
        build_model(arch, seed, device)
    }
    fn is_trainable(model: &Segmenter, name: &str) -> bool {
        model.is_trainable(name)
    }
    fn new_task(
        &self,
        model: Segmenter,
        train: LabeledPart,
        val: LabeledPart,
        device: &Device,
    ) -> Result<SegmentTask> {
        SegmentTask::new(self, model, train, val, device)
    }
    fn task_parts(task: &SegmentTask) -> (&Segmenter, &LabeledPart) {
        (&task.model, &task.val)
    }
    fn tune_on_val(
        &mut self,
        model: &Segmenter,
        val: &LabeledPart,
        batch: usize,
        device: &Device,
    ) -> Result<Option<TtaChoice>> {
        tune_on_val(self, model, val, batch, device)
    }
    fn score_test(
        &self,
        model: &Segmenter,
        test: &LabeledPart,
        batch: usize,
        device: &Device,
        extra: serde_json::Value,
    ) -> Result<(SegmentReport, serde_json::Value)> {
        let report = score_part(model, test, batch, self.test_time_augment, device)?;
        let mut extra = extra;
        extra["test_time_augment"] = json!(self.test_time_augment);
        let v = report.to_json(extra)?;
        Ok((report, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::checkpoint::RunDir;
    use std::path::Path;

    #[test]
    fn an_edited_run_config_is_validated_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = SegmentConfig::default();
        cfg.model = Some(cfg.architecture(None).unwrap());
        RunDir::new(dir.path()).write_config(&cfg).unwrap();
        SegmentConfig::read(dir.path()).unwrap();
        for size in [0, 100_000] {
            cfg.data.image_size = size;
            RunDir::new(dir.path()).write_config(&cfg).unwrap();
            let err = format!("{:#}", SegmentConfig::read(dir.path()).unwrap_err());
            assert!(
                err.contains("config.json") && err.contains("data.image_size"),
                "{err}"
            );
        }
    }

    #[test]
    fn config_file_and_validation() {
        let def = SegmentConfig::default();
        let shipped = SegmentConfig::from_file(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/segment-tiny.toml"
        )))
        .unwrap();
        assert_eq!(
            shipped, def,
            "configs/segment-tiny.toml = the built-in defaults"
        );
        def.validate().unwrap();
        // The GPU recipe differs from the default only in encoder, input size and cadence.
        let gpu = SegmentConfig::from_file(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/segment-resnet18.toml"
        )))
        .unwrap();
        gpu.validate().unwrap();
        let mut expected = def.clone();
        expected.preset = "resnet18".into();
        expected.data.image_size = 224;
        expected.train.checkpoint_every = 250;
        expected.train.validate_every = 250;
        assert_eq!(gpu, expected, "configs/segment-resnet18.toml");
        let bad = SegmentConfig {
            class_weights: Some(vec![1.0; 3]),
            ..def.clone()
        };
        assert!(format!("{:#}", bad.validate().unwrap_err()).contains("class_weights"));
        let bad = SegmentConfig {
            fpn: FpnConfig {
                groups: 5,
                ..FpnConfig::default()
            },
            ..def.clone()
        };
        assert!(format!("{:#}", bad.validate().unwrap_err()).contains("groups"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "dice_wieght = 1.0\n").unwrap();
        let err = format!("{:#}", SegmentConfig::from_file(&path).unwrap_err());
        assert!(err.contains("dice_wieght"), "{err}");
    }

    #[test]
    fn report_counts_only_present_deformation_classes() {
        let mut cm = Confusion::new(NUM_MASK_CLASSES, None).unwrap();
        // Background right, Mogi half right, Sill predicted where there is none.
        cm.add(&[0, 0, 1, 0, 3], &[0, 0, 1, 1, 0]).unwrap();
        let r = SegmentReport::from_confusion(&cm, 1).unwrap();
        assert_eq!(r.support, vec![3, 2, 0, 0, 0, 0, 0]);
        assert_eq!(r.scores.iou[1], Some(0.5));
        assert_eq!(r.scores.iou[3], Some(0.0));
        // Only Mogi is present in the truth: Sill's false positive is not averaged in.
        assert_eq!(r.miou_deformation, Some(0.5));
        let v = r.to_json(json!({"split": "val"})).unwrap();
        assert_eq!(v["names"][1], "Mogi");
        assert_eq!(v["mIoU_deformation_present"], 0.5);
        // Any deformation: hit 1 (Mogi as Mogi), missed 1, false alarm 1 (the Sill) → 1/3;
        // a type mix-up inside the deformation still counts as a hit.
        assert_eq!(r.iou_any_deformation, Some(1.0 / 3.0));
        let mut mixed = Confusion::new(NUM_MASK_CLASSES, None).unwrap();
        mixed.add(&[2, 3, 0], &[1, 1, 0]).unwrap();
        let m = SegmentReport::from_confusion(&mixed, 1).unwrap();
        assert_eq!(
            (m.iou_any_deformation, m.miou_deformation),
            (Some(1.0), Some(0.0))
        );
        // Both found, both mistyped: typing is all of the error.
        assert_eq!(
            (m.type_accuracy, m.miou_deformation_true_type),
            (Some(0.0), Some(1.0))
        );
        // First case: of the one Mogi pixel found it is typed right (1/1); typed right, Mogi
        // keeps 1 found of 1 + 1 missed + 0 taken from background → 0.5 (Sill's false alarm
        // is background taken by a class absent from the truth).
        assert_eq!(
            (r.type_accuracy, r.miou_deformation_true_type),
            (Some(1.0), Some(0.5))
        );
        assert_eq!(v["type_accuracy_found_deformation"], 1.0);
        // (prediction, truth): Mogi 4 px (2 found as Mogi, 1 as Dyke, 1 missed), Dyke 2 px
        // (1 as Mogi, 1 as Dyke), one background pixel taken by Dyke.
        let mut three = Confusion::new(NUM_MASK_CLASSES, None).unwrap();
        three
            .add(&[1, 1, 2, 0, 1, 2, 2], &[1, 1, 1, 1, 2, 2, 0])
            .unwrap();
        let t = SegmentReport::from_confusion(&three, 1).unwrap();
        assert_eq!(t.type_accuracy, Some(3.0 / 5.0));
        // True types: Mogi 3 found / (3 + 1 missed) = 0.75; Dyke 2 / (2 + 1 false alarm).
        let want = (0.75 + 2.0 / 3.0) / 2.0;
        assert!((t.miou_deformation_true_type.unwrap() - want).abs() < 1e-12);
        assert_eq!(v["IoU_any_deformation"], 1.0 / 3.0);
        // Groups: Mogi and Dyke mixed up across groups in `three`: concentric TP 2 (Mogi
        // as Mogi), FN 1 (as Dyke) + 1 (missed), FP 1 (Dyke as Mogi) → 2/5; elongated TP 1,
        // FN 1, FP 1 (Mogi as Dyke) + 1 (background) → 1/4; no earthquake anywhere.
        assert_eq!(t.groups.iou, vec![Some(0.4), Some(0.25), None]);
        assert_eq!(t.groups.miou_present, Some((0.4 + 0.25) / 2.0));
        let tv = t.to_json(json!({})).unwrap();
        assert_eq!(tv["grouped_mIoU"], (0.4 + 0.25) / 2.0);
        assert_eq!(tv["group_iou"]["concentric"], 0.4);
        assert_eq!(tv["group_iou"]["earthquake"], serde_json::Value::Null);
        assert_eq!(tv["group_support"]["elongated"], 2);
        let names: Vec<String> = val_metrics(&t).into_iter().map(|(n, _)| n).collect();
        assert!(
            names.contains(&"val_grouped_miou".to_string())
                && names.contains(&"val_iou_any_deformation".to_string()),
            "{names:?}"
        );
        // `mixed`: Mogi as Dyke and as Sill; the Sill is in Mogi's group → concentric 1/2.
        assert_eq!(m.groups.iou[0], Some(0.5));
        // The evaluation crate's groups index the mask ids of this crate.
        for (_, classes) in insar_mm_eval::segmentation::activity_group_classes() {
            for c in classes {
                let ty = insar_mm_eval::captions::facts::Activity::ALL[c - 1];
                assert_eq!(MASK_CLASS_NAMES[c].to_lowercase(), ty.name());
            }
        }
        let probs =
            Tensor::from_vec(vec![0.9f32, 0.1, 0.2, 0.8], (1, 2, 1, 2), &Device::Cpu).unwrap();
        assert_eq!(argmax_classes(&probs).unwrap(), vec![vec![0, 1]]);
    }
}
