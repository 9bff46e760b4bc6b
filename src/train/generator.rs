//! Text-to-InSAR generation (`insar-mm train generator`): a caption-conditioned diffusion
//! model ([`TextToInsar`]: text encoder + UNet, trained jointly from scratch) on the
//! image–caption pairs of a dataset (the same sources as `train caption`: the built-in
//! synthetic dataset, `--data`, `--annotations`).
//!
//! - Images are the `[cos φ, sin φ, coherence]` input resized to `data.image_size` (32² by
//!   default: what two CPU cores can train in an hour), coherence mapped to `[−1, 1]`.
//! - Each step draws timesteps uniformly, noise, and (with probability `caption_dropout`)
//!   replaces a caption with all padding: the null condition of classifier-free guidance.
//! - The EMA of the weights lives in the same `VarMap` (`ema.*`), so checkpoints hold it and
//!   `--resume` continues it exactly; inference uses the EMA weights.
//! - Validation: the denoising loss on the val split at fixed timesteps and noise
//!   (`val_loss`, same draws every time).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use insar_mm_models::caption::PositionKind;
use insar_mm_models::diffusion::{
    init_ema, is_ema, randn, swap_in_ema, to_model_range, update_ema, GeneratorConfig, Prediction,
    TextToInsar, UNetConfig,
};
use insar_mm_models::nn::seeded_var_builder;
use insar_mm_models::text::TextEncoderConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::caption::{CaptionData3, CaptionPart, CaptionSource, TOKENIZER_FILE};
use super::checkpoint::{load_model, RunDir, MODEL_FILE};
use super::config::TrainSection;
use super::driver::{Batch, Outcome, StepOutput, TrainTask, Trainer};
use super::optim::{trainable_params, OptimConfig, Optimizer};
use super::pretrain::RunOptions;
use super::schedule::ScheduleConfig;
use crate::data::array::Image;
use crate::text::tokenizer::{CaptionTokenizer, TokenizerConfig};

/// The `task` of a generator run's `config.json`.
pub const TASK: &str = "generator";

/// `[data]` of a generator run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorData {
    /// `--data DIR` (`None`: the built-in synthetic dataset of the run seed).
    pub dir: Option<PathBuf>,
    /// `--annotations PATH` (as `train caption`).
    pub annotations: Option<PathBuf>,
    pub annotation_limit: usize,
    /// Side of the square images the model generates.
    pub image_size: usize,
    pub batch_size: usize,
    /// Longest token sequence, `[BOS]` and `[EOS]` included.
    pub max_len: usize,
    /// Val images of the validation loss (the first ones; 0 = all).
    pub val_images: usize,
    /// Where the images and captions came from (recorded at the start).
    pub source: Option<CaptionSource>,
}

impl Default for GeneratorData {
    fn default() -> Self {
        Self {
            dir: None,
            annotations: None,
            annotation_limit: 0,
            image_size: 32,
            batch_size: 32,
            max_len: 96,
            val_images: 128,
            source: None,
        }
    }
}

/// The config of `train generator`, as resolved and saved to `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorTrainConfig {
    /// Always [`TASK`] (lets other commands refuse a generator run and vice versa).
    pub task: String,
    /// UNet preset of [`UNetConfig::preset`].
    pub preset: String,
    pub seed: u64,
    pub data: GeneratorData,
    pub tokenizer: TokenizerConfig,
    pub prediction: Prediction,
    pub timesteps: usize,
    /// Probability of training a sample with the null (all-padding) caption.
    pub caption_dropout: f64,
    /// EMA decay (warmed up as `min(decay, (1 + step)/(10 + step))`).
    pub ema_decay: f64,
    /// Width and depth of the text encoder.
    pub text_dim: usize,
    pub text_layers: usize,
    /// The resolved architecture (filled once the tokenizer's vocabulary is known).
    pub model: Option<GeneratorConfig>,
    pub optim: OptimConfig,
    pub schedule: ScheduleConfig,
    pub train: TrainSection,
}

impl Default for GeneratorTrainConfig {
    fn default() -> Self {
        Self {
            task: TASK.into(),
            preset: "tiny".into(),
            seed: 42,
            data: GeneratorData::default(),
            tokenizer: TokenizerConfig {
                vocab_size: 1000,
                min_frequency: 2,
            },
            prediction: Prediction::V,
            timesteps: 1000,
            caption_dropout: 0.1,
            ema_decay: 0.995,
            text_dim: 128,
            text_layers: 2,
            model: None,
            optim: OptimConfig::Adamw {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            schedule: ScheduleConfig::Cosine {
                warmup_steps: 100,
                min_lr_ratio: 0.1,
            },
            train: TrainSection {
                steps: Some(3000),
                epochs: None,
                checkpoint_every: 250,
                log_every: 10,
                validate_every: 500,
                clip_grad_norm: Some(1.0),
                best_metric: None,
                ..TrainSection::default()
            },
        }
    }
}

impl GeneratorTrainConfig {
    /// The defaults with the TOML file `path` merged over them (unknown keys are errors).
    pub fn from_file(path: &Path) -> Result<Self> {
        super::config::config_from_file(path)
    }

    /// Checks the settings; errors name the key.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.task == TASK,
            "task = {:?}: expected {TASK:?}",
            self.task
        );
        let unet = UNetConfig::preset(&self.preset, self.text_dim.max(1))
            .map_err(|e| anyhow::anyhow!("preset: {e}"))?;
        let m = unet.size_multiple();
        ensure!(
            self.data.image_size >= 8 && self.data.image_size <= 512,
            "data.image_size = {} must be in 8..=512",
            self.data.image_size
        );
        ensure!(
            self.data.image_size % m == 0,
            "data.image_size = {} must be a multiple of {m} for preset {}",
            self.data.image_size,
            self.preset
        );
        ensure!(
            self.data.batch_size >= 1,
            "data.batch_size must be at least 1"
        );
        ensure!(
            self.data.max_len >= 3,
            "data.max_len = {} must leave room for [BOS], a token and [EOS]",
            self.data.max_len
        );
        ensure!(
            (0.0..1.0).contains(&self.caption_dropout),
            "caption_dropout = {:?} must be in [0, 1)",
            self.caption_dropout
        );
        ensure!(
            (0.0..1.0).contains(&self.ema_decay),
            "ema_decay = {:?} must be in [0, 1)",
            self.ema_decay
        );
        ensure!(
            self.timesteps >= 2,
            "timesteps = {} must be at least 2",
            self.timesteps
        );
        ensure!(
            self.data.annotation_limit == 0 || self.data.annotations.is_some(),
            "data.annotation_limit = {} needs data.annotations (--annotations PATH)",
            self.data.annotation_limit
        );
        if let Some(m) = &self.model {
            m.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        }
        self.optim.validate()?;
        self.schedule.validate()?;
        Ok(())
    }

    /// The architecture for a tokenizer of `vocab_size` tokens.
    pub fn architecture(&self, vocab_size: usize) -> Result<GeneratorConfig> {
        let unet = UNetConfig::preset(&self.preset, self.text_dim).map_err(anyhow::Error::msg)?;
        let text = TextEncoderConfig {
            vocab_size,
            d_model: self.text_dim,
            num_layers: self.text_layers,
            num_heads: 4,
            ff_dim: 2 * self.text_dim,
            max_len: self.data.max_len,
            dropout: 0.1,
            positions: PositionKind::default(),
            layer_norm_eps: 1e-5,
            pad_id: 0,
        };
        let m = GeneratorConfig {
            text,
            unet,
            prediction: self.prediction,
            timesteps: self.timesteps,
        };
        m.validate().map_err(anyhow::Error::msg)?;
        Ok(m)
    }

    pub fn model(&self) -> Result<&GeneratorConfig> {
        self.model
            .as_ref()
            .context("config.json has no `model`: the run was never started")
    }
}

/// Images as the model sees them: `(C, H, W)` values in `[−1, 1]`.
pub fn model_images(images: &[&Image], device: &Device) -> Result<Tensor> {
    let x = crate::data::array::batch_tensor(images, device)?;
    Ok(to_model_range(&x)?)
}

/// Token ids of `captions` (cut at `max_len`); an empty caption is the null condition
/// (a single `[PAD]`).
pub fn encode_captions(
    tokenizer: &CaptionTokenizer,
    captions: &[String],
    max_len: usize,
) -> Result<Vec<Vec<u32>>> {
    captions
        .iter()
        .map(|c| {
            if tokenizer.normalize(c)?.is_empty() {
                Ok(vec![tokenizer.pad_id()])
            } else {
                tokenizer.encode(c, Some(max_len))
            }
        })
        .collect()
}

/// `(B, T)` right-padded ids; rows in `null` become all padding.
pub fn token_tensor(ids: &[&[u32]], null: &[bool], pad: u32, device: &Device) -> Result<Tensor> {
    let t = ids.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
    let mut flat = Vec::with_capacity(ids.len() * t);
    for (s, &n) in ids.iter().zip(null) {
        let len = if n { 0 } else { s.len() };
        flat.extend_from_slice(&s[..len]);
        flat.extend(std::iter::repeat_n(pad, t - len));
    }
    Ok(Tensor::from_vec(flat, (ids.len(), t), device)?)
}

/// The generator's [`TrainTask`].
pub struct GeneratorTask {
    model: TextToInsar,
    varmap: VarMap,
    train_images: Vec<Image>,
    train_ids: Vec<Vec<u32>>,
    val_images: Vec<Image>,
    val_ids: Vec<Vec<u32>>,
    batch: usize,
    caption_dropout: f64,
    ema_decay: f64,
    ema_step: Option<u64>,
    pad: u32,
    seed: u64,
    device: Device,
}

impl GeneratorTask {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &GeneratorTrainConfig,
        model: TextToInsar,
        varmap: VarMap,
        tokenizer: &CaptionTokenizer,
        train: CaptionPart,
        val: CaptionPart,
        device: &Device,
    ) -> Result<Self> {
        let train_ids = encode_captions(tokenizer, &train.captions, cfg.data.max_len)?;
        let n = if cfg.data.val_images == 0 {
            val.len()
        } else {
            cfg.data.val_images.min(val.len())
        };
        let val_ids = encode_captions(tokenizer, &val.captions[..n], cfg.data.max_len)?;
        Ok(Self {
            model,
            varmap,
            train_images: train.images,
            train_ids,
            val_images: val.images.into_iter().take(n).collect(),
            val_ids,
            batch: cfg.data.batch_size,
            caption_dropout: cfg.caption_dropout,
            ema_decay: cfg.ema_decay,
            ema_step: None,
            pad: tokenizer.pad_id(),
            seed: cfg.seed,
            device: device.clone(),
        })
    }

    pub fn model(&self) -> &TextToInsar {
        &self.model
    }
}

/// The EMA decay at optimizer step `step` (warm-up: early weights are forgotten fast).
pub fn ema_decay_at(decay: f64, step: u64) -> f64 {
    decay.min((1.0 + step as f64) / (10.0 + step as f64))
}

impl TrainTask for GeneratorTask {
    fn len(&self) -> usize {
        self.train_images.len()
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn step(&mut self, batch: Batch<'_>) -> Result<StepOutput> {
        // The EMA folds in the weights of the previous optimizer step, once per step.
        if self.ema_step != Some(batch.step) {
            if batch.step > 0 {
                update_ema(&self.varmap, ema_decay_at(self.ema_decay, batch.step))?;
            }
            self.ema_step = Some(batch.step);
        }
        let rng = batch.rng;
        let images: Vec<&Image> = batch
            .indices
            .iter()
            .map(|&i| &self.train_images[i])
            .collect();
        let x0 = model_images(&images, &self.device)?;
        let ids: Vec<&[u32]> = batch
            .indices
            .iter()
            .map(|&i| self.train_ids[i].as_slice())
            .collect();
        let null: Vec<bool> = ids
            .iter()
            .map(|_| rng.random::<f64>() < self.caption_dropout)
            .collect();
        let tokens = token_tensor(&ids, &null, self.pad, &self.device)?;
        let steps = self.model.schedule().len();
        let t: Vec<usize> = ids.iter().map(|_| rng.random_range(0..steps)).collect();
        let noise = randn(x0.shape(), rng, &self.device)?;
        let loss = self.model.loss(&x0, &tokens, &t, &noise, Some(&mut *rng))?;
        Ok(StepOutput {
            loss,
            metrics: Vec::new(),
        })
    }

    fn validate(&mut self) -> Result<Vec<(String, f64)>> {
        if self.val_images.is_empty() {
            return Ok(Vec::new());
        }
        // Same timesteps and noise every time: a comparable number across validations.
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x7a1d);
        let steps = self.model.schedule().len();
        let (mut total, mut n) = (0.0, 0usize);
        for start in (0..self.val_images.len()).step_by(self.batch.max(1)) {
            let end = (start + self.batch).min(self.val_images.len());
            let images: Vec<&Image> = self.val_images[start..end].iter().collect();
            let x0 = model_images(&images, &self.device)?;
            let ids: Vec<&[u32]> = self.val_ids[start..end]
                .iter()
                .map(|s| s.as_slice())
                .collect();
            let tokens = token_tensor(&ids, &vec![false; ids.len()], self.pad, &self.device)?;
            let t: Vec<usize> = (start..end).map(|i| (i * 7919 + 13) % steps).collect();
            let noise = randn(x0.shape(), &mut rng, &self.device)?;
            let loss = self.model.loss(&x0, &tokens, &t, &noise, None)?;
            total += loss.to_scalar::<f32>()? as f64 * (end - start) as f64;
            n += end - start;
        }
        Ok(vec![("val_loss".into(), total / n as f64)])
    }
}

/// The model of `cfg` on a fresh `VarMap` (with its EMA copies), initialised from `cfg.seed`.
pub fn build_model(cfg: &GeneratorTrainConfig, device: &Device) -> Result<(VarMap, TextToInsar)> {
    let varmap = VarMap::new();
    let model = TextToInsar::new(
        cfg.model()?,
        seeded_var_builder(&varmap, cfg.seed, DType::F32, device),
    )?;
    init_ema(&varmap)?;
    Ok((varmap, model))
}

/// Trains (or, with `resume`, continues) the generator run `run` on `data`.
pub fn train_generator(
    cfg: &mut GeneratorTrainConfig,
    data: CaptionData3,
    run: RunDir,
    resume: bool,
    device: &Device,
    options: RunOptions,
) -> Result<Outcome> {
    cfg.validate()?;
    let tokenizer = if resume {
        CaptionTokenizer::from_file(&run.path(TOKENIZER_FILE))?
    } else {
        let tok = CaptionTokenizer::train(&data.train.captions, &cfg.tokenizer)
            .context("training the tokenizer on the train captions")?;
        cfg.model = Some(cfg.architecture(tok.vocab_size())?);
        tok
    };
    let (varmap, model) = build_model(cfg, device)?;
    let params = trainable_params(&varmap, |n| !is_ema(n));
    let optimizer = Optimizer::new(cfg.optim.clone(), params)?;
    let mut task = GeneratorTask::new(
        cfg,
        model,
        varmap.clone(),
        &tokenizer,
        data.train,
        data.val,
        device,
    )?;
    let loop_cfg = cfg.train.loop_config(task.len(), task.batch_size())?;
    let mut trainer = Trainer::open(
        run.clone(),
        resume,
        &*cfg,
        varmap,
        optimizer,
        cfg.schedule.clone(),
        loop_cfg,
        cfg.seed,
        options,
    )?;
    if !resume {
        tokenizer.save(&run.path(TOKENIZER_FILE))?;
    }
    trainer.run(&mut task)
}

/// A trained generator run ready to sample: the EMA weights are swapped in.
pub struct LoadedGenerator {
    pub config: GeneratorTrainConfig,
    pub tokenizer: CaptionTokenizer,
    pub model: TextToInsar,
    pub varmap: VarMap,
}

/// Loads the generator run `dir` (refusing runs of other tasks) with its EMA weights.
pub fn load_generator_run(dir: &Path, device: &Device) -> Result<LoadedGenerator> {
    super::heads::expect_task(dir, TASK)?;
    let run = RunDir::new(dir);
    let config: GeneratorTrainConfig = run
        .read_checked_config(GeneratorTrainConfig::validate)
        .with_context(|| format!("--model {}", dir.display()))?;
    let tokenizer = super::caption::load_run_tokenizer(&run, config.model()?.text.vocab_size)?;
    let (varmap, model) = build_model(&config, device)?;
    load_model(&run.path(MODEL_FILE), &varmap)?;
    swap_in_ema(&varmap)?;
    Ok(LoadedGenerator {
        config,
        tokenizer,
        model,
        varmap,
    })
}

/// Whether the caption parser finds anything in `prompt` (a deformation, a type, an
/// intensity, an atmosphere or a nuisance flag, or an explicit "no deformation").
pub fn has_known_facts(prompt: &str) -> bool {
    use insar_mm_eval::captions::facts::{parse_facts, ParsedFacts};
    let f = parse_facts(prompt);
    f != ParsedFacts::default() || prompt.to_lowercase().contains("no deformation")
}

/// The annotation of a generated sample: the prompt as caption, its parsed facts as labels
/// (no polygons: a generator does not know where its pattern is).
pub fn prompt_annotation(
    unique_id: u64,
    frame_id: &str,
    primary: crate::data::annotation::Date,
    secondary: crate::data::annotation::Date,
    prompt: &str,
) -> crate::data::annotation::Annotation {
    use crate::data::annotation::{ActivityType, Annotation, Intensity, Label, Phase};
    use insar_mm_eval::captions::facts::ProcessingError as Pe;
    use insar_mm_eval::captions::facts::{parse_facts, Activity, DeformationStatus, Level};
    let f = parse_facts(prompt);
    let activity = |a: Activity| match a {
        Activity::Mogi => ActivityType::Mogi,
        Activity::Dyke => ActivityType::Dyke,
        Activity::Sill => ActivityType::Sill,
        Activity::Spheroid => ActivityType::Spheroid,
        Activity::Earthquake => ActivityType::Earthquake,
        Activity::Unidentified => ActivityType::Unidentified,
    };
    let level = |l: Option<Level>| match l {
        Some(Level::Low) => Intensity::Low,
        Some(Level::Medium) => Intensity::Medium,
        Some(Level::High) => Intensity::High,
        None => Intensity::None,
    };
    let deformation = f.deformation == DeformationStatus::Present;
    let mut activity_type = Vec::new();
    let mut intensity_level = Vec::new();
    if deformation {
        for p in &f.patterns {
            let a = p.activity.unwrap_or(Activity::Unidentified);
            for _ in 0..p.count.max(1) {
                activity_type.push(activity(a));
                intensity_level.push(if a == Activity::Earthquake {
                    Intensity::None
                } else {
                    level(p.intensity)
                });
            }
        }
        if activity_type.is_empty() {
            activity_type.push(ActivityType::Unidentified);
            intensity_level.push(level(f.intensities.iter().next().copied()));
        }
    }
    let mut label = Vec::new();
    if deformation {
        if activity_type.iter().any(|a| *a != ActivityType::Earthquake) {
            label.push(Label::Deformation);
        }
        if activity_type.contains(&ActivityType::Earthquake) {
            label.push(Label::Earthquake);
        }
    } else {
        label.push(Label::NonDeformation);
    }
    let only_earthquakes = deformation && !label.contains(&Label::Deformation);
    Annotation {
        unique_id,
        frame_id: frame_id.to_string(),
        primary_date: primary,
        secondary_date: secondary,
        corrupted: u8::from(f.corrupted),
        processing_error: match f.processing_error {
            Some(Pe::SwathMerging) => 3,
            Some(_) => 2,
            None => 0,
        },
        glacier_fringes: u8::from(f.glacier),
        orbital_fringes: u8::from(f.orbital),
        atmospheric_fringes: u8::from(f.stratified) + 2 * u8::from(f.turbulent),
        low_coherence: u8::from(f.low_coherence),
        no_info: u8::from(f.no_info),
        image_artifacts: u8::from(f.artifacts),
        label,
        activity_type,
        intensity_level,
        phase: if only_earthquakes {
            Phase::None
        } else if deformation {
            Phase::Unrest
        } else {
            Phase::Rest
        },
        confidence: 1.0,
        segmentation_mask: Vec::new(),
        is_crowd: 0,
        caption: prompt.to_string(),
    }
}

/// Options of [`generate_images`].
#[derive(Debug, Clone, Copy)]
pub struct GenerateOptions {
    pub steps: usize,
    pub guidance: f64,
    pub sampler: insar_mm_models::diffusion::SamplerKind,
    /// Images sampled at once (the guided batch is twice this).
    pub batch: usize,
}

/// `n` images for `prompt` (empty: unconditional) as `[cos φ, sin φ, coherence]` with
/// coherence in `[0, 1]`. The noise comes from `rng`; `on_step` is called after every
/// network evaluation of every batch.
pub fn generate_images(
    g: &LoadedGenerator,
    prompt: &str,
    n: usize,
    opts: &GenerateOptions,
    rng: &mut ChaCha8Rng,
    device: &Device,
    on_step: impl FnMut(),
) -> Result<Vec<Image>> {
    let prompts = vec![prompt.to_string(); n];
    generate_for_prompts(g, &prompts, opts, rng, device, on_step)
}

/// One image per prompt (batched by `opts.batch`), as [`generate_images`].
pub fn generate_for_prompts(
    g: &LoadedGenerator,
    prompts: &[String],
    opts: &GenerateOptions,
    rng: &mut ChaCha8Rng,
    device: &Device,
    mut on_step: impl FnMut(),
) -> Result<Vec<Image>> {
    use insar_mm_models::diffusion::{from_model_range, SamplerConfig};
    let ids = encode_captions(&g.tokenizer, prompts, g.config.data.max_len)?;
    let null: Vec<bool> = prompts
        .iter()
        .map(|p| tokenizer_is_null(&g.tokenizer, p))
        .collect::<Result<_>>()?;
    let size = g.config.data.image_size;
    let channels = g.model.config().unet.in_channels;
    let mut out = Vec::with_capacity(prompts.len());
    for start in (0..prompts.len()).step_by(opts.batch.max(1)) {
        let end = (start + opts.batch.max(1)).min(prompts.len());
        let b = end - start;
        let rows: Vec<&[u32]> = ids[start..end].iter().map(Vec::as_slice).collect();
        let tokens = token_tensor(&rows, &null[start..end], g.tokenizer.pad_id(), device)?;
        let noise = randn((b, channels, size, size), rng, device)?;
        let sampler = SamplerConfig {
            kind: opts.sampler,
            steps: opts.steps,
            prediction: g.model.config().prediction,
            clip_x0: true,
        };
        let x = g
            .model
            .generate(&tokens, noise, opts.guidance, &sampler, rng, |_| on_step())?;
        let x = from_model_range(&x)?.to_device(&Device::Cpu)?;
        for i in 0..b {
            let v = x.get(i)?.flatten_all()?.to_vec1::<f32>()?;
            out.push(Image::from_vec(channels, size, size, v)?);
        }
    }
    Ok(out)
}

fn tokenizer_is_null(t: &CaptionTokenizer, prompt: &str) -> Result<bool> {
    Ok(t.normalize(prompt)?.is_empty())
}

/// Wrapped phase `atan2(sin, cos)` and coherence (clamped to `[0, 1]`) of a generated
/// `[cos, sin, coherence]` image.
pub fn phase_and_coherence(img: &Image) -> (Vec<f32>, Vec<f32>) {
    let phase = img
        .plane(0)
        .iter()
        .zip(img.plane(1))
        .map(|(&c, &s)| s.atan2(c))
        .collect();
    let coh = img.plane(2).iter().map(|c| c.clamp(0.0, 1.0)).collect();
    (phase, coh)
}

/// Options of [`evaluate_generation`].
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Real test images per half (the generated set has the same size); capped at half the
    /// test split.
    pub samples: usize,
    pub generate: GenerateOptions,
    pub kid_subsets: usize,
    pub seed: u64,
}

/// Fidelity of one image set to prompts, matched and shuffled.
#[derive(Debug, Clone, Serialize)]
pub struct FidelityPair {
    pub matched: insar_mm_eval::generation::Fidelity,
    pub shuffled: insar_mm_eval::generation::Fidelity,
}

/// What `insar-mm eval generation` reports.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationReport {
    pub generator: PathBuf,
    pub judge: PathBuf,
    pub image_size: usize,
    /// Real test images in each half (= generated samples).
    pub samples: usize,
    pub sampler: String,
    pub steps: usize,
    pub guidance: f64,
    pub seed: u64,
    /// FID of generated vs real half B, and of real half A vs real half B (the floor).
    pub fid: f64,
    pub fid_floor: f64,
    /// KID (mean over subsets) likewise.
    pub kid: f64,
    pub kid_floor: f64,
    pub kid_subset_size: usize,
    /// The judge (a classify run) on the generated images vs their prompts.
    pub judge_generated: FidelityPair,
    /// The judge on the real half A vs its own captions (the judge's ceiling).
    pub judge_real: FidelityPair,
    /// The complete-fringe intensity rule on the generated phase vs the prompts (intensity
    /// only), and on the real half A (the rule's ceiling at this image size).
    pub physics_generated: FidelityPair,
    pub physics_real: FidelityPair,
    /// Median RMS distance (model input `[cos, sin, coherence]`) to the nearest training
    /// image: of the generated images, and of the real half A.
    pub nearest_train_generated: f64,
    pub nearest_train_real: f64,
    pub seconds_sampling: f64,
}

fn judge_batches(
    judge: &super::heads::recipe::LoadedHead<super::classify::ClassifyConfig>,
    images: &[Image],
    device: &Device,
) -> Result<(Vec<insar_mm_eval::generation::CoreFacts>, Vec<f32>, usize)> {
    use insar_mm_eval::captions::facts::{Level, TypeGroup};
    use insar_mm_eval::generation::CoreFacts;
    let size = judge.config.data.image_size;
    let thr = judge.config.decision_thresholds();
    let mut facts = Vec::with_capacity(images.len());
    let mut feats = Vec::new();
    let mut dim = 0;
    for chunk in images.chunks(32) {
        let resized: Vec<Image> = chunk
            .iter()
            .map(|im| {
                if im.height == size && im.width == size {
                    Ok(im.clone())
                } else {
                    crate::data::resample::resize_area(im, size, size)
                }
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&Image> = resized.iter().collect();
        let x = crate::data::array::batch_tensor(&refs, device)?;
        let probs = judge
            .model
            .predict(&x)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let pooled = judge.model.encoder().forward_t(&x, false)?.pooled;
        dim = pooled.dim(1)?;
        feats.extend(
            pooled
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
        for p in probs {
            let deformation = f64::from(p[0]) >= thr[0];
            // Types 1..=6 (Mogi, Dyke, Sill, Spheroid, Earthquake, Unidentified).
            let t = (1..=6).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(1);
            let group = match t {
                2 => TypeGroup::Elongated,
                5 => TypeGroup::Earthquake,
                _ => TypeGroup::Concentric,
            };
            let l = (7..=9).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(7);
            let level = [Level::Low, Level::Medium, Level::High][l - 7];
            facts.push(CoreFacts {
                deformation,
                group: deformation.then_some(group),
                intensity: deformation.then_some(level),
            });
        }
    }
    Ok((facts, feats, dim))
}

fn physics_facts(images: &[Image]) -> Vec<insar_mm_eval::generation::CoreFacts> {
    use insar_mm_eval::generation::{complete_fringes, intensity_of_fringes, CoreFacts};
    images
        .iter()
        .map(|im| {
            let (phase, _) = phase_and_coherence(im);
            CoreFacts {
                deformation: true,
                group: None,
                intensity: Some(intensity_of_fringes(complete_fringes(
                    &phase, im.width, im.height,
                ))),
            }
        })
        .collect()
}

fn matrix(rows: usize, cols: usize, v: &[f32]) -> Result<insar_mm_eval::npy::Matrix> {
    Ok(insar_mm_eval::npy::Matrix::new(
        rows,
        cols,
        v.iter().map(|&x| f64::from(x)).collect(),
    )?)
}

/// Generates one image per caption of a random half of the test split and scores them
/// (see [`GenerationReport`]). `on_step` ticks once per sampler step.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_generation(
    g: &LoadedGenerator,
    generator_dir: &Path,
    judge: &super::heads::recipe::LoadedHead<super::classify::ClassifyConfig>,
    judge_dir: &Path,
    train: &CaptionPart,
    test: &CaptionPart,
    opts: &EvalOptions,
    device: &Device,
    on_step: impl FnMut(),
) -> Result<GenerationReport> {
    use insar_mm_eval::fid::{fid, kid, FidMode};
    use insar_mm_eval::generation::{derangement, fidelity, median, nearest_distances, CoreFacts};
    use rand::seq::SliceRandom;
    ensure!(
        judge.config.data.input_format == crate::data::frames::InputFormat::CosSinCoherence,
        "--classify-model {}: the judge must read cos-sin-coherence inputs (it reads {:?})",
        judge_dir.display(),
        judge.config.data.input_format
    );
    let h = opts.samples.min(test.len() / 2);
    ensure!(
        h >= 4,
        "the test split has {} captioned images: too few for two halves of at least 4",
        test.len()
    );
    let mut idx: Vec<usize> = (0..test.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    idx.shuffle(&mut rng);
    let (a, b) = (&idx[..h], &idx[h..2 * h]);
    let prompts: Vec<String> = a.iter().map(|&i| test.captions[i].clone()).collect();
    let real_a: Vec<Image> = a.iter().map(|&i| test.images[i].clone()).collect();
    let real_b: Vec<Image> = b.iter().map(|&i| test.images[i].clone()).collect();
    let start = std::time::Instant::now();
    let generated = generate_for_prompts(g, &prompts, &opts.generate, &mut rng, device, on_step)?;
    let seconds_sampling = start.elapsed().as_secs_f64();

    let targets: Vec<CoreFacts> = prompts.iter().map(|p| CoreFacts::of_caption(p)).collect();
    let same: Vec<usize> = (0..h).collect();
    let shuffled = derangement(h, opts.seed ^ 0x5_4ff1e);
    let pair = |j: &[CoreFacts]| FidelityPair {
        matched: fidelity(j, &targets, &same),
        shuffled: fidelity(j, &targets, &shuffled),
    };
    let (jg, fg, dim) = judge_batches(judge, &generated, device)?;
    let (ja, fa, _) = judge_batches(judge, &real_a, device)?;
    let (_, fb, _) = judge_batches(judge, &real_b, device)?;
    let (mg, ma, mb) = (
        matrix(h, dim, &fg)?,
        matrix(h, dim, &fa)?,
        matrix(h, dim, &fb)?,
    );
    let subset = h.min(50);
    let kid_g = kid(&mb, &mg, opts.kid_subsets, subset, opts.seed)?;
    let kid_a = kid(&mb, &ma, opts.kid_subsets, subset, opts.seed)?;
    let train_refs: Vec<&[f32]> = train.images.iter().map(|im| im.data.as_slice()).collect();
    let gen_refs: Vec<&[f32]> = generated.iter().map(|im| im.data.as_slice()).collect();
    let a_refs: Vec<&[f32]> = real_a.iter().map(|im| im.data.as_slice()).collect();
    Ok(GenerationReport {
        generator: generator_dir.to_path_buf(),
        judge: judge_dir.to_path_buf(),
        image_size: g.config.data.image_size,
        samples: h,
        sampler: format!("{:?}", opts.generate.sampler).to_lowercase(),
        steps: opts.generate.steps,
        guidance: opts.generate.guidance,
        seed: opts.seed,
        fid: fid(&mb, &mg, FidMode::Exact)?.fid,
        fid_floor: fid(&mb, &ma, FidMode::Exact)?.fid,
        kid: kid_g.mean,
        kid_floor: kid_a.mean,
        kid_subset_size: subset,
        judge_generated: pair(&jg),
        judge_real: pair(&ja),
        physics_generated: pair(&physics_facts(&generated)),
        physics_real: pair(&physics_facts(&real_a)),
        nearest_train_generated: median(&nearest_distances(&gen_refs, &train_refs)),
        nearest_train_real: median(&nearest_distances(&a_refs, &train_refs)),
        seconds_sampling,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_equals_the_defaults_and_bad_keys_fail() {
        let shipped = GeneratorTrainConfig::from_file(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/generator-tiny.toml"
        )))
        .unwrap();
        assert_eq!(shipped, GeneratorTrainConfig::default());
        shipped.validate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "[data]\nimage_sise = 8\n").unwrap();
        let err = format!("{:#}", GeneratorTrainConfig::from_file(&path).unwrap_err());
        assert!(err.contains("image_sise"), "{err}");
        let mut bad = GeneratorTrainConfig::default();
        bad.data.image_size = 30;
        assert!(format!("{:#}", bad.validate().unwrap_err()).contains("multiple of 4"));
        bad.data.image_size = 32;
        bad.caption_dropout = 1.0;
        assert!(format!("{:#}", bad.validate().unwrap_err()).contains("caption_dropout"));
        // Extreme values are echoed compactly, not as 309 digits.
        bad.caption_dropout = -1e308;
        let e = format!("{:#}", bad.validate().unwrap_err());
        assert!(e.contains("caption_dropout = -1e308 must"), "{e}");
    }

    #[test]
    fn prompt_annotations_carry_the_parsed_facts() {
        use crate::data::annotation::{ActivityType, Date, Intensity, Label};
        let d = Date::new(2020, 1, 1).unwrap();
        let a = prompt_annotation(
            7,
            "GEN_00001",
            d,
            d,
            "An earthquake deformation pattern can be detected on the central side of the region. \
             Turbulent mixing effect can be detected on the wider area of the region.",
        );
        assert_eq!(a.label, vec![Label::Earthquake]);
        assert_eq!(a.activity_type, vec![ActivityType::Earthquake]);
        assert_eq!(a.intensity_level, vec![Intensity::None]);
        assert_eq!(a.atmospheric_fringes, 2);
        let n = prompt_annotation(8, "G", d, d, "No deformation activity can be detected.");
        assert_eq!(n.label, vec![Label::NonDeformation]);
        assert!(n.activity_type.is_empty());
        assert!(has_known_facts("No deformation activity can be detected."));
        assert!(!has_known_facts("hello world"));
        assert!(!has_known_facts(""));
        assert_eq!(ema_decay_at(0.995, 0), 0.1);
        assert_eq!(ema_decay_at(0.995, 100_000), 0.995);
    }
}
