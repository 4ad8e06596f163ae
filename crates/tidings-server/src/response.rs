//! The one place a [`ServiceError`] becomes an HTTP answer: its status
//! code, its JSON body `{"error","code","status"}` with the error's
//! details, and `Retry-After`. Every adapter (HTTP, the WebSocket and SSE
//! upgrades, the dashboard) answers a refused command through
//! [`respond`], which also counts client errors as rejected; the 404
//! fallback ([`not_found`]) and the host and origin guard answer through
//! [`error_response`] directly and are not counted. Either way a refusal
//! reads the same on every route.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::service::{ErrorKind, Service, ServiceError};

/// The status a kind of error answers with.
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Limit => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Gone => StatusCode::GONE,
        ErrorKind::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error as a response: `{"error","code","status"}` and the error's
/// details (a `schema_violation`'s `path`, `index`, `pattern`), with
/// `Retry-After` when trying again later can help.
pub fn error_response(e: ServiceError) -> Response {
    let status = status(e.kind);
    let mut body = json!({ "error": e.message, "code": e.code, "status": status.as_u16() });
    for (k, v) in e.fields {
        body[k] = v;
    }
    let mut response = (status, Json(body)).into_response();
    if let Some(after) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}

/// Turns a result into a response, counting refusals.
pub fn respond<T: IntoResponse>(svc: &Service, r: Result<T, ServiceError>) -> Response {
    match r {
        Ok(v) => v.into_response(),
        Err(e) => {
            if status(e.kind).is_client_error() {
                svc.metrics.rejected();
            }
            error_response(e)
        }
    }
}

/// Any other path.
pub async fn not_found() -> Response {
    error_response(ServiceError::new(
        ErrorKind::NotFound,
        "not_found",
        "no such route; see the server surface in the README",
    ))
}
