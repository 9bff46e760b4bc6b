//! Tests of the training loop as a whole: resume, accumulation, non-finite losses,
//! interrupted saves and a short SimCLR run that must learn.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use insar_mm_models::encoder::is_trainable_name;
use serde_json::Value;

use crate::data::frames::InputFormat;

use super::checkpoint::{
    load_model, save_model, RunDir, SaveFault, SimulatedKill, CHECKPOINTS_DIR, MODEL_FILE,
    OPTIMIZER_FILE, POINTER_FILE, STATE_FILE,
};
use super::config::{resolve_layers, PretrainConfig};
use super::driver::{Batch, LoopConfig, Outcome, StepOutput, TrainTask, Trainer};
use super::fringes::FringeSource;
use super::log::read_metrics;
use super::optim::{read_tensors, trainable_params, OptimConfig, Optimizer};
use super::pretrain::{build_model, pretrain, PretrainTask, RunOptions};
use super::schedule::ScheduleConfig;
use super::Checkpoint;

/// Tensors by name, flattened to f64.
type Named = Vec<(String, Vec<f64>)>;

/// Every tensor of a safetensors file, flattened to f64.
fn tensors(path: &Path) -> Named {
    let (map, _) = read_tensors(path, &Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f64>)> = map
        .into_iter()
        .map(|(k, t)| {
            let t = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
            (k, t.to_vec1().unwrap())
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn max_abs_diff(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)]) -> f64 {
    assert_eq!(
        a.iter().map(|x| &x.0).collect::<Vec<_>>(),
        b.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.1.iter().zip(&y.1).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f64::max)
}

fn no_temporaries(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "left behind: {name}");
    }
}

/// `cfg` taking what [`FringeSource`] draws: two planes, `[gray phase, coherence]`.
fn fringe_input(cfg: &mut PretrainConfig) {
    cfg.data.input_format = InputFormat::PhaseCoherence;
    cfg.model.in_channels = InputFormat::PhaseCoherence.channels();
}

/// A small SimCLR config: tiny encoder (width 8), 24² views, batch 4.
fn small_pretrain_config(seed: u64) -> PretrainConfig {
    let mut cfg: PretrainConfig = resolve_layers(Some("tiny"), None).unwrap();
    fringe_input(&mut cfg);
    cfg.seed = seed;
    cfg.model.width = Some(8);
    cfg.model.projection.out_dim = 16;
    cfg.data.image_size = 24;
    cfg.data.batch_size = 4;
    cfg.data.val_samples = 8;
    cfg.optim = OptimConfig::default();
    cfg.schedule = ScheduleConfig::Cosine {
        warmup_steps: 3,
        min_lr_ratio: 0.0,
    };
    cfg.train.steps = Some(20);
    cfg.train.checkpoint_every = 0;
    cfg.train.log_every = 1;
    cfg
}

/// Sets `flag` while running micro-batch `at` (the loop checkpoints after that step).
struct StopAt<T> {
    inner: T,
    at: u64,
    flag: Arc<AtomicBool>,
}

impl<T: TrainTask> TrainTask for StopAt<T> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn batch_size(&self) -> usize {
        self.inner.batch_size()
    }
    fn shuffle(&self) -> bool {
        self.inner.shuffle()
    }
    fn step(&mut self, batch: Batch<'_>) -> Result<StepOutput> {
        if batch.micro == self.at {
            self.flag.store(true, Ordering::SeqCst);
        }
        self.inner.step(batch)
    }
    fn validate(&mut self) -> Result<Vec<(String, f64)>> {
        self.inner.validate()
    }
}

/// The pretraining run of `cfg` in `run`, stopped (as by Ctrl-C) after `stop_after` steps.
fn pretrain_until(cfg: &PretrainConfig, run: &Path, stop_after: u64) -> Outcome {
    let device = Device::Cpu;
    let source = FringeSource::new(cfg.seed, 48, cfg.data.image_size);
    let (varmap, model) = build_model(cfg, &device).unwrap();
    let optimizer = Optimizer::new(
        cfg.optim.clone(),
        trainable_params(&varmap, is_trainable_name),
    )
    .unwrap();
    let task = PretrainTask::new(cfg, model, &source, &device).unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let mut task = StopAt {
        inner: task,
        at: stop_after - 1,
        flag: flag.clone(),
    };
    let loop_cfg = cfg
        .train
        .loop_config(task.len(), task.batch_size())
        .unwrap();
    let mut trainer = Trainer::start(
        RunDir::new(run),
        cfg,
        varmap,
        optimizer,
        cfg.schedule.clone(),
        loop_cfg,
        cfg.seed,
        false,
    )
    .unwrap()
    .with_stop_flag(flag);
    trainer.run(&mut task).unwrap()
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_pretrain_config(5);
    let source = FringeSource::new(cfg.seed, 48, cfg.data.image_size);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));

    // Uninterrupted: 20 steps.
    let out = pretrain(
        &cfg,
        &source,
        RunDir::new(&a),
        false,
        &Device::Cpu,
        RunOptions::default(),
    )
    .unwrap();
    assert_eq!(out, Outcome::Finished { step: 20 });

    // Stopped after 10 steps (checkpoint), then resumed for the remaining 10.
    assert_eq!(
        pretrain_until(&cfg, &b, 10),
        Outcome::Interrupted { step: 10 }
    );
    let state = RunDir::new(&b).read_state().unwrap();
    assert_eq!(
        (state.step, state.micro_batches, state.finished),
        (10, 10, false)
    );
    let out = pretrain(
        &cfg,
        &source,
        RunDir::new(&b),
        true,
        &Device::Cpu,
        RunOptions::default(),
    )
    .unwrap();
    assert_eq!(out, Outcome::Finished { step: 20 });

    let wa = tensors(&a.join(MODEL_FILE));
    let wb = tensors(&b.join(MODEL_FILE));
    let diff = max_abs_diff(&wa, &wb);
    assert!(diff <= 1e-6, "weights differ by {diff}");
    // BatchNorm running statistics are part of the model file and moved.
    assert!(wa.iter().any(|(k, _)| k.ends_with("running_mean")));
    let optimizer_file = |p: &Path| {
        RunDir::new(p)
            .checkpoint_dir()
            .unwrap()
            .join(OPTIMIZER_FILE)
    };
    let oa = tensors(&optimizer_file(&a));
    let ob = tensors(&optimizer_file(&b));
    assert!(max_abs_diff(&oa, &ob) <= 1e-6);
    let (sa, sb) = (
        RunDir::new(&a).read_state().unwrap(),
        RunDir::new(&b).read_state().unwrap(),
    );
    assert_eq!(sa.rng, sb.rng);
    assert_eq!((sb.step, sb.epoch, sb.finished), (20, sa.epoch, true));

    // The logs agree step by step (the resumed log has no duplicate or missing lines).
    let losses = |p: &Path| -> Vec<(u64, f64)> {
        read_metrics(&p.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .filter(|r| r["split"] == "train")
            .map(|r| (r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap()))
            .collect()
    };
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), 20);
    assert_eq!(
        la.iter().map(|x| x.0).collect::<Vec<_>>(),
        lb.iter().map(|x| x.0).collect::<Vec<_>>()
    );
    for (x, y) in la.iter().zip(&lb) {
        assert!((x.1 - y.1).abs() < 1e-5, "step {}: {} vs {}", x.0, x.1, y.1);
    }
    assert!(a.join("loss.png").is_file());
    no_temporaries(&a);
    no_temporaries(&b);

    // A fresh start into an existing run is refused; resuming a finished run is a no-op.
    let err = pretrain(
        &cfg,
        &source,
        RunDir::new(&a),
        false,
        &Device::Cpu,
        RunOptions::default(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("--resume"), "{err:#}");
}

/// `y = w·x` regression on fixed data, with a NaN loss at one step if asked.
struct Regression {
    w: Var,
    xs: Vec<[f32; 3]>,
    nan_at: Option<u64>,
    batch: usize,
}

impl Regression {
    fn new(varmap: &VarMap, batch: usize, nan_at: Option<u64>) -> Self {
        let vb = candle_nn::VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
        vb.get_with_hints((1, 3), "w", candle_nn::Init::Const(0.0))
            .unwrap();
        let w = varmap.data().lock().unwrap()["w"].clone();
        let xs = (0..32)
            .map(|i| {
                let t = i as f32;
                [(t * 0.37).sin(), (t * 0.11).cos(), 1.0]
            })
            .collect();
        Self {
            w,
            xs,
            nan_at,
            batch,
        }
    }
}

impl TrainTask for Regression {
    fn len(&self) -> usize {
        self.xs.len()
    }
    fn batch_size(&self) -> usize {
        self.batch
    }
    fn step(&mut self, batch: Batch<'_>) -> Result<StepOutput> {
        let x: Vec<f32> = batch.indices.iter().flat_map(|&i| self.xs[i]).collect();
        let y: Vec<f32> = batch
            .indices
            .iter()
            .map(|&i| 2.0 * self.xs[i][0] - self.xs[i][1] + 0.5)
            .collect();
        let n = batch.indices.len();
        let x = Tensor::from_vec(x, (n, 3), &Device::Cpu)?;
        let y = Tensor::from_vec(y, (n, 1), &Device::Cpu)?;
        let pred = x.matmul(&self.w.as_tensor().t()?)?;
        let mut loss = (pred - y)?.sqr()?.mean_all()?;
        if self.nan_at == Some(batch.step) {
            loss = (loss * f64::NAN)?;
        }
        Ok(StepOutput {
            loss,
            metrics: vec![],
        })
    }
}

fn loop_config(total: u64, accumulate: usize, checkpoint_every: u64) -> LoopConfig {
    LoopConfig {
        total_steps: total,
        accumulate,
        clip_grad_norm: None,
        checkpoint_every,
        log_every: 1,
        validate_every: 0,
        best: None,
    }
}

fn regression_run(
    run: &Path,
    batch: usize,
    accumulate: usize,
    nan_at: Option<u64>,
) -> Result<Outcome> {
    let varmap = VarMap::new();
    let mut task = Regression::new(&varmap, batch, nan_at);
    let sgd = OptimConfig::Sgd {
        lr: 0.1,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    };
    let opt = Optimizer::new(sgd, trainable_params(&varmap, |_| true))?;
    let mut t = Trainer::start(
        RunDir::new(run),
        &serde_json::json!({"task": "regression"}),
        varmap,
        opt,
        ScheduleConfig::Constant { warmup_steps: 0 },
        loop_config(12, accumulate, 5),
        1,
        false,
    )?;
    t.run(&mut task)
}

#[test]
fn accumulated_micro_batches_equal_one_large_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    regression_run(&a, 8, 1, None).unwrap();
    regression_run(&b, 4, 2, None).unwrap();
    let diff = max_abs_diff(&tensors(&a.join(MODEL_FILE)), &tensors(&b.join(MODEL_FILE)));
    assert!(diff < 1e-6, "{diff}");
    // And the regression actually learned something (w moved toward (2, −1, 0.5)).
    let w = &tensors(&a.join(MODEL_FILE))[0].1;
    assert!(w[0] > 0.5 && w[1] < -0.2, "{w:?}");
    let state = RunDir::new(&b).read_state().unwrap();
    assert_eq!(
        (state.step, state.micro_batches, state.samples),
        (12, 24, 96)
    );
    // 32 samples / batch 4 = 8 micro-batches per epoch → epoch 3 after 24.
    assert_eq!(state.epoch, 3);
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("nan");
    // Step index 7 (the 8th step) returns NaN; checkpoints at 0, 5, 10.
    let err = format!("{:#}", regression_run(&run, 8, 1, Some(7)).unwrap_err());
    assert!(
        err.contains("step 8") && err.contains("not finite"),
        "{err}"
    );
    assert!(
        err.contains("checkpoint (step 5)") && err.contains("--resume"),
        "{err}"
    );
    let state = RunDir::new(&run).read_state().unwrap();
    assert_eq!(state.step, 5);
    let w = tensors(&run.join(MODEL_FILE));
    assert!(w.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())));
    let (_, meta) = read_tensors(&run.join(MODEL_FILE), &Device::Cpu).unwrap();
    assert_eq!(meta["step"], "5");
    // The metrics log stops at the failing step; the checkpoint resumes cleanly.
    let varmap = VarMap::new();
    let mut task = Regression::new(&varmap, 8, None);
    let sgd = OptimConfig::Sgd {
        lr: 0.1,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    };
    let opt = Optimizer::new(sgd, trainable_params(&varmap, |_| true)).unwrap();
    let mut t = Trainer::resume(
        RunDir::new(&run),
        varmap,
        opt,
        ScheduleConfig::Constant { warmup_steps: 0 },
        loop_config(12, 1, 5),
    )
    .unwrap();
    assert_eq!(t.state().step, 5);
    assert_eq!(t.run(&mut task).unwrap(), Outcome::Finished { step: 12 });
    let steps: Vec<u64> = read_metrics(&run.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>());
}

fn regression_sgd() -> OptimConfig {
    OptimConfig::Sgd {
        lr: 0.1,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    }
}

/// A fresh 12-step regression run checkpointing every step, killed (simulated) at `fault`
/// inside the save of step `fault_step` when one is given.
fn regression_run_with_fault(run: &Path, fault: Option<(u64, SaveFault)>) -> Result<Outcome> {
    let varmap = VarMap::new();
    let mut task = Regression::new(&varmap, 8, None);
    let opt = Optimizer::new(regression_sgd(), trainable_params(&varmap, |_| true))?;
    let mut t = Trainer::start(
        RunDir::new(run),
        &serde_json::json!({"task": "regression"}),
        varmap,
        opt,
        ScheduleConfig::Constant { warmup_steps: 0 },
        loop_config(12, 1, 1),
        1,
        false,
    )?;
    if let Some((step, f)) = fault {
        t = t.with_save_fault(step, f);
    }
    t.run(&mut task)
}

/// Resumes the regression run in `run` to step 12.
fn resume_regression(run: &Path) -> Result<(u64, Outcome)> {
    let varmap = VarMap::new();
    let mut task = Regression::new(&varmap, 8, None);
    let opt = Optimizer::new(regression_sgd(), trainable_params(&varmap, |_| true))?;
    let mut t = Trainer::resume(
        RunDir::new(run),
        varmap,
        opt,
        ScheduleConfig::Constant { warmup_steps: 0 },
        loop_config(12, 1, 1),
    )?;
    let from = t.state().step;
    Ok((from, t.run(&mut task)?))
}

/// The files a finished run leaves: the current checkpoint's, and the root copies.
fn final_files(run: &Path) -> (Named, Named, Value) {
    let dir = RunDir::new(run).checkpoint_dir().unwrap();
    assert_ne!(dir, run, "a run of this version has checkpoint folders");
    let model = tensors(&dir.join(MODEL_FILE));
    assert_eq!(tensors(&run.join(MODEL_FILE)), model, "root model copy");
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).unwrap()).unwrap();
    let root_state: Value =
        serde_json::from_slice(&std::fs::read(run.join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(state, root_state, "root state copy");
    (model, tensors(&dir.join(OPTIMIZER_FILE)), state)
}

#[test]
fn a_kill_at_any_file_operation_of_a_save_resumes_to_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    assert_eq!(
        regression_run_with_fault(&reference, None).unwrap(),
        Outcome::Finished { step: 12 }
    );
    let (model, optimizer, state) = final_files(&reference);
    // Only the current checkpoint folder is kept, and no temporary file.
    let folders: Vec<String> = std::fs::read_dir(reference.join(CHECKPOINTS_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(folders, ["step-12"]);
    assert!(!reference.join(OPTIMIZER_FILE).exists());
    no_temporaries(&reference);

    // Kill the save of step 6 before each of its file operations, and in the middle of each
    // write; every time, a resume continues from step 5 or 6 to the same end.
    let mut kills = 0;
    let mut torn_seen = 0;
    for op in 0.. {
        let mut fired = false;
        for torn in [false, true] {
            let run = dir.path().join(format!("k{op}-{torn}"));
            let fault = SaveFault { op, torn };
            match regression_run_with_fault(&run, Some((6, fault))) {
                Ok(out) => {
                    assert_eq!(out, Outcome::Finished { step: 12 });
                    continue;
                }
                Err(e) => assert!(
                    e.downcast_ref::<SimulatedKill>().is_some(),
                    "op {op}: {e:#}"
                ),
            }
            fired = true;
            kills += 1;
            let rd = RunDir::new(&run);
            let pointer = rd.pointer().unwrap().expect("a committed checkpoint");
            assert!(
                pointer.step == 5 || pointer.step == 6,
                "op {op}: {pointer:?}"
            );
            let torn_sets = rd.torn_checkpoints(Some(&pointer));
            if !torn_sets.is_empty() {
                torn_seen += 1;
                assert_eq!(pointer.step, 5, "op {op}: {torn_sets:?}");
            }
            let (from, out) = resume_regression(&run).unwrap();
            assert_eq!(from, pointer.step, "op {op} torn {torn}");
            assert_eq!(out, Outcome::Finished { step: 12 });
            let (m, o, s) = final_files(&run);
            assert_eq!(m, model, "op {op} torn {torn}: model");
            assert_eq!(o, optimizer, "op {op} torn {torn}: optimizer");
            assert_eq!(s, state, "op {op} torn {torn}: state");
            no_temporaries(&run);
            assert_eq!(
                std::fs::read_dir(run.join(CHECKPOINTS_DIR))
                    .unwrap()
                    .count(),
                1,
                "op {op}: leftovers of the torn save are removed"
            );
            std::fs::remove_dir_all(&run).unwrap();
        }
        if !fired {
            break;
        }
    }
    eprintln!("{kills} simulated kills, {torn_seen} left a newer torn set");
    // mkdir, 2 removals skipped (nothing stale), mkdir, 3 writes, rename, pointer write +
    // rename, link + rename, state copy write + rename, removal of step-5.
    assert!(kills >= 2 * 12, "{kills} simulated kills");
    assert!(torn_seen >= 6, "{torn_seen} kills left a newer torn set");
}

#[test]
fn a_kill_during_the_first_save_leaves_a_run_that_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r");
    let varmap = VarMap::new();
    let _task = Regression::new(&varmap, 8, None);
    let opt = Optimizer::new(regression_sgd(), trainable_params(&varmap, |_| true)).unwrap();
    let rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    let state = super::TrainState::new(1, 12, &rng);
    // Killed after the checkpoint folder is written but before checkpoint.json.
    let fault = SaveFault { op: 6, torn: false };
    let err = Checkpoint::save_with_fault(&RunDir::new(&run), &varmap, &opt, &state, Some(fault))
        .unwrap_err();
    assert!(err.downcast_ref::<SimulatedKill>().is_some(), "{err:#}");
    assert!(!RunDir::new(&run).has_checkpoint());
    let mut opt2 = Optimizer::new(regression_sgd(), trainable_params(&varmap, |_| true)).unwrap();
    let err = format!(
        "{:#}",
        Checkpoint::load(&RunDir::new(&run), &varmap, &mut opt2).unwrap_err()
    );
    assert!(
        err.contains("no checkpoint") && err.contains("first checkpoint"),
        "{err}"
    );
    // A fresh start in the same folder works and clears the leftovers.
    assert_eq!(
        regression_run_with_fault(&run, None).unwrap(),
        Outcome::Finished { step: 12 }
    );
    assert_eq!(
        std::fs::read_dir(run.join(CHECKPOINTS_DIR))
            .unwrap()
            .count(),
        1
    );
}

/// Turns a finished run into the layout written before checkpoint folders (model,
/// optimizer and state at the root).
fn to_root_layout(run: &Path) {
    let dir = RunDir::new(run).checkpoint_dir().unwrap();
    for f in [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE] {
        std::fs::remove_file(run.join(f)).ok();
        std::fs::copy(dir.join(f), run.join(f)).unwrap();
    }
    std::fs::remove_file(run.join(POINTER_FILE)).unwrap();
    std::fs::remove_dir_all(run.join(CHECKPOINTS_DIR)).unwrap();
}

#[test]
fn runs_of_the_root_layout_resume_and_convert() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    regression_run_with_fault(&a, None).unwrap();
    // b: stopped at step 7 (simulated kill in the save of step 8), then made an old run.
    let fault = SaveFault { op: 0, torn: false };
    regression_run_with_fault(&b, Some((8, fault))).unwrap_err();
    to_root_layout(&b);
    assert_eq!(RunDir::new(&b).read_state().unwrap().step, 7);
    let (from, out) = resume_regression(&b).unwrap();
    assert_eq!((from, out), (7, Outcome::Finished { step: 12 }));
    assert_eq!(final_files(&a), final_files(&b));
    assert!(!b.join(OPTIMIZER_FILE).exists(), "converted");
}

#[test]
fn a_torn_root_layout_checkpoint_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r");
    regression_run(&run, 8, 1, None).unwrap();
    to_root_layout(&run);
    // A crash of the old layout after the model of a later checkpoint was renamed into
    // place but before its state.json: model at step 15, state at 12.
    let varmap = VarMap::new();
    let _ = Regression::new(&varmap, 8, None);
    load_model(&run.join(MODEL_FILE), &varmap).unwrap();
    save_model(&run.join(MODEL_FILE), &varmap, 15).unwrap();
    let mut opt = Optimizer::new(regression_sgd(), trainable_params(&varmap, |_| true)).unwrap();
    let err = format!(
        "{:#}",
        Checkpoint::load(&RunDir::new(&run), &varmap, &mut opt).unwrap_err()
    );
    assert!(
        err.contains("inconsistent checkpoint") && err.contains("another --out"),
        "{err}"
    );
    // A missing state.json names the file.
    std::fs::remove_file(run.join(STATE_FILE)).unwrap();
    let err = format!(
        "{:#}",
        Checkpoint::load(&RunDir::new(&run), &varmap, &mut opt).unwrap_err()
    );
    assert!(err.contains("checkpoint.json"), "{err}");
}

/// A step whose loss is finite can still blow the weights up (the loss is computed before
/// the update): the next validation stops the run with an error naming the variable,
/// instead of failing somewhere inside the metrics.
#[test]
fn weights_blown_up_by_a_finite_loss_stop_before_validation() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("blown");
    let varmap = VarMap::new();
    let mut task = Regression::new(&varmap, 8, None);
    let sgd = OptimConfig::Sgd {
        lr: 1e300,
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    let opt = Optimizer::new(sgd, trainable_params(&varmap, |_| true)).unwrap();
    let mut cfg = loop_config(4, 1, 2);
    cfg.validate_every = 1;
    let err = Trainer::start(
        RunDir::new(&run),
        &serde_json::json!({"task": "regression"}),
        varmap,
        opt,
        ScheduleConfig::Constant { warmup_steps: 0 },
        cfg,
        1,
        false,
    )
    .unwrap()
    .run(&mut task)
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("step 1: model variable w after the update is not finite")
            && err.contains("checkpoint (step 0)")
            && err.contains("--lr"),
        "{err}"
    );
    // The kept checkpoint is the finite step-0 model.
    assert_eq!(RunDir::new(&run).read_state().unwrap().step, 0);
}

#[test]
fn a_non_finite_model_never_replaces_a_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r");
    regression_run(&run, 8, 1, None).unwrap();
    let rd = RunDir::new(&run);
    let before = final_files(&run);
    let varmap = VarMap::new();
    let _ = Regression::new(&varmap, 8, None);
    let mut opt = Optimizer::new(regression_sgd(), trainable_params(&varmap, |_| true)).unwrap();
    let mut state = Checkpoint::load(&rd, &varmap, &mut opt).unwrap();
    // A blown-up BatchNorm statistic and weight.
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    vb.get_with_hints(2, "bn.running_var", candle_nn::Init::Const(f64::INFINITY))
        .unwrap();
    state.step += 1;
    let err = format!(
        "{:#}",
        Checkpoint::save(&rd, &varmap, &opt, &state).unwrap_err()
    );
    assert!(
        err.contains("bn.running_var") && err.contains("not finite"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        save_model(&run.join("best.safetensors"), &varmap, 13).unwrap_err()
    );
    assert!(err.contains("bn.running_var"), "{err}");
    assert!(!run.join("best.safetensors").exists());
    assert_eq!(final_files(&run), before);
    assert_eq!(rd.pointer().unwrap().unwrap().step, 12);
}

#[test]
fn a_failed_start_leaves_no_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r");
    // 32 samples, batch 64.
    let err = format!("{:#}", regression_run(&run, 64, 1, None).unwrap_err());
    assert!(err.contains("fewer than one batch"), "{err}");
    assert!(!run.exists());
    // A NaN loss at the first step: nothing was trained, nothing is kept.
    let err = format!("{:#}", regression_run(&run, 8, 1, Some(0)).unwrap_err());
    assert!(
        err.contains("removed") && !err.contains("--resume"),
        "{err}"
    );
    assert!(!run.exists());
    // A folder that existed before (empty) is kept, emptied of the run's files.
    std::fs::create_dir(&run).unwrap();
    regression_run(&run, 64, 1, None).unwrap_err();
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0);
    // A non-empty folder that is not a run (a dataset, say) is refused, untouched.
    std::fs::write(run.join("1.json"), "{}").unwrap();
    let err = format!("{:#}", regression_run(&run, 8, 1, None).unwrap_err());
    assert!(err.contains("not a run folder"), "{err}");
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 1);
}

#[test]
fn short_cpu_pretraining_lowers_the_loss_and_lifts_top1() {
    // Tiny preset at 32², batch 16 (chance top-1 = 1/31), 150 AdamW steps on fringe images.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: PretrainConfig = resolve_layers(Some("tiny"), None).unwrap();
    fringe_input(&mut cfg);
    cfg.seed = 11;
    cfg.data.image_size = 32;
    cfg.data.batch_size = 16;
    cfg.data.val_samples = 32;
    cfg.optim = OptimConfig::Adamw {
        lr: 3e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 1e-4,
    };
    cfg.schedule = ScheduleConfig::Cosine {
        warmup_steps: 5,
        min_lr_ratio: 0.1,
    };
    cfg.augment.crop.scale = [0.3, 1.0];
    cfg.train.steps = Some(150);
    cfg.train.log_every = 10;
    cfg.train.validate_every = 50;
    cfg.train.checkpoint_every = 0;
    cfg.train.best_metric = Some(super::BestMetric {
        name: "val_top1".into(),
        mode: super::MetricMode::Max,
    });
    let source = FringeSource::new(cfg.seed, 2048, cfg.data.image_size);
    let run = dir.path().join("run");
    pretrain(
        &cfg,
        &source,
        RunDir::new(&run),
        false,
        &Device::Cpu,
        RunOptions::default(),
    )
    .unwrap();
    let records = read_metrics(&run.join("metrics.jsonl")).unwrap();
    let train: Vec<&Value> = records.iter().filter(|r| r["split"] == "train").collect();
    let val: Vec<&Value> = records.iter().filter(|r| r["split"] == "val").collect();
    let curve: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{} {} {:.3} {:.3}",
                r["split"],
                r["step"],
                r["loss"].as_f64().or(r["val_loss"].as_f64()).unwrap_or(0.0),
                r["top1"].as_f64().or(r["val_top1"].as_f64()).unwrap_or(0.0)
            )
        })
        .collect();
    eprintln!("{}", curve.join("\n"));
    let first = train.first().unwrap()["loss"].as_f64().unwrap();
    let last = train.last().unwrap()["loss"].as_f64().unwrap();
    // ln(31) ≈ 3.43 is the loss of uninformative embeddings.
    assert!(first > 2.9, "first window loss {first}");
    assert!(last < 0.85 * first, "loss {first} → {last}");
    let top1 = val.last().unwrap()["val_top1"].as_f64().unwrap();
    assert!(top1 > 0.15, "val top-1 {top1} (chance 0.032)");
    let last_top1 = train.last().unwrap()["top1"].as_f64().unwrap();
    assert!(last_top1 > 0.15, "train top-1 {last_top1}");
    // The best checkpoint follows val_top1.
    let state = RunDir::new(&run).read_state().unwrap();
    let best = state.best.expect("a best value");
    assert_eq!(best.metric, "val_top1");
    assert!(best.value >= top1 - 1e-12);
    assert!(run.join("best.safetensors").is_file());
    assert!(run.join("loss.png").is_file());
}
