//! Hephaestus data engine: annotation schema and loaders, raw-frame and patch layouts,
//! polygon rasterisation, splits, samplers.

pub mod annotation;
pub mod array;
pub mod frames;
pub mod loader;
pub mod png;
pub mod raster;
pub mod resample;
pub mod sample;

#[cfg(test)]
mod opencv_reference_tests;
