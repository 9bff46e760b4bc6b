//! `insar-mm bench heads` end to end at the smoke budget on a small `data synth` set: every
//! head trains and is scored, the outputs (results.json, results.md, report.html and its
//! images) exist, a rerun reuses the finished heads, and the bad inputs of issue 24 (an
//! unknown encoder, a run that is not an encoder, `--out` holding another bench) fail
//! clearly. The report is loaded in headless Chromium (Debian's `chromium`): no console
//! messages, every section present, every image loaded, and a screenshot.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const HEADS: [&str; 5] = [
    "classification",
    "segmentation",
    "captioning",
    "retrieval",
    "generation",
];

fn bench(data: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "bench",
        "heads",
        "--budget",
        "smoke",
        "--data",
        s(data),
        "--out",
        s(out),
        "-q",
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

#[test]
fn smoke_bench_runs_every_head_resumes_and_refuses_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = tmp.path().join("bench");
    // 80 frames: the test split needs 8 captioned images for the two FID halves.
    synth_dataset(&data, "80", "5");
    let table = bench(&data, &out, &[]);
    for h in HEADS {
        assert!(table.contains(&format!("| {h} |")), "{table}");
    }
    let results = json(&out.join("results.json"));
    let rows = results["results"].as_array().unwrap();
    assert_eq!(rows.len(), HEADS.len());
    for r in rows {
        let head = r["head"].as_str().unwrap();
        // Every figure was found in the outputs of the commands (a renamed key would be null).
        for (k, v) in r["figures"].as_object().unwrap() {
            assert!(v.is_number(), "{head} {k}: {v}");
        }
        assert!(
            r["inference_images_per_s"].as_f64().unwrap() > 0.0,
            "{head}"
        );
        assert!(!r["gallery"].as_array().unwrap().is_empty(), "{head}");
        for g in r["gallery"].as_array().unwrap() {
            let img = out.join(g["image"].as_str().unwrap());
            assert!(img.is_file(), "{head}: {}", img.display());
        }
    }
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    for h in HEADS {
        assert!(report.contains(&format!("<section id=\"{h}\">")), "{h}");
    }
    assert!(std::fs::read_to_string(out.join("results.md"))
        .unwrap()
        .starts_with("Budget smoke"));

    // A rerun reuses every finished head (nothing retrains) and writes the same table.
    let trained = std::fs::metadata(out.join("shipped/classify/model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    let again = bench(&data, &out, &[]);
    assert_eq!(again, table);
    let after = std::fs::metadata(out.join("shipped/classify/model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(trained, after);

    // A head stopped after its run's checkpoint but before its result continues that run
    // with `train --resume` and gets the same figures.
    std::fs::remove_file(out.join("shipped/classify.trained")).unwrap();
    std::fs::remove_file(out.join("shipped/classification.result.json")).unwrap();
    bench(&data, &out, &[]);
    let figures = |v: &serde_json::Value| v["results"][0]["figures"].clone();
    assert_eq!(figures(&json(&out.join("results.json"))), figures(&results));
    let log = std::fs::read_to_string(out.join("shipped/classify.log")).unwrap();
    assert!(log.contains("train classify --resume"), "{log}");

    // Bad input.
    let e = fails(
        &[
            "bench",
            "heads",
            "--budget",
            "smoke",
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--seed",
            "7",
        ],
        1,
    );
    assert!(e.contains("another bench") && e.contains("seed"), "{e}");
    let e = fails(
        &[
            "bench",
            "heads",
            "--encoder",
            "auto",
            "--out",
            s(&tmp.path().join("x")),
        ],
        1,
    );
    assert!(e.contains("--encoder \"auto\""), "{e}");
    let caption_run = out.join("shipped/caption");
    let e = fails(
        &[
            "bench",
            "heads",
            "--encoder",
            s(&caption_run),
            "--data",
            s(&data),
            "--out",
            s(&tmp.path().join("y")),
        ],
        1,
    );
    assert!(e.contains("not an encoder"), "{e}");
    let e = fails(
        &[
            "bench",
            "heads",
            "--heads",
            "generation",
            "--data",
            s(&data),
            "--out",
            s(&tmp.path().join("z")),
        ],
        1,
    );
    assert!(e.contains("generation needs classification"), "{e}");
    let e = fails_verbose(&["bench", "heads", "--budget", "medium"], 2);
    assert!(e.contains("quick"), "{e}");

    check_in_browser(&out.join("report.html"), tmp.path());
}

/// Debian's Chromium, if installed.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("which").arg(name).output().ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
}

/// Headless Chromium with the flags a closed network needs, and a fresh profile; under
/// coreutils' `timeout`, so a browser that hangs fails the test instead of stalling CI.
fn browser(exe: &Path, profile: &Path) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg("120")
        .arg(exe)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// Loads the report: the DOM after the load event says how many images loaded (the
/// report's own script), stderr carries every console message.
fn check_in_browser(report: &Path, tmp: &Path) {
    let Some(exe) = chromium() else {
        assert!(
            std::env::var_os("INSAR_MM_REQUIRE_BROWSER").is_none(),
            "INSAR_MM_REQUIRE_BROWSER is set but no chromium is installed"
        );
        eprintln!("skipped the browser check: no chromium (Debian package `chromium`)");
        return;
    };
    let url = format!("file://{}", report.canonicalize().unwrap().display());
    let dump = browser(&exe, &tmp.join("profile-dom"))
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dom = String::from_utf8_lossy(&dump.stdout);
    let stderr = String::from_utf8_lossy(&dump.stderr);
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    for h in HEADS {
        assert!(dom.contains(&format!("<section id=\"{h}\">")), "{h}");
    }
    let body = dom
        .split("<body")
        .nth(1)
        .and_then(|b| b.split('>').next())
        .unwrap_or_default();
    let attr = |name: &str| -> Option<usize> {
        body.split(&format!("{name}=\""))
            .nth(1)?
            .split('"')
            .next()?
            .parse()
            .ok()
    };
    let images = dom.matches("<img ").count();
    assert!(images > 10, "{images} images");
    assert_eq!(attr("data-images-loaded"), Some(images), "body: {body}");
    assert_eq!(attr("data-images-failed"), Some(0), "body: {body}");
    assert!(!body.contains("data-script-errors"), "body: {body}");

    let shot = tmp.join("report.png");
    let run = browser(&exe, &tmp.join("profile-shot"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
}
