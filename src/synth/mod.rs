//! Physics-based synthetic interferogram generator writing the Hephaestus layout (DESIGN.md §2.2).

pub mod captions;
pub mod grid;
pub mod los;
pub mod phase;
pub mod scene;
pub mod sources;
