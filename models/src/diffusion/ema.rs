//! Exponential moving average of model weights, kept in the same `VarMap` under the prefix
//! [`EMA_PREFIX`] so that checkpoints save it and a resumed run continues it exactly.

use candle_core::{Result, Var};
use candle_nn::VarMap;

/// Prefix of the EMA copies of the weights.
pub const EMA_PREFIX: &str = "ema.";

/// Whether `name` is an EMA copy (not trained by the optimizer).
pub fn is_ema(name: &str) -> bool {
    name.starts_with(EMA_PREFIX)
}

fn model_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
    let mut v: Vec<(String, Var)> = data
        .iter()
        .filter(|(k, _)| !is_ema(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Adds an `ema.<name>` copy of every model variable that has none yet (a copy of its
/// current value). Returns how many were added.
pub fn init_ema(varmap: &VarMap) -> Result<usize> {
    let vars = model_vars(varmap)?;
    let mut data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
    let mut added = 0;
    for (name, var) in vars {
        if let std::collections::hash_map::Entry::Vacant(e) =
            data.entry(format!("{EMA_PREFIX}{name}"))
        {
            e.insert(Var::from_tensor(&var.as_tensor().detach().copy()?)?);
            added += 1;
        }
    }
    Ok(added)
}

/// `ema ← decay·ema + (1 − decay)·w` for every model variable.
pub fn update_ema(varmap: &VarMap, decay: f64) -> Result<()> {
    let vars = model_vars(varmap)?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
    for (name, var) in vars {
        let Some(ema) = data.get(&format!("{EMA_PREFIX}{name}")) else {
            candle_core::bail!("EMA: no copy of {name} (call init_ema first)")
        };
        let w = var.as_tensor().detach();
        let next = ((ema.as_tensor().detach() * decay)? + (w * (1.0 - decay))?)?;
        ema.set(&next)?;
    }
    Ok(())
}

/// Sets every model variable to its EMA copy (for sampling with the EMA weights).
pub fn swap_in_ema(varmap: &VarMap) -> Result<usize> {
    let vars = model_vars(varmap)?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
    let mut n = 0;
    for (name, var) in vars {
        if let Some(ema) = data.get(&format!("{EMA_PREFIX}{name}")) {
            var.set(&ema.as_tensor().detach())?;
            n += 1;
        }
    }
    Ok(n)
}
