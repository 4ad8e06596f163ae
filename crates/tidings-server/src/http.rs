//! The HTTP adapter: parse, call the [`Service`], write JSON. Errors are
//! answered through [`crate::response`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tidings_core::Committed;

use crate::request::{content_type, principal, read_body, Params};
use crate::response::respond;
use crate::service::{
    decode_ack, decode_binary_cloudevent, decode_publish, wire, ExportRequest, Format, Health,
    Service, ServiceError,
};

fn committed_json(c: &Committed) -> Value {
    let mut v = wire::to_value(&c.event);
    if c.duplicate {
        v["duplicate"] = Value::Bool(true);
    }
    v
}

/// `POST /events`.
pub async fn post_events(
    State(svc): State<Arc<Service>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let params = Params::parse(q.as_deref());
        let who = principal(&svc, &headers, &params)?;
        let expected = params.number("expect_last")?;
        let bytes = read_body(&svc, &headers, body).await?;
        let ce_headers: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("ce-"))
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let decoded = if ce_headers.is_empty() {
            decode_publish(content_type(&headers), &bytes)?
        } else {
            decode_binary_cloudevent(&ce_headers, content_type(&headers), &bytes)?
        };
        let committed = svc.publish(&who, decoded.events, expected).await?;
        Ok::<_, ServiceError>(if decoded.batch {
            Json(Value::Array(committed.iter().map(committed_json).collect()))
        } else {
            Json(committed_json(&committed[0]))
        })
    }
    .await;
    respond(&svc, result)
}

/// `GET /events`.
pub async fn get_events(
    State(svc): State<Arc<Service>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let params = Params::parse(q.as_deref());
        let who = principal(&svc, &headers, &params)?;
        let after = params.number("after")?.unwrap_or(0);
        let limit = params.number("limit")?.map(|n| n as usize);
        let page = svc
            .history(
                &who,
                params.get("pattern"),
                after,
                limit,
                Format::parse(params.get("format"))?,
                params.get("filter"),
            )
            .await?;
        Ok::<_, ServiceError>(Json(page))
    }
    .await;
    respond(&svc, result)
}

/// `GET /export?after=SEQ&until=SEQ&pattern=P`: NDJSON, streamed (see
/// [`crate::service::ExportRequest`]). An error after the body started
/// ends it early (a truncated transfer).
pub async fn export(
    State(svc): State<Arc<Service>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let params = Params::parse(q.as_deref());
        let who = principal(&svc, &headers, &params)?;
        let req = ExportRequest {
            after: params.number("after")?,
            until: params.number("until")?,
            pattern: params.get("pattern").map(str::to_owned),
        };
        let mut export = svc.export(&who, req).await?;
        let body = futures_util::stream::poll_fn(move |cx| export.chunks.poll_recv(cx));
        Ok::<_, ServiceError>(
            (
                [(header::CONTENT_TYPE, "application/x-ndjson")],
                Body::from_stream(body),
            )
                .into_response(),
        )
    }
    .await;
    respond(&svc, result)
}

/// `GET /channels`: only channels the caller may subscribe to.
pub async fn get_channels(
    State(svc): State<Arc<Service>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        let params = Params::parse(q.as_deref());
        let who = principal(&svc, &headers, &params)?;
        let channels = svc.channels(&who);
        Ok::<_, ServiceError>(Json(json!({
            "status": "success",
            "message": format!("{} active channel(s)", channels.len()),
            "total_channels": channels.len(),
            "channels": channels,
        })))
    })();
    respond(&svc, result)
}

/// `GET /schemas`: the configured schemas (any valid token when auth is
/// on).
pub async fn get_schemas(
    State(svc): State<Arc<Service>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result =
        principal(&svc, &headers, &Params::parse(q.as_deref())).map(|who| Json(svc.schemas(&who)));
    respond(&svc, result)
}

/// `GET /healthz`: 200 `ok`, or 503 `degraded` with the reason while the
/// log cannot write.
pub async fn healthz(State(svc): State<Arc<Service>>) -> Response {
    match svc.health() {
        Health::Ok => Json(json!({"status": "ok", "last_seq": svc.last_seq()})).into_response(),
        Health::Degraded { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Json(json!({"status": "degraded", "reason": reason, "last_seq": svc.last_seq()})),
        )
            .into_response(),
    }
}

/// `GET /metrics`: any valid token when auth is on.
pub async fn metrics(
    State(svc): State<Arc<Service>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let who = principal(&svc, &headers, &Params::parse(q.as_deref()))?;
        Ok::<_, ServiceError>((
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            svc.render_metrics(&who).await,
        ))
    }
    .await;
    respond(&svc, result)
}

/// Authenticates the request, then answers `f(who)` as JSON.
async fn as_caller<F, Fut>(svc: &Service, q: Option<&str>, headers: &HeaderMap, f: F) -> Response
where
    F: FnOnce(crate::auth::Principal) -> Fut,
    Fut: std::future::Future<Output = Result<Value, ServiceError>>,
{
    let result = match principal(svc, headers, &Params::parse(q)) {
        Ok(who) => f(who).await.map(Json),
        Err(e) => Err(e),
    };
    respond(svc, result)
}

/// `GET /consumers`.
pub async fn list_consumers(
    State(svc): State<Arc<Service>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let svc2 = svc.clone();
    as_caller(&svc, q.as_deref(), &headers, |who| async move {
        svc2.list_consumers(&who).await
    })
    .await
}

/// `GET /consumers/{name}`.
pub async fn get_consumer(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let svc2 = svc.clone();
    as_caller(&svc, q.as_deref(), &headers, |who| async move {
        svc2.get_consumer(&who, &name).await
    })
    .await
}

/// `DELETE /consumers/{name}`.
pub async fn delete_consumer(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let svc2 = svc.clone();
    as_caller(&svc, q.as_deref(), &headers, |who| async move {
        svc2.delete_consumer(&who, &name).await
    })
    .await
}

/// `POST /consumers/{name}/ack` with `{"seq": N}`.
pub async fn ack_consumer(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let who = principal(&svc, &headers, &Params::parse(q.as_deref()))?;
        let bytes = read_body(&svc, &headers, body).await?;
        let seq = decode_ack(content_type(&headers), &bytes)?;
        Ok::<_, ServiceError>(Json(svc.ack(&who, &name, seq).await?))
    }
    .await;
    respond(&svc, result)
}
