//! The on-disk schema, its version, and migrations from older versions.
//!
//! The version lives in SQLite's `PRAGMA user_version`; `PRAGMA
//! application_id` marks the file as a Tidings log so a foreign database is
//! refused instead of being written into.
//!
//! # Contract
//!
//! * Runs only at open, on the connection that becomes the writer's, before
//!   any thread starts.
//! * A foreign database, a newer schema or garbage is refused before
//!   anything in the file is changed; opening never panics on a bad file.
//! * A new file gets the current schema and an older one is migrated (all
//!   steps) in one transaction: a migration that fails leaves the file as
//!   it was.
//! * [`SCHEMA_VERSION`] is one more than the number of migrations (checked
//!   at compile time), and a file's `user_version` only ever moves up.
//!
//! # Version 4 (current)
//!
//! ```sql
//! meta(k TEXT PRIMARY KEY, v INTEGER)          -- 'last_seq': written by retention before it
//!                                               -- deletes; the last seq ever assigned is
//!                                               -- max(meta.last_seq, max(events.seq))
//! events(seq INTEGER PRIMARY KEY, id BLOB, name TEXT, source TEXT,
//!        time INTEGER,                          -- the event's own time (client-sent), micros
//!                                               -- since the Unix epoch, UTC
//!        key TEXT, data TEXT,                   -- data: the payload as JSON text
//!        priority INTEGER,                      -- 0 low, 1 normal, 2 high; NULL if none
//!        committed INTEGER)                     -- the log's wall clock (micros) when the
//!                                               -- event was committed: age retention uses
//!                                               -- this, never `time`
//! idem_keys(key TEXT PRIMARY KEY, seq INTEGER,
//!           at INTEGER,                         -- wall-clock micros when the key was recorded
//!           id, name, source, time, data, priority)  -- copy of the original event, filled
//!                                               -- only if retention prunes it while the key lives
//! cursors(name TEXT PRIMARY KEY, seq INTEGER, updated INTEGER)
//! consumers(name TEXT PRIMARY KEY, spec TEXT)  -- consumer definitions (opaque to the log),
//!                                               -- written once: the first definer wins
//! ```
//!
//! # Version 3
//!
//! The same without `consumers`: a consumer was only its cursor. The
//! 3 → 4 migration creates the (empty) table.
//!
//! # Version 2
//!
//! The same without `events.committed`: age retention compared the
//! client-sent `time`, so an event dated in the future was never pruned
//! and one dated in the past was pruned at once. The 2 → 3 migration adds
//! the column and gives the existing rows their event time as commit time
//! (the best the file knows).
//!
//! # Version 1
//!
//! Version 2 without `events.priority` and without the copy columns of
//! `idem_keys`. The 1 → 2 migration adds them (`ALTER TABLE ... ADD
//! COLUMN`); old rows read back with no priority.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::OpenError;
use crate::options::OpenCheck;

/// The schema version this crate writes.
pub const SCHEMA_VERSION: i64 = 4;

/// `PRAGMA application_id` of a Tidings log: "TIDG".
pub const APPLICATION_ID: i64 = 0x5449_4447;

/// The current schema, created in a fresh file.
const CREATE_V4: &str = "
CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta (k, v) VALUES ('last_seq', 0);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    id BLOB NOT NULL,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    time INTEGER NOT NULL,
    key TEXT,
    data TEXT NOT NULL,
    priority INTEGER,
    committed INTEGER NOT NULL
);
CREATE TABLE idem_keys (
    key TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    id BLOB,
    name TEXT,
    source TEXT,
    time INTEGER,
    data TEXT,
    priority INTEGER
) WITHOUT ROWID;
CREATE INDEX idem_keys_at ON idem_keys (at);
CREATE TABLE cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE consumers (name TEXT PRIMARY KEY, spec TEXT NOT NULL) WITHOUT ROWID;
";

/// Migrations: entry `i` takes a file from version `i + 1` to `i + 2`.
const MIGRATIONS: &[&str] = &[
    // 1 -> 2: priority metadata on events; idempotency keys keep a copy of
    // their original event once retention prunes it.
    "
    ALTER TABLE events ADD COLUMN priority INTEGER;
    ALTER TABLE idem_keys ADD COLUMN id BLOB;
    ALTER TABLE idem_keys ADD COLUMN name TEXT;
    ALTER TABLE idem_keys ADD COLUMN source TEXT;
    ALTER TABLE idem_keys ADD COLUMN time INTEGER;
    ALTER TABLE idem_keys ADD COLUMN data TEXT;
    ALTER TABLE idem_keys ADD COLUMN priority INTEGER;
    ",
    // 2 -> 3: the commit time age retention goes by; old rows get their
    // event time.
    "
    ALTER TABLE events ADD COLUMN committed INTEGER NOT NULL DEFAULT 0;
    UPDATE events SET committed = time;
    ",
    // 3 -> 4: consumer definitions, beside their cursors.
    "
    CREATE TABLE consumers (name TEXT PRIMARY KEY, spec TEXT NOT NULL) WITHOUT ROWID;
    ",
];

const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION - 1);

fn pragma_i64(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
}

fn table_count(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
}

/// Refuses files that are not (or not yet / no longer) Tidings logs this
/// version can open. Touches nothing.
fn check_identity(
    conn: &Connection,
    path: &Path,
    app_id: i64,
    version: i64,
) -> Result<(), OpenError> {
    let not_ours = |detail: String| OpenError::NotATidingsLog {
        path: path.to_path_buf(),
        detail,
    };
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(not_ours(format!(
            "its application_id is {app_id:#x}, a Tidings log's is {APPLICATION_ID:#x}"
        )));
    }
    if version == 0 {
        let tables = table_count(conn).map_err(|e| OpenError::from_sqlite(path, e))?;
        if tables > 0 {
            return Err(not_ours(format!(
                "it has {tables} schema objects but no Tidings schema version"
            )));
        }
        return Ok(());
    }
    if app_id != APPLICATION_ID {
        return Err(not_ours(format!(
            "it has user_version {version} but no Tidings application_id"
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 0 {
        return Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("negative schema version {version}"),
        });
    }
    Ok(())
}

/// Brings the file to the current schema in WAL mode: creates it if new,
/// migrates it if older; refuses foreign or newer files before changing
/// anything.
pub(crate) fn prepare(conn: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let sqlite = |e| OpenError::from_sqlite(path, e);
    let app_id = pragma_i64(conn, "application_id").map_err(sqlite)?;
    let version = pragma_i64(conn, "user_version").map_err(sqlite)?;
    check_identity(conn, path, app_id, version)?;

    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sqlite)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    // Read again under the write lock: another process may have created or
    // migrated the file in between.
    let app_id = pragma_i64(&tx, "application_id").map_err(sqlite)?;
    let version = pragma_i64(&tx, "user_version").map_err(sqlite)?;
    check_identity(&tx, path, app_id, version)?;
    if version == 0 {
        tracing::info!(path = %path.display(), "creating a new event log");
        tx.execute_batch(CREATE_V4).map_err(sqlite)?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
        ))
        .map_err(sqlite)?;
    } else if version < SCHEMA_VERSION {
        for from in version..SCHEMA_VERSION {
            let to = from + 1;
            tracing::info!(path = %path.display(), from, to, "migrating event log schema");
            let Some(step) = usize::try_from(from - 1)
                .ok()
                .and_then(|i| MIGRATIONS.get(i))
            else {
                return Err(OpenError::Corrupt {
                    path: path.to_path_buf(),
                    detail: format!("no migration from schema version {from}"),
                });
            };
            tx.execute_batch(step)
                .and_then(|_| tx.execute_batch(&format!("PRAGMA user_version = {to};")))
                .map_err(|source| OpenError::Migration {
                    path: path.to_path_buf(),
                    from,
                    to,
                    source,
                })?;
        }
    }
    verify_tables(&tx, path)?;
    tx.commit().map_err(sqlite)?;
    Ok(())
}

/// Every table and column the log uses must be there.
fn verify_tables(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    const NEEDED: &[(&str, &[&str])] = &[
        ("meta", &["k", "v"]),
        (
            "events",
            &[
                "seq",
                "id",
                "name",
                "source",
                "time",
                "key",
                "data",
                "priority",
                "committed",
            ],
        ),
        (
            "idem_keys",
            &[
                "key", "seq", "at", "id", "name", "source", "time", "data", "priority",
            ],
        ),
        ("cursors", &["name", "seq", "updated"]),
        ("consumers", &["name", "spec"]),
    ];
    for (table, columns) in NEEDED {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .map_err(|e| OpenError::from_sqlite(path, e))?;
        let have: Vec<String> = stmt
            .query_map([table], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| OpenError::from_sqlite(path, e))?;
        if have.is_empty() {
            return Err(OpenError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("table {table} is missing"),
            });
        }
        if let Some(col) = columns.iter().find(|c| !have.iter().any(|h| h == *c)) {
            return Err(OpenError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("column {table}.{col} is missing"),
            });
        }
    }
    Ok(())
}

/// Runs the verification asked for at open.
pub(crate) fn check(conn: &Connection, path: &Path, mode: OpenCheck) -> Result<(), OpenError> {
    let pragma = match mode {
        OpenCheck::Off => return Ok(()),
        OpenCheck::Quick => "PRAGMA quick_check(20)",
        OpenCheck::Full => "PRAGMA integrity_check(20)",
    };
    let sqlite = |e| OpenError::from_sqlite(path, e);
    let mut stmt = conn.prepare(pragma).map_err(sqlite)?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(sqlite)?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    Err(OpenError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("{} found: {}", pragma, problems.join("; ")),
    })
}

/// The last sequence ever assigned: `max(meta.last_seq, max(events.seq))`
/// (see [`crate`] docs, "Sequence numbers").
pub(crate) fn load_last_seq(conn: &Connection, path: &Path) -> Result<u64, OpenError> {
    let sqlite = |e| OpenError::from_sqlite(path, e);
    let corrupt = |detail: String| OpenError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let meta: Option<i64> = conn
        .query_row("SELECT v FROM meta WHERE k = 'last_seq'", [], |r| r.get(0))
        .optional()
        .map_err(sqlite)?;
    let meta = meta.ok_or_else(|| corrupt("the meta row last_seq is missing".into()))?;
    let (min, max): (Option<i64>, Option<i64>) = conn
        .query_row("SELECT min(seq), max(seq) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(sqlite)?;
    if meta < 0 || min.is_some_and(|m| m < 1) {
        return Err(corrupt(format!(
            "negative or zero sequence numbers (last_seq {meta}, first event {min:?})"
        )));
    }
    Ok(meta.max(max.unwrap_or(0)) as u64)
}
