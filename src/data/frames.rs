//! The raw-frame layout and the conversion of its PNGs into model input.
//!
//! Layout (docs/architecture.md §2.1): `<root>/<frameID>/interferograms/<p>_<s>/<p>_<s>.geo.diff.png`
//! (wrapped-phase preview, RGB) and `<p>_<s>.geo.cc.png` (coherence, gray), with the
//! dataset README's names `InSAR.png` / `Coherence.png` in the same folder accepted too.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use super::annotation::{Annotation, Date};
use super::array::{ClassMask, Image};
use super::png::Png;

/// Suffix of the wrapped-phase preview written by LiCSAR.
pub const PHASE_SUFFIX: &str = ".geo.diff.png";
/// Suffix of the coherence image written by LiCSAR.
pub const COHERENCE_SUFFIX: &str = ".geo.cc.png";
/// Alternative names from the Hephaestus README.
pub const PHASE_ALT_NAME: &str = "InSAR.png";
pub const COHERENCE_ALT_NAME: &str = "Coherence.png";

/// `<root>/<frameID>/interferograms/<primary>_<secondary>`.
pub fn interferogram_dir(root: &Path, frame_id: &str, primary: Date, secondary: Date) -> PathBuf {
    root.join(frame_id)
        .join("interferograms")
        .join(format!("{primary}_{secondary}"))
}

/// The image files of one interferogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterferogramFiles {
    pub phase: PathBuf,
    pub coherence: Option<PathBuf>,
}

impl InterferogramFiles {
    /// The files of the interferogram described by `annotation` under `root`; an error lists
    /// the names that were tried when no phase image exists.
    pub fn locate(root: &Path, annotation: &Annotation) -> Result<Self> {
        Self::locate_dates(
            root,
            &annotation.frame_id,
            annotation.primary_date,
            annotation.secondary_date,
        )
    }

    pub fn locate_dates(
        root: &Path,
        frame_id: &str,
        primary: Date,
        secondary: Date,
    ) -> Result<Self> {
        let dir = interferogram_dir(root, frame_id, primary, secondary);
        let stem = format!("{primary}_{secondary}");
        let first =
            |names: [String; 2]| names.into_iter().map(|n| dir.join(n)).find(|p| p.is_file());
        let phase = first([format!("{stem}{PHASE_SUFFIX}"), PHASE_ALT_NAME.to_string()]);
        let coherence = first([
            format!("{stem}{COHERENCE_SUFFIX}"),
            COHERENCE_ALT_NAME.to_string(),
        ]);
        match phase {
            Some(phase) => Ok(Self { phase, coherence }),
            None => bail!(
                "{}: no phase image ({stem}{PHASE_SUFFIX} or {PHASE_ALT_NAME})",
                dir.display()
            ),
        }
    }

    /// The canonical LiCSAR names under `root`, for writing an interferogram
    /// (`<p>_<s>.geo.diff.png` and `<p>_<s>.geo.cc.png`); nothing is checked on disk.
    pub fn canonical(root: &Path, frame_id: &str, primary: Date, secondary: Date) -> Self {
        let dir = interferogram_dir(root, frame_id, primary, secondary);
        let stem = format!("{primary}_{secondary}");
        Self {
            phase: dir.join(format!("{stem}{PHASE_SUFFIX}")),
            coherence: Some(dir.join(format!("{stem}{COHERENCE_SUFFIX}"))),
        }
    }

    /// The coherence file, or an error naming the interferogram folder.
    pub fn require_coherence(&self) -> Result<&Path> {
        self.coherence.as_deref().with_context(|| {
            let dir = self.phase.parent().unwrap_or(Path::new("."));
            format!(
                "{}: no coherence image (*{COHERENCE_SUFFIX} or {COHERENCE_ALT_NAME})",
                dir.display()
            )
        })
    }
}

/// Which channels the model sees.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum InputFormat {
    /// `[phase preview as gray, coherence]`, each in [0, 1] (the reference's 2 channels).
    PhaseCoherence,
    /// `[phase preview as gray]` only (what the reference patch loaders use).
    Phase,
    /// `[cos φ, sin φ, coherence]`, the wrapped phase read back from the preview's colours
    /// (`data::colormap::decode_preview`: RdYlBu_r or the GAMMA rainbow, chosen per
    /// image); 0 where a pixel has no hue. Independent of the rendering style and of the
    /// amplitude brightness, unlike the gray of the preview. The default: on the built-in
    /// data a classifier learns from it and not from the gray (README, heads).
    #[default]
    CosSinCoherence,
}

impl InputFormat {
    pub fn channels(self) -> usize {
        match self {
            InputFormat::PhaseCoherence => 2,
            InputFormat::Phase => 1,
            InputFormat::CosSinCoherence => 3,
        }
    }

    /// Channel names, in order.
    pub fn channel_names(self) -> &'static [&'static str] {
        match self {
            InputFormat::PhaseCoherence => &["phase_gray", "coherence"],
            InputFormat::Phase => &["phase_gray"],
            InputFormat::CosSinCoherence => &["cos_phase", "sin_phase", "coherence"],
        }
    }

    /// Whether this format reads the coherence image.
    pub fn needs_coherence(self) -> bool {
        !matches!(self, InputFormat::Phase)
    }
}

/// A model input with its no-data mask.
#[derive(Debug, Clone)]
pub struct FrameInput {
    /// `C × H × W` in the channel order of the [`InputFormat`]; 0 in every channel where
    /// the pixel is no-data.
    pub image: Image,
    /// 1 where the pixel is valid, 0 where a source image is transparent (no-data).
    pub valid: ClassMask,
}

impl FrameInput {
    /// Share of valid pixels.
    pub fn valid_fraction(&self) -> f64 {
        let n = self.valid.data.len().max(1);
        self.valid.data.iter().filter(|&&v| v != 0).count() as f64 / n as f64
    }
}

/// Converts decoded phase (and coherence) PNGs into model input.
pub fn input_from_pngs(
    phase: &Png,
    coherence: Option<&Png>,
    format: InputFormat,
) -> Result<FrameInput> {
    let (h, w) = (phase.height, phase.width);
    let mut valid: Vec<bool> = phase.valid();
    let mut planes: Vec<Vec<f32>> = match format {
        InputFormat::CosSinCoherence => {
            ensure!(
                phase.is_color(),
                "input format cos-sin-coherence reads the phase from the preview's colours, \
                 but this phase image is grayscale; use phase-coherence"
            );
            let (_, phi) = crate::data::colormap::decode_preview(&phase.rgb8(), &valid);
            let (cos, sin) = phi
                .iter()
                .map(|p| {
                    if p.is_nan() {
                        (0.0, 0.0)
                    } else {
                        (p.cos(), p.sin())
                    }
                })
                .unzip();
            vec![cos, sin]
        }
        InputFormat::PhaseCoherence | InputFormat::Phase => vec![to_unit(&phase.gray())],
    };
    if format.needs_coherence() {
        let cc = coherence.context("the input format needs a coherence image")?;
        ensure!(
            (cc.height, cc.width) == (h, w),
            "coherence is {}×{} but the phase image is {h}×{w}",
            cc.height,
            cc.width
        );
        for (v, c) in valid.iter_mut().zip(cc.valid()) {
            *v &= c;
        }
        planes.push(to_unit(&cc.gray()));
    }
    for plane in &mut planes {
        for (p, &ok) in plane.iter_mut().zip(&valid) {
            if !ok {
                *p = 0.0;
            }
        }
    }
    let refs: Vec<&[f32]> = planes.iter().map(|p| p.as_slice()).collect();
    Ok(FrameInput {
        image: Image::from_planes(h, w, &refs)?,
        valid: ClassMask {
            height: h,
            width: w,
            data: valid.into_iter().map(u8::from).collect(),
        },
    })
}

fn to_unit(gray: &[u8]) -> Vec<f32> {
    gray.iter().map(|&g| f32::from(g) / 255.0).collect()
}

/// Reads one interferogram's files into model input; errors name the file.
pub fn load_input(files: &InterferogramFiles, format: InputFormat) -> Result<FrameInput> {
    let phase = Png::read(&files.phase)?;
    let coherence = if format.needs_coherence() {
        Some(Png::read(files.require_coherence()?)?)
    } else {
        None
    };
    input_from_pngs(&phase, coherence.as_ref(), format)
        .with_context(|| format!("{}", files.phase.display()))
}

/// Every interferogram folder under a raw root: `(frameID, primary, secondary)`, sorted.
/// Folders whose name is not `<YYYYMMDD>_<YYYYMMDD>` are skipped.
pub fn list_interferograms(root: &Path) -> Result<Vec<(String, Date, Date)>> {
    let mut out = Vec::new();
    let frames =
        std::fs::read_dir(root).with_context(|| format!("{}: cannot list", root.display()))?;
    for frame in frames {
        let frame = frame.with_context(|| format!("{}: cannot list", root.display()))?;
        let ifg_root = frame.path().join("interferograms");
        if !ifg_root.is_dir() {
            continue;
        }
        let frame_id = frame.file_name().to_string_lossy().into_owned();
        for ifg in std::fs::read_dir(&ifg_root)
            .with_context(|| format!("{}: cannot list", ifg_root.display()))?
        {
            let ifg = ifg.with_context(|| format!("{}: cannot list", ifg_root.display()))?;
            let name = ifg.file_name().to_string_lossy().into_owned();
            let Some((p, s)) = name.split_once('_') else {
                continue;
            };
            if let (Ok(p), Ok(s)) = (p.parse::<Date>(), s.parse::<Date>()) {
                out.push((frame_id.clone(), p, s));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::png::{encode_png, PngColor};

    #[test]
    fn transparent_pixels_are_zero_in_every_channel() {
        // 2×1 RGBA phase: pixel 0 opaque white, pixel 1 transparent red.
        let phase = Png::decode(
            &encode_png(2, 1, PngColor::Rgba, &[255, 255, 255, 255, 255, 0, 0, 0]).unwrap(),
        )
        .unwrap();
        let cc = Png::decode(&encode_png(2, 1, PngColor::Gray, &[51, 102]).unwrap()).unwrap();
        let input = input_from_pngs(&phase, Some(&cc), InputFormat::PhaseCoherence).unwrap();
        assert_eq!(input.image.channels, 2);
        assert_eq!(input.image.data, vec![1.0, 0.0, 0.2, 0.0]);
        assert_eq!(input.valid.data, vec![1, 0]);
        assert_eq!(input.valid_fraction(), 0.5);
        let only = input_from_pngs(&phase, None, InputFormat::Phase).unwrap();
        assert_eq!(only.image.channels, 1);
        assert!(input_from_pngs(&phase, None, InputFormat::PhaseCoherence).is_err());
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let phase = Png::decode(&encode_png(2, 1, PngColor::Gray, &[1, 2]).unwrap()).unwrap();
        let cc = Png::decode(&encode_png(1, 1, PngColor::Gray, &[1]).unwrap()).unwrap();
        let err = input_from_pngs(&phase, Some(&cc), InputFormat::PhaseCoherence).unwrap_err();
        assert!(err.to_string().contains("coherence is 1×1"), "{err}");
    }

    #[test]
    fn cos_sin_reads_the_phase_back_from_the_preview_colours() {
        use crate::data::colormap::rdylbu_color;
        let phases = [-3.0f32, -1.0, 0.5, 2.5];
        let mut rgba = Vec::new();
        for &p in &phases {
            rgba.extend_from_slice(&rdylbu_color(p));
            rgba.push(255);
        }
        rgba[15] = 0; // the last pixel is no-data
        let phase = Png::decode(&encode_png(4, 1, PngColor::Rgba, &rgba).unwrap()).unwrap();
        let cc =
            Png::decode(&encode_png(4, 1, PngColor::Gray, &[255, 128, 0, 9]).unwrap()).unwrap();
        let input = input_from_pngs(&phase, Some(&cc), InputFormat::CosSinCoherence).unwrap();
        assert_eq!(input.image.channels, 3);
        for (x, &p) in phases.iter().enumerate().take(3) {
            assert!(
                (input.image.get(0, 0, x) - p.cos()).abs() < 0.03,
                "cos at {x}"
            );
            assert!(
                (input.image.get(1, 0, x) - p.sin()).abs() < 0.03,
                "sin at {x}"
            );
        }
        assert_eq!(input.image.get(2, 0, 2), 0.0);
        assert!((input.image.get(2, 0, 1) - 128.0 / 255.0).abs() < 1e-6);
        assert_eq!([0, 1, 2].map(|c| input.image.get(c, 0, 3)), [0.0; 3]);

        let gray = Png::decode(&encode_png(4, 1, PngColor::Gray, &[1, 2, 3, 4]).unwrap()).unwrap();
        let err = input_from_pngs(&gray, Some(&cc), InputFormat::CosSinCoherence).unwrap_err();
        assert!(err.to_string().contains("grayscale"), "{err}");
    }
}
