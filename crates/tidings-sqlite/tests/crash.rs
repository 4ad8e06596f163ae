//! Crash safety with a real child process killed by SIGKILL.
//!
//! Each round starts `tidings-sqlite-crashtest` on the same file (it appends
//! from four threads in `Durability::Sync` and prints every acknowledged
//! `seq id`), kills it after a random 20–300 ms, then reopens the file here
//! and checks that every acknowledged event is at its seq with its id, that
//! seqs are gap-free from 1 with no duplicate, that the file opens cleanly
//! (with the default `quick_check`), and that appending goes on at last + 1.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tidings_core::{EventLog, NewEvent};
use tidings_sqlite::{SqliteLog, SqliteOptions};
use uuid::Uuid;

const ROUNDS: usize = 24;

fn parse_acks(out: &str, acked: &mut HashMap<u64, Uuid>) -> usize {
    let mut n = 0;
    // Only complete lines: the kill may cut the last one.
    let complete = match out.rfind('\n') {
        Some(i) => &out[..=i],
        None => "",
    };
    for line in complete.lines() {
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("ack"), "unexpected output line {line:?}");
        let seq: u64 = parts.next().and_then(|s| s.parse().ok()).expect("a seq");
        let id: Uuid = parts.next().and_then(|s| s.parse().ok()).expect("an id");
        if let Some(prev) = acked.insert(seq, id) {
            assert_eq!(
                prev, id,
                "seq {seq} was acknowledged for two different events"
            );
        }
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() {
    let bin = env!("CARGO_BIN_EXE_tidings-sqlite-crashtest");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("crash.db");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    println!("crash test seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let mut acked: HashMap<u64, Uuid> = HashMap::new();
    let mut rounds_with_acks = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(bin)
            .arg(&path)
            .arg("4")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the crash test helper");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let delay = rng.u64(20..=300);
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().expect("SIGKILL the helper");
        let status = child.wait().expect("reap the helper");
        let out = reader.join().expect("stdout reader");
        let new_acks = parse_acks(&out, &mut acked);
        if new_acks > 0 {
            rounds_with_acks += 1;
        }

        let log = SqliteLog::open(&path, SqliteOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: the file does not reopen cleanly: {e}"));
        let bounds = log.bounds().await.expect("bounds");
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = log.read(after, 10_000).await.expect("read");
            assert_eq!(page.last_seq, bounds.last);
            let Some(last) = page.events.last() else {
                break;
            };
            after = last.seq;
            all.extend(page.events);
        }
        let last = bounds.last;
        assert_eq!(bounds.first, 1, "round {round}: nothing was pruned");
        assert_eq!(
            all.len() as u64,
            last,
            "round {round}: seqs 1..={last} all present"
        );
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1, "round {round}: gap or reorder at {i}");
        }
        let ids: HashSet<Uuid> = all.iter().map(|e| e.id).collect();
        assert_eq!(
            ids.len(),
            all.len(),
            "round {round}: an event is stored twice"
        );
        for (seq, id) in &acked {
            let e = all
                .get((*seq - 1) as usize)
                .unwrap_or_else(|| panic!("round {round}: acknowledged seq {seq} is lost"));
            assert_eq!(
                e.id, *id,
                "round {round}: acknowledged seq {seq} has another event"
            );
        }
        let next = log
            .append(
                vec![NewEvent::new("crash.after", json!({"round": round})).expect("name")],
                None,
            )
            .await
            .expect("append after reopening");
        assert_eq!(
            next[0].event.seq,
            last + 1,
            "round {round}: appending goes on"
        );
        acked.insert(next[0].event.seq, next[0].event.id);
        log.close_blocking().expect("close");
        println!(
            "round {round}: killed after {delay} ms ({status}), {new_acks} new acks, last seq {}",
            last + 1
        );
    }
    assert!(
        rounds_with_acks >= ROUNDS / 2,
        "the helper acknowledged appends in only {rounds_with_acks} of {ROUNDS} rounds"
    );
    println!(
        "{} acknowledged events checked in {:?}",
        acked.len(),
        started.elapsed()
    );
}
