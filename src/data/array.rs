//! Plain in-memory image types shared by the data engine, the generator and the trainers.
//!
//! Kept free of Candle so that data code is testable and parallel (rayon) without a device;
//! `to_tensor` is the single crossing point into a model.

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

/// A `channels × height × width` image of `f32`, channel-planar and row-major
/// (the layout of a Candle/PyTorch `(C, H, W)` tensor).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Image {
    pub fn zeros(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
            data: vec![0.0; channels * height * width],
        }
    }

    /// Wraps `data`, checking that its length is `channels · height · width`.
    pub fn from_vec(channels: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        ensure!(
            data.len() == channels * height * width,
            "image data has {} values, expected {channels}×{height}×{width}",
            data.len()
        );
        Ok(Self {
            channels,
            height,
            width,
            data,
        })
    }

    /// Stacks single-channel planes (each `height · width` long) into one image.
    pub fn from_planes(height: usize, width: usize, planes: &[&[f32]]) -> Result<Self> {
        let mut data = Vec::with_capacity(planes.len() * height * width);
        for (i, p) in planes.iter().enumerate() {
            ensure!(
                p.len() == height * width,
                "plane {i} has {} values, expected {height}×{width}",
                p.len()
            );
            data.extend_from_slice(p);
        }
        Ok(Self {
            channels: planes.len(),
            height,
            width,
            data,
        })
    }

    #[inline]
    pub fn index(&self, c: usize, y: usize, x: usize) -> usize {
        (c * self.height + y) * self.width + x
    }

    #[inline]
    pub fn get(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[self.index(c, y, x)]
    }

    #[inline]
    pub fn set(&mut self, c: usize, y: usize, x: usize, v: f32) {
        let i = self.index(c, y, x);
        self.data[i] = v;
    }

    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.data[c * n..(c + 1) * n]
    }

    pub fn plane_mut(&mut self, c: usize) -> &mut [f32] {
        let n = self.height * self.width;
        &mut self.data[c * n..(c + 1) * n]
    }

    /// The `(C, H, W)` tensor of this image on `device`.
    pub fn to_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::from_slice(&self.data, (self.channels, self.height, self.width), device)
    }
}

/// Stacks images of identical shape into one `(B, C, H, W)` tensor.
pub fn batch_tensor(images: &[&Image], device: &Device) -> Result<Tensor> {
    ensure!(!images.is_empty(), "cannot batch zero images");
    let (c, h, w) = (images[0].channels, images[0].height, images[0].width);
    let mut data = Vec::with_capacity(images.len() * c * h * w);
    for (i, im) in images.iter().enumerate() {
        ensure!(
            (im.channels, im.height, im.width) == (c, h, w),
            "image {i} of the batch is {}×{}×{}, expected {c}×{h}×{w}",
            im.channels,
            im.height,
            im.width
        );
        data.extend_from_slice(&im.data);
    }
    Ok(Tensor::from_vec(data, (images.len(), c, h, w), device)?)
}

/// A `height × width` map of class ids (docs/architecture.md §2.1: 0 background, Mogi 1 … Unidentified 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassMask {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl ClassMask {
    pub fn zeros(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            data: vec![0; height * width],
        }
    }

    #[inline]
    pub fn get(&self, y: usize, x: usize) -> u8 {
        self.data[y * self.width + x]
    }

    #[inline]
    pub fn set(&mut self, y: usize, x: usize, v: u8) {
        self.data[y * self.width + x] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planar_indexing_matches_tensor_layout() {
        let im = Image::from_vec(2, 2, 3, (0..12).map(|v| v as f32).collect()).unwrap();
        let t = im.to_tensor(&Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 2, 3]);
        let v: Vec<Vec<Vec<f32>>> = t.to_vec3().unwrap();
        for (c, rows) in v.iter().enumerate() {
            for (y, row) in rows.iter().enumerate() {
                for (x, &value) in row.iter().enumerate() {
                    assert_eq!(value, im.get(c, y, x));
                }
            }
        }
    }

    #[test]
    fn batching_rejects_mismatched_shapes() {
        let a = Image::zeros(2, 4, 4);
        let b = Image::zeros(2, 4, 5);
        assert!(batch_tensor(&[&a, &b], &Device::Cpu).is_err());
        let t = batch_tensor(&[&a, &a], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 2, 4, 4]);
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert!(Image::from_vec(1, 2, 2, vec![0.0; 3]).is_err());
    }
}
