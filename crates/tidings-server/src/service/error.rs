//! The service's one error type. It names what went wrong in the
//! service's own terms ([`ErrorKind`]); the HTTP layer alone turns a kind
//! into a status code, and the socket layers into an error message.

use std::time::Duration;
use tidings_core::log::LogFailure;

use tidings_core::{AppendError, EmitError, NameError, PatternError, ReadError, SubscribeError};

/// What kind of failure, independent of any transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed (body, name, pattern, parameter).
    BadRequest,
    /// Auth is on and no valid token was given.
    Unauthenticated,
    /// The token does not allow this.
    Forbidden,
    /// No such thing.
    NotFound,
    /// An expected-seq conflict, or an idempotency key the caller may not
    /// read the original of.
    Conflict,
    /// The body is larger than `max_payload`.
    TooLarge,
    /// The body's content type is not one the service takes.
    UnsupportedMediaType,
    /// The body did not arrive in time.
    Timeout,
    /// The request is well-formed but its content breaks a rule the
    /// server holds it to (a schema).
    Unprocessable,
    /// A limit (connections, channel, patterns, command rate) was reached.
    Limit,
    /// What was asked for is no longer in the log (retention pruned it);
    /// the error says where the retained range starts.
    Gone,
    /// The log's storage is full; retry after space is freed.
    NoSpace,
    /// The log cannot be reached or cannot write right now; retry later.
    Unavailable,
    /// A bug or an unexpected failure.
    Internal,
}

/// A refused or failed command: a kind, a stable machine-readable code
/// (`invalid_name`, `conflict`, ...) and a message for a person.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Stable code, part of the surface.
    pub code: &'static str,
    /// What is wrong and what to do.
    pub message: String,
    /// For `NoSpace` and `Unavailable`: when to try again.
    pub retry_after: Option<Duration>,
    /// Machine-readable details beside `error` and `code` (for `Gone`:
    /// `first_retained_seq`).
    pub fields: Vec<(&'static str, serde_json::Value)>,
}

impl ServiceError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ServiceError {
            kind,
            code,
            message: message.into(),
            retry_after: match kind {
                ErrorKind::NoSpace => Some(Duration::from_secs(30)),
                ErrorKind::Unavailable => Some(Duration::from_secs(5)),
                _ => None,
            },
            fields: Vec::new(),
        }
    }

    /// The same error with a detail field.
    pub fn with(mut self, key: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.fields.push((key, value.into()));
        self
    }

    /// A malformed request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }

    /// No (valid) token.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, "unauthorized", message)
    }

    /// The token does not allow it.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "forbidden", message)
    }

    /// A limit was reached.
    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Limit, "limit_reached", message)
    }

    /// An unexpected failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", message)
    }
}

impl From<NameError> for ServiceError {
    fn from(e: NameError) -> Self {
        ServiceError::bad_request("invalid_name", e.to_string())
    }
}

impl From<PatternError> for ServiceError {
    fn from(e: PatternError) -> Self {
        ServiceError::bad_request("invalid_pattern", e.to_string())
    }
}

impl From<ReadError> for ServiceError {
    fn from(e: ReadError) -> Self {
        // A read that fails is the store's trouble, never the caller's:
        // always "try again", never a bare 500.
        ServiceError::new(ErrorKind::Unavailable, "unavailable", e.to_string())
    }
}

impl From<AppendError> for ServiceError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Conflict { .. } => {
                ServiceError::new(ErrorKind::Conflict, "conflict", e.to_string())
            }
            AppendError::EmptyBatch => ServiceError::bad_request("empty_batch", e.to_string()),
            AppendError::NoSpace(_) => ServiceError::new(
                ErrorKind::NoSpace,
                "no_space",
                format!("{e}; free disk space and retry: nothing was stored"),
            ),
            AppendError::Failed(LogFailure::Unavailable(_))
            | AppendError::Failed(LogFailure::Closed)
            | AppendError::Failed(LogFailure::Storage(_)) => ServiceError::new(
                ErrorKind::Unavailable,
                "unavailable",
                format!("{e}; nothing was stored, retry later"),
            ),
        }
    }
}

impl From<EmitError> for ServiceError {
    fn from(e: EmitError) -> Self {
        match e {
            EmitError::Name(n) => n.into(),
            EmitError::Append(a) => a.into(),
            EmitError::Contract(r) => {
                ServiceError::new(ErrorKind::Unprocessable, "schema_violation", r.to_string())
                    .with("path", r.violation.path.clone())
                    .with("index", r.index)
                    .with("pattern", r.pattern.clone())
            }
            EmitError::DepthExceeded { .. } | EmitError::Serialize(_) => {
                ServiceError::internal(e.to_string())
            }
        }
    }
}

impl From<SubscribeError> for ServiceError {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::Pattern(p) => p.into(),
            SubscribeError::Read(r) => r.into(),
            other => ServiceError::internal(other.to_string()),
        }
    }
}
