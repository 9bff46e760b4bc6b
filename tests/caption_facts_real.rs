//! The caption fact parser (`insar_mm_eval::captions::facts`) against the labels: every real
//! Hephaestus caption (`../shared/data/hephaestus/annotations.tar.gz`, skipped with a note
//! when absent) compared with its own annotation, and synthetic captions written from known
//! facts by `synth::captions`.
//!
//! `cargo test --release --test caption_facts_real -- --nocapture` prints the agreement
//! table of `docs/results/captioning.md`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use insar_mm::data::annotation::{ActivityType, Annotation, Intensity, Label};
use insar_mm::data::loader::{load_annotations, LoadOptions};
use insar_mm::synth::captions::{
    caption, cell_of, CaptionFacts as SynthFacts, CaptionStyle, PatternFact,
};
use insar_mm::synth::scene::stream_rng;
use insar_mm_eval::captions::facts::{
    parse_facts, Activity, CellSet, DeformationStatus, Level, ParsedFacts, ProcessingError,
};
use rand::Rng;

fn real_tarball() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/hephaestus/annotations.tar.gz");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "note: {} is absent; skipping the real-caption agreement test",
            path.display()
        );
        None
    }
}

fn activity(a: ActivityType) -> Activity {
    match a {
        ActivityType::Mogi => Activity::Mogi,
        ActivityType::Dyke => Activity::Dyke,
        ActivityType::Sill => Activity::Sill,
        ActivityType::Spheroid => Activity::Spheroid,
        ActivityType::Earthquake => Activity::Earthquake,
        ActivityType::Unidentified => Activity::Unidentified,
    }
}

fn level(i: Intensity) -> Option<Level> {
    match i {
        Intensity::Low => Some(Level::Low),
        Intensity::Medium => Some(Level::Medium),
        Intensity::High => Some(Level::High),
        Intensity::None => None,
    }
}

/// The facts compared: name, value in the annotation, value in the parsed caption.
fn compared(a: &Annotation, f: &ParsedFacts) -> Vec<(String, bool, bool)> {
    let mut out = vec![(
        "deformation".to_string(),
        a.label.iter().any(|l| *l != Label::NonDeformation),
        f.has_deformation(),
    )];
    for t in Activity::ALL {
        out.push((
            format!("type {}", t.name()),
            a.activity_type.iter().any(|&x| activity(x) == t),
            f.activities.contains(&t),
        ));
    }
    for l in Level::ALL {
        out.push((
            format!("intensity {}", l.name()),
            a.intensity_level.iter().any(|&x| level(x) == Some(l)),
            f.intensities.contains(&l),
        ));
    }
    let af = a.atmospheric_fringes;
    for (name, want, got) in [
        ("turbulent", af == 2 || af == 3, f.turbulent),
        ("stratified", af == 1 || af == 3, f.stratified),
        ("low coherence", a.low_coherence != 0, f.low_coherence),
        (
            "processing error",
            a.processing_error != 0,
            f.processing_error.is_some(),
        ),
        ("orbital", a.orbital_fringes != 0, f.orbital),
        ("glacier", a.glacier_fringes != 0, f.glacier),
        ("corrupted", a.corrupted != 0, f.corrupted),
        ("no info", a.no_info != 0, f.no_info),
        ("image artifacts", a.image_artifacts != 0, f.artifacts),
    ] {
        out.push((name.to_string(), want, got));
    }
    out
}

#[test]
fn real_captions_agree_with_their_annotations() {
    let Some(path) = real_tarball() else { return };
    let set = load_annotations(&path, LoadOptions::default()).unwrap();
    let anns = &set.annotations;
    assert!(anns.len() > 19_000, "{}", anns.len());
    let t0 = std::time::Instant::now();
    let parsed: Vec<ParsedFacts> = anns.iter().map(|a| parse_facts(&a.caption)).collect();
    let secs = t0.elapsed().as_secs_f64();
    // name → (agree, label positives, caption positives, both, examples of disagreement)
    let mut rows: Vec<(String, usize, usize, usize, usize, Vec<String>)> = Vec::new();
    for (a, f) in anns.iter().zip(&parsed) {
        for (k, (name, want, got)) in compared(a, f).into_iter().enumerate() {
            if rows.len() <= k {
                rows.push((name.clone(), 0, 0, 0, 0, Vec::new()));
            }
            let r = &mut rows[k];
            r.1 += usize::from(want == got);
            r.2 += usize::from(want);
            r.3 += usize::from(got);
            r.4 += usize::from(want && got);
            if want != got && r.5.len() < 3 {
                r.5.push(format!(
                    "uniqueID {}: labels say {want}, caption says {got}: {:?}",
                    a.unique_id, a.caption
                ));
            }
        }
    }
    // Pattern count among captions and labels that both have deformation.
    let (mut count_ok, mut count_n) = (0usize, 0usize);
    for (a, f) in anns.iter().zip(&parsed) {
        if f.has_deformation() && !a.activity_type.is_empty() {
            count_n += 1;
            count_ok += usize::from(f.pattern_count == a.activity_type.len());
        }
    }
    let n = anns.len();
    println!("parsed {n} real captions in {secs:.3} s; agreement with the annotation flags:\n");
    println!(
        "| fact | agreement | labelled | stated in caption | caption recall | caption precision |"
    );
    println!("|---|---|---|---|---|---|");
    let ratio = |a: usize, b: usize| {
        if b == 0 {
            "–".to_string()
        } else {
            format!("{:.4}", a as f64 / b as f64)
        }
    };
    for (name, agree, want, got, both, _) in &rows {
        println!(
            "| {name} | {:.4} | {want} | {got} | {} | {} |",
            *agree as f64 / n as f64,
            ratio(*both, *want),
            ratio(*both, *got)
        );
    }
    println!(
        "| pattern count (both deformation) | {} | {count_n} | | | |",
        ratio(count_ok, count_n)
    );
    println!("\nexamples of disagreement (caption vs labels):");
    for (name, _, _, _, _, ex) in &rows {
        for e in ex.iter().take(2) {
            println!("  [{name}] {e}");
        }
    }
    // Floors: measured agreement minus a margin (the remaining disagreements are captions
    // that contradict their own labels).
    for (name, agree, ..) in &rows {
        let a = *agree as f64 / n as f64;
        let floor = match name.as_str() {
            "deformation" => 0.995,
            "turbulent" => 0.985,
            "stratified" => 0.99,
            _ => 0.995,
        };
        assert!(a >= floor, "{name}: agreement {a:.4} < {floor}");
    }
    assert!(
        count_ok as f64 >= 0.99 * count_n as f64,
        "{count_ok}/{count_n}"
    );
}

fn random_facts(rng: &mut impl Rng) -> SynthFacts {
    let mut f = SynthFacts {
        atmospheric: rng.random_range(0..4),
        low_coherence: rng.random_bool(0.3),
        processing_error: [0, 0, 0, 0, 2, 3][rng.random_range(0..6)],
        orbital: rng.random_bool(0.1),
        glacier: rng.random_bool(0.1),
        artifacts: rng.random_bool(0.1),
        baseline_days: rng.random_range(6..100),
        ..Default::default()
    };
    let cell = |rng: &mut dyn rand::RngCore| (rng.random_range(0..3), rng.random_range(0..3));
    f.noise_cells = (0..rng.random_range(0..4)).map(|_| cell(rng)).collect();
    f.turbulence_cells = (0..rng.random_range(0..4)).map(|_| cell(rng)).collect();
    f.stratified_cells = (0..rng.random_range(0..4)).map(|_| cell(rng)).collect();
    let n = [0, 0, 1, 1, 1, 2, 3, 4][rng.random_range(0..8)];
    for _ in 0..n {
        let activity = ActivityType::ALL[rng.random_range(0..ActivityType::ALL.len())];
        let intensity = if activity == ActivityType::Earthquake {
            Intensity::None
        } else {
            [Intensity::Low, Intensity::Medium, Intensity::High][rng.random_range(0..3)]
        };
        f.patterns.push(PatternFact {
            activity,
            intensity,
            centroid: (rng.random::<f64>(), rng.random::<f64>()),
        });
    }
    f.noise_in_deformation = n > 0 && rng.random_bool(0.2);
    f
}

/// The cells the parser reads for the synthetic name of `cell`: "top" / "at the bottom" name
/// the whole row, the other names one cell.
fn read_cells(cell: (usize, usize)) -> CellSet {
    match cell {
        (0, 1) => CellSet::row(0),
        (2, 1) => CellSet::row(2),
        (r, c) => CellSet::cell(r, c),
    }
}

#[test]
fn synthetic_captions_give_back_their_facts() {
    let mut rng = stream_rng(20, 0);
    let mut typo_checked = 0;
    for k in 0..4000u64 {
        let mut facts = random_facts(&mut rng);
        if k % 97 == 0 {
            facts.corrupted = true;
        } else if k % 89 == 0 {
            facts.no_info = true;
        }
        let clean = caption(&facts, CaptionStyle::clean(), &mut stream_rng(k, 1));
        let p = parse_facts(&clean);
        let ctx = format!("{clean:?} from {facts:?}\nparsed {p:?}");
        if facts.corrupted || facts.no_info {
            assert_eq!(p.deformation, DeformationStatus::NoInformation, "{ctx}");
            assert_eq!((p.corrupted, p.no_info), (facts.corrupted, facts.no_info));
            continue;
        }
        let types: BTreeSet<Activity> = facts
            .patterns
            .iter()
            .map(|q| activity(q.activity))
            .collect();
        let levels: BTreeSet<Level> = facts
            .patterns
            .iter()
            .filter_map(|q| level(q.intensity))
            .collect();
        let present = !facts.patterns.is_empty();
        assert_eq!(p.has_deformation(), present, "{ctx}");
        assert_eq!(p.activities, types, "{ctx}");
        assert_eq!(p.intensities, levels, "{ctx}");
        // With volcanic patterns the generator names only the first earthquake ("A
        // deformation pattern caused by an earthquake can also be detected …").
        let quakes = facts
            .patterns
            .iter()
            .filter(|q| q.activity == ActivityType::Earthquake)
            .count();
        let stated = if quakes > 1 && quakes < facts.patterns.len() {
            facts.patterns.len() - quakes + 1
        } else {
            facts.patterns.len()
        };
        assert_eq!(p.pattern_count, stated, "{ctx}");
        assert_eq!(p.turbulent, facts.atmospheric >= 2, "{ctx}");
        assert_eq!(p.stratified, facts.atmospheric % 2 == 1, "{ctx}");
        assert_eq!(p.low_coherence, facts.low_coherence, "{ctx}");
        assert_eq!(p.noise_in_deformation, facts.noise_in_deformation, "{ctx}");
        assert_eq!(
            p.processing_error,
            match facts.processing_error {
                2 => Some(ProcessingError::Debursting),
                3 => Some(ProcessingError::SwathMerging),
                _ => None,
            },
            "{ctx}"
        );
        assert_eq!(
            (p.orbital, p.glacier, p.artifacts),
            (facts.orbital, facts.glacier, facts.artifacts),
            "{ctx}"
        );
        if facts.patterns.len() == 1 {
            let q = &facts.patterns[0];
            assert_eq!(
                p.cells,
                read_cells(cell_of(q.centroid.0, q.centroid.1)),
                "{ctx}"
            );
        } else if present {
            // Crowds: leftmost/rightmost are relative and long lists are cut to three names,
            // so only a location is required.
            assert!(!p.cells.is_empty(), "{ctx}");
        } else {
            assert!(p.cells.is_empty(), "{ctx}");
        }
        // The default style: typos and stray spaces.
        if present {
            let noisy = caption(
                &facts,
                CaptionStyle {
                    typo_rate: 1.0,
                    ..CaptionStyle::default()
                },
                &mut stream_rng(k, 2),
            );
            let q = parse_facts(&noisy);
            let ctx = format!("{noisy:?}\nparsed {q:?}");
            assert!(q.has_deformation(), "{ctx}");
            assert_eq!(q.activities, types, "{ctx}");
            assert_eq!(q.intensities, levels, "{ctx}");
            typo_checked += 1;
        }
    }
    assert!(typo_checked > 1000, "{typo_checked}");
}
