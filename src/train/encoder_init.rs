//! Where a model's encoder starts (`--encoder auto|shipped|none|RUN`): the pretrained tiny
//! encoder shipped inside the binary, a random initialisation, or the encoder of a run.
//!
//! The shipped encoder (`weights/simclr-tiny/`, model card beside it) is a SimCLR run of
//! the tiny preset on the built-in synthetic stream with nuisance-twin positives (issue
//! 21). Its bytes are compiled into the binary, so loading it needs no network and no file
//! next to the binary; they are checked against [`SHIPPED_SHA256`] before use. `auto`, the
//! default of classify, segment and caption, takes it when the model's encoder has its
//! architecture and input format, and a random initialisation otherwise.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::Device;
use candle_nn::VarMap;
use insar_mm_models::encoder::EncoderConfig;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::config::PretrainConfig;
use super::heads::{encoder_run, load_encoder_tensors, varmap_device};
use crate::data::frames::InputFormat;

/// The shipped encoder's weights (a `train pretrain` run's best `model.safetensors`).
const SHIPPED_WEIGHTS: &[u8] = include_bytes!("../../weights/simclr-tiny/model.safetensors");
/// The shipped run's `config.json` (a [`PretrainConfig`]).
const SHIPPED_CONFIG: &str = include_str!("../../weights/simclr-tiny/config.json");
/// SHA-256 of [`SHIPPED_WEIGHTS`] (also in the model card).
pub const SHIPPED_SHA256: &str = "67d1997e59f8844b300166056a05ed907d2a84f78954f99ea3c9c8aaa6d88dec";

/// How a model's encoder is initialised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EncoderInit {
    /// The shipped encoder when it fits the model (architecture and input format), else
    /// random. A run records what this resolved to.
    #[default]
    Auto,
    /// The shipped encoder; an error when it does not fit.
    Shipped,
    /// A random initialisation from the run seed (`none`).
    Random,
    /// The encoder of a `train pretrain`, `train classify` or `train segment` run.
    Run(PathBuf),
}

impl EncoderInit {
    /// `auto`, `shipped`, `none` or a run folder (`./none` for a folder named so).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "" => return Err("empty: expected auto, shipped, none or a run folder".into()),
            "auto" => Self::Auto,
            "shipped" => Self::Shipped,
            "none" => Self::Random,
            path => Self::Run(PathBuf::from(path)),
        })
    }

    /// Resolves the choice for a model whose own encoder would be `model` on `input`
    /// data: the concrete choice (never `Auto`) and the encoder to load (`None`: random).
    pub fn resolve(
        &self,
        model: &EncoderConfig,
        input: InputFormat,
    ) -> Result<(EncoderInit, Option<PretrainedEncoder>)> {
        let loaded = match self {
            Self::Random => return Ok((Self::Random, None)),
            Self::Auto => {
                let shipped = shipped()?;
                if shipped.encoder != *model || shipped.input_format != input {
                    log::info!(
                        "encoder: random initialisation (the shipped encoder is the tiny preset on {:?} input)",
                        shipped.input_format
                    );
                    return Ok((Self::Random, None));
                }
                return Ok((Self::Shipped, Some(shipped)));
            }
            Self::Shipped => shipped()?,
            Self::Run(path) => {
                let run = encoder_run(path)?;
                PretrainedEncoder {
                    origin: format!("--encoder {}", path.display()),
                    encoder: run.encoder,
                    input_format: run.input_format,
                    weights: EncoderWeights::File(run.weights),
                }
            }
        };
        ensure!(
            loaded.input_format == input,
            "{}: the encoder was trained on {:?} input, this run uses {:?}",
            loaded.origin,
            loaded.input_format,
            input
        );
        Ok((self.clone(), Some(loaded)))
    }
}

/// The encoder a new run starts from: resolves `init` for a model whose own encoder is
/// `encoder` on `input` data, records the choice in `init` and, when a pretrained encoder
/// is taken, its architecture in `encoder`. Returns the encoder to load after the model is
/// built ([`load_pretrained`]).
pub fn start_encoder(
    init: &mut EncoderInit,
    encoder: &mut EncoderConfig,
    input: InputFormat,
) -> Result<Option<PretrainedEncoder>> {
    let (resolved, loaded) = init.resolve(encoder, input)?;
    if let Some(p) = &loaded {
        *encoder = p.encoder.clone();
    }
    *init = resolved;
    Ok(loaded)
}

/// Loads `pretrained`, when there is one, into the `encoder.*` variables of `varmap`.
pub fn load_pretrained(pretrained: Option<&PretrainedEncoder>, varmap: &VarMap) -> Result<()> {
    if let Some(p) = pretrained {
        let n = p.load_into(varmap)?;
        log::info!("encoder initialised from {} ({n} tensors)", p.origin);
    }
    Ok(())
}

impl fmt::Display for EncoderInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Shipped => f.write_str("shipped"),
            Self::Random => f.write_str("none"),
            Self::Run(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Serialize for EncoderInit {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A string as [`EncoderInit::parse`]; `null` (what runs saved before the shipped encoder
/// hold when they had no `--encoder`) is a random initialisation.
impl<'de> Deserialize<'de> for EncoderInit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(Self::Random),
            Some(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Where a pretrained encoder's tensors are.
#[derive(Debug, Clone, PartialEq)]
pub enum EncoderWeights {
    File(PathBuf),
    Shipped,
}

/// A pretrained encoder ready to load: architecture, input format and weights.
#[derive(Debug, Clone)]
pub struct PretrainedEncoder {
    /// What error messages name (`--encoder RUN`, `the shipped encoder`).
    pub origin: String,
    pub encoder: EncoderConfig,
    pub input_format: InputFormat,
    pub weights: EncoderWeights,
}

impl PretrainedEncoder {
    /// Sets the `encoder.*` variables of `varmap` (every one must be present with the same
    /// shape); returns how many were set.
    pub fn load_into(&self, varmap: &VarMap) -> Result<usize> {
        match &self.weights {
            EncoderWeights::File(path) => super::heads::load_encoder_weights(path, varmap)
                .with_context(|| self.origin.clone()),
            EncoderWeights::Shipped => {
                let tensors = shipped_tensors(&varmap_device(varmap))?;
                load_encoder_tensors(&tensors, Path::new("weights/simclr-tiny"), varmap)
                    .context("the shipped encoder")
            }
        }
    }
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks `bytes` against the expected checksum `expected` (the shipped file or another).
pub fn verify_checksum(bytes: &[u8], expected: &str, what: &str) -> Result<()> {
    let got = sha256_hex(bytes);
    ensure!(
        got == expected,
        "{what}: SHA-256 {got} differs from the expected {expected}: the weights file is corrupted or was replaced without updating the checksum (weights/simclr-tiny/MODEL_CARD.md tells how to ship new weights)"
    );
    Ok(())
}

/// The shipped encoder's architecture and input format (its checksum verified).
pub fn shipped() -> Result<PretrainedEncoder> {
    verify_checksum(SHIPPED_WEIGHTS, SHIPPED_SHA256, "the shipped encoder")?;
    let cfg: PretrainConfig = serde_json::from_str(SHIPPED_CONFIG)
        .context("the shipped encoder's config.json does not parse as a pretrain config")?;
    let encoder = cfg
        .model
        .encoder()
        .context("the shipped encoder's config.json")?;
    Ok(PretrainedEncoder {
        origin: "the shipped encoder".into(),
        encoder,
        input_format: cfg.data.input_format,
        weights: EncoderWeights::Shipped,
    })
}

/// The shipped weights as tensors on `device` (checksum verified).
fn shipped_tensors(
    device: &Device,
) -> Result<std::collections::HashMap<String, candle_core::Tensor>> {
    verify_checksum(SHIPPED_WEIGHTS, SHIPPED_SHA256, "the shipped encoder")?;
    candle_core::safetensors::load_buffer(SHIPPED_WEIGHTS, device)
        .context("the shipped encoder's weights do not parse as safetensors")
}

/// Writes the shipped encoder as a `train pretrain` run folder (`config.json`,
/// `model.safetensors`) in `dir`, for the commands that take a run (`bench ssl --encoder
/// shipped`); returns `dir`.
pub fn write_shipped_run(dir: &Path) -> Result<PathBuf> {
    verify_checksum(SHIPPED_WEIGHTS, SHIPPED_SHA256, "the shipped encoder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::data::atomic::write_atomic(&dir.join("config.json"), SHIPPED_CONFIG.as_bytes())?;
    crate::data::atomic::write_atomic(&dir.join("model.safetensors"), SHIPPED_WEIGHTS)?;
    Ok(dir.to_path_buf())
}

/// The shipped weights' raw bytes (for the model card's checksum and tests).
pub fn shipped_bytes() -> &'static [u8] {
    SHIPPED_WEIGHTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_serialise_round_trip() {
        for (text, init) in [
            ("auto", EncoderInit::Auto),
            ("shipped", EncoderInit::Shipped),
            ("none", EncoderInit::Random),
            ("runs/pretrain", EncoderInit::Run("runs/pretrain".into())),
            ("./none", EncoderInit::Run("./none".into())),
        ] {
            assert_eq!(EncoderInit::parse(text).unwrap(), init);
            let json = serde_json::to_string(&init).unwrap();
            assert_eq!(serde_json::from_str::<EncoderInit>(&json).unwrap(), init);
        }
        assert!(EncoderInit::parse("").is_err());
        // Runs saved before the shipped encoder hold null for "no --encoder".
        assert_eq!(
            serde_json::from_str::<EncoderInit>("null").unwrap(),
            EncoderInit::Random
        );
    }

    #[test]
    fn the_shipped_encoder_passes_its_checksum_and_loads() {
        assert_eq!(sha256_hex(shipped_bytes()), SHIPPED_SHA256);
        let s = shipped().unwrap();
        assert_eq!(s.input_format, InputFormat::default());
        let varmap = VarMap::new();
        let _model = insar_mm_models::encoder::ResNet::new(
            &s.encoder,
            insar_mm_models::nn::seeded_var_builder(
                &varmap,
                1,
                candle_core::DType::F32,
                &Device::Cpu,
            )
            .pp("encoder"),
        )
        .unwrap();
        let n = s.load_into(&varmap).unwrap();
        assert!(n > 10, "only {n} tensors set");
    }

    #[test]
    fn a_changed_byte_fails_the_checksum_with_a_clear_error() {
        let mut bytes = shipped_bytes().to_vec();
        let k = bytes.len() / 2;
        bytes[k] ^= 1;
        let e = verify_checksum(&bytes, SHIPPED_SHA256, "the shipped encoder")
            .unwrap_err()
            .to_string();
        assert!(e.contains("corrupted") && e.contains(SHIPPED_SHA256), "{e}");
        verify_checksum(shipped_bytes(), SHIPPED_SHA256, "the shipped encoder").unwrap();
    }

    #[test]
    fn auto_takes_the_shipped_encoder_only_when_it_fits() {
        let s = shipped().unwrap();
        let (init, enc) = EncoderInit::Auto
            .resolve(&s.encoder, s.input_format)
            .unwrap();
        assert_eq!(init, EncoderInit::Shipped);
        assert!(enc.is_some());
        let other = EncoderConfig::preset("resnet18")
            .unwrap()
            .with_in_channels(s.encoder.in_channels);
        let (init, enc) = EncoderInit::Auto.resolve(&other, s.input_format).unwrap();
        assert_eq!(init, EncoderInit::Random);
        assert!(enc.is_none());
        // Explicitly asked for, a mismatch is an error (here: another input format).
        let other_format = InputFormat::PhaseCoherence;
        assert_ne!(other_format, s.input_format);
        let e = EncoderInit::Shipped
            .resolve(&s.encoder, other_format)
            .unwrap_err()
            .to_string();
        assert!(e.contains("shipped encoder"), "{e}");
        let (init, enc) = EncoderInit::Random
            .resolve(&s.encoder, s.input_format)
            .unwrap();
        assert_eq!((init, enc.is_none()), (EncoderInit::Random, true));
    }
}
