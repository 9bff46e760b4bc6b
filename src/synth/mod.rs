//! Physics-based synthetic interferogram generator writing the Hephaestus layout (docs/architecture.md §2.2).

pub mod atmosphere;
pub mod builtin;
pub mod captions;
pub mod coherence;
pub mod errors;
pub mod fastmath;
pub mod gallery;
pub mod generate;
pub mod goldstein;
pub mod grid;
pub mod los;
pub mod orbital;
pub mod phase;
pub mod render;
pub mod scene;
pub mod sources;
pub mod stream;
pub mod terrain;
