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
use super::scene::{SceneConfig, TwinTerrain};
use crate::data::array::Image;
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
    /// What the nuisance twins ([`Self::twin`]) keep of the terrain.
    pub twin_terrain: TwinTerrain,
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
            twin_terrain: TwinTerrain::default(),
        })
    }

    pub fn with_format(mut self, format: InputFormat) -> Self {
        self.format = format;
        self
    }

    pub fn with_twin_terrain(mut self, terrain: TwinTerrain) -> Self {
        self.twin_terrain = terrain;
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

    /// Nuisance twin `draw` of the sample (`SceneConfig::nuisance_twin`).
    fn partner(&self, index: usize, draw: u64) -> Result<Option<Image>> {
        Ok(Some(self.twin(index, draw)?.image))
    }
}

impl SyntheticStream {
    /// Nuisance twin `draw` of sample `index`: the same deformation (mask, labels),
    /// independent nuisance signals (its caption describes them).
    pub fn twin(&self, index: usize, draw: u64) -> Result<Sample> {
        if index >= self.len {
            bail!("sample index {index} out of range (0..{})", self.len);
        }
        let scene = self.config.scene(self.seed, index as u64);
        let twin = self.config.nuisance_twin(&scene, draw, self.twin_terrain);
        let rendered = render_scene(&twin, self.caption_style, &Overrides::default())?;
        sample_of(&rendered, self.format, self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::scene::SceneConfig;

    fn stream() -> SyntheticStream {
        let config = SceneConfig {
            width: 64,
            height: 64,
            crowd_rate: 0.0,
            ..SceneConfig::default()
        };
        SyntheticStream::new(config, 5, 40).unwrap()
    }

    fn differs(a: &Image, b: &Image) -> f64 {
        let d: f64 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| f64::from((x - y).abs()))
            .sum();
        d / a.data.len() as f64
    }

    #[test]
    fn nuisance_twins_share_the_deformation_and_redraw_the_nuisance() {
        let s = stream();
        let mut deformed = 0;
        for i in 0..s.len() {
            let original = s.get(i).unwrap();
            let twin = s.twin(i, 3).unwrap();
            // Same deformation: mask, labels and frame (the caption describes the
            // nuisance too, so it may differ).
            assert_eq!(twin.mask, original.mask, "sample {i}");
            assert_eq!(twin.labels, original.labels, "sample {i}");
            assert_eq!(twin.frame_id, original.frame_id, "sample {i}");
            // Different nuisance: the pixels differ clearly.
            assert!(
                differs(&twin.image, &original.image) > 0.02,
                "sample {i}: twin too close to the original"
            );
            // Deterministic per (seed, index, draw); another draw is another twin.
            assert_eq!(s.twin(i, 3).unwrap().image, twin.image, "sample {i}");
            assert!(differs(&s.twin(i, 4).unwrap().image, &twin.image) > 0.02);
            assert_eq!(s.partner(i, 3).unwrap(), Some(twin.image));
            deformed += usize::from(original.labels[0] > 0.5);
        }
        assert!(
            deformed >= 5,
            "only {deformed} deformed samples: the test sees too few"
        );
        assert!(s.twin(s.len(), 0).is_err());
    }

    #[test]
    fn a_twin_of_another_seed_is_another_scene() {
        let a = stream();
        let b = SyntheticStream {
            seed: 6,
            ..stream()
        };
        assert_ne!(a.twin(0, 1).unwrap().image, b.twin(0, 1).unwrap().image);
    }

    #[test]
    fn a_redrawn_terrain_twin_keeps_the_sources_and_changes_the_terrain() {
        let same = stream();
        let redrawn = stream().with_twin_terrain(TwinTerrain::Redrawn);
        let (mut union, mut inter) = (0, 0);
        for i in 0..same.len() {
            let scene = same.config.scene(same.seed, i as u64);
            let a = same.config.nuisance_twin(&scene, 3, TwinTerrain::Same);
            let b = same.config.nuisance_twin(&scene, 3, TwinTerrain::Redrawn);
            // The same nuisance draws and sources; only the terrain seed differs.
            assert_eq!(
                (&a.nuisance, a.nuisance_seed),
                (&b.nuisance, b.nuisance_seed)
            );
            assert_eq!(a.sources, b.sources);
            assert_eq!(a.frame.terrain_seed, scene.frame.terrain_seed);
            assert_ne!(b.frame.terrain_seed, scene.frame.terrain_seed);
            let (original, twin) = (same.get(i).unwrap(), redrawn.twin(i, 3).unwrap());
            assert_eq!(twin.labels, original.labels, "sample {i}");
            // The mask marks where the deformation is observable: another terrain moves
            // water and decorrelation, so it may change at the margins, not in substance.
            let (a, b) = (twin.mask.as_ref().unwrap(), original.mask.as_ref().unwrap());
            let pairs = a.data.iter().zip(&b.data);
            union += pairs.clone().filter(|(x, y)| **x > 0 || **y > 0).count();
            inter += pairs.filter(|(x, y)| **x > 0 && **x == **y).count();
            assert_eq!(
                a.data.iter().any(|&c| c > 0),
                b.data.iter().any(|&c| c > 0),
                "sample {i}"
            );
            assert_eq!(redrawn.twin(i, 3).unwrap().image, twin.image, "sample {i}");
            // The coherence channel (terrain-driven) differs from the same-terrain twin's.
            let coherence = |im: &Image| im.data[2 * im.height * im.width..].to_vec();
            assert_ne!(
                coherence(&twin.image),
                coherence(&same.twin(i, 3).unwrap().image),
                "sample {i}"
            );
        }
        assert!(
            union > 0 && inter as f64 / union as f64 > 0.85,
            "mask IoU {inter}/{union}"
        );
    }
}
