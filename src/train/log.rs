//! `metrics.jsonl` (one JSON object per line) and the loss-curve PNG.
//!
//! Training lines look like `{"split":"train","step":10,"epoch":0,"lr":0.001,"loss":2.1,
//! "grad_norm":3.2,"images_per_s":55.0,...task metrics}`; validation lines have
//! `"split":"val"` and the task's validation metrics. Lines are appended whole with one
//! write; on resume, lines past the checkpoint's step are dropped (rewritten atomically) so
//! the log matches the resumed state.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde_json::{Map, Value};

use crate::data::atomic::write_atomic;

/// An append-only `metrics.jsonl`.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// A fresh log (an existing file is replaced).
    pub fn create(path: &Path) -> Result<Self> {
        write_atomic(path, b"")?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// The log of a resumed run: keeps the lines with `step ≤ step` (and drops a torn last
    /// line).
    pub fn resume(path: &Path, step: u64) -> Result<Self> {
        let kept: Vec<Value> = if path.exists() {
            read_metrics(path)?
                .into_iter()
                .filter(|v| v.get("step").and_then(Value::as_u64).unwrap_or(0) <= step)
                .collect()
        } else {
            Vec::new()
        };
        let mut text = String::new();
        for v in &kept {
            text.push_str(&serde_json::to_string(v)?);
            text.push('\n');
        }
        write_atomic(path, text.as_bytes())?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as a line.
    pub fn append(&mut self, record: &Map<String, Value>) -> Result<()> {
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .with_context(|| format!("{}: cannot open for appending", self.path.display()))?;
        f.write_all(line.as_bytes())
            .with_context(|| format!("{}: cannot append", self.path.display()))
    }
}

/// Every record of a `metrics.jsonl`; a torn (unparseable) last line is ignored, a bad line
/// elsewhere is an error naming the file and line.
pub fn read_metrics(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => out.push(v),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => anyhow::bail!("{}: line {}: {e}", path.display(), i + 1),
        }
    }
    Ok(out)
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bundled font is a valid TTF (tested); a failure only loses the labels.
        let _ = plotters::style::register_font(
            "sans-serif",
            plotters::style::FontStyle::Normal,
            crate::assets::FONT_TTF,
        );
    });
}

/// `(step, value)` of `key` in the records of `split`.
pub fn series(records: &[Value], split: &str, key: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter(|r| r.get("split").and_then(Value::as_str) == Some(split))
        .filter_map(|r| {
            let step = r.get("step")?.as_f64()?;
            let v = r.get(key)?.as_f64()?;
            v.is_finite().then_some((step, v))
        })
        .collect()
}

/// Draws the training loss (and the validation loss, when logged) against the step into an
/// RGB buffer of `width × height`.
pub fn render_loss_curve(records: &[Value], width: u32, height: u32) -> Result<Vec<u8>> {
    register_font();
    let train = series(records, "train", "loss");
    let val = series(records, "val", "loss");
    anyhow::ensure!(!train.is_empty(), "no training loss to plot");
    let all = train.iter().chain(&val);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut buf = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Training loss", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(train, BLUE.stroke_width(2)))
            .map_err(plot_err)?
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        if !val.is_empty() {
            chart
                .draw_series(LineSeries::new(val.clone(), RED.stroke_width(2)))
                .map_err(plot_err)?
                .label("val")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(buf)
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting failed: {e:?}")
}

/// Writes the loss curve of `metrics` to `out` (PNG, 800×480, atomically).
pub fn write_loss_plot(metrics: &Path, out: &Path) -> Result<()> {
    let records = read_metrics(metrics)?;
    let (w, h) = (800, 480);
    let buf = render_loss_curve(&records, w, h)
        .with_context(|| format!("{}: cannot plot", metrics.display()))?;
    crate::data::png::write_png(
        out,
        w as usize,
        h as usize,
        crate::data::png::PngColor::Rgb,
        &buf,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn resume_truncates_and_torn_lines_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::create(&path).unwrap();
        for step in 1..=5 {
            log.append(&rec(
                json!({"split": "train", "step": step, "loss": 1.0 / step as f64}),
            ))
            .unwrap();
        }
        // A torn last line (the process died mid-write).
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"split\": \"tr").unwrap();
        assert_eq!(read_metrics(&path).unwrap().len(), 5);
        MetricsLog::resume(&path, 3).unwrap();
        let steps: Vec<u64> = read_metrics(&path)
            .unwrap()
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [1, 2, 3]);
        // A bad line in the middle is an error naming the line.
        std::fs::write(&path, "{\"step\":1}\nnot json\n{\"step\":2}\n").unwrap();
        let err = format!("{:#}", read_metrics(&path).unwrap_err());
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn loss_curve_draws_lines_and_text() {
        let records: Vec<Value> = (0..50)
            .map(|s| json!({"split": "train", "step": s, "loss": 3.0 * (-(s as f64) / 20.0).exp()}))
            .chain((0..5).map(|k| json!({"split": "val", "step": k * 10, "loss": 2.0})))
            .collect();
        let buf = render_loss_curve(&records, 400, 240).unwrap();
        let px = |i: usize| (buf[3 * i], buf[3 * i + 1], buf[3 * i + 2]);
        let n = buf.len() / 3;
        let blue = (0..n).filter(|&i| px(i) == (0, 0, 255)).count();
        let red = (0..n).filter(|&i| px(i) == (255, 0, 0)).count();
        // Grey-ish anti-aliased text pixels exist only if the bundled font rendered.
        let gray = (0..n)
            .filter(|&i| {
                let (r, g, b) = px(i);
                r == g && g == b && r > 20 && r < 200
            })
            .count();
        assert!(blue > 100 && red > 100, "blue {blue}, red {red}");
        assert!(gray > 50, "text pixels {gray}");
        assert!(render_loss_curve(&[], 400, 240).is_err());
    }
}
