//! Numerically stable losses.
//!
//! `candle_nn::loss::binary_cross_entropy_with_logit` takes `log(sigmoid(x))` and returns NaN
//! or infinity for large logits (docs/architecture.md §6). Here the binary cross-entropy with logits is
//! `softplus(x) − x·t` with the stable softplus
//! `x/2 + |x|/2 + log(1 + exp(−|x|))` (= `max(x, 0) + log(1 + exp(−|x|))`). Writing
//! `max(x, 0)` as `(x + |x|)/2` makes the backward exact at `x = 0` (gradient `σ(0) − t`)
//! whatever convention the framework uses for the derivative of `|x|` or `relu` there, which
//! matters for zero-initialised heads whose logits all start at exactly 0.

use candle_core::{Result, Tensor};

/// Stable `log(1 + exp(x))`, differentiable everywhere.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let abs = x.abs()?;
    let log_term = ((abs.neg()?.exp()? + 1.0)?).log()?;
    ((x * 0.5)? + (abs * 0.5)?)? + log_term
}

/// Element-wise binary cross-entropy with logits: `max(x, 0) − x·t + log(1 + exp(−|x|))`.
/// `targets` has the logits' shape and values in [0, 1] (soft labels allowed).
pub fn bce_with_logits_elementwise(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    check_same_shape(logits, targets, "bce_with_logits")?;
    let targets = targets.to_dtype(logits.dtype())?;
    softplus(logits)? - (logits * targets)?
}

/// Mean binary cross-entropy with logits (PyTorch's `BCEWithLogitsLoss`). `pos_weight`
/// (broadcast over the last dimension, one weight per class) scales the positive term:
/// `−[p·t·log σ(x) + (1 − t)·log(1 − σ(x))]`, for imbalanced multi-label targets.
pub fn bce_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    pos_weight: Option<&Tensor>,
) -> Result<Tensor> {
    match pos_weight {
        None => bce_with_logits_elementwise(logits, targets)?.mean_all(),
        Some(p) => {
            check_same_shape(logits, targets, "bce_with_logits")?;
            let t = targets.to_dtype(logits.dtype())?;
            let p = p.to_dtype(logits.dtype())?;
            // −log σ(x) = softplus(−x); −log(1 − σ(x)) = softplus(x).
            let pos = t.broadcast_mul(&p)?.mul(&softplus(&logits.neg()?)?)?;
            let neg = ((t.affine(-1.0, 1.0))? * softplus(logits)?)?;
            (pos + neg)?.mean_all()
        }
    }
}

/// Mean sigmoid focal loss (Lin et al. 2017; torchvision's `sigmoid_focal_loss`):
/// `α_t · (1 − p_t)^γ · BCE(x, t)` with `p_t = σ(x)·t + (1 − σ(x))·(1 − t)` and
/// `α_t = α·t + (1 − α)·(1 − t)` when `alpha` is given. `gamma ≥ 0`.
pub fn sigmoid_focal_loss(
    logits: &Tensor,
    targets: &Tensor,
    gamma: f64,
    alpha: Option<f64>,
) -> Result<Tensor> {
    if gamma.is_nan() || gamma < 0.0 {
        candle_core::bail!("focal loss: gamma must be ≥ 0, got {gamma}")
    }
    let ce = bce_with_logits_elementwise(logits, targets)?;
    let t = targets.to_dtype(logits.dtype())?;
    let p = candle_nn::ops::sigmoid(logits)?;
    // 1 − p_t = p + t − 2·p·t. Clamped away from 0 so that γ < 1 has a finite derivative.
    let one_minus_pt = ((&p + &t)? - ((&p * &t)? * 2.0)?)?.clamp(1e-12, 1.0)?;
    let mut loss = (ce * one_minus_pt.powf(gamma)?)?;
    if let Some(a) = alpha {
        if !(0.0..=1.0).contains(&a) {
            candle_core::bail!("focal loss: alpha must be in [0, 1], got {a}")
        }
        let alpha_t = t.affine(2.0 * a - 1.0, 1.0 - a)?;
        loss = (loss * alpha_t)?;
    }
    loss.mean_all()
}

fn check_same_shape(a: &Tensor, b: &Tensor, op: &str) -> Result<()> {
    if a.shape() != b.shape() {
        candle_core::bail!(
            "{op}: logits {:?} and targets {:?} differ in shape",
            a.shape(),
            b.shape()
        )
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::finite_difference_check;
    use candle_core::{Device, Var};

    fn naive_bce(x: f64, t: f64) -> f64 {
        let s = 1.0 / (1.0 + (-x).exp());
        -(t * s.ln() + (1.0 - t) * (1.0 - s).ln())
    }

    #[test]
    fn bce_reference_values_and_extreme_logits() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[-3.0f64, -0.5, 0.0, 0.7, 4.0], &dev)?;
        let t = Tensor::new(&[0.0f64, 1.0, 1.0, 0.0, 0.3], &dev)?;
        let ours = bce_with_logits_elementwise(&x, &t)?.to_vec1::<f64>()?;
        for (i, (xv, tv)) in [(-3.0, 0.0), (-0.5, 1.0), (0.0, 1.0), (0.7, 0.0), (4.0, 0.3)]
            .into_iter()
            .enumerate()
        {
            assert!((ours[i] - naive_bce(xv, tv)).abs() < 1e-12);
        }
        // log 2 at x = 0 is the textbook value.
        assert!((ours[2] - std::f64::consts::LN_2).abs() < 1e-15);
        // Large logits: candle's own loss gives NaN/inf here; ours is exact.
        let x = Tensor::new(&[40f32, -40.0, 40.0, -40.0, 1e4], &dev)?;
        let t = Tensor::new(&[1f32, 0.0, 0.0, 1.0, 1.0], &dev)?;
        let l = bce_with_logits_elementwise(&x, &t)?.to_vec1::<f32>()?;
        assert!(l[0] < 1e-12 && l[1] < 1e-12 && l[4] == 0.0);
        assert_eq!(l[2], 40.0);
        assert_eq!(l[3], 40.0);
        assert!(bce_with_logits(&x, &t.narrow(0, 0, 3)?, None).is_err());
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences_including_zero_logits() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(
            &[[0.0f64, -1.3, 2.2], [0.4, 0.0, -7.0]],
            &dev,
        )?)?;
        let t = Tensor::new(&[[1.0f64, 0.0, 1.0], [0.0, 0.5, 1.0]], &dev)?;
        let pw = Tensor::new(&[2.0f64, 0.5, 3.0], &dev)?;
        for loss_kind in 0..4 {
            let loss = || match loss_kind {
                0 => bce_with_logits(x.as_tensor(), &t, None),
                1 => bce_with_logits(x.as_tensor(), &t, Some(&pw)),
                2 => sigmoid_focal_loss(x.as_tensor(), &t, 2.0, Some(0.25)),
                _ => sigmoid_focal_loss(x.as_tensor(), &t, 0.5, None),
            };
            let check = finite_difference_check(&[&x], loss, 1e-6)?;
            assert!(check.relative_error() < 1e-8, "loss {loss_kind}: {check:?}");
        }
        // Exactly at 0 the gradient of the mean BCE is (σ(0) − t)/n.
        let g = bce_with_logits(x.as_tensor(), &t, None)?.backward()?;
        let g = g.get(x.as_tensor()).unwrap().to_vec2::<f64>()?;
        assert!((g[0][0] - (0.5 - 1.0) / 6.0).abs() < 1e-15);
        assert!((g[1][1] - 0.0).abs() < 1e-15);
        Ok(())
    }

    #[test]
    fn pos_weight_and_focal_reduce_to_bce() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[0.3f64, -2.0], [1.5, 0.1]], &dev)?;
        let t = Tensor::new(&[[1.0f64, 0.0], [0.0, 1.0]], &dev)?;
        let plain = bce_with_logits(&x, &t, None)?.to_scalar::<f64>()?;
        let ones = Tensor::new(&[1.0f64, 1.0], &dev)?;
        let weighted = bce_with_logits(&x, &t, Some(&ones))?.to_scalar::<f64>()?;
        let focal0 = sigmoid_focal_loss(&x, &t, 0.0, None)?.to_scalar::<f64>()?;
        assert!((plain - weighted).abs() < 1e-12);
        assert!((plain - focal0).abs() < 1e-12);
        // Focal with γ = 2 down-weights the easy example more than the hard one.
        let focal2 = sigmoid_focal_loss(&x, &t, 2.0, None)?.to_scalar::<f64>()?;
        assert!(focal2 < plain);
        // Hand value: x = 0.3, t = 1 → p = σ(0.3), loss = (1 − p)² · (−ln p).
        let one = sigmoid_focal_loss(
            &Tensor::new(&[0.3f64], &dev)?,
            &Tensor::new(&[1.0f64], &dev)?,
            2.0,
            None,
        )?
        .to_scalar::<f64>()?;
        let p = 1.0 / (1.0 + (-0.3f64).exp());
        assert!((one - (1.0 - p).powi(2) * -p.ln()).abs() < 1e-12);
        assert!(sigmoid_focal_loss(&x, &t, -1.0, None).is_err());
        Ok(())
    }
}
