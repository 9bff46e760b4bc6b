//! Small differentiable tensor functions used across the models.

use candle_core::{DType, Result, Tensor, D};

/// Softmax over the last dimension through `candle_nn::ops::softmax` (composed, with a
/// backward). Never use `ops::softmax_last_dim`: it has no backward and silently cuts the
/// graph (docs/architecture.md §6).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

/// A finite "minus infinity" for masking logits in `dtype`: far below any real logit, yet
/// `fill − fill = 0`, so a row whose every entry is masked yields no NaN.
pub fn mask_fill_value(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -6.0e4,
        _ => -1.0e9,
    }
}

/// `where(mask, value, x)` with `mask` (any integer or bool-like dtype, non-zero = fill)
/// broadcast to `x`'s shape. The gradient reaches `x` only where the mask is zero.
pub fn masked_fill(x: &Tensor, mask: &Tensor, value: f64) -> Result<Tensor> {
    let mask = mask.broadcast_as(x.shape())?;
    let fill = Tensor::zeros((), x.dtype(), x.device())?
        .affine(1.0, value)?
        .broadcast_as(x.shape())?;
    mask.where_cond(&fill, x)
}

/// `x / max(‖x‖₂, eps)` along the last dimension (PyTorch's `F.normalize`).
pub fn l2_normalize(x: &Tensor, eps: f64) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    x.broadcast_div(&norm.clamp(eps, f64::INFINITY)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::{finite_difference_check, random_projection, seeded_randn};
    use candle_core::{Device, Var};

    #[test]
    fn softmax_and_normalize_have_correct_gradients() -> Result<()> {
        let x = Var::from_tensor(&seeded_randn((3, 5), 0, &Device::Cpu)?)?;
        let check = finite_difference_check(
            &[&x],
            || random_projection(&softmax_last_dim(x.as_tensor())?, 1),
            1e-6,
        )?;
        assert!(check.relative_error() < 1e-8, "{check:?}");
        let check = finite_difference_check(
            &[&x],
            || random_projection(&l2_normalize(x.as_tensor(), 1e-12)?, 2),
            1e-6,
        )?;
        assert!(check.relative_error() < 1e-8, "{check:?}");
        let n = l2_normalize(x.as_tensor(), 1e-12)?
            .sqr()?
            .sum(1)?
            .to_vec1::<f64>()?;
        assert!(n.iter().all(|v| (v - 1.0).abs() < 1e-12));
        Ok(())
    }

    #[test]
    fn masked_fill_blocks_gradient_and_keeps_rows_finite() -> Result<()> {
        let x = Var::from_tensor(&seeded_randn((2, 3), 0, &Device::Cpu)?)?;
        let mask = Tensor::new(&[[0u8, 1, 0], [1, 1, 1]], &Device::Cpu)?;
        let filled = masked_fill(x.as_tensor(), &mask, mask_fill_value(DType::F64))?;
        let p = softmax_last_dim(&filled)?;
        let v = p.to_vec2::<f64>()?;
        assert_eq!(v[0][1], 0.0);
        assert!(v.iter().flatten().all(|v| v.is_finite()));
        let g = p.sqr()?.sum_all()?.backward()?;
        let g = g.get(x.as_tensor()).unwrap().to_vec2::<f64>()?;
        assert_eq!(g[0][1], 0.0);
        assert_eq!(g[1], vec![0.0; 3]);
        Ok(())
    }
}
