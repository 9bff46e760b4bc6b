//! Sliding-window inference over whole frames: where the windows go ([`window_starts`],
//! [`WindowPlan`]) and how overlapping window outputs are blended into one map
//! ([`blend_weights`], [`Blender`]).
//!
//! Windows step by `window − overlap` and the last one is aligned with the frame's end, so
//! every pixel is covered and no window leaves the frame. Overlaps are blended with a
//! separable tent weight that is largest in the window's centre and small but positive at its
//! border (a centre pixel sees the whole receptive field; border pixels are the least
//! reliable), normalised by the summed weight per pixel: where only one window covers a
//! pixel its output is taken as is.

use candle_core::{DType, Tensor};

/// Top-left coordinates along one axis of length `len` for windows of `window` pixels that
/// overlap by at least `overlap`. Errors if the axis is shorter than the window or the
/// overlap is not smaller than the window.
pub fn window_starts(len: usize, window: usize, overlap: usize) -> Result<Vec<usize>, String> {
    if window == 0 {
        return Err("window size must be positive".into());
    }
    if overlap >= window {
        return Err(format!(
            "overlap {overlap} must be smaller than the window {window}"
        ));
    }
    if len < window {
        return Err(format!(
            "image side {len} is smaller than the {window}-pixel window"
        ));
    }
    let stride = window - overlap;
    let mut starts: Vec<usize> = (0..=len - window).step_by(stride).collect();
    if *starts.last().unwrap_or(&0) != len - window {
        starts.push(len - window);
    }
    Ok(starts)
}

/// The windows covering a `height × width` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowPlan {
    pub height: usize,
    pub width: usize,
    pub window: usize,
    pub rows: Vec<usize>,
    pub cols: Vec<usize>,
}

impl WindowPlan {
    pub fn new(height: usize, width: usize, window: usize, overlap: usize) -> Result<Self, String> {
        let rows = window_starts(height, window, overlap)
            .map_err(|e| format!("frame {height}×{width}: {e}"))?;
        let cols = window_starts(width, window, overlap)
            .map_err(|e| format!("frame {height}×{width}: {e}"))?;
        Ok(Self {
            height,
            width,
            window,
            rows,
            cols,
        })
    }

    /// `(y, x)` top-left corners, row-major.
    pub fn tiles(&self) -> Vec<(usize, usize)> {
        self.rows
            .iter()
            .flat_map(|&y| self.cols.iter().map(move |&x| (y, x)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Blending weight of each pixel of a `window × window` tile, row-major: the product of two
/// 1-D tents `min(i + ½, window − i − ½)` normalised to a maximum of 1 (never 0).
pub fn blend_weights(window: usize) -> Vec<f32> {
    let raw: Vec<f32> = (0..window)
        .map(|i| (i as f32 + 0.5).min(window as f32 - i as f32 - 0.5))
        .collect();
    let peak = raw.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
    let tent: Vec<f32> = raw.iter().map(|v| v / peak).collect();
    tent.iter()
        .flat_map(|a| tent.iter().map(move |b| a * b))
        .collect()
}

/// Accumulates per-window maps `(channels, window, window)` into a frame map
/// `(channels, height, width)` with [`blend_weights`].
#[derive(Debug, Clone)]
pub struct Blender {
    channels: usize,
    height: usize,
    width: usize,
    window: usize,
    weights: Vec<f32>,
    sum: Vec<f32>,
    total: Vec<f32>,
}

impl Blender {
    pub fn new(channels: usize, plan: &WindowPlan) -> Self {
        let n = plan.height * plan.width;
        Self {
            channels,
            height: plan.height,
            width: plan.width,
            window: plan.window,
            weights: blend_weights(plan.window),
            sum: vec![0.0; channels * n],
            total: vec![0.0; n],
        }
    }

    /// Adds one window's map (row-major `(channels, window, window)`) at top-left `(y, x)`.
    pub fn add(&mut self, tile: &[f32], y: usize, x: usize) -> Result<(), String> {
        let k = self.window;
        if tile.len() != self.channels * k * k {
            return Err(format!(
                "window map has {} values, expected {}×{k}×{k}",
                tile.len(),
                self.channels
            ));
        }
        if y + k > self.height || x + k > self.width {
            return Err(format!(
                "window at ({y}, {x}) leaves the {}×{} frame",
                self.height, self.width
            ));
        }
        let n = self.height * self.width;
        for r in 0..k {
            for c in 0..k {
                let w = self.weights[r * k + c];
                let p = (y + r) * self.width + x + c;
                self.total[p] += w;
                for ch in 0..self.channels {
                    self.sum[ch * n + p] += w * tile[(ch * k + r) * k + c];
                }
            }
        }
        Ok(())
    }

    /// The blended map `(channels, height, width)`; uncovered pixels (none with a
    /// [`WindowPlan`]) are 0.
    pub fn finish(self) -> Vec<f32> {
        let n = self.height * self.width;
        let mut out = self.sum;
        for ch in 0..self.channels {
            for p in 0..n {
                let t = self.total[p];
                out[ch * n + p] = if t > 0.0 { out[ch * n + p] / t } else { 0.0 };
            }
        }
        out
    }
}

/// Runs `model` (a function from a batch `(B, C, window, window)` to per-pixel maps
/// `(B, K, window, window)`, e.g. [`super::Segmenter::predict`]) over a whole frame
/// `(C, H, W)` in overlapping windows, `batch` windows at a time, and blends the outputs into
/// a `(K, H, W)` map. Errors (naming the sizes) when the frame is smaller than the window.
pub fn predict_frame_map(
    frame: &Tensor,
    window: usize,
    overlap: usize,
    batch: usize,
    model: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let (_, h, w) = frame.dims3()?;
    let plan = WindowPlan::new(h, w, window, overlap).map_err(candle_core::Error::Msg)?;
    let tiles = plan.tiles();
    let mut blender: Option<Blender> = None;
    let mut channels = 0;
    for chunk in tiles.chunks(batch.max(1)) {
        let crops = chunk
            .iter()
            .map(|&(y, x)| frame.narrow(1, y, window)?.narrow(2, x, window))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let out = model(&Tensor::stack(&crops, 0)?)?;
        let (b, k, oh, ow) = out.dims4()?;
        if b != chunk.len() || oh != window || ow != window {
            candle_core::bail!(
                "window model returned {:?} for {} windows of {window}×{window}",
                out.shape(),
                chunk.len()
            )
        }
        let blender = blender.get_or_insert_with(|| {
            channels = k;
            Blender::new(k, &plan)
        });
        let values: Vec<f32> = out.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let per = k * window * window;
        for (i, &(y, x)) in chunk.iter().enumerate() {
            blender
                .add(&values[i * per..(i + 1) * per], y, x)
                .map_err(candle_core::Error::Msg)?;
        }
    }
    let blender = blender.ok_or_else(|| candle_core::Error::Msg("no windows".into()))?;
    Tensor::from_vec(blender.finish(), (channels, h, w), frame.device())
}

/// Runs `model` (a batch `(B, C, window, window)` → per-window scores `(B, L)`, e.g.
/// [`super::Classifier::predict`]) on every window of a frame `(C, H, W)` and returns the
/// per-window scores `(windows, L)` with the windows' top-left corners (row-major). A frame
/// is "deformation" when any window is: reduce with a maximum over windows.
pub fn predict_frame_windows(
    frame: &Tensor,
    window: usize,
    overlap: usize,
    batch: usize,
    model: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<(Tensor, Vec<(usize, usize)>)> {
    let (_, h, w) = frame.dims3()?;
    let plan = WindowPlan::new(h, w, window, overlap).map_err(candle_core::Error::Msg)?;
    let tiles = plan.tiles();
    let mut outs = Vec::new();
    for chunk in tiles.chunks(batch.max(1)) {
        let crops = chunk
            .iter()
            .map(|&(y, x)| frame.narrow(1, y, window)?.narrow(2, x, window))
            .collect::<candle_core::Result<Vec<_>>>()?;
        outs.push(model(&Tensor::stack(&crops, 0)?)?);
    }
    Ok((Tensor::cat(&outs, 0)?, tiles))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_cover_the_axis() {
        assert_eq!(window_starts(224, 224, 32).unwrap(), vec![0]);
        assert_eq!(window_starts(500, 224, 32).unwrap(), vec![0, 192, 276]);
        assert_eq!(window_starts(416, 224, 32).unwrap(), vec![0, 192]);
        assert_eq!(window_starts(10, 4, 0).unwrap(), vec![0, 4, 6]);
        for (len, win, ov) in [(1000, 224, 64), (225, 224, 0), (300, 100, 99)] {
            let s = window_starts(len, win, ov).unwrap();
            let mut covered = vec![false; len];
            for w in s.windows(2) {
                assert!(w[1] > w[0] && w[1] - w[0] <= win - ov, "{s:?}");
            }
            for &st in &s {
                assert!(st + win <= len);
                covered[st..st + win].iter_mut().for_each(|c| *c = true);
            }
            assert!(covered.iter().all(|c| *c));
        }
        assert!(window_starts(100, 224, 0)
            .unwrap_err()
            .contains("smaller than"));
        assert!(window_starts(300, 224, 224).is_err());
        assert!(WindowPlan::new(300, 100, 224, 0)
            .unwrap_err()
            .contains("300×100"));
    }

    #[test]
    fn weights_are_positive_symmetric_and_peak_in_the_centre() {
        let w = blend_weights(6);
        assert!(w.iter().all(|v| *v > 0.0 && *v <= 1.0));
        assert_eq!(w[0], w[35]);
        assert_eq!(w[2 * 6 + 2], 1.0);
        assert!(w[0] < w[6 + 1]);
    }

    #[test]
    fn blending_a_constant_or_a_tiled_map_reproduces_it() {
        // A frame-wide map cut into overlapping windows and blended back is unchanged.
        let (h, w, k) = (13, 17, 6);
        let plan = WindowPlan::new(h, w, k, 2).unwrap();
        let frame: Vec<f32> = (0..2 * h * w).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut b = Blender::new(2, &plan);
        for (y, x) in plan.tiles() {
            let mut tile = Vec::with_capacity(2 * k * k);
            for ch in 0..2 {
                for r in 0..k {
                    for c in 0..k {
                        tile.push(frame[(ch * h + y + r) * w + x + c]);
                    }
                }
            }
            b.add(&tile, y, x).unwrap();
        }
        let out = b.finish();
        for (a, e) in out.iter().zip(&frame) {
            assert!((a - e).abs() < 1e-5);
        }
        // Disagreeing windows: the result lies between them, nearer the window whose centre
        // is closer.
        let plan = WindowPlan::new(4, 6, 4, 2).unwrap();
        assert_eq!(plan.tiles(), vec![(0, 0), (0, 2)]);
        let mut b = Blender::new(1, &plan);
        b.add(&[0.0; 16], 0, 0).unwrap();
        b.add(&[1.0; 16], 0, 2).unwrap();
        assert!(b.add(&[1.0; 16], 1, 3).is_err());
        assert!(b.add(&[1.0; 3], 0, 0).is_err());
        let out = b.finish();
        assert_eq!(out[0], 0.0);
        assert_eq!(out[5], 1.0);
        assert!(
            out[2] > 0.0 && out[2] < 0.5 && out[3] > 0.5 && out[3] < 1.0,
            "{out:?}"
        );
    }

    #[test]
    fn frame_prediction_with_a_pixelwise_model_is_exact() -> candle_core::Result<()> {
        use candle_core::Device;
        // A per-pixel model (here: the two channels and their product) gives the same map
        // over a frame in windows as over the frame at once, whatever the blending.
        let frame = Tensor::arange(0f32, 2.0 * 23.0 * 31.0, &Device::Cpu)?
            .affine(0.01, 0.0)?
            .reshape((2, 23, 31))?;
        let model = |x: &Tensor| -> candle_core::Result<Tensor> {
            let prod = (x.narrow(1, 0, 1)? * x.narrow(1, 1, 1)?)?;
            Tensor::cat(&[x.clone(), prod], 1)
        };
        let whole = model(&frame.unsqueeze(0)?)?.squeeze(0)?;
        let tiled = predict_frame_map(&frame, 8, 3, 4, model)?;
        assert_eq!(tiled.dims(), &[3, 23, 31]);
        let d = (whole - &tiled)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-4, "{d}");
        // Windowed scores: one row per window, in plan order.
        let (scores, tiles) = predict_frame_windows(&frame, 8, 3, 3, |x| {
            x.mean_keepdim(3)?.mean_keepdim(2)?.flatten_from(1)
        })?;
        assert_eq!(tiles.len(), WindowPlan::new(23, 31, 8, 3).unwrap().len());
        assert_eq!(scores.dims(), &[tiles.len(), 2]);
        // Too small a frame: a clear error.
        let err = predict_frame_map(&frame, 24, 0, 1, model)
            .unwrap_err()
            .to_string();
        assert!(err.contains("smaller than the 24-pixel window"), "{err}");
        // A model returning the wrong size is caught.
        assert!(predict_frame_map(&frame, 8, 0, 2, |x| x.narrow(2, 0, 4)).is_err());
        Ok(())
    }
}
