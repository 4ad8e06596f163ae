//! Error types: one per operation of this crate, plus the storage error
//! that is boxed into tidings-core's `Storage(..)` variants.
//!
//! # Contract
//!
//! * Every error names its cause (what the log was doing and what SQLite
//!   or the OS said); none is a bare "failed".
//! * `Closed` only ever means the log was closed (or its last clone
//!   dropped). A storage fault, a lock or a writer panic is never reported
//!   as `Closed`.
//! * [`StorageError`] classifies itself ([`StorageError::is_no_space`],
//!   [`StorageError::is_busy`], [`StorageError::is_fault`]); the `From`
//!   conversions into core's errors follow that: a full disk becomes
//!   `AppendError::NoSpace`, a lock or writer panic `Unavailable`, the rest
//!   `Storage(Box<StorageError>)`, which callers can downcast.
//! * [`StorageError`] is cheap to clone (`Arc`ed sources), so one failed
//!   group commit answers every request in it with the same error.

use std::path::PathBuf;
use std::sync::Arc;
use tidings_core::log::LogFailure;

use rusqlite::ErrorCode;
use tidings_core::log::AppendError;

/// Why [`SqliteLog::open`](crate::SqliteLog::open) failed. Nothing was
/// changed in the file in any of these cases, except by a migration that
/// failed and was rolled back.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The options make no sense (zero readers, a zero batch interval...).
    #[error("invalid SqliteOptions: {0}")]
    InvalidOptions(String),
    /// The file could not be opened or created (missing directory,
    /// permissions, a directory in the way...).
    #[error("cannot open event log {path}: {detail}")]
    CannotOpen { path: PathBuf, detail: String },
    /// The file is not a SQLite database at all (bad header, garbage).
    #[error("{path} is not a SQLite database (bad or garbage header): {detail}")]
    NotADatabase { path: PathBuf, detail: String },
    /// The file is a SQLite database but its content is damaged (truncated,
    /// overwritten pages, inconsistent tables).
    #[error("event log {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// The file is a SQLite database that was not written by tidings-sqlite.
    #[error("{path} is a SQLite database but not a Tidings event log: {detail}")]
    NotATidingsLog { path: PathBuf, detail: String },
    /// The file was written by a newer tidings-sqlite; this version refuses
    /// to touch it rather than misread it.
    #[error(
        "event log {path} has schema version {found}, newer than the {supported} this \
         version of tidings-sqlite understands; upgrade tidings-sqlite to open it"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// Upgrading the schema of an older file failed (rolled back; the file
    /// is still at version `from`).
    #[error("migrating event log {path} from schema version {from} to {to} failed: {source}")]
    Migration {
        path: PathBuf,
        from: i64,
        to: i64,
        #[source]
        source: rusqlite::Error,
    },
    /// The file needs a journal mode SQLite refused (e.g. WAL on a
    /// filesystem without shared memory).
    #[error("event log {path} cannot use WAL mode (SQLite answered journal_mode={mode})")]
    NoWal { path: PathBuf, mode: String },
    /// Spawning the writer or reader threads failed.
    #[error("cannot start the event log's threads: {0}")]
    Thread(#[source] std::io::Error),
    /// Any other SQLite failure while opening.
    #[error("SQLite failed while opening event log {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The archive directory could not be opened (or its manifest read).
    #[error("cannot open the archive: {0}")]
    Archive(#[from] crate::archive::ArchiveError),
}

impl OpenError {
    /// Classifies a SQLite error met while opening `path`.
    pub(crate) fn from_sqlite(path: &std::path::Path, e: rusqlite::Error) -> OpenError {
        let path = path.to_path_buf();
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => OpenError::NotADatabase {
                path,
                detail: e.to_string(),
            },
            Some(ErrorCode::DatabaseCorrupt) => OpenError::Corrupt {
                path,
                detail: e.to_string(),
            },
            Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) => {
                OpenError::CannotOpen {
                    path,
                    detail: e.to_string(),
                }
            }
            _ => OpenError::Sqlite { path, source: e },
        }
    }
}

/// Why [`SqliteLog::close_blocking`](crate::SqliteLog::close_blocking) could not finish
/// cleanly. The log is closed either way.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// A writer or reader thread panicked (a bug); queued work it held may
    /// have been answered with `Closed`.
    #[error("the event log's {0} thread panicked")]
    ThreadPanicked(&'static str),
    /// The final sync of the WAL (batch durability) failed.
    #[error("final sync on close failed: {0}")]
    Sync(#[source] StorageError),
}

/// Why [`SqliteLog::sync`](crate::SqliteLog::sync) failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Closed, or the sync itself failed (`Unavailable` for a lock held
    /// elsewhere, `Storage` with the [`StorageError`] for the rest).
    #[error(transparent)]
    Failed(#[from] LogFailure),
}

impl From<StorageError> for SyncError {
    fn from(e: StorageError) -> Self {
        SyncError::Failed(e.into())
    }
}

/// A failure of the SQLite storage, boxed into the `Storage` variant of
/// tidings-core's [`LogFailure`], which every operation error embeds
/// (downcast to this type to inspect it).
///
/// Cheap to clone: one failed group commit answers every request in the
/// group with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// SQLite returned an error.
    #[error("SQLite failed while {op}: {source}")]
    Sqlite {
        /// What the log was doing.
        op: &'static str,
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// SQLite returned an I/O error (`SQLITE_IOERR_*`), and the OS error
    /// behind it (so an `ENOSPC` met outside a plain write still reads as a
    /// full disk).
    #[error("SQLite failed while {op}: {source} (OS error: {os})")]
    SqliteOs {
        /// What the log was doing.
        op: &'static str,
        #[source]
        source: Arc<rusqlite::Error>,
        /// The errno SQLite met.
        os: Arc<std::io::Error>,
    },
    /// A stored row could not be turned back into an event.
    #[error("the stored event at seq {seq} cannot be decoded: {detail}")]
    Decode { seq: i64, detail: String },
    /// Encoding an event for storage failed.
    #[error("cannot encode event {id}: {detail}")]
    Encode { id: uuid::Uuid, detail: String },
    /// Syncing the WAL file (or its directory) to disk failed.
    #[error("syncing {path} to disk failed: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The writer thread panicked (a bug) while it held this request. The
    /// writer was restarted; the request may or may not have been
    /// committed (read the log, or retry with an idempotency key).
    #[error("the event log's writer thread panicked ({detail}); it was restarted")]
    WriterPanicked { detail: String },
    /// Writing the archive failed; the events it was to hold stay in the
    /// log (nothing is deleted before it is archived). Not a fault of the
    /// log: appends go on, and the prune is retried.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
}

/// `ENOSPC` and `EDQUOT` on Linux (the only errnos that mean "no space").
const NO_SPACE_ERRNOS: [i32; 2] = [28, 122];

impl StorageError {
    /// Wraps a SQLite error met while doing `op`.
    pub(crate) fn sqlite(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StorageError {
        move |e| StorageError::Sqlite {
            op,
            source: Arc::new(e),
        }
    }

    /// Adds the OS error behind an `SQLITE_IOERR_*` of `conn` (call right
    /// after the failing call, before anything else runs on `conn`).
    pub(crate) fn with_os_error(self, conn: &rusqlite::Connection) -> StorageError {
        match self {
            StorageError::Sqlite { op, source }
                if source.sqlite_error_code() == Some(ErrorCode::SystemIoFailure) =>
            {
                // SAFETY: the handle is only used for this one read-only
                // call, on the thread that owns `conn`, while it is open.
                let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) };
                if errno == 0 {
                    StorageError::Sqlite { op, source }
                } else {
                    StorageError::SqliteOs {
                        op,
                        source,
                        os: Arc::new(std::io::Error::from_raw_os_error(errno)),
                    }
                }
            }
            other => other,
        }
    }

    /// The SQLite error code, if this is a SQLite error.
    pub fn sqlite_code(&self) -> Option<ErrorCode> {
        match self {
            StorageError::Sqlite { source, .. } | StorageError::SqliteOs { source, .. } => {
                source.sqlite_error_code()
            }
            _ => None,
        }
    }

    /// True for "try again later" failures: the database is locked by
    /// another process.
    pub fn is_busy(&self) -> bool {
        matches!(
            self.sqlite_code(),
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
        )
    }

    /// True when the storage is out of space: SQLite's `SQLITE_FULL` (which
    /// its unix VFS answers for a write that met `ENOSPC`), or an I/O error
    /// whose errno is `ENOSPC` or `EDQUOT`.
    pub fn is_no_space(&self) -> bool {
        match self {
            StorageError::Sqlite { source, .. } => {
                source.sqlite_error_code() == Some(ErrorCode::DiskFull)
            }
            StorageError::Io { source, .. } | StorageError::SqliteOs { os: source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source
                        .raw_os_error()
                        .is_some_and(|e| NO_SPACE_ERRNOS.contains(&e))
            }
            _ => false,
        }
    }

    /// True for faults of the storage itself (full disk, I/O error, a file
    /// that became read-only, unreadable or damaged, a lock held by another
    /// process, a dead writer thread), as opposed to one request's own
    /// problem (a constraint or trigger refusing one event, an event that
    /// cannot be encoded). A fault fails every write until it goes away, so
    /// it makes [`SqliteLog::health`](crate::SqliteLog) `Degraded`.
    pub fn is_fault(&self) -> bool {
        match self {
            StorageError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    ErrorCode::DiskFull
                        | ErrorCode::SystemIoFailure
                        | ErrorCode::ReadOnly
                        | ErrorCode::CannotOpen
                        | ErrorCode::DatabaseCorrupt
                        | ErrorCode::NotADatabase
                        | ErrorCode::DatabaseBusy
                        | ErrorCode::DatabaseLocked
                        | ErrorCode::PermissionDenied
                        | ErrorCode::OutOfMemory
                        | ErrorCode::FileLockingProtocolFailed
                )
            ),
            StorageError::Io { .. }
            | StorageError::SqliteOs { .. }
            | StorageError::WriterPanicked { .. } => true,
            StorageError::Decode { .. }
            | StorageError::Encode { .. }
            | StorageError::Archive(_) => false,
        }
    }
}

impl From<StorageError> for AppendError {
    /// `NoSpace` for a full disk, `Unavailable` for a lock held elsewhere or
    /// a writer thread that was restarted after a panic, `Storage` for the
    /// rest; each message names the cause.
    fn from(e: StorageError) -> Self {
        if e.is_no_space() {
            AppendError::NoSpace(e.to_string())
        } else if matches!(e, StorageError::WriterPanicked { .. }) {
            AppendError::Failed(LogFailure::Unavailable(e.to_string()))
        } else {
            AppendError::Failed(e.into())
        }
    }
}

impl From<StorageError> for LogFailure {
    /// `Unavailable` for a lock held elsewhere, `Storage` for the rest.
    fn from(e: StorageError) -> Self {
        if e.is_busy() {
            LogFailure::Unavailable(e.to_string())
        } else {
            LogFailure::Storage(Box::new(e))
        }
    }
}

// Appends map a full disk and a restarted writer too (above).
tidings_core::failures_into_op_errors!(StorageError => ReadError, CursorError, PruneError);

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: i32) -> Arc<rusqlite::Error> {
        Arc::new(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    #[test]
    fn full_disk_is_no_space_in_every_shape() {
        let full = StorageError::Sqlite {
            op: "committing",
            source: sqlite(rusqlite::ffi::SQLITE_FULL),
        };
        let ioerr_enospc = StorageError::SqliteOs {
            op: "committing",
            source: sqlite(rusqlite::ffi::SQLITE_IOERR_WRITE),
            os: Arc::new(std::io::Error::from_raw_os_error(28)),
        };
        let io_enospc = StorageError::Io {
            path: "x-wal".into(),
            source: Arc::new(std::io::Error::from_raw_os_error(28)),
        };
        for e in [full, ioerr_enospc, io_enospc] {
            assert!(e.is_no_space() && e.is_fault(), "{e}");
            match AppendError::from(e.clone()) {
                AppendError::NoSpace(m) => {
                    assert!(m.contains("full") || m.contains("space"), "{m}")
                }
                other => panic!("{e}: expected NoSpace, got {other:?}"),
            }
        }
    }

    #[test]
    fn other_faults_are_storage_errors_naming_the_cause() {
        let eio = StorageError::SqliteOs {
            op: "committing",
            source: sqlite(rusqlite::ffi::SQLITE_IOERR_FSYNC),
            os: Arc::new(std::io::Error::from_raw_os_error(5)),
        };
        assert!(eio.is_fault() && !eio.is_no_space());
        match AppendError::from(eio) {
            AppendError::Failed(LogFailure::Storage(e)) => {
                assert!(e.to_string().contains("committing"), "{e}")
            }
            other => panic!("expected Storage, got {other:?}"),
        }
        let constraint = StorageError::Sqlite {
            op: "inserting an event",
            source: sqlite(rusqlite::ffi::SQLITE_CONSTRAINT),
        };
        assert!(!constraint.is_fault(), "one request's own problem");
        let busy = StorageError::Sqlite {
            op: "beginning a write transaction",
            source: sqlite(rusqlite::ffi::SQLITE_BUSY),
        };
        assert!(matches!(
            AppendError::from(busy),
            AppendError::Failed(LogFailure::Unavailable(_))
        ));
    }
}
