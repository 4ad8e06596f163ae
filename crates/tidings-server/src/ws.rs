//! The WebSocket adapter.
//!
//! * `GET /ws?pattern=P&pattern=Q&after=SEQ`: events matching any pattern.
//! * `GET /ws/events/{channel}`: seed 002's channel socket; channel `route`
//!   receives `route` and every name under `route.`.
//!
//! The first message is a welcome (`{"type":"connection",...}`); then one
//! JSON envelope per event. Control messages carry a `"type"`; envelopes
//! never do. Commands a client may send (JSON text):
//!
//! * `{"op":"subscribe","pattern":"P"}` → `{"type":"subscribed","pattern":"P","patterns":[...]}`
//! * `{"op":"unsubscribe","pattern":"P"}` → `{"type":"unsubscribed",...}`
//! * `{"op":"ping"}` → `{"type":"pong","last_seq":N}`
//!
//! Anything else gets `{"type":"error","code":...,"error":...}` and the
//! socket stays open. A slow client's events wait in a bounded queue; when
//! it overflows the connection reads the log instead (nothing is lost), and
//! only if its position was pruned does it get
//! `{"type":"lagged","missed":N,"resume_from":SEQ}`.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tidings_core::{Delivery, EventStream, Pattern, ReadError};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::{principal, respond, AppState, Params};
use crate::metrics::Transport;
use crate::service::{ChannelGuard, ConnectionGuard};

/// Close code: the server is going away.
const GOING_AWAY: u16 = 1001;
/// Close code: try again later (a limit).
const TRY_AGAIN_LATER: u16 = 1013;
/// A send that takes longer than this drops the client.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Read buffer per socket: clients only send small commands, and
/// tungstenite's 128 KiB default would dominate an idle connection's memory.
const READ_BUFFER: usize = 1024;
/// Largest command a client may send.
const MAX_MESSAGE: usize = 64 * 1024;
/// Events already waiting that are written before one flush.
const WRITE_BATCH: usize = 64;

/// Browsers send `Origin` on WebSocket upgrades but CORS does not apply to
/// them: allow same-origin, configured origins, and non-browser clients.
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
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
    if same
        || state
            .service
            .config
            .cors_origins
            .iter()
            .any(|o| o == origin)
    {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "origin {origin:?} is not allowed (see cors_origins)"
        )))
    }
}

struct Session {
    stream: EventStream,
    who: Principal,
    welcome: Value,
    _conn: ConnectionGuard,
    _channel: Option<ChannelGuard>,
}

/// Checks and opens what every socket needs: origin, token, `after`, a
/// connection slot, and the subscription on `patterns`.
async fn prepare(
    st: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    patterns: impl FnOnce(&Params) -> Result<Vec<Pattern>, ApiError>,
) -> Result<(Principal, EventStream, ConnectionGuard, Vec<Pattern>), ApiError> {
    check_origin(st, headers)?;
    let svc = &st.service;
    let params = Params::parse(query);
    let who = principal(svc, headers, &params)?;
    let patterns = patterns(&params)?;
    let after = params.number("after")?;
    let conn = svc.connect(Transport::WebSocket)?;
    let stream = svc.subscribe(&who, &patterns, after).await?;
    Ok((who, stream, conn, patterns))
}

/// `GET /ws`.
pub async fn ws_patterns(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let (who, stream, conn, patterns) =
        match prepare(&st, &headers, q.as_deref(), Params::patterns).await {
            Ok(p) => p,
            Err(e) => return respond(&st.service, Err::<(), _>(e)),
        };
    let welcome = json!({
        "type": "connection",
        "patterns": patterns.iter().map(Pattern::as_str).collect::<Vec<_>>(),
        "last_seq": st.service.last_seq(),
    });
    ws.read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| {
            run(
                st,
                socket,
                Session {
                    stream,
                    who,
                    welcome,
                    _conn: conn,
                    _channel: None,
                },
            )
        })
}

/// `GET /ws/events/{channel}`.
pub async fn ws_channel(
    State(st): State<AppState>,
    Path(channel): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let channel_patterns = |_: &Params| {
        tidings_core::name::validate_name(&channel)?;
        Ok(vec![
            Pattern::parse(&channel)?,
            Pattern::parse(&format!("{channel}.>"))?,
        ])
    };
    let (who, stream, conn, _) = match prepare(&st, &headers, q.as_deref(), channel_patterns).await
    {
        Ok(p) => p,
        Err(e) => return respond(&st.service, Err::<(), _>(e)),
    };
    ws.read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |mut socket| async move {
            let guard = match st.service.join_channel(&channel) {
                Ok(g) => g,
                Err(e) => {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: TRY_AGAIN_LATER,
                            reason: Utf8Bytes::from(truncate_reason(&e.message)),
                        })))
                        .await;
                    return;
                }
            };
            let welcome = json!({
                "type": "connection",
                "message": format!("Connected to channel '{channel}'"),
                "channel": channel,
                "subscribers": guard.subscribers,
                "last_seq": st.service.last_seq(),
            });
            run(
                st,
                socket,
                Session {
                    stream,
                    who,
                    welcome,
                    _conn: conn,
                    _channel: Some(guard),
                },
            )
            .await
        })
}

/// Close reasons are limited to 123 bytes.
fn truncate_reason(s: &str) -> String {
    let mut end = s.len().min(123);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Command {
    Subscribe { pattern: String },
    Unsubscribe { pattern: String },
    Ping,
}

fn error_message(code: &str, error: impl std::fmt::Display) -> Value {
    json!({"type": "error", "code": code, "error": error.to_string()})
}

/// Runs one command against the session; returns the reply.
fn command(session: &mut Session, text: &str, last_seq: u64) -> Value {
    let cmd: Command = match serde_json::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            return error_message(
                "unknown_command",
                format!("{e}; commands are {{\"op\":\"subscribe\"|\"unsubscribe\",\"pattern\":P}} and {{\"op\":\"ping\"}}"),
            )
        }
    };
    let patterns = |s: &Session| {
        s.stream
            .patterns()
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    match cmd {
        Command::Ping => json!({"type": "pong", "last_seq": last_seq}),
        Command::Subscribe { pattern } => {
            let parsed = match Pattern::parse(&pattern) {
                Ok(p) => p,
                Err(e) => return error_message("invalid_pattern", e),
            };
            if let Err(e) = session.who.check_subscribe(&parsed) {
                return error_message(e.code, e.message);
            }
            match session.stream.add_pattern(parsed) {
                Ok(_) => {
                    json!({"type": "subscribed", "pattern": pattern, "patterns": patterns(session)})
                }
                Err(e) => error_message("invalid_pattern", e),
            }
        }
        Command::Unsubscribe { pattern } => match session.stream.remove_pattern(pattern.as_str()) {
            Ok(true) => {
                json!({"type": "unsubscribed", "pattern": pattern, "patterns": patterns(session)})
            }
            Ok(false) => error_message("not_subscribed", format!("not subscribed to {pattern:?}")),
            Err(e) => error_message("invalid_pattern", e),
        },
    }
}

async fn run(st: AppState, socket: WebSocket, mut session: Session) {
    let svc = st.service.clone();
    let mut shutdown = st.shutdown.clone();
    let mut stopping = Box::pin(async move {
        let _ = shutdown.wait_for(|v| *v).await;
    });
    let (mut tx, mut rx) = socket.split();
    let send = |v: String| Message::Text(Utf8Bytes::from(v));
    if tx.send(send(session.welcome.to_string())).await.is_err() {
        return;
    }
    let mut keepalive = tokio::time::interval(svc.config.keepalive());
    keepalive.tick().await;
    let delivery = |item: Option<Result<Delivery, ReadError>>| -> Option<Message> {
        match item {
            Some(Ok(Delivery::Event(e))) => {
                svc.metrics.delivered(Transport::WebSocket);
                Some(Message::Text(svc.encode(&e)))
            }
            Some(Ok(Delivery::Lagged {
                missed,
                resume_from,
            })) => {
                svc.metrics.lagged();
                Some(send(
                    json!({"type": "lagged", "missed": missed, "resume_from": resume_from})
                        .to_string(),
                ))
            }
            Some(Err(e)) => {
                tracing::warn!(%e, "websocket stream could not read the log");
                None
            }
            None => Some(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: Utf8Bytes::from_static("subscription closed"),
            }))),
        }
    };
    loop {
        let mut out: Vec<Message> = tokio::select! {
            _ = &mut stopping => {
                let _ = tx.send(Message::Close(Some(CloseFrame {
                    code: GOING_AWAY,
                    reason: Utf8Bytes::from_static("server shutting down"),
                }))).await;
                break;
            }
            item = session.stream.next() => {
                let Some(first) = delivery(item) else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                // Write whatever else is already waiting before one flush.
                let mut batch = vec![first];
                while batch.len() < WRITE_BATCH && !matches!(batch.last(), Some(Message::Close(_))) {
                    match session.stream.next().now_or_never() {
                        Some(item) => batch.extend(delivery(item)),
                        None => break,
                    }
                }
                batch
            }
            msg = rx.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(Message::Text(t))) => {
                    let reply = command(&mut session, t.as_str(), svc.last_seq());
                    vec![send(reply.to_string())]
                }
                Some(Ok(Message::Binary(_))) => vec![send(error_message("unknown_command", "binary messages are not commands; send JSON text").to_string())],
                Some(Ok(_)) => continue, // ping/pong: answered by the protocol layer
            },
            _ = keepalive.tick() => vec![Message::Ping(Default::default())],
        };
        let closing = matches!(out.last(), Some(Message::Close(_)));
        let write = async {
            for m in out.drain(..) {
                tx.feed(m).await?;
            }
            tx.flush().await
        };
        match tokio::time::timeout(SEND_TIMEOUT, write).await {
            Ok(Ok(())) if !closing => {}
            _ => break,
        }
    }
}
