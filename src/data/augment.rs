//! InSAR augmentations for contrastive pretraining (and, with masks, for segmentation).
//!
//! Each view of an image is drawn independently from a seeded `ChaCha8Rng`. Geometric
//! transforms (crop, flips, rotation, elastic warp) move every channel of a view identically,
//! so phase and coherence stay aligned, and move an optional [`ClassMask`] the same way
//! (nearest-neighbour sampling, so class ids are never blended).
//!
//! The pipeline follows the Hephaestus SSL recipe (albumentations 1.3.0, config `c9e35a9`,
//! `shared/notes/hephaestus.md` §2.2), in its order: random resized crop → Gaussian blur →
//! horizontal flip → vertical flip → rotation → elastic → cutout → multiplicative noise →
//! Gaussian noise. Deliberate differences, each because the reference was ineffective or
//! buggy for InSAR:
//!
//! - **Gaussian noise**: albumentations' `GaussNoise` default `var_limit (10, 50)` is in
//!   8-bit pixel units; the reference applied it to images already in [0, 1] and then clipped,
//!   which turns most pixels into 0 or 1 (binary noise). Here σ is given in image units and
//!   the default, `σ ∈ [0.0124, 0.0277]`, is that same 3.2–7.1 gray-level noise expressed for
//!   the suite's [0, 1] inputs. Nothing is clipped unless `clip` is set (clipping would bias
//!   coherence near 0 and 1).
//! - **Rotation**: arbitrary-angle `Rotate(±90°)` with reflected borders invents content in
//!   the corners; rotations by multiples of 90° are exact and keep the phase texture, so
//!   `rot90` picks k ∈ {1, 2, 3} quarter turns (k = 2 only for non-square images, which must
//!   keep their shape within a batch).
//! - **Elastic**: albumentations' default `ElasticTransform(alpha=1, sigma=50)` displaces by
//!   hundredths of a pixel (its visible effect was the `alpha_affine` warp). Here the smoothed
//!   random displacement field is normalised to an RMS of `alpha · min(H, W)` pixels with
//!   smoothing length `sigma · min(H, W)`: by default 2 % and 5 % of the side (≈ 4.5 px
//!   displacement, 11 px correlation at 224²), so fringes bend without tearing.
//! - **Sizes are relative**: cutout holes and elastic lengths are fractions of the image side
//!   (the reference's 8×8 px holes at 224² = 0.0357), so the same config works at 64² and 224².
//! - **Resampling** uses a triangle filter whose support widens when shrinking (anti-aliased,
//!   like PIL/torchvision `antialias=True`): aliasing would create false fringes.
//!
//! Borders are reflected without repeating the edge pixel (OpenCV's `BORDER_REFLECT_101`,
//! albumentations' default).

use anyhow::{ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::array::{ClassMask, Image};

/// Random resized crop (torchvision `RandomResizedCrop` sampling).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CropConfig {
    pub p: f64,
    /// Range of the crop's area as a fraction of the image's.
    pub scale: [f64; 2],
    /// Range of the crop's width / height ratio (sampled log-uniformly).
    pub ratio: [f64; 2],
    /// Output `[height, width]`; `None` keeps the input size.
    pub size: Option<[usize; 2]>,
}

impl Default for CropConfig {
    fn default() -> Self {
        Self {
            p: 1.0,
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            size: None,
        }
    }
}

/// Gaussian blur with σ drawn uniformly (in pixels); kernel radius ⌈3σ⌉.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlurConfig {
    pub p: f64,
    pub sigma: [f64; 2],
}

impl Default for BlurConfig {
    fn default() -> Self {
        Self {
            p: 0.2,
            sigma: [0.1, 2.0],
        }
    }
}

/// Elastic warp by a smoothed random displacement field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElasticConfig {
    pub p: f64,
    /// RMS displacement as a fraction of the shorter image side.
    pub alpha: f64,
    /// Gaussian smoothing length of the field as a fraction of the shorter side.
    pub sigma: f64,
}

impl Default for ElasticConfig {
    fn default() -> Self {
        Self {
            p: 0.6,
            alpha: 0.02,
            sigma: 0.05,
        }
    }
}

/// Cutout / coarse dropout: rectangular holes set to `fill` in every channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CutoutConfig {
    pub p: f64,
    /// Inclusive range of the number of holes.
    pub holes: [usize; 2],
    /// Range of a hole's side as a fraction of the image side (height and width drawn
    /// independently); at least one pixel.
    pub size: [f64; 2],
    pub fill: f32,
    /// Class written into the mask under a hole; `None` leaves the mask unchanged.
    pub mask_fill: Option<u8>,
}

impl Default for CutoutConfig {
    fn default() -> Self {
        Self {
            p: 0.8,
            holes: [8, 8],
            size: [8.0 / 224.0, 8.0 / 224.0],
            fill: 0.0,
            mask_fill: None,
        }
    }
}

/// Multiplicative noise: the view times a factor drawn uniformly from `range`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultiplicativeNoiseConfig {
    pub p: f64,
    pub range: [f64; 2],
    /// One factor per pixel (shared by the channels) instead of one for the whole view.
    pub elementwise: bool,
}

impl Default for MultiplicativeNoiseConfig {
    fn default() -> Self {
        Self {
            p: 0.2,
            range: [0.9, 1.1],
            elementwise: false,
        }
    }
}

/// Additive zero-mean Gaussian noise, independent per pixel and channel, σ drawn uniformly
/// per view, in image units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GaussianNoiseConfig {
    pub p: f64,
    pub sigma: [f64; 2],
    /// Clamp the result to `[lo, hi]`.
    pub clip: Option<[f32; 2]>,
}

impl Default for GaussianNoiseConfig {
    fn default() -> Self {
        Self {
            p: 0.8,
            sigma: [10f64.sqrt() / 255.0, 50f64.sqrt() / 255.0],
            clip: None,
        }
    }
}

/// The augmentation pipeline; `Default` is the adjusted Hephaestus recipe (module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    pub crop: CropConfig,
    pub blur: BlurConfig,
    /// Probability of a horizontal (left–right) flip.
    pub hflip: f64,
    /// Probability of a vertical (top–bottom) flip.
    pub vflip: f64,
    /// Probability of a rotation by a random non-zero multiple of 90°.
    pub rot90: f64,
    pub elastic: ElasticConfig,
    pub cutout: CutoutConfig,
    pub multiplicative_noise: MultiplicativeNoiseConfig,
    pub gaussian_noise: GaussianNoiseConfig,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            crop: CropConfig::default(),
            blur: BlurConfig::default(),
            hflip: 0.2,
            vflip: 0.2,
            rot90: 0.5,
            elastic: ElasticConfig::default(),
            cutout: CutoutConfig::default(),
            multiplicative_noise: MultiplicativeNoiseConfig::default(),
            gaussian_noise: GaussianNoiseConfig::default(),
        }
    }
}

impl AugmentConfig {
    /// Every transform off (probability 0): the identity pipeline.
    pub fn none() -> Self {
        let mut c = Self::default();
        c.crop.p = 0.0;
        c.blur.p = 0.0;
        c.hflip = 0.0;
        c.vflip = 0.0;
        c.rot90 = 0.0;
        c.elastic.p = 0.0;
        c.cutout.p = 0.0;
        c.multiplicative_noise.p = 0.0;
        c.gaussian_noise.p = 0.0;
        c
    }

    /// Checks every field; errors name the field (`augment.crop.scale`, ...).
    pub fn validate(&self) -> Result<()> {
        let probs = [
            ("crop.p", self.crop.p),
            ("blur.p", self.blur.p),
            ("hflip", self.hflip),
            ("vflip", self.vflip),
            ("rot90", self.rot90),
            ("elastic.p", self.elastic.p),
            ("cutout.p", self.cutout.p),
            ("multiplicative_noise.p", self.multiplicative_noise.p),
            ("gaussian_noise.p", self.gaussian_noise.p),
        ];
        for (name, p) in probs {
            ensure!(
                (0.0..=1.0).contains(&p),
                "augment.{name} = {p:?} is not a probability in [0, 1]"
            );
        }
        let range = |name: &str, r: [f64; 2], lo: f64, hi: f64| -> Result<()> {
            ensure!(
                r[0] <= r[1] && r[0] >= lo && r[1] <= hi,
                "augment.{name} = {r:?} must be an increasing range within [{lo}, {hi}]"
            );
            Ok(())
        };
        range("crop.scale", self.crop.scale, f64::MIN_POSITIVE, 1.0)?;
        range("crop.ratio", self.crop.ratio, f64::MIN_POSITIVE, f64::MAX)?;
        if let Some([h, w]) = self.crop.size {
            ensure!(
                h > 0 && w > 0,
                "augment.crop.size = {:?} must be positive",
                [h, w]
            );
        }
        range("blur.sigma", self.blur.sigma, f64::MIN_POSITIVE, 1e3)?;
        ensure!(
            self.elastic.alpha >= 0.0 && self.elastic.alpha <= 1.0,
            "augment.elastic.alpha = {:?} must be in [0, 1] (fraction of the image side)",
            self.elastic.alpha
        );
        ensure!(
            self.elastic.sigma > 0.0 && self.elastic.sigma <= 1.0,
            "augment.elastic.sigma = {:?} must be in (0, 1] (fraction of the image side)",
            self.elastic.sigma
        );
        ensure!(
            self.cutout.holes[0] <= self.cutout.holes[1],
            "augment.cutout.holes = {:?} must be an increasing range",
            self.cutout.holes
        );
        range("cutout.size", self.cutout.size, 0.0, 1.0)?;
        ensure!(
            self.cutout.fill.is_finite(),
            "augment.cutout.fill must be finite"
        );
        range(
            "multiplicative_noise.range",
            self.multiplicative_noise.range,
            f64::MIN,
            f64::MAX,
        )?;
        range(
            "gaussian_noise.sigma",
            self.gaussian_noise.sigma,
            0.0,
            f64::MAX,
        )?;
        if let Some([lo, hi]) = self.gaussian_noise.clip {
            ensure!(
                lo <= hi,
                "augment.gaussian_noise.clip = {:?} must be increasing",
                [lo, hi]
            );
        }
        Ok(())
    }
}

/// The RNG of item `index` under `seed`: one independent ChaCha stream per item, so a
/// batch's results do not depend on how it is split across threads.
pub fn sample_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng
}

/// A validated [`AugmentConfig`], ready to draw views.
#[derive(Debug, Clone)]
pub struct Augmenter {
    cfg: AugmentConfig,
}

impl Augmenter {
    pub fn new(cfg: AugmentConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg })
    }

    pub fn config(&self) -> &AugmentConfig {
        &self.cfg
    }

    /// One augmented view of `image` (and of `mask`, which must have the image's size).
    pub fn apply(
        &self,
        image: &Image,
        mask: Option<&ClassMask>,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Image, Option<ClassMask>)> {
        check_image(image)?;
        if let Some(m) = mask {
            ensure!(
                (m.height, m.width) == (image.height, image.width)
                    && m.data.len() == m.height * m.width,
                "mask is {}×{}, image is {}×{}",
                m.height,
                m.width,
                image.height,
                image.width
            );
        }
        let c = &self.cfg;
        let mut img = image.clone();
        let mut mask = mask.cloned();

        let out_size = c.crop.size.unwrap_or([img.height, img.width]);
        if rng.random_bool(c.crop.p) {
            let rect = sample_crop(img.height, img.width, &c.crop, rng);
            img = resized_crop(&img, rect, out_size);
            mask = mask.map(|m| resized_crop_mask(&m, rect, out_size));
        } else if out_size != [img.height, img.width] {
            let full = CropRect {
                top: 0,
                left: 0,
                height: img.height,
                width: img.width,
            };
            img = resized_crop(&img, full, out_size);
            mask = mask.map(|m| resized_crop_mask(&m, full, out_size));
        }
        if rng.random_bool(c.blur.p) {
            let sigma = rng.random_range(c.blur.sigma[0]..=c.blur.sigma[1]);
            img = gaussian_blur(&img, sigma);
        }
        if rng.random_bool(c.hflip) {
            flip_horizontal(&mut img);
            if let Some(m) = mask.as_mut() {
                flip_mask_horizontal(m);
            }
        }
        if rng.random_bool(c.vflip) {
            flip_vertical(&mut img);
            if let Some(m) = mask.as_mut() {
                flip_mask_vertical(m);
            }
        }
        if rng.random_bool(c.rot90) {
            let k = if img.height == img.width {
                rng.random_range(1..=3)
            } else {
                2
            };
            img = rot90(&img, k);
            mask = mask.map(|m| rot90_mask(&m, k));
        }
        if rng.random_bool(c.elastic.p) {
            let field = DisplacementField::random(img.height, img.width, &c.elastic, rng);
            img = field.warp(&img);
            mask = mask.map(|m| field.warp_mask(&m));
        }
        if rng.random_bool(c.cutout.p) {
            let holes = sample_holes(img.height, img.width, &c.cutout, rng);
            cutout(&mut img, &holes, c.cutout.fill);
            if let (Some(m), Some(class)) = (mask.as_mut(), c.cutout.mask_fill) {
                cutout_mask(m, &holes, class);
            }
        }
        if rng.random_bool(c.multiplicative_noise.p) {
            let [lo, hi] = c.multiplicative_noise.range;
            if c.multiplicative_noise.elementwise {
                let n = img.height * img.width;
                let factors: Vec<f32> = (0..n).map(|_| rng.random_range(lo..=hi) as f32).collect();
                for plane in img.data.chunks_mut(n) {
                    plane.iter_mut().zip(&factors).for_each(|(v, f)| *v *= f);
                }
            } else {
                let f = rng.random_range(lo..=hi) as f32;
                img.data.iter_mut().for_each(|v| *v *= f);
            }
        }
        if rng.random_bool(c.gaussian_noise.p) {
            let [lo, hi] = c.gaussian_noise.sigma;
            let sigma = rng.random_range(lo..=hi) as f32;
            for v in img.data.iter_mut() {
                let z: f32 = StandardNormal.sample(rng);
                *v += sigma * z;
            }
            if let Some([lo, hi]) = c.gaussian_noise.clip {
                img.data.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
            }
        }
        Ok((img, mask))
    }

    /// Two independent views of `image` (SimCLR/MoCo positives).
    pub fn two_views(&self, image: &Image, rng: &mut ChaCha8Rng) -> Result<(Image, Image)> {
        let (a, _) = self.apply(image, None, rng)?;
        let (b, _) = self.apply(image, None, rng)?;
        Ok((a, b))
    }

    /// Two views of every image, in parallel; image `i` draws from `sample_rng(seed, i)`, so
    /// the result is the same whatever the thread count. Derive `seed` from the run seed and
    /// the step so that every step draws fresh views.
    pub fn two_views_batch(&self, images: &[&Image], seed: u64) -> Result<Vec<(Image, Image)>> {
        let pairs: Vec<(&Image, &Image)> = images.iter().map(|&im| (im, im)).collect();
        self.pair_views_batch(&pairs, seed)
    }

    /// One view of each image of every pair (`(a, a)` gives [`Self::two_views_batch`]),
    /// drawn as there.
    pub fn pair_views_batch(
        &self,
        pairs: &[(&Image, &Image)],
        seed: u64,
    ) -> Result<Vec<(Image, Image)>> {
        pairs
            .par_iter()
            .enumerate()
            .map(|(i, (a, b))| {
                let rng = &mut sample_rng(seed, i as u64);
                let views = (|| {
                    let (va, _) = self.apply(a, None, rng)?;
                    let (vb, _) = self.apply(b, None, rng)?;
                    anyhow::Ok((va, vb))
                })();
                views.with_context(|| format!("augmenting image {i} of the batch"))
            })
            .collect()
    }
}

fn check_image(image: &Image) -> Result<()> {
    ensure!(
        image.channels > 0 && image.height > 0 && image.width > 0,
        "cannot augment an empty {}×{}×{} image",
        image.channels,
        image.height,
        image.width
    );
    ensure!(
        image.data.len() == image.channels * image.height * image.width,
        "image data has {} values for {}×{}×{}",
        image.data.len(),
        image.channels,
        image.height,
        image.width
    );
    Ok(())
}

/// Index `i` reflected into `0..n` without repeating the edge (`BORDER_REFLECT_101`).
#[inline]
fn reflect101(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let mut i = i.rem_euclid(period);
    if i >= n as isize {
        i = period - i;
    }
    i as usize
}

/// A crop rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropRect {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// torchvision's `RandomResizedCrop.get_params`: ten tries at a random area and log-ratio,
/// else the largest centred crop within the ratio range.
pub fn sample_crop(h: usize, w: usize, cfg: &CropConfig, rng: &mut ChaCha8Rng) -> CropRect {
    let area = (h * w) as f64;
    let (log_lo, log_hi) = (cfg.ratio[0].ln(), cfg.ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.random_range(cfg.scale[0]..=cfg.scale[1]);
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let top = rng.random_range(0..=h - ch);
            let left = rng.random_range(0..=w - cw);
            return CropRect {
                top,
                left,
                height: ch,
                width: cw,
            };
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (ch, cw) = if in_ratio < cfg.ratio[0] {
        ((w as f64 / cfg.ratio[0]).round() as usize, w)
    } else if in_ratio > cfg.ratio[1] {
        (h, (h as f64 * cfg.ratio[1]).round() as usize)
    } else {
        (h, w)
    };
    let (ch, cw) = (ch.clamp(1, h), cw.clamp(1, w));
    CropRect {
        top: (h - ch) / 2,
        left: (w - cw) / 2,
        height: ch,
        width: cw,
    }
}

/// Per output index: first source index and normalised weights of a triangle filter
/// (bilinear when enlarging, anti-aliased area-like when shrinking; PIL's convention with
/// half-pixel centres). Source indices are clamped to `offset..offset + len`.
fn resample_weights(offset: usize, len: usize, n_out: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = len as f64 / n_out as f64;
    let support = scale.max(1.0);
    (0..n_out)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            let lo = ((centre - support).floor().max(0.0)) as usize;
            let hi = ((centre + support).ceil() as usize).min(len);
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| {
                    let d = (j as f64 + 0.5 - centre) / support;
                    (1.0 - d.abs()).max(0.0)
                })
                .collect();
            // Positive: the source pixel containing the centre has weight ≥ 1/2.
            let sum: f64 = w.iter().sum();
            w.iter_mut().for_each(|v| *v /= sum);
            (offset + lo, w.into_iter().map(|v| v as f32).collect())
        })
        .collect()
}

/// Crops `rect` out of `image` and resamples it to `[out_h, out_w]` (triangle filter).
pub fn resized_crop(image: &Image, rect: CropRect, [out_h, out_w]: [usize; 2]) -> Image {
    let rows = resample_weights(rect.top, rect.height, out_h);
    let cols = resample_weights(rect.left, rect.width, out_w);
    let mut out = Image::zeros(image.channels, out_h, out_w);
    let mut tmp = vec![0f32; rect.height * out_w];
    for c in 0..image.channels {
        let src = image.plane(c);
        // Horizontal pass over the crop's rows, then vertical.
        for y in 0..rect.height {
            let row = &src[(rect.top + y) * image.width..][..image.width];
            for (x, (start, w)) in cols.iter().enumerate() {
                tmp[y * out_w + x] = w
                    .iter()
                    .enumerate()
                    .map(|(k, wk)| wk * row[start + k])
                    .sum();
            }
        }
        let dst = out.plane_mut(c);
        for (y, (start, w)) in rows.iter().enumerate() {
            for x in 0..out_w {
                dst[y * out_w + x] = w
                    .iter()
                    .enumerate()
                    .map(|(k, wk)| wk * tmp[(start - rect.top + k) * out_w + x])
                    .sum();
            }
        }
    }
    out
}

/// Nearest-neighbour version of [`resized_crop`] for class masks (pixel centres aligned with
/// the image resampling).
pub fn resized_crop_mask(
    mask: &ClassMask,
    rect: CropRect,
    [out_h, out_w]: [usize; 2],
) -> ClassMask {
    let pick = |o: usize, len: usize, n_out: usize| -> usize {
        (((o as f64 + 0.5) * len as f64 / n_out as f64) as usize).min(len - 1)
    };
    let mut out = ClassMask::zeros(out_h, out_w);
    for y in 0..out_h {
        let sy = rect.top + pick(y, rect.height, out_h);
        for x in 0..out_w {
            let sx = rect.left + pick(x, rect.width, out_w);
            out.set(y, x, mask.get(sy, sx));
        }
    }
    out
}

/// Mirrors left–right.
pub fn flip_horizontal(image: &mut Image) {
    let w = image.width;
    image.data.chunks_mut(w).for_each(|row| row.reverse());
}

/// Mirrors top–bottom.
pub fn flip_vertical(image: &mut Image) {
    let (h, w) = (image.height, image.width);
    for plane in image.data.chunks_mut(h * w) {
        for y in 0..h / 2 {
            let (top, bottom) = plane.split_at_mut((h - 1 - y) * w);
            top[y * w..(y + 1) * w].swap_with_slice(&mut bottom[..w]);
        }
    }
}

pub fn flip_mask_horizontal(mask: &mut ClassMask) {
    let w = mask.width;
    mask.data.chunks_mut(w).for_each(|row| row.reverse());
}

pub fn flip_mask_vertical(mask: &mut ClassMask) {
    let (h, w) = (mask.height, mask.width);
    for y in 0..h / 2 {
        let (top, bottom) = mask.data.split_at_mut((h - 1 - y) * w);
        top[y * w..(y + 1) * w].swap_with_slice(&mut bottom[..w]);
    }
}

/// Source `(y, x)` of output `(y, x)` after `k` counter-clockwise quarter turns of an
/// `h × w` plane (`numpy.rot90` convention).
#[inline]
fn rot90_source(k: u32, y: usize, x: usize, h: usize, w: usize) -> (usize, usize) {
    match k % 4 {
        0 => (y, x),
        1 => (x, w - 1 - y),
        2 => (h - 1 - y, w - 1 - x),
        _ => (h - 1 - x, y),
    }
}

fn rotated_dims(k: u32, h: usize, w: usize) -> (usize, usize) {
    if k % 2 == 1 {
        (w, h)
    } else {
        (h, w)
    }
}

/// Rotates by `k` quarter turns counter-clockwise (odd `k` swaps height and width).
pub fn rot90(image: &Image, k: u32) -> Image {
    let (h, w) = (image.height, image.width);
    let (oh, ow) = rotated_dims(k, h, w);
    let mut out = Image::zeros(image.channels, oh, ow);
    for c in 0..image.channels {
        let src = image.plane(c);
        let dst = out.plane_mut(c);
        for y in 0..oh {
            for x in 0..ow {
                let (sy, sx) = rot90_source(k, y, x, h, w);
                dst[y * ow + x] = src[sy * w + sx];
            }
        }
    }
    out
}

pub fn rot90_mask(mask: &ClassMask, k: u32) -> ClassMask {
    let (h, w) = (mask.height, mask.width);
    let (oh, ow) = rotated_dims(k, h, w);
    let mut out = ClassMask::zeros(oh, ow);
    for y in 0..oh {
        for x in 0..ow {
            let (sy, sx) = rot90_source(k, y, x, h, w);
            out.set(y, x, mask.get(sy, sx));
        }
    }
    out
}

/// Normalised 1-D Gaussian taps for σ (pixels), radius ⌈3σ⌉ (at least 1).
fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as isize;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    k.into_iter().map(|v| (v / s) as f32).collect()
}

/// Convolves `src` (length `n`, reflected borders) with `kernel` into `dst`, using `padded`
/// as scratch: the reflection is resolved once per line, not once per tap.
fn convolve_line(
    src: impl Fn(usize) -> f32,
    n: usize,
    kernel: &[f32],
    padded: &mut Vec<f32>,
    dst: &mut [f32],
) {
    let r = kernel.len() / 2;
    padded.clear();
    padded.extend((0..n + 2 * r).map(|i| src(reflect101(i as isize - r as isize, n))));
    for (x, out) in dst.iter_mut().enumerate().take(n) {
        *out = padded[x..x + kernel.len()]
            .iter()
            .zip(kernel)
            .map(|(a, k)| a * k)
            .sum();
    }
}

/// Separable Gaussian blur of an `h × w` plane in place, reflected borders.
fn blur_plane(plane: &mut [f32], h: usize, w: usize, kernel: &[f32], tmp: &mut Vec<f32>) {
    tmp.resize(h * w, 0.0);
    let mut padded = Vec::new();
    for y in 0..h {
        let row = &plane[y * w..(y + 1) * w];
        convolve_line(
            |i| row[i],
            w,
            kernel,
            &mut padded,
            &mut tmp[y * w..(y + 1) * w],
        );
    }
    let mut column = vec![0f32; h];
    for x in 0..w {
        convolve_line(|i| tmp[i * w + x], h, kernel, &mut padded, &mut column);
        for (y, v) in column.iter().enumerate() {
            plane[y * w + x] = *v;
        }
    }
}

/// Gaussian blur of every channel with standard deviation `sigma` pixels.
pub fn gaussian_blur(image: &Image, sigma: f64) -> Image {
    let kernel = gaussian_kernel(sigma);
    let mut out = image.clone();
    let (h, w) = (image.height, image.width);
    let mut tmp = Vec::new();
    for plane in out.data.chunks_mut(h * w) {
        blur_plane(plane, h, w, &kernel, &mut tmp);
    }
    out
}

/// A per-pixel displacement `(dy, dx)` in pixels.
#[derive(Debug, Clone)]
pub struct DisplacementField {
    height: usize,
    width: usize,
    dy: Vec<f32>,
    dx: Vec<f32>,
}

impl DisplacementField {
    /// Standard-normal noise per pixel and axis, Gaussian-smoothed over `sigma · side`
    /// pixels, scaled to an RMS displacement of `alpha · side` pixels.
    ///
    /// The field is smooth at the scale σ, so it is drawn and smoothed on a grid coarser by
    /// `⌊σ/2⌋` and interpolated bilinearly: the same kind of field at a small fraction of the
    /// cost of smoothing full-resolution noise with a 6σ-wide kernel.
    pub fn random(h: usize, w: usize, cfg: &ElasticConfig, rng: &mut ChaCha8Rng) -> Self {
        let side = h.min(w) as f64;
        let sigma = (cfg.sigma * side).max(0.5);
        let step = ((sigma / 2.0).floor() as usize).max(1);
        let (gh, gw) = (h.div_ceil(step) + 1, w.div_ceil(step) + 1);
        let kernel = gaussian_kernel(sigma / step as f64);
        let mut tmp = Vec::new();
        let mut draw = |rng: &mut ChaCha8Rng| -> Vec<f32> {
            let mut coarse: Vec<f32> = (0..gh * gw).map(|_| StandardNormal.sample(rng)).collect();
            blur_plane(&mut coarse, gh, gw, &kernel, &mut tmp);
            if step == 1 && (gh, gw) == (h + 1, w + 1) {
                // Full resolution: drop the extra row and column.
                return (0..h * w).map(|i| coarse[(i / w) * gw + i % w]).collect();
            }
            let mut fine = vec![0f32; h * w];
            for y in 0..h {
                let gy = y as f32 / step as f32;
                let (y0, fy) = (gy.floor() as usize, gy.fract());
                for x in 0..w {
                    let gx = x as f32 / step as f32;
                    let (x0, fx) = (gx.floor() as usize, gx.fract());
                    let at = |yy: usize, xx: usize| coarse[yy * gw + xx];
                    let top = at(y0, x0) * (1.0 - fx) + at(y0, x0 + 1) * fx;
                    let bottom = at(y0 + 1, x0) * (1.0 - fx) + at(y0 + 1, x0 + 1) * fx;
                    fine[y * w + x] = top * (1.0 - fy) + bottom * fy;
                }
            }
            fine
        };
        let mut dy = draw(rng);
        let mut dx = draw(rng);
        let ms: f64 = dy
            .iter()
            .chain(&dx)
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            / (h * w) as f64;
        let scale = if ms > 0.0 {
            (cfg.alpha * side / ms.sqrt()) as f32
        } else {
            0.0
        };
        dy.iter_mut().chain(dx.iter_mut()).for_each(|v| *v *= scale);
        Self {
            height: h,
            width: w,
            dy,
            dx,
        }
    }

    /// RMS displacement length in pixels.
    pub fn rms(&self) -> f64 {
        let n = (self.height * self.width) as f64;
        (self
            .dy
            .iter()
            .chain(&self.dx)
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            / n)
            .sqrt()
    }

    /// `out(y, x) = in(y + dy, x + dx)`, bilinear, reflected borders.
    pub fn warp(&self, image: &Image) -> Image {
        let (h, w) = (self.height, self.width);
        let mut out = Image::zeros(image.channels, h, w);
        for i in 0..h * w {
            let sy = (i / w) as f32 + self.dy[i];
            let sx = (i % w) as f32 + self.dx[i];
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = (sy - y0, sx - x0);
            let (y0, x0) = (y0 as isize, x0 as isize);
            let ys = [reflect101(y0, h), reflect101(y0 + 1, h)];
            let xs = [reflect101(x0, w), reflect101(x0 + 1, w)];
            for c in 0..image.channels {
                let p = image.plane(c);
                let top = p[ys[0] * w + xs[0]] * (1.0 - fx) + p[ys[0] * w + xs[1]] * fx;
                let bottom = p[ys[1] * w + xs[0]] * (1.0 - fx) + p[ys[1] * w + xs[1]] * fx;
                out.data[c * h * w + i] = top * (1.0 - fy) + bottom * fy;
            }
        }
        out
    }

    /// Nearest-neighbour warp of a class mask.
    pub fn warp_mask(&self, mask: &ClassMask) -> ClassMask {
        let (h, w) = (self.height, self.width);
        let mut out = ClassMask::zeros(h, w);
        for i in 0..h * w {
            let sy = ((i / w) as f32 + self.dy[i]).round() as isize;
            let sx = ((i % w) as f32 + self.dx[i]).round() as isize;
            out.data[i] = mask.get(reflect101(sy, h), reflect101(sx, w));
        }
        out
    }
}

/// Draws the cutout holes (as crop rectangles) for an `h × w` image.
pub fn sample_holes(h: usize, w: usize, cfg: &CutoutConfig, rng: &mut ChaCha8Rng) -> Vec<CropRect> {
    let n = rng.random_range(cfg.holes[0]..=cfg.holes[1]);
    (0..n)
        .map(|_| {
            let side = |len: usize, rng: &mut ChaCha8Rng| -> usize {
                let f = rng.random_range(cfg.size[0]..=cfg.size[1]);
                ((f * len as f64).round() as usize).clamp(1, len)
            };
            let (hh, hw) = (side(h, rng), side(w, rng));
            let top = rng.random_range(0..=h - hh);
            let left = rng.random_range(0..=w - hw);
            CropRect {
                top,
                left,
                height: hh,
                width: hw,
            }
        })
        .collect()
}

/// Sets every pixel of `holes` to `fill` in every channel.
pub fn cutout(image: &mut Image, holes: &[CropRect], fill: f32) {
    let (h, w) = (image.height, image.width);
    for plane in image.data.chunks_mut(h * w) {
        for r in holes {
            for y in r.top..r.top + r.height {
                plane[y * w + r.left..y * w + r.left + r.width].fill(fill);
            }
        }
    }
}

pub fn cutout_mask(mask: &mut ClassMask, holes: &[CropRect], class: u8) {
    let w = mask.width;
    for r in holes {
        for y in r.top..r.top + r.height {
            mask.data[y * w + r.left..y * w + r.left + r.width].fill(class);
        }
    }
}

/// Parses an [`AugmentConfig`] from TOML text (every field optional; defaults fill gaps).
pub fn config_from_toml(text: &str) -> Result<AugmentConfig> {
    let cfg: AugmentConfig = toml::from_str(text).context("parsing augmentation config")?;
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth two-channel test image with distinct values everywhere.
    fn test_image(h: usize, w: usize) -> Image {
        let mut im = Image::zeros(2, h, w);
        for y in 0..h {
            for x in 0..w {
                im.set(
                    0,
                    y,
                    x,
                    ((x as f32) * 0.37 + (y as f32) * 0.11).sin() + y as f32 * 0.01,
                );
                im.set(1, y, x, (x * w + y) as f32 / (h * w) as f32);
            }
        }
        im
    }

    /// A blocky mask (8×8 blocks of classes 0..6).
    fn block_mask(h: usize, w: usize) -> ClassMask {
        let mut m = ClassMask::zeros(h, w);
        for y in 0..h {
            for x in 0..w {
                m.set(y, x, ((y / 8 + 3 * (x / 8)) % 7) as u8);
            }
        }
        m
    }

    /// Image whose both channels equal the mask's class ids.
    fn image_of_mask(m: &ClassMask) -> Image {
        let plane: Vec<f32> = m.data.iter().map(|&v| v as f32).collect();
        Image::from_planes(m.height, m.width, &[&plane, &plane]).unwrap()
    }

    #[test]
    fn flips_and_rotations_are_exact_involutions() {
        let im = test_image(6, 9);
        let mut a = im.clone();
        flip_horizontal(&mut a);
        assert_ne!(a, im);
        assert_eq!(a.get(1, 2, 0), im.get(1, 2, 8));
        flip_horizontal(&mut a);
        assert_eq!(a, im);
        flip_vertical(&mut a);
        assert_eq!(a.get(0, 0, 3), im.get(0, 5, 3));
        flip_vertical(&mut a);
        assert_eq!(a, im);

        let r1 = rot90(&im, 1);
        assert_eq!((r1.height, r1.width), (9, 6));
        // Counter-clockwise: the top-right corner moves to the top-left.
        assert_eq!(r1.get(0, 0, 0), im.get(0, 0, 8));
        let mut r = im.clone();
        for _ in 0..4 {
            r = rot90(&r, 1);
        }
        assert_eq!(r, im);
        assert_eq!(rot90(&rot90(&im, 1), 3), im);
        let mut twice = im.clone();
        flip_horizontal(&mut twice);
        flip_vertical(&mut twice);
        assert_eq!(rot90(&im, 2), twice);

        let m = block_mask(6, 9);
        let mut mm = m.clone();
        flip_mask_horizontal(&mut mm);
        flip_mask_horizontal(&mut mm);
        flip_mask_vertical(&mut mm);
        flip_mask_vertical(&mut mm);
        assert_eq!(mm, m);
        let mut r = m.clone();
        for _ in 0..4 {
            r = rot90_mask(&r, 1);
        }
        assert_eq!(r, m);
    }

    #[test]
    fn crop_sampling_respects_scale_ratio_and_bounds() {
        let cfg = CropConfig {
            scale: [0.2, 0.5],
            ratio: [0.5, 2.0],
            ..Default::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..500 {
            let r = sample_crop(100, 80, &cfg, &mut rng);
            assert!(r.top + r.height <= 100 && r.left + r.width <= 80);
            let area = (r.height * r.width) as f64 / 8000.0;
            let ratio = r.width as f64 / r.height as f64;
            // Rounding to whole pixels moves area and ratio slightly.
            assert!((0.18..=0.52).contains(&area), "{area}");
            assert!((0.45..=2.2).contains(&ratio), "{ratio}");
        }
        // An impossible ratio falls back to the centred crop within the range.
        let cfg = CropConfig {
            scale: [1.0, 1.0],
            ratio: [2.0, 2.0],
            ..Default::default()
        };
        let r = sample_crop(10, 10, &cfg, &mut rng);
        assert_eq!(
            r,
            CropRect {
                top: 2,
                left: 0,
                height: 5,
                width: 10
            }
        );
    }

    #[test]
    fn resized_crop_sizes_and_identity() {
        let im = test_image(12, 10);
        let full = CropRect {
            top: 0,
            left: 0,
            height: 12,
            width: 10,
        };
        assert_eq!(resized_crop(&im, full, [12, 10]), im);
        let rect = CropRect {
            top: 2,
            left: 3,
            height: 5,
            width: 4,
        };
        let out = resized_crop(&im, rect, [7, 9]);
        assert_eq!((out.channels, out.height, out.width), (2, 7, 9));
        // Same-size crop = plain copy of the window.
        let copy = resized_crop(&im, rect, [5, 4]);
        assert_eq!(copy.get(1, 0, 0), im.get(1, 2, 3));
        assert_eq!(copy.get(0, 4, 3), im.get(0, 6, 6));
        // Downscaling a constant image keeps it constant; a checkerboard averages to its mean
        // (anti-aliasing) instead of aliasing to a stripe pattern.
        let mut checker = Image::zeros(1, 16, 16);
        for y in 0..16 {
            for x in 0..16 {
                checker.set(0, y, x, ((x + y) % 2) as f32);
            }
        }
        let small = resized_crop(
            &checker,
            CropRect {
                top: 0,
                left: 0,
                height: 16,
                width: 16,
            },
            [4, 4],
        );
        // (Border outputs renormalise a truncated filter, hence the tolerance.)
        assert!(
            small.data.iter().all(|v| (v - 0.5).abs() < 0.01),
            "{:?}",
            small.data
        );
        // The configured output size is honoured even with the crop switched off.
        let mut cfg = AugmentConfig::none();
        cfg.crop.size = Some([6, 5]);
        let (out, m) = Augmenter::new(cfg)
            .unwrap()
            .apply(
                &im,
                Some(&block_mask(12, 10)),
                &mut ChaCha8Rng::seed_from_u64(0),
            )
            .unwrap();
        assert_eq!((out.height, out.width), (6, 5));
        assert_eq!(m.map(|m| (m.height, m.width)), Some((6, 5)));
    }

    #[test]
    fn blur_preserves_constants_and_means() {
        let im = Image::from_vec(2, 7, 9, vec![0.3; 2 * 63]).unwrap();
        let b = gaussian_blur(&im, 1.7);
        assert!(b.data.iter().all(|v| (v - 0.3).abs() < 1e-6));
        // On a periodic-free image the reflected border keeps the mean close; blur lowers
        // the variance.
        let im = test_image(32, 32);
        let b = gaussian_blur(&im, 2.0);
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        let var = |v: &[f32]| {
            let m = mean(v);
            v.iter().map(|x| (x - m).powi(2)).sum::<f32>() / v.len() as f32
        };
        assert!((mean(b.plane(0)) - mean(im.plane(0))).abs() < 0.02);
        assert!(var(b.plane(0)) < var(im.plane(0)));
        // σ larger than the image still works (reflection wraps).
        let tiny = gaussian_blur(&test_image(2, 3), 5.0);
        assert!(tiny.data.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn cutout_zeroes_only_the_holes() {
        let im = test_image(20, 20);
        let cfg = CutoutConfig {
            holes: [3, 3],
            size: [0.1, 0.2],
            ..Default::default()
        };
        let holes = sample_holes(20, 20, &cfg, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(holes.len(), 3);
        let mut out = im.clone();
        cutout(&mut out, &holes, -7.0);
        for c in 0..2 {
            for y in 0..20 {
                for x in 0..20 {
                    let inside = holes.iter().any(|r| {
                        (r.top..r.top + r.height).contains(&y)
                            && (r.left..r.left + r.width).contains(&x)
                    });
                    let v = out.get(c, y, x);
                    if inside {
                        assert_eq!(v, -7.0);
                    } else {
                        assert_eq!(v, im.get(c, y, x));
                    }
                }
            }
        }
        for r in &holes {
            assert!(
                (2..=4).contains(&r.height) && (2..=4).contains(&r.width),
                "{r:?}"
            );
        }
    }

    #[test]
    fn gaussian_noise_has_the_configured_statistics() {
        let im = Image::from_vec(2, 128, 128, vec![0.5; 2 * 128 * 128]).unwrap();
        let mut cfg = AugmentConfig::none();
        cfg.gaussian_noise = GaussianNoiseConfig {
            p: 1.0,
            sigma: [0.02, 0.02],
            clip: None,
        };
        let aug = Augmenter::new(cfg).unwrap();
        let (out, _) = aug
            .apply(&im, None, &mut ChaCha8Rng::seed_from_u64(2))
            .unwrap();
        let noise: Vec<f64> = out.data.iter().map(|v| (*v - 0.5) as f64).collect();
        let n = noise.len() as f64;
        let mean = noise.iter().sum::<f64>() / n;
        let std = (noise.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 0.02 * 4.0 / n.sqrt(), "mean {mean}");
        assert!((std / 0.02 - 1.0).abs() < 0.02, "std {std}");
        // Not binary: on a [0, 1] image most pixels stay strictly inside (0, 1).
        assert!(out.data.iter().all(|v| *v > 0.3 && *v < 0.7));
        // The channels get independent noise.
        assert_ne!(out.plane(0), out.plane(1));
        // Default σ is the reference's 8-bit variance 10–50 rescaled to [0, 1].
        let d = GaussianNoiseConfig::default();
        assert!((d.sigma[0] - 0.0124).abs() < 1e-4 && (d.sigma[1] - 0.0277).abs() < 1e-4);
    }

    #[test]
    fn multiplicative_noise_scales_within_range() {
        let im = test_image(16, 16);
        let mut cfg = AugmentConfig::none();
        cfg.multiplicative_noise.p = 1.0;
        let aug = Augmenter::new(cfg.clone()).unwrap();
        let (out, _) = aug
            .apply(&im, None, &mut ChaCha8Rng::seed_from_u64(5))
            .unwrap();
        // One factor for the whole view.
        let f = out.data[5] / im.data[5];
        assert!((0.9..=1.1).contains(&f));
        for (o, i) in out.data.iter().zip(&im.data) {
            assert!((o - i * f).abs() < 1e-5);
        }
        cfg.multiplicative_noise.elementwise = true;
        let (out, _) = Augmenter::new(cfg)
            .unwrap()
            .apply(&im, None, &mut ChaCha8Rng::seed_from_u64(5))
            .unwrap();
        let ratios: Vec<f32> = out
            .plane(1)
            .iter()
            .zip(im.plane(1))
            .skip(1)
            .map(|(o, i)| o / i)
            .collect();
        assert!(ratios.iter().all(|r| (0.9 - 1e-5..=1.1 + 1e-5).contains(r)));
        assert!(ratios.windows(2).any(|w| (w[0] - w[1]).abs() > 1e-3));
        // Per pixel the factor is shared by both channels.
        let r0 = out.get(0, 3, 4) / im.get(0, 3, 4);
        let r1 = out.get(1, 3, 4) / im.get(1, 3, 4);
        assert!((r0 - r1).abs() < 1e-4);
    }

    #[test]
    fn elastic_has_the_configured_strength_and_is_the_identity_at_zero() {
        let cfg = ElasticConfig {
            p: 1.0,
            alpha: 0.03,
            sigma: 0.1,
        };
        let field = DisplacementField::random(64, 64, &cfg, &mut ChaCha8Rng::seed_from_u64(1));
        assert!((field.rms() - 0.03 * 64.0).abs() < 1e-3, "{}", field.rms());
        let zero = ElasticConfig { alpha: 0.0, ..cfg };
        let field = DisplacementField::random(16, 16, &zero, &mut ChaCha8Rng::seed_from_u64(1));
        let im = test_image(16, 16);
        assert_eq!(field.warp(&im), im);
        let m = block_mask(16, 16);
        assert_eq!(field.warp_mask(&m), m);
    }

    #[test]
    fn same_seed_same_views_whatever_the_thread_count() {
        let images: Vec<Image> = (0..6).map(|i| test_image(24 + i % 2, 24)).collect();
        let refs: Vec<&Image> = images.iter().collect();
        let aug = Augmenter::new(AugmentConfig::default()).unwrap();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| aug.two_views_batch(&refs, 42).unwrap())
        };
        let a = run(1);
        let b = run(3);
        for ((a1, a2), (b1, b2)) in a.iter().zip(&b) {
            assert_eq!(a1, b1);
            assert_eq!(a2, b2);
            assert_ne!(a1, a2, "the two views must differ");
        }
        // Sample i equals a direct call with its stream; another seed differs.
        let (v1, _) = aug.two_views(&images[3], &mut sample_rng(42, 3)).unwrap();
        assert_eq!(v1, a[3].0);
        let c = aug.two_views_batch(&refs, 43).unwrap();
        assert_ne!(c[0].0, a[0].0);
        // Non-square images keep their shape (rotation by 180° only).
        for (v1, v2) in &a {
            assert!(v1.width == 24 && v2.width == 24);
        }
        assert_eq!(a[1].0.height, 25);
    }

    #[test]
    fn masks_stay_aligned_with_images() {
        let m = block_mask(48, 48);
        let im = image_of_mask(&m);
        let mut cfg = AugmentConfig::default();
        // Geometry only (photometric changes would break the image = mask comparison).
        cfg.blur.p = 0.0;
        cfg.cutout.p = 0.0;
        cfg.multiplicative_noise.p = 0.0;
        cfg.gaussian_noise.p = 0.0;
        cfg.hflip = 0.5;
        cfg.vflip = 0.5;
        cfg.elastic.p = 0.5;
        cfg.crop.size = Some([40, 40]);
        let aug = Augmenter::new(cfg).unwrap();
        for seed in 0..30 {
            let (out, om) = aug.apply(&im, Some(&m), &mut sample_rng(7, seed)).unwrap();
            let om = om.unwrap();
            assert_eq!((om.height, om.width), (out.height, out.width));
            // Where the resampled image is an integer and so are its 8 neighbours, we are well
            // inside a block: the mask must hold that class there. (Blends across block edges
            // can hit an integer by coincidence, hence the neighbourhood test.)
            let (h, w) = (out.height, out.width);
            let p = out.plane(0);
            let mut checked = 0;
            let mut agree = 0;
            for y in 1..h - 1 {
                for x in 1..w - 1 {
                    let v = p[y * w + x];
                    let interior = (v - v.round()).abs() < 1e-3
                        && (0..9)
                            .all(|k| (p[(y + k / 3 - 1) * w + x + k % 3 - 1] - v).abs() < 1e-3);
                    if interior {
                        checked += 1;
                        agree += usize::from(om.get(y, x) as f32 == v.round());
                    }
                }
            }
            assert!(checked > 200, "seed {seed}: only {checked} interior pixels");
            assert!(
                agree as f64 >= 0.995 * checked as f64,
                "seed {seed}: {agree}/{checked} agree"
            );
            // Both channels moved identically.
            assert_eq!(out.plane(0), out.plane(1));
        }
    }

    #[test]
    fn cutout_can_relabel_the_mask_and_bad_inputs_are_errors() {
        let m = block_mask(16, 16);
        let im = image_of_mask(&m);
        let mut cfg = AugmentConfig::none();
        cfg.cutout = CutoutConfig {
            p: 1.0,
            holes: [2, 2],
            size: [0.25, 0.25],
            fill: 0.0,
            mask_fill: Some(0),
        };
        let aug = Augmenter::new(cfg).unwrap();
        let (out, om) = aug
            .apply(&im, Some(&m), &mut ChaCha8Rng::seed_from_u64(0))
            .unwrap();
        let om = om.unwrap();
        for i in 0..256 {
            if out.data[i] == 0.0 {
                assert_eq!(om.data[i], 0);
            }
        }
        assert!(aug
            .apply(
                &im,
                Some(&block_mask(8, 16)),
                &mut ChaCha8Rng::seed_from_u64(0)
            )
            .is_err());
        let broken = Image {
            channels: 2,
            height: 4,
            width: 4,
            data: vec![0.0; 5],
        };
        assert!(aug
            .apply(&broken, None, &mut ChaCha8Rng::seed_from_u64(0))
            .is_err());

        let mut bad = AugmentConfig::default();
        bad.crop.scale = [0.5, 0.1];
        let err = Augmenter::new(bad).unwrap_err().to_string();
        assert!(err.contains("augment.crop.scale"), "{err}");
        let bad = AugmentConfig {
            hflip: 1.5,
            ..Default::default()
        };
        assert!(Augmenter::new(bad)
            .unwrap_err()
            .to_string()
            .contains("augment.hflip"));
        let err = config_from_toml("[blur]\nsigmaa = [1.0, 2.0]\n").unwrap_err();
        assert!(format!("{err:#}").contains("sigmaa"), "{err:#}");
    }

    #[test]
    fn toml_config_round_trip_with_defaults() {
        let cfg =
            config_from_toml("hflip = 0.5\n[gaussian_noise]\nsigma = [0.01, 0.05]\n").unwrap();
        assert_eq!(cfg.hflip, 0.5);
        assert_eq!(cfg.gaussian_noise.sigma, [0.01, 0.05]);
        assert_eq!(cfg.gaussian_noise.p, 0.8);
        assert_eq!(cfg.crop, CropConfig::default());
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(config_from_toml(&text).unwrap(), cfg);
    }

    /// Throughput of the default pipeline (two views per image, rayon over the batch):
    /// `cargo test --release --lib augment::tests::augment_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn augment_throughput() {
        for (size, batch) in [(64, 32), (224, 8), (224, 32)] {
            let images: Vec<Image> = (0..batch).map(|_| test_image(size, size)).collect();
            let refs: Vec<&Image> = images.iter().collect();
            let aug = Augmenter::new(AugmentConfig::default()).unwrap();
            aug.two_views_batch(&refs, 0).unwrap();
            let reps = 5;
            let t = std::time::Instant::now();
            for r in 0..reps {
                aug.two_views_batch(&refs, r).unwrap();
            }
            let per_batch = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "augment {size}² batch {batch}: {:.1} ms/batch, {:.0} views/s ({} rayon threads)",
                per_batch * 1e3,
                2.0 * batch as f64 / per_batch,
                rayon::current_num_threads()
            );
        }
    }
}
