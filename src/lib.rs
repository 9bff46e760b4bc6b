//! insar-mm: a multimodal research suite for InSAR interferograms.
//!
//! The library holds the data engine (`data`), the synthetic generator (`synth`), the
//! training loops (`train`), text handling (`text`) and progress bars (`progress`). The command-line interface lives in
//! the binary (`src/main.rs`, `src/cli/`) so that no library module can import it.
//! Candle modules live in the `insar-mm-models` crate, metrics in `insar-mm-eval`.

pub mod assets;
pub mod data;
pub mod device;
pub mod experiments;
pub mod fuzz;
pub mod progress;
pub mod retrieval;
pub mod synth;
pub mod text;
pub mod train;
