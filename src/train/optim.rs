//! Optimizers with saveable state: AdamW and SGD with momentum, over named parameters.
//!
//! candle-nn's `AdamW` keeps its moments private (no checkpointing) and applies weight decay
//! to every variable it is given; its `SGD` has no momentum (docs/architecture.md §6). The optimizers
//! here follow PyTorch's update rules exactly (`torch.optim.AdamW`, `torch.optim.SGD` with
//! `dampening = 0`), keep their state as named tensors (saved to `optimizer.safetensors`) and
//! skip weight decay on the parameters [`no_weight_decay`] selects (norm weights, biases).
//!
//! Gradients travel as [`Grads`], a vector aligned with the optimizer's name-sorted
//! parameter list, so that accumulation, clipping and logging need no `GradStore` lookups.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, Layout, Tensor, Var};
use candle_nn::VarMap;
use insar_mm_models::nn::parallel::for_each_chunk_mut;
use serde::{Deserialize, Serialize};

use super::config::only_own_keys;
use crate::data::atomic::write_atomic;

/// One trainable variable with its stable name.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    /// Whether decoupled weight decay applies to it.
    pub decay: bool,
}

/// Whether a parameter is exempt from weight decay: every vector or scalar (BatchNorm,
/// LayerNorm and GroupNorm weights and biases, linear and conv biases, learnable
/// temperatures) and anything named `*bias`. Matrices and conv kernels are decayed.
pub fn no_weight_decay(name: &str, rank: usize) -> bool {
    rank <= 1 || name.ends_with("bias")
}

/// The variables of `varmap` that `is_trainable` selects (e.g.
/// `insar_mm_models::encoder::is_trainable_name`), sorted by name, with their decay flag.
pub fn trainable_params(varmap: &VarMap, is_trainable: impl Fn(&str) -> bool) -> Vec<Param> {
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut params: Vec<Param> = data
        .iter()
        .filter(|(name, _)| is_trainable(name))
        .map(|(name, var)| Param {
            name: name.clone(),
            var: var.clone(),
            decay: !no_weight_decay(name, var.as_tensor().rank()),
        })
        .collect();
    params.sort_by(|a, b| a.name.cmp(&b.name));
    params
}

/// Gradients of a parameter list (`None` where a parameter got none).
#[derive(Debug, Clone)]
pub struct Grads(pub Vec<Option<Tensor>>);

impl Grads {
    /// Picks the gradient of every parameter out of a backward pass's `GradStore`.
    ///
    /// The gradients are detached: Candle's backward leaves the gradient of a *variable*
    /// attached to the forward graph (it only detaches inner nodes), so optimizer state built
    /// from it would chain every step's activations together and memory would grow without
    /// bound (several GB per minute of training).
    pub fn from_store(params: &[Param], store: &GradStore) -> Self {
        Grads(
            params
                .iter()
                .map(|p| store.get(p.var.as_tensor()).map(Tensor::detach))
                .collect(),
        )
    }

    /// Adds `other` (gradient accumulation over micro-batches).
    pub fn accumulate(&mut self, other: Grads) -> Result<()> {
        ensure!(
            self.0.len() == other.0.len(),
            "cannot accumulate gradients of {} and {} parameters",
            self.0.len(),
            other.0.len()
        );
        for (acc, g) in self.0.iter_mut().zip(other.0) {
            *acc = match (acc.take(), g) {
                (Some(a), Some(g)) => Some((a + g)?),
                (a, g) => a.or(g),
            };
        }
        Ok(())
    }

    /// Multiplies every gradient by `factor`.
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        for g in self.0.iter_mut().flatten() {
            *g = g.affine(factor, 0.0)?;
        }
        Ok(())
    }

    /// The global L2 norm over all gradients (NaN or ∞ when any entry is not finite).
    pub fn global_norm(&self) -> Result<f64> {
        let squares = self
            .0
            .iter()
            .flatten()
            .map(|g| g.to_dtype(DType::F32)?.sqr()?.sum_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        if squares.is_empty() {
            return Ok(0.0);
        }
        // One read back for all the tensors: on a GPU every read is a synchronisation.
        let squares = Tensor::stack(&squares, 0)?.to_vec1::<f32>()?;
        Ok(squares.iter().map(|&s| f64::from(s)).sum::<f64>().sqrt())
    }

    /// Scales the gradients so that their global norm is at most `max_norm` (PyTorch's
    /// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when that is below 1) and
    /// returns the norm before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> Result<f64> {
        ensure!(
            max_norm > 0.0 && max_norm.is_finite(),
            "clip_grad_norm must be a positive number, got {max_norm:?}"
        );
        let norm = self.global_norm()?;
        let factor = max_norm / (norm + 1e-6);
        if norm.is_finite() && factor < 1.0 {
            self.scale(factor)?;
        }
        Ok(norm)
    }
}

fn default_lr() -> f64 {
    1e-3
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_adamw_wd() -> f64 {
    0.01
}
fn default_momentum() -> f64 {
    0.9
}

/// Optimizer and its hyper-parameters (`[optim]` in a training config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", try_from = "OptimTable")]
pub enum OptimConfig {
    /// Adam with decoupled weight decay (Loshchilov & Hutter 2019), as `torch.optim.AdamW`.
    Adamw {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// SGD with (optionally Nesterov) momentum and L2 weight decay, as `torch.optim.SGD`.
    Sgd {
        lr: f64,
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    },
}

/// `[optim]` as written, every optimizer's keys side by side: read through this, a bad value
/// is reported at its own key (`optim.lr`), where serde's tagged enums stop at `optim`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptimTable {
    kind: OptimKind,
    lr: Option<f64>,
    beta1: Option<f64>,
    beta2: Option<f64>,
    eps: Option<f64>,
    weight_decay: Option<f64>,
    momentum: Option<f64>,
    nesterov: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum OptimKind {
    Adamw,
    Sgd,
}

impl TryFrom<OptimTable> for OptimConfig {
    type Error = String;

    fn try_from(t: OptimTable) -> Result<Self, String> {
        let (kind, own): (&str, &[&str]) = match t.kind {
            OptimKind::Adamw => ("adamw", &["lr", "beta1", "beta2", "eps", "weight_decay"]),
            OptimKind::Sgd => ("sgd", &["lr", "momentum", "nesterov", "weight_decay"]),
        };
        only_own_keys(
            kind,
            own,
            &[
                ("beta1", t.beta1.is_some()),
                ("beta2", t.beta2.is_some()),
                ("eps", t.eps.is_some()),
                ("momentum", t.momentum.is_some()),
                ("nesterov", t.nesterov.is_some()),
            ],
        )?;
        Ok(match t.kind {
            OptimKind::Adamw => OptimConfig::Adamw {
                lr: t.lr.unwrap_or_else(default_lr),
                beta1: t.beta1.unwrap_or_else(default_beta1),
                beta2: t.beta2.unwrap_or_else(default_beta2),
                eps: t.eps.unwrap_or_else(default_eps),
                weight_decay: t.weight_decay.unwrap_or_else(default_adamw_wd),
            },
            OptimKind::Sgd => OptimConfig::Sgd {
                lr: t.lr.unwrap_or_else(default_lr),
                momentum: t.momentum.unwrap_or_else(default_momentum),
                nesterov: t.nesterov.unwrap_or_default(),
                weight_decay: t.weight_decay.unwrap_or_default(),
            },
        })
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig::Adamw {
            lr: default_lr(),
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            weight_decay: default_adamw_wd(),
        }
    }
}

impl OptimConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            OptimConfig::Adamw { .. } => "adamw",
            OptimConfig::Sgd { .. } => "sgd",
        }
    }

    /// The base learning rate (before the schedule).
    pub fn lr(&self) -> f64 {
        match self {
            OptimConfig::Adamw { lr, .. } | OptimConfig::Sgd { lr, .. } => *lr,
        }
    }

    pub fn set_lr(&mut self, value: f64) {
        match self {
            OptimConfig::Adamw { lr, .. } | OptimConfig::Sgd { lr, .. } => *lr = value,
        }
    }

    /// Checks the ranges; errors name the field (`optim.beta2`, ...).
    pub fn validate(&self) -> Result<()> {
        let lr = self.lr();
        ensure!(
            lr.is_finite() && lr > 0.0,
            "optim.lr = {lr:?} must be positive"
        );
        match *self {
            OptimConfig::Adamw {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => {
                ensure!(
                    (0.0..1.0).contains(&beta1),
                    "optim.beta1 = {beta1:?} must be in [0, 1)"
                );
                ensure!(
                    (0.0..1.0).contains(&beta2),
                    "optim.beta2 = {beta2:?} must be in [0, 1)"
                );
                ensure!(eps > 0.0, "optim.eps = {eps:?} must be positive");
                ensure!(
                    weight_decay >= 0.0,
                    "optim.weight_decay = {weight_decay:?} must be ≥ 0"
                );
            }
            OptimConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
                ..
            } => {
                ensure!(
                    (0.0..1.0).contains(&momentum),
                    "optim.momentum = {momentum:?} must be in [0, 1)"
                );
                ensure!(
                    !nesterov || momentum > 0.0,
                    "optim.nesterov needs a positive momentum"
                );
                ensure!(
                    weight_decay >= 0.0,
                    "optim.weight_decay = {weight_decay:?} must be ≥ 0"
                );
            }
        }
        Ok(())
    }

    /// Names of the per-parameter state tensors, as suffixes of `<param>.`.
    fn state_names(&self) -> &'static [&'static str] {
        match self {
            OptimConfig::Adamw { .. } => &["exp_avg", "exp_avg_sq"],
            OptimConfig::Sgd { momentum, .. } if *momentum > 0.0 => &["momentum_buffer"],
            OptimConfig::Sgd { .. } => &[],
        }
    }
}

/// The optimizer state of one parameter, one entry per name of `OptimConfig::state_names`.
#[derive(Debug)]
enum State {
    /// Tensors, updated by tensor ops (a GPU, or a dtype other than `f32`).
    Tensors(Vec<Tensor>),
    /// Flat `f32` vectors of a CPU parameter, updated in place together with the parameter
    /// by one fused loop ([`FusedStep`]): the tensor ops make a dozen passes over memory
    /// with an allocation each (70 ms per AdamW step for ResNet-18's 11 M parameters).
    Host(Vec<Vec<f32>>),
}

/// An optimizer over a fixed, name-sorted parameter list.
#[derive(Debug)]
pub struct Optimizer {
    cfg: OptimConfig,
    params: Vec<Param>,
    /// Per parameter.
    state: Vec<State>,
    /// Number of updates done (Adam's bias-correction step count).
    steps: u64,
    lr: f64,
}

impl Optimizer {
    /// A fresh optimizer (zero moments) over `params`, at the config's base learning rate.
    pub fn new(cfg: OptimConfig, params: Vec<Param>) -> Result<Self> {
        Self::with_fusion(cfg, params, true)
    }

    /// [`Optimizer::new`]; `fused: false` keeps every state as tensors (the reference
    /// path the fused loop is tested against).
    fn with_fusion(cfg: OptimConfig, params: Vec<Param>, fused: bool) -> Result<Self> {
        cfg.validate()?;
        let mut names = std::collections::HashSet::new();
        for p in &params {
            ensure!(
                names.insert(p.name.as_str()),
                "parameter {} given twice",
                p.name
            );
        }
        let names = cfg.state_names();
        let state = params
            .iter()
            .map(|p| {
                let t = p.var.as_tensor();
                Ok(if fused && FusedStep::applies(t) {
                    State::Host(vec![vec![0f32; t.elem_count()]; names.len()])
                } else {
                    State::Tensors(
                        names
                            .iter()
                            .map(|_| t.zeros_like())
                            .collect::<candle_core::Result<_>>()?,
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lr = cfg.lr();
        Ok(Self {
            cfg,
            params,
            state,
            steps: 0,
            lr,
        })
    }

    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Updates done so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate of the next updates (what a schedule calls every step).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Picks this optimizer's gradients out of a `GradStore`.
    pub fn grads(&self, store: &GradStore) -> Grads {
        Grads::from_store(&self.params, store)
    }

    /// One update with `grads` (aligned with [`Optimizer::params`]). Parameters without a
    /// gradient keep their value and state (as in PyTorch).
    pub fn step(&mut self, grads: &Grads) -> Result<()> {
        ensure!(
            grads.0.len() == self.params.len(),
            "{} gradients for {} parameters",
            grads.0.len(),
            self.params.len()
        );
        self.steps += 1;
        let lr = self.lr;
        let t = self.steps as i32;
        for ((p, state), g) in self.params.iter().zip(&mut self.state).zip(&grads.0) {
            let Some(g) = g else { continue };
            let wd = match self.cfg {
                OptimConfig::Adamw { weight_decay, .. } | OptimConfig::Sgd { weight_decay, .. }
                    if p.decay =>
                {
                    weight_decay
                }
                _ => 0.0,
            };
            let rule = match self.cfg {
                OptimConfig::Adamw {
                    beta1, beta2, eps, ..
                } => Rule::Adamw {
                    beta1,
                    beta2,
                    eps,
                    lr,
                    wd,
                    bc1: 1.0 - beta1.powi(t),
                    bc2: 1.0 - beta2.powi(t),
                },
                OptimConfig::Sgd {
                    momentum, nesterov, ..
                } => Rule::Sgd {
                    momentum,
                    nesterov,
                    lr,
                    wd,
                },
            };
            match state {
                State::Host(buffers) => {
                    let g = g
                        .to_dtype(DType::F32)?
                        .to_device(&Device::Cpu)?
                        .contiguous()?;
                    p.var.as_tensor().inplace_op2(
                        &g,
                        &FusedStep {
                            rule,
                            state: std::cell::RefCell::new(buffers),
                        },
                    )?;
                }
                State::Tensors(state) => rule.apply_tensors(&p.var, g, state)?,
            }
        }
        Ok(())
    }

    /// The state tensors by name (`<param>.exp_avg`, `<param>.exp_avg_sq`,
    /// `<param>.momentum_buffer`).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let names = self.cfg.state_names();
        let mut out = Vec::new();
        for (p, state) in self.params.iter().zip(&self.state) {
            for (i, suffix) in names.iter().enumerate() {
                let t = match state {
                    State::Tensors(ts) => ts[i].clone(),
                    State::Host(bufs) => {
                        Tensor::from_slice(&bufs[i], p.var.as_tensor().shape(), &Device::Cpu)
                            .expect("a state buffer has its parameter's size")
                    }
                };
                out.push((format!("{}.{suffix}", p.name), t));
            }
        }
        out
    }

    /// Writes the state to `path` (safetensors, atomically). Metadata: `optimizer` (kind),
    /// `steps` (updates done), `lr` (current learning rate).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// The bytes [`Optimizer::save`] writes (safetensors with the metadata).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let metadata = HashMap::from([
            ("optimizer".to_string(), self.cfg.kind().to_string()),
            ("steps".to_string(), self.steps.to_string()),
            ("lr".to_string(), format!("{:e}", self.lr)),
        ]);
        serialize_tensors(self.state_tensors(), metadata)
    }

    /// Restores the state written by [`Optimizer::save`] for the same parameter list and
    /// optimizer kind; errors name the file and the missing or mismatched tensor.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let (tensors, metadata) = read_tensors(path, &self.device()?)?;
        let kind = metadata.get("optimizer").map(String::as_str);
        ensure!(
            kind == Some(self.cfg.kind()),
            "{}: optimizer state of kind {:?}, but the run uses {}",
            path.display(),
            kind.unwrap_or("?"),
            self.cfg.kind()
        );
        let steps: u64 = metadata
            .get("steps")
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{}: no `steps` in the metadata", path.display()))?;
        let lr: f64 = metadata
            .get("lr")
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{}: no `lr` in the metadata", path.display()))?;
        let names = self.cfg.state_names();
        let mut state = Vec::with_capacity(self.params.len());
        for (p, current) in self.params.iter().zip(&self.state) {
            let mut entry = Vec::new();
            for suffix in names {
                let key = format!("{}.{suffix}", p.name);
                let Some(t) = tensors.get(&key) else {
                    bail!("{}: no tensor {key}", path.display());
                };
                let want = p.var.as_tensor();
                ensure!(
                    t.dims() == want.dims(),
                    "{}: {key} has shape {:?}, the parameter has {:?}",
                    path.display(),
                    t.dims(),
                    want.dims()
                );
                entry.push(t.to_dtype(want.dtype())?);
            }
            state.push(match current {
                State::Host(_) => State::Host(
                    entry
                        .iter()
                        .map(|t| t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>())
                        .collect::<candle_core::Result<_>>()?,
                ),
                State::Tensors(_) => State::Tensors(entry),
            });
        }
        let expected = self.params.len() * names.len();
        ensure!(
            tensors.len() == expected,
            "{}: {} tensors, expected {expected} for this model ({} parameters)",
            path.display(),
            tensors.len(),
            self.params.len()
        );
        self.state = state;
        self.steps = steps;
        self.lr = lr;
        Ok(())
    }

    fn device(&self) -> Result<Device> {
        Ok(self
            .params
            .first()
            .map_or(Device::Cpu, |p| p.var.device().clone()))
    }
}

/// The update rule of one step for one parameter, with its coefficients.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// `bc1`, `bc2`: Adam's bias corrections at this step; `wd`: this parameter's decay.
    Adamw {
        beta1: f64,
        beta2: f64,
        eps: f64,
        lr: f64,
        wd: f64,
        bc1: f64,
        bc2: f64,
    },
    Sgd {
        momentum: f64,
        nesterov: bool,
        lr: f64,
        wd: f64,
    },
}

impl Rule {
    /// The update with tensor ops (any device and dtype).
    fn apply_tensors(self, var: &Var, g: &Tensor, state: &mut [Tensor]) -> Result<()> {
        // Detached: SGD weight decay (`g + θ·wd`) would otherwise put the variable into the
        // momentum buffer's graph and chain every step together.
        let theta = &var.as_detached_tensor();
        // Detached again for gradients built by hand: the state must never hold a graph.
        let g = g.to_dtype(theta.dtype())?.detach();
        match self {
            Rule::Adamw {
                beta1,
                beta2,
                eps,
                lr,
                wd,
                bc1,
                bc2,
            } => {
                let m = ((&state[0] * beta1)? + (&g * (1.0 - beta1))?)?;
                let v = ((&state[1] * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
                let denom = ((&v * (1.0 / bc2))?.sqrt()? + eps)?;
                let update = ((&m * (lr / bc1))? / denom)?;
                let decayed = if wd > 0.0 {
                    (theta * (1.0 - lr * wd))?
                } else {
                    theta.clone()
                };
                var.set(&(decayed - update)?)?;
                state[0] = m;
                state[1] = v;
            }
            Rule::Sgd {
                momentum,
                nesterov,
                lr,
                wd,
            } => {
                let d = if wd > 0.0 { (&g + (theta * wd)?)? } else { g };
                let d = if momentum > 0.0 {
                    let buf = ((&state[0] * momentum)? + &d)?;
                    let d = if nesterov {
                        (&d + (&buf * momentum)?)?
                    } else {
                        buf.clone()
                    };
                    state[0] = buf;
                    d
                } else {
                    d
                };
                var.set(&(theta - (d * lr)?)?)?;
            }
        }
        Ok(())
    }
}

/// One optimizer step of a CPU `f32` parameter in place: a single pass over the parameter,
/// its gradient (the op's source) and its state buffers, in parallel chunks.
///
/// Each element follows the tensor path's operations in the same order and precision
/// (`x·c + 0` for a scalar product, as Candle's `affine`), so both paths give identical
/// bits.
struct FusedStep<'a> {
    rule: Rule,
    state: std::cell::RefCell<&'a mut Vec<Vec<f32>>>,
}

impl FusedStep<'_> {
    /// Elements per parallel chunk (256 KiB of `f32`).
    const CHUNK: usize = 1 << 16;

    /// Whether a parameter's step can be fused: a CPU `f32` tensor.
    fn applies(t: &Tensor) -> bool {
        t.device().is_cpu() && t.dtype() == DType::F32
    }

    fn update(rule: Rule, theta: &mut [f32], g: &[f32], state: &mut [&mut [f32]]) {
        let c = |x: f64| x as f32;
        match rule {
            Rule::Adamw {
                beta1,
                beta2,
                eps,
                lr,
                wd,
                bc1,
                bc2,
            } => {
                let (b1, c1, b2, c2) = (c(beta1), c(1.0 - beta1), c(beta2), c(1.0 - beta2));
                let (inv_bc2, step, eps, keep) =
                    (c(1.0 / bc2), c(lr / bc1), c(eps), c(1.0 - lr * wd));
                let [m, v] = state else {
                    unreachable!("AdamW keeps two buffers")
                };
                for (((t, &g), m), v) in theta.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut())
                {
                    *m = (*m * b1 + 0.0) + (g * c1 + 0.0);
                    *v = (*v * b2 + 0.0) + (g * g * c2 + 0.0);
                    let denom = (*v * inv_bc2 + 0.0).sqrt() * 1.0 + eps;
                    let update = (*m * step + 0.0) / denom;
                    let decayed = if wd > 0.0 { *t * keep + 0.0 } else { *t };
                    *t = decayed - update;
                }
            }
            Rule::Sgd {
                momentum,
                nesterov,
                lr,
                wd,
            } => {
                let (mom, lr, wdc) = (c(momentum), c(lr), c(wd));
                for (i, (t, &g)) in theta.iter_mut().zip(g).enumerate() {
                    let d = if wd > 0.0 { g + (*t * wdc + 0.0) } else { g };
                    let d = if momentum > 0.0 {
                        let buf = &mut state[0][i];
                        *buf = (*buf * mom + 0.0) + d;
                        if nesterov {
                            d + (*buf * mom + 0.0)
                        } else {
                            *buf
                        }
                    } else {
                        d
                    };
                    *t -= d * lr + 0.0;
                }
            }
        }
    }
}

/// Chunk `i` of a parameter, of its gradient and of each of its state buffers.
type ChunkOfStep<'a> = (&'a mut [f32], &'a [f32], Vec<&'a mut [f32]>);

impl candle_core::InplaceOp2 for FusedStep<'_> {
    fn name(&self) -> &'static str {
        "fused-optimizer-step"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(theta), CpuStorage::F32(g)) = (dst, g) else {
            candle_core::bail!("fused optimizer step: f32 parameter and gradient expected")
        };
        let (Some((t0, t1)), Some((g0, g1))) =
            (dst_l.contiguous_offsets(), gl.contiguous_offsets())
        else {
            candle_core::bail!("fused optimizer step: contiguous parameter and gradient expected")
        };
        let (theta, g) = (&mut theta[t0..t1], &g[g0..g1]);
        let mut state = self.state.borrow_mut();
        if g.len() != theta.len() || state.iter().any(|b| b.len() != theta.len()) {
            candle_core::bail!("fused optimizer step: parameter, gradient and state sizes differ");
        }
        // Chunk i of the parameter with chunk i of its gradient and of each buffer.
        let mut buffers: Vec<_> = state
            .iter_mut()
            .map(|b| b.chunks_mut(Self::CHUNK))
            .collect();
        let mut chunks: Vec<ChunkOfStep> = theta
            .chunks_mut(Self::CHUNK)
            .zip(g.chunks(Self::CHUNK))
            .map(|(t, g)| {
                let bufs = buffers
                    .iter_mut()
                    .map(|b| b.next().expect("same length"))
                    .collect();
                (t, g, bufs)
            })
            .collect();
        let rule = self.rule;
        for_each_chunk_mut(&mut chunks, 1, |_, chunk| {
            let (t, g, bufs) = &mut chunk[0];
            Self::update(rule, t, g, bufs);
        });
        Ok(())
    }
}

/// Safetensors bytes of `tensors` (name-sorted) with `metadata`.
pub fn serialize_tensors(
    mut tensors: Vec<(String, Tensor)>,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    // Tensors must be contiguous and on the CPU to be viewed as bytes.
    let tensors = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(tensors, Some(metadata)).context("serialising tensors")
}

/// The tensors (on `device`) and metadata of a safetensors file.
pub fn read_tensors(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    tensors_from_bytes(&bytes, &path.display().to_string(), device)
}

/// [`read_tensors`] of bytes already in memory; errors start with `origin`.
pub fn tensors_from_bytes(
    bytes: &[u8],
    origin: &str,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    // The safetensors error's message already holds its source's: format it alone, or an
    // error chain would print the JSON error twice.
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("{origin}: not a safetensors file: {e}"))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(bytes, device)
        .with_context(|| format!("{origin}: cannot decode tensors"))?;
    Ok((tensors, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Out-of-range values are echoed compactly (`-1e308`, not 309 digits).
    #[test]
    fn validation_errors_echo_extreme_values_compactly() {
        let mut cfg = OptimConfig::default();
        cfg.set_lr(-1e308);
        let err = format!("{:#}", cfg.validate().unwrap_err());
        assert_eq!(err, "optim.lr = -1e308 must be positive");
        cfg.set_lr(1e-3);
        cfg.validate().unwrap();
    }
    use candle_core::Device;

    fn var(values: &[f32], shape: &[usize]) -> Var {
        Var::from_tensor(&Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn values(v: &Var) -> Vec<f32> {
        v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn grads(gs: &[&[f32]], params: &[Param]) -> Grads {
        Grads(
            gs.iter()
                .zip(params)
                .map(|(g, p)| {
                    Some(
                        Tensor::from_vec(g.to_vec(), p.var.as_tensor().dims(), &Device::Cpu)
                            .unwrap(),
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn decay_rule_exempts_norms_and_biases() {
        let varmap = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        vb.get((4, 3, 3, 3), "encoder.conv1.weight").unwrap();
        vb.get(4, "encoder.bn1.weight").unwrap();
        vb.get(4, "encoder.bn1.running_mean").unwrap();
        vb.get((2, 4), "projector.layers.0.weight").unwrap();
        vb.get(2, "projector.layers.0.bias").unwrap();
        let params = trainable_params(&varmap, insar_mm_models::encoder::is_trainable_name);
        let got: Vec<(&str, bool)> = params.iter().map(|p| (p.name.as_str(), p.decay)).collect();
        assert_eq!(
            got,
            vec![
                ("encoder.bn1.weight", false),
                ("encoder.conv1.weight", true),
                ("projector.layers.0.bias", false),
                ("projector.layers.0.weight", true),
            ]
        );
    }

    /// Reference values from `torch.optim.AdamW(lr=0.1, betas=(0.9, 0.999), eps=1e-8,
    /// weight_decay=0.5)`, recomputed by hand below for three steps of constant gradients.
    #[test]
    fn adamw_matches_the_pytorch_update_rule() {
        let w = var(&[1.0, -2.0], &[2, 1]);
        let b = var(&[0.5], &[1]);
        let params = vec![
            Param {
                name: "w".into(),
                var: w.clone(),
                decay: true,
            },
            Param {
                name: "b".into(),
                var: b.clone(),
                decay: false,
            },
        ];
        let cfg = OptimConfig::Adamw {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.5,
        };
        let mut opt = Optimizer::new(cfg, params.clone()).unwrap();
        let g = [[0.3f64, -0.2], [0.1, 0.0]];
        // Scalar reference implementation (f64).
        let mut theta = [1.0f64, -2.0, 0.5];
        let gs = [g[0][0], g[0][1], g[1][0]];
        let (mut m, mut v) = ([0f64; 3], [0f64; 3]);
        for t in 1..=3 {
            opt.step(&grads(
                &[&[g[0][0] as f32, g[0][1] as f32], &[g[1][0] as f32]],
                &params,
            ))
            .unwrap();
            for i in 0..3 {
                let wd = if i < 2 { 0.5 } else { 0.0 };
                theta[i] *= 1.0 - 0.1 * wd;
                m[i] = 0.9 * m[i] + 0.1 * gs[i];
                v[i] = 0.999 * v[i] + 0.001 * gs[i] * gs[i];
                let mh = m[i] / (1.0 - 0.9f64.powi(t));
                let vh = v[i] / (1.0 - 0.999f64.powi(t));
                theta[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got = [values(&w), values(&b)].concat();
        for (a, e) in got.iter().zip(theta) {
            assert!((*a as f64 - e).abs() < 1e-6, "{got:?} vs {theta:?}");
        }
        assert_eq!(opt.steps(), 3);
    }

    /// The fused CPU step gives the tensor path's bits, for every rule, over several steps,
    /// with a parameter larger than one parallel chunk and a strided gradient.
    #[test]
    fn fused_step_matches_the_tensor_path_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = FusedStep::CHUNK * 2 + 17;
        let mut random = |len: usize| -> Vec<f32> {
            (0..len).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect()
        };
        let (w0, b0) = (random(n), random(5));
        let grads_per_step: Vec<(Vec<f32>, Vec<f32>)> =
            (0..4).map(|_| (random(n), random(5))).collect();
        let sgd = |momentum: f64, nesterov: bool| OptimConfig::Sgd {
            lr: 0.05,
            momentum,
            nesterov,
            weight_decay: 0.01,
        };
        let configs = [
            OptimConfig::default(),
            OptimConfig::Adamw {
                lr: 0.1,
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                weight_decay: 0.0,
            },
            sgd(0.9, false),
            sgd(0.9, true),
            sgd(0.0, false),
        ];
        for cfg in configs {
            let run = |fused: bool| -> Vec<Vec<f32>> {
                let params = vec![
                    Param {
                        name: "w".into(),
                        var: var(&w0, &[n]),
                        decay: true,
                    },
                    Param {
                        name: "b".into(),
                        var: var(&b0, &[5]),
                        decay: false,
                    },
                ];
                let mut opt = Optimizer::with_fusion(cfg.clone(), params.clone(), fused).unwrap();
                assert_eq!(
                    matches!(opt.state[0], State::Host(_)),
                    fused,
                    "fused path chosen"
                );
                for (gw, gb) in &grads_per_step {
                    let mut g = grads(&[gw, gb], &params);
                    // A strided gradient (a transposed view) for the bias.
                    let gb = Tensor::from_vec(gb.clone(), (5, 1), &Device::Cpu).unwrap();
                    g.0[1] = Some(gb.t().unwrap().squeeze(0).unwrap());
                    opt.step(&g).unwrap();
                }
                let mut out: Vec<Vec<f32>> = params.iter().map(|p| values(&p.var)).collect();
                for (_, t) in opt.state_tensors() {
                    out.push(t.flatten_all().unwrap().to_vec1().unwrap());
                }
                out
            };
            let (fused, tensors) = (run(true), run(false));
            for (a, b) in fused.iter().zip(&tensors) {
                let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{cfg:?}: fused and tensor paths differ");
            }
        }
    }

    #[test]
    fn sgd_momentum_and_nesterov_match_pytorch() {
        for nesterov in [false, true] {
            let w = var(&[1.0, 2.0], &[2]);
            let params = vec![Param {
                name: "w".into(),
                var: w.clone(),
                decay: true,
            }];
            let cfg = OptimConfig::Sgd {
                lr: 0.1,
                momentum: 0.9,
                nesterov,
                weight_decay: 0.01,
            };
            let mut opt = Optimizer::new(cfg, params.clone()).unwrap();
            let mut theta = [1.0f64, 2.0];
            let mut buf = [0f64; 2];
            for step in 0..4 {
                let g = [0.5 - step as f64 * 0.1, -0.25];
                opt.step(&grads(&[&[g[0] as f32, g[1] as f32]], &params))
                    .unwrap();
                for i in 0..2 {
                    let d = g[i] + 0.01 * theta[i];
                    buf[i] = if step == 0 { d } else { 0.9 * buf[i] + d };
                    let d = if nesterov { d + 0.9 * buf[i] } else { buf[i] };
                    theta[i] -= 0.1 * d;
                }
            }
            let got = values(&w);
            for (a, e) in got.iter().zip(theta) {
                assert!(
                    (*a as f64 - e).abs() < 1e-6,
                    "{nesterov}: {got:?} vs {theta:?}"
                );
            }
        }
    }

    /// Regression: variable gradients from Candle's backward carry the forward graph; the
    /// optimizer state must not, or every step's activations stay alive (memory leak).
    #[test]
    fn optimizer_state_holds_no_graph() {
        for cfg in [
            OptimConfig::default(),
            OptimConfig::Sgd {
                lr: 0.05,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 0.01,
            },
        ] {
            let w = var(&[1.0, -2.0, 0.5], &[3]);
            let params = vec![Param {
                name: "w".into(),
                var: w.clone(),
                decay: true,
            }];
            let mut opt = Optimizer::new(cfg, params).unwrap();
            // An activation that depends on another variable, as in any deep network.
            let upstream = var(&[0.3, 0.7, -1.1], &[3]);
            for _ in 0..3 {
                let x = upstream.as_tensor().exp().unwrap();
                let y = (w.as_tensor() * &x)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap();
                let store = y.backward().unwrap();
                let raw = store.get(w.as_tensor()).unwrap();
                assert!(raw.track_op(), "Candle now detaches variable gradients");
                let grads = opt.grads(&store);
                assert!(grads.0.iter().flatten().all(|g| !g.track_op()));
                opt.step(&grads).unwrap();
                for (name, t) in opt.state_tensors() {
                    assert!(!t.track_op(), "{name} holds a graph");
                }
            }
        }
    }

    #[test]
    fn parameters_without_gradient_are_left_alone() {
        let w = var(&[1.0], &[1]);
        let params = vec![Param {
            name: "w".into(),
            var: w.clone(),
            decay: true,
        }];
        let mut opt = Optimizer::new(OptimConfig::default(), params).unwrap();
        opt.step(&Grads(vec![None])).unwrap();
        assert_eq!(values(&w), vec![1.0]);
        assert!(opt.step(&Grads(vec![])).is_err());
    }

    #[test]
    fn state_round_trips_through_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        for cfg in [
            OptimConfig::default(),
            OptimConfig::Sgd {
                lr: 0.05,
                momentum: 0.9,
                nesterov: false,
                weight_decay: 0.0,
            },
        ] {
            let make = || {
                let w = var(&[1.0, 2.0, 3.0], &[3]);
                let m = var(&[0.5, -0.5, 0.25, 1.0], &[2, 2]);
                let params = vec![
                    Param {
                        name: "a.m".into(),
                        var: m,
                        decay: true,
                    },
                    Param {
                        name: "a.w".into(),
                        var: w,
                        decay: false,
                    },
                ];
                (Optimizer::new(cfg.clone(), params.clone()).unwrap(), params)
            };
            let (mut a, pa) = make();
            let g1: &[&[f32]] = &[&[0.1, 0.2, -0.3, 0.4], &[1.0, -1.0, 0.5]];
            let g2: &[&[f32]] = &[&[-0.2, 0.1, 0.3, 0.0], &[0.5, 0.5, -0.5]];
            a.set_learning_rate(0.01);
            a.step(&grads(g1, &pa)).unwrap();
            let path = dir.path().join(format!("{}.safetensors", cfg.kind()));
            a.save(&path).unwrap();
            // A fresh optimizer on parameters with the same values, loaded from disk, must
            // make the same next update.
            let (mut b, pb) = make();
            for (p, q) in pa.iter().zip(&pb) {
                q.var.set(p.var.as_tensor()).unwrap();
            }
            b.load(&path).unwrap();
            assert_eq!((b.steps(), b.learning_rate()), (1, 0.01));
            a.step(&grads(g2, &pa)).unwrap();
            b.step(&grads(g2, &pb)).unwrap();
            for (p, q) in pa.iter().zip(&pb) {
                assert_eq!(values(&p.var), values(&q.var), "{}", p.name);
            }
            // Mismatches are reported with the file name.
            let other = if cfg.kind() == "adamw" {
                OptimConfig::Sgd {
                    lr: 0.1,
                    momentum: 0.9,
                    nesterov: false,
                    weight_decay: 0.0,
                }
            } else {
                OptimConfig::default()
            };
            let (_, pc) = make();
            let mut c = Optimizer::new(other, pc).unwrap();
            let err = format!("{:#}", c.load(&path).unwrap_err());
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
        let mut lone = Optimizer::new(
            OptimConfig::default(),
            vec![Param {
                name: "z".into(),
                var: var(&[0.0], &[1]),
                decay: true,
            }],
        )
        .unwrap();
        let err = format!(
            "{:#}",
            lone.load(&dir.path().join("adamw.safetensors"))
                .unwrap_err()
        );
        assert!(err.contains("no tensor z.exp_avg"), "{err}");
    }

    #[test]
    fn accumulation_and_global_norm_clipping() {
        let t = |v: &[f32]| Some(Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu).unwrap());
        let mut g = Grads(vec![t(&[1.0, 2.0]), None, t(&[2.0])]);
        g.accumulate(Grads(vec![t(&[2.0, 2.0]), t(&[0.0]), None]))
            .unwrap();
        // [3, 4], [0], [2] → norm √29.
        let norm = g.global_norm().unwrap();
        assert!((norm - 29f64.sqrt()).abs() < 1e-6);
        let before = g.clip_global_norm(1.0).unwrap();
        assert!((before - 29f64.sqrt()).abs() < 1e-6);
        let after = g.global_norm().unwrap();
        assert!((after - 1.0).abs() < 1e-5, "{after}");
        let first: Vec<f32> = g.0[0].as_ref().unwrap().to_vec1().unwrap();
        assert!((first[0] / first[1] - 0.75).abs() < 1e-6, "direction kept");
        // Below the threshold nothing changes.
        let mut h = Grads(vec![t(&[0.3, 0.4])]);
        assert!((h.clip_global_norm(1.0).unwrap() - 0.5).abs() < 1e-6);
        assert_eq!(
            h.0[0].as_ref().unwrap().to_vec1::<f32>().unwrap(),
            [0.3, 0.4]
        );
        assert_eq!(Grads(vec![None, None]).global_norm().unwrap(), 0.0);
        // A NaN gradient gives a NaN norm (the loop stops on it) and is not "clipped".
        let mut n = Grads(vec![t(&[f32::NAN, 1.0])]);
        assert!(n.clip_global_norm(1.0).unwrap().is_nan());
        assert!(h.clip_global_norm(0.0).is_err());
        assert!(g.accumulate(Grads(vec![])).is_err());
    }

    #[test]
    fn config_validation_names_the_field() {
        let bad = OptimConfig::Adamw {
            lr: 0.1,
            beta1: 1.0,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("optim.beta1"));
        let cfg: OptimConfig = toml::from_str("kind = \"sgd\"\nlr = 0.3").unwrap();
        assert_eq!(cfg.lr(), 0.3);
        assert!(toml::from_str::<OptimConfig>("kind = \"sgd\"\nbeta1 = 0.3").is_err());
    }
}
