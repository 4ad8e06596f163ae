//! Files that are not healthy, current Tidings logs: damaged, foreign,
//! newer, older (migrated), or in the way. Each must give a clear
//! `OpenError` (or be migrated), never a panic.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use tidings_core::{EventLog, NewEvent, Priority};
use tidings_sqlite::{OpenError, SqliteLog, SqliteOptions, APPLICATION_ID, SCHEMA_VERSION};

fn ev(i: u64) -> NewEvent {
    NewEvent::new("file.test", json!({"i": i, "pad": "x".repeat(100)})).expect("valid name")
}

/// A closed, healthy log with `n` events.
async fn healthy_log(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("healthy.db");
    let log = SqliteLog::open(&path, SqliteOptions::default()).expect("open");
    let mut i = 0;
    while i < n {
        let batch: Vec<NewEvent> = (i..(i + 500).min(n)).map(ev).collect();
        i += batch.len() as u64;
        log.append(batch, None).await.expect("append");
    }
    log.close_blocking().expect("close");
    assert!(
        !dir.join("healthy.db-wal").exists(),
        "a clean close checkpoints and removes the WAL"
    );
    path
}

fn copy_to(src: &Path, name: &str) -> PathBuf {
    let dst = src.with_file_name(name);
    std::fs::copy(src, &dst).expect("copy");
    dst
}

fn open_err(path: &Path) -> OpenError {
    match SqliteLog::open(path, SqliteOptions::default()) {
        Ok(_) => panic!("{} opened, but it should have been refused", path.display()),
        Err(e) => e,
    }
}

#[tokio::test]
async fn garbage_header_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_to(&healthy_log(dir.path(), 2000).await, "garbage-header.db");
    let mut f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all(&[0x5a; 100]).unwrap();
    drop(f);
    let e = open_err(&path);
    assert!(matches!(e, OpenError::NotADatabase { .. }), "got {e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("garbage-header.db") && msg.contains("not a SQLite database"),
        "{msg}"
    );
}

#[tokio::test]
async fn random_bytes_are_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.db");
    let mut rng = fastrand::Rng::with_seed(7);
    let bytes: Vec<u8> = (0..20_000).map(|_| rng.u8(..)).collect();
    std::fs::write(&path, bytes).unwrap();
    let e = open_err(&path);
    assert!(matches!(e, OpenError::NotADatabase { .. }), "got {e:?}");
}

#[tokio::test]
async fn truncated_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_to(&healthy_log(dir.path(), 5000).await, "truncated.db");
    let len = std::fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let e = open_err(&path);
    assert!(matches!(e, OpenError::Corrupt { .. }), "got {e:?}");
    assert!(e.to_string().contains("corrupt"), "{e}");
}

#[tokio::test]
async fn overwritten_pages_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_to(&healthy_log(dir.path(), 5000).await, "overwritten.db");
    let len = std::fs::metadata(&path).unwrap().len();
    let mut f = OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.write_all(&[0xa5; 8192]).unwrap();
    drop(f);
    let e = open_err(&path);
    assert!(matches!(e, OpenError::Corrupt { .. }), "got {e:?}");
}

#[tokio::test]
async fn newer_schema_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_to(&healthy_log(dir.path(), 10).await, "newer.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99;").unwrap();
    drop(conn);
    let e = open_err(&path);
    match &e {
        OpenError::NewerSchema {
            found, supported, ..
        } => assert_eq!((*found, *supported), (99, SCHEMA_VERSION)),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    assert!(e.to_string().contains("upgrade tidings-sqlite"), "{e}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 99, "the file was not touched");
}

#[tokio::test]
async fn foreign_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);")
        .unwrap();
    drop(conn);
    let e = open_err(&path);
    assert!(matches!(e, OpenError::NotATidingsLog { .. }), "got {e:?}");

    let other_app = dir.path().join("other-app.db");
    let conn = rusqlite::Connection::open(&other_app).unwrap();
    conn.execute_batch("PRAGMA application_id = 1234; PRAGMA user_version = 1;")
        .unwrap();
    drop(conn);
    let e = open_err(&other_app);
    assert!(matches!(e, OpenError::NotATidingsLog { .. }), "got {e:?}");
}

#[tokio::test]
async fn directory_or_missing_parent_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_err(dir.path());
    assert!(matches!(e, OpenError::CannotOpen { .. }), "got {e:?}");
    let e = open_err(&dir.path().join("no/such/dir/log.db"));
    assert!(matches!(e, OpenError::CannotOpen { .. }), "got {e:?}");
}

#[tokio::test]
async fn undecodable_row_is_a_read_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_log(dir.path(), 10).await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("UPDATE events SET data = '{not json' WHERE seq = 3;")
        .unwrap();
    drop(conn);
    let log = SqliteLog::open(&path, SqliteOptions::default()).expect("content is not checked");
    let e = log.read(0, 10).await.expect_err("row 3 cannot be decoded");
    let msg = e.to_string();
    assert!(msg.contains("seq 3") && msg.contains("not JSON"), "{msg}");
    // Other rows still read.
    assert_eq!(log.read(3, 10).await.unwrap().events.len(), 7);
}

/// The schema-version-1 layout: no priority column, no copy of pruned
/// originals beside idempotency keys.
const V1_SCHEMA: &str = "
CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, id BLOB NOT NULL, name TEXT NOT NULL, source TEXT NOT NULL,
    time INTEGER NOT NULL, key TEXT, data TEXT NOT NULL
);
CREATE TABLE idem_keys (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX idem_keys_at ON idem_keys (at);
CREATE TABLE cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated INTEGER NOT NULL) WITHOUT ROWID;
";

fn write_v1_file(path: &Path, schema: &str) -> Vec<uuid::Uuid> {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .unwrap();
    conn.execute_batch(schema).unwrap();
    let now_us = chrono::Utc::now().timestamp_micros();
    let mut ids = Vec::new();
    for seq in 1..=3i64 {
        let id = uuid::Uuid::now_v7();
        ids.push(id);
        let key = (seq == 2).then_some("order-7");
        conn.execute(
            "INSERT INTO events (seq, id, name, source, time, key, data) VALUES (?1, ?2, 'v1.event', 'old', ?3, ?4, ?5)",
            rusqlite::params![seq, id.as_bytes(), now_us + seq, key, format!("{{\"n\":{seq}}}")],
        )
        .unwrap();
    }
    conn.execute_batch(&format!(
        "INSERT INTO meta (k, v) VALUES ('last_seq', 3);
         INSERT INTO idem_keys (key, seq, at) VALUES ('order-7', 2, {now_us});
         INSERT INTO cursors (name, seq, updated) VALUES ('indexer', 2, {now_us});
         PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = 1;"
    ))
    .unwrap();
    ids
}

#[tokio::test]
async fn version_1_file_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    let ids = write_v1_file(&path, V1_SCHEMA);

    let log = SqliteLog::open(&path, SqliteOptions::default()).expect("a v1 file opens");
    let page = log.read(0, 10).await.unwrap();
    assert_eq!(page.last_seq, 3);
    assert_eq!(page.events.len(), 3);
    for (e, id) in page.events.iter().zip(&ids) {
        assert_eq!(e.id, *id);
        assert_eq!(e.source, "old");
        assert_eq!(e.priority, None, "v1 rows have no priority");
        assert_eq!(e.data, json!({"n": e.seq}));
    }
    assert_eq!(log.cursor("indexer").await.unwrap(), Some(2));
    let listed = log.consumers().await.unwrap();
    assert_eq!(listed.len(), 1, "an old cursor is listed as a consumer");
    assert_eq!(
        (listed[0].name.as_str(), listed[0].spec.as_str()),
        ("indexer", "")
    );
    assert_eq!(log.define_consumer("indexer", "{}").await.unwrap(), "{}");
    let dup = log.append(vec![ev(0).key("order-7")], None).await.unwrap();
    assert!(dup[0].duplicate, "a v1 idempotency key still counts");
    assert_eq!((dup[0].event.seq, dup[0].event.id), (2, ids[1]));
    let c = log
        .append(vec![ev(1).priority(Priority::High)], None)
        .await
        .unwrap();
    assert_eq!(c[0].event.seq, 4);
    log.close_blocking().unwrap();

    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let old_rows_commit_at_event_time: i64 = conn
        .query_row(
            "SELECT count(*) FROM events WHERE seq <= 3 AND committed = time",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        old_rows_commit_at_event_time, 3,
        "migrated rows: commit time = event time"
    );
    let new_row_committed: i64 = conn
        .query_row("SELECT committed FROM events WHERE seq = 4", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(new_row_committed > 0, "new rows record their commit time");
    drop(conn);
    let log = SqliteLog::open(&path, SqliteOptions::default()).expect("reopen after migration");
    let page = log.read(3, 10).await.unwrap();
    assert_eq!(page.events[0].priority, Some(Priority::High));
}

/// A version-3 file (no `consumers` table) gets the table, keeps its
/// cursors, and its definitions persist.
#[tokio::test]
async fn version_3_file_gets_consumer_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let path = healthy_log(dir.path(), 3).await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE consumers;
         INSERT INTO cursors (name, seq, updated) VALUES ('indexer', 2, 0);
         PRAGMA user_version = 3;",
    )
    .unwrap();
    drop(conn);

    let log = SqliteLog::open(&path, SqliteOptions::default()).expect("a v3 file opens");
    let listed = log.consumers().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].cursor, Some(2));
    assert_eq!(listed[0].spec, "", "no definition before the migration");
    let spec = r#"{"patterns":["a.>"]}"#;
    assert_eq!(log.define_consumer("indexer", spec).await.unwrap(), spec);
    log.close_blocking().unwrap();

    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    drop(conn);
    let log = SqliteLog::open(&path, SqliteOptions::default()).expect("reopen after migration");
    let listed = log.consumers().await.unwrap();
    assert_eq!((listed[0].spec.as_str(), listed[0].cursor), (spec, Some(2)));
}

#[tokio::test]
async fn failed_migration_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1-broken.db");
    // A v1 file that lost its idem_keys table: the migration cannot alter it.
    let broken = V1_SCHEMA.replace(
        "CREATE TABLE idem_keys (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID;\nCREATE INDEX idem_keys_at ON idem_keys (at);",
        "CREATE TABLE idem_keys_gone (x);",
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&broken).unwrap();
    conn.execute_batch(&format!(
        "INSERT INTO meta (k, v) VALUES ('last_seq', 0);
         PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 1;"
    ))
    .unwrap();
    drop(conn);
    let e = open_err(&path);
    match &e {
        OpenError::Migration { from, to, .. } => assert_eq!((*from, *to), (1, 2)),
        other => panic!("expected a migration error, got {other:?}"),
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 1, "the failed migration left the file at version 1");
    let cols: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('events') WHERE name = 'priority'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        cols, 0,
        "the first ALTER of the migration was rolled back too"
    );
}

#[tokio::test]
async fn empty_file_becomes_a_new_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.db");
    std::fs::write(&path, b"").unwrap();
    let log = SqliteLog::open(&path, SqliteOptions::default()).expect("an empty file is a new log");
    let c = log.append(vec![ev(1)], None).await.unwrap();
    assert_eq!(c[0].event.seq, 1);
}
