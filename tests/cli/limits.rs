//! Bounds on command-line parameters that would otherwise exhaust memory or time: checked
//! before anything is loaded.

use crate::support::*;

#[test]
fn beam_width_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("no-run");
    let run = run.to_str().unwrap();
    for beam in ["0", "65", "1000"] {
        let err = fails(&["caption", "--model", run, "x.png", "--beam", beam], 1);
        assert!(err.contains("--beam"), "{err}");
        let err = fails(&["eval", "caption", "--model", run, "--beam", beam], 1);
        assert!(err.contains("--beam"), "{err}");
    }
    let err = fails(&["caption", "--model", run, "x.png", "--beam", "1000"], 1);
    assert!(err.contains("at most 64"), "{err}");
}
