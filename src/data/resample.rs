//! Cropping and resizing for images and masks, with OpenCV's sampling conventions (what
//! albumentations' `Resize` applies in the reference pipeline): bilinear with half-pixel
//! centres and clamped borders for images (`INTER_LINEAR`, no antialiasing), nearest
//! neighbour `floor(x · src/dst)` for masks (`INTER_NEAREST`) so class ids are never mixed.
//! Model inputs are shrunk with [`resize_area`] (`INTER_AREA`) instead: bilinear sampling
//! at 3–4× reduction aliases interferometric fringes (the signal) into noise.

use anyhow::{ensure, Result};

use super::array::{ClassMask, Image};

fn check_window(
    what: &str,
    (height, width): (usize, usize),
    (top, left, h, w): (usize, usize, usize, usize),
) -> Result<()> {
    ensure!(
        h > 0 && w > 0 && top + h <= height && left + w <= width,
        "crop {h}×{w} at (row {top}, column {left}) does not fit the {height}×{width} {what}"
    );
    Ok(())
}

/// The `h × w` window of `image` whose top-left pixel is `(top, left)`.
pub fn crop_image(image: &Image, top: usize, left: usize, h: usize, w: usize) -> Result<Image> {
    check_window("image", (image.height, image.width), (top, left, h, w))?;
    let mut data = Vec::with_capacity(image.channels * h * w);
    for c in 0..image.channels {
        let plane = image.plane(c);
        for y in top..top + h {
            let start = y * image.width + left;
            data.extend_from_slice(&plane[start..start + w]);
        }
    }
    Image::from_vec(image.channels, h, w, data)
}

/// The `h × w` window of `mask` whose top-left pixel is `(top, left)`.
pub fn crop_mask(
    mask: &ClassMask,
    top: usize,
    left: usize,
    h: usize,
    w: usize,
) -> Result<ClassMask> {
    check_window("mask", (mask.height, mask.width), (top, left, h, w))?;
    let mut data = Vec::with_capacity(h * w);
    for y in top..top + h {
        let start = y * mask.width + left;
        data.extend_from_slice(&mask.data[start..start + w]);
    }
    Ok(ClassMask {
        height: h,
        width: w,
        data,
    })
}

/// Source index and weight of the next index for each destination index (OpenCV
/// `INTER_LINEAR`: `s = (d + 0.5)·scale − 0.5`, clamped to the edge pixels).
fn linear_taps(src: usize, dst: usize) -> Vec<(usize, usize, f32)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let s = (d as f64 + 0.5) * scale - 0.5;
            let i = s.floor();
            let frac = s - i;
            let i = i as i64;
            if i < 0 {
                (0, 0, 0.0)
            } else if i as usize >= src - 1 {
                (src - 1, src - 1, 0.0)
            } else {
                (i as usize, i as usize + 1, frac as f32)
            }
        })
        .collect()
}

/// Bilinear resize of every channel to `height × width`.
pub fn resize_bilinear(image: &Image, height: usize, width: usize) -> Result<Image> {
    ensure!(height > 0 && width > 0, "cannot resize to {height}×{width}");
    ensure!(
        image.height > 0 && image.width > 0,
        "cannot resize an empty image"
    );
    if (height, width) == (image.height, image.width) {
        return Ok(image.clone());
    }
    let xs = linear_taps(image.width, width);
    let ys = linear_taps(image.height, height);
    let mut out = Image::zeros(image.channels, height, width);
    let mut row_a = vec![0f32; width];
    let mut row_b = vec![0f32; width];
    for c in 0..image.channels {
        let src = image.plane(c);
        let dst = out.plane_mut(c);
        for (y, &(y0, y1, fy)) in ys.iter().enumerate() {
            for (dst_row, sy) in [(&mut row_a, y0), (&mut row_b, y1)] {
                let line = &src[sy * image.width..(sy + 1) * image.width];
                for (v, &(x0, x1, fx)) in dst_row.iter_mut().zip(&xs) {
                    *v = line[x0] * (1.0 - fx) + line[x1] * fx;
                }
            }
            let out_row = &mut dst[y * width..(y + 1) * width];
            for ((o, a), b) in out_row.iter_mut().zip(&row_a).zip(&row_b) {
                *o = a * (1.0 - fy) + b * fy;
            }
        }
    }
    Ok(out)
}

/// Source pixels and weights of each destination pixel of an area (box) resize: the
/// destination pixel `d` covers `[d·scale, (d+1)·scale)` of the source, and every source
/// pixel contributes its overlap with that interval (OpenCV `INTER_AREA`).
fn area_taps(src: usize, dst: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let (lo, hi) = (d as f64 * scale, (d as f64 + 1.0) * scale);
            let last = (hi.ceil() as usize).min(src);
            (lo.floor() as usize..last)
                .filter_map(|i| {
                    let overlap = (hi.min(i as f64 + 1.0) - lo.max(i as f64)) / scale;
                    (overlap > 1e-9).then_some((i, overlap as f32))
                })
                .collect()
        })
        .collect()
}

/// The area resize from `src` to `dst ≤ src` pixels as a row-major `dst × src` matrix
/// (for resizing tensors by matrix products; rows sum to 1).
pub fn area_matrix(src: usize, dst: usize) -> Vec<f32> {
    let mut m = vec![0f32; dst * src];
    for (d, taps) in area_taps(src, dst).into_iter().enumerate() {
        for (i, w) in taps {
            m[d * src + i] = w;
        }
    }
    m
}

/// Area-averaging resize of every channel to `height × width` when shrinking (each output
/// pixel is the mean of the input it covers, like OpenCV `INTER_AREA`); bilinear when
/// either side grows. For `[cos φ, sin φ]` channels this is complex multilooking: fringes
/// denser than the output grid average out instead of aliasing into false patterns.
pub fn resize_area(image: &Image, height: usize, width: usize) -> Result<Image> {
    ensure!(height > 0 && width > 0, "cannot resize to {height}×{width}");
    if height > image.height || width > image.width {
        return resize_bilinear(image, height, width);
    }
    if (height, width) == (image.height, image.width) {
        return Ok(image.clone());
    }
    let xs = area_taps(image.width, width);
    let ys = area_taps(image.height, height);
    let mut out = Image::zeros(image.channels, height, width);
    let mut rows = vec![0f32; image.height * width];
    for c in 0..image.channels {
        let src = image.plane(c);
        for (line, row) in src
            .chunks_exact(image.width)
            .zip(rows.chunks_exact_mut(width))
        {
            for (v, taps) in row.iter_mut().zip(&xs) {
                *v = taps.iter().map(|&(i, w)| line[i] * w).sum();
            }
        }
        let dst = out.plane_mut(c);
        for (out_row, taps) in dst.chunks_exact_mut(width).zip(&ys) {
            for &(y, w) in taps {
                for (o, v) in out_row.iter_mut().zip(&rows[y * width..(y + 1) * width]) {
                    *o += v * w;
                }
            }
        }
    }
    Ok(out)
}

/// Source index for each destination index (OpenCV `INTER_NEAREST`).
fn nearest_taps(src: usize, dst: usize) -> Vec<usize> {
    // OpenCV computes the inverse of dst/src rather than src/dst; keep its rounding.
    let inv = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| ((d as f64 * inv).floor() as usize).min(src - 1))
        .collect()
}

/// Nearest-neighbour resize of a class mask to `height × width`.
pub fn resize_nearest(mask: &ClassMask, height: usize, width: usize) -> Result<ClassMask> {
    ensure!(height > 0 && width > 0, "cannot resize to {height}×{width}");
    ensure!(
        mask.height > 0 && mask.width > 0,
        "cannot resize an empty mask"
    );
    let xs = nearest_taps(mask.width, width);
    let ys = nearest_taps(mask.height, height);
    let mut data = Vec::with_capacity(height * width);
    for &sy in &ys {
        let line = &mask.data[sy * mask.width..(sy + 1) * mask.width];
        data.extend(xs.iter().map(|&sx| line[sx]));
    }
    Ok(ClassMask {
        height,
        width,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_takes_the_window_of_every_channel() {
        let im = Image::from_vec(2, 3, 4, (0..24).map(|v| v as f32).collect()).unwrap();
        let c = crop_image(&im, 1, 2, 2, 2).unwrap();
        assert_eq!(c.data, vec![6., 7., 10., 11., 18., 19., 22., 23.]);
        assert!(crop_image(&im, 2, 0, 2, 2).is_err());
        let m = ClassMask {
            height: 2,
            width: 3,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        assert_eq!(crop_mask(&m, 1, 1, 1, 2).unwrap().data, vec![5, 6]);
        assert!(crop_mask(&m, 0, 0, 0, 1).is_err());
    }

    #[test]
    fn bilinear_preserves_constants_and_interpolates_midpoints() {
        let im = Image::from_vec(1, 2, 2, vec![5.0; 4]).unwrap();
        let r = resize_bilinear(&im, 7, 3).unwrap();
        assert!(r.data.iter().all(|&v| (v - 5.0).abs() < 1e-6));
        // 1×2 → 1×4: centres at -0.25, 0.25, 0.75, 1.25 → clamp, 0.25, 0.75, clamp.
        let im = Image::from_vec(1, 1, 2, vec![0.0, 4.0]).unwrap();
        let r = resize_bilinear(&im, 1, 4).unwrap();
        assert_eq!(r.data, vec![0.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn nearest_never_mixes_classes() {
        let m = ClassMask {
            height: 2,
            width: 2,
            data: vec![1, 2, 3, 4],
        };
        let r = resize_nearest(&m, 4, 4).unwrap();
        assert_eq!(r.data, vec![1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
        let r = resize_nearest(&r, 2, 2).unwrap();
        assert_eq!(r.data, m.data);
    }

    #[test]
    fn area_resize_averages_blocks_and_keeps_the_mean() {
        // 4×4 → 2×2: exact 2×2 block means.
        let im = Image::from_vec(1, 4, 4, (0..16).map(|v| v as f32).collect()).unwrap();
        let r = resize_area(&im, 2, 2).unwrap();
        assert_eq!(r.data, vec![2.5, 4.5, 10.5, 12.5]);
        // Fractional scale (7 → 3): constants stay constant, the mean is preserved.
        let im = Image::from_vec(1, 1, 7, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]).unwrap();
        let r = resize_area(&im, 1, 3).unwrap();
        let mean: f32 = r.data.iter().sum::<f32>() / 3.0;
        assert!((mean - 4.0).abs() < 1e-5, "{:?}", r.data);
        assert!((r.data[0] - (1.0 + 2.0 + 3.0 / 3.0) / (7.0 / 3.0)).abs() < 1e-5);
        let c = resize_area(&Image::from_vec(2, 5, 9, vec![3.0; 90]).unwrap(), 2, 4).unwrap();
        assert!(c.data.iter().all(|&v| (v - 3.0).abs() < 1e-5));
        // A fringe pattern of period 2 px averages to 0 instead of aliasing.
        let alt =
            Image::from_vec(1, 1, 8, vec![1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0]).unwrap();
        assert!(resize_area(&alt, 1, 4)
            .unwrap()
            .data
            .iter()
            .all(|v| v.abs() < 1e-6));
        // Growing falls back to bilinear.
        let im = Image::from_vec(1, 1, 2, vec![0.0, 4.0]).unwrap();
        assert_eq!(
            resize_area(&im, 1, 4).unwrap().data,
            vec![0.0, 1.0, 3.0, 4.0]
        );
        // The matrix form gives the same numbers.
        let m = area_matrix(7, 3);
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        let im = Image::from_vec(1, 1, 7, x.to_vec()).unwrap();
        let r = resize_area(&im, 1, 3).unwrap();
        for d in 0..3 {
            let v: f32 = (0..7).map(|i| m[d * 7 + i] * x[i]).sum();
            assert!((v - r.data[d]).abs() < 1e-5);
        }
    }
}
