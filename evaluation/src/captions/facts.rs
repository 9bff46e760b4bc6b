//! The facts an InSAR caption states, read back from its text.
//!
//! Hephaestus captions (and the synthetic ones written in their style) repeat whole
//! sentences, so n-gram scores reward a constant caption almost as much as a caption that
//! reads the interferogram. [`parse_facts`] turns a caption into [`ParsedFacts`]: whether it
//! says there is deformation, which source types and intensities, how many patterns and
//! where (cells of a 3×3 grid of the full frame), which atmospheric signals, and which
//! quality flags. [`super::fact_metrics`] scores candidate captions against references by
//! these facts.
//!
//! The parser is rule-based and deterministic. It lower-cases the text, splits it into
//! sentences at `.`/`!`/`?`/`;` (a `.` between digits is kept), treats hyphens as spaces
//! (`dyke-type` = `dyke type`), and normalises every word: plurals, the typos of the real
//! captions (`deforamtion`, `rigth`, `botton`, `cenrtal`, `meidum`, `o` for "of", …), words
//! fused by a missing space (`atmosphericimpact`, `intensityon`) and, for words it does not
//! know, a unique keyword within one edit (two for long words) — so unseen typos of the
//! keywords are read too. Each sentence is then classified by its keywords:
//!
//! - deformation sentences (a type word, "deformation pattern(s)", "N … patterns",
//!   "earthquake") give the patterns: each type word opens a pattern, a preceding number
//!   word ("two", "three", "one", …) is its multiplicity, and "`<low|medium|high>`
//!   intensity" attaches to the pattern before it (or opens an untyped one). Their location
//!   words give the deformation cells. "N deformation patterns" without a type is a count.
//!   Sentences about noise in the deformation zones are not deformation sentences;
//! - atmosphere: "turbulent", "mixing", "wave-like" → turbulent; "stratification",
//!   "vertical", "altitude", "topography" → stratified. Their locations are not the
//!   deformation's and are not kept;
//! - noise: "noise", "noisy", "coherence" → low coherence, except noise "in the deformation
//!   zone(s)", which is [`ParsedFacts::noise_in_deformation`];
//! - quality: "processing error", "debursting", "swath", "merging"; "orbital"; "glacier";
//!   "artifact"; "corrupted"; "no information".
//!
//! Locations: compass words `top`/`upper`/`topmost`, `bottom`/`down`/`lower`/`downside`,
//! `left`/`leftmost`, `right`/`rightmost`, `central`/`center`/`middle`. Two adjacent words
//! name one cell (`top-left`, `right-top`, `central-left`, `top-central`, `upper right`); a
//! lone side word is a whole row or column (`top` = the top row, `left` = the left column,
//! `at the bottom` = the bottom row); a lone `central`/`center` is the centre cell. "wider
//! area" / "whole image" is every cell (and sets [`ParsedFacts::wider_area`]), but "wider
//! left side" is the left column. `leftmost`/`rightmost`/`topmost` describe patterns
//! relative to each other in multi-pattern captions ("a dyke-type on the leftmost and a
//! sill-type on the rightmost"), so they count only when the deformation sentences name no
//! other location.

use std::collections::BTreeSet;

/// What a caption says about deformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeformationStatus {
    /// At least one deformation pattern is described.
    Present,
    /// "No deformation activity can be detected", or nothing about deformation.
    Absent,
    /// The image is corrupted or "no information can be extracted".
    NoInformation,
}

/// The source type of a deformation pattern (the annotation's `activity_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Activity {
    Mogi,
    Dyke,
    Sill,
    Spheroid,
    Earthquake,
    Unidentified,
}

impl Activity {
    /// Every type, in the annotation's order.
    pub const ALL: [Activity; 6] = [
        Activity::Mogi,
        Activity::Dyke,
        Activity::Sill,
        Activity::Spheroid,
        Activity::Earthquake,
        Activity::Unidentified,
    ];

    /// Lower-case name (`"mogi"`, …), used as a fact name.
    pub fn name(self) -> &'static str {
        match self {
            Activity::Mogi => "mogi",
            Activity::Dyke => "dyke",
            Activity::Sill => "sill",
            Activity::Spheroid => "spheroid",
            Activity::Earthquake => "earthquake",
            Activity::Unidentified => "unidentified",
        }
    }

    /// The group of sources that the fringes can tell apart.
    pub fn group(self) -> TypeGroup {
        match self {
            Activity::Mogi | Activity::Spheroid | Activity::Sill | Activity::Unidentified => {
                TypeGroup::Concentric
            }
            Activity::Dyke => TypeGroup::Elongated,
            Activity::Earthquake => TypeGroup::Earthquake,
        }
    }
}

/// Source types grouped as the physics allows: concentric volcanic sources (Mogi,
/// spheroid, sill and unidentified give near-circular fringes), elongated intrusions
/// (dykes) and earthquakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TypeGroup {
    Concentric,
    Elongated,
    Earthquake,
}

impl TypeGroup {
    /// Every group.
    pub const ALL: [TypeGroup; 3] = [
        TypeGroup::Concentric,
        TypeGroup::Elongated,
        TypeGroup::Earthquake,
    ];

    /// Lower-case name, used as a fact name.
    pub fn name(self) -> &'static str {
        match self {
            TypeGroup::Concentric => "concentric",
            TypeGroup::Elongated => "elongated",
            TypeGroup::Earthquake => "earthquake",
        }
    }
}

/// The group of a type (free-function form of [`Activity::group`]).
pub fn type_group(a: Activity) -> TypeGroup {
    a.group()
}

/// Deformation intensity (the annotation's `intensity_level`, without `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Low,
    Medium,
    High,
}

impl Level {
    /// Every level.
    pub const ALL: [Level; 3] = [Level::Low, Level::Medium, Level::High];

    /// Lower-case name, used as a fact name.
    pub fn name(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
        }
    }
}

/// Which processing error a caption names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProcessingError {
    /// "… during the debursting step" (annotation `processing_error` 2).
    Debursting,
    /// "… related to swath merging" (annotation `processing_error` 3).
    SwathMerging,
    /// "processing error" without saying which.
    Unspecified,
}

/// A set of cells of the 3×3 grid over the full frame, `(row, col)` with row 0 at the top
/// (the grid of the synthetic captions), stored as 9 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct CellSet(pub u16);

impl CellSet {
    /// Every cell.
    pub const ALL: CellSet = CellSet(0x1ff);

    /// The single cell `(row, col)` (both < 3).
    pub fn cell(row: usize, col: usize) -> CellSet {
        debug_assert!(row < 3 && col < 3);
        CellSet(1 << (row * 3 + col))
    }

    /// A whole row.
    pub fn row(row: usize) -> CellSet {
        CellSet(0b111 << (row * 3))
    }

    /// A whole column.
    pub fn column(col: usize) -> CellSet {
        CellSet(0b001_001_001 << col)
    }

    /// Builds a set from cells.
    pub fn from_cells(cells: impl IntoIterator<Item = (usize, usize)>) -> CellSet {
        cells
            .into_iter()
            .fold(CellSet::default(), |s, (r, c)| s.union(CellSet::cell(r, c)))
    }

    pub fn union(self, other: CellSet) -> CellSet {
        CellSet(self.0 | other.0)
    }

    pub fn intersection(self, other: CellSet) -> CellSet {
        CellSet(self.0 & other.0)
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, row: usize, col: usize) -> bool {
        self.0 & CellSet::cell(row, col).0 != 0
    }

    /// The cells, in row-major order.
    pub fn cells(self) -> Vec<(usize, usize)> {
        (0..9)
            .filter(|k| self.0 & (1 << k) != 0)
            .map(|k| (k / 3, k % 3))
            .collect()
    }

    /// Intersection over union (1 when both are empty).
    pub fn iou(self, other: CellSet) -> f64 {
        let u = self.union(other).len();
        if u == 0 {
            1.0
        } else {
            self.intersection(other).len() as f64 / u as f64
        }
    }
}

/// One pattern phrase of a caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedPattern {
    /// `None` for "a deformation pattern" without a type.
    pub activity: Option<Activity>,
    pub intensity: Option<Level>,
    /// How many patterns the phrase names ("two dyke-type … patterns" = 2); 0 for the
    /// level of patterns counted by an untyped count in the same sentence ("Two deformation
    /// patterns of high intensity").
    pub count: usize,
}

/// The facts one caption states (see the module documentation for the rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFacts {
    pub deformation: DeformationStatus,
    /// Pattern phrases in caption order.
    pub patterns: Vec<ParsedPattern>,
    /// Number of deformation patterns: the larger of an untyped count ("Three deformation
    /// patterns …") and the sum of the typed phrases, plus the patterns of "… can also be
    /// detected" sentences; 0 unless `deformation` is `Present`.
    pub pattern_count: usize,
    /// Types named (empty unless `deformation` is `Present`).
    pub activities: BTreeSet<Activity>,
    /// Intensities named for deformation patterns.
    pub intensities: BTreeSet<Level>,
    /// Where the deformation lies (empty: no location given).
    pub cells: CellSet,
    /// The deformation covers the "wider area" / whole image (`cells` is then every cell).
    pub wider_area: bool,
    /// Turbulent mixing / wave-like atmospheric patterns.
    pub turbulent: bool,
    /// Vertical (topography-correlated) stratification.
    pub stratified: bool,
    /// Noise / low coherence outside the deformation zones.
    pub low_coherence: bool,
    /// Noise inside the deformation zones (high displacement or long baseline).
    pub noise_in_deformation: bool,
    pub processing_error: Option<ProcessingError>,
    pub orbital: bool,
    pub glacier: bool,
    pub artifacts: bool,
    pub corrupted: bool,
    /// "No information can be extracted".
    pub no_info: bool,
}

impl Default for ParsedFacts {
    fn default() -> Self {
        Self {
            deformation: DeformationStatus::Absent,
            patterns: Vec::new(),
            pattern_count: 0,
            activities: BTreeSet::new(),
            intensities: BTreeSet::new(),
            cells: CellSet::default(),
            wider_area: false,
            turbulent: false,
            stratified: false,
            low_coherence: false,
            noise_in_deformation: false,
            processing_error: None,
            orbital: false,
            glacier: false,
            artifacts: false,
            corrupted: false,
            no_info: false,
        }
    }
}

impl ParsedFacts {
    /// Whether the caption describes deformation.
    pub fn has_deformation(&self) -> bool {
        self.deformation == DeformationStatus::Present
    }

    /// The type groups named.
    pub fn groups(&self) -> BTreeSet<TypeGroup> {
        self.activities.iter().map(|a| a.group()).collect()
    }
}

/// Words the captions use correctly; a word outside this list (after the typo table and
/// plural folding) is matched to a keyword within one or two edits, or split in two.
const KNOWN: &[&str] = &[
    "a",
    "activity",
    "all",
    "also",
    "altitude",
    "an",
    "and",
    "appears",
    "are",
    "area",
    "areas",
    "around",
    "artifact",
    "as",
    "at",
    "atmosphere",
    "atmospheric",
    "baseline",
    "be",
    "between",
    "bottom",
    "bottommost",
    "burst",
    "but",
    "by",
    "can",
    "cause",
    "caused",
    "center",
    "central",
    "centre",
    "changes",
    "close",
    "coherence",
    "corrupted",
    "covering",
    "debursting",
    "deformation",
    "delay",
    "delays",
    "detect",
    "detected",
    "difficult",
    "difficulties",
    "dike",
    "displacement",
    "distributed",
    "down",
    "downside",
    "due",
    "during",
    "dyke",
    "earthquake",
    "effect",
    "effects",
    "entire",
    "error",
    "extracted",
    "extracting",
    "five",
    "for",
    "four",
    "frame",
    "fringe",
    "fringes",
    "from",
    "glacier",
    "has",
    "high",
    "higher",
    "if",
    "image",
    "impact",
    "in",
    "information",
    "intense",
    "intensity",
    "is",
    "it",
    "left",
    "leftmost",
    "level",
    "like",
    "liquid",
    "located",
    "location",
    "low",
    "lower",
    "medium",
    "merging",
    "middle",
    "missing",
    "mixing",
    "moderate",
    "mogi",
    "more",
    "multiple",
    "no",
    "noise",
    "noisy",
    "not",
    "of",
    "on",
    "one",
    "or",
    "orbital",
    "part",
    "particle",
    "particles",
    "pattern",
    "processing",
    "region",
    "related",
    "respectively",
    "right",
    "rightmost",
    "seismic",
    "several",
    "side",
    "sill",
    "six",
    "solid",
    "spatially",
    "spheroid",
    "spheroidal",
    "step",
    "stratification",
    "stratified",
    "sub",
    "surface",
    "swath",
    "temporal",
    "the",
    "there",
    "three",
    "to",
    "top",
    "topmost",
    "topography",
    "topographic",
    "turbulence",
    "turbulent",
    "two",
    "type",
    "unidentified",
    "up",
    "upper",
    "very",
    "vertical",
    "wave",
    "wavelike",
    "which",
    "while",
    "whole",
    "wide",
    "wider",
    "with",
    "zone",
];

/// Keywords an unknown word may be corrected to (the words whose meaning matters).
const KEYWORDS: &[&str] = &[
    "altitude",
    "artifact",
    "atmosphere",
    "atmospheric",
    "bottom",
    "central",
    "center",
    "coherence",
    "corrupted",
    "debursting",
    "deformation",
    "detected",
    "displacement",
    "dyke",
    "earthquake",
    "effect",
    "glacier",
    "information",
    "intensity",
    "leftmost",
    "medium",
    "merging",
    "mixing",
    "noise",
    "noisy",
    "orbital",
    "pattern",
    "processing",
    "region",
    "right",
    "rightmost",
    "spheroid",
    "stratification",
    "swath",
    "topmost",
    "turbulent",
    "unidentified",
    "vertical",
];

/// Typos and variants seen in the real captions and in the synthetic typo list, with
/// plurals: `(written, meant)`. A meant text may be two words.
const TYPOS: &[(&str, &str)] = &[
    ("adn", "and"),
    ("ares", "areas"),
    ("aslo", "also"),
    ("avertical", "a vertical"),
    ("beteenw", "between"),
    ("beteewn", "between"),
    ("caan", "can"),
    ("cn", "can"),
    ("i", "in"),
    ("o", "of"),
    ("lef", "left"),
    ("lelf", "left"),
    ("leke", "like"),
    ("ride", "right"),
    ("rigth", "right"),
    ("tree", "three"),
    ("wake", "wave"),
    ("topost", "topmost"),
    ("instense", "intense"),
    ("indensity", "intensity"),
    ("intensities", "intensity"),
    ("centre", "center"),
    ("centered", "center"),
    ("dikes", "dike"),
    ("dykes", "dyke"),
    ("sills", "sill"),
    ("spheroids", "spheroid"),
    ("earthquakes", "earthquake"),
    ("patterns", "pattern"),
    ("fringe", "fringes"),
    ("artifacts", "artifact"),
    ("artefact", "artifact"),
    ("artefacts", "artifact"),
    ("zones", "zone"),
    ("swaths", "swath"),
    ("types", "type"),
    ("stratifications", "stratification"),
];

fn typo(word: &str) -> Option<&'static str> {
    TYPOS.iter().find(|(w, _)| *w == word).map(|(_, m)| *m)
}

fn known(word: &str) -> bool {
    KNOWN.contains(&word)
}

/// Optimal-string-alignment distance, stopping early above `max`.
fn edit_distance(a: &[u8], b: &[u8], max: usize) -> usize {
    if a.len().abs_diff(b.len()) > max {
        return max + 1;
    }
    let n = b.len();
    let mut prev2 = vec![0usize; n + 1];
    let mut prev: Vec<usize> = (0..=n).collect();
    let mut cur = vec![0usize; n + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        let mut row_min = cur[0];
        for j in 1..=n {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
            row_min = row_min.min(d);
        }
        if row_min > max {
            return max + 1;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[n]
}

/// The keyword an unknown word is a typo of: the unique nearest keyword within one edit
/// (two for words of 8+ letters, which have no near neighbours among the keywords).
fn fuzzy(word: &str) -> Option<&'static str> {
    if word.len() < 4 || word.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let max = if word.len() >= 8 { 2 } else { 1 };
    let mut best: Option<(&'static str, usize)> = None;
    let mut tie = false;
    for k in KEYWORDS {
        let d = edit_distance(word.as_bytes(), k.as_bytes(), max);
        if d <= max {
            match best {
                Some((_, bd)) if bd < d => {}
                Some((_, bd)) if bd == d => tie = true,
                _ => {
                    best = Some((k, d));
                    tie = false;
                }
            }
        }
    }
    if tie {
        None
    } else {
        best.map(|(k, _)| k)
    }
}

/// Normalises one lower-case word into one or more canonical words.
fn normalise(word: &str, out: &mut Vec<String>) {
    if let Some(m) = typo(word) {
        out.extend(m.split(' ').map(String::from));
        return;
    }
    if known(word) {
        out.push(word.to_string());
        return;
    }
    // A plural of a known word.
    if let Some(stem) = word.strip_suffix('s') {
        if known(stem) {
            out.push(stem.to_string());
            return;
        }
    }
    // Two words fused by a missing space ("atmosphericimpact", "intensityon").
    for k in 2..word.len().saturating_sub(1) {
        if !word.is_char_boundary(k) {
            continue;
        }
        let (a, b) = word.split_at(k);
        if (known(a) || typo(a).is_some()) && (known(b) || typo(b).is_some()) && a.len() >= 3 {
            normalise(a, out);
            normalise(b, out);
            return;
        }
    }
    if let Some(k) = fuzzy(word) {
        out.push(k.to_string());
        return;
    }
    out.push(word.to_string());
}

/// A token of a sentence: a canonical word or a comma.
fn sentences(caption: &str) -> Vec<Vec<String>> {
    let lower = caption.to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut sentence: Vec<String> = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, sentence: &mut Vec<String>| {
        if !word.is_empty() {
            normalise(word, sentence);
            word.clear();
        }
    };
    for (i, &c) in chars.iter().enumerate() {
        if c.is_alphanumeric() {
            word.push(c);
            continue;
        }
        let between_digits = i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c == '.' && between_digits {
            word.push(c);
            continue;
        }
        flush(&mut word, &mut sentence);
        match c {
            '.' | '!' | '?' | ';' | '\n' if !sentence.is_empty() => {
                out.push(std::mem::take(&mut sentence));
            }
            '.' | '!' | '?' | ';' | '\n' => {}
            ',' | ':' | '(' | ')' => sentence.push(",".into()),
            _ => {}
        }
    }
    flush(&mut word, &mut sentence);
    if !sentence.is_empty() {
        out.push(sentence);
    }
    out
}

fn activity_word(w: &str) -> Option<Activity> {
    Some(match w {
        "mogi" => Activity::Mogi,
        "dyke" | "dike" => Activity::Dyke,
        "sill" => Activity::Sill,
        "spheroid" | "spheroidal" => Activity::Spheroid,
        "earthquake" | "seismic" => Activity::Earthquake,
        "unidentified" => Activity::Unidentified,
        _ => return None,
    })
}

fn level_word(w: &str) -> Option<Level> {
    Some(match w {
        "low" => Level::Low,
        "medium" | "moderate" => Level::Medium,
        "high" => Level::High,
        _ => return None,
    })
}

fn number_word(w: &str) -> Option<usize> {
    Some(match w {
        "a" | "an" | "one" | "1" => 1,
        "two" | "2" => 2,
        "three" | "3" | "several" | "multiple" => 3,
        "four" | "4" => 4,
        "five" | "5" => 5,
        "six" | "6" => 6,
        _ => return None,
    })
}

/// A location word: its meaning on the grid.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Loc {
    /// A row (top 0, bottom 2).
    Row(usize),
    /// A column (left 0, right 2).
    Col(usize),
    /// "central" / "center": the middle row or column, or the centre cell alone.
    Mid,
    /// "wider" / "whole" / "entire".
    Wide,
}

fn loc_word(w: &str) -> Option<(Loc, bool)> {
    // (meaning, relative: leftmost/rightmost/topmost)
    Some(match w {
        "top" | "upper" | "up" => (Loc::Row(0), false),
        "topmost" => (Loc::Row(0), true),
        "bottom" | "down" | "lower" | "downside" => (Loc::Row(2), false),
        "bottommost" => (Loc::Row(2), true),
        "left" => (Loc::Col(0), false),
        "leftmost" => (Loc::Col(0), true),
        "right" => (Loc::Col(2), false),
        "rightmost" => (Loc::Col(2), true),
        "central" | "center" | "middle" => (Loc::Mid, false),
        "wider" | "wide" | "whole" | "entire" => (Loc::Wide, false),
        _ => return None,
    })
}

/// The cells named by two adjacent location words, if they name one cell.
fn pair_cell(a: Loc, b: Loc) -> Option<CellSet> {
    match (a, b) {
        (Loc::Row(r), Loc::Col(c)) | (Loc::Col(c), Loc::Row(r)) => Some(CellSet::cell(r, c)),
        (Loc::Mid, Loc::Col(c)) | (Loc::Col(c), Loc::Mid) => Some(CellSet::cell(1, c)),
        (Loc::Mid, Loc::Row(r)) | (Loc::Row(r), Loc::Mid) => Some(CellSet::cell(r, 1)),
        (Loc::Mid, Loc::Mid) => Some(CellSet::cell(1, 1)),
        _ => None,
    }
}

fn single_cells(l: Loc) -> CellSet {
    match l {
        Loc::Row(r) => CellSet::row(r),
        Loc::Col(c) => CellSet::column(c),
        Loc::Mid => CellSet::cell(1, 1),
        Loc::Wide => CellSet::ALL,
    }
}

/// Cells named in one sentence: (absolute, relative, wider area).
fn sentence_cells(tokens: &[String]) -> (CellSet, CellSet, bool) {
    let mut abs = CellSet::default();
    let mut rel = CellSet::default();
    let mut wide = false;
    let mut i = 0;
    while i < tokens.len() {
        let Some((l, relative)) = loc_word(&tokens[i]) else {
            i += 1;
            continue;
        };
        if l == Loc::Wide {
            // "wider area" / "whole image" vs "wider left side" / "wider part of the left".
            let mut located = false;
            for t in tokens.iter().skip(i + 1).take(4) {
                if matches!(t.as_str(), "area" | "region" | "image" | "frame" | ",") {
                    break;
                }
                if loc_word(t).is_some_and(|(l, _)| l != Loc::Wide) {
                    located = true;
                    break;
                }
            }
            if !located {
                wide = true;
            }
            i += 1;
            continue;
        }
        let next = tokens.get(i + 1).and_then(|t| loc_word(t));
        let (cells, used, rel2) = match next.and_then(|(m, r2)| pair_cell(l, m).map(|c| (c, r2))) {
            Some((c, r2)) => (c, 2, r2),
            None => (single_cells(l), 1, false),
        };
        if relative || rel2 {
            rel = rel.union(cells);
        } else {
            abs = abs.union(cells);
        }
        i += used;
    }
    (abs, rel, wide)
}

fn has(tokens: &[String], w: &str) -> bool {
    tokens.iter().any(|t| t == w)
}

fn has_any(tokens: &[String], ws: &[&str]) -> bool {
    tokens.iter().any(|t| ws.contains(&t.as_str()))
}

/// `a` followed by `b` within `gap` tokens.
fn followed(tokens: &[String], a: &str, b: &str, gap: usize) -> bool {
    tokens
        .iter()
        .enumerate()
        .any(|(i, t)| t == a && tokens.iter().skip(i + 1).take(gap).any(|u| u == b))
}

/// Words of a sentence about turbulent atmospheric delay.
const TURBULENT_WORDS: [&str; 5] = ["turbulent", "turbulence", "mixing", "wave", "wavelike"];

/// Words of a sentence about stratified (topography-correlated) delay.
const STRATIFIED_WORDS: [&str; 6] = [
    "stratification",
    "stratified",
    "vertical",
    "altitude",
    "topography",
    "topographic",
];

/// Parses the facts a caption states (see the module documentation).
pub fn parse_facts(caption: &str) -> ParsedFacts {
    let mut f = ParsedFacts::default();
    let mut untyped_count = 0usize;
    let mut graded_levels: Vec<Level> = Vec::new();
    let mut main_count = 0usize;
    let mut also_count = 0usize;
    let mut abs_cells = CellSet::default();
    let mut rel_cells = CellSet::default();
    let mut wide = false;
    for s in sentences(caption) {
        let s = &s[..];
        if has(s, "corrupted") {
            f.corrupted = true;
        }
        if followed(s, "no", "information", 2) {
            f.no_info = true;
        }
        if followed(s, "processing", "error", 1) || has_any(s, &["debursting", "swath"]) {
            let kind = if has_any(s, &["debursting", "burst"]) && !has(s, "merging") {
                ProcessingError::Debursting
            } else if has_any(s, &["swath", "merging"]) {
                ProcessingError::SwathMerging
            } else {
                ProcessingError::Unspecified
            };
            f.processing_error = Some(match f.processing_error {
                None | Some(ProcessingError::Unspecified) => kind,
                Some(k) => k,
            });
        }
        if followed(s, "orbital", "fringes", 2) || has(s, "orbital") {
            f.orbital = true;
        }
        if has(s, "glacier") {
            f.glacier = true;
        }
        if has(s, "artifact") {
            f.artifacts = true;
        }
        let turbulent = has_any(s, &TURBULENT_WORDS);
        let stratified = has_any(s, &STRATIFIED_WORDS);
        f.turbulent |= turbulent;
        f.stratified |= stratified;
        let atmosphere = turbulent || stratified;
        let zone = has(s, "zone");
        let noise = has_any(s, &["noise", "noisy", "coherence"]);
        if noise {
            if zone && has(s, "deformation") {
                f.noise_in_deformation = true;
            } else {
                f.low_coherence = true;
            }
        }
        if followed(s, "no", "deformation", 2) {
            continue;
        }
        // "High deformation activity can be detected." (an edited non-deformation template).
        let graded_activity = s
            .windows(3)
            .any(|w| level_word(&w[0]).is_some() && w[1] == "deformation" && w[2] == "activity");
        let typed = s.iter().any(|t| activity_word(t).is_some());
        let pattern_word = has(s, "pattern");
        let deformation_sentence = typed
            || graded_activity
            || (has(s, "deformation") && (pattern_word || has(s, "type")) && !zone)
            || (pattern_word && !atmosphere && !noise && !zone);
        if !deformation_sentence {
            continue;
        }
        if graded_activity && !typed {
            graded_levels.extend(
                s.windows(2)
                    .filter(|w| w[1] == "deformation")
                    .filter_map(|w| level_word(&w[0])),
            );
            continue;
        }
        let also = has(s, "also");
        let mut sentence_patterns: Vec<ParsedPattern> = Vec::new();
        let mut generic: Option<usize> = None;
        for (i, t) in s.iter().enumerate() {
            if let Some(a) = activity_word(t) {
                let count = (1..=2)
                    .filter_map(|k| i.checked_sub(k))
                    .find_map(|j| number_word(&s[j]))
                    .unwrap_or(1);
                // "an earthquake deformation pattern … earthquake" names one pattern.
                if let Some(last) = sentence_patterns.last_mut() {
                    if last.activity.is_none() {
                        last.activity = Some(a);
                        if last.count == 0 {
                            last.count = count;
                        }
                        continue;
                    }
                    if last.activity == Some(a) && a == Activity::Earthquake {
                        continue;
                    }
                }
                sentence_patterns.push(ParsedPattern {
                    activity: Some(a),
                    intensity: None,
                    count,
                });
            } else if let Some(l) = level_word(t) {
                if s.get(i + 1).map(String::as_str) != Some("intensity") {
                    continue;
                }
                match sentence_patterns
                    .iter_mut()
                    .rev()
                    .find(|p| p.intensity.is_none())
                {
                    Some(p) => p.intensity = Some(l),
                    None => {
                        // The level of patterns counted in this sentence ("Two deformation
                        // patterns of high intensity"): a count-0 phrase that carries only the
                        // level. Otherwise a new untyped pattern (or the level of a typed one
                        // yet to come, which then fills in its type).
                        sentence_patterns.push(ParsedPattern {
                            activity: None,
                            intensity: Some(l),
                            count: usize::from(generic.is_none()),
                        })
                    }
                }
            } else if t == "pattern" {
                // "Two deformation patterns can be detected": a count without a type.
                let before = &s[i.saturating_sub(3)..i];
                if before
                    .iter()
                    .all(|w| activity_word(w).is_none() && w != "type")
                {
                    if let Some(n) = before.iter().rev().find_map(|w| number_word(w)) {
                        if n > 1 {
                            generic = Some(generic.unwrap_or(0).max(n));
                        }
                    }
                }
            }
        }
        if sentence_patterns.is_empty() && generic.is_none() {
            sentence_patterns.push(ParsedPattern {
                activity: None,
                intensity: None,
                count: 1,
            });
        }
        let n: usize = sentence_patterns.iter().map(|p| p.count).sum();
        if also && generic.is_none() {
            also_count += n;
        } else {
            main_count += n;
        }
        if let Some(g) = generic {
            untyped_count = untyped_count.max(g);
        }
        f.patterns.extend(sentence_patterns);
        let (a, r, w) = sentence_cells(s);
        abs_cells = abs_cells.union(a);
        rel_cells = rel_cells.union(r);
        wide |= w;
    }
    let present = !f.patterns.is_empty() || untyped_count > 0 || !graded_levels.is_empty();
    if f.patterns.is_empty() && untyped_count == 0 {
        // Only "High deformation activity can be detected.": one untyped pattern.
        f.patterns
            .extend(graded_levels.iter().take(1).map(|&l| ParsedPattern {
                activity: None,
                intensity: Some(l),
                count: 1,
            }));
        main_count += f.patterns.len();
    }
    f.deformation = if present {
        DeformationStatus::Present
    } else if f.corrupted || f.no_info {
        DeformationStatus::NoInformation
    } else {
        DeformationStatus::Absent
    };
    if present {
        f.pattern_count = untyped_count.max(main_count) + also_count;
        f.activities = f.patterns.iter().filter_map(|p| p.activity).collect();
        f.intensities = f.patterns.iter().filter_map(|p| p.intensity).collect();
        f.wider_area = wide;
        f.cells = if wide {
            CellSet::ALL
        } else if abs_cells.is_empty() {
            rel_cells
        } else {
            abs_cells
        };
    } else {
        f.patterns.clear();
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acts(f: &ParsedFacts) -> Vec<Activity> {
        f.activities.iter().copied().collect()
    }

    fn levels(f: &ParsedFacts) -> Vec<Level> {
        f.intensities.iter().copied().collect()
    }

    #[test]
    fn non_deformation_templates() {
        let f = parse_facts("Turbulent mixing effect or wave-like patterns caused by liquid and solid particles of the atmosphere can be detected around the area. Also, noisy areas can be detected due to low coherence. No deformation activity can be detected. ");
        assert_eq!(f.deformation, DeformationStatus::Absent);
        assert!(f.turbulent && !f.stratified && f.low_coherence);
        assert!(f.activities.is_empty() && f.cells.is_empty() && f.pattern_count == 0);
        let f = parse_facts("Vertical stratification caused by atmospheric delays can be detected in high altitude  areas. No deformation activity can be detected. ");
        assert!(f.stratified && !f.turbulent && !f.low_coherence);
        assert!(
            f.intensities.is_empty(),
            "high altitude is not an intensity"
        );
        let f = parse_facts("Vertical stratification and turbulent mixing effects can be detected around the area. No deformation activity can be detected. ");
        assert!(f.stratified && f.turbulent);
        let f = parse_facts("No deformation activity can be detected.  The image has a processing error during the debursting step.");
        assert_eq!(f.processing_error, Some(ProcessingError::Debursting));
        let f = parse_facts("Turbulent mixing effect or wave-like patterns caused by liquid and solid particles of the atmosphere can be detected around the area. No deformation activity can be detected. The image has a processing error related to swath merging. Missing information.");
        assert_eq!(f.processing_error, Some(ProcessingError::SwathMerging));
        assert!(!f.no_info);
        let f = parse_facts("No deformation activity can be detected. Orbital fringes detected. Difficulties in extracting information.");
        assert!(f.orbital && !f.glacier && f.deformation == DeformationStatus::Absent);
        let f = parse_facts(
            "No deformation activity can be detected. Glacier fringes are detected on image.",
        );
        assert!(f.glacier);
        let f = parse_facts("The image is corrupted.");
        assert!(f.corrupted && f.deformation == DeformationStatus::NoInformation);
        let f = parse_facts("The image is very noisy. No information can be extracted.");
        assert!(f.no_info && f.deformation == DeformationStatus::NoInformation);
        assert_eq!(parse_facts("").deformation, DeformationStatus::Absent);
    }

    #[test]
    fn single_patterns_with_type_intensity_and_cell() {
        let f = parse_facts("A sill-type deformation pattern of low intensity can be detected on the central side. The atmospheric impact is low.");
        assert_eq!(f.deformation, DeformationStatus::Present);
        assert_eq!(acts(&f), [Activity::Sill]);
        assert_eq!(levels(&f), [Level::Low]);
        assert_eq!(f.pattern_count, 1);
        assert_eq!(f.cells, CellSet::cell(1, 1));
        assert!(!f.turbulent && !f.stratified);
        let f = parse_facts("Noise can be detected on the top-right side of the area. A dyke-type deformation pattern of low intensity can be detected on the bottom-left side of the region. The atmospheric impact is low.");
        assert_eq!(acts(&f), [Activity::Dyke]);
        assert_eq!(f.cells, CellSet::cell(2, 0), "the noise's cell is not kept");
        assert!(f.low_coherence);
        let f = parse_facts("Vertical stratification effect is detected on the high altitude areas of the region. A sill-type deformation pattern of low intensity is detected at the bottom of the image. ");
        assert_eq!(f.cells, CellSet::row(2));
        assert!(f.stratified);
        let f = parse_facts("Noise can be detected on the bottom-right area. Turbulent mixing effect can be detected on the central-left and central side of the region. Vertical stratification can also be detected on the central-top and top-left side. An earthquake deformation pattern can be detected on the top-central side of the region. ");
        assert_eq!(acts(&f), [Activity::Earthquake]);
        assert!(f.intensities.is_empty());
        assert_eq!(f.pattern_count, 1);
        assert_eq!(f.cells, CellSet::cell(0, 1));
        assert!(f.turbulent && f.stratified && f.low_coherence);
        let f = parse_facts("A mogi-type deformation pattern of low intensity is detected right-top of the image.  A processing error related to the debursting step appears in the right sub-swath. ");
        assert_eq!(f.cells, CellSet::cell(0, 2));
        assert_eq!(f.processing_error, Some(ProcessingError::Debursting));
        let f = parse_facts("An unidentified deformation pattern of high intensity can be detected on the central side. ");
        assert_eq!(acts(&f), [Activity::Unidentified]);
        assert_eq!(levels(&f), [Level::High]);
    }

    #[test]
    fn crowds_counts_and_relative_locations() {
        let f = parse_facts("Noisy areas caused by low coherence can be detected on the central-right side of the region. Turbulent mixing effect can be detected on the wider area of the region. Three dyke-type deformation patterns of high intensity can be detected on the right side of the region. The noise which is located in the deformation zones is caused by the high displacement intensity. A deformation pattern caused by an earthquake can also be detected on the right side.");
        assert_eq!(acts(&f), [Activity::Dyke, Activity::Earthquake]);
        assert_eq!(levels(&f), [Level::High]);
        assert_eq!(f.pattern_count, 4);
        assert_eq!(f.cells, CellSet::column(2));
        assert!(f.noise_in_deformation && f.low_coherence && !f.wider_area);
        let f = parse_facts("Turbulent mixing effect can be detected on the right side of the region. Two deformation patterns can be detected. A sill-type of low intensity is located at the bottom and a mogi-type of low intensity is located in the central-left side of the image, respectively.");
        assert_eq!(acts(&f), [Activity::Mogi, Activity::Sill]);
        assert_eq!(f.pattern_count, 2);
        assert_eq!(f.cells, CellSet::row(2).union(CellSet::cell(1, 0)));
        let f = parse_facts("Two deformation patterns can be detected on the right side. A dyke-type of high intensity on the leftmost and sill-type of high intensity on the rightmost.");
        assert_eq!(
            f.cells,
            CellSet::column(2),
            "leftmost/rightmost are relative"
        );
        assert_eq!(f.pattern_count, 2);
        let f = parse_facts("A dyke-type of high intensity on the leftmost and sill-type of medium intensity on the rightmost.");
        assert_eq!(f.cells, CellSet::column(0).union(CellSet::column(2)));
        assert_eq!(levels(&f), [Level::Medium, Level::High]);
        let f = parse_facts("Four deformation patterns can be detected on the central and right side. A sill-type of low intensity can be detected close to the center, a sill-type of medium intensity on the right, and two sill-type of the high intensity on the rightmost.");
        assert_eq!(f.pattern_count, 4);
        assert_eq!(levels(&f), [Level::Low, Level::Medium, Level::High]);
        let f = parse_facts("Turbulent mixing effect can be detected on the wider area of the region. Two dyke-type deformation patterns of high intensity and one sill-type of medium intensity can be detected on the right side of the region.");
        assert_eq!(f.pattern_count, 3);
        assert_eq!(f.cells, CellSet::column(2));
        let f = parse_facts("Two sill-type deformation patterns of low intensity can be detected on the wider area side of the region.");
        assert!(f.wider_area && f.cells == CellSet::ALL && f.pattern_count == 2);
        let f = parse_facts("A sill-type deformation pattern of low intensity can be detected on the wider left side of the image.");
        assert!(!f.wider_area && f.cells == CellSet::column(0));
    }

    #[test]
    fn real_quirks() {
        // Typos, fused words, double and trailing spaces, odd capitalisation.
        let f = parse_facts("  A spheroid-type deformation pattern o low intensity can be detected on the bottom-rigth side of the image.  The atmosphericimpact is low.  ");
        assert_eq!(acts(&f), [Activity::Spheroid]);
        assert_eq!(levels(&f), [Level::Low]);
        assert_eq!(f.cells, CellSet::cell(2, 2));
        let f = parse_facts("A DYKE TYPE deforamtion pattern of meidum intensity is deteced on the botton-left side.");
        assert_eq!(acts(&f), [Activity::Dyke]);
        assert_eq!(levels(&f), [Level::Medium]);
        assert_eq!(f.cells, CellSet::cell(2, 0));
        let f = parse_facts("A sill-type of low intensity can be detected on the leftmost and a mogi-type of high intensityon the rightmost.");
        assert_eq!(levels(&f), [Level::Low, Level::High]);
        let f = parse_facts("Tree dyke-type deformation patterns of high intensity can be detected on the right side of the region.");
        assert_eq!(f.pattern_count, 3);
        let f = parse_facts("Three dyke-type deformation patterns of high intensity can be detected on the right side of the region.Vertical stratification effect can also be detected on the central side");
        assert_eq!(f.cells, CellSet::column(2));
        assert!(f.stratified);
        let f = parse_facts("Turbulent mixign effect is detected on the wider area. Vertical stratifiction is detected. A sill-type deformation pattern of high intensity is detected in cenrtal side.");
        assert!(f.turbulent && f.stratified);
        assert_eq!(f.cells, CellSet::cell(1, 1));
        let f = parse_facts("Turbulent mixing effect of high intensity is detected on the top side and center of the region with lower intensity on the bottom left. A sill-type deformation pattern of medium intensity is detected at the bottom of the image. ");
        assert_eq!(
            levels(&f),
            [Level::Medium],
            "atmosphere intensities are not kept"
        );
        let f = parse_facts(
            "Noise can be detected on the deformation zone due to the high displacement intensity.",
        );
        assert_eq!(f.deformation, DeformationStatus::Absent);
        assert!(f.noise_in_deformation && !f.low_coherence);
        // An edited non-deformation template (real, uniqueID-style quirk).
        let f = parse_facts("Vertical stratification and turbulent mixing effects can be detected around the area. Low deformation activity can be detected. ");
        assert_eq!(f.deformation, DeformationStatus::Present);
        assert_eq!(levels(&f), [Level::Low]);
        assert_eq!(f.pattern_count, 1);
        let f = parse_facts("Low deformation activity can be detected. A mogi-type deformation pattern of low intensity is detected on the central of the image.");
        assert_eq!(f.pattern_count, 1);
        assert_eq!(acts(&f), [Activity::Mogi]);
        let f = parse_facts("Two deformation patterns of high intensity can be detected at the bottom of the image. On the right is a sill and on the leftmost is a dyke type deformation pattern. ");
        assert_eq!(f.pattern_count, 2);
        assert_eq!(levels(&f), [Level::High]);
        assert_eq!(acts(&f), [Activity::Dyke, Activity::Sill]);
    }

    #[test]
    fn groups_and_cells() {
        assert_eq!(Activity::Sill.group(), TypeGroup::Concentric);
        assert_eq!(type_group(Activity::Unidentified), TypeGroup::Concentric);
        assert_eq!(Activity::Dyke.group(), TypeGroup::Elongated);
        assert_eq!(Activity::Earthquake.group(), TypeGroup::Earthquake);
        let f = parse_facts("A mogi-type deformation pattern of low intensity is detected at the bottom. A deformation pattern caused by an earthquake can also be detected on the top-left side.");
        assert_eq!(
            f.groups().into_iter().collect::<Vec<_>>(),
            [TypeGroup::Concentric, TypeGroup::Earthquake]
        );
        assert_eq!(f.pattern_count, 2);
        assert_eq!(CellSet::column(1).cells(), [(0, 1), (1, 1), (2, 1)]);
        assert_eq!(CellSet::row(2).len(), 3);
        assert!((CellSet::row(0).iou(CellSet::cell(0, 0)) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(CellSet::from_cells([(1, 1), (2, 2)]).len(), 2);
        assert_eq!(edit_distance(b"deforamtion", b"deformation", 2), 1);
        assert_eq!(fuzzy("turbulenxt"), Some("turbulent"));
        assert_eq!(fuzzy("unknownword"), None);
    }
}
