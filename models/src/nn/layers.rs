//! Linear and convolution constructors with PyTorch's initialisations.
//!
//! candle-nn's `linear`/`conv2d` draw weights from Kaiming-normal fan-in (std √(2/fan_in)),
//! larger than PyTorch's defaults; these constructors reproduce PyTorch so that recipes tuned
//! there (learning rates, warm-ups) transfer. Built through a seeded `VarBuilder`
//! ([`crate::nn::seeded_var_builder`]) the draws are reproducible.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, WithDType};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Conv2d, Conv2dConfig, Init, Linear, VarBuilder};

use super::parallel::for_each_chunk_mut;

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

/// Convolution of a network's *input* (data that needs no gradient) with `conv`'s weight.
///
/// Candle's backward always computes a convolution's input gradient, through a slow direct
/// `conv_transpose2d`; for the first layer that work is wasted (≈ 9 % of a ResNet-18 step at
/// 224², most of the tiny encoder's backward). When `x` is a leaf tensor (no graph: a batch
/// of images) on the CPU, the patches are unfolded here in plain Rust, the convolution is one
/// matrix product, and the backward is a single GEMM of the forward's size for the weight
/// gradient. Otherwise (a tracked input, another device or dtype) it is `conv.forward(x)`.
pub fn conv2d_on_data(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    use candle_core::Module;
    let cfg = conv.config();
    let leaf = !x.track_op();
    let supported = matches!(x.dtype(), DType::F32 | DType::F64)
        && matches!(x.device(), Device::Cpu)
        && cfg.groups == 1
        && cfg.dilation == 1;
    if !leaf || !supported {
        return conv.forward(x);
    }
    let w = conv.weight();
    let (o, c, kh, kw) = w.dims4()?;
    let (b, xc, h, wd) = x.dims4()?;
    if xc != c || h + 2 * cfg.padding < kh || wd + 2 * cfg.padding < kw {
        // Let candle report the shape error.
        return conv.forward(x);
    }
    let oh = (h + 2 * cfg.padding - kh) / cfg.stride + 1;
    let ow = (wd + 2 * cfg.padding - kw) / cfg.stride + 1;
    let geom = Im2Col {
        c,
        h,
        w: wd,
        kh,
        kw,
        oh,
        ow,
        stride: cfg.stride,
        padding: cfg.padding,
    };
    let cols = match x.dtype() {
        DType::F64 => geom.unfold::<f64>(x, b)?,
        _ => geom.unfold::<f32>(x, b)?,
    };
    // (B·L, C·kh·kw) × (C·kh·kw, O) → (B, L, O) → (B, O, OH, OW), outside the graph; the
    // result is attached to the weight alone, so the backward never forms dL/d(patches).
    let k = c * kh * kw;
    let value = cols
        .matmul(&w.detach().reshape((o, k))?.t()?)?
        .reshape((b, oh * ow, o))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, o, oh, ow))?;
    let y = w.apply_op1(WeightOnlyConv {
        patches: cols.reshape((b, oh * ow, k))?,
        value,
    })?;
    match conv.bias() {
        Some(bias) => y.broadcast_add(&bias.reshape((1, o, 1, 1))?),
        None => Ok(y),
    }
}

/// The convolution output `value` as a function of the weight only:
/// `dL/dW = Σ_b dL/dy_b · patches_b` (`(O, L) × (L, C·kh·kw)` per image).
struct WeightOnlyConv {
    /// `(B, L, C·kh·kw)` unfolded input.
    patches: Tensor,
    /// `(B, O, OH, OW)` precomputed output.
    value: Tensor,
}

impl CustomOp1 for WeightOnlyConv {
    fn name(&self) -> &'static str {
        "conv2d-on-data"
    }

    fn cpu_fwd(&self, _w: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        let flat = self.value.flatten_all()?;
        let storage = match flat.dtype() {
            DType::F64 => CpuStorage::F64(flat.to_vec1()?),
            _ => CpuStorage::F32(flat.to_vec1()?),
        };
        Ok((storage, self.value.shape().clone()))
    }

    fn bwd(&self, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (b, o, oh, ow) = grad.dims4()?;
        let grad_w = grad
            .contiguous()?
            .reshape((b, o, oh * ow))?
            .matmul(&self.patches)?
            .sum(0)?
            .reshape(w.shape())?;
        Ok(Some(grad_w))
    }
}

/// Geometry of an unfold (im2col) of one convolution.
struct Im2Col {
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    padding: usize,
}

impl Im2Col {
    /// `(B·OH·OW, C·kh·kw)` patches of `x` (zero padding), rows in output raster order,
    /// columns in the weight's `(C, kh, kw)` order.
    fn unfold<T: WithDType>(&self, x: &Tensor, b: usize) -> Result<Tensor> {
        let data = x.flatten_all()?.to_vec1::<T>()?;
        let (l, k) = (self.oh * self.ow, self.c * self.kh * self.kw);
        let mut cols = vec![T::zero(); b * l * k];
        for_each_chunk_mut(&mut cols, l * k, |n, out| {
            let img = &data[n * self.c * self.h * self.w..(n + 1) * self.c * self.h * self.w];
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    let row = &mut out[(oy * self.ow + ox) * k..][..k];
                    for ci in 0..self.c {
                        for ky in 0..self.kh {
                            let y = (oy * self.stride + ky) as isize - self.padding as isize;
                            if y < 0 || y >= self.h as isize {
                                continue;
                            }
                            let src = &img[(ci * self.h + y as usize) * self.w..][..self.w];
                            let dst = &mut row[(ci * self.kh + ky) * self.kw..][..self.kw];
                            for (kx, d) in dst.iter_mut().enumerate() {
                                let xx = (ox * self.stride + kx) as isize - self.padding as isize;
                                if xx >= 0 && xx < self.w as isize {
                                    *d = src[xx as usize];
                                }
                            }
                        }
                    }
                }
            }
        });
        Tensor::from_vec(cols, (b * l, k), x.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::{finite_difference_check, random_projection, seeded_randn};
    use crate::nn::seeded_var_builder;
    use candle_core::{Module, Var};
    use candle_nn::VarMap;

    #[test]
    fn data_convolution_matches_candle_and_its_weight_gradient() -> Result<()> {
        let dev = Device::Cpu;
        for (k, stride, padding, bias) in [(7, 2, 3, false), (3, 1, 1, true), (2, 2, 0, false)] {
            let varmap = VarMap::new();
            let vb = seeded_var_builder(&varmap, 1, DType::F64, &dev);
            let cfg = Conv2dConfig {
                padding,
                stride,
                ..Default::default()
            };
            let conv = conv2d(3, 4, k, cfg, bias, KAIMING_NORMAL_FAN_OUT, vb)?;
            let x = seeded_randn((2, 3, 11, 9), 2, &dev)?;
            let ours = conv2d_on_data(&conv, &x)?;
            let theirs = conv.forward(&x)?;
            assert_eq!(ours.dims(), theirs.dims());
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(diff < 1e-12, "k{k} s{stride} p{padding}: {diff}");
            // Same weight (and bias) gradients as candle's conv.
            let w = varmap.data().lock().unwrap()["weight"].clone();
            let g1 = random_projection(&ours, 3)?.backward()?;
            let g2 = random_projection(&theirs, 3)?.backward()?;
            let d = (g1.get(w.as_tensor()).unwrap() - g2.get(w.as_tensor()).unwrap())?
                .abs()?
                .max_all()?
                .to_scalar::<f64>()?;
            assert!(d < 1e-10, "weight gradient differs by {d}");
            let check = finite_difference_check(
                &[&w],
                || random_projection(&conv2d_on_data(&conv, &x)?, 4),
                1e-6,
            )?;
            assert!(check.relative_error() < 1e-8, "{check:?}");
        }
        Ok(())
    }

    #[test]
    fn tracked_inputs_take_candle_s_path_and_keep_their_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let vb = seeded_var_builder(&VarMap::new(), 1, DType::F64, &dev);
        let conv = conv2d(
            2,
            3,
            3,
            Conv2dConfig::default(),
            false,
            KAIMING_NORMAL_FAN_OUT,
            vb,
        )?;
        let x = Var::from_tensor(&seeded_randn((1, 2, 5, 5), 2, &dev)?)?;
        let g = conv2d_on_data(&conv, x.as_tensor())?
            .sum_all()?
            .backward()?;
        assert!(g.get(x.as_tensor()).is_some());
        assert!(conv2d_on_data(&conv, &seeded_randn((1, 3, 5, 5), 2, &dev)?).is_err());
        Ok(())
    }
}
