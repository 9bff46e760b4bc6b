//! Helpers shared by every module of the `cli` test binary: running `insar-mm`, checking
//! its outcome, reading what it wrote, and the paths of the bundled fixtures.
//!
//! All CLI tests live in this one binary (`tests/cli/main.rs`), so the test code is compiled
//! and linked once instead of once per file. To add tests of a new command (or to move a
//! `tests/cli_<name>.rs` of another branch in):
//!
//! 1. put them in `tests/cli/<name>.rs`, starting with a `//!` paragraph saying what it
//!    covers, then `use crate::support::*;` (plus what else it needs);
//! 2. add `mod <name>;` to `tests/cli/main.rs`;
//! 3. use the helpers here instead of copies: [`ok`] (stdout), [`ok_json`], [`fails`]
//!    (exit code, no panic, one-line `error: …`; [`fails_verbose`] where the error spans
//!    lines), [`insar_mm`] (the raw `Output`) or [`command`] (to spawn, pipe or signal),
//!    and a [`Cli`] for extra environment: `Cli::with(&[("INSAR_MM_CACHE", s(&cache))])
//!    .ok(&args)`, `Cli::with(&[("RAYON_NUM_THREADS", "2")]).fails(&args, 1)`; then [`s`],
//!    [`json`], [`snapshot`], [`phase_pngs`], [`tensor_bytes`], [`read_npy`]… for what it
//!    wrote, [`synth_dataset`] for a small dataset, [`SAMPLE`], [`eval_fixtures`] and
//!    [`real_tarball`] for fixtures. A helper that a second module needs moves here; one
//!    that only its module uses stays there.
//!
//! Run one module with `cargo test --release --test cli <name>::` (test names are
//! `<module>::<function>`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Variables of the parent that would change what a run does or prints: the log filter
/// (errors must stay one line), the Hugging Face cache and endpoint (`--model owner/name`
/// must not find or fetch the developer's models), and proxies (ureq would send the
/// unreachable-endpoint check through one).
const REMOVED_ENV: [&str; 13] = [
    "INSAR_MM_LOG",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "XDG_CACHE_HOME",
    "ALL_PROXY",
    "all_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
];

/// How to run `insar-mm`: one thread for Rayon and Candle (`cargo test` already runs tests
/// in parallel; Candle's pool spin-waits on oversubscribed cores), [`REMOVED_ENV`] unset,
/// then `env` set on top (it may override the thread counts).
#[derive(Clone, Debug, Default)]
pub struct Cli {
    env: Vec<(String, String)>,
}

impl Cli {
    /// The common environment plus `env`.
    pub fn with(env: &[(&str, &str)]) -> Cli {
        Cli {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The command, not yet run (to pipe stdin, spawn and signal it…).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_insar-mm"));
        cmd.args(args)
            .env("RAYON_NUM_THREADS", "1")
            .env("CANDLE_NUM_THREADS", "1");
        for k in REMOVED_ENV {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `args` to the end, whatever the outcome.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .expect("the insar-mm binary runs")
    }

    /// Runs `args`, which must succeed; returns (stdout, stderr).
    pub fn ok_with_stderr(&self, args: &[&str]) -> (String, String) {
        let out = self.output(args);
        let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "insar-mm {args:?} {:?}: exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
            self.env,
            out.status.code(),
        );
        (stdout, stderr)
    }

    /// Runs `args`, which must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with_stderr(args).0
    }

    /// Runs `args`, which must fail with exit code `code` (1: runtime error, 2: usage
    /// error), no panic, and stderr the one line `error: …` of a user error; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let stderr = self.fails_verbose(args, code);
        assert!(
            stderr.starts_with("error: ") && stderr.trim().lines().count() == 1,
            "one-line error expected: {stderr}"
        );
        stderr
    }

    /// [`Cli::fails`] for errors that take more than one line of stderr (log lines before
    /// it, a TOML parser's excerpt after it): one line must still start with `error: `.
    pub fn fails_verbose(&self, args: &[&str], code: i32) -> String {
        let out = self.output(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "insar-mm {args:?} {:?}\nstdout: {}\nstderr: {stderr}",
            self.env,
            String::from_utf8_lossy(&out.stdout),
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("internal error"),
            "{stderr}"
        );
        assert!(
            stderr.lines().any(|l| l.starts_with("error: ")),
            "no `error: ` line: {stderr}"
        );
        stderr
    }
}

/// `insar-mm args` with the common environment, not yet run.
pub fn command(args: &[&str]) -> Command {
    Cli::default().command(args)
}

/// Runs `insar-mm args` to the end, whatever the outcome.
pub fn insar_mm(args: &[&str]) -> Output {
    Cli::default().output(args)
}

/// Runs `insar-mm args`, which must succeed; returns stdout.
pub fn ok(args: &[&str]) -> String {
    Cli::default().ok(args)
}

/// Runs `insar-mm args`, which must succeed printing JSON; returns it.
pub fn ok_json(args: &[&str]) -> Value {
    let stdout = ok(args);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {stdout}"))
}

/// Runs `insar-mm args`, which must fail with exit code `code`, no panic, and the one-line
/// `error: …` of a user error; returns stderr.
pub fn fails(args: &[&str], code: i32) -> String {
    Cli::default().fails(args, code)
}

/// [`fails`] for errors that take more than one line of stderr.
pub fn fails_verbose(args: &[&str], code: i32) -> String {
    Cli::default().fails_verbose(args, code)
}

/// A small `data synth` dataset in `out`: `frames` frames of 64×64 from `seed`.
pub fn synth_dataset(out: &Path, frames: &str, seed: &str) {
    ok(&[
        "data",
        "synth",
        "--out",
        s(out),
        "--frames",
        frames,
        "--size",
        "64x64",
        "--seed",
        seed,
        "-q",
    ]);
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A JSON file.
pub fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The repository root.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The 33 real Hephaestus annotations bundled in `tests/fixtures/hephaestus-sample`.
pub const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/hephaestus-sample"
);

/// [`SAMPLE`] as a path.
pub fn sample_dir() -> PathBuf {
    PathBuf::from(SAMPLE)
}

/// The reference fixtures of `evaluation/reference/fixtures/` (made by pycocoevalcap,
/// NumPy/SciPy, scikit-learn).
pub fn eval_fixtures() -> PathBuf {
    manifest_dir().join("evaluation/reference/fixtures")
}

/// The real annotation tarball, or None (with a note) when `../shared` is absent.
pub fn real_tarball() -> Option<PathBuf> {
    let path = manifest_dir().join("../shared/data/hephaestus/annotations.tar.gz");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "note: {} is absent; skipping the real-data part of this test",
            path.display()
        );
        None
    }
}

/// Every file under `dir` (recursively), sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// Every file under `dir` with its bytes, keyed by path relative to `dir`.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// The phase PNGs (`*.geo.diff.png`) under `dir`, sorted.
pub fn phase_pngs(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| s(p).ends_with(".geo.diff.png"))
        .collect()
}

/// How many PNG files lie under `dir` (0 when it does not exist).
pub fn count_pngs(dir: &Path) -> usize {
    if !dir.exists() {
        return 0;
    }
    files_under(dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .count()
}

/// The names of the entries of `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Copies the folder `from` to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Every tensor of a safetensors file as raw bytes, by name (sorted).
pub fn tensor_bytes(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

/// Safetensors metadata of a file (header only).
pub fn safetensors_metadata(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"].clone()
}

/// Header and float32 values of a `.npy` file.
pub fn read_npy(path: &Path) -> (String, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen])
        .unwrap()
        .to_string();
    let values = bytes[10 + hlen..]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (header, values)
}
