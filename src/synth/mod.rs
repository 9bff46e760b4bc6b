//! Physics-based synthetic interferogram generator writing the Hephaestus layout (DESIGN.md §2.2).

pub mod atmosphere;
pub mod coherence;
pub mod colormap;
pub mod errors;
pub mod goldstein;
pub mod grid;
pub mod orbital;
pub mod render;
pub mod terrain;
