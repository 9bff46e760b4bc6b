//! Contact sheets for people to look at (`insar-mm data gallery`): one tile per
//! interferogram with a patch of the phase preview, the outline of every annotated polygon
//! and the wrapped caption, drawn with the bundled DejaVu Sans.

use std::path::Path;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use anyhow::{bail, ensure, Context, Result};

use crate::assets::FONT_TTF;
use crate::data::annotation::Annotation;
use crate::data::png::{write_png, Png, PngColor};

const FONT_PX: f32 = 10.5;
const LINE_PX: usize = 12;
const MARGIN: usize = 4;
const BACKGROUND: [u8; 3] = [250, 250, 250];

/// An RGB image.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, fill: [u8; 3]) -> Self {
        Self {
            width,
            height,
            rgb: fill
                .iter()
                .copied()
                .cycle()
                .take(width * height * 3)
                .collect(),
        }
    }

    fn put(&mut self, x: i64, y: i64, c: [u8; 3], alpha: f32) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let i = 3 * (y as usize * self.width + x as usize);
        for (dst, &src) in self.rgb[i..i + 3].iter_mut().zip(&c) {
            let old = f32::from(*dst);
            *dst = (old + (f32::from(src) - old) * alpha.clamp(0.0, 1.0)).round() as u8;
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.put(x, y, c, 1.0);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn blit(&mut self, other: &Canvas, left: usize, top: usize) {
        for y in 0..other.height.min(self.height.saturating_sub(top)) {
            for x in 0..other.width.min(self.width.saturating_sub(left)) {
                let s = 3 * (y * other.width + x);
                let d = 3 * ((top + y) * self.width + left + x);
                self.rgb[d..d + 3].copy_from_slice(&other.rgb[s..s + 3]);
            }
        }
    }

    /// Writes the canvas as an RGB PNG (atomically).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_png(path, self.width, self.height, PngColor::Rgb, &self.rgb)
    }
}

fn font() -> Result<FontRef<'static>> {
    FontRef::try_from_slice(FONT_TTF).context("the bundled font cannot be read")
}

fn text_width(font: &FontRef, s: &str) -> f32 {
    let sf = font.as_scaled(PxScale::from(FONT_PX));
    let mut w = 0.0;
    let mut prev = None;
    for c in s.chars() {
        let id = sf.glyph_id(c);
        if let Some(p) = prev {
            w += sf.kern(p, id);
        }
        w += sf.h_advance(id);
        prev = Some(id);
    }
    w
}

/// Greedy word wrap to `width` pixels.
fn wrap(font: &FontRef, text: &str, width: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if text_width(font, &candidate) <= width || line.is_empty() {
            line = candidate;
        } else {
            lines.push(std::mem::take(&mut line));
            line = word.to_string();
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn draw_text(canvas: &mut Canvas, font: &FontRef, s: &str, x0: f32, top: f32, c: [u8; 3]) {
    let scale = PxScale::from(FONT_PX);
    let sf = font.as_scaled(scale);
    let mut x = x0;
    let mut prev = None;
    for ch in s.chars() {
        let id = sf.glyph_id(ch);
        if let Some(p) = prev {
            x += sf.kern(p, id);
        }
        let glyph = id.with_scale_and_position(scale, point(x, top + sf.ascent()));
        if let Some(o) = font.outline_glyph(glyph) {
            let b = o.px_bounds();
            o.draw(|gx, gy, cov| {
                canvas.put(
                    b.min.x as i64 + i64::from(gx),
                    b.min.y as i64 + i64::from(gy),
                    c,
                    cov,
                );
            });
        }
        x += sf.h_advance(id);
        prev = Some(id);
    }
}

/// One tile: a patch with polygon outlines and the text under it.
#[derive(Debug, Clone)]
pub struct Tile {
    pub image: Canvas,
    pub title: String,
    pub caption: String,
}

impl Tile {
    /// A `patch × patch` crop of the phase preview around the first polygon's centre (the
    /// frame centre when there is none), no-data drawn white as in Hephaestus crops, every
    /// polygon outlined.
    pub fn from_frame(png: &Png, a: &Annotation, patch: usize) -> Self {
        let (w, h) = (png.width, png.height);
        let rgb = png.rgb8();
        let valid = png.valid();
        let (cx, cy) = a
            .segmentation_mask
            .first()
            .map(|p| {
                let n = p.num_vertices().max(1) as f64;
                let (sx, sy) = p
                    .vertices()
                    .fold((0.0, 0.0), |(s, t), (x, y)| (s + x, t + y));
                (sx / n, sy / n)
            })
            .unwrap_or((w as f64 / 2.0, h as f64 / 2.0));
        let side_w = patch.min(w);
        let side_h = patch.min(h);
        let left = ((cx - side_w as f64 / 2.0).round().max(0.0) as usize).min(w - side_w);
        let top = ((cy - side_h as f64 / 2.0).round().max(0.0) as usize).min(h - side_h);
        let mut image = Canvas::new(patch, patch, [255, 255, 255]);
        for y in 0..side_h {
            for x in 0..side_w {
                let i = (top + y) * w + left + x;
                if valid[i] {
                    let d = 3 * (y * patch + x);
                    image.rgb[d..d + 3].copy_from_slice(&rgb[3 * i..3 * i + 3]);
                }
            }
        }
        for poly in &a.segmentation_mask {
            let v: Vec<(i64, i64)> = poly
                .integer_vertices()
                .into_iter()
                .map(|(x, y)| (x - left as i64, y - top as i64))
                .collect();
            for k in 0..v.len() {
                let (p, q) = (v[k], v[(k + 1) % v.len()]);
                image.line((p.0 + 1, p.1 + 1), (q.0 + 1, q.1 + 1), [255, 255, 255]);
                image.line(p, q, [0, 0, 0]);
            }
        }
        let types: Vec<String> = a
            .deformations()
            .iter()
            .map(|d| match d.intensity {
                crate::data::annotation::Intensity::None => d.activity.to_string(),
                i => format!("{} {}", d.activity, i),
            })
            .collect();
        let title = format!(
            "#{} {} | atm {}{}",
            a.unique_id,
            if types.is_empty() {
                "none".to_string()
            } else {
                types.join(", ")
            },
            a.atmospheric_fringes,
            if a.low_coherence > 0 {
                " | low coh"
            } else {
                ""
            }
        );
        Self {
            image,
            title,
            caption: a.clean_caption(),
        }
    }
}

/// Lays tiles out `columns` per row, each with its title and wrapped caption underneath.
pub fn contact_sheet(tiles: &[Tile], columns: usize) -> Result<Canvas> {
    if tiles.is_empty() || columns == 0 {
        bail!("nothing to draw");
    }
    let font = font()?;
    let tw = tiles.iter().map(|t| t.image.width).max().unwrap_or(0);
    let th = tiles.iter().map(|t| t.image.height).max().unwrap_or(0);
    let wrapped: Vec<Vec<String>> = tiles
        .iter()
        .map(|t| wrap(&font, &t.caption, tw as f32 - 2.0))
        .collect();
    let lines = wrapped.iter().map(Vec::len).max().unwrap_or(0) + 1;
    let cell_w = tw + MARGIN;
    let cell_h = th + MARGIN + lines * LINE_PX + MARGIN;
    let rows = tiles.len().div_ceil(columns);
    let mut sheet = Canvas::new(
        columns.min(tiles.len()) * cell_w + MARGIN,
        rows * cell_h + MARGIN,
        BACKGROUND,
    );
    for (k, (tile, text)) in tiles.iter().zip(&wrapped).enumerate() {
        let (left, top) = (
            MARGIN + (k % columns) * cell_w,
            MARGIN + (k / columns) * cell_h,
        );
        sheet.blit(&tile.image, left, top);
        let mut y = (top + th + 2) as f32;
        draw_text(
            &mut sheet,
            &font,
            &tile.title,
            left as f32,
            y,
            [150, 20, 20],
        );
        for line in text {
            y += LINE_PX as f32;
            draw_text(&mut sheet, &font, line, left as f32, y, [20, 20, 20]);
        }
    }
    Ok(sheet)
}

/// A prompts × samples sheet: each row is a prompt (wrapped into a `text_px`-wide column on
/// the left) followed by its RGB tiles (`side × side` each), magnified `zoom` times.
pub fn prompt_sheet(
    rows: &[(String, Vec<Vec<u8>>)],
    side: usize,
    zoom: usize,
    text_px: usize,
) -> Result<Canvas> {
    let font = font()?;
    let cell = side * zoom.max(1);
    let columns = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let wrapped: Vec<Vec<String>> = rows
        .iter()
        .map(|(p, _)| wrap(&font, p, text_px as f32))
        .collect();
    let row_h: Vec<usize> = wrapped
        .iter()
        .map(|l| cell.max(l.len() * LINE_PX) + MARGIN)
        .collect();
    let width = MARGIN + text_px + MARGIN + columns * (cell + MARGIN);
    let height = MARGIN + row_h.iter().sum::<usize>();
    let mut canvas = Canvas::new(width, height, BACKGROUND);
    let mut top = MARGIN;
    for (((_, tiles), lines), h) in rows.iter().zip(&wrapped).zip(&row_h) {
        for (i, l) in lines.iter().enumerate() {
            draw_text(
                &mut canvas,
                &font,
                l,
                MARGIN as f32,
                (top + i * LINE_PX) as f32,
                [20, 20, 20],
            );
        }
        for (k, rgb) in tiles.iter().enumerate() {
            ensure!(
                rgb.len() == side * side * 3,
                "sheet tile of {} bytes, expected {side}×{side} RGB",
                rgb.len()
            );
            let mut t = Canvas::new(cell, cell, BACKGROUND);
            for y in 0..cell {
                for x in 0..cell {
                    let s = 3 * ((y / zoom.max(1)) * side + x / zoom.max(1));
                    let d = 3 * (y * cell + x);
                    t.rgb[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
                }
            }
            canvas.blit(&t, 2 * MARGIN + text_px + k * (cell + MARGIN), top);
        }
        top += h;
    }
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_respects_the_width_and_keeps_every_word() {
        let f = font().unwrap();
        let text = "Turbulent mixing effect can be detected on the wider area of the region. A sill-type deformation pattern of high intensity can be detected.";
        let lines = wrap(&f, text, 200.0);
        assert!(lines.len() >= 3);
        assert!(lines.iter().all(|l| text_width(&f, l) <= 200.0));
        assert_eq!(lines.join(" "), text);
    }

    #[test]
    fn text_leaves_ink_on_the_canvas() {
        let f = font().unwrap();
        let mut c = Canvas::new(80, 20, [255, 255, 255]);
        draw_text(&mut c, &f, "Mogi", 2.0, 2.0, [0, 0, 0]);
        let dark = c.rgb.iter().filter(|&&v| v < 128).count();
        assert!(dark > 30, "{dark}");
    }
}
