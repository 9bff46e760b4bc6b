//! Cropping and resizing for images and masks, with OpenCV's sampling conventions (what
//! albumentations' `Resize` applies in the reference pipeline): bilinear with half-pixel
//! centres and clamped borders for images (`INTER_LINEAR`, no antialiasing), nearest
//! neighbour `floor(x · src/dst)` for masks (`INTER_NEAREST`) so class ids are never mixed.

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
}
