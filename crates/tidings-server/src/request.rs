//! Request plumbing shared by every route: query parameters, the caller's
//! token, the body (size and time limits), and the host and origin guards.
//! Nothing here decides a command; it only turns HTTP into service input.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Principal;
use crate::service::{ErrorKind, Service, ServiceError};

/// Query parameters, keeping repeated keys (`pattern=a&pattern=b`).
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Params {
        Params(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `key` as a number, if present.
    pub fn number(&self, key: &str) -> Result<Option<u64>, ServiceError> {
        self.get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ServiceError::bad_request(
                        if key == "after" {
                            "invalid_after"
                        } else {
                            "invalid_parameter"
                        },
                        format!("{key} must be a non-negative integer, got {v:?}"),
                    )
                })
            })
            .transpose()
    }
}

/// The request's token: `Authorization: Bearer T`, or `?token=T`.
pub fn token<'a>(headers: &'a HeaderMap, params: &'a Params) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| params.get("token"))
}

/// Authenticates the request.
pub fn principal(
    service: &Service,
    headers: &HeaderMap,
    params: &Params,
) -> Result<Principal, ServiceError> {
    service.authenticate(token(headers, params))
}

/// The body, refused past `max_payload` (413) or when it does not arrive
/// within `body_read_timeout_secs` (408).
pub async fn read_body(
    service: &Service,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ServiceError> {
    let limit = service.config.max_payload;
    let too_large = || {
        ServiceError::new(
            ErrorKind::TooLarge,
            "payload_too_large",
            format!("the body is larger than max_payload ({limit} bytes)"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let wait = Duration::from_secs(service.config.body_read_timeout_secs);
    match tokio::time::timeout(wait, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(ServiceError::new(
            ErrorKind::Timeout,
            "body_timeout",
            format!(
                "the body did not arrive within {} s (body_read_timeout_secs)",
                wait.as_secs()
            ),
        )),
    }
}

/// The request's content type, if any.
pub fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// The host part of a `Host` header value, lowercased, without the port.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if host.starts_with('[') {
        // [::1]:7700 -> [::1]
        host.split_once(']')
            .map_or(host.to_owned(), |(h, _)| format!("{h}]"))
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
            .to_owned()
    };
    name.to_ascii_lowercase()
}

/// Middleware: refuses a `Host` outside `allowed_hosts` (DNS rebinding: a
/// page on `evil.example` whose name now points at 127.0.0.1 still sends
/// `Host: evil.example`).
pub async fn guard_host(
    axum::extract::State(allowed): axum::extract::State<Option<std::sync::Arc<[String]>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(allowed) = allowed {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| request.uri().host().map(str::to_owned));
        let ok = host.as_deref().is_some_and(|h| {
            let name = host_name(h);
            allowed.contains(&name)
        });
        if !ok {
            return crate::response::error_response(ServiceError::new(
                ErrorKind::Forbidden,
                "host_not_allowed",
                format!(
                    "host {:?} is not allowed (allowed_hosts: {})",
                    host.unwrap_or_default(),
                    allowed.join(", ")
                ),
            ))
            .into_response();
        }
    }
    next.run(request).await
}

/// Browsers send `Origin` on WebSocket upgrades but CORS does not apply to
/// them: allow same-origin, configured origins, and non-browser clients.
pub fn check_origin(service: &Service, headers: &HeaderMap) -> Result<(), ServiceError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let same = origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host);
    if same || service.config.cors_origins.iter().any(|o| o == origin) {
        Ok(())
    } else {
        Err(ServiceError::forbidden(format!(
            "origin {origin:?} is not allowed (see cors_origins)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("localhost:7700"), "localhost");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("[::1]:7700"), "[::1]");
        assert_eq!(host_name("Evil.Example:80"), "evil.example");
    }
}
