//! Rendering of wrapped phase and coherence the way LiCSAR previews look (notes §7):
//! `.geo.diff.png` (RGBA, transparent no-data) in both LiCSAR styles, `.geo.cc.png`
//! (8-bit gray + alpha, transparent no-data), and the optional float wrapped phase as a
//! NumPy `.npy` file (`<f4`, shape `(height, width)`, NaN for no data) readable with
//! `numpy.load`.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use super::fastmath::pow_approx_slice;
use super::grid::{Field, Geometry};
use crate::data::atomic::write_atomic;
use crate::data::colormap::{gamma_index, rdylbu_color, round_half_away, GAMMA_RAINBOW};
use crate::data::png::{write_png, PngColor};

/// LiCSAR preview style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    /// From October 2020 (GMT): RdYlBu_r over [−π, π], no amplitude.
    Licsar2020,
    /// Before October 2020 (GAMMA `rasmph_pwr`): 16-colour rainbow × amplitude brightness.
    Gamma,
}

/// GAMMA brightness exponent and scale (`rasmph_pwr` defaults).
pub const GAMMA_EXPONENT: f32 = 0.35;
pub const GAMMA_SCALE: f32 = 1.0;

fn check(geometry: Geometry, len: usize, what: &str) -> Result<()> {
    ensure!(
        len == geometry.len(),
        "{what} has {len} pixels, expected {}×{} = {}",
        geometry.width,
        geometry.height,
        geometry.len()
    );
    Ok(())
}

/// RGBA of a wrapped phase in the post-2020 LiCSAR style; pixels where `valid` is false
/// (or the phase is not finite) are transparent black.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub fn render_licsar2020(phase: &Field, valid: &[bool]) -> Result<Vec<u8>> {
    check(phase.geometry, valid.len(), "validity mask")?;
    let mut out = vec![0u8; phase.data.len() * 4];
    for (i, (&p, &ok)) in phase.data.iter().zip(valid).enumerate() {
        if ok && p.is_finite() {
            let c = rdylbu_color(p);
            out[4 * i..4 * i + 4].copy_from_slice(&[c[0], c[1], c[2], 255]);
        }
    }
    Ok(out)
}

/// Options of the pre-2020 GAMMA style.
#[derive(Debug, Clone, Copy)]
pub struct GammaStyle<'a> {
    /// Backscatter power (e.g. `terrain::amplitude`); brightness
    /// `clip((P/mean P)^0.35·scale, 0, 1)` with the mean over valid pixels.
    pub amplitude: &'a Field,
    /// Pixels with coherence below `cc_min` are drawn as gray backscatter (GAMMA's
    /// `cc_min`, default 0.2), when a coherence map is given.
    pub coherence: Option<&'a Field>,
    pub cc_min: f32,
}

/// RGBA of a wrapped phase in the pre-2020 GAMMA style (transparent no-data).
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub fn render_gamma(phase: &Field, valid: &[bool], style: &GammaStyle) -> Result<Vec<u8>> {
    check(phase.geometry, valid.len(), "validity mask")?;
    check(phase.geometry, style.amplitude.data.len(), "amplitude")?;
    if let Some(c) = style.coherence {
        check(phase.geometry, c.data.len(), "coherence")?;
    }
    let (sum, n) = style
        .amplitude
        .data
        .iter()
        .zip(valid)
        .filter(|(a, &ok)| ok && a.is_finite())
        .fold((0.0f64, 0usize), |(s, n), (&a, _)| {
            (s + a.max(0.0) as f64, n + 1)
        });
    let mean = if n > 0 && sum > 0.0 {
        (sum / n as f64) as f32
    } else {
        1.0
    };
    // (P/P̄)^0.35 for every pixel in one vectorised pass.
    let mut brightness: Vec<f32> = style
        .amplitude
        .data
        .iter()
        .map(|a| a.max(0.0) / mean)
        .collect();
    pow_approx_slice(&mut brightness, GAMMA_EXPONENT);
    // One path per pixel with selects: low coherence is white × brightness, i.e. gray;
    // invalid pixels stay transparent black.
    let mut out = vec![0u8; phase.data.len() * 4];
    for (i, (px, (&p, &ok))) in out
        .chunks_exact_mut(4)
        .zip(phase.data.iter().zip(valid))
        .enumerate()
    {
        let v = (brightness[i] * GAMMA_SCALE).clamp(0.0, 1.0);
        let low = style.coherence.is_some_and(|c| c.data[i] < style.cc_min);
        let c = if low {
            [255, 255, 255]
        } else {
            GAMMA_RAINBOW[gamma_index(p)]
        };
        let rgba = [
            round_half_away(c[0] as f32 * v) as u8,
            round_half_away(c[1] as f32 * v) as u8,
            round_half_away(c[2] as f32 * v) as u8,
            255,
        ];
        px.copy_from_slice(&if ok && p.is_finite() { rgba } else { [0; 4] });
    }
    Ok(out)
}

/// Gray + alpha bytes of a coherence map: `round(255·clamp(γ, 0, 1))`, transparent where
/// `valid` is false.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub fn render_coherence(coherence: &Field, valid: &[bool]) -> Result<Vec<u8>> {
    check(coherence.geometry, valid.len(), "validity mask")?;
    let mut out = vec![0u8; coherence.data.len() * 2];
    for (i, (&c, &ok)) in coherence.data.iter().zip(valid).enumerate() {
        if ok && c.is_finite() {
            out[2 * i] = round_half_away(255.0 * c.clamp(0.0, 1.0)) as u8;
            out[2 * i + 1] = 255;
        }
    }
    Ok(out)
}

/// Writes `<path>` (a `.geo.diff.png`) in `style`; `gamma` is required for [`Style::Gamma`].
pub fn write_diff_png(
    path: &Path,
    phase: &Field,
    valid: &[bool],
    style: Style,
    gamma: Option<&GammaStyle>,
) -> Result<()> {
    let rgba = match style {
        Style::Licsar2020 => render_licsar2020(phase, valid),
        Style::Gamma => match gamma {
            Some(g) => render_gamma(phase, valid, g),
            None => bail!("the GAMMA style needs an amplitude image"),
        },
    }
    .with_context(|| format!("{}: cannot render the phase", path.display()))?;
    let g = phase.geometry;
    write_png(path, g.width, g.height, PngColor::Rgba, &rgba)
}

/// Writes `<path>` (a `.geo.cc.png`).
pub fn write_cc_png(path: &Path, coherence: &Field, valid: &[bool]) -> Result<()> {
    let la = render_coherence(coherence, valid)
        .with_context(|| format!("{}: cannot render the coherence", path.display()))?;
    let g = coherence.geometry;
    write_png(path, g.width, g.height, PngColor::GrayAlpha, &la)
}

/// Bytes of a NumPy v1.0 `.npy` file holding the wrapped phase (`<f4`, C order,
/// shape `(height, width)`), NaN where `valid` is false.
pub fn encode_phase_npy(phase: &Field, valid: &[bool]) -> Result<Vec<u8>> {
    check(phase.geometry, valid.len(), "validity mask")?;
    let g = phase.geometry;
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        g.height, g.width
    );
    // Magic (6) + version (2) + header length (2) + header + '\n', padded to 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * g.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for (&p, &ok) in phase.data.iter().zip(valid) {
        let v = if ok { p } else { f32::NAN };
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Writes the float wrapped phase atomically as `.npy` (see [`encode_phase_npy`]).
pub fn write_phase_npy(path: &Path, phase: &Field, valid: &[bool]) -> Result<()> {
    let bytes = encode_phase_npy(phase, valid)
        .with_context(|| format!("{}: cannot encode", path.display()))?;
    write_atomic(path, &bytes)
}

/// Reads a `.npy` written by [`write_phase_npy`] (any 2-D little-endian `<f4` C-order
/// array) as `(width, height, values)`, with a clear error naming the file otherwise.
pub fn read_phase_npy(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    decode_phase_npy(&bytes)
        .with_context(|| format!("{}: not a float phase .npy file", path.display()))
}

/// Parses the bytes of a 2-D `<f4` `.npy` file (see [`read_phase_npy`]).
pub fn decode_phase_npy(bytes: &[u8]) -> Result<(usize, usize, Vec<f32>)> {
    ensure!(
        bytes.len() >= 10 && &bytes[..6] == b"\x93NUMPY",
        "missing the .npy magic"
    );
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "truncated header");
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => bail!("unsupported .npy version {v}"),
    };
    ensure!(bytes.len() >= start + hlen, "truncated header");
    let header = std::str::from_utf8(&bytes[start..start + hlen]).context("header is not UTF-8")?;
    ensure!(
        header.contains("'descr': '<f4'"),
        "dtype is not little-endian float32 ('<f4'): {header}"
    );
    ensure!(
        header.contains("'fortran_order': False"),
        "Fortran-order arrays are not supported"
    );
    let shape = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .context("no shape in the header")?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("bad shape ({shape})"))?;
    ensure!(dims.len() == 2, "expected a 2-D array, shape is ({shape})");
    let (h, w) = (dims[0], dims[1]);
    let data = &bytes[start + hlen..];
    ensure!(
        data.len() == 4 * w * h,
        "{} data bytes for shape ({h}, {w}), expected {}",
        data.len(),
        4 * w * h
    );
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((w, h, values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::colormap::{gamma_phase, nearest, rdylbu_phase, rdylbu_r};
    use crate::data::png::Png;
    use std::f32::consts::{PI, TAU};

    fn ramp(g: Geometry) -> Field {
        let mut f = Field::zeros(g);
        for (i, v) in f.data.iter_mut().enumerate() {
            *v = -PI + TAU * (i as f32 + 0.5) / g.len() as f32;
        }
        f
    }

    #[test]
    fn licsar2020_round_trips_through_the_png_and_no_data_is_transparent() {
        let g = Geometry::new(37, 11, 370.0);
        let phase = ramp(g);
        let valid: Vec<bool> = (0..g.len()).map(|i| i % 7 != 3).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.geo.diff.png");
        write_diff_png(&path, &phase, &valid, Style::Licsar2020, None).unwrap();
        let png = Png::read(&path).unwrap();
        assert_eq!((png.width, png.height), (37, 11));
        assert_eq!(png.valid(), valid);
        let rgb = png.rgb8();
        for i in 0..g.len() {
            if valid[i] {
                let k = nearest(rdylbu_r(), [rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]]);
                assert!((rdylbu_phase(k) - phase.data[i]).abs() <= 1.5 * TAU / 256.0);
            }
        }
    }

    #[test]
    fn gamma_style_brightness_and_low_coherence_gray() {
        let g = Geometry::new(16, 1, 370.0);
        let phase = ramp(g);
        let valid = vec![true; 16];
        let mut amp = Field::zeros(g);
        amp.data
            .iter_mut()
            .enumerate()
            .for_each(|(i, a)| *a = if i < 8 { 1.0 } else { 0.1 });
        let style = GammaStyle {
            amplitude: &amp,
            coherence: None,
            cc_min: 0.2,
        };
        let rgba = render_gamma(&phase, &valid, &style).unwrap();
        // Mean power 0.55: bright half saturates (V = 1) with the exact rainbow colours.
        for i in 0..8 {
            let c = [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]];
            let k = nearest(&GAMMA_RAINBOW, c);
            assert_eq!(c, GAMMA_RAINBOW[k]);
            assert!(
                crate::synth::coherence::wrap(gamma_phase(k) - phase.data[i]).abs()
                    <= TAU / 32.0 + 1e-5
            );
            assert_eq!(rgba[4 * i + 3], 255);
        }
        // The dark half is dimmed by (0.1/0.55)^0.35.
        let v = (0.1f32 / 0.55).powf(0.35);
        let i = 12;
        let c = GAMMA_RAINBOW[gamma_index(phase.data[i])];
        assert_eq!(rgba[4 * i], (c[0] as f32 * v).round() as u8);
        // Low coherence → gray.
        let mut coh = Field::zeros(g);
        coh.data[3] = 0.1;
        coh.data.iter_mut().skip(4).for_each(|c| *c = 0.9);
        let style = GammaStyle {
            amplitude: &amp,
            coherence: Some(&coh),
            cc_min: 0.2,
        };
        let rgba = render_gamma(&phase, &valid, &style).unwrap();
        assert_eq!(&rgba[12..16], &[255, 255, 255, 255]);
        assert_ne!(rgba[4 * 5], rgba[4 * 5 + 1]);
        // Without an amplitude image the GAMMA style is an error, not a panic.
        let err =
            write_diff_png(Path::new("x.png"), &phase, &valid, Style::Gamma, None).unwrap_err();
        assert!(format!("{err:#}").contains("amplitude"));
    }

    #[test]
    fn coherence_png_is_gray_with_transparent_no_data() {
        let g = Geometry::new(4, 2, 370.0);
        let coh = Field {
            geometry: g,
            data: vec![0.0, 0.5, 1.0, 1.5, -0.2, f32::NAN, 0.25, 0.75],
        };
        let valid = vec![true, true, true, true, true, true, false, true];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.geo.cc.png");
        write_cc_png(&path, &coh, &valid).unwrap();
        let png = Png::read(&path).unwrap();
        assert!(!png.is_color());
        assert_eq!(png.gray(), vec![0, 128, 255, 255, 0, 0, 0, 191]);
        assert_eq!(
            png.valid(),
            vec![true, true, true, true, true, false, false, true]
        );
        assert!(render_coherence(&coh, &[true]).is_err());
    }

    #[test]
    fn phase_npy_round_trip_and_errors() {
        let g = Geometry::new(5, 3, 370.0);
        let phase = ramp(g);
        let mut valid = vec![true; 15];
        valid[4] = false;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.geo.diff.npy");
        write_phase_npy(&path, &phase, &valid).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((bytes.len() - 4 * 15) % 64, 0, "header aligned to 64 bytes");
        let (w, h, v) = read_phase_npy(&path).unwrap();
        assert_eq!((w, h), (5, 3));
        for (i, (&got, &want)) in v.iter().zip(&phase.data).enumerate() {
            if i == 4 {
                assert!(got.is_nan());
            } else {
                assert_eq!(got, want);
            }
        }
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let err = format!("{:#}", read_phase_npy(&path).unwrap_err());
        assert!(
            err.contains("a.geo.diff.npy") && err.contains("data bytes"),
            "{err}"
        );
        assert!(decode_phase_npy(b"garbage").is_err());
    }
}
