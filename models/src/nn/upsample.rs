//! Nearest-neighbour upsampling whose backward accumulates.
//!
//! Candle's `upsample_nearest2d` backward *overwrites* its input's gradient, so a tensor that
//! is both upsampled and used elsewhere (FPN lateral paths, U-Net skips) loses one of the two
//! contributions (docs/architecture.md §6). Here integer factors are a reshape + broadcast + reshape (the
//! broadcast's backward sums) and other sizes an `index_select` (whose backward is an
//! `index_add`); both accumulate like every other op.

use candle_core::{Device, Result, Tensor};

/// Upsamples `(B, C, H, W)` by integer factors `(scale_h, scale_w)`.
pub fn upsample_nearest2d_scale(x: &Tensor, scale_h: usize, scale_w: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if scale_h == 0 || scale_w == 0 {
        candle_core::bail!("upsample_nearest2d: scale factors must be positive")
    }
    if scale_h == 1 && scale_w == 1 {
        return Ok(x.clone());
    }
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, scale_h, w, scale_w))?
        .reshape((b, c, h * scale_h, w * scale_w))
}

/// Upsamples (or resamples) `(B, C, H, W)` to `(B, C, out_h, out_w)` with PyTorch's
/// `mode="nearest"` rule: output pixel `i` reads input `⌊i · in / out⌋`.
pub fn upsample_nearest2d(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if out_h == 0 || out_w == 0 {
        candle_core::bail!("upsample_nearest2d: output size must be positive")
    }
    if out_h % h == 0 && out_w % w == 0 {
        return upsample_nearest2d_scale(x, out_h / h, out_w / w);
    }
    let rows = nearest_indices(h, out_h, x.device())?;
    let cols = nearest_indices(w, out_w, x.device())?;
    x.index_select(&rows, 2)?.index_select(&cols, 3)
}

fn nearest_indices(n_in: usize, n_out: usize, device: &Device) -> Result<Tensor> {
    // PyTorch computes the scale in float: src = min(floor(dst * (in / out)), in − 1).
    let scale = n_in as f32 / n_out as f32;
    let idx: Vec<u32> = (0..n_out)
        .map(|i| ((i as f32 * scale).floor() as usize).min(n_in - 1) as u32)
        .collect();
    Tensor::from_vec(idx, n_out, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::{finite_difference_check, random_projection, seeded_randn};
    use candle_core::{DType, Var};

    #[test]
    fn values_match_candle_forward() -> Result<()> {
        let x = seeded_randn((2, 3, 4, 5), 0, &Device::Cpu)?;
        let ours = upsample_nearest2d(&x, 8, 10)?;
        let theirs = x.upsample_nearest2d(8, 10)?;
        assert_eq!(
            ours.flatten_all()?.to_vec1::<f64>()?,
            theirs.flatten_all()?.to_vec1::<f64>()?
        );
        let odd = upsample_nearest2d(&x, 7, 6)?;
        let theirs = x.upsample_nearest2d(7, 6)?;
        assert_eq!(
            odd.flatten_all()?.to_vec1::<f64>()?,
            theirs.flatten_all()?.to_vec1::<f64>()?
        );
        Ok(())
    }

    #[test]
    fn gradient_accumulates_with_another_consumer() -> Result<()> {
        // x feeds upsample(2×).sum() and 3·x.sum(): dL/dx = 4 + 3 = 7 everywhere, in either
        // order of the two terms (candle's own op gives 4 in one order).
        let x = Var::from_tensor(&Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu)?)?;
        let t = x.as_tensor();
        for order in 0..2 {
            let up = upsample_nearest2d_scale(t, 2, 2)?.sum_all()?;
            let other = (t * 3.0)?.sum_all()?;
            let loss = if order == 0 {
                (up + other)?
            } else {
                (other + up)?
            };
            let g = loss.backward()?;
            let g: Vec<f32> = g.get(t).unwrap().flatten_all()?.to_vec1()?;
            assert_eq!(g, vec![7.0; 4], "order {order}");
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let x = Var::from_tensor(&seeded_randn((1, 2, 3, 2), 1, &Device::Cpu)?)?;
        for (oh, ow) in [(6, 4), (9, 2), (5, 5)] {
            let loss = || {
                let up = upsample_nearest2d(x.as_tensor(), oh, ow)?;
                random_projection(&(up.sum_all()? + random_projection(x.as_tensor(), 2)?)?, 1)
            };
            let check = finite_difference_check(&[&x], loss, 1e-6)?;
            assert!(check.relative_error() < 1e-8, "{oh}×{ow} {check:?}");
        }
        assert!(upsample_nearest2d(x.as_tensor(), 0, 3).is_err());
        Ok(())
    }
}
