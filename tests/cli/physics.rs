//! End-to-end tests of `insar-mm physics ...` through the binary: reference values, the
//! output format, and clear errors for bad requests.

use std::path::Path;

use serde_json::Value;

use crate::support::*;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn floats(v: &Value, key: &str) -> Vec<f64> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn mogi_displacement_matches_the_closed_form_and_writes_out() {
    let dir = tempfile::tempdir().unwrap();
    let req = write(
        dir.path(),
        "req.json",
        r#"{"source": "mogi", "params": {"e": 1000, "n": 0, "depth": 3000, "dv": 2e6},
            "poisson": 0.25, "points": {"e": [1000, 5000, -3000], "n": [0, 0, 0]}}"#,
    );
    let v = ok_json(&["physics", "displacement", "--request", &req]);
    let uu = floats(&v, "uu");
    let ue = floats(&v, "ue");
    let un = floats(&v, "un");
    assert_eq!((uu.len(), ue.len(), un.len()), (3, 3, 3));
    let c = 0.75 * 2e6 / std::f64::consts::PI;
    assert!((uu[0] - c / 9e6).abs() < 1e-12);
    // 4 km from the source: R = 5 km.
    assert!((uu[1] - c * 3000.0 / 1.25e11).abs() < 1e-12);
    assert!((ue[1] - c * 4000.0 / 1.25e11).abs() < 1e-12);
    assert!((ue[2] + ue[1]).abs() < 1e-12 && (uu[2] - uu[1]).abs() < 1e-12);
    assert!(v.get("dv").is_none(), "Mogi output has no dv: {v}");

    let out = dir.path().join("sub/out.json");
    let stdout = ok(&[
        "physics",
        "displacement",
        "--request",
        &req,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.is_empty(), "{stdout}");
    let written: Value = json(&out);
    assert_eq!(written, v);
}

#[test]
fn okada_request_reproduces_okada_1985_table2() {
    // Case 2 dip-slip (x=2, y=3, d=4, δ=70°, L=3, W=2) through the centroid convention:
    // strike 90° (x = east), centroid depth d − (W/2)·sin δ, points moved by (−L/2, −(W/2)·cos δ).
    let dip = 70f64.to_radians();
    let req = serde_json::json!({
        "source": "okada",
        "params": {"e": 0, "n": 0, "depth": 4.0 - dip.sin(), "strike": 90, "dip": 70,
                   "rake": 90, "length": 3, "width": 2, "slip": 1, "opening": 0},
        "points": {"e": [2.0 - 1.5], "n": [3.0 - dip.cos()]}
    });
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "okada.json", &req.to_string());
    let v = ok_json(&["physics", "displacement", "--request", &path]);
    let got = [
        floats(&v, "ue")[0],
        floats(&v, "un")[0],
        floats(&v, "uu")[0],
    ];
    for (g, want) in got.iter().zip([-4.682e-3, -3.527e-2, -3.564e-2]) {
        assert!((g - want).abs() < 6e-4 * want.abs(), "{got:?}");
    }
}

#[test]
fn penny_and_spheroid_report_volume_change() {
    let dir = tempfile::tempdir().unwrap();
    let penny = write(
        dir.path(),
        "penny.json",
        r#"{"source": "penny", "params": {"e": 0, "n": 0, "depth": 20000, "radius": 1000,
            "pressure_over_mu": 0.001}, "points": {"e": [0, 3000], "n": [0, 4000]}}"#,
    );
    let v = ok_json(&["physics", "displacement", "--request", &penny]);
    // Deep crack: Sneddon's volume 8(1−ν)ΔP a³/(3μ).
    let dv = v["dv"].as_f64().unwrap();
    let sneddon = 8.0 * 0.75 * 1e-3 * 1e9 / 3.0;
    assert!((dv / sneddon - 1.0).abs() < 2e-3, "{dv}");
    let uu = floats(&v, "uu");
    assert!(uu[0] > uu[1] && uu[1] > 0.0);

    let sph = write(
        dir.path(),
        "sph.json",
        r#"{"source": "spheroid", "params": {"e": 0, "n": 0, "depth": 3000, "semi_major": 1000,
            "aspect_ratio": 0.5, "pressure_over_mu": 0.001, "mu": 3e10, "plunge": 90,
            "trend": 0}, "poisson": 0.25, "points": {"e": [0], "n": [0]}}"#,
    );
    let v = ok_json(&["physics", "displacement", "--request", &sph]);
    let want = std::f64::consts::PI * 1000.0 * 500.0 * 500.0 * 1e-3;
    assert!((v["dv"].as_f64().unwrap() - want).abs() < 1e-6 * want);
    assert!(floats(&v, "uu")[0] > 0.0);
}

#[test]
fn bad_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown.json",
            r#"{"source": "sphere", "params": {}, "points": {"e": [0], "n": [0]}}"#,
            vec!["unknown.json", "sphere", "mogi"],
        ),
        (
            "missing.json",
            r#"{"source": "mogi", "params": {"e": 0, "n": 0, "depth": 3000},
                "points": {"e": [0], "n": [0]}}"#,
            vec!["missing.json", "params", "missing field `dv`"],
        ),
        (
            "lengths.json",
            r#"{"source": "mogi", "params": {"e": 0, "n": 0, "depth": 3000, "dv": 1},
                "points": {"e": [0, 1], "n": [0]}}"#,
            vec![
                "lengths.json",
                "points.e and points.n differ in length (2 vs 1)",
            ],
        ),
        (
            "depth.json",
            r#"{"source": "penny", "params": {"e": 0, "n": 0, "depth": -100, "radius": 500,
                "pressure_over_mu": 0.001}, "points": {"e": [0], "n": [0]}}"#,
            vec!["depth.json", "params.depth must be > 0 (got -100)"],
        ),
        (
            "dip.json",
            r#"{"source": "okada", "params": {"e": 0, "n": 0, "depth": 3000, "strike": 0,
                "dip": 95, "rake": 0, "length": 1000, "width": 1000, "slip": 1, "opening": 0},
                "points": {"e": [0], "n": [0]}}"#,
            vec!["params.dip must be in [0, 90]"],
        ),
        (
            "typo.json",
            r#"{"source": "mogi", "params": {"e": 0, "n": 0, "depth": 3000, "dv": 1, "dV": 2},
                "points": {"e": [0], "n": [0]}}"#,
            vec!["unknown field `dV`"],
        ),
        (
            "poisson.json",
            r#"{"source": "mogi", "params": {"e": 0, "n": 0, "depth": 3000, "dv": 1},
                "poisson": 0.5, "points": {"e": [0], "n": [0]}}"#,
            vec!["poisson must be in (-1, 0.5)"],
        ),
        (
            "broken.json",
            r#"{"source": "mogi", "#,
            vec!["broken.json", "invalid request"],
        ),
    ];
    for (name, text, wants) in cases {
        let path = write(dir.path(), name, text);
        let msg = fails(&["physics", "displacement", "--request", &path], 1);
        for w in wants {
            assert!(msg.contains(w), "{name}: {msg:?} lacks {w:?}");
        }
    }
    let missing = dir.path().join("nope.json");
    let msg = fails(
        &[
            "physics",
            "displacement",
            "--request",
            missing.to_str().unwrap(),
        ],
        1,
    );
    assert!(
        msg.contains("nope.json") && msg.contains("cannot read"),
        "{msg}"
    );
    // Usage errors exit with 2.
    fails(&["physics", "displacement"], 2);
    fails(&["physics", "los", "--heading", "10"], 2);
}

#[test]
fn los_prints_the_unit_vector() {
    let v = ok_json(&["physics", "los", "--heading", "-12", "--incidence", "39"]);
    let (e, n, u) = (
        v["east"].as_f64().unwrap(),
        v["north"].as_f64().unwrap(),
        v["up"].as_f64().unwrap(),
    );
    let (si, ci) = 39f64.to_radians().sin_cos();
    let (sh, ch) = (-12f64).to_radians().sin_cos();
    assert!((e + si * ch).abs() < 1e-12 && (n - si * sh).abs() < 1e-12 && (u - ci).abs() < 1e-12);
    // Descending looks west: the satellite is to the east.
    let d = ok_json(&["physics", "los", "--heading", "192", "--incidence", "35"]);
    assert!(d["east"].as_f64().unwrap() > 0.5);
    let msg = fails(
        &["physics", "los", "--heading", "0", "--incidence", "91"],
        1,
    );
    assert!(msg.contains("--incidence"), "{msg}");
}

#[test]
fn request_from_standard_input() {
    use std::io::Write;
    use std::process::Stdio;
    let run = |body: &[u8]| {
        let mut child = command(&["physics", "displacement", "--request", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the insar-mm binary runs");
        child.stdin.take().unwrap().write_all(body).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(
        br#"{"source":"mogi","params":{"e":0,"n":0,"depth":-5,"dv":1},"points":{"e":[0],"n":[0]}}"#,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("standard input") && err.contains("params.depth"),
        "{err}"
    );
    let out = run(br#"{"source":"mogi","params":{"e":0,"n":0,"depth":1000,"dv":1e6},"points":{"e":[0],"n":[0]}}"#);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = 0.75e6 / (std::f64::consts::PI * 1e6);
    assert!((floats(&v, "uu")[0] - want).abs() < 1e-12);
}
