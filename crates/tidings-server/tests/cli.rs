//! The `tidings` client commands against the real binary: `tail` with a
//! filter and as a consumer (it acknowledges what it printed), and
//! `consumers`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::spawn_binary;

fn tidings(base: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidings"));
    c.env("TIDINGS_SERVER", base).env("TIDINGS_LOG", "warn");
    c
}

/// Runs `tail` until it printed `n` lines, then stops it (after `settle`).
fn tail_lines(base: &str, args: &[&str], n: usize) -> Vec<String> {
    let mut child = tidings(base)
        .arg("tail")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    while lines.len() < n {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        lines.push(line.trim().to_owned());
    }
    // Give the last acknowledgement a moment to be sent and committed.
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn tail_filters_and_consumes_and_consumers_lists_the_lag() {
    let dir = tempfile::tempdir().unwrap();
    let (server, base) = spawn_binary(&["--data-dir".as_ref(), dir.path().as_os_str()]);
    // Killed on every way out, a failed assertion too.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);
    let publish = |w: u64| {
        let st = tidings(&base)
            .args(["publish", "move", &format!("{{\"world_id\":{w}}}")])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
    };
    for w in [42, 7, 42] {
        publish(w);
    }
    let lines = tail_lines(
        &base,
        &["--after", "0", "--filter", "data.world_id == 42", "move"],
        2,
    );
    assert_eq!(lines.len(), 2);
    for (line, seq) in lines.iter().zip([1, 3]) {
        assert!(line.starts_with(&format!("#{seq} move")), "{line}");
    }
    let lines = tail_lines(&base, &["--consumer", "cli", "--json", "move"], 3);
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    publish(42);
    publish(7);
    // `consumers` shows the cursor at the last printed event and the lag.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = tidings(&base).arg("consumers").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("cli")
            && text.contains("cursor          3")
            && text.contains("lag        2")
        {
            break;
        }
        assert!(Instant::now() < deadline, "unexpected listing: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The consumer resumes after what it printed.
    let lines = tail_lines(&base, &["--consumer", "cli", "--json", "move"], 2);
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [4, 5]);
}
