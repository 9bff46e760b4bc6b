//! Run directories and checkpoints (DESIGN §5).
//!
//! ```text
//! RUN/config.json            the resolved training config (what `--resume` and `embed` rebuild from)
//! RUN/model.safetensors      every variable of the model's VarMap, BatchNorm statistics included
//! RUN/optimizer.safetensors  optimizer state (`<param>.exp_avg`, ...; metadata: kind, steps, lr)
//! RUN/state.json             step, epoch, micro-batches, RNG state, best validation value
//! RUN/metrics.jsonl          one JSON object per logged step / validation
//! RUN/loss.png               loss curve, written at the end
//! RUN/best.safetensors       model at the best validation value (when a best metric is set)
//! ```
//!
//! Every file is written atomically (temporary file + rename). A checkpoint writes the
//! model, then the optimizer, then `state.json`; both safetensors files carry the step in
//! their metadata, and [`Checkpoint::load`] refuses a set whose steps disagree (a crash
//! between the renames), so a resumed run never mixes two checkpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::optim::{read_tensors, serialize_tensors, Optimizer};
use crate::data::atomic::write_atomic;

pub const CONFIG_FILE: &str = "config.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LOSS_PLOT_FILE: &str = "loss.png";
pub const BEST_MODEL_FILE: &str = "best.safetensors";

/// The exact state of a `ChaCha8Rng` (seed, stream, position), as JSON-friendly strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte key, hex.
    pub seed: String,
    pub stream: u64,
    /// Position in the stream, in 32-bit words (decimal string: it is a u128).
    pub word_pos: String,
}

impl RngState {
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        Self {
            seed: rng.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    pub fn restore(&self) -> Result<ChaCha8Rng> {
        ensure!(
            self.seed.len() == 64 && self.seed.is_ascii(),
            "rng.seed must be 64 hex digits"
        );
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&self.seed[2 * i..2 * i + 2], 16)
                .context("rng.seed must be 64 hex digits")?;
        }
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(
            self.word_pos
                .parse()
                .context("rng.word_pos must be a decimal integer")?,
        );
        Ok(rng)
    }
}

/// Best value of the validation metric seen so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestValue {
    pub metric: String,
    pub value: f64,
    pub step: u64,
}

/// `state.json`: where a run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// Epoch of the next micro-batch (0-based).
    pub epoch: u64,
    /// Micro-batches consumed (steps × accumulation).
    pub micro_batches: u64,
    /// Training samples consumed.
    pub samples: u64,
    /// Planned optimizer steps of the run.
    pub total_steps: u64,
    /// The run's seed (data order is a function of it and the epoch).
    pub seed: u64,
    /// The loop's RNG after `step` steps (augmentation and other per-step draws).
    pub rng: RngState,
    #[serde(default)]
    pub best: Option<BestValue>,
    /// Whether the run reached `total_steps`.
    pub finished: bool,
}

impl TrainState {
    pub fn new(seed: u64, total_steps: u64, rng: &ChaCha8Rng) -> Self {
        Self {
            step: 0,
            epoch: 0,
            micro_batches: 0,
            samples: 0,
            total_steps,
            seed,
            rng: RngState::capture(rng),
            best: None,
            finished: false,
        }
    }
}

/// A run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    /// Whether the run has a checkpoint to resume from.
    pub fn has_checkpoint(&self) -> bool {
        self.path(STATE_FILE).is_file()
    }

    /// Writes `config.json` (pretty JSON).
    pub fn write_config<T: Serialize>(&self, config: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(config)?;
        write_atomic(&self.path(CONFIG_FILE), text.as_bytes())
    }

    /// Reads `config.json` into `T`; errors name the file and the field.
    pub fn read_config<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let path = self.path(CONFIG_FILE);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "{}: cannot read (is {} a run directory?)",
                path.display(),
                self.root.display()
            )
        })?;
        crate::data::json::parse_json(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn read_state(&self) -> Result<TrainState> {
        let path = self.path(STATE_FILE);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "{}: cannot read (no checkpoint in {})",
                path.display(),
                self.root.display()
            )
        })?;
        crate::data::json::parse_json(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// Saving and loading the model + optimizer + state triple.
pub struct Checkpoint;

impl Checkpoint {
    /// Writes `model.safetensors`, `optimizer.safetensors` and `state.json` (in that order).
    pub fn save(
        run: &RunDir,
        varmap: &VarMap,
        optimizer: &Optimizer,
        state: &TrainState,
    ) -> Result<()> {
        save_model(&run.path(MODEL_FILE), varmap, state.step)?;
        optimizer.save(&run.path(OPTIMIZER_FILE))?;
        let text = serde_json::to_string_pretty(state)?;
        write_atomic(&run.path(STATE_FILE), text.as_bytes())
    }

    /// Restores the model variables and optimizer state of `run` and returns its state.
    pub fn load(run: &RunDir, varmap: &VarMap, optimizer: &mut Optimizer) -> Result<TrainState> {
        let state = run.read_state()?;
        let model_step = load_model(&run.path(MODEL_FILE), varmap)?;
        optimizer.load(&run.path(OPTIMIZER_FILE))?;
        ensure!(
            model_step == Some(state.step) && optimizer.steps() == state.step,
            "{}: inconsistent checkpoint (state at step {}, model at {:?}, optimizer at {}); \
             the run was stopped while saving",
            run.root.display(),
            state.step,
            model_step,
            optimizer.steps()
        );
        Ok(state)
    }
}

/// Writes every variable of `varmap` (name-sorted) to `path` atomically, with `step` and
/// `format = insar-mm` in the metadata.
pub fn save_model(path: &Path, varmap: &VarMap, step: u64) -> Result<()> {
    let tensors: Vec<(String, Tensor)> = {
        let data = varmap.data().lock().expect("VarMap lock poisoned");
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    };
    let metadata = HashMap::from([
        ("format".to_string(), "insar-mm".to_string()),
        ("step".to_string(), step.to_string()),
    ]);
    write_atomic(path, &serialize_tensors(tensors, metadata)?)
}

/// Sets every variable of `varmap` from `path` (each must be present with the same shape;
/// extra tensors in the file are an error too) and returns the step in its metadata.
pub fn load_model(path: &Path, varmap: &VarMap) -> Result<Option<u64>> {
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let device = data
        .values()
        .next()
        .map_or(Device::Cpu, |v| v.device().clone());
    let (tensors, metadata) = read_tensors(path, &device)?;
    let mut missing = Vec::new();
    for (name, var) in data.iter() {
        match tensors.get(name) {
            None => missing.push(name.clone()),
            Some(t) => {
                ensure!(
                    t.dims() == var.dims(),
                    "{}: {name} has shape {:?}, the model expects {:?}",
                    path.display(),
                    t.dims(),
                    var.dims()
                );
                var.set(&t.to_dtype(var.dtype())?)
                    .with_context(|| format!("{}: setting {name}", path.display()))?;
            }
        }
    }
    if !missing.is_empty() {
        missing.sort();
        bail!(
            "{}: {} variables of the model are missing, e.g. {}",
            path.display(),
            missing.len(),
            missing[..missing.len().min(3)].join(", ")
        );
    }
    let mut extra: Vec<&String> = tensors.keys().filter(|k| !data.contains_key(*k)).collect();
    if !extra.is_empty() {
        extra.sort();
        bail!(
            "{}: {} tensors do not belong to this model, e.g. {}",
            path.display(),
            extra.len(),
            extra[0]
        );
    }
    Ok(metadata.get("step").and_then(|s| s.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn rng_state_round_trips_mid_stream() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        rng.set_stream(3);
        for _ in 0..13 {
            rng.random::<u64>();
        }
        let state = RngState::capture(&rng);
        let json = serde_json::to_string(&state).unwrap();
        let mut back = serde_json::from_str::<RngState>(&json)
            .unwrap()
            .restore()
            .unwrap();
        let a: Vec<u32> = (0..20).map(|_| rng.random()).collect();
        let b: Vec<u32> = (0..20).map(|_| back.random()).collect();
        assert_eq!(a, b);
        let bad = RngState {
            seed: "zz".repeat(32),
            ..state
        };
        assert!(bad.restore().is_err());
    }

    #[test]
    fn model_round_trip_and_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &dev);
        let w = vb
            .get_with_hints((2, 3), "a.weight", candle_nn::Init::Const(1.5))
            .unwrap();
        vb.get_with_hints(3, "a.bias", candle_nn::Init::Const(-1.0))
            .unwrap();
        let path = dir.path().join("m.safetensors");
        save_model(&path, &varmap, 12).unwrap();
        // Python-readable layout: safetensors header + metadata (checked by hand once with
        // `safetensors.safe_open`, see README).
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names();
        names.sort();
        assert_eq!(names, ["a.bias", "a.weight"]);

        let other = VarMap::new();
        let vb2 = candle_nn::VarBuilder::from_varmap(&other, candle_core::DType::F32, &dev);
        vb2.get_with_hints((2, 3), "a.weight", candle_nn::Init::Const(0.0))
            .unwrap();
        vb2.get_with_hints(3, "a.bias", candle_nn::Init::Const(0.0))
            .unwrap();
        assert_eq!(load_model(&path, &other).unwrap(), Some(12));
        let got = other.data().lock().unwrap()["a.weight"]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got, w.flatten_all().unwrap().to_vec1::<f32>().unwrap());

        // A model with another variable: missing in the file.
        vb2.get_with_hints(1, "b.scale", candle_nn::Init::Const(0.0))
            .unwrap();
        let err = format!("{:#}", load_model(&path, &other).unwrap_err());
        assert!(
            err.contains("b.scale") && err.contains("m.safetensors"),
            "{err}"
        );
        // A model with a different shape.
        let third = VarMap::new();
        let vb3 = candle_nn::VarBuilder::from_varmap(&third, candle_core::DType::F32, &dev);
        vb3.get_with_hints((3, 2), "a.weight", candle_nn::Init::Const(0.0))
            .unwrap();
        vb3.get_with_hints(3, "a.bias", candle_nn::Init::Const(0.0))
            .unwrap();
        let err = format!("{:#}", load_model(&path, &third).unwrap_err());
        assert!(err.contains("shape"), "{err}");
        // Not a safetensors file.
        std::fs::write(&path, b"garbage").unwrap();
        let err = format!("{:#}", load_model(&path, &third).unwrap_err());
        assert!(err.contains("not a safetensors file"), "{err}");
    }
}
