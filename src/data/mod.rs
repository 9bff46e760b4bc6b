//! Hephaestus data engine: annotation schema and loaders, raw-frame and patch layouts,
//! polygon rasterisation, splits, samplers.

pub mod array;
pub mod augment;
pub mod sample;
