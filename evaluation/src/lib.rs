//! insar-mm-eval: evaluation metrics identical to their reference implementations.
//! No Candle dependency: inputs are caption files and plain feature matrices.
//!
//! - [`captions`]: BLEU-1..4, ROUGE-L and CIDEr-D exactly as pycocoevalcap 1.2 computes
//!   them, with a re-implementation of the PTB tokenizer behaviour it relies on.
//!   METEOR and SPICE are not computed.
//! - [`fid`]: FID (exact, via symmetric eigendecompositions or singular values; and a
//!   pytorch-fid compatibility mode), KID, saveable feature statistics (`.npz`).
//! - [`generation`]: prompt fidelity with a shuffled-prompt control, the complete-fringe
//!   intensity rule on a wrapped phase, nearest-training distances (memorisation).
//! - [`retrieval`]: R@K, median and mean rank, mAP from a similarity matrix.
//! - [`classification`]: per-class and averaged precision/recall/F1, AP, AUROC, confusion.
//! - [`segmentation`]: dataset-level confusion matrix, IoU, Dice, accuracies; IoU of
//!   classes merged into groups (the source-type groups the fringes can tell apart).
//! - [`npy`]: reading and writing NumPy `.npy` matrices.

pub mod captions;
pub mod classification;
pub mod error;
pub mod fid;
pub mod generation;
pub mod npy;
pub mod retrieval;
pub mod segmentation;

pub use error::{EvalError, Result};
