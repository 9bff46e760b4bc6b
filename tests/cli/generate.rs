//! End-to-end tests of `insar-mm train generator`, `insar-mm generate` and `insar-mm eval
//! generation` on a small `data synth` dataset with the `test` UNet: exact resume (EMA
//! included), generated sets that load with the data commands, bad input.

use std::path::Path;

use crate::support::*;

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = map
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn train_resume_generate_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
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
    let config = tmp.path().join("gen.toml");
    std::fs::write(
        &config,
        "preset = \"test\"\ntext_dim = 16\ntext_layers = 1\n[data]\nval_images = 4\n[train]\nvalidate_every = 2\n",
    )
    .unwrap();
    let train = |run: &Path, steps: &str| {
        ok(&[
            "train",
            "generator",
            "--data",
            s(&data),
            "--config",
            s(&config),
            "--out",
            s(run),
            "--steps",
            steps,
            "--batch-size",
            "4",
            "--image-size",
            "16",
            "-q",
        ]);
    };
    // Uninterrupted 3 steps vs 2 steps + resume to 3: identical weights and EMA.
    let full = tmp.path().join("full");
    let part = tmp.path().join("part");
    train(&full, "3");
    train(&part, "2");
    ok(&[
        "train",
        "generator",
        "--resume",
        s(&part),
        "--steps",
        "3",
        "-q",
    ]);
    let (a, b) = (
        tensors(&full.join("model.safetensors")),
        tensors(&part.join("model.safetensors")),
    );
    assert!(a.iter().any(|(k, _)| k.starts_with("ema.unet.")));
    assert_eq!(a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert_eq!(va, vb, "{ka} differs after resume");
    }
    let cfg = json(&full.join("config.json"));
    assert_eq!(cfg["task"], "generator");
    assert_eq!(cfg["model"]["unet"]["in_channels"], 3);
    assert!(full.join("tokenizer.json").is_file());

    // Generate: Hephaestus layout, annotation = the prompt and its facts, loads with `data check`.
    let out = tmp.path().join("gen");
    let sheet = tmp.path().join("sheet.png");
    let prompt =
        "a dyke-type deformation pattern of medium intensity can be detected in the centre";
    ok(&[
        "generate",
        "--model",
        s(&full),
        prompt,
        "--n",
        "2",
        "--steps",
        "3",
        "--out",
        s(&out),
        "--sheet",
        s(&sheet),
        "--npy",
        "-q",
    ]);
    assert!(sheet.is_file());
    let ann = json(&out.join("annotations").join("1.json"));
    assert_eq!(ann["caption"], prompt);
    assert_eq!(ann["label"], serde_json::json!(["Deformation"]));
    assert_eq!(ann["activity_type"], serde_json::json!(["Dyke"]));
    assert_eq!(ann["intensity_level"], serde_json::json!(["Medium"]));
    let ifg = out
        .join("GEN_00001/interferograms/20000101_20010101")
        .join("20000101_20010101.geo.diff.png");
    assert!(ifg.is_file() && ifg.with_extension("npy").is_file());
    let (stdout, stderr) = Cli::with(&[]).ok_with_stderr(&["data", "check", s(&out)]);
    let text = stdout + &stderr;
    assert!(
        text.contains("2 of 2 annotated interferograms usable"),
        "{text}"
    );

    // Empty and unknown prompts are allowed, with a note.
    let prompts = tmp.path().join("prompts.txt");
    std::fs::write(
        &prompts,
        "hello world\n\nno deformation activity can be detected\n",
    )
    .unwrap();
    let (_, o_stderr) = Cli::with(&[]).ok_with_stderr(&[
        "generate",
        "--model",
        s(&full),
        "--prompts",
        s(&prompts),
        "--n",
        "1",
        "--steps",
        "2",
        "--out",
        s(&tmp.path().join("g2")),
    ]);
    let err = o_stderr;
    assert!(
        err.contains("no known caption facts") && !err.contains("prompt 2 ("),
        "{err}"
    );
    let (_, o_stderr) = Cli::with(&[]).ok_with_stderr(&[
        "generate",
        "--model",
        s(&full),
        "",
        "--n",
        "1",
        "--steps",
        "2",
        "--guidance",
        "0",
        "--sampler",
        "ddpm",
        "--out",
        s(&tmp.path().join("g3")),
    ]);
    assert!(o_stderr.contains("unconditionally"));

    // Bad input.
    let g = |extra: &[&str]| {
        let mut a = vec!["generate", "--model", s(&full), prompt, "--out", s(&out)];
        a.extend_from_slice(extra);
        fails(&a, 1)
    };
    assert!(g(&["--n", "0"]).contains("--n 0"));
    assert!(g(&["--guidance", "-1"]).contains("--guidance -1"));
    assert!(g(&["--steps", "5000"]).contains("at most"));
    let other = tmp.path().join("classify-run");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("config.json"), r#"{"task": "classify"}"#).unwrap();
    let err = fails(&["generate", "--model", s(&other), prompt], 1);
    assert!(
        err.contains("classify") && err.contains("generator"),
        "{err}"
    );
    let err = fails(&["train", "generator", "--resume", s(&other)], 1);
    assert!(err.contains("classify"), "{err}");
    // eval generation refuses a judge of another task, and a split too small to halve.
    let err = fails(
        &[
            "eval",
            "generation",
            "--model",
            s(&full),
            "--classify-model",
            s(&full),
        ],
        1,
    );
    assert!(
        err.contains("generator") && err.contains("classify"),
        "{err}"
    );
}
