//! The SSL-vs-scratch experiment of Bountos et al. (2021), "Self-supervised contrastive
//! learning for volcanic unrest detection" (Table II), on synthetic interferograms:
//! `insar-mm bench ssl`.
//!
//! 1. **Data** (all from the run seed, cached in `<out>/data`): an unlabeled pool and a
//!    labelled pool from the in-distribution generator (`[scenes]`), an in-distribution test
//!    set from the same generator, and an **out-of-distribution** set (`[ood]`: by default the
//!    other LiCSAR rendering style, another pixel size and a stronger atmosphere — the
//!    analogue of the paper's C1 set). Every set has its own seed derived from the run seed,
//!    so the sets share no frame (volcano, terrain) and no interferogram.
//! 2. **Few labels**: `sets.positives` deformation and `sets.negatives` non-deformation
//!    interferograms drawn (seeded) from the labelled pool — the paper used 150 positives.
//! 3. **SimCLR** pretraining of the encoder on the unlabeled pool (`[pretrain]`, the
//!    `train pretrain` config and loop).
//! 4. Three binary deformation-vs-none classifiers, trained on the same few labels with the
//!    same head initialisation and batch order: (a) a linear probe on the SimCLR encoder,
//!    (b) a linear probe on a randomly initialised encoder (the same random weights (c)
//!    starts from), (c) the whole encoder fine-tuned from that random initialisation.
//! 5. Each is evaluated on the in-distribution test set and the OOD set: ACC, TP, FP, FN,
//!    TN, precision, recall and F1 at `threshold` (the paper's Table II columns), plus AUROC
//!    and AP of the scores, with `insar_mm_eval::classification`.
//!
//! Outputs in `<out>`: `table.md`, `results.json` (atomic writes), `config.json` (the
//! resolved config), `runs/<name>` (each training's run directory: config, checkpoints,
//! `metrics.jsonl`, loss plot) and the cached data. The same seed gives the same table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use insar_mm_eval::classification::{auroc, average_precision, BinaryConfusion};
use insar_mm_models::heads::{
    Classifier, ClassifierConfig, ClassifierLoss, EncoderMode, GlobalPool,
};
use insar_mm_models::nn::seeded_var_builder;
use rand::{Rng, RngCore};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::array::{batch_tensor, Image};
use crate::data::atomic::write_atomic;
use crate::data::augment::{sample_rng, AugmentConfig, Augmenter};
use crate::data::frames::InputFormat;
use crate::data::sample::{LabelVector, Sample, SampleSource, NUM_LABELS};
use crate::synth::scene::SceneConfig;
use crate::synth::stream::SyntheticStream;
use crate::train::checkpoint::{run_weights, RunDir, MODEL_FILE};
use crate::train::config::{from_table, merge_tables, preset_table, PretrainConfig, TrainSection};
use crate::train::driver::{Batch, StepOutput, TrainTask, Trainer};
use crate::train::heads::load_encoder_weights;
use crate::train::optim::{
    read_tensors, serialize_tensors, trainable_params, OptimConfig, Optimizer,
};
use crate::train::pretrain::{self, RunOptions};
use crate::train::schedule::ScheduleConfig;

/// The committed experiment config (`configs/experiments/ssl-vs-scratch.toml`), used when
/// no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../configs/experiments/ssl-vs-scratch.toml");

/// Version of the cached data sets (part of each cache key); bump when their content changes.
/// Bumped when the cached model inputs change (2: `[cos φ, sin φ, coherence]` shrunk by area
/// averaging, the stream's default since the heads' input fix).
pub const DATA_VERSION: u32 = 2;

/// Sizes of the generated sets and of the few-label training set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSizes {
    /// Unlabeled interferograms for SimCLR (in-distribution generator; labels never read).
    pub unlabeled: usize,
    /// Labelled interferograms (in-distribution) the few labels are drawn from.
    pub labelled_pool: usize,
    /// Deformation interferograms in the few-label training set.
    pub positives: usize,
    /// Non-deformation interferograms in the few-label training set.
    pub negatives: usize,
    /// In-distribution test interferograms.
    pub test: usize,
    /// Out-of-distribution test interferograms.
    pub ood: usize,
}

/// How one classifier is trained on the few labels (`[probe]`, `[finetune]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadTraining {
    pub batch_size: usize,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Run length (`steps` or `epochs`) and loop settings.
    pub train: TrainSection,
    /// Augmentations of the training images (omitted fields take the SimCLR recipe's
    /// defaults; leave the table out for none).
    #[serde(default)]
    pub augment: Option<AugmentConfig>,
}

impl HeadTraining {
    fn validate(&self, key: &str) -> Result<()> {
        ensure!(self.batch_size > 0, "{key}.batch_size must be at least 1");
        self.optim.validate().with_context(|| format!("[{key}]"))?;
        self.schedule
            .validate()
            .with_context(|| format!("[{key}]"))?;
        if let Some(a) = &self.augment {
            a.validate().with_context(|| format!("[{key}]"))?;
        }
        Ok(())
    }
}

/// The resolved experiment config (what `config.json` holds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SslBenchConfig {
    /// The run seed (`--seed`): every data set, initialisation, batch order and view.
    pub seed: u64,
    /// SimCLR pretraining; its `model` is the encoder of all three methods and its
    /// `data.image_size` the input size of every model.
    pub pretrain: PretrainConfig,
    /// The in-distribution generator (unlabeled pool, labelled pool, test set).
    pub scenes: SceneConfig,
    /// The out-of-distribution generator.
    pub ood: SceneConfig,
    pub sets: SetSizes,
    /// The two linear probes.
    pub probe: HeadTraining,
    /// Fine-tuning from scratch.
    pub finetune: HeadTraining,
    /// Decision threshold on the deformation probability.
    pub threshold: f64,
    /// How every method's classifier pools the C5 feature map (`max` finds a pattern
    /// covering a few per cent of the frame; `avg` is the usual SimCLR linear-probe protocol).
    pub pool: GlobalPool,
}

/// The file layout before resolution: `[pretrain]` is a pretrain config on its preset,
/// `[scenes]` overrides the built-in generator config, `[ood]` overrides `[scenes]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    pretrain: toml::Table,
    #[serde(default)]
    scenes: toml::Table,
    #[serde(default)]
    ood: toml::Table,
    sets: SetSizes,
    probe: HeadTraining,
    finetune: HeadTraining,
    #[serde(default = "default_threshold")]
    threshold: f64,
    #[serde(default = "default_pool")]
    pool: GlobalPool,
}

fn default_pool() -> GlobalPool {
    GlobalPool::Max
}

fn default_threshold() -> f64 {
    0.5
}

/// `base` (serialised) overlaid with `over`, deserialised again: field-level overrides whose
/// errors name the key.
fn overlay<T: Serialize + serde::de::DeserializeOwned>(
    base: &T,
    over: toml::Table,
    origin: &str,
) -> Result<T> {
    let mut table = match toml::Value::try_from(base).context("serialising the base config")? {
        toml::Value::Table(t) => t,
        _ => bail!("the base config of {origin} is not a table"),
    };
    merge_tables(&mut table, over);
    from_table(table, origin)
}

impl SslBenchConfig {
    /// Reads and resolves a config file.
    pub fn from_file(path: &Path, seed: u64) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config {}: cannot read", path.display()))?;
        Self::from_toml(&text, &path.display().to_string(), seed)
    }

    /// Resolves the TOML `text` (`origin` names it in errors) for the run seed `seed`.
    pub fn from_toml(text: &str, origin: &str, seed: u64) -> Result<Self> {
        let table: toml::Table = text
            .parse()
            .with_context(|| format!("{origin}: invalid TOML"))?;
        let raw: RawConfig = from_table(table, origin)?;
        let mut pretrain_table = raw.pretrain;
        let preset = match pretrain_table.get("preset") {
            None => "tiny".to_string(),
            Some(toml::Value::String(p)) => p.clone(),
            Some(_) => bail!("{origin}: pretrain.preset must be a string"),
        };
        let mut table = preset_table(&preset).with_context(|| format!("{origin}: [pretrain]"))?;
        pretrain_table.insert("preset".into(), toml::Value::String(preset));
        merge_tables(&mut table, pretrain_table);
        let mut pretrain: PretrainConfig = from_table(table, &format!("{origin}: [pretrain]"))?;
        pretrain.seed = seed;
        let scenes = overlay(
            &crate::synth::builtin::config(),
            raw.scenes,
            &format!("{origin}: [scenes]"),
        )?;
        let ood = overlay(&scenes, raw.ood, &format!("{origin}: [ood]"))?;
        let cfg = Self {
            seed,
            pretrain,
            scenes,
            ood,
            sets: raw.sets,
            probe: raw.probe,
            finetune: raw.finetune,
            threshold: raw.threshold,
            pool: raw.pool,
        };
        cfg.validate().with_context(|| origin.to_string())?;
        Ok(cfg)
    }

    /// Checks every section; errors name the key.
    pub fn validate(&self) -> Result<()> {
        self.pretrain.validate().context("[pretrain]")?;
        self.scenes
            .check()
            .map_err(|e| anyhow::anyhow!("[scenes]: {e}"))?;
        self.ood
            .check()
            .map_err(|e| anyhow::anyhow!("[ood]: {e}"))?;
        let s = &self.sets;
        ensure!(
            s.positives > 0 && s.negatives > 0,
            "sets.positives and sets.negatives must be at least 1"
        );
        ensure!(
            s.test > 0 && s.ood > 0,
            "sets.test and sets.ood must be at least 1"
        );
        ensure!(
            s.positives + s.negatives <= s.labelled_pool,
            "sets.positives + sets.negatives = {} exceed sets.labelled_pool = {}",
            s.positives + s.negatives,
            s.labelled_pool
        );
        ensure!(
            s.unlabeled > self.pretrain.data.val_samples,
            "sets.unlabeled = {} must exceed pretrain.data.val_samples = {}",
            s.unlabeled,
            self.pretrain.data.val_samples
        );
        self.probe.validate("probe")?;
        self.finetune.validate("finetune")?;
        ensure!(
            self.threshold.is_finite() && (0.0..=1.0).contains(&self.threshold),
            "threshold = {:?} must lie in [0, 1]",
            self.threshold
        );
        Ok(())
    }

    /// Side of every model input.
    pub fn image_size(&self) -> usize {
        self.pretrain.data.image_size
    }

    /// The seed of purpose `tag` (a data set, an initialisation), derived from the run seed.
    pub fn derived_seed(&self, tag: u64) -> u64 {
        sample_rng(self.seed ^ 0x55b1_be7c, tag).next_u64()
    }
}

/// The generated data sets of the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataSet {
    Unlabeled,
    LabelledPool,
    Test,
    Ood,
}

impl DataSet {
    pub const ALL: [DataSet; 4] = [
        DataSet::Unlabeled,
        DataSet::LabelledPool,
        DataSet::Test,
        DataSet::Ood,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DataSet::Unlabeled => "unlabeled",
            DataSet::LabelledPool => "labelled-pool",
            DataSet::Test => "test",
            DataSet::Ood => "ood",
        }
    }

    /// Generator config, size and seed of this set.
    pub fn spec(self, cfg: &SslBenchConfig) -> (&SceneConfig, usize, u64) {
        let s = &cfg.sets;
        let (scenes, n) = match self {
            DataSet::Unlabeled => (&cfg.scenes, s.unlabeled),
            DataSet::LabelledPool => (&cfg.scenes, s.labelled_pool),
            DataSet::Test => (&cfg.scenes, s.test),
            DataSet::Ood => (&cfg.ood, s.ood),
        };
        (scenes, n, cfg.derived_seed(self as u64))
    }
}

/// What identifies a cached set: regenerate when any of it differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheKey {
    version: u32,
    set: DataSet,
    seed: u64,
    count: usize,
    size: usize,
    format: InputFormat,
    scenes: SceneConfig,
}

/// Model inputs and label vectors of one set, in sample order.
#[derive(Debug, Clone)]
pub struct SetData {
    pub samples: Vec<Sample>,
}

impl SetData {
    /// The deformation flag (label vector entry 0) of every sample.
    pub fn deformation(&self) -> Vec<bool> {
        self.samples.iter().map(|s| s.labels[0] > 0.5).collect()
    }

    /// Distinct frames (volcanoes) of the set.
    pub fn frames(&self) -> usize {
        let mut f: Vec<&str> = self.samples.iter().map(|s| s.frame_id.as_str()).collect();
        f.sort_unstable();
        f.dedup();
        f.len()
    }
}

impl SampleSource for SetData {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        self.samples
            .get(index)
            .cloned()
            .with_context(|| format!("sample index {index} out of range (0..{})", self.len()))
    }
}

/// A cached set whose samples' partners are their nuisance twins from `stream` (the
/// generator that made the set).
struct WithTwins<'a> {
    data: &'a SetData,
    stream: SyntheticStream,
}

impl SampleSource for WithTwins<'_> {
    fn len(&self) -> usize {
        self.data.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        self.data.get(index)
    }

    fn partner(&self, index: usize, draw: u64) -> Result<Option<Image>> {
        self.stream.partner(index, draw)
    }
}

/// Loads set `set` from `cache` when its cache key matches, else renders it (in parallel,
/// `tick` per sample) and writes the cache atomically.
pub fn load_or_generate(
    cfg: &SslBenchConfig,
    set: DataSet,
    cache: &Path,
    tick: &(dyn Fn() + Sync),
) -> Result<(SetData, bool)> {
    let (scenes, count, seed) = set.spec(cfg);
    let size = cfg.image_size();
    let format = InputFormat::default();
    let key = CacheKey {
        version: DATA_VERSION,
        set,
        seed,
        count,
        size,
        format,
        scenes: scenes.clone(),
    };
    let path = cache.join(format!("{}.safetensors", set.name()));
    if path.is_file() {
        if let Some(data) = read_cache(&path, &key)? {
            return Ok((data, false));
        }
        log::info!("{}: made with other settings; regenerating", path.display());
    }
    let stream = SyntheticStream::new(scenes.clone(), seed, count)?
        .with_size(size, size)
        .with_format(format);
    let samples: Vec<Sample> = (0..count)
        .into_par_iter()
        .map(|i| {
            let mut s = stream
                .get(i)
                .with_context(|| format!("generating {} sample {i}", set.name()))?;
            s.mask = None;
            s.caption = None;
            tick();
            Ok(s)
        })
        .collect::<Result<_>>()?;
    let data = SetData { samples };
    write_cache(&path, &key, &data)?;
    Ok((data, true))
}

fn write_cache(path: &Path, key: &CacheKey, data: &SetData) -> Result<()> {
    let n = data.len();
    let first = data.samples.first().context("an empty data set")?;
    let (c, h, w) = (first.image.channels, first.image.height, first.image.width);
    let mut pixels = Vec::with_capacity(n * c * h * w);
    let mut labels = Vec::with_capacity(n * NUM_LABELS);
    for s in &data.samples {
        pixels.extend_from_slice(&s.image.data);
        labels.extend_from_slice(&s.labels);
    }
    let ids: Vec<(&str, &str)> = data
        .samples
        .iter()
        .map(|s| (s.id.as_str(), s.frame_id.as_str()))
        .collect();
    let metadata = HashMap::from([
        ("key".to_string(), serde_json::to_string(key)?),
        ("ids".to_string(), serde_json::to_string(&ids)?),
    ]);
    let tensors = vec![
        (
            "images".to_string(),
            Tensor::from_vec(pixels, (n, c, h, w), &Device::Cpu)?,
        ),
        (
            "labels".to_string(),
            Tensor::from_vec(labels, (n, NUM_LABELS), &Device::Cpu)?,
        ),
    ];
    write_atomic(path, &serialize_tensors(tensors, metadata)?)
}

/// The cached set at `path`, or `None` when it was made with another key.
fn read_cache(path: &Path, key: &CacheKey) -> Result<Option<SetData>> {
    let (tensors, metadata) = read_tensors(path, &Device::Cpu)?;
    let stored: Option<CacheKey> = metadata
        .get("key")
        .and_then(|k| serde_json::from_str(k).ok());
    if stored.as_ref() != Some(key) {
        return Ok(None);
    }
    let bad = |what: &str| anyhow::anyhow!("{}: {what}; delete the file", path.display());
    let ids: Vec<(String, String)> = metadata
        .get("ids")
        .and_then(|k| serde_json::from_str(k).ok())
        .ok_or_else(|| bad("no sample ids"))?;
    let images = tensors.get("images").ok_or_else(|| bad("no `images`"))?;
    let labels = tensors.get("labels").ok_or_else(|| bad("no `labels`"))?;
    let (n, c, h, w) = images.dims4().map_err(|_| bad("`images` is not N×C×H×W"))?;
    ensure!(
        n == ids.len() && labels.dims() == [n, NUM_LABELS],
        bad("inconsistent tensor shapes")
    );
    let pixels: Vec<f32> = images.flatten_all()?.to_vec1()?;
    let labels: Vec<f32> = labels.flatten_all()?.to_vec1()?;
    let per = c * h * w;
    let samples = ids
        .into_iter()
        .enumerate()
        .map(|(i, (id, frame_id))| {
            let mut l: LabelVector = [0.0; NUM_LABELS];
            l.copy_from_slice(&labels[i * NUM_LABELS..(i + 1) * NUM_LABELS]);
            Ok(Sample {
                id,
                frame_id,
                image: Image::from_vec(c, h, w, pixels[i * per..(i + 1) * per].to_vec())?,
                mask: None,
                labels: l,
                caption: None,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Some(SetData { samples }))
}

/// The few-label training set: `positives` deformation and `negatives` other samples of
/// `pool`, each group a seeded choice, in pool order. Errors when the pool has too few.
pub fn select_few_labels(
    pool: &SetData,
    positives: usize,
    negatives: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    let flags = pool.deformation();
    let mut chosen = Vec::with_capacity(positives + negatives);
    for (want, label, key) in [
        (positives, true, "sets.positives"),
        (negatives, false, "sets.negatives"),
    ] {
        let mut group: Vec<usize> = (0..pool.len()).filter(|&i| flags[i] == label).collect();
        ensure!(
            group.len() >= want,
            "{key} = {want}, but the labelled pool of {} holds only {} {} interferograms: raise sets.labelled_pool",
            pool.len(),
            group.len(),
            if label { "deformation" } else { "non-deformation" }
        );
        let mut rng = sample_rng(seed, u64::from(label));
        for k in 0..want {
            let j = rng.random_range(k..group.len());
            group.swap(k, j);
        }
        chosen.extend_from_slice(&group[..want]);
    }
    chosen.sort_unstable();
    Ok(chosen)
}

/// The three compared methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// (a) Linear probe on the SimCLR encoder.
    SimclrLinear,
    /// (b) Linear probe on a randomly initialised encoder.
    RandomLinear,
    /// (c) The whole encoder fine-tuned from the random initialisation.
    ScratchFinetune,
}

impl Method {
    pub const ALL: [Method; 3] = [
        Method::SimclrLinear,
        Method::RandomLinear,
        Method::ScratchFinetune,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::SimclrLinear => "simclr-linear",
            Method::RandomLinear => "random-linear",
            Method::ScratchFinetune => "scratch-finetune",
        }
    }

    /// Row label of the table.
    pub fn label(self) -> &'static str {
        match self {
            Method::SimclrLinear => "SimCLR encoder + linear probe",
            Method::RandomLinear => "random encoder + linear probe",
            Method::ScratchFinetune => "supervised from scratch (fine-tuned)",
        }
    }

    fn mode(self) -> EncoderMode {
        match self {
            Method::SimclrLinear | Method::RandomLinear => EncoderMode::Linear,
            Method::ScratchFinetune => EncoderMode::default(),
        }
    }

    fn training(self, cfg: &SslBenchConfig) -> &HeadTraining {
        match self {
            Method::SimclrLinear | Method::RandomLinear => &cfg.probe,
            Method::ScratchFinetune => &cfg.finetune,
        }
    }
}

/// Binary deformation-vs-none training of a [`Classifier`] with one logit.
struct BinaryTask<'a> {
    model: &'a Classifier,
    images: Vec<&'a Image>,
    targets: Vec<f32>,
    batch: usize,
    augmenter: Option<Augmenter>,
    device: Device,
}

impl TrainTask for BinaryTask<'_> {
    fn len(&self) -> usize {
        self.images.len()
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn step(&mut self, batch: Batch<'_>) -> Result<StepOutput> {
        let seed: u64 = batch.rng.random();
        let views: Vec<Image> = match &self.augmenter {
            None => batch
                .indices
                .iter()
                .map(|&i| self.images[i].clone())
                .collect(),
            Some(aug) => batch
                .indices
                .par_iter()
                .enumerate()
                .map(|(k, &i)| {
                    let mut rng = sample_rng(seed, k as u64);
                    aug.apply(self.images[i], None, &mut rng).map(|v| v.0)
                })
                .collect::<Result<_>>()?,
        };
        let refs: Vec<&Image> = views.iter().collect();
        let x = batch_tensor(&refs, &self.device)?;
        let t: Vec<f32> = batch.indices.iter().map(|&i| self.targets[i]).collect();
        let y = Tensor::from_vec(t.clone(), (t.len(), 1), &self.device)?;
        let logits = self.model.forward_t(&x, true)?;
        let loss = self.model.loss(&logits, &y)?;
        let z: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let correct = z
            .iter()
            .zip(&t)
            .filter(|(z, t)| (**z >= 0.0) == (**t > 0.5))
            .count();
        Ok(StepOutput {
            loss,
            metrics: vec![("acc".into(), correct as f64 / t.len() as f64)],
        })
    }
}

/// Deformation probabilities of `samples` (evaluation mode, batches of `batch`).
pub fn predict(
    model: &Classifier,
    samples: &[Sample],
    batch: usize,
    device: &Device,
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(batch.max(1)) {
        let refs: Vec<&Image> = chunk.iter().map(|s| &s.image).collect();
        let p = model.predict(&batch_tensor(&refs, device)?)?;
        let p: Vec<f32> = p.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        out.extend(p.into_iter().map(f64::from));
    }
    Ok(out)
}

/// One method × test set row of Table II.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    pub method: Method,
    pub test_set: DataSet,
    pub samples: usize,
    pub accuracy: f64,
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
    pub tn: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Threshold-free: area under the ROC curve of the probabilities (`None` when the set
    /// has a single class).
    pub auroc: Option<f64>,
    /// Average precision of the probabilities.
    pub ap: Option<f64>,
}

impl ResultRow {
    pub fn new(
        method: Method,
        test_set: DataSet,
        scores: &[f64],
        truth: &[bool],
        threshold: f64,
    ) -> Result<Self> {
        let c = BinaryConfusion::from_scores(scores, truth, threshold)
            .map_err(|e| anyhow::anyhow!("{} on {}: {e}", method.name(), test_set.name()))?;
        Ok(Self {
            method,
            test_set,
            samples: c.total(),
            accuracy: c.accuracy(),
            tp: c.tp,
            fp: c.fp,
            fn_: c.fn_,
            tn: c.tn,
            precision: c.precision(),
            recall: c.recall(),
            f1: c.f1(),
            auroc: auroc(scores, truth),
            ap: average_precision(scores, truth),
        })
    }
}

/// Per-set description for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetSummary {
    pub set: DataSet,
    pub samples: usize,
    pub deformation: usize,
    pub frames: usize,
    pub seed: u64,
}

/// Everything `results.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SslBenchReport {
    pub seed: u64,
    pub image_size: usize,
    pub sets: Vec<SetSummary>,
    /// Few-label training set: deformation and non-deformation interferograms.
    pub train_positives: usize,
    pub train_negatives: usize,
    /// SimCLR's last validation values (`val_loss`, `val_top1`) when it validated.
    pub pretrain_val: Vec<(String, f64)>,
    pub pretrain_steps: u64,
    /// The pretrain run whose encoder was probed (`--encoder`); `None`: pretrained here.
    #[serde(default)]
    pub encoder_from: Option<PathBuf>,
    pub results: Vec<ResultRow>,
    /// Wall-clock seconds per phase (not reproducible; everything else is).
    pub seconds: Vec<(String, f64)>,
    pub config: SslBenchConfig,
}

/// Where the run writes; `cache` defaults to `<out>/data`.
#[derive(Debug, Clone)]
pub struct BenchPaths {
    pub out: PathBuf,
    pub cache: PathBuf,
}

impl BenchPaths {
    pub fn new(out: impl Into<PathBuf>) -> Self {
        let out = out.into();
        let cache = out.join("data");
        Self { out, cache }
    }

    pub fn run(&self, name: &str) -> PathBuf {
        self.out.join("runs").join(name)
    }
}

/// Trains one method on the few labels (its run directory is replaced) and returns the model.
fn train_method(
    cfg: &SslBenchConfig,
    method: Method,
    train: &[&Sample],
    simclr_model: &Path,
    paths: &BenchPaths,
    device: &Device,
    progress: bool,
) -> Result<Classifier> {
    let training = method.training(cfg);
    let mut head = ClassifierConfig::new(cfg.pretrain.model.encoder()?);
    head.num_labels = 1;
    head.mode = method.mode();
    head.loss = ClassifierLoss::Bce;
    head.pool = cfg.pool;
    let varmap = VarMap::new();
    // The same initial weights for every method: (a) then replaces the encoder's.
    let init_seed = cfg.derived_seed(100);
    let model = Classifier::new(
        &head,
        seeded_var_builder(&varmap, init_seed, DType::F32, device),
    )?;
    if method == Method::SimclrLinear {
        load_encoder_weights(simclr_model, &varmap)
            .with_context(|| format!("loading the SimCLR encoder of {}", method.name()))?;
    }
    let params = trainable_params(&varmap, |n| model.is_trainable(n));
    let optimizer = Optimizer::new(training.optim.clone(), params)?;
    let run_dir = paths.run(method.name());
    remove_run(&run_dir)?;
    let task_images: Vec<&Image> = train.iter().map(|s| &s.image).collect();
    let targets: Vec<f32> = train.iter().map(|s| s.labels[0]).collect();
    let augmenter = training.augment.clone().map(Augmenter::new).transpose()?;
    let mut task = BinaryTask {
        model: &model,
        images: task_images,
        targets,
        batch: training.batch_size,
        augmenter,
        device: device.clone(),
    };
    let loop_cfg = training.train.loop_config(task.len(), task.batch_size())?;
    #[derive(Serialize)]
    struct RunRecord<'a> {
        method: Method,
        classifier: &'a ClassifierConfig,
        training: &'a HeadTraining,
        init_seed: u64,
        encoder_from: Option<&'a Path>,
    }
    let record = RunRecord {
        method,
        classifier: &head,
        training,
        init_seed,
        encoder_from: (method == Method::SimclrLinear).then_some(simclr_model),
    };
    let mut trainer = Trainer::start(
        RunDir::new(&run_dir),
        &record,
        varmap,
        optimizer,
        training.schedule.clone(),
        loop_cfg,
        cfg.derived_seed(101),
        false,
    )?
    .with_progress(progress);
    trainer.run(&mut task)?;
    drop(task);
    Ok(model)
}

/// Removes a previous run directory of this benchmark (only a folder that looks like one).
fn remove_run(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    ensure!(
        dir.join(crate::train::checkpoint::CONFIG_FILE).is_file() || is_empty_dir(dir),
        "{}: exists and is not a run directory; choose another --out",
        dir.display()
    );
    std::fs::remove_dir_all(dir).with_context(|| format!("{}: cannot remove", dir.display()))
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// Runs the whole experiment and writes `table.md`, `results.json` and `config.json`.
pub fn run(
    cfg: &SslBenchConfig,
    paths: &BenchPaths,
    pretrained: Option<&Path>,
    device: &Device,
    progress: bool,
    command: &str,
) -> Result<SslBenchReport> {
    cfg.validate()?;
    std::fs::create_dir_all(&paths.out)
        .with_context(|| format!("--out {}: cannot create", paths.out.display()))?;
    write_atomic(
        &paths.out.join("config.json"),
        serde_json::to_string_pretty(cfg)?.as_bytes(),
    )?;
    let mut seconds = Vec::new();

    // 1. Data.
    let t0 = Instant::now();
    let mut sets = HashMap::new();
    for set in DataSet::ALL {
        let (_, count, _) = set.spec(cfg);
        let bar = crate::progress::bar(count as u64, &format!("{} set", set.name()), progress);
        let (data, made) = load_or_generate(cfg, set, &paths.cache, &|| bar.inc(1))?;
        bar.finish_and_clear();
        log::info!(
            "{} set: {} interferograms ({} deformation, {} frames){}",
            set.name(),
            data.len(),
            data.deformation().iter().filter(|&&d| d).count(),
            data.frames(),
            if made { "" } else { ", from the cache" }
        );
        sets.insert(set, data);
    }
    seconds.push(("data".to_string(), t0.elapsed().as_secs_f64()));
    let summaries = DataSet::ALL
        .iter()
        .map(|&set| {
            let d = &sets[&set];
            SetSummary {
                set,
                samples: d.len(),
                deformation: d.deformation().iter().filter(|&&x| x).count(),
                frames: d.frames(),
                seed: set.spec(cfg).2,
            }
        })
        .collect();

    // 2. Few labels.
    let pool = &sets[&DataSet::LabelledPool];
    let chosen = select_few_labels(
        pool,
        cfg.sets.positives,
        cfg.sets.negatives,
        cfg.derived_seed(200),
    )?;
    let train: Vec<&Sample> = chosen.iter().map(|&i| &pool.samples[i]).collect();

    // 3. SimCLR: pretrained here, or the encoder of `pretrained` (a `train pretrain` run).
    let t0 = Instant::now();
    let (simclr_model, pretrain_val, pretrain_steps) = match pretrained {
        Some(run) => {
            let run = RunDir::new(run);
            let weights = run_weights(&run)?;
            log::info!(
                "SimCLR encoder: {} (no pretraining here)",
                weights.display()
            );
            // A run folder without state (the shipped encoder): the length of its config.
            let steps = run.read_state().map(|s| s.step).unwrap_or_else(|_| {
                run.read_config::<PretrainConfig>()
                    .ok()
                    .and_then(|c| c.train.steps)
                    .unwrap_or(0)
            });
            (weights, last_validation(&run).unwrap_or_default(), steps)
        }
        None => {
            let simclr_dir = paths.run("simclr");
            remove_run(&simclr_dir)?;
            let unlabeled = &sets[&DataSet::Unlabeled];
            log::info!(
                "SimCLR pretraining on {} unlabeled interferograms ({} encoder, {}², pairs: {:?})",
                unlabeled.len(),
                cfg.pretrain.model.arch,
                cfg.image_size(),
                cfg.pretrain.data.pairs
            );
            // The cached images, with the nuisance twins rendered on demand.
            let (scenes, count, seed) = DataSet::Unlabeled.spec(cfg);
            let source = WithTwins {
                data: unlabeled,
                stream: SyntheticStream::new(scenes.clone(), seed, count)?
                    .with_size(cfg.image_size(), cfg.image_size())
                    .with_format(InputFormat::default())
                    .with_twin_terrain(cfg.pretrain.data.twin_terrain),
            };
            pretrain::pretrain(
                &cfg.pretrain,
                &source,
                RunDir::new(&simclr_dir),
                false,
                device,
                RunOptions {
                    progress,
                    ..RunOptions::default()
                },
            )?;
            let run = RunDir::new(&simclr_dir);
            (
                run.path(MODEL_FILE),
                last_validation(&run)?,
                run.read_state()?.step,
            )
        }
    };
    seconds.push(("simclr".to_string(), t0.elapsed().as_secs_f64()));

    // 4–5. The three methods, each evaluated on both test sets.
    let mut results = Vec::new();
    for method in Method::ALL {
        let t0 = Instant::now();
        log::info!("{}: training on {} labels", method.label(), train.len());
        let model = train_method(cfg, method, &train, &simclr_model, paths, device, progress)?;
        seconds.push((method.name().to_string(), t0.elapsed().as_secs_f64()));
        for set in [DataSet::Test, DataSet::Ood] {
            let data = &sets[&set];
            let scores = predict(&model, &data.samples, 64, device)?;
            results.push(ResultRow::new(
                method,
                set,
                &scores,
                &data.deformation(),
                cfg.threshold,
            )?);
        }
    }
    let report = SslBenchReport {
        seed: cfg.seed,
        image_size: cfg.image_size(),
        sets: summaries,
        train_positives: cfg.sets.positives,
        train_negatives: cfg.sets.negatives,
        pretrain_val,
        pretrain_steps,
        encoder_from: pretrained.map(Path::to_path_buf),
        results,
        seconds,
        config: cfg.clone(),
    };
    write_atomic(
        &paths.out.join("results.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    write_atomic(
        &paths.out.join("table.md"),
        render_markdown(&report, command).as_bytes(),
    )?;
    Ok(report)
}

/// The values of the last `split = "val"` line of a run's `metrics.jsonl`.
fn last_validation(run: &RunDir) -> Result<Vec<(String, f64)>> {
    let path = run.path(crate::train::checkpoint::METRICS_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: bad line {line:?}", path.display()))?;
        if v.get("split").and_then(|s| s.as_str()) == Some("val") {
            out = v
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("val_"))
                .filter_map(|(k, x)| x.as_f64().map(|x| (k.clone(), x)))
                .collect();
        }
    }
    Ok(out)
}

/// Display name of a test set.
pub fn set_label(set: DataSet) -> &'static str {
    match set {
        DataSet::Test => "in-distribution",
        DataSet::Ood => "out-of-distribution",
        DataSet::Unlabeled => "unlabeled",
        DataSet::LabelledPool => "labelled pool",
    }
}

fn describe(s: &SceneConfig) -> String {
    format!(
        "{}×{} px at {} m, style {:?}, atmosphere ×{}",
        s.width, s.height, s.pixel_m, s.style, s.nuisance.atmosphere
    )
    .to_lowercase()
}

/// The Table II layout: one row per method × test set.
pub fn render_table(report: &SslBenchReport) -> String {
    let mut t = String::from(
        "| method | test set | ACC | TP | FP | FN | TN | P | R | F1 | AUROC |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let opt = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.3}"));
    for r in &report.results {
        t.push_str(&format!(
            "| {} | {} ({}) | {:.3} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {} |\n",
            r.method.label(),
            set_label(r.test_set),
            r.samples,
            r.accuracy,
            r.tp,
            r.fp,
            r.fn_,
            r.tn,
            r.precision,
            r.recall,
            r.f1,
            opt(r.auroc)
        ));
    }
    t
}

fn pool_name(pool: GlobalPool) -> &'static str {
    match pool {
        GlobalPool::Avg => "global average",
        GlobalPool::Max => "global max",
        GlobalPool::AvgMax => "global average + max",
    }
}

/// `table.md`: the command, the setting and the table.
pub fn render_markdown(report: &SslBenchReport, command: &str) -> String {
    let cfg = &report.config;
    let mut s =
        String::from("# SSL vs. scratch (Bountos et al. 2021, Table II) on synthetic data\n\n");
    s.push_str(&format!("Command: `{command}`\n\n"));
    let simclr = match &report.encoder_from {
        Some(run) => format!(
            "SimCLR encoder of {} ({} steps; not pretrained here)",
            run.display(),
            report.pretrain_steps
        ),
        None => format!(
            "SimCLR: {} steps on {} unlabeled interferograms",
            report.pretrain_steps, cfg.sets.unlabeled
        ),
    };
    s.push_str(&format!(
        "Seed {}; {}² model inputs, {} encoder (width {}); few-label training set: {} deformation + {} non-deformation interferograms; {simclr}; {} pooling; threshold {}.\n\n",
        report.seed,
        report.image_size,
        cfg.pretrain.model.arch,
        cfg.pretrain.model.width.map_or("preset".to_string(), |w| w.to_string()),
        report.train_positives,
        report.train_negatives,
        pool_name(cfg.pool),
        cfg.threshold
    ));
    s.push_str(&format!(
        "- in-distribution generator: {}\n- out-of-distribution generator: {}\n",
        describe(&cfg.scenes),
        describe(&cfg.ood)
    ));
    for set in &report.sets {
        s.push_str(&format!(
            "- {} set: {} interferograms, {} with deformation, {} frames\n",
            set.set.name(),
            set.samples,
            set.deformation,
            set.frames
        ));
    }
    if !report.pretrain_val.is_empty() {
        let v: Vec<String> = report
            .pretrain_val
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        s.push_str(&format!("- SimCLR at the end: {}\n", v.join(", ")));
    }
    s.push('\n');
    s.push_str(&render_table(report));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::scene::StyleChoice;
    use insar_mm_models::encoder::EncoderConfig;

    fn committed() -> SslBenchConfig {
        SslBenchConfig::from_toml(DEFAULT_CONFIG, "ssl-vs-scratch.toml", 9).unwrap()
    }

    #[test]
    fn committed_config_resolves() {
        let cfg = committed();
        assert_eq!((cfg.seed, cfg.pretrain.seed), (9, 9));
        assert_eq!(cfg.pretrain.preset.as_deref(), Some("tiny"));
        // The preset fills what the file leaves out; the file wins where it sets a value.
        assert_eq!(cfg.image_size(), 112);
        assert_eq!(cfg.pretrain.data.batch_size, 64);
        // The OOD set differs from the in-distribution one in style, pixel and atmosphere,
        // and inherits everything else.
        assert_eq!(cfg.scenes.style, StyleChoice::Licsar2020);
        assert_eq!(cfg.ood.style, StyleChoice::Gamma);
        assert_ne!(cfg.ood.pixel_m, cfg.scenes.pixel_m);
        assert!(cfg.ood.nuisance.atmosphere > cfg.scenes.nuisance.atmosphere);
        assert_eq!(
            (cfg.ood.width, cfg.ood.classes),
            (cfg.scenes.width, cfg.scenes.classes)
        );
        assert_eq!((cfg.sets.positives, cfg.sets.negatives), (150, 150));
        assert_eq!(cfg.pool, GlobalPool::Max);
        assert!(cfg.finetune.augment.is_some() && cfg.probe.augment.is_none());
        // Every purpose gets its own seed.
        let mut seeds: Vec<u64> = DataSet::ALL.iter().map(|s| s.spec(&cfg).2).collect();
        seeds.extend([
            cfg.derived_seed(100),
            cfg.derived_seed(101),
            cfg.derived_seed(200),
        ]);
        seeds.sort_unstable();
        seeds.dedup();
        assert_eq!(seeds.len(), 7);
        // The resolved config survives a JSON round trip (config.json).
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<SslBenchConfig>(&json).unwrap(), cfg);
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |text: &str| {
            format!(
                "{:#}",
                SslBenchConfig::from_toml(text, "x.toml", 0).unwrap_err()
            )
        };
        let e = err(&DEFAULT_CONFIG.replace("\n[scenes]\n", "\n[scenes]\npixels = 3\n"));
        assert!(
            e.contains("x.toml") && e.contains("[scenes]") && e.contains("pixels"),
            "{e}"
        );
        let e = err(&DEFAULT_CONFIG.replace("pixel_m = 250.0", "pixel_m = 1.0"));
        assert!(e.contains("[ood]") && e.contains("pixel size"), "{e}");
        let e = err(&DEFAULT_CONFIG.replace("lr = 1e-2", "lr = -1.0"));
        assert!(e.contains("[probe]") && e.contains("optim.lr"), "{e}");
        let e = err(&DEFAULT_CONFIG.replace("positives = 150", "positives = 650"));
        assert!(e.contains("sets.labelled_pool"), "{e}");
        let e = err(&DEFAULT_CONFIG.replace("threshold = 0.5", "threshold = 2"));
        assert!(e.contains("threshold"), "{e}");
        let e = err(&DEFAULT_CONFIG.replace("pool = \"max\"", "pool = \"median\""));
        assert!(e.contains("pool") && e.contains("median"), "{e}");
        let e = err(&DEFAULT_CONFIG.replace("preset = \"tiny\"", "preset = \"huge\""));
        assert!(e.contains("[pretrain]") && e.contains("huge"), "{e}");
        let e = err(&DEFAULT_CONFIG.replace("[pretrain.data]", "[pretrain.data]\nsize = 3"));
        assert!(e.contains("[pretrain]") && e.contains("size"), "{e}");
        let e = err("threshold = 0.5\n");
        assert!(e.contains("sets"), "{e}");
    }

    fn toy_set(flags: &[bool]) -> SetData {
        let samples = flags
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let mut labels = [0.0; NUM_LABELS];
                labels[0] = f32::from(u8::from(d));
                Sample {
                    id: (i + 1).to_string(),
                    frame_id: format!("frame{}", i % 3),
                    image: Image::from_vec(2, 2, 3, (0..12).map(|v| (v + i) as f32).collect())
                        .unwrap(),
                    mask: None,
                    labels,
                    caption: None,
                }
            })
            .collect();
        SetData { samples }
    }

    #[test]
    fn few_labels_are_a_seeded_choice_of_each_class() {
        let flags: Vec<bool> = (0..40).map(|i| i % 3 == 0).collect();
        let pool = toy_set(&flags);
        let a = select_few_labels(&pool, 5, 7, 1).unwrap();
        assert_eq!(a.len(), 12);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
        assert_eq!(a.iter().filter(|&&i| flags[i]).count(), 5);
        assert_eq!(select_few_labels(&pool, 5, 7, 1).unwrap(), a);
        assert_ne!(select_few_labels(&pool, 5, 7, 2).unwrap(), a);
        // All 14 positives can be taken.
        let all = select_few_labels(&pool, 14, 1, 1).unwrap();
        assert_eq!(all.iter().filter(|&&i| flags[i]).count(), 14);
        let e = select_few_labels(&pool, 15, 1, 1).unwrap_err().to_string();
        assert!(
            e.contains("sets.positives = 15") && e.contains("only 14 deformation"),
            "{e}"
        );
        assert_eq!(pool.frames(), 3);
    }

    #[test]
    fn cache_round_trip_and_key_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.safetensors");
        let data = toy_set(&[true, false, true]);
        let key = CacheKey {
            version: DATA_VERSION,
            set: DataSet::Test,
            seed: 5,
            count: 3,
            size: 2,
            format: InputFormat::CosSinCoherence,
            scenes: SceneConfig::default(),
        };
        write_cache(&path, &key, &data).unwrap();
        let back = read_cache(&path, &key).unwrap().unwrap();
        assert_eq!(back.len(), 3);
        for (a, b) in back.samples.iter().zip(&data.samples) {
            assert_eq!(
                (&a.id, &a.frame_id, &a.labels),
                (&b.id, &b.frame_id, &b.labels)
            );
            assert_eq!(a.image, b.image);
        }
        for other in [
            CacheKey {
                seed: 6,
                ..key.clone()
            },
            CacheKey {
                format: InputFormat::PhaseCoherence,
                ..key.clone()
            },
            CacheKey {
                version: DATA_VERSION - 1,
                ..key.clone()
            },
            CacheKey {
                scenes: SceneConfig {
                    pixel_m: 100.0,
                    ..SceneConfig::default()
                },
                ..key.clone()
            },
        ] {
            assert!(read_cache(&path, &other).unwrap().is_none());
        }
    }

    #[test]
    fn load_encoder_sets_the_encoder_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut head = ClassifierConfig::new(EncoderConfig::tiny());
        head.num_labels = 1;
        let build = |seed: u64| {
            let varmap = VarMap::new();
            Classifier::new(
                &head,
                seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu),
            )
            .unwrap();
            varmap
        };
        let values = |v: &VarMap, prefix: &str| -> Vec<(String, Vec<f32>)> {
            let mut out: Vec<(String, Vec<f32>)> = v
                .data()
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, t)| (k.clone(), t.flatten_all().unwrap().to_vec1().unwrap()))
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        };
        let source = build(1);
        let path = dir.path().join("m.safetensors");
        crate::train::checkpoint::save_model(&path, &source, 0).unwrap();
        let target = build(2);
        let head_before = values(&target, "classifier.");
        assert_ne!(values(&target, "encoder."), values(&source, "encoder."));
        let n = load_encoder_weights(&path, &target).unwrap();
        assert_eq!(n, values(&source, "encoder.").len());
        assert_eq!(values(&target, "encoder."), values(&source, "encoder."));
        assert_eq!(values(&target, "classifier."), head_before);
        // A file without the encoder: an error naming the file and a tensor.
        let only_head = dir.path().join("head.safetensors");
        let tensors = values(&source, "classifier.")
            .into_iter()
            .map(|(k, v)| {
                let n = v.len();
                (k, Tensor::from_vec(v, n, &Device::Cpu).unwrap())
            })
            .collect();
        write_atomic(
            &only_head,
            &serialize_tensors(tensors, HashMap::new()).unwrap(),
        )
        .unwrap();
        let e = format!(
            "{:#}",
            load_encoder_weights(&only_head, &target).unwrap_err()
        );
        assert!(
            e.contains("head.safetensors") && e.contains("no tensor encoder."),
            "{e}"
        );
    }
}
