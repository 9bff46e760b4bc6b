//! Bounds on command-line parameters that would otherwise exhaust memory or time: checked
//! before anything is loaded.

use std::process::Command;

fn fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_insar-mm"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("the insar-mm binary runs");
    assert_eq!(out.status.code(), Some(1), "insar-mm {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn beam_width_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("no-run");
    let run = run.to_str().unwrap();
    for beam in ["0", "65", "1000"] {
        let err = fails(&["caption", "--model", run, "x.png", "--beam", beam]);
        assert!(err.contains("--beam"), "{err}");
        let err = fails(&["eval", "caption", "--model", run, "--beam", beam]);
        assert!(err.contains("--beam"), "{err}");
    }
    let err = fails(&["caption", "--model", run, "x.png", "--beam", "1000"]);
    assert!(err.contains("at most 64"), "{err}");
}
