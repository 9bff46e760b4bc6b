//! Fixed sinusoidal embeddings: diffusion timesteps and sequence positions.

use candle_core::{DType, Device, Result, Tensor, D};

/// Embeds per-sample timesteps `t` of shape `(B,)` (any float dtype; integers are converted)
/// into `(B, dim)`: `[cos(t·f₀..f_{h−1}), sin(t·f₀..f_{h−1})]` with `h = dim/2` and
/// `f_i = max_period^(−i/h)` (the DDPM / guided-diffusion convention, cosines first; an
/// odd `dim` gets a trailing zero column). Differentiable with respect to `t`.
pub fn timestep_embedding(t: &Tensor, dim: usize, max_period: f64) -> Result<Tensor> {
    let b = t.dims1()?;
    if dim < 2 {
        candle_core::bail!("timestep_embedding: dim must be at least 2, got {dim}")
    }
    let dtype = if t.dtype().is_float() {
        t.dtype()
    } else {
        DType::F32
    };
    let half = dim / 2;
    let freqs: Vec<f64> = (0..half)
        .map(|i| (-(max_period.ln()) * i as f64 / half as f64).exp())
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(t.device())?;
    let args = t.to_dtype(dtype)?.reshape((b, 1))?.broadcast_mul(&freqs)?;
    let mut parts = vec![args.cos()?, args.sin()?];
    if dim % 2 == 1 {
        parts.push(Tensor::zeros((b, 1), dtype, t.device())?);
    }
    Tensor::cat(&parts, D::Minus1)
}

/// The Transformer position table `(len, dim)`: `pe[p, 2i] = sin(p / 10000^(2i/dim))`,
/// `pe[p, 2i+1] = cos(p / 10000^(2i/dim))` (Vaswani et al. 2017). Computed in `f64`.
pub fn sinusoidal_position_embedding(
    len: usize,
    dim: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let mut table = vec![0f64; len * dim];
    for p in 0..len {
        for j in 0..dim {
            let i2 = (j / 2 * 2) as f64;
            let angle = p as f64 / 10000f64.powf(i2 / dim as f64);
            table[p * dim + j] = if j % 2 == 0 { angle.sin() } else { angle.cos() };
        }
    }
    Tensor::from_vec(table, (len, dim), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::{finite_difference_check, random_projection};
    use candle_core::Var;

    #[test]
    fn timestep_embedding_reference_values() -> Result<()> {
        let t = Tensor::new(&[0f64, 1.0, 500.0], &Device::Cpu)?;
        let e = timestep_embedding(&t, 4, 10000.0)?.to_vec2::<f64>()?;
        // h = 2, f = [1, 10000^(-1/2) = 0.01].
        assert_eq!(e[0], vec![1.0, 1.0, 0.0, 0.0]);
        let expect1 = [1f64.cos(), 0.01f64.cos(), 1f64.sin(), 0.01f64.sin()];
        let expect500 = [500f64.cos(), 5f64.cos(), 500f64.sin(), 5f64.sin()];
        for (a, b) in e[1].iter().zip(expect1).chain(e[2].iter().zip(expect500)) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        let odd = timestep_embedding(&Tensor::new(&[3u32, 4], &Device::Cpu)?, 5, 10000.0)?;
        assert_eq!(odd.dims(), &[2, 5]);
        assert_eq!(odd.dtype(), DType::F32);
        assert!(timestep_embedding(&t, 1, 10000.0).is_err());
        Ok(())
    }

    #[test]
    fn timestep_embedding_gradient_matches_finite_differences() -> Result<()> {
        let t = Var::from_tensor(&Tensor::new(&[0.3f64, 2.0, 7.5], &Device::Cpu)?)?;
        let loss = || random_projection(&timestep_embedding(t.as_tensor(), 8, 100.0)?, 1);
        let check = finite_difference_check(&[&t], loss, 1e-6)?;
        assert!(check.relative_error() < 1e-8, "{check:?}");
        Ok(())
    }

    #[test]
    fn position_embedding_reference_values() -> Result<()> {
        let pe = sinusoidal_position_embedding(3, 4, DType::F64, &Device::Cpu)?.to_vec2::<f64>()?;
        assert_eq!(pe[0], vec![0.0, 1.0, 0.0, 1.0]);
        let p2 = [2f64.sin(), 2f64.cos(), 0.02f64.sin(), 0.02f64.cos()];
        for (a, b) in pe[2].iter().zip(p2) {
            assert!((a - b).abs() < 1e-12);
        }
        Ok(())
    }
}
