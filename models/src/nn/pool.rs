//! Max pooling with a backward pass for any kernel/stride/padding, and global average pooling.
//!
//! Candle's `max_pool2d` has a backward only when kernel == stride, so the ResNet stem's
//! 3×3/stride-2/pad-1 pool cannot train with it. On the CPU [`max_pool2d`] runs a custom op
//! with its own kernel and a real backward (the gradient goes to the first maximum of each
//! window in row-major order, as in PyTorch). On other devices it falls back to
//! [`max_pool2d_composed`], a differentiable maximum over the k² shifted strided views of
//! the padded input (k² full-size temporaries; ties share the gradient).

use super::ops::contiguous_slice;
use super::parallel::for_each_chunk_mut;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};

/// Square max pooling window: `kernel × kernel`, `stride`, implicit `-inf` padding on every
/// side. Output side `⌊(n + 2·padding − kernel) / stride⌋ + 1` (PyTorch, `ceil_mode=False`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2dConfig {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool2dConfig {
    /// The ResNet stem pool: 3×3, stride 2, padding 1.
    pub const RESNET_STEM: Self = Self {
        kernel: 3,
        stride: 2,
        padding: 1,
    };

    fn validate(&self, h: usize, w: usize) -> Result<()> {
        if self.kernel == 0 || self.stride == 0 {
            candle_core::bail!("max_pool2d: kernel and stride must be positive: {self:?}")
        }
        if 2 * self.padding > self.kernel {
            candle_core::bail!("max_pool2d: padding must be at most half the kernel: {self:?}")
        }
        if h + 2 * self.padding < self.kernel || w + 2 * self.padding < self.kernel {
            candle_core::bail!("max_pool2d: input {h}×{w} smaller than the window {self:?}")
        }
        Ok(())
    }

    /// Output `(height, width)` for an input of `h × w`.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.padding - self.kernel) / self.stride + 1,
            (w + 2 * self.padding - self.kernel) / self.stride + 1,
        )
    }
}

/// Max pooling of a `(B, C, H, W)` tensor, differentiable on every device.
pub fn max_pool2d(x: &Tensor, cfg: MaxPool2dConfig) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    cfg.validate(h, w)?;
    match x.device() {
        Device::Cpu => match x.dtype() {
            DType::F32 | DType::F64 => x.contiguous()?.apply_op1(MaxPool2dOp(cfg)),
            // Half precision: pool in f32 (max is exact in any precision).
            _ => x
                .to_dtype(DType::F32)?
                .apply_op1(MaxPool2dOp(cfg))?
                .to_dtype(x.dtype()),
        },
        _ => max_pool2d_composed(x, cfg),
    }
}

/// Max pooling as an element-wise maximum over the `kernel²` shifted, strided views of the
/// `-inf`-padded input: built from differentiable primitives only, so it runs and trains on
/// any device, at the cost of `kernel²` full-size temporaries.
pub fn max_pool2d_composed(x: &Tensor, cfg: MaxPool2dConfig) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    cfg.validate(h, w)?;
    let (oh, ow) = cfg.output_size(h, w);
    let p = cfg.padding;
    // Rows dy + stride·o for o < oh must exist for every dy < kernel: pad the end enough.
    let pad_h_end = (cfg.kernel - 1 + cfg.stride * oh).saturating_sub(h + p);
    let pad_w_end = (cfg.kernel - 1 + cfg.stride * ow).saturating_sub(w + p);
    let neg_inf = |shape: (usize, usize, usize, usize)| -> Result<Tensor> {
        Tensor::zeros(shape, x.dtype(), x.device())?.affine(1.0, f64::NEG_INFINITY)
    };
    let mut padded = x.clone();
    if p > 0 || pad_h_end > 0 {
        let mut parts = Vec::new();
        if p > 0 {
            parts.push(neg_inf((b, c, p, w))?);
        }
        parts.push(padded);
        if pad_h_end > 0 {
            parts.push(neg_inf((b, c, pad_h_end, w))?);
        }
        padded = Tensor::cat(&parts, 2)?;
    }
    let hp = padded.dim(2)?;
    if p > 0 || pad_w_end > 0 {
        let mut parts = Vec::new();
        if p > 0 {
            parts.push(neg_inf((b, c, hp, p))?);
        }
        parts.push(padded);
        if pad_w_end > 0 {
            parts.push(neg_inf((b, c, hp, pad_w_end))?);
        }
        padded = Tensor::cat(&parts, 3)?;
    }
    let (s, wp) = (cfg.stride, padded.dim(3)?);
    let mut out: Option<Tensor> = None;
    for dy in 0..cfg.kernel {
        // Rows dy, dy + s, ...: narrow to s·oh rows, split into (oh, s), keep the first.
        let rows = padded
            .narrow(2, dy, s * oh)?
            .reshape((b, c, oh, s, wp))?
            .narrow(3, 0, 1)?
            .squeeze(3)?;
        for dx in 0..cfg.kernel {
            let view = rows
                .narrow(3, dx, s * ow)?
                .reshape((b, c, oh, ow, s))?
                .narrow(4, 0, 1)?
                .squeeze(4)?;
            out = Some(match out {
                None => view,
                Some(acc) => acc.maximum(&view)?,
            });
        }
    }
    match out {
        Some(t) => Ok(t),
        None => candle_core::bail!("max_pool2d: empty kernel"),
    }
}

/// Global average pooling: `(B, C, H, W)` → `(B, C)`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let (b, c, _, _) = x.dims4()?;
    x.reshape((b, c, ()))?.mean(2)
}

/// Global max pooling `(B, C, H, W) → (B, C)`; the gradient goes to the maximum of each
/// channel (Candle's max-reduction backward).
pub fn global_max_pool(x: &Tensor) -> Result<Tensor> {
    let (b, c, _, _) = x.dims4()?;
    x.reshape((b, c, ()))?.max(2)
}

/// The CPU max-pooling kernel; its backward is [`MaxPool2dBackward`].
struct MaxPool2dOp(MaxPool2dConfig);

/// NaN test for any `PartialOrd` element: only NaN is incomparable with itself.
#[inline]
fn is_nan<T: PartialOrd>(v: &T) -> bool {
    v.partial_cmp(v).is_none()
}

/// `v` replaces the running maximum `m` if larger, or if NaN (NaN propagates, as in PyTorch).
#[inline]
fn beats<T: PartialOrd>(v: &T, m: &T) -> bool {
    v > m || (is_nan(v) && !is_nan(m))
}

/// Clipped input range `[start, end)` of each output position along one axis.
fn window_ranges(n_in: usize, n_out: usize, cfg: &MaxPool2dConfig) -> Vec<(usize, usize)> {
    (0..n_out)
        .map(|o| {
            let start = (o * cfg.stride) as isize - cfg.padding as isize;
            let end = (start + cfg.kernel as isize).min(n_in as isize) as usize;
            (start.max(0) as usize, end)
        })
        .collect()
}

/// Separable max: along rows into `(h, ow)`, then along columns into `(oh, ow)`.
fn pool_forward<T: Copy + PartialOrd + Send + Sync + Default>(
    input: &[T],
    dims: (usize, usize, usize, usize),
    cfg: &MaxPool2dConfig,
) -> Vec<T> {
    let (_, _, h, w) = dims;
    let (oh, ow) = cfg.output_size(h, w);
    let (rows, cols) = (window_ranges(h, oh, cfg), window_ranges(w, ow, cfg));
    let mut out = vec![T::default(); dims.0 * dims.1 * oh * ow];
    for_each_chunk_mut(&mut out, oh * ow, |i, o| {
        let plane = &input[i * h * w..(i + 1) * h * w];
        let mut row_max = vec![T::default(); h * ow];
        for y in 0..h {
            let row = &plane[y * w..(y + 1) * w];
            for (dst, &(a, b)) in row_max[y * ow..(y + 1) * ow].iter_mut().zip(&cols) {
                let mut m = row[a];
                for v in &row[a + 1..b] {
                    if beats(v, &m) {
                        m = *v;
                    }
                }
                *dst = m;
            }
        }
        for (oy, &(a, b)) in rows.iter().enumerate() {
            let dst = &mut o[oy * ow..(oy + 1) * ow];
            dst.copy_from_slice(&row_max[a * ow..(a + 1) * ow]);
            for y in a + 1..b {
                for (m, v) in dst.iter_mut().zip(&row_max[y * ow..(y + 1) * ow]) {
                    if beats(v, m) {
                        *m = *v;
                    }
                }
            }
        }
    });
    out
}

/// Sends each output gradient to the first element (row-major) of its window that equals
/// the pooled value: the first maximum, PyTorch's choice among ties.
fn pool_backward<T>(
    input: &[T],
    pooled: &[T],
    grad_out: &[T],
    dims: (usize, usize, usize, usize),
    cfg: &MaxPool2dConfig,
) -> Vec<T>
where
    T: Copy + PartialOrd + Send + Sync + Default + std::ops::AddAssign,
{
    let (_, _, h, w) = dims;
    let (oh, ow) = cfg.output_size(h, w);
    let (rows, cols) = (window_ranges(h, oh, cfg), window_ranges(w, ow, cfg));
    let mut grad_in = vec![T::default(); input.len()];
    // Each (b, c) plane writes only its own input plane: parallel and deterministic.
    for_each_chunk_mut(&mut grad_in, h * w, |i, gi| {
        let plane = &input[i * h * w..(i + 1) * h * w];
        let (po, go) = (
            &pooled[i * oh * ow..(i + 1) * oh * ow],
            &grad_out[i * oh * ow..(i + 1) * oh * ow],
        );
        for (oy, &(ya, yb)) in rows.iter().enumerate() {
            for (ox, &(xa, xb)) in cols.iter().enumerate() {
                let target = po[oy * ow + ox];
                let nan = is_nan(&target);
                'window: for y in ya..yb {
                    for x in xa..xb {
                        let v = &plane[y * w + x];
                        if *v == target || (nan && is_nan(v)) {
                            gi[y * w + x] += go[oy * ow + ox];
                            break 'window;
                        }
                    }
                }
            }
        }
    });
    grad_in
}

impl CustomOp1 for MaxPool2dOp {
    fn name(&self) -> &'static str {
        "max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims4()?;
        let (oh, ow) = self.0.output_size(dims.2, dims.3);
        let shape = Shape::from((dims.0, dims.1, oh, ow));
        let name = self.name();
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(pool_forward(
                contiguous_slice(v, layout, name)?,
                dims,
                &self.0,
            )),
            CpuStorage::F64(v) => CpuStorage::F64(pool_forward(
                contiguous_slice(v, layout, name)?,
                dims,
                &self.0,
            )),
            other => candle_core::bail!("max-pool2d: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, shape))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg.contiguous()?.apply_op3_no_bwd(
            &res.contiguous()?,
            &grad_res.contiguous()?,
            &MaxPool2dBackward(self.0),
        )?;
        Ok(Some(grad))
    }
}

/// `(input, pooled, grad_output) → grad_input` of [`MaxPool2dOp`] (first-order only).
struct MaxPool2dBackward(MaxPool2dConfig);

impl CustomOp3 for MaxPool2dBackward {
    fn name(&self) -> &'static str {
        "max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = l1.shape().dims4()?;
        let (oh, ow) = self.0.output_size(dims.2, dims.3);
        for l in [l2, l3] {
            if l.shape().dims4()? != (dims.0, dims.1, oh, ow) {
                candle_core::bail!("max-pool2d backward: unexpected shape {:?}", l.shape())
            }
        }
        let name = self.name();
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(p), CpuStorage::F32(g)) => {
                CpuStorage::F32(pool_backward(
                    contiguous_slice(x, l1, name)?,
                    contiguous_slice(p, l2, name)?,
                    contiguous_slice(g, l3, name)?,
                    dims,
                    &self.0,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(p), CpuStorage::F64(g)) => {
                CpuStorage::F64(pool_backward(
                    contiguous_slice(x, l1, name)?,
                    contiguous_slice(p, l2, name)?,
                    contiguous_slice(g, l3, name)?,
                    dims,
                    &self.0,
                ))
            }
            _ => candle_core::bail!("max-pool2d backward: unsupported dtypes"),
        };
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::{finite_difference_check, random_projection, seeded_randn};
    use candle_core::Var;

    const CONFIGS: [MaxPool2dConfig; 4] = [
        MaxPool2dConfig::RESNET_STEM,
        MaxPool2dConfig {
            kernel: 2,
            stride: 2,
            padding: 0,
        },
        MaxPool2dConfig {
            kernel: 3,
            stride: 1,
            padding: 1,
        },
        MaxPool2dConfig {
            kernel: 3,
            stride: 3,
            padding: 0,
        },
    ];

    #[test]
    fn matches_candle_where_candle_works_and_the_composed_form_everywhere() -> Result<()> {
        let x = seeded_randn((2, 3, 9, 7), 0, &Device::Cpu)?.to_dtype(DType::F32)?;
        let native = max_pool2d(&x, CONFIGS[1])?;
        assert_eq!(native.dims(), &[2, 3, 4, 3]);
        let reference = x.max_pool2d(2)?;
        assert_eq!(
            native.flatten_all()?.to_vec1::<f32>()?,
            reference.flatten_all()?.to_vec1::<f32>()?
        );
        for cfg in CONFIGS {
            let a = max_pool2d(&x, cfg)?;
            let b = max_pool2d_composed(&x, cfg)?;
            assert_eq!(a.dims(), b.dims(), "{cfg:?}");
            let (oh, ow) = cfg.output_size(9, 7);
            assert_eq!(a.dims(), &[2, 3, oh, ow]);
            assert_eq!(
                a.flatten_all()?.to_vec1::<f32>()?,
                b.flatten_all()?.to_vec1::<f32>()?,
                "{cfg:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn resnet_stem_pool_reference_values() -> Result<()> {
        // 4×4 input 0..16, 3×3/s2/p1 → 2×2: windows end at rows/cols {1, 3}.
        let x = Tensor::arange(0f32, 16., &Device::Cpu)?.reshape((1, 1, 4, 4))?;
        let y = max_pool2d(&x, MaxPool2dConfig::RESNET_STEM)?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![5., 7., 13., 15.]);
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        for (k, cfg) in CONFIGS.into_iter().enumerate() {
            // Distinct values (no ties), so the max is differentiable everywhere checked.
            let x = Var::from_tensor(&seeded_randn((2, 2, 7, 6), 10 + k as u64, &Device::Cpu)?)?;
            let loss = || random_projection(&max_pool2d(x.as_tensor(), cfg)?, 3);
            let check = finite_difference_check(&[&x], loss, 1e-6)?;
            assert!(check.relative_error() < 1e-8, "{cfg:?} {check:?}");
            let loss = || random_projection(&max_pool2d_composed(x.as_tensor(), cfg)?, 3);
            let check = finite_difference_check(&[&x], loss, 1e-6)?;
            assert!(check.relative_error() < 1e-8, "composed {cfg:?} {check:?}");
        }
        Ok(())
    }

    #[test]
    fn overlapping_windows_accumulate_and_ties_go_to_the_first_maximum() -> Result<()> {
        // A single large value in the middle is the max of all four overlapping windows.
        let mut v = vec![0f32; 25];
        v[12] = 10.0;
        let x = Var::from_tensor(&Tensor::from_vec(v, (1, 1, 5, 5), &Device::Cpu)?)?;
        let cfg = MaxPool2dConfig {
            kernel: 3,
            stride: 1,
            padding: 0,
        };
        let g = max_pool2d(x.as_tensor(), cfg)?.sum_all()?.backward()?;
        let g: Vec<f32> = g.get(x.as_tensor()).unwrap().flatten_all()?.to_vec1()?;
        assert_eq!(g[12], 9.0);
        assert_eq!(g.iter().sum::<f32>(), 9.0);
        // All equal: each window's gradient goes to its first element.
        let x = Var::from_tensor(&Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu)?)?;
        let cfg = MaxPool2dConfig {
            kernel: 2,
            stride: 2,
            padding: 0,
        };
        let g = max_pool2d(x.as_tensor(), cfg)?.sum_all()?.backward()?;
        let g: Vec<f32> = g.get(x.as_tensor()).unwrap().flatten_all()?.to_vec1()?;
        assert_eq!(g, vec![1.0, 0.0, 0.0, 0.0]);
        Ok(())
    }

    #[test]
    fn bad_configs_and_nan_inputs() -> Result<()> {
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu)?;
        let too_big = MaxPool2dConfig {
            kernel: 5,
            stride: 1,
            padding: 0,
        };
        assert!(max_pool2d(&x, too_big).is_err());
        assert!(max_pool2d(&x.flatten_all()?, MaxPool2dConfig::RESNET_STEM).is_err());
        let nan = Tensor::new(&[[[[1f32, f32::NAN], [0., 2.]]]], &Device::Cpu)?;
        let y = max_pool2d(
            &nan,
            MaxPool2dConfig {
                kernel: 2,
                stride: 2,
                padding: 0,
            },
        )?;
        assert!(y.flatten_all()?.to_vec1::<f32>()?[0].is_nan());
        // Half precision goes through f32.
        let h = seeded_randn((1, 2, 5, 5), 1, &Device::Cpu)?.to_dtype(DType::BF16)?;
        assert_eq!(
            max_pool2d(&h, MaxPool2dConfig::RESNET_STEM)?.dtype(),
            DType::BF16
        );
        Ok(())
    }

    #[test]
    fn global_average_pool() -> Result<()> {
        let x = Tensor::arange(0f32, 12., &Device::Cpu)?.reshape((1, 3, 2, 2))?;
        assert_eq!(
            global_avg_pool(&x)?.to_vec2::<f32>()?,
            vec![vec![1.5, 5.5, 9.5]]
        );
        Ok(())
    }
}
