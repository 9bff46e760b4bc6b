//! Test fixtures shared by the head tests: a tiny seeded synthetic set and a training loop.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Images with 0–2 disks of three kinds and their targets.
pub struct BlobSet {
    /// `(N, 2, S, S)` f32.
    pub images: Tensor,
    /// `(N, 10)` multi-label vectors: `[any, kind1, kind2, kind3, 0, …]`.
    pub labels: Tensor,
    /// `(N, S, S)` u32 class ids (0 background, kind k → k; later disks win).
    pub masks: Tensor,
}

/// `n` images of `size`² from `seed`. Kind 1 is bright in channel 0, kind 2 bright in
/// channel 1, kind 3 dark in channel 0; every third image is empty.
pub fn blob_dataset(n: usize, size: usize, seed: u64) -> Result<BlobSet> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut images = vec![0f32; n * 2 * size * size];
    let mut labels = vec![0f32; n * 10];
    let mut masks = vec![0u32; n * size * size];
    for i in 0..n {
        for v in &mut images[i * 2 * size * size..(i + 1) * 2 * size * size] {
            *v = rng.random_range(-0.1..0.1);
        }
        let blobs = if i % 3 == 0 { 0 } else { 1 + i % 2 };
        for _ in 0..blobs {
            let kind = rng.random_range(1..=3usize);
            let r = rng.random_range(size as f32 / 6.0..size as f32 / 3.5);
            let cy = rng.random_range(r..size as f32 - r);
            let cx = rng.random_range(r..size as f32 - r);
            labels[i * 10] = 1.0;
            labels[i * 10 + kind] = 1.0;
            for y in 0..size {
                for x in 0..size {
                    let d2 = (y as f32 + 0.5 - cy).powi(2) + (x as f32 + 0.5 - cx).powi(2);
                    if d2 <= r * r {
                        let (ch, val) = match kind {
                            1 => (0, 1.0),
                            2 => (1, 1.0),
                            _ => (0, -1.0),
                        };
                        images[((i * 2 + ch) * size + y) * size + x] = val;
                        masks[(i * size + y) * size + x] = kind as u32;
                    }
                }
            }
        }
    }
    let dev = Device::Cpu;
    Ok(BlobSet {
        images: Tensor::from_vec(images, (n, 2, size, size), &dev)?,
        labels: Tensor::from_vec(labels, (n, 10), &dev)?,
        masks: Tensor::from_vec(masks, (n, size, size), &dev)?,
    })
}

/// Every variable's values by name.
pub fn snapshot(varmap: &VarMap) -> Result<BTreeMap<String, Vec<f32>>> {
    let data = varmap.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                v.as_tensor()
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1()?,
            ))
        })
        .collect()
}

/// `steps` AdamW steps (no weight decay) on the variables `select` accepts.
pub fn train_steps(
    varmap: &VarMap,
    select: impl Fn(&str) -> bool,
    lr: f64,
    steps: usize,
    loss: impl Fn() -> Result<Tensor>,
) -> Result<f32> {
    let vars: Vec<Var> = {
        let data = varmap.data().lock().unwrap();
        let mut named: Vec<(&String, &Var)> =
            data.iter().filter(|(k, _)| select(k.as_str())).collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        named.into_iter().map(|(_, v)| v.clone()).collect()
    };
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut last = f32::NAN;
    for _ in 0..steps {
        let l = loss()?;
        last = l.to_scalar::<f32>()?;
        opt.backward_step(&l)?;
    }
    Ok(last)
}
