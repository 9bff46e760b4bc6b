//! Progress bars shared by long-running commands (hidden with `-q` or when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` items labelled `what` (e.g. "frames"); hidden when `visible` is false.
pub fn bar(len: u64, what: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}}, ETA {{eta}}) {{msg}}"
        ))
        .expect("static progress template is valid"),
    );
    pb
}
