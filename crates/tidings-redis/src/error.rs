//! Error types: [`ConnectError`] for opening a log, and [`StorageError`],
//! what the `Storage(..)` variants of tidings-core's errors box.
//!
//! Every Redis failure is sorted into one of two kinds: **unavailable**
//! (I/O errors, dropped connections, no answer within
//! [`RedisOptions::timeout`](crate::RedisOptions::timeout), a server still
//! loading its data or in a cluster/replica state that refuses writes), which
//! maps to the `Unavailable(..)` variants (retry later), and everything else
//! (a key of the wrong type, a script error, an undecodable entry), which maps
//! to `Storage(..)`.

use std::time::Duration;
use tidings_core::log::LogFailure;

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Why [`RedisLog::connect`](crate::RedisLog::connect) or
/// [`RedisLog::open`](crate::RedisLog::open) failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL could not be parsed (bad scheme, bad `key` parameter...).
    #[error("invalid Redis URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The options make no sense (a zero timeout, an empty key...).
    #[error("invalid RedisOptions: {0}")]
    InvalidOptions(String),
    /// Redis could not be reached within the timeout.
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    /// Redis answered, but the keys cannot be used as a Tidings log (e.g. the
    /// stream key holds a value of another type).
    #[error("the Redis keys of log {key:?} cannot be used: {reason}")]
    BadKeys { key: String, reason: String },
    /// Any other Redis failure while opening.
    #[error("Redis failed while opening the log: {0}")]
    Redis(#[source] RedisError),
}

/// A failure of the backing store that is not a temporary outage.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// Redis refused a command (wrong key type, script error...).
    #[error("Redis error: {0}")]
    Redis(#[source] RedisError),
    /// Redis answered something this crate cannot decode (a foreign or
    /// corrupted entry, an unexpected reply shape).
    #[error("cannot decode what Redis returned: {0}")]
    Decode(String),
    /// Redis' counter is below a seq this instance already saw committed:
    /// Redis lost acknowledged writes (a crash with `appendfsync everysec`
    /// or `no`, a restore from an old snapshot, a deleted key). Appending
    /// would hand those seqs out a second time, so nothing is written
    /// until an operator repairs the log and the process reopens it.
    #[error(
        "Redis lost acknowledged events: its counter is at {counter} but seq {seen} was \
         already committed; appends are refused so that no seq is reused (run Redis with \
         `appendfsync always` to keep acknowledged writes across a crash)"
    )]
    LostWrites { counter: u64, seen: u64 },
}

impl StorageError {
    pub(crate) fn decode(msg: impl Into<String>) -> StorageError {
        StorageError::Decode(msg.into())
    }
}

/// A failed operation, before it is mapped to the caller's error type.
#[derive(Debug, Clone)]
pub(crate) enum OpError {
    Unavailable(String),
    Storage(StorageError),
}

impl From<StorageError> for OpError {
    fn from(e: StorageError) -> Self {
        OpError::Storage(e)
    }
}

/// Whether a Redis error means "cannot reach a working server right now".
pub(crate) fn is_unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
}

impl From<RedisError> for OpError {
    fn from(e: RedisError) -> Self {
        if is_unavailable(&e) {
            OpError::Unavailable(e.to_string())
        } else {
            OpError::Storage(StorageError::Redis(e))
        }
    }
}

impl OpError {
    pub(crate) fn timed_out(after: Duration) -> OpError {
        OpError::Unavailable(format!("no answer from Redis within {after:?}"))
    }
}

impl From<OpError> for LogFailure {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Unavailable(m) => LogFailure::Unavailable(m),
            OpError::Storage(s) => LogFailure::Storage(Box::new(s)),
        }
    }
}

tidings_core::failures_into_op_errors!(OpError);
