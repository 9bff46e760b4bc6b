//! `insar-mm train generator` and `insar-mm generate`: text-to-InSAR diffusion
//! (`crate::train::generator`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use insar_mm_models::diffusion::Prediction;

use super::train::{interrupt_flag, CommonTrainArgs};
use super::GlobalArgs;
use crate::train::caption;
use crate::train::checkpoint::RunDir;
use crate::train::generator::{self, GeneratorTrainConfig};
use crate::train::pretrain::RunOptions;
use crate::train::Outcome;

/// `insar-mm train generator`.
#[derive(Debug, Args)]
pub struct GeneratorArgs {
    #[command(flatten)]
    pub common: CommonTrainArgs,
    /// Real Hephaestus annotations whose captions the run trains on (as `train caption`).
    #[arg(long, value_name = "PATH", conflicts_with = "resume")]
    pub annotations: Option<PathBuf>,
    /// Use a seeded subset of N annotations that keeps the class mix (0 = all).
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub annotation_limit: Option<usize>,
    /// What the UNet predicts: epsilon or v [default: the config's, else v].
    #[arg(long, value_name = "KIND", conflicts_with = "resume")]
    pub prediction: Option<Prediction>,
}

pub fn run_train_generator(args: &GeneratorArgs, global: &GlobalArgs) -> Result<()> {
    let common = &args.common;
    let device = crate::device::open(global.device)?;
    let (mut cfg, run, resume) = match &common.resume {
        Some(dir) => {
            crate::train::heads::expect_task(dir, generator::TASK)?;
            let run = RunDir::new(dir);
            let mut cfg: GeneratorTrainConfig = run.read_config()?;
            let before = cfg.train.clone();
            common.apply_train_overrides(&mut cfg.train);
            if cfg.train != before {
                run.write_config(&cfg)?;
            }
            (cfg, run, true)
        }
        None => {
            let mut cfg = match &common.config {
                Some(path) => GeneratorTrainConfig::from_file(path)?,
                None => GeneratorTrainConfig::default(),
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
            if let Some(p) = args.prediction {
                cfg.prediction = p;
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
            cfg.validate()?;
            let out = common.out.clone().unwrap_or_else(|| {
                PathBuf::from("runs").join(format!("generator-{}", cfg.preset))
            });
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
    let data = caption::caption_parts(
        &ds,
        crate::data::frames::InputFormat::CosSinCoherence,
        cfg.data.image_size,
        cfg.seed,
    )?;
    let what = source.to_string();
    if !resume {
        cfg.data.source = Some(source);
    }
    let root = run.root.clone();
    log::info!(
        "{} text-to-InSAR diffusion: UNet {}, {}² images, batch {}, {:?} prediction, {} train / {} val / {} test images from {}, run {}",
        if resume { "resuming" } else { "starting" },
        cfg.preset,
        cfg.data.image_size,
        cfg.data.batch_size,
        cfg.prediction,
        data.train.len(),
        data.val.len(),
        data.test.len(),
        what,
        root.display()
    );
    let options = RunOptions {
        progress: global.show_progress(),
        stop: Some(interrupt_flag()?),
    };
    match generator::train_generator(&mut cfg, data, run, resume, &device, options)? {
        Outcome::Finished { step } => {
            log::info!("finished at step {step}; run in {}", root.display());
        }
        Outcome::Interrupted { step } => {
            eprintln!(
                "interrupted at step {step}; checkpoint saved in {} (continue with `insar-mm train generator --resume {}`)",
                root.display(),
                root.display()
            );
        }
    }
    Ok(())
}
