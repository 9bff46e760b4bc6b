//! Fréchet Inception Distance and Kernel Inception Distance on feature matrices.
//!
//! FID = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂), with Σ the unbiased covariance
//! (ddof = 1) as pytorch-fid / clean-fid compute it.
//!
//! The trace of the square root is computed exactly, without an iterative matrix square
//! root, and stays exact for rank-deficient covariances (n < dimension, constant features):
//! - from statistics: `tr √(Σ₁Σ₂) = Σᵢ √λᵢ(Σ₁^½ Σ₂ Σ₁^½)` with two symmetric
//!   eigendecompositions (negative round-off eigenvalues clipped to 0);
//! - from features with few samples (`n₁n₂·min(n₁,n₂) < d³`): the sum of the singular
//!   values of `X̃₁X̃₂ᵀ / √((n₁−1)(n₂−1))` (X̃ = centred features), the most accurate form.
//!
//! [`FidMode::PytorchFid`] reproduces pytorch-fid's fallback: when its SciPy `sqrtm` of
//! Σ₁Σ₂ is not finite, pytorch-fid retries with `(Σ₁+εI)(Σ₂+εI)`, ε = 1e-6 (the offset only
//! inside the square root; the traces use the original Σ). SciPy ≤ 1.15 fails exactly when
//! the product has exact zero eigenvalues in unrelated places, i.e. when each set has a
//! constant ("dead") feature column that is not constant in the other set (in our trials
//! with SciPy 1.11.4 it failed on most, not all, such inputs and never on others, n < d
//! included). This mode retries in exactly that case and otherwise equals the exact value;
//! [`Fid::without_retry`] keeps the value without the retry. SciPy ≥ 1.16 never fails, so
//! pytorch-fid's own number for such inputs depends on the installed SciPy version.

use std::path::Path;

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatRef, Par, Side};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::npy::{self, Matrix};

/// pytorch-fid's offset for its retry.
pub const PYTORCH_FID_EPS: f64 = 1e-6;

/// How the square-root term is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FidMode {
    /// Exact trace of the matrix square root (robust for singular covariances).
    Exact,
    /// pytorch-fid's ε = 1e-6 retry when its SciPy square root would fail.
    PytorchFid,
}

/// Mean and covariance of a feature set (what pytorch-fid saves as `mu`/`sigma`).
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Feature dimension.
    pub dim: usize,
    /// Number of samples the statistics came from (0 if unknown).
    pub n: usize,
    /// Mean, `dim` values.
    pub mu: Vec<f64>,
    /// Covariance (ddof = 1), `dim × dim`, row-major.
    pub sigma: Vec<f64>,
}

fn parallelism() -> Par {
    let threads = rayon::current_num_threads();
    if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    }
}

fn to_mat(m: &Matrix) -> Mat<f64> {
    Mat::from_fn(m.rows, m.cols, |i, j| m.data[i * m.cols + j])
}

/// Checks a feature matrix: at least 2 rows, finite values.
fn check_features(x: &Matrix, what: &str) -> Result<()> {
    if x.rows < 2 {
        return Err(EvalError::input(format!(
            "{what}: {} sample(s); FID needs at least 2 (rows = samples)",
            x.rows
        )));
    }
    if x.cols == 0 {
        return Err(EvalError::input(format!("{what}: zero feature columns")));
    }
    x.check_finite(what)
}

fn check_pair(a: &Matrix, b: &Matrix) -> Result<()> {
    check_features(a, "real features")?;
    check_features(b, "fake features")?;
    if a.cols != b.cols {
        return Err(EvalError::input(format!(
            "feature dimensions differ: real has {} columns, fake has {}",
            a.cols, b.cols
        )));
    }
    Ok(())
}

/// Centred features and their mean.
fn centred(x: &Matrix) -> (Mat<f64>, Vec<f64>) {
    let mut mu = vec![0.0; x.cols];
    for i in 0..x.rows {
        for (m, v) in mu.iter_mut().zip(x.row(i)) {
            *m += v;
        }
    }
    for m in mu.iter_mut() {
        *m /= x.rows as f64;
    }
    let xc = Mat::from_fn(x.rows, x.cols, |i, j| x.data[i * x.cols + j] - mu[j]);
    (xc, mu)
}

impl Stats {
    /// Mean and unbiased covariance of `x` (rows = samples).
    pub fn from_features(x: &Matrix) -> Result<Stats> {
        check_features(x, "features")?;
        let (xc, mu) = centred(x);
        let d = x.cols;
        // Only the lower triangle (half the work of a full product), mirrored.
        let mut cov = Mat::<f64>::zeros(d, d);
        triangular::matmul(
            cov.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            xc.transpose(),
            BlockStructure::Rectangular,
            xc.as_ref(),
            BlockStructure::Rectangular,
            1.0 / (x.rows as f64 - 1.0),
            parallelism(),
        );
        let mut sigma = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                sigma[i * d + j] = if i >= j { cov[(i, j)] } else { cov[(j, i)] };
            }
        }
        Ok(Stats {
            dim: d,
            n: x.rows,
            mu,
            sigma,
        })
    }

    fn sigma_mat(&self) -> Mat<f64> {
        Mat::from_fn(self.dim, self.dim, |i, j| self.sigma[i * self.dim + j])
    }

    fn trace(&self) -> f64 {
        (0..self.dim).map(|i| self.sigma[i * self.dim + i]).sum()
    }

    /// Saves `mu` and `sigma` as a `.npz` (the keys pytorch-fid uses; `numpy.load` reads it).
    pub fn save(&self, path: &Path) -> Result<()> {
        let n = [self.n as f64];
        npy::write_npz(
            path,
            &[
                ("mu", vec![self.dim], &self.mu),
                ("sigma", vec![self.dim, self.dim], &self.sigma),
                ("n", vec![1], &n),
            ],
        )
    }

    /// Loads statistics saved by [`Stats::save`] or by pytorch-fid (`--save-stats`).
    pub fn load(path: &Path) -> Result<Stats> {
        let arrays = npy::read_npz(path, &["mu", "sigma"])?;
        let (mu, sigma) = (&arrays[0], &arrays[1]);
        let d = mu.data.len();
        if sigma.rows != d || sigma.cols != d {
            return Err(EvalError::file(
                path,
                format!(
                    "'sigma' is {}×{} but 'mu' has {d} values",
                    sigma.rows, sigma.cols
                ),
            ));
        }
        let n = npy::read_npz(path, &["n"])
            .ok()
            .and_then(|a| a[0].data.first().copied())
            .unwrap_or(0.0) as usize;
        let stats = Stats {
            dim: d,
            n,
            mu: mu.data.clone(),
            sigma: sigma.data.clone(),
        };
        if let Some(k) = stats
            .mu
            .iter()
            .chain(&stats.sigma)
            .position(|v| !v.is_finite())
        {
            return Err(EvalError::file(
                path,
                format!("non-finite statistic (value #{k})"),
            ));
        }
        Ok(stats)
    }
}

/// An FID value and how it was obtained.
#[derive(Debug, Clone, Serialize)]
pub struct Fid {
    /// The distance.
    pub fid: f64,
    /// The mode.
    pub mode: FidMode,
    /// `"eigh"` (from statistics) or `"gram-svd"` (from few samples).
    pub method: &'static str,
    /// Whether the pytorch-fid ε retry was applied.
    pub eps_retry: bool,
    /// With the retry applied: the exact value without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without_retry: Option<f64>,
}

/// Eigenvalues of a symmetric matrix (lower triangle used).
fn eigenvalues(m: MatRef<f64>) -> Result<Vec<f64>> {
    m.self_adjoint_eigenvalues(Side::Lower)
        .map_err(|e| EvalError::input(format!("eigendecomposition did not converge: {e:?}")))
}

/// `tr √(Σ₁Σ₂)` via `Σ₁^½ Σ₂ Σ₁^½` (both symmetric positive semi-definite).
fn trace_sqrt_product(s1: &Mat<f64>, s2: &Mat<f64>) -> Result<f64> {
    let d = s1.nrows();
    let evd = s1
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| EvalError::input(format!("eigendecomposition did not converge: {e:?}")))?;
    let u = evd.U();
    let s = evd.S().column_vector();
    // Σ₁^½ = U diag(√λ) Uᵀ.
    let scaled = Mat::from_fn(d, d, |i, j| u[(i, j)] * s[j].max(0.0).sqrt());
    let par = parallelism();
    let mut root = Mat::<f64>::zeros(d, d);
    matmul(
        root.as_mut(),
        Accum::Replace,
        scaled.as_ref(),
        u.transpose(),
        1.0,
        par,
    );
    let mut tmp = Mat::<f64>::zeros(d, d);
    matmul(
        tmp.as_mut(),
        Accum::Replace,
        root.as_ref(),
        s2.as_ref(),
        1.0,
        par,
    );
    let mut m = Mat::<f64>::zeros(d, d);
    matmul(
        m.as_mut(),
        Accum::Replace,
        tmp.as_ref(),
        root.as_ref(),
        1.0,
        par,
    );
    let sym = Mat::from_fn(d, d, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
    Ok(eigenvalues(sym.as_ref())?
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum())
}

fn mean_term(mu1: &[f64], mu2: &[f64]) -> f64 {
    mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum()
}

/// Number of exactly-zero variances (constant features).
fn dead_columns(s: &Stats) -> Vec<usize> {
    (0..s.dim)
        .filter(|&i| s.sigma[i * s.dim + i] == 0.0)
        .collect()
}

/// Whether pytorch-fid's retry applies: each set has a constant feature that is not
/// constant in the other (the singular products on which SciPy ≤ 1.15's `sqrtm` fails).
fn needs_retry(s1: &Stats, s2: &Stats) -> bool {
    let (d1, d2) = (dead_columns(s1), dead_columns(s2));
    d1.iter().any(|c| !d2.contains(c)) && d2.iter().any(|c| !d1.contains(c))
}

/// FID from two sets of statistics.
pub fn fid_from_stats(s1: &Stats, s2: &Stats, mode: FidMode) -> Result<Fid> {
    if s1.dim != s2.dim {
        return Err(EvalError::input(format!(
            "statistics dimensions differ: {} vs {}",
            s1.dim, s2.dim
        )));
    }
    let retry = mode == FidMode::PytorchFid && needs_retry(s1, s2);
    let (mut a, mut b) = (s1.sigma_mat(), s2.sigma_mat());
    if retry {
        for i in 0..s1.dim {
            a[(i, i)] += PYTORCH_FID_EPS;
            b[(i, i)] += PYTORCH_FID_EPS;
        }
    }
    let tr = trace_sqrt_product(&a, &b)?;
    let without_retry = if retry {
        Some(fid_from_stats(s1, s2, FidMode::Exact)?.fid)
    } else {
        None
    };
    Ok(Fid {
        fid: mean_term(&s1.mu, &s2.mu) + s1.trace() + s2.trace() - 2.0 * tr,
        mode,
        method: "eigh",
        eps_retry: retry,
        without_retry,
    })
}

/// FID between two feature matrices (rows = samples, same number of columns).
pub fn fid(real: &Matrix, fake: &Matrix, mode: FidMode) -> Result<Fid> {
    check_pair(real, fake)?;
    let (n1, n2, d) = (real.rows as f64, fake.rows as f64, real.cols as f64);
    let s1 = Stats::from_features(real)?;
    let s2 = Stats::from_features(fake)?;
    let retry = mode == FidMode::PytorchFid && needs_retry(&s1, &s2);
    if retry || n1 * n2 * n1.min(n2) >= d * d * d {
        return fid_from_stats(&s1, &s2, mode);
    }
    // Few samples: tr √(Σ₁Σ₂) = ‖A₁A₂ᵀ‖_* with Aₖ = X̃ₖ/√(nₖ−1).
    let (x1, _) = centred(real);
    let (x2, _) = centred(fake);
    let mut g = Mat::<f64>::zeros(real.rows, fake.rows);
    matmul(
        g.as_mut(),
        Accum::Replace,
        x1.as_ref(),
        x2.transpose(),
        1.0 / ((n1 - 1.0) * (n2 - 1.0)).sqrt(),
        parallelism(),
    );
    let sv = g.singular_values().map_err(|e| {
        EvalError::input(format!(
            "singular value decomposition did not converge: {e:?}"
        ))
    })?;
    let tr: f64 = sv.iter().sum();
    Ok(Fid {
        fid: mean_term(&s1.mu, &s2.mu) + s1.trace() + s2.trace() - 2.0 * tr,
        mode,
        method: "gram-svd",
        eps_retry: false,
        without_retry: None,
    })
}

/// KID results (unbiased MMD² with the cubic polynomial kernel `(x·y/d + 1)³`).
#[derive(Debug, Clone, Serialize)]
pub struct Kid {
    /// Mean over the subsets.
    pub mean: f64,
    /// Standard deviation over the subsets (ddof = 0, as torch-fidelity).
    pub std: f64,
    /// The estimator on the full sets (deterministic; unequal sizes allowed).
    pub full: f64,
    /// Number of subsets.
    pub subsets: usize,
    /// Subset size.
    pub subset_size: usize,
    /// Seed of the subset draws.
    pub seed: u64,
}

/// Σ k(xᵢ, yⱼ) over all pairs, in row blocks. With `same` (y is x), the diagonal is
/// excluded and only the upper triangle is computed (k is symmetric).
fn kernel_sum(x: MatRef<f64>, y: MatRef<f64>, same: bool) -> f64 {
    let d = x.ncols() as f64;
    let block = 512;
    let mut total = 0.0;
    let mut start = 0;
    let par = parallelism();
    while start < x.nrows() {
        let rows = block.min(x.nrows() - start);
        let xb = x.subrows(start, rows);
        // With `same`, columns before `start` are covered by earlier blocks' mirror terms.
        let first = if same { start } else { 0 };
        let yb = y.subrows(first, y.nrows() - first);
        let mut g = Mat::<f64>::zeros(rows, yb.nrows());
        matmul(g.as_mut(), Accum::Replace, xb, yb.transpose(), 1.0 / d, par);
        for i in 0..rows {
            let mut row = 0.0;
            let j0 = if same { i + 1 } else { 0 };
            for j in j0..yb.nrows() {
                let k = g[(i, j)] + 1.0;
                row += k * k * k;
            }
            total += if same { 2.0 * row } else { row };
        }
        start += rows;
    }
    total
}

/// Unbiased MMD² between two sets (any sizes ≥ 2).
fn mmd2_unbiased(x: MatRef<f64>, y: MatRef<f64>) -> f64 {
    let (m, n) = (x.nrows() as f64, y.nrows() as f64);
    kernel_sum(x, x, true) / (m * (m - 1.0)) + kernel_sum(y, y, true) / (n * (n - 1.0))
        - 2.0 * kernel_sum(x, y, false) / (m * n)
}

fn gather(x: &Mat<f64>, idx: &[usize]) -> Mat<f64> {
    Mat::from_fn(idx.len(), x.ncols(), |i, j| x[(idx[i], j)])
}

/// MMD² on given subsets `idx1` of `real` and `idx2` of `fake` (for checking against a
/// reference that drew its own indices).
pub fn kid_subset(real: &Matrix, fake: &Matrix, idx1: &[usize], idx2: &[usize]) -> Result<f64> {
    check_pair(real, fake)?;
    if idx1.len() < 2 || idx2.len() < 2 {
        return Err(EvalError::input("KID subsets need at least 2 samples"));
    }
    if let Some(&i) = idx1.iter().find(|&&i| i >= real.rows) {
        return Err(EvalError::input(format!(
            "subset index {i} ≥ {} real samples",
            real.rows
        )));
    }
    if let Some(&i) = idx2.iter().find(|&&i| i >= fake.rows) {
        return Err(EvalError::input(format!(
            "subset index {i} ≥ {} fake samples",
            fake.rows
        )));
    }
    let (x, y) = (to_mat(real), to_mat(fake));
    Ok(mmd2_unbiased(
        gather(&x, idx1).as_ref(),
        gather(&y, idx2).as_ref(),
    ))
}

/// KID: mean ± std of the unbiased MMD² over `subsets` random subsets of `subset_size`
/// samples from each set (drawn without replacement from `seed`), and the full-set value.
/// Like torch-fidelity, a set smaller than `subset_size` is an error.
pub fn kid(
    real: &Matrix,
    fake: &Matrix,
    subsets: usize,
    subset_size: usize,
    seed: u64,
) -> Result<Kid> {
    check_pair(real, fake)?;
    if subsets == 0 {
        return Err(EvalError::input("--kid-subsets must be at least 1"));
    }
    if subset_size < 2 {
        return Err(EvalError::input("--kid-subset-size must be at least 2"));
    }
    for (what, n) in [("real", real.rows), ("fake", fake.rows)] {
        if n < subset_size {
            return Err(EvalError::input(format!(
                "{what} features: {n} samples, fewer than the KID subset size {subset_size} (lower --kid-subset-size)"
            )));
        }
    }
    let (x, y) = (to_mat(real), to_mat(fake));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(subsets);
    for _ in 0..subsets {
        let i1 = rand::seq::index::sample(&mut rng, real.rows, subset_size).into_vec();
        let i2 = rand::seq::index::sample(&mut rng, fake.rows, subset_size).into_vec();
        values.push(mmd2_unbiased(
            gather(&x, &i1).as_ref(),
            gather(&y, &i2).as_ref(),
        ));
    }
    let mean = values.iter().sum::<f64>() / subsets as f64;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / subsets as f64;
    Ok(Kid {
        mean,
        std: var.sqrt(),
        full: mmd2_unbiased(x.as_ref(), y.as_ref()),
        subsets,
        subset_size,
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Matrix {
        let data = (0..rows * cols).map(|k| f(k / cols, k % cols)).collect();
        Matrix::new(rows, cols, data).unwrap()
    }

    #[test]
    fn methods_agree_and_identical_sets_give_zero() {
        let a = matrix(7, 12, |i, j| {
            ((i * 31 + j * 17) % 11) as f64 * 0.3 + (i as f64).sin()
        });
        let b = matrix(9, 12, |i, j| {
            ((i * 13 + j * 7) % 5) as f64 * 0.7 - (j as f64).cos()
        });
        let gram = fid(&a, &b, FidMode::Exact).unwrap();
        assert_eq!(gram.method, "gram-svd");
        let s1 = Stats::from_features(&a).unwrap();
        let s2 = Stats::from_features(&b).unwrap();
        let eigh = fid_from_stats(&s1, &s2, FidMode::Exact).unwrap();
        // n < d: the eigenvalue route loses ~√(ε·‖Σ‖) per null direction.
        assert!(
            (gram.fid - eigh.fid).abs() < 1e-7 * gram.fid,
            "{} {}",
            gram.fid,
            eigh.fid
        );
        let same = fid(&a, &a, FidMode::Exact).unwrap();
        assert!(same.fid.abs() < 1e-10, "{}", same.fid);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let a = matrix(5, 3, |i, j| (i + j) as f64);
        let b = matrix(5, 4, |i, j| (i * j) as f64);
        assert!(fid(&a, &b, FidMode::Exact)
            .unwrap_err()
            .to_string()
            .contains("dimensions differ"));
        let mut nan = a.clone();
        nan.data[4] = f64::NAN;
        let e = fid(&nan, &a, FidMode::Exact).unwrap_err().to_string();
        assert!(e.contains("non-finite") && e.contains("row 1"), "{e}");
        let one = matrix(1, 3, |_, j| j as f64);
        assert!(fid(&one, &a, FidMode::Exact)
            .unwrap_err()
            .to_string()
            .contains("at least 2"));
        assert!(kid(&a, &a, 10, 6, 0)
            .unwrap_err()
            .to_string()
            .contains("subset size"));
    }

    #[test]
    fn kid_is_seeded_and_full_set_matches_subset_of_everything() {
        let a = matrix(20, 4, |i, j| ((i * 7 + j * 3) % 9) as f64 / 9.0);
        let b = matrix(20, 4, |i, j| ((i * 5 + j * 11) % 7) as f64 / 7.0 + 0.1);
        let k1 = kid(&a, &b, 5, 10, 3).unwrap();
        let k2 = kid(&a, &b, 5, 10, 3).unwrap();
        assert_eq!((k1.mean, k1.std), (k2.mean, k2.std));
        let k3 = kid(&a, &b, 5, 10, 4).unwrap();
        assert_ne!(k1.mean, k3.mean);
        let all: Vec<usize> = (0..20).collect();
        assert!((kid_subset(&a, &b, &all, &all).unwrap() - k1.full).abs() < 1e-15);
        let k_all = kid(&a, &b, 3, 20, 0).unwrap();
        assert!(k_all.std < 1e-14 && (k_all.mean - k_all.full).abs() < 1e-14);
    }
}
