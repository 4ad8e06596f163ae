//! The HTTP adapter: routes, request parsing, JSON answers. Each handler
//! parses, calls the [`Service`], and writes the result.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tidings_core::{Committed, Pattern};
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::service::{Incoming, Service};

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// The service.
    pub service: Arc<Service>,
    /// Becomes true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let cors = &state.service.config.cors_origins;
    let mut router = Router::new()
        .route("/events", get(get_events).post(post_events))
        .route("/channels", get(get_channels))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/ws", get(crate::ws::ws_patterns))
        .route("/ws/events/{channel}", get(crate::ws::ws_channel))
        .route("/sse", get(crate::sse::sse))
        .fallback(not_found);
    if !cors.is_empty() {
        let origins: Vec<http::HeaderValue> = cors.iter().filter_map(|o| o.parse().ok()).collect();
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    http::HeaderName::from_static("last-event-id"),
                ]),
        );
    }
    router.with_state(state)
}

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
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `key` as a number, if present.
    pub fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(
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

    /// Every `pattern`, parsed.
    pub fn patterns(&self) -> Result<Vec<Pattern>, ApiError> {
        self.all("pattern")
            .into_iter()
            .map(|p| Pattern::parse(p).map_err(ApiError::from))
            .collect()
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
) -> Result<Principal, ApiError> {
    service.authenticate(token(headers, params))
}

fn committed_json(c: &Committed) -> Value {
    let mut v = serde_json::to_value(&*c.event).unwrap_or(Value::Null);
    if c.duplicate {
        v["duplicate"] = Value::Bool(true);
    }
    v
}

/// A CloudEvent (structured mode, JSON).
#[derive(Deserialize)]
struct CloudEvent {
    specversion: String,
    #[serde(rename = "type")]
    kind: String,
    source: String,
    id: String,
    #[serde(default)]
    time: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    data: Value,
}

impl CloudEvent {
    fn into_incoming(self) -> Result<Incoming, ApiError> {
        if self.specversion != "1.0" {
            return Err(ApiError::bad_request(
                "invalid_cloudevent",
                format!(
                    "unsupported CloudEvents specversion {:?} (expected \"1.0\")",
                    self.specversion
                ),
            ));
        }
        Ok(Incoming {
            name: self.kind,
            data: self.data,
            // CloudEvents: source + id identify an event; a repeat is a duplicate.
            key: Some(format!("ce:{}:{}", self.source, self.id)),
            source: Some(self.source),
            priority: None,
            time: self.time,
        })
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    code: &'static str,
) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(code, format!("malformed JSON body: {e}")))
}

/// Parses a publish body by content type.
fn parse_publish(content_type: &str, bytes: &[u8]) -> Result<(Vec<Incoming>, bool), ApiError> {
    if content_type.starts_with("application/cloudevents-batch+json") {
        let batch: Vec<CloudEvent> = parse_json(bytes, "invalid_cloudevent")?;
        let events = batch
            .into_iter()
            .map(CloudEvent::into_incoming)
            .collect::<Result<_, _>>()?;
        return Ok((events, true));
    }
    if content_type.starts_with("application/cloudevents+json") {
        let ce: CloudEvent = parse_json(bytes, "invalid_cloudevent")?;
        return Ok((vec![ce.into_incoming()?], false));
    }
    let value: Value = parse_json(bytes, "malformed_json")?;
    let one = |v: Value, i: Option<usize>| -> Result<Incoming, ApiError> {
        let at = i.map(|i| format!("event {i}: ")).unwrap_or_default();
        if !v.is_object() {
            return Err(ApiError::bad_request(
                "invalid_event",
                format!("{at}an event must be a JSON object"),
            ));
        }
        if v.get("name").is_none() {
            return Err(ApiError::bad_request(
                "missing_name",
                format!("{at}the event has no \"name\""),
            ));
        }
        serde_json::from_value(v)
            .map_err(|e| ApiError::bad_request("invalid_event", format!("{at}{e}")))
    };
    match value {
        Value::Array(items) => {
            let events = items
                .into_iter()
                .enumerate()
                .map(|(i, v)| one(v, Some(i)))
                .collect::<Result<_, _>>()?;
            Ok((events, true))
        }
        v => Ok((vec![one(v, None)?], false)),
    }
}

async fn read_body(service: &Service, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limit = service.config.max_payload;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
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
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

async fn post_events(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let svc = &st.service;
    let result = async {
        let params = Params::parse(q.as_deref());
        let who = principal(svc, &headers, &params)?;
        let expected = params.number("expect_last")?;
        let bytes = read_body(svc, &headers, body).await?;
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        let (events, batch) = parse_publish(content_type, &bytes)?;
        let committed = svc.publish(&who, events, expected).await?;
        Ok::<_, ApiError>(if batch {
            Json(Value::Array(committed.iter().map(committed_json).collect()))
        } else {
            Json(committed_json(&committed[0]))
        })
    }
    .await;
    respond(svc, result)
}

/// Turns a result into a response, counting refusals.
pub fn respond<T: IntoResponse>(svc: &Service, r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => v.into_response(),
        Err(e) => {
            if e.status.is_client_error() {
                svc.metrics.rejected();
            }
            e.into_response()
        }
    }
}

async fn get_events(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let svc = &st.service;
    let result = async {
        let params = Params::parse(q.as_deref());
        let who = principal(svc, &headers, &params)?;
        let after = params.number("after")?.unwrap_or(0);
        let limit = params.number("limit")?.map(|n| n as usize);
        let page = svc
            .history(&who, params.get("pattern"), after, limit)
            .await?;
        Ok::<_, ApiError>(Json(page))
    }
    .await;
    respond(svc, result)
}

async fn get_channels(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let svc = &st.service;
    let result = (|| {
        let params = Params::parse(q.as_deref());
        principal(svc, &headers, &params)?;
        let channels = svc.channels();
        Ok::<_, ApiError>(Json(json!({
            "status": "success",
            "message": format!("{} active channel(s)", channels.len()),
            "total_channels": channels.len(),
            "channels": channels,
        })))
    })();
    respond(svc, result)
}

async fn healthz(State(st): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "last_seq": st.service.last_seq()}))
}

async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.service.render_metrics(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see the server surface in the README",
    )
}
