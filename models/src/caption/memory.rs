//! The visual memory the decoder attends to: chosen encoder feature maps (default C4 and
//! C5), each projected to `d_model` by a 1×1 projection, flattened to `h·w` tokens, plus a
//! fixed 2-D sine/cosine position (half the channels encode the row, half the column, so
//! captions can name locations such as "bottom-right") and a learned level embedding,
//! concatenated and layer-normalised.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::nn::{layer_norm, linear, sinusoidal_position_embedding, LayerNorm};

/// Which encoder levels form the memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Indices into `[C2, C3, C4, C5]` (0..=3), distinct; default `[2, 3]` (C4, C5).
    pub levels: Vec<usize>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self { levels: vec![2, 3] }
    }
}

impl MemoryConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut seen = [false; 4];
        if self.levels.is_empty() {
            return Err("memory needs at least one encoder level".into());
        }
        for &l in &self.levels {
            if l > 3 || seen[l] {
                return Err(format!(
                    "memory levels must be distinct indices 0..=3 (C2..C5), got {:?}",
                    self.levels
                ));
            }
            seen[l] = true;
        }
        Ok(())
    }
}

/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct VisualMemory {
    levels: Vec<usize>,
    proj: Vec<Linear>,
    level_embed: Option<Tensor>,
    norm: LayerNorm,
    d_model: usize,
}

/// `(h·w, d)` table: row position in the first `d/2` channels, column in the last `d/2`.
pub fn position_2d(
    h: usize,
    w: usize,
    d: usize,
    dtype: candle_core::DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let half = d / 2;
    let rows = sinusoidal_position_embedding(h, half, dtype, device)?; // (h, half)
    let cols = sinusoidal_position_embedding(w, half, dtype, device)?; // (w, half)
    let rows = rows.unsqueeze(1)?.broadcast_as((h, w, half))?;
    let cols = cols.unsqueeze(0)?.broadcast_as((h, w, half))?;
    Tensor::cat(&[rows.contiguous()?, cols.contiguous()?], D::Minus1)?.reshape((h * w, d))
}

impl VisualMemory {
    /// `channels`: the encoder's C2..C5 channel counts.
    pub fn new(
        cfg: &MemoryConfig,
        channels: &[usize; 4],
        d_model: usize,
        eps: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let proj = cfg
            .levels
            .iter()
            .enumerate()
            .map(|(i, &l)| linear(channels[l], d_model, vb.pp("proj").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let level_embed = if cfg.levels.len() > 1 {
            Some(vb.get_with_hints(
                (cfg.levels.len(), d_model),
                "level_embed",
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?)
        } else {
            None
        };
        Ok(Self {
            levels: cfg.levels.clone(),
            proj,
            level_embed,
            norm: layer_norm(d_model, eps, vb.pp("norm"))?,
            d_model,
        })
    }

    /// Visual tokens `(B, Σ h·w [+ k], d_model)` of the encoder's `[C2, C3, C4, C5]`, with
    /// `extra` tokens `(B, k, d_model)` (e.g. the label token) appended before the norm.
    pub fn forward(&self, features: &[Tensor; 4], extra: Option<&Tensor>) -> Result<Tensor> {
        let mut tokens = Vec::with_capacity(self.levels.len());
        for (i, (&l, proj)) in self.levels.iter().zip(&self.proj).enumerate() {
            let (b, c, h, w) = features[l].dims4()?;
            let flat = features[l].reshape((b, c, h * w))?.transpose(1, 2)?; // (B, hw, C)
            let mut t = proj.forward(&flat.contiguous()?)?;
            let pos = position_2d(h, w, self.d_model, t.dtype(), t.device())?;
            t = t.broadcast_add(&pos.unsqueeze(0)?)?;
            if let Some(e) = &self.level_embed {
                t = t.broadcast_add(&e.narrow(0, i, 1)?.unsqueeze(0)?)?;
            }
            tokens.push(t);
        }
        if let Some(e) = extra {
            tokens.push(e.clone());
        }
        let tokens = Tensor::cat(&tokens, 1)?;
        self.norm.forward(&tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn position_2d_encodes_row_then_column() -> Result<()> {
        let (h, w, d) = (2, 3, 8);
        let pe = position_2d(h, w, d, DType::F64, &Device::Cpu)?.to_vec2::<f64>()?;
        let rows =
            sinusoidal_position_embedding(h, d / 2, DType::F64, &Device::Cpu)?.to_vec2::<f64>()?;
        let cols =
            sinusoidal_position_embedding(w, d / 2, DType::F64, &Device::Cpu)?.to_vec2::<f64>()?;
        for y in 0..h {
            for x in 0..w {
                let want: Vec<f64> = rows[y].iter().chain(&cols[x]).copied().collect();
                assert_eq!(pe[y * w + x], want, "({y}, {x})");
            }
        }
        Ok(())
    }

    #[test]
    fn config_errors() {
        for levels in [vec![], vec![4], vec![2, 2]] {
            assert!(MemoryConfig { levels }.validate().is_err());
        }
        MemoryConfig { levels: vec![0, 3] }.validate().unwrap();
    }
}
