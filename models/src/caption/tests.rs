use super::*;
use crate::encoder::is_trainable_name;
use crate::nn::bce_with_logits;
use crate::nn::check::{gradient_gaps, seeded_randn};
use crate::nn::seeded_var_builder;
use candle_core::{Device, Var};
use candle_nn::{Optimizer, VarMap};
use rand::SeedableRng;

const VOCAB: usize = 12;

fn tiny_cfg() -> CaptionConfig {
    let mut encoder = EncoderConfig::tiny();
    encoder.widths = [8, 8, 16, 16];
    encoder.stem_width = 8;
    CaptionConfig {
        encoder,
        memory: MemoryConfig::default(),
        decoder: DecoderConfig {
            vocab_size: VOCAB,
            d_model: 32,
            num_layers: 2,
            num_heads: 4,
            ff_dim: 64,
            max_len: 12,
            dropout: 0.1,
            ..DecoderConfig::default()
        },
        labels: None,
    }
}

fn build(cfg: &CaptionConfig, seed: u64) -> (VarMap, CaptionModel) {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
    let model = CaptionModel::new(cfg, vb).unwrap();
    (varmap, model)
}

fn images(b: usize, seed: u64) -> Tensor {
    seeded_randn((b, 2, 32, 32), seed, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

/// `[BOS] body [EOS] [PAD]…` rows of equal length.
fn sequences(bodies: &[&[u32]]) -> Tensor {
    let t = bodies.iter().map(|b| b.len()).max().unwrap() + 2;
    let mut flat = Vec::new();
    for body in bodies {
        flat.push(1u32);
        flat.extend_from_slice(body);
        flat.push(2);
        flat.resize(flat.len() + t - body.len() - 2, 0);
    }
    Tensor::from_vec(flat, (bodies.len(), t), &Device::Cpu).unwrap()
}

#[test]
fn every_trainable_variable_gets_a_gradient() -> Result<()> {
    let mut learned = tiny_cfg();
    learned.decoder.positions = PositionKind::Learned;
    learned.decoder.tie_embeddings = false;
    // One level (C4: 2×2 tokens at 32 px; C5 alone would be a single token, whose
    // attention weight is constant 1, leaving the cross-attention queries/keys untrained).
    let mut one_level = tiny_cfg();
    one_level.memory.levels = vec![2];
    for cfg in [tiny_cfg(), learned, one_level] {
        let (varmap, model) = build(&cfg, 3);
        let seqs = sequences(&[&[5, 6, 7, 8], &[9, 4]]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let loss = model.loss(
            &images(2, 1),
            &seqs,
            0.1,
            EncoderMode::Train,
            Some(&mut rng),
        )?;
        assert!(loss.to_scalar::<f32>()?.is_finite());
        let grads = loss.backward()?;
        let gaps = gradient_gaps(&varmap, &grads, is_trainable_name)?;
        // Without C5 in the memory, the last encoder stage is unused (and only it).
        let unused = !cfg.memory.levels.contains(&3);
        assert!(
            gaps.iter()
                .all(|n| unused && n.starts_with("encoder.layer4.")),
            "{:?} {:?}: no gradient for {gaps:?}",
            cfg.decoder.positions,
            cfg.memory.levels
        );
        assert_eq!(!gaps.is_empty(), unused, "{gaps:?}");
        let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        assert_eq!(
            names.iter().any(|n| n == "decoder.embed_positions.weight"),
            cfg.decoder.positions == PositionKind::Learned
        );
        assert_eq!(
            names.iter().any(|n| n == "memory.level_embed"),
            cfg.memory.levels.len() > 1
        );
    }
    Ok(())
}

/// The label head: both losses together reach every trainable variable (the head and the
/// token projection included); the caption loss alone reaches the token projection (the
/// decoder reads the label token) and the head through it, but the label loss alone does not
/// reach the decoder.
#[test]
fn label_head_and_token_get_gradients() -> Result<()> {
    let mut cfg = tiny_cfg();
    cfg.labels = Some(LabelHeadConfig {
        num_labels: 3,
        label_token: true,
        mask: true,
    });
    let (varmap, model) = build(&cfg, 4);
    let seqs = sequences(&[&[5, 6, 7, 8], &[9, 4]]);
    let rows = Tensor::arange(0u32, 2, &Device::Cpu)?;
    let targets = Tensor::new(&[[1f32, 0., 1.], [0., 0., 0.]], &Device::Cpu)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    // C5 of a 32-pixel image is 1×1.
    let shares = Tensor::new(&[[[[0.25f32]]], [[[0.0]]]], &Device::Cpu)?;
    let enc = model.encode_with_labels(&images(2, 1), EncoderMode::Train)?;
    let caption_loss = model.caption_loss(&enc.memory, &[(rows, seqs)], 0.1, Some(&mut rng))?;
    let label_loss = bce_with_logits(
        enc.label_logits.as_ref().expect("label logits"),
        &targets,
        None,
    )?;
    assert!(label_loss.to_scalar::<f32>()? > 0.0);
    let mask_loss = bce_with_logits(
        enc.mask_logits.as_ref().expect("mask logits"),
        &shares,
        None,
    )?;
    let total = ((&caption_loss + &label_loss)? + mask_loss)?;
    let gaps = gradient_gaps(&varmap, &total.backward()?, is_trainable_name)?;
    assert!(gaps.is_empty(), "no gradient for {gaps:?}");
    let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    for n in [
        "labels.head.weight",
        "labels.token.weight",
        "labels.mask.weight",
    ] {
        assert!(names.iter().any(|k| k == n), "{n} missing");
    }
    let decoder_only = gradient_gaps(&varmap, &label_loss.backward()?, |n| {
        n.starts_with("decoder.")
    })?;
    assert!(
        !decoder_only.is_empty(),
        "the label loss must not train the decoder"
    );
    // The memory has one token more than without the head (C4 2x2 + C5 1x1 + label token).
    let m = model.encode(&images(2, 1), EncoderMode::Eval)?;
    assert_eq!(m.dims3()?, (2, 6, 32));
    let probs = model.predict_labels(&images(2, 1))?.expect("probabilities");
    assert_eq!(probs.dims2()?, (2, 3));
    // Outside training the mask head (a training signal only) gives no logits.
    let eval = model.encode_with_labels(&images(2, 1), EncoderMode::Eval)?;
    assert!(eval.label_logits.is_some() && eval.mask_logits.is_none());
    Ok(())
}

#[test]
fn frozen_encoder_gets_no_gradient() -> Result<()> {
    let (varmap, model) = build(&tiny_cfg(), 3);
    let seqs = sequences(&[&[5, 6], &[9, 4]]);
    let loss = model.loss(&images(2, 1), &seqs, 0.0, EncoderMode::Frozen, None)?;
    let grads = loss.backward()?;
    let gaps = gradient_gaps(&varmap, &grads, is_trainable_name)?;
    assert!(!gaps.is_empty());
    assert!(gaps.iter().all(|n| n.starts_with("encoder.")), "{gaps:?}");
    let decoder_gaps = gradient_gaps(&varmap, &grads, |n| {
        is_trainable_name(n) && !n.starts_with("encoder.")
    })?;
    assert!(decoder_gaps.is_empty(), "{decoder_gaps:?}");
    Ok(())
}

#[test]
fn teacher_forcing_is_causal_and_padding_is_ignored() -> Result<()> {
    let (_, model) = build(&tiny_cfg(), 5);
    let img = images(1, 2);
    let a = Tensor::new(&[[1u32, 5, 6, 7]], &Device::Cpu)?;
    let b = Tensor::new(&[[1u32, 5, 6, 9]], &Device::Cpu)?;
    let la = model.forward(&img, &a, EncoderMode::Eval, None)?;
    let lb = model.forward(&img, &b, EncoderMode::Eval, None)?;
    let diff = (la.narrow(1, 0, 3)? - lb.narrow(1, 0, 3)?)?
        .abs()?
        .max_all()?;
    assert_eq!(diff.to_scalar::<f32>()?, 0.0);
    // Extra padding after [EOS] does not change the loss.
    let short = sequences(&[&[5, 6]]);
    let long = Tensor::new(&[[1u32, 5, 6, 2, 0, 0, 0]], &Device::Cpu)?;
    let ls = model.loss(&img, &short, 0.1, EncoderMode::Eval, None)?;
    let ll = model.loss(&img, &long, 0.1, EncoderMode::Eval, None)?;
    let (ls, ll) = (ls.to_scalar::<f32>()?, ll.to_scalar::<f32>()?);
    assert!((ls - ll).abs() < 1e-5, "{ls} vs {ll}");
    // Too long for the position table: clear error.
    let too_long = Tensor::zeros((1, 13), DType::U32, &Device::Cpu)?;
    let err = model
        .forward(&img, &too_long, EncoderMode::Eval, None)
        .unwrap_err();
    assert!(err.to_string().contains("max_len"), "{err}");
    Ok(())
}

/// Sum of the teacher-forced log-probabilities of `tokens` (+ `[EOS]` when finished).
fn teacher_forced_log_prob(model: &CaptionModel, img: &Tensor, h: &Hypothesis) -> Result<f64> {
    let mut seq = vec![1u32];
    seq.extend(&h.tokens);
    if h.finished {
        seq.push(2);
    }
    let t = seq.len();
    let ids = Tensor::from_vec(seq.clone(), (1, t), &Device::Cpu)?;
    let logits = model.forward(img, &ids.narrow(1, 0, t - 1)?, EncoderMode::Eval, None)?;
    let lp = candle_nn::ops::log_softmax(&logits.squeeze(0)?, 1)?.to_vec2::<f32>()?;
    Ok((1..t).map(|i| f64::from(lp[i - 1][seq[i] as usize])).sum())
}

#[test]
fn beam_search_scores_order_and_greedy_equivalence() -> Result<()> {
    let (varmap, model) = build(&tiny_cfg(), 7);
    // Make [EOS] likely enough that some hypotheses finish early and some do not.
    {
        let data = varmap.data().lock().unwrap();
        let emb = data["decoder.embed_tokens.weight"].clone();
        let mut w = emb.as_tensor().to_vec2::<f32>()?;
        for v in &mut w[2] {
            *v *= 3.0;
        }
        emb.set(&Tensor::new(w, &Device::Cpu)?)?;
    }
    let img = images(3, 4);
    for alpha in [0.0, 1.0] {
        let cfg = SearchConfig {
            beam_width: 4,
            max_new_tokens: 8,
            length_penalty: alpha,
        };
        let all = model.generate(&img, &cfg)?;
        assert_eq!(all.len(), 3);
        for (i, hyps) in all.iter().enumerate() {
            assert_eq!(hyps.len(), 4, "image {i}");
            for pair in hyps.windows(2) {
                assert!(pair[0].score >= pair[1].score, "not sorted: {hyps:?}");
            }
            let one = img.narrow(0, i, 1)?;
            for h in hyps {
                assert!(h.tokens.len() <= 8);
                assert!(h.tokens.iter().all(|&t| t > 2), "special token in {h:?}");
                let want = teacher_forced_log_prob(&model, &one, h)?;
                assert!((h.log_prob - want).abs() < 1e-4, "{} vs {want}", h.log_prob);
                let len = (h.tokens.len() + usize::from(h.finished)) as f64;
                assert!((h.score - h.log_prob / len.powf(alpha)).abs() < 1e-9);
            }
            // Batched results equal one-image results.
            let single = model.generate(&one, &cfg)?;
            let tok = |v: &[Hypothesis]| v.iter().map(|h| h.tokens.clone()).collect::<Vec<_>>();
            assert_eq!(tok(&single[0]), tok(hyps));
        }
        // Beam 1 == greedy, exactly.
        let memory = model.encode(&img, EncoderMode::Eval)?.detach();
        let g = greedy(model.decoder(), &memory, &cfg)?;
        let b1 = beam_search(
            model.decoder(),
            &memory,
            &SearchConfig {
                beam_width: 1,
                ..cfg
            },
        )?;
        for (g, b) in g.iter().zip(&b1) {
            assert_eq!(b.len(), 1);
            assert_eq!(&b[0], g);
        }
    }
    let memory = model.encode(&img, EncoderMode::Eval)?;
    let bad = SearchConfig {
        beam_width: 0,
        ..SearchConfig::default()
    };
    assert!(beam_search(model.decoder(), &memory, &bad).is_err());
    Ok(())
}

#[test]
fn tiny_model_overfits_a_handful_of_captions() -> Result<()> {
    let mut cfg = tiny_cfg();
    cfg.decoder.dropout = 0.0;
    let (varmap, model) = build(&cfg, 11);
    // Shared tokens in different orders: the image decides the caption.
    let bodies: [&[u32]; 4] = [&[5, 6, 7, 8], &[6, 5, 9], &[7, 7, 10, 5, 11], &[8, 4]];
    let seqs = sequences(&bodies);
    let img = images(4, 21);
    let vars: Vec<Var> = {
        let d = varmap.data().lock().unwrap();
        let mut names: Vec<_> = d.keys().filter(|n| is_trainable_name(n)).cloned().collect();
        names.sort();
        names.iter().map(|n| d[n].clone()).collect()
    };
    let mut opt = candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr: 3e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let steps = 150;
    let mut first = None;
    let mut last = 0.0;
    for s in 0..steps {
        opt.set_learning_rate(
            3e-3 * 0.5 * (1.0 + (std::f64::consts::PI * s as f64 / steps as f64).cos()),
        );
        let loss = model.loss(&img, &seqs, 0.0, EncoderMode::Train, None)?;
        last = loss.to_scalar::<f32>()?;
        first.get_or_insert(last);
        opt.backward_step(&loss)?;
    }
    assert!(last < 0.05 * first.unwrap(), "loss {first:?} → {last}");
    // Let the BatchNorm running statistics settle on the final weights.
    for _ in 0..40 {
        model.encode(&img, EncoderMode::Train)?;
    }
    for beam_width in [1, 3] {
        let out = model.generate(
            &img,
            &SearchConfig {
                beam_width,
                max_new_tokens: 10,
                length_penalty: 1.0,
            },
        )?;
        for (hyps, body) in out.iter().zip(bodies) {
            assert_eq!(hyps[0].tokens, body, "beam {beam_width}");
            assert!(hyps[0].finished);
        }
    }
    Ok(())
}

#[test]
fn presets_serde_and_validation() {
    for name in CaptionConfig::PRESETS {
        let cfg = CaptionConfig::preset(name, 500).unwrap();
        cfg.validate().unwrap();
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<CaptionConfig>(&json).unwrap(), cfg);
    }
    assert!(CaptionConfig::preset("huge", 500).is_err());
    let mut bad = tiny_cfg();
    bad.decoder.num_heads = 3;
    assert!(bad.validate().is_err());
    bad = tiny_cfg();
    bad.memory.levels = vec![3, 3];
    assert!(bad.validate().is_err());
    bad = tiny_cfg();
    bad.decoder.eos_id = VOCAB as u32;
    assert!(bad.validate().is_err());
    let vb = seeded_var_builder(&VarMap::new(), 0, DType::F32, &Device::Cpu);
    assert!(CaptionModel::new(&bad, vb).is_err());
}

#[test]
fn incremental_decoding_equals_recomputing_the_prefix() -> Result<()> {
    for positions in [PositionKind::Sinusoidal, PositionKind::Learned] {
        let mut cfg = tiny_cfg();
        cfg.decoder.positions = positions;
        let (_, model) = build(&cfg, 5);
        let dec = model.decoder();
        let memory = model.encode(&images(3, 2), EncoderMode::Eval)?;
        let seqs: [[u32; 6]; 3] = [[1, 5, 6, 7, 8, 9], [1, 4, 4, 3, 10, 11], [1, 2, 7, 5, 6, 4]];
        let full = |mem: &Tensor, rows: &[Vec<u32>]| -> Result<Tensor> {
            let t = rows[0].len();
            let flat: Vec<u32> = rows.concat();
            dec.next_token_log_probs(mem, &Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu)?)
        };
        let max_diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
            (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
        };
        let mut cache = dec.new_cache();
        assert!(cache.is_empty());
        for t in 0..6 {
            let last = Tensor::new(&[seqs[0][t], seqs[1][t], seqs[2][t]], &Device::Cpu)?;
            let inc = dec.next_token_log_probs_cached(&memory, &last, &mut cache)?;
            let prefixes: Vec<Vec<u32>> = seqs.iter().map(|s| s[..=t].to_vec()).collect();
            let d = max_diff(&inc, &full(&memory, &prefixes)?)?;
            assert!(d < 1e-4, "{positions:?} position {t}: {d}");
        }
        assert_eq!(cache.len(), 6);
        // Reordered and repeated rows continue from their own prefixes (beam search).
        let idx = Tensor::new(&[2u32, 0, 0], &Device::Cpu)?;
        cache.select(&idx)?;
        let mem = memory.index_select(&idx, 0)?;
        let inc = dec.next_token_log_probs_cached(
            &mem,
            &Tensor::new(&[5u32, 6, 7], &Device::Cpu)?,
            &mut cache,
        )?;
        let prefixes = vec![
            [&seqs[2][..], &[5]].concat(),
            [&seqs[0][..], &[6]].concat(),
            [&seqs[0][..], &[7]].concat(),
        ];
        let d = max_diff(&inc, &full(&mem, &prefixes)?)?;
        assert!(d < 1e-4, "{positions:?} after select: {d}");
        // A cache of 3 rows with 2 new tokens: a clear error.
        let err = dec
            .next_token_log_probs_cached(
                &memory.narrow(0, 0, 2)?,
                &Tensor::new(&[5u32, 6], &Device::Cpu)?,
                &mut cache,
            )
            .unwrap_err();
        assert!(err.to_string().contains("cache"), "{err}");
    }
    Ok(())
}

#[test]
fn length_grouped_loss_equals_the_padded_batch_loss() -> Result<()> {
    let (varmap, model) = build(&tiny_cfg(), 9);
    let img = images(4, 6);
    let bodies: [&[u32]; 4] = [&[5, 6, 7, 8, 9, 10], &[4], &[7, 7, 3], &[8, 9]];
    let padded = sequences(&bodies);
    let whole = model.loss(&img, &padded, 0.1, EncoderMode::Eval, None)?;
    // Groups {1, 3} and {2, 0}, each padded to its own longest.
    let groups = vec![
        (
            Tensor::new(&[1u32, 3], &Device::Cpu)?,
            sequences(&[bodies[1], bodies[3]]),
        ),
        (
            Tensor::new(&[2u32, 0], &Device::Cpu)?,
            sequences(&[bodies[2], bodies[0]]),
        ),
    ];
    let grouped = model.loss_grouped(&img, &groups, 0.1, EncoderMode::Eval, None)?;
    let (w, g) = (whole.to_scalar::<f32>()?, grouped.to_scalar::<f32>()?);
    assert!((w - g).abs() < 1e-5, "{w} vs {g}");
    // Same gradients.
    let gw = whole.backward()?;
    let gg = grouped.backward()?;
    for (name, var) in varmap.data().lock().unwrap().iter() {
        if let (Some(a), Some(b)) = (gw.get(var.as_tensor()), gg.get(var.as_tensor())) {
            let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "{name}: {d}");
        }
    }
    let all_pad = vec![(
        Tensor::new(&[0u32], &Device::Cpu)?,
        Tensor::new(&[[0u32, 0, 0]], &Device::Cpu)?,
    )];
    assert!(model
        .loss_grouped(&img, &all_pad, 0.1, EncoderMode::Eval, None)
        .is_err());
    Ok(())
}
