//! `insar-mm train generator` and `insar-mm generate`: text-to-InSAR diffusion
//! (`insar_mm::train::generator`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use insar_mm_models::diffusion::Prediction;

use super::train::CommonTrainArgs;
use super::GlobalArgs;
use insar_mm::train::caption;
use insar_mm::train::checkpoint::RunDir;
use insar_mm::train::generator::{self, GeneratorTrainConfig};
use insar_mm::train::Outcome;

/// `insar-mm train generator`.
#[derive(Debug, Args)]
pub struct GeneratorArgs {
    #[command(flatten)]
    pub common: CommonTrainArgs,
    /// UNet preset [default: the config's `preset`, else tiny].
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(insar_mm_models::diffusion::UNetConfig::PRESETS))]
    pub preset: Option<String>,
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
    let device = insar_mm::device::open(global.device)?;
    let (mut cfg, run, resume) = match &common.resume {
        Some(dir) => {
            insar_mm::train::heads::expect_task(dir, generator::TASK)?;
            let run = RunDir::new(dir);
            let mut cfg: GeneratorTrainConfig = run.read_config()?;
            common.apply_resume_overrides(&run, &mut cfg, |c| (&mut c.train, &mut c.optim))?;
            (cfg, run, true)
        }
        None => {
            let mut cfg = match &common.config {
                Some(path) => GeneratorTrainConfig::from_file(path)?,
                None => GeneratorTrainConfig::default(),
            };
            cfg.seed = global.seed;
            if let Some(p) = &args.preset {
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
            let out = common
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs").join(format!("generator-{}", cfg.preset)));
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
    let data = caption::caption_parts(
        &ds,
        insar_mm::data::frames::InputFormat::CosSinCoherence,
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
    let options = common.run_options(global)?;
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

/// `insar-mm generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A `train generator` run directory.
    #[arg(long, value_name = "RUN")]
    pub model: PathBuf,
    /// The caption to generate from ("" samples unconditionally).
    #[arg(value_name = "PROMPT", required_unless_present = "prompts")]
    pub prompt: Option<String>,
    /// A text file with one prompt per line (blank lines skipped), instead of PROMPT.
    #[arg(long, value_name = "FILE", conflicts_with = "prompt")]
    pub prompts: Option<PathBuf>,
    /// Samples per prompt.
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// Sampling steps (network evaluations).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (0 unconditional, 1 plain conditional).
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub guidance: f64,
    /// ddim (deterministic, η = 0) or ddpm (ancestral).
    #[arg(long, default_value = "ddim")]
    pub sampler: insar_mm_models::diffusion::SamplerKind,
    /// Output dataset directory (Hephaestus layout: annotations/ + frame folders).
    #[arg(long, value_name = "DIR", default_value = "generated")]
    pub out: PathBuf,
    /// Also write a prompts × samples contact sheet (PNG) here.
    #[arg(long, value_name = "PNG")]
    pub sheet: Option<PathBuf>,
    /// Also write the float wrapped phase as `<p>_<s>.geo.diff.npy`.
    #[arg(long)]
    pub npy: bool,
    /// Images sampled at once.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
}

/// The prompts of `generate` (PROMPT, or the lines of --prompts).
fn prompts_of(args: &GenerateArgs) -> Result<Vec<String>> {
    use anyhow::Context;
    match (&args.prompt, &args.prompts) {
        (Some(p), _) => Ok(vec![p.trim().to_string()]),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--prompts {}: cannot read", file.display()))?;
            let v: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            anyhow::ensure!(
                !v.is_empty(),
                "--prompts {}: no prompt (every line is blank)",
                file.display()
            );
            Ok(v)
        }
        (None, None) => anyhow::bail!("give a PROMPT or --prompts FILE"),
    }
}

/// Date `k` of a sequence of distinct acquisition pairs: `(primary, secondary)`.
fn sample_dates(
    k: usize,
) -> Result<(
    insar_mm::data::annotation::Date,
    insar_mm::data::annotation::Date,
)> {
    use insar_mm::data::annotation::Date;
    let year = 2000 + (k / 336) as u16;
    let (m, d) = (1 + ((k / 28) % 12) as u8, 1 + (k % 28) as u8);
    let p = Date::new(year, m, d).map_err(anyhow::Error::msg)?;
    let s = Date::new(year + 1, m, d).map_err(anyhow::Error::msg)?;
    Ok((p, s))
}

pub fn run_generate(args: &GenerateArgs, global: &GlobalArgs) -> Result<()> {
    use anyhow::{ensure, Context};
    use insar_mm::data::frames::{interferogram_dir, InterferogramFiles};
    use insar_mm::synth::grid::{Field, Geometry};
    use insar_mm::synth::render::{write_cc_png, write_diff_png, write_phase_npy, Style};
    use rand::SeedableRng;

    ensure!(
        args.n >= 1,
        "--n 0: nothing to generate (give at least 1 sample per prompt)"
    );
    ensure!(
        args.guidance.is_finite() && args.guidance >= 0.0,
        "--guidance {}: the guidance scale must be ≥ 0 (0 unconditional, 1 conditional, >1 guided)",
        args.guidance
    );
    ensure!(args.steps >= 1, "--steps 0: at least one sampling step");
    ensure!(args.batch >= 1, "--batch 0: at least one image at a time");
    let prompts = prompts_of(args)?;
    let device = insar_mm::device::open(global.device)?;
    let g = generator::load_generator_run(&args.model, &device)?;
    let timesteps = g.model.schedule().len();
    ensure!(
        args.steps <= timesteps,
        "--steps {}: at most the model's {timesteps} timesteps",
        args.steps
    );
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            eprintln!(
                "note: prompt {}: empty: sampling unconditionally (the null caption)",
                i + 1
            );
        } else if !generator::has_known_facts(p) {
            eprintln!(
                "note: prompt {} ({p:?}): no known caption facts (deformation type, intensity, \
                 atmosphere, …); generating anyway, labelled Non_Deformation",
                i + 1
            );
        }
    }
    let size = g.config.data.image_size;
    let ann_dir = args.out.join("annotations");
    std::fs::create_dir_all(&ann_dir)
        .with_context(|| format!("--out {}: cannot create", args.out.display()))?;
    let per_prompt = args.n.div_ceil(args.batch) * args.steps;
    let pb = insar_mm::progress::bar(
        (prompts.len() * per_prompt) as u64,
        "sampling steps",
        global.show_progress(),
    );
    let opts = generator::GenerateOptions {
        steps: args.steps,
        guidance: args.guidance,
        sampler: args.sampler,
        batch: args.batch,
    };
    let start = std::time::Instant::now();
    let mut sheet_rows = Vec::new();
    let mut written = 0usize;
    for (pi, prompt) in prompts.iter().enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(global.seed);
        rng.set_stream(pi as u64);
        let images =
            generator::generate_images(&g, prompt, args.n, &opts, &mut rng, &device, || pb.inc(1))?;
        let frame = format!("GEN_{:05}", pi + 1);
        let mut tiles = Vec::new();
        for (k, img) in images.iter().enumerate() {
            let (primary, secondary) = sample_dates(k)?;
            let uid = (pi * 100_000 + k + 1) as u64;
            let dir = interferogram_dir(&args.out, &frame, primary, secondary);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let files = InterferogramFiles::canonical(&args.out, &frame, primary, secondary);
            let (phase, coh) = generator::phase_and_coherence(img);
            let geometry = Geometry::new(size, size, 370.0 * 224.0 / size as f64);
            let valid = vec![true; size * size];
            let phase = Field {
                geometry,
                data: phase,
            };
            write_diff_png(&files.phase, &phase, &valid, Style::Licsar2020, None)?;
            let cc = files.require_coherence()?;
            write_cc_png(
                cc,
                &Field {
                    geometry,
                    data: coh,
                },
                &valid,
            )?;
            if args.npy {
                write_phase_npy(&files.phase.with_extension("npy"), &phase, &valid)?;
            }
            generator::prompt_annotation(uid, &frame, primary, secondary, prompt)
                .write_to(&ann_dir)?;
            if args.sheet.is_some() {
                tiles.push(
                    phase
                        .data
                        .iter()
                        .flat_map(|&p| insar_mm::data::colormap::rdylbu_color(p))
                        .collect(),
                );
            }
            written += 1;
        }
        if args.sheet.is_some() {
            let label = if prompt.is_empty() {
                "(empty prompt: unconditional)".to_string()
            } else {
                prompt.clone()
            };
            sheet_rows.push((label, tiles));
        }
    }
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    if let Some(path) = &args.sheet {
        insar_mm::synth::gallery::prompt_sheet(&sheet_rows, size, (96 / size).max(1), 260)?
            .write(path)?;
        println!("sheet: {}", path.display());
    }
    println!(
        "{written} samples ({size}², {} prompt(s), {:?} {} steps, guidance {}) in {:.1} s ({:.2} images/s) → {}",
        prompts.len(),
        args.sampler,
        args.steps,
        args.guidance,
        secs,
        written as f64 / secs,
        args.out.display()
    );
    Ok(())
}

/// `insar-mm eval generation`.
#[derive(Debug, Args)]
pub struct EvalGenerationArgs {
    /// A `train generator` run.
    #[arg(long, value_name = "RUN")]
    pub model: PathBuf,
    /// The judge: a `train classify` run reading cos-sin-coherence inputs (its encoder's
    /// pooled features also give FID/KID).
    #[arg(long, value_name = "RUN")]
    pub classify_model: PathBuf,
    /// Split whose captions prompt the generator and whose images are the real reference.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Real images per half and generated samples (at most half the split).
    #[arg(long, default_value_t = 64)]
    pub samples: usize,
    /// Sampling steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub guidance: f64,
    /// ddim or ddpm.
    #[arg(long, default_value = "ddim")]
    pub sampler: insar_mm_models::diffusion::SamplerKind,
    /// KID subsets.
    #[arg(long, default_value_t = 50)]
    pub kid_subsets: usize,
    /// Images sampled at once.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Write the report as JSON here [default: RUN/generation_eval.json].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

fn pct(v: f64) -> String {
    if v.is_nan() {
        "   n/a".into()
    } else {
        format!("{:6.3}", v)
    }
}

pub fn run_eval_generation(args: &EvalGenerationArgs, global: &GlobalArgs) -> Result<()> {
    use anyhow::{bail, ensure};
    ensure!(args.samples >= 4, "--samples {}: at least 4", args.samples);
    ensure!(
        args.guidance.is_finite() && args.guidance >= 0.0,
        "--guidance {}: must be ≥ 0",
        args.guidance
    );
    ensure!(
        args.batch >= 1 && args.steps >= 1,
        "--batch and --steps must be at least 1"
    );
    let device = insar_mm::device::open(global.device)?;
    let g = generator::load_generator_run(&args.model, &device)?;
    insar_mm::train::heads::expect_task(&args.classify_model, "classify")?;
    let judge = insar_mm::train::heads::recipe::load::<insar_mm::train::classify::ClassifyConfig>(
        &args.classify_model,
        &device,
    )?;
    let cfg = &g.config;
    let (ds, _) = caption::open_caption_dataset(
        cfg.data.dir.as_deref(),
        cfg.data.annotations.as_deref(),
        cfg.data.annotation_limit,
        cfg.seed,
        &|len, what| insar_mm::progress::bar(len, what, global.show_progress()),
    )?;
    let data = caption::caption_parts(
        &ds,
        insar_mm::data::frames::InputFormat::CosSinCoherence,
        cfg.data.image_size,
        cfg.seed,
    )?;
    let part = match args.split.as_str() {
        "test" => &data.test,
        "val" => &data.val,
        other => bail!("--split {other}: expected test or val"),
    };
    let h = args.samples.min(part.len() / 2);
    let pb = insar_mm::progress::bar(
        (h.div_ceil(args.batch) * args.steps) as u64,
        "sampling steps",
        global.show_progress(),
    );
    let opts = generator::EvalOptions {
        samples: args.samples,
        generate: generator::GenerateOptions {
            steps: args.steps,
            guidance: args.guidance,
            sampler: args.sampler,
            batch: args.batch,
        },
        kid_subsets: args.kid_subsets,
        seed: global.seed,
    };
    let r = generator::evaluate_generation(
        &g,
        &args.model,
        &judge,
        &args.classify_model,
        &data.train,
        part,
        &opts,
        &device,
        || pb.inc(1),
    )?;
    pb.finish_and_clear();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.model.join("generation_eval.json"));
    insar_mm::data::atomic::write_atomic(&out, serde_json::to_string_pretty(&r)?.as_bytes())?;
    println!(
        "generation on {} split: {} prompts ({}² images, {} {} steps, guidance {}), {} real images per half; sampling {:.1} s ({:.3} images/s)",
        args.split,
        r.samples,
        r.image_size,
        r.sampler,
        r.steps,
        r.guidance,
        r.samples,
        r.seconds_sampling,
        r.samples as f64 / r.seconds_sampling
    );
    println!(
        "FID-InSAR {:.3} (real-vs-real floor {:.3}, ratio {:.2})   KID {:.4} (floor {:.4}), judge encoder features",
        r.fid,
        r.fid_floor,
        r.fid / r.fid_floor,
        r.kid,
        r.kid_floor
    );
    println!(
        "prompt fidelity         presence  group  intensity   (n: {} / {} / {})",
        r.judge_generated.matched.n_presence,
        r.judge_generated.matched.n_group,
        r.judge_generated.matched.n_intensity
    );
    for (name, p) in [
        ("judge, generated", &r.judge_generated),
        ("judge, real (ceiling)", &r.judge_real),
    ] {
        println!(
            "  {name:<22} matched {} {} {}   shuffled {} {} {}",
            pct(p.matched.presence),
            pct(p.matched.group),
            pct(p.matched.intensity),
            pct(p.shuffled.presence),
            pct(p.shuffled.group),
            pct(p.shuffled.intensity)
        );
    }
    for (name, p) in [
        ("fringe rule, generated", &r.physics_generated),
        ("fringe rule, real", &r.physics_real),
    ] {
        println!(
            "  {name:<22} intensity matched {}   shuffled {}",
            pct(p.matched.intensity),
            pct(p.shuffled.intensity)
        );
    }
    println!(
        "memorisation: median nearest-training RMS distance, generated {:.4} vs real test {:.4}",
        r.nearest_train_generated, r.nearest_train_real
    );
    println!("report: {}", out.display());
    Ok(())
}
