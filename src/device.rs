//! Compute-device selection (`--device cpu|cuda|metal`).

use anyhow::{bail, Result};
use candle_core::Device;

/// The backend a command runs on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
    Metal,
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Metal => "metal",
        })
    }
}

/// Opens the requested device (GPU ordinal 0), or explains why it cannot.
pub fn open(kind: DeviceKind) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => open_cuda(),
        DeviceKind::Metal => open_metal(),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Device> {
    Device::new_cuda(0).map_err(|e| {
        anyhow::anyhow!("--device cuda: cannot open CUDA device 0 ({e}); is a CUDA 13 driver and runtime installed?")
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Device> {
    bail!("--device cuda: this binary was built without CUDA support; rebuild with `cargo build --release --features cuda` (or `cudnn`)")
}

#[cfg(feature = "metal")]
fn open_metal() -> Result<Device> {
    Device::new_metal(0)
        .map_err(|e| anyhow::anyhow!("--device metal: cannot open Metal device 0 ({e})"))
}

#[cfg(not(feature = "metal"))]
fn open_metal() -> Result<Device> {
    bail!("--device metal: this binary was built without Metal support; rebuild with `cargo build --release --features metal`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_always_opens() {
        assert!(open(DeviceKind::Cpu).unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_explains_rebuild() {
        let err = open(DeviceKind::Cuda).unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
