//! The archive against a real file and directory: events leave the log by
//! retention only after they are in the archive, each exactly once, also
//! across a kill -9 of a real process between the archive write and the
//! delete.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tidings_core::{Event, EventLog, LogOptions, NewEvent, Retention};
use tidings_sqlite::archive::{file_name, ArchiveReader, Manifest, MANIFEST};
use tidings_sqlite::{SqliteLog, SqliteOptions};

fn options(dir: &std::path::Path, keep: Option<u64>) -> SqliteOptions {
    SqliteOptions::default()
        .log(
            LogOptions::retention(Retention {
                max_count: keep,
                max_age: None,
            })
            .with_prune_interval(None),
        )
        .archive_dir(Some(dir.join("archive")))
}

async fn append(log: &SqliteLog, n: u64) {
    let first = log.last_seq();
    for i in 0..n {
        let mut e = NewEvent::new("a.b", json!({ "i": i })).unwrap();
        if i % 3 == 0 {
            e.key = Some(format!("k{}", first + i));
        }
        log.append(vec![e], None).await.unwrap();
    }
}

async fn read_log(log: &SqliteLog) -> Vec<Event> {
    let page = log.read(0, 100_000).await.unwrap();
    page.events.iter().map(|e| (**e).clone()).collect()
}

fn read_archive(dir: &std::path::Path) -> Vec<Event> {
    ArchiveReader::open(dir)
        .unwrap()
        .events_after(0)
        .map(Result::unwrap)
        .collect()
}

/// Every seq 1..=last exactly once across the archive and the log.
fn assert_once(archived: &[Event], logged: &[Event], last: u64) {
    let mut seen = BTreeMap::new();
    for e in archived.iter().chain(logged) {
        assert!(seen.insert(e.seq, e.id).is_none(), "seq {} twice", e.seq);
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn prune_archives_before_it_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("e.db"), options(dir.path(), Some(5))).unwrap();
    append(&log, 20).await;
    let before = read_log(&log).await;
    assert_eq!(log.prune().await.unwrap(), 15);
    let archive = dir.path().join("archive");
    let archived = read_archive(&archive);
    let kept = read_log(&log).await;
    assert_eq!(
        archived,
        before[..15],
        "the archive holds the pruned events as they were"
    );
    assert_eq!(kept, before[15..]);
    assert_once(&archived, &kept, 20);
    let m = Manifest::load(&archive).unwrap();
    assert_eq!(m.files.len(), 1);
    assert_eq!(m.files[0].file, file_name(1, 15));
    assert_eq!((m.files[0].count, m.files[0].first_seq), (15, 1));
    // The file is plain zstd JSON lines, the key as stored.
    let raw = std::fs::read(archive.join(&m.files[0].file)).unwrap();
    let text = String::from_utf8(zstd::decode_all(&raw[..]).unwrap()).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["key"], "k0");
    assert_eq!(first["data"], json!({"i": 0}));
    // Another round archives only what is new, into a file of its own.
    append(&log, 10).await;
    assert_eq!(log.prune().await.unwrap(), 10);
    let m = Manifest::load(&archive).unwrap();
    assert_eq!(
        m.files
            .iter()
            .map(|f| (f.first_seq, f.last_seq))
            .collect::<Vec<_>>(),
        vec![(1, 15), (16, 25)]
    );
    assert_once(&read_archive(&archive), &read_log(&log).await, 30);
    // Idempotency keys of archived events still answer with the original.
    let mut dup = NewEvent::new("a.b", json!(null)).unwrap();
    dup.key = Some("k23".into());
    let c = log.append(vec![dup], None).await.unwrap();
    assert!(c[0].duplicate);
    assert_eq!(c[0].event.seq, 24);
    log.close_blocking().unwrap();
}

#[tokio::test]
async fn without_retention_the_archive_stays_empty() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("e.db"), options(dir.path(), None)).unwrap();
    append(&log, 10).await;
    assert_eq!(log.prune().await.unwrap(), 0);
    assert_eq!(read_log(&log).await.len(), 10);
    let archive = dir.path().join("archive");
    assert!(Manifest::load(&archive).unwrap().files.is_empty());
    let names: Vec<_> = std::fs::read_dir(&archive).unwrap().collect();
    assert!(names.is_empty(), "nothing written: {names:?}");
    log.close_blocking().unwrap();
}

#[tokio::test]
async fn background_pruning_archives_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path(), Some(3));
    o.log.prune_interval = Some(Duration::from_millis(20));
    o.archive_delay = Duration::ZERO;
    let log = SqliteLog::open(dir.path().join("e.db"), o).unwrap();
    append(&log, 12).await;
    let archive = dir.path().join("archive");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Manifest::load(&archive).unwrap().last_seq() < 9 {
        assert!(
            Instant::now() < deadline,
            "background pruning never archived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let kept = read_log(&log).await;
    assert_eq!(kept.first().map(|e| e.seq), Some(10));
    assert_once(&read_archive(&archive), &kept, 12);
    log.close_blocking().unwrap();
}

#[tokio::test]
async fn an_unwritable_archive_keeps_the_events_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("e.db"), options(dir.path(), Some(2))).unwrap();
    append(&log, 6).await;
    // A directory where the archive file goes: the write fails.
    std::fs::create_dir(dir.path().join("archive").join(file_name(1, 4) + ".tmp")).unwrap();
    let e = log.prune().await.unwrap_err();
    assert!(e.to_string().contains("archive"), "{e}");
    assert_eq!(read_log(&log).await.len(), 6, "nothing deleted");
    std::fs::remove_dir(dir.path().join("archive").join(file_name(1, 4) + ".tmp")).unwrap();
    assert_eq!(log.prune().await.unwrap(), 4);
    assert_once(
        &read_archive(&dir.path().join("archive")),
        &read_log(&log).await,
        6,
    );
    log.close_blocking().unwrap();
}

#[test]
fn a_bad_archive_dir_refuses_the_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("archive"), b"a file, not a directory").unwrap();
    let Err(e) = SqliteLog::open(dir.path().join("e.db"), options(dir.path(), Some(1))) else {
        panic!("opened with a file in the archive dir's place");
    };
    assert!(e.to_string().contains("archive"), "{e}");
    let Err(e) = SqliteLog::open(
        dir.path().join("f.db"),
        SqliteOptions::default().archive_dir(Some("".into())),
    ) else {
        panic!("opened with an empty archive_dir");
    };
    assert!(e.to_string().contains("archive_dir"), "{e}");
}

/// kill -9 of a real process after the archive is durable and before the
/// rows are deleted: the restarted process deletes them without writing
/// them again; every event is then exactly once across archive and log.
#[tokio::test]
async fn kill_9_between_archive_and_delete_loses_and_doubles_nothing() {
    let bin = env!("CARGO_BIN_EXE_tidings-sqlite-archivetest");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let archive = dir.path().join("archive");
    let args = [db.to_str().unwrap(), archive.to_str().unwrap(), "5", "250"];
    let mut child = Command::new(bin)
        .args(args)
        .env("TIDINGS_FAULT", "archive_after_write")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "FAULT archive_after_write 1 245",
        "stderr: {line:?}"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The archive is there, and so is every row: nothing was deleted.
    assert_eq!(Manifest::load(&archive).unwrap().last_seq(), 245);
    let plain = SqliteOptions::default().log(LogOptions::default().with_prune_interval(None));
    let log = SqliteLog::open(&db, plain.clone()).unwrap();
    let before = read_log(&log).await;
    assert_eq!(before.len(), 250);
    log.close_blocking().unwrap();

    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pruned 245");

    let archived = read_archive(&archive);
    let log = SqliteLog::open(&db, plain).unwrap();
    let kept = read_log(&log).await;
    log.close_blocking().unwrap();
    assert_once(&archived, &kept, 250);
    let all: Vec<Event> = archived.into_iter().chain(kept).collect();
    assert_eq!(all, before, "the same events, ids and data");
    // One file, listed once; no leftovers beside it.
    let m = Manifest::load(&archive).unwrap();
    assert_eq!(m.files.len(), 1);
    let mut names: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![file_name(1, 245), MANIFEST.to_owned()]);
}
