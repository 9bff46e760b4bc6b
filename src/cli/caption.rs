//! `insar-mm caption --model RUN IMAGE_OR_DIR...`: captions interferogram PNGs with a trained
//! caption run (`insar-mm train caption`).
//!
//! An image is a wrapped-phase preview PNG (`*.geo.diff.png` or `InSAR.png`); its coherence
//! (`*.geo.cc.png` / `Coherence.png` next to it) is read when the model takes a coherence
//! channel. A directory is searched recursively for phase previews. Images are resized to
//! the model's input size as in training.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use insar_mm_models::caption::SearchConfig;

use super::GlobalArgs;
use insar_mm::data::array::{batch_tensor, Image};
use insar_mm::data::frames::InputFormat;
use insar_mm::data::frames::{load_input, InterferogramFiles};
use insar_mm::data::resample::resize_area;
use insar_mm::train::caption::{
    caption_parts, evaluate_captions, load_caption_run, open_caption_dataset, CaptionSource,
    LoadedCaptionRun,
};
use insar_mm::train::hub::{resolve_model, RunFiles};

#[derive(Debug, Args)]
pub struct CaptionArgs {
    /// Caption run directory (`insar-mm train caption --out RUN`),
    /// or a Hugging Face Hub id `owner/name[@revision]` (fetched into the HF cache; cache only
    /// with HF_HUB_OFFLINE=1).
    #[arg(long, value_name = "RUN")]
    pub model: PathBuf,
    /// Phase preview PNGs (`*.geo.diff.png`, `InSAR.png`) or folders holding them.
    #[arg(value_name = "IMAGE_OR_DIR", required = true)]
    pub inputs: Vec<PathBuf>,
    /// Beam width (1 = greedy).
    #[arg(long, default_value_t = 3)]
    pub beam: usize,
    /// Length-normalisation exponent of beam search.
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f64,
    /// Print a JSON array of `{image, caption, score}` instead of `path<TAB>caption` lines.
    #[arg(long)]
    pub json: bool,
}

const PHASE_SUFFIX: &str = ".geo.diff.png";
const COHERENCE_SUFFIX: &str = ".geo.cc.png";

fn is_phase_png(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(PHASE_SUFFIX) || name == "InSAR.png"
}

/// The phase + coherence files of a phase preview PNG.
pub fn files_of(phase: &Path) -> InterferogramFiles {
    let name = phase.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let coherence = if let Some(stem) = name.strip_suffix(PHASE_SUFFIX) {
        Some(phase.with_file_name(format!("{stem}{COHERENCE_SUFFIX}")))
    } else if name == "InSAR.png" {
        Some(phase.with_file_name("Coherence.png"))
    } else {
        None
    };
    InterferogramFiles {
        phase: phase.to_path_buf(),
        coherence: coherence.filter(|c| c.is_file()),
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("{}: cannot list", dir.display()))?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out)?;
        } else if is_phase_png(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// The phase PNGs named by `inputs` (files as given, folders searched recursively).
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let before = out.len();
            collect(p, &mut out)?;
            ensure!(
                out.len() > before,
                "{}: no interferogram (*{PHASE_SUFFIX} or InSAR.png) in this folder",
                p.display()
            );
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{}: no such image or folder", p.display());
        }
    }
    Ok(out)
}

/// The model inputs of the phase PNGs `paths` (with their coherence when `format` takes
/// it), resized to `size × size`; errors name the file.
pub fn load_model_inputs(
    paths: &[PathBuf],
    format: InputFormat,
    size: usize,
    channels: usize,
) -> Result<Vec<Image>> {
    let mut images: Vec<Image> = Vec::with_capacity(paths.len());
    for p in paths {
        let files = files_of(p);
        if format.needs_coherence() && files.coherence.is_none() {
            bail!(
                "{}: the model takes {channels} channels ({}) but no coherence image was found next to it \
                 (expected *{COHERENCE_SUFFIX} or Coherence.png)",
                p.display(),
                format.channel_names().join(", ")
            );
        }
        // Its errors name the PNG already (the phase image or its coherence).
        let input = load_input(&files, format)?;
        let im = input.image;
        ensure!(
            im.channels == channels,
            "{}: {} channels but the model takes {channels}",
            p.display(),
            im.channels
        );
        ensure!(
            im.height >= 16 && im.width >= 16,
            "{}: {}×{} pixels is too small for the model (at least 16×16)",
            p.display(),
            im.height,
            im.width
        );
        images.push(if (im.height, im.width) == (size, size) {
            im
        } else {
            resize_area(&im, size, size)?
        });
    }
    Ok(images)
}

pub fn run(args: CaptionArgs, global: &GlobalArgs) -> Result<()> {
    ensure!(args.beam >= 1, "--beam must be at least 1");
    ensure!(
        args.beam <= 64,
        "--beam {} is too wide (at most 64)",
        args.beam
    );
    let device = insar_mm::device::open(global.device)?;
    let LoadedCaptionRun {
        cfg,
        tokenizer,
        model,
    } = load_caption_run(
        &resolve_model(&args.model, &RunFiles::CAPTION, global.show_progress())?,
        &device,
    )?;
    let arch = cfg.model()?.clone();
    let format = cfg.data.input_format;
    let size = cfg.data.image_size;
    let channels = arch.encoder.in_channels;
    let paths = expand_inputs(&args.inputs)?;
    let images = load_model_inputs(&paths, format, size, channels)?;
    let search = SearchConfig {
        beam_width: args.beam,
        max_new_tokens: cfg.data.max_len - 1,
        length_penalty: args.length_penalty,
    };
    let mut results = Vec::with_capacity(paths.len());
    let refs: Vec<&Image> = images.iter().collect();
    let mut k = 0;
    for chunk in refs.chunks(16) {
        let x = batch_tensor(chunk, &device)?;
        for hyps in model.generate(&x, &search)? {
            let best = hyps.first().context("decoding returned no hypothesis")?;
            let caption = tokenizer.decode(&best.tokens)?;
            results.push((paths[k].clone(), caption, best.score));
            k += 1;
        }
    }
    if args.json {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|(p, c, s)| serde_json::json!({"image": p.display().to_string(), "caption": c, "score": s}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (p, c, _) in &results {
            println!("{}\t{c}", p.display());
        }
    }
    Ok(())
}

/// Which part of the split `eval caption` scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    Train,
    Val,
    Test,
}

#[derive(Debug, Args)]
pub struct EvalCaptionArgs {
    /// Caption run directory (`insar-mm train caption --out RUN`),
    /// or a Hugging Face Hub id `owner/name[@revision]` (fetched into the HF cache; cache only
    /// with HF_HUB_OFFLINE=1).
    #[arg(long, value_name = "RUN")]
    pub model: PathBuf,
    /// Dataset directory. Default (when neither --data nor --annotations is given): the
    /// run's own data (`--data`, `--annotations`, else the built-in synthetic dataset of the
    /// run's seed).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Real annotations (directory, .tar.gz or .zip) whose captions are the references; the
    /// images are --data's (matched by uniqueID) or rendered to match them (cached), as in
    /// `train caption --annotations`.
    #[arg(long, value_name = "PATH")]
    pub annotations: Option<PathBuf>,
    /// Seeded class-stratified subset of the annotations [default: the run's
    /// `data.annotation_limit` when --annotations is the run's, else all].
    #[arg(long, value_name = "N")]
    pub annotation_limit: Option<usize>,
    /// Split part to score (the dataset's `split.json`, else the frame split of the run's
    /// seed, as in training).
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    pub split: SplitArg,
    /// Beam width (1 = greedy).
    #[arg(long, default_value_t = 1)]
    pub beam: usize,
    /// Length-normalisation exponent of beam search.
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f64,
    /// Write the model's captions as COCO results JSON ([{"image_id", "caption"}]).
    #[arg(long, value_name = "RES.json")]
    pub out: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `insar-mm eval caption`: the model's BLEU-1..4 / ROUGE-L / CIDEr-D and fact scores
/// (`insar_mm_eval::captions::fact_metrics`) on a split part, with the most-frequent-caption
/// and nearest-neighbour baselines on the same images.
pub fn run_eval(args: EvalCaptionArgs, global: &GlobalArgs) -> Result<()> {
    ensure!(args.beam >= 1, "--beam must be at least 1");
    ensure!(
        args.beam <= 64,
        "--beam {} is too wide (at most 64)",
        args.beam
    );
    let device = insar_mm::device::open(global.device)?;
    let loaded = load_caption_run(
        &resolve_model(&args.model, &RunFiles::CAPTION, global.show_progress())?,
        &device,
    )?;
    let cfg = &loaded.cfg;
    let (data_dir, annotations) = if args.data.is_some() || args.annotations.is_some() {
        (args.data.clone(), args.annotations.clone())
    } else {
        (cfg.data.dir.clone(), cfg.data.annotations.clone())
    };
    let limit = match (&annotations, args.annotation_limit) {
        (_, Some(n)) => n,
        (Some(a), None) if cfg.data.annotations.as_ref() == Some(a) => cfg.data.annotation_limit,
        _ => 0,
    };
    let (ds, source) = open_caption_dataset(
        data_dir.as_deref(),
        annotations.as_deref(),
        limit,
        cfg.seed,
        &|len, what| insar_mm::progress::bar(len, what, global.show_progress()),
    )?;
    let dir = ds.root.clone();
    let format: InputFormat = cfg.data.input_format;
    let data = caption_parts(&ds, format, cfg.data.image_size, cfg.seed)?;
    let part = match args.split {
        SplitArg::Train => &data.train,
        SplitArg::Val => &data.val,
        SplitArg::Test => &data.test,
    };
    let split = format!("{:?}", args.split).to_lowercase();
    ensure!(
        !part.is_empty(),
        "--data {}: the {split} split has no interferogram with a caption",
        dir.display()
    );
    let search = SearchConfig {
        beam_width: args.beam,
        max_new_tokens: cfg.data.max_len - 1,
        length_penalty: args.length_penalty,
    };
    let ev = evaluate_captions(&loaded, &data.train, part, &search, &device)?;
    if let Some(out) = &args.out {
        let results: Vec<serde_json::Value> = part
            .ids
            .iter()
            .zip(&ev.captions)
            .map(|(id, c)| serde_json::json!({"image_id": id, "caption": c}))
            .collect();
        insar_mm::data::atomic::write_atomic(
            out,
            serde_json::to_string_pretty(&results)?.as_bytes(),
        )
        .with_context(|| format!("--out {}", out.display()))?;
    }
    let with_facts = |s: &insar_mm_eval::captions::CaptionScores,
                      f: &insar_mm_eval::captions::FactScores| {
        let mut v = s.to_json();
        v["facts"] = f.to_json();
        v
    };
    if args.json {
        let v = serde_json::json!({
            "data": dir.display().to_string(),
            "source": source,
            "split": split,
            "images": part.len(),
            "beam": args.beam,
            "model": with_facts(&ev.model, &ev.model_facts),
            "baselines": {
                "most_frequent": with_facts(&ev.most_frequent, &ev.most_frequent_facts),
                "nearest_neighbour": with_facts(&ev.nearest_neighbour, &ev.nearest_neighbour_facts),
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{split} split of {} ({} images), beam {}:",
            dir.display(),
            part.len(),
            args.beam
        );
        if !matches!(
            source,
            CaptionSource::Builtin { .. } | CaptionSource::Data { .. }
        ) {
            println!("  captions: {source}");
        }
        println!(
            "  {:<30} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
            "", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"
        );
        for (name, s) in [
            ("model", &ev.model),
            ("most frequent train caption", &ev.most_frequent),
            ("nearest neighbour (encoder)", &ev.nearest_neighbour),
        ] {
            println!(
                "  {name:<30} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4}",
                s.bleu1, s.bleu2, s.bleu3, s.bleu4, s.rouge_l, s.cider
            );
        }
        // The facts the captions state (parsed from the text), against the references'.
        println!(
            "  {:<30} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6}",
            "", "def-F1", "fact-F1", "type", "group", "intens.", "loc", "distinct", "vocab"
        );
        let acc = |a: &insar_mm_eval::captions::fact_metrics::SubsetAccuracy| {
            a.accuracy.map_or("-".to_string(), |x| format!("{x:.4}"))
        };
        for (name, f) in [
            ("model", &ev.model_facts),
            ("most frequent train caption", &ev.most_frequent_facts),
            ("nearest neighbour (encoder)", &ev.nearest_neighbour_facts),
        ] {
            println!(
                "  {name:<30} {:>7.4} {:>7.4} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6}",
                f.deformation.f1,
                f.fact_f1,
                acc(&f.type_accuracy),
                acc(&f.group_accuracy),
                acc(&f.intensity_accuracy),
                acc(&f.location_overlap),
                f.distinct_captions,
                f.vocabulary
            );
        }
        println!(
            "  (def-F1: deformation presence; fact-F1: macro F1 over the facts of the references; type / group / intensity / location (cells overlap) accuracy where both say deformation)"
        );
    }
    Ok(())
}
