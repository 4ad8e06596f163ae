//! The SSE adapter: `GET /sse?pattern=P[&pattern=Q][&after=SEQ]`.
//!
//! Each event is `id: <seq>` plus `data: <envelope JSON>` (default event
//! type, so `EventSource.onmessage` sees it). A browser reconnecting sends
//! `Last-Event-ID`, which takes precedence over `after`, so it resumes
//! exactly after the last event it got. A lag notice is sent as
//! `event: lagged` with `id: resume_from - 1`, so a reconnect does not ask
//! for the pruned range again. Comments keep idle connections alive.

use std::convert::Infallible;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use tidings_core::Delivery;

use crate::error::ApiError;
use crate::http::{principal, respond, AppState, Params};
use crate::metrics::Transport;

/// `GET /sse`.
pub async fn sse(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let svc = st.service.clone();
    let prepared = async {
        let params = Params::parse(q.as_deref());
        let who = principal(&svc, &headers, &params)?;
        let patterns = params.patterns()?;
        if patterns.is_empty() {
            return Err(ApiError::bad_request(
                "missing_pattern",
                "give at least one pattern, as in /sse?pattern=orders.>",
            ));
        }
        let mut after = params.number("after")?;
        if let Some(v) = headers.get("last-event-id") {
            let v = v.to_str().unwrap_or("");
            after = Some(v.trim().parse::<u64>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_last_event_id",
                    format!("Last-Event-ID must be a sequence number, got {v:?}"),
                )
            })?);
        }
        let conn = svc.connect(Transport::Sse)?;
        let stream = svc.subscribe(&who, &patterns, after).await?;
        Ok((conn, stream))
    }
    .await;
    let (conn, stream) = match prepared {
        Ok(p) => p,
        Err(e) => return respond(&svc, Err::<(), _>(e)),
    };
    let mut shutdown = st.shutdown.clone();
    let metrics_svc = svc.clone();
    let events = stream
        .filter_map(move |item| {
            let _keep = &conn;
            let svc = metrics_svc.clone();
            async move {
                match item {
                    Ok(Delivery::Event(e)) => {
                        svc.metrics.delivered(Transport::Sse);
                        let data = serde_json::to_string(&*e).unwrap_or_default();
                        Some(Ok::<_, Infallible>(
                            SseEvent::default().id(e.seq.to_string()).data(data),
                        ))
                    }
                    Ok(Delivery::Lagged {
                        missed,
                        resume_from,
                    }) => {
                        svc.metrics.lagged();
                        let data =
                            json!({"type": "lagged", "missed": missed, "resume_from": resume_from});
                        Some(Ok(SseEvent::default()
                            .event("lagged")
                            .id((resume_from - 1).to_string())
                            .data(data.to_string())))
                    }
                    Err(e) => {
                        tracing::warn!(%e, "SSE stream could not read the log");
                        None
                    }
                }
            }
        })
        .take_until(async move {
            let _ = shutdown.wait_for(|v| *v).await;
        });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(svc.config.keepalive()))
        .into_response()
}
