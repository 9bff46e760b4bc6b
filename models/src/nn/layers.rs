//! Linear and convolution constructors with PyTorch's initialisations.
//!
//! candle-nn's `linear`/`conv2d` draw weights from Kaiming-normal fan-in (std √(2/fan_in)),
//! larger than PyTorch's defaults; these constructors reproduce PyTorch so that recipes tuned
//! there (learning rates, warm-ups) transfer. Built through a seeded `VarBuilder`
//! ([`crate::nn::seeded_var_builder`]) the draws are reproducible.

use candle_core::Result;
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Conv2d, Conv2dConfig, Init, Linear, VarBuilder};

/// PyTorch's `nn.Linear`/`nn.Conv2d` default: weights and biases `U(±1/√fan_in)`
/// (`kaiming_uniform_(a=√5)`).
pub fn torch_default_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// torchvision ResNet convolutions: `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
pub const KAIMING_NORMAL_FAN_OUT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanOut,
    non_linearity: NonLinearity::ReLU,
};

/// `nn.Linear(in_dim, out_dim)` with PyTorch's default initialisation; weight `(out, in)`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let init = torch_default_init(in_dim);
    let w = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let b = vb.get_with_hints(out_dim, "bias", init)?;
    Ok(Linear::new(w, Some(b)))
}

/// `nn.Linear(in_dim, out_dim, bias=False)` with PyTorch's default initialisation.
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get_with_hints((out_dim, in_dim), "weight", torch_default_init(in_dim))?;
    Ok(Linear::new(w, None))
}

/// A square-kernel `nn.Conv2d`; weight `(out, in/groups, k, k)` drawn from `weight_init`
/// (PyTorch's default is `torch_default_init(in/groups · k²)`), optional bias with PyTorch's
/// default initialisation.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    cfg: Conv2dConfig,
    bias: bool,
    weight_init: Init,
    vb: VarBuilder,
) -> Result<Conv2d> {
    if cfg.groups == 0 || in_channels % cfg.groups != 0 {
        candle_core::bail!(
            "conv2d: groups {} must divide in_channels {in_channels}",
            cfg.groups
        )
    }
    let fan_in = in_channels / cfg.groups * kernel * kernel;
    let w = vb.get_with_hints(
        (out_channels, in_channels / cfg.groups, kernel, kernel),
        "weight",
        weight_init,
    )?;
    let b = if bias {
        Some(vb.get_with_hints(out_channels, "bias", torch_default_init(fan_in))?)
    } else {
        None
    };
    Ok(Conv2d::new(w, b, cfg))
}
