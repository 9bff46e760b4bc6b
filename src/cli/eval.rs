//! `insar-mm eval ...`: metrics on files (captions, features, similarities, scores, masks).
//!
//! Every command prints a readable table, or JSON with `--json`. The metrics live in the
//! `insar-mm-eval` crate; this module only reads files and formats results. Model-driven
//! evaluations (`eval classify|segment|caption --model ...`) are further variants of
//! [`EvalCommand`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use insar_mm_eval::captions::CaptionSet;
use insar_mm_eval::classification;
use insar_mm_eval::fid::{self, FidMode, Stats};
use insar_mm_eval::npy::{self, Matrix};
use insar_mm_eval::retrieval;
use insar_mm_eval::segmentation::Confusion;
use serde_json::{json, Value};

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// A caption run on a split of a dataset: BLEU-1..4, ROUGE-L, CIDEr-D of the model and of
    /// two baselines (most frequent training caption; nearest-neighbour caption retrieval in
    /// the encoder's pooled feature space), optionally the COCO result JSON.
    Caption(super::caption::EvalCaptionArgs),
    /// A `train generator` run: FID/KID on a classify run's encoder features against the
    /// real-vs-real floor, prompt fidelity (judged by the classify run; matched vs shuffled
    /// prompts), the complete-fringe intensity rule, nearest-training distances.
    Generation(super::generate::EvalGenerationArgs),
    /// BLEU-1..4, ROUGE-L and CIDEr-D exactly as pycocoevalcap 1.2 (PTB tokenization
    /// re-implemented; METEOR and SPICE are not computed).
    Captions {
        /// References in COCO annotation format: {"images": [{"id"}], "annotations":
        /// [{"image_id", "caption"}]}.
        #[arg(long)]
        refs: PathBuf,
        /// Results in COCO result format: [{"image_id", "caption"}], one per image.
        #[arg(long)]
        results: PathBuf,
        /// Also report the scores of every image (keyed by image id).
        #[arg(long)]
        per_image: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// FID and KID between two feature matrices (NumPy .npy, f32 or f64, rows = samples).
    Fid {
        /// Real features (.npy), or saved statistics (.npz with `mu`, `sigma`; FID only).
        #[arg(long)]
        real: PathBuf,
        /// Generated features (.npy), or saved statistics (.npz; FID only).
        #[arg(long)]
        fake: PathBuf,
        /// `exact`: exact trace of the matrix square root; `pytorch-fid`: also its
        /// ε = 1e-6 retry on singular products.
        #[arg(long, value_enum, default_value_t = FidModeArg::Exact)]
        mode: FidModeArg,
        /// Number of random KID subsets (drawn from --seed).
        #[arg(long, default_value_t = 100)]
        kid_subsets: usize,
        /// Samples per KID subset (torch-fidelity's default 1000); lowered to the smaller
        /// set size with a note when a set is smaller.
        #[arg(long, default_value_t = 1000)]
        kid_subset_size: usize,
        /// Skip KID (FID only).
        #[arg(long)]
        no_kid: bool,
        /// Save the real set's statistics (mu, sigma) as .npz for reuse.
        #[arg(long)]
        save_real_stats: Option<PathBuf>,
        /// Save the generated set's statistics as .npz.
        #[arg(long)]
        save_fake_stats: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// R@1/5/10, median and mean rank, mAP from a query × gallery similarity matrix; or,
    /// with --model RUN, a retrieval run on a split (both directions, relevance by caption
    /// and by caption facts) next to baselines.
    Retrieval {
        /// Similarities (.npy, queries × gallery; larger = more similar).
        #[arg(long, required_unless_present = "model", requires = "relevant")]
        similarity: Option<PathBuf>,
        /// JSON list, per query row, of the relevant gallery column indices.
        #[arg(long, requires = "similarity")]
        relevant: Option<PathBuf>,
        #[command(flatten)]
        run: super::retrieval::EvalRetrievalArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Per-class precision/recall/F1/support, averages, AP, AUROC and confusion matrix.
    Classification {
        /// Scores (.npy, samples × classes; probabilities for multi-label).
        #[arg(long)]
        scores: PathBuf,
        /// Labels (.npy): samples × classes of 0/1 (multi-label) or one class index per
        /// sample (single-label, prediction = arg-max).
        #[arg(long)]
        labels: PathBuf,
        /// Multi-label decision threshold on the scores.
        #[arg(long, default_value_t = 0.5)]
        threshold: f64,
        /// Class names, comma-separated (one per score column).
        #[arg(long, value_delimiter = ',')]
        names: Option<Vec<String>>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// IoU, Dice, accuracies from one confusion matrix over all label maps (PNG).
    Segmentation {
        /// Folder of predicted label maps (gray PNG, value = class id).
        #[arg(long)]
        pred: PathBuf,
        /// Folder of ground-truth label maps with the same file names.
        #[arg(long)]
        gt: PathBuf,
        /// Number of classes K (labels 0..K-1).
        #[arg(long)]
        num_classes: usize,
        /// Ground-truth value excluded from the metrics.
        #[arg(long, default_value_t = 255)]
        ignore_index: u32,
        /// Class names, comma-separated.
        #[arg(long, value_delimiter = ',')]
        names: Option<Vec<String>>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Scores a `train classify` run on a split of a dataset: per-label P/R/F1/support, AP,
    /// AUROC, averages and the deformation-vs-none scores (insar-mm-eval).
    Classify(ModelEvalArgs),
    /// Scores a `train segment` run on a split of a dataset: per-class IoU/Dice/Acc, mIoU,
    /// mIoU over the deformation classes present (insar-mm-eval).
    Segment(ModelEvalArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FidModeArg {
    Exact,
    PytorchFid,
}

pub fn run(cmd: EvalCommand, global: &GlobalArgs) -> Result<()> {
    match cmd {
        EvalCommand::Classify(a) => eval_classify(a, global),
        EvalCommand::Segment(a) => eval_segment(a, global),
        EvalCommand::Caption(args) => super::caption::run_eval(args, global),
        EvalCommand::Generation(args) => super::generate::run_eval_generation(&args, global),
        EvalCommand::Captions {
            refs,
            results,
            per_image,
            json,
        } => captions(&refs, &results, per_image, json),
        EvalCommand::Fid {
            real,
            fake,
            mode,
            kid_subsets,
            kid_subset_size,
            no_kid,
            save_real_stats,
            save_fake_stats,
            json,
        } => fid_cmd(FidArgs {
            real,
            fake,
            mode: match mode {
                FidModeArg::Exact => FidMode::Exact,
                FidModeArg::PytorchFid => FidMode::PytorchFid,
            },
            kid_subsets,
            kid_subset_size,
            no_kid,
            save_real_stats,
            save_fake_stats,
            json,
            seed: global.seed,
        }),
        EvalCommand::Retrieval {
            similarity,
            relevant,
            run,
            json,
        } => match (similarity, relevant, &run.model) {
            (Some(s), Some(r), None) => retrieval_cmd(&s, &r, json),
            (None, None, Some(_)) => super::retrieval::run_eval(run, json, global),
            _ => bail!("give either --model RUN or --similarity FILE --relevant FILE"),
        },
        EvalCommand::Classification {
            scores,
            labels,
            threshold,
            names,
            json,
        } => classification_cmd(&scores, &labels, threshold, names, json),
        EvalCommand::Segmentation {
            pred,
            gt,
            num_classes,
            ignore_index,
            names,
            json,
        } => segmentation_cmd(&pred, &gt, num_classes, ignore_index, names, json),
    }
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn captions(refs: &Path, results: &Path, per_image: bool, as_json: bool) -> Result<()> {
    let set = CaptionSet::load(refs, results)?;
    let scores = set.evaluate(per_image)?;
    if as_json {
        let mut v = scores.to_json();
        v["tokenizer"] = json!("PTB (pycocoevalcap 1.2 behaviour, re-implemented)");
        return print_json(&v);
    }
    println!(
        "{} images evaluated (PTB tokenization as pycocoevalcap 1.2; METEOR and SPICE not computed)",
        scores.images
    );
    if scores.images_without_result > 0 {
        println!(
            "note: {} reference images have no result and were not evaluated",
            scores.images_without_result
        );
    }
    println!("{:<8} {:>10}", "metric", "score");
    for (name, v) in [
        ("Bleu_1", scores.bleu1),
        ("Bleu_2", scores.bleu2),
        ("Bleu_3", scores.bleu3),
        ("Bleu_4", scores.bleu4),
        ("ROUGE_L", scores.rouge_l),
        ("CIDEr", scores.cider),
    ] {
        println!("{name:<8} {v:>10.6}");
    }
    if let Some(per) = &scores.per_image {
        println!();
        println!(
            "{:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "image_id", "Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"
        );
        for (id, s) in per {
            println!(
                "{:<12} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4}",
                id.to_string(),
                s.bleu1,
                s.bleu2,
                s.bleu3,
                s.bleu4,
                s.rouge_l,
                s.cider
            );
        }
    }
    Ok(())
}

struct FidArgs {
    real: PathBuf,
    fake: PathBuf,
    mode: FidMode,
    kid_subsets: usize,
    kid_subset_size: usize,
    no_kid: bool,
    save_real_stats: Option<PathBuf>,
    save_fake_stats: Option<PathBuf>,
    json: bool,
    seed: u64,
}

enum FeatureInput {
    Features(Matrix),
    Stats(Stats),
}

fn is_npz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

fn load_features(path: &Path, flag: &str) -> Result<FeatureInput> {
    if is_npz(path) {
        let stats = Stats::load(path).with_context(|| format!("{flag}: cannot load statistics"))?;
        return Ok(FeatureInput::Stats(stats));
    }
    let m = npy::read(path).with_context(|| format!("{flag}: cannot read features"))?;
    if m.shape.len() != 2 {
        bail!(
            "{flag} {}: features must be a 2-D array (samples × dimensions), got shape {:?}",
            path.display(),
            m.shape
        );
    }
    m.check_finite("features")
        .with_context(|| format!("{flag} {}", path.display()))?;
    Ok(FeatureInput::Features(m))
}

fn fid_cmd(a: FidArgs) -> Result<()> {
    let real = load_features(&a.real, "--real")?;
    let fake = load_features(&a.fake, "--fake")?;
    let stats_of = |input: &FeatureInput, path: &Path, flag: &str| -> Result<Stats> {
        match input {
            FeatureInput::Stats(s) => Ok(s.clone()),
            FeatureInput::Features(m) => {
                Stats::from_features(m).with_context(|| format!("{flag} {}", path.display()))
            }
        }
    };
    let mut notes = Vec::new();
    let fid_value = match (&real, &fake) {
        (FeatureInput::Features(r), FeatureInput::Features(f)) => fid::fid(r, f, a.mode)?,
        _ => {
            let s1 = stats_of(&real, &a.real, "--real")?;
            let s2 = stats_of(&fake, &a.fake, "--fake")?;
            fid::fid_from_stats(&s1, &s2, a.mode).context("--real/--fake statistics")?
        }
    };
    for (save, input, path, flag) in [
        (&a.save_real_stats, &real, &a.real, "--real"),
        (&a.save_fake_stats, &fake, &a.fake, "--fake"),
    ] {
        if let Some(out) = save {
            stats_of(input, path, flag)?
                .save(out)
                .with_context(|| format!("cannot save statistics to {}", out.display()))?;
        }
    }
    let kid = match (&real, &fake) {
        (FeatureInput::Features(r), FeatureInput::Features(f)) if !a.no_kid => {
            let mut size = a.kid_subset_size;
            let smallest = r.rows.min(f.rows);
            if smallest < size {
                notes.push(format!(
                    "KID subset size lowered from {size} to {smallest} (the smaller set)"
                ));
                size = smallest;
            }
            Some(fid::kid(r, f, a.kid_subsets, size, a.seed)?)
        }
        _ => {
            if !a.no_kid {
                notes.push("KID needs features, not statistics: skipped".to_string());
            }
            None
        }
    };
    if fid_value.eps_retry {
        notes.push(format!(
            "pytorch-fid eps retry applied (each set has a constant feature the other lacks); without it FID = {:.6}",
            fid_value.without_retry.unwrap_or(f64::NAN)
        ));
    }
    if a.json {
        let mut v = json!({
            "fid": fid_value.fid,
            "mode": fid_value.mode,
            "method": fid_value.method,
            "eps_retry": fid_value.eps_retry,
            "notes": notes,
        });
        if let Some(w) = fid_value.without_retry {
            v["fid_without_retry"] = json!(w);
        }
        if let Some(k) = &kid {
            v["kid_mean"] = json!(k.mean);
            v["kid_std"] = json!(k.std);
            v["kid_full"] = json!(k.full);
            v["kid_subsets"] = json!(k.subsets);
            v["kid_subset_size"] = json!(k.subset_size);
            v["seed"] = json!(k.seed);
        }
        return print_json(&v);
    }
    println!("{:<10} {:>16}", "metric", "value");
    println!("{:<10} {:>16.6}", "fid", fid_value.fid);
    if let Some(k) = &kid {
        println!("{:<10} {:>16.8}", "kid_mean", k.mean);
        println!("{:<10} {:>16.8}", "kid_std", k.std);
        println!("{:<10} {:>16.8}", "kid_full", k.full);
        println!(
            "(KID: {} subsets of {} from seed {}; raw scale, papers often print ×100 or ×1000)",
            k.subsets, k.subset_size, k.seed
        );
    }
    println!(
        "(FID mode {:?}, method {})",
        fid_value.mode, fid_value.method
    );
    for n in notes {
        println!("note: {n}");
    }
    Ok(())
}

fn read_json(path: &Path, flag: &str) -> Result<Value> {
    let bytes =
        std::fs::read(path).with_context(|| format!("{flag} {}: cannot read", path.display()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!("{flag} {}: empty file", path.display());
    }
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{flag} {}: invalid JSON", path.display()))
}

fn retrieval_cmd(similarity: &Path, relevant: &Path, as_json: bool) -> Result<()> {
    let s = npy::read(similarity).context("--similarity")?;
    let rel = retrieval::parse_relevant(&read_json(relevant, "--relevant")?)
        .with_context(|| format!("--relevant {}", relevant.display()))?;
    let r = retrieval::evaluate(&s, &rel).with_context(|| {
        format!(
            "--similarity {} / --relevant {}",
            similarity.display(),
            relevant.display()
        )
    })?;
    if as_json {
        return print_json(&serde_json::to_value(&r)?);
    }
    println!(
        "{} queries × {} gallery items (ties ranked pessimistically)",
        r.queries, r.gallery
    );
    println!("{:<6} {:>10}", "metric", "value");
    for (name, v) in [("R@1", r.r1), ("R@5", r.r5), ("R@10", r.r10)] {
        println!("{name:<6} {v:>10.4}");
    }
    println!("{:<6} {:>10}", "medr", r.medr);
    println!("{:<6} {:>10.3}", "meanr", r.meanr);
    println!("{:<6} {:>10.4}", "mAP", r.map);
    Ok(())
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into())
}

/// Prints a classification report as a table (per class, averages, mAP, accuracy).
pub fn print_classification_report(r: &classification::ClassificationReport) {
    match (r.threshold, &r.thresholds) {
        (Some(t), _) => println!("{}: {} samples, threshold {t}", r.task, r.samples),
        (None, Some(_)) => println!(
            "{}: {} samples, per-class thresholds (column `thr`)",
            r.task, r.samples
        ),
        (None, None) => println!("{}: {} samples, prediction = arg-max", r.task, r.samples),
    }
    let width = r
        .classes
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(5)
        .max(12);
    let thr = |k: usize| match &r.thresholds {
        Some(t) => format!(" {:>6.3}", t[k]),
        None => String::new(),
    };
    println!(
        "{:<width$} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}{}",
        "class",
        "precision",
        "recall",
        "f1",
        "support",
        "AP",
        "AUROC",
        if r.thresholds.is_some() {
            "    thr"
        } else {
            ""
        }
    );
    for (k, c) in r.classes.iter().enumerate() {
        println!(
            "{:<width$} {:>9.4} {:>9.4} {:>9.4} {:>8} {:>8} {:>8}{}",
            c.name,
            c.precision,
            c.recall,
            c.f1,
            c.support,
            opt(c.ap),
            opt(c.auroc),
            thr(k)
        );
    }
    let mut avgs = vec![
        ("macro avg", r.macro_avg),
        ("micro avg", r.micro_avg),
        ("weighted avg", r.weighted_avg),
    ];
    if let Some(s) = r.samples_avg {
        avgs.push(("samples avg", s));
    }
    for (name, a) in avgs {
        println!(
            "{name:<width$} {:>9.4} {:>9.4} {:>9.4}",
            a.precision, a.recall, a.f1
        );
    }
    println!("mAP {}  macro AUROC {}", opt(r.map), opt(r.macro_auroc));
    let acc_name = if r.task == "multi-label" {
        "subset accuracy"
    } else {
        "accuracy"
    };
    println!("{acc_name} {:.4}", r.accuracy);
    if r.task != "multi-label" {
        println!("confusion matrix (rows = true class, columns = predicted):");
        for row in &r.confusion[0] {
            println!(
                "  {}",
                row.iter().map(|v| format!("{v:>6}")).collect::<String>()
            );
        }
    }
}

fn classification_cmd(
    scores: &Path,
    labels: &Path,
    threshold: f64,
    names: Option<Vec<String>>,
    as_json: bool,
) -> Result<()> {
    let s = npy::read(scores).context("--scores")?;
    let y = npy::read(labels).context("--labels")?;
    let r = classification::evaluate(&s, &y, threshold, names.as_deref()).with_context(|| {
        format!(
            "--scores {} / --labels {}",
            scores.display(),
            labels.display()
        )
    })?;
    if as_json {
        return print_json(&serde_json::to_value(&r)?);
    }
    print_classification_report(&r);
    Ok(())
}

/// Reads a label map: a single-channel 8- or 16-bit PNG whose values are class ids (within
/// the image size limits of every PNG read).
fn read_label_map(path: &Path) -> Result<(usize, usize, Vec<u32>)> {
    let png = insar_mm::data::png::Png::read(path)?;
    let values = png.label_values().with_context(|| {
        format!(
            "{}: a label map must be a single-channel gray PNG (8 or 16 bit)",
            path.display()
        )
    })?;
    Ok((png.width, png.height, values))
}

fn png_names(dir: &Path, flag: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("{flag} {}: cannot list", dir.display()))?
    {
        let entry = entry.with_context(|| format!("{flag} {}: cannot list", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.to_ascii_lowercase().ends_with(".png") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn segmentation_cmd(
    pred: &Path,
    gt: &Path,
    k: usize,
    ignore: u32,
    names: Option<Vec<String>>,
    as_json: bool,
) -> Result<()> {
    if let Some(n) = &names {
        if n.len() != k {
            bail!("--names: {} names for --num-classes {k}", n.len());
        }
    }
    let gt_names = png_names(gt, "--gt")?;
    if gt_names.is_empty() {
        bail!("--gt {}: no PNG label maps", gt.display());
    }
    let pred_names = png_names(pred, "--pred")?;
    let missing: Vec<&String> = gt_names
        .iter()
        .filter(|n| !pred_names.contains(n))
        .collect();
    if !missing.is_empty() {
        bail!(
            "--pred {}: {} ground-truth maps have no prediction with the same name (first: {})",
            pred.display(),
            missing.len(),
            missing[0]
        );
    }
    let extra = pred_names.iter().filter(|n| !gt_names.contains(n)).count();
    let mut cm = Confusion::new(k, Some(ignore))?;
    for name in &gt_names {
        let (pp, gp) = (pred.join(name), gt.join(name));
        let (pw, ph, pv) = read_label_map(&pp)?;
        let (gw, gh, gv) = read_label_map(&gp)?;
        if (pw, ph) != (gw, gh) {
            bail!(
                "{}: {pw}×{ph} but the ground truth {} is {gw}×{gh}",
                pp.display(),
                gp.display()
            );
        }
        cm.add(&pv, &gv)
            .with_context(|| format!("{} / {}", pp.display(), gp.display()))?;
    }
    let s = cm.scores().context("segmentation")?;
    if as_json {
        let mut v = serde_json::to_value(&s)?;
        v["images"] = json!(gt_names.len());
        v["ignore_index"] = json!(ignore);
        if let Some(n) = &names {
            v["names"] = json!(n);
        }
        return print_json(&v);
    }
    println!(
        "{} label maps, {} valid pixels (ignore index {ignore}), one confusion matrix over the dataset",
        gt_names.len(),
        s.pixels
    );
    if extra > 0 {
        println!("note: {extra} predictions have no ground truth and were not used");
    }
    println!("{:<14} {:>8} {:>8} {:>8}", "class", "IoU", "Dice", "Acc");
    for (c, ((iou, dice), acc)) in s.iou.iter().zip(&s.dice).zip(&s.acc).enumerate() {
        let name = names
            .as_ref()
            .map(|n| n[c].clone())
            .unwrap_or_else(|| c.to_string());
        println!(
            "{:<14} {:>8} {:>8} {:>8}",
            name,
            opt(*iou),
            opt(*dice),
            opt(*acc)
        );
    }
    println!(
        "mIoU {:.4}  mDice {:.4}  mAcc {:.4}  aAcc {:.4}",
        s.miou, s.mdice, s.macc, s.aacc
    );
    println!("(means skip classes absent from both prediction and truth, shown as -)");
    Ok(())
}

/// `eval classify|segment`.
#[derive(Debug, clap::Args)]
pub struct ModelEvalArgs {
    /// Run directory of `insar-mm train classify|segment`, or a Hugging Face Hub id
    /// `owner/name[@revision]` (fetched into the HF cache; cache only with HF_HUB_OFFLINE=1).
    #[arg(long, value_name = "RUN")]
    pub model: PathBuf,
    /// Dataset directory [default: the run's data.dir, else the built-in synthetic dataset
    /// of the run's seed].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The part of the dataset's split to score.
    #[arg(long, value_enum, default_value_t = insar_mm::data::split::Part::Test)]
    pub split: insar_mm::data::split::Part,
    /// Write the JSON report here.
    #[arg(long, value_name = "REPORT.json")]
    pub out: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Images per forward pass.
    #[arg(long, value_name = "B", default_value_t = 32)]
    pub batch_size: usize,
    /// Average the predictions over these views of each image: none, flips or dihedral
    /// (8 symmetries of the square) [default: the run's `test_time_augment`].
    #[arg(long, value_name = "VIEWS")]
    pub tta: Option<insar_mm_models::heads::TestTimeAugment>,
}

/// The checked `--batch-size`, the device and the `--model` run directory (a Hub id
/// fetched) of `eval classify|segment`.
fn open_head_run(a: &ModelEvalArgs, global: &GlobalArgs) -> Result<(PathBuf, candle_core::Device)> {
    anyhow::ensure!(a.batch_size >= 1, "--batch-size must be at least 1");
    let device = insar_mm::device::open(global.device)?;
    let run = insar_mm::train::hub::resolve_model(
        &a.model,
        &insar_mm::train::hub::RunFiles::HEAD,
        global.show_progress(),
    )?;
    Ok((run, device))
}

/// The `--split` part of the run's (or `--data`'s) dataset at the run's input size.
fn model_eval_part(
    a: &ModelEvalArgs,
    data: &insar_mm::train::heads::HeadData,
    seed: u64,
    global: &GlobalArgs,
) -> Result<(insar_mm::train::heads::LabeledPart, PathBuf)> {
    use insar_mm::train::heads::{builtin_dir, HeadDataDir};
    let dir = match (&a.data, &data.dir) {
        (Some(d), _) | (None, Some(d)) => d.clone(),
        (None, None) => builtin_dir(seed, global.show_progress())?,
    };
    let part = HeadDataDir::open(&dir, data.input_format, seed)?.part(a.split, data.image_size)?;
    if part.is_empty() {
        bail!(
            "--data {}: the {} split has no interferogram with images",
            dir.display(),
            a.split
        );
    }
    Ok((part, dir))
}

fn write_report(a: &ModelEvalArgs, v: &Value) -> Result<()> {
    if let Some(out) = &a.out {
        insar_mm::data::atomic::write_atomic(out, serde_json::to_string_pretty(v)?.as_bytes())
            .with_context(|| format!("--out {}", out.display()))?;
    }
    Ok(())
}

fn eval_classify(a: ModelEvalArgs, global: &GlobalArgs) -> Result<()> {
    use insar_mm::train::classify::{report_json, score_part, ClassifyConfig};
    let (run, device) = open_head_run(&a, global)?;
    let loaded = insar_mm::train::heads::recipe::load::<ClassifyConfig>(&run, &device)?;
    let cfg = &loaded.config;
    let (part, dir) = model_eval_part(&a, &cfg.data, cfg.seed, global)?;
    let thresholds = cfg.decision_thresholds();
    let tta = a.tta.unwrap_or(cfg.test_time_augment);
    let r = score_part(
        &loaded.model,
        &part,
        &thresholds,
        a.batch_size,
        tta,
        &device,
    )?;
    let v = report_json(
        &r,
        json!({
            "test_time_augment": tta,
            "model": a.model.display().to_string(),
            "weights": loaded.weights.display().to_string(),
            "data": dir.display().to_string(),
            "split": a.split.as_str(),
        }),
    )?;
    write_report(&a, &v)?;
    if a.json {
        return print_json(&v);
    }
    println!(
        "{} split of {} ({} samples): deformation-vs-none F1 {:.4}, macro-F1 {:.4}",
        a.split,
        dir.display(),
        r.samples,
        r.classes[0].f1,
        r.macro_avg.f1
    );
    print_classification_report(&r);
    Ok(())
}

fn eval_segment(a: ModelEvalArgs, global: &GlobalArgs) -> Result<()> {
    use insar_mm::train::segment::{score_part, SegmentConfig};
    let (run, device) = open_head_run(&a, global)?;
    let loaded = insar_mm::train::heads::recipe::load::<SegmentConfig>(&run, &device)?;
    let cfg = &loaded.config;
    let (part, dir) = model_eval_part(&a, &cfg.data, cfg.seed, global)?;
    let tta = a.tta.unwrap_or(cfg.test_time_augment);
    let r = score_part(&loaded.model, &part, a.batch_size, tta, &device)?;
    let v = r.to_json(json!({
        "test_time_augment": tta,
        "model": a.model.display().to_string(),
        "weights": loaded.weights.display().to_string(),
        "data": dir.display().to_string(),
        "split": a.split.as_str(),
        "resolution": cfg.data.image_size,
    }))?;
    write_report(&a, &v)?;
    if a.json {
        return print_json(&v);
    }
    println!(
        "{} split of {} ({} images at {}²):",
        a.split,
        dir.display(),
        r.images,
        cfg.data.image_size
    );
    r.print();
    Ok(())
}
