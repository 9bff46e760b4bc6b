//! The dataset directory every training command takes as `--data DIR`:
//!
//! ```text
//! DIR/annotations/<uniqueID>.json    (or DIR/annotations.tar.gz / .zip)
//! DIR/<frameID>/interferograms/<p>_<s>/<p>_<s>.geo.diff.png + .geo.cc.png   raw frames
//! DIR/patches/                       optional: `insar-mm data patches` output
//! DIR/split.json                     optional: `insar-mm data split` output
//! ```
//!
//! Real Hephaestus data and the synthetic generator's output share this layout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::Serialize;

use super::annotation::Annotation;
use super::array::{ClassMask, Image};
use super::frames::{list_interferograms, load_input, InputFormat, InterferogramFiles};
use super::loader::{load_annotations, AnnotationSet, BadFile, LoadOptions};
use super::patches::PatchDataset;
use super::png::Png;
use super::raster::annotation_mask;
use super::resample::{resize_area, resize_nearest};
use super::sample::{Sample, SampleSource};
use super::split::{Part, Split};

pub const ANNOTATIONS: &str = "annotations";
pub const PATCHES: &str = "patches";
pub const SPLIT_FILE: &str = "split.json";

/// An opened dataset directory with its annotations loaded.
#[derive(Debug, Clone)]
pub struct DatasetDir {
    pub root: PathBuf,
    pub annotations: AnnotationSet,
}

/// One annotation with its image files (None when they are missing).
#[derive(Debug, Clone)]
pub struct DatasetEntry<'a> {
    pub annotation: &'a Annotation,
    pub files: Option<InterferogramFiles>,
}

impl DatasetDir {
    /// Opens `root`, loading `root/annotations/` (or `annotations.tar.gz` / `.tgz` / `.zip`).
    pub fn open(root: &Path, options: LoadOptions) -> Result<Self> {
        if !root.is_dir() {
            bail!("{}: dataset directory not found", root.display());
        }
        let Some(source) = Self::annotation_source(root) else {
            bail!(
                "{}: not a dataset directory (no annotations/ folder or annotations.tar.gz/.zip)",
                root.display()
            );
        };
        let annotations = load_annotations(&source, options)?;
        Ok(Self {
            root: root.to_path_buf(),
            annotations,
        })
    }

    /// The annotations of the dataset directory `root`: `annotations/`, else
    /// `annotations.tar.gz` / `.tgz` / `.zip`; `None` when it has none.
    pub fn annotation_source(root: &Path) -> Option<PathBuf> {
        [
            ANNOTATIONS,
            "annotations.tar.gz",
            "annotations.tgz",
            "annotations.zip",
        ]
        .iter()
        .map(|n| root.join(n))
        .find(|p| p.exists())
    }

    /// Where raw frames live (the dataset root itself).
    pub fn raw_root(&self) -> &Path {
        &self.root
    }

    /// Every annotation with its image files, in uniqueID order.
    pub fn entries(&self) -> Vec<DatasetEntry<'_>> {
        self.annotations
            .annotations
            .iter()
            .map(|a| DatasetEntry {
                annotation: a,
                files: InterferogramFiles::locate(&self.root, a).ok(),
            })
            .collect()
    }

    /// The files of one annotation, or an error naming what is missing.
    pub fn files(&self, annotation: &Annotation) -> Result<InterferogramFiles> {
        InterferogramFiles::locate(&self.root, annotation)
    }

    pub fn split_path(&self) -> PathBuf {
        self.root.join(SPLIT_FILE)
    }

    /// `split.json`, when present.
    pub fn split(&self) -> Result<Option<Split>> {
        let path = self.split_path();
        if !path.exists() {
            return Ok(None);
        }
        Split::read(&path).map(Some)
    }

    /// `split.json`, or an error telling how to make one.
    pub fn require_split(&self) -> Result<Split> {
        self.split()?.with_context(|| {
            format!(
                "{}: no split; run `insar-mm data split {}`",
                self.split_path().display(),
                self.root.display()
            )
        })
    }

    /// The patch folder, when present.
    pub fn patches_dir(&self) -> Option<PathBuf> {
        let dir = self.root.join(PATCHES);
        dir.is_dir().then_some(dir)
    }

    /// Full-frame samples, optionally restricted to a split part and resized.
    pub fn frame_samples(
        &self,
        format: InputFormat,
        part: Option<(&Split, Part)>,
        size: Option<(usize, usize)>,
    ) -> Result<FrameSamples> {
        let mut items = Vec::new();
        let mut missing = Vec::new();
        for a in &self.annotations.annotations {
            if let Some((split, p)) = part {
                if split.part_of(a.unique_id) != Some(p) {
                    continue;
                }
            }
            let usable = self.files(a).and_then(|files| {
                if format.needs_coherence() {
                    files.require_coherence()?;
                }
                Ok(files)
            });
            match usable {
                Ok(files) => items.push((a.clone(), files)),
                Err(e) => missing.push(BadFile {
                    file: format!("uniqueID {}", a.unique_id),
                    error: format!("{e:#}"),
                }),
            }
        }
        if let Some(first) = missing.first() {
            // Training and embedding use what they can; say what they leave out.
            log::warn!(
                "{}: {} of {} annotations have no usable images and are left out (e.g. {}: {}); \
                 `insar-mm data check {}` lists them",
                self.root.display(),
                missing.len(),
                items.len() + missing.len(),
                first.file,
                first.error,
                self.root.display()
            );
        }
        Ok(FrameSamples {
            items,
            missing,
            format,
            size,
        })
    }

    /// The patch folder as samples with captions, optionally restricted to a split part.
    pub fn patch_samples(
        &self,
        format: InputFormat,
        part: Option<(&Split, Part)>,
    ) -> Result<PatchDataset> {
        let dir = self.patches_dir().with_context(|| {
            format!(
                "{}: no patches; run `insar-mm data patches --raw {} --annotations {} --out {}`",
                self.root.join(PATCHES).display(),
                self.root.display(),
                self.annotations.source.display(),
                self.root.join(PATCHES).display()
            )
        })?;
        let mut ds = PatchDataset::open(&dir, format)?.with_captions(&self.annotations);
        if let Some((split, p)) = part {
            ds = ds.restrict(split, p);
        }
        Ok(ds)
    }
}

/// What `DatasetDir::check` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub root: String,
    pub annotations: usize,
    /// Annotations whose images are present (and, when decoded, readable and consistent).
    pub ok: usize,
    /// Annotations that cannot be used: missing or unreadable images, size mismatches.
    pub problems: Vec<BadFile>,
    /// Usable but suspicious: polygon vertices outside the frame, images without valid pixels.
    pub warnings: Vec<String>,
    /// Interferogram folders with no annotation (usable for self-supervised pretraining).
    pub unannotated_interferograms: usize,
    /// Frame sizes `H×W` of the decoded phase images.
    pub frame_sizes: BTreeMap<String, usize>,
    /// Mean share of valid (non-transparent) pixels over the decoded interferograms.
    pub mean_valid_fraction: f64,
}

/// One annotation's images as [`check_one`] found them.
struct Checked {
    /// `H×W`, when decoded.
    size: Option<String>,
    valid_fraction: f64,
    warnings: Vec<String>,
}

/// Checks one annotation's images.
fn check_one(root: &Path, a: &Annotation, decode: bool) -> Result<Checked> {
    let files = InterferogramFiles::locate(root, a)?;
    let cc_path = files.require_coherence()?;
    if !decode {
        return Ok(Checked {
            size: None,
            valid_fraction: 1.0,
            warnings: Vec::new(),
        });
    }
    let phase = Png::read(&files.phase)?;
    let cc = Png::read(cc_path)?;
    if (cc.height, cc.width) != (phase.height, phase.width) {
        bail!(
            "{}: coherence is {}×{} but the phase image is {}×{}",
            cc_path.display(),
            cc.height,
            cc.width,
            phase.height,
            phase.width
        );
    }
    let mut warnings = Vec::new();
    let (w, h) = (phase.width as f64, phase.height as f64);
    for (k, polygon) in a.segmentation_mask.iter().enumerate() {
        if polygon
            .vertices()
            .any(|(x, y)| x < 0.0 || y < 0.0 || x >= w || y >= h)
        {
            warnings.push(format!(
                "uniqueID {}: polygon {k} has vertices outside the {}×{} frame",
                a.unique_id, phase.height, phase.width
            ));
        }
    }
    let valid = phase.valid();
    let cc_valid = cc.valid();
    let n_valid = valid
        .iter()
        .zip(&cc_valid)
        .filter(|(p, c)| **p && **c)
        .count();
    if n_valid == 0 {
        warnings.push(format!(
            "uniqueID {}: no valid pixel (fully transparent)",
            a.unique_id
        ));
    }
    Ok(Checked {
        size: Some(format!("{}×{}", phase.height, phase.width)),
        valid_fraction: n_valid as f64 / valid.len().max(1) as f64,
        warnings,
    })
}

impl DatasetDir {
    /// Checks that every annotation has its phase and coherence images; with `decode`,
    /// also that they decode, agree in size, and contain the polygons. Parallel.
    pub fn check(&self, decode: bool, progress: &ProgressBar) -> Result<CheckReport> {
        let results: Vec<(u64, Result<Checked>)> = self
            .annotations
            .annotations
            .par_iter()
            .map(|a| {
                let r = check_one(&self.root, a, decode);
                progress.inc(1);
                (a.unique_id, r)
            })
            .collect();
        progress.finish_and_clear();
        let mut report = CheckReport {
            root: self.root.display().to_string(),
            annotations: self.annotations.len(),
            ..Default::default()
        };
        let mut valid_sum = 0.0;
        for (uid, r) in results {
            match r {
                Ok(checked) => {
                    report.ok += 1;
                    valid_sum += checked.valid_fraction;
                    if let Some(size) = checked.size {
                        *report.frame_sizes.entry(size).or_default() += 1;
                    }
                    report.warnings.extend(checked.warnings);
                }
                Err(e) => report.problems.push(BadFile {
                    file: format!("uniqueID {uid}"),
                    error: format!("{e:#}"),
                }),
            }
        }
        report.mean_valid_fraction = if decode && report.ok > 0 {
            valid_sum / report.ok as f64
        } else {
            f64::NAN
        };
        let annotated: BTreeSet<(&str, String)> = self
            .annotations
            .annotations
            .iter()
            .map(|a| (a.frame_id.as_str(), a.interferogram_name()))
            .collect();
        report.unannotated_interferograms = list_interferograms(&self.root)?
            .into_iter()
            .filter(|(f, p, s)| !annotated.contains(&(f.as_str(), format!("{p}_{s}"))))
            .count();
        Ok(report)
    }
}

/// Full interferograms as samples: the input image (resized when a size is set, bilinear),
/// the rasterised class mask (nearest), the 10-label vector and the whitespace-normalised
/// caption. Annotations without image files are listed in `missing`, not loaded.
#[derive(Debug, Clone)]
pub struct FrameSamples {
    pub items: Vec<(Annotation, InterferogramFiles)>,
    pub missing: Vec<BadFile>,
    pub format: InputFormat,
    pub size: Option<(usize, usize)>,
}

impl SampleSource for FrameSamples {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let Some((a, files)) = self.items.get(index) else {
            bail!(
                "sample index {index} out of range (0..{})",
                self.items.len()
            );
        };
        let input = load_input(files, self.format)?;
        let (h, w) = (input.image.height, input.image.width);
        let mask: ClassMask = annotation_mask(a, h, w);
        let (image, mask) = match self.size {
            Some((th, tw)) => (
                resize_area(&input.image, th, tw)?,
                resize_nearest(&mask, th, tw)?,
            ),
            None => (input.image, mask),
        };
        Ok(Sample {
            id: a.unique_id.to_string(),
            frame_id: a.frame_id.clone(),
            image,
            mask: Some(mask),
            labels: a.label_vector(),
            caption: Some(a.clean_caption()),
        })
    }

    /// An interferogram of the same frame whose time span overlaps sample `index`'s (the
    /// deformation of the shared days is in both; atmosphere, decorrelation and noise of
    /// the other acquisition dates differ), picked by `draw` among them; `None` when the
    /// frame has no such interferogram.
    fn partner(&self, index: usize, draw: u64) -> Result<Option<Image>> {
        let candidates = self.partner_candidates(index);
        if candidates.is_empty() {
            return Ok(None);
        }
        let j = candidates[(draw % candidates.len() as u64) as usize];
        Ok(Some(self.get(j)?.image))
    }
}

impl FrameSamples {
    /// Indices of the interferograms of sample `index`'s frame whose time span overlaps
    /// its own (sharing more than an endpoint), in dataset order, without `index`.
    pub fn partner_candidates(&self, index: usize) -> Vec<usize> {
        let Some((a, _)) = self.items.get(index) else {
            return Vec::new();
        };
        self.items
            .iter()
            .enumerate()
            .filter(|(j, (b, _))| {
                *j != index
                    && b.frame_id == a.frame_id
                    && b.primary_date < a.secondary_date
                    && a.primary_date < b.secondary_date
            })
            .map(|(j, _)| j)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::generate::{generate_dataset, DatasetOptions};

    #[test]
    fn partners_share_the_frame_and_part_of_the_time_span() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::synth::builtin::config();
        config.width = 32;
        config.height = 32;
        let options = DatasetOptions {
            seed: 3,
            float_phase: false,
            caption_style: Default::default(),
        };
        generate_dataset(&config, 60, dir.path(), &options, &|| ()).unwrap();
        let ds = DatasetDir::open(dir.path(), LoadOptions::default()).unwrap();
        let frames = ds
            .frame_samples(InputFormat::default(), None, None)
            .unwrap();
        let mut with_partner = 0;
        for i in 0..frames.len() {
            let (a, _) = &frames.items[i];
            let candidates = frames.partner_candidates(i);
            for &j in &candidates {
                let (b, _) = &frames.items[j];
                assert_eq!(b.frame_id, a.frame_id);
                assert!(b.primary_date < a.secondary_date && a.primary_date < b.secondary_date);
                assert_ne!(j, i);
            }
            // Every overlapping interferogram of the frame is a candidate.
            let overlapping = frames
                .items
                .iter()
                .filter(|(b, _)| {
                    b.frame_id == a.frame_id
                        && b.unique_id != a.unique_id
                        && b.primary_date < a.secondary_date
                        && a.primary_date < b.secondary_date
                })
                .count();
            assert_eq!(candidates.len(), overlapping);
            let p = frames.partner(i, 12345).unwrap();
            assert_eq!(p.is_some(), !candidates.is_empty());
            if let Some(p) = p {
                with_partner += 1;
                let j = candidates[(12345 % candidates.len() as u64) as usize];
                assert_eq!(
                    p.data,
                    frames.get(j).unwrap().image.data,
                    "same draw, same partner"
                );
            }
        }
        assert!(with_partner > 0, "no interferogram of 60 has a partner");
        assert!(frames.partner_candidates(frames.len()).is_empty());
    }
}
