//! Small differentiable tensor functions used across the models.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType, D};

use super::parallel::for_each_chunk_mut;

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

/// `max(a + b, 0)` (a residual connection and its ReLU), as one op on CPU `f32`/`f64`
/// tensors of one shape: one pass forward and one masking pass backward, whose result is the
/// gradient of both inputs. Elsewhere `(a + b).relu()`.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let fused = a.device().is_cpu()
        && b.device().is_cpu()
        && matches!(a.dtype(), DType::F32 | DType::F64)
        && a.dtype() == b.dtype()
        && a.shape() == b.shape();
    if !fused {
        return (a + b)?.relu();
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

struct AddRelu;

impl Zip2 for AddRelu {
    const NAME: &'static str = "add-relu";

    fn f<T: WithDType>(a: T, b: T) -> T {
        (a + b).max(T::zero())
    }
}

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        zip2_cpu::<Self>(s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = dy.contiguous()?.apply_op2_no_bwd(y, &PositivePart)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// `(dy, y) → dy` where `y > 0`, else 0: a gradient through `y = max(·, 0)` given its output
/// (what [`add_relu`] returns to both its inputs, and the fused BatchNorm + ReLU's first
/// backward pass).
pub(crate) struct PositivePart;

impl Zip2 for PositivePart {
    const NAME: &'static str = "relu-grad";

    fn f<T: WithDType>(dy: T, y: T) -> T {
        if y > T::zero() {
            dy
        } else {
            T::zero()
        }
    }
}

impl CustomOp2 for PositivePart {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        zip2_cpu::<Self>(s1, l1, s2, l2)
    }
}

/// An element-wise function of two values of one dtype, for [`zip2_cpu`].
trait Zip2 {
    const NAME: &'static str;
    fn f<T: WithDType>(a: T, b: T) -> T;
}

/// `Z::f` over two contiguous same-shape CPU storages of one float dtype, in parallel chunks.
fn zip2_cpu<Z: Zip2>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    fn run<Z: Zip2, T: WithDType>(a: &[T], b: &[T]) -> Vec<T> {
        const CHUNK: usize = 1 << 14;
        let mut out = vec![T::zero(); a.len()];
        for_each_chunk_mut(&mut out, CHUNK, |i, out| {
            let (a, b) = (&a[i * CHUNK..], &b[i * CHUNK..]);
            for ((y, &x), &r) in out.iter_mut().zip(a).zip(b) {
                *y = Z::f(x, r);
            }
        });
        out
    }
    if l1.shape() != l2.shape() {
        candle_core::bail!("{}: shapes {:?} and {:?}", Z::NAME, l1.shape(), l2.shape())
    }
    let out = match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(run::<Z, f32>(
            contiguous_slice(a, l1, Z::NAME)?,
            contiguous_slice(b, l2, Z::NAME)?,
        )),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(run::<Z, f64>(
            contiguous_slice(a, l1, Z::NAME)?,
            contiguous_slice(b, l2, Z::NAME)?,
        )),
        _ => candle_core::bail!("{}: f32 or f64 inputs of one dtype expected", Z::NAME),
    };
    Ok((out, l1.shape().clone()))
}

/// The contiguous part of `data` that `layout` describes (how the custom CPU kernels read
/// their inputs); the error names the op.
pub(crate) fn contiguous_slice<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expected a contiguous input"),
    }
}

/// [`contiguous_slice`] of a storage read as `T` (an error if it holds another dtype).
pub(crate) fn storage_slice<'a, T: WithDType>(
    s: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [T]> {
    contiguous_slice(T::cpu_storage_as_slice(s)?, layout, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::{
        finite_difference_check, max_abs_diff, random_projection, seeded_randn,
    };
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

    /// `add_relu` against `(a + b).relu()`: values, both gradients, finite differences.
    #[test]
    fn add_relu_matches_the_composed_ops_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&seeded_randn((2, 3, 5, 4), 1, &dev)?)?;
        let b = Var::from_tensor(&seeded_randn((2, 3, 5, 4), 2, &dev)?)?;
        let fused = add_relu(a.as_tensor(), b.as_tensor())?;
        let composed = (a.as_tensor() + b.as_tensor())?.relu()?;
        assert!(max_abs_diff(&fused, &composed) < 1e-15);
        let g1 = random_projection(&fused, 3)?.backward()?;
        let g2 = random_projection(&composed, 3)?.backward()?;
        for v in [&a, &b] {
            let d = max_abs_diff(
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert!(d < 1e-15, "{d}");
        }
        let loss = || random_projection(&add_relu(a.as_tensor(), b.as_tensor())?, 4);
        let check = finite_difference_check(&[&a, &b], loss, 1e-6)?;
        assert!(check.relative_error() < 1e-7, "{check:?}");
        // Shapes that differ take the composed path (and its broadcasting error).
        let c = seeded_randn((2, 3, 5, 1), 5, &dev)?;
        assert!(add_relu(a.as_tensor(), &c).is_err());
        Ok(())
    }
}
