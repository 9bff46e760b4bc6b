//! End-to-end tests of `insar-mm eval ...` through the binary, on the reference fixtures
//! of `evaluation/reference/fixtures/` (made by pycocoevalcap, NumPy/SciPy, scikit-learn).

use std::path::Path;

use insar_mm::data::png::{write_png, PngColor};
use serde_json::Value;

use crate::support::*;

fn close(got: &Value, want: &Value, tol: f64, what: &str) {
    let (g, w) = (got.as_f64().unwrap(), want.as_f64().unwrap());
    assert!(
        (g - w).abs() <= tol * w.abs().max(1.0),
        "{what}: {g} vs reference {w}"
    );
}

#[test]
fn captions_json_table_and_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Value = json(&eval_fixtures().join("captions.json"));
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let refs = dir.path().join(format!("{name}_refs.json"));
        let res = dir.path().join(format!("{name}_res.json"));
        std::fs::write(&refs, case["refs"].to_string()).unwrap();
        std::fs::write(&res, case["results"].to_string()).unwrap();
        let v = ok_json(&[
            "eval",
            "captions",
            "--refs",
            s(&refs),
            "--results",
            s(&res),
            "--per-image",
            "--json",
        ]);
        for m in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"] {
            close(&v[m], &case["scores"][m], 1e-9, &format!("{name} {m}"));
            for (id, s) in case["per_image"].as_object().unwrap() {
                close(
                    &v["per_image"][id][m],
                    &s[m],
                    1e-9,
                    &format!("{name} {id} {m}"),
                );
            }
        }
    }
    let refs = dir.path().join("hard_cases_refs.json");
    let res = dir.path().join("hard_cases_res.json");
    let table = ok(&["eval", "captions", "--refs", s(&refs), "--results", s(&res)]);
    assert!(
        table.contains("Bleu_4")
            && table.contains("CIDEr")
            && table.contains("METEOR and SPICE not computed"),
        "{table}"
    );
}

#[test]
fn captions_bad_input_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let refs = dir.path().join("refs.json");
    let res = dir.path().join("res.json");
    std::fs::write(
        &refs,
        r#"{"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "a b"}]}"#,
    )
    .unwrap();
    std::fs::write(&res, r#"[{"image_id": 2, "caption": "a"}]"#).unwrap();
    let e = fails(
        &["eval", "captions", "--refs", s(&refs), "--results", s(&res)],
        1,
    );
    assert!(e.contains("res.json") && e.contains("image id 2"), "{e}");
    std::fs::write(
        &res,
        r#"[{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]"#,
    )
    .unwrap();
    let e = fails(
        &["eval", "captions", "--refs", s(&refs), "--results", s(&res)],
        1,
    );
    assert!(e.contains("duplicate image id 1"), "{e}");
    std::fs::write(&res, "").unwrap();
    let e = fails(
        &["eval", "captions", "--refs", s(&refs), "--results", s(&res)],
        1,
    );
    assert!(e.contains("res.json") && e.contains("empty"), "{e}");
    let e = fails(
        &[
            "eval",
            "captions",
            "--refs",
            s(&dir.path().join("nope.json")),
            "--results",
            s(&res),
        ],
        1,
    );
    assert!(e.contains("nope.json"), "{e}");
}

/// `eval fid --real <real> --fake <fake>` and `extra`.
fn fid_args<'a>(real: &'a Path, fake: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["eval", "fid", "--real", s(real), "--fake", s(fake)];
    v.extend_from_slice(extra);
    v
}

#[test]
fn fid_kid_stats_and_errors() {
    let fid = json(&eval_fixtures().join("fid.json"));
    let case = &fid["cases"][0];
    assert_eq!(case["name"], "full_rank");
    let real = eval_fixtures().join(case["real"].as_str().unwrap());
    let fake = eval_fixtures().join(case["fake"].as_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("real.npz");
    let kid = [
        "--kid-subsets",
        "5",
        "--kid-subset-size",
        "100",
        "--seed",
        "3",
    ];
    let v = ok_json(&fid_args(
        &real,
        &fake,
        &[&kid[..], &["--save-real-stats", s(&stats), "--json"]].concat(),
    ));
    close(&v["fid"], &case["fid_scipy_sqrtm"], 1e-7, "fid");
    close(&v["kid_full"], &case["kid_full"], 1e-9, "kid_full");
    assert!(v["kid_mean"].as_f64().unwrap().is_finite() && v["kid_std"].as_f64().unwrap() > 0.0);
    // Same seed, same KID; another seed, another draw.
    let again = ok_json(&fid_args(&real, &fake, &[&kid[..], &["--json"]].concat()));
    assert_eq!(again["kid_mean"], v["kid_mean"]);
    // Saved statistics give the same FID.
    let from_stats = ok_json(&fid_args(&stats, &fake, &["--json"]));
    close(
        &from_stats["fid"],
        &case["fid_scipy_sqrtm"],
        1e-7,
        "fid from stats",
    );
    assert!(from_stats.get("kid_mean").is_none());
    let table = ok(&fid_args(
        &real,
        &fake,
        &["--kid-subsets", "2", "--kid-subset-size", "50"],
    ));
    assert!(
        table.contains("fid") && table.contains("kid_mean"),
        "{table}"
    );
    // Bad input: mismatched dimensions, NaN, empty file.
    let other = eval_fixtures().join("n_less_than_d_real.npy");
    let e = fails(&fid_args(&real, &other, &[]), 1);
    assert!(e.contains("dimensions differ"), "{e}");
    let nan = dir.path().join("nan.npy");
    let mut bytes = std::fs::read(eval_fixtures().join("npy_f8.npy")).unwrap();
    let n = bytes.len();
    bytes[n - 8..].copy_from_slice(&f64::NAN.to_le_bytes());
    std::fs::write(&nan, &bytes).unwrap();
    let e = fails(&fid_args(&nan, &nan, &[]), 1);
    assert!(e.contains("nan.npy") && e.contains("non-finite"), "{e}");
    let empty = dir.path().join("empty.npy");
    std::fs::write(&empty, b"").unwrap();
    let e = fails(&fid_args(&empty, &fake, &[]), 1);
    assert!(
        e.contains("--real") && e.contains("empty.npy") && e.contains("empty"),
        "{e}"
    );
}

#[test]
fn fid_pytorch_fid_mode_on_dead_features() {
    let fid = json(&eval_fixtures().join("fid.json"));
    let case = fid["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "constant_columns")
        .unwrap();
    let real = eval_fixtures().join(case["real"].as_str().unwrap());
    let fake = eval_fixtures().join(case["fake"].as_str().unwrap());
    let v = ok_json(&fid_args(
        &real,
        &fake,
        &["--mode", "pytorch-fid", "--no-kid", "--json"],
    ));
    assert_eq!(v["eps_retry"], true);
    close(&v["fid"], &case["fid_eps_retry"], 1e-7, "retry");
    close(
        &v["fid_without_retry"],
        &case["fid_scipy_sqrtm"],
        1e-7,
        "without retry",
    );
}

#[test]
fn retrieval_and_classification() {
    let f: Value = json(&eval_fixtures().join("retrieval.json"));
    let dir = tempfile::tempdir().unwrap();
    let rel = dir.path().join("rel.json");
    std::fs::write(&rel, f["relevant"].to_string()).unwrap();
    let sim = eval_fixtures().join("retrieval_similarity.npy");
    let retrieval = [
        "eval",
        "retrieval",
        "--similarity",
        s(&sim),
        "--relevant",
        s(&rel),
    ];
    let v = ok_json(&[&retrieval[..], &["--json"]].concat());
    for k in ["R@1", "R@5", "R@10", "medr", "meanr", "mAP"] {
        close(&v[k], &f[k], 1e-12, k);
    }
    assert!(ok(&retrieval).contains("mAP"));
    std::fs::write(&rel, "[[0], [1]]").unwrap();
    let e = fails(&retrieval, 1);
    assert!(e.contains("2 relevance lists for 40 query rows"), "{e}");

    let c = json(&eval_fixtures().join("classification.json"));
    let m = &c["multi"];
    let scores = eval_fixtures().join(m["scores"].as_str().unwrap());
    let labels = eval_fixtures().join(m["labels"].as_str().unwrap());
    let cls = [
        "eval",
        "classification",
        "--scores",
        s(&scores),
        "--labels",
        s(&labels),
    ];
    let v = ok_json(&[&cls[..], &["--json"]].concat());
    close(
        &v["macro_avg"]["f1"],
        &m["averages"]["macro"][2],
        1e-12,
        "macro F1",
    );
    close(
        &v["micro_avg"]["f1"],
        &m["averages"]["micro"][2],
        1e-12,
        "micro F1",
    );
    let names = "Deformation,Mogi,Dyke,Sill,Spheroid,Earthquake,Unidentified,Low,Medium,High";
    let table = ok(&[&cls[..], &["--names", names]].concat());
    assert!(
        table.contains("Earthquake") && table.contains("macro avg"),
        "{table}"
    );
    let e = fails(&[&cls[..], &["--names", "a,b"]].concat(), 1);
    assert!(e.contains("2 names for 10 score columns"), "{e}");
    let single = eval_fixtures().join("cls_single_labels.npy");
    let e = fails(
        &[
            "eval",
            "classification",
            "--scores",
            s(&scores),
            "--labels",
            s(&single),
        ],
        1,
    );
    assert!(e.contains("90") && e.contains("120"), "{e}");
}

#[test]
fn segmentation_from_png_label_maps() {
    let dir = tempfile::tempdir().unwrap();
    let (pred, gt) = (dir.path().join("pred"), dir.path().join("gt"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&gt).unwrap();
    // 2×3 maps; class 2 never present; one ignored pixel.
    write_png(
        &gt.join("a.png"),
        3,
        2,
        PngColor::Gray,
        &[0, 0, 1, 1, 255, 0],
    )
    .unwrap();
    write_png(
        &pred.join("a.png"),
        3,
        2,
        PngColor::Gray,
        &[0, 1, 1, 1, 0, 0],
    )
    .unwrap();
    write_png(&gt.join("b.png"), 3, 2, PngColor::Gray, &[1, 1, 1, 0, 0, 0]).unwrap();
    write_png(
        &pred.join("b.png"),
        3,
        2,
        PngColor::Gray,
        &[1, 1, 0, 0, 0, 0],
    )
    .unwrap();
    let seg = [
        "eval",
        "segmentation",
        "--pred",
        s(&pred),
        "--gt",
        s(&gt),
        "--num-classes",
        "3",
    ];
    let v = ok_json(&[&seg[..], &["--json"]].concat());
    // Confusion over both images (the ignored pixel excluded): truth 0 → [5, 1],
    // truth 1 → [1, 4].
    assert_eq!(
        v["confusion"],
        serde_json::json!([[5, 1, 0], [1, 4, 0], [0, 0, 0]])
    );
    close(&v["IoU"][0], &serde_json::json!(5.0 / 7.0), 1e-15, "IoU0");
    close(&v["IoU"][1], &serde_json::json!(4.0 / 6.0), 1e-15, "IoU1");
    assert!(v["IoU"][2].is_null());
    close(
        &v["mIoU"],
        &serde_json::json!((5.0 / 7.0 + 4.0 / 6.0) / 2.0),
        1e-15,
        "mIoU",
    );
    close(
        &v["Dice"][1],
        &serde_json::json!(8.0 / 10.0),
        1e-15,
        "Dice1",
    );
    close(&v["aAcc"], &serde_json::json!(9.0 / 11.0), 1e-15, "aAcc");
    assert!(ok(&seg).contains("mIoU"));
    // A class ≥ K names the file; a missing prediction is an error.
    write_png(&gt.join("c.png"), 3, 2, PngColor::Gray, &[0, 0, 5, 0, 0, 0]).unwrap();
    write_png(&pred.join("c.png"), 3, 2, PngColor::Gray, &[0; 6]).unwrap();
    let e = fails(&seg, 1);
    assert!(e.contains("c.png") && e.contains("class 5"), "{e}");
    std::fs::remove_file(pred.join("c.png")).unwrap();
    let e = fails(&seg, 1);
    assert!(e.contains("c.png") && e.contains("no prediction"), "{e}");
}
