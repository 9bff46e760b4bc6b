//! CPU convolutions by im2col + GEMM: [`conv2d_on_data`] for a network's input (weight
//! gradient only) and [`conv2d_im2col`] for activations (both gradients, col2im fold), with
//! Candle's own convolution wherever these do not apply.
//!
//! The layout is Caffe's: one image's patches form a `(C·kh·kw, OH·OW)` matrix whose rows are
//! whole output planes, so the unfold copies runs of `OW` pixels (one `memcpy` per kernel
//! offset and output row at stride 1), and every product is written straight into its
//! destination by `gemm` with strides: the output `(O, OH·OW)` of an image is already NCHW,
//! the weight gradient accumulates over the batch in place, and no operand is transposed in
//! memory. Images are split into at most [`MAX_GROUPS`] groups that run in parallel on
//! Candle's pool with one scratch matrix each; the split depends on the batch alone, so
//! results do not depend on the number of threads.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Result, Shape, Tensor, WithDType,
};
use candle_nn::Conv2d;
use gemm::Parallelism;

use super::ops::{contiguous_slice, storage_slice};
use super::parallel::for_each_chunk_mut;

/// Convolution of a network's *input* (data that needs no gradient) with `conv`'s weight.
///
/// Candle's backward always computes a convolution's input gradient, through a slow direct
/// `conv_transpose2d`; for the first layer that work is wasted (≈ 9 % of a ResNet-18 step at
/// 224², most of the tiny encoder's backward). When `x` is a leaf tensor (no graph: a batch
/// of images) on the CPU, the output is attached to the weight alone and the backward is
/// the weight gradient only. Otherwise (a tracked input, another device or dtype) it is
/// `conv.forward(x)`.
pub fn conv2d_on_data(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    use candle_core::Module;
    let geom = match Im2Col::of(conv, x)? {
        Some(g) if !x.track_op() => g,
        _ => return conv.forward(x),
    };
    let y = conv.weight().apply_op1(WeightOnlyConv {
        geom,
        x: x.contiguous()?,
    })?;
    add_bias(conv, y)
}

/// A convolution of a tracked input (an activation) as unfold (im2col) + matrix products,
/// forward and backward, on the CPU; elsewhere (or grouped, dilated, half precision) it is
/// `conv.forward(x)`; an input without a graph goes to [`conv2d_on_data`] when the weight
/// is trained, and is convolved without any graph when it is not (inference).
///
/// Candle's CPU convolution gathers its patches column by column (strided writes), copies
/// its output into NCHW and computes the input gradient with a direct `conv_transpose2d` (a
/// dot product per output element). Here (see the module doc) the input gradient is one
/// GEMM and a fold (col2im) per image, the weight gradient one accumulating GEMM per image;
/// the backward unfolds again instead of keeping the patches.
pub fn conv2d_im2col(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    use candle_core::Module;
    let Some(geom) = Im2Col::of(conv, x)? else {
        return conv.forward(x);
    };
    let w = conv.weight();
    let y = match (x.track_op(), w.track_op()) {
        // Inference with constant weights: no graph.
        (false, false) => {
            let (x, w) = (x.contiguous()?, w.contiguous()?);
            match x.dtype() {
                DType::F64 => geom.forward_tensor::<f64>(&x, &w)?,
                _ => geom.forward_tensor::<f32>(&x, &w)?,
            }
        }
        // Data into a trained layer: only the weight gradient is needed.
        (false, true) => return conv2d_on_data(conv, x),
        (true, _) => x
            .contiguous()?
            .apply_op2(&w.contiguous()?, TrackedConv { geom })?,
    };
    add_bias(conv, y)
}

/// Most image groups a convolution splits its batch into (each holds one scratch patch
/// matrix and, in the backward, one weight-gradient partial sum).
pub const MAX_GROUPS: usize = 4;

/// Fewest columns (output pixels) of one GEMM: images are stacked until a product has them.
pub const MIN_GEMM_COLUMNS: usize = 256;

fn add_bias(conv: &Conv2d, y: Tensor) -> Result<Tensor> {
    match conv.bias() {
        Some(bias) => y.broadcast_add(&bias.reshape((1, bias.elem_count(), 1, 1))?),
        None => Ok(y),
    }
}

/// The convolution of the input (op input 1) and the weight (op input 2), with the im2col
/// backward.
struct TrackedConv {
    geom: Im2Col,
}

impl CustomOp2 for TrackedConv {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let b = xl.dims()[0];
        let storage = match (x, w) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(self.geom.forward(
                contiguous_slice(x, xl, self.name())?,
                contiguous_slice(w, wl, self.name())?,
                b,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(w)) => CpuStorage::F64(self.geom.forward(
                contiguous_slice(x, xl, self.name())?,
                contiguous_slice(w, wl, self.name())?,
                b,
            )),
            _ => candle_core::bail!("conv2d-im2col: f32 or f64 input and weight expected"),
        };
        Ok((storage, self.geom.output_shape(b)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gw) = self.geom.backward_tensors(x, w, grad, true)?;
        Ok((gx, Some(gw)))
    }
}

/// The convolution of the input `x` (data, no gradient) as a function of the weight only.
struct WeightOnlyConv {
    geom: Im2Col,
    /// Contiguous `(B, C, H, W)` input.
    x: Tensor,
}

impl CustomOp1 for WeightOnlyConv {
    fn name(&self) -> &'static str {
        "conv2d-on-data"
    }

    fn cpu_fwd(&self, w: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let b = self.x.dim(0)?;
        let w = match w {
            CpuStorage::F32(w) => CpuStorage::F32(with_slice(&self.x, |x| {
                Ok(self
                    .geom
                    .forward(x, contiguous_slice(w, wl, self.name())?, b))
            })?),
            CpuStorage::F64(w) => CpuStorage::F64(with_slice(&self.x, |x| {
                Ok(self
                    .geom
                    .forward(x, contiguous_slice(w, wl, self.name())?, b))
            })?),
            _ => candle_core::bail!("conv2d-on-data: f32 or f64 weight expected"),
        };
        Ok((w, self.geom.output_shape(b)))
    }

    fn bwd(&self, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, gw) = self.geom.backward_tensors(&self.x, w, grad, false)?;
        Ok(Some(gw))
    }
}

/// Calls `f` with the contiguous CPU data of `t` (copied only if `t` is strided).
fn with_slice<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu) => f(storage_slice(cpu, layout, "conv2d-im2col")?),
        _ => candle_core::bail!("im2col convolution: CPU tensor expected"),
    }
}

/// A matrix view of a slice: element `(r, c)` at `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major `rows × cols` matrix.
    fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (a view: only the strides change).
    fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// `dst = a·b` (or `dst += a·b` with `accumulate`), `dst` row-major `a.rows × b.cols`.
fn gemm_into<T: WithDType>(dst: &mut [T], a: Mat<T>, b: Mat<T>, accumulate: bool, threads: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions differ");
    assert_eq!(dst.len(), m * n, "gemm: destination size");
    for x in [&a, &b] {
        // The last element the strides reach lies inside the slice (this keeps the
        // unchecked `gemm` call below in bounds).
        let last = (x.rows.max(1) - 1) * x.rs + (x.cols.max(1) - 1) * x.cs;
        assert!(
            x.rows == 0 || x.cols == 0 || last < x.data.len(),
            "gemm: view out of bounds"
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(T::zero());
        }
        return;
    }
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let one = T::from_f64(1.0);
    // SAFETY: `T` is f32 or f64 (`Im2Col::of` admits no other dtype); every index the
    // strides reach is inside `dst`, `a.data` or `b.data` (asserted above); `dst` does not
    // alias the inputs (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            one,
            one,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Reusable buffers of one image group: the patch matrix and the phase rows of an image.
struct Scratch<T> {
    cols: Vec<T>,
    split: Vec<T>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Self {
            cols: Vec::new(),
            split: Vec::new(),
        }
    }
}

/// Geometry of an unfold (im2col) of one convolution.
struct Im2Col {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    padding: usize,
    /// Most image groups run in parallel ([`MAX_GROUPS`]; changed in tests).
    max_groups: usize,
    /// Fewest columns of a GEMM ([`MIN_GEMM_COLUMNS`]; changed in tests).
    min_columns: usize,
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
        let (o, c, kh, kw) = w.dims4()?;
        let (_, xc, h, wd) = x.dims4()?;
        if xc != c || h + 2 * cfg.padding < kh || wd + 2 * cfg.padding < kw {
            return Ok(None);
        }
        Ok(Some(Self {
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            oh: (h + 2 * cfg.padding - kh) / cfg.stride + 1,
            ow: (wd + 2 * cfg.padding - kw) / cfg.stride + 1,
            stride: cfg.stride,
            padding: cfg.padding,
            max_groups: MAX_GROUPS,
            min_columns: MIN_GEMM_COLUMNS,
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

    /// Input values per image.
    fn plane(&self) -> usize {
        self.c * self.h * self.w
    }

    fn output_shape(&self, b: usize) -> Shape {
        (b, self.o, self.oh, self.ow).into()
    }

    /// A 1×1 convolution at stride 1 without padding reads each image as its own patch
    /// matrix: no unfold.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// How a batch of `b` is cut: `(images per group, images per GEMM block, GEMM threads)`.
    ///
    /// A block stacks the patch matrices of several images side by side so that each
    /// product has at least [`MIN_GEMM_COLUMNS`] columns (deep layers of small images have
    /// only a few output pixels); the groups take the cores the blocks leave free, and a
    /// GEMM gets the cores the groups leave free. The cut depends on the batch and the
    /// geometry alone, never on the thread count.
    fn split(&self, b: usize) -> (usize, usize, usize) {
        let block = self.min_columns.div_ceil(self.l()).clamp(1, b.max(1));
        let groups = b.div_ceil(block).clamp(1, self.max_groups.max(1));
        let threads = candle_core::utils::get_num_threads();
        (b.div_ceil(groups), block, (threads / groups).max(1))
    }

    /// `(B, O, OH, OW)` convolution of the contiguous `x` `(B, C, H, W)` with `w`
    /// `(O, C, kh, kw)`, no bias.
    fn forward<T: WithDType>(&self, x: &[T], w: &[T], b: usize) -> Vec<T> {
        let (l, k, o, plane) = (self.l(), self.k(), self.o, self.plane());
        let (per, block, threads) = self.split(b);
        let wm = Mat::rows(w, o, k);
        let mut out = vec![T::zero(); b * o * l];
        let mut groups: Vec<&mut [T]> = out.chunks_mut(per * o * l).collect();
        for_each_chunk_mut(&mut groups, 1, |g, group| {
            let (mut scratch, mut prod) = (Scratch::default(), Vec::new());
            for (j, y) in group[0].chunks_mut(block * o * l).enumerate() {
                let first = (g * per + j * block) * plane;
                let m = y.len() / (o * l);
                let imgs = &x[first..][..m * plane];
                let patches = self.patches(imgs, m, &mut scratch);
                if m == 1 {
                    gemm_into(y, wm, Mat::rows(patches, k, l), false, threads);
                } else {
                    // (O, m·L) → m images of (O, L).
                    prod.resize(o * m * l, T::zero());
                    gemm_into(&mut prod, wm, Mat::rows(patches, k, m * l), false, threads);
                    for (i, y) in y.chunks_mut(o * l).enumerate() {
                        for (oc, row) in y.chunks_mut(l).enumerate() {
                            row.copy_from_slice(&prod[(oc * m + i) * l..][..l]);
                        }
                    }
                }
            }
        });
        out
    }

    /// [`Self::forward`] of two contiguous tensors, as a tensor.
    fn forward_tensor<T: WithDType>(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let y = with_slice::<T, _>(x, |x| with_slice(w, |w| Ok(self.forward(x, w, b))))?;
        Tensor::from_vec(y, self.output_shape(b), x.device())
    }

    /// The patch matrix `(K, m·L)` of `m` consecutive images `imgs`: the image itself for
    /// one image of a pointwise convolution, else unfolded into `scratch.cols`, image `i` in
    /// columns `i·L..(i+1)·L`.
    fn patches<'a, T: WithDType>(
        &self,
        imgs: &'a [T],
        m: usize,
        scratch: &'a mut Scratch<T>,
    ) -> &'a [T] {
        if m == 1 && self.is_pointwise() {
            return imgs;
        }
        let (l, plane) = (self.l(), self.plane());
        scratch.cols.resize(self.k() * m * l, T::zero());
        for (i, img) in imgs.chunks(plane).enumerate() {
            let img = self.split_phases(img, &mut scratch.split);
            self.unfold(img, &mut scratch.cols[i * l..], m * l);
        }
        &scratch.cols
    }

    /// Gradients of the input (when `input_grad`) and of the weight from the output
    /// gradient `gy` `(B, O, OH, OW)`.
    fn backward<T: WithDType>(
        &self,
        x: &[T],
        w: &[T],
        gy: &[T],
        b: usize,
        input_grad: bool,
    ) -> (Option<Vec<T>>, Vec<T>) {
        let (l, k, plane, o) = (self.l(), self.k(), self.plane(), self.o);
        let (per, block, threads) = self.split(b);
        let wt = Mat::rows(w, o, k).t();
        let mut gx = input_grad.then(|| vec![T::zero(); b * plane]);
        let groups = b.div_ceil(per);
        // Per group: its slice of the input gradient and its weight-gradient partial sum.
        let mut work: Vec<(Option<&mut [T]>, Vec<T>)> = match &mut gx {
            Some(gx) => gx
                .chunks_mut(per * plane)
                .map(|d| (Some(d), vec![]))
                .collect(),
            None => (0..groups).map(|_| (None, vec![])).collect(),
        };
        for_each_chunk_mut(&mut work, 1, |g, item| {
            let (dx, dw) = &mut item[0];
            *dw = vec![T::zero(); o * k];
            let (mut scratch, mut gy_block) = (Scratch::default(), Vec::new());
            let first = g * per;
            let count = per.min(b - first);
            for (j, i0) in (0..count).step_by(block).enumerate() {
                let m = block.min(count - i0);
                let n0 = first + i0;
                let gy_m = if m == 1 {
                    &gy[n0 * o * l..][..o * l]
                } else {
                    // m images of (O, L) → (O, m·L).
                    gy_block.resize(o * m * l, T::zero());
                    for i in 0..m {
                        for oc in 0..o {
                            gy_block[(oc * m + i) * l..][..l]
                                .copy_from_slice(&gy[((n0 + i) * o + oc) * l..][..l]);
                        }
                    }
                    &gy_block[..]
                };
                let gy_m = Mat::rows(gy_m, o, m * l);
                let patches = self.patches(&x[n0 * plane..][..m * plane], m, &mut scratch);
                // dW (O, K) += gy (O, m·L) · patchesᵀ (m·L, K)
                gemm_into(dw, gy_m, Mat::rows(patches, k, m * l).t(), j > 0, threads);
                if let Some(dx) = dx.as_deref_mut() {
                    let dx_m = &mut dx[i0 * plane..][..m * plane];
                    if m == 1 && self.is_pointwise() {
                        gemm_into(dx_m, wt, gy_m, false, threads);
                    } else {
                        // dpatches (K, m·L) = Wᵀ (K, O) · gy (O, m·L), folded onto the images.
                        let cols = &mut scratch.cols;
                        cols.resize(k * m * l, T::zero());
                        gemm_into(cols, wt, gy_m, false, threads);
                        for (i, img) in dx_m.chunks_mut(plane).enumerate() {
                            self.fold(&cols[i * l..], m * l, img, &mut scratch.split);
                        }
                    }
                }
            }
        });
        // The partial sums in group order: the same sum whatever the thread count.
        let mut parts = work.into_iter().map(|(_, dw)| dw);
        let mut dw = parts.next().unwrap_or_else(|| vec![T::zero(); o * k]);
        for part in parts {
            for (a, p) in dw.iter_mut().zip(part) {
                *a += p;
            }
        }
        (gx, dw)
    }

    /// [`Self::backward`] on tensors: `(dL/dx if input_grad, dL/dW)`.
    fn backward_tensors(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        input_grad: bool,
    ) -> Result<(Option<Tensor>, Tensor)> {
        match x.dtype() {
            DType::F64 => self.backward_any::<f64>(x, w, grad, input_grad),
            _ => self.backward_any::<f32>(x, w, grad, input_grad),
        }
    }

    fn backward_any<T: WithDType>(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        input_grad: bool,
    ) -> Result<(Option<Tensor>, Tensor)> {
        let b = x.dim(0)?;
        let grad = grad.to_dtype(x.dtype())?;
        let (gx, gw) = with_slice::<T, _>(x, |xs| {
            with_slice(w, |ws| {
                with_slice(&grad, |gy| Ok(self.backward(xs, ws, gy, b, input_grad)))
            })
        })?;
        let gx = gx
            .map(|gx| Tensor::from_vec(gx, x.shape(), x.device()))
            .transpose()?;
        Ok((gx, Tensor::from_vec(gw, w.shape(), w.device())?))
    }

    /// Samples per phase row: a row of `W` pixels read at stride `s` is kept as `s` phase
    /// rows (pixels `ph, ph + s, ph + 2s, …`) of `⌈W / s⌉` samples each.
    fn phase_len(&self) -> usize {
        self.w.div_ceil(self.stride)
    }

    /// `img` `(C, H, W)` as `(C, H, stride, ⌈W/stride⌉)` phase rows, so that every kernel
    /// offset reads a contiguous run at any stride (`img` itself at stride 1).
    fn split_phases<'a, T: WithDType>(&self, img: &'a [T], buf: &'a mut Vec<T>) -> &'a [T] {
        let s = self.stride;
        if s == 1 {
            return img;
        }
        let wp = self.phase_len();
        buf.resize(self.c * self.h * s * wp, T::zero());
        for (src, dst) in img.chunks(self.w).zip(buf.chunks_mut(s * wp)) {
            // A phase past the row's end (stride wider than the image) stays zero.
            for (ph, out) in dst.chunks_mut(wp).enumerate().take(self.w) {
                for (d, v) in out.iter_mut().zip(src[ph..].iter().step_by(s)) {
                    *d = *v;
                }
            }
        }
        buf
    }

    /// The inverse of [`Self::split_phases`] for a gradient: phase rows back into `img`.
    fn merge_phases<T: WithDType>(&self, phases: &[T], img: &mut [T]) {
        let (s, wp) = (self.stride, self.phase_len());
        for (dst, src) in img.chunks_mut(self.w).zip(phases.chunks(s * wp)) {
            for (ph, row) in src.chunks(wp).enumerate().take(self.w) {
                for (d, v) in dst[ph..].iter_mut().step_by(s).zip(row) {
                    *d = *v;
                }
            }
        }
    }

    /// For each kernel column `kx`: the output columns `lo..hi` whose input column
    /// `ox·stride + kx − padding` lies inside the image (the others read zero padding), the
    /// phase of those input columns and the sample of `lo` in that phase row.
    fn column_ranges(&self) -> Vec<(usize, usize, usize, usize)> {
        (0..self.kw)
            .map(|kx| {
                let inside = |ox: &usize| self.source(*ox, kx, self.w).is_some();
                let lo = (0..self.ow).find(inside).unwrap_or(self.ow);
                let hi = (0..self.ow).rev().find(inside).map_or(lo, |x| x + 1);
                let x0 = if lo < hi {
                    lo * self.stride + kx - self.padding
                } else {
                    0
                };
                (lo, hi, x0 % self.stride, x0 / self.stride)
            })
            .collect()
    }

    /// Unfolds one image, given as phase rows ([`Self::split_phases`]), into its
    /// `(C·kh·kw, OH·OW)` patch matrix, row `r` at `cols[r·ld..r·ld + OH·OW]` (zero
    /// padding): row `(c, ky, kx)` holds, for every output pixel, the input it reads at that
    /// kernel offset. Each output row is one slice copy.
    fn unfold<T: WithDType>(&self, phases: &[T], cols: &mut [T], ld: usize) {
        let (l, s, wp) = (self.l(), self.stride, self.phase_len());
        let ranges = self.column_ranges();
        for r in 0..self.k() {
            let (ci, ky, kx) = (r / (self.kh * self.kw), r / self.kw % self.kh, r % self.kw);
            let (lo, hi, ph, j0) = ranges[kx];
            let row = &mut cols[r * ld..][..l];
            for (oy, out) in row.chunks_mut(self.ow).enumerate() {
                let Some(y) = self.source(oy, ky, self.h) else {
                    out.fill(T::zero());
                    continue;
                };
                out[..lo].fill(T::zero());
                out[hi..].fill(T::zero());
                let src = &phases[((ci * self.h + y) * s + ph) * wp + j0..];
                out[lo..hi].copy_from_slice(&src[..hi - lo]);
            }
        }
    }

    /// The adjoint of [`Self::unfold`] (col2im): adds every value of the patch matrix (row
    /// `r` at `cols[r·ld..]`) onto the input pixel it was read from, in `img` `(C, H, W)`,
    /// through phase rows in `buf` at a stride.
    fn fold<T: WithDType>(&self, cols: &[T], ld: usize, img: &mut [T], buf: &mut Vec<T>) {
        let (l, s, wp) = (self.l(), self.stride, self.phase_len());
        let ranges = self.column_ranges();
        let phases: &mut [T] = if s == 1 {
            img
        } else {
            buf.resize(self.c * self.h * s * wp, T::zero());
            buf
        };
        phases.fill(T::zero());
        for r in 0..self.k() {
            let (ci, ky, kx) = (r / (self.kh * self.kw), r / self.kw % self.kh, r % self.kw);
            let (lo, hi, ph, j0) = ranges[kx];
            if lo >= hi {
                continue;
            }
            for (oy, src) in cols[r * ld..][..l].chunks(self.ow).enumerate() {
                let Some(y) = self.source(oy, ky, self.h) else {
                    continue;
                };
                let dst = &mut phases[((ci * self.h + y) * s + ph) * wp + j0..][..hi - lo];
                for (d, v) in dst.iter_mut().zip(&src[lo..hi]) {
                    *d += *v;
                }
            }
        }
        if s > 1 {
            self.merge_phases(buf, img);
        }
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

    /// A seeded convolution layer `(in, out, kernel, stride, padding)` and its variables.
    fn layer(
        (ci, co, k, stride, padding): (usize, usize, usize, usize, usize),
        bias: bool,
        dtype: DType,
        seed: u64,
    ) -> Result<(VarMap, Conv2d)> {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, dtype, &Device::Cpu);
        let cfg = Conv2dConfig {
            padding,
            stride,
            ..Default::default()
        };
        let conv = conv2d(ci, co, k, cfg, bias, KAIMING_NORMAL_FAN_OUT, vb)?;
        Ok((varmap, conv))
    }

    #[test]
    fn data_convolution_matches_candle_and_its_weight_gradient() -> Result<()> {
        let dev = Device::Cpu;
        for (k, stride, padding, bias) in [(7, 2, 3, false), (3, 1, 1, true), (2, 2, 0, false)] {
            let (varmap, conv) = layer((3, 4, k, stride, padding), bias, DType::F64, 1)?;
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
            (2, 3, 3, 3, 2, false, 8, 10),
            (2, 2, 1, 3, 0, false, 2, 1),
        ] {
            let (varmap, conv) = layer((ci, co, k, stride, padding), bias, DType::F64, 1)?;
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

    /// Every cut of the batch into groups and GEMM blocks gives the same values and
    /// gradients.
    #[test]
    fn image_groups_do_not_change_the_result() -> Result<()> {
        let dev = Device::Cpu;
        let (_, conv) = layer((3, 4, 3, 2, 1), false, DType::F64, 5)?;
        let x = Var::from_tensor(&seeded_randn((5, 3, 8, 7), 6, &dev)?)?;
        let run = |max_groups: usize, min_columns: usize| -> Result<(Tensor, Tensor, Tensor)> {
            let mut geom = Im2Col::of(&conv, x.as_tensor())?.expect("supported");
            geom.max_groups = max_groups;
            geom.min_columns = min_columns;
            let w = conv.weight();
            let y = x.apply_op2(w, TrackedConv { geom })?;
            let g = random_projection(&y, 7)?.backward()?;
            Ok((
                y,
                g.get(x.as_tensor()).unwrap().clone(),
                g.get(w).unwrap().clone(),
            ))
        };
        // One group of one block; one image per group; two groups of 2-image blocks.
        let whole = run(1, 1 << 20)?;
        for (groups, columns) in [(5, 1), (2, 32), (1, 1)] {
            let other = run(groups, columns)?;
            for (a, b) in [
                (&whole.0, &other.0),
                (&whole.1, &other.1),
                (&whole.2, &other.2),
            ] {
                let d = max_abs_diff(a, b);
                assert!(d < 1e-12, "{groups} groups, {columns} columns: {d}");
            }
        }
        Ok(())
    }

    /// The f32 path (what training runs) against candle's convolution, over a batch that
    /// fills every group, with a pointwise and a strided layer.
    #[test]
    fn f32_convolutions_match_candle() -> Result<()> {
        let dev = Device::Cpu;
        for (ci, co, k, stride, padding) in [(5, 7, 3, 1, 1), (6, 4, 1, 1, 0), (3, 8, 7, 2, 3)] {
            let (varmap, conv) = layer((ci, co, k, stride, padding), false, DType::F32, 3)?;
            let x =
                Var::from_tensor(&seeded_randn((6, ci, 12, 10), 4, &dev)?.to_dtype(DType::F32)?)?;
            let ours = conv2d_im2col(&conv, x.as_tensor())?;
            let theirs = conv.forward(x.as_tensor())?;
            assert!(max_abs_diff(&ours, &theirs) < 1e-4);
            let g1 = random_projection(&ours, 3)?.backward()?;
            let g2 = random_projection(&theirs, 3)?.backward()?;
            let w = varmap.all_vars().pop().expect("the weight");
            for v in [&w, &x] {
                let (a, b) = (
                    g1.get(v.as_tensor()).unwrap(),
                    g2.get(v.as_tensor()).unwrap(),
                );
                let scale = b
                    .abs()?
                    .max_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
                assert!(
                    max_abs_diff(a, b) < 1e-4 * scale.max(1.0),
                    "{ci}->{co} k{k}"
                );
            }
            let on_data = conv2d_on_data(&conv, &x.detach())?;
            assert!(max_abs_diff(&on_data, &theirs) < 1e-4);
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
