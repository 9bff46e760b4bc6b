//! The caption tokenizer: byte-level BPE trained with the `tokenizers` crate on the training
//! captions, saved as a standard `tokenizer.json` (loadable by Python's
//! `tokenizers.Tokenizer.from_file`).
//!
//! Pipeline (all stored in the JSON, so Python reproduces it exactly):
//! - normaliser: NFKC, every run of whitespace → one space, strip both ends, lowercase. Real
//!   Hephaestus captions carry leading/trailing blanks, double spaces and mixed case
//!   (docs/architecture.md §2.1); these fold away before tokenisation.
//! - pre-tokeniser: GPT-2 byte level with a prefix space (a word is the same token at the
//!   start of a caption and inside it), so any text encodes without `[UNK]` and decodes back
//!   to exactly its normalised form.
//! - model: BPE whose alphabet is all 256 bytes, merges learned from the captions.
//! - post-processor: `[BOS] $A [EOS]`, so `encode(caption).ids` is the training sequence.
//! - special tokens (ids fixed): `[PAD]` 0, `[BOS]` 1, `[EOS]` 2, `[UNK]` 3.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::{
    replace::ReplacePattern, Lowercase, Replace, Sequence as NormalizerSequence, Strip, NFKC,
};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, Tokenizer};

use crate::data::atomic::write_atomic;

/// Padding token (id 0).
pub const PAD: &str = "[PAD]";
/// Start of a caption (id 1).
pub const BOS: &str = "[BOS]";
/// End of a caption (id 2).
pub const EOS: &str = "[EOS]";
/// Unknown token (id 3; never produced by the byte-level model, kept for compatibility).
pub const UNK: &str = "[UNK]";
/// The special tokens in id order.
pub const SPECIAL_TOKENS: [&str; 4] = [PAD, BOS, EOS, UNK];

/// Options of [`CaptionTokenizer::train`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// Upper bound on the vocabulary (4 special tokens + 256 bytes + merges). Training stops
    /// earlier once every word of the corpus is a single token.
    pub vocab_size: usize,
    /// A pair must occur this often to be merged.
    pub min_frequency: u64,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            vocab_size: 2000,
            min_frequency: 2,
        }
    }
}

/// A trained caption tokenizer with the ids of its special tokens.
#[derive(Clone)]
pub struct CaptionTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    bos_id: u32,
    eos_id: u32,
}

impl std::fmt::Debug for CaptionTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptionTokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

fn tk_err(e: tokenizers::Error) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn normalizer() -> Result<NormalizerWrapper> {
    let whitespace = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ").map_err(tk_err)?;
    Ok(NormalizerSequence::new(vec![
        NFKC.into(),
        whitespace.into(),
        Strip::new(true, true).into(),
        Lowercase.into(),
    ])
    .into())
}

fn template(bos_id: u32, eos_id: u32) -> Result<TemplateProcessing> {
    TemplateProcessing::builder()
        .try_single(format!("{BOS} $A {EOS}"))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .try_pair(format!("{BOS} $A {EOS} $B:1 {EOS}:1"))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .special_tokens(vec![(BOS, bos_id), (EOS, eos_id)])
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

impl CaptionTokenizer {
    /// Trains a tokenizer on `captions` (the training split's captions only).
    pub fn train<S: AsRef<str>>(captions: &[S], cfg: &TokenizerConfig) -> Result<Self> {
        let min_vocab = SPECIAL_TOKENS.len() + 256;
        if cfg.vocab_size < min_vocab {
            bail!(
                "tokenizer vocab_size must be at least {min_vocab} (4 special tokens + 256 bytes), got {}",
                cfg.vocab_size
            )
        }
        let texts: Vec<&str> = captions
            .iter()
            .map(|c| c.as_ref())
            .filter(|c| !c.trim().is_empty())
            .collect();
        if texts.is_empty() {
            bail!("cannot train a tokenizer: no non-empty caption")
        }
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(cfg.vocab_size)
            .min_frequency(cfg.min_frequency)
            .initial_alphabet(alphabet)
            .special_tokens(
                SPECIAL_TOKENS
                    .iter()
                    .map(|t| AddedToken::from(t.to_string(), true))
                    .collect(),
            )
            .build();
        let mut trainer: TrainerWrapper = trainer.into();
        let bpe = BPE::builder()
            .unk_token(UNK.to_string())
            .build()
            .map_err(tk_err)?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer
            .with_normalizer(Some(normalizer()?))
            .map_err(tk_err)?;
        tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::from(ByteLevel::new(
            true, true, true,
        ))));
        tokenizer.with_decoder(Some(DecoderWrapper::from(ByteLevelDecoder::default())));
        tokenizer
            .train(&mut trainer, texts.into_iter())
            .map_err(tk_err)
            .context("training the caption tokenizer")?;
        let ids: Vec<u32> = SPECIAL_TOKENS
            .iter()
            .map(|t| {
                tokenizer
                    .token_to_id(t)
                    .expect("special tokens are in the vocabulary")
            })
            .collect();
        if ids != [0, 1, 2, 3] {
            bail!("tokenizer training put the special tokens at ids {ids:?}, expected [0, 1, 2, 3]")
        }
        tokenizer.with_post_processor(Some(template(ids[1], ids[2])?));
        Self::from_tokenizer(tokenizer).context("trained tokenizer")
    }

    /// Wraps a loaded tokenizer, checking that it has the special tokens.
    pub fn from_tokenizer(inner: Tokenizer) -> Result<Self> {
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .with_context(|| format!("tokenizer has no {t} token"))
        };
        Ok(Self {
            pad_id: id(PAD)?,
            bos_id: id(BOS)?,
            eos_id: id(EOS)?,
            inner,
        })
    }

    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read tokenizer", path.display()))?;
        Self::from_json(&text).with_context(|| format!("{}", path.display()))
    }

    /// Reads the `tokenizer.json` format (checking the special tokens).
    pub fn from_json(text: &str) -> Result<Self> {
        let inner: Tokenizer = text
            .parse()
            .map_err(|e| anyhow::anyhow!("cannot load tokenizer: {e}"))?;
        Self::from_tokenizer(inner)
    }

    /// Serialises to the `tokenizer.json` format.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(tk_err)
    }

    /// Writes `tokenizer.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_json()?.as_bytes())
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Number of token ids (including the special tokens): the model's vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The caption as the tokenizer sees it (whitespace folded, trimmed, lowercase).
    pub fn normalize(&self, text: &str) -> Result<String> {
        use tokenizers::tokenizer::Normalizer;
        let mut s = tokenizers::NormalizedString::from(text);
        if let Some(n) = self.inner.get_normalizer() {
            n.normalize(&mut s).map_err(tk_err)?;
        }
        Ok(s.get().to_string())
    }

    /// `[BOS] tokens… [EOS]`. With `max_len`, the tokens are cut so that the sequence,
    /// `[BOS]` and `[EOS]` included, has at most `max_len` ids (it always ends in `[EOS]`).
    /// An empty caption (nothing left after normalisation) is an error.
    pub fn encode(&self, text: &str, max_len: Option<usize>) -> Result<Vec<u32>> {
        if self.normalize(text)?.is_empty() {
            bail!("empty caption")
        }
        let enc = self
            .inner
            .encode(text, true)
            .map_err(tk_err)
            .with_context(|| format!("cannot tokenize {text:?}"))?;
        let mut ids = enc.get_ids().to_vec();
        if let Some(max) = max_len {
            if max < 2 {
                bail!("max_len must leave room for [BOS] and [EOS], got {max}")
            }
            if ids.len() > max {
                ids.truncate(max - 1);
                ids.push(self.eos_id);
            }
        }
        Ok(ids)
    }

    /// Encodes `captions` into one row-major `(B, T)` id matrix right-padded with `[PAD]`,
    /// `T` the longest sequence (at most `max_len`). Returns the ids and `T`.
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        captions: &[S],
        max_len: usize,
    ) -> Result<(Vec<u32>, usize)> {
        let seqs = captions
            .iter()
            .enumerate()
            .map(|(i, c)| {
                self.encode(c.as_ref(), Some(max_len))
                    .with_context(|| format!("caption {i} of the batch"))
            })
            .collect::<Result<Vec<_>>>()?;
        let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut flat = Vec::with_capacity(seqs.len() * t);
        for s in seqs {
            let n = s.len();
            flat.extend(s);
            flat.extend(std::iter::repeat_n(self.pad_id, t - n));
        }
        Ok((flat, t))
    }

    /// Text of `ids`: stops at the first `[EOS]`, skips the special tokens, trims the
    /// byte-level prefix space. `decode(encode(x)) == normalize(x)`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let end = ids
            .iter()
            .position(|&i| i == self.eos_id)
            .unwrap_or(ids.len());
        let vocab = self.vocab_size() as u32;
        if let Some(bad) = ids[..end].iter().find(|&&i| i >= vocab) {
            bail!("token id {bad} is outside the tokenizer's vocabulary of {vocab}")
        }
        let text = self.inner.decode(&ids[..end], true).map_err(tk_err)?;
        Ok(text.trim().to_string())
    }

    /// Errors unless this tokenizer's vocabulary matches a model's output size.
    pub fn check_model_vocab(&self, model_vocab: usize, model: &str) -> Result<()> {
        let own = self.vocab_size();
        if own != model_vocab {
            bail!(
                "tokenizer has {own} tokens but the model {model} expects {model_vocab}: \
                 the tokenizer.json does not belong to this model"
            )
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        vec![
            " Turbulent mixing effect or wave-like patterns caused by liquid and solid particles of the atmosphere can be detected around the area. No deformation activity can be detected. ".into(),
            "Vertical stratification caused by atmospheric delays can be detected in high altitude  areas. No deformation activity can be detected. ".into(),
            "A Mogi source of high intensity can be detected in the bottom-right side of the region.".into(),
            "Noise caused by low coherence can be detected on the top-left and right side.".into(),
            "Two deformation patterns can be detected: a dyke of medium intensity and a sill.".into(),
        ]
    }

    #[test]
    fn round_trip_special_ids_and_normalisation() -> Result<()> {
        let tok = CaptionTokenizer::train(&corpus(), &TokenizerConfig::default())?;
        assert_eq!(
            (tok.pad_id(), tok.bos_id(), tok.eos_id()),
            (0, 1, 2),
            "special token ids"
        );
        for c in corpus() {
            let ids = tok.encode(&c, None)?;
            assert_eq!(ids[0], 1);
            assert_eq!(*ids.last().unwrap(), 2);
            assert!(!ids[1..ids.len() - 1].iter().any(|&i| i < 4), "{ids:?}");
            let norm = tok.normalize(&c)?;
            assert_eq!(tok.decode(&ids)?, norm);
            assert!(!norm.contains("  ") && norm == norm.trim() && norm == norm.to_lowercase());
        }
        // Case and whitespace irregularities fold to the same ids.
        let a = tok.encode("No deformation activity can be detected.", None)?;
        let b = tok.encode("  no   DEFORMATION activity\tcan be detected. \n", None)?;
        assert_eq!(a, b);
        // Frequent training words are single tokens (the full stop is its own): a short
        // caption is short.
        assert_eq!(a.len(), 2 + 6 + 1, "{a:?}");
        // Unseen characters and typos still round trip (byte level, no [UNK]).
        let odd = "atmoshperic deforamtion ünïcödé 42 °C";
        let ids = tok.encode(odd, None)?;
        assert!(!ids.contains(&3));
        assert_eq!(tok.decode(&ids)?, tok.normalize(odd)?);
        // Truncation keeps [EOS]; decode stops at [EOS].
        let cut = tok.encode(&corpus()[0], Some(5))?;
        assert_eq!(cut.len(), 5);
        assert_eq!(cut[4], 2);
        let mut tail = a.clone();
        tail.extend([a[1], a[2]]);
        assert_eq!(tok.decode(&tail)?, tok.decode(&a)?);
        assert!(tok.decode(&[1, 100_000]).is_err());
        Ok(())
    }

    #[test]
    fn save_load_round_trip_and_vocab_check() -> Result<()> {
        let tok = CaptionTokenizer::train(&corpus(), &TokenizerConfig::default())?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tokenizer.json");
        tok.save(&path)?;
        let back = CaptionTokenizer::from_file(&path)?;
        assert_eq!(back.vocab_size(), tok.vocab_size());
        for c in corpus() {
            assert_eq!(back.encode(&c, None)?, tok.encode(&c, None)?);
        }
        // Training is deterministic: same corpus, same file.
        let again = CaptionTokenizer::train(&corpus(), &TokenizerConfig::default())?;
        assert_eq!(again.to_json()?, tok.to_json()?);

        tok.check_model_vocab(tok.vocab_size(), "run/")?;
        let err = tok
            .check_model_vocab(tok.vocab_size() + 1, "run/")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not belong"), "{err}");

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{not json")?;
        let err = format!("{:#}", CaptionTokenizer::from_file(&bad).unwrap_err());
        assert!(err.contains("bad.json"), "{err}");
        Ok(())
    }

    #[test]
    fn batches_pad_and_empty_captions_fail() -> Result<()> {
        let tok = CaptionTokenizer::train(&corpus(), &TokenizerConfig::default())?;
        let (ids, t) =
            tok.encode_batch(&["no deformation", "a mogi source of high intensity"], 64)?;
        let long = tok.encode("a mogi source of high intensity", None)?;
        assert_eq!(t, long.len());
        assert_eq!(&ids[t..], &long[..]);
        let short = tok.encode("no deformation", None)?;
        assert_eq!(&ids[..short.len()], &short[..]);
        assert!(ids[short.len()..t].iter().all(|&i| i == 0));
        let err = format!("{:#}", tok.encode_batch(&["fine", " \t "], 64).unwrap_err());
        assert!(
            err.contains("caption 1") && err.contains("empty caption"),
            "{err}"
        );
        Ok(())
    }

    /// Writes `tokenizer.json` and reference encodings for the Python check (`pip install
    /// tokenizers`): `INSAR_MM_TOKENIZER_DUMP=DIR cargo test --release --lib -- --ignored dump_for_python`.
    #[test]
    #[ignore]
    fn dump_for_python() -> Result<()> {
        let dir = std::path::PathBuf::from(std::env::var("INSAR_MM_TOKENIZER_DUMP")?);
        let tok = CaptionTokenizer::train(&corpus(), &TokenizerConfig::default())?;
        tok.save(&dir.join("tokenizer.json"))?;
        let mut texts = corpus();
        texts.push("  Atmoshperic   DEFORAMTION ünïcödé 42 °C ".into());
        let cases: Vec<serde_json::Value> = texts
            .iter()
            .map(|t| {
                Ok(serde_json::json!({
                    "text": t,
                    "ids": tok.encode(t, None)?,
                    "decoded": tok.decode(&tok.encode(t, None)?)?,
                }))
            })
            .collect::<Result<_>>()?;
        write_atomic(
            &dir.join("cases.json"),
            serde_json::to_string(&cases)?.as_bytes(),
        )
    }

    #[test]
    fn training_errors() {
        let empty: [&str; 2] = ["", "   "];
        assert!(CaptionTokenizer::train(&empty, &TokenizerConfig::default()).is_err());
        let small = TokenizerConfig {
            vocab_size: 100,
            min_frequency: 1,
        };
        let err = CaptionTokenizer::train(&corpus(), &small)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 260"), "{err}");
    }
}
