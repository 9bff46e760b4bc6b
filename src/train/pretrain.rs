//! Contrastive pretraining of the shared encoder (SimCLR, NT-Xent with τ = 0.5 over two
//! InSAR-augmented views; Bountos et al. 2021) on any [`SampleSource`].
//!
//! Validation holds out `data.val_samples` samples (a seeded choice) and reports the
//! NT-Xent loss and instance-discrimination top-1 accuracy (`val_loss`, `val_top1`) of
//! fixed views (seeded once per run) in evaluation mode.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use insar_mm_models::encoder::{is_trainable_name, SimClr};
use insar_mm_models::nn::seeded_var_builder;
use rand::Rng;
use rayon::prelude::*;

use super::checkpoint::RunDir;
use super::config::{PairMode, PretrainConfig};
use super::driver::{Batch, Outcome, StepOutput, TrainTask, Trainer};
use super::optim::{trainable_params, Optimizer};
use crate::data::array::{batch_tensor, Image};
use crate::data::augment::{sample_rng, Augmenter};
use crate::data::dataset::DatasetDir;
use crate::data::frames::InputFormat;
use crate::data::loader::LoadOptions;
use crate::data::patches::PatchDataset;
use crate::data::resample::resize_area;
use crate::data::sample::SampleSource;
use crate::data::sampler::shuffled_order;
use crate::synth::builtin;
use crate::synth::stream::SyntheticStream;

/// Opens `--data DIR`: a patch folder (`labeled/` inside), or a dataset directory (its
/// `patches/` when present, else its full frames).
pub fn open_data(dir: &Path, format: InputFormat) -> Result<Box<dyn SampleSource>> {
    if dir.join(crate::data::patches::LABELED_DIR).is_dir() {
        return Ok(Box::new(PatchDataset::open(dir, format)?));
    }
    let ds = DatasetDir::open(dir, LoadOptions::default())
        .with_context(|| format!("--data {}", dir.display()))?;
    if ds.patches_dir().is_some() {
        return Ok(Box::new(ds.patch_samples(format, None)?));
    }
    let frames = ds.frame_samples(format, None, None)?;
    ensure!(
        !frames.is_empty(),
        "--data {}: no annotation has its interferogram images",
        dir.display()
    );
    Ok(Box::new(frames))
}

/// The built-in synthetic stream used without `--data`: the physics generator's scenes
/// (`synth::builtin::config`), rendered in memory and resized to the training size.
pub fn synthetic_source(cfg: &PretrainConfig) -> Result<Box<dyn SampleSource>> {
    let size = cfg.data.image_size;
    let stream = SyntheticStream::new(builtin::config(), cfg.seed, cfg.data.synthetic_samples)?
        .with_size(size, size)
        .with_format(cfg.data.input_format)
        .with_twin_terrain(cfg.data.twin_terrain);
    Ok(Box::new(stream))
}

/// The SimCLR model of `cfg` on a fresh `VarMap`, initialised from `cfg.seed`.
pub fn build_model(cfg: &PretrainConfig, device: &Device) -> Result<(VarMap, SimClr)> {
    let varmap = VarMap::new();
    let model = SimClr::new(
        &cfg.model.simclr()?,
        seeded_var_builder(&varmap, cfg.seed, DType::F32, device),
    )?;
    Ok((varmap, model))
}

/// Loads samples `indices` of `source` in parallel (errors name the index).
pub fn load_images(source: &dyn SampleSource, indices: &[usize]) -> Result<Vec<Image>> {
    indices
        .par_iter()
        .map(|&i| {
            source
                .get(i)
                .map(|s| s.image)
                .with_context(|| format!("loading sample {i}"))
        })
        .collect()
}

/// Samples `indices` with their partners (`SampleSource::partner`, draw derived from
/// `seed` and the index), in parallel; errors name the index.
pub fn load_partners(
    source: &dyn SampleSource,
    indices: &[usize],
    seed: u64,
) -> Result<Vec<(Image, Option<Image>)>> {
    indices
        .par_iter()
        .map(|&i| {
            let draw = sample_rng(seed ^ PARTNER_SALT, i as u64).random::<u64>();
            let image = source
                .get(i)
                .with_context(|| format!("loading sample {i}"))?
                .image;
            let partner = source
                .partner(i, draw)
                .with_context(|| format!("loading the partner of sample {i}"))?;
            if let Some(p) = &partner {
                let shape = |im: &Image| (im.channels, im.height, im.width);
                ensure!(
                    shape(p) == shape(&image),
                    "the partner of sample {i} is {:?} (channels, height, width), the sample {:?}",
                    shape(p),
                    shape(&image)
                );
            }
            Ok((image, partner))
        })
        .collect()
}

/// Mixed into the step seed for the partner draws (the views use the seed itself).
const PARTNER_SALT: u64 = 0x9a27_e125_0000_0001;

/// Resizes `image` to `size × size` when it has another size.
pub fn fit(image: Image, size: usize) -> Result<Image> {
    if image.height == size && image.width == size {
        Ok(image)
    } else {
        resize_area(&image, size, size)
    }
}

/// SimCLR as a [`TrainTask`].
pub struct PretrainTask<'a> {
    model: SimClr,
    source: &'a dyn SampleSource,
    train: Vec<usize>,
    val: Vec<usize>,
    augmenter: Augmenter,
    batch: usize,
    channels: usize,
    pairs: PairMode,
    device: Device,
    val_seed: u64,
}

impl<'a> PretrainTask<'a> {
    pub fn new(
        cfg: &PretrainConfig,
        model: SimClr,
        source: &'a dyn SampleSource,
        device: &Device,
    ) -> Result<Self> {
        let size = cfg.data.image_size;
        let mut augment = cfg.augment.clone();
        if let Some(s) = augment.crop.size {
            ensure!(
                s == [size, size],
                "augment.crop.size = {s:?} differs from data.image_size = {size}; leave it unset"
            );
        }
        augment.crop.size = Some([size, size]);
        let augmenter = Augmenter::new(augment)?;
        let n = source.len();
        let val_n = cfg.data.val_samples;
        ensure!(
            n > val_n,
            "{n} samples cannot hold out data.val_samples = {val_n} for validation"
        );
        let mut order = shuffled_order(n, &mut sample_rng(cfg.seed ^ 0x7a11_d47a, 0));
        let train = order.split_off(val_n);
        let mut val = order;
        val.sort_unstable();
        Ok(Self {
            model,
            source,
            train,
            val,
            augmenter,
            batch: cfg.data.batch_size,
            channels: cfg.model.in_channels,
            pairs: cfg.data.pairs,
            device: device.clone(),
            val_seed: cfg.seed ^ 0x0bad_5eed,
        })
    }

    pub fn model(&self) -> &SimClr {
        &self.model
    }

    /// Two views of the samples `indices` as `(B, C, S, S)` tensors, from `seed`: of each
    /// sample and its partner (`data.pairs = "partners"`), or of each sample twice.
    fn views(&self, indices: &[usize], seed: u64) -> Result<(Tensor, Tensor)> {
        let pairs = match self.pairs {
            PairMode::Views => load_images(self.source, indices)?
                .into_iter()
                .map(|im| (im, None))
                .collect(),
            PairMode::Partners => load_partners(self.source, indices, seed)?,
        };
        if let Some((im, _)) = pairs.first() {
            ensure!(
                im.channels == self.channels,
                "the data has {} channels but model.in_channels = {}",
                im.channels,
                self.channels
            );
        }
        let refs: Vec<(&Image, &Image)> = pairs
            .iter()
            .map(|(a, b)| (a, b.as_ref().unwrap_or(a)))
            .collect();
        let views = self.augmenter.pair_views_batch(&refs, seed)?;
        let a: Vec<&Image> = views.iter().map(|v| &v.0).collect();
        let b: Vec<&Image> = views.iter().map(|v| &v.1).collect();
        Ok((
            batch_tensor(&a, &self.device)?,
            batch_tensor(&b, &self.device)?,
        ))
    }
}

impl TrainTask for PretrainTask<'_> {
    fn len(&self) -> usize {
        self.train.len()
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn step(&mut self, batch: Batch<'_>) -> Result<StepOutput> {
        let indices: Vec<usize> = batch.indices.iter().map(|&i| self.train[i]).collect();
        let seed: u64 = batch.rng.random();
        let (v1, v2) = self.views(&indices, seed)?;
        let out = self.model.forward_t(&v1, &v2, true)?;
        let top1 = out.accuracy(1)?;
        Ok(StepOutput {
            loss: out.loss,
            metrics: vec![("top1".into(), top1)],
        })
    }

    fn validate(&mut self) -> Result<Vec<(String, f64)>> {
        let (mut loss, mut top1, mut n) = (0.0, 0.0, 0usize);
        for (k, chunk) in self.val.chunks(self.batch).enumerate() {
            if chunk.len() < 2 {
                continue;
            }
            let (v1, v2) = self.views(chunk, self.val_seed.wrapping_add(k as u64))?;
            let out = self.model.forward_t(&v1, &v2, false)?;
            loss += out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            top1 += out.accuracy(1)?;
            n += 1;
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![
            ("val_loss".into(), loss / n as f64),
            ("val_top1".into(), top1 / n as f64),
        ])
    }
}

pub use super::driver::RunOptions;

/// Trains (or, with `resume`, continues) the SimCLR run `run` on `source`.
pub fn pretrain(
    cfg: &PretrainConfig,
    source: &dyn SampleSource,
    run: RunDir,
    resume: bool,
    device: &Device,
    options: RunOptions,
) -> Result<Outcome> {
    cfg.validate()?;
    let (varmap, model) = build_model(cfg, device)?;
    let params = trainable_params(&varmap, is_trainable_name);
    let optimizer = Optimizer::new(cfg.optim.clone(), params)?;
    let mut task = PretrainTask::new(cfg, model, source, device)?;
    let loop_cfg = cfg.train.loop_config(task.len(), task.batch_size())?;
    let schedule = cfg.schedule.clone();
    Trainer::open(
        run, resume, cfg, varmap, optimizer, schedule, loop_cfg, cfg.seed, options,
    )?
    .run(&mut task)
}
