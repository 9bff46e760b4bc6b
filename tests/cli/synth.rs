//! End-to-end tests of the synthetic generator: `insar-mm data synth` (determinism across
//! thread counts, strict loading, `--from-annotations` on the bundled real sample, bad
//! input), `data gallery`, the in-memory stream, and labels against the physics.

use std::path::Path;

use insar_mm::data::annotation::{ActivityType, Intensity};
use insar_mm::data::dataset::DatasetDir;
use insar_mm::data::frames::{load_input, InputFormat};
use insar_mm::data::loader::{load_annotations, LoadOptions};
use insar_mm::data::png::Png;
use insar_mm::data::sample::SampleSource;
use insar_mm::synth::captions::CaptionStyle;
use insar_mm::synth::generate::{los_field, render_scene, Overrides};
use insar_mm::synth::los::los_vector;
use insar_mm::synth::phase::{
    deformation_mask, fringes_and_intensity, intensity_for_fringes, MaskRule,
};
use insar_mm::synth::scene::SceneConfig;
use insar_mm::synth::stream::SyntheticStream;

use crate::support::*;

#[test]
fn same_seed_gives_identical_bytes_on_one_and_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let args = |out: &Path, seed: &'static str| {
        vec![
            "data".to_string(),
            "synth".into(),
            "--out".into(),
            out.display().to_string(),
            "--frames".into(),
            "16".into(),
            "--size".into(),
            "96x80".into(),
            "--seed".into(),
            seed.into(),
            "--float-phase".into(),
            "-q".into(),
        ]
    };
    let run = |out: &Path, seed, threads| {
        let v = args(out, seed);
        let v: Vec<&str> = v.iter().map(String::as_str).collect();
        Cli::with(&[("RAYON_NUM_THREADS", threads)]).ok(&v)
    };
    run(&a, "7", "1");
    run(&b, "7", "2");
    run(&c, "8", "2");
    let (ta, tb, tc) = (snapshot(&a), snapshot(&b), snapshot(&c));
    assert_eq!(ta.len(), 16 * 4, "{:?}", ta.keys().collect::<Vec<_>>());
    assert!(ta == tb, "same seed, different bytes across thread counts");
    assert_ne!(ta, tc, "another seed gives the same data");

    // Every annotation loads with the strict loader; the dataset checks clean.
    let set = load_annotations(&a.join("annotations"), LoadOptions { skip_bad: false }).unwrap();
    assert_eq!(set.len(), 16);
    assert!(set
        .annotations
        .iter()
        .all(|x| x.inconsistencies().is_empty()));
    ok(&["data", "check", a.to_str().unwrap(), "-q"]);
    // The .npy float phase lies in (−π, π] or is NaN (no data).
    let npy = ta.keys().find(|p| p.ends_with(".npy")).unwrap();
    let (h, w, data) = insar_mm::synth::render::read_phase_npy(&a.join(npy)).unwrap();
    assert_eq!((h, w), (96, 80), "(width, height)");
    assert!(data
        .iter()
        .all(|v| v.is_nan() || (-std::f32::consts::PI..=std::f32::consts::PI + 1e-6).contains(v)));

    // Refuses to overwrite without --force.
    let v = args(&a, "7");
    let v: Vec<&str> = v.iter().map(String::as_str).collect();
    let err = fails(&v, 1);
    assert!(err.contains("--force"), "{err}");

    // The gallery draws a contact sheet of the frames.
    let sheet = tmp.path().join("sheet.png");
    ok(&[
        "data",
        "gallery",
        a.to_str().unwrap(),
        "--out",
        sheet.to_str().unwrap(),
        "--count",
        "6",
        "--columns",
        "3",
        "--patch",
        "64",
    ]);
    let png = Png::read(&sheet).unwrap();
    assert_eq!(png.width, 4 + 3 * 68);
    assert!(png.height > 2 * 68);
}

#[test]
fn labels_intensities_and_masks_agree_with_the_physics() {
    let config = SceneConfig {
        width: 64,
        height: 64,
        crowd_rate: 0.3,
        ..SceneConfig::default()
    };
    let mut counts = [0usize; 4];
    for i in 0..300 {
        let scene = config.scene(11, i);
        let r = render_scene(&scene, CaptionStyle::default(), &Overrides::default()).unwrap();
        let a = &r.annotation;
        // The annotation round-trips through the strict parser.
        let back =
            insar_mm::data::annotation::parse_annotation(a.to_json_pretty().as_bytes()).unwrap();
        assert_eq!(&back, a);
        assert!(a.inconsistencies().is_empty(), "{:?}", a.inconsistencies());
        assert_eq!(a.deformations().len(), r.patterns.len());
        assert_eq!(a.is_crowd, u8::from(r.patterns.len() > 1));
        let mut want = [0.0f32; 10];
        if !r.patterns.is_empty() {
            want[0] = 1.0;
        }
        let los = los_vector(scene.frame.heading_deg, scene.frame.incidence_deg);
        for (p, d) in r.patterns.iter().zip(a.deformations()) {
            assert_eq!(p.activity, d.activity);
            want[p.activity.label_index()] = 1.0;
            assert!(p.fringes >= 1.0, "a labelled pattern shows a whole fringe");
            assert_eq!(p.intensity, intensity_for_fringes(p.fringes));
            if p.activity == ActivityType::Earthquake {
                assert_eq!(d.intensity, Intensity::None);
            } else {
                assert_eq!(d.intensity, p.intensity);
                want[p.intensity.label_index().unwrap()] = 1.0;
                counts[p.intensity.label_index().unwrap() - 7] += 1;
            }
            // Independent recomputation at full resolution from the scaled source (the
            // valid mask is the measured one unless a processing error removed data later).
            if scene.nuisance.processing_error != 0 {
                continue;
            }
            let d_los = los_field(
                &p.source,
                insar_mm::synth::grid::Geometry::new(64, 64, 370.0),
                los,
                1,
            );
            let m = deformation_mask(
                &d_los,
                Some(&r_valid_land(&r)),
                64,
                64,
                &MaskRule::default(),
            );
            let (n, _) = fringes_and_intensity(&d_los, &m);
            assert!(
                (n - p.fringes).abs() <= 0.1 * p.fringes + 0.05,
                "fringes {n} vs {}",
                p.fringes
            );
            // The polygon covers the measured mask.
            let poly = insar_mm::data::raster::rasterize(64, 64, [(1u8, d.polygon.unwrap())]);
            let inside = p
                .mask
                .iter()
                .zip(&poly.data)
                .filter(|(&m, &q)| m && q != 0)
                .count();
            let total = p.mask.iter().filter(|&&m| m).count();
            assert!(
                inside as f64 >= 0.9 * total as f64,
                "polygon covers {inside} of {total} mask pixels"
            );
        }
        assert_eq!(a.label_vector(), want, "uniqueID {}", a.unique_id);
        counts[3] += usize::from(!r.patterns.is_empty());
    }
    // Every intensity occurs, and enough positives to learn from.
    assert!(counts.iter().all(|&c| c > 15), "{counts:?}");
}

/// Valid pixels used for the mask: land inside the frame (the render's valid mask before
/// corruption, which never coexists with deformation).
fn r_valid_land(r: &insar_mm::synth::generate::Rendered) -> Vec<bool> {
    r.valid.clone()
}

#[test]
fn from_annotations_reproduces_labels_and_keeps_real_captions() {
    let sample = sample_dir().join("annotations");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("from");
    let stdout = Cli::with(&[("RAYON_NUM_THREADS", "2")]).ok(&[
        "data",
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--from-annotations",
        sample.to_str().unwrap(),
        "--size",
        "128x128",
        "-q",
    ]);
    let real = load_annotations(&sample, LoadOptions::default()).unwrap();
    let made = load_annotations(&out.join("annotations"), LoadOptions::default()).unwrap();
    assert_eq!(made.len(), real.len());
    let mut matched = 0;
    for r in &real.annotations {
        let m = made.get(r.unique_id).unwrap();
        assert_eq!(m.caption, r.caption, "the real caption is kept");
        assert_eq!(
            (&m.frame_id, m.primary_date, m.secondary_date),
            (&r.frame_id, r.primary_date, r.secondary_date)
        );
        matched += usize::from(insar_mm::synth::generate::labels_match(r, m));
    }
    assert!(
        matched as f64 >= 0.9 * real.len() as f64,
        "{matched} of {}: {stdout}",
        real.len()
    );
    // The frames are loadable model input.
    let ds = DatasetDir::open(&out, LoadOptions::default()).unwrap();
    for a in ds.annotations.annotations.iter().take(3) {
        let input = load_input(&ds.files(a).unwrap(), InputFormat::PhaseCoherence).unwrap();
        assert_eq!((input.image.channels, input.image.height), (2, 128));
    }
}

#[test]
fn stream_matches_what_the_loader_reads_from_disk() {
    let config = SceneConfig {
        width: 48,
        height: 40,
        ..SceneConfig::default()
    };
    let stream = SyntheticStream::new(config.clone(), 3, 5).unwrap();
    assert_eq!(stream.len(), 5);
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..5 {
        let r = stream.render(i).unwrap();
        r.write(tmp.path(), false).unwrap();
    }
    let ds = DatasetDir::open(tmp.path(), LoadOptions::default()).unwrap();
    // The stream's input format is the default (cos/sin decoded from the colours).
    let frames = ds
        .frame_samples(InputFormat::default(), None, None)
        .unwrap();
    for i in 0..5 {
        let s = stream.get(i).unwrap();
        let pos = frames
            .items
            .iter()
            .position(|(a, _)| a.unique_id.to_string() == s.id)
            .unwrap();
        let d = frames.get(pos).unwrap();
        assert_eq!(s.image, d.image);
        assert_eq!(s.mask.as_ref().unwrap().data, d.mask.as_ref().unwrap().data);
        assert_eq!(s.labels, d.labels);
        assert_eq!(s.caption, d.caption);
    }
    assert!(stream.get(5).is_err());
    assert!(SyntheticStream::new(
        SceneConfig {
            pixel_m: -1.0,
            ..config
        },
        0,
        1
    )
    .is_err());
}

#[test]
fn bad_options_are_usage_errors_naming_the_option() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("x");
    let o = o.to_str().unwrap();
    for (args, code, needle) in [
        (
            vec!["data", "synth", "--out", o, "--size", "10x10"],
            2,
            "16..=8192",
        ),
        (
            vec!["data", "synth", "--out", o, "--size", "big"],
            2,
            "WIDTHxHEIGHT",
        ),
        (
            vec!["data", "synth", "--out", o, "--classes", "volcano=1"],
            2,
            "unknown class",
        ),
        (
            vec!["data", "synth", "--out", o, "--pixel-m", "0"],
            1,
            "pixel size",
        ),
        (
            vec![
                "data",
                "synth",
                "--out",
                o,
                "--from-annotations",
                "/nonexistent/annotations",
            ],
            1,
            "/nonexistent/annotations",
        ),
        (vec!["data", "synth"], 2, "--out"),
    ] {
        let err = fails(&args, code);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
