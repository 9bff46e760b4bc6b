//! `insar-mm predict classify|segment --model RUN INPUT... [--out DIR] [--json]`: applies a
//! trained head run to interferogram PNGs — single patches, folders and whole frames.
//!
//! An input is a wrapped-phase preview PNG (`*.geo.diff.png`, `InSAR.png`, or a patch PNG);
//! its coherence (`*.geo.cc.png` / `Coherence.png` beside it, or `coherence/<cls>/<name>.png`
//! of a patch folder) is read when the model takes a coherence channel. A folder is searched
//! recursively for phase previews (else for patch PNGs).
//!
//! Every image is cut into windows of `--window` pixels (default: the median side of the
//! run's training frames, `data.source_size`, so a window covers the ground extent the model
//! was trained on) overlapping by `--overlap`; each window is resized to the model input and
//! the outputs are blended back at frame resolution (`insar_mm_models::heads::window`). An
//! image of exactly the window size is one window — the training-time view.
//!
//! - `classify`: per-label scores of the frame = the maximum over its windows; with `--out`,
//!   `<name>.deformation.png` (where the run has a mask head, the default, its deformation
//!   probability per C5 cell, upsampled; else the Deformation score; blended over windows,
//!   gray 0–255) and
//!   `<name>.overlay.png`, plus `predictions.json`.
//! - `segment`: per-pixel class probabilities → `<name>.mask.png` (gray, value = class id
//!   0–6; no-data pixels 0), `<name>.prob.png` (deformation probability 1 − p(background),
//!   gray 0–255) and `<name>.overlay.png` (classes coloured over the phase), plus
//!   `predictions.json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use clap::{Args, Subcommand};
use insar_mm_models::heads::{predict_frame_map, predict_frame_windows, resize_bilinear};
use serde_json::{json, Value};

use super::caption::files_of;
use super::GlobalArgs;
use insar_mm::data::atomic::write_atomic;
use insar_mm::data::frames::{load_input, FrameInput, InputFormat, InterferogramFiles};
use insar_mm::data::png::{write_png, PngColor};
use insar_mm::data::resample::area_matrix;
use insar_mm::data::sample::{LABEL_NAMES, MASK_CLASS_NAMES, NUM_MASK_CLASSES};
use insar_mm::train::classify::ClassifyConfig;
use insar_mm::train::heads::recipe::HeadConfig;
use insar_mm::train::heads::HeadData;
use insar_mm::train::hub::{resolve_model, RunFiles};
use insar_mm::train::segment::SegmentConfig;

#[derive(Debug, Subcommand)]
pub enum PredictCommand {
    /// The 10 Hephaestus labels of each image (a `train classify` run).
    Classify(PredictArgs),
    /// Per-pixel classes of each image: PNG mask, probability map and overlay (a `train
    /// segment` run).
    Segment(PredictArgs),
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Run directory of `insar-mm train classify|segment`, or a Hugging Face Hub id
    /// `owner/name[@revision]` (fetched into the HF cache; cache only with HF_HUB_OFFLINE=1).
    #[arg(long, value_name = "RUN")]
    pub model: PathBuf,
    /// Phase preview PNGs (`*.geo.diff.png`, `InSAR.png`, patch PNGs) or folders holding them.
    #[arg(value_name = "INPUT", required = true)]
    pub inputs: Vec<PathBuf>,
    /// Folder for the output images and `predictions.json`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print JSON instead of one line per image.
    #[arg(long)]
    pub json: bool,
    /// Window side in image pixels [default: the run's data.source_size, else its
    /// data.image_size].
    #[arg(long, value_name = "PX")]
    pub window: Option<usize>,
    /// Overlap of neighbouring windows in pixels [default: a quarter of the window].
    #[arg(long, value_name = "PX")]
    pub overlap: Option<usize>,
    /// Windows per forward pass.
    #[arg(long, value_name = "B", default_value_t = 16)]
    pub batch_size: usize,
    /// One decision threshold for every label of `classify` [default: the run's per-label
    /// thresholds tuned on its val split, else its `threshold`].
    #[arg(long, value_name = "T")]
    pub threshold: Option<f64>,
    /// Average each window's prediction over these views: none, flips or dihedral (8
    /// symmetries of the square) [default: the run's `test_time_augment`].
    #[arg(long, value_name = "VIEWS")]
    pub tta: Option<insar_mm_models::heads::TestTimeAugment>,
}

const PHASE_SUFFIX: &str = ".geo.diff.png";
const COHERENCE_SUFFIX: &str = ".geo.cc.png";
const LABELED_DIR: &str = "labeled";
const COHERENCE_DIR: &str = "coherence";

fn is_phase_png(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(PHASE_SUFFIX) || name == "InSAR.png"
}

/// A PNG that may be a patch: any `.png` except coherence images and our own outputs.
fn is_patch_png(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".png")
        && !lower.ends_with(COHERENCE_SUFFIX)
        && name != "Coherence.png"
        && ![".mask.png", ".prob.png", ".overlay.png", ".deformation.png"]
            .iter()
            .any(|s| lower.ends_with(s))
        && !path
            .components()
            .any(|c| c.as_os_str() == COHERENCE_DIR || c.as_os_str() == "masks")
}

fn collect(dir: &Path, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("{}: cannot list", dir.display()))?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, keep, out)?;
        } else if keep(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// The images named by `inputs`: files as given; folders searched recursively for phase
/// previews, else for patch PNGs.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut found = Vec::new();
            collect(p, &is_phase_png, &mut found)?;
            if found.is_empty() {
                collect(p, &is_patch_png, &mut found)?;
            }
            ensure!(
                !found.is_empty(),
                "{}: no interferogram PNG (*{PHASE_SUFFIX}, InSAR.png or patches) in this folder",
                p.display()
            );
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{}: no such image or folder", p.display());
        }
    }
    Ok(out)
}

/// The phase + coherence files of an input PNG (LiCSAR names, Hephaestus names, or the
/// `labeled/` ↔ `coherence/` layout of a patch folder).
pub fn input_files(phase: &Path) -> InterferogramFiles {
    let mut files = files_of(phase);
    if files.coherence.is_none() {
        let parts: Vec<_> = phase.components().collect();
        if let Some(k) = parts.iter().rposition(|c| c.as_os_str() == LABELED_DIR) {
            let mut p = PathBuf::new();
            for (i, c) in parts.iter().enumerate() {
                p.push(if i == k {
                    COHERENCE_DIR.as_ref()
                } else {
                    c.as_os_str()
                });
            }
            if p.is_file() {
                files.coherence = Some(p);
            }
        }
    }
    files
}

/// Reads one input as the model's channels; errors name the file and the channel count.
pub fn read_input(path: &Path, format: InputFormat, channels: usize) -> Result<FrameInput> {
    let files = input_files(path);
    if format.needs_coherence() && files.coherence.is_none() {
        bail!(
            "{}: the model takes {channels} channels ({}) but the phase image alone gives {}: no coherence \
             image next to it (expected *{COHERENCE_SUFFIX}, Coherence.png or \
             coherence/<cls>/<name>.png)",
            path.display(),
            format.channel_names().join(", "),
            format.channels() - 1
        );
    }
    // Its errors name the PNG already (the phase image or its coherence).
    let input = load_input(&files, format)?;
    ensure!(
        input.image.channels == channels,
        "{}: {} channels but the model takes {channels}",
        path.display(),
        input.image.channels
    );
    Ok(input)
}

/// Window and overlap for a run's `[data]` and the command-line overrides.
pub fn window_of(
    data: &HeadData,
    window: Option<usize>,
    overlap: Option<usize>,
) -> Result<(usize, usize)> {
    let w = window.unwrap_or(data.source_size.unwrap_or(data.image_size));
    ensure!(w >= 16, "--window {w} is too small (at least 16 pixels)");
    ensure!(
        w <= MAX_WINDOW,
        "--window {w} is too large (at most {MAX_WINDOW} pixels)"
    );
    let o = overlap.unwrap_or(w / 4);
    ensure!(o < w, "--overlap {o} must be smaller than the window {w}");
    if let Some(warning) = window_warning(data, w, o) {
        log::warn!("{warning}");
    }
    Ok((w, o))
}

/// The largest `--window`.
pub const MAX_WINDOW: usize = 16384;

/// A warning for a legal but pathological window: a stride under a quarter of the window
/// (every pixel predicted more than 16 times), or a window under a quarter of the training
/// frames' side (the model sees ground 4× more magnified than in training).
pub fn window_warning(data: &HeadData, window: usize, overlap: usize) -> Option<String> {
    let stride = window - overlap;
    let mut notes = Vec::new();
    if 4 * stride < window {
        let per_pixel = (window as f64 / stride as f64).powi(2);
        notes.push(format!(
            "a stride of {stride} pixels predicts every pixel about {per_pixel:.0} times (slow; \
             an overlap of at most half the window is usual)"
        ));
    }
    let trained = data.source_size.unwrap_or(data.image_size);
    if 4 * window < trained {
        notes.push(format!(
            "windows of {window} pixels are much smaller than the {trained}-pixel training \
             frames (the model sees each window magnified)"
        ));
    }
    (!notes.is_empty()).then(|| {
        format!(
            "--window {window} --overlap {overlap}: {}",
            notes.join("; ")
        )
    })
}

/// Errors (naming the file and sizes) when the image is smaller than the window.
fn check_fits(path: &Path, input: &FrameInput, window: usize) -> Result<()> {
    let (h, w) = (input.image.height, input.image.width);
    ensure!(
        h >= window && w >= window,
        "{}: the image is {w}×{h} pixels, smaller than the {window}-pixel window \
         (pass a smaller --window, at least 16)",
        path.display()
    );
    Ok(())
}

/// Runs `f` on windows `(B, C, window, window)` resized to `size` and resizes its per-pixel
/// output back to the window.
fn at_model_size(
    x: &Tensor,
    size: usize,
    f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let y = f(&shrink_to_model(x, size)?)?;
    match y.rank() {
        4 => resize_bilinear(&y, h, w),
        _ => Ok(y),
    }
}

/// Resizes windows `(B, C, h, w)` to `size × size` the way training frames were resized
/// (`LabeledPart`): area averaging when shrinking (as two matrix products), bilinear when
/// growing.
fn shrink_to_model(x: &Tensor, size: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if (h, w) == (size, size) {
        return Ok(x.clone());
    }
    if size > h || size > w {
        return resize_bilinear(x, size, size);
    }
    let dev = x.device();
    let cols = Tensor::from_vec(area_matrix(w, size), (size, w), dev)?.t()?;
    let rows = Tensor::from_vec(area_matrix(h, size), (size, h), dev)?;
    rows.broadcast_matmul(&x.broadcast_matmul(&cols)?)
}

/// Output names: the file stem, made unique with a numeric suffix.
struct Names(BTreeSet<String>);

impl Names {
    fn unique(&mut self, path: &Path) -> String {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("image");
        let stem = name
            .strip_suffix(PHASE_SUFFIX)
            .or_else(|| name.strip_suffix(".png"))
            .or_else(|| name.strip_suffix(".PNG"))
            .unwrap_or(name)
            .to_string();
        let mut candidate = stem.clone();
        let mut k = 1;
        while !self.0.insert(candidate.clone()) {
            k += 1;
            candidate = format!("{stem}_{k}");
        }
        candidate
    }
}

/// RGB colours of the mask classes in overlays (background transparent): red, orange,
/// yellow, magenta, cyan, green (`bench heads` names them in its report).
pub const CLASS_COLORS: [[u8; 3]; NUM_MASK_CLASSES] = [
    [0, 0, 0],
    [230, 25, 75],
    [245, 130, 48],
    [255, 225, 25],
    [240, 50, 230],
    [70, 240, 240],
    [60, 180, 75],
];

/// The phase channel as gray RGB with `color(pixel)` blended in at `alpha(pixel)`.
fn overlay(input: &FrameInput, color: impl Fn(usize) -> ([u8; 3], f32)) -> Vec<u8> {
    let phase = input.image.plane(0);
    let mut out = Vec::with_capacity(phase.len() * 3);
    for (p, &g) in phase.iter().enumerate() {
        let g = (g.clamp(0.0, 1.0) * 255.0).round();
        let (c, a) = color(p);
        for ch in c {
            out.push((g * (1.0 - a) + f32::from(ch) * a).round() as u8);
        }
    }
    out
}

fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

pub fn run(cmd: PredictCommand, global: &GlobalArgs) -> Result<()> {
    match cmd {
        PredictCommand::Classify(a) => classify(a, global),
        PredictCommand::Segment(a) => segment(a, global),
    }
}

fn prepare_out(out: &Option<PathBuf>) -> Result<()> {
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--out {}: cannot create", dir.display()))?;
    }
    Ok(())
}

fn finish(args: &PredictArgs, results: Vec<Value>, lines: Vec<String>) -> Result<()> {
    if let Some(dir) = &args.out {
        let path = dir.join("predictions.json");
        write_atomic(&path, serde_json::to_string_pretty(&results)?.as_bytes())?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(())
}

fn classify(args: PredictArgs, global: &GlobalArgs) -> Result<()> {
    ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    let device: Device = insar_mm::device::open(global.device)?;
    let loaded = insar_mm::train::heads::recipe::load::<ClassifyConfig>(
        &resolve_model(&args.model, &RunFiles::HEAD, global.show_progress())?,
        &device,
    )?;
    let cfg = &loaded.config;
    let arch = cfg.model()?;
    let thresholds = match args.threshold {
        Some(t) => {
            ensure!(t > 0.0 && t < 1.0, "--threshold {t} must be in (0, 1)");
            vec![t; LABEL_NAMES.len()]
        }
        None => cfg.decision_thresholds(),
    };
    let (window, overlap) = window_of(&cfg.data, args.window, args.overlap)?;
    let size = cfg.data.image_size;
    let paths = expand_inputs(&args.inputs)?;
    prepare_out(&args.out)?;
    let mut names = Names(BTreeSet::new());
    let (mut results, mut lines) = (Vec::new(), Vec::new());
    let model = &loaded.model;
    let tta = args.tta.unwrap_or(cfg.test_time_augment);
    for path in &paths {
        let input = read_input(path, cfg.data.input_format, arch.encoder.in_channels)?;
        check_fits(path, &input, window)?;
        let frame = input.image.to_tensor(&device)?;
        let (scores, tiles) =
            predict_frame_windows(&frame, window, overlap, args.batch_size, |x| {
                at_model_size(x, size, |m| tta.scores(m, |v| model.predict(v)))
            })
            .with_context(|| format!("{}", path.display()))?;
        let per_window: Vec<Vec<f32>> = scores.to_vec2()?;
        let frame_scores: Vec<f32> = (0..LABEL_NAMES.len())
            .map(|k| per_window.iter().map(|r| r[k]).fold(f32::MIN, f32::max))
            .collect();
        let predicted: Vec<&str> = LABEL_NAMES
            .iter()
            .zip(&frame_scores)
            .zip(&thresholds)
            .filter(|((_, &s), &t)| f64::from(s) >= t)
            .map(|((n, _), _)| *n)
            .collect();
        let mut v = json!({
            "image": path.display().to_string(),
            "height": input.image.height,
            "width": input.image.width,
            "window": window,
            "test_time_augment": tta,
            "overlap": overlap,
            "windows": tiles.len(),
            "scores": LABEL_NAMES.iter().zip(&frame_scores).map(|(n, s)| (n.to_string(), json!(s))).collect::<serde_json::Map<_, _>>(),
            "labels": predicted,
            "thresholds": LABEL_NAMES.iter().zip(&thresholds).map(|(n, t)| (n.to_string(), json!(t))).collect::<serde_json::Map<_, _>>(),
        });
        if tiles.len() > 1 {
            v["window_scores"] = json!(tiles
                .iter()
                .zip(&per_window)
                .map(|(&(y, x), s)| json!({"y": y, "x": x, "deformation": s[0]}))
                .collect::<Vec<_>>());
        }
        if let Some(dir) = &args.out {
            let name = names.unique(path);
            // Where the run has a mask head (trained on the training masks), its deformation
            // probability per C5 cell, upsampled: an activation map of where the deformation
            // is. Otherwise the Deformation score of each window. Blended over the windows.
            let map = predict_frame_map(&frame, window, overlap, args.batch_size, |x| {
                let (b, _, h, w) = x.dims4()?;
                if model.has_mask_head() {
                    // at_model_size brings the C5 grid back to the window's size.
                    at_model_size(x, size, |m| {
                        match model.forward_with_mask_t(m, false, true)?.1 {
                            Some(mask) => candle_nn::ops::sigmoid(&mask),
                            None => candle_core::bail!("the mask head gave no map"),
                        }
                    })
                } else {
                    let s = at_model_size(x, size, |m| tta.scores(m, |v| model.predict(v)))?;
                    s.narrow(1, 0, 1)?
                        .reshape((b, 1, 1, 1))?
                        .broadcast_as((b, 1, h, w))?
                        .contiguous()
                }
            })?;
            let heat: Vec<f32> = map.flatten_all()?.to_vec1()?;
            let (h, w) = (input.image.height, input.image.width);
            let heat_path = dir.join(format!("{name}.deformation.png"));
            write_png(
                &heat_path,
                w,
                h,
                PngColor::Gray,
                &heat.iter().map(|&p| to_u8(p)).collect::<Vec<_>>(),
            )?;
            let over_path = dir.join(format!("{name}.overlay.png"));
            let rgb = overlay(&input, |p| ([230, 25, 75], 0.5 * heat[p].clamp(0.0, 1.0)));
            write_png(&over_path, w, h, PngColor::Rgb, &rgb)?;
            v["deformation_map"] = json!(heat_path.display().to_string());
            v["deformation_map_kind"] = json!(if model.has_mask_head() {
                "mask-head"
            } else {
                "window-score"
            });
            v["overlay"] = json!(over_path.display().to_string());
        }
        lines.push(format!(
            "{}\t{}\t{}",
            path.display(),
            if predicted.is_empty() {
                "Non_Deformation".to_string()
            } else {
                predicted.join(",")
            },
            LABEL_NAMES
                .iter()
                .zip(&frame_scores)
                .map(|(n, s)| format!("{n}={s:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        results.push(v);
    }
    finish(&args, results, lines)
}

fn segment(args: PredictArgs, global: &GlobalArgs) -> Result<()> {
    ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    let device: Device = insar_mm::device::open(global.device)?;
    let loaded = insar_mm::train::heads::recipe::load::<SegmentConfig>(
        &resolve_model(&args.model, &RunFiles::HEAD, global.show_progress())?,
        &device,
    )?;
    let cfg = &loaded.config;
    let arch = cfg.model()?;
    let (window, overlap) = window_of(&cfg.data, args.window, args.overlap)?;
    let size = cfg.data.image_size;
    let paths = expand_inputs(&args.inputs)?;
    prepare_out(&args.out)?;
    let mut names = Names(BTreeSet::new());
    let (mut results, mut lines) = (Vec::new(), Vec::new());
    let model = &loaded.model;
    let tta = args.tta.unwrap_or(cfg.test_time_augment);
    for path in &paths {
        let input = read_input(path, cfg.data.input_format, arch.encoder.in_channels)?;
        check_fits(path, &input, window)?;
        let frame = input.image.to_tensor(&device)?;
        let (h, w) = (input.image.height, input.image.width);
        let probs = predict_frame_map(&frame, window, overlap, args.batch_size, |x| {
            at_model_size(x, size, |m| tta.maps(m, |v| model.predict(v)))
        })
        .with_context(|| format!("{}", path.display()))?;
        let mut mask: Vec<u8> = probs
            .argmax(0)?
            .flatten_all()?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|c| c as u8)
            .collect();
        for (m, &ok) in mask.iter_mut().zip(&input.valid.data) {
            if ok == 0 {
                *m = 0;
            }
        }
        let background: Vec<f32> = probs.get(0)?.flatten_all()?.to_vec1()?;
        let deformation: Vec<f32> = background.iter().map(|&b| 1.0 - b).collect();
        let mut counts = [0usize; NUM_MASK_CLASSES];
        for &c in &mask {
            counts[usize::from(c)] += 1;
        }
        let fraction = 1.0 - counts[0] as f64 / mask.len().max(1) as f64;
        let mut v = json!({
            "image": path.display().to_string(),
            "height": h,
            "width": w,
            "window": window,
            "test_time_augment": tta,
            "overlap": overlap,
            "windows": insar_mm_models::heads::WindowPlan::new(h, w, window, overlap)
                .map_err(anyhow::Error::msg)?
                .len(),
            "pixels": MASK_CLASS_NAMES.iter().zip(counts).map(|(n, c)| (n.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
            "deformation_fraction": fraction,
        });
        if let Some(dir) = &args.out {
            let name = names.unique(path);
            let mask_path = dir.join(format!("{name}.mask.png"));
            write_png(&mask_path, w, h, PngColor::Gray, &mask)?;
            let prob_path = dir.join(format!("{name}.prob.png"));
            write_png(
                &prob_path,
                w,
                h,
                PngColor::Gray,
                &deformation.iter().map(|&p| to_u8(p)).collect::<Vec<_>>(),
            )?;
            let over_path = dir.join(format!("{name}.overlay.png"));
            let rgb = overlay(&input, |p| {
                let c = usize::from(mask[p]);
                (CLASS_COLORS[c], if c == 0 { 0.0 } else { 0.55 })
            });
            write_png(&over_path, w, h, PngColor::Rgb, &rgb)?;
            v["mask"] = json!(mask_path.display().to_string());
            v["probability"] = json!(prob_path.display().to_string());
            v["overlay"] = json!(over_path.display().to_string());
        }
        let present: Vec<String> = MASK_CLASS_NAMES
            .iter()
            .zip(counts)
            .skip(1)
            .filter(|(_, c)| *c > 0)
            .map(|(n, c)| format!("{n}={c}"))
            .collect();
        lines.push(format!(
            "{}\t{:.2}% deformation\t{}",
            path.display(),
            100.0 * fraction,
            if present.is_empty() {
                "none".to_string()
            } else {
                present.join(" ")
            }
        ));
        results.push(v);
    }
    finish(&args, results, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_inputs_filtered() {
        let mut n = Names(BTreeSet::new());
        assert_eq!(
            n.unique(Path::new("a/20200101_20200113.geo.diff.png")),
            "20200101_20200113"
        );
        assert_eq!(n.unique(Path::new("x/InSAR.png")), "InSAR");
        assert_eq!(n.unique(Path::new("y/InSAR.png")), "InSAR_2");
        assert!(is_patch_png(Path::new("p/labeled/0/12_1.png")));
        assert!(!is_patch_png(Path::new("p/coherence/0/12_1.png")));
        assert!(!is_patch_png(Path::new("o/x.mask.png")));
        assert!(!is_patch_png(Path::new("f/a.geo.cc.png")));
        let d = HeadData {
            image_size: 64,
            source_size: Some(224),
            ..HeadData::default()
        };
        assert_eq!(window_of(&d, None, None).unwrap(), (224, 56));
        assert_eq!(window_of(&d, Some(100), Some(10)).unwrap(), (100, 10));
        assert!(window_of(&d, Some(100), Some(100)).is_err());
        assert!(window_of(&d, Some(100_000), None).is_err());
        assert!(window_of(&d, Some(8), None).is_err());
        // Legal but pathological: warned.
        let w = window_warning(&d, 17, 16).unwrap();
        assert!(w.contains("stride of 1 pixels") && w.contains("289"), "{w}");
        assert!(window_warning(&d, 224, 56).is_none());
        assert!(window_warning(&d, 224, 112).is_none());
        let w = window_warning(&d, 32, 8).unwrap();
        assert!(w.contains("much smaller"), "{w}");
    }
}
