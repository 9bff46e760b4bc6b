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

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::annotation::Annotation;
use super::array::ClassMask;
use super::frames::{load_input, InputFormat, InterferogramFiles};
use super::loader::{load_annotations, AnnotationSet, BadFile, LoadOptions};
use super::patches::PatchDataset;
use super::raster::annotation_mask;
use super::resample::{resize_bilinear, resize_nearest};
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
        let candidates = [
            root.join(ANNOTATIONS),
            root.join("annotations.tar.gz"),
            root.join("annotations.tgz"),
            root.join("annotations.zip"),
        ];
        let Some(source) = candidates.iter().find(|p| p.exists()) else {
            bail!(
                "{}: not a dataset directory (no annotations/ folder or annotations.tar.gz/.zip)",
                root.display()
            );
        };
        let annotations = load_annotations(source, options)?;
        Ok(Self {
            root: root.to_path_buf(),
            annotations,
        })
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
        format.check_supported(&self.root)?;
        let mut items = Vec::new();
        let mut missing = Vec::new();
        for entry in self.entries() {
            let a = entry.annotation;
            if let Some((split, p)) = part {
                if split.part_of(a.unique_id) != Some(p) {
                    continue;
                }
            }
            match entry.files {
                Some(files) if !format.needs_coherence() || files.coherence.is_some() => {
                    items.push((a.clone(), files))
                }
                _ => missing.push(BadFile {
                    file: format!("uniqueID {}", a.unique_id),
                    error: match self
                        .files(a)
                        .and_then(|f| f.require_coherence().map(|_| ()))
                    {
                        Err(e) => format!("{e:#}"),
                        Ok(()) => "missing image".into(),
                    },
                }),
            }
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
                resize_bilinear(&input.image, th, tw)?,
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
}
