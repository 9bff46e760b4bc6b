//! Differentiable building blocks that Candle 0.11 lacks or gets wrong (docs/architecture.md §6).
//!
//! | piece | why it exists |
//! | --- | --- |
//! | [`seeded_var_builder`] | candle's CPU RNG cannot be seeded: parameters drawn from `(seed, name)` |
//! | [`LayerNorm`] | `candle_nn::LayerNorm` has no backward on its fast path |
//! | [`softmax_last_dim`] | `ops::softmax_last_dim` has no backward |
//! | [`MultiHeadAttention`] | padding + causal masks, NaN-free on fully padded rows |
//! | [`bce_with_logits`], [`sigmoid_focal_loss`] | candle's BCE is NaN at large logits |
//! | [`max_pool2d`] | candle's pool has no backward when kernel ≠ stride |
//! | [`upsample_nearest2d`] | candle's backward overwrites instead of accumulating |
//! | [`group_norm`] | candle-nn's (composed, checked here), validated |
//! | [`BatchNorm`] | PyTorch semantics; fused CPU training kernels (~10× faster backward) |
//! | [`conv2d_on_data`] | first-layer conv without the wasted input gradient |
//! | [`conv2d_im2col`] | CPU conv by im2col (Caffe layout) + strided GEMM, backward by GEMM + col2im |
//! | [`add_relu`], [`BatchNorm::forward_relu_t`] | a residual add or a BatchNorm fused with its ReLU (one masking pass backward) |
//! | [`Mlp`], [`timestep_embedding`], [`SeededDropout`] | common pieces, reproducible |
//!
//! Every op here has a finite-difference gradient test (f64, CPU); [`check`] holds the
//! helpers every model test uses to prove that each trainable variable gets a gradient.

pub mod attention;
pub mod check;
pub mod conv;
pub mod dropout;
pub mod embedding;
mod fused_batch_norm;
pub mod init;
pub mod layers;
pub mod loss;
pub mod mlp;
pub mod norm;
pub mod ops;
pub mod parallel;
pub mod pool;
pub mod upsample;

pub use attention::{multi_head_attention, AttentionConfig, MultiHeadAttention};
pub use conv::{conv2d_im2col, conv2d_on_data};
pub use dropout::SeededDropout;
pub use embedding::{sinusoidal_position_embedding, timestep_embedding};
pub use init::seeded_var_builder;
pub use layers::{conv2d, linear, linear_no_bias, torch_default_init, KAIMING_NORMAL_FAN_OUT};
pub use loss::{bce_with_logits, bce_with_logits_elementwise, sigmoid_focal_loss, softplus};
pub use mlp::{mlp, Activation, Mlp, MlpConfig};
pub use norm::{
    batch_norm, group_norm, layer_norm, layer_norm_no_bias, BatchNorm, BatchNormOptions, GroupNorm,
    LayerNorm,
};
pub use ops::{add_relu, l2_normalize, masked_fill, softmax_last_dim};
pub use pool::{
    global_avg_pool, global_max_pool, max_pool2d, max_pool2d_composed, MaxPool2dConfig,
};
pub use upsample::{upsample_nearest2d, upsample_nearest2d_scale};
