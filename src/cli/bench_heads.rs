//! `insar-mm bench heads`: trains and scores every head on every named encoder, on the same
//! frame split of one dataset, and writes the table and the report
//! (`insar_mm::experiments::bench_heads`).
//!
//! Each step is this binary's own command, run as a child process with its output in a log
//! beside the run: `train <head>` (resumed with `--resume` when a checkpoint exists), then
//! `predict`, `caption`, `index`/`search`, `generate` and `eval generation` for the figures
//! the run's `test_scores.json` lacks, the inference speed and the gallery. A head whose
//! `<head>.result.json` exists is reused, so an interrupted bench continues where it stopped.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use serde_json::Value;

use super::GlobalArgs;
use insar_mm::data::annotation::Annotation;
use insar_mm::data::dataset::DatasetDir;
use insar_mm::data::loader::LoadOptions;
use insar_mm::data::sample::LABEL_NAMES;
use insar_mm::data::split::Part;
use insar_mm::experiments::bench_heads::{
    fact_line, write_outputs, Budget, EncoderSpec, GalleryItem, Head, HeadResult, Manifest,
    GALLERY_IMAGES, GENERATION_DIR, PROMPTS,
};
use insar_mm::train::checkpoint::{RunDir, LOSS_PLOT_FILE, TEST_SCORES_FILE};

#[derive(Debug, Args)]
pub struct BenchHeadsArgs {
    /// Encoders to compare, one column each: shipped (the SimCLR encoder of the binary),
    /// none (random initialisation) or RUN (a `train pretrain` run, or a classify/segment run
    /// for a supervised encoder). Repeat the option or separate with commas.
    #[arg(
        long,
        value_name = "shipped|none|RUN",
        value_delimiter = ',',
        default_value = "shipped"
    )]
    pub encoder: Vec<String>,
    /// quick (112² inputs, a few epochs: about 27 min per encoder on 2 cores), full (each
    /// task's default configuration) or smoke (seconds per head, for tests; numbers mean
    /// nothing).
    #[arg(long, value_name = "quick|full|smoke", default_value = "quick", value_parser = Budget::parse)]
    pub budget: Budget,
    /// Dataset directory every head trains and is scored on [default: the built-in
    /// synthetic dataset].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Output folder; rerunning the same command there resumes the bench.
    #[arg(long, value_name = "DIR", default_value = "runs/bench-heads")]
    pub out: PathBuf,
    /// Heads to run (classification, segmentation, captioning, retrieval, generation)
    /// [default: all]. Generation needs classification: its judge is the classifier.
    #[arg(long, value_name = "HEAD", value_delimiter = ',', value_parser = Head::parse)]
    pub heads: Vec<Head>,
}

/// Runs this binary's commands as child processes, each logged to a file.
struct Runner {
    exe: PathBuf,
    global: Vec<String>,
    stop: Arc<AtomicBool>,
}

impl Runner {
    /// Runs `insar-mm <args>` with its output appended to `log`; returns the wall time.
    fn run(&self, args: &[String], log: &Path) -> Result<f64> {
        self.run_with(args, None, log)
    }

    /// [`Self::run`] with the standard output written to `stdout`.
    fn run_capturing(&self, args: &[String], stdout: &Path, log: &Path) -> Result<f64> {
        self.run_with(args, Some(stdout), log)
    }

    fn run_with(&self, args: &[String], stdout: Option<&Path>, log: &Path) -> Result<f64> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let out_file = match stdout {
            Some(p) => {
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?
            }
            None => file.try_clone()?,
        };
        // Commands over the test split list every frame: show the first few.
        let shown = match args.len() {
            n if n > 12 => format!("insar-mm {} … ({} more)", args[..10].join(" "), n - 10),
            _ => format!("insar-mm {}", args.join(" ")),
        };
        log::info!("{shown}");
        writeln!(&file, "$ {shown}").with_context(|| format!("writing {}", log.display()))?;
        let start = Instant::now();
        let mut child = Command::new(&self.exe)
            .args(&self.global)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out_file)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        // A Ctrl-C reaches the child too (it checkpoints and stops); a SIGTERM sent to the
        // bench alone is passed on by killing the child after a grace period.
        let mut stop_seen: Option<Instant> = None;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if self.stop.load(Ordering::SeqCst) {
                let since = *stop_seen.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let secs = start.elapsed().as_secs_f64();
        if self.stop.load(Ordering::SeqCst) {
            bail!("interrupted during `{shown}`: rerun the same `bench heads` command to resume");
        }
        if !status.success() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "`{shown}` failed ({status}); its output is in {}:\n{}",
                log.display(),
                tail.join("\n")
            );
        }
        Ok(secs)
    }
}

fn s(v: impl AsRef<std::ffi::OsStr>) -> String {
    v.as_ref().to_string_lossy().into_owned()
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: malformed JSON", path.display()))
}

/// The number at a JSON pointer (`None` when absent or not a number).
fn num(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

/// Stores the figures `(key, JSON pointer)` read from `json` (missing ones as `None`).
fn insert_figures(r: &mut HeadResult, json: &Value, figures: &[(&str, &str)]) {
    for &(key, pointer) in figures {
        r.figures.insert(key.to_string(), num(json, pointer));
    }
}

fn rel(out: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(out)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| p.to_path_buf())
}

/// The test split of the dataset: phase previews and annotations, in split order, and the
/// gallery's frames (deformation first, then frames without).
struct TestSet {
    previews: Vec<PathBuf>,
    annotations: Vec<Annotation>,
    gallery: Vec<usize>,
}

impl TestSet {
    fn open(dir: &Path, seed: u64) -> Result<Self> {
        let ds = DatasetDir::open(dir, LoadOptions::default())
            .with_context(|| format!("--data {}", dir.display()))?;
        let split = insar_mm::train::heads::dataset_split(&ds, dir, seed)?;
        let mut previews = Vec::new();
        let mut annotations = Vec::new();
        for a in &ds.annotations.annotations {
            if split.part_of(a.unique_id) == Some(Part::Test) {
                previews.push(ds.files(a)?.phase);
                annotations.push(a.clone());
            }
        }
        ensure!(
            !previews.is_empty(),
            "--data {}: the test split is empty",
            dir.display()
        );
        let with: Vec<usize> = (0..annotations.len())
            .filter(|&i| annotations[i].is_deformation())
            .collect();
        let without: Vec<usize> = (0..annotations.len())
            .filter(|&i| !annotations[i].is_deformation())
            .collect();
        let n_with = (GALLERY_IMAGES * 2 / 3).min(with.len());
        let mut gallery: Vec<usize> = with.iter().take(n_with).copied().collect();
        gallery.extend(without.iter().take(GALLERY_IMAGES - n_with));
        Ok(Self {
            previews,
            annotations,
            gallery,
        })
    }

    fn label_line(&self, i: usize) -> String {
        let a = &self.annotations[i];
        let labels: Vec<&str> = a
            .label_vector()
            .iter()
            .zip(LABEL_NAMES)
            .filter(|(&v, _)| v > 0.5)
            .map(|(_, n)| n)
            .collect();
        let labels = if labels.is_empty() {
            "Non_Deformation".to_string()
        } else {
            labels.join(", ")
        };
        format!("{} (id {}), true labels: {labels}", a.frame_id, a.unique_id)
    }
}

/// Where one head's files go: its run, its gallery folder and its log (under the encoder's
/// folder `enc_dir`), relative to the bench folder `out`.
struct HeadPaths<'p> {
    out: &'p Path,
    enc_dir: PathBuf,
    run: PathBuf,
    gallery: PathBuf,
    log: PathBuf,
}

struct Bench {
    manifest: Manifest,
    runner: Runner,
    test: TestSet,
}

pub fn run(args: &BenchHeadsArgs, global: &GlobalArgs) -> Result<()> {
    let specs = EncoderSpec::parse_all(&args.encoder)?;
    let heads = if args.heads.is_empty() {
        Head::ALL.to_vec()
    } else {
        args.heads.clone()
    };
    if heads.contains(&Head::Generation) && !heads.contains(&Head::Classification) {
        bail!(
            "--heads: generation needs classification (the classifier judges the generated images)"
        );
    }
    let data = match &args.data {
        Some(d) => d
            .canonicalize()
            .with_context(|| format!("--data {}: no such folder", d.display()))?,
        None => {
            let pb = insar_mm::progress::bar(
                insar_mm::synth::builtin::FRAMES as u64,
                "built-in dataset",
                global.show_progress(),
            );
            let dir = insar_mm::synth::builtin::ensure(global.seed, &|| pb.inc(1))?;
            pb.finish_and_clear();
            dir
        }
    };
    let test = TestSet::open(&data, global.seed)?;
    let manifest = Manifest::new(specs, heads, args.budget, data, global.seed);
    if manifest.open(&args.out)? {
        eprintln!("resuming the bench in {}", args.out.display());
    }
    let out = args.out.canonicalize()?;
    let mut global_opts = vec![
        "--seed".to_string(),
        global.seed.to_string(),
        "--device".into(),
    ];
    global_opts.push(s(format!("{:?}", global.device).to_lowercase()));
    global_opts.push("-q".into());
    let runner = Runner {
        exe: std::env::current_exe().context("locating the insar-mm binary")?,
        global: global_opts,
        stop: super::train::interrupt_flag()?,
    };
    let bench = Bench {
        manifest,
        runner,
        test,
    };
    let mut results = Vec::new();
    for enc in &bench.manifest.encoders {
        for &head in &bench.manifest.heads {
            let r = match HeadResult::load(&out, &enc.label, head)? {
                Some(r) => {
                    eprintln!("{} on {}: finished earlier, reused", head.name(), enc.label);
                    r
                }
                None => {
                    eprintln!("{} on {}: running", head.name(), enc.label);
                    let r = bench.head(&out, enc, head)?;
                    r.save(&out)?;
                    r
                }
            };
            results.push(r);
            write_outputs(&out, &bench.manifest, &results)?;
        }
    }
    print!(
        "{}",
        insar_mm::experiments::bench_heads::markdown(&bench.manifest, &results)
    );
    println!(
        "report: {}",
        out.join(insar_mm::experiments::bench_heads::REPORT_HTML)
            .display()
    );
    Ok(())
}

impl Bench {
    /// Trains `head` on `enc` (or resumes it) and scores it.
    fn head(&self, out: &Path, enc: &EncoderSpec, head: Head) -> Result<HeadResult> {
        let enc_dir = out.join(&enc.label);
        std::fs::create_dir_all(&enc_dir)?;
        let train_dir = if head == Head::Generation {
            out.join(GENERATION_DIR)
        } else {
            enc_dir.clone()
        };
        std::fs::create_dir_all(&train_dir)?;
        let run = train_dir.join(head.train_command());
        let train_seconds = self.train(head, enc, &run)?;
        let mut r = HeadResult {
            head,
            encoder: enc.label.clone(),
            run: rel(out, &run),
            figures: Default::default(),
            train_seconds,
            inference_images_per_s: f64::NAN,
            inference_note: String::new(),
            loss_curve: Some(run.join(LOSS_PLOT_FILE))
                .filter(|p| p.exists())
                .map(|p| rel(out, &p)),
            gallery: Vec::new(),
            notes: Vec::new(),
        };
        let at = HeadPaths {
            out,
            gallery: enc_dir.join(format!("{}-gallery", head.name())),
            log: enc_dir.join(format!("{}.log", head.name())),
            run,
            enc_dir,
        };
        if at.gallery.exists() {
            std::fs::remove_dir_all(&at.gallery)?;
        }
        std::fs::create_dir_all(&at.gallery)?;
        match head {
            Head::Classification | Head::Segmentation => self.score_head(&at, &mut r)?,
            Head::Captioning => self.score_captions(&at, &mut r)?,
            Head::Retrieval => self.score_retrieval(&at, &mut r)?,
            Head::Generation => self.score_generation(&at, &mut r)?,
        }
        Ok(r)
    }

    /// Runs `train <head>`, resuming a run that has a checkpoint; returns the training wall
    /// time summed over attempts (kept in `<run>.seconds`).
    fn train(&self, head: Head, enc: &EncoderSpec, run: &Path) -> Result<f64> {
        let seconds_file = run.with_extension("seconds");
        let mut seconds: f64 = std::fs::read_to_string(&seconds_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0.0);
        let done = run.with_extension("trained");
        if done.exists() {
            return Ok(seconds);
        }
        let cmd = head.train_command();
        let args: Vec<String> = if RunDir::new(run).has_checkpoint() {
            vec!["train".into(), cmd.into(), "--resume".into(), s(run)]
        } else {
            if run.exists() {
                // Stopped before its first checkpoint: nothing to keep.
                std::fs::remove_dir_all(run)?;
            }
            let mut a = vec![
                "train".into(),
                cmd.into(),
                "--data".into(),
                s(&self.manifest.data),
                "--out".into(),
                s(run),
            ];
            if head != Head::Generation {
                a.extend(["--encoder".into(), enc.arg.clone()]);
            }
            a.extend(self.manifest.budget.train_options(head));
            a
        };
        let log = run.with_extension("log");
        // The time of an interrupted or failed attempt counts too.
        let start = Instant::now();
        let result = self.runner.run(&args, &log);
        seconds += start.elapsed().as_secs_f64();
        insar_mm::data::atomic::write_atomic(&seconds_file, seconds.to_string().as_bytes())?;
        result?;
        insar_mm::data::atomic::write_atomic(&done, b"")?;
        Ok(seconds)
    }

    /// Classification and segmentation: the run's test scores, then `predict` over the test
    /// split (timed; its overlays make the gallery).
    fn score_head(&self, at: &HeadPaths, r: &mut HeadResult) -> Result<()> {
        let (out, run, gallery, log) = (at.out, &at.run, &at.gallery, &at.log);
        let scores = read_json(&run.join(TEST_SCORES_FILE))?;
        let cmd = r.head.train_command();
        insert_figures(
            r,
            &scores,
            match r.head {
                Head::Classification => &[
                    ("deformation_f1", "/classes/0/f1"),
                    ("macro_f1", "/macro_avg/f1"),
                    ("map", "/mAP"),
                ][..],
                _ => &[
                    ("deformation_iou", "/IoU_any_deformation"),
                    ("grouped_miou", "/grouped_mIoU"),
                ][..],
            },
        );
        let pred_dir = gallery.join("predictions");
        let mut args = vec![
            "predict".into(),
            cmd.into(),
            "--model".into(),
            s(run),
            "--out".into(),
            s(&pred_dir),
        ];
        args.extend(self.test.previews.iter().map(s));
        let secs = self.runner.run(&args, log)?;
        r.inference_images_per_s = self.test.previews.len() as f64 / secs;
        r.inference_note = format!(
            "inference: `insar-mm predict {cmd}` over the {} test frames, end to end (model loading, PNG decoding and output files included)",
            self.test.previews.len()
        );
        let preds = read_json(&pred_dir.join("predictions.json"))?;
        let preds = preds
            .as_array()
            .context("predictions.json: expected a list")?;
        for &i in &self.test.gallery {
            let Some(p) = preds.get(i) else { continue };
            let Some(overlay) = p.get("overlay").and_then(Value::as_str) else {
                continue;
            };
            let mut lines = vec![self.test.label_line(i)];
            match r.head {
                Head::Classification => {
                    let predicted: Vec<String> = p
                        .get("labels")
                        .and_then(Value::as_array)
                        .map(|v| {
                            v.iter()
                                .filter_map(Value::as_str)
                                .map(String::from)
                                .collect()
                        })
                        .unwrap_or_default();
                    let deformation = num(p, "/scores/Deformation").unwrap_or(f64::NAN);
                    lines.push(format!(
                        "predicted: {} (p(Deformation) {deformation:.2})",
                        if predicted.is_empty() {
                            "–".into()
                        } else {
                            predicted.join(", ")
                        }
                    ));
                    let kind = p
                        .get("deformation_map_kind")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    lines.push(if kind == "mask-head" {
                        "overlay: the mask head's deformation probability per C5 cell".into()
                    } else {
                        "overlay: the Deformation score per window".into()
                    });
                }
                _ => lines.push(
                    "overlay: predicted classes (Mogi red, Dyke orange, Sill yellow, Spheroid magenta, Earthquake cyan, Unidentified green)".into(),
                ),
            }
            r.gallery.push(GalleryItem {
                image: rel(out, Path::new(overlay)),
                lines,
            });
        }
        Ok(())
    }

    fn score_captions(&self, at: &HeadPaths, r: &mut HeadResult) -> Result<()> {
        let (out, run, gallery, log) = (at.out, &at.run, &at.gallery, &at.log);
        // `eval caption` adds the fact scores and the baselines to the run's test scores.
        let scores_file = gallery.join("eval-caption.json");
        let args = vec![
            "eval".into(),
            "caption".into(),
            "--model".into(),
            s(run),
            "--split".into(),
            "test".into(),
            "--json".into(),
        ];
        self.run_to_file(&args, &scores_file, log)?;
        let scores = read_json(&scores_file)?;
        insert_figures(
            r,
            &scores,
            &[
                ("bleu4", "/model/Bleu_4"),
                ("cider_d", "/model/CIDEr"),
                ("fact_f1", "/model/facts/fact_f1"),
                ("deformation_f1", "/model/facts/deformation/f1"),
                ("cider_d_most_frequent", "/baselines/most_frequent/CIDEr"),
                (
                    "fact_f1_nearest_neighbour",
                    "/baselines/nearest_neighbour/facts/fact_f1",
                ),
            ],
        );
        let captions_file = gallery.join("captions.json");
        let mut args = vec!["caption".into(), "--model".into(), s(run), "--json".into()];
        args.extend(self.test.previews.iter().map(s));
        let secs = self.run_to_file(&args, &captions_file, log)?;
        r.inference_images_per_s = self.test.previews.len() as f64 / secs;
        r.inference_note = format!(
            "inference: `insar-mm caption` (beam 3) over the {} test frames, end to end",
            self.test.previews.len()
        );
        let caps = read_json(&captions_file)?;
        let caps = caps.as_array().context("captions: expected a list")?;
        for &i in &self.test.gallery {
            let Some(c) = caps
                .get(i)
                .and_then(|c| c.get("caption"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            let preview = gallery.join(format!("{}.png", self.test.annotations[i].unique_id));
            std::fs::copy(&self.test.previews[i], &preview)
                .with_context(|| format!("copying {}", self.test.previews[i].display()))?;
            let reference = self.test.annotations[i].clean_caption();
            r.gallery.push(GalleryItem {
                image: rel(out, &preview),
                lines: vec![
                    self.test.label_line(i),
                    format!("model: {c}"),
                    fact_line(c),
                    format!("reference: {reference}"),
                    fact_line(&reference),
                ],
            });
        }
        Ok(())
    }

    fn score_retrieval(&self, at: &HeadPaths, r: &mut HeadResult) -> Result<()> {
        let (out, run, gallery, log) = (at.out, &at.run, &at.gallery, &at.log);
        let scores = read_json(&run.join(TEST_SCORES_FILE))?;
        insert_figures(
            r,
            &scores,
            &[
                ("mr", "/relevance/facts/mR"),
                ("r1_text_to_image", "/relevance/facts/text_to_image/R@1"),
                ("r1_image_to_text", "/relevance/facts/image_to_text/R@1"),
            ],
        );
        let index = gallery.join("index");
        let args = vec![
            "index".into(),
            "--model".into(),
            s(run),
            "--data".into(),
            s(&self.manifest.data),
            "--split".into(),
            "test".into(),
            "--out".into(),
            s(&index),
        ];
        let secs = self.runner.run(&args, log)?;
        r.inference_images_per_s = self.test.previews.len() as f64 / secs;
        r.inference_note = format!(
            "inference: `insar-mm index` of the {} test frames, end to end; the gallery searches them with fixed queries (top 5)",
            self.test.previews.len()
        );
        for (k, q) in PROMPTS.iter().enumerate() {
            let sheet = gallery.join(format!("query-{k}.png"));
            let hits_file = gallery.join(format!("query-{k}.json"));
            let args = vec![
                "search".into(),
                "--index".into(),
                s(&index),
                q.to_string(),
                "--top".into(),
                "5".into(),
                "--json".into(),
                "--sheet".into(),
                s(&sheet),
            ];
            self.run_to_file(&args, &hits_file, log)?;
            let hits = read_json(&hits_file)?;
            let mut lines = vec![format!("query: {q}"), fact_line(q)];
            let hits = hits.get("results").and_then(Value::as_array);
            for (n, h) in hits.into_iter().flatten().enumerate() {
                let cap = h.get("caption").and_then(Value::as_str).unwrap_or("");
                lines.push(format!("{}. {}", n + 1, fact_line(cap)));
            }
            r.gallery.push(GalleryItem {
                image: rel(out, &sheet),
                lines,
            });
        }
        Ok(())
    }

    fn score_generation(&self, at: &HeadPaths, r: &mut HeadResult) -> Result<()> {
        let (out, run, enc_dir, log) = (at.out, &at.run, &at.enc_dir, &at.log);
        let judge = enc_dir.join(Head::Classification.train_command());
        let report = enc_dir.join("generation_eval.json");
        let mut args = vec![
            "eval".into(),
            "generation".into(),
            "--model".into(),
            s(run),
            "--classify-model".into(),
            s(&judge),
            "--out".into(),
            s(&report),
        ];
        args.extend(self.manifest.budget.generation_eval_options());
        self.runner.run(&args, log)?;
        let rep = read_json(&report)?;
        insert_figures(
            r,
            &rep,
            &[
                ("fid", "/fid"),
                ("fid_floor", "/fid_floor"),
                ("fidelity_presence", "/judge_generated/matched/presence"),
                ("fidelity_group", "/judge_generated/matched/group"),
                ("fidelity_intensity", "/judge_generated/matched/intensity"),
            ],
        );
        let samples = num(&rep, "/samples").unwrap_or(f64::NAN);
        r.inference_images_per_s = samples / num(&rep, "/seconds_sampling").unwrap_or(f64::NAN);
        r.inference_note = format!(
            "inference: sampling during `insar-mm eval generation` ({samples} images, {} steps)",
            num(&rep, "/steps").unwrap_or(f64::NAN)
        );
        r.notes.push("Generation: one generator serves every encoder (it has no image encoder); its FID features and prompt fidelity come from this column's classification head, the judge.".into());
        // The prompt gallery belongs to the shared generator: made once.
        let gallery = out.join(GENERATION_DIR).join("gallery");
        let sheets: Vec<PathBuf> = (0..PROMPTS.len())
            .map(|k| gallery.join(format!("prompt-{k}.png")))
            .collect();
        if !sheets.iter().all(|p| p.exists()) {
            std::fs::create_dir_all(&gallery)?;
            for (k, p) in PROMPTS.iter().enumerate() {
                let args = vec![
                    "generate".into(),
                    "--model".into(),
                    s(run),
                    p.to_string(),
                    "--n".into(),
                    "4".into(),
                    "--steps".into(),
                    self.manifest.budget.gallery_sampling_steps().to_string(),
                    "--out".into(),
                    s(gallery.join(format!("prompt-{k}"))),
                    "--sheet".into(),
                    s(&sheets[k]),
                ];
                self.runner.run(&args, log)?;
            }
        }
        for (k, p) in PROMPTS.iter().enumerate() {
            r.gallery.push(GalleryItem {
                image: rel(out, &sheets[k]),
                lines: vec![format!("prompt: {p}")],
            });
        }
        Ok(())
    }

    /// Runs a command whose standard output is JSON into `file` (its log gets stderr).
    fn run_to_file(&self, args: &[String], file: &Path, log: &Path) -> Result<f64> {
        let tmp = file.with_extension("stdout");
        let secs = self.runner.run_capturing(args, &tmp, log)?;
        std::fs::rename(&tmp, file)?;
        Ok(secs)
    }
}
