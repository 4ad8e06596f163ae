//! The SSE adapter: `GET /sse?pattern=P[&pattern=Q][&after=SEQ]`.
//!
//! Each event is `id: <seq>` plus `data: <envelope JSON>` (default event
//! type, so `EventSource.onmessage` sees it). A browser reconnecting sends
//! `Last-Event-ID`, which takes precedence over `after`, so it resumes
//! exactly after the last event it got. A lag notice is sent as
//! `event: lagged` with `id: resume_from - 1`, so a reconnect does not ask
//! for the pruned range again. A session that ends (token expiry,
//! shutdown) sends `event: close` with the reason. Comments keep idle
//! connections alive.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::metrics::Transport;
use crate::request::{check_origin, principal, Params};
use crate::response::respond;
use crate::service::{Format, Open, Outgoing, Service, ServiceError, Target};

/// `GET /sse`.
pub async fn sse(
    State(svc): State<Arc<Service>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let opened = async {
        let params = Params::parse(q.as_deref());
        // A cross-site page may open an EventSource with the visitor's
        // cookies and network; CORS only hides the answer, while opening a
        // consumer here has effects (it takes the consumer over).
        check_origin(&svc, &headers)?;
        let who = principal(&svc, &headers, &params)?;
        let mut after = params.number("after")?;
        if let Some(v) = headers.get("last-event-id") {
            let v = v.to_str().unwrap_or("");
            after = Some(v.trim().parse::<u64>().map_err(|_| {
                ServiceError::bad_request(
                    "invalid_last_event_id",
                    format!("Last-Event-ID must be a sequence number, got {v:?}"),
                )
            })?);
        }
        let open = Open {
            target: Target::Patterns(params.all("pattern")),
            after,
            transport: Transport::Sse,
            format: Format::parse(params.get("format"))?,
            filter: params.get("filter").map(str::to_owned),
            consumer: params.get("consumer").map(str::to_owned),
        };
        svc.open(who, open).await
    }
    .await;
    let session = match opened {
        Ok(s) => s,
        Err(e) => return respond(&svc, Err::<(), _>(e)),
    };
    let events = futures_util::stream::unfold(Some(session), |session| async move {
        let mut session = session?;
        let frame = match session.next().await {
            Outgoing::Event { seq, json } => SseEvent::default()
                .id(seq.to_string())
                .data(String::from_utf8_lossy(&json)),
            Outgoing::Lagged {
                missed,
                resume_from,
            } => SseEvent::default()
                .event("lagged")
                .id((resume_from - 1).to_string())
                .data(Outgoing::lagged_json(missed, resume_from).to_string()),
            Outgoing::Close(reason) => {
                let frame = SseEvent::default()
                    .event("close")
                    .data(json!({"type": "close", "reason": reason.message()}).to_string());
                return Some((Ok::<_, Infallible>(frame), None));
            }
        };
        Some((Ok(frame), Some(session)))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(svc.config.keepalive()))
        .into_response()
}
