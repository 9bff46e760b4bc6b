//! Entry points of the fuzz harness (`fuzz/`, run with cargo-fuzz; see `fuzz/README.md`).
//!
//! Each target takes arbitrary bytes and must return without panicking, aborting or
//! allocating without bound; an error is the expected answer to most inputs. They go through
//! the same code as the commands: the annotation parser and archive reader, the PNG reader,
//! the weights and run-file loaders, and the caption tokenizer with the caption-fact parser.
//! The unit test below replays every committed corpus and crash file on stable Rust, so a
//! fixed crash stays fixed without a fuzzer.

use std::io::Read;
use std::sync::OnceLock;

use candle_core::{DType, Device};
use candle_nn::{Init, VarBuilder, VarMap};

use crate::data::annotation::parse_annotation;
use crate::data::loader::read_tar;
use crate::data::png::{ImageLimits, Png};
use crate::data::raster::annotation_mask;
use crate::text::{mirror_caption, CaptionTokenizer, TokenizerConfig};
use crate::train::checkpoint::{load_model_bytes, TrainState};
use crate::train::classify::ClassifyConfig;
use crate::train::segment::SegmentConfig;

/// A fuzz target: arbitrary bytes in, nothing out.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/` call them.
pub const TARGETS: [(&str, Target); 5] = [
    ("annotation", annotation),
    ("annotation_archive", annotation_archive),
    ("png", png),
    ("run_files", run_files),
    ("caption_text", caption_text),
];

/// One annotation JSON file, then what every command derives from it: labels, the
/// deformation list, the cleaned caption and a 64² mask of its polygons.
pub fn annotation(bytes: &[u8]) {
    if let Ok(a) = parse_annotation(bytes) {
        let _ = a.label_vector();
        let _ = a.deformations();
        let _ = a.clean_caption();
        let _ = annotation_mask(&a, 64, 64);
    }
}

/// An annotation archive: a tar stream, or a gzip-compressed one when the bytes start with
/// the gzip magic; every annotation file found is parsed.
pub fn annotation_archive(bytes: &[u8]) {
    let files = if bytes.starts_with(&[0x1f, 0x8b]) {
        read_tar(flate2::read::GzDecoder::new(bytes).take(64 << 20))
    } else {
        read_tar(bytes)
    };
    for (_, file) in files.into_iter().flatten() {
        annotation(&file);
    }
}

/// A PNG, decoded within small limits (so a header's claim is checked, not obeyed), then
/// converted as the loaders do.
pub fn png(bytes: &[u8]) {
    let limits = ImageLimits {
        max_side: 4096,
        max_bytes: 16 << 20,
    };
    if let Ok(image) = Png::decode_with_limits(bytes, limits) {
        let _ = image.gray();
        let _ = image.rgb8();
        let _ = image.alpha();
        let _ = image.valid();
    }
}

/// The files of a run: the bytes as a weights file loaded into a small model (shape,
/// dtype, finiteness and name checks), and as `config.json` of a classify and a segment run
/// and as `state.json`, each validated as loading a run does.
pub fn run_files(bytes: &[u8]) {
    let _ = load_model_bytes(bytes, "fuzz", fuzz_model());
    if let Ok(c) = crate::data::json::parse_json::<ClassifyConfig>(bytes) {
        let _ = c.validate();
    }
    if let Ok(c) = crate::data::json::parse_json::<SegmentConfig>(bytes) {
        let _ = c.validate();
    }
    if let Ok(s) = crate::data::json::parse_json::<TrainState>(bytes) {
        let _ = s.rng.restore();
    }
}

/// A caption (lossy UTF-8): tokenised and decoded back, mirrored, and read for facts; then
/// the bytes as token ids (little-endian u32) decoded; then the bytes as a `tokenizer.json`.
pub fn caption_text(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let tokenizer = fuzz_tokenizer();
    if let Ok(ids) = tokenizer.encode(&text, Some(64)) {
        let _ = tokenizer.decode(&ids);
    }
    let _ = mirror_caption(&text, true, true);
    let _ = insar_mm_eval::captions::facts::parse_facts(&text);
    let ids: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let _ = tokenizer.decode(&ids);
    if let Ok(loaded) = CaptionTokenizer::from_json(&text) {
        let _ = loaded.encode("a dyke-type deformation pattern of high intensity", None);
    }
}

/// A two-layer stand-in for a model's variables (loading checks do not depend on the model).
fn fuzz_model() -> &'static VarMap {
    static MODEL: OnceLock<VarMap> = OnceLock::new();
    MODEL.get_or_init(|| {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        vb.get_with_hints((2, 3), "a.weight", Init::Const(1.0))
            .expect("fuzz model");
        vb.get_with_hints(3, "a.bias", Init::Const(0.0))
            .expect("fuzz model");
        varmap
    })
}

/// A tokenizer trained once on a few Hephaestus-style captions.
fn fuzz_tokenizer() -> &'static CaptionTokenizer {
    static TOKENIZER: OnceLock<CaptionTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let captions = [
            "the interferogram shows a dyke-type deformation pattern of high intensity on the left side",
            "no deformation activity can be detected, turbulent atmospheric contributions are present",
            "a mogi-type deformation pattern of low intensity is located in the central area",
            "an earthquake deformation pattern covers a wider area, with low coherence",
        ];
        CaptionTokenizer::train(&captions, &TokenizerConfig::default()).expect("fuzz tokenizer")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Replays `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` (inputs that once
    /// crashed a target) through every target.
    #[test]
    fn fuzz_corpora_replay_without_panics() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    target(&std::fs::read(&path).unwrap());
                    replayed += 1;
                }
            }
        }
        assert!(
            replayed >= 20,
            "only {replayed} corpus files found under fuzz/"
        );
    }

    /// The archive reader refuses an entry whose header claims more than an annotation file
    /// can be, instead of allocating the claim.
    #[test]
    fn tar_entry_size_claims_are_not_allocated() {
        let mut header = tar::Header::new_gnu();
        header.set_path("annotations/1.json").unwrap();
        header.set_size(1 << 40);
        header.set_cksum();
        let bytes = header.as_bytes().to_vec();
        let err = read_tar(&bytes[..]).unwrap_err();
        assert!(
            format!("{err:#}").contains("too large for an annotation file"),
            "{err:#}"
        );
    }
}
