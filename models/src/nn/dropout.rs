//! Dropout with a mask drawn from the caller's seeded RNG.
//!
//! candle's `Dropout` draws its mask from the unseedable device RNG; here the mask comes from
//! a `ChaCha8Rng`, element by element in row-major order, so a run is reproducible whatever
//! the device or thread count.

use candle_core::{Device, Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Inverted dropout: in training, zeroes each element with probability `p` and scales the
/// others by `1 / (1 − p)`; the identity in evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeededDropout {
    p: f64,
}

impl SeededDropout {
    pub fn new(p: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            candle_core::bail!("dropout probability must be in [0, 1), got {p}")
        }
        Ok(Self { p })
    }

    pub fn p(&self) -> f64 {
        self.p
    }

    pub fn forward(&self, x: &Tensor, train: bool, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let scale = 1.0 / keep;
        let mask: Vec<f64> = (0..x.elem_count())
            .map(|_| {
                if rng.random::<f64>() < keep {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), &Device::Cpu)?
            .to_dtype(x.dtype())?
            .to_device(x.device())?;
        x * mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Var};
    use rand::SeedableRng;

    #[test]
    fn reproducible_unbiased_and_differentiable() -> Result<()> {
        let d = SeededDropout::new(0.25)?;
        let x = Var::from_tensor(&Tensor::ones((100, 100), DType::F64, &Device::Cpu)?)?;
        let a = d.forward(x.as_tensor(), true, &mut ChaCha8Rng::seed_from_u64(1))?;
        let b = d.forward(x.as_tensor(), true, &mut ChaCha8Rng::seed_from_u64(1))?;
        let c = d.forward(x.as_tensor(), true, &mut ChaCha8Rng::seed_from_u64(2))?;
        let (av, bv, cv): (Vec<f64>, Vec<f64>, Vec<f64>) = (
            a.flatten_all()?.to_vec1()?,
            b.flatten_all()?.to_vec1()?,
            c.flatten_all()?.to_vec1()?,
        );
        assert_eq!(av, bv);
        assert_ne!(av, cv);
        let dropped = av.iter().filter(|v| **v == 0.0).count() as f64 / 1e4;
        assert!((dropped - 0.25).abs() < 0.02, "{dropped}");
        let mean = av.iter().sum::<f64>() / 1e4;
        assert!((mean - 1.0).abs() < 0.03, "{mean}");
        assert!(av
            .iter()
            .all(|v| *v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-12));
        // The gradient is the mask itself.
        let g = a.sum_all()?.backward()?;
        let g: Vec<f64> = g.get(x.as_tensor()).unwrap().flatten_all()?.to_vec1()?;
        assert_eq!(g, av);
        // Evaluation is the identity; invalid probabilities are rejected.
        let e = d.forward(x.as_tensor(), false, &mut ChaCha8Rng::seed_from_u64(1))?;
        assert_eq!(e.sum_all()?.to_scalar::<f64>()?, 1e4);
        assert!(SeededDropout::new(1.0).is_err());
        assert!(SeededDropout::new(-0.1).is_err());
        Ok(())
    }
}
