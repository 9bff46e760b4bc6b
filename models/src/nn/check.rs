//! Gradient checks every trainable model of the suite runs in its tests.
//!
//! Candle drops gradients silently (docs/architecture.md §6): a backward pass "succeeds" while parts of the
//! graph never see a gradient. [`gradient_gaps`] lists the trainable variables of a `VarMap`
//! that got none (or a non-finite or all-zero one); [`finite_difference_check`] compares the
//! gradients of hand-written ops with central differences.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// BatchNorm running statistics: `VarMap` entries that are updated in the forward pass and
/// never receive a gradient.
pub fn is_running_statistic(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// Names (sorted) of the trainable variables whose gradient is absent, non-finite or zero
/// everywhere. `is_trainable` selects the variables that must have one.
pub fn gradient_gaps(
    varmap: &VarMap,
    grads: &GradStore,
    is_trainable: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let vars: Vec<(String, Var)> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let mut gaps = Vec::new();
    for (name, var) in vars {
        if !is_trainable(&name) {
            continue;
        }
        let ok = match grads.get(var.as_tensor()) {
            None => false,
            Some(g) => {
                let g = g.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                g.iter().all(|v| v.is_finite()) && g.iter().any(|v| *v != 0.0)
            }
        };
        if !ok {
            gaps.push(name);
        }
    }
    gaps.sort();
    Ok(gaps)
}

/// `sum(t · R)` for a fixed standard-normal `R` drawn from `seed`: a scalar loss whose
/// gradient with respect to `t` is `R`, so that no output element is privileged (a plain
/// `sum` hides errors in ops whose outputs sum to a constant, such as normalisations).
pub fn random_projection(t: &Tensor, seed: u64) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r: Vec<f64> = (0..t.elem_count())
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let r = Tensor::from_vec(r, t.shape(), &Device::Cpu)?
        .to_dtype(t.dtype())?
        .to_device(t.device())?;
    (t * r)?.sum_all()
}

/// Standard-normal `f64` values from `seed`, as a tensor on `device`.
pub fn seeded_randn(
    shape: impl Into<candle_core::Shape>,
    seed: u64,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f64> = (0..shape.elem_count())
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    Tensor::from_vec(v, shape, device)
}

/// Outcome of [`finite_difference_check`].
#[derive(Debug, Clone)]
pub struct GradCheck {
    /// Largest `|analytic − numeric|` over every element checked.
    pub max_abs_error: f64,
    /// Largest `|numeric|`, for scale.
    pub max_abs_gradient: f64,
    /// `var #k[element]` where the largest error occurred.
    pub worst: String,
}

impl GradCheck {
    /// Error relative to the gradient scale (at least 1).
    pub fn relative_error(&self) -> f64 {
        self.max_abs_error / self.max_abs_gradient.max(1.0)
    }
}

/// Compares the backward-pass gradient of the scalar `loss()` with respect to each of `vars`
/// (which should be `f64`) against central differences with step `eps`.
pub fn finite_difference_check(
    vars: &[&Var],
    loss: impl Fn() -> Result<Tensor>,
    eps: f64,
) -> Result<GradCheck> {
    let grads = loss()?.backward()?;
    let mut report = GradCheck {
        max_abs_error: 0.0,
        max_abs_gradient: 0.0,
        worst: String::new(),
    };
    for (k, var) in vars.iter().enumerate() {
        let analytic = match grads.get(var.as_tensor()) {
            Some(g) => g.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?,
            None => vec![0.0; var.elem_count()],
        };
        let original = var.as_tensor().copy()?;
        let base = original
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let eval_at = |i: usize, delta: f64| -> Result<f64> {
            let mut v = base.clone();
            v[i] += delta;
            let t = Tensor::from_vec(v, var.shape(), var.device())?.to_dtype(var.dtype())?;
            var.set(&t)?;
            loss()?.to_dtype(DType::F64)?.to_scalar::<f64>()
        };
        for (i, &a) in analytic.iter().enumerate() {
            let numeric = (eval_at(i, eps)? - eval_at(i, -eps)?) / (2.0 * eps);
            let err = (numeric - a).abs();
            report.max_abs_gradient = report.max_abs_gradient.max(numeric.abs());
            if err > report.max_abs_error || !err.is_finite() {
                report.max_abs_error = if err.is_finite() { err } else { f64::INFINITY };
                report.worst = format!("var #{k}[{i}]: analytic {a} numeric {numeric}");
            }
        }
        var.set(&original)?;
    }
    Ok(report)
}

/// Largest absolute element-wise difference of two tensors of one shape, as f64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_a_wrong_gradient_and_a_missing_one() -> Result<()> {
        let x = Var::from_tensor(&seeded_randn(5, 1, &Device::Cpu)?)?;
        // Correct op: the check passes.
        let ok = finite_difference_check(&[&x], || x.as_tensor().sqr()?.sum_all(), 1e-5)?;
        assert!(ok.relative_error() < 1e-8, "{ok:?}");
        // `detach` cuts the graph: the analytic gradient is zero, the numeric one is not.
        let cut = finite_difference_check(&[&x], || x.as_tensor().detach().sqr()?.sum_all(), 1e-5)?;
        assert!(cut.relative_error() > 0.1, "{cut:?}");

        let varmap = VarMap::new();
        let vb = crate::nn::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        let a = vb.get_with_hints(3, "a", candle_nn::Init::Const(1.0))?;
        let b = vb.get_with_hints(3, "b", candle_nn::Init::Const(1.0))?;
        let _stat = vb.get_with_hints(3, "bn.running_mean", candle_nn::Init::Const(0.0))?;
        let loss = (a.sqr()?.sum_all()? + b.detach().sum_all()?)?;
        let grads = loss.backward()?;
        let gaps = gradient_gaps(&varmap, &grads, |n| !is_running_statistic(n))?;
        assert_eq!(gaps, vec!["b".to_string()]);
        Ok(())
    }
}
