//! End-to-end tests of `insar-mm train pretrain`, `embed` and `bench train`: the binary on the
//! built-in synthetic stream and on a small generated patch folder.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use insar_mm::data::colormap::rdylbu_color;
use insar_mm::data::png::{write_png, PngColor};
use serde_json::Value;

use crate::support::*;

/// A patch folder of `n` 40×40 patches (RdYlBu_r phase preview + coherence) with labels.
fn patch_folder(root: &Path, n: usize) {
    for i in 0..n {
        let name = format!("{}", 100 + i);
        let (w, h) = (40usize, 40usize);
        let phase: Vec<u8> = (0..w * h)
            .flat_map(|k| {
                let (x, y) = ((k % w) as f32, (k / w) as f32);
                let r = ((x - 20.0).powi(2) + (y - 20.0).powi(2)).sqrt();
                rdylbu_color((r * (0.3 + 0.1 * i as f32)).sin() * 3.0)
            })
            .collect();
        let coh: Vec<u8> = (0..w * h)
            .map(|k| (100 + (k * 7 + i * 13) % 150) as u8)
            .collect();
        write_png(
            &root.join(format!("labeled/0/{name}.png")),
            w,
            h,
            PngColor::Rgb,
            &phase,
        )
        .unwrap();
        write_png(
            &root.join(format!("coherence/0/{name}.png")),
            w,
            h,
            PngColor::Gray,
            &coh,
        )
        .unwrap();
        let label = serde_json::json!({
            "Deformation": [0], "Intensity": 0, "Phase": 0, "frameID": format!("f{}", i % 3),
            "primary_date": "20200101", "secondary_date": "20200113", "uniqueID": 100 + i
        });
        std::fs::create_dir_all(root.join("cls_labels")).unwrap();
        std::fs::write(
            root.join(format!("cls_labels/{name}.json")),
            label.to_string(),
        )
        .unwrap();
    }
}

const SMALL: [&str; 8] = [
    "--preset",
    "tiny",
    "--image-size",
    "24",
    "--batch-size",
    "8",
    "--checkpoint-every",
    "3",
];

#[test]
fn pretrain_resume_and_embed() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args = vec!["-q", "train", "pretrain"];
    args.extend(SMALL);
    args.extend(["--steps", "6", "--out", s(&run)]);
    ok(&args);
    for f in [
        "config.json",
        "checkpoint.json",
        "checkpoints/step-6/model.safetensors",
        "checkpoints/step-6/optimizer.safetensors",
        "checkpoints/step-6/state.json",
        "model.safetensors",
        "state.json",
        "metrics.jsonl",
        "loss.png",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    assert_eq!(
        json(&run.join("checkpoint.json")),
        serde_json::json!({"step": 6, "dir": "checkpoints/step-6"})
    );
    let state = json(&run.join("state.json"));
    assert_eq!(state["step"], 6);
    assert_eq!(state["finished"], true);
    assert_eq!(
        safetensors_metadata(&run.join("model.safetensors"))["step"],
        "6"
    );
    let cfg = json(&run.join("config.json"));
    assert_eq!(cfg["data"]["image_size"], 24);
    assert_eq!(cfg["preset"], "tiny");
    assert_eq!(cfg["seed"], 42);
    // Without --config: the built-in recipe of the shipped encoder (configs/pretrain-tiny.toml).
    assert_eq!(cfg["data"]["pairs"], "partners");
    assert_eq!(cfg["data"]["twin_terrain"], "redrawn");
    assert_eq!(
        cfg["augment"]["crop"]["scale"],
        serde_json::json!([0.6, 1.0])
    );
    assert_eq!(cfg["train"]["steps"], 6);
    assert_eq!(cfg["train"]["validate_every"], 200);

    // A second start into the same run is refused; --resume extends it.
    let err = fails(&args, 1);
    assert!(err.contains("--resume"), "{err}");
    ok(&[
        "-q",
        "train",
        "pretrain",
        "--resume",
        s(&run),
        "--steps",
        "8",
    ]);
    let state = json(&run.join("state.json"));
    assert_eq!(
        (state["step"].as_u64(), state["finished"].as_bool()),
        (Some(8), Some(true))
    );
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps: Vec<(u64, String)> = lines
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["split"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // A train line and a validation line (the built-in recipe validates, and always at
    // the end) at the last step of each invocation.
    let expected: Vec<(u64, String)> = [(6, "train"), (6, "val"), (8, "train"), (8, "val")]
        .iter()
        .map(|(s, p)| (*s, p.to_string()))
        .collect();
    assert_eq!(steps, expected, "log lines of the two invocations");

    // Embed a patch folder with the run's encoder (tiny: 128-d pooled features).
    let patches = dir.path().join("patches");
    patch_folder(&patches, 5);
    let feats = dir.path().join("out/feats.npy");
    ok(&[
        "-q",
        "embed",
        "--model",
        s(&run),
        "--data",
        s(&patches),
        "--out",
        s(&feats),
        "--batch-size",
        "2",
    ]);
    let (header, values) = read_npy(&feats);
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'shape': (5, 128)"),
        "{header}"
    );
    assert_eq!(values.len(), 5 * 128);
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(
        values.iter().all(|&v| v >= 0.0),
        "pooled ReLU features are ≥ 0"
    );
    assert_ne!(
        values[..128],
        values[128..256],
        "different patches, different features"
    );
    let ids = std::fs::read_to_string(dir.path().join("out/feats.ids.txt")).unwrap();
    assert_eq!(
        ids.lines().collect::<Vec<_>>(),
        ["100", "101", "102", "103", "104"]
    );
    // Same model, same data → same features (batching does not matter in eval mode).
    let again = dir.path().join("again.npy");
    ok(&[
        "-q",
        "embed",
        "--model",
        s(&run),
        "--data",
        s(&patches),
        "--out",
        s(&again),
    ]);
    let (_, values2) = read_npy(&again);
    let diff = values
        .iter()
        .zip(&values2)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "{diff}");

    // Pretraining on the patch folder works too (5 patches, 1 held out, batch 4).
    let run2 = dir.path().join("run2");
    let tiny_cfg = dir.path().join("tiny.toml");
    std::fs::write(&tiny_cfg, "preset = \"tiny\"\n[data]\nval_samples = 1\n").unwrap();
    // Two epochs of `--batch-size batch` into `out`.
    let (cfg, data) = (s(&tiny_cfg), s(&patches));
    let folder_args = move |batch, out| {
        vec![
            "-q",
            "train",
            "pretrain",
            "--config",
            cfg,
            "--data",
            data,
            "--image-size",
            "24",
            "--batch-size",
            batch,
            "--epochs",
            "2",
            "--out",
            out,
        ]
    };
    ok(&folder_args("4", s(&run2)));
    assert_eq!(json(&run2.join("state.json"))["step"], 2);

    // A batch larger than the training set fails before a run folder exists, so the same
    // --out then starts cleanly.
    let run3 = dir.path().join("run3");
    let err = fails(&folder_args("8", s(&run3)), 1);
    assert!(err.contains("fewer than one batch"), "{err}");
    assert!(!run3.exists());
    ok(&folder_args("4", s(&run3)));
    assert_eq!(json(&run3.join("state.json"))["step"], 2);
}

/// The optimizer file of the run's current checkpoint.
fn current_optimizer(run: &Path) -> std::path::PathBuf {
    let dir = json(&run.join("checkpoint.json"))["dir"]
        .as_str()
        .unwrap()
        .to_string();
    run.join(dir).join("optimizer.safetensors")
}

/// Waits until the run in `run` has logged its first line.
fn wait_for_progress(run: &Path) {
    let metrics = run.join("metrics.jsonl");
    let start = Instant::now();
    loop {
        if std::fs::metadata(&metrics).is_ok_and(|m| m.len() > 0) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_and_sigterm_save_a_checkpoint_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    for signal in ["-INT", "-TERM"] {
        let run = dir.path().join(format!("run{signal}"));
        let mut args: Vec<&str> = vec!["-q", "train", "pretrain"];
        args.extend(SMALL);
        args.extend(["--steps", "100000", "--out", s(&run)]);
        let child = command(&args).stderr(Stdio::piped()).spawn().unwrap();
        // Wait for the first log line (step 10), then interrupt.
        wait_for_progress(&run);
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{signal}: {stderr}");
        assert!(
            stderr.contains("interrupted at step") && stderr.contains("--resume"),
            "{signal}: {stderr}"
        );
        let state = json(&run.join("state.json"));
        let step = state["step"].as_u64().unwrap();
        assert!(step >= 10 && state["finished"] == false, "{state}");
        assert_eq!(
            safetensors_metadata(&run.join("model.safetensors"))["step"],
            step.to_string()
        );
        assert_eq!(
            safetensors_metadata(&current_optimizer(&run))["steps"],
            step.to_string()
        );
        // Resume and finish two more steps.
        let total = (step + 2).to_string();
        ok(&[
            "-q",
            "train",
            "pretrain",
            "--resume",
            s(&run),
            "--steps",
            &total,
        ]);
        assert_eq!(
            json(&run.join("state.json"))["step"].as_u64(),
            Some(step + 2)
        );
    }
}

#[test]
fn sigkill_at_any_moment_resumes_to_the_weights_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let steps = "40";
    let train = |run: &Path, resume: bool| -> Command {
        let mut cmd = command(&["-q", "train", "pretrain"]);
        if resume {
            cmd.args(["--resume", s(run)]);
        } else {
            // SMALL without its --checkpoint-every.
            cmd.args(&SMALL[..6]).args(["--out", s(run)]);
        }
        cmd.args(["--steps", steps, "--checkpoint-every", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    let reference = dir.path().join("reference");
    let out = train(&reference, false).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 32 SIGKILLs at delays spread over 0.05-0.9 s after each (re)start, i.e. at any point
    // of model building, steps and checkpoint writes; each restart resumes the last
    // complete checkpoint (or starts again when the first one was never completed).
    let run = dir.path().join("killed");
    let mut kills = 0;
    let mut resumed_from = Vec::new();
    for i in 0..1000u64 {
        let resume = run.join("checkpoint.json").is_file();
        if resume {
            resumed_from.push(json(&run.join("checkpoint.json"))["step"].as_u64().unwrap());
        }
        let mut child = train(&run, resume).spawn().unwrap();
        if kills == 32 {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(50 + (i * 137) % 850));
        if child.try_wait().unwrap().is_some() {
            // It finished (or failed) before the kill: start over to keep killing.
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::remove_dir_all(&run).unwrap();
            continue;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    assert_eq!(kills, 32);
    eprintln!("resumed from steps {resumed_from:?}");
    assert!(resumed_from.iter().any(|&s| s > 0), "{resumed_from:?}");
    let state = json(&run.join("state.json"));
    assert_eq!(
        (state["step"].as_u64(), state["finished"].as_bool()),
        (Some(40), Some(true))
    );
    assert_eq!(
        tensor_bytes(&run.join("model.safetensors")),
        tensor_bytes(&reference.join("model.safetensors")),
        "weights differ from the uninterrupted run"
    );
    assert_eq!(
        tensor_bytes(&current_optimizer(&run)),
        tensor_bytes(&current_optimizer(&reference))
    );
    assert_eq!(state, json(&reference.join("state.json")));

    // Torn sets beside the current checkpoint (an unfinished save, a newer folder): the
    // resume says which it found and continues from the last complete one.
    let torn = dir.path().join("torn");
    copy_dir(&reference, &torn);
    let current = torn.join("checkpoints/step-40");
    copy_dir(&current, &torn.join("checkpoints/step-41.partial"));
    std::fs::create_dir(torn.join("checkpoints/step-43")).unwrap();
    let out = command(&["train", "pretrain", "--resume", s(&torn), "--steps", "42"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for folder in ["step-41.partial", "step-43"] {
        assert!(
            stderr.contains(folder)
                && stderr.contains("an incomplete checkpoint newer than step 40"),
            "{folder}: {stderr}"
        );
    }
    assert_eq!(json(&torn.join("state.json"))["step"], 42);
    assert!(!torn.join("checkpoints/step-41.partial").exists());
}

#[test]
fn usage_and_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&["train", "pretrain", "--steps", "5", "--epochs", "2"], 2);
    assert!(err.contains("--epochs") || err.contains("--steps"), "{err}");
    let err = fails(
        &["train", "pretrain", "--resume", "x", "--batch-size", "3"],
        2,
    );
    assert!(err.contains("--batch-size"), "{err}");
    let out = dir.path().join("r");
    let err = fails(
        &[
            "train",
            "pretrain",
            "--preset",
            "huge",
            "--steps",
            "1",
            "--out",
            s(&out),
        ],
        2,
    );
    assert!(err.contains("tiny, small, base, large"), "{err}");
    let missing = dir.path().join("nothing");
    let err = fails(&["train", "pretrain", "--resume", s(&missing)], 1);
    assert!(err.contains("config.json"), "{err}");
    // A config without a length (the built-in recipe has one); the run's INFO line comes
    // before the error.
    let no_length = dir.path().join("no-length.toml");
    std::fs::write(&no_length, "[data]\nval_samples = 2\n").unwrap();
    let err = fails_verbose(
        &[
            "train",
            "pretrain",
            "--config",
            s(&no_length),
            "--out",
            s(&out),
        ],
        1,
    );
    assert!(err.contains("--steps N or --epochs N"), "{err}");
    let err = fails(
        &[
            "train",
            "pretrain",
            "--data",
            s(&missing),
            "--steps",
            "1",
            "--out",
            s(&out),
        ],
        1,
    );
    assert!(err.contains("nothing"), "{err}");
    let bad_cfg = dir.path().join("bad.toml");
    std::fs::write(&bad_cfg, "[optim]\nkind = \"adamw\"\nlr = -1.0\n").unwrap();
    let err = fails(
        &[
            "train",
            "pretrain",
            "--config",
            s(&bad_cfg),
            "--steps",
            "1",
            "--out",
            s(&out),
        ],
        1,
    );
    assert!(err.contains("optim.lr"), "{err}");
    let feats = dir.path().join("f.npy");
    let err = fails(
        &[
            "embed",
            "--model",
            s(&missing),
            "--data",
            s(&missing),
            "--out",
            s(&feats),
        ],
        1,
    );
    assert!(
        err.contains(s(&missing)) && err.contains("no such run directory"),
        "{err}"
    );
    let err = fails(
        &["bench", "train", "--arch", "resnet101", "--steps", "1"],
        1,
    );
    assert!(err.contains("--arch"), "{err}");
}

#[test]
fn bench_train_reports_throughput() {
    let out = ok(&[
        "-q",
        "bench",
        "train",
        "--arch",
        "tiny",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--json",
    ]);
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    let ips = report["images_per_s"].as_f64().unwrap();
    assert!(ips.is_finite() && ips > 0.0, "{report}");
    let parts = report["forward_ms"].as_f64().unwrap()
        + report["backward_ms"].as_f64().unwrap()
        + report["optimizer_ms"].as_f64().unwrap();
    assert!(parts > 0.0);
    assert_eq!(report["batch_size"], 4);
    // ~0.3 M parameters in the tiny encoder plus a 128 × 10 head.
    let params = report["parameters"].as_u64().unwrap();
    assert!((200_000..500_000).contains(&params), "{params}");
}
