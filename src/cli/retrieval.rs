//! Retrieval commands: `train retrieval` (its handler), `insar-mm index` and
//! `insar-mm search`. The library side is `insar_mm::retrieval` and `insar_mm::train::retrieval`.

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use insar_mm_models::retrieval::LossKind;

use super::train::CommonTrainArgs;
use super::GlobalArgs;
use insar_mm::data::split::Part;
use insar_mm::retrieval::index::{frame_and_dates, Entry, Index};
use insar_mm::retrieval::{build_index, gather_dataset, write_sheet, Gathered};
use insar_mm::train::checkpoint::RunDir;
use insar_mm::train::retrieval::{
    self as task, check_query, embed_images, embed_texts, load_run, LoadedRetrievalRun,
    RetrievalTrainConfig,
};
use insar_mm::train::Outcome;

#[derive(Debug, Args)]
pub struct RetrievalTrainArgs {
    #[command(flatten)]
    pub common: CommonTrainArgs,
    /// Image encoder preset when no --encoder is given [default: the config's
    /// `encoder_preset`, else tiny].
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(insar_mm_models::encoder::EncoderConfig::PRESETS), conflicts_with = "resume")]
    pub preset: Option<String>,
    /// Where the image encoder starts: auto (the shipped SimCLR encoder when it fits the
    /// preset, else random), shipped, none (random) or RUN (a `train pretrain` or
    /// classify/segment run: its architecture and `encoder.*` weights) [default: the
    /// config's `encoder`, else auto].
    #[arg(long, value_name = "auto|shipped|none|RUN", value_parser = insar_mm::train::encoder_init::EncoderInit::parse, conflicts_with = "resume")]
    pub encoder: Option<insar_mm::train::encoder_init::EncoderInit>,
    /// Keep the image encoder fixed (only the projections and the text tower train).
    #[arg(long, conflicts_with = "resume")]
    pub freeze_encoder: bool,
    #[command(flatten)]
    pub captions: super::train::CaptionDataArgs,
    /// Contrastive loss: multi-positive (pairs with the same caption facts are all
    /// positives), mask-false-negatives, or info-nce (plain InfoNCE) [default: the config's].
    #[arg(long, value_name = "KIND", value_parser = parse_loss, conflicts_with = "resume")]
    pub loss: Option<LossKind>,
}

fn parse_loss(s: &str) -> std::result::Result<LossKind, String> {
    LossKind::ALL
        .into_iter()
        .find(|k| k.name() == s)
        .ok_or_else(|| {
            format!(
                "unknown loss {s:?}: expected one of {}",
                LossKind::ALL.map(|k| k.name()).join(", ")
            )
        })
}

/// `insar-mm train retrieval`.
pub fn run_train(args: &RetrievalTrainArgs, global: &GlobalArgs) -> Result<()> {
    let common = &args.common;
    let device = insar_mm::device::open(global.device)?;
    let (mut cfg, run, resume) = match &common.resume {
        Some(dir) => {
            let run = RunDir::new(dir);
            insar_mm::train::heads::expect_task(dir, task::TASK)?;
            let mut cfg: RetrievalTrainConfig = run.read_config()?;
            common.apply_resume_overrides(&run, &mut cfg, |c| (&mut c.train, &mut c.optim))?;
            (cfg, run, true)
        }
        None => {
            let mut cfg = match &common.config {
                Some(path) => RetrievalTrainConfig::from_file(path)?,
                None => RetrievalTrainConfig::default(),
            };
            cfg.seed = global.seed;
            if let Some(p) = &args.preset {
                cfg.encoder_preset = p.clone();
            }
            args.captions.apply(common, &mut cfg.data);
            if let Some(lr) = common.lr {
                cfg.optim.set_lr(lr);
            }
            if args.freeze_encoder {
                cfg.freeze_encoder = true;
            }
            if let Some(e) = &args.encoder {
                cfg.encoder = e.clone();
            }
            if let Some(l) = args.loss {
                cfg.loss = l;
            }
            common.apply_train_overrides(&mut cfg.train);
            cfg.validate()?;
            let out = common.out.clone().unwrap_or_else(|| {
                PathBuf::from("runs").join(format!("retrieval-{}", cfg.encoder_preset))
            });
            (cfg, RunDir::new(out), false)
        }
    };
    let (ds, source) = insar_mm::train::caption::open_caption_dataset(
        cfg.data.dir.as_deref(),
        cfg.data.annotations.as_deref(),
        cfg.data.annotation_limit,
        cfg.seed,
        &|len, what| insar_mm::progress::bar(len, what, global.show_progress()),
    )?;
    let data = insar_mm::train::caption::caption_parts(
        &ds,
        cfg.data.input_format,
        cfg.data.image_size,
        cfg.seed,
    )?;
    let from = source.to_string();
    if !resume {
        cfg.data.source = Some(source);
    }
    let root = run.root.clone();
    log::info!(
        "{} retrieval: {} encoder, {}² inputs, batch {}, loss {}, {} train / {} val / {} test pairs from {}, run {}",
        if resume { "resuming" } else { "starting" },
        cfg.encoder_preset,
        cfg.data.image_size,
        cfg.data.batch_size,
        cfg.loss.name(),
        data.train.len(),
        data.val.len(),
        data.test.len(),
        from,
        root.display()
    );
    let options = common.run_options(global)?;
    let out = task::train_retrieval(&mut cfg, data, run, resume, &device, options)?;
    match out.outcome {
        Outcome::Finished { step } => log::info!("finished at step {step}; run in {}", root.display()),
        Outcome::Interrupted { step } => eprintln!(
            "interrupted at step {step}; checkpoint saved in {} (continue with `insar-mm train retrieval --resume {}`)",
            root.display(),
            root.display()
        ),
    }
    if let Some(s) = out.test {
        println!("test split ({} image–caption pairs):", s.pairs);
        print_scores(&[("model", &s)]);
    }
    Ok(())
}

/// Prints one row per (method, relevance): mR and both directions' R@1/5/10, medr, mAP.
pub fn print_scores(rows: &[(&str, &task::PartScores)]) {
    println!(
        "  {:<22} {:<10} {:>6} | {:>5} {:>5} {:>5} {:>5} {:>6} | {:>5} {:>5} {:>5} {:>5} {:>6}",
        "method",
        "relevance",
        "mR",
        "t2i1",
        "R@5",
        "R@10",
        "medr",
        "mAP",
        "i2t1",
        "R@5",
        "R@10",
        "medr",
        "mAP"
    );
    for (name, s) in rows {
        for b in &s.by_relevance {
            let (t, i) = (&b.text_to_image, &b.image_to_text);
            println!(
                "  {:<22} {:<10} {:>6.1} | {:>5.3} {:>5.3} {:>5.3} {:>5} {:>6.3} | {:>5.3} {:>5.3} {:>5.3} {:>5} {:>6.3}",
                name,
                b.relevance.name(),
                b.mean_recall,
                t.r1,
                t.r5,
                t.r10,
                t.medr,
                t.map,
                i.r1,
                i.r5,
                i.r10,
                i.medr,
                i.map
            );
        }
        if let Some(g) = &s.group_queries {
            println!(
                "  {:<22} {:<10} text→image R@10 {:.3} over {} captions naming a type group",
                name, "group", g.r10, g.queries
            );
        }
    }
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Retrieval run (`insar-mm train retrieval --out RUN`) whose image tower embeds.
    #[arg(long, value_name = "RUN")]
    pub model: PathBuf,
    /// Index folder to write (manifest.json + embeddings.safetensors).
    #[arg(long, value_name = "INDEX")]
    pub out: PathBuf,
    /// A dataset folder: every interferogram, with its frame, dates and caption.
    #[arg(long, value_name = "DIR", conflicts_with = "inputs")]
    pub data: Option<PathBuf>,
    /// With --data: only this split part (the dataset's split.json, else the run seed's
    /// 80/10/10 frame split).
    #[arg(long, value_enum, requires = "data")]
    pub split: Option<super::caption::SplitArg>,
    /// Phase preview PNGs (`*.geo.diff.png`, `InSAR.png`) or folders holding them.
    #[arg(value_name = "PNG_OR_DIR")]
    pub inputs: Vec<PathBuf>,
    /// Add to the existing index in --out (built by the same model) instead of replacing it;
    /// the indexed images are not embedded again.
    #[arg(long)]
    pub append: bool,
}

fn part_of(s: super::caption::SplitArg) -> Part {
    match s {
        super::caption::SplitArg::Train => Part::Train,
        super::caption::SplitArg::Val => Part::Val,
        super::caption::SplitArg::Test => Part::Test,
    }
}

/// The phase PNGs `paths` as model input of `run` (frame and dates read from the LiCSAR
/// folder layout when present; no caption).
pub fn gather_pngs(paths: &[PathBuf], run: &LoadedRetrievalRun) -> Result<Gathered> {
    let arch = run.cfg.model()?;
    let images = super::caption::load_model_inputs(
        paths,
        run.cfg.data.input_format,
        run.cfg.data.image_size,
        arch.image.in_channels,
    )?;
    let entries = paths
        .iter()
        .map(|p| {
            let (frame, dates) = frame_and_dates(p);
            Entry {
                path: p.display().to_string(),
                id: p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
                    .to_string(),
                frame,
                dates,
                caption: None,
            }
        })
        .collect();
    Ok(Gathered { entries, images })
}

/// `insar-mm index`.
pub fn run_index(args: IndexArgs, global: &GlobalArgs) -> Result<()> {
    let device = insar_mm::device::open(global.device)?;
    ensure!(
        args.data.is_some() || !args.inputs.is_empty(),
        "nothing to index: give --data DIR or PNG files / folders"
    );
    // Check an existing index before the (slow) embedding.
    let existing = if args.append {
        let idx = Index::load(&args.out).context("--append")?;
        Some(idx)
    } else {
        ensure!(
            !args
                .out
                .join(insar_mm::retrieval::index::MANIFEST_FILE)
                .exists(),
            "--out {}: an index exists there (use --append to add to it, or another folder)",
            args.out.display()
        );
        None
    };
    let run = load_run(&args.model, &device)?;
    if let Some(idx) = &existing {
        idx.check_model(&run.id, &args.model, &args.out)?;
    }
    let started = std::time::Instant::now();
    let gathered = match &args.data {
        Some(dir) => gather_dataset(dir, args.split.map(part_of), &run)?,
        None => {
            let paths = super::caption::expand_inputs(&args.inputs)?;
            gather_pngs(&paths, &run)?
        }
    };
    let loaded = started.elapsed().as_secs_f64();
    let n = gathered.entries.len();
    let new = build_index(&run, gathered, &device)?;
    let total = started.elapsed().as_secs_f64();
    let index = match existing {
        Some(mut idx) => {
            idx.append(new)?;
            idx
        }
        None => new,
    };
    index.save(&args.out)?;
    eprintln!(
        "indexed {n} images in {total:.1} s ({:.1} images/s; {loaded:.1} s decoding, {:.1} s embedding); {} has {} entries",
        n as f64 / total.max(1e-9),
        total - loaded,
        args.out.display(),
        index.len()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Index folder (`insar-mm index --out INDEX`).
    #[arg(long, value_name = "INDEX")]
    pub index: PathBuf,
    /// Text query, e.g. "high intensity dyke-type deformation on the left side".
    #[arg(
        value_name = "QUERY",
        required_unless_present = "image",
        conflicts_with = "image"
    )]
    pub query: Option<String>,
    /// Query by image: the indexed interferograms most similar to this phase PNG, or, with
    /// --captions/--from-index, the captions that best describe it.
    #[arg(long, value_name = "PNG")]
    pub image: Option<PathBuf>,
    /// With --image: rank the captions of this file (one per line) for the image.
    #[arg(
        long,
        value_name = "FILE",
        requires = "image",
        conflicts_with = "from_index"
    )]
    pub captions: Option<PathBuf>,
    /// With --image: rank the distinct captions stored in the index.
    #[arg(long, requires = "image")]
    pub from_index: bool,
    /// The retrieval run [default: the one recorded in the index].
    #[arg(long, value_name = "RUN")]
    pub model: Option<PathBuf>,
    /// Number of results.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write a contact sheet of the hits' previews with rank and score (image results only).
    #[arg(long, value_name = "PNG")]
    pub sheet: Option<PathBuf>,
}

/// What a text query says about its words: those the model never saw in a training caption.
pub fn unknown_words(query: &str, known: &[String]) -> (Vec<String>, usize) {
    let words = insar_mm_eval::retrieval::relevance::words(query);
    let unknown: Vec<String> = words
        .iter()
        .filter(|w| known.binary_search(w).is_err())
        .cloned()
        .collect();
    (unknown, words.len())
}

/// `insar-mm search`.
pub fn run_search(args: SearchArgs, global: &GlobalArgs) -> Result<()> {
    ensure!(args.top >= 1, "--top {}: must be at least 1", args.top);
    if let Some(q) = &args.query {
        check_query(q)?;
    }
    let device = insar_mm::device::open(global.device)?;
    let index = Index::load(&args.index)?;
    let model_dir = args
        .model
        .clone()
        .unwrap_or_else(|| PathBuf::from(&index.model.run));
    let run = load_run(&model_dir, &device).with_context(|| {
        format!(
            "--index {} records the model {} (pass --model RUN if it moved)",
            args.index.display(),
            index.model.run
        )
    })?;
    index.check_model(&run.id, &model_dir, &args.index)?;
    let mut warning = None;
    let (query_vec, query_desc) = match (&args.query, &args.image) {
        (Some(q), _) => {
            if !run.words.is_empty() {
                let (unknown, total) = unknown_words(q, &run.words);
                if total > 0 && unknown.len() == total {
                    warning = Some(format!(
                        "none of the query's words occurs in the model's training captions \
                         ({}): the ranking below carries no meaning",
                        unknown.join(", ")
                    ));
                } else if total == 0 {
                    warning = Some(
                        "the query has no words (letters or digits): the ranking below carries no meaning"
                            .to_string(),
                    );
                } else if !unknown.is_empty() {
                    warning = Some(format!(
                        "words the model never saw in a training caption: {}",
                        unknown.join(", ")
                    ));
                }
            }
            let v = embed_texts(&run.model, &run.tokenizer, &[q.as_str()], 1, &device)?;
            (
                v.into_iter().next().context("no query embedding")?,
                q.clone(),
            )
        }
        (None, Some(img)) => {
            let g = gather_pngs(std::slice::from_ref(img), &run)?;
            let refs: Vec<_> = g.images.iter().collect();
            let v = embed_images(&run.model, &refs, 1, &device)?;
            (
                v.into_iter().next().context("no image embedding")?,
                img.display().to_string(),
            )
        }
        (None, None) => bail!("give a text QUERY or --image PNG"),
    };
    if let Some(w) = &warning {
        if !args.json {
            eprintln!("warning: {w}");
        }
    }
    if args.captions.is_some() || args.from_index {
        return rank_captions(&args, &run, &index, &query_vec, &query_desc, &device);
    }
    let hits = index.search(&query_vec, args.top)?;
    let rows: Vec<(usize, f32, &Entry)> = hits
        .iter()
        .enumerate()
        .map(|(r, &(i, s))| (r + 1, s, &index.entries[i]))
        .collect();
    if args.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(r, s, e)| {
                serde_json::json!({"rank": r, "score": s, "path": e.path, "id": e.id,
                    "frame": e.frame, "dates": e.dates, "caption": e.caption})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "query": query_desc, "warning": warning, "results": v
            }))?
        );
    } else {
        println!(
            "{:>4}  {:>6}  {:<20} {:<17}  {:<40}  caption",
            "rank", "score", "frame", "dates", "path"
        );
        for (r, s, e) in &rows {
            println!(
                "{:>4}  {:>6.3}  {:<20} {:<17}  {:<40}  {}",
                r,
                s,
                e.frame.as_deref().unwrap_or("-"),
                e.dates.as_deref().unwrap_or("-"),
                e.path,
                e.caption.as_deref().unwrap_or("-")
            );
        }
    }
    if let Some(sheet) = &args.sheet {
        write_sheet(&rows, sheet)?;
        if !args.json {
            eprintln!("contact sheet: {}", sheet.display());
        }
    }
    Ok(())
}

/// Image → text: the candidate captions ranked for the query image.
fn rank_captions(
    args: &SearchArgs,
    run: &LoadedRetrievalRun,
    index: &Index,
    image: &[f32],
    desc: &str,
    device: &candle_core::Device,
) -> Result<()> {
    ensure!(
        args.sheet.is_none(),
        "--sheet draws images: it does not apply to caption ranking"
    );
    let mut candidates: Vec<String> = match &args.captions {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("--captions {}: cannot read", path.display()))?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        None => index
            .entries
            .iter()
            .filter_map(|e| e.caption.clone())
            .collect(),
    };
    candidates.sort();
    candidates.dedup();
    ensure!(
        !candidates.is_empty(),
        "{}: no caption to rank",
        match &args.captions {
            Some(p) => format!("--captions {}", p.display()),
            None => format!("--from-index: the index {}", args.index.display()),
        }
    );
    let emb = embed_texts(&run.model, &run.tokenizer, &candidates, 64, device)?;
    let dim = image.len();
    let flat = emb.concat();
    let hits = insar_mm::retrieval::index::top_k(&flat, dim, image, args.top);
    if args.json {
        let v: Vec<serde_json::Value> = hits
            .iter()
            .enumerate()
            .map(|(r, &(i, s))| serde_json::json!({"rank": r + 1, "score": s, "caption": candidates[i]}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"image": desc, "results": v}))?
        );
    } else {
        println!("{:>4}  {:>6}  caption", "rank", "score");
        for (r, &(i, s)) in hits.iter().enumerate() {
            println!("{:>4}  {:>6.3}  {}", r + 1, s, candidates[i]);
        }
    }
    Ok(())
}

/// `eval retrieval --model RUN` options.
#[derive(Debug, Clone, Args)]
pub struct EvalRetrievalArgs {
    /// Retrieval run to evaluate (`insar-mm train retrieval --out RUN`).
    #[arg(long, value_name = "RUN")]
    pub model: Option<PathBuf>,
    /// Dataset directory [default: the run's own data].
    #[arg(long, value_name = "DIR", requires = "model")]
    pub data: Option<PathBuf>,
    /// Real annotations whose captions are the queries (as `train retrieval --annotations`).
    #[arg(long, value_name = "PATH", requires = "model")]
    pub annotations: Option<PathBuf>,
    /// Seeded class-stratified subset of the annotations [default: the run's when
    /// --annotations is the run's, else all].
    #[arg(long, value_name = "N", requires = "model")]
    pub annotation_limit: Option<usize>,
    /// Split part to score.
    #[arg(long, value_enum, default_value_t = super::caption::SplitArg::Test, requires = "model")]
    pub split: super::caption::SplitArg,
    /// Caption run for the caption-then-match baseline (caption each image greedily, rank
    /// by BM25 between the query and the generated caption).
    #[arg(long, value_name = "RUN", requires = "model")]
    pub caption_model: Option<PathBuf>,
    /// Classify run for the classifier-facts baseline (log-likelihood of the query's parsed
    /// facts under the image's label probabilities).
    #[arg(long, value_name = "RUN", requires = "model")]
    pub classify_model: Option<PathBuf>,
}

/// The split part of `ds` at the input of another run (format and size), in the same order
/// as `reference` (same ids); errors when the parts differ.
fn part_for(
    ds: &insar_mm::data::dataset::DatasetDir,
    format: insar_mm::data::frames::InputFormat,
    size: usize,
    seed: u64,
    part: Part,
    reference: &insar_mm::train::caption::CaptionPart,
) -> Result<insar_mm::train::caption::CaptionPart> {
    let d = insar_mm::train::caption::caption_parts(ds, format, size, seed)?;
    let p = match part {
        Part::Train => d.train,
        Part::Val => d.val,
        Part::Test => d.test,
    };
    ensure!(
        p.ids == reference.ids,
        "the baseline run's split part differs from the retrieval run's"
    );
    Ok(p)
}

/// `m` plus seeded uniform noise in [0, 1e-7): the baselines give whole groups of items the
/// same score (identical generated captions, identical label vectors), and the metrics rank
/// ties pessimistically (an irrelevant tied item first), which would push their R@1 to 0.
fn break_ties(m: insar_mm_eval::npy::Matrix, seed: u64) -> Result<insar_mm_eval::npy::Matrix> {
    let noise =
        insar_mm_eval::retrieval::relevance::random_similarity(m.rows, m.cols, seed ^ 0x7e)?;
    let data = m
        .data
        .iter()
        .zip(&noise.data)
        .map(|(a, b)| a + 1e-7 * b)
        .collect();
    Ok(insar_mm_eval::npy::Matrix::new(m.rows, m.cols, data)?)
}

/// `insar-mm eval retrieval --model RUN`.
pub fn run_eval(args: EvalRetrievalArgs, as_json: bool, global: &GlobalArgs) -> Result<()> {
    use insar_mm_eval::retrieval::relevance::{
        caption_match_similarity, classifier_similarity, random_similarity,
    };
    let device = insar_mm::device::open(global.device)?;
    let model_dir = args.model.clone().context("--model RUN")?;
    let run = load_run(&model_dir, &device)?;
    let cfg = &run.cfg;
    let (data_dir, annotations) = if args.data.is_some() || args.annotations.is_some() {
        (args.data.clone(), args.annotations.clone())
    } else {
        (cfg.data.dir.clone(), cfg.data.annotations.clone())
    };
    let limit = match (&annotations, args.annotation_limit) {
        (_, Some(n)) => n,
        (Some(a), None) if cfg.data.annotations.as_ref() == Some(a) => cfg.data.annotation_limit,
        _ => 0,
    };
    let (ds, source) = insar_mm::train::caption::open_caption_dataset(
        data_dir.as_deref(),
        annotations.as_deref(),
        limit,
        cfg.seed,
        &|len, what| insar_mm::progress::bar(len, what, global.show_progress()),
    )?;
    let part = part_of(args.split);
    let all = insar_mm::train::caption::caption_parts(
        &ds,
        cfg.data.input_format,
        cfg.data.image_size,
        cfg.seed,
    )?;
    let data = match part {
        Part::Train => all.train,
        Part::Val => all.val,
        Part::Test => all.test,
    };
    ensure!(
        !data.is_empty(),
        "the {part} split of {source} has no image with a caption"
    );
    let started = std::time::Instant::now();
    let (model_scores, _) = task::score_part(&run.model, &run.tokenizer, &data, 64, &device)?;
    let embed_s = started.elapsed().as_secs_f64();
    let mut rows: Vec<(String, task::PartScores)> = vec![("dual encoder".into(), model_scores)];
    let random = random_similarity(data.len(), data.len(), global.seed)?;
    rows.push((
        "random".into(),
        task::score_similarity(&random, &data.captions)?,
    ));
    if let Some(dir) = &args.caption_model {
        let cap = insar_mm::train::caption::load_caption_run(dir, &device)
            .with_context(|| format!("--caption-model {}", dir.display()))?;
        let p = part_for(
            &ds,
            cap.cfg.data.input_format,
            cap.cfg.data.image_size,
            cfg.seed,
            part,
            &data,
        )
        .with_context(|| format!("--caption-model {}", dir.display()))?;
        let images: Vec<_> = p.images.iter().collect();
        let search = insar_mm_models::caption::SearchConfig {
            beam_width: 1,
            max_new_tokens: cap.cfg.data.max_len - 1,
            length_penalty: 1.0,
        };
        let generated = insar_mm::train::caption::caption_images(
            &cap.model,
            &cap.tokenizer,
            &images,
            &search,
            32,
            &device,
        )?;
        let sim = break_ties(
            caption_match_similarity(&data.captions, &generated)?,
            global.seed,
        )?;
        rows.push((
            "caption-then-match".into(),
            task::score_similarity(&sim, &data.captions)?,
        ));
    }
    if let Some(dir) = &args.classify_model {
        insar_mm::train::heads::expect_task(dir, "classify")
            .with_context(|| format!("--classify-model {}", dir.display()))?;
        let cls =
            insar_mm::train::heads::recipe::load::<insar_mm::train::classify::ClassifyConfig>(
                dir, &device,
            )
            .with_context(|| format!("--classify-model {}", dir.display()))?;
        let p = part_for(
            &ds,
            cls.config.data.input_format,
            cls.config.data.image_size,
            cfg.seed,
            part,
            &data,
        )
        .with_context(|| format!("--classify-model {}", dir.display()))?;
        let images: Vec<_> = p.images.iter().collect();
        let probs = insar_mm::train::classify::predict_scores(
            &cls.model,
            &images,
            32,
            Default::default(),
            &device,
        )?;
        let sim = break_ties(classifier_similarity(&data.captions, &probs)?, global.seed)?;
        rows.push((
            "classifier facts".into(),
            task::score_similarity(&sim, &data.captions)?,
        ));
    }
    if as_json {
        let v: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(n, s)| (n.clone(), task::scores_json(s)))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": model_dir.display().to_string(),
                "split": part.to_string(),
                "pairs": data.len(),
                "methods": v,
            }))?
        );
        return Ok(());
    }
    println!(
        "{} split of {}: {} image–caption pairs; embedding both sides took {embed_s:.1} s",
        part,
        source,
        data.len()
    );
    let refs: Vec<(&str, &task::PartScores)> = rows.iter().map(|(n, s)| (n.as_str(), s)).collect();
    print_scores(&refs);
    Ok(())
}

/// `bench retrieval` options.
#[derive(Debug, Args)]
pub struct BenchRetrievalArgs {
    /// Index sizes (synthetic unit vectors), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub sizes: Vec<usize>,
    /// Embedding dimension [default: the model's, else 128].
    #[arg(long)]
    pub dim: Option<usize>,
    /// Queries timed per size (after one warm-up query).
    #[arg(long, default_value_t = 20)]
    pub queries: usize,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// A retrieval run: also time encoding each query text with it.
    #[arg(long, value_name = "RUN")]
    pub model: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `insar-mm bench retrieval`: query latency (text encoding + exact top-k) against indexes of
/// synthetic unit vectors.
pub fn run_bench(args: BenchRetrievalArgs, global: &GlobalArgs) -> Result<()> {
    use rand::{Rng, SeedableRng};
    use std::time::Instant;
    ensure!(args.queries >= 1, "--queries must be at least 1");
    ensure!(args.top >= 1, "--top {}: must be at least 1", args.top);
    ensure!(
        !args.sizes.is_empty() && args.sizes.iter().all(|&n| n > 0),
        "--sizes must be positive"
    );
    let device = insar_mm::device::open(global.device)?;
    let run = match &args.model {
        Some(m) => Some(load_run(m, &device)?),
        None => None,
    };
    let dim = args
        .dim
        .or(run.as_ref().map(|r| r.model.config().embed_dim))
        .unwrap_or(128);
    ensure!(dim >= 1, "--dim must be at least 1");
    let texts = [
        "a dyke-type deformation pattern of high intensity can be detected on the left side",
        "no deformation activity can be detected",
        "a mogi-type deformation pattern of medium intensity can be detected in the centre",
        "turbulent mixing effect can be detected around the area",
    ];
    // Text encoding, one query at a time (as a search does).
    let encode_ms = match &run {
        Some(r) => {
            embed_texts(&r.model, &r.tokenizer, &texts[..1], 1, &device)?;
            let t = Instant::now();
            for i in 0..args.queries {
                embed_texts(
                    &r.model,
                    &r.tokenizer,
                    &texts[i % texts.len()..][..1],
                    1,
                    &device,
                )?;
            }
            Some(1e3 * t.elapsed().as_secs_f64() / args.queries as f64)
        }
        None => None,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(global.seed);
    let mut unit = |n: usize| -> Vec<f32> {
        let mut v: Vec<f32> = (0..n * dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        for row in v.chunks_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    };
    let queries = unit(args.queries + 1);
    let mut results = Vec::new();
    for &n in &args.sizes {
        let rows = unit(n);
        let q = |i: usize| &queries[i * dim..(i + 1) * dim];
        insar_mm::retrieval::index::top_k(&rows, dim, q(args.queries), args.top);
        let mut times = Vec::with_capacity(args.queries);
        for i in 0..args.queries {
            let t = Instant::now();
            let hits = insar_mm::retrieval::index::top_k(&rows, dim, q(i), args.top);
            times.push(1e3 * t.elapsed().as_secs_f64());
            ensure!(
                hits.len() == args.top.min(n),
                "top-k returned {} hits",
                hits.len()
            );
        }
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        let p50 = times[times.len() / 2];
        let p95 = times[((times.len() as f64 * 0.95).ceil() as usize).min(times.len()) - 1];
        results.push(serde_json::json!({
            "vectors": n, "dim": dim, "top": args.top, "search_ms_mean": mean,
            "search_ms_p50": p50, "search_ms_p95": p95,
            "text_encode_ms": encode_ms,
            "total_ms_mean": mean + encode_ms.unwrap_or(0.0),
            "memory_mb": (n * dim * 4) as f64 / 1e6,
        }));
    }
    let threads = rayon::current_num_threads();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"threads": threads, "results": results})
            )?
        );
        return Ok(());
    }
    println!(
        "exact top-{} search, {dim}-d f32 unit vectors, {} timed queries, {threads} rayon threads{}",
        args.top,
        args.queries,
        match encode_ms {
            Some(ms) => format!("; text encoding {ms:.2} ms per query"),
            None => String::new(),
        }
    );
    println!(
        "{:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "vectors", "MB", "mean ms", "p50 ms", "p95 ms", "total ms"
    );
    for r in &results {
        println!(
            "{:>10} {:>10.0} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            r["vectors"],
            r["memory_mb"].as_f64().unwrap_or(0.0),
            r["search_ms_mean"].as_f64().unwrap_or(0.0),
            r["search_ms_p50"].as_f64().unwrap_or(0.0),
            r["search_ms_p95"].as_f64().unwrap_or(0.0),
            r["total_ms_mean"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}
