//! `insar-mm train retrieval`, `index`, `search` and `eval retrieval --model` end to end: a few
//! training steps on a small `data synth` set → index → append → search (text, image,
//! captions, contact sheet) → eval with the random baseline, and the bad inputs of issue 22
//! (empty and unknown-word queries, `--top 0`, an index of another model, a truncated index,
//! a dimension mismatch).

use std::path::Path;

use serde_json::Value;

use crate::support::*;

fn train(data: &Path, run: &Path, steps: &str, seed: &str) {
    ok(&[
        "train",
        "retrieval",
        "--data",
        s(data),
        "--out",
        s(run),
        "--steps",
        steps,
        "--batch-size",
        "4",
        "--image-size",
        "32",
        "--seed",
        seed,
        "-q",
    ]);
}

#[test]
fn train_index_search_append_eval_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    let index = tmp.path().join("index");
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
    train(&data, &run, "3", "42");
    for f in [
        "config.json",
        "tokenizer.json",
        "words.json",
        "model.safetensors",
        "best.safetensors",
        "test_scores.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("val_mR"), "{metrics}");
    // `--encoder auto` (the default) resolved to the shipped encoder, and the run says so.
    let config: Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["encoder"], "shipped", "{config}");
    // Resume extends the run with its saved config.
    ok(&[
        "train",
        "retrieval",
        "--resume",
        s(&run),
        "--steps",
        "4",
        "-q",
    ]);
    let state: Value =
        serde_json::from_slice(&std::fs::read(run.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 4, "{state}");
    let scores: Value =
        serde_json::from_slice(&std::fs::read(run.join("test_scores.json")).unwrap()).unwrap();
    let mr = scores["relevance"]["facts"]["mR"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&mr), "{scores}");

    // Index the train split of the dataset, then append the rest as PNG files.
    let (_, err) = Cli::default().ok_with_stderr(&[
        "index",
        "--model",
        s(&run),
        "--out",
        s(&index),
        "--data",
        s(&data),
        "--split",
        "train",
        "-q",
    ]);
    assert!(err.contains("images/s"), "{err}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(index.join("manifest.json")).unwrap()).unwrap();
    let first = manifest["count"].as_u64().unwrap() as usize;
    assert!(first > 0 && manifest["entries"][0]["caption"].is_string());
    assert!(
        manifest["entries"][0]["frame"].is_string() && manifest["entries"][0]["dates"].is_string()
    );
    // A second index over the same folder is refused without --append.
    assert!(fails(
        &[
            "index",
            "--model",
            s(&run),
            "--out",
            s(&index),
            "--data",
            s(&data)
        ],
        1
    )
    .contains("--append"));
    let pngs = phase_pngs(&data);
    ok(&[
        "index",
        "--model",
        s(&run),
        "--out",
        s(&index),
        "--append",
        s(&pngs[0]),
        s(&pngs[1]),
        "-q",
    ]);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(index.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["count"].as_u64().unwrap() as usize, first + 2);

    // Text search: JSON with ranks and scores, best first; a table; a contact sheet.
    let out = ok(&[
        "search",
        "--index",
        s(&index),
        "dyke-type deformation of high intensity",
        "--top",
        "3",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 3);
    assert_eq!(res[0]["rank"], 1);
    assert!(res[0]["score"].as_f64().unwrap() >= res[2]["score"].as_f64().unwrap());
    let sheet = tmp.path().join("sheet.png");
    let table = ok(&[
        "search",
        "--index",
        s(&index),
        "no deformation",
        "--sheet",
        s(&sheet),
        "-q",
    ]);
    assert!(
        table.contains("rank") && table.lines().count() >= 2,
        "{table}"
    );
    let png = insar_mm::data::png::Png::read(&sheet).unwrap();
    assert!(png.width > 100 && png.height > 100);
    // Image → image: the query image itself comes first.
    let out = ok(&[
        "search",
        "--index",
        s(&index),
        "--image",
        s(&pngs[0]),
        "--top",
        "2",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["results"][0]["path"], s(&pngs[0]));
    // Image → text: captions of the index, or of a file.
    let out = ok(&[
        "search",
        "--index",
        s(&index),
        "--image",
        s(&pngs[0]),
        "--from-index",
        "--top",
        "2",
    ]);
    assert!(out.lines().count() >= 2, "{out}");
    let caps = tmp.path().join("caps.txt");
    std::fs::write(
        &caps,
        "no deformation activity can be detected.\n\na dyke-type deformation pattern.\n",
    )
    .unwrap();
    let out = ok(&[
        "search",
        "--index",
        s(&index),
        "--image",
        s(&pngs[0]),
        "--captions",
        s(&caps),
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 2);

    // Evaluation with the random baseline in the same table.
    let out = ok(&[
        "eval",
        "retrieval",
        "--model",
        s(&run),
        "--split",
        "test",
        "-q",
    ]);
    assert!(
        out.contains("dual encoder") && out.contains("random") && out.contains("facts"),
        "{out}"
    );
    // The file mode still works and needs both files.
    assert!(!fails(
        &[
            "eval",
            "retrieval",
            "--similarity",
            "x.npy",
            "--relevant",
            "y.json"
        ],
        1
    )
    .is_empty());

    // Bad input. Empty query: refused.
    assert!(fails(&["search", "--index", s(&index), "  "], 1).contains("empty"));
    // Unknown words only: ranked anyway, with a warning (JSON carries it too).
    let (out, err) = Cli::default().ok_with_stderr(&[
        "search",
        "--index",
        s(&index),
        "zzqx blorf",
        "--top",
        "2",
    ]);
    assert!(err.contains("warning") && err.contains("zzqx"), "{err}");
    assert!(out.lines().count() == 3, "{out}");
    // --top 0.
    assert!(fails(&["search", "--index", s(&index), "dyke", "--top", "0"], 1).contains("--top"));
    // An index queried with another model.
    let other = tmp.path().join("other");
    train(&data, &other, "1", "7");
    let err = fails(
        &["search", "--index", s(&index), "--model", s(&other), "dyke"],
        1,
    );
    assert!(err.contains("built with model"), "{err}");
    assert!(fails(
        &[
            "index",
            "--model",
            s(&other),
            "--out",
            s(&index),
            "--append",
            s(&pngs[2])
        ],
        1
    )
    .contains("built with model"));
    // A dimension mismatch between the manifest and the embeddings.
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(
        index.join("embeddings.safetensors"),
        bad.join("embeddings.safetensors"),
    )
    .unwrap();
    let m = std::fs::read_to_string(index.join("manifest.json")).unwrap();
    let dim = manifest["dim"].as_u64().unwrap();
    std::fs::write(
        bad.join("manifest.json"),
        m.replace(&format!("\"dim\": {dim}"), "\"dim\": 7"),
    )
    .unwrap();
    assert!(fails(&["search", "--index", s(&bad), "dyke"], 1).contains("dimension"));
    // A truncated embeddings file.
    let bytes = std::fs::read(index.join("embeddings.safetensors")).unwrap();
    std::fs::write(bad.join("manifest.json"), &m).unwrap();
    std::fs::write(
        bad.join("embeddings.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    assert!(fails(&["search", "--index", s(&bad), "dyke"], 1).contains("truncated"));
    // No index at all; a classify-style run as --model.
    assert!(fails(
        &["search", "--index", s(&tmp.path().join("none")), "dyke"],
        1
    )
    .contains("no such index"));
    assert!(fails(
        &[
            "index",
            "--model",
            s(&data),
            "--out",
            s(&tmp.path().join("i2")),
            s(&pngs[0])
        ],
        1
    )
    .contains("config.json"));
}
