//! End-to-end tests of `insar-mm train caption` and `insar-mm caption`: a few steps on a small
//! `data synth` dataset, then captioning its PNGs through the binary; bad input.

use std::path::Path;

use insar_mm::data::png::{write_png, PngColor};
use insar_mm::text::tokenizer::{CaptionTokenizer, TokenizerConfig};
use serde_json::Value;

use crate::support::*;

/// One small dataset and one short run, shared by every check (training is the slow part).
#[test]
fn train_then_caption_end_to_end_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    synth_dataset(&data, "14", "5");
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
        // The best-checkpoint metric is fact-F1 × CIDEr-D.
        let f = v["val_fact_f1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f), "{v}");
        assert!(
            (v["val_fact_cider"].as_f64().unwrap() - f * c).abs() < 1e-9,
            "{v}"
        );
        assert!(v["val_distinct"].as_f64().unwrap() >= 1.0, "{v}");
    }
    // The default model has the label head, its token and the mask head; training logged
    // their losses.
    assert_eq!(cfg["model"]["labels"]["num_labels"], 10);
    assert_eq!(cfg["model"]["labels"]["label_token"], true);
    assert_eq!(cfg["model"]["labels"]["mask"], true);
    assert_eq!(cfg["data"]["flips"], true);
    assert!(metrics.contains("\"label_loss\"") && metrics.contains("\"mask_loss\""));
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
    let pngs = phase_pngs(&data);
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

    // The same run published on the Hugging Face Hub, read from a Hub cache.
    hub_model_ids(tmp.path(), &run, &pngs[0], &one);

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
        // Fact scores: the same images, counts consistent with the scores.
        let facts = &part["facts"];
        assert_eq!(facts["images"].as_u64().unwrap(), n, "{facts}");
        for key in ["fact_f1", "fact_f1_micro"] {
            let x = facts[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{key} = {x} in {facts}");
        }
        let def = &facts["deformation"];
        assert_eq!(def, &facts["facts"]["deformation"], "{facts}");
        let (tp, fp, fn_) = (
            def["tp"].as_u64().unwrap(),
            def["fp"].as_u64().unwrap(),
            def["fn"].as_u64().unwrap(),
        );
        assert!(tp + fp <= n && tp + fn_ <= n, "{facts}");
        assert_eq!(facts["both_deformation"].as_u64().unwrap(), tp, "{facts}");
        let distinct = facts["distinct_captions"].as_u64().unwrap();
        assert!(distinct >= 1 && distinct <= n, "{facts}");
        assert!(facts["vocabulary"].as_u64().unwrap() >= 1, "{facts}");
        for name in facts["macro_facts"].as_array().unwrap() {
            let s = &facts["facts"][name.as_str().unwrap()];
            assert!(
                s["tp"].as_u64().unwrap() + s["fn"].as_u64().unwrap() > 0,
                "{name}: {s}"
            );
        }
        for key in ["type_accuracy", "intensity_accuracy", "location_overlap"] {
            let a = &facts[key];
            assert!(a["images"].as_u64().unwrap() <= tp, "{key}: {a}");
            assert_eq!(a["accuracy"].is_null(), a["images"] == 0, "{key}: {a}");
        }
    }
    // The most-frequent baseline gives every image the same caption.
    let frequent = &ev["baselines"]["most_frequent"]["facts"];
    assert_eq!(frequent["distinct_captions"], 1, "{frequent}");
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
        "def-F1",
        "fact-F1",
        "beam 2",
    ] {
        assert!(table.contains(label), "{label} not in {table}");
    }
    let err = fails(&["eval", "caption", "--model", s(&run), "--beam", "0"], 1);
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
    let err = fails(
        &[
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
        ],
        1,
    );
    assert!(err.contains("--encoder") && err.contains(s(&run)), "{err}");

    // Bad input.
    // A phase image without its coherence: the model takes a coherence channel.
    let lone = tmp.path().join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    let lone_png = lone.join("x.geo.diff.png");
    std::fs::copy(&pngs[0], &lone_png).unwrap();
    let err = fails(&["caption", "--model", s(&run), s(&lone_png)], 1);
    assert!(
        err.contains("x.geo.diff.png") && err.contains("coherence"),
        "{err}"
    );
    // An image too small for the model; first as a grayscale preview.
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
    let err = fails(&["caption", "--model", s(&run), s(&small)], 1);
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
    let err = fails(&["caption", "--model", s(&run), s(&small)], 1);
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
    let err = fails(&["caption", "--model", s(&run), s(&small)], 1);
    assert!(err.contains("s.geo.diff.png"), "{err}");
    // Not a PNG.
    let junk = tmp.path().join("junk.geo.diff.png");
    std::fs::write(&junk, b"not a png").unwrap();
    write_png(
        &tmp.path().join("junk.geo.cc.png"),
        16,
        16,
        PngColor::Gray,
        &[200; 256],
    )
    .unwrap();
    let err = fails(&["caption", "--model", s(&run), s(&junk)], 1);
    // Named once (the decoder's error is not wrapped in the same path again).
    assert!(
        err.contains("not a readable PNG") && err.matches("junk.geo.diff.png").count() == 1,
        "{err}"
    );
    // A folder without interferograms, a missing path.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = fails(&["caption", "--model", s(&run), s(&empty)], 1);
    assert!(err.contains("no interferogram"), "{err}");
    let err = fails(&["caption", "--model", s(&run), "/nonexistent/x.png"], 1);
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
    let err = fails(&["caption", "--model", s(&other), s(&pngs[0])], 1);
    assert!(err.contains("does not belong to this model"), "{err}");
    let err = fails(&["eval", "caption", "--model", s(&other)], 1);
    assert!(err.contains("does not belong to this model"), "{err}");
    // An edited config.json is validated on load as training validates it.
    let edited = tmp.path().join("edited-run");
    std::fs::create_dir_all(&edited).unwrap();
    for f in ["config.json", "best.safetensors", "tokenizer.json"] {
        std::fs::copy(run.join(f), edited.join(f)).unwrap();
    }
    for size in [0, 100_000] {
        let mut cfg = json(&run.join("config.json"));
        cfg["data"]["image_size"] = size.into();
        std::fs::write(edited.join("config.json"), cfg.to_string()).unwrap();
        let err = fails(&["caption", "--model", s(&edited), s(&pngs[0])], 1);
        assert!(
            err.contains("config.json") && err.contains("image_size"),
            "{err}"
        );
    }
    // Not a run directory.
    let err = fails(&["caption", "--model", s(&empty), s(&pngs[0])], 1);
    assert!(err.contains(s(&empty)), "{err}");
    // Training on a folder that is not a dataset.
    let err = fails(
        &[
            "train",
            "caption",
            "--data",
            s(&empty),
            "--steps",
            "1",
            "-q",
        ],
        1,
    );
    assert!(err.contains(s(&empty)), "{err}");
}

/// A Hub cache snapshot of `files` of `run`: `<cache>/models--owner--name/snapshots/<commit>/`,
/// with `refs/<rev>` holding the commit when `rev` is given.
fn cache_snapshot(
    cache: &Path,
    repo: &str,
    commit: &str,
    rev: Option<&str>,
    run: &Path,
    files: &[&str],
) {
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snap = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    for f in files {
        std::fs::copy(run.join(f), snap.join(f)).unwrap();
    }
    if let Some(rev) = rev {
        let r = repo_dir.join("refs").join(rev);
        std::fs::create_dir_all(r.parent().unwrap()).unwrap();
        std::fs::write(r, format!("{commit}\n")).unwrap();
    }
}

/// `--model owner/name[@revision]` from a Hub cache with HF_HUB_OFFLINE=1 captions like the
/// local run; uncached revisions, unknown ids, incomplete snapshots and bogus arguments fail
/// with messages naming what is wrong; without HF_HUB_OFFLINE an unreachable Hub is a clear
/// error.
fn hub_model_ids(tmp: &Path, run: &Path, png: &Path, local_json: &str) {
    let commit = "3f1c0e5a9b7d2c4e6f8a0b1c2d3e4f5a6b7c8d9e";
    let home = tmp.join("hf-home");
    let cache = home.join("hub");
    let repo = "insar-test/caption-tiny";
    cache_snapshot(
        &cache,
        repo,
        commit,
        Some("main"),
        run,
        &["config.json", "tokenizer.json", "best.safetensors"],
    );
    let offline_home = [("HF_HOME", s(&home)), ("HF_HUB_OFFLINE", "1")];
    let args = |model: &str| -> Vec<String> {
        ["caption", "--model", model, s(png), "--json", "-q"]
            .iter()
            .map(|a| a.to_string())
            .collect()
    };
    let run_ok = |model: &str, env: &[(&str, &str)]| {
        let a = args(model);
        Cli::with(env).ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let run_err = |model: &str, env: &[(&str, &str)]| {
        let a = args(model);
        Cli::with(env).fails(&a.iter().map(String::as_str).collect::<Vec<_>>(), 1)
    };
    // HF_HOME/hub, the default branch: the same JSON as the local run directory.
    assert_eq!(run_ok(repo, &offline_home), local_json);
    // A commit hash (no ref needed) and a tag, from HF_HUB_CACHE (which wins over HF_HOME).
    let other = tmp.join("hub-cache");
    cache_snapshot(
        &other,
        repo,
        commit,
        Some("v1"),
        run,
        &["config.json", "tokenizer.json", "best.safetensors"],
    );
    let nowhere = tmp.join("no-hf-home");
    let hub_cache = [
        ("HF_HOME", s(&nowhere)),
        ("HF_HUB_CACHE", s(&other)),
        ("HF_HUB_OFFLINE", "true"),
    ];
    assert_eq!(run_ok(&format!("{repo}@v1"), &hub_cache), local_json);
    assert_eq!(run_ok(&format!("{repo}@{commit}"), &hub_cache), local_json);
    // A revision that is not cached; an id that is not cached: both name id, revision, cache.
    let err = run_err(&format!("{repo}@v2"), &offline_home);
    for part in [repo, "`v2`", s(&cache), "HF_HUB_OFFLINE"] {
        assert!(err.contains(part), "{part} not in {err}");
    }
    let err = run_err("insar-test/unknown", &hub_cache);
    for part in [
        "insar-test/unknown",
        "`main`",
        s(&other),
        "local run directory",
    ] {
        assert!(err.contains(part), "{part} not in {err}");
    }
    assert!(!err.contains(s(&nowhere)), "{err}");
    // best.safetensors is optional: a snapshot with the last weights only reads those, like a
    // local run without best.safetensors.
    let last_only = tmp.join("run-last-only");
    std::fs::create_dir_all(&last_only).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(run.join(f), last_only.join(f)).unwrap();
    }
    let commit2 = "aaaabbbbccccddddeeeeffff0000111122223333";
    cache_snapshot(
        &cache,
        "insar-test/caption-last",
        commit2,
        Some("main"),
        &last_only,
        &["config.json", "tokenizer.json", "model.safetensors"],
    );
    assert_eq!(
        run_ok("insar-test/caption-last", &offline_home),
        run_ok(s(&last_only), &offline_home)
    );
    // A snapshot without the tokenizer is not a caption run.
    cache_snapshot(
        &cache,
        "insar-test/no-tokenizer",
        commit,
        Some("main"),
        run,
        &["config.json", "best.safetensors"],
    );
    let err = run_err("insar-test/no-tokenizer", &offline_home);
    assert!(
        err.contains("tokenizer.json") && err.contains("insar-test/no-tokenizer"),
        "{err}"
    );
    // Neither a local path nor a Hub id.
    for bogus in ["no-such-run", "runs/a/b", "a--b/c"] {
        let err = run_err(bogus, &offline_home);
        assert!(
            err.contains(bogus)
                && err.contains("not a Hugging Face Hub id")
                && err.contains("owner/name@revision")
                && err.contains("run directory"),
            "{err}"
        );
    }
    // Online, with the Hub unreachable (a closed local port): a clear error, no panic.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let err = run_err(
        "insar-test/unknown",
        &[("HF_HOME", s(&home)), ("HF_ENDPOINT", &endpoint)],
    );
    for part in [
        "insar-test/unknown",
        "cannot reach",
        &endpoint,
        "HF_HUB_OFFLINE=1",
    ] {
        assert!(err.contains(part), "{part} not in {err}");
    }
    // eval caption takes the same ids.
    let out = Cli::with(&offline_home).ok(&[
        "eval", "caption", "--model", repo, "--split", "test", "--json", "-q",
    ]);
    let ev: Value = serde_json::from_str(&out).unwrap();
    let scores = json(&run.join("test_scores.json"));
    for key in ["Bleu_4", "CIDEr"] {
        let (a, b) = (
            ev["model"][key].as_f64().unwrap(),
            scores[key].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-9,
            "{key}: eval of the Hub id {a} vs train {b}"
        );
    }
}
