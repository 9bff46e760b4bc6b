//! `insar-mm train ...`: training commands. Every command shares [`CommonTrainArgs`] and runs
//! on the loop in `crate::train`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::GlobalArgs;
use crate::train::checkpoint::RunDir;
use crate::train::config::{resolve_layers, PretrainConfig, TrainSection};
use crate::train::pretrain::{self, open_data, synthetic_source, RunOptions};
use crate::train::Outcome;

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Contrastive (SimCLR) pretraining of the shared encoder on unlabeled interferograms.
    Pretrain(PretrainArgs),
    /// Image captioning: tokenizer + encoder–decoder trained on image–caption pairs, scored
    /// (BLEU-1..4, ROUGE-L, CIDEr-D) on the test split at the end.
    Caption(CaptionArgs),
    /// Multi-label classification (10 Hephaestus labels): encoder + linear/MLP head, BCE or
    /// focal loss, val macro-F1 for the best checkpoint, test-split report at the end.
    Classify(HeadArgs),
    /// Segmentation (background + 6 activity types): encoder + FPN decoder, cross-entropy
    /// (+ Dice), val mIoU for the best checkpoint, test-split per-class IoU at the end.
    Segment(HeadArgs),
    /// Text-to-InSAR generation: a caption-conditioned diffusion model (text encoder + UNet,
    /// cosine schedule, EMA, caption dropout for classifier-free guidance).
    Generator(super::generate::GeneratorArgs),
}

/// Options shared by every `train` command.
#[derive(Debug, Clone, Args)]
pub struct CommonTrainArgs {
    /// Dataset directory (annotations + frames, or with patches/) or a patch folder.
    /// Default: the built-in synthetic stream.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// TOML config (e.g. configs/pretrain-tiny.toml); the options below override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Model preset (tiny, small, base, large) or a preset .toml file [default: the
    /// config's `preset`, else tiny].
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Length of the run in epochs over the training samples.
    #[arg(long, value_name = "N", conflicts_with = "steps")]
    pub epochs: Option<u64>,
    /// Length of the run in optimizer steps.
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Images per micro-batch.
    #[arg(long, value_name = "B")]
    pub batch_size: Option<usize>,
    /// Side of the square model input in pixels.
    #[arg(long, value_name = "S")]
    pub image_size: Option<usize>,
    /// Base learning rate (before warmup and decay).
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, value_name = "K")]
    pub accumulate: Option<usize>,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Run directory [default: runs/<command>-<preset>].
    #[arg(long, value_name = "RUN")]
    pub out: Option<PathBuf>,
    /// Continue the run in RUN from its last checkpoint, with its saved config (only
    /// --steps/--epochs may change, to extend it).
    #[arg(long, value_name = "RUN", conflicts_with_all = ["data", "config", "preset", "batch_size", "image_size", "lr", "accumulate", "out"])]
    pub resume: Option<PathBuf>,
}

impl CommonTrainArgs {
    /// Applies the run-length and loop overrides to `[train]`.
    pub fn apply_train_overrides(&self, train: &mut TrainSection) {
        if let Some(s) = self.steps {
            train.steps = Some(s);
            train.epochs = None;
        }
        if let Some(e) = self.epochs {
            train.epochs = Some(e);
            train.steps = None;
        }
        if let Some(k) = self.accumulate {
            train.accumulate = k;
        }
        if let Some(n) = self.checkpoint_every {
            train.checkpoint_every = n;
        }
    }
}

#[derive(Debug, Args)]
pub struct PretrainArgs {
    #[command(flatten)]
    pub common: CommonTrainArgs,
}

#[derive(Debug, Args)]
pub struct CaptionArgs {
    #[command(flatten)]
    pub common: CommonTrainArgs,
    /// Keep the encoder fixed (running BatchNorm statistics, no gradient); only the visual
    /// memory and the decoder train.
    #[arg(long, conflicts_with = "resume")]
    pub freeze_encoder: bool,
    /// Start the encoder from a SimCLR run (`train pretrain --out RUN`): its architecture and
    /// `encoder.*` weights.
    #[arg(long, value_name = "RUN", conflicts_with = "resume")]
    pub encoder: Option<PathBuf>,
    /// Real Hephaestus annotations (a directory, .tar.gz or .zip of annotation JSONs): train
    /// on their captions (typos included). Without --data the images are rendered to match
    /// each annotation (generated once into the cache); with --data DIR they are DIR's,
    /// matched by uniqueID.
    #[arg(long, value_name = "PATH", conflicts_with = "resume")]
    pub annotations: Option<PathBuf>,
    /// Use a seeded subset of N annotations that keeps the class mix (0 = all); keeps a CPU
    /// run on the 19,919 real annotations feasible.
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub annotation_limit: Option<usize>,
    /// Draw deformation and non-deformation frames equally often (for caption sets where
    /// deformation is rare, such as the real Hephaestus mix).
    #[arg(long, conflicts_with = "resume")]
    pub balanced: bool,
}

/// `train classify` / `train segment`.
#[derive(Debug, Args)]
pub struct HeadArgs {
    #[command(flatten)]
    pub common: CommonTrainArgs,
    /// Start from the encoder of this run (`train pretrain`, or a classify/segment run);
    /// its architecture replaces the preset.
    #[arg(long, value_name = "RUN", conflicts_with = "resume")]
    pub encoder: Option<PathBuf>,
    /// How much of the encoder trains: linear (frozen encoder, a linear probe), finetune
    /// (everything) or finetune:<stage> (stem, layer1..layer4 onwards) [default: the
    /// config's `mode`, else finetune].
    #[arg(long, value_name = "MODE", value_parser = parse_mode, conflicts_with = "resume")]
    pub mode: Option<insar_mm_models::heads::EncoderMode>,
    /// Class-balanced oversampling of the training set (overrides data.balanced).
    #[arg(long, value_name = "BOOL", conflicts_with = "resume")]
    pub balanced: Option<bool>,
}

fn parse_mode(s: &str) -> std::result::Result<insar_mm_models::heads::EncoderMode, String> {
    insar_mm_models::heads::EncoderMode::parse(s)
}

pub fn run(cmd: TrainCommand, global: &GlobalArgs) -> Result<()> {
    match cmd {
        TrainCommand::Pretrain(args) => run_pretrain(&args.common, global),
        TrainCommand::Caption(args) => run_caption(&args, global),
        TrainCommand::Classify(args) => run_classify(&args, global),
        TrainCommand::Segment(args) => run_segment(&args, global),
        TrainCommand::Generator(args) => super::generate::run_train_generator(&args, global),
    }
}

/// A flag set by the first Ctrl-C, SIGTERM or SIGHUP (the loop then checkpoints and
/// returns); a second one exits at once.
pub fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    if let Some(f) = FLAG.get() {
        return Ok(f.clone());
    }
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted twice: exiting without a final checkpoint");
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupt (Ctrl-C or SIGTERM): saving a checkpoint after this step (interrupt \
             again to quit now)"
        );
    })
    .context("cannot install the Ctrl-C / SIGTERM handler")?;
    Ok(FLAG.get_or_init(|| flag).clone())
}

fn run_pretrain(args: &CommonTrainArgs, global: &GlobalArgs) -> Result<()> {
    let device = crate::device::open(global.device)?;
    let (cfg, run, resume) = match &args.resume {
        Some(dir) => {
            let run = RunDir::new(dir);
            let mut cfg: PretrainConfig = run.read_config()?;
            let before = cfg.train.clone();
            args.apply_train_overrides(&mut cfg.train);
            if cfg.train != before {
                run.write_config(&cfg)?;
            }
            (cfg, run, true)
        }
        None => {
            let mut cfg: PretrainConfig =
                resolve_layers(args.preset.as_deref(), args.config.as_deref())?;
            cfg.seed = global.seed;
            if let Some(b) = args.batch_size {
                cfg.data.batch_size = b;
            }
            if let Some(s) = args.image_size {
                cfg.data.image_size = s;
            }
            if let Some(lr) = args.lr {
                cfg.optim.set_lr(lr);
            }
            args.apply_train_overrides(&mut cfg.train);
            cfg.data.dir = args.data.clone();
            cfg.validate()?;
            let out = args.out.clone().unwrap_or_else(|| {
                PathBuf::from("runs").join(format!(
                    "pretrain-{}",
                    cfg.preset.as_deref().unwrap_or("custom")
                ))
            });
            (cfg, RunDir::new(out), false)
        }
    };
    let source = match &cfg.data.dir {
        Some(dir) => open_data(dir, cfg.data.input_format)?,
        None => synthetic_source(&cfg)?,
    };
    let root = run.root.clone();
    log::info!(
        "{} SimCLR: {} encoder, {}² inputs, batch {}, {} samples, run {}",
        if resume { "resuming" } else { "starting" },
        cfg.model.arch,
        cfg.data.image_size,
        cfg.data.batch_size,
        source.len(),
        root.display()
    );
    let options = RunOptions {
        progress: global.show_progress(),
        stop: Some(interrupt_flag()?),
    };
    match pretrain::pretrain(&cfg, &*source, run, resume, &device, options)? {
        Outcome::Finished { step } => {
            log::info!("finished at step {step}; run in {}", root.display());
        }
        Outcome::Interrupted { step } => {
            eprintln!(
                "interrupted at step {step}; checkpoint saved in {} (continue with `insar-mm train pretrain --resume {}`)",
                root.display(),
                root.display()
            );
        }
    }
    Ok(())
}

fn run_caption(args: &CaptionArgs, global: &GlobalArgs) -> Result<()> {
    use crate::train::caption::{self, CaptionTrainConfig};
    let common = &args.common;
    let device = crate::device::open(global.device)?;
    let (mut cfg, run, resume) = match &common.resume {
        Some(dir) => {
            let run = RunDir::new(dir);
            let mut cfg: CaptionTrainConfig = run.read_config()?;
            let before = cfg.train.clone();
            common.apply_train_overrides(&mut cfg.train);
            if cfg.train != before {
                run.write_config(&cfg)?;
            }
            (cfg, run, true)
        }
        None => {
            let mut cfg = match &common.config {
                Some(path) => CaptionTrainConfig::from_file(path)?,
                None => CaptionTrainConfig::default(),
            };
            cfg.seed = global.seed;
            if let Some(p) = &common.preset {
                cfg.preset = p.clone();
            }
            if let Some(b) = common.batch_size {
                cfg.data.batch_size = b;
            }
            if let Some(s) = common.image_size {
                cfg.data.image_size = s;
            }
            if let Some(lr) = common.lr {
                cfg.optim.set_lr(lr);
            }
            if args.freeze_encoder {
                cfg.freeze_encoder = true;
            }
            if let Some(run) = &args.encoder {
                cfg.encoder_init = Some(run.clone());
            }
            common.apply_train_overrides(&mut cfg.train);
            if common.data.is_some() {
                cfg.data.dir = common.data.clone();
            }
            if args.annotations.is_some() {
                cfg.data.annotations = args.annotations.clone();
            }
            if let Some(n) = args.annotation_limit {
                cfg.data.annotation_limit = n;
            }
            if args.balanced {
                cfg.data.balanced = true;
            }
            cfg.validate()?;
            let out = common
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs").join(format!("caption-{}", cfg.preset)));
            (cfg, RunDir::new(out), false)
        }
    };
    let (ds, source) = caption::open_caption_dataset(
        cfg.data.dir.as_deref(),
        cfg.data.annotations.as_deref(),
        cfg.data.annotation_limit,
        cfg.seed,
        &|len, what| crate::cli::progress::bar(len, what, global.show_progress()),
    )?;
    let data = caption::caption_parts(&ds, cfg.data.input_format, cfg.data.image_size, cfg.seed)?;
    let dir = source.to_string();
    if !resume {
        cfg.data.source = Some(source);
    }
    let root = run.root.clone();
    log::info!(
        "{} captioning: preset {}, {}² inputs, batch {}, {} train / {} val / {} test images from {}, run {}",
        if resume { "resuming" } else { "starting" },
        cfg.preset,
        cfg.data.image_size,
        cfg.data.batch_size,
        data.train.len(),
        data.val.len(),
        data.test.len(),
        dir,
        root.display()
    );
    let options = RunOptions {
        progress: global.show_progress(),
        stop: Some(interrupt_flag()?),
    };
    let out = caption::train_caption(&mut cfg, data, run, resume, &device, options)?;
    match out.outcome {
        Outcome::Finished { step } => {
            log::info!("finished at step {step}; run in {}", root.display());
        }
        Outcome::Interrupted { step } => {
            eprintln!(
                "interrupted at step {step}; checkpoint saved in {} (continue with `insar-mm train caption --resume {}`)",
                root.display(),
                root.display()
            );
        }
    }
    if let Some(s) = out.test {
        println!("test split ({} images), greedy decoding:", s.images);
        println!("  BLEU-1  {:.4}", s.bleu1);
        println!("  BLEU-2  {:.4}", s.bleu2);
        println!("  BLEU-3  {:.4}", s.bleu3);
        println!("  BLEU-4  {:.4}", s.bleu4);
        println!("  ROUGE-L {:.4}", s.rouge_l);
        println!("  CIDEr-D {:.4}", s.cider);
    }
    Ok(())
}

/// Applies the shared overrides of `train classify|segment` to a head `[data]` section and
/// the optimizer; returns the run directory.
fn head_overrides(
    common: &CommonTrainArgs,
    balanced: Option<bool>,
    data: &mut crate::train::heads::HeadData,
    optim: &mut crate::train::optim::OptimConfig,
    train: &mut TrainSection,
) {
    if let Some(b) = common.batch_size {
        data.batch_size = b;
    }
    if let Some(s) = common.image_size {
        data.image_size = s;
    }
    if let Some(b) = balanced {
        data.balanced = b;
    }
    if let Some(lr) = common.lr {
        optim.set_lr(lr);
    }
    common.apply_train_overrides(train);
}

fn head_source(data: &Option<PathBuf>) -> crate::train::heads::HeadSource {
    match data {
        Some(d) => crate::train::heads::HeadSource::Dir(d.clone()),
        None => crate::train::heads::HeadSource::Builtin,
    }
}

fn report_outcome(outcome: &Outcome, root: &std::path::Path, command: &str) {
    match outcome {
        Outcome::Finished { step } => {
            log::info!("finished at step {step}; run in {}", root.display());
        }
        Outcome::Interrupted { step } => {
            eprintln!(
                "interrupted at step {step}; checkpoint saved in {} (continue with `insar-mm train {command} --resume {}`)",
                root.display(),
                root.display()
            );
        }
    }
}

/// What `train classify|segment` need of their config to resolve it from the command line.
trait HeadTrainConfig: Default + serde::Serialize + Sized {
    /// The command name (`classify`, `segment`), also the default run-name prefix.
    const TASK: &'static str;
    fn from_file(path: &std::path::Path) -> Result<Self>;
    fn read(run: &std::path::Path) -> Result<Self>;
    #[allow(clippy::type_complexity)]
    fn parts(
        &mut self,
    ) -> (
        &mut u64,
        &mut String,
        &mut crate::train::heads::HeadData,
        &mut crate::train::optim::OptimConfig,
        &mut TrainSection,
    );
}

macro_rules! head_train_config {
    ($ty:ty, $task:literal) => {
        impl HeadTrainConfig for $ty {
            const TASK: &'static str = $task;
            fn from_file(path: &std::path::Path) -> Result<Self> {
                <$ty>::from_file(path)
            }
            fn read(run: &std::path::Path) -> Result<Self> {
                <$ty>::read(run)
            }
            fn parts(
                &mut self,
            ) -> (
                &mut u64,
                &mut String,
                &mut crate::train::heads::HeadData,
                &mut crate::train::optim::OptimConfig,
                &mut TrainSection,
            ) {
                (
                    &mut self.seed,
                    &mut self.preset,
                    &mut self.data,
                    &mut self.optim,
                    &mut self.train,
                )
            }
        }
    };
}
head_train_config!(crate::train::classify::ClassifyConfig, "classify");
head_train_config!(crate::train::segment::SegmentConfig, "segment");

/// The config, run directory and resume flag of a head command: a resumed run's own config
/// (the loop overrides may extend it), else the `--config` file or the defaults with the
/// command-line overrides.
fn resolve_head_config<C: HeadTrainConfig>(
    args: &HeadArgs,
    global: &GlobalArgs,
) -> Result<(C, PathBuf, bool)> {
    let common = &args.common;
    if let Some(dir) = &common.resume {
        let mut cfg = C::read(dir)?;
        let before = cfg.parts().4.clone();
        common.apply_train_overrides(cfg.parts().4);
        if *cfg.parts().4 != before {
            RunDir::new(dir).write_config(&cfg)?;
        }
        return Ok((cfg, dir.clone(), true));
    }
    let mut cfg = match &common.config {
        Some(path) => C::from_file(path)?,
        None => C::default(),
    };
    let (seed, preset, data, optim, train) = cfg.parts();
    *seed = global.seed;
    if let Some(p) = &common.preset {
        *preset = p.clone();
    }
    head_overrides(common, args.balanced, data, optim, train);
    if common.data.is_some() {
        data.dir = common.data.clone();
    }
    let out = common
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{preset}", C::TASK)));
    Ok((cfg, out, false))
}

fn run_classify(args: &HeadArgs, global: &GlobalArgs) -> Result<()> {
    use crate::train::classify::{self, ClassifyConfig, ClassifyRun};
    let device = crate::device::open(global.device)?;
    let (cfg, out, resume) = resolve_head_config::<ClassifyConfig>(args, global)?;
    let data = head_source(&cfg.data.dir);
    let res = classify::run(ClassifyRun {
        config: cfg,
        data,
        encoder: args.encoder.clone(),
        mode: args.mode,
        seed: None,
        out: out.clone(),
        resume,
        device,
        options: RunOptions {
            progress: global.show_progress(),
            stop: Some(interrupt_flag()?),
        },
    })?;
    report_outcome(&res.outcome, &out, "classify");
    if let Some(r) = &res.test {
        println!(
            "test split: deformation-vs-none F1 {:.4}, macro-F1 {:.4} ({} samples; {})",
            r.classes[0].f1,
            r.macro_avg.f1,
            r.samples,
            out.join(crate::train::heads::TEST_SCORES_FILE).display()
        );
        super::eval::print_classification_report(r);
    }
    Ok(())
}

fn run_segment(args: &HeadArgs, global: &GlobalArgs) -> Result<()> {
    use crate::train::segment::{self, SegmentConfig, SegmentRun};
    let device = crate::device::open(global.device)?;
    let (cfg, out, resume) = resolve_head_config::<SegmentConfig>(args, global)?;
    let data = head_source(&cfg.data.dir);
    let res = segment::run(SegmentRun {
        config: cfg,
        data,
        encoder: args.encoder.clone(),
        mode: args.mode,
        seed: None,
        out: out.clone(),
        resume,
        device,
        options: RunOptions {
            progress: global.show_progress(),
            stop: Some(interrupt_flag()?),
        },
    })?;
    report_outcome(&res.outcome, &out, "segment");
    if let Some(r) = &res.test {
        println!(
            "test split ({} images; {}):",
            r.images,
            out.join(crate::train::heads::TEST_SCORES_FILE).display()
        );
        r.print();
    }
    Ok(())
}
