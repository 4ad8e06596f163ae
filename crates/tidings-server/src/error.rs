//! API errors: one JSON shape, the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tidings_core::{AppendError, EmitError, NameError, PatternError, ReadError};

/// An error answered to a client as `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`invalid_name`, `conflict`, ...).
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: auth is on and no (valid) token was given.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the token does not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 429: a limit was reached.
    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "limit_reached", message)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": self.message, "code": self.code, "status": self.status.as_u16() })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        ApiError::bad_request("invalid_name", e.to_string())
    }
}

impl From<PatternError> for ApiError {
    fn from(e: PatternError) -> Self {
        ApiError::bad_request("invalid_pattern", e.to_string())
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Unavailable(_) | ReadError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            ReadError::Storage(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
            }
        }
    }
}

impl From<EmitError> for ApiError {
    fn from(e: EmitError) -> Self {
        match e {
            EmitError::Name(n) => n.into(),
            EmitError::Append(AppendError::Conflict { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            EmitError::Append(AppendError::EmptyBatch) => {
                ApiError::bad_request("empty_batch", e.to_string())
            }
            EmitError::Append(AppendError::Unavailable(_) | AppendError::Closed) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            EmitError::Append(AppendError::NoSpace(_)) => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "no_space", e.to_string())
            }
            EmitError::Append(AppendError::Storage(_))
            | EmitError::DepthExceeded { .. }
            | EmitError::Serialize(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}
