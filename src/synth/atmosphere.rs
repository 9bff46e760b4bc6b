//! Atmospheric phase screens (notes/synth-physics.md §4) and the FFT power-law field
//! synthesis shared by the terrain, coherence and atmosphere generators.
//!
//! Units: every screen is returned as an *apparent LOS displacement* in metres, i.e. the
//! same quantity as the deformation `d_LOS` (positive toward the satellite), so signals add
//! before the phase conversion `φ = −(4π/λ)·d_LOS`. A path delay (range increase) is a
//! negative apparent displacement.
//!
//! Spectral synthesis: complex white noise is shaped by `sqrt(P(f))` on a grid padded by
//! the field's correlation length (outer scale) and cropped, so opposite edges are
//! uncorrelated (no periodic wrap-around). The real and imaginary parts of one inverse FFT
//! are two independent fields with the same spectrum; [`power_law_pair`] returns both.
//! FFT plans are cached per thread ([`with_planner`]), so repeated calls at one size only
//! pay for the transforms.

use std::cell::RefCell;
use std::rc::Rc;

use rand::Rng;
use rand_distr::{Distribution, Normal};
use realfft::RealFftPlanner;
use rustfft::num_complex::Complex32;
use rustfft::FftPlanner;

use super::fastmath::{exp_approx, fill_standard_normal};
use super::grid::{Field, Geometry};

/// Sentinel-1 C-band wavelength (m), docs/architecture.md §2.2.
pub const WAVELENGTH_M: f64 = 0.055465763;
/// LOS displacement of one fringe (2π of phase), λ/2.
pub const FRINGE_M: f64 = WAVELENGTH_M / 2.0;

thread_local! {
    static PLANNER: RefCell<FftPlanner<f32>> = RefCell::new(FftPlanner::new());
}

/// Runs `f` with this thread's cached FFT planner (plans are reused across calls).
pub fn with_planner<T>(f: impl FnOnce(&mut FftPlanner<f32>) -> T) -> T {
    PLANNER.with(|p| f(&mut p.borrow_mut()))
}

/// Smallest `n' ≥ n` of the form 2^a·3^b·5^c (sizes rustfft transforms fastest).
pub fn fast_len(n: usize) -> usize {
    let mut m = n.max(1);
    loop {
        let mut k = m;
        for p in [2, 3, 5] {
            while k % p == 0 {
                k /= p;
            }
        }
        if k == 1 {
            return m;
        }
        m += 1;
    }
}

/// In-place 2-D FFT of a row-major `rows × cols` buffer (forward or inverse, unnormalised).
pub fn fft2(buf: &mut [Complex32], rows: usize, cols: usize, inverse: bool) {
    assert_eq!(buf.len(), rows * cols, "fft2: buffer is not rows × cols");
    with_planner(|planner| {
        let (row_fft, col_fft) = if inverse {
            (
                planner.plan_fft_inverse(cols),
                planner.plan_fft_inverse(rows),
            )
        } else {
            (
                planner.plan_fft_forward(cols),
                planner.plan_fft_forward(rows),
            )
        };
        let scratch_len = row_fft
            .get_inplace_scratch_len()
            .max(col_fft.get_inplace_scratch_len());
        let mut scratch = vec![Complex32::new(0.0, 0.0); scratch_len];
        row_fft.process_with_scratch(buf, &mut scratch);
        let mut t = vec![Complex32::new(0.0, 0.0); rows * cols];
        transpose(buf, &mut t, rows, cols);
        col_fft.process_with_scratch(&mut t, &mut scratch);
        transpose(&t, buf, cols, rows);
    });
}

/// `dst` (cols × rows) = transpose of `src` (rows × cols), in cache-friendly tiles.
fn transpose(src: &[Complex32], dst: &mut [Complex32], rows: usize, cols: usize) {
    const B: usize = 16;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// An isotropic power spectrum `P(f)` of a random field, `f` in cycles per metre.
///
/// `P ∝ f^(−beta_long)` for wavelengths above `break_wavelength_m`, `∝ f^(−beta_short)`
/// below (continuous at the break), and zero for wavelengths above `outer_scale_m` (and the
/// mean). Slopes are 2-D spectral exponents (Hanssen 2001: 8/3 long, 11/3 short for the
/// troposphere; fractal terrain 3–4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spectrum {
    pub beta_long: f64,
    pub beta_short: f64,
    pub break_wavelength_m: f64,
    pub outer_scale_m: f64,
}

impl Spectrum {
    /// Tropospheric turbulence after Hanssen (2001) as in SyInterferoPy: −8/3 above 1.5 km
    /// wavelength, −11/3 below, nothing above 50 km.
    pub fn troposphere() -> Self {
        Self {
            beta_long: 8.0 / 3.0,
            beta_short: 11.0 / 3.0,
            break_wavelength_m: 1500.0,
            outer_scale_m: 50_000.0,
        }
    }

    /// A single power law `f^(−beta)` up to `outer_scale_m`.
    pub fn power_law(beta: f64, outer_scale_m: f64) -> Self {
        Self {
            beta_long: beta,
            beta_short: beta,
            break_wavelength_m: 0.0,
            outer_scale_m,
        }
    }

    /// Amplitude filter `sqrt(P(f))` (arbitrary overall scale).
    fn amplitude(&self, f: f64) -> f64 {
        if f <= 0.0 || f < 1.0 / self.outer_scale_m {
            return 0.0;
        }
        let fb = if self.break_wavelength_m > 0.0 {
            1.0 / self.break_wavelength_m
        } else {
            f64::INFINITY
        };
        if f < fb {
            f.powf(-self.beta_long / 2.0)
        } else {
            // Continuous at the break.
            fb.powf(-self.beta_long / 2.0) * (f / fb).powf(-self.beta_short / 2.0)
        }
    }
}

/// Padded FFT grid `(rows, cols)` for a field on `geometry` with correlations up to
/// `outer_scale_m`: each side grows by the outer scale in pixels (at most doubling).
pub fn padded_size(geometry: Geometry, outer_scale_m: f64) -> (usize, usize) {
    let extra = (outer_scale_m / geometry.pixel_m).ceil().max(0.0) as usize;
    let pad = |n: usize| fast_len(n + extra.min(n).max(8));
    (pad(geometry.height), pad(geometry.width))
}

type FilterKey = (usize, usize, u64, [u64; 4]);

thread_local! {
    static FILTERS: RefCell<Vec<(FilterKey, Rc<Vec<f32>>)>> = const { RefCell::new(Vec::new()) };
}

/// The amplitude filter `sqrt(P(|f|))` on a `rows × cols` FFT grid of `pixel_m` spacing,
/// cached per thread (the last 8 grids/spectra).
fn spectral_filter(rows: usize, cols: usize, pixel_m: f64, spectrum: &Spectrum) -> Rc<Vec<f32>> {
    let key: FilterKey = (
        rows,
        cols,
        pixel_m.to_bits(),
        [
            spectrum.beta_long.to_bits(),
            spectrum.beta_short.to_bits(),
            spectrum.break_wavelength_m.to_bits(),
            spectrum.outer_scale_m.to_bits(),
        ],
    );
    if let Some(f) = FILTERS.with(|c| {
        c.borrow()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, f)| f.clone())
    }) {
        return f;
    }
    let freq = |k: usize, n: usize| -> f64 {
        let k = if k <= n / 2 {
            k as f64
        } else {
            k as f64 - n as f64
        };
        k / (n as f64 * pixel_m)
    };
    // |f| is the same at k and n − k, so the amplitude (two `powf`s) is evaluated on one
    // quadrant and mirrored: bit for bit what every entry would give.
    let (qr, qc) = (rows / 2 + 1, cols / 2 + 1);
    let col_f: Vec<f64> = (0..qc).map(|c| freq(c, cols)).collect();
    let mut quadrant = Vec::with_capacity(qr * qc);
    for r in 0..qr {
        let fr = freq(r, rows);
        for fc in &col_f {
            quadrant.push(spectrum.amplitude((fr * fr + fc * fc).sqrt()) as f32);
        }
    }
    let mirror = |k: usize, n: usize| if k <= n / 2 { k } else { n - k };
    let mut filter = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let q = &quadrant[mirror(r, rows) * qc..][..qc];
        filter.extend((0..cols).map(|c| q[mirror(c, cols)]));
    }
    let filter = Rc::new(filter);
    FILTERS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= 8 {
            c.remove(0);
        }
        c.push((key, filter.clone()));
    });
    filter
}

/// Two independent zero-mean, unit-variance Gaussian random fields with spectrum `spectrum`
/// (one FFT for both). The standard deviation over the frame is exactly 1 unless the
/// field is constant (then it is all zeros).
pub fn power_law_pair(
    geometry: Geometry,
    spectrum: &Spectrum,
    rng: &mut impl Rng,
) -> (Field, Field) {
    let (rows, cols) = padded_size(geometry, spectrum.outer_scale_m);
    let mut white = vec![0f32; 2 * rows * cols];
    fill_standard_normal(rng, &mut white);
    let mut buf: Vec<Complex32> = white
        .chunks_exact(2)
        .map(|z| Complex32::new(z[0], z[1]))
        .collect();
    // Filter in the frequency domain (white noise's FFT is white noise, so we shape it
    // directly: one inverse transform). The filter is cached per thread.
    let filter = spectral_filter(rows, cols, geometry.pixel_m, spectrum);
    for (v, a) in buf.iter_mut().zip(filter.iter()) {
        *v *= *a;
    }
    fft2(&mut buf, rows, cols, true);
    let mut a = Field::zeros(geometry);
    let mut b = Field::zeros(geometry);
    for r in 0..geometry.height {
        for c in 0..geometry.width {
            let v = buf[r * cols + c];
            let i = geometry.index(r, c);
            a.data[i] = v.re;
            b.data[i] = v.im;
        }
    }
    standardise(&mut a.data);
    standardise(&mut b.data);
    (a, b)
}

/// Integer grid coarsening that keeps the coarse pixel at most `max_spacing_m` (1 when
/// the pixels are already that large; at most 4).
pub fn coarse_factor(pixel_m: f64, max_spacing_m: f64) -> usize {
    ((max_spacing_m / pixel_m).floor() as usize).clamp(1, 4)
}

/// [`power_law_pair`] for fields that are smooth at the pixel scale: drawn on a grid
/// `factor` times coarser (node `(r, c)` at pixel `(factor·r, factor·c)`), interpolated
/// bilinearly to every pixel, then standardised again (zero mean, unit variance over the
/// frame). Costs ~1/factor² of the full-resolution synthesis; `factor` 1 is exactly
/// [`power_law_pair`].
pub fn power_law_pair_coarse(
    geometry: Geometry,
    spectrum: &Spectrum,
    factor: usize,
    rng: &mut impl Rng,
) -> (Field, Field) {
    if factor <= 1 || geometry.is_empty() {
        return power_law_pair(geometry, spectrum, rng);
    }
    let coarse = Geometry::new(
        (geometry.width - 1).div_ceil(factor) + 1,
        (geometry.height - 1).div_ceil(factor) + 1,
        geometry.pixel_m * factor as f64,
    );
    let (a, b) = power_law_pair(coarse, spectrum, rng);
    let (mut a, mut b) = (a.upsample(factor, geometry), b.upsample(factor, geometry));
    standardise(&mut a.data);
    standardise(&mut b.data);
    (a, b)
}

thread_local! {
    static REAL_PLANNER: RefCell<RealFftPlanner<f32>> = RefCell::new(RealFftPlanner::new());
}

/// One zero-mean, unit-variance random field with spectrum `spectrum` (the standard
/// deviation over the frame is exactly 1 unless the field is constant).
///
/// A real field needs only half a spectrum: complex white noise is drawn on the
/// non-negative column frequencies of the padded grid (the negative ones are its
/// Hermitian mirror), shaped by `sqrt(P(f))`, transformed along the columns and then
/// complex-to-real along the rows — about half the draws and transforms of
/// [`power_law_pair`], with the same covariance: a column `0 < c < cols/2` stands for the
/// frequencies `±c`, the self-mirrored columns `0` and `cols/2` for one each, so those get
/// `√2` more amplitude. Only the rows inside the frame are transformed along the rows.
pub fn power_law_field(geometry: Geometry, spectrum: &Spectrum, rng: &mut impl Rng) -> Field {
    half_spectrum_field(geometry, spectrum, std::f32::consts::SQRT_2, rng)
}

/// [`power_law_field`] with the gain of the self-mirrored columns as a parameter (the
/// tests show that `√2` is needed).
fn half_spectrum_field(
    geometry: Geometry,
    spectrum: &Spectrum,
    mirrored_gain: f32,
    rng: &mut impl Rng,
) -> Field {
    let (rows, cols) = padded_size(geometry, spectrum.outer_scale_m);
    let half = cols / 2 + 1;
    let filter = spectral_filter(rows, cols, geometry.pixel_m, spectrum);
    let self_mirrored = |c: usize| c == 0 || (cols % 2 == 0 && c == cols / 2);
    // Column-major (`half × rows`): each column's vertical transform is contiguous.
    let mut buf = vec![Complex32::new(0.0, 0.0); half * rows];
    let mut white = vec![0f32; 2 * half * rows];
    fill_standard_normal(rng, &mut white);
    for (c, (column, white)) in buf
        .chunks_exact_mut(rows)
        .zip(white.chunks_exact(2 * rows))
        .enumerate()
    {
        let gain = if self_mirrored(c) { mirrored_gain } else { 1.0 };
        for (r, (v, z)) in column.iter_mut().zip(white.chunks_exact(2)).enumerate() {
            *v = Complex32::new(z[0], z[1]) * (filter[r * cols + c] * gain);
        }
    }
    let mut out = Field::zeros(geometry);
    with_planner(|planner| {
        let col_fft = planner.plan_fft_inverse(rows);
        let row_fft = REAL_PLANNER.with(|p| p.borrow_mut().plan_fft_inverse(cols));
        let mut scratch = vec![
            Complex32::new(0.0, 0.0);
            col_fft
                .get_inplace_scratch_len()
                .max(row_fft.get_scratch_len())
        ];
        col_fft.process_with_scratch(&mut buf, &mut scratch);
        let mut spectrum_row = vec![Complex32::new(0.0, 0.0); half];
        let mut line = vec![0.0f32; cols];
        for r in 0..geometry.height {
            for (c, v) in spectrum_row.iter_mut().enumerate() {
                *v = buf[c * rows + r];
            }
            // The self-mirrored columns contribute their real part (the imaginary part
            // is the other half of their noise, as in `power_law_pair`).
            spectrum_row[0].im = 0.0;
            if cols % 2 == 0 {
                spectrum_row[half - 1].im = 0.0;
            }
            row_fft
                .process_with_scratch(&mut spectrum_row, &mut line, &mut scratch)
                .expect("buffers sized by the plan, real self-mirrored bins");
            let start = geometry.index(r, 0);
            out.data[start..start + geometry.width].copy_from_slice(&line[..geometry.width]);
        }
    });
    standardise(&mut out.data);
    out
}

/// Shifts and scales `v` to zero mean and unit standard deviation (all zeros if constant).
pub(crate) fn standardise(v: &mut [f32]) {
    if v.is_empty() {
        return;
    }
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let s = if var > 0.0 { 1.0 / var.sqrt() } else { 0.0 };
    for x in v.iter_mut() {
        *x = ((*x as f64 - mean) * s) as f32;
    }
}

/// Turbulent tropospheric screen (apparent LOS displacement, m) with standard deviation
/// `sigma_m` over the frame (S1 6–12-day pairs: 0.003–0.015 m, heavy cases up to 0.03).
pub fn turbulent(geometry: Geometry, sigma_m: f64, rng: &mut impl Rng) -> Field {
    turbulent_with(geometry, sigma_m, &Spectrum::troposphere(), rng)
}

/// [`turbulent`] with an explicit spectrum.
pub fn turbulent_with(
    geometry: Geometry,
    sigma_m: f64,
    spectrum: &Spectrum,
    rng: &mut impl Rng,
) -> Field {
    let mut f = power_law_field(geometry, spectrum, rng);
    for x in &mut f.data {
        *x *= sigma_m as f32;
    }
    f
}

/// Draws a turbulence strength σ (m): log-uniform in 0.3–1.5 cm, with a 5 % chance of a
/// heavy case up to 3 cm (notes §4.2).
pub fn random_turbulence_sigma(rng: &mut impl Rng) -> f64 {
    if rng.random::<f64>() < 0.05 {
        rng.random_range(0.015..0.03)
    } else {
        (rng.random_range(0.003f64.ln()..0.015f64.ln())).exp()
    }
}

/// Per-acquisition parameters of the stratified (topography-correlated) delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StratifiedParams {
    /// Spread of each acquisition's zenith delay gradient about the climatological mean,
    /// m of delay per km of height (the mean cancels in the difference). Default 0.006:
    /// the differenced gradient then has σ ≈ 0.85 cm/km (notes §4.1: mostly < 1 cm/km,
    /// up to 3 cm/km in humid cases).
    pub spread_m_per_km: f64,
    /// Range of the scale height H (km) of each acquisition's exponential profile.
    pub scale_height_km: (f64, f64),
    /// Incidence angle (degrees) for the zenith → slant conversion.
    pub incidence_deg: f64,
}

impl Default for StratifiedParams {
    fn default() -> Self {
        Self {
            spread_m_per_km: 0.006,
            scale_height_km: (2.0, 8.0),
            incidence_deg: 37.0,
        }
    }
}

/// A stratified screen and the parameters that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stratified {
    /// Apparent LOS displacement (m), zero mean over the reference pixels.
    pub field: Field,
    /// Differenced zenith gradient at sea level `K1 − K2` (m of delay per km).
    pub gradient_m_per_km: f64,
}

/// Topography-correlated stratified delay (notes §4.1). Each acquisition `i` has a zenith
/// delay profile `K_i·H_i·(1 − e^{−h/H_i})` (≈ `K_i·h` low down, flattening with the scale
/// height `H_i`), `K_i ~ N(0, spread)`; the interferogram holds the difference, converted to
/// slant range (`/cos i`), as apparent LOS displacement (a delay increase is negative),
/// and is referenced to its mean over `reference` pixels (all when `None`; pass the
/// land mask so water does not bias the reference).
pub fn stratified(
    elevation_m: &Field,
    reference: Option<&[bool]>,
    params: &StratifiedParams,
    rng: &mut impl Rng,
) -> Stratified {
    let spread = Normal::new(0.0, params.spread_m_per_km.max(0.0)).expect("finite spread");
    let (h_lo, h_hi) = params.scale_height_km;
    let draw = |rng: &mut dyn rand::RngCore| -> (f64, f64) {
        let k: f64 = spread.sample(rng);
        let h = if h_hi > h_lo {
            rng.random_range(h_lo..h_hi)
        } else {
            h_lo
        };
        (k, h.max(0.1))
    };
    let (k1, h1) = draw(rng);
    let (k2, h2) = draw(rng);
    let slant = 1.0 / params.incidence_deg.to_radians().cos();
    let mut field = Field::zeros(elevation_m.geometry);
    stratified_delay(
        &elevation_m.data,
        [(k1, h1), (k2, h2)],
        slant,
        &mut field.data,
    );
    reference_to_mean(&mut field.data, reference);
    Stratified {
        field,
        gradient_m_per_km: k1 - k2,
    }
}

/// The slant delay difference of two acquisitions `(K, H)` at every height (m), as LOS
/// displacement (f32 with a polynomial exp: vectorises; the profile needs no more).
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn stratified_delay(
    elevation_m: &[f32],
    acquisitions: [(f64, f64); 2],
    slant: f64,
    out: &mut [f32],
) {
    let [(k1, h1), (k2, h2)] = acquisitions;
    let (a1, a2) = ((k1 * h1 * slant) as f32, (k2 * h2 * slant) as f32);
    // 1/H per metre of height (H in km).
    let (r1, r2) = ((1.0 / (1000.0 * h1)) as f32, (1.0 / (1000.0 * h2)) as f32);
    for (o, &h) in out.iter_mut().zip(elevation_m) {
        let h = h.max(0.0);
        let d1 = a1 * one_minus_exp_neg(h * r1);
        let d2 = a2 * one_minus_exp_neg(h * r2);
        *o = -(d1 - d2);
    }
}

/// `1 − e^{−x}` for `x ≥ 0` without the cancellation of the plain form at small `x` (a
/// scale height far above the relief): its series below 0.01, a select so loops vectorise.
#[inline(always)]
fn one_minus_exp_neg(x: f32) -> f32 {
    let series = x * (1.0 - x / 2.0 * (1.0 - x / 3.0 * (1.0 - x / 4.0)));
    let plain = 1.0 - exp_approx(-x);
    if x < 0.01 {
        series
    } else {
        plain
    }
}

/// Subtracts the mean over the reference pixels (all pixels when `None` or when no pixel
/// is a reference).
pub(crate) fn reference_to_mean(v: &mut [f32], reference: Option<&[bool]>) {
    let (sum, n) = match reference {
        Some(m) => v
            .iter()
            .zip(m)
            .filter(|(_, &ok)| ok)
            .fold((0.0f64, 0usize), |(s, n), (&x, _)| (s + x as f64, n + 1)),
        None => (v.iter().map(|&x| x as f64).sum(), v.len()),
    };
    let (sum, n) = if n == 0 {
        (v.iter().map(|&x| x as f64).sum(), v.len())
    } else {
        (sum, n)
    };
    if n == 0 {
        return;
    }
    let mean = (sum / n as f64) as f32;
    for x in v.iter_mut() {
        *x -= mean;
    }
}

/// Robust peak-to-peak (2nd to 98th percentile) of `v` over `valid` pixels, or 0 when
/// fewer than 2 pixels are valid.
pub fn robust_ptp(v: &[f32], valid: Option<&[bool]>) -> f64 {
    ptp_between_ranks(v, valid, |n| {
        (
            ((n - 1) as f64 * 0.02).round() as usize,
            ((n - 1) as f64 * 0.98).round() as usize,
        )
    })
}

/// Peak-to-peak of `v` over `valid` pixels without its `trim` lowest and `trim` highest
/// values (fewer when there are not enough), or 0 when fewer than 2 pixels are valid.
pub fn trimmed_ptp(v: &[f32], valid: Option<&[bool]>, trim: usize) -> f64 {
    ptp_between_ranks(v, valid, |n| {
        let k = trim.min((n - 1) / 2);
        (k, n - 1 - k)
    })
}

/// `x_(hi) − x_(lo)` of the finite valid values, the ranks `(lo, hi)` (`lo ≤ hi < n`) from
/// their count `n ≥ 2`.
fn ptp_between_ranks(
    v: &[f32],
    valid: Option<&[bool]>,
    ranks: impl Fn(usize) -> (usize, usize),
) -> f64 {
    let mut xs: Vec<f32> = match valid {
        Some(m) => v
            .iter()
            .zip(m)
            .filter(|(x, &ok)| ok && x.is_finite())
            .map(|(&x, _)| x)
            .collect(),
        None => v.iter().copied().filter(|x| x.is_finite()).collect(),
    };
    if xs.len() < 2 {
        return 0.0;
    }
    let (lo_i, hi_i) = ranks(xs.len());
    let (lo, hi) = two_ranks(&mut xs, lo_i, hi_i);
    (hi - lo) as f64
}

/// The `lo`-th and `hi`-th smallest (0-based, `lo ≤ hi < len`) of finite values, exactly:
/// a histogram over [min, max] finds the bins holding the two ranks (binning is monotone,
/// so a bin's values have consecutive ranks), then only those bins' values are ordered.
/// Two light passes instead of partitioning the whole slice (the flags and captions ask
/// for several such ranks per sample); `xs` is reordered.
pub(crate) fn two_ranks(xs: &mut [f32], lo: usize, hi: usize) -> (f32, f32) {
    assert!(
        lo <= hi && hi < xs.len(),
        "ranks {lo}, {hi} of {} values",
        xs.len()
    );
    const BINS: usize = 1024;
    let (min, max) = xs
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let scale = (BINS - 1) as f32 / (max - min);
    if xs.len() < 4 * BINS || max <= min || !scale.is_finite() {
        // Few values, or all equal, or a range too large to scale: select directly.
        let (_, &mut a, above) = xs.select_nth_unstable_by(lo, f32::total_cmp);
        let b = if hi > lo {
            *above.select_nth_unstable_by(hi - lo - 1, f32::total_cmp).1
        } else {
            a
        };
        return (a, b);
    }
    let bin = |x: f32| (((x - min) * scale) as usize).min(BINS - 1);
    let mut counts = [0usize; BINS];
    for &x in xs.iter() {
        counts[bin(x)] += 1;
    }
    // The bin holding rank r, and r's rank within it.
    let locate = |r: usize| {
        let mut below = 0;
        for (b, &c) in counts.iter().enumerate() {
            if r < below + c {
                return (b, r - below);
            }
            below += c;
        }
        unreachable!("rank {r} below the total count")
    };
    let (b_lo, r_lo) = locate(lo);
    let (b_hi, r_hi) = locate(hi);
    let mut in_lo: Vec<f32> = xs.iter().copied().filter(|&x| bin(x) == b_lo).collect();
    let a = *in_lo.select_nth_unstable_by(r_lo, f32::total_cmp).1;
    let b = if b_hi == b_lo {
        *in_lo.select_nth_unstable_by(r_hi, f32::total_cmp).1
    } else {
        let mut in_hi: Vec<f32> = xs.iter().copied().filter(|&x| bin(x) == b_hi).collect();
        *in_hi.select_nth_unstable_by(r_hi, f32::total_cmp).1
    };
    (a, b)
}

/// Fringes (robust peak-to-peak / (λ/2)) a screen shows over the valid pixels.
pub fn visible_fringes(screen_m: &Field, valid: Option<&[bool]>) -> f64 {
    robust_ptp(&screen_m.data, valid) / FRINGE_M
}

/// Fringes at which an atmospheric component counts as visible in the annotation.
pub const ATMOSPHERE_VISIBLE_FRINGES: f64 = 0.5;

/// Ground area (m²) below which a patch of delay does not count as seen: the extreme
/// values a stratified screen reaches on less than this (a few pixels) are trimmed.
pub const STRATIFIED_MIN_AREA_M2: f64 = 1.0e6;

/// Fringes a stratified screen shows: its peak-to-peak without the extreme
/// [`STRATIFIED_MIN_AREA_M2`] at either end. Not the 2–98 % range of [`visible_fringes`]:
/// the stratified delay follows the terrain, so on a volcano it is concentrated on the
/// edifice, often less than 2 % of the frame, where it draws concentric fringes that look
/// like deformation (the classic false positive) and must be flagged.
pub fn stratified_visible_fringes(screen_m: &Field, valid: Option<&[bool]>) -> f64 {
    let px = screen_m.geometry.pixel_m.max(f64::MIN_POSITIVE);
    let trim = (STRATIFIED_MIN_AREA_M2 / (px * px)).ceil() as usize;
    trimmed_ptp(&screen_m.data, valid, trim) / FRINGE_M
}

/// The Hephaestus `atmospheric_fringes` level (0..3) of a pair of screens.
///
/// The real annotations encode *which* atmospheric effect is visible (from their captions,
/// notes/hephaestus.md): 0 none, 1 vertical stratification, 2 turbulent mixing, 3 both.
/// Rule: a component is visible when it spans at least [`ATMOSPHERE_VISIBLE_FRINGES`] fringe
/// (λ/4 ≈ 13.9 mm of LOS) over the valid pixels — the turbulent screen by its robust
/// peak-to-peak (2nd–98th percentile; it covers the frame), the stratified one without
/// only its extreme square kilometre ([`stratified_visible_fringes`]; it sits on the
/// relief); the level is `1·[stratified visible] + 2·[turbulent visible]`.
pub fn atmospheric_fringes(
    stratified_m: &Field,
    turbulent_m: &Field,
    valid: Option<&[bool]>,
) -> u8 {
    let s = stratified_visible_fringes(stratified_m, valid) >= ATMOSPHERE_VISIBLE_FRINGES;
    let t = visible_fringes(turbulent_m, valid) >= ATMOSPHERE_VISIBLE_FRINGES;
    u8::from(s) + 2 * u8::from(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    #[test]
    fn fast_len_is_smooth_and_minimal() {
        assert_eq!(fast_len(1), 1);
        assert_eq!(fast_len(7), 8);
        assert_eq!(fast_len(359), 360);
        assert_eq!(fast_len(449), 450);
        for n in 1..300 {
            let m = fast_len(n);
            assert!(m >= n);
            assert!((n..m).all(|k| fast_len(k) == m));
        }
    }

    #[test]
    fn fft2_round_trip_and_delta() {
        let (rows, cols) = (6, 10);
        let mut r = rng(1);
        let x: Vec<Complex32> = (0..rows * cols)
            .map(|_| Complex32::new(r.random(), r.random()))
            .collect();
        let mut y = x.clone();
        fft2(&mut y, rows, cols, false);
        // DC term is the sum.
        let sum: Complex32 = x.iter().sum();
        assert!((y[0] - sum).norm() < 1e-4);
        fft2(&mut y, rows, cols, true);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b / (rows * cols) as f32).norm() < 1e-5);
        }
        // A unit impulse at (1, 2) has spectrum exp(-2πi(k·1/rows + l·2/cols)).
        let mut d = vec![Complex32::new(0.0, 0.0); rows * cols];
        d[cols + 2] = Complex32::new(1.0, 0.0);
        fft2(&mut d, rows, cols, false);
        let (k, l) = (2usize, 3usize);
        let ang =
            -2.0 * std::f32::consts::PI * (k as f32 / rows as f32 + 2.0 * l as f32 / cols as f32);
        assert!((d[k * cols + l] - Complex32::from_polar(1.0, ang)).norm() < 1e-5);
    }

    #[test]
    fn screens_are_standardised_independent_and_deterministic() {
        let g = Geometry::new(120, 90, 370.0);
        let (a, b) = power_law_pair(g, &Spectrum::troposphere(), &mut rng(7));
        let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        assert!(mean(&a.data).abs() < 1e-5);
        let var = a.data.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / a.data.len() as f64;
        assert!((var - 1.0).abs() < 1e-4, "{var}");
        let corr = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| x as f64 * y as f64)
            .sum::<f64>()
            / a.data.len() as f64;
        assert!(
            corr.abs() < 0.3,
            "real and imaginary screens correlate: {corr}"
        );
        let (a2, _) = power_law_pair(g, &Spectrum::troposphere(), &mut rng(7));
        assert_eq!(a, a2);
        let (a3, _) = power_law_pair(g, &Spectrum::troposphere(), &mut rng(8));
        assert_ne!(a, a3);
    }

    /// The half-spectrum field ([`power_law_field`]) has the covariance of the fields of
    /// [`power_law_pair`]: mean lag correlations along rows, columns and the diagonal
    /// agree over many draws. Without the `√2` on the self-mirrored columns they do not
    /// (the variation along the rows loses power), which shows the test can tell.
    #[test]
    fn real_field_has_the_covariance_of_the_complex_pair() {
        let g = Geometry::new(40, 40, 370.0);
        let spec = Spectrum::troposphere();
        let lags = [(0, 1), (1, 0), (0, 6), (6, 0), (0, 15), (15, 0), (8, 8)];
        let n = 600;
        let mean_corr = |fields: &mut dyn FnMut(u64) -> Vec<Field>| -> Vec<f64> {
            let mut acc = vec![0.0f64; lags.len()];
            let mut count = 0usize;
            let mut s = 0;
            while count < n {
                for f in fields(s) {
                    for (a, &(dr, dc)) in acc.iter_mut().zip(&lags) {
                        let mut sum = 0.0f64;
                        for r in 0..g.height - dr {
                            for c in 0..g.width - dc {
                                sum += (f.get(r, c) * f.get(r + dr, c + dc)) as f64;
                            }
                        }
                        *a += sum / ((g.height - dr) * (g.width - dc)) as f64;
                    }
                    count += 1;
                }
                s += 1;
            }
            acc.iter().map(|a| a / count as f64).collect()
        };
        let pair = mean_corr(&mut |s| {
            let (a, b) = power_law_pair(g, &spec, &mut rng(50_000 + s));
            vec![a, b]
        });
        let real = mean_corr(&mut |s| vec![power_law_field(g, &spec, &mut rng(60_000 + s))]);
        let unit_gain =
            mean_corr(&mut |s| vec![half_spectrum_field(g, &spec, 1.0, &mut rng(60_000 + s))]);
        let worst = |v: &[f64]| {
            v.iter()
                .zip(&pair)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
        };
        assert!(pair[0] > 0.8 && pair[2] > 0.3, "{pair:?}");
        assert!(worst(&real) < 0.04, "{real:?} vs {pair:?}");
        assert!(worst(&unit_gain) > 0.05, "{unit_gain:?} vs {pair:?}");
        // Standardised and deterministic like the pair.
        let f = power_law_field(g, &spec, &mut rng(1));
        let var = f.data.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / g.len() as f64;
        assert!((var - 1.0).abs() < 1e-4, "{var}");
        assert_eq!(f, power_law_field(g, &spec, &mut rng(1)));
        assert_ne!(f, power_law_field(g, &spec, &mut rng(2)));
        // Odd padded widths have no Nyquist column.
        let odd = Geometry::new(37, 20, 370.0);
        assert_eq!(padded_size(odd, 50_000.0).1 % 2, 1);
        let f = power_law_field(odd, &spec, &mut rng(3));
        assert!(f.data.iter().all(|x| x.is_finite()));
    }

    /// Neighbouring pixels are strongly correlated (red spectrum), and the two opposite
    /// edges are not (padding removes the periodic wrap-around).
    #[test]
    fn screens_are_smooth_and_do_not_wrap_around() {
        let g = Geometry::new(128, 128, 370.0);
        let spec = Spectrum::power_law(11.0 / 3.0, 50_000.0);
        let mut neighbour = 0.0;
        let mut wrap = 0.0;
        let n = 20;
        for s in 0..n {
            let f = power_law_field(g, &spec, &mut rng(100 + s));
            let mut nb = 0.0;
            let mut wr = 0.0;
            for r in 0..g.height {
                nb += (f.get(r, 0) * f.get(r, 1)) as f64;
                wr += (f.get(r, 0) * f.get(r, g.width - 1)) as f64;
            }
            neighbour += nb / g.height as f64;
            wrap += wr / g.height as f64;
        }
        neighbour /= n as f64;
        wrap /= n as f64;
        assert!(neighbour > 0.9, "adjacent columns correlate {neighbour}");
        assert!(
            wrap < 0.3,
            "first and last columns correlate {wrap}: periodic wrap-around"
        );
    }

    #[test]
    fn turbulence_has_the_requested_sigma() {
        let g = Geometry::new(64, 48, 370.0);
        let t = turbulent(g, 0.01, &mut rng(3));
        let var = t.data.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / t.data.len() as f64;
        assert!((var.sqrt() - 0.01).abs() < 1e-6);
        let mut r = rng(4);
        for _ in 0..200 {
            let s = random_turbulence_sigma(&mut r);
            assert!((0.003..=0.03).contains(&s));
        }
    }

    #[test]
    fn stratified_follows_topography_and_is_referenced() {
        let g = Geometry::new(40, 30, 370.0);
        let mut elev = Field::zeros(g);
        for (i, h) in elev.data.iter_mut().enumerate() {
            *h = (i % 40) as f32 * 50.0; // 0..1950 m ramp
        }
        let p = StratifiedParams {
            scale_height_km: (1e6, 1e6 + 1.0), // effectively linear
            incidence_deg: 0.0,
            ..Default::default()
        };
        let s = stratified(&elev, None, &p, &mut rng(5));
        let mean = s.field.data.iter().map(|&x| x as f64).sum::<f64>() / s.field.data.len() as f64;
        assert!(mean.abs() < 1e-6);
        // Linear in height with slope −(K1 − K2) per km.
        let slope = (s.field.get(0, 20) - s.field.get(0, 0)) as f64 / 1.0;
        assert!(
            (slope + s.gradient_m_per_km).abs() < 1e-4 * s.gradient_m_per_km.abs().max(1e-3),
            "{slope} vs {}",
            s.gradient_m_per_km
        );
        // Same elevation → same delay.
        assert_eq!(s.field.get(3, 7), s.field.get(20, 7));
        // The differenced gradient spreads like N(0, spread·√2).
        let mut r = rng(6);
        let ks: Vec<f64> = (0..2000)
            .map(|_| {
                stratified(&elev, None, &StratifiedParams::default(), &mut r).gradient_m_per_km
            })
            .collect();
        let sd = (ks.iter().map(|k| k * k).sum::<f64>() / ks.len() as f64).sqrt();
        assert!((sd - 0.006 * 2f64.sqrt()).abs() < 0.0006, "{sd}");
    }

    #[test]
    fn atmospheric_level_encodes_which_component_is_visible() {
        let g = Geometry::new(50, 50, 370.0);
        let flat = Field::zeros(g);
        let mut ramp = Field::zeros(g);
        for (i, v) in ramp.data.iter_mut().enumerate() {
            *v = (i % 50) as f32 / 49.0 * 0.03; // 3 cm ≈ 1.08 fringes
        }
        assert_eq!(atmospheric_fringes(&flat, &flat, None), 0);
        assert_eq!(atmospheric_fringes(&ramp, &flat, None), 1);
        assert_eq!(atmospheric_fringes(&flat, &ramp, None), 2);
        assert_eq!(atmospheric_fringes(&ramp, &ramp, None), 3);
        // Only the valid pixels count: restrict to one column → no spread.
        let valid: Vec<bool> = (0..g.len()).map(|i| i % 50 == 3).collect();
        assert_eq!(atmospheric_fringes(&ramp, &ramp, Some(&valid)), 0);
        // Just below / above the threshold.
        let scale = |f: &Field, k: f32| Field {
            geometry: g,
            data: f.data.iter().map(|x| x * k).collect(),
        };
        let r = robust_ptp(&ramp.data, None);
        let below = scale(&ramp, (0.49 * FRINGE_M / r) as f32);
        let above = scale(&ramp, (0.51 * FRINGE_M / r) as f32);
        assert_eq!(atmospheric_fringes(&flat, &below, None), 0);
        assert_eq!(atmospheric_fringes(&flat, &above, None), 2);
        let r = stratified_visible_fringes(&ramp, None) * FRINGE_M;
        let below = scale(&ramp, (0.49 * FRINGE_M / r) as f32);
        let above = scale(&ramp, (0.51 * FRINGE_M / r) as f32);
        assert_eq!(atmospheric_fringes(&below, &flat, None), 0);
        assert_eq!(atmospheric_fringes(&above, &flat, None), 1);
    }

    #[test]
    fn summit_stratification_is_flagged_and_pixel_spikes_are_not() {
        // 224² frame at 370 m: 1 km² is 8 pixels. A summit delay of 1.5 fringes on a cone
        // of radius 6 px (113 px, 0.23 % of the frame) is invisible to the 2–98 % range
        // but is a ring pattern a reader sees.
        let g = Geometry::new(224, 224, 370.0);
        let mut summit = Field::zeros(g);
        let mut spike = Field::zeros(g);
        for r in 0..224usize {
            for c in 0..224usize {
                let d = ((r as f64 - 100.0).powi(2) + (c as f64 - 120.0).powi(2)).sqrt();
                let i = r * 224 + c;
                summit.data[i] = (1.5 * FRINGE_M * (1.0 - d / 6.0).max(0.0)) as f32;
                if d < 1.5 {
                    spike.data[i] = (3.0 * FRINGE_M) as f32; // 9 px
                }
            }
        }
        let flat = Field::zeros(g);
        assert!(visible_fringes(&summit, None) < 0.01);
        assert!(stratified_visible_fringes(&summit, None) > 1.0);
        assert_eq!(atmospheric_fringes(&summit, &flat, None), 1);
        // The trim scales with the pixel: at 30 m, 1 km² is 1,112 pixels, more than the cone.
        let fine = Field {
            geometry: Geometry::new(224, 224, 30.0),
            data: summit.data.clone(),
        };
        assert_eq!(atmospheric_fringes(&fine, &flat, None), 0);
        // 9 pixels: one more than the trim keeps a single pixel at the full value.
        assert_eq!(spike.data.iter().filter(|&&v| v > 0.0).count(), 9);
        assert_eq!(atmospheric_fringes(&spike, &flat, None), 1);
        let mut five = Field::zeros(g);
        five.data[..5].fill((3.0 * FRINGE_M) as f32);
        assert_eq!(atmospheric_fringes(&five, &flat, None), 0);
        // trimmed_ptp by hand: 0..9 without the 2 lowest and 2 highest → 7 − 2.
        let v: Vec<f32> = (0..10).map(|x| x as f32).collect();
        assert_eq!(trimmed_ptp(&v, None, 2), 5.0);
        assert_eq!(trimmed_ptp(&v, None, 50), 1.0);
        assert_eq!(trimmed_ptp(&v[..1], None, 0), 0.0);
    }

    /// The histogram selection gives exactly what sorting gives, whatever the data look like.
    #[test]
    fn two_ranks_match_sorting() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let cases: Vec<Vec<f32>> = vec![
            (0..50_000)
                .map(|_| rng.random::<f32>() * 3.0 - 1.0)
                .collect(),
            // Heavy tails: most values in one bin.
            (0..20_000)
                .map(|_| {
                    let x: f32 = StandardNormal.sample(&mut rng);
                    x * x * x * x * x
                })
                .collect(),
            (0..9_000).map(|k| (k / 7) as f32 * 0.5).collect(), // duplicates, sorted
            (0..9_000).rev().map(|k| k as f32).collect(),       // reversed ramp
            vec![2.5; 6_000],                                   // constant
            (0..5_000)
                .map(|k| if k % 2 == 0 { -0.0 } else { 0.0 })
                .collect(),
            (0..100).map(|k| (k * 37 % 101) as f32).collect(), // small: direct selection
        ];
        for v in cases {
            let mut sorted = v.clone();
            sorted.sort_by(f32::total_cmp);
            let n = v.len();
            for (lo, hi) in [
                (0, n - 1),
                (n / 50, n - 1 - n / 50),
                (8, n - 9),
                (n / 2, n / 2),
                (3, 3),
            ] {
                let mut xs = v.clone();
                let (a, b) = two_ranks(&mut xs, lo, hi);
                assert_eq!(a.to_bits(), sorted[lo].to_bits(), "rank {lo} of {n}");
                assert_eq!(b.to_bits(), sorted[hi].to_bits(), "rank {hi} of {n}");
            }
        }
    }
}
