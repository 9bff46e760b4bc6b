//! CPU convolutions by row-wise im2col + GEMM: [`conv2d_on_data`] for a network's input
//! (weight gradient only) and [`conv2d_im2col`] for activations (both gradients, col2im
//! fold), with Candle's own convolution wherever these do not apply.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Result, Shape, Tensor, WithDType,
};
use candle_nn::Conv2d;

use super::parallel::for_each_chunk_mut;

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
    let geom = match Im2Col::of(conv, x)? {
        Some(g) if !x.track_op() => g,
        _ => return conv.forward(x),
    };
    let w = conv.weight();
    let (b, o) = (x.dim(0)?, w.dim(0)?);
    let cols = geom.unfold_any(x)?;
    // Computed outside the graph; the result is attached to the weight alone, so the
    // backward never forms dL/d(patches).
    let value = geom.output(&cols, &w.detach().reshape((o, geom.k()))?.t()?, b)?;
    let y = w.apply_op1(WeightOnlyConv {
        patches: cols.reshape((b, geom.l(), geom.k()))?,
        value,
    })?;
    add_bias(conv, y)
}

/// A convolution of a tracked input (an activation) as unfold (im2col) + matrix products,
/// forward and backward, on the CPU; elsewhere (or grouped, dilated, half precision) it is
/// `conv.forward(x)`; an input without a graph goes to [`conv2d_on_data`] when the weight
/// is trained, and is convolved without any graph when it is not (inference).
///
/// Candle's CPU convolution gathers its patches column by column (strided writes) and
/// computes the input gradient with a direct `conv_transpose2d` (a dot product per output
/// element); together they were ~45 % of a segmentation training step. Here the patches are
/// unfolded row by row, the input gradient is one GEMM and a fold (col2im), the weight
/// gradient one GEMM per chunk. Images are processed in chunks of at most
/// [`IM2COL_CHUNK_ELEMENTS`] patch values, so memory does not grow with the batch; the
/// backward unfolds again instead of keeping the patches.
pub fn conv2d_im2col(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    use candle_core::Module;
    let Some(geom) = Im2Col::of(conv, x)? else {
        return conv.forward(x);
    };
    let w = conv.weight();
    let y = match (x.track_op(), w.track_op()) {
        // Inference with constant weights: no graph, chunked.
        (false, false) => geom.forward_value(x, w)?,
        // Data into a trained layer: only the weight gradient is needed.
        (false, true) => return conv2d_on_data(conv, x),
        (true, _) => {
            let value = geom.forward_value(&x.detach(), &w.detach())?;
            x.apply_op2(w, TrackedConv { geom, value })?
        }
    };
    add_bias(conv, y)
}

/// Patch values unfolded at once by [`conv2d_im2col`] (4 Mi: 16 MiB of `f32`).
pub const IM2COL_CHUNK_ELEMENTS: usize = 1 << 22;

fn add_bias(conv: &Conv2d, y: Tensor) -> Result<Tensor> {
    match conv.bias() {
        Some(bias) => y.broadcast_add(&bias.reshape((1, bias.elem_count(), 1, 1))?),
        None => Ok(y),
    }
}

/// The convolution output `value` (computed outside the graph) as a function of the input
/// and the weight, with the im2col backward.
struct TrackedConv {
    geom: Im2Col,
    /// `(B, O, OH, OW)`.
    value: Tensor,
}

impl CustomOp2 for TrackedConv {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(
        &self,
        _x: &CpuStorage,
        _xl: &Layout,
        _w: &CpuStorage,
        _wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        precomputed_storage(&self.value)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = &self.geom;
        let (b, o) = (x.dim(0)?, w.dim(0)?);
        let (l, k) = (g.l(), g.k());
        let x = x.detach();
        let w2 = w.detach().reshape((o, k))?;
        let grad = grad.detach().contiguous()?.reshape((b, o, l))?;
        let mut grad_w: Option<Tensor> = None;
        let mut grad_x = Vec::new();
        for (n0, len) in g.chunks(b) {
            let cols = g.unfold_any(&x.narrow(0, n0, len)?)?;
            let gy = grad.narrow(0, n0, len)?;
            let gw = weight_gradient(&gy, &cols)?;
            grad_w = Some(match grad_w {
                Some(acc) => (acc + gw)?,
                None => gw,
            });
            let dcols = gy
                .transpose(1, 2)?
                .contiguous()?
                .reshape((len * l, o))?
                .matmul(&w2)?;
            grad_x.push(g.fold_any(&dcols, len)?);
        }
        let grad_w = grad_w
            .expect("a batch has at least one image")
            .reshape(w.shape())?;
        Ok((Some(Tensor::cat(&grad_x, 0)?), Some(grad_w)))
    }
}

/// The convolution output `value` as a function of the weight only:
/// `dL/dW = Σ_b dL/dy_b · patches_b`, as one GEMM ([`weight_gradient`]).
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
        precomputed_storage(&self.value)
    }

    fn bwd(&self, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (b, o, oh, ow) = grad.dims4()?;
        let gy = grad.contiguous()?.reshape((b, o, oh * ow))?;
        let k = self.patches.dim(2)?;
        let cols = self.patches.reshape((b * oh * ow, k))?;
        Ok(Some(weight_gradient(&gy, &cols)?.reshape(w.shape())?))
    }
}

/// The forward result of the two custom ops above: their output, computed beforehand with
/// tensor ops, as storage.
fn precomputed_storage(value: &Tensor) -> Result<(CpuStorage, Shape)> {
    let flat = value.flatten_all()?;
    let storage = match flat.dtype() {
        DType::F64 => CpuStorage::F64(flat.to_vec1()?),
        _ => CpuStorage::F32(flat.to_vec1()?),
    };
    Ok((storage, value.shape().clone()))
}

/// `dL/dW` `(O, K)` of a convolution from the output gradient `gy` `(B, O, L)` and the
/// patches `cols` `(B·L, K)`: one GEMM over all images, `(O, B·L) × (B·L, K)` (a batched
/// product summed over the batch would first materialise `B` weight-sized gradients).
fn weight_gradient(gy: &Tensor, cols: &Tensor) -> Result<Tensor> {
    let (b, o, l) = gy.dims3()?;
    gy.transpose(0, 1)?
        .contiguous()?
        .reshape((o, b * l))?
        .matmul(cols)
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
    /// Patch values unfolded at once ([`IM2COL_CHUNK_ELEMENTS`]; smaller in tests).
    chunk_elements: usize,
}

impl Im2Col {
    /// The geometry of `conv` applied to `x`, or `None` where the im2col kernels do not
    /// apply (not on the CPU, not `f32`/`f64`, grouped or dilated, or shapes that candle
    /// should reject with its own error).
    fn of(conv: &Conv2d, x: &Tensor) -> Result<Option<Self>> {
        let cfg = conv.config();
        let w = conv.weight();
        let supported = matches!(x.dtype(), DType::F32 | DType::F64)
            && w.dtype() == x.dtype()
            && matches!(x.device(), Device::Cpu)
            && cfg.groups == 1
            && cfg.dilation == 1
            && x.rank() == 4
            && cfg.stride >= 1;
        if !supported {
            return Ok(None);
        }
        let (_, c, kh, kw) = w.dims4()?;
        let (_, xc, h, wd) = x.dims4()?;
        if xc != c || h + 2 * cfg.padding < kh || wd + 2 * cfg.padding < kw {
            return Ok(None);
        }
        Ok(Some(Self {
            c,
            h,
            w: wd,
            kh,
            kw,
            oh: (h + 2 * cfg.padding - kh) / cfg.stride + 1,
            ow: (wd + 2 * cfg.padding - kw) / cfg.stride + 1,
            stride: cfg.stride,
            padding: cfg.padding,
            chunk_elements: IM2COL_CHUNK_ELEMENTS,
        }))
    }

    /// Output positions per image.
    fn l(&self) -> usize {
        self.oh * self.ow
    }

    /// Patch length `C·kh·kw`.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// `(first image, count)` chunks of a batch of `b` images.
    fn chunks(&self, b: usize) -> impl Iterator<Item = (usize, usize)> {
        let per = (self.chunk_elements / (self.l() * self.k()).max(1)).max(1);
        (0..b).step_by(per).map(move |n0| (n0, per.min(b - n0)))
    }

    /// `(B, O, OH, OW)` convolution of `x` `(B, C, H, W)` with `w` `(O, C, kh, kw)`, no
    /// bias, chunk by chunk.
    fn forward_value(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let (b, o) = (x.dim(0)?, w.dim(0)?);
        let wt = w.reshape((o, self.k()))?.t()?;
        let mut parts = Vec::new();
        for (n0, len) in self.chunks(b) {
            let cols = self.unfold_any(&x.narrow(0, n0, len)?)?;
            parts.push(self.output(&cols, &wt, len)?);
        }
        Tensor::cat(&parts, 0)
    }

    /// The convolution of `b` images from their patches `cols` `(B·L, K)` and the flattened,
    /// transposed weight `wt` `(K, O)`: `(B·L, O)` → `(B, O, OH, OW)`.
    fn output(&self, cols: &Tensor, wt: &Tensor, b: usize) -> Result<Tensor> {
        let o = wt.dim(1)?;
        cols.matmul(wt)?
            .reshape((b, self.l(), o))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, o, self.oh, self.ow))
    }

    fn unfold_any(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        match x.dtype() {
            DType::F64 => self.unfold::<f64>(x, b),
            _ => self.unfold::<f32>(x, b),
        }
    }

    fn fold_any(&self, cols: &Tensor, b: usize) -> Result<Tensor> {
        match cols.dtype() {
            DType::F64 => self.fold::<f64>(cols, b),
            _ => self.fold::<f32>(cols, b),
        }
    }

    /// `(B·OH·OW, C·kh·kw)` patches of `x` (zero padding), rows in output raster order,
    /// columns in the weight's `(C, kh, kw)` order.
    fn unfold<T: WithDType>(&self, x: &Tensor, b: usize) -> Result<Tensor> {
        let data = x.flatten_all()?.to_vec1::<T>()?;
        let (l, k) = (self.l(), self.k());
        let mut cols = vec![T::zero(); b * l * k];
        let spans = self.spans();
        for_each_chunk_mut(&mut cols, l * k, |n, out| {
            let img = &data[n * self.c * self.h * self.w..(n + 1) * self.c * self.h * self.w];
            for oy in 0..self.oh {
                for (ox, &(k0, k1, x0)) in spans.iter().enumerate() {
                    let row = &mut out[(oy * self.ow + ox) * k..][..k];
                    for ci in 0..self.c {
                        for ky in 0..self.kh {
                            let Some(y) = self.source(oy, ky, self.h) else {
                                continue;
                            };
                            let src = &img[(ci * self.h + y) * self.w + x0..][..k1 - k0];
                            row[(ci * self.kh + ky) * self.kw + k0..][..k1 - k0]
                                .copy_from_slice(src);
                        }
                    }
                }
            }
        });
        Tensor::from_vec(cols, (b * l, k), x.device())
    }

    /// The adjoint of [`Self::unfold`] (col2im): sums each patch value of `cols`
    /// `(B·OH·OW, C·kh·kw)` back onto its input pixel → `(B, C, H, W)`.
    fn fold<T: WithDType>(&self, cols: &Tensor, b: usize) -> Result<Tensor> {
        let data = cols.flatten_all()?.to_vec1::<T>()?;
        let (l, k) = (self.l(), self.k());
        let plane = self.c * self.h * self.w;
        let mut out = vec![T::zero(); b * plane];
        let spans = self.spans();
        for_each_chunk_mut(&mut out, plane, |n, img| {
            let rows = &data[n * l * k..(n + 1) * l * k];
            for oy in 0..self.oh {
                for (ox, &(k0, k1, x0)) in spans.iter().enumerate() {
                    let row = &rows[(oy * self.ow + ox) * k..][..k];
                    for ci in 0..self.c {
                        for ky in 0..self.kh {
                            let Some(y) = self.source(oy, ky, self.h) else {
                                continue;
                            };
                            let dst = &mut img[(ci * self.h + y) * self.w + x0..][..k1 - k0];
                            let src = &row[(ci * self.kh + ky) * self.kw + k0..][..k1 - k0];
                            for (d, &v) in dst.iter_mut().zip(src) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        });
        Tensor::from_vec(out, (b, self.c, self.h, self.w), cols.device())
    }

    /// For each output column: the kernel columns `k0..k1` that fall inside the image and the
    /// input column `x0` of `k0` (consecutive kernel columns read consecutive pixels, so a
    /// patch row is one slice copy).
    fn spans(&self) -> Vec<(usize, usize, usize)> {
        (0..self.ow)
            .map(|ox| {
                let inside: Vec<usize> = (0..self.kw)
                    .filter(|&kx| self.source(ox, kx, self.w).is_some())
                    .collect();
                match (inside.first(), inside.last()) {
                    (Some(&k0), Some(&k1)) => {
                        (k0, k1 + 1, self.source(ox, k0, self.w).expect("inside"))
                    }
                    _ => (0, 0, 0),
                }
            })
            .collect()
    }

    /// Input coordinate read by output coordinate `o` at kernel offset `k` along an axis of
    /// `size` pixels (`None` in the zero padding).
    fn source(&self, o: usize, k: usize, size: usize) -> Option<usize> {
        let i = (o * self.stride + k) as isize - self.padding as isize;
        (i >= 0 && (i as usize) < size).then_some(i as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::{
        finite_difference_check, max_abs_diff, random_projection, seeded_randn,
    };
    use crate::nn::layers::{conv2d, KAIMING_NORMAL_FAN_OUT};
    use crate::nn::seeded_var_builder;
    use candle_core::{Module, Var};
    use candle_nn::Conv2dConfig;
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
            let diff = max_abs_diff(&ours, &theirs);
            assert!(diff < 1e-12, "k{k} s{stride} p{padding}: {diff}");
            // Same weight (and bias) gradients as candle's conv.
            let w = varmap.data().lock().unwrap()["weight"].clone();
            let g1 = random_projection(&ours, 3)?.backward()?;
            let g2 = random_projection(&theirs, 3)?.backward()?;
            let d = max_abs_diff(
                g1.get(w.as_tensor()).unwrap(),
                g2.get(w.as_tensor()).unwrap(),
            );
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

    /// Candle's convolution, gradients of input, weight and bias, and finite differences.
    #[test]
    fn im2col_convolution_matches_candle_with_both_gradients() -> Result<()> {
        let dev = Device::Cpu;
        // (in, out, kernel, stride, padding, bias, height, width)
        for (ci, co, k, stride, padding, bias, h, w) in [
            (3, 4, 3, 1, 1, true, 7, 6),
            (2, 5, 3, 2, 1, false, 9, 8),
            (4, 3, 1, 1, 0, true, 5, 5),
            (4, 6, 1, 2, 0, false, 7, 6),
            (2, 2, 5, 2, 2, false, 6, 9),
            (3, 2, 2, 2, 0, true, 4, 5),
        ] {
            let varmap = VarMap::new();
            let vb = seeded_var_builder(&varmap, 1, DType::F64, &dev);
            let cfg = Conv2dConfig {
                padding,
                stride,
                ..Default::default()
            };
            let conv = conv2d(ci, co, k, cfg, bias, KAIMING_NORMAL_FAN_OUT, vb)?;
            let x = Var::from_tensor(&seeded_randn((3, ci, h, w), 2, &dev)?)?;
            let ours = conv2d_im2col(&conv, x.as_tensor())?;
            let theirs = conv.forward(x.as_tensor())?;
            let case = format!("{ci}->{co} k{k} s{stride} p{padding} {h}x{w}");
            assert_eq!(ours.dims(), theirs.dims(), "{case}");
            let diff = max_abs_diff(&ours, &theirs);
            assert!(diff < 1e-12, "{case}: {diff}");
            let g1 = random_projection(&ours, 3)?.backward()?;
            let mut vars: Vec<Var> = varmap.all_vars();
            vars.push(x.clone());
            // Candle's input gradient takes its output padding from the height alone, so
            // with a stride and unequal remainders in height and width (9×8 at stride 2
            // here) its backward fails on a shape mismatch; there only finite differences
            // judge.
            let candle_fails = (h + 2 * padding - k) % stride != (w + 2 * padding - k) % stride;
            match random_projection(&theirs, 3)?.backward() {
                Ok(g2) => {
                    assert!(!candle_fails, "{case}: candle's backward now works here");
                    for v in &vars {
                        let a = g1.get(v.as_tensor()).expect("ours has a gradient");
                        let b = g2.get(v.as_tensor()).expect("candle's too");
                        let d = max_abs_diff(a, b);
                        assert!(
                            d < 1e-10,
                            "{case}: gradient of {:?} differs by {d}",
                            v.shape()
                        );
                    }
                }
                Err(e) => assert!(candle_fails, "{case}: candle's backward failed: {e}"),
            }
            let check = finite_difference_check(
                &vars.iter().collect::<Vec<_>>(),
                || random_projection(&conv2d_im2col(&conv, x.as_tensor())?, 4),
                1e-6,
            )?;
            assert!(check.relative_error() < 1e-8, "{case}: {check:?}");
        }
        Ok(())
    }

    /// One image per chunk gives the whole-batch values and gradients.
    #[test]
    fn im2col_chunks_do_not_change_the_result() -> Result<()> {
        let dev = Device::Cpu;
        let vb = seeded_var_builder(&VarMap::new(), 5, DType::F64, &dev);
        let cfg = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let conv = conv2d(3, 4, 3, cfg, false, KAIMING_NORMAL_FAN_OUT, vb)?;
        let x = Var::from_tensor(&seeded_randn((5, 3, 8, 7), 6, &dev)?)?;
        let run = |chunk_elements: usize| -> Result<(Tensor, Tensor, Tensor)> {
            let mut geom = Im2Col::of(&conv, x.as_tensor())?.expect("supported");
            geom.chunk_elements = chunk_elements;
            let w = conv.weight();
            let value = geom.forward_value(&x.detach(), &w.detach())?;
            let y = x.apply_op2(w, TrackedConv { geom, value })?;
            let g = random_projection(&y, 7)?.backward()?;
            Ok((
                y,
                g.get(x.as_tensor()).unwrap().clone(),
                g.get(w).unwrap().clone(),
            ))
        };
        let whole = run(usize::MAX)?;
        let single = run(1)?;
        for (a, b) in [
            (&whole.0, &single.0),
            (&whole.1, &single.1),
            (&whole.2, &single.2),
        ] {
            let d = max_abs_diff(a, b);
            assert!(d < 1e-12, "{d}");
        }
        Ok(())
    }

    /// Constant weights and data (inference): candle's values, no graph.
    #[test]
    fn im2col_inference_matches_candle_without_a_graph() -> Result<()> {
        let dev = Device::Cpu;
        let w = seeded_randn((4, 3, 3, 3), 8, &dev)?;
        let b = seeded_randn(4, 9, &dev)?;
        let cfg = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let conv = Conv2d::new(w, Some(b), cfg);
        let x = seeded_randn((3, 3, 10, 10), 10, &dev)?;
        let ours = conv2d_im2col(&conv, &x)?;
        assert!(!ours.track_op());
        let d = (&ours - conv.forward(&x)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(d < 1e-12, "{d}");
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
