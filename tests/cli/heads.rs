//! End-to-end tests of `train classify|segment`, `predict classify|segment` and
//! `eval classify|segment` through the binary: a few steps on a small `data synth` dataset,
//! resume, a pretrained encoder, predictions on PNGs (single window and sliding windows),
//! JSON reports, and bad input.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::*;

/// The `encoder.*` tensors of a safetensors file as raw bytes, by name.
fn encoder_tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    tensor_bytes(path)
        .into_iter()
        .filter(|(n, _)| n.starts_with("encoder."))
        .collect()
}

fn gray_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(path).unwrap();
    let (w, h) = (img.width(), img.height());
    match img {
        image::DynamicImage::ImageLuma8(b) => (w, h, b.into_raw()),
        other => panic!("{}: not 8-bit gray: {:?}", path.display(), other.color()),
    }
}

/// A run's test-time augmentation was chosen on the val split by `metric` among the three
/// view sets, saved in its config and used for its test scores.
fn assert_tta_chosen_on_val(cfg: &Value, scores: &Value, metric: &str) {
    let choice = &scores["test_time_augment_choice"];
    assert_eq!(choice["metric"], metric, "{scores}");
    let val = choice["val"].as_object().unwrap();
    assert_eq!(val.len(), 3, "{choice}");
    let chosen = choice["chosen"].as_str().unwrap();
    assert!(val.contains_key(chosen), "{choice}");
    let best = val
        .values()
        .map(|v| v.as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(val[chosen].as_f64().unwrap(), best, "{choice}");
    assert_eq!(cfg["test_time_augment"], chosen);
    assert_eq!(scores["test_time_augment"], chosen);
}

fn train_args<'a>(task: &'a str, data: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        task,
        "--data",
        data,
        "--out",
        out,
        "--steps",
        steps,
        "--batch-size",
        "4",
        "--image-size",
        "32",
        "-q",
    ]
}

/// One small dataset shared by every check (training is the slow part).
#[test]
fn train_predict_eval_classify_and_segment_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth_dataset(&data, "14", "5");
    let pngs = phase_pngs(&data);
    assert_eq!(pngs.len(), 14);

    // --- classify: train, then continue the run.
    let crun = tmp.path().join("classify");
    let printed = ok(&train_args("classify", s(&data), s(&crun), "4"));
    for f in [
        "config.json",
        "model.safetensors",
        "best.safetensors",
        "metrics.jsonl",
        "test_scores.json",
    ] {
        assert!(crun.join(f).is_file(), "{f} missing; printed {printed}");
    }
    assert!(printed.contains("deformation-vs-none F1"), "{printed}");
    assert!(
        printed.contains("Deformation") && printed.contains("macro avg"),
        "{printed}"
    );
    let cfg = json(&crun.join("config.json"));
    assert_eq!(cfg["task"], "classify");
    assert_eq!(cfg["mode"], "finetune");
    assert_eq!(cfg["data"]["source_size"], 64);
    assert_eq!(cfg["model"]["encoder"]["in_channels"], 3);
    assert_eq!(cfg["data"]["input_format"], "cos-sin-coherence");
    assert_eq!(cfg["model"]["num_labels"], 10);
    // No --encoder: the tiny preset starts from the shipped SimCLR encoder.
    assert_eq!(cfg["encoder"], "shipped");
    let scores = json(&crun.join("test_scores.json"));
    assert_eq!(scores["classes"].as_array().unwrap().len(), 10);
    assert_eq!(scores["classes"][0]["name"], "Deformation");
    let f1 = scores["deformation_vs_none"]["f1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&f1), "{scores}");
    let metrics = std::fs::read_to_string(crun.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("val_macro_f1"), "{metrics}");
    assert_tta_chosen_on_val(&cfg, &scores, "val_macro_f1");
    // A resume may not set a learning rate that is no learning rate.
    let err = fails(&["train", "classify", "--resume", s(&crun), "--lr", "0"], 1);
    assert!(err.contains("--lr") && err.contains("optim.lr"), "{err}");
    assert!(!crun.join("config-history.jsonl").exists());
    // Resume to 6 steps with a lower learning rate: the run continues from its checkpoint,
    // and the change is saved in config.json and recorded in the history.
    ok(&[
        "train",
        "classify",
        "--resume",
        s(&crun),
        "--steps",
        "6",
        "--lr",
        "1e-4",
        "-q",
    ]);
    let state = json(&crun.join("state.json"));
    assert_eq!(state["step"], 6);
    assert_eq!(
        json(&crun.join("config.json"))["optim"]["lr"].as_f64(),
        Some(1e-4)
    );
    let history = std::fs::read_to_string(crun.join("config-history.jsonl")).unwrap();
    let lines: Vec<Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{history}");
    assert_eq!(lines[0]["key"], "optim.lr");
    assert_eq!(lines[0]["from"].as_f64(), cfg["optim"]["lr"].as_f64());
    assert_eq!(lines[0]["to"].as_f64(), Some(1e-4));
    assert_eq!(lines[0]["resumed_at_step"], 4);
    // The optimizer used it: the steps after the resume log a learning rate ≤ 1e-4.
    let metrics = std::fs::read_to_string(crun.join("metrics.jsonl")).unwrap();
    let lrs: Vec<(u64, f64)> = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["split"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["lr"].as_f64().unwrap()))
        .collect();
    let after: Vec<f64> = lrs
        .iter()
        .filter(|(s, _)| *s > 4)
        .map(|(_, lr)| *lr)
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|&lr| lr > 0.0 && lr <= 1e-4),
        "{lrs:?}"
    );
    // The views the resumed run chose: what predict and eval use unless told otherwise.
    let run_tta = json(&crun.join("config.json"))["test_time_augment"].clone();
    // Resume refuses to change the encoder (usage error).
    fails(
        &[
            "train",
            "classify",
            "--resume",
            s(&crun),
            "--encoder",
            s(&crun),
        ],
        2,
    );

    // --- classify with the auxiliary mask loss: logged, saved, and the run predicts.
    let mrun = tmp.path().join("classify-mask");
    let mcfg = tmp.path().join("mask.toml");
    std::fs::write(&mcfg, "mask_loss_weight = 0.5\n").unwrap();
    let mut args = train_args("classify", s(&data), s(&mrun), "3");
    args.extend(["--config", s(&mcfg)]);
    ok(&args);
    let cfg = json(&mrun.join("config.json"));
    assert_eq!(cfg["mask_loss_weight"], 0.5);
    assert_eq!(cfg["model"]["mask_head"], true);
    let metrics = std::fs::read_to_string(mrun.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"mask_loss\""), "{metrics}");
    ok(&["predict", "classify", "--model", s(&mrun), s(&pngs[0])]);

    // --- predict classify: one PNG (one window), then sliding windows with maps.
    let one = ok(&[
        "predict",
        "classify",
        "--model",
        s(&crun),
        s(&pngs[0]),
        "--json",
        "-q",
    ]);
    let v: Value = serde_json::from_str(&one).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["image"], s(&pngs[0]));
    assert_eq!(arr[0]["windows"], 1);
    let sc = arr[0]["scores"].as_object().unwrap();
    assert_eq!(sc.len(), 10);
    assert!(sc
        .values()
        .all(|x| (0.0..=1.0).contains(&x.as_f64().unwrap())));
    // Labels are the scores at the run's decision thresholds (tuned on val when it has
    // positives, else 0.5).
    let thr = arr[0]["thresholds"].as_object().unwrap();
    assert_eq!(thr.len(), 10);
    let labels: Vec<&str> = arr[0]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for (name, score) in sc {
        let above = score.as_f64().unwrap() >= thr[name].as_f64().unwrap();
        assert_eq!(labels.contains(&name.as_str()), above, "{name}");
    }
    let pred_dir = tmp.path().join("pred-c");
    let all = ok(&[
        "predict",
        "classify",
        "--model",
        s(&crun),
        s(&data),
        "--window",
        "32",
        "--overlap",
        "8",
        "--out",
        s(&pred_dir),
        "-q",
    ]);
    assert_eq!(all.lines().count(), 14, "{all}");
    let preds = json(&pred_dir.join("predictions.json"));
    assert_eq!(preds.as_array().unwrap().len(), 14);
    assert_eq!(
        preds[0]["windows"], 9,
        "64² in 32² windows stepping 24 px: 3 × 3"
    );
    let heat = PathBuf::from(preds[0]["deformation_map"].as_str().unwrap());
    let (w, h, _) = gray_png(&heat);
    assert_eq!((w, h), (64, 64));
    let overlay = image::open(preds[0]["overlay"].as_str().unwrap()).unwrap();
    assert_eq!((overlay.width(), overlay.height()), (64, 64));
    // Deterministic.
    assert_eq!(
        one,
        ok(&[
            "predict",
            "classify",
            "--model",
            s(&crun),
            s(&pngs[0]),
            "--json",
            "-q"
        ])
    );

    // Test-time augmentation: the scores averaged over the 8 views of the square are still
    // probabilities, recorded with the choice; an unknown choice is a usage error naming the
    // valid ones.
    let tta = ok(&[
        "predict",
        "classify",
        "--model",
        s(&crun),
        s(&pngs[0]),
        "--tta",
        "dihedral",
        "--json",
        "-q",
    ]);
    let tv: Value = serde_json::from_str(&tta).unwrap();
    assert_eq!(tv[0]["test_time_augment"], "dihedral");
    assert_eq!(arr[0]["test_time_augment"], run_tta);
    let tsc = tv[0]["scores"].as_object().unwrap();
    assert!(tsc
        .values()
        .all(|x| (0.0..=1.0).contains(&x.as_f64().unwrap())));
    assert_ne!(tsc, sc, "8 views averaged must differ from the plain image");
    let err = fails(
        &[
            "predict",
            "classify",
            "--model",
            s(&crun),
            s(&pngs[0]),
            "--tta",
            "rot45",
        ],
        2,
    );
    assert!(err.contains("--tta") && err.contains("dihedral"), "{err}");

    // --- segment from the classifier's encoder, frozen (linear): the encoder is unchanged.
    let srun = tmp.path().join("segment");
    let mut args = train_args("segment", s(&data), s(&srun), "3");
    args.extend(["--encoder", s(&crun), "--mode", "linear"]);
    args.extend(["--label-fraction", "0.5"]);
    let printed = ok(&args);
    assert!(
        printed.contains("mIoU") && printed.contains("Mogi") && printed.contains("grouped mIoU"),
        "{printed}"
    );
    let cfg = json(&srun.join("config.json"));
    assert_eq!(cfg["task"], "segment");
    assert_eq!(cfg["data"]["label_fraction"], 0.5);
    assert_eq!(
        json(&crun.join("config.json"))["data"]["label_fraction"],
        1.0
    );
    assert_eq!(cfg["mode"], "linear");
    assert_eq!(cfg["encoder"], s(&crun));
    let src = encoder_tensors(&crun.join("best.safetensors"));
    let dst = encoder_tensors(&srun.join("model.safetensors"));
    assert!(!src.is_empty());
    assert_eq!(
        src, dst,
        "a linear-mode encoder must equal the one it was loaded from"
    );
    let scores = json(&srun.join("test_scores.json"));
    assert_eq!(scores["IoU"].as_array().unwrap().len(), 7);
    assert_tta_chosen_on_val(&cfg, &scores, "val_miou");
    assert_eq!(scores["names"][0], "background");
    let groups = scores["group_iou"].as_object().unwrap();
    let names: Vec<&str> = groups.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 3, "{scores}");
    for g in ["concentric", "elongated", "earthquake"] {
        assert!(groups.contains_key(g), "{scores}");
        assert!(scores["group_support"][g].is_u64(), "{scores}");
    }
    assert!(scores.get("grouped_mIoU").is_some(), "{scores}");
    let metrics = std::fs::read_to_string(srun.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("val_miou"), "{metrics}");

    // --- predict segment: mask, probability map and overlay at frame resolution.
    let pred_dir = tmp.path().join("pred-s");
    ok(&[
        "predict",
        "segment",
        "--model",
        s(&srun),
        s(&pngs[1]),
        s(&pngs[2]),
        "--window",
        "48",
        "--out",
        s(&pred_dir),
        "-q",
    ]);
    let preds = json(&pred_dir.join("predictions.json"));
    assert_eq!(preds.as_array().unwrap().len(), 2);
    assert_eq!(preds[0]["windows"], 4);
    // A legal but pathological window/overlap is run, with a warning on stderr.
    let (_, stderr) = Cli::default().ok_with_stderr(&[
        "predict",
        "segment",
        "--model",
        s(&srun),
        s(&pngs[1]),
        "--window",
        "24",
        "--overlap",
        "20",
        "--out",
        s(&tmp.path().join("pred-slow")),
    ]);
    assert!(
        stderr.contains("--window 24 --overlap 20") && stderr.contains("a stride of 4 pixels"),
        "{stderr}"
    );
    let (w, h, mask) = gray_png(Path::new(preds[0]["mask"].as_str().unwrap()));
    assert_eq!((w, h), (64, 64));
    assert!(mask.iter().all(|&c| c < 7));
    let counted: u64 = preds[0]["pixels"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted, 64 * 64);
    let (w, h, _) = gray_png(Path::new(preds[0]["probability"].as_str().unwrap()));
    assert_eq!((w, h), (64, 64));
    let over = image::open(preds[0]["overlay"].as_str().unwrap()).unwrap();
    assert_eq!(over.color(), image::ColorType::Rgb8);

    // --- eval writes JSON reports.
    let report = tmp.path().join("eval-c.json");
    let printed = ok(&[
        "eval",
        "classify",
        "--model",
        s(&crun),
        "--data",
        s(&data),
        "--split",
        "test",
        "--out",
        s(&report),
        "-q",
    ]);
    assert!(printed.contains("macro-F1"), "{printed}");
    let r = json(&report);
    assert_eq!(r["split"], "test");
    assert!(r["deformation_vs_none"]["f1"].is_number());
    assert_eq!(r["classes"].as_array().unwrap().len(), 10);
    // The test split scored by eval = the run's own test scores (same best weights).
    let own = json(&crun.join("test_scores.json"));
    assert_eq!(r["samples"], own["samples"]);
    assert_eq!(r["test_time_augment"], run_tta);
    let flipped = ok_json(&[
        "eval",
        "classify",
        "--model",
        s(&crun),
        "--data",
        s(&data),
        "--tta",
        "flips",
        "--json",
        "-q",
    ]);
    assert_eq!(flipped["test_time_augment"], "flips");
    assert_eq!(flipped["samples"], own["samples"]);
    let report = tmp.path().join("eval-s.json");
    ok(&[
        "eval",
        "segment",
        "--model",
        s(&srun),
        "--split",
        "val",
        "--out",
        s(&report),
        "-q",
    ]);
    let r = json(&report);
    assert_eq!(r["split"], "val");
    assert!(r["mIoU"].as_f64().unwrap() >= 0.0);
    assert!(r["group_iou"]["concentric"].is_f64() || r["group_iou"]["concentric"].is_null());
    assert_eq!(r["confusion"].as_array().unwrap().len(), 7);

    // --- bad input.
    // A model of the other task.
    let err = fails(
        &["predict", "classify", "--model", s(&srun), s(&pngs[0])],
        1,
    );
    assert!(
        err.contains("`segment` run") && err.contains("classify"),
        "{err}"
    );
    let err = fails(&["eval", "segment", "--model", s(&crun)], 1);
    assert!(err.contains("`classify` run"), "{err}");
    // Not a run at all.
    let err = fails(&["predict", "segment", "--model", s(&data), s(&pngs[0])], 1);
    assert!(err.contains("config.json"), "{err}");
    // An image smaller than the window.
    let err = fails(
        &[
            "predict",
            "segment",
            "--model",
            s(&srun),
            s(&pngs[0]),
            "--window",
            "128",
        ],
        1,
    );
    assert!(
        err.contains("smaller than the 128-pixel window") && err.contains(".geo.diff.png"),
        "{err}"
    );
    // A phase image without coherence for a model that takes a coherence channel.
    let lone = tmp.path().join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    let lone_png = lone.join("x.geo.diff.png");
    std::fs::copy(&pngs[0], &lone_png).unwrap();
    let err = fails(
        &["predict", "classify", "--model", s(&crun), s(&lone_png)],
        1,
    );
    assert!(
        err.contains("x.geo.diff.png") && err.contains("3 channels") && err.contains("coherence"),
        "{err}"
    );
    // A phase image that is no PNG, with its coherence: the error names it once.
    let junk = lone.join("y.geo.diff.png");
    std::fs::write(&junk, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let cc = pngs[0]
        .to_str()
        .unwrap()
        .replace(".geo.diff.png", ".geo.cc.png");
    std::fs::copy(&cc, lone.join("y.geo.cc.png")).unwrap();
    let err = fails(&["predict", "classify", "--model", s(&crun), s(&junk)], 1);
    assert!(
        err.contains("not a readable PNG") && err.matches("y.geo.diff.png").count() == 1,
        "{err}"
    );
    // A pretrained encoder of a run without one.
    let err = fails(
        &[
            "train",
            "segment",
            "--data",
            s(&data),
            "--out",
            s(&tmp.path().join("x")),
            "--steps",
            "1",
            "--encoder",
            s(&lone),
        ],
        1,
    );
    assert!(err.contains("--encoder") && err.contains("lone"), "{err}");
    // A classify run is not a caption model.
    let err = fails(&["caption", "--model", s(&crun), s(&pngs[0])], 1);
    assert!(err.contains("a classify run, not a caption run"), "{err}");
    // A label fraction outside (0, 1] names the flag and the key, before any data is read.
    for bad in ["0", "1.5", "nan"] {
        let mut args = train_args("segment", s(&data), s(&srun), "1");
        args.extend(["--label-fraction", bad]);
        let err = fails(&args, 1);
        assert!(
            err.contains("--label-fraction") && err.contains("data.label_fraction"),
            "{err}"
        );
    }
    // An existing run is not overwritten.
    let err = fails(&train_args("classify", s(&data), s(&crun), "2"), 1);
    assert!(err.contains("--resume"), "{err}");

    // A frame whose coherence file is missing is left out of training with a warning.
    let holed = tmp.path().join("holed");
    copy_dir(&data, &holed);
    let cc = phase_pngs(&holed)[0]
        .to_str()
        .unwrap()
        .replace(".geo.diff.png", ".geo.cc.png");
    std::fs::remove_file(&cc).unwrap();
    let holed_run = tmp.path().join("holed-run");
    let mut args = train_args("classify", s(&holed), s(&holed_run), "1");
    args.retain(|a| *a != "-q");
    let (_, stderr) = Cli::with(&[]).ok_with_stderr(&args);
    assert!(
        stderr.contains(": 1 of ")
            && stderr.contains("annotations have no usable images")
            && stderr.contains("data check"),
        "{stderr}"
    );
}

/// `--encoder shipped|none`: a frozen (linear) run keeps the shipped encoder's tensors
/// exactly, `none` starts from a random encoder, and an encoder that does not fit the
/// shipped one is an error when asked for and a random start under `auto`.
#[test]
fn shipped_and_random_encoder_initialisation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth_dataset(&data, "6", "3");
    let shipped = encoder_tensors(&manifest_dir().join("weights/simclr-tiny/model.safetensors"));
    assert!(shipped.len() > 10, "{} tensors", shipped.len());
    let run_encoder = |init: &str, extra: &[&str]| {
        let run = tmp.path().join(format!("run-{init}"));
        let mut args = train_args("classify", s(&data), s(&run), "1");
        args.extend(["--encoder", init, "--mode", "linear"]);
        args.extend(extra);
        ok(&args);
        let cfg = json(&run.join("config.json"));
        (cfg, encoder_tensors(&run.join("model.safetensors")))
    };
    let (cfg, tensors) = run_encoder("shipped", &[]);
    assert_eq!(cfg["encoder"], "shipped");
    assert!(
        tensors == shipped,
        "a linear probe changed the shipped encoder"
    );
    let (cfg, tensors) = run_encoder("none", &[]);
    assert_eq!(cfg["encoder"], "none");
    assert_eq!(tensors.len(), shipped.len());
    assert!(
        tensors != shipped,
        "--encoder none loaded the shipped encoder"
    );
    // auto with another architecture: random, recorded as such.
    let (cfg, _) = run_encoder("auto", &["--preset", "resnet18"]);
    assert_eq!(cfg["encoder"], "none");
    // Asked for explicitly, a misfit is an error naming the shipped encoder.
    let phase = tmp.path().join("phase.toml");
    std::fs::write(&phase, "[data]\ninput_format = \"phase\"\n").unwrap();
    let (x, y) = (tmp.path().join("x"), tmp.path().join("y"));
    let mut args = train_args("classify", s(&data), s(&x), "1");
    args.extend(["--encoder", "shipped", "--config", s(&phase)]);
    let err = fails(&args, 1);
    assert!(
        err.contains("shipped encoder") && err.contains("Phase"),
        "{err}"
    );
    // An empty value is a usage error.
    let mut args = train_args("classify", s(&data), s(&y), "1");
    args.extend(["--encoder", ""]);
    let err = fails(&args, 2);
    assert!(err.contains("--encoder"), "{err}");
}

/// The uniqueIDs of a patch folder's patches (file stems `<uniqueID>_<k>`), one per patch.
fn patch_ids(patches: &Path) -> Vec<u64> {
    files_under(&patches.join("labeled"))
        .iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap();
            stem.split('_').next().unwrap().parse().unwrap()
        })
        .collect()
}

/// `data patches` of the dataset `data` into `out`, 32² patches.
fn patches_32(data: &Path, out: &Path) {
    ok(&[
        "data",
        "patches",
        "--raw",
        s(data),
        "--annotations",
        s(data),
        "--out",
        s(out),
        "--size",
        "32",
        "-q",
    ]);
}

/// `--data` may be a patch folder (`data patches` output): split by frame with the seed,
/// or by its `split.json`; too few frames for three parts is a clear error.
#[test]
fn classify_and_segment_train_on_a_patch_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth_dataset(&data, "14", "5");
    let patches = tmp.path().join("patches");
    patches_32(&data, &patches);
    let ids = patch_ids(&patches);
    assert!(ids.len() >= 14, "{} patches", ids.len());

    // A seeded frame split: every part gets patches, and they add up.
    let crun = tmp.path().join("classify");
    ok(&train_args("classify", s(&patches), s(&crun), "2"));
    assert_eq!(json(&crun.join("config.json"))["data"]["dir"], s(&patches));
    let parts: Vec<u64> = ["train", "val", "test"]
        .iter()
        .map(|part| {
            let report = ok_json(&[
                "eval",
                "classify",
                "--model",
                s(&crun),
                "--split",
                part,
                "--json",
            ]);
            report["samples"]
                .as_u64()
                .unwrap_or_else(|| panic!("{report}"))
        })
        .collect();
    assert!(parts.iter().all(|&n| n > 0), "{parts:?}");
    assert_eq!(parts.iter().sum::<u64>(), ids.len() as u64, "{parts:?}");

    // A split.json in the folder decides: uniqueID 3 alone is the test part.
    let mut uids: Vec<u64> = ids.clone();
    uids.sort();
    uids.dedup();
    let (test_id, val_id) = (3, 4);
    let train: Vec<u64> = uids
        .iter()
        .copied()
        .filter(|&u| u != test_id && u != val_id)
        .collect();
    let split = serde_json::json!({
        "method": "frame", "seed": 1, "fractions": [0.8, 0.1, 0.1], "test_frames": [],
        "train": train, "val": [val_id], "test": [test_id],
        "frames": {}, "summary": {}, "unrepresented": []
    });
    std::fs::write(patches.join("split.json"), split.to_string()).unwrap();
    let srun = tmp.path().join("segment");
    ok(&train_args("segment", s(&patches), s(&srun), "2"));
    let scores = json(&srun.join("test_scores.json"));
    let expected = ids.iter().filter(|&&u| u == test_id).count();
    assert!(expected > 0);
    assert_eq!(
        scores["images"], expected,
        "the test part holds the patches of uniqueID {test_id}: {scores}"
    );

    // An edited config.json is validated when predict loads the run.
    let edited = tmp.path().join("edited");
    copy_dir(&crun, &edited);
    let mut cfg = json(&edited.join("config.json"));
    cfg["data"]["image_size"] = 0.into();
    std::fs::write(edited.join("config.json"), cfg.to_string()).unwrap();
    let png = files_under(&patches.join("labeled")).remove(0);
    let err = fails(&["predict", "classify", "--model", s(&edited), s(&png)], 1);
    assert!(
        err.contains("config.json") && err.contains("data.image_size"),
        "{err}"
    );
    // train never writes into a non-empty folder that is not a run (here the dataset).
    let before = snapshot(&data);
    let err = fails(&train_args("classify", s(&patches), s(&data), "1"), 1);
    assert!(
        err.contains("not empty and not a run folder") && err.contains("--force"),
        "{err}"
    );
    assert!(snapshot(&data) == before, "the dataset folder was changed");
    // With --force the run is written beside the folder's own files, which stay.
    let project = tmp.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("notes.txt"), "mine").unwrap();
    let mut args = train_args("classify", s(&patches), s(&project), "1");
    args.push("--force");
    ok(&args);
    assert!(project.join("test_scores.json").is_file());
    assert_eq!(
        std::fs::read_to_string(project.join("notes.txt")).unwrap(),
        "mine"
    );

    // Two frames cannot make three parts.
    let small = tmp.path().join("small");
    synth_dataset(&small, "2", "5");
    let small_patches = tmp.path().join("small-patches");
    patches_32(&small, &small_patches);
    let err = fails(
        &train_args(
            "classify",
            s(&small_patches),
            s(&tmp.path().join("c2")),
            "1",
        ),
        1,
    );
    assert!(err.contains("too few for a train/val/test split"), "{err}");
    assert!(
        !tmp.path().join("c2").exists(),
        "a failed start leaves no run folder"
    );
}
