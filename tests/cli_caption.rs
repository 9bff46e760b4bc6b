//! End-to-end tests of `insar-mm train caption` and `insar-mm caption`: a few steps on a small
//! `data synth` dataset, then captioning its PNGs through the binary; bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use insar_mm::data::png::{write_png, PngColor};
use insar_mm::text::tokenizer::{CaptionTokenizer, TokenizerConfig};
use serde_json::Value;

fn insar_mm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_insar-mm"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env("CANDLE_NUM_THREADS", "1")
        .output()
        .expect("run insar-mm")
}

fn ok(args: &[&str]) -> String {
    let out = insar_mm(args);
    assert!(
        out.status.success(),
        "insar-mm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = insar_mm(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "insar-mm {args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn phase_pngs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            phase_pngs(&p, out);
        } else if p.to_str().unwrap().ends_with(".geo.diff.png") {
            out.push(p);
        }
    }
}

/// One small dataset and one short run, shared by every check (training is the slow part).
#[test]
fn train_then_caption_end_to_end_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    ok(&[
        "data",
        "synth",
        "--out",
        s(&data),
        "--frames",
        "14",
        "--size",
        "64x64",
        "--seed",
        "5",
        "-q",
    ]);
    let printed = ok(&[
        "train",
        "caption",
        "--data",
        s(&data),
        "--out",
        s(&run),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--image-size",
        "32",
        "-q",
    ]);
    // The run directory: config with the resolved architecture, a tokenizer loadable by
    // the library whose vocabulary matches the model, weights, validation and test scores.
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "best.safetensors",
        "metrics.jsonl",
        "test_scores.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing; printed {printed}");
    }
    let cfg = json(&run.join("config.json"));
    let vocab = cfg["model"]["decoder"]["vocab_size"].as_u64().unwrap() as usize;
    let tok = CaptionTokenizer::from_file(&run.join("tokenizer.json")).unwrap();
    assert_eq!(tok.vocab_size(), vocab);
    assert_eq!(cfg["label_smoothing"], 0.1);
    assert_eq!(cfg["model"]["encoder"]["in_channels"], 3);
    assert_eq!(cfg["data"]["input_format"], "cos-sin-coherence");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let val: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("val_cider").is_some())
        .collect();
    assert!(!val.is_empty(), "no validation line in {metrics}");
    for v in &val {
        let c = v["val_cider"].as_f64().unwrap();
        let b = v["val_bleu4"].as_f64().unwrap();
        assert!(c.is_finite() && c >= 0.0 && (0.0..=1.0).contains(&b), "{v}");
    }
    let scores = json(&run.join("test_scores.json"));
    for key in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"] {
        let x = scores[key].as_f64().unwrap();
        assert!(x.is_finite() && x >= 0.0, "{key} = {x}");
    }
    assert!(scores["images"].as_u64().unwrap() >= 1);
    for label in ["BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D"] {
        assert!(printed.contains(label), "{label} not printed: {printed}");
    }

    // Captioning one PNG and a folder through the binary.
    let mut pngs = Vec::new();
    phase_pngs(&data, &mut pngs);
    assert_eq!(pngs.len(), 14);
    let one = ok(&["caption", "--model", s(&run), s(&pngs[0]), "--json", "-q"]);
    let v: Value = serde_json::from_str(&one).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["image"], s(&pngs[0]));
    let caption = arr[0]["caption"].as_str().unwrap();
    // Decoded text is in the tokenizer's normalised form.
    assert_eq!(tok.normalize(caption).unwrap(), caption);
    assert!(arr[0]["score"].as_f64().unwrap().is_finite());
    let all = ok(&["caption", "--model", s(&run), s(&data), "--beam", "1", "-q"]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 14, "{all}");
    for (line, p) in lines.iter().zip(&pngs) {
        assert!(line.starts_with(&format!("{}\t", p.display())), "{line}");
    }
    // Deterministic: the same call prints the same captions.
    assert_eq!(
        all,
        ok(&["caption", "--model", s(&run), s(&data), "--beam", "1", "-q"])
    );

    // eval caption: the model and both baselines on the test split, COCO results.
    let res = tmp.path().join("res.json");
    let printed = ok(&[
        "eval",
        "caption",
        "--model",
        s(&run),
        "--split",
        "test",
        "--out",
        s(&res),
        "--json",
        "-q",
    ]);
    let ev: Value = serde_json::from_str(&printed).unwrap();
    let n = ev["images"].as_u64().unwrap();
    assert_eq!(n, scores["images"].as_u64().unwrap(), "{ev}");
    assert_eq!(ev["split"], "test");
    for part in [
        &ev["model"],
        &ev["baselines"]["most_frequent"],
        &ev["baselines"]["nearest_neighbour"],
    ] {
        for key in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"] {
            let x = part[key].as_f64().unwrap();
            assert!(x.is_finite() && x >= 0.0, "{key} = {x} in {ev}");
        }
    }
    // Greedy evaluation reproduces the training run's test scores.
    for key in ["Bleu_4", "CIDEr"] {
        let (a, b) = (
            ev["model"][key].as_f64().unwrap(),
            scores[key].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-9, "{key}: eval {a} vs train {b}");
    }
    let results = json(&res);
    let results = results.as_array().unwrap();
    assert_eq!(results.len() as u64, n);
    for r in results {
        assert!(r["image_id"].is_string() && r["caption"].is_string(), "{r}");
    }
    let table = ok(&[
        "eval",
        "caption",
        "--model",
        s(&run),
        "--data",
        s(&data),
        "--beam",
        "2",
        "-q",
    ]);
    for label in [
        "model",
        "most frequent",
        "nearest neighbour",
        "BLEU-4",
        "CIDEr-D",
        "beam 2",
    ] {
        assert!(table.contains(label), "{label} not in {table}");
    }
    let err = fails(&["eval", "caption", "--model", s(&run), "--beam", "0"]);
    assert!(err.contains("--beam"), "{err}");

    // --encoder RUN: the encoder of a SimCLR run; with --freeze-encoder it stays unchanged.
    let pre = tmp.path().join("pre");
    let pre_cfg = tmp.path().join("pre.toml");
    std::fs::write(&pre_cfg, "[data]\nval_samples = 2\n").unwrap();
    ok(&[
        "train",
        "pretrain",
        "--config",
        s(&pre_cfg),
        "--data",
        s(&data),
        "--out",
        s(&pre),
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--image-size",
        "32",
        "-q",
    ]);
    let from_pre = tmp.path().join("from-pre");
    ok(&[
        "train",
        "caption",
        "--data",
        s(&data),
        "--out",
        s(&from_pre),
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--image-size",
        "32",
        "--encoder",
        s(&pre),
        "--freeze-encoder",
        "-q",
    ]);
    let weights = |run: &Path| {
        let f = ["best.safetensors", "model.safetensors"]
            .iter()
            .map(|f| run.join(f))
            .find(|p| p.is_file())
            .unwrap();
        candle_core::safetensors::load(f, &candle_core::Device::Cpu).unwrap()
    };
    let (pre_w, cap_w) = (weights(&pre), weights(&from_pre));
    let mut compared = 0;
    for (name, t) in cap_w.iter().filter(|(n, _)| n.starts_with("encoder.")) {
        let p = &pre_w[name];
        let d = (t - p).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{name} changed");
        compared += 1;
    }
    assert!(compared > 10, "{compared} encoder tensors");
    let err = fails(&[
        "train",
        "caption",
        "--data",
        s(&data),
        "--out",
        s(&tmp.path().join("x")),
        "--steps",
        "1",
        "--encoder",
        s(&run),
        "-q",
    ]);
    assert!(err.contains("--encoder") && err.contains(s(&run)), "{err}");

    // Bad input.
    // A phase image without its coherence: the model takes a coherence channel.
    let lone = tmp.path().join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    let lone_png = lone.join("x.geo.diff.png");
    std::fs::copy(&pngs[0], &lone_png).unwrap();
    let err = fails(&["caption", "--model", s(&run), s(&lone_png)]);
    assert!(
        err.contains("x.geo.diff.png") && err.contains("coherence"),
        "{err}"
    );
    // An image too small for the model.
    let small = tmp.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    write_png(
        &small.join("s.geo.diff.png"),
        8,
        8,
        PngColor::Gray,
        &[100; 64],
    )
    .unwrap();
    write_png(
        &small.join("s.geo.cc.png"),
        8,
        8,
        PngColor::Gray,
        &[200; 64],
    )
    .unwrap();
    // A grayscale preview has no colours to read the phase from (cos/sin input).
    let err = fails(&["caption", "--model", s(&run), s(&small)]);
    assert!(
        err.contains("s.geo.diff.png") && err.contains("grayscale"),
        "{err}"
    );
    write_png(
        &small.join("s.geo.diff.png"),
        8,
        8,
        PngColor::Rgb,
        &[49, 54, 149].repeat(64),
    )
    .unwrap();
    let err = fails(&["caption", "--model", s(&run), s(&small)]);
    assert!(
        err.contains("s.geo.diff.png") && err.contains("too small"),
        "{err}"
    );
    // Phase and coherence of different sizes.
    write_png(
        &small.join("s.geo.cc.png"),
        16,
        16,
        PngColor::Gray,
        &[200; 256],
    )
    .unwrap();
    let err = fails(&["caption", "--model", s(&run), s(&small)]);
    assert!(err.contains("s.geo.diff.png"), "{err}");
    // Not a PNG.
    let junk = tmp.path().join("junk.geo.diff.png");
    std::fs::write(&junk, b"not a png").unwrap();
    let err = fails(&["caption", "--model", s(&run), s(&junk)]);
    assert!(err.contains("junk.geo.diff.png"), "{err}");
    // A folder without interferograms, a missing path.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = fails(&["caption", "--model", s(&run), s(&empty)]);
    assert!(err.contains("no interferogram"), "{err}");
    let err = fails(&["caption", "--model", s(&run), "/nonexistent/x.png"]);
    assert!(err.contains("/nonexistent/x.png"), "{err}");
    // A tokenizer that does not belong to the model.
    let other = tmp.path().join("other-run");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["config.json", "best.safetensors"] {
        std::fs::copy(run.join(f), other.join(f)).unwrap();
    }
    let foreign = CaptionTokenizer::train(
        &["a completely different caption corpus", "with other words"],
        &TokenizerConfig {
            vocab_size: 270,
            min_frequency: 1,
        },
    )
    .unwrap();
    assert_ne!(foreign.vocab_size(), vocab);
    foreign.save(&other.join("tokenizer.json")).unwrap();
    let err = fails(&["caption", "--model", s(&other), s(&pngs[0])]);
    assert!(err.contains("does not belong to this model"), "{err}");
    let err = fails(&["eval", "caption", "--model", s(&other)]);
    assert!(err.contains("does not belong to this model"), "{err}");
    // Not a run directory.
    let err = fails(&["caption", "--model", s(&empty), s(&pngs[0])]);
    assert!(err.contains(s(&empty)), "{err}");
    // Training on a folder that is not a dataset.
    let err = fails(&[
        "train",
        "caption",
        "--data",
        s(&empty),
        "--steps",
        "1",
        "-q",
    ]);
    assert!(err.contains(s(&empty)), "{err}");
}
