//! A real full disk: the log lives on a 4 MiB tmpfs, a ballast file takes
//! almost all of it, and appends go on until the disk is full. Then the log
//! must answer `AppendError::NoSpace`, report `Degraded { no_space: true }`,
//! keep every acknowledged event, and recover by itself (no reopen) once
//! the ballast is deleted: appends succeed at the next seq, health is `Ok`,
//! and the log is gap-free with every acknowledged event.
//!
//! Needs root (to mount the tmpfs); prints "skipped" and passes otherwise.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use tidings_core::log::{AppendError, LogHealth};
use tidings_core::{EventLog, LogOptions, NewEvent};
use tidings_sqlite::{Durability, SqliteLog, SqliteOptions};
use uuid::Uuid;

/// A mounted tmpfs, unmounted on drop (also when the test panics).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` if mounting is not allowed here.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!("mount failed: {}", String::from_utf8_lossy(&o.stderr));
                None
            }
            Err(e) => {
                eprintln!("cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file open: detach it anyway.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Fills the filesystem with `path` until a write fails with `ENOSPC`, then
/// gives back `leave` bytes by truncating it.
fn ballast(path: &Path, leave: u64) -> File {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .expect("create the ballast");
    let chunk = vec![0x42u8; 64 * 1024];
    let mut len = 0u64;
    let mut size = chunk.len();
    while size > 0 {
        match f.write(&chunk[..size]) {
            Ok(0) => size /= 2,
            Ok(n) => len += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => size /= 2,
            Err(e) => panic!("writing the ballast failed: {e}"),
        }
    }
    assert!(
        len > leave,
        "the ballast could not fill the disk ({len} bytes)"
    );
    f.set_len(len - leave).expect("shrink the ballast");
    f
}

fn event(i: u64) -> NewEvent {
    NewEvent::new("disk.full", json!({ "i": i, "pad": "p".repeat(6000) })).expect("valid name")
}

async fn read_all(log: &SqliteLog) -> Vec<(u64, Uuid)> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = log.read(after, 1000).await.expect("read");
        let Some(last) = page.events.last() else {
            return all;
        };
        after = last.seq;
        all.extend(page.events.iter().map(|e| (e.seq, e.id)));
    }
}

/// Every acknowledged event is at its seq, and seqs are 1..=n with no gap.
fn assert_gap_free_with(all: &[(u64, Uuid)], acked: &[(u64, Uuid)]) {
    for (i, (seq, _)) in all.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "gap or reorder at index {i}");
    }
    for (seq, id) in acked {
        let stored = all.get((*seq - 1) as usize);
        assert_eq!(stored, Some(&(*seq, *id)), "acknowledged seq {seq} is lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_answers_no_space_and_recovers_without_reopen() {
    let Some(fs) = Tmpfs::mount("4m") else {
        println!("skipped: needs root to mount tmpfs");
        return;
    };
    let db: PathBuf = fs.path().join("events.db");
    // Declared after `fs`, so it closes before the tmpfs is unmounted.
    let log = SqliteLog::open(
        &db,
        SqliteOptions::default()
            .durability(Durability::Sync)
            .log(LogOptions::default().with_prune_interval(None))
            // Health changes only with appends here, so each assertion on it
            // is deterministic (the probe has its own unit test).
            .probe_interval(None),
    )
    .expect("open on the tmpfs");
    let first = log
        .append(vec![event(0)], None)
        .await
        .expect("first append");
    let mut acked: Vec<(u64, Uuid)> = vec![(first[0].event.seq, first[0].event.id)];
    assert_eq!(log.health(), LogHealth::Ok);

    let ballast_path = fs.path().join("ballast");
    let ballast_file = ballast(&ballast_path, 256 * 1024);

    // Append until the disk is full.
    let mut i = 1;
    let message = loop {
        match log.append(vec![event(i)], None).await {
            Ok(c) => acked.push((c[0].event.seq, c[0].event.id)),
            Err(AppendError::NoSpace(m)) => break m,
            Err(other) => panic!("append {i}: expected NoSpace, got {other:?}"),
        }
        i += 1;
        assert!(i < 10_000, "the disk never filled");
    };
    println!(
        "NoSpace after {} acknowledged appends: {message}",
        acked.len()
    );
    assert!(
        message.contains("full"),
        "the message names the cause: {message}"
    );
    assert!(
        acked.len() > 1,
        "some appends fitted before the disk filled"
    );
    match log.health() {
        LogHealth::Degraded { reason, no_space } => {
            assert!(no_space, "a full disk is reported as such: {reason}");
            assert!(reason.contains("full"), "{reason}");
        }
        LogHealth::Ok => panic!("health is Ok on a full disk"),
    }
    // Still full: refused again, and nothing of the refusals is kept.
    assert!(matches!(
        log.append(vec![event(i)], None).await,
        Err(AppendError::NoSpace(_))
    ));
    assert_eq!(log.last_seq(), acked.len() as u64, "refusals took no seq");
    assert_gap_free_with(&read_all(&log).await, &acked);
    assert_eq!(read_all(&log).await.len(), acked.len());

    // Free the space: the same log takes appends again, at the next seq.
    drop(ballast_file);
    std::fs::remove_file(&ballast_path).expect("delete the ballast");
    for k in 0..20 {
        let c = log
            .append(vec![event(10_000 + k)], None)
            .await
            .unwrap_or_else(|e| panic!("append {k} after freeing space: {e}"));
        assert_eq!(c[0].event.seq, acked.len() as u64 + 1, "gap-free");
        acked.push((c[0].event.seq, c[0].event.id));
        assert_eq!(log.health(), LogHealth::Ok);
    }
    let all = read_all(&log).await;
    assert_eq!(all.len(), acked.len());
    assert_gap_free_with(&all, &acked);
    log.close_blocking().expect("close");

    // And the file holds them all after a reopen.
    let log = SqliteLog::open(&db, SqliteOptions::default()).expect("reopen");
    assert_gap_free_with(&read_all(&log).await, &acked);
    log.close_blocking().expect("close");
}

/// With probing on, health comes back to `Ok` after the space is freed
/// without anyone publishing, and the log then takes appends at the next
/// seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_recovers_without_publishes_once_space_is_freed() {
    let Some(fs) = Tmpfs::mount("4m") else {
        println!("skipped: needs root to mount tmpfs");
        return;
    };
    let db = fs.path().join("events.db");
    let log = SqliteLog::open(
        &db,
        SqliteOptions::default()
            .durability(Durability::Sync)
            .log(LogOptions::default().with_prune_interval(None))
            .probe_interval(Some(std::time::Duration::from_millis(20))),
    )
    .expect("open on the tmpfs");
    let ballast_path = fs.path().join("ballast");
    let ballast_file = ballast(&ballast_path, 256 * 1024);
    let mut acked = Vec::new();
    let mut i = 0;
    loop {
        match log.append(vec![event(i)], None).await {
            Ok(c) => acked.push((c[0].event.seq, c[0].event.id)),
            Err(AppendError::NoSpace(_)) => break,
            Err(other) => panic!("append {i}: expected NoSpace, got {other:?}"),
        }
        i += 1;
        assert!(i < 10_000, "the disk never filled");
    }
    drop(ballast_file);
    std::fs::remove_file(&ballast_path).expect("delete the ballast");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while log.health() != LogHealth::Ok {
        assert!(
            std::time::Instant::now() < deadline,
            "health never recovered: {:?}",
            log.health()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(log.last_seq(), acked.len() as u64, "probes append nothing");
    let c = log
        .append(vec![event(99_999)], None)
        .await
        .expect("append after recovery");
    assert_eq!(c[0].event.seq, acked.len() as u64 + 1);
    acked.push((c[0].event.seq, c[0].event.id));
    assert_gap_free_with(&read_all(&log).await, &acked);
    log.close_blocking().expect("close");
}
