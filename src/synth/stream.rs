//! An in-memory stream of synthetic samples for pretraining without touching the disk.
//!
//! [`SyntheticStream`] implements [`SampleSource`]: sample `i` is rendered on demand from
//! `(seed, i)` and converted exactly as the raw-frame loader converts the written PNGs
//! (`[phase preview as gray, coherence]`, no-data zeroed), with the rasterised annotation
//! mask, the 10-label vector and the whitespace-normalised caption. So a model pretrained
//! on the stream sees what it would see from `insar-mm data synth` output on disk.

use anyhow::{bail, Result};

use super::captions::CaptionStyle;
use super::generate::{render_scene, Overrides, Rendered};
use super::scene::SceneConfig;
use crate::data::frames::{input_from_pngs, InputFormat};
use crate::data::png::Png;
use crate::data::resample::{resize_area, resize_nearest};
use crate::data::sample::{Sample, SampleSource};

/// Synthetic samples rendered on demand.
#[derive(Debug, Clone)]
pub struct SyntheticStream {
    pub config: SceneConfig,
    pub seed: u64,
    pub len: usize,
    pub format: InputFormat,
    pub caption_style: CaptionStyle,
    /// Resize the model input (bilinear) and mask (nearest) to `(height, width)`.
    pub size: Option<(usize, usize)>,
}

impl SyntheticStream {
    /// `len` samples of `config` under `seed`, in the default input format.
    pub fn new(config: SceneConfig, seed: u64, len: usize) -> Result<Self> {
        if let Err(e) = config.check() {
            bail!("synthetic stream: {e}");
        }
        Ok(Self {
            config,
            seed,
            len,
            format: InputFormat::default(),
            caption_style: CaptionStyle::default(),
            size: None,
        })
    }

    pub fn with_format(mut self, format: InputFormat) -> Self {
        self.format = format;
        self
    }

    pub fn with_size(mut self, height: usize, width: usize) -> Self {
        self.size = Some((height, width));
        self
    }

    /// The rendered frame behind sample `index`.
    pub fn render(&self, index: usize) -> Result<Rendered> {
        let scene = self.config.scene(self.seed, index as u64);
        render_scene(&scene, self.caption_style, &Overrides::default())
    }
}

/// Converts a rendered frame into a [`Sample`] through the PNG encoding, exactly as the
/// raw-frame loader would read the written files.
pub fn sample_of(
    r: &Rendered,
    format: InputFormat,
    size: Option<(usize, usize)>,
) -> Result<Sample> {
    let (diff, cc) = r.encode_pngs()?;
    let input = input_from_pngs(&Png::decode(&diff)?, Some(&Png::decode(&cc)?), format)?;
    let mask = r.annotation_mask();
    let (image, mask) = match size {
        Some((h, w)) => (
            resize_area(&input.image, h, w)?,
            resize_nearest(&mask, h, w)?,
        ),
        None => (input.image, mask),
    };
    let a = &r.annotation;
    Ok(Sample {
        id: a.unique_id.to_string(),
        frame_id: a.frame_id.clone(),
        image,
        mask: Some(mask),
        labels: a.label_vector(),
        caption: Some(a.clean_caption()),
    })
}

impl SampleSource for SyntheticStream {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Result<Sample> {
        if index >= self.len {
            bail!("sample index {index} out of range (0..{})", self.len);
        }
        sample_of(&self.render(index)?, self.format, self.size)
    }
}
