//! End-to-end tests of `insar-mm data ...` through the binary, on the real Hephaestus
//! annotations (`../shared/data/hephaestus/`, skipped with a note when absent), the bundled
//! 33-file sample, and generated raw frames (random PNGs + polygons).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use insar_mm::data::annotation::{
    ActivityType, Annotation, Date, Intensity, Label, Phase, Polygon,
};
use insar_mm::data::array::ClassMask;
use insar_mm::data::dataset::DatasetDir;
use insar_mm::data::frames::{InputFormat, InterferogramFiles};
use insar_mm::data::loader::{load_annotations, LoadOptions};
use insar_mm::data::patches::PatchLabel;
use insar_mm::data::png::{write_png, Png, PngColor};
use insar_mm::data::raster::annotation_mask;
use insar_mm::data::sample::SampleSource;
use insar_mm::data::split::{Part, Split};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::support::*;

#[test]
fn stats_on_the_real_tarball_match_the_readme_counts() {
    let Some(tarball) = real_tarball() else {
        return;
    };
    let json: Value = ok_json(&["data", "stats", s(&tarball), "--json"]);
    assert_eq!(json["annotations"], 19_919);
    assert_eq!(json["bad_files"].as_array().unwrap().len(), 0);
    let labels = &json["label_sets"];
    assert_eq!(labels["Non_Deformation"], 18_100);
    assert_eq!(labels["Deformation"], 1_764);
    assert_eq!(labels["Deformation,Earthquake"], 40);
    assert_eq!(labels["Earthquake"], 15);
    let types = &json["activity_type_interferograms"];
    for (name, n) in [
        ("Sill", 1176),
        ("Dyke", 469),
        ("Mogi", 326),
        ("Earthquake", 55),
        ("Unidentified", 51),
        ("Spheroid", 25),
    ] {
        assert_eq!(types[name], n, "{name}");
    }
    let intensity = &json["intensity_interferograms"];
    for (name, n) in [("Low", 843), ("Medium", 495), ("High", 642)] {
        assert_eq!(intensity[name], n, "{name}");
    }
    assert_eq!(json["captions"]["distinct"], 1_374);
    // Facts from notes/hephaestus.md.
    assert_eq!(json["frames"], 38);
    assert_eq!(json["label_vector"]["Deformation"], 1_819);
    assert_eq!(json["phase"]["Rebound"], 134);
    assert_eq!(json["flags"]["processing_error"]["3"], 324);
    assert_eq!(json["captions"]["vocabulary"], 186);
    assert_eq!(json["captions"]["max_words"], 96);
    assert_eq!(json["temporal_baseline_days"]["median"], 24);
    assert_eq!(json["primary_dates"]["first"], "2014-10-07");
    assert_eq!(json["inconsistencies"].as_array().unwrap().len(), 2);
}

#[test]
fn every_real_annotation_round_trips_losslessly() {
    let Some(tarball) = real_tarball() else {
        return;
    };
    let set = load_annotations(&tarball, LoadOptions::default()).unwrap();
    assert_eq!(set.len(), 19_919);
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(&tarball).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut checked = 0;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
        let original: Value = serde_json::from_str(&text).unwrap();
        let uid = original["uniqueID"].as_u64().unwrap();
        let ann = set.get(uid).unwrap();
        let written: Value = serde_json::from_str(&ann.to_json_pretty()).unwrap();
        assert_eq!(original, written, "{name} changes when written back");
        checked += 1;
    }
    assert_eq!(checked, 19_919);
}

#[test]
fn directory_zip_and_tarball_give_the_same_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(sample_dir().join("annotations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 33);
    let tgz = tmp.path().join("a.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&tgz).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        for f in &files {
            tar.append_path_with_name(f, Path::new("annotations").join(f.file_name().unwrap()))
                .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }
    let zip_path = tmp.path().join("a.zip");
    {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        for f in &files {
            let name = format!("annotations/{}", f.file_name().unwrap().to_string_lossy());
            zip.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            std::io::Write::write_all(&mut zip, &std::fs::read(f).unwrap()).unwrap();
        }
        zip.finish().unwrap();
    }
    let stats = |p: &Path| {
        let mut v: Value = ok_json(&["data", "stats", s(p), "--json"]);
        v.as_object_mut().unwrap().remove("source");
        v
    };
    // A dataset directory (annotations/ inside) works as well as the annotation folder.
    let from_dir = stats(&sample_dir());
    assert_eq!(from_dir["annotations"], 33);
    assert_eq!(from_dir, stats(&sample_dir().join("annotations")));
    assert_eq!(from_dir, stats(&tgz));
    assert_eq!(from_dir, stats(&zip_path));
    // The table form mentions the irregular files.
    let table = ok(&["data", "stats", s(&sample_dir())]);
    assert!(
        table.contains("uniqueID 850") && table.contains("uniqueID 6176"),
        "{table}"
    );
}

/// A copy of the bundled sample with `uniqueID` 1000 replaced by `edit(json)`.
fn sample_with(edit: impl Fn(&mut Value)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("annotations");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(sample_dir().join("annotations")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    let path = dir.join("1000.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    tmp
}

#[test]
fn malformed_annotations_fail_naming_the_file_and_field() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|v| v["label"] = Value::from(5)), "label"),
        (
            Box::new(|v| v["corrupted"] = Value::from("no")),
            "corrupted",
        ),
        (
            Box::new(|v| v["activity_type"][0] = Value::from("Volcano")),
            "activity_type[0]",
        ),
        (
            Box::new(|v| v["secondary_date"] = Value::from("2019-13-40")),
            "secondary_date",
        ),
        (
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("caption");
            }),
            "caption",
        ),
        (
            Box::new(|v| v["segmentation_mask"][0] = Value::from(vec![1.0, 2.0, 3.0])),
            "segmentation_mask",
        ),
    ];
    for (edit, field) in cases {
        let tmp = sample_with(edit);
        let err = fails(&["data", "stats", s(tmp.path())], 1);
        assert!(err.contains("1000.json"), "{err}");
        assert!(err.contains(field), "{err} should name {field}");
    }
    // Truncated JSON.
    let tmp = sample_with(|_| {});
    let path = tmp.path().join("annotations/1000.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    let err = fails(&["data", "stats", s(tmp.path())], 1);
    assert!(err.contains("1000.json") && err.contains("EOF"), "{err}");
    // Two files with one uniqueID: an error naming both.
    let dup = sample_with(|_| {});
    std::fs::copy(
        dup.path().join("annotations/1000.json"),
        dup.path().join("annotations/copy.json"),
    )
    .unwrap();
    let err = fails(&["data", "stats", s(dup.path())], 1);
    assert!(
        err.contains("copy.json") && err.contains("1000.json") && err.contains("uniqueID 1000"),
        "{err}"
    );
    // --skip-bad carries on and lists the file.
    let json: Value = serde_json::from_str(&ok(&[
        "data",
        "stats",
        s(tmp.path()),
        "--json",
        "--skip-bad",
    ]))
    .unwrap();
    assert_eq!(json["annotations"], 32);
    let bad = json["bad_files"].as_array().unwrap();
    assert_eq!(bad.len(), 1);
    assert!(bad[0]["file"].as_str().unwrap().ends_with("1000.json"));
    // Paths that do not exist or are not annotation sources.
    let err = fails(&["data", "stats", "/nonexistent/annotations.tar.gz"], 1);
    assert!(err.contains("/nonexistent/annotations.tar.gz"), "{err}");
    let not_archive = tmp.path().join("notes.txt");
    std::fs::write(&not_archive, "x").unwrap();
    let err = fails(&["data", "stats", s(&not_archive)], 1);
    assert!(err.contains("notes.txt"), "{err}");
    let broken = tmp.path().join("broken.tar.gz");
    std::fs::write(&broken, b"\x1f\x8b\x08\x00garbage").unwrap();
    let err = fails(&["data", "stats", s(&broken)], 1);
    assert!(err.contains("broken.tar.gz"), "{err}");
}

#[test]
fn usage_errors_exit_with_code_2() {
    let err = fails(&["data", "stats", s(&sample_dir()), "--frobnicate"], 2);
    assert!(err.contains("--frobnicate"), "{err}");
    let err = fails(&["data", "stats"], 2);
    assert!(
        err.contains("<PATH>"),
        "the missing argument is named: {err}"
    );
    let err = fails(&["data", "patches", "--raw", "x"], 2);
    assert!(
        err.contains("--annotations") && err.contains("--out"),
        "{err}"
    );
    fails(
        &["data", "split", s(&sample_dir()), "--fractions", "0.5,0.5"],
        2,
    );
    fails(
        &[
            "data",
            "split",
            s(&sample_dir()),
            "--val-from",
            "2019-02-30",
            "--method",
            "temporal",
        ],
        2,
    );
    let err = fails(
        &[
            "data",
            "split",
            s(&sample_dir()),
            "--fractions",
            "0.5,0.5,0.5",
        ],
        2,
    );
    assert!(err.contains("sum to 1"), "{err}");
    let err = fails(&["data", "split", s(&sample_dir().join("annotations"))], 1);
    assert!(err.contains("--out"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Generated raw frames.

const FRAME_H: usize = 470;
const FRAME_W: usize = 500;

/// Writes a dataset directory with `frames × per_frame` interferograms: random RGB(A)
/// phase previews (some with a transparent no-data band), random coherence, and
/// annotations (60 % deformation with 1–3 star-shaped polygons, some larger than a patch).
fn make_dataset(root: &Path, frames: usize, per_frame: usize, seed: u64) -> Vec<Annotation> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut anns = Vec::new();
    let start = Date::new(2019, 1, 1).unwrap().days_since_epoch();
    for f in 0..frames {
        let frame_id = format!("{:03}A_{:05}_{:06}", 10 + f, 1000 + f, 131313);
        for k in 0..per_frame {
            let uid = (f * per_frame + k + 1) as u64;
            let primary = date_from_days(start + 12 * (k as i64) + 3 * f as i64);
            let secondary = date_from_days(start + 12 * (k as i64 + 1) + 3 * f as i64);
            let deformation = rng.random_bool(0.6);
            let n_poly = if deformation {
                rng.random_range(1..=3)
            } else {
                0
            };
            let mut polygons = Vec::new();
            let mut types = Vec::new();
            let mut intensities = Vec::new();
            for _ in 0..n_poly {
                let big = rng.random_bool(0.15);
                let r_max = if big { 160.0 } else { 40.0 };
                let cx = rng.random_range(r_max..FRAME_W as f64 - r_max);
                let cy = rng.random_range(r_max..FRAME_H as f64 - r_max);
                let n = rng.random_range(5..12);
                let mut verts: Vec<(f64, f64)> = (0..n)
                    .map(|i| {
                        let a = std::f64::consts::TAU * (i as f64 + rng.random_range(0.0..0.8))
                            / n as f64;
                        let r = rng.random_range(0.4 * r_max..r_max);
                        (cx + r * a.cos(), cy + r * a.sin())
                    })
                    .collect();
                verts.dedup();
                polygons.push(Polygon::from_vertices(&verts));
                let t = ActivityType::ALL[rng.random_range(0..ActivityType::ALL.len())];
                types.push(t);
                intensities.push(if t == ActivityType::Earthquake {
                    Intensity::None
                } else {
                    [Intensity::Low, Intensity::Medium, Intensity::High][rng.random_range(0..3)]
                });
            }
            let ann = Annotation {
                unique_id: uid,
                frame_id: frame_id.clone(),
                primary_date: primary,
                secondary_date: secondary,
                corrupted: 0,
                processing_error: 0,
                glacier_fringes: 0,
                orbital_fringes: 0,
                atmospheric_fringes: rng.random_range(0..4),
                low_coherence: 0,
                no_info: 0,
                image_artifacts: 0,
                label: vec![if deformation {
                    Label::Deformation
                } else {
                    Label::NonDeformation
                }],
                activity_type: types,
                intensity_level: intensities,
                phase: if deformation {
                    Phase::Unrest
                } else {
                    Phase::Rest
                },
                confidence: 0.8,
                segmentation_mask: polygons,
                is_crowd: u8::from(n_poly > 1),
                caption: format!("Fixture interferogram {uid}. "),
            };
            ann.write_to(&root.join("annotations")).unwrap();
            write_frame(root, &ann, &mut rng);
            anns.push(ann);
        }
    }
    anns
}

fn date_from_days(days: i64) -> Date {
    // Inverse of days_since_epoch by search (test helper; dates span a few years).
    let mut d = Date::new(2019, 1, 1).unwrap();
    while d.days_since_epoch() < days {
        let next = Date::new(d.year, d.month, d.day + 1)
            .or_else(|_| Date::new(d.year, d.month + 1, 1))
            .or_else(|_| Date::new(d.year + 1, 1, 1))
            .unwrap();
        d = next;
    }
    d
}

fn write_frame(root: &Path, ann: &Annotation, rng: &mut ChaCha8Rng) {
    let files =
        InterferogramFiles::canonical(root, &ann.frame_id, ann.primary_date, ann.secondary_date);
    let with_nodata = ann.unique_id % 3 == 0;
    let n = FRAME_H * FRAME_W;
    let (color, channels) = if with_nodata {
        (PngColor::Rgba, 4)
    } else {
        (PngColor::Rgb, 3)
    };
    let mut phase = vec![0u8; n * channels];
    rng.fill(&mut phase[..]);
    if with_nodata {
        for (i, px) in phase.chunks_exact_mut(4).enumerate() {
            px[3] = if i % FRAME_W < 30 { 0 } else { 255 };
        }
    }
    write_png(&files.phase, FRAME_W, FRAME_H, color, &phase).unwrap();
    let mut cc = vec![0u8; n];
    rng.fill(&mut cc[..]);
    write_png(
        &files.coherence.unwrap(),
        FRAME_W,
        FRAME_H,
        PngColor::Gray,
        &cc,
    )
    .unwrap();
}

/// `data patches` on the dataset `root` (raw frames and annotations) into `out`, quietly.
fn patches_args<'a>(root: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "data",
        "patches",
        "--raw",
        s(root),
        "--annotations",
        s(root),
        "--out",
        s(out),
        "-q",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn patches_follow_save_crops_and_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ds");
    let anns = make_dataset(&root, 5, 3, 11);
    let run = |out: &Path, seed: &str, threads: &str| {
        Cli::with(&[("RAYON_NUM_THREADS", threads)]).ok(&patches_args(
            &root,
            out,
            &["--seed", seed],
        ))
    };
    let out1 = root.join("patches");
    let summary = run(&out1, "7", "1");
    assert!(summary.contains("patches/s"), "{summary}");
    let out2 = tmp.path().join("p2");
    run(&out2, "7", "3");
    let a = snapshot(&out1);
    let b = snapshot(&out2);
    let mut a_files: BTreeMap<&String, &Vec<u8>> = a
        .iter()
        .filter(|(k, _)| !k.ends_with("patches.json"))
        .collect();
    let b_files: BTreeMap<&String, &Vec<u8>> = b
        .iter()
        .filter(|(k, _)| !k.ends_with("patches.json"))
        .collect();
    assert_eq!(
        a_files, b_files,
        "same seed, 1 vs 3 threads: identical files"
    );
    let out3 = tmp.path().join("p3");
    run(&out3, "8", "1");
    let c = snapshot(&out3);
    assert_ne!(
        a.iter()
            .filter(|(k, _)| k.starts_with("cls_labels"))
            .collect::<Vec<_>>(),
        c.iter()
            .filter(|(k, _)| k.starts_with("cls_labels"))
            .collect::<Vec<_>>(),
        "another seed moves the crops"
    );
    assert!(
        !a.keys().any(|k| k.ends_with(".tmp")),
        "no temporary files left"
    );

    // Expected names: tiles for non-deformation, <uid> / <uid>_<k> for deformation.
    let tiles_per_frame = (FRAME_H / 224) * (FRAME_W / 224);
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for ann in &anns {
        if !ann.is_deformation() {
            for i in 0..tiles_per_frame {
                expected.insert(format!("{}_{i}", ann.unique_id));
            }
        } else if ann.segmentation_mask.len() == 1 && ann.is_crowd == 0 {
            expected.insert(ann.unique_id.to_string());
        } else {
            for k in 0..ann.segmentation_mask.len() {
                expected.insert(format!("{}_{k}", ann.unique_id));
            }
        }
    }
    a_files.retain(|k, _| k.starts_with("cls_labels/"));
    let names: BTreeSet<String> = a_files
        .keys()
        .map(|k| {
            k.trim_start_matches("cls_labels/")
                .trim_end_matches(".json")
                .to_string()
        })
        .collect();
    assert_eq!(names, expected);

    // Every crop: the right pixels, the polygon inside, the mask of the full frame.
    let by_id: BTreeMap<u64, &Annotation> = anns.iter().map(|a| (a.unique_id, a)).collect();
    let mut checked = 0;
    for name in &names {
        let label: PatchLabel =
            serde_json::from_slice(&a[&format!("cls_labels/{name}.json")]).unwrap();
        let ann = by_id[&label.unique_id.unwrap()];
        let (top, left) = (label.top.unwrap(), label.left.unwrap());
        let files = InterferogramFiles::locate(&root, ann).unwrap();
        let frame = Png::read(&files.phase).unwrap();
        let cls = match label.polygon {
            Some(k) => ann.deformations()[k].mask_class(),
            None => 0,
        };
        let crop = Png::read(&out1.join(format!("labeled/{cls}/{name}.png"))).unwrap();
        assert_eq!((crop.width, crop.height), (224, 224));
        assert_eq!(
            crop.has_alpha(),
            frame.has_alpha(),
            "{name}: no-data alpha kept"
        );
        let (fg, cg) = (frame.gray(), crop.gray());
        for y in [0, 101, 223] {
            for x in [0, 57, 223] {
                assert_eq!(
                    cg[y * 224 + x],
                    fg[(top + y) * FRAME_W + left + x],
                    "{name} pixel {y},{x}"
                );
            }
        }
        let cc = Png::read(&out1.join(format!("coherence/{cls}/{name}.png"))).unwrap();
        assert_eq!((cc.width, cc.height), (224, 224));
        if let Some(k) = label.polygon {
            let full = annotation_mask(ann, FRAME_H, FRAME_W);
            let mask = Png::read(&out1.join(format!("masks/{cls}/{name}.png")))
                .unwrap()
                .gray();
            let mut ids = BTreeSet::new();
            for y in 0..224 {
                for x in 0..224 {
                    let v = full.get(top + y, left + x);
                    assert_eq!(mask[y * 224 + x], v, "{name} mask at {y},{x}");
                    if v > 0 {
                        ids.insert(v);
                    }
                }
            }
            assert_eq!(label.deformation, ids.into_iter().collect::<Vec<_>>());
            // The whole polygon is inside the crop unless it is larger than the crop.
            let mut own = ClassMask::zeros(FRAME_H, FRAME_W);
            insar_mm::data::raster::fill_polygon(
                &mut own,
                &ann.segmentation_mask[k].integer_vertices(),
                1,
            );
            let (mut y0, mut y1, mut x0, mut x1) = (usize::MAX, 0, usize::MAX, 0);
            for y in 0..FRAME_H {
                for x in 0..FRAME_W {
                    if own.get(y, x) == 1 {
                        (y0, y1, x0, x1) = (y0.min(y), y1.max(y), x0.min(x), x1.max(x));
                    }
                }
            }
            // Per axis: the extent is inside the window, or (larger than the window) the
            // window lies inside the extent.
            for (start, lo, hi) in [(top, y0, y1), (left, x0, x1)] {
                if hi - lo < 224 {
                    assert!(start <= lo && hi < start + 224, "{name} cuts its polygon");
                } else {
                    assert!(
                        start >= lo && start + 224 <= hi + 1,
                        "{name} leaves its large polygon"
                    );
                }
            }
            let expect_int = if cls == 5 {
                3
            } else {
                ann.intensity_of(k).patch_code()
            };
            assert_eq!(label.intensity, expect_int);
        } else {
            assert_eq!(label.deformation, vec![0]);
            assert!(!out1.join(format!("masks/0/{name}.png")).exists());
        }
        checked += 1;
    }
    assert!(checked > 10, "{checked}");

    // The reader: every patch as a 2-channel sample with its mask and the frame's caption.
    let ds = DatasetDir::open(&root, LoadOptions::default()).unwrap();
    let patches = ds.patch_samples(InputFormat::PhaseCoherence, None).unwrap();
    assert_eq!(patches.len(), names.len());
    for i in 0..patches.len() {
        let sample = patches.get(i).unwrap();
        assert_eq!(
            (
                sample.image.channels,
                sample.image.height,
                sample.image.width
            ),
            (2, 224, 224)
        );
        assert!(sample.image.data.iter().all(|v| (0.0..=1.0).contains(v)));
        let mask = sample.mask.unwrap();
        let uid: u64 = sample.id.split('_').next().unwrap().parse().unwrap();
        assert_eq!(
            sample.caption.as_deref(),
            Some(format!("Fixture interferogram {uid}.").as_str())
        );
        let any_class = mask.data.iter().any(|&v| v > 0);
        assert_eq!(sample.labels[0] > 0.5, any_class, "{}", sample.id);
    }
    // Full frames as samples, resized.
    let frames = ds
        .frame_samples(InputFormat::PhaseCoherence, None, Some((112, 120)))
        .unwrap();
    assert_eq!(frames.len(), anns.len());
    assert!(frames.missing.is_empty());
    let first = frames.get(0).unwrap();
    assert_eq!(
        (first.image.channels, first.image.height, first.image.width),
        (2, 112, 120)
    );
    assert_eq!(first.labels, anns[0].label_vector());
}

#[test]
fn missing_or_corrupt_images_fail_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ds");
    let anns = make_dataset(&root, 2, 2, 5);
    let files = InterferogramFiles::locate(&root, &anns[1]).unwrap();
    let good = std::fs::read(&files.phase).unwrap();
    std::fs::write(&files.phase, &good[..good.len() / 3]).unwrap();
    let out = tmp.path().join("out");
    let args = patches_args(&root, &out, &[]);
    let err = fails(&args, 1);
    assert!(
        err.contains(files.phase.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    // --skip-bad: the others are cut, the broken one listed.
    let mut skip = args.to_vec();
    skip.push("--skip-bad");
    ok(&skip);
    let manifest = json(&out.join("patches.json"));
    assert_eq!(manifest["interferograms"], 3);
    assert_eq!(manifest["skipped"].as_array().unwrap().len(), 1);
    // A missing coherence file and a missing frame are named too.
    std::fs::write(&files.phase, &good).unwrap();
    let cc = files.coherence.clone().unwrap();
    std::fs::remove_file(&cc).unwrap();
    let err = fails(&args, 1);
    assert!(
        err.contains(&anns[1].interferogram_name()) && err.contains("coherence"),
        "{err}"
    );
    // Full-frame samples list it as missing instead of failing later.
    let ds = DatasetDir::open(&root, LoadOptions::default()).unwrap();
    let frames = ds
        .frame_samples(InputFormat::PhaseCoherence, None, None)
        .unwrap();
    assert_eq!((frames.len(), frames.missing.len()), (3, 1));
    assert!(frames.missing[0].error.contains("coherence"));
    let phase_only = ds.frame_samples(InputFormat::Phase, None, None).unwrap();
    assert_eq!(phase_only.len(), 4);
    assert_eq!(phase_only.get(0).unwrap().image.channels, 1);
    std::fs::remove_dir_all(files.phase.parent().unwrap()).unwrap();
    let err = fails(&args, 1);
    assert!(
        err.contains(&anns[1].interferogram_name()) && err.contains("no phase image"),
        "{err}"
    );
    let err = fails(
        &[
            "data",
            "patches",
            "--raw",
            "/nonexistent",
            "--annotations",
            s(&root),
            "--out",
            s(&out),
        ],
        1,
    );
    assert!(err.contains("/nonexistent"), "{err}");
}

fn check_split(split: &Split, anns: &[Annotation]) {
    split.validate().unwrap();
    let mut frame_parts: BTreeMap<&str, BTreeSet<Part>> = BTreeMap::new();
    let mut ifg_parts: BTreeMap<(String, String), BTreeSet<Part>> = BTreeMap::new();
    for a in anns {
        let p = split
            .part_of(a.unique_id)
            .expect("every annotation has a part");
        frame_parts.entry(&a.frame_id).or_default().insert(p);
        ifg_parts
            .entry((a.frame_id.clone(), a.interferogram_name()))
            .or_default()
            .insert(p);
    }
    assert_eq!(
        split.train.len() + split.val.len() + split.test.len(),
        anns.len()
    );
    for (ifg, parts) in &ifg_parts {
        assert_eq!(parts.len(), 1, "interferogram {ifg:?} in {parts:?}");
    }
    if matches!(
        split.method,
        insar_mm::data::split::SplitMethod::Frame { .. }
    ) {
        for (frame, parts) in &frame_parts {
            assert_eq!(parts.len(), 1, "frame {frame} leaks into {parts:?}");
        }
    }
    let val: BTreeSet<u64> = split.val.iter().copied().collect();
    assert!(split.test.iter().all(|id| !val.contains(id)));
}

#[test]
fn split_is_deterministic_leak_free_and_keeps_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sources: Vec<PathBuf> = vec![sample_dir().join("annotations")];
    sources.extend(real_tarball());
    for (i, src) in sources.iter().enumerate() {
        let anns = load_annotations(src, LoadOptions::default())
            .unwrap()
            .annotations;
        let out = |name: &str| tmp.path().join(format!("{i}_{name}.json"));
        let (a, b, c) = (out("a"), out("b"), out("c"));
        ok(&["data", "split", s(src), "--out", s(&a), "--seed", "3"]);
        ok(&["data", "split", s(src), "--out", s(&b), "--seed", "3"]);
        ok(&["data", "split", s(src), "--out", s(&c), "--seed", "4"]);
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "same seed, same file"
        );
        let split = Split::read(&a).unwrap();
        check_split(&split, &anns);
        assert_ne!(
            split,
            Split::read(&c).unwrap(),
            "another seed, another split"
        );
        // Every class found in ≥ 3 frames is in every part; the others are reported.
        let mut frames_of: BTreeMap<ActivityType, BTreeSet<&str>> = BTreeMap::new();
        for a in anns.iter().filter(|a| a.is_deformation()) {
            for t in &a.activity_type {
                frames_of.entry(*t).or_default().insert(&a.frame_id);
            }
        }
        for (class, frames) in frames_of {
            let name = class.as_str();
            let present = Part::ALL
                .iter()
                .filter(|p| split.summary[p].activity_types.contains_key(name))
                .count();
            let reported = split.unrepresented.iter().any(|u| u.class == name);
            if frames.len() >= 3 {
                assert_eq!(
                    present,
                    3,
                    "{name} ({} frames) missing from a part",
                    frames.len()
                );
            } else {
                assert!(
                    reported,
                    "{name} in {} frames is not reported",
                    frames.len()
                );
            }
        }
        // Temporal: ordered by primary date, val/test disjoint.
        let t = out("t");
        ok(&[
            "data",
            "split",
            s(src),
            "--out",
            s(&t),
            "--method",
            "temporal",
        ]);
        let ts = Split::read(&t).unwrap();
        check_split(&ts, &anns);
        let max_date = |p: Part| {
            anns.iter()
                .filter(|a| ts.part_of(a.unique_id) == Some(p))
                .map(|a| a.primary_date)
                .max()
        };
        let min_date = |p: Part| {
            anns.iter()
                .filter(|a| ts.part_of(a.unique_id) == Some(p))
                .map(|a| a.primary_date)
                .min()
        };
        if let (Some(tr), Some(v)) = (max_date(Part::Train), min_date(Part::Val)) {
            assert!(tr < v);
        }
        if let (Some(v), Some(te)) = (max_date(Part::Val), min_date(Part::Test)) {
            assert!(v < te);
        }
    }
    // A dataset directory gets split.json inside it, and DatasetDir finds it.
    let tmp_ds = sample_with(|_| {});
    let text = ok(&["data", "split", s(tmp_ds.path())]);
    assert!(text.contains("split written to"), "{text}");
    let ds = DatasetDir::open(tmp_ds.path(), LoadOptions::default()).unwrap();
    let split = ds.require_split().unwrap();
    check_split(&split, &ds.annotations.annotations);
    // Pinned test frames (the reference protocol).
    let pinned = tmp.path().join("pinned.json");
    ok(&[
        "data",
        "split",
        s(&sample_dir()),
        "--out",
        s(&pinned),
        "--test-frames",
        "012D_07075_080504",
    ]);
    assert_eq!(
        Split::read(&pinned).unwrap().frames[&Part::Test],
        vec!["012D_07075_080504".to_string()]
    );
}

/// Patch-extraction throughput on Hephaestus-sized frames (1100×950, smooth fringes rather
/// than noise, so PNG sizes are realistic). Not run by default (it writes ~150 MB):
/// `cargo test --release --test cli -- --ignored --nocapture data::patch_throughput`
/// (`INSAR_MM_BENCH_FRAMES`: number of interferograms, default 240).
#[test]
#[ignore]
fn patch_throughput() {
    let n: usize = std::env::var("INSAR_MM_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(240);
    // INSAR_MM_BENCH_DIR keeps the generated dataset (e.g. for profiling).
    let tmp = tempfile::tempdir().unwrap();
    let base = std::env::var_os("INSAR_MM_BENCH_DIR")
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    let root = base.join("ds");
    let (h, w) = (950, 1100);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let per_frame = 8;
    let mut anns = make_dataset(&root, n.div_ceil(per_frame), per_frame, 3);
    anns.truncate(n);
    for ann in &anns {
        // Replace the small noise frames by large smooth ones.
        let files = InterferogramFiles::canonical(
            &root,
            &ann.frame_id,
            ann.primary_date,
            ann.secondary_date,
        );
        let (cx, cy) = (
            rng.random_range(0.0..w as f64),
            rng.random_range(0.0..h as f64),
        );
        let mut phase = Vec::with_capacity(h * w * 3);
        let mut cc = Vec::with_capacity(h * w);
        for y in 0..h {
            for x in 0..w {
                let r = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
                let p = (r / 25.0).sin();
                phase.extend([
                    (127.5 + 127.0 * p) as u8,
                    (127.5 - 90.0 * p) as u8,
                    (127.5 + 60.0 * (r / 40.0).cos()) as u8,
                ]);
                cc.push(((x + y) % 256) as u8 / 2 + rng.random_range(0..60));
            }
        }
        write_png(&files.phase, w, h, PngColor::Rgb, &phase).unwrap();
        write_png(files.coherence.as_ref().unwrap(), w, h, PngColor::Gray, &cc).unwrap();
    }
    std::fs::remove_dir_all(root.join("annotations")).unwrap();
    for ann in &anns {
        ann.write_to(&root.join("annotations")).unwrap();
    }
    for threads in ["1", "2"] {
        let out = base.join(format!("patches_{threads}"));
        let stdout =
            Cli::with(&[("RAYON_NUM_THREADS", threads)]).ok(&patches_args(&root, &out, &[]));
        println!("RAYON_NUM_THREADS={threads}: {}", stdout.trim());
    }
}

#[test]
fn check_reports_usable_and_broken_interferograms() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ds");
    let anns = make_dataset(&root, 2, 3, 9);
    // An interferogram folder without annotation (the unlabeled pool).
    let extra = InterferogramFiles::canonical(
        &root,
        &anns[0].frame_id,
        Date::new(2021, 3, 1).unwrap(),
        Date::new(2021, 3, 13).unwrap(),
    );
    write_png(&extra.phase, 4, 4, PngColor::Gray, &[0; 16]).unwrap();
    let json: Value = ok_json(&["data", "check", s(&root), "--json", "-q"]);
    assert_eq!(json["ok"], 6);
    assert_eq!(json["problems"].as_array().unwrap().len(), 0);
    assert_eq!(json["unannotated_interferograms"], 1);
    assert_eq!(json["frame_sizes"][format!("{FRAME_H}×{FRAME_W}")], 6);
    let share = json["mean_valid_fraction"].as_f64().unwrap();
    assert!(share > 0.9 && share < 1.0, "{share}");
    // A corrupt coherence image makes the check fail, naming the file.
    let files = InterferogramFiles::locate(&root, &anns[4]).unwrap();
    let cc = files.coherence.unwrap();
    std::fs::write(&cc, b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let out = insar_mm(&["data", "check", s(&root), "-q"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(cc.file_name().unwrap().to_str().unwrap()),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 6"));
    // Without decoding, only presence is checked.
    ok(&["data", "check", s(&root), "--no-decode", "-q"]);
}

/// A tiny gray PNG whose header claims `width`×`height` pixels.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(kind);
        out.extend(data);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend(crc.sum().to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut z, &[0u8; 64]).unwrap();
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn a_png_claiming_a_huge_size_is_reported_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ds");
    let anns = make_dataset(&root, 2, 3, 9);
    let files = InterferogramFiles::locate(&root, &anns[1]).unwrap();
    std::fs::write(&files.phase, png_claiming(100_000, 100_000)).unwrap();
    let name = files.phase.file_name().unwrap().to_str().unwrap();
    let out = insar_mm(&["data", "check", s(&root), "-q"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(name) && stdout.contains("INSAR_MM_MAX_IMAGE_SIDE"),
        "{stdout}"
    );
    // patches --skip-bad skips it with a warning; without, it fails naming the file.
    let out_dir = tmp.path().join("patches");
    ok(&patches_args(&root, &out_dir, &["--skip-bad"]));
    let out_dir = tmp.path().join("patches2");
    let err = fails(&patches_args(&root, &out_dir, &[]), 1);
    assert!(err.contains(name) && err.contains("limit"), "{err}");
    // A raised limit lets the header through; the truncated data then fails decoding.
    let out = Cli::with(&[
        ("INSAR_MM_MAX_IMAGE_SIDE", "100000"),
        ("INSAR_MM_MAX_IMAGE_MB", "1"),
    ])
    .output(&["data", "check", s(&root), "-q"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("INSAR_MM_MAX_IMAGE_MB"), "{stdout}");
}

#[test]
fn dataset_level_json_files_are_not_annotations() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ds");
    synth_dataset(&root, "12", "3");
    // split writes DIR/split.json; stats, check and split again still read DIR.
    ok(&["data", "split", s(&root), "-q"]);
    assert!(root.join("split.json").is_file());
    let stats: Value = ok_json(&["data", "stats", s(&root), "--json", "-q"]);
    let n = load_annotations(&root.join("annotations"), LoadOptions::default())
        .unwrap()
        .len();
    assert!(n > 0);
    assert_eq!(stats["annotations"], n, "{stats}");
    ok(&["data", "check", s(&root), "-q"]);
    ok(&["data", "split", s(&root), "-q"]);
    // Any other JSON at the top of a dataset directory (not one of the suite's own files).
    std::fs::write(root.join("notes.json"), "{\"who\": \"me\"}").unwrap();
    let stats: Value = ok_json(&["data", "stats", s(&root), "--json", "-q"]);
    assert_eq!(stats["annotations"], n, "{stats}");
    ok(&["data", "check", s(&root), "-q"]);
    // Files at the top of a flat annotation folder too.
    let flat = tmp.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    for e in std::fs::read_dir(root.join("annotations")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), flat.join(e.file_name())).unwrap();
    }
    for f in ["split.json", "synth.json", "patches.json", "config.json"] {
        std::fs::write(flat.join(f), "{}").unwrap();
    }
    let stats: Value = ok_json(&["data", "stats", s(&flat), "--json", "-q"]);
    assert_eq!(stats["annotations"], n);
    // DIR/annotations.tar.gz is read by stats as by check and split.
    let tarred = tmp.path().join("tarred");
    std::fs::create_dir(&tarred).unwrap();
    let status = Command::new("tar")
        .args([
            "-czf",
            s(&tarred.join("annotations.tar.gz")),
            "-C",
            s(&root),
            "annotations",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(tarred.join("split.json"), "{}").unwrap();
    std::fs::write(tarred.join("notes.json"), "{}").unwrap();
    let stats: Value = ok_json(&["data", "stats", s(&tarred), "--json", "-q"]);
    assert_eq!(stats["annotations"], n);
    // --skip-bad never turns "nothing loaded" into success.
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("1.json"), "{}").unwrap();
    std::fs::write(bad.join("2.json"), "[").unwrap();
    let err = fails(&["data", "stats", s(&bad), "--skip-bad", "-q"], 1);
    assert!(err.contains("none of the 2 annotation files"), "{err}");
}

#[test]
fn patches_bound_the_size_and_refuse_foreign_output_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ds");
    synth_dataset(&root, "12", "3");
    let out = tmp.path().join("patches");
    for size in ["0", "1", "15", "100000"] {
        let err = fails(&patches_args(&root, &out, &["--size", size]), 1);
        assert!(
            err.contains("--size") && err.contains("16..=16384"),
            "{err}"
        );
    }
    assert!(!out.exists());
    // A second run into its own folder replaces the patches: files and patches.json agree.
    ok(&patches_args(&root, &out, &["--size", "32"]));
    let first = count_pngs(&out.join("labeled"));
    let manifest: Value = json(&out.join("patches.json"));
    let listed =
        manifest["deformation_patches"].as_u64().unwrap() + manifest["tiles"].as_u64().unwrap();
    assert_eq!(first as u64, listed);
    // Legal but small: said on stderr (the patch-size warning starts below 64).
    let mut args = patches_args(&root, &out, &["--size", "48"]);
    args.retain(|a| *a != "-q");
    let (_, stderr) = Cli::default().ok_with_stderr(&args);
    assert!(stderr.contains("patches this small"), "{stderr}");
    let manifest: Value = json(&out.join("patches.json"));
    let listed =
        manifest["deformation_patches"].as_u64().unwrap() + manifest["tiles"].as_u64().unwrap();
    assert_eq!(count_pngs(&out.join("labeled")) as u64, listed);
    assert_ne!(listed as usize, first);
    // A non-empty folder that is not a patch folder (here the dataset itself) is refused
    // without --force, and left as it was.
    let before = count_pngs(&root);
    let err = fails(&patches_args(&root, &root, &["--size", "32"]), 1);
    assert!(
        err.contains("not a patch folder") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(count_pngs(&root), before);
    assert!(!root.join("labeled").exists());
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    ok(&patches_args(&root, &other, &["--size", "32", "--force"]));
    assert_eq!(
        std::fs::read_to_string(other.join("notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(count_pngs(&other.join("labeled")), first);
}
