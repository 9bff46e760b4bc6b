//! The embedding index of `insar-mm index` / `insar-mm search`.
//!
//! An index is a folder:
//!
//! ```text
//! INDEX/manifest.json            format, the model it belongs to (run path + model id), dim,
//!                                count, FNV-1a of the embedding bytes, one entry per image
//!                                (path, frame, dates, caption if known, id)
//! INDEX/embeddings.safetensors   one f32 tensor `embeddings` (count × dim), L2-normalised rows
//! ```
//!
//! Both files are written atomically, embeddings first; the manifest's count, dim and
//! checksum must match the embeddings on load, so a torn append, a truncated or edited file
//! is an error naming the file, never a silently wrong search. Search is exact brute force
//! (dot products of unit vectors = cosine), parallel over row blocks.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use rayon::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::data::atomic::write_atomic;

/// The `format` of manifests this version writes and reads.
pub const FORMAT: &str = "insar-mm-index/1";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const EMBEDDINGS_FILE: &str = "embeddings.safetensors";
const TENSOR: &str = "embeddings";

/// The model an index was built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// The run directory as given to `--model`.
    pub run: String,
    /// [`crate::train::retrieval::model_id`] of the run when the index was built.
    pub id: String,
}

/// One indexed image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The phase preview PNG.
    pub path: String,
    /// Sample id (the annotation's uniqueID, else the file name).
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
    /// `primary_secondary` (YYYYMMDD_YYYYMMDD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dates: Option<String>,
    /// The annotation's caption, when the image came with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub model: ModelRef,
    pub dim: usize,
    pub count: usize,
    /// FNV-1a 64 of the embeddings' little-endian bytes (hex).
    pub checksum: String,
    pub entries: Vec<Entry>,
}

/// An index in memory.
#[derive(Debug, Clone)]
pub struct Index {
    pub model: ModelRef,
    pub dim: usize,
    pub entries: Vec<Entry>,
    /// `entries.len() × dim`, row-major.
    pub embeddings: Vec<f32>,
}

fn checksum(data: &[f32]) -> String {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    format!("{:016x}", insar_mm_models::nn::init::fnv1a64(&bytes))
}

impl Index {
    /// A new index of `rows` (each `dim` long).
    pub fn new(
        model: ModelRef,
        dim: usize,
        entries: Vec<Entry>,
        embeddings: Vec<f32>,
    ) -> Result<Self> {
        ensure!(dim > 0, "embedding dimension 0");
        ensure!(
            embeddings.len() == entries.len() * dim,
            "{} values for {} entries of dimension {dim}",
            embeddings.len(),
            entries.len()
        );
        ensure!(
            embeddings.iter().all(|v| v.is_finite()),
            "non-finite embedding values"
        );
        Ok(Self {
            model,
            dim,
            entries,
            embeddings,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.embeddings[i * self.dim..(i + 1) * self.dim]
    }

    /// Adds rows (same model and dimension).
    pub fn append(&mut self, other: Index) -> Result<()> {
        ensure!(
            other.model.id == self.model.id,
            "the index belongs to model {} ({}), the new embeddings to model {} ({}): \
             build a new index for another model",
            self.model.id,
            self.model.run,
            other.model.id,
            other.model.run
        );
        ensure!(
            other.dim == self.dim,
            "dimension mismatch: the index holds {}-dimensional embeddings, the new ones are {}",
            self.dim,
            other.dim
        );
        self.entries.extend(other.entries);
        self.embeddings.extend(other.embeddings);
        Ok(())
    }

    /// Writes `dir/embeddings.safetensors` then `dir/manifest.json` (each atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let bytes: Vec<u8> = self
            .embeddings
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let view = TensorView::new(Dtype::F32, vec![self.len(), self.dim], &bytes)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let st =
            safetensors::serialize([(TENSOR, view)], None).map_err(|e| anyhow::anyhow!("{e}"))?;
        write_atomic(&dir.join(EMBEDDINGS_FILE), &st)?;
        let manifest = Manifest {
            format: FORMAT.into(),
            model: self.model.clone(),
            dim: self.dim,
            count: self.len(),
            checksum: checksum(&self.embeddings),
            entries: self.entries.clone(),
        };
        write_atomic(
            &dir.join(MANIFEST_FILE),
            serde_json::to_string_pretty(&manifest)?.as_bytes(),
        )
    }

    /// Reads an index folder, checking the manifest against the embeddings.
    pub fn load(dir: &Path) -> Result<Self> {
        ensure!(
            dir.is_dir(),
            "--index {}: no such index folder (build one with `insar-mm index`)",
            dir.display()
        );
        let mpath = dir.join(MANIFEST_FILE);
        let text = std::fs::read(&mpath)
            .with_context(|| format!("{}: cannot read (not an index folder?)", mpath.display()))?;
        let m: Manifest = serde_json::from_slice(&text).with_context(|| {
            format!(
                "{}: corrupt or truncated index manifest (rebuild the index)",
                mpath.display()
            )
        })?;
        ensure!(
            m.format == FORMAT,
            "{}: index format {:?}, this version reads {FORMAT:?}",
            mpath.display(),
            m.format
        );
        ensure!(
            m.entries.len() == m.count,
            "{}: count {} but {} entries (corrupt index; rebuild it)",
            mpath.display(),
            m.count,
            m.entries.len()
        );
        let epath = dir.join(EMBEDDINGS_FILE);
        let bytes =
            std::fs::read(&epath).with_context(|| format!("{}: cannot read", epath.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{}: corrupt or truncated embeddings file ({e}); rebuild the index",
                epath.display()
            )
        })?;
        let t = st
            .tensor(TENSOR)
            .map_err(|e| anyhow::anyhow!("{}: no `{TENSOR}` tensor ({e})", epath.display()))?;
        ensure!(
            t.dtype() == Dtype::F32,
            "{}: embeddings are {:?}, expected F32",
            epath.display(),
            t.dtype()
        );
        ensure!(
            t.shape() == [m.count, m.dim],
            "{}: embeddings of shape {:?} but the manifest says {} × {} (dimension or count \
             mismatch; rebuild the index)",
            epath.display(),
            t.shape(),
            m.count,
            m.dim
        );
        let data: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if checksum(&data) != m.checksum {
            bail!(
                "{}: the embeddings do not match the manifest's checksum (a torn append or an \
                 edited file); rebuild the index",
                epath.display()
            );
        }
        Index::new(m.model, m.dim, m.entries, data).with_context(|| format!("{}", epath.display()))
    }

    /// Errors unless the index was built by the model `id` (`run` for the message).
    pub fn check_model(&self, id: &str, run: &Path, index: &Path) -> Result<()> {
        ensure!(
            self.model.id == id,
            "--index {} was built with model {} ({}), not with --model {} ({id}): query an index \
             with the model that built it, or rebuild it",
            index.display(),
            self.model.id,
            self.model.run,
            run.display()
        );
        Ok(())
    }

    /// The `k` rows most similar to `query` (dot product), best first; ties keep row order.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(usize, f32)>> {
        ensure!(k > 0, "--top must be at least 1");
        ensure!(
            query.len() == self.dim,
            "dimension mismatch: the query embedding has {} values, the index {}",
            query.len(),
            self.dim
        );
        Ok(top_k(&self.embeddings, self.dim, query, k))
    }
}

/// Dot product with eight accumulators (vectorises without `-ffast-math`).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Exact top-`k` of `rows · query` over row-major `rows` of width `dim`, best first (ties:
/// lower row first). Parallel over blocks of rows, each keeping its own top `k`.
pub fn top_k(rows: &[f32], dim: usize, query: &[f32], k: usize) -> Vec<(usize, f32)> {
    const BLOCK: usize = 8192;
    let n = rows.len() / dim.max(1);
    let better = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let mut best: Vec<(usize, f32)> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|blk| {
            let start = blk * BLOCK;
            let end = (start + BLOCK).min(n);
            let mut local: Vec<(usize, f32)> = Vec::with_capacity(2 * k + 1);
            let mut floor = f32::NEG_INFINITY;
            for i in start..end {
                let s = dot(&rows[i * dim..(i + 1) * dim], query);
                if local.len() < k || s > floor {
                    local.push((i, s));
                    if local.len() >= 2 * k.max(8) {
                        local.sort_by(better);
                        local.truncate(k);
                        floor = local.last().map_or(f32::NEG_INFINITY, |x| x.1);
                    }
                }
            }
            local.sort_by(better);
            local.truncate(k);
            local
        })
        .flatten()
        .collect();
    best.sort_by(better);
    best.truncate(k);
    best
}

/// Frame ID and `primary_secondary` dates of a LiCSAR-layout path
/// (`<frame>/interferograms/<p>_<s>/<file>`), when it has that layout.
pub fn frame_and_dates(path: &Path) -> (Option<String>, Option<String>) {
    let parts: Vec<&str> = path.iter().filter_map(|c| c.to_str()).collect::<Vec<_>>();
    let n = parts.len();
    if n >= 4 && parts[n - 3] == "interferograms" {
        let dates = parts[n - 2];
        let ok = dates.len() == 17
            && dates.as_bytes()[8] == b'_'
            && dates
                .bytes()
                .enumerate()
                .all(|(i, c)| i == 8 || c.is_ascii_digit());
        if ok {
            return (Some(parts[n - 4].to_string()), Some(dates.to_string()));
        }
    }
    (None, None)
}

/// The default index of an `insar-mm index --out` path given as a folder.
pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(id: &str) -> ModelRef {
        ModelRef {
            run: "runs/r".into(),
            id: id.into(),
        }
    }

    fn entry(i: usize) -> Entry {
        Entry {
            path: format!("img{i}.png"),
            id: i.to_string(),
            frame: None,
            dates: None,
            caption: Some(format!("caption {i}")),
        }
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn build_append_search_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("idx");
        let a = Index::new(
            model("m1"),
            3,
            vec![entry(0), entry(1)],
            [unit(&[1., 0., 0.]), unit(&[0., 1., 0.])].concat(),
        )
        .unwrap();
        a.save(&p).unwrap();
        let mut back = Index::load(&p).unwrap();
        assert_eq!(back.len(), 2);
        back.append(Index::new(model("m1"), 3, vec![entry(2)], unit(&[1., 1., 0.])).unwrap())
            .unwrap();
        back.save(&p).unwrap();
        let back = Index::load(&p).unwrap();
        assert_eq!(back.len(), 3);
        let hits = back.search(&unit(&[1., 0.2, 0.]), 2).unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(back.entries[2].caption.as_deref(), Some("caption 2"));
        // Another model, another dimension, --top 0, a query of the wrong length.
        let mut other = back.clone();
        let err = other
            .append(Index::new(model("m2"), 3, vec![entry(3)], unit(&[0., 0., 1.])).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("m2"), "{err}");
        let err = other
            .append(Index::new(model("m1"), 2, vec![entry(3)], unit(&[0., 1.])).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("dimension"), "{err}");
        assert!(back.search(&unit(&[1., 0., 0.]), 0).is_err());
        assert!(back
            .search(&[1., 0.], 1)
            .unwrap_err()
            .to_string()
            .contains("dimension"));
        assert!(back.check_model("m2", Path::new("runs/x"), &p).is_err());
        // Truncated embeddings.
        let e = p.join(EMBEDDINGS_FILE);
        let bytes = std::fs::read(&e).unwrap();
        std::fs::write(&e, &bytes[..bytes.len() - 5]).unwrap();
        let err = format!("{:#}", Index::load(&p).unwrap_err());
        assert!(err.contains("corrupt or truncated"), "{err}");
        // Edited values: the checksum catches them.
        let mut edited = bytes.clone();
        let last = edited.len() - 1;
        edited[last] ^= 0x01;
        std::fs::write(&e, &edited).unwrap();
        let err = format!("{:#}", Index::load(&p).unwrap_err());
        assert!(err.contains("checksum"), "{err}");
        // A truncated manifest.
        std::fs::write(&e, &bytes).unwrap();
        let m = p.join(MANIFEST_FILE);
        let text = std::fs::read(&m).unwrap();
        std::fs::write(&m, &text[..text.len() / 2]).unwrap();
        let err = format!("{:#}", Index::load(&p).unwrap_err());
        assert!(err.contains("corrupt or truncated"), "{err}");
    }

    #[test]
    fn top_k_matches_a_full_sort() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (n, d) = (20_000, 13);
        let rows: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let q: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let got = top_k(&rows, d, &q, 10);
        let mut all: Vec<(usize, f32)> = (0..n)
            .map(|i| (i, dot(&rows[i * d..(i + 1) * d], &q)))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(got, all[..10].to_vec());
        assert_eq!(top_k(&rows[..3 * d], d, &q, 10).len(), 3);
    }

    #[test]
    fn frame_and_dates_from_the_licsar_layout() {
        let p = Path::new("data/001D_05089_131313/interferograms/20200101_20200113/20200101_20200113.geo.diff.png");
        assert_eq!(
            frame_and_dates(p),
            (
                Some("001D_05089_131313".into()),
                Some("20200101_20200113".into())
            )
        );
        assert_eq!(frame_and_dates(Path::new("x/InSAR.png")), (None, None));
    }
}
