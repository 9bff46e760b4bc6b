//! The run recipe of the head tasks (classify, segment): everything a run does around its
//! task-specific model and metrics, written once.
//!
//! [`run`] resolves the data source, loads `--encoder`, records the resolved architecture,
//! starts or resumes the [`Trainer`] (Ctrl-C included), then loads the best weights, lets
//! the task choose its test-time settings on val and scores the test split into
//! `test_scores.json`. `data.label_fraction` < 1 keeps a seeded, stratified share of the
//! training split only ([`super::LabeledData::keep_label_fraction`]). [`load`] opens a finished run for `predict` and `eval`. A task
//! supplies a [`HeadConfig`]: its config type, with the model, training task and report it
//! builds.

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use candle_core::Device;
use candle_nn::VarMap;
use insar_mm_models::encoder::EncoderConfig;
use insar_mm_models::heads::EncoderMode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    expect_task, resolve_source, HeadData, HeadSource, LabeledData, LabeledPart, TtaChoice,
    TEST_SCORES_FILE,
};
use crate::train::checkpoint::{load_model, run_weights, RunDir};
use crate::train::config::config_from_file;
use crate::train::config::TrainSection;
use crate::train::driver::{Outcome, TrainTask, Trainer};
use crate::train::encoder_init::{load_pretrained, EncoderInit};
use crate::train::optim::{trainable_params, OptimConfig, Optimizer};
use crate::train::pretrain::RunOptions;
use crate::train::schedule::ScheduleConfig;

/// The config of a head task, and what the task builds from it. The field accessors are
/// implemented by [`head_config_fields!`](crate::head_config_fields) for configs that name
/// their fields alike.
pub trait HeadConfig: Default + Clone + Debug + Serialize + DeserializeOwned {
    /// `classify`, `segment`: the `task` of `config.json` and the default run-name prefix.
    const TASK: &'static str;
    /// `classification`, `segmentation` (log lines).
    const NOUN: &'static str;
    /// Inference batches are at least this large.
    const MIN_EVAL_BATCH: usize;
    type Arch: Clone + Debug;
    type Model;
    type Task: TrainTask;
    type Report;

    // Fields every head config has.
    fn seed(&self) -> u64;
    fn seed_mut(&mut self) -> &mut u64;
    fn preset_mut(&mut self) -> &mut String;
    fn mode_mut(&mut self) -> &mut EncoderMode;
    fn encoder_init_mut(&mut self) -> &mut EncoderInit;
    fn data(&self) -> &HeadData;
    fn data_mut(&mut self) -> &mut HeadData;
    fn optim(&self) -> &OptimConfig;
    fn optim_mut(&mut self) -> &mut OptimConfig;
    fn schedule(&self) -> &ScheduleConfig;
    fn train(&self) -> &TrainSection;
    fn train_mut(&mut self) -> &mut TrainSection;
    /// `[train]` and `[optim]` together (what a resume may change).
    fn train_and_optim_mut(&mut self) -> (&mut TrainSection, &mut OptimConfig);
    /// The resolved architecture (an error before the run started).
    fn model(&self) -> Result<&Self::Arch>;
    fn set_model(&mut self, arch: Self::Arch);

    /// Checks the settings; errors name the key.
    fn validate(&self) -> Result<()>;
    fn encoder_mode(&self) -> Result<EncoderMode>;
    /// The architecture on `encoder` (default: the preset's).
    fn architecture(&self, encoder: Option<EncoderConfig>) -> Result<Self::Arch>;
    /// The encoder of `arch`.
    fn arch_encoder(arch: &Self::Arch) -> &EncoderConfig;
    /// The model of `arch` on a fresh `VarMap`, initialised from `seed`.
    fn build(arch: &Self::Arch, seed: u64, device: &Device) -> Result<(VarMap, Self::Model)>;
    fn is_trainable(model: &Self::Model, name: &str) -> bool;
    fn new_task(
        &self,
        model: Self::Model,
        train: LabeledPart,
        val: LabeledPart,
        device: &Device,
    ) -> Result<Self::Task>;
    /// The task's model and its val part (as truncated by `val_samples`).
    fn task_parts(task: &Self::Task) -> (&Self::Model, &LabeledPart);
    /// After training, with the final weights loaded: settings chosen on `val` (test-time
    /// augmentation, thresholds), saved into the config.
    fn tune_on_val(
        &mut self,
        model: &Self::Model,
        val: &LabeledPart,
        batch: usize,
        device: &Device,
    ) -> Result<Option<TtaChoice>>;
    /// The test report of `model` on `test` and its JSON (`extra` merged in).
    fn score_test(
        &self,
        model: &Self::Model,
        test: &LabeledPart,
        batch: usize,
        device: &Device,
        extra: serde_json::Value,
    ) -> Result<(Self::Report, serde_json::Value)>;

    /// The defaults with the TOML file `path` merged over them (unknown keys are errors).
    fn from_file(path: &Path) -> Result<Self> {
        config_from_file(path)
    }

    /// The saved config of the run `run`, validated (an error naming the run when it is a run
    /// of another task, and the file and key when an edited value is out of range).
    fn read(run: &Path) -> Result<Self> {
        expect_task(run, Self::TASK)?;
        RunDir::new(run).read_checked_config(Self::validate)
    }
}

/// Implements the field accessors of [`HeadConfig`] for a config with fields `seed`,
/// `preset`, `mode`, `encoder`, `data`, `optim`, `schedule`, `train` and
/// `model: Option<Arch>`.
#[macro_export]
macro_rules! head_config_fields {
    () => {
        fn seed(&self) -> u64 {
            self.seed
        }
        fn seed_mut(&mut self) -> &mut u64 {
            &mut self.seed
        }
        fn preset_mut(&mut self) -> &mut String {
            &mut self.preset
        }
        fn mode_mut(&mut self) -> &mut insar_mm_models::heads::EncoderMode {
            &mut self.mode
        }
        fn encoder_mode(&self) -> anyhow::Result<insar_mm_models::heads::EncoderMode> {
            Ok(self.mode)
        }
        fn encoder_init_mut(&mut self) -> &mut $crate::train::encoder_init::EncoderInit {
            &mut self.encoder
        }
        fn data(&self) -> &$crate::train::heads::HeadData {
            &self.data
        }
        fn data_mut(&mut self) -> &mut $crate::train::heads::HeadData {
            &mut self.data
        }
        fn optim(&self) -> &$crate::train::optim::OptimConfig {
            &self.optim
        }
        fn optim_mut(&mut self) -> &mut $crate::train::optim::OptimConfig {
            &mut self.optim
        }
        fn schedule(&self) -> &$crate::train::schedule::ScheduleConfig {
            &self.schedule
        }
        fn train(&self) -> &$crate::train::config::TrainSection {
            &self.train
        }
        fn train_mut(&mut self) -> &mut $crate::train::config::TrainSection {
            &mut self.train
        }
        fn train_and_optim_mut(
            &mut self,
        ) -> (
            &mut $crate::train::config::TrainSection,
            &mut $crate::train::optim::OptimConfig,
        ) {
            (&mut self.train, &mut self.optim)
        }
        fn model(&self) -> anyhow::Result<&Self::Arch> {
            self.model.as_ref().ok_or_else(|| {
                anyhow::anyhow!("config.json has no `model`: the run was never started")
            })
        }
        fn set_model(&mut self, arch: Self::Arch) {
            self.model = Some(arch);
        }
    };
}

/// `linear`, `finetune` or `finetune:<stage>` (the text form of [`EncoderMode`]).
pub fn mode_name(mode: EncoderMode) -> String {
    match mode {
        EncoderMode::Linear => "linear".into(),
        EncoderMode::Finetune { unfreeze_from } => {
            let s = serde_json::to_value(unfreeze_from)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            if s == "stem" {
                "finetune".into()
            } else {
                format!("finetune:{s}")
            }
        }
    }
}

/// Serde of a config's `mode` in its text form ([`mode_name`], [`EncoderMode::parse`]), so
/// that `config.json` and TOML files keep `mode = "finetune:layer3"`.
pub mod mode_text {
    use insar_mm_models::heads::EncoderMode;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &EncoderMode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::mode_name(*mode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EncoderMode, D::Error> {
        EncoderMode::parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct HeadRun<C> {
    /// The config (defaults, a file, overrides). With `resume`, the run's saved config
    /// ([`HeadConfig::read`]), where only `[train]` may change.
    pub config: C,
    /// Where the samples come from.
    pub data: HeadSource,
    /// `--encoder`: overrides the config's encoder initialisation (not with `resume`).
    pub encoder: Option<EncoderInit>,
    /// Overrides the config's `mode` (not with `resume`).
    pub mode: Option<EncoderMode>,
    /// Overrides the config's `seed` (not with `resume`).
    pub seed: Option<u64>,
    /// The run directory.
    pub out: PathBuf,
    /// Continue the run in `out` from its last checkpoint.
    pub resume: bool,
    pub device: Device,
    pub options: RunOptions,
}

/// What [`run`] returns.
#[derive(Debug)]
pub struct HeadOutcome<C: HeadConfig> {
    pub outcome: Outcome,
    /// The run directory.
    pub run: PathBuf,
    /// The config as saved (architecture and val-tuned settings resolved).
    pub config: C,
    /// Test-split report of the best (else last) model; `None` when interrupted or the test
    /// split is empty.
    pub test: Option<C::Report>,
}

/// Trains (or continues) a head run, then scores the best model on the test part.
pub fn run<C: HeadConfig>(opts: HeadRun<C>) -> Result<HeadOutcome<C>> {
    let HeadRun {
        mut config,
        data,
        encoder,
        mode,
        seed,
        out,
        resume,
        device,
        options,
    } = opts;
    let cfg = &mut config;
    let run_dir = RunDir::new(&out);
    if resume {
        ensure!(
            encoder.is_none() && mode.is_none() && seed.is_none(),
            "--resume continues {} with its saved encoder, mode and seed",
            out.display()
        );
        cfg.model()?;
    } else {
        if let Some(m) = mode {
            *cfg.mode_mut() = m;
        }
        if let Some(s) = seed {
            *cfg.seed_mut() = s;
        }
    }
    cfg.validate()?;
    let (mut data, dir) = resolve_source(
        data,
        cfg.data().input_format,
        cfg.data().image_size,
        cfg.seed(),
        options.progress,
    )?;
    // Before the label fraction: the source size describes the dataset, not the subset.
    let source_size = data.train.median_source_side();
    let fraction = cfg.data().label_fraction;
    let (kept, before) = data.keep_label_fraction(fraction, cfg.seed())?;
    if fraction < 1.0 {
        let deformation = data.train.labels.iter().filter(|l| l[0] > 0.5).count();
        log::info!(
            "data.label_fraction {fraction}: {kept} of {before} training samples kept ({deformation} deformation, {} non-deformation; seed {}); val and test whole",
            kept - deformation,
            cfg.seed()
        );
    }
    let LabeledData { train, val, test } = data;
    // The encoder to start from: resolved once (`auto` becomes `shipped` or `none`) and
    // recorded; a resumed run has its weights in the checkpoint.
    let pretrained = if resume {
        None
    } else {
        if let Some(e) = encoder {
            *cfg.encoder_init_mut() = e;
        }
        let own = cfg.architecture(None)?;
        let init = cfg.encoder_init_mut().clone();
        let (resolved, pretrained) =
            init.resolve(C::arch_encoder(&own), cfg.data().input_format)?;
        *cfg.encoder_init_mut() = resolved;
        cfg.data_mut().dir = dir.clone();
        cfg.data_mut().source_size = source_size;
        let arch = cfg.architecture(pretrained.as_ref().map(|e| e.encoder.clone()))?;
        cfg.set_model(arch);
        cfg.validate()?;
        if cfg.encoder_mode()? == EncoderMode::Linear && pretrained.is_none() {
            log::warn!("linear probe on a randomly initialised encoder (--encoder none)");
        }
        pretrained
    };
    let arch = cfg.model()?.clone();
    let (varmap, model) = C::build(&arch, cfg.seed(), &device)?;
    load_pretrained(pretrained.as_ref(), &varmap)?;
    let params = trainable_params(&varmap, |n| C::is_trainable(&model, n));
    let optimizer = Optimizer::new(cfg.optim().clone(), params)?;
    log::info!(
        "{} {}: {} train / {} val / {} test samples{}, {}² inputs, batch {}, mode {}, run {}",
        if resume { "resuming" } else { "starting" },
        C::NOUN,
        train.len(),
        val.len(),
        test.len(),
        dir.map(|d| format!(" from {}", d.display()))
            .unwrap_or_default(),
        cfg.data().image_size,
        cfg.data().batch_size,
        mode_name(cfg.encoder_mode()?),
        out.display()
    );
    let mut task = cfg.new_task(model, train, val, &device)?;
    let loop_cfg = cfg.train().loop_config(task.len(), task.batch_size())?;
    let outcome = Trainer::open(
        run_dir.clone(),
        resume,
        &*cfg,
        varmap.clone(),
        optimizer,
        cfg.schedule().clone(),
        loop_cfg,
        cfg.seed(),
        options,
    )?
    .run(&mut task)?;
    if matches!(outcome, Outcome::Interrupted { .. }) || test.is_empty() {
        return Ok(HeadOutcome {
            outcome,
            run: out,
            config,
            test: None,
        });
    }
    let weights = run_weights(&run_dir)?;
    load_model(&weights, &varmap)?;
    let batch = cfg.data().batch_size.max(C::MIN_EVAL_BATCH);
    let (model, val) = C::task_parts(&task);
    let tta_choice = cfg.tune_on_val(model, val, batch, &device)?;
    run_dir.write_config(&*cfg)?;
    let (report, json) = cfg.score_test(
        model,
        &test,
        batch,
        &device,
        serde_json::json!({
            "split": "test",
            "weights": weights.file_name().map(|f| f.to_string_lossy().into_owned()),
            "test_time_augment_choice": tta_choice.map(|c| c.to_json()),
        }),
    )?;
    crate::data::atomic::write_atomic(
        &run_dir.path(TEST_SCORES_FILE),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    Ok(HeadOutcome {
        outcome,
        run: out,
        config,
        test: Some(report),
    })
}

/// A finished head run, ready to predict.
pub struct LoadedHead<C: HeadConfig> {
    pub config: C,
    pub model: C::Model,
    /// The weights file that was loaded (`best.safetensors`, else `model.safetensors`).
    pub weights: PathBuf,
}

/// Loads the head run `root`; errors when it is a run of another task.
pub fn load<C: HeadConfig>(root: &Path, device: &Device) -> Result<LoadedHead<C>> {
    let config = C::read(root)?;
    let arch = config.model()?.clone();
    let (varmap, model) = C::build(&arch, config.seed(), device)?;
    let weights = run_weights(&RunDir::new(root))?;
    load_model(&weights, &varmap)?;
    Ok(LoadedHead {
        config,
        model,
        weights,
    })
}
