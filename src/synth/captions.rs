//! Captions in the Hephaestus style, written from the labels and from where things lie in
//! the frame.
//!
//! The real captions (`notes/hephaestus.md` §3) follow a fixed sentence order:
//! `[noise / low coherence] [atmosphere] [deformation count, types, intensity, location]
//! [notes on noise in the deformation zone] [quality flags]`. Non-deformation captions are
//! almost always one of a few templates chosen by the flags; deformation captions are freer,
//! name locations on a 3×3 grid of the *full frame* ("bottom-right side of the region",
//! "at the bottom of the image", "wider area"), count patterns ("Two deformation patterns
//! can be detected …"), and carry the real formatting noise: trailing spaces, double spaces
//! and occasional typos. Every choice here is drawn from the RNG passed in, so a caption is
//! a pure function of the facts and the seed.

use rand::seq::IndexedRandom;
use rand::Rng;

use crate::data::annotation::{ActivityType, Intensity};

/// A cell of the 3×3 location grid, `(row, col)` with row 0 at the top.
pub type Cell = (usize, usize);

/// The cell of a point given as fractions of the frame (x right, y down, both in [0, 1]).
pub fn cell_of(x: f64, y: f64) -> Cell {
    let k = |v: f64| ((v * 3.0).floor().clamp(0.0, 2.0)) as usize;
    (k(y), k(x))
}

/// One deformation pattern as the caption sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternFact {
    pub activity: ActivityType,
    pub intensity: Intensity,
    /// Centroid of the pattern's polygon as fractions of the frame (x right, y down).
    pub centroid: (f64, f64),
}

/// What a caption is written from: the annotation flags plus where the signals lie.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CaptionFacts {
    pub corrupted: bool,
    pub no_info: bool,
    /// 0 none, 2 debursting, 3 swath merging.
    pub processing_error: u8,
    pub glacier: bool,
    pub orbital: bool,
    pub artifacts: bool,
    /// 0 none, 1 stratified, 2 turbulent, 3 both.
    pub atmospheric: u8,
    pub low_coherence: bool,
    pub patterns: Vec<PatternFact>,
    /// Cells where coherence is low (noise).
    pub noise_cells: Vec<Cell>,
    /// Cells where the turbulent delay is strongest.
    pub turbulence_cells: Vec<Cell>,
    /// Cells where the stratified delay is strongest (high relief).
    pub stratified_cells: Vec<Cell>,
    /// Dense fringes decorrelated inside a deformation zone.
    pub noise_in_deformation: bool,
    pub baseline_days: i64,
}

/// Formatting noise of the real captions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptionStyle {
    /// Probability of one typo in a deformation caption (real: a few %).
    pub typo_rate: f64,
    /// Probability of a trailing space (real: ≈ 90 %).
    pub trailing_space_rate: f64,
}

impl Default for CaptionStyle {
    fn default() -> Self {
        Self {
            typo_rate: 0.03,
            trailing_space_rate: 0.6,
        }
    }
}

impl CaptionStyle {
    /// No typos, no stray spaces (for tests and clean corpora).
    pub fn clean() -> Self {
        Self {
            typo_rate: 0.0,
            trailing_space_rate: 0.0,
        }
    }
}

/// Typos that occur in the real captions: `(correct, misspelt)`.
const TYPOS: [(&str, &str); 8] = [
    ("atmospheric", "atmoshperic"),
    ("deformation", "deforamtion"),
    ("right", "rigth"),
    ("bottom", "botton"),
    ("central", "cenrtal"),
    ("mixing", "mixign"),
    ("altitude", "altitutde"),
    ("detected", "deteced"),
];

fn cell_name((r, c): Cell) -> &'static str {
    [
        ["top-left", "top", "top-right"],
        ["central-left", "central", "central-right"],
        ["bottom-left", "bottom", "bottom-right"],
    ][r][c]
}

fn number_word(n: usize) -> &'static str {
    match n {
        2 => "Two",
        3 => "Three",
        4 => "Four",
        5 => "Five",
        _ => "Several",
    }
}

/// Joins `["a", "b", "c"]` as "a, b and c".
fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Location words for a set of cells: "wider area" when they cover most of the frame,
/// otherwise up to three cell names, coarsened to a side ("left", "right", "top", "bottom")
/// when a whole column or row is covered.
fn cells_phrase(cells: &[Cell], rng: &mut impl Rng) -> Option<String> {
    let mut cells: Vec<Cell> = cells.to_vec();
    cells.sort();
    cells.dedup();
    if cells.is_empty() {
        return None;
    }
    if cells.len() >= 6 {
        return Some("wider area".into());
    }
    let mut names: Vec<&str> = Vec::new();
    let mut used = vec![false; cells.len()];
    // Whole columns / rows first.
    for (side, members) in [
        ("left", [(0, 0), (1, 0), (2, 0)]),
        ("right", [(0, 2), (1, 2), (2, 2)]),
        ("top", [(0, 0), (0, 1), (0, 2)]),
        ("bottom", [(2, 0), (2, 1), (2, 2)]),
    ] {
        let idx: Vec<usize> = members
            .iter()
            .filter_map(|m| cells.iter().position(|c| c == m))
            .collect();
        if idx.len() == 3 && idx.iter().all(|&i| !used[i]) {
            names.push(side);
            for i in idx {
                used[i] = true;
            }
        }
    }
    for (i, &c) in cells.iter().enumerate() {
        if !used[i] {
            names.push(cell_name(c));
        }
    }
    if names.len() > 3 {
        // Keep a random three, in grid order, as annotators do not list everything.
        let mut keep: Vec<usize> = (0..names.len()).collect();
        while keep.len() > 3 {
            let k = rng.random_range(0..keep.len());
            keep.remove(k);
        }
        names = keep.into_iter().map(|i| names[i]).collect();
    }
    Some(join_and(&names))
}

fn type_word(a: ActivityType) -> &'static str {
    match a {
        ActivityType::Mogi => "mogi",
        ActivityType::Dyke => "dyke",
        ActivityType::Sill => "sill",
        ActivityType::Spheroid => "spheroid",
        ActivityType::Earthquake => "earthquake",
        ActivityType::Unidentified => "unidentified",
    }
}

fn intensity_word(i: Intensity) -> &'static str {
    match i {
        Intensity::Low => "low",
        Intensity::Medium => "medium",
        Intensity::High => "high",
        Intensity::None => "unknown",
    }
}

/// "on the bottom-right side of the region", "at the bottom of the image", …
fn location_of_cell(cell: Cell, rng: &mut impl Rng) -> String {
    let name = cell_name(cell);
    match cell {
        (1, 1) => [
            "on the central side",
            "close to the center",
            "on the central side of the region",
        ]
        .choose(rng)
        .map(|s| s.to_string())
        .unwrap_or_default(),
        (2, 1) => [
            "at the bottom of the image",
            "on the bottom side of the region",
        ]
        .choose(rng)
        .map(|s| s.to_string())
        .unwrap_or_default(),
        _ => match rng.random_range(0..4) {
            0 => format!("on the {name} side"),
            1 => format!("in {name} side of the region"),
            _ => format!("on the {name} side of the region"),
        },
    }
}

fn verb(rng: &mut impl Rng) -> &'static str {
    if rng.random_bool(0.75) {
        "can be detected"
    } else {
        "is detected"
    }
}

/// The article and type phrase of one pattern: "A sill-type", "An unidentified", "An earthquake".
fn pattern_head(a: ActivityType) -> String {
    match a {
        ActivityType::Unidentified => "An unidentified".into(),
        ActivityType::Earthquake => "An earthquake".into(),
        other => format!("A {}-type", type_word(other)),
    }
}

fn single_pattern_sentence(p: &PatternFact, rng: &mut impl Rng) -> String {
    let loc = location_of_cell(cell_of(p.centroid.0, p.centroid.1), rng);
    match p.activity {
        ActivityType::Earthquake => {
            format!("An earthquake deformation pattern {} {loc}.", verb(rng))
        }
        a => format!(
            "{} deformation pattern of {} intensity {} {loc}.",
            pattern_head(a),
            intensity_word(p.intensity),
            verb(rng)
        ),
    }
}

/// "a sill-type of high intensity" (lower-case article, for lists).
fn short_pattern(p: &PatternFact) -> String {
    let head = pattern_head(p.activity);
    let head = format!("{}{}", head[..1].to_lowercase(), &head[1..]);
    if p.activity == ActivityType::Earthquake {
        format!("{head} pattern")
    } else {
        format!("{head} of {} intensity", intensity_word(p.intensity))
    }
}

fn multi_pattern_sentences(patterns: &[&PatternFact], rng: &mut impl Rng) -> Vec<String> {
    let n = patterns.len();
    let cells: Vec<Cell> = patterns
        .iter()
        .map(|p| cell_of(p.centroid.0, p.centroid.1))
        .collect();
    let area = cells_phrase(&cells, rng);
    let mut out = Vec::new();
    let same = patterns
        .iter()
        .all(|p| p.activity == patterns[0].activity && p.intensity == patterns[0].intensity);
    if same && patterns[0].activity != ActivityType::Earthquake && rng.random_bool(0.6) {
        let loc = area
            .map(|a| format!(" on the {a} side of the region"))
            .unwrap_or_default();
        out.push(format!(
            "{} {}-type deformation patterns of {} intensity {}{loc}.",
            number_word(n),
            type_word(patterns[0].activity),
            intensity_word(patterns[0].intensity),
            if rng.random_bool(0.75) {
                "can be detected"
            } else {
                "are detected"
            },
        ));
        return out;
    }
    let count = match (&area, rng.random_bool(0.5)) {
        (Some(a), true) if a != "wider area" => {
            format!(
                "{} deformation patterns can be detected on the {a} side.",
                number_word(n)
            )
        }
        _ => format!("{} deformation patterns can be detected.", number_word(n)),
    };
    out.push(count);
    // Order left to right and describe with leftmost/rightmost, or by location.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| patterns[a].centroid.0.total_cmp(&patterns[b].centroid.0));
    if n == 2 && rng.random_bool(0.5) {
        let (l, r) = (patterns[order[0]], patterns[order[1]]);
        let (a, b) = (short_pattern(l), short_pattern(r));
        out.push(format!(
            "{}{} on the leftmost and {b} on the rightmost.",
            a[..1].to_uppercase(),
            &a[1..]
        ));
    } else {
        let parts: Vec<String> = order
            .iter()
            .map(|&i| {
                let c = cells[i];
                let loc = match c {
                    (2, 1) => "at the bottom".to_string(),
                    (1, 1) => "close to the center".to_string(),
                    _ => format!("in the {} side", cell_name(c)),
                };
                format!("{} is located {loc}", short_pattern(patterns[i]))
            })
            .collect();
        let s = join_and(&parts.iter().map(String::as_str).collect::<Vec<_>>());
        out.push(format!(
            "{}{} of the image, respectively.",
            s[..1].to_uppercase(),
            &s[1..]
        ));
    }
    out
}

fn noise_sentence(facts: &CaptionFacts, rng: &mut impl Rng) -> String {
    match cells_phrase(&facts.noise_cells, rng) {
        Some(w) if w == "wider area" => ["Noise can be detected on the wider area.", "Noise is covering the wider part of the region due to low coherence."]
            .choose(rng)
            .map(|s| s.to_string())
            .unwrap_or_default(),
        Some(loc) => match rng.random_range(0..4) {
            0 => format!("Noise can be detected on the {loc} side."),
            1 => format!("Noise can be detected on the {loc} side of the area."),
            2 => format!("Noisy areas caused by low coherence can be detected on the {loc} side of the region."),
            _ => format!("Noise caused by low coherence can be detected on the {loc} side."),
        },
        None => "Noisy areas can be detected due to low coherence.".into(),
    }
}

fn turbulence_sentence(facts: &CaptionFacts, also: bool, rng: &mut impl Rng) -> String {
    let loc = cells_phrase(&facts.turbulence_cells, rng).unwrap_or_else(|| "wider area".into());
    let what = if rng.random_bool(0.1) {
        "A wave-like pattern caused by atmospheric delays"
    } else {
        "Turbulent mixing effect"
    };
    let verb = if also {
        if rng.random_bool(0.5) {
            "can also be detected"
        } else {
            "is also detected"
        }
    } else {
        verb(rng)
    };
    if loc == "wider area" {
        format!("{what} {verb} on the wider area of the region.")
    } else if also {
        format!("{what} {verb} on the {loc} side.")
    } else {
        format!("{what} {verb} on the {loc} side of the region.")
    }
}

fn stratification_sentence(facts: &CaptionFacts, also: bool, rng: &mut impl Rng) -> String {
    let verb = if also {
        "can also be detected"
    } else {
        verb(rng)
    };
    match cells_phrase(&facts.stratified_cells, rng) {
        Some(loc) if loc != "wider area" && rng.random_bool(0.5) => {
            format!("Vertical stratification effect {verb} on the {loc} side of the region.")
        }
        _ => [
            format!(
                "Vertical stratification effect {verb} on the high altitude areas of the region."
            ),
            format!("Vertical stratification {verb} in high altitude areas of the region."),
        ]
        .choose(rng)
        .cloned()
        .unwrap_or_default(),
    }
}

fn quality_sentences(facts: &CaptionFacts) -> Vec<&'static str> {
    let mut out = Vec::new();
    match facts.processing_error {
        3 => out.push(
            "The image has a processing error related to swath merging. Missing information.",
        ),
        2 => out.push(" The image has a processing error during the debursting step."),
        _ => {}
    }
    if facts.orbital {
        out.push("Orbital fringes detected. Difficulties in extracting information.");
    }
    if facts.glacier {
        out.push("Glacier fringes are detected on image.");
    }
    if facts.artifacts {
        out.push("Image artifacts are detected on image.");
    }
    out
}

/// A non-deformation caption: the real templates, chosen by the flags.
fn non_deformation(facts: &CaptionFacts, rng: &mut impl Rng) -> Vec<String> {
    let mut s: Vec<String> = Vec::new();
    match facts.atmospheric {
        1 => s.push("Vertical stratification caused by atmospheric delays can be detected in high altitude  areas.".into()),
        2 => s.push("Turbulent mixing effect or wave-like patterns caused by liquid and solid particles of the atmosphere can be detected around the area.".into()),
        3 => s.push("Vertical stratification and turbulent mixing effects can be detected around the area.".into()),
        _ => {}
    }
    if facts.low_coherence {
        if s.is_empty() {
            s.push("Noisy areas can be detected due to low coherence.".into());
        } else {
            s.push("Also, noisy areas can be detected due to low coherence.".into());
        }
    }
    // A few real non-deformation captions locate the atmosphere instead.
    if facts.atmospheric == 3 && !facts.low_coherence && rng.random_bool(0.03) {
        s.clear();
        s.push(stratification_sentence(facts, false, rng));
        s.push(turbulence_sentence(facts, true, rng));
    }
    s.push("No deformation activity can be detected.".into());
    s
}

fn deformation(facts: &CaptionFacts, rng: &mut impl Rng) -> Vec<String> {
    let mut s: Vec<String> = Vec::new();
    if facts.low_coherence {
        s.push(noise_sentence(facts, rng));
    }
    match facts.atmospheric {
        1 => s.push(stratification_sentence(facts, false, rng)),
        2 => s.push(turbulence_sentence(facts, false, rng)),
        3 => {
            if rng.random_bool(0.5) {
                s.push(stratification_sentence(facts, false, rng));
                s.push(turbulence_sentence(facts, true, rng));
            } else {
                s.push(turbulence_sentence(facts, false, rng));
                s.push(stratification_sentence(facts, true, rng));
            }
        }
        _ => {}
    }
    let volcanic: Vec<&PatternFact> = facts
        .patterns
        .iter()
        .filter(|p| p.activity != ActivityType::Earthquake)
        .collect();
    let quakes: Vec<&PatternFact> = facts
        .patterns
        .iter()
        .filter(|p| p.activity == ActivityType::Earthquake)
        .collect();
    match volcanic.len() {
        0 => {}
        1 => s.push(single_pattern_sentence(volcanic[0], rng)),
        _ => s.extend(multi_pattern_sentences(&volcanic, rng)),
    }
    if facts.noise_in_deformation {
        let long = facts.baseline_days >= 48;
        s.push(if long && rng.random_bool(0.5) {
            "Noise is detected in deformation zones due to high temporal baseline and displacement intensity.".into()
        } else {
            [
                "The noise which is located in the deformation zones is caused by the high displacement intensity.",
                "Noise can be detected on the deformation zone due to the high displacement intensity.",
            ]
            .choose(rng)
            .map(|x| x.to_string())
            .unwrap_or_default()
        });
    }
    if !quakes.is_empty() {
        if volcanic.is_empty() {
            if quakes.len() == 1 {
                s.push(single_pattern_sentence(quakes[0], rng));
            } else {
                let cells: Vec<Cell> = quakes
                    .iter()
                    .map(|p| cell_of(p.centroid.0, p.centroid.1))
                    .collect();
                let loc = cells_phrase(&cells, rng).unwrap_or_else(|| "central".into());
                s.push(format!(
                    "{} earthquake deformation patterns can be detected on the {loc} side of the region.",
                    number_word(quakes.len())
                ));
            }
        } else {
            let p = quakes[0];
            let name = cell_name(cell_of(p.centroid.0, p.centroid.1));
            s.push(format!(
                "A deformation pattern caused by an earthquake can also be detected on the {name} side."
            ));
        }
    }
    if facts.atmospheric == 0 {
        s.push(if rng.random_bool(0.8) {
            "The atmospheric impact is low.".into()
        } else {
            "The atmospheric impact is very low.".into()
        });
    }
    s
}

/// Writes the caption of one interferogram.
pub fn caption(facts: &CaptionFacts, style: CaptionStyle, rng: &mut impl Rng) -> String {
    if facts.corrupted {
        return "The image is corrupted.".into();
    }
    if facts.no_info {
        return "The image is very noisy. No information can be extracted.".into();
    }
    let is_def = !facts.patterns.is_empty();
    let mut sentences = if is_def {
        deformation(facts, rng)
    } else {
        non_deformation(facts, rng)
    };
    sentences.extend(quality_sentences(facts).into_iter().map(String::from));
    let mut text = sentences.join(" ");
    if is_def && rng.random_bool(style.typo_rate) {
        let present: Vec<&(&str, &str)> = TYPOS.iter().filter(|(w, _)| text.contains(w)).collect();
        if let Some((w, t)) = present.choose(rng) {
            text = text.replacen(w, t, 1);
        }
    }
    let ends_with_flag =
        facts.processing_error == 3 || facts.orbital || facts.glacier || facts.artifacts;
    // Non-deformation templates end with ". " unless a quality sentence closes them.
    let trailing = if is_def {
        rng.random_bool(style.trailing_space_rate)
    } else {
        !ends_with_flag && style.trailing_space_rate > 0.0
    };
    if trailing {
        text.push(' ');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::scene::stream_rng;

    fn facts() -> CaptionFacts {
        CaptionFacts {
            atmospheric: 2,
            ..Default::default()
        }
    }

    #[test]
    fn non_deformation_matches_the_real_templates() {
        let mut rng = stream_rng(1, 0);
        let f = facts();
        assert_eq!(
            caption(&f, CaptionStyle::default(), &mut rng),
            "Turbulent mixing effect or wave-like patterns caused by liquid and solid particles of the atmosphere can be detected around the area. No deformation activity can be detected. "
        );
        let f = CaptionFacts {
            atmospheric: 1,
            low_coherence: true,
            processing_error: 3,
            ..Default::default()
        };
        assert_eq!(
            caption(&f, CaptionStyle::default(), &mut rng),
            "Vertical stratification caused by atmospheric delays can be detected in high altitude  areas. Also, noisy areas can be detected due to low coherence. No deformation activity can be detected. The image has a processing error related to swath merging. Missing information."
        );
        let f = CaptionFacts {
            processing_error: 2,
            ..Default::default()
        };
        assert_eq!(
            caption(&f, CaptionStyle::default(), &mut rng),
            "No deformation activity can be detected.  The image has a processing error during the debursting step. "
        );
        let f = CaptionFacts {
            corrupted: true,
            atmospheric: 3,
            ..Default::default()
        };
        assert_eq!(
            caption(&f, CaptionStyle::default(), &mut rng),
            "The image is corrupted."
        );
    }

    #[test]
    fn single_pattern_names_type_intensity_and_location() {
        for seed in 0..50 {
            let mut rng = stream_rng(seed, 0);
            let f = CaptionFacts {
                atmospheric: 0,
                patterns: vec![PatternFact {
                    activity: ActivityType::Sill,
                    intensity: Intensity::Medium,
                    centroid: (0.9, 0.9),
                }],
                ..Default::default()
            };
            let c = caption(&f, CaptionStyle::clean(), &mut rng);
            assert!(
                c.starts_with("A sill-type deformation pattern of medium intensity"),
                "{c}"
            );
            assert!(c.contains("bottom-right"), "{c}");
            assert!(
                c.ends_with("The atmospheric impact is low.") || c.ends_with("very low."),
                "{c}"
            );
            assert!(!c.contains("  ") && !c.ends_with(' '), "{c}");
        }
    }

    #[test]
    fn crowds_count_patterns_and_earthquakes_are_named() {
        let mut variety = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut rng = stream_rng(seed, 1);
            let f = CaptionFacts {
                low_coherence: true,
                noise_cells: vec![(0, 0), (0, 1)],
                atmospheric: 3,
                turbulence_cells: vec![(2, 0)],
                patterns: vec![
                    PatternFact {
                        activity: ActivityType::Dyke,
                        intensity: Intensity::High,
                        centroid: (0.2, 0.5),
                    },
                    PatternFact {
                        activity: ActivityType::Mogi,
                        intensity: Intensity::Low,
                        centroid: (0.8, 0.5),
                    },
                    PatternFact {
                        activity: ActivityType::Earthquake,
                        intensity: Intensity::None,
                        centroid: (0.5, 0.1),
                    },
                ],
                ..Default::default()
            };
            let c = caption(&f, CaptionStyle::clean(), &mut rng);
            assert!(c.starts_with("Nois"), "{c}");
            assert!(c.contains("Two deformation patterns"), "{c}");
            assert!(
                c.contains("dyke-type of high intensity")
                    && c.contains("mogi-type of low intensity"),
                "{c}"
            );
            assert!(
                c.contains("caused by an earthquake can also be detected on the top side"),
                "{c}"
            );
            assert!(c.find("Nois").unwrap() < c.find("Turbulent").or(c.find("wave-like")).unwrap());
            variety.insert(c);
        }
        assert!(variety.len() > 20, "{}", variety.len());
    }

    #[test]
    fn location_phrases_follow_the_cells() {
        let mut rng = stream_rng(0, 0);
        assert_eq!(cell_of(0.0, 0.0), (0, 0));
        assert_eq!(cell_of(1.0, 0.5), (1, 2));
        let all: Vec<Cell> = (0..3).flat_map(|r| (0..3).map(move |c| (r, c))).collect();
        assert_eq!(cells_phrase(&all, &mut rng).unwrap(), "wider area");
        assert_eq!(
            cells_phrase(&[(0, 0), (1, 0), (2, 0)], &mut rng).unwrap(),
            "left"
        );
        assert_eq!(
            cells_phrase(&[(0, 2), (2, 1)], &mut rng).unwrap(),
            "top-right and bottom"
        );
        assert_eq!(cells_phrase(&[], &mut rng), None);
    }

    #[test]
    fn typos_and_spaces_follow_the_style() {
        let f = CaptionFacts {
            atmospheric: 2,
            turbulence_cells: vec![(1, 1)],
            patterns: vec![PatternFact {
                activity: ActivityType::Mogi,
                intensity: Intensity::High,
                centroid: (0.5, 0.5),
            }],
            ..Default::default()
        };
        let noisy = CaptionStyle {
            typo_rate: 1.0,
            trailing_space_rate: 1.0,
        };
        let mut typos = 0;
        for seed in 0..50 {
            let c = caption(&f, noisy, &mut stream_rng(seed, 2));
            assert!(c.ends_with(' '));
            typos += usize::from(TYPOS.iter().any(|(_, t)| c.contains(t)));
        }
        assert_eq!(typos, 50);
    }
}
