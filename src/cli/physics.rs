//! `insar-mm physics ...`: evaluate the generator's deformation sources and line of sight.
//!
//! - `physics displacement --request req.json [--out out.json]` evaluates one source at given
//!   surface points. Request: `{"source": "mogi"|"okada"|"penny"|"spheroid", "params": {...},
//!   "poisson": 0.25, "points": {"e": [..], "n": [..]}}` (SI units, angles in degrees; see
//!   `synth::sources` for the parameters). Output: `{"ue": [..], "un": [..], "uu": [..]}` plus
//!   `"dv"` (volume change, m³) for penny and spheroid.
//! - `physics los --heading DEG --incidence DEG` prints the ground-to-satellite unit vector.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use serde::{Deserialize, Serialize};

use super::GlobalArgs;
use insar_mm::data::atomic::write_atomic;
use insar_mm::synth::los::{los_vector, validate_geometry};
use insar_mm::synth::sources::{checked_displacement, volume_change, Source, DEFAULT_POISSON};

#[derive(Debug, Subcommand)]
pub enum PhysicsCommand {
    /// Surface displacement (east, north, up; metres) of one source at given points.
    ///
    /// The request is JSON: {"source": "mogi"|"okada"|"penny"|"spheroid", "params": {...},
    /// "poisson": 0.25, "points": {"e": [...], "n": [...]}}. Parameters (SI, degrees):
    /// mogi {e, n, depth, dv}; okada {e, n, depth (centroid), strike, dip, rake, length,
    /// width (down-dip), slip, opening}; penny {e, n, depth, radius, pressure_over_mu};
    /// spheroid {e, n, depth, semi_major, aspect_ratio, pressure_over_mu, mu, plunge, trend}.
    Displacement {
        /// Request JSON file (`-` reads standard input).
        #[arg(long)]
        request: PathBuf,
        /// Write the result here (atomically) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the ground-to-satellite line-of-sight unit vector (east, north, up).
    ///
    /// l = (−sin i·cos h, sin i·sin h, cos i). Sentinel-1 headings: about −12° ascending,
    /// 192° descending; incidence 29–46°.
    Los {
        /// Heading (flight azimuth), degrees clockwise from north.
        #[arg(long, allow_negative_numbers = true)]
        heading: f64,
        /// Incidence angle from vertical, degrees in [0, 90).
        #[arg(long, allow_negative_numbers = true)]
        incidence: f64,
    },
}

pub fn run(cmd: PhysicsCommand, _global: &GlobalArgs) -> Result<()> {
    match cmd {
        PhysicsCommand::Displacement { request, out } => displacement(&request, out.as_deref()),
        PhysicsCommand::Los { heading, incidence } => los(heading, incidence),
    }
}

/// The request as written; the source is parsed separately so that errors name its fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    source: String,
    params: serde_json::Value,
    #[serde(default = "default_poisson")]
    poisson: f64,
    points: Points,
}

fn default_poisson() -> f64 {
    DEFAULT_POISSON
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Points {
    e: Vec<f64>,
    n: Vec<f64>,
}

/// Output of `physics displacement`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DisplacementOutput {
    pub ue: Vec<f64>,
    pub un: Vec<f64>,
    pub uu: Vec<f64>,
    /// Volume change (m³), for penny and spheroid sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dv: Option<f64>,
}

/// A parsed and checked request.
#[derive(Debug)]
pub struct Request {
    pub source: Source,
    pub poisson: f64,
    pub e: Vec<f64>,
    pub n: Vec<f64>,
}

/// Parses a request (errors name the field: ``field `params`: missing field `dv` ``).
pub fn parse_request(bytes: &[u8]) -> Result<Request, String> {
    let raw: RawRequest = insar_mm::data::json::parse_json(bytes)?;
    let params = raw.params;
    let source = match raw.source.as_str() {
        "mogi" => Source::Mogi(parse_params(params)?),
        "okada" => Source::Okada(parse_params(params)?),
        "penny" => Source::Penny(parse_params(params)?),
        "spheroid" => Source::Spheroid(parse_params(params)?),
        other => {
            return Err(format!(
                "field `source`: unknown source `{other}`, expected one of `mogi`, `okada`, \
                 `penny`, `spheroid`"
            ))
        }
    };
    Ok(Request {
        source,
        poisson: raw.poisson,
        e: raw.points.e,
        n: raw.points.n,
    })
}

fn parse_params<T: serde::de::DeserializeOwned>(params: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            format!("field `params`: {inner}")
        } else {
            format!("field `params.{path}`: {inner}")
        }
    })
}

/// Evaluates a request.
pub fn evaluate(req: &Request) -> Result<DisplacementOutput, String> {
    let d = checked_displacement(&req.source, req.poisson, &req.e, &req.n)?;
    let dv = match req.source {
        Source::Penny(_) | Source::Spheroid(_) => Some(volume_change(&req.source, req.poisson)),
        _ => None,
    };
    Ok(DisplacementOutput {
        ue: d.ue,
        un: d.un,
        uu: d.uu,
        dv,
    })
}

fn read_request(path: &Path) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("--request -: cannot read standard input")?;
        Ok(bytes)
    } else {
        std::fs::read(path).with_context(|| format!("--request {}: cannot read", path.display()))
    }
}

fn displacement(request: &Path, out: Option<&Path>) -> Result<()> {
    let bytes = read_request(request)?;
    let name = if request.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        request.display().to_string()
    };
    let req = parse_request(&bytes).map_err(|e| anyhow!("{name}: invalid request: {e}"))?;
    let result = evaluate(&req).map_err(|e| anyhow!("{name}: {e}"))?;
    let json = serde_json::to_string(&result)?;
    match out {
        Some(path) => write_atomic(path, format!("{json}\n").as_bytes())?,
        None => println!("{json}"),
    }
    Ok(())
}

fn los(heading: f64, incidence: f64) -> Result<()> {
    validate_geometry(heading, incidence).map_err(|e| anyhow!(e))?;
    let l = los_vector(heading, incidence);
    println!(
        "{}",
        serde_json::json!({ "east": l[0], "north": l[1], "up": l[2] })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_errors_name_the_field() {
        let err = parse_request(
            br#"{"source":"okada","params":{"e":0,"n":0,"depth":1},"points":{"e":[],"n":[]}}"#,
        )
        .unwrap_err();
        assert!(
            err.contains("params") && err.contains("missing field"),
            "{err}"
        );
        let err = parse_request(br#"{"source":"blob","params":{},"points":{"e":[],"n":[]}}"#)
            .unwrap_err();
        assert!(err.contains("source") && err.contains("blob"), "{err}");
        let err = parse_request(br#"{"source":"mogi","params":{},"pts":{}}"#).unwrap_err();
        assert!(err.contains("pts"), "{err}");
        let req = parse_request(
            br#"{"source":"mogi","params":{"e":0,"n":0,"depth":1000,"dv":1e6},"points":{"e":[0],"n":[0]}}"#,
        )
        .unwrap();
        assert_eq!(req.poisson, DEFAULT_POISSON);
        let out = evaluate(&req).unwrap();
        assert!(out.dv.is_none() && out.uu[0] > 0.0);
    }
}
