//! Captions of a mirrored interferogram: a left–right flip swaps "left" and "right", a
//! top–bottom flip swaps "top" and "bottom" (and "upper"/"lower"), so a flipped image keeps a
//! true caption and flips become label-preserving augmentations for captioning.
//!
//! Whole words only (letter runs: "top-left" is two words, "topography" is one and stays),
//! first-letter case kept, and the misspellings of the real captions ("rigth", "lef",
//! "botton") read as the words they stand for. Everything else, spacing and punctuation
//! included, is left byte for byte.

/// The caption of the image mirrored left–right (`horizontal`) and/or top–bottom (`vertical`).
pub fn mirror_caption(caption: &str, horizontal: bool, vertical: bool) -> String {
    if !horizontal && !vertical {
        return caption.to_string();
    }
    let mut out = String::with_capacity(caption.len() + 8);
    let mut word = String::new();
    for ch in caption.chars().chain(std::iter::once('\0')) {
        if ch.is_ascii_alphabetic() {
            word.push(ch);
            continue;
        }
        if !word.is_empty() {
            out.push_str(&swap_word(&word, horizontal, vertical));
            word.clear();
        }
        if ch != '\0' {
            out.push(ch);
        }
    }
    out
}

/// `word` after the flips, with its first letter's case.
fn swap_word(word: &str, horizontal: bool, vertical: bool) -> String {
    let lower = word.to_ascii_lowercase();
    let swapped = match lower.as_str() {
        "left" | "lef" if horizontal => "right",
        "right" | "rigth" if horizontal => "left",
        "leftmost" if horizontal => "rightmost",
        "rightmost" if horizontal => "leftmost",
        "top" if vertical => "bottom",
        "bottom" | "botton" if vertical => "top",
        "upper" if vertical => "lower",
        "lower" if vertical => "upper",
        _ => return word.to_string(),
    };
    if word.starts_with(|c: char| c.is_ascii_uppercase()) {
        let mut s = swapped.to_string();
        s[..1].make_ascii_uppercase();
        s
    } else {
        swapped.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_whole_words_and_keeps_the_rest() {
        let c = "A sill-type deformation pattern of high intensity can be detected on the \
                 top-left side of the region.  Turbulent mixing on the right, topography \
                 correlated at the bottom. ";
        assert_eq!(
            mirror_caption(c, true, false),
            "A sill-type deformation pattern of high intensity can be detected on the \
             top-right side of the region.  Turbulent mixing on the left, topography \
             correlated at the bottom. "
        );
        assert_eq!(
            mirror_caption(c, false, true),
            "A sill-type deformation pattern of high intensity can be detected on the \
             bottom-left side of the region.  Turbulent mixing on the right, topography \
             correlated at the top. "
        );
        assert_eq!(
            mirror_caption(c, true, true),
            "A sill-type deformation pattern of high intensity can be detected on the \
             bottom-right side of the region.  Turbulent mixing on the left, topography \
             correlated at the top. "
        );
        assert_eq!(mirror_caption(c, false, false), c);
        // A caption without location words is unchanged by every flip.
        let c = "The image is very noisy. No information can be extracted. ";
        for (h, v) in [(true, false), (false, true), (true, true)] {
            assert_eq!(mirror_caption(c, h, v), c);
        }
    }

    #[test]
    fn case_typos_and_extreme_positions() {
        assert_eq!(
            mirror_caption(
                "Leftmost a dyke, rightmost none; rigth and botton.",
                true,
                true
            ),
            "Rightmost a dyke, leftmost none; left and top."
        );
        assert_eq!(
            mirror_caption("Upper and lower parts", false, true),
            "Lower and upper parts"
        );
        // Words that only contain a location word are not locations.
        assert_eq!(
            mirror_caption("topography, righteous, lefty", true, true),
            "topography, righteous, lefty"
        );
    }

    /// On the bundled real captions, the caption facts of a mirrored caption are the
    /// original's with the deformation cells mirrored, and nothing else changes.
    #[test]
    fn mirrored_real_captions_state_mirrored_locations() {
        use insar_mm_eval::captions::facts::CellSet;
        use insar_mm_eval::captions::parse_facts;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hephaestus-sample/annotations");
        let mirror_cells = |c: CellSet, h: bool, v: bool| {
            CellSet::from_cells(
                c.cells()
                    .into_iter()
                    .map(|(r, col)| (if v { 2 - r } else { r }, if h { 2 - col } else { col })),
            )
        };
        let mut located = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            let caption = json["caption"].as_str().unwrap_or_default();
            let facts = parse_facts(caption);
            located += usize::from(!facts.cells.is_empty());
            for (h, v) in [(true, false), (false, true), (true, true)] {
                let mirrored = parse_facts(&mirror_caption(caption, h, v));
                assert_eq!(
                    mirrored.cells,
                    mirror_cells(facts.cells, h, v),
                    "{caption:?} flipped ({h}, {v})"
                );
                let same = |f: &insar_mm_eval::captions::ParsedFacts| {
                    (
                        f.deformation,
                        f.activities.clone(),
                        f.intensities.clone(),
                        f.pattern_count,
                    )
                };
                assert_eq!(same(&mirrored), same(&facts), "{caption:?}");
            }
        }
        assert!(
            located >= 5,
            "only {located} bundled captions name a location"
        );
    }

    #[test]
    fn mirroring_twice_is_the_identity_on_correct_spelling() {
        let c = "Two deformation patterns: a mogi-type on the leftmost and a dyke on the \
                 bottom-right side; noise at the top.";
        for (h, v) in [(true, false), (false, true), (true, true)] {
            assert_eq!(mirror_caption(&mirror_caption(c, h, v), h, v), c);
        }
    }
}
