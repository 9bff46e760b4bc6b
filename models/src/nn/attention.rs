//! Multi-head scaled dot-product attention (self and cross) with key-padding and causal masks.
//!
//! Built from differentiable ops only: `candle_nn::ops::sdpa` and `softmax_last_dim` have no
//! backward (docs/architecture.md §6). Masked logits are filled with a large finite negative value rather
//! than `-inf`, and the attention weights are multiplied by the keep-mask after the softmax:
//! a query whose keys are all masked (a fully padded row) attends to nothing and gets a zero
//! context vector instead of NaN.
//!
//! Variables (Hugging Face names): `q_proj`, `k_proj`, `v_proj`, `out_proj`, each with
//! `weight` and `bias`, except `k_proj`, which has no bias: a key bias adds the same
//! `q·b` to every logit of a query, which the softmax cancels, so its gradient is exactly zero
//! (as in Whisper). Initialisation as `torch.nn.MultiheadAttention`: Xavier-uniform q/k/v
//! weights, PyTorch-default `out_proj` weight, zero biases.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};

use super::layers::torch_default_init;
use super::ops::{mask_fill_value, masked_fill, softmax_last_dim};

/// Shape of a [`MultiHeadAttention`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionConfig {
    /// Width of the queries and of the output.
    pub embed_dim: usize,
    pub num_heads: usize,
    /// Width of the keys/values input (the context); `embed_dim` for self-attention.
    pub context_dim: usize,
}

impl AttentionConfig {
    pub fn self_attention(embed_dim: usize, num_heads: usize) -> Self {
        Self {
            embed_dim,
            num_heads,
            context_dim: embed_dim,
        }
    }

    pub fn cross_attention(embed_dim: usize, num_heads: usize, context_dim: usize) -> Self {
        Self {
            embed_dim,
            num_heads,
            context_dim,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    cfg: AttentionConfig,
}

fn xavier_uniform(fan_in: usize, fan_out: usize) -> Init {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

fn projection(
    in_dim: usize,
    out_dim: usize,
    weight_init: Init,
    bias: bool,
    vb: VarBuilder,
) -> Result<Linear> {
    let w = vb.get_with_hints((out_dim, in_dim), "weight", weight_init)?;
    let b = if bias {
        Some(vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

pub fn multi_head_attention(cfg: AttentionConfig, vb: VarBuilder) -> Result<MultiHeadAttention> {
    if cfg.num_heads == 0 || cfg.embed_dim % cfg.num_heads != 0 {
        candle_core::bail!(
            "attention: {} heads do not divide embed_dim {}",
            cfg.num_heads,
            cfg.embed_dim
        )
    }
    let (d, c) = (cfg.embed_dim, cfg.context_dim);
    Ok(MultiHeadAttention {
        q_proj: projection(d, d, xavier_uniform(d, d), true, vb.pp("q_proj"))?,
        k_proj: projection(c, d, xavier_uniform(c, d), false, vb.pp("k_proj"))?,
        v_proj: projection(c, d, xavier_uniform(c, d), true, vb.pp("v_proj"))?,
        out_proj: projection(d, d, torch_default_init(d), true, vb.pp("out_proj"))?,
        cfg,
    })
}

impl MultiHeadAttention {
    pub fn config(&self) -> AttentionConfig {
        self.cfg
    }

    /// Self-attention of `x` `(B, T, D)`. `key_padding_mask` `(B, T)`: non-zero marks padding
    /// (PyTorch's convention). `causal`: position `i` sees positions `≤ i` only.
    pub fn self_attention(
        &self,
        x: &Tensor,
        key_padding_mask: Option<&Tensor>,
        causal: bool,
    ) -> Result<Tensor> {
        Ok(self.forward_with_weights(x, x, key_padding_mask, causal)?.0)
    }

    /// Cross-attention of queries `x` `(B, Tq, D)` to `context` `(B, Tk, context_dim)`;
    /// `context_padding_mask` `(B, Tk)`, non-zero = padding.
    pub fn cross_attention(
        &self,
        x: &Tensor,
        context: &Tensor,
        context_padding_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        Ok(self
            .forward_with_weights(x, context, context_padding_mask, false)?
            .0)
    }

    /// Attention output `(B, Tq, D)` and weights `(B, H, Tq, Tk)`. With `causal` and
    /// `Tk > Tq`, the queries are the last `Tq` positions of the key sequence.
    pub fn forward_with_weights(
        &self,
        query: &Tensor,
        context: &Tensor,
        key_padding_mask: Option<&Tensor>,
        causal: bool,
    ) -> Result<(Tensor, Tensor)> {
        let (b, tq, dq) = query.dims3()?;
        let (bk, tk, dk) = context.dims3()?;
        let AttentionConfig {
            embed_dim,
            num_heads,
            context_dim,
        } = self.cfg;
        if dq != embed_dim || dk != context_dim || bk != b {
            candle_core::bail!(
                "attention expects queries (B, T, {embed_dim}) and context (B, T, {context_dim}), got {:?} and {:?}",
                query.shape(),
                context.shape()
            )
        }
        let head_dim = embed_dim / num_heads;
        let split = |t: Tensor, len: usize| -> Result<Tensor> {
            t.reshape((b, len, num_heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q_proj.forward(query)?, tq)?;
        let k = split(self.k_proj.forward(context)?, tk)?;
        let v = split(self.v_proj.forward(context)?, tk)?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (head_dim as f64).sqrt()))?;

        let mask = attention_mask(b, tq, tk, key_padding_mask, causal, query.device())?;
        let weights = match &mask {
            None => softmax_last_dim(&scores)?,
            Some(mask) => {
                let filled = masked_fill(&scores, mask, mask_fill_value(scores.dtype()))?;
                let keep = mask.to_dtype(scores.dtype())?.affine(-1.0, 1.0)?;
                softmax_last_dim(&filled)?.broadcast_mul(&keep)?
            }
        };
        let out = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, tq, embed_dim))?;
        Ok((self.out_proj.forward(&out)?, weights))
    }
}

/// The combined mask `(B or 1, 1, Tq or 1, Tk)` as `u8` (1 = masked), or `None`.
fn attention_mask(
    b: usize,
    tq: usize,
    tk: usize,
    key_padding_mask: Option<&Tensor>,
    causal: bool,
    device: &Device,
) -> Result<Option<Tensor>> {
    let padding = match key_padding_mask {
        None => None,
        Some(m) => {
            if m.dims() != [b, tk] {
                candle_core::bail!(
                    "key padding mask must be (batch {b}, keys {tk}), got {:?}",
                    m.shape()
                )
            }
            let zero = Tensor::zeros((), m.dtype(), m.device())?.broadcast_as(m.shape())?;
            Some(m.ne(&zero)?.reshape((b, 1, 1, tk))?)
        }
    };
    let causal = if causal {
        if tk < tq {
            candle_core::bail!(
                "causal attention needs at least as many keys ({tk}) as queries ({tq})"
            )
        }
        let offset = tk - tq;
        let m: Vec<u8> = (0..tq)
            .flat_map(|i| (0..tk).map(move |j| u8::from(j > i + offset)))
            .collect();
        Some(Tensor::from_vec(m, (1, 1, tq, tk), device)?)
    } else {
        None
    };
    Ok(match (padding, causal) {
        (None, None) => None,
        (Some(p), None) => Some(p),
        (None, Some(c)) => Some(c),
        (Some(p), Some(c)) => Some(p.to_dtype(DType::U8)?.broadcast_maximum(&c)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::{
        finite_difference_check, gradient_gaps, random_projection, seeded_randn,
    };
    use crate::nn::seeded_var_builder;
    use candle_core::Var;
    use candle_nn::VarMap;

    fn build(cfg: AttentionConfig, dtype: DType) -> (VarMap, MultiHeadAttention) {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 11, dtype, &Device::Cpu);
        let mha = multi_head_attention(cfg, vb).unwrap();
        // Non-zero biases so that their gradients are exercised too.
        for (k, v) in varmap.data().lock().unwrap().iter() {
            if k.ends_with("bias") {
                let r = seeded_randn(v.shape(), k.len() as u64, &Device::Cpu).unwrap();
                v.set(&(r * 0.1).unwrap().to_dtype(dtype).unwrap()).unwrap();
            }
        }
        (varmap, mha)
    }

    #[test]
    fn masked_keys_get_zero_weight_and_causal_rows_never_see_the_future() -> Result<()> {
        let (_, mha) = build(AttentionConfig::self_attention(8, 2), DType::F32);
        let x = seeded_randn((2, 5, 8), 1, &Device::Cpu)?.to_dtype(DType::F32)?;
        // Sample 0: keys 3, 4 padded. Sample 1: none.
        let pad = Tensor::new(&[[0u8, 0, 0, 1, 1], [0, 0, 0, 0, 0]], &Device::Cpu)?;
        let (_, w) = mha.forward_with_weights(&x, &x, Some(&pad), true)?;
        let (nb, nh, nq, nk) = w.dims4()?;
        let flat: Vec<f32> = w.flatten_all()?.to_vec1()?;
        for bi in 0..nb {
            for h in 0..nh {
                for i in 0..nq {
                    let row = &flat[((bi * nh + h) * nq + i) * nk..][..nk];
                    for (j, &wij) in row.iter().enumerate() {
                        let masked = j > i || (bi == 0 && j >= 3);
                        if masked {
                            assert_eq!(wij, 0.0, "b{bi} q{i} k{j}");
                        } else {
                            assert!(wij > 0.0);
                        }
                    }
                    let sum: f32 = row.iter().sum();
                    assert!((sum - 1.0).abs() < 1e-5, "row sums to {sum}");
                }
            }
        }
        // Causality of the output: changing future inputs leaves earlier outputs unchanged.
        let y = mha.self_attention(&x, None, true)?;
        let mut x2: Vec<f32> = x.flatten_all()?.to_vec1()?;
        for v in &mut x2[4 * 8..5 * 8] {
            *v += 3.0;
        }
        let x2 = Tensor::from_vec(x2, (2, 5, 8), &Device::Cpu)?;
        let y2 = mha.self_attention(&x2, None, true)?;
        let diff = (y.narrow(1, 0, 4)? - y2.narrow(1, 0, 4)?)?
            .abs()?
            .max_all()?;
        assert_eq!(diff.to_scalar::<f32>()?, 0.0);
        let last = (y.narrow(1, 4, 1)? - y2.narrow(1, 4, 1)?)?
            .abs()?
            .max_all()?;
        assert!(last.to_scalar::<f32>()? > 0.0);
        Ok(())
    }

    #[test]
    fn fully_padded_rows_give_zero_context_not_nan() -> Result<()> {
        let (varmap, mha) = build(AttentionConfig::cross_attention(4, 2, 6), DType::F32);
        let x = seeded_randn((2, 3, 4), 1, &Device::Cpu)?.to_dtype(DType::F32)?;
        let ctx = seeded_randn((2, 3, 6), 2, &Device::Cpu)?.to_dtype(DType::F32)?;
        // Sample 0 fully padded; sample 1 has two real keys (so q and k get gradients).
        let pad = Tensor::new(&[[1u32, 1, 1], [0, 1, 0]], &Device::Cpu)?;
        let (y, w) = mha.forward_with_weights(&x, &ctx, Some(&pad), false)?;
        assert!(w
            .get(0)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| *v == 0.0));
        // A fully padded sample's output is the output projection's bias.
        let bias: Vec<f32> = varmap.data().lock().unwrap()["out_proj.bias"]
            .as_tensor()
            .to_vec1()?;
        for row in y.get(0)?.to_vec2::<f32>()? {
            assert_eq!(row, bias);
        }
        let g = y.sqr()?.sum_all()?.backward()?;
        let gaps = gradient_gaps(&varmap, &g, |_| true)?;
        assert!(gaps.is_empty(), "{gaps:?}");
        for (_, v) in varmap.data().lock().unwrap().iter() {
            let gv: Vec<f32> = g.get(v.as_tensor()).unwrap().flatten_all()?.to_vec1()?;
            assert!(gv.iter().all(|x| x.is_finite()));
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let (varmap, mha) = build(AttentionConfig::cross_attention(4, 2, 3), DType::F64);
        let x = Var::from_tensor(&seeded_randn((2, 3, 4), 5, &Device::Cpu)?)?;
        let ctx = Var::from_tensor(&seeded_randn((2, 4, 3), 6, &Device::Cpu)?)?;
        let pad = Tensor::new(&[[0u8, 0, 1, 0], [0, 0, 0, 0]], &Device::Cpu)?;
        let mut vars: Vec<Var> = {
            let d = varmap.data().lock().unwrap();
            let mut names: Vec<_> = d.keys().cloned().collect();
            names.sort();
            names.iter().map(|n| d[n].clone()).collect()
        };
        vars.push(x.clone());
        vars.push(ctx.clone());
        let refs: Vec<&Var> = vars.iter().collect();
        let loss = || {
            random_projection(
                &mha.cross_attention(x.as_tensor(), ctx.as_tensor(), Some(&pad))?,
                3,
            )
        };
        let check = finite_difference_check(&refs, loss, 1e-6)?;
        assert!(check.relative_error() < 1e-7, "{check:?}");

        let (_, mha) = build(AttentionConfig::self_attention(4, 1), DType::F64);
        let loss = || random_projection(&mha.self_attention(x.as_tensor(), None, true)?, 4);
        let check = finite_difference_check(&[&x], loss, 1e-6)?;
        assert!(check.relative_error() < 1e-7, "{check:?}");
        Ok(())
    }

    #[test]
    fn shape_errors() -> Result<()> {
        let (_, mha) = build(AttentionConfig::self_attention(4, 2), DType::F32);
        let x = Tensor::zeros((2, 3, 4), DType::F32, &Device::Cpu)?;
        let bad_mask = Tensor::zeros((2, 4), DType::U8, &Device::Cpu)?;
        assert!(mha.self_attention(&x, Some(&bad_mask), false).is_err());
        assert!(mha
            .self_attention(&x.narrow(2, 0, 3)?, None, false)
            .is_err());
        let vb = seeded_var_builder(&VarMap::new(), 0, DType::F32, &Device::Cpu);
        assert!(multi_head_attention(AttentionConfig::self_attention(6, 4), vb).is_err());
        Ok(())
    }
}
