//! `insar-mm train ...`: training commands. Every command shares [`CommonTrainArgs`] and runs
//! on the loop in `insar_mm::train`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::GlobalArgs;
use insar_mm::train::checkpoint::RunDir;
use insar_mm::train::classify::ClassifyConfig;
use insar_mm::train::config::{
    builtin_pretrain_config, resolve_layers, resolve_layers_text, PretrainConfig, TrainSection,
};
use insar_mm::train::encoder_init::EncoderInit;
use insar_mm::train::heads::recipe::{self, HeadConfig, HeadRun};
use insar_mm::train::pretrain::{self, open_data, synthetic_source, RunOptions};
use insar_mm::train::segment::SegmentConfig;
use insar_mm::train::Outcome;

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
    /// Text–image retrieval: dual encoder (image encoder + text transformer) trained with a
    /// contrastive loss whose positives are pairs with the same caption facts; val mR for
    /// the best checkpoint, test-split retrieval scores at the end.
    Retrieval(super::retrieval::RetrievalTrainArgs),
    /// Text-to-InSAR generation: a caption-conditioned diffusion model (text encoder + UNet,
    /// cosine schedule, EMA, caption dropout for classifier-free guidance).
    Generator(super::generate::GeneratorArgs),
}

/// Options shared by every `train` command.
#[derive(Debug, Clone, Args)]
pub struct CommonTrainArgs {
    /// Dataset directory (annotations + frames; pretrain uses its patches/ when present), or
    /// a patch folder of `data patches` (pretrain, classify, segment).
    /// Default: the built-in synthetic stream.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// TOML config (e.g. configs/pretrain-tiny.toml); the options below override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// Write the new run into a non-empty --out that is not a run (its other files stay).
    #[arg(long)]
    pub force: bool,
    /// Continue the run in RUN from its last checkpoint, with its saved config. Only
    /// --steps/--epochs (to extend it), --checkpoint-every and --lr (e.g. after a
    /// non-finite loss; recorded in RUN/config-history.jsonl) may change.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["data", "config", "preset", "batch_size", "image_size", "accumulate", "out"])]
    pub resume: Option<PathBuf>,
}

impl CommonTrainArgs {
    /// Progress bar, the Ctrl-C/SIGTERM flag and `--force`, as every train command runs.
    pub fn run_options(&self, global: &GlobalArgs) -> Result<RunOptions> {
        Ok(RunOptions {
            progress: global.show_progress(),
            stop: Some(interrupt_flag()?),
            force: self.force,
        })
    }

    /// The overrides a resumed run accepts: run length and checkpointing in `[train]`, and
    /// the base learning rate, whose change is recorded in the run's config history. Writes
    /// `config.json` when something changed.
    pub fn apply_resume_overrides<C: serde::Serialize>(
        &self,
        run: &RunDir,
        cfg: &mut C,
        sections: impl FnOnce(&mut C) -> (&mut TrainSection, &mut insar_mm::train::optim::OptimConfig),
    ) -> Result<()> {
        let (train, optim) = sections(cfg);
        let before = train.clone();
        self.apply_train_overrides(train);
        let mut changed = *train != before;
        if let Some(lr) = self.lr {
            let old = optim.lr();
            if lr != old {
                optim.set_lr(lr);
                optim.validate().context("--lr")?;
                run.record_config_change("optim.lr", old.into(), lr.into())?;
                log::info!("optim.lr {old:e} -> {lr:e} from the resumed step on");
                changed = true;
            }
        }
        if changed {
            run.write_config(cfg)?;
        }
        Ok(())
    }

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
    /// Model preset: tiny, small, base, large, or a preset .toml file [default: the config's
    /// `preset`, else tiny].
    #[arg(long, value_name = "NAME|FILE", value_parser = pretrain_preset)]
    pub preset: Option<String>,
}

/// `--preset` of `train pretrain`: a built-in preset name or a `.toml` file.
fn pretrain_preset(s: &str) -> std::result::Result<String, String> {
    let known = insar_mm::train::config::PRESETS;
    if known.contains(&s)
        || std::path::Path::new(s)
            .extension()
            .is_some_and(|e| e == "toml")
    {
        Ok(s.to_string())
    } else {
        Err(format!(
            "expected one of {} or a .toml file",
            known.join(", ")
        ))
    }
}

#[derive(Debug, Args)]
pub struct CaptionArgs {
    #[command(flatten)]
    pub common: CommonTrainArgs,
    /// Model preset [default: the config's `preset`, else tiny].
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(insar_mm_models::caption::CaptionConfig::PRESETS))]
    pub preset: Option<String>,
    /// Keep the encoder fixed (running BatchNorm statistics, no gradient); only the visual
    /// memory and the decoder train.
    #[arg(long, conflicts_with = "resume")]
    pub freeze_encoder: bool,
    /// Where the encoder starts: auto (the shipped SimCLR encoder when it fits the preset,
    /// else random), shipped, none (random) or RUN (a `train pretrain` or classify/segment
    /// run: its architecture and `encoder.*` weights) [default: the config's `encoder`, else
    /// auto].
    #[arg(long, value_name = "auto|shipped|none|RUN", value_parser = EncoderInit::parse, conflicts_with = "resume")]
    pub encoder: Option<EncoderInit>,
    #[command(flatten)]
    pub captions: CaptionDataArgs,
}

/// The caption data options of the commands that train on image–caption pairs (`train
/// caption`, `train retrieval`).
#[derive(Debug, Args)]
pub struct CaptionDataArgs {
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

impl CaptionDataArgs {
    /// Applies these options and the shared `[data]` overrides of `common` (batch size,
    /// image size, `--data`) to a new run's `[data]`.
    pub fn apply(
        &self,
        common: &CommonTrainArgs,
        data: &mut insar_mm::train::caption::CaptionData,
    ) {
        if let Some(b) = common.batch_size {
            data.batch_size = b;
        }
        if let Some(s) = common.image_size {
            data.image_size = s;
        }
        if common.data.is_some() {
            data.dir = common.data.clone();
        }
        if self.annotations.is_some() {
            data.annotations = self.annotations.clone();
        }
        if let Some(n) = self.annotation_limit {
            data.annotation_limit = n;
        }
        if self.balanced {
            data.balanced = true;
        }
    }
}

/// `train classify` / `train segment`.
#[derive(Debug, Args)]
pub struct HeadArgs {
    #[command(flatten)]
    pub common: CommonTrainArgs,
    /// Encoder preset, when no --encoder is given [default: the config's `preset`, else
    /// tiny].
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(insar_mm_models::encoder::EncoderConfig::PRESETS))]
    pub preset: Option<String>,
    /// Where the encoder starts: auto (the shipped SimCLR encoder when the preset is tiny,
    /// else random), shipped, none (random) or RUN, the encoder of a `train pretrain` or
    /// classify/segment run, whose architecture replaces the preset [default: the config's
    /// `encoder`, else auto].
    #[arg(long, value_name = "auto|shipped|none|RUN", value_parser = EncoderInit::parse, conflicts_with = "resume")]
    pub encoder: Option<EncoderInit>,
    /// How much of the encoder trains: linear (frozen encoder, a linear probe), finetune
    /// (everything) or finetune:<stage> (stem, layer1..layer4 onwards) [default: the
    /// config's `mode`, else finetune].
    #[arg(long, value_name = "MODE", value_parser = parse_mode, conflicts_with = "resume")]
    pub mode: Option<insar_mm_models::heads::EncoderMode>,
    /// Class-balanced oversampling of the training set (overrides data.balanced).
    #[arg(long, value_name = "BOOL", conflicts_with = "resume")]
    pub balanced: Option<bool>,
    /// Keep this share, in (0, 1], of the training split (a seeded subset that keeps the
    /// share of deformation samples; val and test stay whole), for label-efficiency
    /// experiments (overrides data.label_fraction).
    #[arg(long, value_name = "F", conflicts_with = "resume")]
    pub label_fraction: Option<f64>,
}

fn parse_mode(s: &str) -> std::result::Result<insar_mm_models::heads::EncoderMode, String> {
    insar_mm_models::heads::EncoderMode::parse(s)
}

pub fn run(cmd: TrainCommand, global: &GlobalArgs) -> Result<()> {
    match cmd {
        TrainCommand::Pretrain(args) => run_pretrain(&args, global),
        TrainCommand::Caption(args) => run_caption(&args, global),
        TrainCommand::Classify(args) => run_classify(&args, global),
        TrainCommand::Segment(args) => run_segment(&args, global),
        TrainCommand::Retrieval(args) => super::retrieval::run_train(&args, global),
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

fn run_pretrain(pretrain: &PretrainArgs, global: &GlobalArgs) -> Result<()> {
    let args = &pretrain.common;
    let device = insar_mm::device::open(global.device)?;
    let (cfg, run, resume) = match &args.resume {
        Some(dir) => {
            let run = RunDir::new(dir);
            let mut cfg: PretrainConfig = run.read_config()?;
            args.apply_resume_overrides(&run, &mut cfg, |c| (&mut c.train, &mut c.optim))?;
            (cfg, run, true)
        }
        None => {
            // Without --config, a built-in preset brings its committed recipe
            // (configs/pretrain-<preset>.toml).
            let preset = pretrain.preset.as_deref();
            let mut cfg: PretrainConfig = match &args.config {
                Some(_) => resolve_layers(preset, args.config.as_deref())?,
                None => {
                    resolve_layers_text(preset, builtin_pretrain_config(preset.unwrap_or("tiny")))?
                }
            };
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
    let options = args.run_options(global)?;
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
    use insar_mm::train::caption::{self, CaptionTrainConfig};
    let common = &args.common;
    let device = insar_mm::device::open(global.device)?;
    let (mut cfg, run, resume) = match &common.resume {
        Some(dir) => {
            let run = RunDir::new(dir);
            let mut cfg: CaptionTrainConfig = run.read_config()?;
            common.apply_resume_overrides(&run, &mut cfg, |c| (&mut c.train, &mut c.optim))?;
            (cfg, run, true)
        }
        None => {
            let mut cfg = match &common.config {
                Some(path) => CaptionTrainConfig::from_file(path)?,
                None => CaptionTrainConfig::default(),
            };
            cfg.seed = global.seed;
            if let Some(p) = &args.preset {
                cfg.preset = p.clone();
            }
            args.captions.apply(common, &mut cfg.data);
            if let Some(lr) = common.lr {
                cfg.optim.set_lr(lr);
            }
            if args.freeze_encoder {
                cfg.freeze_encoder = true;
            }
            if let Some(e) = &args.encoder {
                cfg.encoder = e.clone();
            }
            common.apply_train_overrides(&mut cfg.train);
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
        &|len, what| insar_mm::progress::bar(len, what, global.show_progress()),
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
    let options = common.run_options(global)?;
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

/// Applies the shared overrides of `train classify|segment` to a head config's `[data]`,
/// optimizer and `[train]` sections.
fn head_overrides<C: HeadConfig>(common: &CommonTrainArgs, balanced: Option<bool>, cfg: &mut C) {
    let data = cfg.data_mut();
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
        cfg.optim_mut().set_lr(lr);
    }
    common.apply_train_overrides(cfg.train_mut());
}

fn head_source(data: &Option<PathBuf>) -> insar_mm::train::heads::HeadSource {
    match data {
        Some(d) => insar_mm::train::heads::HeadSource::Dir(d.clone()),
        None => insar_mm::train::heads::HeadSource::Builtin,
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

/// The config, run directory and resume flag of a head command: a resumed run's own config
/// (the loop overrides may extend it), else the `--config` file or the defaults with the
/// command-line overrides.
fn resolve_head_config<C: HeadConfig>(
    args: &HeadArgs,
    global: &GlobalArgs,
) -> Result<(C, PathBuf, bool)> {
    let common = &args.common;
    if let Some(dir) = &common.resume {
        let mut cfg = C::read(dir)?;
        common.apply_resume_overrides(&RunDir::new(dir), &mut cfg, |c| c.train_and_optim_mut())?;
        return Ok((cfg, dir.clone(), true));
    }
    let mut cfg = match &common.config {
        Some(path) => C::from_file(path)?,
        None => C::default(),
    };
    *cfg.seed_mut() = global.seed;
    if let Some(p) = &args.preset {
        *cfg.preset_mut() = p.clone();
    }
    head_overrides(common, args.balanced, &mut cfg);
    if let Some(f) = args.label_fraction {
        insar_mm::train::heads::validate_label_fraction(f).context("--label-fraction")?;
        cfg.data_mut().label_fraction = f;
    }
    if common.data.is_some() {
        cfg.data_mut().dir = common.data.clone();
    }
    let out = common
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}", C::TASK, cfg.preset_mut())));
    Ok((cfg, out, false))
}

/// `train classify|segment`: resolve the config, run the head recipe, print the test report
/// with `print`.
fn run_head<C: HeadConfig>(
    args: &HeadArgs,
    global: &GlobalArgs,
    print: impl Fn(&C::Report, &std::path::Path),
) -> Result<()> {
    let device = insar_mm::device::open(global.device)?;
    let (cfg, out, resume) = resolve_head_config::<C>(args, global)?;
    let data = head_source(&cfg.data().dir);
    let res = recipe::run(HeadRun {
        config: cfg,
        data,
        encoder: args.encoder.clone(),
        mode: args.mode,
        seed: None,
        out: out.clone(),
        resume,
        device,
        options: args.common.run_options(global)?,
    })?;
    report_outcome(&res.outcome, &out, C::TASK);
    if let Some(r) = &res.test {
        print(r, &out.join(insar_mm::train::heads::TEST_SCORES_FILE));
    }
    Ok(())
}

fn run_classify(args: &HeadArgs, global: &GlobalArgs) -> Result<()> {
    run_head::<ClassifyConfig>(args, global, |r, scores| {
        println!(
            "test split: deformation-vs-none F1 {:.4}, macro-F1 {:.4} ({} samples; {})",
            r.classes[0].f1,
            r.macro_avg.f1,
            r.samples,
            scores.display()
        );
        super::eval::print_classification_report(r);
    })
}

fn run_segment(args: &HeadArgs, global: &GlobalArgs) -> Result<()> {
    run_head::<SegmentConfig>(args, global, |r, scores| {
        println!("test split ({} images; {}):", r.images, scores.display());
        r.print();
    })
}
