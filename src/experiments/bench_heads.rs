//! The multitask benchmark of `insar-mm bench heads`: which runs it makes for each head and
//! budget, its output folder (manifest, one result file per head and encoder), and the
//! results table (JSON, markdown) and the offline HTML report. The command-line layer runs
//! the `train`, `predict`, `caption`, `index`/`search`, `generate` and `eval generation`
//! commands and fills the [`HeadResult`]s.
//!
//! Layout of `--out`:
//! `bench.json` (the [`Manifest`]: what this bench is; a rerun with the same options
//! resumes), `<encoder>/<command>/` (the head's run), `<encoder>/<head>.result.json` (a
//! finished head), `<encoder>/<head>-gallery/`, `generation/` (the generator, shared by
//! every encoder: it has no image encoder), and `results.json`, `results.md`, `report.html`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::atomic::write_atomic;

pub const MANIFEST_FILE: &str = "bench.json";
pub const RESULTS_JSON: &str = "results.json";
pub const RESULTS_MD: &str = "results.md";
pub const REPORT_HTML: &str = "report.html";
/// Folder of the shared generator run (and its gallery) under `--out`.
pub const GENERATION_DIR: &str = "generation";
/// What `bench.json` says it is; bumped when the layout or the budgets change.
const BENCH_KIND: &str = "insar-mm bench heads";
const BENCH_VERSION: u32 = 1;

/// Fixed text for the retrieval queries and generation prompts of the report, in the
/// vocabulary of Hephaestus captions.
pub const PROMPTS: [&str; 4] = [
    "A dyke-type deformation pattern of high intensity can be detected on the left side of the image.",
    "A mogi-type deformation pattern of low intensity can be detected in the center of the image.",
    "An earthquake deformation pattern can be detected around the area.",
    "No deformation activity can be detected.",
];

/// Test images shown per head in the report.
pub const GALLERY_IMAGES: usize = 6;

/// How long each head trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    /// Seconds per head on tiny images: checks the pipeline (tests), its numbers mean nothing.
    Smoke,
    /// 112² inputs and 6 epochs per head (2 for segmentation), a 120-step generator
    /// sampled with 20 steps: one encoder in about 27 minutes on 2 cores.
    Quick,
    /// Each task's default configuration (224², its default length): the README's figures.
    Full,
}

impl Budget {
    pub const NAMES: [&'static str; 3] = ["smoke", "quick", "full"];

    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "smoke" => Ok(Self::Smoke),
            "quick" => Ok(Self::Quick),
            "full" => Ok(Self::Full),
            _ => Err(format!("expected one of {}", Self::NAMES.join(", "))),
        }
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Options added to `insar-mm train <head>` (after the data, encoder and output).
    pub fn train_options(self, head: Head) -> Vec<String> {
        let opts: &[&str] = match (self, head) {
            (Self::Full, _) => &[],
            // The generator trains at about 10 images/s on 2 cores, segmentation about 4×
            // slower per image than the other heads.
            (Self::Quick, Head::Generation) => &["--steps", "120"],
            (Self::Quick, Head::Segmentation) => &["--image-size", "112", "--epochs", "2"],
            (Self::Quick, _) => &["--image-size", "112", "--epochs", "6"],
            (Self::Smoke, Head::Generation) => &["--steps", "4", "--batch-size", "4"],
            (Self::Smoke, _) => &["--image-size", "32", "--steps", "4", "--batch-size", "8"],
        };
        opts.iter().map(|s| s.to_string()).collect()
    }

    /// Options of `insar-mm eval generation` (samples and sampler steps).
    pub fn generation_eval_options(self) -> Vec<String> {
        let opts: &[&str] = match self {
            Self::Full => &[],
            Self::Quick => &["--samples", "32", "--steps", "20"],
            Self::Smoke => &["--samples", "4", "--steps", "2", "--kid-subsets", "4"],
        };
        opts.iter().map(|s| s.to_string()).collect()
    }

    /// Sampler steps of the gallery's generated samples.
    pub fn gallery_sampling_steps(self) -> usize {
        match self {
            Self::Full => 50,
            Self::Quick => 20,
            Self::Smoke => 2,
        }
    }
}

/// A head of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    Classification,
    Segmentation,
    Captioning,
    Retrieval,
    Generation,
}

impl Head {
    pub const ALL: [Head; 5] = [
        Head::Classification,
        Head::Segmentation,
        Head::Captioning,
        Head::Retrieval,
        Head::Generation,
    ];

    /// A head by [`Head::name`].
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|h| h.name()).collect();
                format!("expected one of {}", names.join(", "))
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Classification => "classification",
            Self::Segmentation => "segmentation",
            Self::Captioning => "captioning",
            Self::Retrieval => "retrieval",
            Self::Generation => "generation",
        }
    }

    /// The `insar-mm train` subcommand (also the run folder's name).
    pub fn train_command(self) -> &'static str {
        match self {
            Self::Classification => "classify",
            Self::Segmentation => "segment",
            Self::Captioning => "caption",
            Self::Retrieval => "retrieval",
            Self::Generation => "generator",
        }
    }

    /// The figures of the table: (key in [`HeadResult::figures`], label).
    /// The figures of the table: (key in [`HeadResult::figures`], label, decimals shown).
    pub fn figures(self) -> &'static [(&'static str, &'static str, usize)] {
        match self {
            Self::Classification => &[
                ("deformation_f1", "Deformation F1", 3),
                ("macro_f1", "macro-F1", 3),
                ("map", "mAP", 3),
            ],
            Self::Segmentation => &[
                ("deformation_iou", "any-deformation IoU", 3),
                ("grouped_miou", "grouped mIoU", 3),
            ],
            Self::Captioning => &[
                ("bleu4", "BLEU-4", 3),
                ("cider_d", "CIDEr-D", 3),
                ("fact_f1", "fact-F1", 3),
                ("deformation_f1", "Deformation F1 read from the captions", 3),
                (
                    "cider_d_most_frequent",
                    "CIDEr-D, most-frequent-caption baseline",
                    3,
                ),
                (
                    "fact_f1_nearest_neighbour",
                    "fact-F1, nearest-neighbour baseline",
                    3,
                ),
            ],
            Self::Retrieval => &[
                ("mr", "mR (facts, %)", 1),
                ("r1_text_to_image", "R@1 text→image", 3),
                ("r1_image_to_text", "R@1 image→text", 3),
            ],
            Self::Generation => &[
                ("fid", "FID-InSAR", 2),
                ("fid_floor", "FID real-vs-real floor", 2),
                (
                    "fid_over_floor",
                    "FID / floor (comparable across judges)",
                    1,
                ),
                ("fidelity_presence", "prompt fidelity: presence", 3),
                ("fidelity_group", "prompt fidelity: type group", 3),
                ("fidelity_intensity", "prompt fidelity: intensity", 3),
            ],
        }
    }
}

/// One encoder column: the `--encoder` value given to every head and its label (the
/// folder under `--out`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncoderSpec {
    pub label: String,
    /// `shipped`, `none` or the absolute path of an encoder run.
    pub arg: String,
}

impl EncoderSpec {
    /// The `--encoder` value as the tables show it: a run by its folder's name.
    pub fn shown(&self) -> String {
        match self.arg.as_str() {
            "shipped" | "none" => self.arg.clone(),
            path => Path::new(path)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.to_string()),
        }
    }

    /// Reads the `--encoder` values: `shipped`, `none`, or a run usable as an encoder (a
    /// `train pretrain` run or a classify/segment run). Labels are unique.
    pub fn parse_all(values: &[String]) -> Result<Vec<Self>> {
        let mut specs: Vec<Self> = Vec::new();
        for v in values {
            let spec = match v.as_str() {
                "shipped" | "none" => Self {
                    label: v.clone(),
                    arg: v.clone(),
                },
                "auto" | "" => bail!(
                    "--encoder {v:?}: expected shipped, none or a run folder (a `train pretrain`, classify or segment run)"
                ),
                path => {
                    let path = Path::new(path);
                    if !path.is_dir() {
                        bail!("--encoder {}: no such run folder (expected shipped, none or a `train pretrain`, classify or segment run)", path.display());
                    }
                    crate::train::heads::encoder_run(path)
                        .with_context(|| format!("--encoder {}: not an encoder", path.display()))?;
                    let abs = path
                        .canonicalize()
                        .with_context(|| format!("--encoder {}", path.display()))?;
                    let base: String = abs
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "run".into())
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                        .collect();
                    Self {
                        label: format!("run-{base}"),
                        arg: abs.to_string_lossy().into_owned(),
                    }
                }
            };
            if specs.iter().any(|s| s.arg == spec.arg) {
                bail!("--encoder {v}: named twice");
            }
            let mut label = spec.label.clone();
            let mut n = 2;
            while specs.iter().any(|s| s.label == label) {
                label = format!("{}-{n}", spec.label);
                n += 1;
            }
            specs.push(Self { label, ..spec });
        }
        if specs.is_empty() {
            bail!("--encoder: name at least one encoder");
        }
        Ok(specs)
    }
}

/// What a bench folder holds: a rerun with an equal manifest resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub bench: String,
    pub version: u32,
    pub encoders: Vec<EncoderSpec>,
    pub heads: Vec<Head>,
    pub budget: Budget,
    /// The dataset every head trains and is scored on (absolute).
    pub data: PathBuf,
    pub seed: u64,
}

impl Manifest {
    pub fn new(
        encoders: Vec<EncoderSpec>,
        heads: Vec<Head>,
        budget: Budget,
        data: PathBuf,
        seed: u64,
    ) -> Self {
        Self {
            bench: BENCH_KIND.into(),
            version: BENCH_VERSION,
            encoders,
            heads,
            budget,
            data,
            seed,
        }
    }

    /// The dataset folder's name (the tables leave out where it lies on this machine).
    pub fn data_name(&self) -> String {
        self.data
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.data.display().to_string())
    }

    /// Prepares `out` for this bench: a new or empty folder gets the manifest; a folder with
    /// this bench's manifest is resumed (returns true); anything else is an error.
    pub fn open(&self, out: &Path) -> Result<bool> {
        let path = out.join(MANIFEST_FILE);
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let other: serde_json::Value = serde_json::from_str(&text).with_context(|| {
                format!("{}: not a bench manifest (malformed JSON)", path.display())
            })?;
            if other.get("bench").and_then(|b| b.as_str()) != Some(BENCH_KIND) {
                bail!("--out {}: holds something else ({} is not an `insar-mm bench heads` manifest); choose another --out", out.display(), path.display());
            }
            let mine = serde_json::to_value(self)?;
            if other != mine {
                let differs: Vec<&str> = ["version", "encoders", "heads", "budget", "data", "seed"]
                    .into_iter()
                    .filter(|k| other.get(k) != mine.get(k))
                    .collect();
                bail!(
                    "--out {}: holds another bench (its {} differ from this command's); rerun it with its own options to resume, or choose another --out",
                    out.display(),
                    differs.join(", ")
                );
            }
            return Ok(true);
        }
        if out.exists() {
            let non_empty = std::fs::read_dir(out)
                .with_context(|| format!("--out {}", out.display()))?
                .next()
                .is_some();
            if non_empty {
                bail!("--out {}: not empty and not a bench folder (no {MANIFEST_FILE}); choose a new folder", out.display());
            }
        }
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        write_atomic(&path, serde_json::to_string_pretty(self)?.as_bytes())?;
        Ok(false)
    }
}

/// One picture of a head's gallery (path relative to `--out`) with its text lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryItem {
    pub image: PathBuf,
    pub lines: Vec<String>,
}

/// A finished head on one encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadResult {
    pub head: Head,
    /// The encoder label ([`EncoderSpec::label`]).
    pub encoder: String,
    /// The run folder, relative to `--out`.
    pub run: PathBuf,
    /// The table's figures, keyed as [`Head::figures`] (NaN: not measured, stored as null).
    pub figures: BTreeMap<String, Option<f64>>,
    /// Wall time of the training command(s), summed over resumed attempts.
    pub train_seconds: f64,
    pub inference_images_per_s: f64,
    /// What the images/s timed.
    pub inference_note: String,
    /// The run's loss curve (relative to `--out`), when it has one.
    pub loss_curve: Option<PathBuf>,
    pub gallery: Vec<GalleryItem>,
    /// Remarks for the report (e.g. the generator is shared by every encoder).
    pub notes: Vec<String>,
}

impl HeadResult {
    pub fn path(out: &Path, encoder: &str, head: Head) -> PathBuf {
        out.join(encoder)
            .join(format!("{}.result.json", head.name()))
    }

    pub fn save(&self, out: &Path) -> Result<()> {
        write_atomic(
            &Self::path(out, &self.encoder, self.head),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    /// The saved result, if the head finished.
    pub fn load(out: &Path, encoder: &str, head: Head) -> Result<Option<Self>> {
        let path = Self::path(out, encoder, head);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: malformed head result (delete it to rerun the head)",
                path.display()
            )
        })?))
    }

    /// A figure by key; `fid_over_floor` is derived (FID divided by the real-vs-real FID in
    /// the same judge's feature space, so columns with other judges compare).
    fn figure(&self, key: &str) -> Option<f64> {
        let stored = |k: &str| {
            self.figures
                .get(k)
                .copied()
                .flatten()
                .filter(|v| v.is_finite())
        };
        match key {
            "fid_over_floor" => {
                Some(stored("fid")? / stored("fid_floor")?).filter(|v| v.is_finite())
            }
            _ => stored(key),
        }
    }
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}"))
        .unwrap_or_else(|| "–".into())
}

/// The rows of the table: (head, figure label, one cell per encoder).
fn table_rows(m: &Manifest, results: &[HeadResult]) -> Vec<(Head, String, Vec<String>)> {
    let find = |head: Head, enc: &str| results.iter().find(|r| r.head == head && r.encoder == enc);
    let mut rows = Vec::new();
    for &head in &m.heads {
        for &(key, label, decimals) in head.figures() {
            let cells = m
                .encoders
                .iter()
                .map(|e| cell(find(head, &e.label).and_then(|r| r.figure(key)), decimals))
                .collect();
            rows.push((head, label.to_string(), cells));
        }
        let train = m
            .encoders
            .iter()
            .map(|e| cell(find(head, &e.label).map(|r| r.train_seconds / 60.0), 1))
            .collect();
        rows.push((head, "training wall time (min)".into(), train));
        let speed = m
            .encoders
            .iter()
            .map(|e| cell(find(head, &e.label).map(|r| r.inference_images_per_s), 1))
            .collect();
        rows.push((head, "inference images/s".into(), speed));
    }
    rows
}

/// The results table as markdown.
pub fn markdown(m: &Manifest, results: &[HeadResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Budget {}, seed {}, data {}. One column per encoder; `–`: not run or not measured.\n",
        m.budget.name(),
        m.seed,
        m.data_name()
    );
    let _ = write!(s, "| head | figure |");
    for e in &m.encoders {
        let _ = write!(s, " {} |", e.label);
    }
    let _ = write!(s, "\n|---|---|");
    for _ in &m.encoders {
        let _ = write!(s, "---:|");
    }
    s.push('\n');
    let mut last = None;
    for (head, label, cells) in table_rows(m, results) {
        let name = if last == Some(head) { "" } else { head.name() };
        last = Some(head);
        let _ = writeln!(s, "| {name} | {label} | {} |", cells.join(" | "));
    }
    let notes: Vec<&String> = results.iter().flat_map(|r| &r.notes).collect();
    let mut seen = Vec::new();
    for n in notes {
        if !seen.contains(&n) {
            seen.push(n);
        }
    }
    for n in seen {
        let _ = writeln!(s, "\n- {n}");
    }
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn rel_url(p: &Path) -> String {
    p.components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .replace('%', "%25")
                .replace(' ', "%20")
                .replace('#', "%23")
                .replace('?', "%3F")
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The report: the table, then one section per head with each encoder's loss curve and
/// gallery. Images are files beside the report (relative links), so the folder opens
/// offline. A small script marks on `<body>` how many images loaded and failed, and any
/// script error, for the browser test.
pub fn html(m: &Manifest, results: &[HeadResult]) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>insar-mm bench heads</title>\n<style>\n");
    s.push_str(
        "body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}\n\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px}\n\
         td.num{text-align:right;font-variant-numeric:tabular-nums}tr.first td{border-top:2px solid #666}\n\
         .gallery{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;width:214px;font-size:12px}\n\
         figure img{width:208px;image-rendering:pixelated;border:1px solid #ccc}\n\
         figure.wide{width:auto}figure.wide img{width:auto;max-width:100%}\n\
         img.curve{width:480px;border:1px solid #ccc}section{margin-top:2em}\n",
    );
    s.push_str("</style></head>\n<body>\n<h1>insar-mm bench heads</h1>\n");
    let _ = writeln!(
        s,
        "<p>Budget <b>{}</b>, seed {}, data <code>{}</code>. Every head trains and is scored on the same frame split.</p>",
        m.budget.name(),
        m.seed,
        escape(&m.data_name())
    );
    s.push_str("<section id=\"table\"><h2>Results</h2>\n<table><tr><th>head</th><th>figure</th>");
    for e in &m.encoders {
        let _ = write!(s, "<th>{}</th>", escape(&e.label));
    }
    s.push_str("</tr>\n");
    let mut last = None;
    for (head, label, cells) in table_rows(m, results) {
        let first = last != Some(head);
        last = Some(head);
        let _ = write!(
            s,
            "<tr{}><td>{}</td><td>{}</td>",
            if first { " class=\"first\"" } else { "" },
            if first { head.name() } else { "" },
            escape(&label)
        );
        for c in cells {
            let _ = write!(s, "<td class=\"num\">{}</td>", escape(&c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n<ul>");
    for e in &m.encoders {
        let _ = write!(
            s,
            "<li><b>{}</b>: <code>--encoder {}</code></li>",
            escape(&e.label),
            escape(&e.shown())
        );
    }
    s.push_str("</ul></section>\n");
    for &head in &m.heads {
        let _ = writeln!(s, "<section id=\"{0}\"><h2>{0}</h2>", head.name());
        for e in &m.encoders {
            let Some(r) = results
                .iter()
                .find(|r| r.head == head && r.encoder == e.label)
            else {
                let _ = writeln!(s, "<h3>{}</h3><p>not run yet</p>", escape(&e.label));
                continue;
            };
            let _ = writeln!(
                s,
                "<h3>{}</h3><p>run <code>{}</code>; {}</p>",
                escape(&e.label),
                escape(&r.run.display().to_string()),
                escape(&r.inference_note)
            );
            for n in &r.notes {
                let _ = writeln!(s, "<p><i>{}</i></p>", escape(n));
            }
            if let Some(curve) = &r.loss_curve {
                let _ = writeln!(
                    s,
                    "<figure class=\"wide\"><img class=\"curve\" src=\"{}\" alt=\"loss curve\"><figcaption>loss curve</figcaption></figure>",
                    escape(&rel_url(curve))
                );
            }
            s.push_str("<div class=\"gallery\">\n");
            for g in &r.gallery {
                let wide = if head == Head::Retrieval || head == Head::Generation {
                    " class=\"wide\""
                } else {
                    ""
                };
                let _ = write!(
                    s,
                    "<figure{wide}><img src=\"{}\" alt=\"\"><figcaption>",
                    escape(&rel_url(&g.image))
                );
                let lines: Vec<String> = g.lines.iter().map(|l| escape(l)).collect();
                s.push_str(&lines.join("<br>"));
                s.push_str("</figcaption></figure>\n");
            }
            s.push_str("</div>\n");
        }
        s.push_str("</section>\n");
    }
    s.push_str(
        "<script>\n\
         window.addEventListener('error', function (e) {\n\
           document.body.dataset.scriptErrors = (document.body.dataset.scriptErrors || '') + (e.message || 'error') + ';';\n\
         }, true);\n\
         window.addEventListener('load', function () {\n\
           var imgs = Array.prototype.slice.call(document.images);\n\
           var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;\n\
           document.body.dataset.imagesLoaded = String(ok);\n\
           document.body.dataset.imagesFailed = String(imgs.length - ok);\n\
         });\n\
         </script>\n</body></html>\n",
    );
    s
}

/// Writes `results.json`, `results.md` and `report.html` into `out`.
pub fn write_outputs(out: &Path, m: &Manifest, results: &[HeadResult]) -> Result<()> {
    let json = serde_json::json!({ "manifest": m, "results": results });
    write_atomic(
        &out.join(RESULTS_JSON),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    write_atomic(&out.join(RESULTS_MD), markdown(m, results).as_bytes())?;
    write_atomic(&out.join(REPORT_HTML), html(m, results).as_bytes())?;
    Ok(())
}

/// The facts a caption states, in one short line for the gallery.
pub fn fact_line(caption: &str) -> String {
    use insar_mm_eval::captions::facts::parse_facts;
    let f = parse_facts(caption);
    if !f.has_deformation() {
        return "facts: no deformation".into();
    }
    let types: Vec<&str> = f.activities.iter().map(|a| a.name()).collect();
    let levels: Vec<&str> = f.intensities.iter().map(|l| l.name()).collect();
    let cells = f.cells.len();
    format!(
        "facts: deformation; type {}; intensity {}; {} of 9 cells",
        if types.is_empty() {
            "?".into()
        } else {
            types.join("+")
        },
        if levels.is_empty() {
            "?".into()
        } else {
            levels.join("+")
        },
        if f.wider_area { 9 } else { cells }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(encoders: &[&str]) -> Manifest {
        Manifest::new(
            EncoderSpec::parse_all(&encoders.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap(),
            Head::ALL.to_vec(),
            Budget::Quick,
            PathBuf::from("/data"),
            42,
        )
    }

    fn result(head: Head, enc: &str, figures: &[(&str, f64)]) -> HeadResult {
        HeadResult {
            head,
            encoder: enc.into(),
            run: PathBuf::from(enc).join(head.train_command()),
            figures: figures
                .iter()
                .map(|(k, v)| (k.to_string(), Some(*v)))
                .collect(),
            train_seconds: 90.0,
            inference_images_per_s: 12.5,
            inference_note: "timed".into(),
            loss_curve: None,
            gallery: vec![GalleryItem {
                image: PathBuf::from("a b/c.png"),
                lines: vec!["<x>".into()],
            }],
            notes: vec![],
        }
    }

    #[test]
    fn encoder_names_are_checked_and_labelled() {
        let specs = EncoderSpec::parse_all(&["shipped".into(), "none".into()]).unwrap();
        assert_eq!(specs[0].label, "shipped");
        assert_eq!(specs[1].arg, "none");
        for bad in ["auto", "no-such-run-folder"] {
            let e = EncoderSpec::parse_all(&[bad.into()]).unwrap_err();
            assert!(format!("{e:#}").contains(bad), "{e:#}");
        }
        // A folder that is not an encoder run.
        let dir = tempfile::tempdir().unwrap();
        let e = EncoderSpec::parse_all(&[dir.path().to_string_lossy().into_owned()]).unwrap_err();
        assert!(format!("{e:#}").contains("not an encoder"), "{e:#}");
        assert!(EncoderSpec::parse_all(&["none".into(), "none".into()]).is_err());
        assert!(EncoderSpec::parse_all(&[]).is_err());
    }

    #[test]
    fn manifest_opens_new_resumes_same_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("bench");
        let m = manifest(&["shipped"]);
        assert!(!m.open(&out).unwrap());
        assert!(m.open(&out).unwrap(), "the same bench resumes");
        let mut other = m.clone();
        other.seed = 7;
        let e = other.open(&out).unwrap_err().to_string();
        assert!(e.contains("another bench") && e.contains("seed"), "{e}");
        // A non-empty folder without a manifest, and a foreign manifest.
        let busy = dir.path().join("busy");
        std::fs::create_dir_all(&busy).unwrap();
        std::fs::write(busy.join("x.txt"), "x").unwrap();
        assert!(m.open(&busy).unwrap_err().to_string().contains("not empty"));
        std::fs::write(busy.join(MANIFEST_FILE), "{\"bench\": \"other\"}").unwrap();
        assert!(m
            .open(&busy)
            .unwrap_err()
            .to_string()
            .contains("holds something else"));
        std::fs::write(busy.join(MANIFEST_FILE), "{").unwrap();
        assert!(m.open(&busy).unwrap_err().to_string().contains("malformed"));
    }

    #[test]
    fn table_has_a_column_per_encoder_and_marks_missing_heads() {
        let m = manifest(&["shipped", "none"]);
        let results = vec![
            result(
                Head::Classification,
                "shipped",
                &[("deformation_f1", 0.9123), ("macro_f1", 0.5), ("map", 0.61)],
            ),
            result(
                Head::Classification,
                "none",
                &[("deformation_f1", 0.8), ("map", f64::NAN)],
            ),
        ];
        let md = markdown(&m, &results);
        assert!(md.contains("| head | figure | shipped | none |"), "{md}");
        assert!(
            md.contains("| classification | Deformation F1 | 0.912 | 0.800 |"),
            "{md}"
        );
        assert!(md.contains("|  | mAP | 0.610 | – |"), "{md}");
        assert!(
            md.contains("|  | training wall time (min) | 1.5 | 1.5 |"),
            "{md}"
        );
        // Heads that have not run show dashes in every column.
        assert!(
            md.contains("| segmentation | any-deformation IoU | – | – |"),
            "{md}"
        );
        let rows = table_rows(&m, &results);
        let per_head: usize = Head::ALL.iter().map(|h| h.figures().len() + 2).sum();
        assert_eq!(rows.len(), per_head);
    }

    #[test]
    fn html_escapes_text_links_assets_relatively_and_has_every_section() {
        let m = manifest(&["shipped"]);
        let results = vec![result(Head::Captioning, "shipped", &[("cider_d", 1.0)])];
        let page = html(&m, &results);
        assert!(page.contains("&lt;x&gt;") && !page.contains("<x>"));
        assert!(page.contains("src=\"a%20b/c.png\""));
        for h in Head::ALL {
            assert!(
                page.contains(&format!("<section id=\"{}\">", h.name())),
                "{}",
                h.name()
            );
        }
        assert!(page.contains("not run yet"));
    }

    #[test]
    fn head_results_round_trip_with_missing_figures() {
        let dir = tempfile::tempdir().unwrap();
        let r = result(Head::Retrieval, "shipped", &[("mr", 0.5)]);
        std::fs::create_dir_all(dir.path().join("shipped")).unwrap();
        r.save(dir.path()).unwrap();
        assert_eq!(
            HeadResult::load(dir.path(), "shipped", Head::Retrieval).unwrap(),
            Some(r)
        );
        assert_eq!(
            HeadResult::load(dir.path(), "none", Head::Retrieval).unwrap(),
            None
        );
        let mut nan = result(Head::Retrieval, "none", &[]);
        nan.figures.insert("mr".into(), None);
        std::fs::create_dir_all(dir.path().join("none")).unwrap();
        nan.save(dir.path()).unwrap();
        let back = HeadResult::load(dir.path(), "none", Head::Retrieval)
            .unwrap()
            .unwrap();
        assert_eq!(back.figure("mr"), None);
        let g = result(
            Head::Generation,
            "none",
            &[("fid", 30.0), ("fid_floor", 4.0)],
        );
        assert_eq!(g.figure("fid_over_floor"), Some(7.5));
        let g = result(
            Head::Generation,
            "none",
            &[("fid", 30.0), ("fid_floor", 0.0)],
        );
        assert_eq!(g.figure("fid_over_floor"), None);
    }

    #[test]
    fn budgets_parse_and_full_keeps_the_task_defaults() {
        for n in Budget::NAMES {
            assert_eq!(Budget::parse(n).unwrap().name(), n);
        }
        assert!(Budget::parse("medium").unwrap_err().contains("quick"));
        for h in Head::ALL {
            assert_eq!(Head::parse(h.name()), Ok(h));
        }
        assert!(Head::parse("classify")
            .unwrap_err()
            .contains("classification"));
        for h in Head::ALL {
            assert!(Budget::Full.train_options(h).is_empty());
        }
        assert!(Budget::Full.generation_eval_options().is_empty());
    }

    #[test]
    fn fact_lines_read_the_caption() {
        assert_eq!(
            fact_line("No deformation activity can be detected."),
            "facts: no deformation"
        );
        let l = fact_line(PROMPTS[0]);
        assert!(l.contains("dyke") && l.contains("high"), "{l}");
    }
}
