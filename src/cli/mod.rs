//! Command-line interface: `insar-mm <group> <command>`.
//!
//! One module per command group. Each exposes a clap `Subcommand` enum and
//! `run(cmd, &GlobalArgs) -> anyhow::Result<()>`. User errors are returned as `anyhow`
//! errors with context naming the file or argument; `main` prints them on one line
//! (exit code 1). Usage errors exit with code 2.

pub mod bench;
pub mod bench_heads;
pub mod caption;
pub mod data;
pub mod embed;
pub mod eval;
pub mod generate;
pub mod physics;
pub mod predict;
pub mod retrieval;
pub mod train;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use insar_mm::device::DeviceKind;

#[derive(Debug, Parser)]
#[command(
    name = "insar-mm",
    version,
    about = "InSAR multimodal research suite: data, synthetic interferograms, training, evaluation",
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted by every command.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Seed for every random draw of the command (same seed, same result).
    #[arg(long, global = true, default_value_t = 42)]
    pub seed: u64,
    /// Compute device.
    #[arg(long, global = true, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less output: no progress bars or info messages (-qq: errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
}

impl GlobalArgs {
    /// Whether progress bars and informational messages should be shown.
    pub fn show_progress(&self) -> bool {
        self.quiet == 0
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hephaestus data: annotations, frames, patches, splits, statistics.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Deformation sources and line of sight of the synthetic generator.
    #[command(subcommand)]
    Physics(physics::PhysicsCommand),
    /// Evaluation metrics: captions (BLEU/ROUGE-L/CIDEr-D), FID/KID, retrieval, classification, segmentation.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Train models: SimCLR pretraining of the shared encoder, classification, segmentation
    /// and captioning heads, and the text-to-InSAR diffusion generator.
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Pooled encoder features of every sample of a dataset, as a .npy matrix.
    Embed(embed::EmbedArgs),
    /// Caption interferogram PNGs with a trained caption run.
    Caption(caption::CaptionArgs),
    /// Generate interferograms from text prompts with a `train generator` run (written as a
    /// Hephaestus dataset: phase preview, coherence, annotation with the prompt's facts).
    Generate(generate::GenerateArgs),
    /// Apply a classify or segment run to PNGs: patches, folders, whole frames (sliding
    /// window with blending).
    #[command(subcommand)]
    Predict(predict::PredictCommand),
    /// Embed interferograms with a retrieval run into a searchable index (safetensors +
    /// JSON manifest).
    Index(retrieval::IndexArgs),
    /// Search an index by text ("dyke-type deformation of high intensity"), by image
    /// (--image PNG), or rank captions for an image (--image PNG --captions FILE|--from-index).
    Search(retrieval::SearchArgs),
    /// Throughput benchmarks (not tests).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Data(cmd) => data::run(cmd, &global),
        Command::Physics(cmd) => physics::run(cmd, &global),
        Command::Eval(cmd) => eval::run(cmd, &global),
        Command::Train(cmd) => train::run(cmd, &global),
        Command::Embed(args) => embed::run(args, &global),
        Command::Caption(args) => caption::run(args, &global),
        Command::Generate(args) => generate::run_generate(&args, &global),
        Command::Predict(cmd) => predict::run(cmd, &global),
        Command::Bench(cmd) => bench::run(cmd, &global),
        Command::Index(args) => retrieval::run_index(args, &global),
        Command::Search(args) => retrieval::run_search(args, &global),
    }
}

fn init_logging(global: &GlobalArgs) {
    let level = match (global.quiet, global.verbose) {
        (0, 0) => log::LevelFilter::Info,
        (0, 1) => log::LevelFilter::Debug,
        (0, _) => log::LevelFilter::Trace,
        (1, _) => log::LevelFilter::Warn,
        _ => log::LevelFilter::Error,
    };
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp(None)
        .format_target(false)
        .parse_env("INSAR_MM_LOG")
        .try_init();
}

/// Parses the command line, runs the command and maps the outcome to an exit code:
/// 0 success, 1 runtime error (one line naming the file or argument), 2 usage error.
pub fn main() -> ExitCode {
    tune_allocator();
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    init_logging(&cli.global);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// glibc's malloc hands freed memory of worker-thread arenas back to the OS as soon as
/// the free top passes a small (dynamic) threshold, and serves blocks from 128 KiB up by
/// fresh `mmap`s: the synthetic generator's per-sample fields (hundreds of KiB each) were
/// page-faulted and zeroed again for every sample, 10 % of its CPU time in the kernel.
/// Blocks below 32 MiB now come from the arenas, which keep up to 64 MiB free; peak memory
/// is unchanged (measured: `data synth --bench` at 224² and 1000×900).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it runs before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// Help and version go to stdout with exit 0; any other clap error is printed as one line
/// (plus a pointer to `--help`) with exit code 2.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::from(2)
        }
        _ => {
            // The message is the first paragraph (clap puts missing argument names on
            // the following lines), joined into one line.
            let text = err.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty())
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            let message = if message.is_empty() {
                "invalid usage"
            } else {
                message
            };
            eprintln!("error: {message} (see --help)");
            ExitCode::from(2)
        }
    }
}

/// A panic is a bug in insar-mm, never a user error: say so on one line instead of dumping
/// a backtrace (set RUST_BACKTRACE=1 to get one).
fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("internal error (a bug in insar-mm, please report it): {msg}{location}");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Each `train` command's `--preset` takes its own names, and a name of another command
    /// is a usage error that lists the valid ones.
    #[test]
    fn each_train_command_has_its_own_presets() {
        use clap::Parser;
        let parse = |args: &[&str]| Cli::try_parse_from([&["insar-mm", "train"], args].concat());
        for (command, valid, foreign) in [
            ("classify", "resnet18", "small"),
            ("segment", "resnet50", "large"),
            ("caption", "base", "resnet18"),
            ("pretrain", "large", "resnet18"),
        ] {
            assert!(
                parse(&[command, "--preset", valid]).is_ok(),
                "{command} {valid}"
            );
            let err = parse(&[command, "--preset", foreign]).unwrap_err();
            use clap::error::ErrorKind::{InvalidValue, ValueValidation};
            assert!(
                matches!(err.kind(), InvalidValue | ValueValidation),
                "{command}: {err}"
            );
            assert!(err.to_string().contains(valid), "{command}: {err}");
        }
        assert!(parse(&["pretrain", "--preset", "my-preset.toml"]).is_ok());
    }
}
