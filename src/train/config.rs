//! Training configs: TOML files in layers, then command-line overrides.
//!
//! A config is resolved from, lowest priority first:
//!
//! 1. the defaults of every field (`#[serde(default)]`);
//! 2. a model preset, `configs/presets/{tiny,small,base,large}.toml` (compiled into the
//!    binary; `--preset FILE.toml` reads a file instead), named by `--preset` or by the
//!    config file's `preset` key (default `tiny`);
//! 3. the config file (`--config configs/pretrain-*.toml`);
//! 4. command-line overrides (`--batch-size`, `--image-size`, `--steps`, ...).
//!
//! Tables merge key by key, so a config file only states what differs from its preset.
//! Unknown keys are errors naming the key (`model.widht: unknown field`). The resolved
//! config is written to the run's `config.json`, which `--resume` and `embed` read back.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use insar_mm_models::encoder::{EncoderConfig, ProjectionConfig, SimClrConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::driver::{BestMetric, LoopConfig};
use super::optim::OptimConfig;
use super::schedule::ScheduleConfig;
use crate::data::augment::AugmentConfig;
use crate::data::frames::InputFormat;
use crate::synth::scene::TwinTerrain;

/// Names of the built-in presets.
pub const PRESETS: [&str; 4] = ["tiny", "small", "base", "large"];

/// The TOML text of a built-in preset.
pub fn builtin_preset(name: &str) -> Option<&'static str> {
    match name {
        "tiny" => Some(include_str!("../../configs/presets/tiny.toml")),
        "small" => Some(include_str!("../../configs/presets/small.toml")),
        "base" => Some(include_str!("../../configs/presets/base.toml")),
        "large" => Some(include_str!("../../configs/presets/large.toml")),
        _ => None,
    }
}

/// `[model]`: the encoder and its contrastive head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Encoder architecture: `tiny`, `resnet18`, `resnet34` or `resnet50`.
    #[serde(default = "default_arch")]
    pub arch: String,
    /// Base width: stage widths `[w, 2w, 4w, 8w]`, stem width `w` (64 = torchvision).
    #[serde(default)]
    pub width: Option<usize>,
    /// Input channels (2 = `[phase preview, coherence]`, docs/architecture.md §2.1).
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    #[serde(default)]
    pub projection: ProjectionConfig,
    /// NT-Xent temperature (0.5 as in Bountos et al. 2021).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

fn default_arch() -> String {
    "tiny".into()
}
fn default_in_channels() -> usize {
    InputFormat::default().channels()
}
fn default_temperature() -> f64 {
    0.5
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: default_arch(),
            width: None,
            in_channels: default_in_channels(),
            projection: ProjectionConfig::default(),
            temperature: default_temperature(),
        }
    }
}

impl ModelConfig {
    /// The encoder architecture this section describes.
    pub fn encoder(&self) -> Result<EncoderConfig> {
        let mut cfg = EncoderConfig::preset(&self.arch)
            .map_err(|e| anyhow::anyhow!("model.arch: {e}"))?
            .with_in_channels(self.in_channels);
        if let Some(w) = self.width {
            ensure!(w > 0, "model.width must be positive");
            cfg.widths = [w, 2 * w, 4 * w, 8 * w];
            cfg.stem_width = w;
        }
        cfg.validate().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        Ok(cfg)
    }

    pub fn simclr(&self) -> Result<SimClrConfig> {
        ensure!(
            self.temperature > 0.0 && self.temperature.is_finite(),
            "model.temperature = {:?} must be positive",
            self.temperature
        );
        Ok(SimClrConfig {
            encoder: self.encoder()?,
            projection: self.projection.clone(),
            temperature: self.temperature,
        })
    }
}

/// `[data]`: input size, batch and where samples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Side of the (square) model input; samples are cropped/resized to it.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    /// Images per micro-batch (SimCLR sees two views of each).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Channels read from a dataset directory.
    #[serde(default)]
    pub input_format: InputFormat,
    /// Samples of the built-in synthetic stream (used without `--data`).
    #[serde(default = "default_synthetic_samples")]
    pub synthetic_samples: usize,
    /// Samples held out for validation (drawn with the run seed).
    #[serde(default = "default_val_samples")]
    pub val_samples: usize,
    /// `--data DIR` of the run (recorded; `None` = built-in synthetic stream).
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
    /// What a SimCLR positive pair is made of.
    #[serde(default)]
    pub pairs: PairMode,
    /// With `pairs = "partners"` on the built-in stream: whether a nuisance twin keeps its
    /// scene's terrain (`same`) or gets another (`redrawn`, so that the coherence pattern
    /// and topography-correlated delay are not shared and only the deformation is; the
    /// default: docs/results/ssl.md).
    #[serde(default = "default_twin_terrain")]
    pub twin_terrain: TwinTerrain,
}

/// The two images behind a SimCLR positive pair (both are then augmented).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairMode {
    /// One image, twice: the positives differ only by augmentation (plain SimCLR).
    Views,
    /// The image and a partner observation of the same content where the source has one
    /// (`SampleSource::partner`): a nuisance twin of a synthetic scene (same deformation,
    /// independent atmosphere, decorrelation, noise, ramp, errors and renderer), or an
    /// interferogram of the same frame whose time span overlaps (`--data`). Samples without
    /// a partner fall back to `views`.
    #[default]
    Partners,
}

fn default_image_size() -> usize {
    64
}
fn default_batch_size() -> usize {
    32
}
fn default_synthetic_samples() -> usize {
    10_000
}
fn default_twin_terrain() -> TwinTerrain {
    TwinTerrain::Redrawn
}
fn default_val_samples() -> usize {
    256
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            image_size: default_image_size(),
            batch_size: default_batch_size(),
            input_format: InputFormat::default(),
            synthetic_samples: default_synthetic_samples(),
            val_samples: default_val_samples(),
            dir: None,
            pairs: PairMode::default(),
            twin_terrain: default_twin_terrain(),
        }
    }
}

/// `[train]`: length of the run and the loop's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Optimizer steps (exclusive with `epochs`).
    #[serde(default)]
    pub steps: Option<u64>,
    /// Epochs over the training samples (exclusive with `steps`).
    #[serde(default)]
    pub epochs: Option<u64>,
    /// Micro-batches per optimizer step (effective batch = batch_size × accumulate).
    #[serde(default = "one")]
    pub accumulate: usize,
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// Checkpoint every N steps (0: only at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Validate every N steps and at the end (0: never).
    #[serde(default)]
    pub validate_every: u64,
    /// Keep `best.safetensors` at the best value of this validation metric.
    #[serde(default)]
    pub best_metric: Option<BestMetric>,
}

fn one() -> usize {
    1
}
fn default_checkpoint_every() -> u64 {
    500
}
fn default_log_every() -> u64 {
    10
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            steps: None,
            epochs: None,
            accumulate: 1,
            clip_grad_norm: None,
            checkpoint_every: default_checkpoint_every(),
            log_every: default_log_every(),
            validate_every: 0,
            best_metric: None,
        }
    }
}

impl TrainSection {
    /// The loop config for `samples` training samples per epoch and `batch` per micro-batch.
    pub fn loop_config(&self, samples: usize, batch: usize) -> Result<LoopConfig> {
        ensure!(batch > 0, "the batch size must be at least 1");
        ensure!(
            samples >= batch,
            "{samples} training samples are fewer than one batch of {batch}: lower --batch-size or add data"
        );
        let total_steps = match (self.steps, self.epochs) {
            (Some(_), Some(_)) => bail!("train.steps and train.epochs are exclusive; set one"),
            (Some(s), None) => s,
            (None, Some(e)) => {
                ensure!(batch > 0 && self.accumulate > 0, "batch size must be positive");
                let per_epoch = (samples / batch) as u64 / self.accumulate as u64;
                ensure!(
                    per_epoch > 0,
                    "{samples} training samples do not fill one step of {} × {batch}",
                    self.accumulate
                );
                e * per_epoch
            }
            (None, None) => bail!("set the length of the run: --steps N or --epochs N (or train.steps / train.epochs)"),
        };
        let cfg = LoopConfig {
            total_steps,
            accumulate: self.accumulate,
            clip_grad_norm: self.clip_grad_norm,
            checkpoint_every: self.checkpoint_every,
            log_every: self.log_every,
            validate_every: self.validate_every,
            best: self.best_metric.clone(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The config of `train pretrain` (SimCLR), as resolved and saved to `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// The preset the config was built on.
    #[serde(default)]
    pub preset: Option<String>,
    /// The run seed (`--seed`).
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub augment: AugmentConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub train: TrainSection,
}

impl PretrainConfig {
    /// Checks every section; errors name the key.
    pub fn validate(&self) -> Result<()> {
        self.model.simclr()?;
        ensure!(
            self.data.image_size >= 8,
            "data.image_size = {} is too small (at least 8)",
            self.data.image_size
        );
        ensure!(
            self.data.image_size <= super::heads::MAX_IMAGE_SIZE,
            "data.image_size = {} is too large (at most {})",
            self.data.image_size,
            super::heads::MAX_IMAGE_SIZE
        );
        ensure!(
            self.data.batch_size >= 2,
            "data.batch_size = {} must be at least 2 (NT-Xent needs negatives)",
            self.data.batch_size
        );
        ensure!(
            self.data.input_format.channels() == self.model.in_channels,
            "data.input_format {:?} gives {} channels but model.in_channels = {}",
            self.data.input_format,
            self.data.input_format.channels(),
            self.model.in_channels
        );
        self.augment.validate()?;
        self.optim.validate()?;
        self.schedule.validate()?;
        Ok(())
    }
}

/// Merges `over` into `base`, table by table (non-table values replace). A table that names
/// another `kind` than the base's (`[optim] kind = "sgd"` over AdamW) replaces it whole:
/// the other kind's keys do not apply.
pub fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o))
                if o.get("kind").is_none_or(|kind| b.get("kind") == Some(kind)) =>
            {
                merge_tables(b, o)
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Refuses, in a table with a `kind`, a key that only another kind has: `given` pairs each
/// optional key of the table with whether it is set, `own` lists the keys of `kind`.
pub(crate) fn only_own_keys(
    kind: &str,
    own: &[&str],
    given: &[(&str, bool)],
) -> std::result::Result<(), String> {
    match given.iter().find(|(key, set)| *set && !own.contains(key)) {
        Some((key, _)) => Err(format!(
            "`{key}` is not a setting of kind = \"{kind}\" (its keys: {})",
            own.join(", ")
        )),
        None => Ok(()),
    }
}

/// The defaults of `T` with the TOML file `path` merged over them, key by key (unknown keys
/// are errors naming the key path and the file).
pub fn config_from_file<T: Default + Serialize + DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config {}: cannot read", path.display()))?;
    let origin = format!("--config {}", path.display());
    let over = parse_table(&text, &origin)?;
    let mut base = toml::Table::try_from(T::default()).context("default config")?;
    merge_tables(&mut base, over);
    from_table(base, &origin)
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table> {
    text.parse::<toml::Table>()
        .with_context(|| format!("{origin}: invalid TOML"))
}

/// The preset named `name` (built in) or the TOML file at `name`.
pub fn preset_table(name: &str) -> Result<toml::Table> {
    if let Some(text) = builtin_preset(name) {
        return parse_table(text, &format!("preset {name}"));
    }
    let path = Path::new(name);
    if path.extension().is_some_and(|e| e == "toml") {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--preset {}: cannot read", path.display()))?;
        return parse_table(&text, &path.display().to_string());
    }
    bail!(
        "--preset {name:?}: unknown preset (expected one of {} or a .toml file)",
        PRESETS.join(", ")
    )
}

/// Deserialises `table` into `T`; errors name the offending key path.
pub fn from_table<T: DeserializeOwned>(table: toml::Table, origin: &str) -> Result<T> {
    let value = toml::Value::Table(table);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        // The toml error's own "in `table`" line would repeat (part of) the path.
        anyhow::anyhow!("{origin}: {path}: {}", e.into_inner().message())
    })
}

/// Resolves layers 1–3: preset (from `preset` or the file's `preset` key, default `tiny`)
/// overlaid with the config file.
pub fn resolve_layers<T: DeserializeOwned>(
    preset: Option<&str>,
    config_file: Option<&Path>,
) -> Result<T> {
    match config_file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("--config {}: cannot read", p.display()))?;
            resolve_layers_text(preset, Some((&text, &p.display().to_string())))
        }
        None => resolve_layers_text(preset, None),
    }
}

/// [`resolve_layers`] with the config given as `(TOML text, origin named in errors)`.
pub fn resolve_layers_text<T: DeserializeOwned>(
    preset: Option<&str>,
    config: Option<(&str, &str)>,
) -> Result<T> {
    let (file_table, origin) = match config {
        Some((text, origin)) => (parse_table(text, origin)?, origin.to_string()),
        None => (toml::Table::new(), "config".to_string()),
    };
    let name = match (preset, file_table.get("preset")) {
        (Some(p), _) => p.to_string(),
        (None, Some(toml::Value::String(p))) => p.clone(),
        (None, Some(_)) => bail!("{origin}: `preset` must be a string"),
        (None, None) => "tiny".to_string(),
    };
    let mut table = preset_table(&name)?;
    merge_tables(&mut table, file_table);
    table.insert("preset".into(), toml::Value::String(name));
    from_table(table, &origin)
}

/// The config `train pretrain` uses without `--config` for a built-in preset: the
/// committed `configs/pretrain-<preset>.toml` (for `tiny`, the recipe of the shipped encoder).
pub fn builtin_pretrain_config(preset: &str) -> Option<(&'static str, &'static str)> {
    macro_rules! recipe {
        ($name:literal) => {
            Some((
                include_str!(concat!("../../configs/pretrain-", $name, ".toml")),
                concat!("configs/pretrain-", $name, ".toml"),
            ))
        };
    }
    match preset {
        "tiny" => recipe!("tiny"),
        "small" => recipe!("small"),
        "base" => recipe!("base"),
        "large" => recipe!("large"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_build_their_encoders() {
        let mut params = Vec::new();
        for name in PRESETS {
            let cfg: PretrainConfig = resolve_layers(Some(name), None).unwrap();
            cfg.validate().unwrap();
            assert_eq!(cfg.preset.as_deref(), Some(name));
            let enc = cfg.model.encoder().unwrap();
            params.push((name, enc.widths[0], cfg.data.image_size));
        }
        assert_eq!(
            params,
            [
                ("tiny", 16, 64),
                ("small", 32, 128),
                ("base", 64, 224),
                ("large", 64, 224)
            ]
        );
        let tiny: PretrainConfig = resolve_layers(Some("tiny"), None).unwrap();
        // The tiny preset is the encoder's tiny architecture, with the default input's
        // channels.
        assert_eq!(
            tiny.model.encoder().unwrap(),
            EncoderConfig::tiny().with_in_channels(InputFormat::default().channels())
        );
    }

    #[test]
    fn every_shipped_config_file_resolves() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("pretrain-") && name.ends_with(".toml") {
                let cfg: PretrainConfig = resolve_layers(None, Some(&path)).unwrap();
                cfg.validate().unwrap_or_else(|e| panic!("{name}: {e:#}"));
                let preset = name
                    .trim_start_matches("pretrain-")
                    .trim_end_matches(".toml");
                assert_eq!(cfg.preset.as_deref(), Some(preset), "{name}");
                assert!(
                    cfg.train.steps.is_some() || cfg.train.epochs.is_some(),
                    "{name}"
                );
                n += 1;
            }
        }
        assert_eq!(n, 4, "one pretrain config per preset");
    }

    #[test]
    fn layers_merge_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "preset = \"small\"\n[data]\nbatch_size = 8\n[optim]\nkind = \"sgd\"\nlr = 0.5\n",
        )
        .unwrap();
        let cfg: PretrainConfig = resolve_layers(None, Some(&file)).unwrap();
        // From the file: batch size and optimizer; from the preset: image size and width.
        assert_eq!(cfg.data.batch_size, 8);
        assert_eq!(cfg.data.image_size, 128);
        assert_eq!(cfg.model.width, Some(32));
        assert_eq!(cfg.optim.lr(), 0.5);
        // --preset wins over the file's preset key.
        let cfg: PretrainConfig = resolve_layers(Some("tiny"), Some(&file)).unwrap();
        assert_eq!(cfg.data.image_size, 64);

        std::fs::write(&file, "[model]\nwidht = 3\n").unwrap();
        let err = format!(
            "{:#}",
            resolve_layers::<PretrainConfig>(None, Some(&file)).unwrap_err()
        );
        assert!(err.contains("c.toml") && err.contains("widht"), "{err}");
        std::fs::write(&file, "[data]\nbatch_size = \"many\"\n").unwrap();
        let err = format!(
            "{:#}",
            resolve_layers::<PretrainConfig>(None, Some(&file)).unwrap_err()
        );
        assert!(err.contains("data.batch_size"), "{err}");
        // Inside the tagged [optim] and [schedule] tables too, on one line.
        for (text, key) in [
            (
                "[optim]\nkind = \"adamw\"\nlr = \"fast\"\n",
                "optim.lr: invalid type",
            ),
            (
                "[schedule]\nkind = \"cosine\"\nwarmup_steps = -1\n",
                "schedule.warmup_steps:",
            ),
            (
                "[optim]\nkind = \"adam\"\n",
                "optim.kind: unknown variant `adam`",
            ),
            (
                "[optim]\nkind = \"adamw\"\nmomentum = 0.9\n",
                "optim: `momentum` is not a setting of kind = \"adamw\"",
            ),
            (
                "[schedule]\nkind = \"step\"\n",
                "schedule: kind = \"step\" needs `step_size`",
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = format!(
                "{:#}",
                resolve_layers::<PretrainConfig>(None, Some(&file)).unwrap_err()
            );
            assert!(err.contains(key) && !err.contains('\n'), "{text}: {err}");
        }
        // Another kind replaces the preset's table: no AdamW keys left under SGD.
        std::fs::write(
            &file,
            "[optim]\nkind = \"sgd\"\n[schedule]\nkind = \"step\"\nstep_size = 9\n",
        )
        .unwrap();
        let cfg: PretrainConfig = resolve_layers(None, Some(&file)).unwrap();
        assert_eq!(cfg.optim.kind(), "sgd");
        assert_eq!(
            cfg.schedule,
            crate::train::schedule::ScheduleConfig::Step {
                warmup_steps: 0,
                step_size: 9,
                gamma: 0.1
            }
        );
        let err = format!(
            "{:#}",
            resolve_layers::<PretrainConfig>(Some("huge"), None).unwrap_err()
        );
        assert!(err.contains("tiny, small, base, large"), "{err}");
    }

    /// A run's `config.json` and `state.json` edited by hand: the error names the field,
    /// inside the tagged optimizer and schedule tables too (never "`?`").
    #[test]
    fn run_file_errors_name_the_field() {
        use crate::data::json::parse_json;
        use crate::train::checkpoint::TrainState;
        let cfg: PretrainConfig = resolve_layers(None, None).unwrap();
        for (path, bad) in [
            (&["optim", "lr"][..], serde_json::json!("fast")),
            (&["schedule", "warmup_steps"][..], serde_json::json!(-3)),
            (&["data", "image_size"][..], serde_json::json!("big")),
        ] {
            let mut v = serde_json::to_value(&cfg).unwrap();
            let mut slot = &mut v;
            for key in path {
                slot = &mut slot[*key];
            }
            *slot = bad;
            let err = parse_json::<PretrainConfig>(v.to_string().as_bytes()).unwrap_err();
            let field = format!("field `{}`", path.join("."));
            assert!(err.contains(&field) && !err.contains('?'), "{err}");
        }
        let rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let mut state = serde_json::to_value(TrainState::new(1, 10, &rng)).unwrap();
        state["rng"]["stream"] = serde_json::json!("x");
        let err = parse_json::<TrainState>(state.to_string().as_bytes()).unwrap_err();
        assert!(err.contains("field `rng.stream`"), "{err}");
    }

    #[test]
    fn run_length_from_steps_or_epochs() {
        let mut t = TrainSection {
            epochs: Some(3),
            accumulate: 2,
            ..Default::default()
        };
        // 100 samples, batch 8 → 12 micro-batches → 6 steps per epoch.
        assert_eq!(t.loop_config(100, 8).unwrap().total_steps, 18);
        t.steps = Some(5);
        assert!(t.loop_config(100, 8).is_err());
        t.epochs = None;
        assert_eq!(t.loop_config(100, 8).unwrap().total_steps, 5);
        t.steps = None;
        assert!(t
            .loop_config(100, 8)
            .unwrap_err()
            .to_string()
            .contains("--steps"));
    }
}
