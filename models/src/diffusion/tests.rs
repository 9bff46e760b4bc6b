use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::nn::check::{gradient_gaps, random_projection, seeded_randn};
use crate::nn::seeded_var_builder;

fn tiny_unet(seed: u64) -> (VarMap, UNet) {
    let cfg = UNetConfig::preset("test", 12).unwrap();
    let varmap = VarMap::new();
    let unet = UNet::new(
        &cfg,
        seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu),
    )
    .unwrap();
    (varmap, unet)
}

fn context(b: usize, t: usize, d: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let states = seeded_randn((b, t, d), seed, &Device::Cpu)?.to_dtype(DType::F32)?;
    // Sample 0: 3 tokens then padding; the last sample: all padding (the null condition).
    let mut mask = vec![0u8; b * t];
    for (i, m) in mask.iter_mut().enumerate() {
        let (row, col) = (i / t, i % t);
        *m = u8::from((row == 0 && col >= 3) || row == b - 1);
    }
    Ok((states, Tensor::from_vec(mask, (b, t), &Device::Cpu)?))
}

#[test]
fn every_trainable_variable_gets_a_gradient() -> Result<()> {
    let (varmap, unet) = tiny_unet(3);
    let x = seeded_randn((3, 3, 8, 8), 1, &Device::Cpu)?.to_dtype(DType::F32)?;
    let t = Tensor::new(&[5f32, 300.0, 999.0], &Device::Cpu)?;
    let (ctx, mask) = context(3, 5, 12, 2)?;
    let out = unet.forward(&x, &t, &ctx, &mask)?;
    assert_eq!(out.dims4()?, (3, 3, 8, 8));
    let grads = random_projection(&out, 7)?.backward()?;
    let gaps = gradient_gaps(&varmap, &grads, |n| !is_ema(n))?;
    assert!(gaps.is_empty(), "no gradient: {gaps:?}");
    // EMA copies are not trained.
    assert_eq!(init_ema(&varmap)?, varmap.all_vars().len() / 2);
    Ok(())
}

#[test]
fn padding_is_ignored_and_the_side_is_checked() -> Result<()> {
    let (_, unet) = tiny_unet(4);
    let x = seeded_randn((1, 3, 8, 8), 1, &Device::Cpu)?.to_dtype(DType::F32)?;
    let t = Tensor::new(&[100f32], &Device::Cpu)?;
    let states = seeded_randn((1, 5, 12), 2, &Device::Cpu)?.to_dtype(DType::F32)?;
    let mask = Tensor::new(&[[0u8, 0, 1, 1, 1]], &Device::Cpu)?;
    let a = unet.forward(&x, &t, &states, &mask)?;
    // Changing padded states changes nothing.
    let other = Tensor::cat(
        &[states.narrow(1, 0, 2)?, (states.narrow(1, 2, 3)? * 5.0)?],
        1,
    )?;
    let b = unet.forward(&x, &t, &other, &mask)?;
    let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-5, "{diff}");
    let odd = seeded_randn((1, 3, 7, 7), 1, &Device::Cpu)?.to_dtype(DType::F32)?;
    assert!(unet.forward(&odd, &t, &states, &mask).is_err());
    Ok(())
}

#[test]
fn cosine_schedule_invariants() -> Result<()> {
    let s = NoiseSchedule::cosine(1000)?;
    let ab = s.alphas_cumprod();
    assert_eq!(ab.len(), 1000);
    assert!(ab.windows(2).all(|w| w[1] < w[0]), "ᾱ must decrease");
    assert!(ab.iter().all(|&a| a > 0.0 && a < 1.0));
    assert!(ab[0] > 0.999 && ab[999] < 1e-3, "{} {}", ab[0], ab[999]);
    assert_eq!(s.alpha_bar(None), 1.0);
    let ts = s.respaced(50)?;
    assert_eq!(ts.len(), 50);
    assert_eq!((ts[0], ts[49]), (999, 0));
    assert!(ts.windows(2).all(|w| w[1] < w[0]));
    assert_eq!(s.respaced(1)?, vec![999]);
    assert_eq!(s.respaced(1000)?.len(), 1000);
    assert!(s.respaced(0).is_err() && s.respaced(1001).is_err());
    assert!(NoiseSchedule::cosine(1).is_err());
    Ok(())
}

#[test]
fn predictions_round_trip() -> Result<()> {
    let s = NoiseSchedule::cosine(1000)?;
    let x0 = seeded_randn((2, 3, 4, 4), 1, &Device::Cpu)?.to_dtype(DType::F32)?;
    let eps = seeded_randn((2, 3, 4, 4), 2, &Device::Cpu)?.to_dtype(DType::F32)?;
    for p in [Prediction::Epsilon, Prediction::V] {
        for t in [0usize, 400, 999] {
            let xt = s.add_noise(&x0, &eps, &[t, t])?;
            let target = s.target(p, &x0, &eps, &[t, t])?;
            let (x0h, epsh) = s.split_prediction(p, &xt, &target, t)?;
            let e0 = (x0h - &x0)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let e1 = (epsh - &eps)?.abs()?.max_all()?.to_scalar::<f32>()?;
            // x̂₀ from ε at t = 999 divides by √ᾱ ≈ 0.006.
            assert!(e0 < 1e-2 && e1 < 1e-4, "{p:?} t={t}: {e0} {e1}");
        }
    }
    Ok(())
}

/// With the true noise, DDIM (any step count) and DDPM end at x₀.
#[test]
fn samplers_with_the_true_noise_recover_x0() -> Result<()> {
    let s = NoiseSchedule::cosine(1000)?;
    let x0 = seeded_randn((2, 3, 4, 4), 1, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .clamp(-1f32, 1f32)?;
    for (kind, steps) in [
        (SamplerKind::Ddim, 1),
        (SamplerKind::Ddim, 7),
        (SamplerKind::Ddim, 50),
        (SamplerKind::Ddpm, 20),
    ] {
        for p in [Prediction::Epsilon, Prediction::V] {
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            let noise = randn((2, 3, 4, 4), &mut rng, &Device::Cpu)?;
            let cfg = SamplerConfig {
                kind,
                steps,
                prediction: p,
                clip_x0: true,
            };
            let mut calls = 0;
            let out = sample(
                &s,
                &cfg,
                noise,
                |xt, t| {
                    let ab = s.alpha_bar(Some(t));
                    let eps = ((xt - (&x0 * ab.sqrt())?)? / (1.0 - ab).sqrt())?;
                    match p {
                        Prediction::Epsilon => Ok(eps),
                        Prediction::V => (eps * ab.sqrt())? - (&x0 * (1.0 - ab).sqrt())?,
                    }
                },
                &mut rng,
                |_| calls += 1,
            )?;
            assert_eq!(calls, steps);
            let err = (out - &x0)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 5e-3, "{kind:?} {steps} {p:?}: {err}");
        }
    }
    Ok(())
}

#[test]
fn guidance_and_ema() -> Result<()> {
    let c = Tensor::new(&[2f32, 4.0], &Device::Cpu)?;
    let u = Tensor::new(&[1f32, 1.0], &Device::Cpu)?;
    assert_eq!(guide(&c, &u, 3.0)?.to_vec1::<f32>()?, vec![4.0, 10.0]);
    assert_eq!(guide(&c, &u, 0.0)?.to_vec1::<f32>()?, vec![1.0, 1.0]);
    let (varmap, _) = tiny_unet(1);
    let n = varmap.all_vars().len();
    assert_eq!(init_ema(&varmap)?, n);
    assert_eq!(init_ema(&varmap)?, 0);
    let w = varmap.data().lock().unwrap()["conv_in.bias"].clone();
    let before = w.as_tensor().to_vec1::<f32>()?;
    w.set(&(w.as_tensor() + 1.0)?)?;
    update_ema(&varmap, 0.75)?;
    let ema = varmap.data().lock().unwrap()["ema.conv_in.bias"].clone();
    for (e, b) in ema.as_tensor().to_vec1::<f32>()?.iter().zip(&before) {
        assert!((e - (b + 0.25)).abs() < 1e-6);
    }
    assert_eq!(swap_in_ema(&varmap)?, n);
    assert_eq!(
        w.as_tensor().to_vec1::<f32>()?,
        ema.as_tensor().to_vec1::<f32>()?
    );
    Ok(())
}
