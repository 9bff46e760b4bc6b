//! Candle modules of insar-mm (no I/O): differentiable building blocks (`nn`), encoders and
//! contrastive heads (`encoder`), classification and segmentation heads (`heads`), and the
//! caption model (`caption`). Retrieval and diffusion models are planned, not present.
//!
//! Candle 0.11 silently drops gradients in several ops (docs/architecture.md §6): every
//! trainable model here has a test that one backward pass reaches every trainable variable.

pub mod caption;
pub mod diffusion;
pub mod encoder;
pub mod heads;
pub mod nn;
