//! Captioning (`insar-mm train caption`): a [`CaptionModel`] trained with teacher forcing and
//! label-smoothed cross-entropy on image–caption pairs of a dataset directory, split by frame.
//!
//! - The tokenizer is trained on the training split's captions only and saved as
//!   `tokenizer.json` in the run directory.
//! - Validation greedy-decodes the val split and scores it with `insar_mm_eval` (corpus
//!   BLEU-4 and CIDEr-D, pycocoevalcap rules, and the caption facts): `val_bleu4`,
//!   `val_cider`, `val_fact_f1`, `val_deformation_f1`, `val_distinct`; the best checkpoint is
//!   kept by `val_fact_cider` ([`fact_cider`]). With a label head, `val_label_deformation_f1`
//!   is the head's own deformation F1 (threshold ½).
//! - At the end the best model (else the last) is scored on the test split (BLEU-1..4,
//!   ROUGE-L, CIDEr-D) and the scores are written to `test_scores.json`.
//!
//! All images of the three parts are decoded and resized once, up front (a 1000-frame
//! dataset at 64² and 2 channels is 33 MB).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use insar_mm_eval::captions::fact_metrics::BinaryScores;
use insar_mm_eval::captions::{
    fact_scores, score_tokenized, tokenizer::tokenize, CaptionScores, ImageId,
};
use insar_mm_models::caption::{
    CaptionConfig, CaptionModel, EncoderMode, LabelHeadConfig, SearchConfig,
};
use insar_mm_models::encoder::is_trainable_name;
use insar_mm_models::nn::bce_with_logits;
use insar_mm_models::nn::seeded_var_builder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::checkpoint::{load_model, run_weights, RunDir};
use super::classify::{known_mask_loss, mask_target};
use super::config::TrainSection;
use super::driver::{Batch, BestMetric, MetricMode, Outcome, StepOutput, TrainTask, Trainer};
use super::encoder_init::{load_pretrained, start_encoder, EncoderInit};
use super::heads::EpochOrder;
use super::optim::{trainable_params, OptimConfig, Optimizer};
use super::pretrain::RunOptions;
use super::schedule::ScheduleConfig;
use crate::data::annotation::Annotation;
use crate::data::array::{batch_tensor, ClassMask, Image};
use crate::data::augment::{
    flip_horizontal, flip_mask_horizontal, flip_mask_vertical, flip_vertical,
};
use crate::data::dataset::DatasetDir;
use crate::data::frames::{InputFormat, InterferogramFiles};
use crate::data::loader::{load_annotations, AnnotationSet, LoadOptions};
use crate::data::sample::{LabelVector, SampleSource, NUM_LABELS};
use crate::data::sampler::{rarest_label_keys, stratified_subset};
use crate::data::split::{frame_split, Part, Split};
use crate::text::mirror_caption;
use crate::text::tokenizer::{CaptionTokenizer, TokenizerConfig};

/// File of the tokenizer in a caption run.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub use crate::train::checkpoint::TEST_SCORES_FILE;

/// `[data]` of a caption run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptionData {
    /// `--data DIR` (`None`: the built-in synthetic dataset of the run seed).
    pub dir: Option<PathBuf>,
    /// Side of the square model input; frames are resized to it.
    pub image_size: usize,
    pub batch_size: usize,
    pub input_format: InputFormat,
    /// Longest token sequence, `[BOS]` and `[EOS]` included (longer captions are cut).
    pub max_len: usize,
    /// Images decoded per validation pass (the first ones of the val split; 0 = all).
    pub val_images: usize,
    /// Sequences per length group of a training batch: the batch is sorted by caption
    /// length and cut into groups of this size, each padded to its own longest caption
    /// (same loss as padding the whole batch; 0 = one group).
    pub length_group: usize,
    /// `--annotations PATH`: real annotation files (a directory, `.tar.gz` or `.zip`; strict
    /// loading) whose captions and labels the run uses. Without `dir` the images are
    /// rendered to match them (cached); with `dir` they come from `dir`, matched by uniqueID.
    pub annotations: Option<PathBuf>,
    /// `--annotation-limit N`: use a seeded subset of N of the annotations that keeps the
    /// class mix ([`stratified_subset`] over the rarest-label classes); 0 = all.
    pub annotation_limit: usize,
    /// Where the run's images and captions came from (recorded by `train caption`).
    pub source: Option<CaptionSource>,
    /// Mirror each training image left–right and/or top–bottom at random, with the
    /// caption's location words mirrored to match ([`mirror_caption`]). Runs saved before
    /// this key read as off.
    #[serde(default)]
    pub flips: bool,
    /// `--balanced`: draw deformation and non-deformation frames equally often (each draw
    /// picks one of the two at random, then a frame of it), for caption sets where deformation
    /// is rare (the real Hephaestus mix: 9 %).
    #[serde(default)]
    pub balanced: bool,
}

/// The annotations a run took its captions from (`--annotations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnotationSelection {
    /// The directory or archive.
    pub path: PathBuf,
    /// Annotation files loaded.
    pub loaded: usize,
    /// Those with a non-empty caption.
    pub captioned: usize,
    /// `data.annotation_limit` (0 = all).
    pub limit: usize,
    /// Annotations kept (the stratified subset when limited).
    pub used: usize,
}

/// Where the images and captions of a caption run came from (saved in `config.json` as
/// `data.source`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CaptionSource {
    /// The built-in synthetic dataset (generated captions) in `dir`.
    Builtin { dir: PathBuf },
    /// `--data DIR`: its images and its annotations' captions.
    Data { dir: PathBuf },
    /// `--annotations PATH`: its real captions, with images rendered to match each annotation
    /// (cached in `images`).
    RenderedFromAnnotations {
        annotations: AnnotationSelection,
        images: PathBuf,
    },
    /// `--annotations PATH --data DIR`: captions and labels of PATH, images of DIR, matched
    /// by uniqueID (`matched` of the selected annotations).
    AnnotationsWithData {
        annotations: AnnotationSelection,
        data: PathBuf,
        matched: usize,
    },
}

impl std::fmt::Display for CaptionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin { dir } => write!(f, "the built-in synthetic dataset {}", dir.display()),
            Self::Data { dir } => write!(f, "{}", dir.display()),
            Self::RenderedFromAnnotations {
                annotations: a,
                images,
            } => write!(
                f,
                "{} real captions of {} ({} with a caption), images rendered to match them in {}",
                a.used,
                a.path.display(),
                a.captioned,
                images.display()
            ),
            Self::AnnotationsWithData {
                annotations: a,
                data,
                matched,
            } => write!(
                f,
                "captions of {} ({} selected, {matched} matched by uniqueID), images of {}",
                a.path.display(),
                a.used,
                data.display()
            ),
        }
    }
}

impl Default for CaptionData {
    fn default() -> Self {
        Self {
            dir: None,
            image_size: 224,
            batch_size: 32,
            input_format: InputFormat::default(),
            max_len: 96,
            val_images: 0,
            length_group: 8,
            annotations: None,
            annotation_limit: 0,
            source: None,
            flips: true,
            balanced: false,
        }
    }
}

/// The config of `train caption`, as resolved and saved to `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptionTrainConfig {
    /// Architecture preset of [`CaptionConfig::preset`]: tiny, small or base.
    pub preset: String,
    pub seed: u64,
    pub data: CaptionData,
    pub tokenizer: TokenizerConfig,
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f64,
    /// Keep the encoder fixed (running BatchNorm statistics, no gradient).
    pub freeze_encoder: bool,
    /// Where the encoder starts (`--encoder`): `auto` (the shipped pretrained encoder when
    /// it fits the preset's encoder and input format, else random), `shipped`, `none` or a
    /// `train pretrain`/classify/segment run whose architecture and `encoder.*` weights the
    /// model starts from. A run records what `auto` resolved to; runs saved before it
    /// (`encoder_init`) still read.
    #[serde(alias = "encoder_init")]
    pub encoder: EncoderInit,
    /// Weight of the label head's BCE (the frame's multi-label vector read from C5) added
    /// to the caption loss; 0 = no label head. Runs saved before the head read as 0.
    #[serde(default = "no_aux_loss")]
    pub label_loss_weight: f64,
    /// Weight of the mask head's BCE (share of deformation pixels per C5 cell, learnt from
    /// the training masks; needs the label head). Runs saved before it read as 0.
    #[serde(default = "no_aux_loss")]
    pub mask_loss_weight: f64,
    /// Append the label head's probabilities to the visual memory as one token.
    #[serde(default)]
    pub label_token: bool,
    /// The resolved architecture (filled once the tokenizer's vocabulary is known).
    pub model: Option<CaptionConfig>,
    pub optim: OptimConfig,
    pub schedule: ScheduleConfig,
    pub train: TrainSection,
}

impl Default for CaptionTrainConfig {
    fn default() -> Self {
        Self {
            preset: "tiny".into(),
            seed: 42,
            data: CaptionData::default(),
            tokenizer: TokenizerConfig::default(),
            label_smoothing: 0.1,
            freeze_encoder: false,
            encoder: EncoderInit::default(),
            label_loss_weight: 1.0,
            mask_loss_weight: 1.0,
            label_token: true,
            model: None,
            optim: OptimConfig::Adamw {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-2,
            },
            schedule: ScheduleConfig::Cosine {
                warmup_steps: 50,
                min_lr_ratio: 0.01,
            },
            train: TrainSection {
                epochs: Some(16),
                checkpoint_every: 250,
                log_every: 10,
                validate_every: 250,
                clip_grad_norm: Some(1.0),
                best_metric: Some(BestMetric {
                    name: "val_fact_cider".into(),
                    mode: MetricMode::Max,
                }),
                ..TrainSection::default()
            },
        }
    }
}

/// Largest `data.image_size` of a caption run (frames are held in memory at this size).
pub const MAX_IMAGE_SIZE: usize = 4096;

fn no_aux_loss() -> f64 {
    0.0
}

impl CaptionTrainConfig {
    /// The defaults with the TOML file `path` merged over them (unknown keys are errors).
    pub fn from_file(path: &Path) -> Result<Self> {
        super::config::config_from_file(path)
    }

    /// Checks the settings; errors name the key.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            CaptionConfig::PRESETS.contains(&self.preset.as_str()),
            "preset {:?}: expected one of {}",
            self.preset,
            CaptionConfig::PRESETS.join(", ")
        );
        ensure!(
            self.data.image_size >= 16,
            "data.image_size = {} is too small (at least 16)",
            self.data.image_size
        );
        ensure!(
            self.data.image_size <= MAX_IMAGE_SIZE,
            "data.image_size = {} is too large (at most {MAX_IMAGE_SIZE})",
            self.data.image_size
        );
        ensure!(
            self.data.batch_size >= 1,
            "data.batch_size must be at least 1"
        );
        ensure!(
            self.data.annotation_limit == 0 || self.data.annotations.is_some(),
            "data.annotation_limit = {} needs data.annotations (--annotations PATH)",
            self.data.annotation_limit
        );
        ensure!(
            self.data.max_len >= 3,
            "data.max_len = {} must leave room for [BOS], a token and [EOS]",
            self.data.max_len
        );
        ensure!(
            self.label_loss_weight.is_finite() && self.label_loss_weight >= 0.0,
            "label_loss_weight = {:?} must be finite and ≥ 0",
            self.label_loss_weight
        );
        ensure!(
            self.mask_loss_weight.is_finite() && self.mask_loss_weight >= 0.0,
            "mask_loss_weight = {:?} must be finite and ≥ 0",
            self.mask_loss_weight
        );
        ensure!(
            self.mask_loss_weight == 0.0 || self.label_loss_weight > 0.0,
            "mask_loss_weight = {} needs the label head (label_loss_weight > 0)",
            self.mask_loss_weight
        );
        ensure!(
            (0.0..1.0).contains(&self.label_smoothing),
            "label_smoothing = {:?} must be in [0, 1)",
            self.label_smoothing
        );
        if let Some(m) = &self.model {
            m.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
            ensure!(
                m.encoder.in_channels == self.data.input_format.channels(),
                "data.input_format gives {} channels but the model takes {}",
                self.data.input_format.channels(),
                m.encoder.in_channels
            );
        }
        self.optim.validate()?;
        self.schedule.validate()?;
        Ok(())
    }

    /// The architecture for a tokenizer of `vocab_size` tokens.
    pub fn architecture(&self, vocab_size: usize) -> Result<CaptionConfig> {
        let mut m =
            CaptionConfig::preset(&self.preset, vocab_size).map_err(|e| anyhow::anyhow!(e))?;
        m.encoder = m
            .encoder
            .with_in_channels(self.data.input_format.channels());
        m.decoder.max_len = self.data.max_len;
        if self.label_loss_weight > 0.0 {
            m.labels = Some(LabelHeadConfig {
                num_labels: NUM_LABELS,
                label_token: self.label_token,
                mask: self.mask_loss_weight > 0.0,
            });
        }
        Ok(m)
    }

    /// The resolved architecture (an error before the tokenizer was trained).
    pub fn model(&self) -> Result<&CaptionConfig> {
        self.model
            .as_ref()
            .context("config.json has no `model`: the run was never started")
    }
}

/// Image–caption pairs of one split part, decoded and resized.
#[derive(Debug, Clone, Default)]
pub struct CaptionPart {
    pub ids: Vec<String>,
    pub images: Vec<Image>,
    pub captions: Vec<String>,
    /// The frames' multi-label vectors (the label head's targets).
    pub labels: Vec<LabelVector>,
    /// The frames' class masks, when known (the mask head's targets).
    pub masks: Vec<Option<ClassMask>>,
}

impl CaptionPart {
    /// The label vectors of the samples `indices`, `(len, NUM_LABELS)` (a label head's
    /// targets).
    pub fn label_targets(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        let flat: Vec<f32> = indices.iter().flat_map(|&i| self.labels[i]).collect();
        Ok(Tensor::from_vec(flat, (indices.len(), NUM_LABELS), device)?)
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// The three parts of a dataset directory for captioning: its `split.json` when present,
/// else a frame split (80/10/10) drawn from `seed`.
pub struct CaptionData3 {
    pub train: CaptionPart,
    pub val: CaptionPart,
    pub test: CaptionPart,
}

/// Loads `dir` (annotations + frames) for captioning at `size × size`.
pub fn load_caption_data(
    dir: &Path,
    format: InputFormat,
    size: usize,
    seed: u64,
) -> Result<CaptionData3> {
    let ds = DatasetDir::open(dir, LoadOptions::default())
        .with_context(|| format!("--data {}", dir.display()))?;
    caption_parts(&ds, format, size, seed)
}

/// The train/val/test image–caption pairs of `ds` at `size × size`: its `split.json` when
/// present, else a frame split (80/10/10) drawn from `seed`. Interferograms without a caption
/// are left out.
pub fn caption_parts(
    ds: &DatasetDir,
    format: InputFormat,
    size: usize,
    seed: u64,
) -> Result<CaptionData3> {
    let dir = &ds.root;
    let split: Split = match ds.split()? {
        Some(s) => s,
        None => frame_split(&ds.annotations.annotations, seed, [0.8, 0.1, 0.1], &[])
            .with_context(|| format!("{}: splitting by frame", dir.display()))?,
    };
    let load = |part: Part| -> Result<CaptionPart> {
        let samples = ds.frame_samples(format, Some((&split, part)), Some((size, size)))?;
        let loaded: Vec<_> = (0..samples.len())
            .into_par_iter()
            .map(|i| samples.get(i))
            .collect::<Result<_>>()
            .with_context(|| format!("{}: loading the {part} split", dir.display()))?;
        let mut out = CaptionPart::default();
        for s in loaded {
            let Some(c) = s.caption.filter(|c| !c.trim().is_empty()) else {
                continue;
            };
            out.ids.push(s.id);
            out.images.push(s.image);
            out.captions.push(c);
            out.labels.push(s.labels);
            out.masks.push(s.mask);
        }
        Ok(out)
    };
    let data = CaptionData3 {
        train: load(Part::Train)?,
        val: load(Part::Val)?,
        test: load(Part::Test)?,
    };
    ensure!(
        !data.train.is_empty(),
        "{}: the train split has no interferogram with a caption and images",
        dir.display()
    );
    Ok(data)
}

/// The annotations of `--annotations PATH` a caption run uses: loaded with the strict loader,
/// those with an empty caption dropped, then, with `limit > 0`, a seeded subset of `limit`
/// that keeps the class mix ([`stratified_subset`] over [`rarest_label_keys`]: every activity
/// type and intensity keeps its share, rare ones at least one annotation).
pub fn select_annotations(
    path: &Path,
    limit: usize,
    seed: u64,
) -> Result<(AnnotationSet, AnnotationSelection)> {
    let ctx = || format!("--annotations {}", path.display());
    let set = load_annotations(path, LoadOptions::default()).with_context(ctx)?;
    let loaded = set.len();
    let keep: Vec<usize> = (0..set.len())
        .filter(|&i| !set.annotations[i].caption.trim().is_empty())
        .collect();
    ensure!(
        !keep.is_empty(),
        "--annotations {}: none of the {loaded} annotations has a caption",
        path.display()
    );
    let captioned = keep.len();
    let keep = if limit > 0 && limit < keep.len() {
        let labels: Vec<_> = keep
            .iter()
            .map(|&i| set.annotations[i].label_vector())
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(SUBSET_STREAM);
        stratified_subset(&rarest_label_keys(&labels), limit, &mut rng)
            .into_iter()
            .map(|j| keep[j])
            .collect()
    } else {
        keep
    };
    let selection = AnnotationSelection {
        path: path.to_path_buf(),
        loaded,
        captioned,
        limit,
        used: keep.len(),
    };
    let subset = AnnotationSet {
        source: set.source.clone(),
        annotations: keep.iter().map(|&i| set.annotations[i].clone()).collect(),
        files: keep.iter().map(|&i| set.files[i].clone()).collect(),
        bad: Vec::new(),
        misnamed: Vec::new(),
    };
    Ok((subset, selection))
}

/// ChaCha stream of the annotation subset draw (apart from every other use of the seed).
const SUBSET_STREAM: u64 = 0x005a_b5e7;

/// The annotations of `selected` (captions and labels) paired with the interferograms of
/// `dir` by uniqueID. When `dir` has annotations of its own, the images are located with
/// those (frame ID and dates of `dir`); otherwise `dir` is a raw-frame folder and an
/// annotation matches when its interferogram files are there. Errors when nothing matches.
pub fn match_annotations(dir: &Path, selected: &AnnotationSet) -> Result<DatasetDir> {
    let own = match DatasetDir::annotation_source(dir) {
        Some(_) => Some(
            DatasetDir::open(dir, LoadOptions::default())
                .with_context(|| format!("--data {}", dir.display()))?,
        ),
        None => {
            ensure!(
                dir.is_dir(),
                "--data {}: directory not found",
                dir.display()
            );
            None
        }
    };
    let mut set = AnnotationSet {
        source: selected.source.clone(),
        ..Default::default()
    };
    for (a, file) in selected.annotations.iter().zip(&selected.files) {
        let merged = match &own {
            Some(ds) => match ds.annotations.get(a.unique_id) {
                Some(there) => Annotation {
                    frame_id: there.frame_id.clone(),
                    primary_date: there.primary_date,
                    secondary_date: there.secondary_date,
                    ..a.clone()
                },
                None => continue,
            },
            None if InterferogramFiles::locate(dir, a).is_ok() => a.clone(),
            None => continue,
        };
        set.annotations.push(merged);
        set.files.push(file.clone());
    }
    ensure!(
        !set.is_empty(),
        "--data {} and --annotations {}: none of the {} annotations matches an interferogram of \
         --data by uniqueID{}",
        dir.display(),
        selected.source.display(),
        selected.len(),
        if own.is_some() {
            ""
        } else {
            " (no annotations/ there, and no frame folder holds their files)"
        }
    );
    Ok(DatasetDir {
        root: dir.to_path_buf(),
        annotations: set,
    })
}

/// The dataset of a caption run and where it came from: `--annotations` (real captions, with
/// `data` images matched by uniqueID, else images rendered to match them into the cache),
/// `--data` alone, or the built-in synthetic dataset. `bar(len, what)` makes a progress bar
/// for generating images.
pub fn open_caption_dataset(
    data: Option<&Path>,
    annotations: Option<&Path>,
    limit: usize,
    seed: u64,
    bar: &dyn Fn(u64, &str) -> indicatif::ProgressBar,
) -> Result<(DatasetDir, CaptionSource)> {
    let Some(path) = annotations else {
        ensure!(
            limit == 0,
            "--annotation-limit {limit} needs --annotations PATH"
        );
        return Ok(match data {
            Some(dir) => (
                DatasetDir::open(dir, LoadOptions::default())
                    .with_context(|| format!("--data {}", dir.display()))?,
                CaptionSource::Data {
                    dir: dir.to_path_buf(),
                },
            ),
            None => {
                let pb = bar(
                    crate::synth::builtin::FRAMES as u64,
                    "generating the built-in synthetic dataset (once)",
                );
                let dir = crate::synth::builtin::ensure(seed, &|| pb.inc(1))?;
                pb.finish_and_clear();
                (
                    DatasetDir::open(&dir, LoadOptions::default())?,
                    CaptionSource::Builtin { dir },
                )
            }
        });
    };
    let (selected, selection) = select_annotations(path, limit, seed)?;
    if let Some(dir) = data {
        let ds = match_annotations(dir, &selected)?;
        log::info!(
            "{} of {} annotations of {} matched an interferogram of {} by uniqueID",
            ds.annotations.len(),
            selected.len(),
            path.display(),
            dir.display()
        );
        let matched = ds.annotations.len();
        return Ok((
            ds,
            CaptionSource::AnnotationsWithData {
                annotations: selection,
                data: dir.to_path_buf(),
                matched,
            },
        ));
    }
    let root = crate::synth::builtin::cache_root()?;
    let pb = bar(
        selected.len() as u64,
        "rendering frames to match the annotations (once)",
    );
    let (images, report) =
        crate::synth::builtin::ensure_matching_in(&root, seed, &selected.annotations, &|| {
            pb.inc(1)
        })
        .with_context(|| format!("--annotations {}", path.display()))?;
    pb.finish_and_clear();
    if let Some(r) = report {
        log::info!(
            "rendered {} frames matching {} in {:.0} s (labels matched in {}, every flag in {}) into {}",
            r.frames,
            path.display(),
            r.seconds,
            r.labels_matched,
            r.flags_matched,
            images.display()
        );
    }
    let ds = DatasetDir::open(&images, LoadOptions::default())?;
    Ok((
        ds,
        CaptionSource::RenderedFromAnnotations {
            annotations: selection,
            images,
        },
    ))
}

/// The caption model of `cfg` on a fresh `VarMap`, initialised from `cfg.seed`.
pub fn build_model(cfg: &CaptionTrainConfig, device: &Device) -> Result<(VarMap, CaptionModel)> {
    let varmap = VarMap::new();
    let model = CaptionModel::new(
        cfg.model()?,
        seeded_var_builder(&varmap, cfg.seed, DType::F32, device),
    )?;
    Ok((varmap, model))
}

/// Whether the variable `name` is optimised in a run with `freeze_encoder`.
pub fn is_optimised(name: &str, freeze_encoder: bool) -> bool {
    is_trainable_name(name) && !(freeze_encoder && name.starts_with("encoder."))
}

/// Captions of `images` (batched by `batch`), decoded with `search`.
pub fn caption_images(
    model: &CaptionModel,
    tokenizer: &CaptionTokenizer,
    images: &[&Image],
    search: &SearchConfig,
    batch: usize,
    device: &Device,
) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch.max(1)) {
        let x = batch_tensor(chunk, device)?;
        for hyps in model.generate(&x, search)? {
            let best = hyps.first().context("decoding returned no hypothesis")?;
            out.push(tokenizer.decode(&best.tokens)?);
        }
    }
    Ok(out)
}

/// The best-checkpoint metric of caption runs: macro fact-F1 × CIDEr-D. A constant caption
/// can score a high CIDEr-D on InSAR captions, which repeat whole sentences; fact-F1 asks
/// for the right facts. The product weighs a relative loss in either equally.
pub fn fact_cider(fact_f1: f64, cider: f64) -> f64 {
    fact_f1 * cider
}

/// The label head's sigmoid probabilities for `images` (batched by `batch`), one row each;
/// `None` when the model has no label head.
pub fn label_probabilities(
    model: &CaptionModel,
    images: &[&Image],
    batch: usize,
    device: &Device,
) -> Result<Option<Vec<Vec<f32>>>> {
    if model.config().labels.is_none() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch.max(1)) {
        let x = batch_tensor(chunk, device)?;
        let p = model
            .predict_labels(&x)?
            .context("label head without probabilities")?;
        out.extend(p.to_dtype(DType::F32)?.to_vec2::<f32>()?);
    }
    Ok(Some(out))
}

/// Corpus scores (pycocoevalcap rules) of `candidates` against one reference each.
pub fn score_captions(
    ids: &[String],
    candidates: &[String],
    references: &[String],
) -> CaptionScores {
    let ids: Vec<ImageId> = ids.iter().map(|i| ImageId::Str(i.clone())).collect();
    let cands: Vec<String> = candidates.iter().map(|c| tokenize(c)).collect();
    let refs: Vec<Vec<String>> = references.iter().map(|r| vec![tokenize(r)]).collect();
    score_tokenized(&ids, &cands, &refs, false, 0)
}

/// The most frequent caption of `captions` (compared after trimming; ties go to the
/// caption that sorts first), `None` when there is none.
pub fn most_frequent_caption(captions: &[String]) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for c in captions {
        let c = c.trim();
        if !c.is_empty() {
            *counts.entry(c).or_default() += 1;
        }
    }
    let best = counts.values().copied().max()?;
    counts
        .into_iter()
        .find(|&(_, n)| n == best)
        .map(|(c, _)| c.to_string())
}

/// L2-normalised pooled encoder features (global average of C5, inference BatchNorm) of
/// `images`, one row each.
pub fn pooled_features(
    model: &CaptionModel,
    images: &[&Image],
    batch: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch.max(1)) {
        let x = batch_tensor(chunk, device)?;
        let pooled = model.encoder().forward_t(&x, false)?.pooled;
        for mut row in pooled.to_dtype(DType::F32)?.to_vec2::<f32>()? {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
            }
            out.push(row);
        }
    }
    Ok(out)
}

/// Nearest-neighbour caption retrieval: for each row of `queries`, the caption of the row of
/// `gallery` with the largest cosine similarity (rows L2-normalised; ties: the first).
pub fn nearest_neighbour_captions(
    gallery: &[Vec<f32>],
    gallery_captions: &[String],
    queries: &[Vec<f32>],
) -> Result<Vec<String>> {
    ensure!(
        gallery.len() == gallery_captions.len() && !gallery.is_empty(),
        "nearest-neighbour captions need one caption per gallery image and at least one image"
    );
    Ok(queries
        .par_iter()
        .map(|q| {
            let mut best = (0, f32::NEG_INFINITY);
            for (i, g) in gallery.iter().enumerate() {
                let sim: f32 = q.iter().zip(g).map(|(a, b)| a * b).sum();
                if sim > best.1 {
                    best = (i, sim);
                }
            }
            gallery_captions[best.0].clone()
        })
        .collect())
}

/// A finished caption run, loaded for inference: config, tokenizer (checked against the
/// model) and the best (else last) weights.
pub struct LoadedCaptionRun {
    pub cfg: CaptionTrainConfig,
    pub tokenizer: CaptionTokenizer,
    pub model: CaptionModel,
}

/// Loads the caption run in `dir` (`--model`) onto `device`.
pub fn load_caption_run(dir: &Path, device: &Device) -> Result<LoadedCaptionRun> {
    let run = RunDir::new(dir);
    // Caption configs carry no `task`; every other task's do.
    if let Ok(Some(task)) = super::heads::run_task(dir) {
        anyhow::bail!("--model {}: a {task} run, not a caption run", dir.display());
    }
    let cfg: CaptionTrainConfig = run
        .read_checked_config(CaptionTrainConfig::validate)
        .with_context(|| format!("--model {}", dir.display()))?;
    let arch = cfg.model()?.clone();
    let tokenizer = load_run_tokenizer(&run, arch.decoder.vocab_size)?;
    let varmap = VarMap::new();
    let model = CaptionModel::new(
        &arch,
        seeded_var_builder(&varmap, cfg.seed, DType::F32, device),
    )?;
    load_model(&run_weights(&run)?, &varmap)?;
    Ok(LoadedCaptionRun {
        cfg,
        tokenizer,
        model,
    })
}

/// Scores of a caption model and of the two baselines on one split part.
#[derive(Debug)]
pub struct CaptionEvaluation {
    /// The model's caption per image of the part (its order).
    pub captions: Vec<String>,
    pub model: CaptionScores,
    /// The most frequent training caption, given to every image.
    pub most_frequent: CaptionScores,
    /// The caption of the training image nearest in the encoder's pooled feature space.
    pub nearest_neighbour: CaptionScores,
    /// Fact scores (`insar_mm_eval::captions::fact_metrics`) of the model and the baselines.
    pub model_facts: insar_mm_eval::captions::FactScores,
    pub most_frequent_facts: insar_mm_eval::captions::FactScores,
    pub nearest_neighbour_facts: insar_mm_eval::captions::FactScores,
}

/// Decodes `part` with `search` (at most [`decode_limit`] tokens of the `train` captions, as
/// in training) and scores it, together with the baselines built from `train` (most frequent
/// caption; nearest neighbour by cosine of pooled encoder features).
pub fn evaluate_captions(
    loaded: &LoadedCaptionRun,
    train: &CaptionPart,
    part: &CaptionPart,
    search: &SearchConfig,
    device: &Device,
) -> Result<CaptionEvaluation> {
    ensure!(
        !part.is_empty(),
        "the evaluated split has no image with a caption"
    );
    let train_ids = train
        .captions
        .iter()
        .map(|c| loaded.tokenizer.encode(c, Some(loaded.cfg.data.max_len)))
        .collect::<Result<Vec<_>>>()?;
    let search = SearchConfig {
        max_new_tokens: search.max_new_tokens.min(decode_limit(&train_ids)),
        ..*search
    };
    let search = &search;
    let batch = loaded.cfg.data.batch_size.max(16);
    let images: Vec<&Image> = part.images.iter().collect();
    let captions = caption_images(
        &loaded.model,
        &loaded.tokenizer,
        &images,
        search,
        batch,
        device,
    )?;
    let model = score_captions(&part.ids, &captions, &part.captions);
    let frequent = most_frequent_caption(&train.captions)
        .context("the train split has no caption for the most-frequent baseline")?;
    let frequent = vec![frequent; part.len()];
    let most_frequent = score_captions(&part.ids, &frequent, &part.captions);
    let train_images: Vec<&Image> = train.images.iter().collect();
    let gallery = pooled_features(&loaded.model, &train_images, batch, device)?;
    let queries = pooled_features(&loaded.model, &images, batch, device)?;
    let nn = nearest_neighbour_captions(&gallery, &train.captions, &queries)?;
    let nearest_neighbour = score_captions(&part.ids, &nn, &part.captions);
    use insar_mm_eval::captions::fact_scores;
    Ok(CaptionEvaluation {
        model_facts: fact_scores(&captions, &part.captions),
        most_frequent_facts: fact_scores(&frequent, &part.captions),
        nearest_neighbour_facts: fact_scores(&nn, &part.captions),
        captions,
        model,
        most_frequent,
        nearest_neighbour,
    })
}

/// The most tokens greedy decoding generates (`[EOS]` included) for a model trained on the
/// encoded sequences `train_ids` (`[BOS] … [EOS]`): the longest one's length minus `[BOS]`. A
/// longer output can only be a loop; capping it keeps an early, untrained model from
/// decoding to `max_len` in validation.
pub fn decode_limit(train_ids: &[Vec<u32>]) -> usize {
    train_ids.iter().map(Vec::len).max().unwrap_or(2).max(2) - 1
}

/// Captioning as a [`TrainTask`].
pub struct CaptionTask {
    model: CaptionModel,
    tokenizer: CaptionTokenizer,
    train: CaptionPart,
    /// The training captions' token ids (`[BOS] … [EOS]`, cut at `max_len`), encoded once.
    train_ids: Vec<Vec<u32>>,
    /// With `data.flips`: the token ids of the captions mirrored left–right, top–bottom and
    /// both ([`Flip::index`] 1, 2, 3).
    mirrored_ids: Option<[Vec<Vec<u32>>; 3]>,
    val: CaptionPart,
    batch: usize,
    length_group: usize,
    /// Longest training sequence minus `[BOS]`: the most tokens decoding generates.
    decode_tokens: usize,
    label_smoothing: f64,
    /// Weight of the label head's loss (0 or no head: caption loss only).
    label_loss_weight: f64,
    /// Weight of the mask head's loss (0 or no mask head: none).
    mask_loss_weight: f64,
    /// The epoch order (deformation-balanced with `data.balanced`).
    order: EpochOrder,
    mode: EncoderMode,
    device: Device,
}

impl CaptionTask {
    pub fn new(
        cfg: &CaptionTrainConfig,
        model: CaptionModel,
        tokenizer: CaptionTokenizer,
        train: CaptionPart,
        mut val: CaptionPart,
        device: &Device,
    ) -> Result<Self> {
        let n = cfg.data.val_images;
        if n > 0 && val.len() > n {
            val.ids.truncate(n);
            val.images.truncate(n);
            val.captions.truncate(n);
            val.labels.truncate(n);
            val.masks.truncate(n);
        }
        let train_ids = train
            .captions
            .iter()
            .zip(&train.ids)
            .map(|(c, id)| {
                tokenizer
                    .encode(c, Some(cfg.data.max_len))
                    .with_context(|| format!("caption of {id}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let decode_tokens = decode_limit(&train_ids);
        let mirrored_ids = if cfg.data.flips {
            let encode = |h: bool, v: bool| -> Result<Vec<Vec<u32>>> {
                train
                    .captions
                    .iter()
                    .zip(&train.ids)
                    .map(|(c, id)| {
                        tokenizer
                            .encode(&mirror_caption(c, h, v), Some(cfg.data.max_len))
                            .with_context(|| format!("mirrored caption of {id}"))
                    })
                    .collect()
            };
            Some([
                encode(true, false)?,
                encode(false, true)?,
                encode(true, true)?,
            ])
        } else {
            None
        };
        let order = EpochOrder::new(
            &deformation_only(&train.labels),
            cfg.data.balanced,
            cfg.seed,
        )?;
        let head = model.config().labels.clone();
        let label_loss_weight = match &head {
            Some(_) => cfg.label_loss_weight,
            None => 0.0,
        };
        let mask_loss_weight = match &head {
            Some(h) if h.mask => cfg.mask_loss_weight,
            _ => 0.0,
        };
        Ok(Self {
            model,
            tokenizer,
            train,
            train_ids,
            mirrored_ids,
            val,
            batch: cfg.data.batch_size,
            length_group: cfg.data.length_group,
            decode_tokens,
            label_smoothing: cfg.label_smoothing,
            label_loss_weight,
            mask_loss_weight,
            order,
            mode: if cfg.freeze_encoder {
                EncoderMode::Frozen
            } else {
                EncoderMode::Train
            },
            device: device.clone(),
        })
    }

    pub fn model(&self) -> &CaptionModel {
        &self.model
    }

    /// Greedy decoding as in validation and test scoring: at most as many tokens as the
    /// longest training caption (a longer output can only be a loop).
    pub fn search(&self) -> SearchConfig {
        SearchConfig {
            beam_width: 1,
            max_new_tokens: self.decode_tokens,
            length_penalty: 1.0,
        }
    }

    /// The label-smoothed caption loss of training samples `indices` (dropout from `rng`),
    /// with the batch in length groups ([`CaptionModel::caption_loss`]), and the label and
    /// mask heads' losses when they are trained.
    pub fn losses(
        &self,
        indices: &[usize],
        mut rng: Option<&mut rand_chacha::ChaCha8Rng>,
    ) -> Result<TaskLosses> {
        // One flip per sample, drawn before the dropout masks (same stream, so resumable).
        let flips: Vec<Flip> = match (&self.mirrored_ids, rng.as_deref_mut()) {
            (Some(_), Some(r)) => indices.iter().map(|_| Flip::draw(r)).collect(),
            _ => vec![Flip::default(); indices.len()],
        };
        let ids: Vec<&Vec<u32>> = indices
            .iter()
            .zip(&flips)
            .map(|(&i, f)| match (f.index(), &self.mirrored_ids) {
                (0, _) | (_, None) => &self.train_ids[i],
                (k, Some(m)) => &m[k - 1][i],
            })
            .collect();
        let images: Vec<Cow<Image>> = indices
            .iter()
            .zip(&flips)
            .map(|(&i, f)| f.image(&self.train.images[i]))
            .collect();
        let refs: Vec<&Image> = images.iter().map(|c| c.as_ref()).collect();
        let x = batch_tensor(&refs, &self.device)?;
        let mut order: Vec<usize> = (0..indices.len()).collect();
        order.sort_by_key(|&j| ids[j].len());
        let size = if self.length_group == 0 {
            order.len().max(1)
        } else {
            self.length_group
        };
        let pad = self.tokenizer.pad_id();
        let groups = order
            .chunks(size)
            .map(|rows| -> Result<(Tensor, Tensor)> {
                let t = rows.iter().map(|&j| ids[j].len()).max().unwrap_or(0);
                let mut flat = Vec::with_capacity(rows.len() * t);
                for &j in rows {
                    flat.extend_from_slice(ids[j]);
                    flat.extend(std::iter::repeat_n(pad, t - ids[j].len()));
                }
                let r: Vec<u32> = rows.iter().map(|&j| j as u32).collect();
                Ok((
                    Tensor::from_vec(r, rows.len(), &self.device)?,
                    Tensor::from_vec(flat, (rows.len(), t), &self.device)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let enc = self.model.encode_with_labels(&x, self.mode)?;
        let caption = self
            .model
            .caption_loss(&enc.memory, &groups, self.label_smoothing, rng)?;
        let labels = match &enc.label_logits {
            Some(logits) if self.label_loss_weight > 0.0 => {
                let t = self.train.label_targets(indices, &self.device)?;
                Some(bce_with_logits(logits, &t, None)?)
            }
            _ => None,
        };
        let mask = match &enc.mask_logits {
            Some(logits) if self.mask_loss_weight > 0.0 => {
                let masks: Vec<Option<ClassMask>> = indices
                    .iter()
                    .zip(&flips)
                    .map(|(&i, f)| {
                        let part = &self.train;
                        mask_target(part.masks[i].as_ref(), &part.labels[i], &part.images[i])
                            .map(|m| f.mask(&m))
                    })
                    .collect();
                known_mask_loss(logits, &masks)?
            }
            _ => None,
        };
        Ok(TaskLosses {
            caption,
            labels,
            mask,
        })
    }
}

/// The label vectors with only the deformation entry kept: the classes a deformation-balanced
/// [`EpochOrder`] draws from (deformation, none).
pub fn deformation_only(labels: &[LabelVector]) -> Vec<LabelVector> {
    labels
        .iter()
        .map(|l| {
            let mut only = [0.0; NUM_LABELS];
            only[0] = l[0];
            only
        })
        .collect()
}

/// A training sample's mirroring (`data.flips`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flip {
    pub horizontal: bool,
    pub vertical: bool,
}

impl Flip {
    /// Each axis with probability ½.
    pub fn draw(rng: &mut impl rand::Rng) -> Self {
        Self {
            horizontal: rng.random_bool(0.5),
            vertical: rng.random_bool(0.5),
        }
    }

    pub fn any(self) -> bool {
        self.horizontal || self.vertical
    }

    /// 0 none, 1 left–right, 2 top–bottom, 3 both.
    pub fn index(self) -> usize {
        usize::from(self.horizontal) + 2 * usize::from(self.vertical)
    }

    /// The mirrored image (borrowed when there is nothing to mirror).
    pub fn image(self, image: &Image) -> Cow<'_, Image> {
        if !self.any() {
            return Cow::Borrowed(image);
        }
        let mut out = image.clone();
        if self.horizontal {
            flip_horizontal(&mut out);
        }
        if self.vertical {
            flip_vertical(&mut out);
        }
        Cow::Owned(out)
    }

    fn mask(self, mask: &ClassMask) -> ClassMask {
        let mut out = mask.clone();
        if self.horizontal {
            flip_mask_horizontal(&mut out);
        }
        if self.vertical {
            flip_mask_vertical(&mut out);
        }
        out
    }
}

/// The losses of one training batch of a [`CaptionTask`].
pub struct TaskLosses {
    pub caption: Tensor,
    pub labels: Option<Tensor>,
    pub mask: Option<Tensor>,
}

impl TrainTask for CaptionTask {
    fn len(&self) -> usize {
        self.train.len()
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn step(&mut self, batch: Batch<'_>) -> Result<StepOutput> {
        let indices = self.order.batch(&batch);
        let l = self.losses(&indices, Some(batch.rng))?;
        let aux = [
            ("label_loss", &l.labels, self.label_loss_weight),
            ("mask_loss", &l.mask, self.mask_loss_weight),
        ];
        let mut loss = l.caption.clone();
        let mut metrics = Vec::new();
        if aux.iter().any(|(_, part, _)| part.is_some()) {
            metrics.push(("caption_loss".into(), l.caption.to_scalar::<f32>()? as f64));
        }
        for (name, part, weight) in aux {
            if let Some(t) = part {
                metrics.push((name.into(), t.to_scalar::<f32>()? as f64));
                loss = (loss + (t * weight)?)?;
            }
        }
        Ok(StepOutput { loss, metrics })
    }

    fn validate(&mut self) -> Result<Vec<(String, f64)>> {
        if self.val.is_empty() {
            return Ok(Vec::new());
        }
        let search = self.search();
        let images: Vec<&Image> = self.val.images.iter().collect();
        let cands = caption_images(
            &self.model,
            &self.tokenizer,
            &images,
            &search,
            self.batch.max(16),
            &self.device,
        )?;
        let s = score_captions(&self.val.ids, &cands, &self.val.captions);
        let facts = fact_scores(&cands, &self.val.captions);
        let mut metrics = vec![
            ("val_bleu4".into(), s.bleu4),
            ("val_cider".into(), s.cider),
            ("val_fact_f1".into(), facts.fact_f1),
            ("val_deformation_f1".into(), facts.deformation.f1),
            ("val_distinct".into(), facts.distinct_captions as f64),
            ("val_fact_cider".into(), fact_cider(facts.fact_f1, s.cider)),
        ];
        if let Some(probs) =
            label_probabilities(&self.model, &images, self.batch.max(16), &self.device)?
        {
            let (mut tp, mut fp, mut fn_) = (0, 0, 0);
            for (p, l) in probs.iter().zip(&self.val.labels) {
                match (p[0] > 0.5, l[0] > 0.5) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => fn_ += 1,
                    (false, false) => {}
                }
            }
            let f1 = BinaryScores::from_counts(tp, fp, fn_).f1;
            metrics.push(("val_label_deformation_f1".into(), f1));
        }
        Ok(metrics)
    }
}

/// Loads the tokenizer of a run and checks it against the run's model.
pub fn load_run_tokenizer(run: &RunDir, vocab_size: usize) -> Result<CaptionTokenizer> {
    let path = run.path(TOKENIZER_FILE);
    let tok = CaptionTokenizer::from_file(&path)?;
    tok.check_model_vocab(vocab_size, &run.root.display().to_string())
        .with_context(|| format!("{}", path.display()))?;
    Ok(tok)
}

/// What [`train_caption`] returns.
#[derive(Debug)]
pub struct CaptionOutcome {
    pub outcome: Outcome,
    /// Test-split scores of the best (else last) model; `None` when interrupted or the
    /// test split is empty.
    pub test: Option<CaptionScores>,
}

/// Trains (or, with `resume`, continues) the caption run `run` on `data`, then scores the
/// best model on the test split.
pub fn train_caption(
    cfg: &mut CaptionTrainConfig,
    data: CaptionData3,
    run: RunDir,
    resume: bool,
    device: &Device,
    options: RunOptions,
) -> Result<CaptionOutcome> {
    cfg.validate()?;
    // The encoder to start from (none on resume: the checkpoint has the weights).
    let mut pretrained = None;
    let tokenizer = if resume {
        load_run_tokenizer(&run, cfg.model()?.decoder.vocab_size)?
    } else {
        let tok = CaptionTokenizer::train(&data.train.captions, &cfg.tokenizer)
            .context("training the tokenizer on the train captions")?;
        let mut arch = cfg.architecture(tok.vocab_size())?;
        let loaded = start_encoder(&mut cfg.encoder, &mut arch.encoder, cfg.data.input_format)?;
        cfg.model = Some(arch);
        cfg.validate().with_context(|| match &loaded {
            Some(p) => p.origin.clone(),
            None => "caption config".into(),
        })?;
        pretrained = loaded;
        tok
    };
    let (varmap, model) = build_model(cfg, device)?;
    load_pretrained(pretrained.as_ref(), &varmap)?;
    let params = trainable_params(&varmap, |n| is_optimised(n, cfg.freeze_encoder));
    let optimizer = Optimizer::new(cfg.optim.clone(), params)?;
    let test = data.test;
    let mut task = CaptionTask::new(cfg, model, tokenizer.clone(), data.train, data.val, device)?;
    let loop_cfg = cfg.train.loop_config(task.len(), task.batch_size())?;
    let mut trainer = Trainer::open(
        run.clone(),
        resume,
        &*cfg,
        varmap.clone(),
        optimizer,
        cfg.schedule.clone(),
        loop_cfg,
        cfg.seed,
        options,
    )?;
    if !resume {
        tokenizer.save(&run.path(TOKENIZER_FILE))?;
    }
    let outcome = trainer.run(&mut task)?;
    if matches!(outcome, Outcome::Interrupted { .. }) || test.is_empty() {
        return Ok(CaptionOutcome {
            outcome,
            test: None,
        });
    }
    load_model(&run_weights(&run)?, &varmap)?;
    let search = task.search();
    let images: Vec<&Image> = test.images.iter().collect();
    let cands = caption_images(
        task.model(),
        &tokenizer,
        &images,
        &search,
        cfg.data.batch_size.max(16),
        device,
    )?;
    let scores = score_captions(&test.ids, &cands, &test.captions);
    crate::data::atomic::write_atomic(
        &run.path(TEST_SCORES_FILE),
        serde_json::to_string_pretty(&scores.to_json())?.as_bytes(),
    )?;
    Ok(CaptionOutcome {
        outcome,
        test: Some(scores),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_merges_over_defaults_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "preset = \"small\"\n[data]\nbatch_size = 8\n").unwrap();
        let cfg = CaptionTrainConfig::from_file(&path).unwrap();
        let def = CaptionTrainConfig::default();
        assert_eq!(cfg.preset, "small");
        assert_eq!(cfg.data.batch_size, 8);
        assert_eq!(cfg.data.image_size, def.data.image_size);
        assert_eq!(cfg.train, def.train);
        assert_eq!(cfg.optim, def.optim);
        // The shipped config equals the built-in defaults.
        let shipped = CaptionTrainConfig::from_file(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/caption-tiny.toml"
        )))
        .unwrap();
        assert_eq!(shipped, def);
        std::fs::write(&path, "[data]\nbatch_sise = 8\n").unwrap();
        let err = format!("{:#}", CaptionTrainConfig::from_file(&path).unwrap_err());
        assert!(
            err.contains("batch_sise") && err.contains("c.toml"),
            "{err}"
        );
        let bad = CaptionTrainConfig {
            preset: "huge".into(),
            ..def.clone()
        };
        assert!(format!("{:#}", bad.validate().unwrap_err()).contains("huge"));
    }

    #[test]
    fn balanced_order_draws_deformation_half_the_time() {
        // 1 deformation frame among 20 (with a type and an intensity that must not split it
        // into classes of its own).
        let mut labels = vec![[0.0; NUM_LABELS]; 20];
        labels[3][0] = 1.0;
        labels[3][2] = 1.0;
        labels[3][9] = 1.0;
        let only = deformation_only(&labels);
        assert_eq!(only[3][0], 1.0);
        assert!(only[3][1..].iter().all(|&v| v == 0.0));
        let mut order = EpochOrder::new(&only, true, 42).unwrap();
        let mut hits = 0;
        for epoch in 0..20 {
            hits += (0..20).filter(|&i| order.map(epoch, i) == 3).count();
        }
        // 400 draws, each a deformation with probability 1/2.
        assert!((150..=250).contains(&hits), "{hits} of 400 draws");
        let mut plain = EpochOrder::new(&only, false, 42).unwrap();
        assert!((0..20).all(|i| plain.map(0, i) == i));
    }

    #[test]
    fn architecture_follows_tokenizer_and_input_format() {
        let mut cfg = CaptionTrainConfig::default();
        cfg.data.input_format = InputFormat::Phase;
        cfg.data.max_len = 40;
        let m = cfg.architecture(300).unwrap();
        assert_eq!(m.decoder.vocab_size, 300);
        assert_eq!(m.decoder.max_len, 40);
        assert_eq!(m.encoder.in_channels, 1);
        assert!(is_optimised("decoder.layers.0.fc1.weight", true));
        assert!(!is_optimised("encoder.stem.conv.weight", true));
        assert!(is_optimised("encoder.stem.conv.weight", false));
    }

    #[test]
    fn scores_are_perfect_for_identical_captions_and_lower_otherwise() {
        let ids: Vec<String> = (0..3).map(|i| i.to_string()).collect();
        let refs: Vec<String> = vec![
            "a mogi source of high intensity can be detected in the centre.".into(),
            "no deformation activity can be detected.".into(),
            "turbulent mixing effect can be detected around the area.".into(),
        ];
        let same = score_captions(&ids, &refs, &refs);
        assert!((same.bleu4 - 1.0).abs() < 1e-9, "{same:?}");
        let other: Vec<String> = vec![refs[1].clone(), refs[2].clone(), refs[0].clone()];
        let worse = score_captions(&ids, &other, &refs);
        assert!(
            worse.bleu4 < same.bleu4 && worse.cider < same.cider,
            "{worse:?}"
        );
    }
}
