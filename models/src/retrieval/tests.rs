use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rand::SeedableRng;

use super::*;
use crate::encoder::is_trainable_name;
use crate::nn::check::{gradient_gaps, seeded_randn};
use crate::nn::seeded_var_builder;

fn tiny() -> DualEncoderConfig {
    let mut image = EncoderConfig::tiny().with_in_channels(3);
    image.widths = [4, 8, 8, 8];
    image.stem_width = 4;
    DualEncoderConfig {
        image,
        pool: GlobalPool::Avg,
        text: TextEncoderConfig {
            vocab_size: 20,
            d_model: 16,
            num_layers: 1,
            num_heads: 2,
            ff_dim: 32,
            max_len: 8,
            dropout: 0.1,
            ..Default::default()
        },
        embed_dim: 8,
        init_temperature: 0.07,
        max_logit_scale: 100f64.ln(),
        num_labels: 0,
    }
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn both_towers_and_the_temperature_get_gradients() -> Result<()> {
    let dev = Device::Cpu;
    for (pool, num_labels) in [
        (GlobalPool::Avg, 0),
        (GlobalPool::Max, 3),
        (GlobalPool::AvgMax, 0),
    ] {
        let varmap = VarMap::new();
        let cfg = DualEncoderConfig {
            pool,
            num_labels,
            ..tiny()
        };
        let model = DualEncoder::new(&cfg, seeded_var_builder(&varmap, 3, DType::F32, &dev))?;
        let images = seeded_randn((4, 3, 32, 32), 1, &dev)?.to_dtype(DType::F32)?;
        let tokens = Tensor::from_vec(
            vec![1u32, 5, 6, 2, 1, 7, 2, 0, 1, 8, 9, 2, 1, 5, 2, 0],
            (4, 4),
            &dev,
        )?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let out = model.embed_images_with_labels(&images, true, 0)?;
        let img = out.embedding;
        assert_eq!(out.label_logits.is_some(), num_labels > 0);
        let txt = model.embed_texts(&tokens, Some(&mut rng))?;
        // Unit-norm rows.
        let norms = img.sqr()?.sum(1)?.to_vec1::<f32>()?;
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
        let pos = Tensor::from_vec(
            vec![1u8, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1],
            (4, 4),
            &dev,
        )?;
        for kind in LossKind::ALL {
            let mut loss = contrastive_loss(&img, &txt, &model.scale()?, &pos, kind)?;
            if let Some(logits) = &out.label_logits {
                let targets = Tensor::from_vec(
                    vec![1f32, 0., 1., 0., 1., 0., 1., 1., 0., 0., 0., 1.],
                    (4, 3),
                    &dev,
                )?;
                loss = (loss + crate::nn::bce_with_logits(logits, &targets, None)?)?;
            }
            let grads = loss.backward()?;
            let gaps = gradient_gaps(&varmap, &grads, is_trainable_name)?;
            assert!(
                gaps.is_empty(),
                "{} with {pool:?} pooling: no gradient for {gaps:?}",
                kind.name()
            );
        }
    }
    let varmap = VarMap::new();
    let model = DualEncoder::new(&tiny(), seeded_var_builder(&varmap, 3, DType::F32, &dev))?;
    // The scale starts at 1/0.07 and is clamped at 100.
    assert!((scalar(&model.scale()?) - 1.0 / 0.07).abs() < 1e-3);
    Ok(())
}

#[test]
fn losses_match_hand_computed_values() -> Result<()> {
    let dev = Device::Cpu;
    // Two orthonormal pairs, scale s = ln 3: logits [[s, 0], [0, s]].
    let e = Tensor::from_vec(vec![1f64, 0., 0., 1.], (2, 2), &dev)?;
    let s = Tensor::new(3f64.ln(), &dev)?;
    let both = Tensor::ones((2, 2), DType::U8, &dev)?;
    let only_diag = Tensor::eye(2, DType::U8, &dev)?;
    // InfoNCE: −log(eˢ/(eˢ+1)) = ln(1 + e^{−s}) = ln(4/3) in every row and direction.
    let info = contrastive_loss(&e, &e, &s, &both, LossKind::InfoNce)?;
    assert!((scalar(&info) - (4.0f64 / 3.0).ln()).abs() < 1e-12);
    // Multi-positive with both pairs positive: −½[(s − ln(eˢ+1)) + (0 − ln(eˢ+1))]
    // = ln 4 − (ln 3)/2 = 0.8369882167858…
    let multi = contrastive_loss(&e, &e, &s, &both, LossKind::MultiPositive)?;
    assert!((scalar(&multi) - 0.836_988_216_785_8).abs() < 1e-12);
    // With the diagonal only, both variants are InfoNCE.
    let multi_diag = contrastive_loss(&e, &e, &s, &only_diag, LossKind::MultiPositive)?;
    assert!((scalar(&multi_diag) - scalar(&info)).abs() < 1e-12);
    let mask_diag = contrastive_loss(&e, &e, &s, &only_diag, LossKind::MaskFalseNegatives)?;
    assert!((scalar(&mask_diag) - scalar(&info)).abs() < 1e-12);
    // Masking the other positive leaves one term per row: loss 0.
    let masked = contrastive_loss(&e, &e, &s, &both, LossKind::MaskFalseNegatives)?;
    assert!(scalar(&masked).abs() < 1e-12);

    // An asymmetric 3×3 case, scale 2: image rows a = [1,0], [0,1], [1,0]; text rows
    // [1,0], [0,1], [0.6,0.8]; pairs 0 and 2 share facts. Logits (image→text):
    //   [[2, 0, 1.2], [0, 2, 1.6], [2, 0, 1.2]].
    let a = Tensor::from_vec(vec![1f64, 0., 0., 1., 1., 0.], (3, 2), &dev)?;
    let t = Tensor::from_vec(vec![1f64, 0., 0., 1., 0.6, 0.8], (3, 2), &dev)?;
    let s = Tensor::new(2f64, &dev)?;
    let pos = Tensor::from_vec(vec![1u8, 0, 1, 0, 1, 0, 1, 0, 1], (3, 3), &dev)?;
    let lse = |r: [f64; 3]| r.iter().map(|v| v.exp()).sum::<f64>().ln();
    let rows = [[2.0, 0.0, 1.2], [0.0, 2.0, 1.6], [2.0, 0.0, 1.2]];
    let cols = [[2.0, 0.0, 2.0], [0.0, 2.0, 0.0], [1.2, 1.6, 1.2]];
    // Multi-positive, image→text: row 0 targets {0, 2}, row 1 {1}, row 2 {0, 2}.
    let i2t = (-(0.5 * (2.0 + 1.2) - lse(rows[0]))
        - (2.0 - lse(rows[1]))
        - (0.5 * (2.0 + 1.2) - lse(rows[2])))
        / 3.0;
    // text→image: row 0 (text 0) targets images {0, 2}, row 1 {1}, row 2 {0, 2}.
    let t2i = (-(0.5 * (2.0 + 2.0) - lse(cols[0]))
        - (2.0 - lse(cols[1]))
        - (0.5 * (1.2 + 1.2) - lse(cols[2])))
        / 3.0;
    let got = contrastive_loss(&a, &t, &s, &pos, LossKind::MultiPositive)?;
    assert!((scalar(&got) - 0.5 * (i2t + t2i)).abs() < 1e-12);
    // Masked false negatives: row 0 drops column 2, row 2 drops column 0.
    let lse2 = |x: f64, y: f64| (x.exp() + y.exp()).ln();
    let i2t = ((lse2(2.0, 0.0) - 2.0) + (lse(rows[1]) - 2.0) + (lse2(0.0, 1.2) - 1.2)) / 3.0;
    let t2i = ((lse2(2.0, 0.0) - 2.0) + (lse(cols[1]) - 2.0) + (lse2(1.6, 1.2) - 1.2)) / 3.0;
    let got = contrastive_loss(&a, &t, &s, &pos, LossKind::MaskFalseNegatives)?;
    assert!((scalar(&got) - 0.5 * (i2t + t2i)).abs() < 1e-9);
    Ok(())
}

#[test]
fn bad_configs_are_refused() {
    let mut cfg = tiny();
    cfg.embed_dim = 0;
    assert!(cfg.validate().is_err());
    cfg = tiny();
    cfg.max_logit_scale = 1.0;
    assert!(cfg.validate().is_err());
}
