//! CPU vs CUDA: the heads' forward passes, losses and gradients agree to fp32 rounding.
//!
//! Built only with `--features cuda` and run only where a GPU is (ignored otherwise):
//!   ../shared/gpu/cuda-build.sh --release --features cuda --test cuda_consistency
//!   (on the GPU machine) target/release/deps/cuda_consistency-* --ignored
//! Why: the same segmentation weights scored on the same data gave per-class IoUs a few
//! hundredths apart on an H200 and on the CPU (docs/results/segmentation-study.md). The CPU uses
//! fused kernels (batch norm, max pooling) where CUDA uses composed Candle ops, and Candle's
//! CUDA kernels are otherwise untested here.
#![cfg(feature = "cuda")]

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarMap;
use insar_mm_models::encoder::EncoderConfig;
use insar_mm_models::heads::{Classifier, ClassifierConfig, Segmenter, SegmenterConfig};
use insar_mm_models::nn::check::seeded_randn;
use insar_mm_models::nn::init::seeded_var_builder;

/// What one device computed: train-mode logits and losses of three steps (running
/// statistics move), every variable's gradient at the last step, eval-mode outputs.
struct Run {
    train_logits: Tensor,
    losses: Vec<f32>,
    grads: BTreeMap<String, Tensor>,
    eval_out: Tensor,
}

fn gradients(varmap: &VarMap, loss: &Tensor) -> Result<BTreeMap<String, Tensor>> {
    let grads = loss.backward()?;
    let data = varmap.data().lock().expect("varmap lock");
    let mut out = BTreeMap::new();
    for (name, var) in data.iter() {
        if let Some(g) = grads.get(var.as_tensor()) {
            out.insert(name.clone(), g.to_device(&Device::Cpu)?);
        }
    }
    Ok(out)
}

/// Three train-mode steps (`forward` then `loss`), the gradients of the last loss, then
/// `predict` in eval mode; everything brought to the CPU.
fn three_steps(
    varmap: &VarMap,
    forward: impl Fn() -> Result<Tensor>,
    loss: impl Fn(&Tensor) -> Result<Tensor>,
    predict: impl Fn() -> Result<Tensor>,
) -> Result<Run> {
    let mut losses = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let logits = forward()?;
        let l = loss(&logits)?;
        losses.push(l.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        last = Some((logits, l));
    }
    let (logits, l) = last.expect("three steps");
    Ok(Run {
        train_logits: logits.to_device(&Device::Cpu)?,
        losses,
        grads: gradients(varmap, &l)?,
        eval_out: predict()?.to_device(&Device::Cpu)?,
    })
}

fn segmenter_run(device: &Device) -> Result<Run> {
    let varmap = VarMap::new();
    let cfg = SegmenterConfig::new(EncoderConfig::tiny().with_in_channels(3));
    let model = Segmenter::new(&cfg, seeded_var_builder(&varmap, 7, DType::F32, device))?;
    let x = seeded_randn((4, 3, 112, 112), 1, device)?.to_dtype(DType::F32)?;
    let ids = (seeded_randn((4, 112, 112), 2, &Device::Cpu)?.abs()? * 2.5)?
        .floor()?
        .clamp(0.0, 6.0)?
        .to_dtype(DType::U32)?
        .to_device(device)?;
    three_steps(
        &varmap,
        || model.forward_t(&x, true),
        |logits| model.loss(logits, &ids),
        || model.predict(&x),
    )
}

fn classifier_run(device: &Device) -> Result<Run> {
    let varmap = VarMap::new();
    let cfg = ClassifierConfig::new(EncoderConfig::tiny().with_in_channels(3));
    let model = Classifier::new(&cfg, seeded_var_builder(&varmap, 7, DType::F32, device))?;
    let x = seeded_randn((8, 3, 112, 112), 3, device)?.to_dtype(DType::F32)?;
    let targets = seeded_randn((8, 10), 4, &Device::Cpu)?
        .gt(0.0)?
        .to_dtype(DType::F32)?
        .to_device(device)?;
    three_steps(
        &varmap,
        || model.forward_t(&x, true),
        |logits| model.loss(logits, &targets),
        || model.predict(&x),
    )
}

/// `max |a − b| / max(max |a|, 1e-12)`.
fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F64)?;
    let b = b.to_dtype(DType::F64)?;
    let diff = (&a - &b)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let scale = a.abs()?.max_all()?.to_scalar::<f64>()?.max(1e-12);
    Ok(diff / scale)
}

fn compare(name: &str, cpu: &Run, gpu: &Run) -> Result<()> {
    for (step, (a, b)) in cpu.losses.iter().zip(&gpu.losses).enumerate() {
        let rel = ((a - b) / a.abs().max(1e-12)).abs();
        assert!(rel < 1e-4, "{name}: loss of step {step}: cpu {a} cuda {b}");
    }
    let logits = rel_diff(&cpu.train_logits, &gpu.train_logits)?;
    assert!(
        logits < 1e-4,
        "{name}: train-mode logits differ by {logits:e} (relative)"
    );
    let eval = rel_diff(&cpu.eval_out, &gpu.eval_out)?;
    assert!(
        eval < 1e-4,
        "{name}: eval-mode outputs differ by {eval:e} (relative)"
    );
    assert_eq!(
        cpu.grads.keys().collect::<Vec<_>>(),
        gpu.grads.keys().collect::<Vec<_>>(),
        "{name}: the same variables get gradients"
    );
    let mut worst = (0.0, String::new());
    for (var, g) in &cpu.grads {
        let d = rel_diff(g, &gpu.grads[var])?;
        if d > worst.0 {
            worst = (d, var.clone());
        }
    }
    assert!(
        worst.0 < 1e-3,
        "{name}: gradient of {} differs by {:e} (relative)",
        worst.1,
        worst.0
    );
    Ok(())
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn segmenter_matches_on_cpu_and_cuda() -> Result<()> {
    let cuda = Device::new_cuda(0)?;
    compare(
        "segmenter",
        &segmenter_run(&Device::Cpu)?,
        &segmenter_run(&cuda)?,
    )
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn classifier_matches_on_cpu_and_cuda() -> Result<()> {
    let cuda = Device::new_cuda(0)?;
    compare(
        "classifier",
        &classifier_run(&Device::Cpu)?,
        &classifier_run(&cuda)?,
    )
}
