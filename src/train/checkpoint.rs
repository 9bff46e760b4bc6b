//! Run directories and checkpoints (docs/architecture.md §5).
//!
//! ```text
//! RUN/config.json            the resolved training config (what `--resume` and `embed` rebuild from)
//! RUN/checkpoint.json        {"step": N, "dir": "checkpoints/step-N"}: the checkpoint a resume uses
//! RUN/checkpoints/step-N/    model.safetensors, optimizer.safetensors, state.json of step N
//! RUN/model.safetensors      the current checkpoint's model (a hard link or copy), for inference
//! RUN/state.json             the current checkpoint's state (a copy), for reading the run
//! RUN/metrics.jsonl          one JSON object per logged step / validation
//! RUN/loss.png               loss curve, written at the end
//! RUN/best.safetensors       model at the best validation value (when a best metric is set)
//! ```
//!
//! # A checkpoint is one unit
//!
//! [`Checkpoint::save`] writes the model, optimizer and state of step N into
//! `checkpoints/step-N.partial/` (each file synced), renames that folder to
//! `checkpoints/step-N/`, and then switches `checkpoint.json` to it by renaming a new pointer
//! file over the old one: that rename is the commit. Only then are the root copies
//! (`model.safetensors`, `state.json`) refreshed and the previous checkpoint folder deleted.
//! A process killed at any moment therefore leaves `checkpoint.json` naming a complete
//! checkpoint (the old one or the new one); [`Checkpoint::load`] reads that one, reports any
//! newer torn set it finds next to it, and the next save removes the leftovers.
//!
//! Runs written before this layout (model, optimizer and `state.json` at the run root, no
//! `checkpoint.json`) still load; their first new checkpoint converts them.
//!
//! Before a checkpoint (or `best.safetensors`) is written, every model variable (BatchNorm
//! statistics included) must be finite: a blown-up step errors out naming the tensor and
//! never replaces a good checkpoint.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::optim::{serialize_tensors, tensors_from_bytes, Optimizer};
use crate::data::atomic::write_atomic;

pub const CONFIG_FILE: &str = "config.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LOSS_PLOT_FILE: &str = "loss.png";
pub const BEST_MODEL_FILE: &str = "best.safetensors";
/// Test-split scores written at the end of a run (classify, segment, caption, …).
pub const TEST_SCORES_FILE: &str = "test_scores.json";
/// One JSON line per setting changed when a run was resumed (`--resume RUN --lr X`).
pub const CONFIG_HISTORY_FILE: &str = "config-history.jsonl";
/// The pointer to the current checkpoint folder.
pub const POINTER_FILE: &str = "checkpoint.json";
/// The folder holding the checkpoint folders.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

const PARTIAL_SUFFIX: &str = ".partial";

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

/// `checkpoint.json`: which checkpoint folder is current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPointer {
    pub step: u64,
    /// `checkpoints/<name>`, relative to the run root.
    pub dir: String,
}

impl CheckpointPointer {
    /// The folder's name inside `checkpoints/` (validated: one plain path component).
    fn name(&self) -> Option<&str> {
        let name = self.dir.strip_prefix(CHECKPOINTS_DIR)?.strip_prefix('/')?;
        let plain = !name.is_empty()
            && name != "."
            && name != ".."
            && !name.contains(['/', '\\'])
            && !name.ends_with(PARTIAL_SUFFIX);
        plain.then_some(name)
    }
}

/// The step a checkpoint folder name (`step-N`, `step-N-2`, `step-N.partial`) stands for.
fn folder_step(name: &str) -> Option<u64> {
    let rest = name.strip_suffix(PARTIAL_SUFFIX).unwrap_or(name);
    let rest = rest.strip_prefix("step-")?;
    rest.split('-').next()?.parse().ok()
}

/// The weights a finished run is used with: `best.safetensors`, else `model.safetensors`.
pub fn run_weights(run: &RunDir) -> Result<PathBuf> {
    for f in [BEST_MODEL_FILE, MODEL_FILE] {
        let p = run.path(f);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{}: no {BEST_MODEL_FILE} or {MODEL_FILE}: not a trained run",
        run.root.display()
    )
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

    /// Whether the run has a checkpoint to resume from (`checkpoint.json`, or `state.json`
    /// at the root for a run written before checkpoint folders).
    pub fn has_checkpoint(&self) -> bool {
        self.path(POINTER_FILE).is_file() || self.path(STATE_FILE).is_file()
    }

    /// `checkpoint.json`, if the run has one.
    pub fn pointer(&self) -> Result<Option<CheckpointPointer>> {
        let path = self.path(POINTER_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
        };
        let p: CheckpointPointer = crate::data::json::parse_json(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        ensure!(
            p.name().is_some(),
            "{}: dir = {:?} is not a folder under {CHECKPOINTS_DIR}/",
            path.display(),
            p.dir
        );
        Ok(Some(p))
    }

    /// The folder holding the current checkpoint's files: `checkpoints/step-N/`, or the run
    /// root for a run written before checkpoint folders (or one without a checkpoint).
    pub fn checkpoint_dir(&self) -> Result<PathBuf> {
        Ok(match self.pointer()? {
            Some(p) => self
                .root
                .join(CHECKPOINTS_DIR)
                .join(p.name().expect("validated")),
            None => self.root.clone(),
        })
    }

    /// Appends to `config-history.jsonl` that `key` changed from `from` to `to` when the run
    /// was resumed at its current checkpoint (synced, so the record survives a crash).
    pub fn record_config_change(
        &self,
        key: &str,
        from: serde_json::Value,
        to: serde_json::Value,
    ) -> Result<()> {
        use std::io::Write;
        let step = self.pointer()?.map(|p| p.step);
        let line =
            serde_json::json!({ "resumed_at_step": step, "key": key, "from": from, "to": to });
        let path = self.path(CONFIG_HISTORY_FILE);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        writeln!(f, "{line}")
            .and_then(|_| f.sync_all())
            .with_context(|| format!("{}: cannot write", path.display()))
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

    /// `config.json` read into `T` and checked by `validate`, as loading a run for inference
    /// must (an edited value out of range is an error naming the file, not a crash later).
    pub fn read_checked_config<T: serde::de::DeserializeOwned>(
        &self,
        validate: impl FnOnce(&T) -> Result<()>,
    ) -> Result<T> {
        let cfg: T = self.read_config()?;
        validate(&cfg).with_context(|| format!("{}", self.path(CONFIG_FILE).display()))?;
        Ok(cfg)
    }

    /// The current checkpoint's `state.json`.
    pub fn read_state(&self) -> Result<TrainState> {
        let path = self.checkpoint_dir()?.join(STATE_FILE);
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

    /// Entries of `checkpoints/` other than the current checkpoint that are newer than
    /// `step` or unfinished (`.partial`): sets a save was stopped in.
    pub fn torn_checkpoints(&self, current: Option<&CheckpointPointer>) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.path(CHECKPOINTS_DIR)) else {
            return Vec::new();
        };
        let mut torn: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if current.and_then(CheckpointPointer::name) == Some(name.as_str()) {
                    return false;
                }
                let newer = match (folder_step(&name), current) {
                    (Some(s), Some(c)) => s > c.step,
                    _ => true,
                };
                newer || name.ends_with(PARTIAL_SUFFIX)
            })
            .map(|e| e.path())
            .collect();
        torn.sort();
        torn
    }
}

/// Where a simulated kill stops [`Checkpoint::save_with_fault`]: before file operation `op`
/// (0-based) is done, or, with `torn` and a file write, after half of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveFault {
    pub op: usize,
    pub torn: bool,
}

/// The error a [`SaveFault`] stops a save with (nothing after it is written or cleaned up,
/// as when the process is killed there).
#[derive(Debug, thiserror::Error)]
#[error("simulated kill at file operation {op} of a checkpoint save")]
pub struct SimulatedKill {
    pub op: usize,
}

/// The file operations of a save, counted so that a test can stop after any of them.
struct FileOps {
    next: usize,
    fault: Option<SaveFault>,
}

impl FileOps {
    fn gate(&mut self, write: Option<(&Path, &[u8])>) -> Result<()> {
        if let Some(f) = self.fault.filter(|f| f.op == self.next) {
            if let (true, Some((path, bytes))) = (f.torn, write) {
                let _ = std::fs::write(path, &bytes[..bytes.len() / 2]);
            }
            return Err(SimulatedKill { op: f.op }.into());
        }
        self.next += 1;
        Ok(())
    }

    /// Writes and syncs `path` (not atomically: callers write into unpublished names).
    fn write(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.gate(Some((path, bytes)))?;
        (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(path)?;
            f.write_all(bytes)?;
            f.sync_all()
        })()
        .with_context(|| format!("{}: cannot write", path.display()))
    }

    fn rename(&mut self, from: &Path, to: &Path) -> Result<()> {
        self.gate(None)?;
        std::fs::rename(from, to)
            .with_context(|| format!("{}: cannot rename to {}", from.display(), to.display()))?;
        sync_parent(to);
        Ok(())
    }

    fn mkdir(&mut self, dir: &Path) -> Result<()> {
        self.gate(None)?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))
    }

    fn remove(&mut self, path: &Path) -> Result<()> {
        self.gate(None)?;
        let r = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        r.with_context(|| format!("{}: cannot remove", path.display()))
    }

    /// `dst` as a hard link to `src` (a copy where links are not supported).
    fn link(&mut self, src: &Path, dst: &Path) -> Result<()> {
        self.gate(None)?;
        if dst.symlink_metadata().is_ok() {
            std::fs::remove_file(dst)
                .with_context(|| format!("{}: cannot remove", dst.display()))?;
        }
        if std::fs::hard_link(src, dst).is_err() {
            std::fs::copy(src, dst)
                .with_context(|| format!("{}: cannot copy to {}", src.display(), dst.display()))?;
        }
        Ok(())
    }
}

/// Syncs the folder holding `path`, so that a rename in it survives a power loss (best
/// effort: not every platform can open a folder).
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(f) = std::fs::File::open(dir) {
            let _ = f.sync_all();
        }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Saving and loading the model + optimizer + state triple.
pub struct Checkpoint;

impl Checkpoint {
    /// Saves the checkpoint of `state.step` as one unit (see the module docs). Fails without
    /// touching the run when a model variable is not finite.
    pub fn save(
        run: &RunDir,
        varmap: &VarMap,
        optimizer: &Optimizer,
        state: &TrainState,
    ) -> Result<()> {
        Self::save_with_fault(run, varmap, optimizer, state, None)
    }

    /// [`Checkpoint::save`], stopped (as by a kill) at `fault` when one is given: tests use
    /// it to reproduce every on-disk state a save can be interrupted in.
    pub fn save_with_fault(
        run: &RunDir,
        varmap: &VarMap,
        optimizer: &Optimizer,
        state: &TrainState,
        fault: Option<SaveFault>,
    ) -> Result<()> {
        // Everything that can fail for a reason other than the file system comes first.
        let model = model_bytes(varmap, state.step)?;
        let opt = optimizer.to_bytes()?;
        let state_text = serde_json::to_string_pretty(state)?;
        let current = run.pointer()?;
        let current_name = current.as_ref().and_then(|p| p.name().map(str::to_owned));
        let name = [
            format!("step-{}", state.step),
            format!("step-{}-2", state.step),
        ]
        .into_iter()
        .find(|n| Some(n) != current_name.as_ref())
        .expect("two different candidates");

        let mut ops = FileOps { next: 0, fault };
        let folders = run.path(CHECKPOINTS_DIR);
        let dir = folders.join(&name);
        let partial = folders.join(format!("{name}{PARTIAL_SUFFIX}"));
        ops.mkdir(&folders)?;
        for stale in [&partial, &dir] {
            if stale.symlink_metadata().is_ok() {
                ops.remove(stale)?;
            }
        }
        ops.mkdir(&partial)?;
        ops.write(&partial.join(MODEL_FILE), &model)?;
        ops.write(&partial.join(OPTIMIZER_FILE), &opt)?;
        ops.write(&partial.join(STATE_FILE), state_text.as_bytes())?;
        sync_parent(&partial.join(STATE_FILE));
        ops.rename(&partial, &dir)?;
        // The commit: checkpoint.json now names the new folder.
        let pointer = CheckpointPointer {
            step: state.step,
            dir: format!("{CHECKPOINTS_DIR}/{name}"),
        };
        let pointer_path = run.path(POINTER_FILE);
        ops.write(
            &tmp_path(&pointer_path),
            serde_json::to_string_pretty(&pointer)?.as_bytes(),
        )?;
        ops.rename(&tmp_path(&pointer_path), &pointer_path)?;
        // Root copies, a pre-folder run's optimizer file, and the previous folders.
        update_root_copies(run, &dir, &mut ops)?;
        if run.path(OPTIMIZER_FILE).is_file() {
            ops.remove(&run.path(OPTIMIZER_FILE))?;
        }
        let mut old: Vec<PathBuf> = std::fs::read_dir(&folders)
            .with_context(|| format!("{}: cannot list", folders.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy() != name.as_str())
            .map(|e| e.path())
            .collect();
        old.sort();
        for path in old {
            ops.remove(&path)?;
        }
        Ok(())
    }

    /// Restores the model variables and optimizer state of `run`'s current checkpoint and
    /// returns its state. A newer checkpoint a save was stopped in is reported (warning) and
    /// left for the next save to remove.
    pub fn load(run: &RunDir, varmap: &VarMap, optimizer: &mut Optimizer) -> Result<TrainState> {
        let pointer = run.pointer()?;
        let torn = run.torn_checkpoints(pointer.as_ref());
        let Some(pointer) = pointer else {
            if run.path(STATE_FILE).is_file() {
                return load_root_layout(run, varmap, optimizer);
            }
            let hint = if torn.is_empty() {
                String::new()
            } else {
                " (the run was stopped while writing its first checkpoint: start it again \
                 with the same --out)"
                    .to_string()
            };
            bail!(
                "{}: no checkpoint in {}{hint}",
                run.path(POINTER_FILE).display(),
                run.root.display()
            );
        };
        for t in &torn {
            log::warn!(
                "{}: an incomplete checkpoint newer than step {} (the run was stopped while \
                 saving it); resuming from the last complete one, step {}",
                t.display(),
                pointer.step,
                pointer.step
            );
        }
        let dir = run.checkpoint_dir()?;
        let state = run.read_state()?;
        let model_step = load_model(&dir.join(MODEL_FILE), varmap)?;
        optimizer.load(&dir.join(OPTIMIZER_FILE))?;
        ensure!(
            pointer.step == state.step
                && model_step == Some(state.step)
                && optimizer.steps() == state.step,
            "{}: inconsistent checkpoint (checkpoint.json at step {}, state at step {}, model \
             at {:?}, optimizer at {}): its files were changed after it was saved",
            dir.display(),
            pointer.step,
            state.step,
            model_step,
            optimizer.steps()
        );
        Ok(state)
    }

    /// Rewrites the root copies (`model.safetensors`, `state.json`) from the current
    /// checkpoint (a kill between the commit of a save and its copies leaves them one
    /// checkpoint behind). Nothing to do for a run without `checkpoint.json`.
    pub fn refresh_root_copies(run: &RunDir) -> Result<()> {
        if run.pointer()?.is_none() {
            return Ok(());
        }
        let dir = run.checkpoint_dir()?;
        update_root_copies(
            run,
            &dir,
            &mut FileOps {
                next: 0,
                fault: None,
            },
        )
    }
}

/// Hard-links the model of `dir` to `RUN/model.safetensors` and copies its `state.json`,
/// each through a temporary name and a rename.
fn update_root_copies(run: &RunDir, dir: &Path, ops: &mut FileOps) -> Result<()> {
    let model = run.path(MODEL_FILE);
    ops.link(&dir.join(MODEL_FILE), &tmp_path(&model))?;
    ops.rename(&tmp_path(&model), &model)?;
    let state = std::fs::read(dir.join(STATE_FILE))
        .with_context(|| format!("{}: cannot read", dir.join(STATE_FILE).display()))?;
    let root_state = run.path(STATE_FILE);
    ops.write(&tmp_path(&root_state), &state)?;
    ops.rename(&tmp_path(&root_state), &root_state)
}

/// A run written before checkpoint folders: model, optimizer and state at the root.
fn load_root_layout(
    run: &RunDir,
    varmap: &VarMap,
    optimizer: &mut Optimizer,
) -> Result<TrainState> {
    let state = run.read_state()?;
    let model_step = load_model(&run.path(MODEL_FILE), varmap)?;
    optimizer.load(&run.path(OPTIMIZER_FILE))?;
    ensure!(
        model_step == Some(state.step) && optimizer.steps() == state.step,
        "{}: inconsistent checkpoint (state at step {}, model at {:?}, optimizer at {}): the \
         run was stopped between the files of a save (a run written before checkpoints were \
         saved as one unit), so it cannot be resumed. Its {MODEL_FILE} can still be used for \
         inference; train again with another --out (or delete this run)",
        run.root.display(),
        state.step,
        model_step,
        optimizer.steps()
    );
    Ok(state)
}

/// The first non-finite value of `tensor` as an error naming `name`, if any.
pub fn check_finite(name: &str, tensor: &Tensor) -> Result<()> {
    if !tensor.dtype().is_float() {
        return Ok(());
    }
    let values = tensor
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        bail!(
            "{name} is not finite ({v} at element {i} of {} values)",
            values.len()
        );
    }
    Ok(())
}

/// The safetensors bytes of every variable of `varmap` (name-sorted), with `step` and
/// `format = insar-mm` in the metadata; an error names the first variable that is not
/// finite.
pub fn model_bytes(varmap: &VarMap, step: u64) -> Result<Vec<u8>> {
    let mut tensors: Vec<(String, Tensor)> = {
        let data = varmap.data().lock().expect("VarMap lock poisoned");
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    };
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in &tensors {
        check_finite(&format!("model variable {name}"), t)
            .context("the weights blew up (lower the learning rate or set train.clip_grad_norm)")?;
    }
    let metadata = HashMap::from([
        ("format".to_string(), "insar-mm".to_string()),
        ("step".to_string(), step.to_string()),
    ]);
    serialize_tensors(tensors, metadata)
}

/// Writes every variable of `varmap` (name-sorted) to `path` atomically, with `step` and
/// `format = insar-mm` in the metadata; refuses (writing nothing) when a variable is not
/// finite.
pub fn save_model(path: &Path, varmap: &VarMap, step: u64) -> Result<()> {
    write_atomic(path, &model_bytes(varmap, step)?)
}

/// Sets every variable of `varmap` from `path` (each must be present with the same shape and
/// dtype and be finite; extra tensors in the file are an error too) and returns the step in its metadata.
pub fn load_model(path: &Path, varmap: &VarMap) -> Result<Option<u64>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    load_model_bytes(&bytes, &path.display().to_string(), varmap)
}

/// [`load_model`] of a safetensors file already in memory; errors start with `origin`.
pub fn load_model_bytes(bytes: &[u8], origin: &str, varmap: &VarMap) -> Result<Option<u64>> {
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let device = data
        .values()
        .next()
        .map_or(Device::Cpu, |v| v.device().clone());
    let (tensors, metadata) = tensors_from_bytes(bytes, origin, &device)?;
    let mut missing = Vec::new();
    for (name, var) in data.iter() {
        match tensors.get(name) {
            None => missing.push(name.clone()),
            Some(t) => {
                ensure!(
                    t.dims() == var.dims(),
                    "{origin}: {name} has shape {:?}, the model expects {:?}",
                    t.dims(),
                    var.dims()
                );
                ensure!(
                    t.dtype() == var.dtype(),
                    "{origin}: {name} has dtype {:?}, the model expects {:?}",
                    t.dtype(),
                    var.dtype()
                );
                check_finite(name, t)
                    .with_context(|| format!("{origin}: the weights are unusable"))?;
                var.set(t)
                    .with_context(|| format!("{origin}: setting {name}"))?;
            }
        }
    }
    if !missing.is_empty() {
        missing.sort();
        bail!(
            "{origin}: {} variables of the model are missing, e.g. {}",
            missing.len(),
            missing[..missing.len().min(3)].join(", ")
        );
    }
    let mut extra: Vec<&String> = tensors.keys().filter(|k| !data.contains_key(*k)).collect();
    if !extra.is_empty() {
        extra.sort();
        bail!(
            "{origin}: {} tensors do not belong to this model, e.g. {}",
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
        // Non-finite weights and another dtype are refused, naming the tensor.
        let bad = |name: &str, t: Tensor| {
            let w = Tensor::ones((2, 3), candle_core::DType::F32, &dev).unwrap();
            let tensors = vec![("a.weight".to_string(), w), (name.to_string(), t)];
            std::fs::write(&path, serialize_tensors(tensors, HashMap::new()).unwrap()).unwrap();
            let other = VarMap::new();
            let vb = candle_nn::VarBuilder::from_varmap(&other, candle_core::DType::F32, &dev);
            vb.get_with_hints((2, 3), "a.weight", candle_nn::Init::Const(0.0))
                .unwrap();
            vb.get_with_hints(3, "a.bias", candle_nn::Init::Const(0.0))
                .unwrap();
            format!("{:#}", load_model(&path, &other).unwrap_err())
        };
        let nan = Tensor::new(&[0.0f32, f32::NAN, 1.0], &dev).unwrap();
        let err = bad("a.bias", nan);
        assert!(
            err.contains("a.bias is not finite") && err.contains("m.safetensors"),
            "{err}"
        );
        let ints = Tensor::new(&[0i64, 1, 2], &dev).unwrap();
        let err = bad("a.bias", ints);
        assert!(err.contains("a.bias has dtype I64"), "{err}");
        // Not a safetensors file.
        std::fs::write(&path, b"garbage").unwrap();
        let err = format!("{:#}", load_model(&path, &third).unwrap_err());
        assert!(err.contains("not a safetensors file"), "{err}");
        // A garbled header: its JSON error is said once.
        let mut garbled = 16u64.to_le_bytes().to_vec();
        garbled.extend_from_slice(b"{\"a\":1,\"b\":2xxxx");
        std::fs::write(&path, garbled).unwrap();
        let err = format!("{:#}", load_model(&path, &third).unwrap_err());
        assert!(err.contains("not a safetensors file"), "{err}");
        let detail = "line 1 column";
        assert_eq!(err.matches(detail).count(), 1, "{err}");
    }
}
