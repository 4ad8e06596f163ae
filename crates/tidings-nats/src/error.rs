//! Error types of the NATS backend.
//!
//! # Contract
//!
//! * Opening fails with one [`ConnectError`] that says what was wrong: the
//!   URL, the stream name, an option, the connection or the stream's
//!   setup.
//! * Every other failure is sorted once, in `EngineError`, into
//!   *unavailable* (not connected, no answer in time: retry later) or
//!   *storage* (the server refused, or stored data is malformed), and
//!   reaches callers as the core operation's own error with the shared
//!   [`LogFailure`] inside; nothing here adds a variant of its own.

use tidings_core::log::LogFailure;

/// Why [`crate::NatsLog`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not of the form `nats://HOST:PORT?stream=NAME`.
    #[error("invalid NATS URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The stream name is not usable as a JetStream stream (and KV bucket) name.
    #[error("invalid stream name {0:?}: use 1 to 200 letters, digits, '-' or '_'")]
    InvalidStreamName(String),
    /// An option makes no sense (the message names it).
    #[error("invalid NATS log options: {0}")]
    InvalidOptions(String),
    /// The NATS server could not be reached.
    #[error("cannot connect to NATS at {addr}: {source}")]
    Connect {
        /// The server address.
        addr: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The stream, its cursor bucket or its tail could not be set up or read.
    #[error("cannot set up JetStream stream {stream:?}: {message}")]
    Setup {
        /// The stream name.
        stream: String,
        /// What failed.
        message: String,
    },
}

/// A storage failure reported by JetStream (boxed into the core error
/// types' `Storage` variants).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(pub String);

/// What went wrong talking to the engine, before it is mapped onto the
/// operation's own error type.
#[derive(Debug, Clone)]
pub(crate) enum EngineError {
    /// Not connected, or no answer in time: retry later (HTTP 503).
    Unavailable(String),
    /// The engine answered with an error, or stored data is malformed.
    Storage(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Unavailable(m) => write!(f, "unavailable: {m}"),
            EngineError::Storage(m) => write!(f, "storage: {m}"),
        }
    }
}

impl From<EngineError> for LogFailure {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Unavailable(m) => LogFailure::Unavailable(m),
            EngineError::Storage(m) => LogFailure::Storage(Box::new(StorageError(m))),
        }
    }
}

tidings_core::failures_into_op_errors!(EngineError);
