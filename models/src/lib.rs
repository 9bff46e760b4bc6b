//! Candle modules of insar-mm (no I/O): differentiable building blocks (`nn`), encoders and
//! contrastive heads (`encoder`), classification and segmentation heads (`heads`), the caption
//! model (`caption`), the text encoder (`text`) shared by retrieval and generation, and the
//! retrieval dual encoder (`retrieval`) and the caption-conditioned diffusion model
//! (`diffusion`).
//!
//! Candle 0.11 silently drops gradients in several ops (docs/architecture.md §6): every
//! trainable model here has a test that one backward pass reaches every trainable variable.

pub mod caption;
pub mod diffusion;
pub mod encoder;
pub mod heads;
pub mod nn;
pub mod retrieval;
pub mod text;
