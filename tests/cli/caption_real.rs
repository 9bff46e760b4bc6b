//! `insar-mm train caption --annotations` / `eval caption --annotations` on real Hephaestus
//! annotations (the 33 bundled in `tests/fixtures/hephaestus-sample`): images rendered to
//! match them and cached, real captions (typos included) as the training text, `--data`
//! images matched by uniqueID, a stratified `--annotation-limit`, and bad input.

use std::path::{Path, PathBuf};

use insar_mm::text::tokenizer::{CaptionTokenizer, TokenizerConfig};
use serde_json::Value;

use crate::support::*;

/// The fixture's annotations as JSON values, by uniqueID.
fn fixture() -> std::collections::BTreeMap<u64, Value> {
    std::fs::read_dir(Path::new(SAMPLE).join("annotations"))
        .unwrap()
        .map(|e| {
            let v = json(&e.unwrap().path());
            (v["uniqueID"].as_u64().unwrap(), v)
        })
        .collect()
}

const TRAIN: &[&str] = &[
    "train",
    "caption",
    "--steps",
    "2",
    "--batch-size",
    "4",
    "--image-size",
    "32",
];

fn train_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = TRAIN.to_vec();
    v.extend_from_slice(extra);
    v
}

#[test]
fn trains_on_real_captions_with_cached_renders_and_matched_data() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cli = Cli::with(&[("INSAR_MM_CACHE", s(&cache))]);
    let run = tmp.path().join("run");
    let (_, err) = cli.ok_with_stderr(&train_args(&["--annotations", SAMPLE, "--out", s(&run)]));
    assert!(err.contains("rendered 33 frames"), "{err}");
    let cfg = json(&run.join("config.json"));
    let source = &cfg["data"]["source"];
    assert_eq!(source["kind"], "rendered_from_annotations", "{source}");
    assert_eq!(source["annotations"]["loaded"], 33);
    assert_eq!(source["annotations"]["used"], 33);
    let images = PathBuf::from(source["images"].as_str().unwrap());
    assert!(images.starts_with(&cache), "{}", images.display());
    assert_eq!(
        listing(&cache),
        vec![images.file_name().unwrap().to_str().unwrap().to_string()]
    );

    // The training text is exactly the real captions of the train split (typos, double
    // spaces and all): the run's tokenizer equals one trained on them.
    let real = fixture();
    let split = json(&images.join("split.json"));
    let train_ids: Vec<u64> = split["train"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(!train_ids.is_empty());
    let mut sorted = train_ids.clone();
    sorted.sort_unstable();
    let captions: Vec<String> = sorted
        .iter()
        .map(|id| real[id]["caption"].as_str().unwrap().to_string())
        .collect();
    for id in &sorted {
        // The rendered annotation keeps the real caption byte for byte.
        let made = json(&images.join("annotations").join(format!("{id}.json")));
        assert_eq!(made["caption"], real[id]["caption"], "uniqueID {id}");
    }
    assert!(
        captions
            .iter()
            .any(|c| c.contains("wake-like") || c.contains("atmosphreic")),
        "a real typo is among the training captions"
    );
    let expected = CaptionTokenizer::train(&captions, &TokenizerConfig::default()).unwrap();
    let got = CaptionTokenizer::from_file(&run.join("tokenizer.json")).unwrap();
    assert_eq!(got.to_json().unwrap(), expected.to_json().unwrap());

    // A second run reuses the renders: nothing rendered, the cache unchanged.
    let marker = images.join("synth.json");
    let stamp = std::fs::metadata(&marker).unwrap().modified().unwrap();
    let (_, err) = cli.ok_with_stderr(&train_args(&[
        "--annotations",
        SAMPLE,
        "--out",
        s(&tmp.path().join("run2")),
    ]));
    assert!(!err.contains("rendered 33 frames"), "{err}");
    assert_eq!(
        std::fs::metadata(&marker).unwrap().modified().unwrap(),
        stamp
    );
    assert_eq!(listing(&cache).len(), 1);

    // eval caption on the run finds the same cached images and says where captions came from.
    let (out, _) = cli.ok_with_stderr(&[
        "eval",
        "caption",
        "--model",
        s(&run),
        "--split",
        "train",
        "--json",
    ]);
    let ev: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ev["data"], s(&images));
    assert_eq!(ev["images"], train_ids.len());
    assert_eq!(ev["source"]["kind"], "rendered_from_annotations");

    // A stratified subset is a different cache entry, with the class mix kept: every class
    // of the fixture (by its rarest label) that fits is present.
    let run3 = tmp.path().join("run3");
    let (_, err) = cli.ok_with_stderr(&train_args(&[
        "--annotations",
        SAMPLE,
        "--annotation-limit",
        "20",
        "--out",
        s(&run3),
    ]));
    assert!(err.contains("rendered 20 frames"), "{err}");
    assert_eq!(listing(&cache).len(), 2);
    let cfg3 = json(&run3.join("config.json"));
    assert_eq!(cfg3["data"]["annotation_limit"], 20);
    assert_eq!(cfg3["data"]["source"]["annotations"]["used"], 20);

    // --data DIR + --annotations PATH: images of DIR, captions of PATH by uniqueID. PATH
    // holds 5 of DIR's annotations with new captions, and one uniqueID DIR lacks.
    let ann = tmp.path().join("ann");
    std::fs::create_dir_all(&ann).unwrap();
    let chosen: Vec<u64> = sorted.iter().copied().take(5).collect();
    for (k, id) in chosen.iter().enumerate() {
        let mut v = real[id].clone();
        v["caption"] = Value::from(format!("Zzquux  pattern number {k}. Zzquux again. "));
        std::fs::write(ann.join(format!("{id}.json")), v.to_string()).unwrap();
    }
    let mut stray = real[&chosen[0]].clone();
    stray["uniqueID"] = Value::from(990_001u64);
    std::fs::write(ann.join("990001.json"), stray.to_string()).unwrap();
    let run4 = tmp.path().join("run4");
    let (_, err) = cli.ok_with_stderr(&train_args(&[
        "--data",
        s(&images),
        "--annotations",
        s(&ann),
        "--out",
        s(&run4),
    ]));
    assert!(
        err.contains("5 of 6 annotations") && err.contains("matched"),
        "{err}"
    );
    let cfg4 = json(&run4.join("config.json"));
    assert_eq!(cfg4["data"]["source"]["kind"], "annotations_with_data");
    assert_eq!(cfg4["data"]["source"]["matched"], 5);
    let tok = CaptionTokenizer::from_file(&run4.join("tokenizer.json")).unwrap();
    // The new word was learnt as one token: [BOS] zzquux [EOS].
    assert_eq!(tok.encode("Zzquux", None).unwrap().len(), 3);
    assert_eq!(listing(&cache).len(), 2, "--data renders nothing");

    // The same with a raw-frame folder (no annotations/): matched by the files' location.
    let raw = tmp.path().join("raw");
    copy_dir(&images, &raw);
    std::fs::remove_dir_all(raw.join("annotations")).unwrap();
    std::fs::remove_file(raw.join("split.json")).unwrap();
    let (_, err) = cli.ok_with_stderr(&train_args(&[
        "--data",
        s(&raw),
        "--annotations",
        SAMPLE,
        "--out",
        s(&tmp.path().join("run5")),
    ]));
    assert!(err.contains("33 of 33 annotations"), "{err}");

    // Nothing matches: a clear error naming both paths.
    let lone = tmp.path().join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::write(lone.join("990001.json"), stray.to_string()).unwrap();
    let err = cli.fails(
        &train_args(&[
            "--data",
            s(&images),
            "--annotations",
            s(&lone),
            "--out",
            s(&tmp.path().join("run6")),
        ]),
        1,
    );
    assert!(
        err.contains("none of the 1 annotations matches") && err.contains(s(&lone)),
        "{err}"
    );
}

#[test]
fn bad_annotation_input_gives_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cli = Cli::with(&[("INSAR_MM_CACHE", s(&cache))]);
    let out = tmp.path().join("run");
    // An empty folder.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = cli.fails(
        &train_args(&["--annotations", s(&empty), "--out", s(&out)]),
        1,
    );
    assert!(
        err.contains("--annotations") && err.contains("no annotation *.json files"),
        "{err}"
    );
    // Annotations whose captions are all blank.
    let blank = tmp.path().join("blank");
    std::fs::create_dir_all(&blank).unwrap();
    for (id, mut v) in fixture().into_iter().take(3) {
        v["caption"] = Value::from("   ");
        std::fs::write(blank.join(format!("{id}.json")), v.to_string()).unwrap();
    }
    let err = cli.fails(
        &train_args(&["--annotations", s(&blank), "--out", s(&out)]),
        1,
    );
    assert!(
        err.contains("none of the 3 annotations has a caption") && err.contains(s(&blank)),
        "{err}"
    );
    // A file without a caption field: the strict loader names the file and the field.
    let (id, mut v) = fixture().into_iter().next().unwrap();
    v.as_object_mut().unwrap().remove("caption");
    std::fs::write(blank.join(format!("{id}.json")), v.to_string()).unwrap();
    let err = cli.fails(
        &train_args(&["--annotations", s(&blank), "--out", s(&out)]),
        1,
    );
    assert!(
        err.contains(&format!("{id}.json")) && err.contains("caption"),
        "{err}"
    );
    // A missing path, and a limit without annotations.
    let err = cli.fails(
        &train_args(&[
            "--annotations",
            s(&tmp.path().join("nope")),
            "--out",
            s(&out),
        ]),
        1,
    );
    assert!(err.contains("nope"), "{err}");
    let err = cli.fails(
        &train_args(&["--annotation-limit", "5", "--out", s(&out)]),
        1,
    );
    assert!(
        err.contains("annotation_limit") || err.contains("--annotations"),
        "{err}"
    );
    assert!(!out.exists(), "no run directory for refused input");
    assert!(!cache.exists(), "nothing rendered for refused input");
}
