//! Normalisation layers whose gradients reach every parameter.
//!
//! - [`LayerNorm`]: composed of primitive ops. `candle_nn::LayerNorm` takes a fused path with
//!   no backward on contiguous inputs, so its weight, bias and everything upstream silently
//!   get no gradient (docs/architecture.md §6).
//! - [`group_norm`]: candle-nn's `GroupNorm` is already composed of differentiable ops (checked
//!   against finite differences below); this constructor validates its arguments.
//! - [`BatchNorm`]: PyTorch semantics (batch statistics and running-stat updates in training,
//!   momentum 0.1, unbiased running variance; running statistics in evaluation), a
//!   zero-initialised weight option and a clear error where PyTorch refuses to train (one
//!   value per channel). Training on the CPU runs fused kernels with an explicit backward
//!   (`fused_batch_norm`, ~10× faster backward than composed ops); other devices and
//!   evaluation use candle-nn's `BatchNorm`.

use candle_core::{DType, Module, ModuleT, Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};

pub use candle_nn::GroupNorm;

/// Layer normalisation over the last dimension: `(x − mean) / √(var + eps) · weight + bias`,
/// with the biased variance (as PyTorch). Parameters `weight` (ones) and `bias` (zeros).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Option<Tensor>,
    eps: f64,
}

impl LayerNorm {
    pub fn new(weight: Tensor, bias: Option<Tensor>, eps: f64) -> Self {
        Self { weight, bias, eps }
    }

    pub fn dim(&self) -> usize {
        self.weight.elem_count()
    }
}

/// `nn.LayerNorm(dim, eps)` with weight and bias.
pub fn layer_norm(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
    let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
    Ok(LayerNorm::new(weight, Some(bias), eps))
}

/// `nn.LayerNorm(dim, eps, bias=False)`.
pub fn layer_norm_no_bias(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
    Ok(LayerNorm::new(weight, None, eps))
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let last = x.dim(D::Minus1)?;
        if last != self.dim() {
            candle_core::bail!(
                "LayerNorm over {} features got an input of shape {:?}",
                self.dim(),
                x.shape()
            )
        }
        let dtype = x.dtype();
        // Half-precision statistics lose too much: normalise in f32.
        let internal = match dtype {
            DType::F16 | DType::BF16 => DType::F32,
            d => d,
        };
        let x = x.to_dtype(internal)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let y = normed.to_dtype(dtype)?.broadcast_mul(&self.weight)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `nn.GroupNorm(num_groups, num_channels, eps)`: weight ones, bias zeros. Input `(B, C, ...)`.
pub fn group_norm(
    num_groups: usize,
    num_channels: usize,
    eps: f64,
    vb: VarBuilder,
) -> Result<GroupNorm> {
    if num_groups == 0 || num_channels % num_groups != 0 {
        candle_core::bail!("GroupNorm: {num_groups} groups do not divide {num_channels} channels")
    }
    candle_nn::group_norm(num_groups, num_channels, eps, vb)
}

/// Options of [`batch_norm`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormOptions {
    pub eps: f64,
    /// Weight of the batch statistic in the running averages (PyTorch's `momentum`).
    pub momentum: f64,
    /// Start the weight (γ) at 0 instead of 1: a residual branch ending in this norm then
    /// starts as the identity (Goyal et al. 2017, torchvision's `zero_init_residual`).
    pub zero_init_weight: bool,
}

impl Default for BatchNormOptions {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
            zero_init_weight: false,
        }
    }
}

/// Batch normalisation over dimension 1 of a `(B, C, ...)` input. Variables (torchvision
/// names): `weight`, `bias`, `running_mean`, `running_var`. `forward_t(x, true)` normalises
/// with the batch statistics and updates the running ones; `forward_t(x, false)` uses the
/// running statistics.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    inner: candle_nn::BatchNorm,
    num_features: usize,
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    opts: BatchNormOptions,
}

pub fn batch_norm(
    num_features: usize,
    opts: BatchNormOptions,
    vb: VarBuilder,
) -> Result<BatchNorm> {
    if opts.eps < 0.0 || !(0.0..=1.0).contains(&opts.momentum) {
        candle_core::bail!(
            "BatchNorm: eps {} must be ≥ 0 and momentum {} in [0, 1]",
            opts.eps,
            opts.momentum
        )
    }
    let gamma = if opts.zero_init_weight { 0.0 } else { 1.0 };
    let weight = vb.get_with_hints(num_features, "weight", Init::Const(gamma))?;
    let bias = vb.get_with_hints(num_features, "bias", Init::Const(0.0))?;
    let running_mean = vb.get_with_hints(num_features, "running_mean", Init::Const(0.0))?;
    let running_var = vb.get_with_hints(num_features, "running_var", Init::Const(1.0))?;
    // The running statistics are the VarMap's own vars (Var::from_tensor keeps a var's
    // storage), so updates in training mode land in the VarMap and in checkpoints.
    let inner = candle_nn::BatchNorm::new_with_momentum(
        num_features,
        running_mean.clone(),
        running_var.clone(),
        weight.clone(),
        bias.clone(),
        opts.eps,
        opts.momentum,
    )?;
    Ok(BatchNorm {
        inner,
        num_features,
        weight,
        bias,
        running_mean: Var::from_tensor(&running_mean)?,
        running_var: Var::from_tensor(&running_var)?,
        opts,
    })
}

impl BatchNorm {
    pub fn running_mean(&self) -> &Tensor {
        self.inner.running_mean()
    }

    pub fn running_var(&self) -> &Tensor {
        self.inner.running_var()
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_maybe_relu(x, train, false)
    }
}

impl BatchNorm {
    /// `relu(self.forward_t(x, train))`, as one fused op when training on the CPU.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_maybe_relu(x, train, true)
    }

    fn forward_maybe_relu(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() < 2 || dims[1] != self.num_features {
            candle_core::bail!(
                "BatchNorm over {} channels got an input of shape {:?}",
                self.num_features,
                x.shape()
            )
        }
        if train && x.elem_count() / self.num_features < 2 {
            // The unbiased running variance would divide by zero (PyTorch refuses too).
            candle_core::bail!(
                "BatchNorm in training mode needs more than one value per channel, got input {:?}",
                x.shape()
            )
        }
        let fused = train
            && x.device().is_cpu()
            && matches!(x.dtype(), DType::F32 | DType::F64)
            && self.weight.dtype() == x.dtype();
        if !fused {
            let y = self.inner.forward_t(x, train)?;
            return if relu { y.relu() } else { Ok(y) };
        }
        let (y, mean, var) = super::fused_batch_norm::batch_norm_train_cpu(
            x,
            &self.weight,
            &self.bias,
            self.opts.eps,
            relu,
        )?;
        // Running statistics as in PyTorch: unbiased variance, `momentum` weight on the batch.
        let n = (x.elem_count() / self.num_features) as f64;
        let m = self.opts.momentum;
        let update = |running: &Var, batch: Vec<f64>, factor: f64| -> Result<()> {
            let batch = Tensor::from_vec(batch, self.num_features, x.device())?
                .to_dtype(running.dtype())?;
            let next =
                (running.as_detached_tensor().affine(1.0 - m, 0.0)? + (batch * (m * factor))?)?;
            running.set(&next)
        };
        update(&self.running_mean, mean, 1.0)?;
        update(&self.running_var, var, n / (n - 1.0))?;
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::{finite_difference_check, random_projection, seeded_randn};
    use crate::nn::seeded_var_builder;
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    fn vars_of(varmap: &VarMap, names: &[&str]) -> Vec<Var> {
        let data = varmap.data().lock().unwrap();
        names.iter().map(|n| data[*n].clone()).collect()
    }

    fn randomise(varmap: &VarMap, seed: u64) {
        let data = varmap.data().lock().unwrap();
        let mut names: Vec<_> = data.keys().cloned().collect();
        names.sort();
        for (k, name) in names.iter().enumerate() {
            let v = &data[name];
            let r = seeded_randn(v.shape(), seed + k as u64, &Device::Cpu).unwrap();
            let r = r.affine(0.5, 1.0).unwrap().to_dtype(v.dtype()).unwrap();
            v.set(&r).unwrap();
        }
    }

    #[test]
    fn layer_norm_normalises_and_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let ln = layer_norm(6, 1e-5, seeded_var_builder(&varmap, 0, DType::F64, &dev))?;
        let x = Var::from_tensor(&(seeded_randn((2, 3, 6), 1, &dev)?.affine(3.0, 2.0)?))?;
        let y = ln.forward(x.as_tensor())?;
        let mean = y
            .mean_keepdim(D::Minus1)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        let var = y.sqr()?.mean_keepdim(D::Minus1)?.to_vec3::<f64>()?;
        assert!(mean < 1e-12);
        for v in var.iter().flatten().flatten() {
            assert!((v - 1.0).abs() < 1e-4, "{v}");
        }
        randomise(&varmap, 5);
        let params = vars_of(&varmap, &["weight", "bias"]);
        let loss = || random_projection(&ln.forward(x.as_tensor())?, 9);
        let check = finite_difference_check(&[&x, &params[0], &params[1]], loss, 1e-6)?;
        assert!(check.relative_error() < 1e-7, "{check:?}");
        assert!(ln
            .forward(&Tensor::zeros((2, 5), DType::F64, &dev)?)
            .is_err());
        Ok(())
    }

    #[test]
    fn group_norm_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let gn = group_norm(2, 4, 1e-5, seeded_var_builder(&varmap, 0, DType::F64, &dev))?;
        randomise(&varmap, 3);
        let x = Var::from_tensor(&seeded_randn((2, 4, 3, 3), 2, &dev)?)?;
        let params = vars_of(&varmap, &["weight", "bias"]);
        let loss = || random_projection(&gn.forward(x.as_tensor())?, 4);
        let check = finite_difference_check(&[&x, &params[0], &params[1]], loss, 1e-6)?;
        assert!(check.relative_error() < 1e-7, "{check:?}");
        assert!(group_norm(3, 4, 1e-5, seeded_var_builder(&varmap, 0, DType::F64, &dev)).is_err());
        Ok(())
    }

    #[test]
    fn batch_norm_train_uses_batch_stats_and_eval_uses_running_stats() -> Result<()> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let bn = batch_norm(
            3,
            BatchNormOptions::default(),
            seeded_var_builder(&varmap, 0, DType::F64, &dev),
        )?;
        let x = seeded_randn((4, 3, 5, 5), 1, &dev)?.affine(2.0, 5.0)?;
        // Training: per-channel output mean 0 / variance 1; running stats move by momentum.
        let y = bn.forward_t(&x, true)?;
        let ch_mean = y
            .transpose(0, 1)?
            .flatten_from(1)?
            .mean(1)?
            .to_vec1::<f64>()?;
        assert!(ch_mean.iter().all(|m| m.abs() < 1e-10));
        let batch_mean = x
            .transpose(0, 1)?
            .flatten_from(1)?
            .mean(1)?
            .to_vec1::<f64>()?;
        let running: Vec<f64> = bn.running_mean().to_vec1()?;
        for (r, m) in running.iter().zip(&batch_mean) {
            assert!((r - 0.1 * m).abs() < 1e-10);
        }
        // The VarMap holds the same running statistics (they are checkpointed).
        let stored: Vec<f64> = varmap.data().lock().unwrap()["running_mean"]
            .as_tensor()
            .to_vec1()?;
        assert_eq!(stored, running);
        // Eval: (x − running_mean) / √(running_var + eps), nothing updated.
        let running_var: Vec<f64> = bn.running_var().to_vec1()?;
        let y = bn.forward_t(&x, false)?;
        let x0 = x.get(0)?.get(1)?.get(2)?.get(3)?.to_scalar::<f64>()?;
        let y0 = y.get(0)?.get(1)?.get(2)?.get(3)?.to_scalar::<f64>()?;
        let expected = (x0 - running[1]) / (running_var[1] + 1e-5).sqrt();
        assert!((y0 - expected).abs() < 1e-10);
        assert_eq!(bn.running_mean().to_vec1::<f64>()?, running);
        // One value per channel cannot be normalised in training mode.
        assert!(bn
            .forward_t(&Tensor::zeros((1, 3, 1, 1), DType::F64, &dev)?, true)
            .is_err());
        assert!(bn
            .forward_t(&Tensor::zeros((2, 4, 1, 1), DType::F64, &dev)?, false)
            .is_err());
        Ok(())
    }

    #[test]
    fn fused_training_kernel_matches_candle_s_composed_batch_norm() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let varmap = VarMap::new();
            let vb = seeded_var_builder(&varmap, 0, dtype, &dev);
            let bn = batch_norm(3, BatchNormOptions::default(), vb)?;
            randomise(&varmap, 4);
            let data = varmap.data().lock().unwrap();
            let reference = candle_nn::BatchNorm::new_with_momentum(
                3,
                data["running_mean"].as_tensor().copy()?,
                data["running_var"].as_tensor().copy()?,
                data["weight"].as_tensor().clone(),
                data["bias"].as_tensor().clone(),
                1e-5,
                0.1,
            )?;
            let w = data["weight"].clone();
            drop(data);
            let x = Var::from_tensor(
                &seeded_randn((4, 3, 5, 6), 1, &dev)?
                    .affine(2.0, 1.0)?
                    .to_dtype(dtype)?,
            )?;
            let ours = bn.forward_t(x.as_tensor(), true)?;
            let theirs = reference.forward_t(x.as_tensor(), true)?;
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            let max_diff = |a: &Tensor, b: &Tensor| -> Result<f64> {
                (a - b)?
                    .abs()?
                    .max_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()
            };
            assert!(max_diff(&ours, &theirs)? < tol);
            assert!(max_diff(bn.running_mean(), reference.running_mean())? < tol);
            assert!(max_diff(bn.running_var(), reference.running_var())? < tol);
            let g1 = random_projection(&ours, 2)?.backward()?;
            let g2 = random_projection(&theirs, 2)?.backward()?;
            for t in [x.as_tensor(), w.as_tensor()] {
                let d = max_diff(g1.get(t).unwrap(), g2.get(t).unwrap())?;
                assert!(d < 10.0 * tol, "{dtype:?} gradient differs by {d}");
            }
        }
        Ok(())
    }

    #[test]
    fn batch_norm_matches_finite_differences_in_training_mode() -> Result<()> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let opts = BatchNormOptions {
            momentum: 0.0, // keep the running stats fixed while differencing
            ..Default::default()
        };
        let bn = batch_norm(2, opts, seeded_var_builder(&varmap, 0, DType::F64, &dev))?;
        let x = Var::from_tensor(&seeded_randn((3, 2, 2, 2), 7, &dev)?)?;
        let params = vars_of(&varmap, &["weight", "bias"]);
        let loss = || random_projection(&bn.forward_t(x.as_tensor(), true)?, 8);
        let check = finite_difference_check(&[&x, &params[0], &params[1]], loss, 1e-6)?;
        assert!(check.relative_error() < 1e-7, "{check:?}");
        Ok(())
    }

    /// The fused BatchNorm + ReLU: the composed values and gradients, and finite differences.
    #[test]
    fn batch_norm_relu_matches_the_composed_ops_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let opts = BatchNormOptions {
            momentum: 0.0,
            ..Default::default()
        };
        let bn = batch_norm(3, opts, seeded_var_builder(&varmap, 0, DType::F64, &dev))?;
        randomise(&varmap, 2);
        let x = Var::from_tensor(&seeded_randn((3, 3, 4, 5), 9, &dev)?)?;
        let params = vars_of(&varmap, &["weight", "bias"]);
        let fused = bn.forward_relu_t(x.as_tensor(), true)?;
        let composed = bn.forward_t(x.as_tensor(), true)?.relu()?;
        assert!(crate::nn::check::max_abs_diff(&fused, &composed) < 1e-12);
        let zeros = fused
            .eq(0.0)?
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?;
        assert!(zeros > 10.0, "the ReLU clips part of the output");
        let g1 = random_projection(&fused, 2)?.backward()?;
        let g2 = random_projection(&composed, 2)?.backward()?;
        for v in [&x, &params[0], &params[1]] {
            let (a, b) = (
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert!(crate::nn::check::max_abs_diff(a, b) < 1e-12);
        }
        let loss = || random_projection(&bn.forward_relu_t(x.as_tensor(), true)?, 8);
        let check = finite_difference_check(&[&x, &params[0], &params[1]], loss, 1e-6)?;
        assert!(check.relative_error() < 1e-7, "{check:?}");
        Ok(())
    }
}
