//! Multi-layer perceptron: `Linear → [BatchNorm] → activation → … → Linear`.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::layers::linear;
use super::norm::{batch_norm, BatchNorm, BatchNormOptions};

/// Point-wise non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Relu,
    /// Exact (erf) GELU, as PyTorch's default `nn.GELU()`.
    Gelu,
    Silu,
    Tanh,
    Identity,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu_erf(),
            Activation::Silu => x.silu(),
            Activation::Tanh => x.tanh(),
            Activation::Identity => Ok(x.clone()),
        }
    }
}

/// Shape of an [`Mlp`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Layer widths: input, hidden..., output (at least two entries).
    pub dims: Vec<usize>,
    #[serde(default)]
    pub activation: Activation,
    /// BatchNorm after every hidden linear layer (SimCLR v2 / MoCo v3 heads). Needs `(B, D)`
    /// inputs.
    #[serde(default)]
    pub batch_norm: bool,
}

/// Variables: `layers.{i}.weight|bias` for the linear layers and, with `batch_norm`,
/// `norms.{i}.*` after hidden layer `i`.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
    norms: Vec<BatchNorm>,
    activation: Activation,
}

pub fn mlp(cfg: &MlpConfig, vb: VarBuilder) -> Result<Mlp> {
    if cfg.dims.len() < 2 || cfg.dims.contains(&0) {
        candle_core::bail!("MLP needs at least two positive widths, got {:?}", cfg.dims)
    }
    let mut layers = Vec::new();
    let mut norms = Vec::new();
    let n = cfg.dims.len() - 1;
    for i in 0..n {
        layers.push(linear(
            cfg.dims[i],
            cfg.dims[i + 1],
            vb.pp(format!("layers.{i}")),
        )?);
        if cfg.batch_norm && i + 1 < n {
            norms.push(batch_norm(
                cfg.dims[i + 1],
                BatchNormOptions::default(),
                vb.pp(format!("norms.{i}")),
            )?);
        }
    }
    Ok(Mlp {
        layers,
        norms,
        activation: cfg.activation,
    })
}

impl ModuleT for Mlp {
    /// `x`: `(..., D_in)` (any leading dims without BatchNorm, `(B, D_in)` with it).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !self.norms.is_empty() && x.rank() != 2 {
            candle_core::bail!(
                "MLP with BatchNorm expects (B, D) inputs, got {:?}",
                x.shape()
            )
        }
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i < last {
                if let Some(norm) = self.norms.get(i) {
                    h = norm.forward_t(&h, train)?;
                }
                h = self.activation.apply(&h)?;
            }
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::check::{finite_difference_check, random_projection, seeded_randn};
    use crate::nn::seeded_var_builder;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    #[test]
    fn gradients_match_finite_differences_for_every_activation() -> Result<()> {
        for act in [
            Activation::Relu,
            Activation::Gelu,
            Activation::Silu,
            Activation::Tanh,
        ] {
            let varmap = VarMap::new();
            let cfg = MlpConfig {
                dims: vec![3, 5, 2],
                activation: act,
                batch_norm: act == Activation::Relu,
            };
            let m = mlp(
                &cfg,
                seeded_var_builder(&varmap, 1, DType::F64, &Device::Cpu),
            )?;
            let x = Var::from_tensor(&seeded_randn((4, 3), 2, &Device::Cpu)?)?;
            let mut vars: Vec<Var> = {
                let d = varmap.data().lock().unwrap();
                let mut names: Vec<_> = d
                    .keys()
                    .filter(|n| !crate::nn::check::is_running_statistic(n))
                    .cloned()
                    .collect();
                names.sort();
                names.iter().map(|n| d[n].clone()).collect()
            };
            vars.push(x.clone());
            let refs: Vec<&Var> = vars.iter().collect();
            // Eval mode keeps the BatchNorm running stats fixed while differencing.
            let loss = || random_projection(&m.forward_t(x.as_tensor(), false)?, 3);
            let check = finite_difference_check(&refs, loss, 1e-6)?;
            assert!(check.relative_error() < 1e-7, "{act:?} {check:?}");
            assert_eq!(m.forward_t(x.as_tensor(), true)?.dims(), &[4, 2]);
        }
        Ok(())
    }

    #[test]
    fn config_round_trip_and_errors() -> Result<()> {
        let cfg: MlpConfig =
            serde_json::from_str(r#"{"dims":[4,8,2],"activation":"gelu"}"#).unwrap();
        assert_eq!(cfg.activation, Activation::Gelu);
        assert!(!cfg.batch_norm);
        assert!(serde_json::from_str::<MlpConfig>(r#"{"dims":[4],"bogus":1}"#).is_err());
        let vb = seeded_var_builder(&VarMap::new(), 0, DType::F32, &Device::Cpu);
        assert!(mlp(
            &MlpConfig {
                dims: vec![4],
                activation: Activation::Relu,
                batch_norm: false
            },
            vb
        )
        .is_err());
        Ok(())
    }
}
