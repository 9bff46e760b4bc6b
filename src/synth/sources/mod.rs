//! Analytic deformation sources in an elastic half-space (docs/architecture.md §2.2, notes/synth-physics.md §1).
//!
//! Every source maps surface points (east, north in metres, any origin shared with the source
//! position) to a displacement (east, north, up in metres). Conventions:
//! - depth is positive down, in metres; angles are in degrees;
//! - Okada faults are placed by their **centroid** (`e`, `n`, `depth`), `width` is measured
//!   down-dip, strike is clockwise from north with the fault dipping to the right of strike,
//!   rake is the hanging-wall motion (0 left-lateral, 90 thrust, −90 normal, 180 right-lateral);
//! - the Poisson ratio is a parameter ([`DEFAULT_POISSON`] = 0.25).
//!
//! [`Source`] deserialises from the `physics displacement` request form
//! `{"source": "mogi", "params": {...}}`; unknown parameter names are rejected.
//!
//! Evaluation runs on rayon over fixed chunks of points; each point is computed on its own,
//! so the output does not depend on the thread count.

pub mod mogi;
pub mod okada;
pub mod penny;
pub mod spheroid;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use mogi::MogiParams;
pub use okada::OkadaParams;
pub use penny::PennyParams;
pub use spheroid::SpheroidParams;

/// Poisson ratio used unless told otherwise (λ = μ).
pub const DEFAULT_POISSON: f64 = 0.25;

/// One deformation source with its parameters (SI units, angles in degrees).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", content = "params", rename_all = "lowercase")]
pub enum Source {
    /// Mogi (1958) point pressure source.
    Mogi(MogiParams),
    /// Okada (1985) rectangular dislocation: faults (shear), dykes and sills (tensile).
    Okada(OkadaParams),
    /// Fialko et al. (2001) pressurised horizontal penny-shaped crack.
    Penny(PennyParams),
    /// Yang et al. (1988) pressurised prolate spheroid.
    Spheroid(SpheroidParams),
}

/// Surface displacement at a list of points, metres (east, north, up).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Displacement {
    pub ue: Vec<f64>,
    pub un: Vec<f64>,
    pub uu: Vec<f64>,
}

impl Displacement {
    pub fn len(&self) -> usize {
        self.uu.len()
    }

    pub fn is_empty(&self) -> bool {
        self.uu.is_empty()
    }

    /// Adds another displacement of the same length point by point (superposition).
    pub fn add(&mut self, other: &Displacement) {
        assert_eq!(
            self.len(),
            other.len(),
            "displacements of different lengths"
        );
        for (a, b) in self.ue.iter_mut().zip(&other.ue) {
            *a += b;
        }
        for (a, b) in self.un.iter_mut().zip(&other.un) {
            *a += b;
        }
        for (a, b) in self.uu.iter_mut().zip(&other.uu) {
            *a += b;
        }
    }

    fn from_triples(v: Vec<[f64; 3]>) -> Self {
        let mut d = Displacement {
            ue: Vec::with_capacity(v.len()),
            un: Vec::with_capacity(v.len()),
            uu: Vec::with_capacity(v.len()),
        };
        for [e, n, u] in v {
            d.ue.push(e);
            d.un.push(n);
            d.uu.push(u);
        }
        d
    }
}

impl Source {
    /// Lower-case name as written in requests (`mogi`, `okada`, `penny`, `spheroid`).
    pub fn name(&self) -> &'static str {
        match self {
            Source::Mogi(_) => "mogi",
            Source::Okada(_) => "okada",
            Source::Penny(_) => "penny",
            Source::Spheroid(_) => "spheroid",
        }
    }

    /// Surface position (east, north) of the source centre / fault centroid.
    pub fn position(&self) -> (f64, f64) {
        match self {
            Source::Mogi(p) => (p.e, p.n),
            Source::Okada(p) => (p.e, p.n),
            Source::Penny(p) => (p.e, p.n),
            Source::Spheroid(p) => (p.e, p.n),
        }
    }

    /// Checks that every parameter is finite and physically meaningful; the message names
    /// the parameter (`params.depth must be > 0 (got -1)`).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Source::Mogi(p) => p.validate(),
            Source::Okada(p) => p.validate(),
            Source::Penny(p) => p.validate(),
            Source::Spheroid(p) => p.validate(),
        }
    }
}

/// Checks a Poisson ratio: finite and in (−1, 0.5).
pub fn validate_poisson(poisson: f64) -> Result<(), String> {
    if poisson.is_finite() && poisson > -1.0 && poisson < 0.5 {
        Ok(())
    } else {
        Err(format!("poisson must be in (-1, 0.5) (got {poisson})"))
    }
}

pub(crate) fn check_finite(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(format!("params.{name} must be a finite number (got {v})"))
    }
}

pub(crate) fn check_positive(name: &str, v: f64) -> Result<(), String> {
    check_finite(name, v)?;
    if v > 0.0 {
        Ok(())
    } else {
        Err(format!("params.{name} must be > 0 (got {v})"))
    }
}

pub(crate) fn check_range(name: &str, v: f64, lo: f64, hi: f64) -> Result<(), String> {
    check_finite(name, v)?;
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("params.{name} must be in [{lo}, {hi}] (got {v})"))
    }
}

/// Points per rayon task: small enough to balance, large enough to amortise.
const CHUNK: usize = 1024;

/// Evaluates `f` at every point in parallel; the result is independent of the thread count.
fn map_points<F>(e: &[f64], n: &[f64], f: F) -> Displacement
where
    F: Fn(f64, f64) -> [f64; 3] + Sync,
{
    let triples: Vec<[f64; 3]> = e
        .par_chunks(CHUNK)
        .zip(n.par_chunks(CHUNK))
        .flat_map_iter(|(ec, nc)| ec.iter().zip(nc).map(|(&x, &y)| f(x, y)))
        .collect();
    Displacement::from_triples(triples)
}

/// Surface displacement of `source` at the points `(e[i], n[i])`.
///
/// Panics if `e` and `n` differ in length, or if the parameters or Poisson ratio are invalid
/// ([`checked_displacement`] returns those as errors instead).
pub fn displacement(source: &Source, poisson: f64, e: &[f64], n: &[f64]) -> Displacement {
    match checked_displacement(source, poisson, e, n) {
        Ok(d) => d,
        Err(msg) => panic!("displacement: {msg}"),
    }
}

/// [`displacement`] with the input checks returned as errors (message names the argument).
pub fn checked_displacement(
    source: &Source,
    poisson: f64,
    e: &[f64],
    n: &[f64],
) -> Result<Displacement, String> {
    if e.len() != n.len() {
        return Err(format!(
            "points.e and points.n differ in length ({} vs {})",
            e.len(),
            n.len()
        ));
    }
    validate_poisson(poisson)?;
    source.validate()?;
    if let Some(i) = e.iter().chain(n).position(|v| !v.is_finite()) {
        let (name, i) = if i < e.len() {
            ("e", i)
        } else {
            ("n", i - e.len())
        };
        return Err(format!("points.{name}[{i}] is not a finite number"));
    }
    let r_max = match source {
        Source::Penny(p) => e
            .iter()
            .zip(n)
            .map(|(x, y)| (x - p.e).hypot(y - p.n))
            .fold(0.0, f64::max),
        _ => 0.0,
    };
    let eval = Evaluator::new(source, poisson, r_max);
    Ok(map_points(e, n, |x, y| eval.at(x, y)))
}

/// A source prepared for evaluation at many points: trigonometry hoisted (Okada,
/// spheroid), the penny crack's radial profile solved and tabulated once. Build it once
/// per source and call [`Evaluator::at`] per point; the parameters must be valid
/// ([`Source::validate`]).
#[derive(Debug, Clone)]
pub enum Evaluator {
    Mogi(MogiParams, f64),
    Okada(okada::Fault, f64),
    Penny(penny::PennyProfile),
    Spheroid(spheroid::SpheroidModel),
}

impl Evaluator {
    /// `r_max`: the largest distance (m) from the source centre at which the penny crack
    /// will be evaluated (its profile is tabulated that far; beyond it the point-crack
    /// far field takes over). Ignored by the other sources.
    pub fn new(source: &Source, poisson: f64, r_max: f64) -> Self {
        match source {
            Source::Mogi(p) => Evaluator::Mogi(*p, poisson),
            Source::Okada(p) => Evaluator::Okada(p.fault(), poisson),
            Source::Penny(p) => Evaluator::Penny(p.profile(poisson, r_max)),
            Source::Spheroid(p) => Evaluator::Spheroid(p.model(poisson)),
        }
    }

    /// Displacement (east, north, up) in metres at the surface point `(e, n)`.
    #[inline]
    pub fn at(&self, e: f64, n: f64) -> [f64; 3] {
        match self {
            Evaluator::Mogi(p, poisson) => p.displacement(*poisson, e, n),
            Evaluator::Okada(f, poisson) => f.displacement(*poisson, e, n),
            Evaluator::Penny(p) => p.displacement(e, n),
            Evaluator::Spheroid(m) => m.displacement(e, n),
        }
    }
}

/// Volume change of the source, m³: Mogi ΔV as given, Okada `length·width·opening` (0 for
/// pure shear), the penny crack's opening volume (Fialko et al. 2001), and `π·a·b²·P/μ`
/// for the spheroid (the dMODELS convention; it equals Mogi's ΔV for a sphere).
pub fn volume_change(source: &Source, poisson: f64) -> f64 {
    match source {
        Source::Mogi(p) => p.dv,
        Source::Okada(p) => p.length * p.width * p.opening,
        Source::Penny(p) => p.volume_change(poisson),
        Source::Spheroid(p) => p.volume_change(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_form_deserialises_and_rejects_unknown_fields() {
        let s: Source = serde_json::from_str(
            r#"{"source":"mogi","params":{"e":1,"n":2,"depth":3000,"dv":1e6}}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            Source::Mogi(MogiParams {
                e: 1.0,
                n: 2.0,
                depth: 3000.0,
                dv: 1e6
            })
        );
        let err = serde_json::from_str::<Source>(
            r#"{"source":"mogi","params":{"e":1,"n":2,"depth":3000,"dV":1e6}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("dV"), "{err}");
        let err = serde_json::from_str::<Source>(r#"{"source":"sphere","params":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sphere") && err.contains("mogi"), "{err}");
    }

    #[test]
    fn output_does_not_depend_on_thread_count() {
        let src = Source::Okada(OkadaParams {
            e: 300.0,
            n: -200.0,
            depth: 4000.0,
            strike: 33.0,
            dip: 55.0,
            rake: 70.0,
            length: 8000.0,
            width: 5000.0,
            slip: 1.2,
            opening: 0.3,
        });
        let e: Vec<f64> = (0..5000)
            .map(|i| (i % 71) as f64 * 400.0 - 14000.0)
            .collect();
        let n: Vec<f64> = (0..5000)
            .map(|i| (i / 71) as f64 * 400.0 - 14000.0)
            .collect();
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| displacement(&src, 0.25, &e, &n))
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_argument() {
        let src = Source::Mogi(MogiParams {
            e: 0.0,
            n: 0.0,
            depth: -5.0,
            dv: 1.0,
        });
        let err = checked_displacement(&src, 0.25, &[0.0], &[0.0]).unwrap_err();
        assert!(err.contains("params.depth"), "{err}");
        let ok = Source::Mogi(MogiParams {
            e: 0.0,
            n: 0.0,
            depth: 5.0,
            dv: 1.0,
        });
        let err = checked_displacement(&ok, 0.25, &[0.0, 1.0], &[0.0]).unwrap_err();
        assert!(err.contains("differ in length"), "{err}");
        let err = checked_displacement(&ok, 0.7, &[0.0], &[0.0]).unwrap_err();
        assert!(err.contains("poisson"), "{err}");
        let err = checked_displacement(&ok, 0.25, &[0.0], &[f64::NAN]).unwrap_err();
        assert!(err.contains("points.n[0]"), "{err}");
    }
}
