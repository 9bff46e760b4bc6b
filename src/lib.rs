//! insar-mm: a multimodal research suite for InSAR interferograms.
//!
//! The library holds the data engine (`data`), the synthetic generator (`synth`), the
//! training loops (`train`), text handling (`text`) and the command-line interface (`cli`).
//! Candle modules live in the `insar-mm-models` crate, metrics in `insar-mm-eval`.

pub mod assets;
pub mod cli;
pub mod data;
pub mod device;
pub mod retrieval;
pub mod synth;
pub mod text;
pub mod train;
