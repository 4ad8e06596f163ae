//! Progress on stderr (indicatif): bars for counted work, spinners for
//! timed phases. Hidden when stderr is not a terminal.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting to `len`, labelled `msg`.
pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>28} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec})",
        )
        .expect("a valid template"),
    );
    pb.set_message(msg.to_owned());
    pb
}

/// A bar over a timed phase of `secs` seconds (position = elapsed ms).
pub fn timed(secs: f64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new((secs * 1000.0) as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>28} [{elapsed_precise}] {wide_bar} {percent}%")
            .expect("a valid template"),
    );
    pb.set_message(msg.to_owned());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A phase header on stderr (also when no bar is drawn).
pub fn phase(msg: &str) {
    eprintln!("-- {msg}");
}
