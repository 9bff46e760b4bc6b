//! End-to-end test of `insar-mm bench ssl` at toy sizes: the whole experiment (data, SimCLR,
//! three classifiers, evaluation) through the binary; table and JSON structure, the
//! confusion-count invariants, determinism, cache reuse, bad configs.

use std::path::Path;

use candle_core::Device;
use insar_mm::train::optim::read_tensors;
use serde_json::Value;

use crate::support::*;

/// Toy sizes: 48×48 frames (1.5 km pixels), 32² inputs, a few steps per training.
const CONFIG: &str = r#"
threshold = 0.5

[pretrain]
preset = "tiny"
data = { image_size = 32, batch_size = 8, val_samples = 4 }
optim = { kind = "adamw", lr = 1e-3 }
schedule = { kind = "constant" }
train = { steps = 3, log_every = 1, validate_every = 3, checkpoint_every = 0 }

[scenes]
width = 48
height = 48
pixel_m = 1500.0
style = "licsar2020"

[ood]
style = "gamma"
pixel_m = 1000.0
nuisance = { atmosphere = 2.0 }

[sets]
unlabeled = 16
labelled_pool = 24
positives = 4
negatives = 4
test = 10
ood = 12

[probe]
batch_size = 4
optim = { kind = "adamw", lr = 1e-2, weight_decay = 0.0 }
train = { steps = 3, log_every = 1 }

[finetune]
batch_size = 4
optim = { kind = "adamw", lr = 1e-3 }
train = { steps = 3, log_every = 1 }
augment = { hflip = 0.5, vflip = 0.5, rot90 = 0.5, crop = { p = 0.0 }, blur = { p = 0.0 }, elastic = { p = 0.0 }, cutout = { p = 0.0 }, multiplicative_noise = { p = 0.0 }, gaussian_noise = { p = 0.0 } }
"#;

/// `results.json` without the wall-clock times.
fn reproducible(path: &Path) -> Value {
    let mut v = json(path);
    v.as_object_mut().unwrap().remove("seconds");
    v
}

/// The table rows of `table.md` (lines starting with `|`).
fn table_rows(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(str::to_string)
        .collect()
}

fn encoder_tensors(model: &Path) -> Vec<(String, Vec<f32>)> {
    let (tensors, _) = read_tensors(model, &Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = tensors
        .into_iter()
        .filter(|(k, _)| k.starts_with("encoder."))
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn bench_ssl_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ssl.toml");
    std::fs::write(&config, CONFIG).unwrap();
    // The whole experiment into `out`, seed 7, with `extra` options; returns stdout.
    let bench_with = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "-q",
            "--seed",
            "7",
            "bench",
            "ssl",
            "--config",
            s(&config),
            "--out",
            s(out),
        ];
        args.extend(extra);
        ok(&args)
    };
    let bench = |out: &Path| bench_with(out, &[]);
    let a = dir.path().join("a");
    let stdout = bench(&a);

    // The printed table is the one in table.md: header, separator, 3 methods × 2 sets.
    let rows = table_rows(&a.join("table.md"));
    assert_eq!(rows.len(), 8, "{rows:#?}");
    assert!(rows[0].starts_with("| method | test set | ACC | TP | FP | FN | TN | P | R | F1 |"));
    for r in &rows {
        assert!(stdout.contains(r.as_str()), "{r} not printed:\n{stdout}");
    }
    let md = std::fs::read_to_string(a.join("table.md")).unwrap();
    assert!(
        md.contains("Command: `insar-mm -q --seed 7 bench ssl --config"),
        "{md}"
    );

    let r = json(&a.join("results.json"));
    assert_eq!(r["seed"], 7);
    assert_eq!(r["image_size"], 32);
    assert_eq!(
        (r["train_positives"].as_u64(), r["train_negatives"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(r["pretrain_steps"], 3);
    // Four sets of the configured sizes, each from its own seed.
    let sets = r["sets"].as_array().unwrap();
    let sizes: Vec<(String, u64)> = sets
        .iter()
        .map(|s| {
            (
                s["set"].as_str().unwrap().to_string(),
                s["samples"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sizes,
        [
            ("unlabeled".to_string(), 16),
            ("labelled-pool".to_string(), 24),
            ("test".to_string(), 10),
            ("ood".to_string(), 12)
        ]
    );
    let mut seeds: Vec<u64> = sets.iter().map(|s| s["seed"].as_u64().unwrap()).collect();
    seeds.dedup();
    assert_eq!(seeds.len(), 4);
    let deformed = |name: &str| {
        sets.iter().find(|s| s["set"] == name).unwrap()["deformation"]
            .as_u64()
            .unwrap()
    };

    let results = r["results"].as_array().unwrap();
    let pairs: Vec<(&str, &str)> = results
        .iter()
        .map(|x| {
            (
                x["method"].as_str().unwrap(),
                x["test_set"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("simclr-linear", "test"),
            ("simclr-linear", "ood"),
            ("random-linear", "test"),
            ("random-linear", "ood"),
            ("scratch-finetune", "test"),
            ("scratch-finetune", "ood")
        ]
    );
    for x in results {
        let n = x["samples"].as_u64().unwrap();
        let set = x["test_set"].as_str().unwrap();
        assert_eq!(n, if set == "test" { 10 } else { 12 });
        let [tp, fp, fn_, tn] = ["tp", "fp", "fn", "tn"].map(|k| x[k].as_u64().unwrap());
        assert_eq!(tp + fp + fn_ + tn, n, "{x}");
        // The positives of the set are TP + FN whatever the model predicts.
        assert_eq!(tp + fn_, deformed(set), "{x}");
        let f = |k: &str| x[k].as_f64().unwrap();
        for k in ["accuracy", "precision", "recall", "f1"] {
            assert!((0.0..=1.0).contains(&f(k)), "{k} in {x}");
        }
        assert!((f("accuracy") - (tp + tn) as f64 / n as f64).abs() < 1e-12);
        if tp + fp > 0 {
            assert!((f("precision") - tp as f64 / (tp + fp) as f64).abs() < 1e-12);
        }
        for k in ["auroc", "ap"] {
            if let Some(v) = x[k].as_f64() {
                assert!((0.0..=1.0).contains(&v), "{k} in {x}");
            }
        }
    }

    // Run directories: the SimCLR encoder is what the probe (a) used, unchanged by the probe;
    // (b) kept its random encoder; (c) trained the same random encoder.
    let simclr = encoder_tensors(&a.join("runs/simclr/model.safetensors"));
    let probe_a = encoder_tensors(&a.join("runs/simclr-linear/model.safetensors"));
    let probe_b = encoder_tensors(&a.join("runs/random-linear/model.safetensors"));
    let scratch = encoder_tensors(&a.join("runs/scratch-finetune/model.safetensors"));
    assert!(!simclr.is_empty());
    assert_eq!(simclr, probe_a);
    assert_ne!(probe_a, probe_b);
    assert_eq!(
        probe_b.iter().map(|t| &t.0).collect::<Vec<_>>(),
        scratch.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    assert_ne!(probe_b, scratch);
    let cfg = json(&a.join("config.json"));
    assert_eq!(cfg["ood"]["style"], "gamma");
    assert_eq!(cfg["scenes"]["style"], "licsar2020");
    assert_eq!(cfg["ood"]["width"], 48);

    // Same seed, fresh output folder (data generated again): the same results.
    let b = dir.path().join("b");
    bench(&b);
    assert_eq!(
        reproducible(&a.join("results.json")),
        reproducible(&b.join("results.json"))
    );
    assert_eq!(
        table_rows(&a.join("table.md")),
        table_rows(&b.join("table.md"))
    );

    // Again into the first folder: the cached sets are reused (not rewritten), the runs
    // are replaced, the results are the same.
    let cached = a.join("data/unlabeled.safetensors");
    let before = std::fs::metadata(&cached).unwrap().modified().unwrap();
    bench(&a);
    assert_eq!(
        std::fs::metadata(&cached).unwrap().modified().unwrap(),
        before
    );
    assert_eq!(
        reproducible(&a.join("results.json")),
        reproducible(&b.join("results.json"))
    );

    // --encoder shipped: no pretraining here; the probe (a) starts from the shipped
    // encoder, written beside the results as a run folder.
    let c = dir.path().join("c");
    bench_with(&c, &["--cache", s(&a.join("data")), "--encoder", "shipped"]);
    let shipped = encoder_tensors(&manifest_dir().join("weights/simclr-tiny/model.safetensors"));
    assert!(encoder_tensors(&c.join("runs/simclr-linear/model.safetensors")) == shipped);
    let r = json(&c.join("results.json"));
    assert!(
        r["encoder_from"]
            .as_str()
            .unwrap()
            .ends_with("shipped-encoder"),
        "{r}"
    );
    assert!(!c.join("runs/simclr").exists());
}

#[test]
fn bench_ssl_bad_configs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let unknown = write(
        "unknown.toml",
        &CONFIG.replace("[sets]", "[sets]\nunlabelled = 3"),
    );
    // The TOML parser's messages span lines.
    let err = fails_verbose(
        &["bench", "ssl", "--config", s(&unknown), "--out", s(&out)],
        1,
    );
    assert!(
        err.contains("unknown.toml") && err.contains("unlabelled"),
        "{err}"
    );
    let ood = write(
        "ood.toml",
        &CONFIG.replace("style = \"gamma\"", "style = \"sepia\""),
    );
    let err = fails_verbose(&["bench", "ssl", "--config", s(&ood), "--out", s(&out)], 1);
    assert!(err.contains("[ood]") && err.contains("style"), "{err}");
    let many = write(
        "many.toml",
        &CONFIG.replace("positives = 4", "positives = 30"),
    );
    let err = fails(&["bench", "ssl", "--config", s(&many), "--out", s(&out)], 1);
    assert!(err.contains("sets.labelled_pool"), "{err}");
    let missing = dir.path().join("nope.toml");
    let err = fails(
        &["bench", "ssl", "--config", s(&missing), "--out", s(&out)],
        1,
    );
    assert!(err.contains("nope.toml"), "{err}");
    // Nothing was generated for a config that does not resolve.
    assert!(!out.join("data").exists());
}
