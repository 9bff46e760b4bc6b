//! Text–image retrieval (`insar-mm train retrieval`): a [`DualEncoder`] trained with a
//! symmetric contrastive loss on the image–caption pairs of a caption dataset (the same data
//! as `train caption`: the built-in synthetic set, `--data DIR`, or real captions with
//! `--annotations`), split by frame.
//!
//! - The caption tokenizer is trained on the training captions and saved as `tokenizer.json`.
//! - In-batch positives: pairs whose captions state the same facts (deformation status, type
//!   groups, intensities; [`PositiveRule::Facts`]) or, with [`PositiveRule::Caption`], the
//!   same normalised caption. [`LossKind::InfoNce`] ignores them (the plain baseline).
//! - Flips (`data.flips`) mirror the image and the caption's location words together.
//! - Validation embeds the val split and scores both directions with fact relevance:
//!   `val_mR` (mean of R@1/5/10 of text→image and image→text, percent) picks the best
//!   checkpoint; `val_mR_caption` is the same with exact-caption relevance.
//! - At the end the best model is scored on the test split into `test_scores.json`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use insar_mm_eval::captions::facts::parse_facts;
use insar_mm_eval::npy::Matrix;
use insar_mm_eval::retrieval::relevance::{
    bidirectional, normalize_caption, query_matches, relevance_key, BidirectionalScores, Relevance,
};
use insar_mm_eval::retrieval::{evaluate, RetrievalScores};
use insar_mm_models::heads::GlobalPool;
use insar_mm_models::nn::bce_with_logits;
use insar_mm_models::nn::seeded_var_builder;
use insar_mm_models::retrieval::{contrastive_loss, DualEncoder, DualEncoderConfig, LossKind};
use insar_mm_models::text::TextEncoderConfig;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::caption::{
    deformation_only, is_optimised, load_run_tokenizer, CaptionData, CaptionData3, CaptionPart,
    Flip,
};
use super::checkpoint::run_weights;
use super::checkpoint::{load_model, RunDir, CONFIG_FILE};
use super::config::{merge_tables, TrainSection};
use super::driver::{Batch, BestMetric, MetricMode, Outcome, StepOutput, TrainTask, Trainer};
use super::encoder_init::{load_pretrained, start_encoder, EncoderInit};
use super::heads::EpochOrder;
use super::optim::{trainable_params, OptimConfig, Optimizer};
use super::pretrain::RunOptions;
use super::schedule::ScheduleConfig;
use crate::data::array::{batch_tensor, Image};
use crate::data::sample::NUM_LABELS;
use crate::text::mirror_caption;
use crate::text::tokenizer::{CaptionTokenizer, TokenizerConfig};

/// The `task` tag of retrieval runs' `config.json`.
pub const TASK: &str = "retrieval";
/// File of the tokenizer in a retrieval run.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// File of the final test-split scores.
pub const TEST_SCORES_FILE: &str = "test_scores.json";
/// Words of the training captions (lower-cased), for warning about queries the model has
/// never seen a word of.
pub const WORDS_FILE: &str = "words.json";

/// Which in-batch pairs count as positives in the multi-positive / masked losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PositiveRule {
    /// The same normalised caption.
    Caption,
    /// The same caption facts (deformation status, type groups, intensities).
    Facts,
}

/// The text tower's size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextTower {
    pub d_model: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub ff_dim: usize,
    pub dropout: f64,
}

/// The config of `train retrieval`, as resolved and saved to `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalTrainConfig {
    /// Always `"retrieval"` (lets other commands refuse the wrong kind of run).
    pub task: String,
    pub seed: u64,
    /// Image encoder preset (tiny, resnet18, …) unless `--encoder` gives one.
    pub encoder_preset: String,
    pub data: CaptionData,
    pub tokenizer: TokenizerConfig,
    pub text: TextTower,
    /// How the image encoder's C5 map becomes the image vector: `avg`, `max` (a small
    /// deformation is not diluted by the rest of the frame) or `avg-max`. Runs saved before
    /// this key pooled by average.
    #[serde(default)]
    pub image_pool: GlobalPool,
    /// Weight of the auxiliary label loss (BCE of a label head on the pooled image vector
    /// against the frame's 10 labels) added to the contrastive loss; 0 = no label head
    /// (runs saved before this key).
    #[serde(default)]
    pub label_loss_weight: f64,
    /// Width of the shared embedding space.
    pub embed_dim: usize,
    pub init_temperature: f64,
    pub loss: LossKind,
    pub positives: PositiveRule,
    /// Keep the image encoder fixed (running BatchNorm statistics, no gradient).
    pub freeze_encoder: bool,
    /// Where the image tower starts (`--encoder`): `auto` (the shipped pretrained encoder
    /// when it fits `encoder_preset` and the input format, else random), `shipped`, `none`
    /// or a pretrain/classify/segment run. A run records what `auto` resolved to.
    #[serde(alias = "encoder_init")]
    pub encoder: EncoderInit,
    /// The resolved architecture (filled once the tokenizer's vocabulary is known).
    pub model: Option<DualEncoderConfig>,
    pub optim: OptimConfig,
    pub schedule: ScheduleConfig,
    pub train: TrainSection,
}

impl Default for RetrievalTrainConfig {
    fn default() -> Self {
        Self {
            task: TASK.into(),
            seed: 42,
            encoder_preset: "tiny".into(),
            data: CaptionData {
                image_size: 224,
                batch_size: 64,
                max_len: 64,
                ..CaptionData::default()
            },
            tokenizer: TokenizerConfig::default(),
            text: TextTower {
                d_model: 128,
                num_layers: 2,
                num_heads: 4,
                ff_dim: 256,
                dropout: 0.1,
            },
            image_pool: GlobalPool::Max,
            label_loss_weight: 1.0,
            embed_dim: 128,
            init_temperature: 0.07,
            loss: LossKind::MultiPositive,
            positives: PositiveRule::Facts,
            freeze_encoder: false,
            encoder: EncoderInit::default(),
            model: None,
            optim: OptimConfig::Adamw {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-2,
            },
            schedule: ScheduleConfig::Cosine {
                warmup_steps: 30,
                min_lr_ratio: 0.01,
            },
            train: TrainSection {
                epochs: Some(16),
                checkpoint_every: 100,
                log_every: 10,
                validate_every: 100,
                clip_grad_norm: Some(1.0),
                best_metric: Some(BestMetric {
                    name: "val_mR".into(),
                    mode: MetricMode::Max,
                }),
                ..TrainSection::default()
            },
        }
    }
}

impl RetrievalTrainConfig {
    /// The defaults with the TOML file `path` merged over them (unknown keys are errors).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config {}: cannot read", path.display()))?;
        let over: toml::Table = text
            .parse()
            .with_context(|| format!("--config {}: invalid TOML", path.display()))?;
        let mut base =
            toml::Table::try_from(Self::default()).context("default retrieval config")?;
        merge_tables(&mut base, over);
        toml::Value::Table(base)
            .try_into()
            .with_context(|| format!("--config {}", path.display()))
    }

    /// Checks the settings; errors name the key.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.task == TASK,
            "task = {:?}: not a retrieval config",
            self.task
        );
        ensure!(
            (16..=super::caption::MAX_IMAGE_SIZE).contains(&self.data.image_size),
            "data.image_size = {} must be in 16..={}",
            self.data.image_size,
            super::caption::MAX_IMAGE_SIZE
        );
        ensure!(
            self.data.batch_size >= 2,
            "data.batch_size = {} must be at least 2 (contrastive pairs need negatives)",
            self.data.batch_size
        );
        ensure!(
            self.data.max_len >= 3,
            "data.max_len = {} must leave room for [BOS], a token and [EOS]",
            self.data.max_len
        );
        ensure!(
            self.data.annotation_limit == 0 || self.data.annotations.is_some(),
            "data.annotation_limit = {} needs data.annotations (--annotations PATH)",
            self.data.annotation_limit
        );
        ensure!(self.embed_dim >= 1, "embed_dim must be at least 1");
        ensure!(
            self.label_loss_weight.is_finite() && self.label_loss_weight >= 0.0,
            "label_loss_weight = {:?} must be finite and ≥ 0",
            self.label_loss_weight
        );
        if let Some(m) = &self.model {
            m.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
            ensure!(
                m.image.in_channels == self.data.input_format.channels(),
                "data.input_format gives {} channels but the model takes {}",
                self.data.input_format.channels(),
                m.image.in_channels
            );
        }
        self.optim.validate()?;
        self.schedule.validate()?;
        Ok(())
    }

    /// The architecture for a tokenizer of `vocab` tokens, with the preset's image encoder.
    pub fn architecture(&self, vocab: usize, pad_id: u32) -> Result<DualEncoderConfig> {
        let image = super::heads::preset_encoder(
            &self.encoder_preset,
            None,
            self.data.input_format.channels(),
        )?;
        let t = &self.text;
        let cfg = DualEncoderConfig {
            image,
            pool: self.image_pool,
            text: TextEncoderConfig {
                vocab_size: vocab,
                d_model: t.d_model,
                num_layers: t.num_layers,
                num_heads: t.num_heads,
                ff_dim: t.ff_dim,
                max_len: self.data.max_len,
                dropout: t.dropout,
                pad_id,
                ..TextEncoderConfig::default()
            },
            embed_dim: self.embed_dim,
            init_temperature: self.init_temperature,
            max_logit_scale: 100f64.ln(),
            num_labels: if self.label_loss_weight > 0.0 {
                NUM_LABELS
            } else {
                0
            },
        };
        cfg.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(cfg)
    }

    pub fn model(&self) -> Result<&DualEncoderConfig> {
        self.model
            .as_ref()
            .context("config.json has no `model`: the run was never started")
    }
}

/// The key that decides whether two captions are positives under `rule`.
pub fn positive_key(caption: &str, rule: PositiveRule) -> String {
    match rule {
        PositiveRule::Caption => normalize_caption(caption),
        PositiveRule::Facts => format!("{:?}", relevance_key(caption, Relevance::Facts)),
    }
}

/// Lower-cased words (letters and digits) of `captions`, sorted and unique.
pub fn caption_words(captions: &[String]) -> Vec<String> {
    let mut w: Vec<String> = captions
        .iter()
        .flat_map(|c| insar_mm_eval::retrieval::relevance::words(c))
        .collect();
    w.sort();
    w.dedup();
    w
}

/// The dual encoder of `cfg` on a fresh `VarMap`, initialised from `cfg.seed`.
pub fn build_model(cfg: &RetrievalTrainConfig, device: &Device) -> Result<(VarMap, DualEncoder)> {
    let varmap = VarMap::new();
    let model = DualEncoder::new(
        cfg.model()?,
        seeded_var_builder(&varmap, cfg.seed, DType::F32, device),
    )?;
    Ok((varmap, model))
}

/// L2-normalised image embeddings of `images` (evaluation mode), one row each.
pub fn embed_images(
    model: &DualEncoder,
    images: &[&Image],
    batch: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch.max(1)) {
        let x = batch_tensor(chunk, device)?;
        let e = model.embed_images(&x, false, 0)?;
        out.extend(e.to_dtype(DType::F32)?.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// L2-normalised text embeddings of `texts` (no dropout), one row each. An empty text is an
/// error naming it.
pub fn embed_texts<S: AsRef<str>>(
    model: &DualEncoder,
    tokenizer: &CaptionTokenizer,
    texts: &[S],
    batch: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let max_len = model.config().text.max_len;
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(batch.max(1)) {
        let (ids, t) = tokenizer.encode_batch(chunk, max_len)?;
        let tokens = Tensor::from_vec(ids, (chunk.len(), t), device)?;
        let e = model.embed_texts(&tokens, None)?;
        out.extend(e.to_dtype(DType::F32)?.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// `queries · galleryᵀ` as an evaluation matrix (rows: queries).
pub fn similarity(queries: &[Vec<f32>], gallery: &[Vec<f32>]) -> Result<Matrix> {
    let mut data = Vec::with_capacity(queries.len() * gallery.len());
    for q in queries {
        for g in gallery {
            data.push(q.iter().zip(g).map(|(a, b)| a * b).sum::<f32>() as f64);
        }
    }
    Ok(Matrix::new(queries.len(), gallery.len(), data)?)
}

/// Retrieval scores of one split part under every [`Relevance`], plus text → image scores
/// (fact relevance) of the captions that name a type group.
#[derive(Debug, Clone, Serialize)]
pub struct PartScores {
    pub pairs: usize,
    pub by_relevance: Vec<BidirectionalScores>,
    /// Text → image over the captions naming a type group (deformation present); relevant
    /// images: those whose caption states every fact of the query.
    pub group_queries: Option<RetrievalScores>,
}

impl PartScores {
    /// mR (percent) under `r`.
    pub fn mean_recall(&self, r: Relevance) -> f64 {
        self.by_relevance
            .iter()
            .find(|s| s.relevance == r)
            .map_or(f64::NAN, |s| s.mean_recall)
    }
}

/// Scores a caption × image similarity (`text_image`, rows: the part's captions, columns:
/// its images) of paired items.
pub fn score_similarity(text_image: &Matrix, captions: &[String]) -> Result<PartScores> {
    let by_relevance = Relevance::ALL
        .iter()
        .map(|&r| bidirectional(text_image, captions, r).map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()?;
    let facts: Vec<_> = captions.iter().map(|c| parse_facts(c)).collect();
    let rows: Vec<usize> = (0..captions.len())
        .filter(|&i| facts[i].has_deformation() && !facts[i].activities.is_empty())
        .collect();
    let group_queries = if rows.is_empty() {
        None
    } else {
        let rel: Vec<Vec<usize>> = rows
            .iter()
            .map(|&q| {
                (0..facts.len())
                    .filter(|&g| query_matches(&facts[q], &facts[g]))
                    .collect()
            })
            .collect();
        let data: Vec<f64> = rows
            .iter()
            .flat_map(|&q| text_image.row(q).to_vec())
            .collect();
        let m = Matrix::new(rows.len(), text_image.cols, data)?;
        Some(evaluate(&m, &rel)?)
    };
    Ok(PartScores {
        pairs: captions.len(),
        by_relevance,
        group_queries,
    })
}

/// Embeds `part` with `model` and scores it ([`score_similarity`]).
pub fn score_part(
    model: &DualEncoder,
    tokenizer: &CaptionTokenizer,
    part: &CaptionPart,
    batch: usize,
    device: &Device,
) -> Result<(PartScores, Matrix)> {
    ensure!(
        !part.is_empty(),
        "the evaluated split has no image with a caption"
    );
    let images: Vec<&Image> = part.images.iter().collect();
    let img = embed_images(model, &images, batch, device)?;
    let txt = embed_texts(model, tokenizer, &part.captions, batch, device)?;
    let sim = similarity(&txt, &img)?;
    Ok((score_similarity(&sim, &part.captions)?, sim))
}

/// Retrieval as a [`TrainTask`].
pub struct RetrievalTask {
    model: DualEncoder,
    tokenizer: CaptionTokenizer,
    train: CaptionPart,
    /// Token ids of the training captions: `[0]` as written, `[1..4]` mirrored left–right,
    /// top–bottom and both (with `data.flips`).
    ids: Vec<Vec<Vec<u32>>>,
    /// Positive keys matching `ids`.
    keys: Vec<Vec<u64>>,
    val: CaptionPart,
    batch: usize,
    loss: LossKind,
    label_loss_weight: f64,
    frozen_stages: usize,
    order: EpochOrder,
    device: Device,
}

impl RetrievalTask {
    pub fn new(
        cfg: &RetrievalTrainConfig,
        model: DualEncoder,
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
        let variants: &[(bool, bool)] = if cfg.data.flips {
            &[(false, false), (true, false), (false, true), (true, true)]
        } else {
            &[(false, false)]
        };
        let mut key_ids: HashMap<String, u64> = HashMap::new();
        let mut ids = Vec::new();
        let mut keys = Vec::new();
        for &(h, v) in variants {
            let caps: Vec<String> = train
                .captions
                .iter()
                .map(|c| {
                    if h || v {
                        mirror_caption(c, h, v)
                    } else {
                        c.clone()
                    }
                })
                .collect();
            ids.push(
                caps.iter()
                    .zip(&train.ids)
                    .map(|(c, id)| {
                        tokenizer
                            .encode(c, Some(cfg.data.max_len))
                            .with_context(|| format!("caption of {id}"))
                    })
                    .collect::<Result<Vec<_>>>()?,
            );
            keys.push(
                caps.iter()
                    .map(|c| {
                        let k = positive_key(c, cfg.positives);
                        let next = key_ids.len() as u64;
                        *key_ids.entry(k).or_insert(next)
                    })
                    .collect(),
            );
        }
        let order = EpochOrder::new(
            &deformation_only(&train.labels),
            cfg.data.balanced,
            cfg.seed,
        )?;
        Ok(Self {
            model,
            tokenizer,
            train,
            ids,
            keys,
            val,
            batch: cfg.data.batch_size,
            loss: cfg.loss,
            label_loss_weight: cfg.label_loss_weight,
            frozen_stages: if cfg.freeze_encoder {
                insar_mm_models::encoder::ResNet::STAGES
            } else {
                0
            },
            order,
            device: device.clone(),
        })
    }

    pub fn model(&self) -> &DualEncoder {
        &self.model
    }
}

impl TrainTask for RetrievalTask {
    fn len(&self) -> usize {
        self.train.len()
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn step(&mut self, batch: Batch<'_>) -> Result<StepOutput> {
        let indices = self.order.batch(&batch);
        let rng: &mut ChaCha8Rng = batch.rng;
        let flips: Vec<Flip> = if self.ids.len() > 1 {
            indices.iter().map(|_| Flip::draw(rng)).collect()
        } else {
            vec![Flip::default(); indices.len()]
        };
        let images: Vec<Cow<Image>> = indices
            .iter()
            .zip(&flips)
            .map(|(&i, f)| f.image(&self.train.images[i]))
            .collect();
        let refs: Vec<&Image> = images.iter().map(|c| c.as_ref()).collect();
        let x = batch_tensor(&refs, &self.device)?;
        let seqs: Vec<&Vec<u32>> = indices
            .iter()
            .zip(&flips)
            .map(|(&i, f)| &self.ids[f.index()][i])
            .collect();
        let keys: Vec<u64> = indices
            .iter()
            .zip(&flips)
            .map(|(&i, f)| self.keys[f.index()][i])
            .collect();
        let t = seqs.iter().map(|s| s.len()).max().unwrap_or(1);
        let pad = self.tokenizer.pad_id();
        let mut flat = Vec::with_capacity(seqs.len() * t);
        for s in &seqs {
            flat.extend_from_slice(s);
            flat.extend(std::iter::repeat_n(pad, t - s.len()));
        }
        let b = seqs.len();
        let tokens = Tensor::from_vec(flat, (b, t), &self.device)?;
        let mut pos = Vec::with_capacity(b * b);
        for ki in &keys {
            for kj in &keys {
                pos.push(u8::from(ki == kj));
            }
        }
        let positives = pos.iter().filter(|&&p| p == 1).count() as f64 / b as f64;
        let pos = Tensor::from_vec(pos, (b, b), &self.device)?;
        let img = self
            .model
            .embed_images_with_labels(&x, true, self.frozen_stages)?;
        let txt = self.model.embed_texts(&tokens, Some(rng))?;
        let scale = self.model.scale()?;
        let contrastive = contrastive_loss(&img.embedding, &txt, &scale, &pos, self.loss)?;
        let mut metrics = vec![
            ("scale".into(), scale.to_scalar::<f32>()? as f64),
            ("positives_per_row".into(), positives),
        ];
        let loss = match &img.label_logits {
            Some(logits) => {
                // Labels do not change under mirroring (they hold no location).
                let targets = self.train.label_targets(&indices, &self.device)?;
                let labels = bce_with_logits(logits, &targets, None)?;
                metrics.push((
                    "contrastive_loss".into(),
                    contrastive.to_scalar::<f32>()? as f64,
                ));
                metrics.push(("label_loss".into(), labels.to_scalar::<f32>()? as f64));
                (contrastive + (labels * self.label_loss_weight)?)?
            }
            None => contrastive,
        };
        Ok(StepOutput { loss, metrics })
    }

    fn validate(&mut self) -> Result<Vec<(String, f64)>> {
        if self.val.is_empty() {
            return Ok(Vec::new());
        }
        let (s, _) = score_part(
            &self.model,
            &self.tokenizer,
            &self.val,
            self.batch.max(32),
            &self.device,
        )?;
        let mut m = vec![
            ("val_mR".into(), s.mean_recall(Relevance::Facts)),
            ("val_mR_caption".into(), s.mean_recall(Relevance::Caption)),
        ];
        if let Some(g) = &s.group_queries {
            m.push(("val_group_t2i_R@10".into(), g.r10));
        }
        Ok(m)
    }
}

/// A finished retrieval run, loaded for inference.
pub struct LoadedRetrievalRun {
    pub root: PathBuf,
    pub cfg: RetrievalTrainConfig,
    pub tokenizer: CaptionTokenizer,
    pub model: DualEncoder,
    /// The weights file used (`best.safetensors`, else `model.safetensors`).
    pub weights: PathBuf,
    /// Identity of the model: FNV-1a of `config.json`, the tokenizer and the weights (hex).
    pub id: String,
    /// Words of the training captions (empty for runs without `words.json`).
    pub words: Vec<String>,
}

/// The identity of a run's model: FNV-1a 64 over its config, tokenizer and weights bytes.
pub fn model_id(run: &RunDir, weights: &Path) -> Result<String> {
    let mut bytes = Vec::new();
    for p in [
        run.path(CONFIG_FILE),
        run.path(TOKENIZER_FILE),
        weights.to_path_buf(),
    ] {
        bytes.extend(std::fs::read(&p).with_context(|| format!("{}: cannot read", p.display()))?);
    }
    Ok(format!(
        "{:016x}",
        insar_mm_models::nn::init::fnv1a64(&bytes)
    ))
}

/// Loads the retrieval run in `dir` (`--model`) onto `device`.
pub fn load_run(dir: &Path, device: &Device) -> Result<LoadedRetrievalRun> {
    super::heads::expect_task(dir, TASK).with_context(|| format!("--model {}", dir.display()))?;
    let run = RunDir::new(dir);
    let cfg: RetrievalTrainConfig = run
        .read_checked_config(RetrievalTrainConfig::validate)
        .with_context(|| format!("--model {}", dir.display()))?;
    let arch = cfg.model()?.clone();
    let tokenizer = load_run_tokenizer(&run, arch.text.vocab_size)?;
    let varmap = VarMap::new();
    let model = DualEncoder::new(
        &arch,
        seeded_var_builder(&varmap, cfg.seed, DType::F32, device),
    )?;
    let weights = run_weights(&run)?;
    load_model(&weights, &varmap)?;
    let id = model_id(&run, &weights)?;
    let words = match std::fs::read(run.path(WORDS_FILE)) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{}: invalid JSON", run.path(WORDS_FILE).display()))?,
        Err(_) => Vec::new(),
    };
    Ok(LoadedRetrievalRun {
        root: dir.to_path_buf(),
        cfg,
        tokenizer,
        model,
        weights,
        id,
        words,
    })
}

/// What [`train_retrieval`] returns.
#[derive(Debug)]
pub struct RetrievalOutcome {
    pub outcome: Outcome,
    /// Test-split scores of the best (else last) model; `None` when interrupted or the test
    /// split is empty.
    pub test: Option<PartScores>,
}

/// The JSON of [`PartScores`] written to `test_scores.json`.
pub fn scores_json(s: &PartScores) -> serde_json::Value {
    let mut by = serde_json::Map::new();
    for b in &s.by_relevance {
        by.insert(
            b.relevance.name().into(),
            serde_json::json!({
                "mR": b.mean_recall,
                "text_to_image": b.text_to_image,
                "image_to_text": b.image_to_text,
            }),
        );
    }
    serde_json::json!({
        "pairs": s.pairs,
        "relevance": by,
        "group_queries_text_to_image": s.group_queries,
    })
}

/// Trains (or, with `resume`, continues) the retrieval run `run` on `data`, then scores the
/// best model on the test split.
pub fn train_retrieval(
    cfg: &mut RetrievalTrainConfig,
    data: CaptionData3,
    run: RunDir,
    resume: bool,
    device: &Device,
    options: RunOptions,
) -> Result<RetrievalOutcome> {
    cfg.validate()?;
    // The encoder to start from (none on resume: the checkpoint has the weights).
    let mut pretrained = None;
    let tokenizer = if resume {
        load_run_tokenizer(&run, cfg.model()?.text.vocab_size)?
    } else {
        let tok = CaptionTokenizer::train(&data.train.captions, &cfg.tokenizer)
            .context("training the tokenizer on the train captions")?;
        let mut arch = cfg.architecture(tok.vocab_size(), tok.pad_id())?;
        let loaded = start_encoder(&mut cfg.encoder, &mut arch.image, cfg.data.input_format)?;
        cfg.model = Some(arch);
        cfg.validate().with_context(|| match &loaded {
            Some(p) => p.origin.clone(),
            None => "retrieval config".into(),
        })?;
        pretrained = loaded;
        tok
    };
    let (varmap, model) = build_model(cfg, device)?;
    load_pretrained(pretrained.as_ref(), &varmap)?;
    let params = trainable_params(&varmap, |n| is_optimised(n, cfg.freeze_encoder));
    let optimizer = Optimizer::new(cfg.optim.clone(), params)?;
    let test = data.test;
    let words = caption_words(&data.train.captions);
    let mut task = RetrievalTask::new(cfg, model, tokenizer.clone(), data.train, data.val, device)?;
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
        crate::data::atomic::write_atomic(
            &run.path(WORDS_FILE),
            serde_json::to_string(&words)?.as_bytes(),
        )?;
    }
    let outcome = trainer.run(&mut task)?;
    if matches!(outcome, Outcome::Interrupted { .. }) || test.is_empty() {
        return Ok(RetrievalOutcome {
            outcome,
            test: None,
        });
    }
    load_model(&run_weights(&run)?, &varmap)?;
    let (scores, _) = score_part(
        task.model(),
        &tokenizer,
        &test,
        cfg.data.batch_size.max(32),
        device,
    )?;
    crate::data::atomic::write_atomic(
        &run.path(TEST_SCORES_FILE),
        serde_json::to_string_pretty(&scores_json(&scores))?.as_bytes(),
    )?;
    Ok(RetrievalOutcome {
        outcome,
        test: Some(scores),
    })
}

/// Errors unless `text` has something to encode (after trimming).
pub fn check_query(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        bail!("the query is empty: give a description such as \"dyke-type deformation of high intensity\"")
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, "loss = \"info-nce\"\n[data]\nbatch_size = 8\n").unwrap();
        let cfg = RetrievalTrainConfig::from_file(&path).unwrap();
        assert_eq!(cfg.loss, LossKind::InfoNce);
        assert_eq!(cfg.data.batch_size, 8);
        let shipped = RetrievalTrainConfig::from_file(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/retrieval-tiny.toml"
        )))
        .unwrap();
        assert_eq!(shipped, RetrievalTrainConfig::default());
        std::fs::write(&path, "[data]\nbatch_sise = 8\n").unwrap();
        assert!(RetrievalTrainConfig::from_file(&path).is_err());
        let mut bad = RetrievalTrainConfig::default();
        bad.data.batch_size = 1;
        assert!(bad.validate().is_err());
        let arch = cfg.architecture(300, 0).unwrap();
        assert_eq!(arch.text.vocab_size, 300);
        assert_eq!(arch.image.in_channels, cfg.data.input_format.channels());
        std::fs::write(&path, "image_pool = \"max\"\nencoder = \"none\"\n").unwrap();
        let cfg = RetrievalTrainConfig::from_file(&path).unwrap();
        assert_eq!(cfg.encoder, EncoderInit::Random);
        let arch = cfg.architecture(300, 0).unwrap();
        assert_eq!(arch.pool, GlobalPool::Max);
    }

    #[test]
    fn configs_of_earlier_runs_still_read() {
        // Saved before `encoder` (then `encoder_init`, a run or null) and the image pool.
        let mut v = serde_json::to_value(RetrievalTrainConfig::default()).unwrap();
        let m = v.as_object_mut().unwrap();
        m.remove("encoder");
        m.remove("image_pool");
        m.remove("label_loss_weight");
        m.insert("encoder_init".into(), serde_json::Value::Null);
        let mut arch =
            serde_json::to_value(RetrievalTrainConfig::default().architecture(40, 0).unwrap())
                .unwrap();
        arch.as_object_mut().unwrap().remove("pool");
        arch.as_object_mut().unwrap().remove("num_labels");
        m.insert("model".into(), arch);
        let old: RetrievalTrainConfig = serde_json::from_value(v).unwrap();
        assert_eq!(old.encoder, EncoderInit::Random);
        assert_eq!(old.image_pool, GlobalPool::Avg);
        assert_eq!(old.label_loss_weight, 0.0);
        assert_eq!(old.model().unwrap().pool, GlobalPool::Avg);
        assert_eq!(old.model().unwrap().num_labels, 0);
    }

    #[test]
    fn positive_keys_follow_facts_or_captions() {
        let a = "A mogi-type deformation pattern of high intensity can be detected in the centre.";
        let b = "A sill-type deformation pattern of high intensity can be detected on the left.";
        assert_eq!(
            positive_key(a, PositiveRule::Facts),
            positive_key(b, PositiveRule::Facts)
        );
        assert_ne!(
            positive_key(a, PositiveRule::Caption),
            positive_key(b, PositiveRule::Caption)
        );
        assert!(check_query("  ").is_err());
    }

    #[test]
    fn identical_embeddings_of_pairs_score_perfectly() {
        let caps: Vec<String> = [
            "A dyke-type deformation pattern of high intensity can be detected on the left.",
            "No deformation activity can be detected.",
            "A mogi-type deformation pattern of low intensity can be detected in the centre.",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect();
        let e: Vec<Vec<f32>> = vec![vec![1., 0., 0.], vec![0., 1., 0.], vec![0., 0., 1.]];
        let s = score_part_similarity(&e, &e, &caps);
        for b in &s.by_relevance {
            assert_eq!(b.mean_recall, 100.0, "{:?}", b.relevance);
        }
        let g = s.group_queries.unwrap();
        assert_eq!((g.queries, g.r1), (2, 1.0));
        assert_eq!(
            caption_words(&caps[1..2]),
            vec!["activity", "be", "can", "deformation", "detected", "no"]
        );
    }

    fn score_part_similarity(t: &[Vec<f32>], i: &[Vec<f32>], caps: &[String]) -> PartScores {
        score_similarity(&similarity(t, i).unwrap(), caps).unwrap()
    }
}
