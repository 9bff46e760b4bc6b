//! `insar-mm data ...`: annotations, frames, patches, splits, statistics.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};

use super::GlobalArgs;
use crate::data::annotation::Date;
use crate::data::dataset::{self, DatasetDir};
use crate::data::loader::{load_annotations, AnnotationSet, LoadOptions};
use crate::data::patches::{extract_patches, PatchOptions};
use crate::data::split::{frame_split, temporal_split, Part, Split};
use crate::data::stats::{format_counts, DatasetStats};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Count labels, activity types, intensities, flags, frames, dates and caption statistics.
    Stats {
        /// A dataset directory, a directory of annotation `*.json` files, or a
        /// `.tar.gz`/`.tgz`/`.tar`/`.zip` of them.
        path: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Skip malformed annotation files (listed in the output) instead of stopping.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Cut 224×224 patches (the reference `save_crops` layout, plus coherence crops).
    Patches {
        /// Root of the raw frames: `<frameID>/interferograms/<p>_<s>/<p>_<s>.geo.diff.png`.
        #[arg(long)]
        raw: PathBuf,
        /// Annotations: a dataset or annotation directory, or a `.tar.gz`/`.zip`.
        #[arg(long)]
        annotations: PathBuf,
        /// Output folder (`labeled/`, `masks/`, `cls_labels/`, `coherence/`).
        #[arg(long)]
        out: PathBuf,
        /// Patch side in pixels.
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// Skip interferograms with missing or unreadable images (listed) instead of stopping.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Check a dataset directory: every annotation's images present, readable, consistent.
    Check {
        /// The dataset directory (annotations/ and raw frames).
        dir: PathBuf,
        /// Only check that the files exist (do not decode the PNGs).
        #[arg(long)]
        no_decode: bool,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Write a train/val/test split (by frame, or by primary date) as JSON.
    Split {
        /// A dataset directory (the split goes to `split.json` inside it), an annotation
        /// directory or an archive.
        path: PathBuf,
        /// Output file (default: `<dataset>/split.json`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// How interferograms are grouped.
        #[arg(long, value_enum, default_value_t = SplitKind::Frame)]
        method: SplitKind,
        /// Target shares of interferograms for train, val and test (summing to 1).
        #[arg(long, value_parser = parse_fractions, default_value = "0.8,0.1,0.1")]
        fractions: [f64; 3],
        /// Frame split: frames pinned to the test part (comma-separated frame IDs).
        #[arg(long, value_delimiter = ',')]
        test_frames: Vec<String>,
        /// Temporal split: first primary date of the val part (YYYYMMDD or YYYY-MM-DD).
        #[arg(long, value_parser = parse_date)]
        val_from: Option<Date>,
        /// Temporal split: first primary date of the test part.
        #[arg(long, value_parser = parse_date)]
        test_from: Option<Date>,
        /// Skip malformed annotation files instead of stopping.
        #[arg(long)]
        skip_bad: bool,
    },
}

/// `--method` of `data split`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitKind {
    /// Whole frames per part (no frame in two parts).
    Frame,
    /// By primary date (train, then val, then test).
    Temporal,
}

fn parse_date(s: &str) -> Result<Date, String> {
    s.parse()
}

fn parse_fractions(s: &str) -> Result<[f64; 3], String> {
    let values: Vec<f64> = s
        .split(',')
        .map(|v| v.trim().parse::<f64>().map_err(|e| format!("{v:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let Ok(f) = <[f64; 3]>::try_from(values) else {
        return Err("expected three comma-separated values: train,val,test".into());
    };
    if f.iter().any(|v| !(0.0..=1.0).contains(v)) || (f.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
        return Err(format!("{f:?} must lie in [0, 1] and sum to 1"));
    }
    Ok(f)
}

pub fn run(cmd: DataCommand, global: &GlobalArgs) -> Result<()> {
    match cmd {
        DataCommand::Stats {
            path,
            json,
            skip_bad,
        } => stats(&path, json, skip_bad),
        DataCommand::Patches {
            raw,
            annotations,
            out,
            size,
            skip_bad,
        } => patches(&raw, &annotations, &out, size, skip_bad, global),
        DataCommand::Check {
            dir,
            no_decode,
            json,
        } => check(&dir, !no_decode, json, global),
        DataCommand::Split {
            path,
            out,
            method,
            fractions,
            test_frames,
            val_from,
            test_from,
            skip_bad,
        } => split(
            &path,
            out,
            method,
            fractions,
            &test_frames,
            (val_from, test_from),
            skip_bad,
            global,
        ),
    }
}

fn load(path: &Path, skip_bad: bool) -> Result<AnnotationSet> {
    let set = load_annotations(path, LoadOptions { skip_bad })?;
    if !set.bad.is_empty() {
        log::warn!("skipped {} malformed annotation file(s)", set.bad.len());
    }
    Ok(set)
}

fn stats(path: &Path, json: bool, skip_bad: bool) -> Result<()> {
    let start = Instant::now();
    let set = load(path, skip_bad)?;
    let elapsed = start.elapsed().as_secs_f64();
    log::debug!(
        "loaded {} annotations in {elapsed:.3} s ({:.0} files/s)",
        set.len(),
        (set.len() + set.bad.len()) as f64 / elapsed.max(1e-9)
    );
    let stats = DatasetStats::compute(&set);
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", stats.to_table());
    }
    Ok(())
}

fn patches(
    raw: &Path,
    annotations: &Path,
    out: &Path,
    size: usize,
    skip_bad: bool,
    global: &GlobalArgs,
) -> Result<()> {
    if size == 0 {
        bail!("--size must be positive");
    }
    let set = load(annotations, skip_bad)?;
    let bar = super::progress::bar(set.len() as u64, "interferograms", global.show_progress());
    let start = Instant::now();
    let report = extract_patches(
        &set,
        raw,
        out,
        &PatchOptions {
            size,
            seed: global.seed,
            skip_bad,
        },
        &bar,
    )?;
    let secs = start.elapsed().as_secs_f64();
    for w in report.warnings.iter().take(20) {
        log::warn!("{w}");
    }
    if report.warnings.len() > 20 {
        log::warn!(
            "… {} more warnings in {}",
            report.warnings.len() - 20,
            out.join("patches.json").display()
        );
    }
    for s in &report.skipped {
        log::warn!("skipped {}: {}", s.file, s.error);
    }
    println!(
        "{} patches ({} around deformation, {} tiles) from {} interferograms in {secs:.1} s ({:.0} patches/s); \
         per class folder: {}; {} skipped; written to {}",
        report.patches(),
        report.deformation_patches,
        report.tiles,
        report.interferograms,
        report.patches() as f64 / secs.max(1e-9),
        format_counts(&report.per_class, ": "),
        report.skipped.len(),
        out.display()
    );
    Ok(())
}

fn check(dir: &Path, decode: bool, json: bool, global: &GlobalArgs) -> Result<()> {
    let ds = DatasetDir::open(dir, LoadOptions::default())?;
    let bar = super::progress::bar(
        ds.annotations.len() as u64,
        "interferograms",
        global.show_progress(),
    );
    let report = ds.check(decode, &bar)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!("problem: {}: {}", p.file, p.error);
        }
        for w in &report.warnings {
            println!("warning: {w}");
        }
        println!(
            "{} of {} annotated interferograms usable; {} problem(s), {} warning(s); \
             {} unannotated interferogram folder(s)",
            report.ok,
            report.annotations,
            report.problems.len(),
            report.warnings.len(),
            report.unannotated_interferograms
        );
        if decode {
            println!(
                "frame sizes: {}; mean valid-pixel share {:.3}",
                format_counts(&report.frame_sizes, ": "),
                report.mean_valid_fraction
            );
        }
    }
    if !report.problems.is_empty() {
        bail!(
            "{}: {} of {} annotated interferograms have problems (listed above)",
            dir.display(),
            report.problems.len(),
            report.annotations
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn split(
    path: &Path,
    out: Option<PathBuf>,
    method: SplitKind,
    fractions: [f64; 3],
    test_frames: &[String],
    (val_from, test_from): (Option<Date>, Option<Date>),
    skip_bad: bool,
    global: &GlobalArgs,
) -> Result<()> {
    let is_dataset = path.join(dataset::ANNOTATIONS).is_dir()
        || ["annotations.tar.gz", "annotations.tgz", "annotations.zip"]
            .iter()
            .any(|n| path.join(n).is_file());
    let out = match out {
        Some(out) => out,
        None if is_dataset => path.join(dataset::SPLIT_FILE),
        None => bail!(
            "--out is required when PATH ({}) is not a dataset directory",
            path.display()
        ),
    };
    let set = if is_dataset {
        DatasetDir::open(path, LoadOptions { skip_bad })?.annotations
    } else {
        load(path, skip_bad)?
    };
    let split = match method {
        SplitKind::Frame => {
            if val_from.is_some() || test_from.is_some() {
                bail!("--val-from/--test-from apply to --method temporal");
            }
            frame_split(&set.annotations, global.seed, fractions, test_frames)?
        }
        SplitKind::Temporal => {
            if !test_frames.is_empty() {
                bail!("--test-frames applies to --method frame");
            }
            temporal_split(&set.annotations, fractions, val_from, test_from)?
        }
    };
    split
        .write(&out)
        .with_context(|| format!("writing the split to {}", out.display()))?;
    print_split(&split, &out);
    Ok(())
}

fn print_split(split: &Split, out: &Path) {
    println!(
        "{:<6} {:>15} {:>12} {:>7}  activity types",
        "part", "interferograms", "deformation", "frames"
    );
    for part in Part::ALL {
        let s = &split.summary[&part];
        println!(
            "{:<6} {:>15} {:>12} {:>7}  {}",
            part.as_str(),
            s.interferograms,
            s.deformation,
            s.frames,
            format_counts(&s.activity_types, " ")
        );
    }
    for u in &split.unrepresented {
        let parts: Vec<&str> = u.missing_from.iter().map(|p| p.as_str()).collect();
        println!(
            "note: {} occurs in {} frame(s) only and is missing from {}",
            u.class,
            u.frames,
            parts.join(", ")
        );
    }
    if split.straddling > 0 {
        println!(
            "note: {} interferogram(s) have a secondary date in a later part's period",
            split.straddling
        );
    }
    println!("split written to {}", out.display());
}
