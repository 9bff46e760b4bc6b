//! PNG reading and writing with the pixel semantics of the reference code.
//!
//! Reading accepts every PNG colour type (gray, gray+alpha, RGB, RGBA, palette, with or
//! without `tRNS` transparency) at 1–16 bits. Gray values are those of OpenCV's
//! `cv.imread(path, 0)`, which the reference code uses everywhere (libpng's RGB→gray with
//! OpenCV's coefficients 0.299/0.587 in 1.15 fixed point, truncated for 8-bit samples and
//! rounded for 16-bit ones, then the high byte; alpha is dropped, not composited).
//! Checked against OpenCV 4.6 and 5.0 by `tests/fixtures/opencv/`. Colour management
//! chunks (`gAMA`, `iCCP`) are ignored: for a file with a non-unity `gAMA`, libpng converts
//! in linear light and the gray values can differ.
//!
//! Transparency marks no-data: [`Png::valid`] is false where alpha is 0.

use std::io::{BufReader, Cursor};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use image::codecs::png::{CompressionType, FilterType, PngDecoder, PngEncoder};
use image::{DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder};

use super::atomic::write_atomic;

/// libpng's fixed-point RGB→gray coefficients for OpenCV's `png_set_rgb_to_gray(…, 0.299,
/// 0.587)`: `red = 29900·32768/100000`, `green = 58700·32768/100000` (truncated), blue the rest.
const RED_COEF: u32 = 9797;
const GREEN_COEF: u32 = 19234;
const BLUE_COEF: u32 = 32768 - RED_COEF - GREEN_COEF;

/// The environment variable that raises (or lowers) the largest image side read, in pixels.
pub const MAX_SIDE_ENV: &str = "INSAR_MM_MAX_IMAGE_SIDE";
/// The environment variable for the largest decoded image, in MiB.
pub const MAX_MIB_ENV: &str = "INSAR_MM_MAX_IMAGE_MB";

/// The largest image every PNG read accepts: a file whose header claims more is refused
/// before its pixels are allocated (a 74-byte file can claim 100000×100000 pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest width and height, in pixels.
    pub max_side: u32,
    /// Largest decoded size (all channels and bits), in bytes.
    pub max_bytes: u64,
}

impl Default for ImageLimits {
    /// 16384 pixels per side, 1 GiB decoded (a 16384² RGBA image).
    fn default() -> Self {
        Self {
            max_side: 16384,
            max_bytes: 1 << 30,
        }
    }
}

impl ImageLimits {
    /// The defaults, overridden by `INSAR_MM_MAX_IMAGE_SIDE` (pixels) and
    /// `INSAR_MM_MAX_IMAGE_MB` (MiB) when set.
    pub fn from_env() -> Result<Self> {
        let mut limits = Self::default();
        let read = |name: &str| -> Result<Option<u64>> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .map(Some)
                    .with_context(|| format!("{name} = {v:?} must be a positive integer")),
                Err(_) => Ok(None),
            }
        };
        if let Some(side) = read(MAX_SIDE_ENV)? {
            limits.max_side = u32::try_from(side).unwrap_or(u32::MAX);
        }
        if let Some(mib) = read(MAX_MIB_ENV)? {
            limits.max_bytes = mib.saturating_mul(1 << 20);
        }
        Ok(limits)
    }

    /// Refuses a `width`×`height` image of `bytes` decoded bytes beyond the limits.
    pub fn check(&self, width: u32, height: u32, bytes: u64) -> Result<()> {
        if width > self.max_side || height > self.max_side || bytes > self.max_bytes {
            bail!(
                "the header claims {width}×{height} pixels ({} MiB decoded), beyond the image \
                 size limit of {} pixels per side and {} MiB; if the file is genuine, raise \
                 the limit with {MAX_SIDE_ENV}=<pixels> and {MAX_MIB_ENV}=<MiB>",
                bytes.div_ceil(1 << 20),
                self.max_side,
                self.max_bytes / (1 << 20)
            );
        }
        Ok(())
    }
}

/// Samples of a decoded PNG, 8 or 16 bits, with alpha when the file has transparency.
#[derive(Debug, Clone)]
enum Samples {
    Gray8(Vec<u8>),
    GrayA8(Vec<u8>),
    Rgb8(Vec<u8>),
    Rgba8(Vec<u8>),
    Gray16(Vec<u16>),
    GrayA16(Vec<u16>),
    Rgb16(Vec<u16>),
    Rgba16(Vec<u16>),
}

/// A decoded PNG.
#[derive(Debug, Clone)]
pub struct Png {
    pub width: usize,
    pub height: usize,
    samples: Samples,
}

#[inline]
fn luma8(r: u8, g: u8, b: u8) -> u8 {
    ((RED_COEF * u32::from(r) + GREEN_COEF * u32::from(g) + BLUE_COEF * u32::from(b)) >> 15) as u8
}

#[inline]
fn luma16_to_8(r: u16, g: u16, b: u16) -> u8 {
    let gray16 =
        (RED_COEF * u32::from(r) + GREEN_COEF * u32::from(g) + BLUE_COEF * u32::from(b) + 16384)
            >> 15;
    (gray16 >> 8) as u8
}

/// Refuses palette chunks that the `png` crate (0.18) indexes out of bounds and panics on
/// instead of reporting (found by the fuzzer, `fuzz/regressions/png/`): a `PLTE` that is
/// not a whole number of RGB entries or holds more than 256, and a `tRNS` with more alpha
/// values than the palette has entries. Other malformations are left to the decoder.
fn check_palette_chunks(bytes: &[u8]) -> Result<()> {
    const SIGNATURE: usize = 8;
    let mut at = SIGNATURE;
    let mut palette_entries = None;
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = &header[4..8];
        match kind {
            b"PLTE" => {
                ensure!(
                    len % 3 == 0 && (3..=768).contains(&len),
                    "malformed PNG: its PLTE chunk of {len} bytes is not 1 to 256 RGB entries"
                );
                palette_entries = Some(len / 3);
            }
            b"tRNS" => {
                if let Some(entries) = palette_entries {
                    ensure!(
                        len <= entries,
                        "malformed PNG: its tRNS chunk holds {len} alpha values for a palette of \
                         {entries} entries"
                    );
                }
            }
            b"IDAT" | b"IEND" => break,
            _ => {}
        }
        // Length, type, data, CRC.
        at = at.saturating_add(12).saturating_add(len);
    }
    Ok(())
}

impl Png {
    /// Decodes a PNG file; any failure names the file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Self::decode(&bytes).with_context(|| format!("{}: not a readable PNG", path.display()))
    }

    /// Decodes PNG bytes within [`ImageLimits::from_env`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_with_limits(bytes, ImageLimits::from_env()?)
    }

    /// Decodes PNG bytes; a header larger than `limits` is refused before any pixel memory
    /// is allocated.
    pub fn decode_with_limits(bytes: &[u8], limits: ImageLimits) -> Result<Self> {
        check_palette_chunks(bytes)?;
        let decoder = PngDecoder::with_limits(
            BufReader::new(Cursor::new(bytes)),
            image::Limits::no_limits(),
        )?;
        let (w, h) = decoder.dimensions();
        limits.check(w, h, decoder.total_bytes())?;
        let mut image_limits = image::Limits::no_limits();
        image_limits.max_image_width = Some(limits.max_side);
        image_limits.max_image_height = Some(limits.max_side);
        image_limits.max_alloc = Some(limits.max_bytes.saturating_mul(2));
        let mut decoder = decoder;
        decoder.set_limits(image_limits)?;
        let image = DynamicImage::from_decoder(decoder)?;
        let (width, height) = (image.width() as usize, image.height() as usize);
        let samples = match image {
            DynamicImage::ImageLuma8(b) => Samples::Gray8(b.into_raw()),
            DynamicImage::ImageLumaA8(b) => Samples::GrayA8(b.into_raw()),
            DynamicImage::ImageRgb8(b) => Samples::Rgb8(b.into_raw()),
            DynamicImage::ImageRgba8(b) => Samples::Rgba8(b.into_raw()),
            DynamicImage::ImageLuma16(b) => Samples::Gray16(b.into_raw()),
            DynamicImage::ImageLumaA16(b) => Samples::GrayA16(b.into_raw()),
            DynamicImage::ImageRgb16(b) => Samples::Rgb16(b.into_raw()),
            DynamicImage::ImageRgba16(b) => Samples::Rgba16(b.into_raw()),
            other => bail!("unsupported PNG colour type {:?}", other.color()),
        };
        if width == 0 || height == 0 {
            bail!("empty image ({width}×{height})");
        }
        Ok(Self {
            width,
            height,
            samples,
        })
    }

    /// The samples of a single-channel gray PNG (8 or 16 bit) as integers, e.g. the class
    /// ids of a label map; `None` for other colour types.
    pub fn label_values(&self) -> Option<Vec<u32>> {
        match &self.samples {
            Samples::Gray8(v) => Some(v.iter().map(|&x| u32::from(x)).collect()),
            Samples::Gray16(v) => Some(v.iter().map(|&x| u32::from(x)).collect()),
            _ => None,
        }
    }

    /// Whether the file carries transparency (an alpha channel or `tRNS`).
    pub fn has_alpha(&self) -> bool {
        matches!(
            self.samples,
            Samples::GrayA8(_) | Samples::Rgba8(_) | Samples::GrayA16(_) | Samples::Rgba16(_)
        )
    }

    /// Whether the file is in colour (RGB, RGBA or palette).
    pub fn is_color(&self) -> bool {
        matches!(
            self.samples,
            Samples::Rgb8(_) | Samples::Rgba8(_) | Samples::Rgb16(_) | Samples::Rgba16(_)
        )
    }

    /// 8-bit gray exactly as `cv.imread(path, 0)` returns it.
    pub fn gray(&self) -> Vec<u8> {
        match &self.samples {
            Samples::Gray8(v) => v.clone(),
            Samples::GrayA8(v) => v.chunks_exact(2).map(|p| p[0]).collect(),
            Samples::Rgb8(v) => v.chunks_exact(3).map(|p| luma8(p[0], p[1], p[2])).collect(),
            Samples::Rgba8(v) => v.chunks_exact(4).map(|p| luma8(p[0], p[1], p[2])).collect(),
            Samples::Gray16(v) => v.iter().map(|&g| (g >> 8) as u8).collect(),
            Samples::GrayA16(v) => v.chunks_exact(2).map(|p| (p[0] >> 8) as u8).collect(),
            Samples::Rgb16(v) => v
                .chunks_exact(3)
                .map(|p| luma16_to_8(p[0], p[1], p[2]))
                .collect(),
            Samples::Rgba16(v) => v
                .chunks_exact(4)
                .map(|p| luma16_to_8(p[0], p[1], p[2]))
                .collect(),
        }
    }

    /// 8-bit alpha per pixel (255 everywhere for an opaque file). A 16-bit alpha keeps its
    /// high byte, but never drops to 0 unless it was 0, so validity survives the reduction.
    pub fn alpha(&self) -> Vec<u8> {
        let n = self.width * self.height;
        let alpha16 = |a: u16| if a == 0 { 0 } else { ((a >> 8) as u8).max(1) };
        match &self.samples {
            Samples::GrayA8(v) => v.chunks_exact(2).map(|p| p[1]).collect(),
            Samples::Rgba8(v) => v.chunks_exact(4).map(|p| p[3]).collect(),
            Samples::GrayA16(v) => v.chunks_exact(2).map(|p| alpha16(p[1])).collect(),
            Samples::Rgba16(v) => v.chunks_exact(4).map(|p| alpha16(p[3])).collect(),
            _ => vec![255; n],
        }
    }

    /// Per-pixel validity: false where the pixel is fully transparent (no-data).
    pub fn valid(&self) -> Vec<bool> {
        let n = self.width * self.height;
        match &self.samples {
            Samples::GrayA8(v) => v.chunks_exact(2).map(|p| p[1] > 0).collect(),
            Samples::Rgba8(v) => v.chunks_exact(4).map(|p| p[3] > 0).collect(),
            Samples::GrayA16(v) => v.chunks_exact(2).map(|p| p[1] > 0).collect(),
            Samples::Rgba16(v) => v.chunks_exact(4).map(|p| p[3] > 0).collect(),
            _ => vec![true; n],
        }
    }

    /// 8-bit RGB (16-bit samples keep their high byte, gray is replicated), the colour
    /// image `cv.imread(path)` returns (in RGB order).
    pub fn rgb8(&self) -> Vec<u8> {
        let hi = |v: u16| (v >> 8) as u8;
        match &self.samples {
            Samples::Gray8(v) => v.iter().flat_map(|&g| [g, g, g]).collect(),
            Samples::GrayA8(v) => v.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
            Samples::Rgb8(v) => v.clone(),
            Samples::Rgba8(v) => v.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
            Samples::Gray16(v) => v.iter().flat_map(|&g| [hi(g); 3]).collect(),
            Samples::GrayA16(v) => v.chunks_exact(2).flat_map(|p| [hi(p[0]); 3]).collect(),
            Samples::Rgb16(v) => v.iter().map(|&s| hi(s)).collect(),
            Samples::Rgba16(v) => v
                .chunks_exact(4)
                .flat_map(|p| [hi(p[0]), hi(p[1]), hi(p[2])])
                .collect(),
        }
    }
}

/// The colour layout of an 8-bit image to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PngColor {
    Gray,
    GrayAlpha,
    Rgb,
    Rgba,
}

impl PngColor {
    pub fn channels(self) -> usize {
        match self {
            PngColor::Gray => 1,
            PngColor::GrayAlpha => 2,
            PngColor::Rgb => 3,
            PngColor::Rgba => 4,
        }
    }
}

/// Encodes interleaved 8-bit samples as PNG (fast deflate: patch extraction writes many).
pub fn encode_png(width: usize, height: usize, color: PngColor, samples: &[u8]) -> Result<Vec<u8>> {
    anyhow::ensure!(
        samples.len() == width * height * color.channels(),
        "PNG data has {} samples, expected {width}×{height}×{}",
        samples.len(),
        color.channels()
    );
    let mut out = Vec::with_capacity(samples.len() / 2 + 128);
    let encoder =
        PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive);
    let color = match color {
        PngColor::Gray => ExtendedColorType::L8,
        PngColor::GrayAlpha => ExtendedColorType::La8,
        PngColor::Rgb => ExtendedColorType::Rgb8,
        PngColor::Rgba => ExtendedColorType::Rgba8,
    };
    encoder.write_image(samples, width as u32, height as u32, color)?;
    Ok(out)
}

/// Encodes and writes an 8-bit PNG atomically.
pub fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    color: PngColor,
    samples: &[u8],
) -> Result<()> {
    let bytes = encode_png(width, height, color, samples)
        .with_context(|| format!("{}: cannot encode PNG", path.display()))?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Palette chunks the png crate would panic on are errors (the fuzzer's crash input, and
    /// a tRNS longer than its palette); a valid palette PNG still decodes.
    #[test]
    fn malformed_palettes_are_errors_not_panics() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let crash = std::fs::read(root.join("fuzz/regressions/png/plte-49-bytes.png")).unwrap();
        let err = format!("{:#}", Png::decode(&crash).unwrap_err());
        assert!(err.contains("PLTE chunk of 49 bytes"), "{err}");
        let good = std::fs::read(root.join("tests/fixtures/opencv/palette_trns.png")).unwrap();
        Png::decode(&good).unwrap();
        // The same file with its tRNS chunk grown past the palette.
        let plte = good.windows(4).position(|w| w == b"PLTE").unwrap() - 4;
        let entries = u32::from_be_bytes(good[plte..plte + 4].try_into().unwrap()) / 3;
        let trns = good.windows(4).position(|w| w == b"tRNS").unwrap() - 4;
        let mut bad = good.clone();
        bad[trns..trns + 4].copy_from_slice(&(entries + 1).to_be_bytes());
        let err = format!("{:#}", Png::decode(&bad).unwrap_err());
        assert!(err.contains("tRNS chunk holds"), "{err}");
    }

    /// A tiny gray PNG whose header claims `width`×`height` pixels (one zlib byte of data).
    fn claims(width: u32, height: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
            out.extend((data.len() as u32).to_be_bytes());
            out.extend(kind);
            out.extend(data);
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            out.extend(crc.sum().to_be_bytes());
        }
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend(width.to_be_bytes());
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]);
        chunk(&mut png, b"IHDR", &ihdr);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut z, &[0u8; 64]).unwrap();
        chunk(&mut png, b"IDAT", &z.finish().unwrap());
        chunk(&mut png, b"IEND", &[]);
        png
    }

    #[test]
    fn a_header_claiming_a_huge_image_is_refused_before_allocation() {
        let bytes = claims(100_000, 100_000);
        assert!(bytes.len() < 80, "{} bytes", bytes.len());
        let err = format!("{:#}", Png::decode(&bytes).unwrap_err());
        assert!(
            err.contains("100000×100000") && err.contains(MAX_SIDE_ENV),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.png");
        std::fs::write(&path, &bytes).unwrap();
        let err = format!("{:#}", Png::read(&path).unwrap_err());
        assert!(err.contains("bomb.png") && err.contains("limit"), "{err}");
        // Within the side limit but beyond the bytes limit.
        let limits = ImageLimits {
            max_side: 200_000,
            max_bytes: 1 << 20,
        };
        let err = format!(
            "{:#}",
            Png::decode_with_limits(&claims(2000, 2000), limits).unwrap_err()
        );
        assert!(err.contains("4 MiB") && err.contains("limit"), "{err}");
        // A small real image decodes; raising the limits lets a header through to the
        // decoder (which then finds the data truncated).
        let ok = encode_png(8, 4, PngColor::Gray, &[7u8; 32]).unwrap();
        assert_eq!(Png::decode(&ok).unwrap().gray(), vec![7u8; 32]);
        let tight = ImageLimits {
            max_side: 4,
            max_bytes: 1 << 30,
        };
        assert!(Png::decode_with_limits(&ok, tight).is_err());
        let loose = ImageLimits {
            max_side: 1 << 20,
            max_bytes: 1 << 40,
        };
        let err = format!(
            "{:#}",
            Png::decode_with_limits(&claims(3000, 3000), loose).unwrap_err()
        );
        assert!(!err.contains("limit"), "{err}");
    }

    #[test]
    fn gray_of_equal_channels_is_the_channel() {
        for v in 0..=255u8 {
            assert_eq!(luma8(v, v, v), v);
            let w = u16::from(v) * 257;
            assert_eq!(luma16_to_8(w, w, w), v);
        }
    }

    #[test]
    fn encode_decode_round_trip_keeps_alpha_as_validity() {
        let samples: Vec<u8> = (0..4 * 3 * 2).map(|i| (i * 10) as u8).collect();
        let bytes = encode_png(3, 2, PngColor::Rgba, &samples).unwrap();
        let png = Png::decode(&bytes).unwrap();
        assert_eq!((png.width, png.height), (3, 2));
        assert!(png.has_alpha() && png.is_color());
        assert_eq!(png.alpha(), vec![30, 70, 110, 150, 190, 230]);
        let gray =
            Png::decode(&encode_png(2, 1, PngColor::GrayAlpha, &[7, 0, 9, 255]).unwrap()).unwrap();
        assert_eq!(gray.gray(), vec![7, 9]);
        assert_eq!(gray.valid(), vec![false, true]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Png::decode(b"not a png").is_err());
        let good = encode_png(4, 4, PngColor::Gray, &[1; 16]).unwrap();
        assert!(Png::decode(&good[..good.len() - 20]).is_err());
    }
}
