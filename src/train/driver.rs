//! The step/epoch loop every `train` command runs.
//!
//! A command implements [`TrainTask`] ("given these sample indices, return the loss and some
//! metrics"; optionally "validate") and hands it to a [`Trainer`], which owns everything
//! else: the data order, learning-rate schedule, gradient accumulation and clipping, the
//! optimizer step, `metrics.jsonl`, the progress bar, validation with a best-checkpoint by a
//! named metric, periodic and final checkpoints, the non-finite-loss stop, Ctrl-C and
//! `--resume`.
//!
//! # Reproducibility
//!
//! Everything random is a function of the run seed: the order of epoch `e` is a permutation
//! drawn from `(seed, e)` (or the identity for streams), and every other per-step draw
//! (augmentations, dropout masks) comes from the loop RNG handed to the task, whose exact
//! state is saved in `state.json`. A run resumed from a checkpoint therefore continues with
//! the same batches, views and updates as one that never stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::checkpoint::{
    save_model, BestValue, Checkpoint, RunDir, SaveFault, SimulatedKill, TrainState,
    BEST_MODEL_FILE, CHECKPOINTS_DIR, CONFIG_FILE, LOSS_PLOT_FILE, METRICS_FILE, MODEL_FILE,
    POINTER_FILE, STATE_FILE,
};
use super::log::{write_loss_plot, MetricsLog};
use super::optim::{Grads, Optimizer};
use super::schedule::ScheduleConfig;
use crate::data::augment::sample_rng;
use crate::data::sampler::shuffled_order;

/// Whether a larger or a smaller value of the best-checkpoint metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricMode {
    Max,
    Min,
}

/// Keep `best.safetensors` at the best value of a validation metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BestMetric {
    /// A key returned by [`TrainTask::validate`], e.g. `val_top1`.
    pub name: String,
    pub mode: MetricMode,
}

/// The loop's settings, resolved (total steps known).
#[derive(Debug, Clone, PartialEq)]
pub struct LoopConfig {
    /// Optimizer steps of the whole run.
    pub total_steps: u64,
    /// Micro-batches per optimizer step (gradients summed, loss averaged).
    pub accumulate: usize,
    /// Clip the global gradient norm to this value.
    pub clip_grad_norm: Option<f64>,
    /// Checkpoint every this many steps (0: only at the end); always at the end.
    pub checkpoint_every: u64,
    /// Write a `metrics.jsonl` line every this many steps.
    pub log_every: u64,
    /// Validate every this many steps and at the end (0: never).
    pub validate_every: u64,
    pub best: Option<BestMetric>,
}

impl LoopConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.total_steps > 0, "the run needs at least one step");
        ensure!(self.accumulate > 0, "train.accumulate must be at least 1");
        ensure!(self.log_every > 0, "train.log_every must be at least 1");
        if let Some(c) = self.clip_grad_norm {
            ensure!(
                c > 0.0 && c.is_finite(),
                "train.clip_grad_norm = {c:?} must be positive"
            );
        }
        if let Some(b) = &self.best {
            ensure!(
                self.validate_every > 0,
                "train.best_metric = {:?} needs train.validate_every > 0",
                b.name
            );
        }
        Ok(())
    }
}

/// What the task sees of one micro-batch.
pub struct Batch<'a> {
    /// Indices into the task's training samples (`0..len`).
    pub indices: &'a [usize],
    /// Optimizer step this micro-batch belongs to (0-based).
    pub step: u64,
    pub epoch: u64,
    /// Global micro-batch counter.
    pub micro: u64,
    /// The loop RNG (checkpointed): draw augmentation seeds etc. from it.
    pub rng: &'a mut ChaCha8Rng,
}

/// The outcome of one micro-batch.
pub struct StepOutput {
    /// Scalar loss, attached to the graph of the trainable variables.
    pub loss: Tensor,
    /// Extra numbers to log (averaged over the logging window), e.g. `("top1", 0.4)`.
    pub metrics: Vec<(String, f64)>,
}

/// One training objective.
pub trait TrainTask {
    /// Training samples per epoch.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Samples per micro-batch.
    fn batch_size(&self) -> usize;
    /// Shuffle each epoch (false for a generated stream, whose order is already random).
    fn shuffle(&self) -> bool {
        true
    }
    /// Forward pass of one micro-batch in training mode.
    fn step(&mut self, batch: Batch<'_>) -> Result<StepOutput>;
    /// Validation metrics (keys as they should appear in `metrics.jsonl`, e.g. `val_loss`).
    fn validate(&mut self) -> Result<Vec<(String, f64)>> {
        Ok(Vec::new())
    }
}

/// How [`Trainer::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Reached the planned number of steps.
    Finished { step: u64 },
    /// Stopped by the stop flag (Ctrl-C) after checkpointing at `step`.
    Interrupted { step: u64 },
}

/// The order of micro-batches: epoch `e` is a permutation drawn from `(seed, e)`.
#[derive(Debug)]
pub struct BatchPlan {
    len: usize,
    batch: usize,
    seed: u64,
    shuffle: bool,
    epoch_order: Option<(u64, Vec<usize>)>,
}

impl BatchPlan {
    pub fn new(len: usize, batch: usize, seed: u64, shuffle: bool) -> Result<Self> {
        ensure!(batch > 0, "the batch size must be at least 1");
        ensure!(
            len >= batch,
            "{len} training samples are fewer than one batch of {batch}: lower --batch-size or add data"
        );
        Ok(Self {
            len,
            batch,
            seed,
            shuffle,
            epoch_order: None,
        })
    }

    /// Full micro-batches per epoch (the remainder of an epoch is dropped).
    pub fn per_epoch(&self) -> u64 {
        (self.len / self.batch) as u64
    }

    /// `(epoch, indices)` of global micro-batch `micro`.
    pub fn batch(&mut self, micro: u64) -> (u64, Vec<usize>) {
        let epoch = micro / self.per_epoch();
        let pos = (micro % self.per_epoch()) as usize * self.batch;
        if !self.shuffle {
            return (epoch, (pos..pos + self.batch).collect());
        }
        if self.epoch_order.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mut rng = sample_rng(self.seed ^ 0x0e90_c4a1_5eed, epoch);
            self.epoch_order = Some((epoch, shuffled_order(self.len, &mut rng)));
        }
        let order = &self.epoch_order.as_ref().expect("set above").1;
        (epoch, order[pos..pos + self.batch].to_vec())
    }
}

/// Sums of logged values over the steps since the last log line.
#[derive(Default)]
struct Window {
    loss: f64,
    grad_norm: f64,
    micro: usize,
    steps: usize,
    samples: usize,
    metrics: Vec<(String, f64)>,
    started: Option<Instant>,
}

impl Window {
    fn add_metrics(&mut self, metrics: &[(String, f64)]) {
        for (k, v) in metrics {
            match self.metrics.iter_mut().find(|(n, _)| n == k) {
                Some((_, s)) => *s += v,
                None => self.metrics.push((k.clone(), *v)),
            }
        }
    }
}

/// How a run reports and stops: a progress bar, and the flag a Ctrl-C/SIGTERM handler sets;
/// and whether a new run may be written into a non-empty folder that is not a run (`--force`).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub progress: bool,
    pub stop: Option<Arc<AtomicBool>>,
    pub force: bool,
}

/// Runs a [`TrainTask`] with an optimizer over a `VarMap`, writing a run directory.
pub struct Trainer {
    run: RunDir,
    varmap: VarMap,
    optimizer: Optimizer,
    schedule: ScheduleConfig,
    base_lr: f64,
    cfg: LoopConfig,
    state: TrainState,
    rng: ChaCha8Rng,
    log: MetricsLog,
    stop: Option<Arc<AtomicBool>>,
    show_progress: bool,
    last_checkpoint: u64,
    /// What [`Trainer::start`] created (`None` for a resumed run): removed again when the
    /// run fails before its first step.
    fresh: Option<FreshRun>,
    /// A simulated kill inside the save of a given step (tests).
    save_fault: Option<(u64, SaveFault)>,
}

/// Whether [`Trainer::start`] created the run folder itself.
#[derive(Debug, Clone, Copy)]
struct FreshRun {
    created_root: bool,
}

impl Trainer {
    /// Starts a fresh run in `run` (new, empty, or a run folder without a checkpoint; a
    /// non-empty folder without `config.json` is refused unless `force`): writes `config.json`
    /// and a step-0 checkpoint, so a run that fails early still has a good checkpoint.
    #[allow(clippy::too_many_arguments)]
    pub fn start<C: Serialize>(
        run: RunDir,
        config: &C,
        varmap: VarMap,
        optimizer: Optimizer,
        schedule: ScheduleConfig,
        cfg: LoopConfig,
        seed: u64,
        force: bool,
    ) -> Result<Self> {
        cfg.validate()?;
        schedule.validate()?;
        if run.has_checkpoint() {
            bail!(
                "{}: already holds a run; continue it with --resume {} or choose another --out",
                run.root.display(),
                run.root.display()
            );
        }
        let foreign = std::fs::read_dir(&run.root)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false)
            && ![CONFIG_FILE, POINTER_FILE, CHECKPOINTS_DIR]
                .iter()
                .any(|f| run.path(f).exists());
        ensure!(
            !foreign || force,
            "{}: not empty and not a run folder (no {CONFIG_FILE}); choose a new or empty --out, \
             or pass --force to write the run beside its files",
            run.root.display()
        );
        let created_root = !run.root.exists();
        std::fs::create_dir_all(&run.root)
            .with_context(|| format!("{}: cannot create the run directory", run.root.display()))?;
        let fresh = FreshRun { created_root };
        let files = (|| -> Result<(MetricsLog, ChaCha8Rng, TrainState)> {
            run.write_config(config)?;
            let rng = ChaCha8Rng::seed_from_u64(seed);
            let state = TrainState::new(seed, cfg.total_steps, &rng);
            let log = MetricsLog::create(&run.path(METRICS_FILE))?;
            Ok((log, rng, state))
        })();
        let (log, rng, state) = match files {
            Ok(f) => f,
            Err(e) => {
                remove_fresh_run(&run, fresh);
                return Err(e);
            }
        };
        let base_lr = optimizer.config().lr();
        let trainer = Self {
            run,
            varmap,
            optimizer,
            schedule,
            base_lr,
            cfg,
            state,
            rng,
            log,
            stop: None,
            show_progress: false,
            last_checkpoint: 0,
            fresh: Some(fresh),
            save_fault: None,
        };
        if let Err(e) = trainer.checkpoint() {
            remove_fresh_run(&trainer.run, fresh);
            return Err(e);
        }
        Ok(trainer)
    }

    /// Continues the run in `run`: restores the model variables, optimizer state, step,
    /// epoch and RNG. `cfg.total_steps` may extend the run (the schedule then follows the
    /// new total; identical continuation needs the same total).
    pub fn resume(
        run: RunDir,
        varmap: VarMap,
        mut optimizer: Optimizer,
        schedule: ScheduleConfig,
        cfg: LoopConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        schedule.validate()?;
        let mut state = Checkpoint::load(&run, &varmap, &mut optimizer)?;
        Checkpoint::refresh_root_copies(&run)?;
        ensure!(
            cfg.total_steps >= state.step,
            "{}: the run is at step {}, beyond the requested {} steps",
            run.root.display(),
            state.step,
            cfg.total_steps
        );
        state.total_steps = cfg.total_steps;
        state.finished = state.step == cfg.total_steps;
        let rng = state.rng.restore().with_context(|| {
            format!(
                "{}: bad RNG state",
                run.path(super::checkpoint::STATE_FILE).display()
            )
        })?;
        let log = MetricsLog::resume(&run.path(METRICS_FILE), state.step)?;
        let base_lr = optimizer.config().lr();
        let last_checkpoint = state.step;
        Ok(Self {
            run,
            varmap,
            optimizer,
            schedule,
            base_lr,
            cfg,
            state,
            rng,
            log,
            stop: None,
            show_progress: false,
            last_checkpoint,
            fresh: None,
            save_fault: None,
        })
    }

    /// [`Trainer::start`] (recording `config`) or, with `resume`, [`Trainer::resume`], then
    /// the progress bar and stop flag of `options`: what every task's run does.
    #[allow(clippy::too_many_arguments)]
    pub fn open<C: Serialize>(
        run: RunDir,
        resume: bool,
        config: &C,
        varmap: VarMap,
        optimizer: Optimizer,
        schedule: ScheduleConfig,
        cfg: LoopConfig,
        seed: u64,
        options: RunOptions,
    ) -> Result<Self> {
        let trainer = if resume {
            Self::resume(run, varmap, optimizer, schedule, cfg)?
        } else {
            Self::start(
                run,
                config,
                varmap,
                optimizer,
                schedule,
                cfg,
                seed,
                options.force,
            )?
        };
        let trainer = trainer.with_progress(options.progress);
        Ok(match options.stop {
            Some(flag) => trainer.with_stop_flag(flag),
            None => trainer,
        })
    }

    /// A flag that, once set (by a Ctrl-C handler), makes the loop checkpoint and return.
    pub fn with_stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Show a progress bar (loss, throughput, ETA) on stderr when it is a terminal.
    pub fn with_progress(mut self, show: bool) -> Self {
        self.show_progress = show;
        self
    }

    pub fn state(&self) -> &TrainState {
        &self.state
    }

    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// Stops (as a kill would) the save of step `step` at `fault`, leaving the files as
    /// they are: for tests of interrupted saves.
    #[doc(hidden)]
    pub fn with_save_fault(mut self, step: u64, fault: SaveFault) -> Self {
        self.save_fault = Some((step, fault));
        self
    }

    fn checkpoint(&self) -> Result<()> {
        let mut state = self.state.clone();
        state.rng = super::checkpoint::RngState::capture(&self.rng);
        Checkpoint::save(&self.run, &self.varmap, &self.optimizer, &state)
    }

    fn save_checkpoint(&mut self) -> Result<()> {
        self.state.rng = super::checkpoint::RngState::capture(&self.rng);
        let fault = self
            .save_fault
            .filter(|(s, _)| *s == self.state.step)
            .map(|(_, f)| f);
        Checkpoint::save_with_fault(&self.run, &self.varmap, &self.optimizer, &self.state, fault)
            .with_context(|| {
            format!(
                "step {}: no checkpoint written; the last good checkpoint (step {}) is kept in {}",
                self.state.step,
                self.last_checkpoint,
                self.run.root.display()
            )
        })?;
        self.last_checkpoint = self.state.step;
        Ok(())
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// The error that stops training at `step` because `what` is not finite.
    fn non_finite(&self, step: u64, what: &str) -> anyhow::Error {
        if self.fresh.is_some() && self.state.step == 0 {
            return anyhow::anyhow!(
                "step 1: {what} is not finite; training stopped before its first \
                 step, so the run folder {} is removed (lower the learning rate or set \
                 train.clip_grad_norm)",
                self.run.root.display()
            );
        }
        anyhow::anyhow!(
            "step {step}: {what} is not finite; training stopped. The last good \
             checkpoint (step {}) is kept in {}: continue with a lower learning rate, \
             `--resume {} --lr X` (or set train.clip_grad_norm in {} before resuming)",
            self.last_checkpoint,
            self.run.root.display(),
            self.run.root.display(),
            self.run.path(CONFIG_FILE).display()
        )
    }

    fn progress_bar(&self) -> ProgressBar {
        if !self.show_progress {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(self.cfg.total_steps);
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps (ETA {eta}) {msg}",
            )
            .expect("static progress template is valid"),
        );
        pb.set_position(self.state.step);
        pb.reset_eta();
        pb
    }

    /// Trains until `total_steps` (or the stop flag); checkpoints on the way and at the end,
    /// writes the loss curve at the end.
    pub fn run(&mut self, task: &mut dyn TrainTask) -> Result<Outcome> {
        let result = self.run_steps(task);
        if let (Err(e), Some(fresh)) = (&result, self.fresh) {
            if self.state.step == 0 && e.downcast_ref::<SimulatedKill>().is_none() {
                remove_fresh_run(&self.run, fresh);
            }
        }
        result
    }

    fn run_steps(&mut self, task: &mut dyn TrainTask) -> Result<Outcome> {
        let mut plan = BatchPlan::new(
            task.len(),
            task.batch_size(),
            self.state.seed,
            task.shuffle(),
        )?;
        let total = self.cfg.total_steps;
        let pb = self.progress_bar();
        let mut window = Window::default();
        while self.state.step < total {
            if self.stop_requested() {
                if self.last_checkpoint != self.state.step {
                    self.save_checkpoint()?;
                }
                pb.abandon_with_message(format!(
                    "interrupted at step {}; checkpoint saved",
                    self.state.step
                ));
                return Ok(Outcome::Interrupted {
                    step: self.state.step,
                });
            }
            window.started.get_or_insert_with(Instant::now);
            let step = self.state.step;
            let lr = self.schedule.lr(self.base_lr, step, total);
            self.optimizer.set_learning_rate(lr);

            let mut grads: Option<Grads> = None;
            for _ in 0..self.cfg.accumulate {
                let micro = self.state.micro_batches;
                let (epoch, indices) = plan.batch(micro);
                let out = task.step(Batch {
                    indices: &indices,
                    step,
                    epoch,
                    micro,
                    rng: &mut self.rng,
                })?;
                let loss_value = out
                    .loss
                    .to_dtype(DType::F64)
                    .and_then(|l| l.to_scalar::<f64>())
                    .context("the task's loss must be a scalar")?;
                if !loss_value.is_finite() {
                    return Err(
                        self.non_finite(self.state.step + 1, &format!("the loss ({loss_value})"))
                    );
                }
                let loss = if self.cfg.accumulate > 1 {
                    out.loss.affine(1.0 / self.cfg.accumulate as f64, 0.0)?
                } else {
                    out.loss
                };
                let store = loss.backward()?;
                let g = self.optimizer.grads(&store);
                match grads.as_mut() {
                    Some(acc) => acc.accumulate(g)?,
                    None => grads = Some(g),
                }
                window.loss += loss_value;
                window.micro += 1;
                window.samples += indices.len();
                window.add_metrics(&out.metrics);
                self.state.micro_batches += 1;
                self.state.samples += indices.len() as u64;
            }
            let mut grads = grads.expect("accumulate ≥ 1");
            let grad_norm = match self.cfg.clip_grad_norm {
                Some(max) => grads.clip_global_norm(max)?,
                None => grads.global_norm()?,
            };
            if !grad_norm.is_finite() {
                return Err(self.non_finite(
                    self.state.step + 1,
                    &format!("the gradient norm ({grad_norm})"),
                ));
            }
            self.optimizer.step(&grads)?;
            self.state.step += 1;
            self.state.epoch = self.state.micro_batches / plan.per_epoch();
            window.grad_norm += grad_norm;
            window.steps += 1;
            pb.set_position(self.state.step);

            let step = self.state.step;
            let last = step == total;
            if step % self.cfg.log_every == 0 || last {
                self.log_window(&mut window, lr, &pb)?;
            }
            if self.cfg.validate_every > 0 && (step % self.cfg.validate_every == 0 || last) {
                self.validate(task, &pb)?;
            }
            if last {
                self.state.finished = true;
            }
            if last || (self.cfg.checkpoint_every > 0 && step % self.cfg.checkpoint_every == 0) {
                self.save_checkpoint()?;
            }
        }
        pb.finish();
        if let Err(e) =
            write_loss_plot(&self.run.path(METRICS_FILE), &self.run.path(LOSS_PLOT_FILE))
        {
            log::warn!("no loss curve: {e:#}");
        }
        Ok(Outcome::Finished {
            step: self.state.step,
        })
    }

    fn log_window(&mut self, w: &mut Window, lr: f64, pb: &ProgressBar) -> Result<()> {
        let elapsed = w.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let micro = w.micro.max(1) as f64;
        let mut rec = Map::new();
        rec.insert("split".into(), "train".into());
        rec.insert("step".into(), self.state.step.into());
        rec.insert("epoch".into(), self.state.epoch.into());
        rec.insert("samples".into(), self.state.samples.into());
        rec.insert("lr".into(), lr.into());
        rec.insert("loss".into(), json_f64(w.loss / micro));
        rec.insert(
            "grad_norm".into(),
            json_f64(w.grad_norm / w.steps.max(1) as f64),
        );
        let ips = if elapsed > 0.0 {
            w.samples as f64 / elapsed
        } else {
            0.0
        };
        rec.insert("images_per_s".into(), json_f64(ips));
        let mut msg = format!("loss {:.4}", w.loss / micro);
        for (k, v) in &w.metrics {
            rec.insert(k.clone(), json_f64(v / micro));
            msg.push_str(&format!(" {k} {:.3}", v / micro));
        }
        msg.push_str(&format!(" | {ips:.1} img/s"));
        self.log.append(&rec)?;
        if pb.is_hidden() {
            log::debug!("step {}/{}: {msg}", self.state.step, self.cfg.total_steps);
        } else {
            pb.set_message(msg);
        }
        *w = Window::default();
        Ok(())
    }

    fn validate(&mut self, task: &mut dyn TrainTask, pb: &ProgressBar) -> Result<()> {
        // A step can blow the weights up with a finite loss (the loss is computed before the
        // update); validating such a model would fail somewhere in the metrics instead.
        let vars: Vec<(String, Tensor)> = {
            let data = self.varmap.data().lock().expect("VarMap lock poisoned");
            data.iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect()
        };
        for (name, t) in &vars {
            if super::checkpoint::check_finite(name, t).is_err() {
                let what = format!("model variable {name} after the update");
                return Err(self.non_finite(self.state.step, &what));
            }
        }
        let metrics = task.validate()?;
        if metrics.is_empty() {
            return Ok(());
        }
        let mut rec = Map::new();
        rec.insert("split".into(), "val".into());
        rec.insert("step".into(), self.state.step.into());
        rec.insert("epoch".into(), self.state.epoch.into());
        let mut msg = format!("step {} validation:", self.state.step);
        for (k, v) in &metrics {
            rec.insert(k.clone(), json_f64(*v));
            msg.push_str(&format!(" {k} {v:.4}"));
        }
        self.log.append(&rec)?;
        pb.suspend(|| log::info!("{msg}"));
        if let Some(best) = &self.cfg.best {
            let Some(&(_, value)) = metrics.iter().find(|(k, _)| *k == best.name) else {
                bail!(
                    "train.best_metric = {:?} is not among the validation metrics ({})",
                    best.name,
                    metrics
                        .iter()
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            let better = match (&self.state.best, best.mode) {
                (None, _) => value.is_finite(),
                (Some(b), MetricMode::Max) => value > b.value,
                (Some(b), MetricMode::Min) => value < b.value,
            };
            if better {
                save_model(
                    &self.run.path(BEST_MODEL_FILE),
                    &self.varmap,
                    self.state.step,
                )
                .with_context(|| {
                    format!(
                        "step {}: {BEST_MODEL_FILE} not replaced (the last good checkpoint, \
                         step {}, is kept in {})",
                        self.state.step,
                        self.last_checkpoint,
                        self.run.root.display()
                    )
                })?;
                self.state.best = Some(BestValue {
                    metric: best.name.clone(),
                    value,
                    step: self.state.step,
                });
            }
        }
        Ok(())
    }
}

/// Removes what [`Trainer::start`] wrote: the whole folder when it created it, else only the
/// run's own files (a failed start leaves no run behind).
fn remove_fresh_run(run: &RunDir, fresh: FreshRun) {
    let result = if fresh.created_root {
        std::fs::remove_dir_all(&run.root)
    } else {
        for f in [
            CONFIG_FILE,
            METRICS_FILE,
            POINTER_FILE,
            MODEL_FILE,
            STATE_FILE,
            BEST_MODEL_FILE,
            LOSS_PLOT_FILE,
        ] {
            let _ = std::fs::remove_file(run.path(f));
        }
        std::fs::remove_dir_all(run.path(CHECKPOINTS_DIR)).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })
    };
    match result {
        Ok(()) => log::info!(
            "{}: removed the run again (it failed before its first step)",
            run.root.display()
        ),
        Err(e) => log::warn!("{}: cannot remove the failed run: {e}", run.root.display()),
    }
}

/// A JSON number, or null for a non-finite value (JSON has no NaN).
fn json_f64(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}
