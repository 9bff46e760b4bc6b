//! What the two vision heads (`train classify`, `train segment`) share: labelled data split
//! in three parts and decoded up front ([`LabeledData`]), the `[data]` config section
//! ([`HeadData`]), the `task` tag of a run's `config.json` ([`run_task`], [`expect_task`]),
//! loading a pretrained encoder into a head model ([`load_encoder`]) and the epoch order with
//! optional class-balanced oversampling ([`EpochOrder`]) and the choice of a run's
//! test-time augmentation on the val split ([`choose_test_time_augment`]).
//!
//! # Scale
//!
//! Training frames are resized to `data.image_size`; the median side of the frames before
//! resizing is recorded as `data.source_size`. `predict` cuts larger images into windows of
//! `source_size` pixels (so a window shows the same ground extent as a training frame),
//! resizes each window to `image_size`, and blends the outputs back at frame resolution.

pub mod recipe;

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_nn::VarMap;
use insar_mm_models::encoder::EncoderConfig;
use insar_mm_models::heads::TestTimeAugment;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::checkpoint::{run_weights, RunDir, CONFIG_FILE};
use super::config::PretrainConfig;
use super::driver::{Batch, BestMetric, MetricMode};
use super::optim::read_tensors;
use crate::data::array::{ClassMask, Image};
use crate::data::augment::sample_rng;
use crate::data::dataset::DatasetDir;
use crate::data::frames::InputFormat;
use crate::data::loader::LoadOptions;
use crate::data::patches::{PatchDataset, LABELED_DIR};
use crate::data::resample::{resize_area, resize_nearest};
use crate::data::sample::{LabelVector, Sample, SampleSource};
use crate::data::sampler::{shuffled_order, stratified_subset, ClassBalancedSampler};
use crate::data::split::{frame_split, Part, Split};

pub use crate::train::checkpoint::TEST_SCORES_FILE;

/// `[data]` of a head run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadData {
    /// `--data DIR` (`None`: the built-in synthetic dataset of the run seed).
    pub dir: Option<PathBuf>,
    /// Side of the square model input; frames are resized to it.
    pub image_size: usize,
    pub batch_size: usize,
    pub input_format: InputFormat,
    /// Class-balanced oversampling of the training set (each draw picks a class uniformly,
    /// then a sample of it; classes = rarest positive label, `data::sampler`).
    pub balanced: bool,
    /// Share of the training split kept, in (0, 1] (label-efficiency experiments): a
    /// seeded subset drawn from the run seed, stratified so that deformation and
    /// non-deformation samples keep their proportions ([`label_subset`]). Val and test stay
    /// whole.
    pub label_fraction: f64,
    /// Median side (pixels) of the training frames before resizing; filled when the run
    /// starts. The default sliding window of `predict` on larger images.
    pub source_size: Option<usize>,
}

impl Default for HeadData {
    fn default() -> Self {
        Self {
            dir: None,
            image_size: 64,
            batch_size: 32,
            input_format: InputFormat::default(),
            balanced: false,
            label_fraction: 1.0,
            source_size: None,
        }
    }
}

/// The largest model input side any config accepts (training or a run loaded for inference).
pub const MAX_IMAGE_SIZE: usize = 4096;

impl HeadData {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.image_size >= 32,
            "data.image_size = {} is too small (at least 32: the encoder downsamples 32×)",
            self.image_size
        );
        ensure!(
            self.image_size <= MAX_IMAGE_SIZE,
            "data.image_size = {} is too large (at most {MAX_IMAGE_SIZE})",
            self.image_size
        );
        ensure!(self.batch_size >= 1, "data.batch_size must be at least 1");
        validate_label_fraction(self.label_fraction)
    }
}

/// `data.label_fraction` must be in (0, 1].
pub fn validate_label_fraction(f: f64) -> Result<()> {
    ensure!(
        f > 0.0 && f <= 1.0,
        "data.label_fraction = {f:?} must be in (0, 1] (the share of the training split kept)"
    );
    Ok(())
}

/// The training samples kept by `data.label_fraction = fraction`: `round(fraction × n)`
/// of them (at least one of each of deformation and non-deformation when both occur), a
/// seeded subset ([`stratified_subset`]) keeping the share of deformation samples. Sorted
/// indices; all of them when `fraction` is 1.
pub fn label_subset(labels: &[LabelVector], fraction: f64, seed: u64) -> Result<Vec<usize>> {
    validate_label_fraction(fraction)?;
    let n = labels.len();
    let keys: Vec<usize> = labels.iter().map(|l| usize::from(l[0] > 0.5)).collect();
    let classes = usize::from(keys.contains(&0)) + usize::from(keys.contains(&1));
    let keep = ((fraction * n as f64).round() as usize).max(classes).min(n);
    Ok(stratified_subset(
        &keys,
        keep,
        &mut sample_rng(seed ^ 0x1abe_1f4a, 0),
    ))
}

/// The encoder preset `name` (tiny, resnet18, resnet34, resnet50) with `channels` inputs and
/// an optional base width (stage widths `[w, 2w, 4w, 8w]`).
pub fn preset_encoder(name: &str, width: Option<usize>, channels: usize) -> Result<EncoderConfig> {
    let mut e = EncoderConfig::preset(name)
        .map_err(|e| anyhow::anyhow!("preset: {e}"))?
        .with_in_channels(channels);
    if let Some(w) = width {
        ensure!(w > 0, "width must be positive");
        e.widths = [w, 2 * w, 4 * w, 8 * w];
        e.stem_width = w;
    }
    Ok(e)
}

/// Labelled samples of one split part, decoded and resized to the model input.
#[derive(Debug, Clone, Default)]
pub struct LabeledPart {
    pub ids: Vec<String>,
    pub images: Vec<Image>,
    pub labels: Vec<LabelVector>,
    /// Class-id masks at the image size (`None` where the source has none).
    pub masks: Vec<Option<ClassMask>>,
    /// `(height, width)` of each sample before resizing.
    pub source_sizes: Vec<(usize, usize)>,
}

impl LabeledPart {
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Adds a sample, resized to `size × size` (area-averaged image, nearest mask).
    pub fn push(&mut self, sample: Sample, size: usize) -> Result<()> {
        let (h, w) = (sample.image.height, sample.image.width);
        let resize = (h, w) != (size, size);
        let image = if resize {
            resize_area(&sample.image, size, size)?
        } else {
            sample.image
        };
        let mask = match sample.mask {
            Some(m) if resize => Some(resize_nearest(&m, size, size)?),
            m => m,
        };
        self.ids.push(sample.id);
        self.images.push(image);
        self.labels.push(sample.labels);
        self.masks.push(mask);
        self.source_sizes.push((h, w));
        Ok(())
    }

    /// Samples resized to `size × size`.
    pub fn from_samples(samples: Vec<Sample>, size: usize) -> Result<Self> {
        let mut part = Self::default();
        for s in samples {
            part.push(s, size)?;
        }
        Ok(part)
    }

    /// Every sample of `source` (decoded in parallel), resized to `size × size`.
    pub fn from_source(source: &dyn SampleSource, size: usize) -> Result<Self> {
        let samples: Vec<Sample> = (0..source.len())
            .into_par_iter()
            .map(|i| source.get(i).with_context(|| format!("sample {i}")))
            .collect::<Result<_>>()?;
        Self::from_samples(samples, size)
    }

    /// The same samples at another size (no-op when already there).
    pub fn resized(self, size: usize) -> Result<Self> {
        if self
            .images
            .iter()
            .all(|im| (im.height, im.width) == (size, size))
        {
            return Ok(self);
        }
        let mut out = Self::default();
        let sizes = self.source_sizes.clone();
        for (i, (((id, image), labels), mask)) in self
            .ids
            .into_iter()
            .zip(self.images)
            .zip(self.labels)
            .zip(self.masks)
            .enumerate()
        {
            out.push(
                Sample {
                    id,
                    frame_id: String::new(),
                    image,
                    mask,
                    labels,
                    caption: None,
                },
                size,
            )?;
            if let Some(s) = sizes.get(i) {
                out.source_sizes[i] = *s;
            }
        }
        Ok(out)
    }

    /// Median of the longer side before resizing (`None` when empty).
    pub fn median_source_side(&self) -> Option<usize> {
        let mut sides: Vec<usize> = self.source_sizes.iter().map(|&(h, w)| h.max(w)).collect();
        sides.sort_unstable();
        sides.get(sides.len() / 2).copied()
    }

    /// The samples at `indices` (in that order).
    pub fn select(&self, indices: &[usize]) -> Self {
        Self {
            ids: indices.iter().map(|&i| self.ids[i].clone()).collect(),
            images: indices.iter().map(|&i| self.images[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            masks: indices.iter().map(|&i| self.masks[i].clone()).collect(),
            source_sizes: indices
                .iter()
                .filter_map(|&i| self.source_sizes.get(i).copied())
                .collect(),
        }
    }

    /// The first `n` samples (all when `n` is 0 or larger than the part).
    pub fn truncate(&mut self, n: usize) {
        if n > 0 && n < self.len() {
            self.ids.truncate(n);
            self.images.truncate(n);
            self.labels.truncate(n);
            self.masks.truncate(n);
            self.source_sizes.truncate(n.min(self.source_sizes.len()));
        }
    }
}

/// Train, validation and test parts.
#[derive(Debug, Clone, Default)]
pub struct LabeledData {
    pub train: LabeledPart,
    pub val: LabeledPart,
    pub test: LabeledPart,
}

impl LabeledData {
    pub fn part(&self, part: Part) -> &LabeledPart {
        match part {
            Part::Train => &self.train,
            Part::Val => &self.val,
            Part::Test => &self.test,
        }
    }

    /// Keeps the [`label_subset`] of the training part (val and test stay whole); returns
    /// `(kept, before)`.
    pub fn keep_label_fraction(&mut self, fraction: f64, seed: u64) -> Result<(usize, usize)> {
        let before = self.train.len();
        if fraction < 1.0 {
            let keep = label_subset(&self.train.labels, fraction, seed)?;
            self.train = self.train.select(&keep);
        } else {
            validate_label_fraction(fraction)?;
        }
        Ok((self.train.len(), before))
    }
}

/// Where a head run's samples come from.
#[derive(Debug, Clone)]
pub enum HeadSource {
    /// The built-in synthetic dataset of the run seed (`synth::builtin`, generated once).
    Builtin,
    /// A dataset directory (annotations + frames; `split.json`, else a seeded frame split).
    Dir(PathBuf),
    /// Samples already in memory (resized to `data.image_size` when they differ).
    Parts(Box<LabeledData>),
}

/// The dataset directory of the built-in synthetic data (generated on first use).
pub fn builtin_dir(seed: u64, progress: bool) -> Result<PathBuf> {
    let bar = crate::progress::bar(
        crate::synth::builtin::FRAMES as u64,
        "generating the built-in synthetic dataset (once)",
        progress,
    );
    let d = crate::synth::builtin::ensure(seed, &|| bar.inc(1))?;
    bar.finish_and_clear();
    Ok(d)
}

/// The split of a dataset directory: its `split.json`, else a frame split (80/10/10) drawn
/// from `seed`.
pub fn dataset_split(ds: &DatasetDir, dir: &Path, seed: u64) -> Result<Split> {
    match ds.split()? {
        Some(s) => Ok(s),
        None => frame_split(&ds.annotations.annotations, seed, [0.8, 0.1, 0.1], &[])
            .with_context(|| format!("--data {}: splitting by frame", dir.display())),
    }
}

/// One part of the dataset directory `dir` at `size × size`.
pub fn load_part(
    ds: &DatasetDir,
    dir: &Path,
    split: &Split,
    part: Part,
    format: InputFormat,
    size: usize,
) -> Result<LabeledPart> {
    let samples = ds.frame_samples(format, Some((split, part)), None)?;
    LabeledPart::from_source(&samples, size)
        .with_context(|| format!("--data {}: loading the {part} split", dir.display()))
}

/// A `--data` folder of the head tasks, opened once: a patch folder (`labeled/` inside,
/// `data patches` output) or a dataset directory's full frames, with its split.
pub struct HeadDataDir {
    dir: PathBuf,
    format: InputFormat,
    parts: HeadParts,
}

enum HeadParts {
    /// The patches of each part: by the folder's `split.json` (uniqueIDs) when it has one,
    /// else split by frame with the seed (80/10/10).
    Patches([PatchDataset; 3]),
    Frames(Box<DatasetDir>, Split),
}

impl HeadDataDir {
    pub fn open(dir: &Path, format: InputFormat, seed: u64) -> Result<Self> {
        let parts = if dir.join(LABELED_DIR).is_dir() {
            let patches = PatchDataset::open(dir, format)
                .with_context(|| format!("--data {}", dir.display()))?;
            let split_path = dir.join(crate::data::dataset::SPLIT_FILE);
            HeadParts::Patches(if split_path.is_file() {
                let split = Split::read(&split_path)?;
                Part::ALL.map(|p| patches.clone().restrict(&split, p))
            } else {
                patches.frame_parts(seed, [0.8, 0.1, 0.1])?
            })
        } else {
            let ds = DatasetDir::open(dir, LoadOptions::default())
                .with_context(|| format!("--data {}", dir.display()))?;
            let split = dataset_split(&ds, dir, seed)?;
            HeadParts::Frames(Box::new(ds), split)
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            format,
            parts,
        })
    }

    /// One part at `size × size`.
    pub fn part(&self, part: Part, size: usize) -> Result<LabeledPart> {
        let dir = &self.dir;
        match &self.parts {
            HeadParts::Patches(parts) => LabeledPart::from_source(&parts[part.index()], size)
                .with_context(|| format!("--data {}: loading the {part} patches", dir.display())),
            HeadParts::Frames(ds, split) => load_part(ds, dir, split, part, self.format, size),
        }
    }
}

/// Loads the three parts of `dir` (see [`HeadDataDir`]) at `size × size`.
pub fn load_labeled_data(
    dir: &Path,
    format: InputFormat,
    size: usize,
    seed: u64,
) -> Result<LabeledData> {
    let opened = HeadDataDir::open(dir, format, seed)?;
    let data = LabeledData {
        train: opened.part(Part::Train, size)?,
        val: opened.part(Part::Val, size)?,
        test: opened.part(Part::Test, size)?,
    };
    ensure!(
        !data.train.is_empty(),
        "--data {}: the train split has no interferogram with images",
        dir.display()
    );
    Ok(data)
}

/// Resolves `source` into the three parts at `size × size`.
pub fn resolve_source(
    source: HeadSource,
    format: InputFormat,
    size: usize,
    seed: u64,
    progress: bool,
) -> Result<(LabeledData, Option<PathBuf>)> {
    match source {
        HeadSource::Builtin => {
            let dir = builtin_dir(seed, progress)?;
            Ok((load_labeled_data(&dir, format, size, seed)?, Some(dir)))
        }
        HeadSource::Dir(dir) => Ok((load_labeled_data(&dir, format, size, seed)?, Some(dir))),
        HeadSource::Parts(parts) => {
            let LabeledData { train, val, test } = *parts;
            ensure!(!train.is_empty(), "the training part is empty");
            let data = LabeledData {
                train: train.resized(size)?,
                val: val.resized(size)?,
                test: test.resized(size)?,
            };
            if let Some(im) = data.train.images.first() {
                ensure!(
                    im.channels == format.channels(),
                    "the samples have {} channels but data.input_format {:?} gives {}",
                    im.channels,
                    format,
                    format.channels()
                );
            }
            Ok((data, None))
        }
    }
}

#[derive(Deserialize)]
struct TaskTag {
    #[serde(default)]
    task: Option<String>,
}

/// The `task` recorded in a run's `config.json` (`None` for runs without one, e.g.
/// `train pretrain` or `train caption`).
pub fn run_task(run: &Path) -> Result<Option<String>> {
    let path = run.join(CONFIG_FILE);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "{}: cannot read (is {} a run directory?)",
            path.display(),
            run.display()
        )
    })?;
    let tag: TaskTag = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: invalid JSON", path.display()))?;
    Ok(tag.task)
}

/// Errors unless the run in `run` was trained for `task`.
pub fn expect_task(run: &Path, task: &str) -> Result<()> {
    match run_task(run)? {
        Some(t) if t == task => Ok(()),
        Some(t) => bail!(
            "{}: this is a `{t}` run (config.json task = {t:?}), not a `{task}` model; \
             use `insar-mm predict {t}` / `insar-mm eval {t}` or a run of `insar-mm train {task}`",
            run.display()
        ),
        None => bail!(
            "{}: config.json has no task: not a `{task}` model (train one with `insar-mm train {task}`)",
            run.display()
        ),
    }
}

/// The encoder of a run usable as `--encoder`: a `train pretrain` run (SimCLR), or a
/// `classify`/`segment` run (whose encoder was trained supervised).
#[derive(Debug, Clone)]
pub struct EncoderRun {
    pub root: PathBuf,
    pub encoder: EncoderConfig,
    pub input_format: InputFormat,
    /// The weights file the encoder is read from.
    pub weights: PathBuf,
}

#[derive(Deserialize)]
struct HeadModelPart {
    model: Option<HeadModelEncoder>,
    data: HeadDataFormat,
}

#[derive(Deserialize)]
struct HeadModelEncoder {
    encoder: EncoderConfig,
}

#[derive(Deserialize)]
struct HeadDataFormat {
    #[serde(default)]
    input_format: InputFormat,
}

/// Reads the encoder architecture and weights file of the run `root` (`--encoder RUN`).
pub fn encoder_run(root: &Path) -> Result<EncoderRun> {
    let run = RunDir::new(root);
    let ctx = || format!("--encoder {}", root.display());
    let (encoder, input_format) = match run_task(root).with_context(ctx)? {
        Some(t) if t == "classify" || t == "segment" => {
            let v: HeadModelPart = run.read_config().with_context(ctx)?;
            let m = v.model.with_context(|| {
                format!(
                    "--encoder {}: config.json has no resolved model (the run never started)",
                    root.display()
                )
            })?;
            (m.encoder, v.data.input_format)
        }
        Some(t) => bail!(
            "--encoder {}: a `{t}` run has no reusable encoder (expected a `train pretrain`, `train classify` or `train segment` run)",
            root.display()
        ),
        None => {
            let cfg: PretrainConfig = run.read_config().with_context(|| {
                format!(
                    "--encoder {}: not a `train pretrain` run (config.json does not parse as one)",
                    root.display()
                )
            })?;
            cfg.validate().with_context(|| {
                format!("--encoder {}", run.path(CONFIG_FILE).display())
            })?;
            (cfg.model.encoder().with_context(ctx)?, cfg.data.input_format)
        }
    };
    let weights = run_weights(&run).with_context(ctx)?;
    Ok(EncoderRun {
        root: root.to_path_buf(),
        encoder,
        input_format,
        weights,
    })
}

/// Copies the `encoder.*` tensors of `from` into the `encoder.*` variables of `varmap`
/// (every one must be present with the same shape); returns how many were set.
pub fn load_encoder(from: &EncoderRun, varmap: &VarMap) -> Result<usize> {
    load_encoder_weights(&from.weights, varmap)
        .with_context(|| format!("--encoder {}", from.root.display()))
}

/// Copies the `encoder.*` tensors of the safetensors file `weights` into the `encoder.*`
/// variables of `varmap`; every one must be present with the same shape (errors name the
/// file and the tensor). Returns how many were set. Shared by every model that starts from a
/// pretrained encoder (heads, captioning, `bench ssl`).
pub fn load_encoder_weights(weights: &Path, varmap: &VarMap) -> Result<usize> {
    let (tensors, _) = read_tensors(weights, &varmap_device(varmap))?;
    load_encoder_tensors(&tensors, weights, varmap)
}

/// The device of `varmap`'s variables (the CPU when it has none).
pub fn varmap_device(varmap: &VarMap) -> candle_core::Device {
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    data.values()
        .next()
        .map_or(candle_core::Device::Cpu, |v| v.device().clone())
}

/// [`load_encoder_weights`] from tensors already read; `weights` names their origin in
/// errors.
pub fn load_encoder_tensors(
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    weights: &Path,
    varmap: &VarMap,
) -> Result<usize> {
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut set = 0;
    let mut missing = Vec::new();
    for (name, var) in data.iter().filter(|(n, _)| n.starts_with("encoder.")) {
        match tensors.get(name) {
            None => missing.push(name.clone()),
            Some(t) => {
                ensure!(
                    t.dims() == var.dims(),
                    "{}: {name} has shape {:?}, the model expects {:?}",
                    weights.display(),
                    t.dims(),
                    var.dims()
                );
                // Float widths convert (an f16 or f64 export works); integers are no weights.
                ensure!(
                    t.dtype().is_float(),
                    "{}: {name} has dtype {:?}, not a float: not encoder weights",
                    weights.display(),
                    t.dtype()
                );
                crate::train::checkpoint::check_finite(name, t)
                    .with_context(|| format!("{}: the weights are unusable", weights.display()))?;
                var.set(&t.to_dtype(var.dtype())?)?;
                set += 1;
            }
        }
    }
    if !missing.is_empty() {
        missing.sort();
        bail!(
            "{}: {} encoder variables are missing, e.g. no tensor {}",
            weights.display(),
            missing.len(),
            missing[0]
        );
    }
    ensure!(set > 0, "the model has no encoder.* variables");
    Ok(set)
}

/// The epoch order of the training samples: the loop's own shuffle, optionally composed with
/// class-balanced oversampling drawn from `(seed, epoch)` — a pure function of both, so a
/// resumed run draws the same samples.
#[derive(Debug, Clone)]
pub struct EpochOrder {
    sampler: Option<ClassBalancedSampler>,
    seed: u64,
    cached: Option<(u64, Vec<usize>)>,
}

impl EpochOrder {
    /// Plain order (`balanced = false`) or balanced by the rarest positive label.
    pub fn new(labels: &[LabelVector], balanced: bool, seed: u64) -> Result<Self> {
        let sampler = if balanced {
            Some(ClassBalancedSampler::from_labels(labels)?)
        } else {
            None
        };
        Ok(Self {
            sampler,
            seed,
            cached: None,
        })
    }

    /// The training sample that position `i` (`0..len`, as the loop hands it out) of epoch
    /// `epoch` stands for.
    pub fn map(&mut self, epoch: u64, i: usize) -> usize {
        let Some(sampler) = &self.sampler else {
            return i;
        };
        if self.cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut rng = sample_rng(self.seed ^ 0xba1a_2ced, epoch);
            self.cached = Some((epoch, sampler.epoch(&mut rng)));
        }
        self.cached.as_ref().map_or(i, |(_, o)| o[i])
    }

    /// The training samples of one micro-batch of the loop.
    pub fn batch(&mut self, batch: &Batch<'_>) -> Vec<usize> {
        batch
            .indices
            .iter()
            .map(|&i| self.map(batch.epoch, i))
            .collect()
    }
}

/// Indices `0..n` in a seeded random order (for picking a validation subset).
pub fn seeded_subset(n: usize, keep: usize, seed: u64) -> Vec<usize> {
    let mut order = shuffled_order(n, &mut sample_rng(seed, 0));
    order.truncate(keep.min(n));
    order.sort_unstable();
    order
}

/// A run's test-time augmentation as chosen on the val split, with what every candidate
/// scored (written to `test_scores.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct TtaChoice {
    pub chosen: TestTimeAugment,
    /// The validation metric that chose (the run's best-checkpoint metric).
    pub metric: String,
    /// `(candidate, its value of metric)`, in the order tried.
    pub val: Vec<(TestTimeAugment, f64)>,
}

impl TtaChoice {
    /// `{"chosen": "flips", "metric": "val_macro_f1", "val": {"none": 0.41, "flips": 0.44}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let val: serde_json::Map<String, serde_json::Value> = self
            .val
            .iter()
            .map(|&(tta, v)| (tta.name().to_string(), serde_json::json!(v)))
            .collect();
        serde_json::json!({"chosen": self.chosen, "metric": self.metric, "val": val})
    }
}

/// The candidate whose validation metric `by` is best. `val_metrics` scores the val split
/// predicted in the given views and returns the head's validation metrics, the same keys its
/// `validate` logs. A tie keeps the earlier candidate, so with [`TestTimeAugment::ALL`]
/// the extra model calls must earn a strict gain; a NaN value never wins. A choice among
/// several is logged.
pub fn choose_test_time_augment(
    candidates: &[TestTimeAugment],
    by: &BestMetric,
    mut val_metrics: impl FnMut(TestTimeAugment) -> Result<Vec<(String, f64)>>,
) -> Result<TtaChoice> {
    ensure!(
        !candidates.is_empty(),
        "no test-time augmentation to choose from"
    );
    let mut val = Vec::with_capacity(candidates.len());
    for &tta in candidates {
        let metrics = val_metrics(tta)?;
        let Some(&(_, value)) = metrics.iter().find(|(k, _)| *k == by.name) else {
            let keys: Vec<&str> = metrics.iter().map(|(k, _)| k.as_str()).collect();
            bail!(
                "test-time augmentation is chosen by {:?}, which is not a validation metric ({})",
                by.name,
                keys.join(", ")
            );
        };
        val.push((tta, value));
    }
    let better = |a: f64, b: f64| match by.mode {
        MetricMode::Max => a > b,
        MetricMode::Min => a < b,
    };
    let mut chosen = val[0];
    for &(tta, value) in &val[1..] {
        if !value.is_nan() && (chosen.1.is_nan() || better(value, chosen.1)) {
            chosen = (tta, value);
        }
    }
    if val.len() > 1 {
        log::info!(
            "test-time augmentation chosen on the val split by {}: {:?} ({:.4?})",
            by.name,
            chosen.0,
            val
        );
    }
    Ok(TtaChoice {
        chosen: chosen.0,
        metric: by.name.clone(),
        val,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--encoder RUN` weights: shapes, float dtypes and finite values are checked, naming
    /// the tensor; another float width converts.
    #[test]
    fn encoder_tensors_must_be_finite_floats_of_the_right_shape() {
        use candle_core::{DType, Device, Tensor};
        let varmap = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        vb.get_with_hints((2, 2), "encoder.w", candle_nn::Init::Const(0.0))
            .unwrap();
        vb.get_with_hints(3, "head.b", candle_nn::Init::Const(0.0))
            .unwrap();
        let load = |t: Tensor| {
            let tensors = std::collections::HashMap::from([("encoder.w".to_string(), t)]);
            load_encoder_tensors(&tensors, Path::new("enc.safetensors"), &varmap)
                .map_err(|e| format!("{e:#}"))
        };
        let f64_ok = Tensor::new(&[[1.0f64, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        assert_eq!(load(f64_ok), Ok(1));
        let err = load(Tensor::new(&[[1u32, 2], [3, 4]], &Device::Cpu).unwrap()).unwrap_err();
        assert!(
            err.contains("encoder.w has dtype U32, not a float"),
            "{err}"
        );
        let nan = Tensor::new(&[[1.0f32, f32::NAN], [3.0, 4.0]], &Device::Cpu).unwrap();
        let err = load(nan).unwrap_err();
        assert!(
            err.starts_with("enc.safetensors: the weights are unusable")
                && err.contains("encoder.w is not finite"),
            "{err}"
        );
        let err = load(Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap()).unwrap_err();
        assert!(err.contains("encoder.w has shape [4]"), "{err}");
    }

    #[test]
    fn test_time_augment_is_chosen_by_the_val_metric() {
        let by = |mode| BestMetric {
            name: "val_f1".into(),
            mode,
        };
        let values = |v: [f64; 3]| {
            move |tta: TestTimeAugment| {
                let i = TestTimeAugment::ALL.iter().position(|&t| t == tta).unwrap();
                Ok(vec![("val_other".into(), 9.0), ("val_f1".into(), v[i])])
            }
        };
        let pick = |v, mode| {
            choose_test_time_augment(&TestTimeAugment::ALL, &by(mode), values(v))
                .unwrap()
                .chosen
        };
        use TestTimeAugment::{Dihedral, Flips, None as Plain};
        assert_eq!(pick([0.5, 0.6, 0.55], MetricMode::Max), Flips);
        assert_eq!(pick([0.5, 0.6, 0.55], MetricMode::Min), Plain);
        // A tie keeps the cheaper views; NaN never wins and is replaced by any number.
        assert_eq!(pick([0.6, 0.6, 0.6], MetricMode::Max), Plain);
        assert_eq!(pick([0.5, f64::NAN, 0.7], MetricMode::Max), Dihedral);
        assert_eq!(pick([f64::NAN, 0.1, 0.05], MetricMode::Max), Flips);
        let c = choose_test_time_augment(
            &TestTimeAugment::ALL,
            &by(MetricMode::Max),
            values([0.1, 0.2, 0.3]),
        )
        .unwrap();
        assert_eq!(c.metric, "val_f1");
        assert_eq!(c.val, vec![(Plain, 0.1), (Flips, 0.2), (Dihedral, 0.3)]);
        assert_eq!(
            c.to_json(),
            serde_json::json!({"chosen": "dihedral", "metric": "val_f1",
                "val": {"none": 0.1, "flips": 0.2, "dihedral": 0.3}})
        );
        let missing = BestMetric {
            name: "val_nope".into(),
            mode: MetricMode::Max,
        };
        let err = choose_test_time_augment(&[Plain], &missing, values([0.0; 3])).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("val_nope") && err.contains("val_other, val_f1"),
            "{err}"
        );
    }

    #[test]
    fn balanced_order_is_seeded_and_oversamples_rare_labels() {
        // 90 negatives, 10 positives of label 3.
        let mut labels = vec![[0f32; 10]; 100];
        for l in labels.iter_mut().take(10) {
            l[0] = 1.0;
            l[3] = 1.0;
        }
        let mut a = EpochOrder::new(&labels, true, 7).unwrap();
        let mut b = EpochOrder::new(&labels, true, 7).unwrap();
        let ea: Vec<usize> = (0..100).map(|i| a.map(2, i)).collect();
        let eb: Vec<usize> = (0..100).map(|i| b.map(2, i)).collect();
        assert_eq!(ea, eb);
        let rare = ea.iter().filter(|&&i| i < 10).count();
        assert!(
            (30..=70).contains(&rare),
            "{rare} of 100 draws are positives"
        );
        let e3: Vec<usize> = (0..100).map(|i| a.map(3, i)).collect();
        assert_ne!(ea, e3, "every epoch draws anew");
        let mut plain = EpochOrder::new(&labels, false, 7).unwrap();
        assert_eq!(plain.map(5, 42), 42);
    }

    #[test]
    fn task_tags_name_the_run() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), r#"{"task": "segment"}"#).unwrap();
        assert_eq!(run_task(dir.path()).unwrap().as_deref(), Some("segment"));
        assert!(expect_task(dir.path(), "segment").is_ok());
        let err = format!("{:#}", expect_task(dir.path(), "classify").unwrap_err());
        assert!(
            err.contains("`segment` run") && err.contains("classify"),
            "{err}"
        );
        std::fs::write(dir.path().join(CONFIG_FILE), r#"{"preset": "tiny"}"#).unwrap();
        let err = format!("{:#}", expect_task(dir.path(), "classify").unwrap_err());
        assert!(err.contains("no task"), "{err}");
        let err = format!("{:#}", run_task(&dir.path().join("nope")).unwrap_err());
        assert!(err.contains("run directory"), "{err}");
    }

    #[test]
    fn parts_resize_images_and_masks() {
        let mut mask = ClassMask::zeros(8, 8);
        mask.set(0, 0, 3);
        let s = Sample {
            id: "a".into(),
            frame_id: "f".into(),
            image: Image::zeros(2, 8, 8),
            mask: Some(mask),
            labels: [0.0; 10],
            caption: None,
        };
        let p = LabeledPart::from_samples(vec![s], 4).unwrap();
        assert_eq!((p.images[0].height, p.images[0].width), (4, 4));
        let m = p.masks[0].as_ref().unwrap();
        assert_eq!((m.height, m.width, m.get(0, 0)), (4, 4, 3));
        assert_eq!(p.median_source_side(), Some(8));
        let q = p.resized(6).unwrap();
        assert_eq!(q.images[0].height, 6);
        assert_eq!(q.source_sizes, vec![(8, 8)]);
    }

    /// `n` samples of 4×4, the first `deformed` of them deformation; ids `s0`, `s1`, ….
    fn part_of(prefix: &str, n: usize, deformed: usize) -> LabeledPart {
        let samples = (0..n)
            .map(|i| {
                let mut labels = [0.0; 10];
                labels[0] = f32::from(u8::from(i < deformed));
                Sample {
                    id: format!("{prefix}{i}"),
                    frame_id: "f".into(),
                    image: Image::zeros(1, 4, 4),
                    mask: Some(ClassMask::zeros(4, 4)),
                    labels,
                    caption: None,
                }
            })
            .collect();
        LabeledPart::from_samples(samples, 4).unwrap()
    }

    #[test]
    fn label_fraction_keeps_a_seeded_stratified_subset_of_train_only() {
        let part = part_of("s", 100, 20);
        let a = label_subset(&part.labels, 0.1, 42).unwrap();
        assert_eq!(a, label_subset(&part.labels, 0.1, 42).unwrap(), "seeded");
        assert_ne!(a, label_subset(&part.labels, 0.1, 7).unwrap());
        assert_eq!(a.len(), 10);
        // 20 % deformation before, 2 of 10 after.
        assert_eq!(a.iter().filter(|&&i| i < 20).count(), 2);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        // 1 %: one sample would drop a kind; both are kept.
        let tiny = label_subset(&part.labels, 0.01, 42).unwrap();
        assert_eq!(tiny.len(), 2);
        assert_eq!(tiny.iter().filter(|&&i| i < 20).count(), 1);
        // Only non-deformation samples: one is enough.
        assert_eq!(
            label_subset(&part_of("n", 50, 0).labels, 0.001, 1)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(label_subset(&part.labels, 1.0, 3).unwrap().len(), 100);

        let mut data = LabeledData {
            train: part,
            val: part_of("v", 10, 3),
            test: part_of("t", 12, 4),
        };
        let (val, test) = (data.val.ids.clone(), data.test.ids.clone());
        assert_eq!(data.keep_label_fraction(0.25, 42).unwrap(), (25, 100));
        assert_eq!((data.val.ids.clone(), data.test.ids.clone()), (val, test));
        assert_eq!(data.train.images.len(), 25);
        assert_eq!(data.train.masks.len(), 25);
        assert_eq!(data.train.source_sizes.len(), 25);
        let want: Vec<String> = label_subset(&part_of("s", 100, 20).labels, 0.25, 42)
            .unwrap()
            .iter()
            .map(|i| format!("s{i}"))
            .collect();
        assert_eq!(data.train.ids, want);
        assert_eq!(data.train.labels.iter().filter(|l| l[0] > 0.5).count(), 5);

        for bad in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
            let err = label_subset(&data.val.labels, bad, 1)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("data.label_fraction") && err.contains("(0, 1]"),
                "{err}"
            );
            let d = HeadData {
                label_fraction: bad,
                ..HeadData::default()
            };
            assert!(format!("{:#}", d.validate().unwrap_err()).contains("data.label_fraction"));
            assert!(data.keep_label_fraction(bad, 1).is_err());
        }
    }
}
