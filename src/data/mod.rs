//! Hephaestus data engine: annotation schema and loaders, raw-frame and patch layouts,
//! polygon rasterisation, splits, samplers.

pub mod annotation;
pub mod array;
pub mod atomic;
pub mod augment;
pub mod colormap;
pub mod dataset;
pub mod frames;
pub mod json;
pub mod loader;
pub mod patches;
pub mod png;
pub mod raster;
pub mod resample;
pub mod sample;
pub mod sampler;
pub mod split;
pub mod stats;

#[cfg(test)]
mod opencv_reference_tests;
