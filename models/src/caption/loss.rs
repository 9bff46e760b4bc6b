//! Label-smoothed cross-entropy with padding ignored (PyTorch's
//! `F.cross_entropy(logits, target, ignore_index=pad, label_smoothing=ε)`).

use candle_core::{DType, Result, Tensor, D};

/// Mean over the non-padding targets of `−Σ_c q_c log p_c` with
/// `q = (1 − ε)·onehot(target) + ε/V` (Szegedy et al. 2016; PyTorch's definition, the
/// uniform part spread over all `V` classes). `logits` `(N, V)`, `targets` `(N,)` integer ids;
/// targets equal to `pad_id` contribute nothing. Errors when every target is padding.
pub fn label_smoothed_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    pad_id: u32,
    epsilon: f64,
) -> Result<Tensor> {
    let (n, v) = logits.dims2()?;
    if targets.dims() != [n] {
        candle_core::bail!(
            "cross-entropy: {n} rows of logits but targets of shape {:?}",
            targets.shape()
        )
    }
    if !(0.0..1.0).contains(&epsilon) {
        candle_core::bail!("label smoothing must be in [0, 1), got {epsilon}")
    }
    let ids = targets.to_dtype(DType::U32)?;
    let host: Vec<u32> = ids.to_vec1()?;
    if let Some(bad) = host.iter().find(|&&t| t as usize >= v) {
        candle_core::bail!("cross-entropy: target id {bad} outside the {v} classes")
    }
    let count = host.iter().filter(|&&t| t != pad_id).count();
    if count == 0 {
        candle_core::bail!("cross-entropy: every target is padding")
    }
    let keep: Vec<f32> = host.iter().map(|&t| f32::from(t != pad_id)).collect();
    let keep = Tensor::from_vec(keep, n, logits.device())?.to_dtype(logits.dtype())?;

    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp.gather(&ids.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    let per = if epsilon > 0.0 {
        let smooth = logp.mean(D::Minus1)?.neg()?;
        ((nll * (1.0 - epsilon))? + (smooth * epsilon)?)?
    } else {
        nll
    };
    (per * keep)?.sum_all()? / count as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::{finite_difference_check, seeded_randn};
    use candle_core::{Device, Var};

    /// Direct evaluation of the definition in f64.
    fn reference(logits: &[Vec<f64>], targets: &[u32], pad: u32, eps: f64) -> f64 {
        let mut total = 0.0;
        let mut count = 0;
        for (row, &t) in logits.iter().zip(targets) {
            if t == pad {
                continue;
            }
            let v = row.len() as f64;
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            for (c, x) in row.iter().enumerate() {
                let q = eps / v + if c as u32 == t { 1.0 - eps } else { 0.0 };
                total -= q * (x - lse);
            }
            count += 1;
        }
        total / count as f64
    }

    #[test]
    fn matches_the_definition_and_ignores_padding() -> Result<()> {
        let logits = seeded_randn((5, 7), 3, &Device::Cpu)?;
        let rows = logits.to_vec2::<f64>()?;
        let targets = [3u32, 0, 6, 1, 0];
        let t = Tensor::new(&targets, &Device::Cpu)?;
        for eps in [0.0, 0.1, 0.5] {
            let got = label_smoothed_cross_entropy(&logits, &t, 0, eps)?.to_scalar::<f64>()?;
            let want = reference(&rows, &targets, 0, eps);
            assert!((got - want).abs() < 1e-12, "eps {eps}: {got} vs {want}");
        }
        // Known value: uniform logits give log V whatever ε.
        let flat = Tensor::zeros((2, 4), DType::F64, &Device::Cpu)?;
        let got =
            label_smoothed_cross_entropy(&flat, &Tensor::new(&[1u32, 2], &Device::Cpu)?, 0, 0.1)?
                .to_scalar::<f64>()?;
        assert!((got - 4f64.ln()).abs() < 1e-12);
        // Changing a padded row's logits changes nothing.
        let mut rows2 = rows.clone();
        rows2[1] = vec![9.0; 7];
        let l2 = Tensor::new(rows2, &Device::Cpu)?;
        let a = label_smoothed_cross_entropy(&logits, &t, 0, 0.1)?.to_scalar::<f64>()?;
        let b = label_smoothed_cross_entropy(&l2, &t, 0, 0.1)?.to_scalar::<f64>()?;
        assert_eq!(a, b);
        Ok(())
    }

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let x = Var::from_tensor(&(seeded_randn((4, 6), 9, &Device::Cpu)? * 3.0)?)?;
        let t = Tensor::new(&[2u32, 0, 5, 4], &Device::Cpu)?;
        let check = finite_difference_check(
            &[&x],
            || label_smoothed_cross_entropy(x.as_tensor(), &t, 0, 0.1),
            1e-6,
        )?;
        assert!(check.relative_error() < 1e-8, "{check:?}");
        Ok(())
    }

    #[test]
    fn errors() -> Result<()> {
        let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
        let all_pad = Tensor::new(&[0u32, 0], &Device::Cpu)?;
        assert!(label_smoothed_cross_entropy(&x, &all_pad, 0, 0.1).is_err());
        let out_of_range = Tensor::new(&[1u32, 3], &Device::Cpu)?;
        assert!(label_smoothed_cross_entropy(&x, &out_of_range, 0, 0.1).is_err());
        let short = Tensor::new(&[1u32], &Device::Cpu)?;
        assert!(label_smoothed_cross_entropy(&x, &short, 0, 0.1).is_err());
        assert!(
            label_smoothed_cross_entropy(&x, &Tensor::new(&[1u32, 2], &Device::Cpu)?, 0, 1.0)
                .is_err()
        );
        Ok(())
    }
}
