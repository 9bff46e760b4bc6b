//! The metrics against fixtures produced by the reference Python implementations
//! (`evaluation/reference/make_fixtures.py`: pycocoevalcap 1.2 with the real PTB tokenizer,
//! pytorch-fid's formula with SciPy, scikit-learn, NumPy).

use std::path::{Path, PathBuf};

use insar_mm_eval::captions::{self, tokenizer, CaptionSet, ImageId};
use insar_mm_eval::classification;
use insar_mm_eval::fid::{self, FidMode, Stats};
use insar_mm_eval::npy;
use insar_mm_eval::retrieval;
use insar_mm_eval::segmentation::Confusion;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/fixtures")
}

fn load(name: &str) -> Value {
    let bytes = std::fs::read(fixtures().join(name)).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn close(got: f64, want: f64, abs: f64, what: &str) {
    assert!(
        (got - want).abs() <= abs,
        "{what}: got {got:.17}, reference {want:.17}"
    );
}

fn rel_close(got: f64, want: f64, rel: f64, what: &str) {
    let err = (got - want).abs() / want.abs().max(1e-300);
    assert!(
        err <= rel,
        "{what}: got {got:.17}, reference {want:.17} (relative error {err:.2e})"
    );
}

#[test]
fn tokenizer_matches_the_stanford_jar() {
    let f = load("tokenizer.json");
    let inputs = f["inputs"].as_array().unwrap();
    let outputs = f["outputs"].as_array().unwrap();
    assert!(
        inputs.len() > 1000,
        "fixture includes the real Hephaestus captions"
    );
    let mut bad = Vec::new();
    for (i, o) in inputs.iter().zip(outputs) {
        let got = tokenizer::tokenize(i.as_str().unwrap());
        if got != o.as_str().unwrap() {
            bad.push(format!("{:?}\n   jar: {:?}\n  ours: {:?}", i, o, got));
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn caption_scores_match_pycocoevalcap() {
    let cases = load("captions.json");
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let set = CaptionSet::from_json(&case["refs"], &case["results"]).unwrap();
        // The tokenized text equals the jar's.
        for (k, id) in set.ids.iter().enumerate() {
            let key = id.to_string();
            assert_eq!(
                tokenizer::tokenize(&set.candidates[k]),
                case["tokenized_results"][&key].as_str().unwrap(),
                "{name}: candidate {key}"
            );
        }
        let scores = set.evaluate(true).unwrap();
        let want = &case["scores"];
        for (metric, got) in [
            ("Bleu_1", scores.bleu1),
            ("Bleu_2", scores.bleu2),
            ("Bleu_3", scores.bleu3),
            ("Bleu_4", scores.bleu4),
            ("ROUGE_L", scores.rouge_l),
            ("CIDEr", scores.cider),
        ] {
            close(
                got,
                want[metric].as_f64().unwrap(),
                1e-9,
                &format!("{name} {metric}"),
            );
        }
        let per = captions::per_image_map(&scores);
        assert_eq!(
            per.len(),
            case["per_image"].as_object().unwrap().len(),
            "{name}"
        );
        for (id, s) in per {
            let w = &case["per_image"][&id.to_string()];
            for (metric, got) in [
                ("Bleu_1", s.bleu1),
                ("Bleu_2", s.bleu2),
                ("Bleu_3", s.bleu3),
                ("Bleu_4", s.bleu4),
                ("ROUGE_L", s.rouge_l),
                ("CIDEr", s.cider),
            ] {
                close(
                    got,
                    w[metric].as_f64().unwrap(),
                    1e-9,
                    &format!("{name} image {id} {metric}"),
                );
            }
        }
    }
}

#[test]
fn caption_hard_cases_have_the_reference_quirks() {
    let cases = load("captions.json");
    let one = cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "one_image")
        .unwrap();
    let s = CaptionSet::from_json(&one["refs"], &one["results"])
        .unwrap()
        .evaluate(false)
        .unwrap();
    assert_eq!(s.cider, 0.0, "a one-image corpus has CIDEr 0");
    let same = cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "single_reference_identical")
        .unwrap();
    let s = CaptionSet::from_json(&same["refs"], &same["results"])
        .unwrap()
        .evaluate(true)
        .unwrap();
    close(s.cider, 10.0, 1e-12, "identical single reference");
    assert!(s.bleu4 < 1.0 && s.bleu4 > 0.999999999, "{}", s.bleu4);
    let ids = cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "string_ids_and_unused_reference")
        .unwrap();
    let set = CaptionSet::from_json(&ids["refs"], &ids["results"]).unwrap();
    assert_eq!(
        set.ids,
        vec![ImageId::Str("a".into()), ImageId::Str("b".into())]
    );
    assert_eq!(set.images_without_result, 1);
}

#[test]
fn caption_inputs_are_validated() {
    let refs = serde_json::json!({"images": [{"id": 1}, {"id": 2}],
        "annotations": [{"image_id": 1, "caption": "a b"}, {"image_id": 2, "caption": "c"}]});
    let err = |r: &Value, s: Value| CaptionSet::from_json(r, &s).unwrap_err().to_string();
    assert!(
        err(&refs, serde_json::json!([{"image_id": 3, "caption": "x"}]))
            .contains("image id 3 is not in the references")
    );
    assert!(err(
        &refs,
        serde_json::json!([{"image_id": 1, "caption": "x"}, {"image_id": 1, "caption": "y"}])
    )
    .contains("duplicate image id 1"));
    assert!(err(&refs, serde_json::json!([])).contains("empty"));
    assert!(err(&refs, serde_json::json!({"image_id": 1})).contains("list"));
    assert!(err(&refs, serde_json::json!([{"image_id": 1}])).contains("caption"));
    let dup = serde_json::json!({"images": [{"id": 1}, {"id": 1}], "annotations": []});
    assert!(
        err(&dup, serde_json::json!([{"image_id": 1, "caption": "x"}]))
            .contains("duplicate image id 1")
    );
    let orphan = serde_json::json!({"images": [{"id": 1}], "annotations": [{"image_id": 9, "caption": "x"}]});
    assert!(err(
        &orphan,
        serde_json::json!([{"image_id": 1, "caption": "x"}])
    )
    .contains("image id 9"));
    let norefs = serde_json::json!({"images": [{"id": 1}], "annotations": []});
    assert!(err(
        &norefs,
        serde_json::json!([{"image_id": 1, "caption": "x"}])
    )
    .contains("no reference caption"));
    // Files: empty file and bad JSON name the file.
    let dir = tempfile::tempdir().unwrap();
    let (r, s) = (dir.path().join("refs.json"), dir.path().join("res.json"));
    std::fs::write(&r, "").unwrap();
    std::fs::write(&s, "[]").unwrap();
    let e = CaptionSet::load(&r, &s).unwrap_err().to_string();
    assert!(e.contains("refs.json") && e.contains("empty"), "{e}");
    std::fs::write(&r, refs.to_string()).unwrap();
    std::fs::write(&s, "[{").unwrap();
    let e = CaptionSet::load(&r, &s).unwrap_err().to_string();
    assert!(e.contains("res.json") && e.contains("invalid JSON"), "{e}");
    std::fs::write(&s, r#"[{"image_id": 5, "caption": "x"}]"#).unwrap();
    let e = CaptionSet::load(&r, &s).unwrap_err().to_string();
    assert!(e.contains("res.json") && e.contains("image id 5"), "{e}");
}

#[test]
fn fid_matches_pytorch_fid_and_kid_matches_torch_fidelity_formula() {
    let f = load("fid.json");
    for case in f["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let a = npy::read(&fixtures().join(case["real"].as_str().unwrap())).unwrap();
        let b = npy::read(&fixtures().join(case["fake"].as_str().unwrap())).unwrap();
        let exact = fid::fid(&a, &b, FidMode::Exact).unwrap();
        let want = case["fid_scipy_sqrtm"].as_f64().unwrap();
        if name == "identical" {
            close(exact.fid, 0.0, 1e-9, name);
        } else {
            rel_close(
                exact.fid,
                want,
                1e-7,
                &format!("{name} exact ({})", exact.method),
            );
            // The statistics path (eigh) agrees too.
            let s = fid::fid_from_stats(
                &Stats::from_features(&a).unwrap(),
                &Stats::from_features(&b).unwrap(),
                FidMode::Exact,
            )
            .unwrap();
            rel_close(s.fid, want, 1e-7, &format!("{name} exact (eigh)"));
        }
        // pytorch-fid mode: the retry value where SciPy <= 1.15 failed, else the plain one.
        let compat = fid::fid(&a, &b, FidMode::PytorchFid).unwrap();
        let legacy_failed = case["legacy"]["sqrtm_failed"].as_bool().unwrap_or(false);
        assert_eq!(compat.eps_retry, legacy_failed, "{name}: retry decision");
        if legacy_failed {
            rel_close(
                compat.fid,
                case["fid_eps_retry"].as_f64().unwrap(),
                1e-7,
                &format!("{name} pytorch-fid retry"),
            );
            rel_close(compat.without_retry.unwrap(), want, 1e-7, name);
        } else if name != "identical" {
            rel_close(compat.fid, want, 1e-7, &format!("{name} pytorch-fid"));
        }
        // KID: the full-set estimator and one given subset.
        let kid_full = case["kid_full"].as_f64().unwrap();
        let k = fid::kid(&a, &b, 2, a.rows.min(b.rows) / 2, 0).unwrap();
        rel_close(k.full, kid_full, 1e-9, &format!("{name} kid_full"));
        let idx = |key: &str| -> Vec<usize> {
            case[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect()
        };
        let sub = fid::kid_subset(
            &a,
            &b,
            &idx("kid_subset_idx_real"),
            &idx("kid_subset_idx_fake"),
        )
        .unwrap();
        rel_close(
            sub,
            case["kid_subset"].as_f64().unwrap(),
            1e-9,
            &format!("{name} kid subset"),
        );
    }
}

#[test]
fn stats_round_trip_and_numpy_npz() {
    let dir = tempfile::tempdir().unwrap();
    let a = npy::read(&fixtures().join("full_rank_real.npy")).unwrap();
    let s = Stats::from_features(&a).unwrap();
    let path = dir.path().join("real_stats.npz");
    s.save(&path).unwrap();
    let back = Stats::load(&path).unwrap();
    assert_eq!(back, s);
    let numpy = Stats::load(&fixtures().join("stats_numpy.npz")).unwrap();
    assert_eq!(numpy.dim, 4);
    assert_eq!(numpy.sigma[5], 2.0);
    let e = Stats::load(&dir.path().join("missing.npz"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.npz"), "{e}");
}

#[test]
fn npy_reader_reads_what_numpy_writes() {
    let f8 = npy::read(&fixtures().join("npy_f8.npy")).unwrap();
    let want: Vec<f64> = (0..12).map(|v| v as f64 / 8.0 - 0.5).collect();
    assert_eq!((f8.rows, f8.cols), (3, 4));
    assert_eq!(f8.data, want);
    let f4 = npy::read(&fixtures().join("npy_f4_fortran.npy")).unwrap();
    assert_eq!(f4.data, want, "Fortran order is transposed back");
    assert_eq!(f4.dtype, "f4");
    let be = npy::read(&fixtures().join("npy_be_f8.npy")).unwrap();
    assert_eq!(be.data, want);
    let i8 = npy::read(&fixtures().join("npy_i8_1d.npy")).unwrap();
    assert_eq!(
        (i8.rows, i8.cols, i8.data.clone()),
        (3, 1, vec![3.0, -1.0, 7.0])
    );
    let b = npy::read(&fixtures().join("npy_bool.npy")).unwrap();
    assert_eq!(b.data, vec![1.0, 0.0, 0.0, 1.0]);
    let e = npy::read(&fixtures().join("captions.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("captions.json") && e.contains("magic"), "{e}");
}

#[test]
fn retrieval_matches_numpy_and_sklearn() {
    let f = load("retrieval.json");
    let s = npy::read(&fixtures().join("retrieval_similarity.npy")).unwrap();
    let rel = retrieval::parse_relevant(&f["relevant"]).unwrap();
    let r = retrieval::evaluate(&s, &rel).unwrap();
    let ranks: Vec<usize> = f["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(r.ranks, ranks);
    for (k, got) in [
        ("R@1", r.r1),
        ("R@5", r.r5),
        ("R@10", r.r10),
        ("medr", r.medr),
        ("meanr", r.meanr),
        ("mAP", r.map),
    ] {
        close(got, f[k].as_f64().unwrap(), 1e-12, k);
    }
}

fn check_class_report(r: &classification::ClassificationReport, w: &Value, what: &str) {
    for (k, c) in r.classes.iter().enumerate() {
        close(
            c.precision,
            w["precision"][k].as_f64().unwrap(),
            1e-12,
            &format!("{what} P[{k}]"),
        );
        close(
            c.recall,
            w["recall"][k].as_f64().unwrap(),
            1e-12,
            &format!("{what} R[{k}]"),
        );
        close(
            c.f1,
            w["f1"][k].as_f64().unwrap(),
            1e-12,
            &format!("{what} F1[{k}]"),
        );
        assert_eq!(c.support as u64, w["support"][k].as_u64().unwrap());
        assert_eq!(
            c.ap.is_some(),
            !w["ap"][k].is_null(),
            "{what} AP[{k}] defined"
        );
        if let Some(ap) = c.ap {
            close(
                ap,
                w["ap"][k].as_f64().unwrap(),
                1e-12,
                &format!("{what} AP[{k}]"),
            );
        }
        assert_eq!(
            c.auroc.is_some(),
            !w["auroc"][k].is_null(),
            "{what} AUROC[{k}] defined"
        );
        if let Some(a) = c.auroc {
            close(
                a,
                w["auroc"][k].as_f64().unwrap(),
                1e-12,
                &format!("{what} AUROC[{k}]"),
            );
        }
    }
    for (name, a) in [
        ("macro", r.macro_avg),
        ("micro", r.micro_avg),
        ("weighted", r.weighted_avg),
    ]
    .into_iter()
    .chain(r.samples_avg.map(|s| ("samples", s)))
    {
        let v = &w["averages"][name];
        close(
            a.precision,
            v[0].as_f64().unwrap(),
            1e-12,
            &format!("{what} {name} P"),
        );
        close(
            a.recall,
            v[1].as_f64().unwrap(),
            1e-12,
            &format!("{what} {name} R"),
        );
        close(
            a.f1,
            v[2].as_f64().unwrap(),
            1e-12,
            &format!("{what} {name} F1"),
        );
    }
}

#[test]
fn classification_matches_sklearn() {
    let f = load("classification.json");
    let m = &f["multi"];
    let s = npy::read(&fixtures().join(m["scores"].as_str().unwrap())).unwrap();
    let y = npy::read(&fixtures().join(m["labels"].as_str().unwrap())).unwrap();
    let r = classification::evaluate(&s, &y, 0.5, None).unwrap();
    assert_eq!(r.task, "multi-label");
    check_class_report(&r, m, "multi");
    close(
        r.accuracy,
        m["subset_accuracy"].as_f64().unwrap(),
        1e-15,
        "subset accuracy",
    );
    assert_eq!(serde_json::to_value(&r.confusion).unwrap(), m["confusion"]);
    let single = &f["single"];
    let s = npy::read(&fixtures().join(single["scores"].as_str().unwrap())).unwrap();
    let y = npy::read(&fixtures().join(single["labels"].as_str().unwrap())).unwrap();
    let r = classification::evaluate(&s, &y, 0.5, None).unwrap();
    assert_eq!(r.task, "single-label");
    check_class_report(&r, single, "single");
    close(
        r.accuracy,
        single["accuracy"].as_f64().unwrap(),
        1e-15,
        "accuracy",
    );
    assert_eq!(
        serde_json::to_value(&r.confusion[0]).unwrap(),
        single["confusion"]
    );
    // Shape and value errors.
    let short = npy::Matrix::new(3, 1, vec![0.0, 1.0, 2.0]).unwrap();
    assert!(classification::evaluate(&s, &short, 0.5, None)
        .unwrap_err()
        .to_string()
        .contains("labels have 3"));
}

#[test]
fn segmentation_matches_numpy_mmseg_convention() {
    let f = load("segmentation.json");
    let k = f["num_classes"].as_u64().unwrap() as usize;
    let mut cm = Confusion::new(k, Some(f["ignore_index"].as_u64().unwrap() as u32)).unwrap();
    let flat = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
            })
            .collect()
    };
    for (p, g) in f["preds"]
        .as_array()
        .unwrap()
        .iter()
        .zip(f["gts"].as_array().unwrap())
    {
        cm.add(&flat(p), &flat(g)).unwrap();
    }
    let s = cm.scores().unwrap();
    assert_eq!(serde_json::to_value(&s.confusion).unwrap(), f["confusion"]);
    for (name, got) in [("IoU", &s.iou), ("Dice", &s.dice), ("Acc", &s.acc)] {
        for (c, v) in got.iter().enumerate() {
            match v {
                None => assert!(f[name][c].is_null(), "{name}[{c}]"),
                Some(x) => close(
                    *x,
                    f[name][c].as_f64().unwrap(),
                    1e-12,
                    &format!("{name}[{c}]"),
                ),
            }
        }
    }
    for (name, got) in [
        ("mIoU", s.miou),
        ("mDice", s.mdice),
        ("mAcc", s.macc),
        ("aAcc", s.aacc),
    ] {
        close(got, f[name].as_f64().unwrap(), 1e-12, name);
    }
}
