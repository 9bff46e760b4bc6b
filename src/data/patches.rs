//! The 224×224 patch layout of the reference `save_crops`, written and read.
//!
//! ```text
//! <out>/labeled/<cls>/<name>.png     phase-preview crop (RGB, RGBA when the source has no-data)
//! <out>/masks/<cls>/<name>.png       class-id mask (deformation crops only; none for tiles)
//! <out>/cls_labels/<name>.json       {"Deformation": [ids], "Intensity": i, "Phase": p,
//!                                     "frameID", "primary_date", "secondary_date", …}
//! <out>/coherence/<cls>/<name>.png   coherence crop (extension: original readers ignore it)
//! <out>/patches.json                 how the folder was made (extension)
//! ```
//!
//! `<cls>` is the class id of the polygon the crop was made for (0 for tiles). A deformation
//! interferogram gets one random crop containing each polygon, named `<uid>` when it has a
//! single polygon and `is_crowd` is 0, else `<uid>_<k>` (as the reference names them).
//! A polygon wider or taller than the crop is cut (with a warning), the window then lying
//! inside the polygon's extent. A non-deformation interferogram is tiled without overlap
//! into `<uid>_<idx>` (row-major, partial tiles dropped). Label codes as in `save_crops`:
//! Intensity 0 Low, 1 Medium, 2 High, 3 earthquake; Phase 0 Rest, 1 Unrest, 2 Rebound
//! (`None` → 0). `Deformation` lists the distinct class ids inside the crop. Extension fields
//! of the label JSON: `uniqueID`, `polygon`, `top`, `left`.
//!
//! Unlike the reference, overlapping polygons are not summed (the later wins), every
//! polygon gets a crop, and the crop window is drawn uniformly among all windows that
//! contain the polygon and lie inside the frame.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, ensure, Context, Result};
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::annotation::{ActivityType, Annotation, Intensity};
use super::array::ClassMask;
use super::atomic::write_atomic;
use super::frames::{input_from_pngs, InputFormat, InterferogramFiles};
use super::json::parse_json;
use super::loader::{AnnotationSet, BadFile};
use super::png::{write_png, Png, PngColor};
use super::raster::{annotation_mask, fill_polygon};
use super::sample::{LabelVector, Sample, SampleSource, NUM_LABELS};
use super::sampler::shuffled_order;
use super::split::{Part, Split};

pub const LABELED_DIR: &str = "labeled";
pub const MASKS_DIR: &str = "masks";
pub const LABELS_DIR: &str = "cls_labels";
pub const COHERENCE_DIR: &str = "coherence";
pub const MANIFEST: &str = "patches.json";

/// The label JSON of one patch (`cls_labels/<name>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchLabel {
    /// Distinct class ids in the crop; `[0]` for a tile without deformation.
    #[serde(rename = "Deformation")]
    pub deformation: Vec<u8>,
    /// 0 Low, 1 Medium, 2 High, 3 earthquake (non-volcanic).
    #[serde(rename = "Intensity")]
    pub intensity: u8,
    /// 0 Rest, 1 Unrest, 2 Rebound.
    #[serde(rename = "Phase")]
    pub phase: u8,
    #[serde(rename = "frameID")]
    pub frame_id: String,
    pub primary_date: String,
    pub secondary_date: String,
    #[serde(rename = "uniqueID", default, skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<u64>,
    /// Index of the polygon the crop was made for (deformation crops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polygon: Option<usize>,
    /// Position of the crop in the frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<usize>,
}

impl PatchLabel {
    /// The 10-label vector of the patch: the class ids present, and the crop's intensity
    /// when it is volcanic (Intensity 0–2) and some deformation is present.
    pub fn label_vector(&self) -> LabelVector {
        let mut v = [0.0; NUM_LABELS];
        let ids: Vec<u8> = self
            .deformation
            .iter()
            .copied()
            .filter(|&c| c > 0)
            .collect();
        if ids.is_empty() {
            return v;
        }
        v[0] = 1.0;
        for id in ids {
            if let Some(a) = ActivityType::from_mask_class(id) {
                v[a.label_index()] = 1.0;
            }
        }
        if self.intensity <= 2 {
            v[7 + usize::from(self.intensity)] = 1.0;
        }
        v
    }
}

/// Options of [`extract_patches`].
#[derive(Debug, Clone)]
pub struct PatchOptions {
    pub size: usize,
    pub seed: u64,
    /// Skip (and list) interferograms whose files are missing or unreadable.
    pub skip_bad: bool,
}

/// What [`extract_patches`] did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PatchReport {
    pub size: usize,
    pub seed: u64,
    pub annotations_source: String,
    pub raw_root: String,
    pub interferograms: usize,
    pub deformation_patches: usize,
    pub tiles: usize,
    /// Patches per class folder.
    pub per_class: BTreeMap<String, usize>,
    /// Polygons larger than the crop (cut), and polygons outside their frame (skipped).
    pub warnings: Vec<String>,
    /// Interferograms skipped with `skip_bad`.
    pub skipped: Vec<BadFile>,
}

impl PatchReport {
    pub fn patches(&self) -> usize {
        self.deformation_patches + self.tiles
    }
}

/// One written patch.
struct Written {
    class: u8,
    is_tile: bool,
}

/// The patches written for one interferogram, and warnings about its polygons.
#[derive(Default)]
struct Outcome {
    written: Vec<Written>,
    warnings: Vec<String>,
}

/// Pixel extent of a rasterised polygon: `(row_min, row_max, col_min, col_max)`, inclusive.
fn extent(mask: &ClassMask) -> Option<(usize, usize, usize, usize)> {
    let mut ext: Option<(usize, usize, usize, usize)> = None;
    for y in 0..mask.height {
        let row = &mask.data[y * mask.width..(y + 1) * mask.width];
        let (Some(first), Some(last)) = (
            row.iter().position(|&v| v != 0),
            row.iter().rposition(|&v| v != 0),
        ) else {
            continue;
        };
        ext = Some(match ext {
            None => (y, y, first, last),
            Some((r0, _, c0, c1)) => (r0, y, c0.min(first), c1.max(last)),
        });
    }
    ext
}

/// Range of top-left positions along one axis for a window of `size` over a frame of
/// `len`, containing `[lo, hi]`; when the object is larger than the window, the window
/// stays inside the object's extent. Returns `(first, last, cut)`.
fn window_range(lo: usize, hi: usize, size: usize, len: usize) -> (usize, usize, bool) {
    if hi - lo < size {
        ((hi + 1).saturating_sub(size), lo.min(len - size), false)
    } else {
        (lo, (hi + 1 - size).min(len - size), true)
    }
}

/// Crops interleaved 8-bit samples (`channels` per pixel).
fn crop_samples(
    data: &[u8],
    width: usize,
    channels: usize,
    top: usize,
    left: usize,
    size: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(size * size * channels);
    for y in top..top + size {
        let start = (y * width + left) * channels;
        out.extend_from_slice(&data[start..start + size * channels]);
    }
    out
}

/// The decoded images of one interferogram, interleaved for writing crops.
struct Sources {
    width: usize,
    height: usize,
    phase: Vec<u8>,
    phase_color: PngColor,
    coherence: Vec<u8>,
    coherence_color: PngColor,
}

impl Sources {
    fn read(files: &InterferogramFiles) -> Result<Self> {
        let phase = Png::read(&files.phase)?;
        let cc_path = files.require_coherence()?;
        let cc = Png::read(cc_path)?;
        ensure!(
            (cc.width, cc.height) == (phase.width, phase.height),
            "{}: coherence is {}×{} but the phase image is {}×{}",
            cc_path.display(),
            cc.width,
            cc.height,
            phase.width,
            phase.height
        );
        let interleave = |base: Vec<u8>, channels: usize, alpha: Option<Vec<u8>>| -> Vec<u8> {
            match alpha {
                None => base,
                Some(alpha) => base
                    .chunks_exact(channels)
                    .zip(alpha)
                    .flat_map(|(px, a)| px.iter().copied().chain(std::iter::once(a)))
                    .collect(),
            }
        };
        let (phase_color, phase_alpha) = if phase.has_alpha() {
            (PngColor::Rgba, Some(phase.alpha()))
        } else {
            (PngColor::Rgb, None)
        };
        let (coherence_color, cc_alpha) = if cc.has_alpha() {
            (PngColor::GrayAlpha, Some(cc.alpha()))
        } else {
            (PngColor::Gray, None)
        };
        Ok(Self {
            width: phase.width,
            height: phase.height,
            phase: interleave(phase.rgb8(), 3, phase_alpha),
            phase_color,
            coherence: interleave(cc.gray(), 1, cc_alpha),
            coherence_color,
        })
    }

    fn write(
        &self,
        out: &Path,
        class: u8,
        name: &str,
        top: usize,
        left: usize,
        size: usize,
    ) -> Result<()> {
        let cls = class.to_string();
        let phase = crop_samples(
            &self.phase,
            self.width,
            self.phase_color.channels(),
            top,
            left,
            size,
        );
        write_png(
            &out.join(LABELED_DIR).join(&cls).join(format!("{name}.png")),
            size,
            size,
            self.phase_color,
            &phase,
        )?;
        let cc = crop_samples(
            &self.coherence,
            self.width,
            self.coherence_color.channels(),
            top,
            left,
            size,
        );
        write_png(
            &out.join(COHERENCE_DIR)
                .join(&cls)
                .join(format!("{name}.png")),
            size,
            size,
            self.coherence_color,
            &cc,
        )
    }
}

fn write_label(out: &Path, name: &str, label: &PatchLabel) -> Result<()> {
    let text = serde_json::to_string(label)?;
    write_atomic(
        &out.join(LABELS_DIR).join(format!("{name}.json")),
        text.as_bytes(),
    )
}

/// Writes the patches of one interferogram; returns what was written and warnings.
fn patches_of(ann: &Annotation, raw: &Path, out: &Path, opts: &PatchOptions) -> Result<Outcome> {
    let files = InterferogramFiles::locate(raw, ann)?;
    let src = Sources::read(&files)?;
    let size = opts.size;
    ensure!(
        src.width >= size && src.height >= size,
        "{}: frame is {}×{}, smaller than the {size}×{size} patch",
        files.phase.display(),
        src.height,
        src.width
    );
    let base_label = |deformation: Vec<u8>, intensity: u8| PatchLabel {
        deformation,
        intensity,
        phase: ann.phase.patch_code(),
        frame_id: ann.frame_id.clone(),
        primary_date: ann.primary_date.to_string(),
        secondary_date: ann.secondary_date.to_string(),
        unique_id: Some(ann.unique_id),
        polygon: None,
        top: None,
        left: None,
    };
    let mut outcome = Outcome::default();
    if !ann.is_deformation() {
        let cols = src.width / size;
        for r in 0..src.height / size {
            for c in 0..cols {
                let name = format!("{}_{}", ann.unique_id, r * cols + c);
                let (top, left) = (r * size, c * size);
                src.write(out, 0, &name, top, left, size)?;
                let mut label = base_label(vec![0], 0);
                (label.top, label.left) = (Some(top), Some(left));
                write_label(out, &name, &label)?;
                outcome.written.push(Written {
                    class: 0,
                    is_tile: true,
                });
            }
        }
        return Ok(outcome);
    }

    // Each crop's RNG depends only on (seed, uniqueID): the same patches whatever the order
    // or the number of threads.
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    rng.set_stream(ann.unique_id);
    let full = annotation_mask(ann, src.height, src.width);
    let polygons: Vec<(usize, u8, Intensity)> = ann
        .deformations()
        .iter()
        .enumerate()
        .filter(|(_, d)| d.polygon.is_some())
        .map(|(k, d)| (k, d.mask_class(), d.intensity))
        .collect();
    if polygons.is_empty() {
        outcome.warnings.push(format!(
            "uniqueID {}: deformation without a polygon, no patch",
            ann.unique_id
        ));
    }
    let single = polygons.len() == 1 && ann.is_crowd == 0;
    let mut scratch = ClassMask::zeros(src.height, src.width);
    for &(k, class, intensity) in &polygons {
        scratch.data.fill(0);
        fill_polygon(
            &mut scratch,
            &ann.segmentation_mask[k].integer_vertices(),
            1,
        );
        let Some((r0, r1, c0, c1)) = extent(&scratch) else {
            outcome.warnings.push(format!(
                "uniqueID {}: polygon {k} lies outside the frame, no patch",
                ann.unique_id
            ));
            continue;
        };
        let (t0, t1, cut_v) = window_range(r0, r1, size, src.height);
        let (l0, l1, cut_h) = window_range(c0, c1, size, src.width);
        if cut_v || cut_h {
            outcome.warnings.push(format!(
                "uniqueID {}: polygon {k} spans {}×{} px, larger than the {size}×{size} patch; the patch cuts it",
                ann.unique_id,
                r1 - r0 + 1,
                c1 - c0 + 1
            ));
        }
        let top = rng.random_range(t0..=t1);
        let left = rng.random_range(l0..=l1);
        let name = if single {
            ann.unique_id.to_string()
        } else {
            format!("{}_{k}", ann.unique_id)
        };
        src.write(out, class, &name, top, left, size)?;
        let mask = crop_samples(&full.data, full.width, 1, top, left, size);
        write_png(
            &out.join(MASKS_DIR)
                .join(class.to_string())
                .join(format!("{name}.png")),
            size,
            size,
            PngColor::Gray,
            &mask,
        )?;
        let mut present = [false; 256];
        for &v in &mask {
            present[usize::from(v)] = true;
        }
        let ids: Vec<u8> = (1..=255u8).filter(|&v| present[usize::from(v)]).collect();
        let code = if class == ActivityType::Earthquake.mask_class() {
            3
        } else {
            intensity.patch_code()
        };
        let mut label = base_label(ids, code);
        (label.polygon, label.top, label.left) = (Some(k), Some(top), Some(left));
        write_label(out, &name, &label)?;
        outcome.written.push(Written {
            class,
            is_tile: false,
        });
    }
    Ok(outcome)
}

/// Writes the patch layout for every annotation whose raw frame exists under `raw`.
/// Parallel over interferograms; deterministic for a seed whatever the thread count.
pub fn extract_patches(
    annotations: &AnnotationSet,
    raw: &Path,
    out: &Path,
    opts: &PatchOptions,
    progress: &ProgressBar,
) -> Result<PatchReport> {
    ensure!(opts.size > 0, "--size must be positive");
    ensure!(
        raw.is_dir(),
        "{}: raw frame directory not found",
        raw.display()
    );
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let results: Vec<(u64, Result<Outcome>)> = annotations
        .annotations
        .par_iter()
        .map(|ann| {
            // In strict mode stop starting new work once something failed.
            if !opts.skip_bad && failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                return (ann.unique_id, Err(anyhow::anyhow!("cancelled")));
            }
            let r = patches_of(ann, raw, out, opts).with_context(|| {
                format!("uniqueID {} ({})", ann.unique_id, ann.interferogram_name())
            });
            if let Err(e) = &r {
                if let Ok(mut f) = failure.lock() {
                    if f.is_none() {
                        *f = Some(anyhow::anyhow!("{e:#}"));
                    }
                }
            }
            progress.inc(1);
            (ann.unique_id, r)
        })
        .collect();
    progress.finish_and_clear();
    let mut report = PatchReport {
        size: opts.size,
        seed: opts.seed,
        annotations_source: annotations.source.display().to_string(),
        raw_root: raw.display().to_string(),
        ..Default::default()
    };
    for (uid, r) in results {
        match r {
            Ok(outcome) => {
                report.interferograms += 1;
                for w in outcome.written {
                    *report.per_class.entry(w.class.to_string()).or_default() += 1;
                    if w.is_tile {
                        report.tiles += 1;
                    } else {
                        report.deformation_patches += 1;
                    }
                }
                report.warnings.extend(outcome.warnings);
            }
            Err(e) => {
                if !opts.skip_bad {
                    let first = failure.lock().ok().and_then(|mut f| f.take());
                    return Err(first.unwrap_or(e));
                }
                report.skipped.push(BadFile {
                    file: format!("uniqueID {uid}"),
                    error: format!("{e:#}"),
                });
            }
        }
    }
    let manifest = serde_json::to_string_pretty(&report)?;
    write_atomic(&out.join(MANIFEST), manifest.as_bytes())?;
    Ok(report)
}

/// One patch of a patch folder.
#[derive(Debug, Clone)]
pub struct PatchEntry {
    /// File stem, e.g. `123` or `123_4`.
    pub name: String,
    /// The class folder it is stored under.
    pub class_dir: u8,
    pub label: PatchLabel,
}

impl PatchEntry {
    /// The source annotation's uniqueID (from the label, else the name's leading number).
    pub fn unique_id(&self) -> Option<u64> {
        self.label
            .unique_id
            .or_else(|| self.name.split('_').next().and_then(|s| s.parse().ok()))
    }
}

/// A patch folder read as samples (`SampleSource`): image in the chosen [`InputFormat`],
/// the mask (zeros for tiles without a mask file), the patch's label vector, and the
/// caption of the source annotation when annotations are attached.
#[derive(Debug, Clone)]
pub struct PatchDataset {
    pub root: PathBuf,
    pub entries: Vec<PatchEntry>,
    pub format: InputFormat,
    captions: HashMap<u64, String>,
}

impl PatchDataset {
    /// Indexes `<root>/labeled/<cls>/*.png` with their `cls_labels` JSON. Errors name the
    /// file: a patch without a label, a malformed label, a bad class folder.
    pub fn open(root: &Path, format: InputFormat) -> Result<Self> {
        let labeled = root.join(LABELED_DIR);
        ensure!(
            labeled.is_dir(),
            "{}: not a patch folder (no {LABELED_DIR}/ inside)",
            root.display()
        );
        let mut entries = Vec::new();
        let classes = std::fs::read_dir(&labeled)
            .with_context(|| format!("{}: cannot list", labeled.display()))?;
        for class in classes {
            let class = class.with_context(|| format!("{}: cannot list", labeled.display()))?;
            if !class.path().is_dir() {
                continue;
            }
            let cls_name = class.file_name().to_string_lossy().into_owned();
            let class_dir: u8 = cls_name
                .parse()
                .ok()
                .filter(|&c: &u8| c <= 6)
                .with_context(|| {
                    format!("{}: class folder must be 0..=6", class.path().display())
                })?;
            for file in std::fs::read_dir(class.path())
                .with_context(|| format!("{}: cannot list", class.path().display()))?
            {
                let file =
                    file.with_context(|| format!("{}: cannot list", class.path().display()))?;
                let fname = file.file_name().to_string_lossy().into_owned();
                let Some(name) = fname.strip_suffix(".png") else {
                    continue;
                };
                let label_path = root.join(LABELS_DIR).join(format!("{name}.json"));
                let bytes = std::fs::read(&label_path).with_context(|| {
                    format!(
                        "{}: cannot read the label of patch {name}",
                        label_path.display()
                    )
                })?;
                let label: PatchLabel = parse_json(&bytes)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", label_path.display()))?;
                entries.push(PatchEntry {
                    name: name.to_string(),
                    class_dir,
                    label,
                });
            }
        }
        ensure!(!entries.is_empty(), "{}: no patches", labeled.display());
        entries.sort_by(|a, b| (a.unique_id(), &a.name).cmp(&(b.unique_id(), &b.name)));
        Ok(Self {
            root: root.to_path_buf(),
            entries,
            format,
            captions: HashMap::new(),
        })
    }

    /// Attaches the captions of the source annotations (the full-frame description).
    pub fn with_captions(mut self, annotations: &AnnotationSet) -> Self {
        self.captions = annotations
            .annotations
            .iter()
            .map(|a| (a.unique_id, a.clean_caption()))
            .collect();
        self
    }

    /// Keeps the patches whose source interferogram is in `part` of `split`.
    pub fn restrict(mut self, split: &Split, part: Part) -> Self {
        self.entries.retain(|e| {
            e.unique_id()
                .is_some_and(|id| split.part_of(id) == Some(part))
        });
        self
    }

    /// Splits the patches by frame (`frameID` of their labels), as `data split` does for
    /// interferograms: the frames are shuffled with `seed` and dealt to train, val and test
    /// in turn until each part holds its share (`fractions`) of the patches, so no frame is
    /// in two parts. Errors when a part would be empty (too few frames).
    pub fn frame_parts(&self, seed: u64, fractions: [f64; 3]) -> Result<[PatchDataset; 3]> {
        let mut frames: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &self.entries {
            *frames.entry(e.label.frame_id.as_str()).or_default() += 1;
        }
        let names: Vec<&str> = frames.keys().copied().collect();
        let order = shuffled_order(names.len(), &mut ChaCha8Rng::seed_from_u64(seed));
        let total = self.entries.len() as f64;
        let mut counts = [0usize; 3];
        let mut part_of: HashMap<&str, usize> = HashMap::new();
        for frame in order.into_iter().map(|i| names[i]) {
            // The part furthest below its share takes the next frame.
            let part = (0..3)
                .filter(|&p| fractions[p] > 0.0)
                .min_by(|&a, &b| {
                    let deficit = |p: usize| counts[p] as f64 / total - fractions[p];
                    deficit(a).total_cmp(&deficit(b))
                })
                .context("fractions are all zero")?;
            counts[part] += frames[frame];
            part_of.insert(frame, part);
        }
        let parts: [PatchDataset; 3] = std::array::from_fn(|p| {
            let mut ds = self.clone();
            ds.entries
                .retain(|e| part_of[e.label.frame_id.as_str()] == p);
            ds
        });
        for (ds, name) in parts.iter().zip(Part::ALL) {
            ensure!(
                !ds.entries.is_empty(),
                "{}: {} frames are too few for a train/val/test split by frame (the {name} part \
                 is empty); add a split.json or more patches",
                self.root.display(),
                frames.len()
            );
        }
        Ok(parts)
    }

    pub fn labels(&self) -> Vec<LabelVector> {
        self.entries
            .iter()
            .map(|e| e.label.label_vector())
            .collect()
    }

    fn path(&self, dir: &str, e: &PatchEntry) -> PathBuf {
        self.root
            .join(dir)
            .join(e.class_dir.to_string())
            .join(format!("{}.png", e.name))
    }
}

impl SampleSource for PatchDataset {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let Some(e) = self.entries.get(index) else {
            bail!(
                "patch index {index} out of range (0..{})",
                self.entries.len()
            );
        };
        let phase = Png::read(&self.path(LABELED_DIR, e))?;
        let coherence = if self.format.needs_coherence() {
            let path = self.path(COHERENCE_DIR, e);
            Some(Png::read(&path).with_context(|| {
                format!("patch {} has no coherence crop (use --input-format phase for reference patch folders)", e.name)
            })?)
        } else {
            None
        };
        let input = input_from_pngs(&phase, coherence.as_ref(), self.format)
            .with_context(|| format!("patch {}", self.path(LABELED_DIR, e).display()))?;
        let mask_path = self.path(MASKS_DIR, e);
        let mask = if mask_path.is_file() {
            let m = Png::read(&mask_path)?;
            ensure!(
                (m.height, m.width) == (phase.height, phase.width),
                "{}: mask is {}×{} but the patch is {}×{}",
                mask_path.display(),
                m.height,
                m.width,
                phase.height,
                phase.width
            );
            let data = m.gray();
            if let Some(bad) = data.iter().find(|&&v| v > 6) {
                bail!("{}: class id {bad} is not in 0..=6", mask_path.display());
            }
            ClassMask {
                height: m.height,
                width: m.width,
                data,
            }
        } else {
            ClassMask::zeros(phase.height, phase.width)
        };
        Ok(Sample {
            id: e.name.clone(),
            frame_id: e.label.frame_id.clone(),
            image: input.image,
            mask: Some(mask),
            labels: e.label.label_vector(),
            caption: e.unique_id().and_then(|id| self.captions.get(&id).cloned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_contain_the_object_and_stay_inside() {
        // Object columns 100..=150 in a 1000-wide frame, window 224.
        let (a, b, cut) = window_range(100, 150, 224, 1000);
        assert_eq!((a, b, cut), (0, 100, false));
        for left in [a, b] {
            assert!(left <= 100 && left + 224 > 150 && left + 224 <= 1000);
        }
        // Near the right border.
        assert_eq!(window_range(950, 990, 224, 1000), (767, 776, false));
        // Larger than the window: stays within the object.
        assert_eq!(window_range(10, 400, 224, 1000), (10, 177, true));
        // Exactly the window size fits without a cut.
        assert_eq!(window_range(0, 223, 224, 224), (0, 0, false));
    }

    #[test]
    fn patch_label_vector_uses_ids_and_intensity() {
        let mut l = PatchLabel {
            deformation: vec![0],
            intensity: 0,
            phase: 1,
            frame_id: "F".into(),
            primary_date: "20200101".into(),
            secondary_date: "20200113".into(),
            unique_id: None,
            polygon: None,
            top: None,
            left: None,
        };
        assert_eq!(l.label_vector(), [0.0; NUM_LABELS]);
        l.deformation = vec![2, 3];
        l.intensity = 2;
        assert_eq!(l.label_vector(), [1., 0., 1., 1., 0., 0., 0., 0., 0., 1.]);
        l.deformation = vec![5];
        l.intensity = 3;
        assert_eq!(l.label_vector(), [1., 0., 0., 0., 0., 1., 0., 0., 0., 0.]);
        // The reference's JSON (no extension fields) reads too.
        let r: PatchLabel = serde_json::from_str(
            r#"{"Deformation": [3], "Intensity": 1, "Phase": 1, "frameID": "F", "primary_date": "20200101", "secondary_date": "20200113"}"#,
        )
        .unwrap();
        assert_eq!(r.deformation, vec![3]);
        let e = PatchEntry {
            name: "77_2".into(),
            class_dir: 3,
            label: r,
        };
        assert_eq!(e.unique_id(), Some(77));
    }
}
