//! `insar-mm embed --model RUN --data DIR --out FEATS.npy`: pooled encoder features of every
//! sample, one float32 row per sample (for linear probes, retrieval and FID-InSAR).
//!
//! The row order is the data source's order; `FEATS.ids.txt` next to the `.npy` lists the
//! sample ids, one per line, in the same order.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::DType;
use clap::Args;

use super::GlobalArgs;
use insar_mm::data::atomic::write_atomic;
use insar_mm::train::checkpoint::{load_model, RunDir, BEST_MODEL_FILE, MODEL_FILE};
use insar_mm::train::config::PretrainConfig;
use insar_mm::train::hub::{resolve_model, RunFiles};
use insar_mm::train::pretrain::{build_model, fit, open_data};

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Run directory of `train pretrain` (config.json + model.safetensors), or a Hugging Face
    /// Hub id `owner/name[@revision]` (fetched into the HF cache; cache only with
    /// HF_HUB_OFFLINE=1).
    #[arg(long, value_name = "RUN")]
    pub model: PathBuf,
    /// Dataset directory or patch folder to embed.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Output `.npy` (float32, samples × features); ids go to `<stem>.ids.txt`.
    #[arg(long, value_name = "FEATS.npy")]
    pub out: PathBuf,
    /// Images per forward pass.
    #[arg(long, value_name = "B", default_value_t = 64)]
    pub batch_size: usize,
    /// Input side in pixels [default: the run's data.image_size].
    #[arg(long, value_name = "S")]
    pub image_size: Option<usize>,
    /// Use the run's best checkpoint (best.safetensors) instead of the last.
    #[arg(long)]
    pub best: bool,
}

/// `.npy` (format 1.0) bytes of a C-order float32 matrix.
pub fn npy_f32(rows: usize, cols: usize, data: &[f32]) -> Result<Vec<u8>> {
    ensure!(
        data.len() == rows * cols,
        "{} values for a {rows}×{cols} matrix",
        data.len()
    );
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + header length (2) + header, padded with spaces and ended
    // by a newline to a multiple of 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

fn ids_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "features".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}.ids.txt"))
}

pub fn run(args: EmbedArgs, global: &GlobalArgs) -> Result<()> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let device = insar_mm::device::open(global.device)?;
    let files = if args.best {
        RunFiles::PRETRAIN_BEST
    } else {
        RunFiles::PRETRAIN_LAST
    };
    let run = RunDir::new(resolve_model(&args.model, &files, global.show_progress())?);
    let cfg: PretrainConfig = run.read_checked_config(PretrainConfig::validate)?;
    let (varmap, model) = build_model(&cfg, &device)?;
    let weights = run.path(if args.best {
        BEST_MODEL_FILE
    } else {
        MODEL_FILE
    });
    load_model(&weights, &varmap).with_context(|| format!("--model {}", args.model.display()))?;
    let size = args.image_size.unwrap_or(cfg.data.image_size);
    let source = open_data(&args.data, cfg.data.input_format)?;
    let n = source.len();
    ensure!(n > 0, "--data {}: no samples", args.data.display());
    let dim = cfg.model.encoder()?.out_dim();
    let pb = insar_mm::progress::bar(n as u64, "samples", global.show_progress());
    let mut feats = Vec::with_capacity(n * dim);
    let mut ids = String::new();
    let indices: Vec<usize> = (0..n).collect();
    for chunk in indices.chunks(args.batch_size) {
        let samples: Vec<insar_mm::data::sample::Sample> = {
            use rayon::prelude::*;
            chunk
                .par_iter()
                .map(|&i| {
                    source
                        .get(i)
                        .with_context(|| format!("--data {}: sample {i}", args.data.display()))
                })
                .collect::<Result<_>>()?
        };
        let mut images = Vec::with_capacity(samples.len());
        for s in &samples {
            ids.push_str(&s.id);
            ids.push('\n');
            images.push(fit(s.image.clone(), size)?);
        }
        let refs: Vec<&insar_mm::data::array::Image> = images.iter().collect();
        let x = insar_mm::data::array::batch_tensor(&refs, &device)?;
        let pooled = model.encoder().forward_t(&x, false)?.pooled;
        let rows: Vec<f32> = pooled.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        feats.extend_from_slice(&rows);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    write_atomic(&args.out, &npy_f32(n, dim, &feats)?)?;
    write_atomic(&ids_path(&args.out), ids.as_bytes())?;
    log::info!(
        "{n} × {dim} features → {} (ids: {})",
        args.out.display(),
        ids_path(&args.out).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_data_little_endian() {
        let bytes = npy_f32(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
        assert!(
            header.contains("'shape': (2, 3)") && header.ends_with('\n'),
            "{header}"
        );
        let data = &bytes[10 + hlen..];
        assert_eq!(data.len(), 24);
        assert_eq!(f32::from_le_bytes(data[20..24].try_into().unwrap()), 6.5);
        assert!(npy_f32(2, 2, &[1.0]).is_err());
        assert_eq!(
            ids_path(Path::new("out/feats.npy")),
            Path::new("out/feats.ids.txt")
        );
    }
}
