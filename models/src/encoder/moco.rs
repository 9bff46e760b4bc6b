//! MoCo v2 (He et al. 2020; Chen et al. 2020), the method of the Hephaestus SSL code: a query
//! encoder trained by back-prop, a key ("momentum") encoder that is an exponential moving
//! average of it, and a queue of past keys as negatives; InfoNCE with temperature τ.
//!
//! One [`MoCo::forward_t`] call in training mode does what the reference `forward` does:
//! momentum-update the key encoder from the current query encoder, encode queries and keys
//! (keys without gradient), compute the InfoNCE loss against the queue, then enqueue the new
//! keys. The caller back-propagates the loss and steps the optimizer over the trainable
//! variables ([`super::is_trainable_name`]).
//!
//! Shuffle-BN: on several GPUs MoCo shuffles keys across devices so that BatchNorm statistics
//! cannot leak which key is the positive. On one device, `bn_splits > 1` emulates it: the
//! batch is cut into `bn_splits` groups normalised separately, and the keys are permuted
//! (seeded) before being cut, so a query and its key never share a BatchNorm group
//! composition. Running statistics are then updated once per group.
//!
//! Variables: `encoder.*`, `projector.*` (trained), `momentum.encoder.*`,
//! `momentum.projector.*` (EMA), `moco.queue` `(queue_size, dim)` (unit rows) and
//! `moco.queue_ptr` `(1,)` (next row to overwrite, stored as a float so the `VarMap` holds a
//! single dtype); all saved with the `VarMap`, so a resumed run continues identically.

use candle_core::{DType, Result, Tensor, Var};
use candle_nn::{Init, ModuleT, VarBuilder};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::simclr::{ContrastiveOutput, ProjectionConfig};
use super::{EncoderConfig, ResNet};
use crate::nn::check::is_running_statistic;
use crate::nn::{l2_normalize, Mlp};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoCoConfig {
    pub encoder: EncoderConfig,
    /// MoCo v2's MLP head (`mlp: true` in the reference): hidden = encoder width, out 128.
    #[serde(default)]
    pub projection: ProjectionConfig,
    /// Number of negative keys kept (65 536 in MoCo; use a few thousand on a CPU).
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// EMA coefficient `m` of the key encoder: `θ_k ← m·θ_k + (1 − m)·θ_q`.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// InfoNCE temperature (0.2 in MoCo v2; the Hephaestus config used 0.07).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// BatchNorm groups emulating shuffle-BN on one device (1 = whole batch).
    #[serde(default = "default_bn_splits")]
    pub bn_splits: usize,
}

fn default_queue_size() -> usize {
    65536
}
fn default_momentum() -> f64 {
    0.999
}
fn default_temperature() -> f64 {
    0.2
}
fn default_bn_splits() -> usize {
    1
}

impl MoCoConfig {
    pub fn new(encoder: EncoderConfig) -> Self {
        Self {
            encoder,
            projection: ProjectionConfig::default(),
            queue_size: default_queue_size(),
            momentum: default_momentum(),
            temperature: default_temperature(),
            bn_splits: default_bn_splits(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.queue_size == 0
            || !(0.0..=1.0).contains(&self.momentum)
            || (self.temperature.is_nan() || self.temperature <= 0.0)
            || self.bn_splits == 0
        {
            candle_core::bail!(
                "MoCo: queue_size and bn_splits must be positive, momentum in [0, 1], temperature > 0: {self:?}"
            )
        }
        Ok(())
    }
}

/// Query and key branches of MoCo.
#[derive(Debug, Clone)]
pub struct MoCo {
    encoder_q: ResNet,
    projector_q: Mlp,
    encoder_k: ResNet,
    projector_k: Mlp,
    queue: Var,
    queue_ptr: Var,
    /// `(query parameter, key parameter)` pairs of the EMA, in name order.
    ema_pairs: Vec<(Var, Var)>,
    cfg: MoCoConfig,
}

/// `MoCo` returns the same loss/logits triple as SimCLR; the positive is column 0.
pub type MoCoOutput = ContrastiveOutput;

impl MoCo {
    /// Builds every branch on `vb` (a seeded builder over a `VarMap`). On a fresh `VarMap`
    /// the key encoder starts as a copy of the query encoder and the queue as random unit
    /// vectors; variables that already exist (a rebuilt or loaded model) are left as they are.
    pub fn new(cfg: &MoCoConfig, vb: VarBuilder, varmap: &candle_nn::VarMap) -> Result<Self> {
        cfg.validate()?;
        let fresh = !vb.contains_tensor("moco.queue");
        // Full VarMap names (the builder may carry a prefix).
        let prefix = vb.prefix();
        let full = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            }
        };
        let encoder_q = ResNet::new(&cfg.encoder, vb.pp("encoder"))?;
        let projector_q = cfg
            .projection
            .build(cfg.encoder.out_dim(), vb.pp("projector"))?;
        let encoder_k = ResNet::new(&cfg.encoder, vb.pp("momentum").pp("encoder"))?;
        let projector_k = cfg
            .projection
            .build(cfg.encoder.out_dim(), vb.pp("momentum").pp("projector"))?;
        let dim = cfg.projection.out_dim;
        let init = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        vb.get_with_hints((cfg.queue_size, dim), "moco.queue", init)?;
        vb.get_with_hints(1, "moco.queue_ptr", Init::Const(0.0))?;

        let data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        let get = |name: &str| -> Result<Var> {
            data.get(name).cloned().ok_or_else(|| {
                candle_core::Error::Msg(format!("MoCo: variable {name} missing from the VarMap"))
            })
        };
        let queue = get(&full("moco.queue"))?;
        let queue_ptr = get(&full("moco.queue_ptr"))?;
        let (enc, proj) = (full("encoder."), full("projector."));
        let mut names: Vec<&String> = data
            .keys()
            .filter(|n| (n.starts_with(&enc) || n.starts_with(&proj)) && !is_running_statistic(n))
            .collect();
        names.sort();
        let mut ema_pairs = Vec::with_capacity(names.len());
        for name in names {
            let relative = &name[prefix.len() + usize::from(!prefix.is_empty())..];
            ema_pairs.push((get(name)?, get(&full(&format!("momentum.{relative}")))?));
        }
        drop(data);
        if fresh {
            for (q, k) in &ema_pairs {
                k.set(&q.as_tensor().copy()?)?;
            }
            queue.set(&l2_normalize(queue.as_tensor(), 1e-12)?)?;
        }
        Ok(Self {
            encoder_q,
            projector_q,
            encoder_k,
            projector_k,
            queue,
            queue_ptr,
            ema_pairs,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &MoCoConfig {
        &self.cfg
    }

    /// The query encoder (the one that is kept after pretraining).
    pub fn encoder(&self) -> &ResNet {
        &self.encoder_q
    }

    /// `θ_k ← m·θ_k + (1 − m)·θ_q` for every parameter (not the BN running statistics, which
    /// each encoder keeps for itself, as in the reference).
    pub fn momentum_update(&self) -> Result<()> {
        let m = self.cfg.momentum;
        for (q, k) in &self.ema_pairs {
            let updated = (k.as_detached_tensor().affine(m, 0.0)?
                + q.as_detached_tensor().affine(1.0 - m, 0.0)?)?;
            k.set(&updated)?;
        }
        Ok(())
    }

    /// Writes `keys` `(B, dim)` into the queue ring buffer at `queue_ptr` (wrapping around).
    pub fn enqueue(&self, keys: &Tensor) -> Result<()> {
        let (b, d) = keys.dims2()?;
        let k_size = self.cfg.queue_size;
        if d != self.cfg.projection.out_dim || b > k_size {
            candle_core::bail!(
                "MoCo enqueue: {b} keys of width {d} for a queue of {k_size} × {}",
                self.cfg.projection.out_dim
            )
        }
        let keys = keys.detach().to_dtype(self.queue.dtype())?.contiguous()?;
        let ptr = self.pointer()?;
        let first = b.min(k_size - ptr);
        self.queue
            .as_tensor()
            .slice_set(&keys.narrow(0, 0, first)?.contiguous()?, 0, ptr)?;
        if first < b {
            self.queue.as_tensor().slice_set(
                &keys.narrow(0, first, b - first)?.contiguous()?,
                0,
                0,
            )?;
        }
        let next = ((ptr + b) % k_size) as f64;
        let next =
            Tensor::full(next, 1, self.queue_ptr.device())?.to_dtype(self.queue_ptr.dtype())?;
        self.queue_ptr.set(&next)
    }

    /// Index of the next queue row to overwrite.
    pub fn pointer(&self) -> Result<usize> {
        let p = self
            .queue_ptr
            .as_tensor()
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        match p.first() {
            Some(&v) if v >= 0.0 && (v as usize) < self.cfg.queue_size && v.fract() == 0.0 => {
                Ok(v as usize)
            }
            other => candle_core::bail!("MoCo: corrupt queue pointer {other:?}"),
        }
    }

    /// A copy of the queue `(queue_size, dim)`.
    pub fn queue(&self) -> Result<Tensor> {
        self.queue.as_tensor().copy()
    }

    /// Runs `encoder → projector` on `x` in `groups` BatchNorm groups of equal size.
    fn embed(
        &self,
        encoder: &ResNet,
        projector: &Mlp,
        x: &Tensor,
        train: bool,
        groups: usize,
    ) -> Result<Tensor> {
        let b = x.dim(0)?;
        let mut outs = Vec::with_capacity(groups);
        let g = b / groups;
        for i in 0..groups {
            let chunk = x.narrow(0, i * g, g)?;
            let pooled = encoder.forward_t(&chunk, train)?.pooled;
            outs.push(projector.forward_t(&pooled, train)?);
        }
        l2_normalize(&Tensor::cat(&outs, 0)?, 1e-12)
    }

    /// InfoNCE of queries `view_q` against keys `view_k` `(B, C, H, W)` and the queue.
    /// In training mode it first momentum-updates the key encoder and afterwards enqueues
    /// the keys; `rng` draws the shuffle-BN permutation (only used when `bn_splits > 1`).
    pub fn forward_t(
        &self,
        view_q: &Tensor,
        view_k: &Tensor,
        train: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<ContrastiveOutput> {
        if view_q.dims() != view_k.dims() {
            candle_core::bail!(
                "MoCo views differ in shape: {:?} vs {:?}",
                view_q.shape(),
                view_k.shape()
            )
        }
        let b = view_q.dim(0)?;
        let groups = if train { self.cfg.bn_splits } else { 1 };
        if b % groups != 0 || b > self.cfg.queue_size {
            candle_core::bail!(
                "MoCo: batch {b} must be a multiple of bn_splits {groups} and at most the queue size {}",
                self.cfg.queue_size
            )
        }
        if train {
            self.momentum_update()?;
        }
        let q = self.embed(&self.encoder_q, &self.projector_q, view_q, train, groups)?;

        // Keys: no gradient; shuffled across BN groups, then restored to query order.
        let k = if groups > 1 {
            let mut perm: Vec<u32> = (0..b as u32).collect();
            perm.shuffle(rng);
            let mut inverse = vec![0u32; b];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p as usize] = i as u32;
            }
            let perm = Tensor::from_vec(perm, b, view_k.device())?;
            let inverse = Tensor::from_vec(inverse, b, view_k.device())?;
            let shuffled = view_k.index_select(&perm, 0)?;
            self.embed(&self.encoder_k, &self.projector_k, &shuffled, train, groups)?
                .index_select(&inverse, 0)?
        } else {
            self.embed(&self.encoder_k, &self.projector_k, view_k, train, 1)?
        }
        .detach();

        let l_pos = (&q * &k)?.sum_keepdim(1)?;
        // A snapshot: enqueueing below must not change the tensor the backward pass reads.
        let queue = self
            .queue
            .as_tensor()
            .detach()
            .copy()?
            .to_dtype(q.dtype())?;
        let l_neg = q.matmul(&queue.t()?)?;
        let logits = (Tensor::cat(&[&l_pos, &l_neg], 1)? / self.cfg.temperature)?;
        let targets = Tensor::zeros(b, DType::U32, q.device())?;
        let loss = candle_nn::loss::cross_entropy(&logits, &targets)?;
        if train {
            self.enqueue(&k)?;
        }
        Ok(ContrastiveOutput {
            loss,
            logits,
            targets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::is_trainable_name;
    use crate::nn::check::{gradient_gaps, seeded_randn};
    use crate::nn::seeded_var_builder;
    use candle_core::Device;
    use candle_nn::VarMap;
    use rand::SeedableRng;

    fn small_config() -> MoCoConfig {
        let mut cfg = MoCoConfig::new(EncoderConfig::tiny());
        cfg.queue_size = 10;
        cfg.projection.out_dim = 8;
        cfg.momentum = 0.9;
        cfg
    }

    fn views(seed: u64) -> (Tensor, Tensor) {
        let v1 = seeded_randn((4, 2, 32, 32), seed, &Device::Cpu).unwrap();
        let v2 = seeded_randn((4, 2, 32, 32), seed + 1, &Device::Cpu).unwrap();
        (
            v1.to_dtype(DType::F32).unwrap(),
            v2.to_dtype(DType::F32).unwrap(),
        )
    }

    fn var(varmap: &VarMap, name: &str) -> Vec<f32> {
        varmap.data().lock().unwrap()[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn every_trainable_variable_gets_a_gradient_and_keys_get_none() -> Result<()> {
        for bn_splits in [1, 2] {
            let varmap = VarMap::new();
            let mut cfg = small_config();
            cfg.bn_splits = bn_splits;
            let vb = seeded_var_builder(&varmap, 1, DType::F32, &Device::Cpu);
            let model = MoCo::new(&cfg, vb, &varmap)?;
            let (v1, v2) = views(3);
            let out = model.forward_t(&v1, &v2, true, &mut ChaCha8Rng::seed_from_u64(0))?;
            assert_eq!(out.logits.dims(), &[4, 11]);
            let grads = out.loss.backward()?;
            let gaps = gradient_gaps(&varmap, &grads, is_trainable_name)?;
            assert!(
                gaps.is_empty(),
                "bn_splits {bn_splits}: no gradient for {gaps:?}"
            );
            let key_grads = gradient_gaps(&varmap, &grads, |n| {
                n.starts_with("momentum.") || n.starts_with("moco.")
            })?;
            let n_key = varmap
                .data()
                .lock()
                .unwrap()
                .keys()
                .filter(|n| n.starts_with("momentum.") || n.starts_with("moco."))
                .count();
            assert_eq!(
                key_grads.len(),
                n_key,
                "key branch must not receive gradients"
            );
        }
        Ok(())
    }

    #[test]
    fn key_encoder_starts_as_a_copy_and_follows_by_ema() -> Result<()> {
        let varmap = VarMap::new();
        let cfg = small_config();
        let vb = seeded_var_builder(&varmap, 1, DType::F32, &Device::Cpu);
        let model = MoCo::new(&cfg, vb.clone(), &varmap)?;
        let name = "layer2.0.conv1.weight";
        let q0 = var(&varmap, &format!("encoder.{name}"));
        assert_eq!(q0, var(&varmap, &format!("momentum.encoder.{name}")));
        // Queue rows are unit vectors.
        let norms = model.queue()?.sqr()?.sum(1)?.to_vec1::<f32>()?;
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5));

        // Move the query encoder, then one EMA step: k = 0.9·k + 0.1·q.
        {
            let data = varmap.data().lock().unwrap();
            let q = &data[&format!("encoder.{name}")];
            q.set(&(q.as_tensor() + 1.0)?)?;
        }
        model.momentum_update()?;
        let k1 = var(&varmap, &format!("momentum.encoder.{name}"));
        for (k, q) in k1.iter().zip(&q0) {
            assert!((k - (q + 0.1)).abs() < 1e-6);
        }
        // Rebuilding on the same VarMap keeps the trained key encoder and queue.
        let queue_before = model.queue()?.flatten_all()?.to_vec1::<f32>()?;
        let _again = MoCo::new(&cfg, vb, &varmap)?;
        assert_eq!(var(&varmap, &format!("momentum.encoder.{name}")), k1);
        assert_eq!(var(&varmap, "moco.queue"), queue_before);
        Ok(())
    }

    #[test]
    fn queue_is_a_ring_buffer_of_the_latest_keys() -> Result<()> {
        let varmap = VarMap::new();
        let cfg = small_config(); // queue of 10, batch of 4
        let vb = seeded_var_builder(&varmap, 1, DType::F32, &Device::Cpu);
        let model = MoCo::new(&cfg, vb, &varmap)?;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let key = |i: usize| Tensor::full(i as f32, (4, 8), &Device::Cpu);
        for step in 0..3 {
            model.enqueue(&key(step + 1)?)?;
        }
        // Rows 0..4 ← 1, 4..8 ← 2, 8..10 ← 3 and wrap: 0..2 ← 3; pointer at 2.
        assert_eq!(model.pointer()?, 2);
        let q = model.queue()?.to_vec2::<f32>()?;
        let firsts: Vec<f32> = q.iter().map(|r| r[0]).collect();
        assert_eq!(firsts, vec![3., 3., 1., 1., 2., 2., 2., 2., 3., 3.]);
        // Training forward enqueues the batch's keys (unit vectors) at the pointer.
        let (v1, v2) = views(5);
        model.forward_t(&v1, &v2, true, &mut rng)?;
        assert_eq!(model.pointer()?, 6);
        let q = model.queue()?.to_vec2::<f32>()?;
        for row in &q[2..6] {
            let n: f32 = row.iter().map(|v| v * v).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
        // Evaluation changes nothing.
        model.forward_t(&v1, &v2, false, &mut rng)?;
        assert_eq!(model.pointer()?, 6);
        assert!(model
            .enqueue(&Tensor::zeros((11, 8), DType::F32, &Device::Cpu)?)
            .is_err());
        Ok(())
    }

    #[test]
    fn positive_logit_and_reproducibility() -> Result<()> {
        let run = || -> Result<(f32, Vec<f32>)> {
            let varmap = VarMap::new();
            let mut cfg = small_config();
            cfg.bn_splits = 2;
            let vb = seeded_var_builder(&varmap, 4, DType::F32, &Device::Cpu);
            let model = MoCo::new(&cfg, vb, &varmap)?;
            let (v1, _) = views(7);
            // Identical views and m = 1 before training: l_pos = q·q/τ = 1/τ in eval mode.
            let out = model.forward_t(&v1, &v1, false, &mut ChaCha8Rng::seed_from_u64(1))?;
            let pos: Vec<f32> = out.logits.narrow(1, 0, 1)?.flatten_all()?.to_vec1()?;
            assert!(pos.iter().all(|p| (p - 1.0 / 0.2).abs() < 1e-3), "{pos:?}");
            let (a, b) = views(9);
            let out = model.forward_t(&a, &b, true, &mut ChaCha8Rng::seed_from_u64(2))?;
            Ok((out.loss.to_scalar::<f32>()?, var(&varmap, "moco.queue")))
        };
        let (l1, q1) = run()?;
        let (l2, q2) = run()?;
        assert_eq!(l1, l2);
        assert_eq!(q1, q2);
        Ok(())
    }
}
