//! `insar-mm data ...`: annotations, frames, patches, splits, statistics.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::{Subcommand, ValueEnum};

use super::GlobalArgs;
use insar_mm::data::annotation::Date;
use insar_mm::data::dataset::{self, DatasetDir};
use insar_mm::data::loader::{load_annotations, AnnotationSet, LoadOptions};
use insar_mm::data::patches::{self, extract_patches, PatchOptions};
use insar_mm::data::split::{frame_split, temporal_split, Part, Split};
use insar_mm::data::stats::{format_counts, DatasetStats};
use insar_mm::synth::captions::CaptionStyle;
use insar_mm::synth::scene::{ClassProportions, SceneConfig, StyleChoice};

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
        /// Patch side in pixels (16 to 16384).
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// Skip interferograms with missing or unreadable images (listed) instead of stopping.
        #[arg(long)]
        skip_bad: bool,
        /// Write into a non-empty --out that is not a patch folder of this command (a
        /// previous patch folder, with patches.json, is always replaced).
        #[arg(long)]
        force: bool,
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
    /// Generate synthetic interferograms with annotations (Hephaestus layout).
    Synth(SynthArgs),
    /// Draw a contact sheet of dataset frames: image patch, mask outline, caption.
    Gallery {
        /// Dataset directories (annotations/ + raw frames); frames are taken from each in turn.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
        /// Number of patches.
        #[arg(long, default_value_t = 48)]
        count: usize,
        /// Patches per row.
        #[arg(long, default_value_t = 8)]
        columns: usize,
        /// Patch side in pixels (a crop around the first polygon, else the frame centre).
        #[arg(long, default_value_t = 224)]
        patch: usize,
    },
}

/// Arguments of `data synth`.
#[derive(Debug, Clone, clap::Args)]
pub struct SynthArgs {
    /// Output dataset directory (`annotations/`, `<frameID>/interferograms/...`).
    #[arg(long, required_unless_present = "bench")]
    pub out: Option<PathBuf>,
    /// Number of frames (ignored with --from-annotations: one per annotation).
    #[arg(long, default_value_t = 100)]
    pub frames: usize,
    /// Frame size WIDTHxHEIGHT in pixels.
    #[arg(long, default_value = "512x512", value_parser = parse_size)]
    pub size: (usize, usize),
    /// Ground pixel spacing in metres (Hephaestus previews: ≈ 370).
    #[arg(long, default_value_t = 370.0)]
    pub pixel_m: f64,
    /// Colouring of the phase preview: licsar2020 (RdYlBu_r), gamma (rainbow × amplitude),
    /// or mixed (by date: pairs ending after 2020-10-01 in the licsar2020 style).
    #[arg(long, value_enum, default_value_t = StyleChoice::Mixed)]
    pub style: StyleChoice,
    /// Render one frame per real annotation (a directory, .tar.gz or .zip of annotation
    /// JSON files) that matches its labels and flags, keeping its real caption.
    #[arg(long)]
    pub from_annotations: Option<PathBuf>,
    /// Class weights, e.g. `none=0.5,mogi=0.12,dyke=0.09,sill=0.12,spheroid=0.06,earthquake=0.06,unidentified=0.05`
    /// (classes not named keep these defaults).
    #[arg(long, value_parser = ClassProportions::parse)]
    pub classes: Option<ClassProportions>,
    /// Probability that a deformation frame holds 2–4 sources (is_crowd).
    #[arg(long, default_value_t = 0.18)]
    pub crowd_rate: f64,
    /// Scale of the atmospheric screens (0 = none).
    #[arg(long, default_value_t = 1.0)]
    pub atmosphere: f64,
    /// Scale of the orbital ramps (0 = none).
    #[arg(long, default_value_t = 1.0)]
    pub orbital: f64,
    /// Scale of decorrelation / phase noise (0 = perfectly coherent land).
    #[arg(long, default_value_t = 1.0)]
    pub decorrelation: f64,
    /// Switch every nuisance signal off (clean deformation on coherent land).
    #[arg(long)]
    pub no_nuisance: bool,
    /// Also write the float wrapped phase as `<p>_<s>.geo.diff.npy` (NaN no-data).
    #[arg(long)]
    pub float_phase: bool,
    /// Captions without the typos and stray spaces of the real ones.
    #[arg(long)]
    pub clean_captions: bool,
    /// Write into an output directory that already holds annotations.
    #[arg(long)]
    pub force: bool,
    /// With --from-annotations: skip malformed annotation files instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Measure throughput instead of writing: render --frames samples in memory (PNG
    /// encoding included) and print samples/s.
    #[arg(long)]
    pub bench: bool,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?}: expected WIDTHxHEIGHT, e.g. 512x512"))?;
    let w: usize = w.trim().parse().map_err(|e| format!("{s:?}: width: {e}"))?;
    let h: usize = h
        .trim()
        .parse()
        .map_err(|e| format!("{s:?}: height: {e}"))?;
    if !(16..=8192).contains(&w) || !(16..=8192).contains(&h) {
        return Err(format!("{s:?}: width and height must lie in 16..=8192"));
    }
    Ok((w, h))
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
            force,
        } => patches(&raw, &annotations, &out, size, skip_bad, force, global),
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
        DataCommand::Synth(args) => synth(&args, global),
        DataCommand::Gallery {
            dirs,
            out,
            count,
            columns,
            patch,
        } => gallery(&dirs, &out, count, columns, patch),
    }
}

fn synth_config(args: &SynthArgs) -> Result<SceneConfig> {
    let mut c = SceneConfig {
        width: args.size.0,
        height: args.size.1,
        pixel_m: args.pixel_m,
        style: args.style,
        crowd_rate: args.crowd_rate,
        ..SceneConfig::default()
    };
    if let Some(classes) = args.classes {
        c.classes = classes;
    }
    if args.no_nuisance {
        c.nuisance = insar_mm::synth::scene::NuisanceStrengths::off();
    } else {
        c.nuisance.atmosphere = args.atmosphere;
        c.nuisance.orbital = args.orbital;
        c.nuisance.decorrelation = args.decorrelation;
    }
    c.check()
        .map_err(|e| anyhow::anyhow!("invalid synth options: {e}"))?;
    Ok(c)
}

fn synth(args: &SynthArgs, global: &GlobalArgs) -> Result<()> {
    use insar_mm::synth::generate::{generate_dataset, generate_from_annotations, DatasetOptions};
    let config = synth_config(args)?;
    let caption_style = if args.clean_captions {
        CaptionStyle::clean()
    } else {
        CaptionStyle::default()
    };
    if args.bench {
        return synth_bench(&config, args.frames, global.seed, caption_style);
    }
    let out = args.out.as_deref().context("--out is required")?;
    let ann_dir = out.join(dataset::ANNOTATIONS);
    if !args.force && ann_dir.is_dir() {
        let has_json = std::fs::read_dir(&ann_dir)
            .with_context(|| format!("{}: cannot list", ann_dir.display()))?
            .filter_map(|e| e.ok())
            .any(|e| e.path().extension().is_some_and(|x| x == "json"));
        if has_json {
            bail!(
                "{}: already holds annotations; choose another --out or pass --force",
                ann_dir.display()
            );
        }
    }
    let options = DatasetOptions {
        seed: global.seed,
        float_phase: args.float_phase,
        caption_style,
    };
    let report = match &args.from_annotations {
        Some(path) => {
            let set = load(path, args.skip_bad)?;
            let bar = insar_mm::progress::bar(set.len() as u64, "frames", global.show_progress());
            let r = generate_from_annotations(&config, &set.annotations, out, &options, &|| {
                bar.inc(1)
            })?;
            bar.finish_and_clear();
            r
        }
        None => {
            if args.frames == 0 {
                bail!("--frames must be positive");
            }
            let bar = insar_mm::progress::bar(args.frames as u64, "frames", global.show_progress());
            let r = generate_dataset(&config, args.frames, out, &options, &|| bar.inc(1))?;
            bar.finish_and_clear();
            r
        }
    };
    println!(
        "{} frames ({} with deformation) in {:.1} s ({:.1} frames/s) written to {}",
        report.frames,
        report.deformation,
        report.seconds,
        report.frames as f64 / report.seconds.max(1e-9),
        out.display()
    );
    println!(
        "activity types: {}; intensities: {}",
        format_counts(&report.activity_types, ": "),
        format_counts(&report.intensities, ": ")
    );
    if args.from_annotations.is_some() {
        println!(
            "matched the real labels in {} of {} frames and every flag in {}",
            report.labels_matched, report.frames, report.flags_matched
        );
    }
    Ok(())
}

fn synth_bench(config: &SceneConfig, frames: usize, seed: u64, style: CaptionStyle) -> Result<()> {
    use insar_mm::synth::generate::{render_scene, Overrides};
    use rayon::prelude::*;
    if frames == 0 {
        bail!("--frames must be positive");
    }
    let start = Instant::now();
    let bytes: usize = (0..frames)
        .into_par_iter()
        .map(|i| -> Result<usize> {
            let r = render_scene(&config.scene(seed, i as u64), style, &Overrides::default())?;
            let (a, b) = r.encode_pngs()?;
            Ok(a.len() + b.len() + r.annotation.to_json_pretty().len())
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{frames} samples of {}x{} at {} m/px in {secs:.2} s: {:.1} samples/s on {} thread(s) ({:.1} MB encoded)",
        config.width,
        config.height,
        config.pixel_m,
        frames as f64 / secs.max(1e-9),
        rayon::current_num_threads(),
        bytes as f64 / 1e6
    );
    Ok(())
}

/// Makes `out` ready for `data patches`: a missing or empty folder is used as is; a previous
/// patch folder (it has `patches.json`, or holds nothing but the patch folders of a run that
/// failed) loses its old patches, so counts and files agree; any other non-empty folder is
/// refused unless `force`.
fn prepare_patch_folder(out: &Path, force: bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let layout = [
        patches::LABELED_DIR,
        patches::MASKS_DIR,
        patches::LABELS_DIR,
        patches::COHERENCE_DIR,
    ];
    let only_patch_folders = names.iter().all(|n| layout.contains(&n.as_str()));
    if out.join(patches::MANIFEST).is_file() || only_patch_folders {
        log::debug!("{}: replacing the patches of a previous run", out.display());
        for d in [
            patches::LABELED_DIR,
            patches::MASKS_DIR,
            patches::LABELS_DIR,
            patches::COHERENCE_DIR,
        ] {
            let path = out.join(d);
            if path.is_dir() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("{}: cannot remove", path.display()))?;
            }
        }
        let manifest = out.join(patches::MANIFEST);
        if manifest.is_file() {
            std::fs::remove_file(&manifest)
                .with_context(|| format!("{}: cannot remove", manifest.display()))?;
        }
        return Ok(());
    }
    ensure!(
        force,
        "{}: not empty and not a patch folder (no {}); choose an empty --out or pass --force \
         to write into it",
        out.display(),
        patches::MANIFEST
    );
    Ok(())
}

fn gallery(dirs: &[PathBuf], out: &Path, count: usize, columns: usize, patch: usize) -> Result<()> {
    if count == 0 || columns == 0 || patch < 32 {
        bail!("--count and --columns must be positive and --patch at least 32");
    }
    let mut sets = Vec::new();
    for d in dirs {
        sets.push(DatasetDir::open(d, LoadOptions::default())?);
    }
    let mut picks = Vec::new();
    let mut k = 0;
    while picks.len() < count {
        let mut any = false;
        for ds in &sets {
            if let Some(a) = ds.annotations.annotations.get(k) {
                picks.push((ds, a));
                any = true;
                if picks.len() == count {
                    break;
                }
            }
        }
        if !any {
            break;
        }
        k += 1;
    }
    let mut tiles = Vec::with_capacity(picks.len());
    for (ds, a) in picks {
        let files = ds.files(a)?;
        let png = insar_mm::data::png::Png::read(&files.phase)?;
        tiles.push(insar_mm::synth::gallery::Tile::from_frame(&png, a, patch));
    }
    let sheet = insar_mm::synth::gallery::contact_sheet(&tiles, columns)?;
    sheet.write(out)?;
    println!("{} patches drawn to {}", tiles.len(), out.display());
    Ok(())
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

/// Smallest and largest `data patches --size`.
pub const PATCH_SIZES: std::ops::RangeInclusive<usize> = 16..=16384;

fn patches(
    raw: &Path,
    annotations: &Path,
    out: &Path,
    size: usize,
    skip_bad: bool,
    force: bool,
    global: &GlobalArgs,
) -> Result<()> {
    ensure!(
        PATCH_SIZES.contains(&size),
        "--size {size} must be in {}..={} pixels",
        PATCH_SIZES.start(),
        PATCH_SIZES.end()
    );
    let set = load(annotations, skip_bad)?;
    ensure!(
        raw.is_dir(),
        "{}: raw frame directory not found",
        raw.display()
    );
    prepare_patch_folder(out, force)?;
    if size < 64 {
        log::warn!("--size {size}: patches this small give many files per frame");
    }
    let bar = insar_mm::progress::bar(set.len() as u64, "interferograms", global.show_progress());
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
    let bar = insar_mm::progress::bar(
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
