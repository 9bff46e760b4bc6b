//! Dataset statistics (`insar-mm data stats`): labels, activity types, intensities, phases,
//! every flag, frames, dates, temporal baselines and captions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::Serialize;

use super::annotation::{Annotation, Date, Inconsistency};
use super::loader::{AnnotationSet, BadFile};
use super::sample::LABEL_NAMES;

/// Counts keyed by a display string, sorted by key.
pub type Counts = BTreeMap<String, usize>;

#[derive(Debug, Clone, Serialize)]
pub struct CountWithShare {
    pub value: String,
    pub count: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DateRange {
    pub first: String,
    pub last: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaselineStats {
    pub min: i64,
    pub median: i64,
    pub mean: f64,
    pub max: i64,
    /// The most frequent baselines, `(days, count)`, most frequent first.
    pub most_common: Vec<(i64, usize)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaptionStats {
    /// Distinct caption strings exactly as written.
    pub distinct: usize,
    /// Distinct captions once surrounding whitespace is trimmed and space runs collapsed.
    pub distinct_normalised: usize,
    /// Distinct lower-cased tokens (words and single punctuation marks).
    pub vocabulary: usize,
    /// Whitespace-separated words per caption.
    pub mean_words: f64,
    pub max_words: usize,
    pub p95_words: usize,
    pub with_surrounding_whitespace: usize,
    pub with_double_spaces: usize,
    /// The most frequent captions (normalised), most frequent first.
    pub most_common: Vec<CountWithShare>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetStats {
    pub source: String,
    pub annotations: usize,
    pub bad_files: Vec<BadFile>,
    pub misnamed_files: usize,
    /// Label lists as written (`Deformation,Earthquake`).
    pub label_sets: Counts,
    /// Positives of each entry of the 10-label vector.
    pub label_vector: Counts,
    /// Interferograms containing each activity type (the README's counts).
    pub activity_type_interferograms: Counts,
    /// Entries of each activity type over all lists (repeats counted).
    pub activity_type_entries: Counts,
    /// Interferograms containing each intensity level.
    pub intensity_interferograms: Counts,
    pub intensity_entries: Counts,
    pub phase: Counts,
    /// Value counts of every integer flag (`corrupted`, `processing_error`, …).
    pub flags: BTreeMap<String, Counts>,
    pub confidence: Counts,
    pub polygons_per_interferogram: Counts,
    pub frames: usize,
    pub interferograms_per_frame: Counts,
    pub primary_dates: DateRange,
    pub secondary_dates: DateRange,
    pub temporal_baseline_days: BaselineStats,
    pub captions: CaptionStats,
    /// Annotations whose fields disagree (tolerated; see `Annotation::inconsistencies`).
    pub inconsistencies: Vec<Inconsistency>,
}

/// `"k1<sep>v1, k2<sep>v2, …"` in key order.
pub fn format_counts(counts: &Counts, sep: &str) -> String {
    let values: Vec<String> = counts.iter().map(|(k, v)| format!("{k}{sep}{v}")).collect();
    values.join(", ")
}

fn bump(counts: &mut Counts, key: impl Into<String>) {
    *counts.entry(key.into()).or_default() += 1;
}

/// Lower-cased words (`[A-Za-z0-9_]+`, Unicode letters included) and single punctuation
/// marks: the tokenisation under which the real captions have 186 types.
pub fn caption_tokens(caption: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for ch in caption.chars() {
        if ch.is_alphanumeric() || ch == '_' {
            word.extend(ch.to_lowercase());
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if !ch.is_whitespace() {
            tokens.push(ch.to_lowercase().collect());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

fn caption_stats(annotations: &[Annotation]) -> CaptionStats {
    let exact: BTreeSet<&str> = annotations.iter().map(|a| a.caption.as_str()).collect();
    let mut normalised: HashMap<String, usize> = HashMap::new();
    let mut vocabulary: BTreeSet<String> = BTreeSet::new();
    let mut words: Vec<usize> = Vec::with_capacity(annotations.len());
    for a in annotations {
        *normalised.entry(a.clean_caption()).or_default() += 1;
        words.push(a.caption.split_whitespace().count());
    }
    for caption in &exact {
        vocabulary.extend(caption_tokens(caption));
    }
    words.sort_unstable();
    let n = words.len().max(1);
    let mut most_common: Vec<(String, usize)> =
        normalised.iter().map(|(k, &v)| (k.clone(), v)).collect();
    most_common.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    CaptionStats {
        distinct: exact.len(),
        distinct_normalised: normalised.len(),
        vocabulary: vocabulary.len(),
        mean_words: words.iter().sum::<usize>() as f64 / n as f64,
        max_words: words.last().copied().unwrap_or(0),
        p95_words: words.get(words.len() * 95 / 100).copied().unwrap_or(0),
        with_surrounding_whitespace: annotations
            .iter()
            .filter(|a| a.caption.trim() != a.caption)
            .count(),
        with_double_spaces: annotations
            .iter()
            .filter(|a| a.caption.contains("  "))
            .count(),
        most_common: most_common
            .into_iter()
            .take(5)
            .map(|(value, count)| CountWithShare { value, count })
            .collect(),
    }
}

fn baseline_stats(annotations: &[Annotation]) -> BaselineStats {
    let mut days: Vec<i64> = annotations
        .iter()
        .map(|a| a.temporal_baseline_days())
        .collect();
    days.sort_unstable();
    let mut freq: BTreeMap<i64, usize> = BTreeMap::new();
    for &d in &days {
        *freq.entry(d).or_default() += 1;
    }
    let mut most_common: Vec<(i64, usize)> = freq.into_iter().collect();
    most_common.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    most_common.truncate(6);
    let n = days.len().max(1);
    BaselineStats {
        min: days.first().copied().unwrap_or(0),
        median: days.get(days.len() / 2).copied().unwrap_or(0),
        mean: days.iter().sum::<i64>() as f64 / n as f64,
        max: days.last().copied().unwrap_or(0),
        most_common,
    }
}

impl DatasetStats {
    pub fn compute(set: &AnnotationSet) -> Self {
        let anns = &set.annotations;
        let mut s = DatasetStats {
            source: set.source.display().to_string(),
            annotations: anns.len(),
            bad_files: set.bad.clone(),
            misnamed_files: set.misnamed.len(),
            label_sets: Counts::new(),
            label_vector: LABEL_NAMES.iter().map(|n| (n.to_string(), 0)).collect(),
            activity_type_interferograms: Counts::new(),
            activity_type_entries: Counts::new(),
            intensity_interferograms: Counts::new(),
            intensity_entries: Counts::new(),
            phase: Counts::new(),
            flags: BTreeMap::new(),
            confidence: Counts::new(),
            polygons_per_interferogram: Counts::new(),
            frames: 0,
            interferograms_per_frame: Counts::new(),
            primary_dates: date_range(anns.iter().map(|a| a.primary_date)),
            secondary_dates: date_range(anns.iter().map(|a| a.secondary_date)),
            temporal_baseline_days: baseline_stats(anns),
            captions: caption_stats(anns),
            inconsistencies: Vec::new(),
        };
        for a in anns {
            let labels: Vec<&str> = a.label.iter().map(|l| l.as_str()).collect();
            bump(&mut s.label_sets, labels.join(","));
            for (name, v) in LABEL_NAMES.iter().zip(a.label_vector()) {
                if v > 0.0 {
                    bump(&mut s.label_vector, *name);
                }
            }
            for t in a.activity_set() {
                bump(&mut s.activity_type_interferograms, t.as_str());
            }
            for t in &a.activity_type {
                bump(&mut s.activity_type_entries, t.as_str());
            }
            for i in a.intensity_set() {
                bump(&mut s.intensity_interferograms, i.as_str());
            }
            for i in &a.intensity_level {
                bump(&mut s.intensity_entries, i.as_str());
            }
            bump(&mut s.phase, a.phase.as_str());
            let flags = [
                ("corrupted", a.corrupted),
                ("processing_error", a.processing_error),
                ("glacier_fringes", a.glacier_fringes),
                ("orbital_fringes", a.orbital_fringes),
                ("atmospheric_fringes", a.atmospheric_fringes),
                ("low_coherence", a.low_coherence),
                ("no_info", a.no_info),
                ("image_artifacts", a.image_artifacts),
                ("is_crowd", a.is_crowd),
            ];
            for (name, value) in flags {
                bump(
                    s.flags.entry(name.to_string()).or_default(),
                    value.to_string(),
                );
            }
            bump(&mut s.confidence, format!("{}", a.confidence));
            bump(
                &mut s.polygons_per_interferogram,
                a.segmentation_mask.len().to_string(),
            );
            bump(&mut s.interferograms_per_frame, a.frame_id.clone());
            s.inconsistencies.extend(a.inconsistencies());
        }
        s.frames = s.interferograms_per_frame.len();
        s
    }

    /// A human-readable report.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let section = |out: &mut String, title: &str, counts: &Counts| {
            let _ = writeln!(out, "{title}");
            let mut rows: Vec<(&String, &usize)> = counts.iter().collect();
            rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (k, v) in rows {
                let _ = writeln!(out, "  {k:<40} {v:>7}");
            }
        };
        let _ = writeln!(out, "source: {}", self.source);
        let _ = writeln!(
            out,
            "annotations: {}   bad files: {}   misnamed files: {}",
            self.annotations,
            self.bad_files.len(),
            self.misnamed_files
        );
        for b in &self.bad_files {
            let _ = writeln!(out, "  bad: {}: {}", b.file, b.error);
        }
        section(&mut out, "label sets:", &self.label_sets);
        let _ = writeln!(out, "label vector positives:");
        for name in LABEL_NAMES {
            let _ = writeln!(
                out,
                "  {name:<40} {:>7}",
                self.label_vector.get(name).unwrap_or(&0)
            );
        }
        section(
            &mut out,
            "interferograms containing each activity type:",
            &self.activity_type_interferograms,
        );
        section(
            &mut out,
            "activity type entries:",
            &self.activity_type_entries,
        );
        section(
            &mut out,
            "interferograms containing each intensity:",
            &self.intensity_interferograms,
        );
        section(&mut out, "phase:", &self.phase);
        let inline = |counts: &Counts| format_counts(counts, ": ");
        for (flag, counts) in &self.flags {
            let _ = writeln!(out, "flag {flag:<28} {}", inline(counts));
        }
        let _ = writeln!(out, "confidence: {}", inline(&self.confidence));
        let _ = writeln!(
            out,
            "polygons per interferogram: {}",
            inline(&self.polygons_per_interferogram)
        );
        let _ = writeln!(out, "frames: {}", self.frames);
        let mut frames: Vec<(&String, &usize)> = self.interferograms_per_frame.iter().collect();
        frames.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if let (Some(big), Some(small)) = (frames.first(), frames.last()) {
            let _ = writeln!(
                out,
                "  largest {} ({}), smallest {} ({})",
                big.0, big.1, small.0, small.1
            );
        }
        let _ = writeln!(
            out,
            "primary dates {} … {}, secondary dates {} … {}",
            self.primary_dates.first,
            self.primary_dates.last,
            self.secondary_dates.first,
            self.secondary_dates.last
        );
        let b = &self.temporal_baseline_days;
        let common: Vec<String> = b
            .most_common
            .iter()
            .map(|(d, n)| format!("{d} d: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "temporal baseline (days): min {}, median {}, mean {:.1}, max {}; most common {}",
            b.min,
            b.median,
            b.mean,
            b.max,
            common.join(", ")
        );
        let c = &self.captions;
        let _ = writeln!(
            out,
            "captions: {} distinct ({} after whitespace normalisation), vocabulary {} tokens, \
             words mean {:.1} / p95 {} / max {}",
            c.distinct, c.distinct_normalised, c.vocabulary, c.mean_words, c.p95_words, c.max_words
        );
        let _ = writeln!(
            out,
            "  {} with leading/trailing whitespace, {} with double spaces",
            c.with_surrounding_whitespace, c.with_double_spaces
        );
        for m in &c.most_common {
            let _ = writeln!(out, "  {:>6}× {}", m.count, m.value);
        }
        let _ = writeln!(
            out,
            "inconsistent annotations (tolerated): {}",
            self.inconsistencies.len()
        );
        for i in &self.inconsistencies {
            let _ = writeln!(out, "  uniqueID {}: {}", i.unique_id, i.message);
        }
        out
    }
}

fn date_range(dates: impl Iterator<Item = Date>) -> DateRange {
    let dates: Vec<Date> = dates.collect();
    let iso = |d: Option<&Date>| d.map(|d| d.iso()).unwrap_or_default();
    DateRange {
        first: iso(dates.iter().min()),
        last: iso(dates.iter().max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_words_and_punctuation() {
        assert_eq!(
            caption_tokens(" A sill-type  pattern, Low. "),
            vec!["a", "sill", "-", "type", "pattern", ",", "low", "."]
        );
        assert!(caption_tokens("   ").is_empty());
    }
}
