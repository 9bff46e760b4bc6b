//! `insar-mm bench ...`: throughput measurements (not tests).
//!
//! `bench train` times the full training step of an encoder with a linear classifier on
//! random data: forward, cross-entropy, backward and the optimizer update, as PyTorch
//! benchmarks report it (`images/s = batch × steps / time`, warmup steps excluded). The
//! device is synchronised before each timestamp, so the phases add up to the step.

use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarMap;
use clap::{Args, Subcommand, ValueEnum};
use insar_mm_models::encoder::{is_trainable_name, EncoderConfig, ResNet};
use insar_mm_models::nn::{linear, seeded_var_builder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::GlobalArgs;
use insar_mm::train::optim::{trainable_params, OptimConfig, Optimizer};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Training throughput (forward + backward + optimizer) of an encoder, images/s.
    Train(BenchTrainArgs),
    /// The SSL-vs-scratch experiment (Bountos et al. 2021, Table II): SimCLR linear probe vs.
    /// random-encoder probe vs. training from scratch with few labels, on an
    /// in-distribution and an out-of-distribution synthetic test set.
    Ssl(BenchSslArgs),
    /// Retrieval query latency (text encoding + exact top-k) at growing index sizes of
    /// synthetic vectors.
    Retrieval(super::retrieval::BenchRetrievalArgs),
    /// The multitask benchmark: classification, segmentation, captioning, retrieval and
    /// generation trained and scored on each named encoder, on one frame split; writes
    /// results.json, results.md and an offline HTML report.
    Heads(super::bench_heads::BenchHeadsArgs),
}

#[derive(Debug, Args)]
pub struct BenchSslArgs {
    /// Experiment config [default: the built-in configs/experiments/ssl-vs-scratch.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Output folder: table.md, results.json, config.json, runs/, data/ (the cached sets).
    #[arg(long, value_name = "DIR", default_value = "runs/bench-ssl")]
    pub out: std::path::PathBuf,
    /// Folder of the cached data sets [default: <out>/data].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<std::path::PathBuf>,
    /// Probe the encoder of this `train pretrain` run, or `shipped` (the pretrained encoder
    /// of the binary, written to <out>/shipped-encoder), instead of pretraining one here
    /// (its architecture must be the config's `[pretrain]` model).
    #[arg(long, value_name = "RUN|shipped")]
    pub encoder: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchOptimizer {
    Adamw,
    Sgd,
}

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Encoder architecture: tiny, resnet18, resnet34, resnet50.
    #[arg(long, default_value = "resnet18")]
    pub arch: String,
    /// Input side in pixels.
    #[arg(long, default_value_t = 64)]
    pub image_size: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps first (allocation, kernel compilation).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Input channels (3 to compare with ImageNet-style benchmarks, 2 for the suite's input).
    #[arg(long, default_value_t = 3)]
    pub in_channels: usize,
    /// Classes of the linear head.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    #[arg(long, value_enum, default_value_t = BenchOptimizer::Adamw)]
    pub optimizer: BenchOptimizer,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    arch: String,
    device: String,
    image_size: usize,
    batch_size: usize,
    steps: usize,
    parameters: usize,
    images_per_s: f64,
    step_ms: f64,
    forward_ms: f64,
    backward_ms: f64,
    optimizer_ms: f64,
    threads: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

pub fn run(cmd: BenchCommand, global: &GlobalArgs) -> Result<()> {
    match cmd {
        BenchCommand::Train(args) => bench_train(&args, global),
        BenchCommand::Ssl(args) => bench_ssl(&args, global),
        BenchCommand::Retrieval(args) => super::retrieval::run_bench(args, global),
        BenchCommand::Heads(args) => super::bench_heads::run(&args, global),
    }
}

fn bench_ssl(args: &BenchSslArgs, global: &GlobalArgs) -> Result<()> {
    use insar_mm::experiments::ssl_bench::{self, BenchPaths, SslBenchConfig};
    let cfg = match &args.config {
        Some(path) => SslBenchConfig::from_file(path, global.seed)?,
        None => SslBenchConfig::from_toml(
            ssl_bench::DEFAULT_CONFIG,
            "configs/experiments/ssl-vs-scratch.toml (built in)",
            global.seed,
        )?,
    };
    let device = insar_mm::device::open(global.device)?;
    let mut paths = BenchPaths::new(&args.out);
    if let Some(c) = &args.cache {
        paths.cache = c.clone();
    }
    let command = std::iter::once("insar-mm".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let encoder = match &args.encoder {
        Some(e) if e.as_os_str() == "shipped" => Some(
            insar_mm::train::encoder_init::write_shipped_run(&args.out.join("shipped-encoder"))?,
        ),
        other => other.clone(),
    };
    let report = ssl_bench::run(
        &cfg,
        &paths,
        encoder.as_deref(),
        &device,
        global.show_progress(),
        &command,
    )?;
    println!("{}", ssl_bench::render_table(&report));
    log::info!("table.md and results.json in {}", paths.out.display());
    Ok(())
}

fn bench_train(args: &BenchTrainArgs, global: &GlobalArgs) -> Result<()> {
    ensure!(
        args.steps > 0 && args.batch_size > 0,
        "--steps and --batch-size must be positive"
    );
    ensure!(args.image_size >= 8, "--image-size must be at least 8");
    let device = insar_mm::device::open(global.device)?;
    let enc_cfg = EncoderConfig::preset(&args.arch)
        .map_err(|e| anyhow::anyhow!("--arch: {e}"))?
        .with_in_channels(args.in_channels);
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, global.seed, DType::F32, &device);
    let encoder = ResNet::new(&enc_cfg, vb.pp("encoder"))?;
    let head = linear(enc_cfg.out_dim(), args.classes, vb.pp("head"))?;
    let params = trainable_params(&varmap, is_trainable_name);
    let parameters: usize = params.iter().map(|p| p.var.elem_count()).sum();
    let optim = match args.optimizer {
        BenchOptimizer::Adamw => OptimConfig::default(),
        BenchOptimizer::Sgd => OptimConfig::Sgd {
            lr: 0.01,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 1e-4,
        },
    };
    let mut opt = Optimizer::new(optim, params)?;

    let mut rng = ChaCha8Rng::seed_from_u64(global.seed);
    let shape = (
        args.batch_size,
        args.in_channels,
        args.image_size,
        args.image_size,
    );
    let n: usize = args.batch_size * args.in_channels * args.image_size * args.image_size;
    let x: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    let x = Tensor::from_vec(x, shape, &Device::Cpu)?.to_device(&device)?;
    let y: Vec<u32> = (0..args.batch_size)
        .map(|_| rng.random_range(0..args.classes as u32))
        .collect();
    let y = Tensor::from_vec(y, args.batch_size, &Device::Cpu)?.to_device(&device)?;

    let pb = insar_mm::progress::bar(
        (args.warmup + args.steps) as u64,
        "steps",
        global.show_progress(),
    );
    let (mut fwd, mut bwd, mut upd, mut total) = (vec![], vec![], vec![], 0.0);
    for i in 0..args.warmup + args.steps {
        device.synchronize()?;
        let t0 = Instant::now();
        let logits = head.forward(&encoder.forward_t(&x, true)?.pooled)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        device.synchronize()?;
        let t1 = Instant::now();
        let store = loss.backward()?;
        device.synchronize()?;
        let t2 = Instant::now();
        opt.step(&opt.grads(&store))?;
        device.synchronize()?;
        let t3 = Instant::now();
        let l = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        ensure!(l.is_finite(), "step {i}: non-finite loss {l}");
        if i >= args.warmup {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            upd.push((t3 - t2).as_secs_f64());
            total += (t3 - t0).as_secs_f64();
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let threads = std::env::var("CANDLE_NUM_THREADS")
        .or_else(|_| std::env::var("RAYON_NUM_THREADS"))
        .unwrap_or_else(|_| "all cores".into());
    let report = BenchReport {
        arch: args.arch.clone(),
        device: global.device.to_string(),
        image_size: args.image_size,
        batch_size: args.batch_size,
        steps: args.steps,
        parameters,
        images_per_s: (args.batch_size * args.steps) as f64 / total,
        step_ms: 1e3 * total / args.steps as f64,
        forward_ms: 1e3 * median(fwd),
        backward_ms: 1e3 * median(bwd),
        optimizer_ms: 1e3 * median(upd),
        threads,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} {}² batch {} on {} ({} threads, {:.2} M params, {} timed steps):\n  {:.1} images/s, {:.1} ms/step (median forward {:.1} ms, backward {:.1} ms, optimizer {:.1} ms)",
            report.arch,
            report.image_size,
            report.batch_size,
            report.device,
            report.threads,
            report.parameters as f64 / 1e6,
            report.steps,
            report.images_per_s,
            report.step_ms,
            report.forward_ms,
            report.backward_ms,
            report.optimizer_ms
        );
    }
    Ok(())
}
