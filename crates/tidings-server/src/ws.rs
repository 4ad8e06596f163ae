//! The WebSocket adapter.
//!
//! * `GET /ws?pattern=P&pattern=Q&after=SEQ`: events matching any pattern.
//! * `GET /ws/events/{channel}`: seed 002's channel socket; channel `route`
//!   receives `route` and every name under `route.`.
//!
//! The first message is a welcome (`{"type":"connection",...}`); then one
//! JSON envelope per event. Control messages carry a `"type"`; envelopes
//! never do. Commands (see [`crate::service::Command`]):
//!
//! * `{"op":"subscribe","pattern":"P"}` → `{"type":"subscribed","pattern":"P","count":N}`
//! * `{"op":"unsubscribe","pattern":"P"}` → `{"type":"unsubscribed","pattern":"P","count":N}`
//! * `{"op":"ping"}` → `{"type":"pong","last_seq":N}`
//!
//! Anything else gets `{"type":"error","code":...,"error":...}` and the
//! socket stays open. Everything but framing is the [`Session`]'s: this
//! file writes what it yields and hands it the client's text. The one rule
//! of the protocol itself lives here: a client that does not answer our
//! ping within the send timeout is gone, and its socket is closed.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};

use crate::metrics::Transport;
use crate::request::{check_origin, principal, Params};
use crate::response::respond;
use crate::service::{CloseReason, Format, Open, Outgoing, Service, Session, Target, CHANNEL_FULL};

/// Close code: normal closure.
const NORMAL: u16 = 1000;
/// Close code: the server is going away.
const GOING_AWAY: u16 = 1001;
/// Close code: try again later (a full channel).
const TRY_AGAIN_LATER: u16 = 1013;
/// Close code: another connection took the consumer over (application
/// range).
const TAKEN_OVER: u16 = 4409;
/// Close code: policy violation (the token expired).
const POLICY: u16 = 1008;
/// Read buffer per socket: clients only send small commands, and
/// tungstenite's 128 KiB default would dominate an idle connection's memory.
const READ_BUFFER: usize = 1024;
/// Largest command a client may send.
const MAX_MESSAGE: usize = 64 * 1024;
/// Events already waiting that are written before one flush.
const WRITE_BATCH: usize = 64;

/// `GET /ws`.
pub async fn ws_patterns(
    State(svc): State<Arc<Service>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let params = Params::parse(q.as_deref());
    let target = Target::Patterns(params.all("pattern"));
    upgrade(svc, headers, params, target, ws).await
}

/// `GET /ws/events/{channel}`.
pub async fn ws_channel(
    State(svc): State<Arc<Service>>,
    Path(channel): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let params = Params::parse(q.as_deref());
    upgrade(svc, headers, params, Target::Channel(channel), ws).await
}

async fn upgrade(
    svc: Arc<Service>,
    headers: HeaderMap,
    params: Params,
    target: Target,
    ws: WebSocketUpgrade,
) -> Response {
    let opened = async {
        check_origin(&svc, &headers)?;
        let who = principal(&svc, &headers, &params)?;
        let open = Open {
            target,
            after: params.number("after")?,
            transport: Transport::WebSocket,
            format: Format::parse(params.get("format"))?,
            filter: params.get("filter").map(str::to_owned),
            consumer: params.get("consumer").map(str::to_owned),
        };
        svc.open(who, open).await
    }
    .await;
    match opened {
        Ok(session) => ws
            .read_buffer_size(READ_BUFFER)
            .max_message_size(MAX_MESSAGE)
            // A frame is buffered whole before the message limit applies:
            // without this a client could make the server hold 16 MiB.
            .max_frame_size(MAX_MESSAGE)
            .on_upgrade(move |socket| run(svc, socket, session)),
        // Seed 002's channel sockets learn of a full channel from a close
        // frame (1013, try again later), as they always have.
        Err(e) if e.code == CHANNEL_FULL => ws.on_upgrade(move |mut socket| async move {
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: TRY_AGAIN_LATER,
                    reason: Utf8Bytes::from(truncate_reason(&e.message)),
                })))
                .await;
        }),
        Err(e) => respond(&svc, Err::<(), _>(e)),
    }
}

/// Close reasons are limited to 123 bytes.
fn truncate_reason(s: &str) -> String {
    let mut end = s.len().min(123);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

fn frame(out: Outgoing) -> Message {
    match out {
        Outgoing::Event { json, .. } => Message::Text(
            Utf8Bytes::try_from(json).expect("the service encodes envelopes as UTF-8 JSON"),
        ),
        Outgoing::Lagged {
            missed,
            resume_from,
        } => text(Outgoing::lagged_json(missed, resume_from).to_string()),
        Outgoing::Close(reason) => Message::Close(Some(CloseFrame {
            code: match reason {
                CloseReason::ShuttingDown => GOING_AWAY,
                CloseReason::TokenExpired => POLICY,
                CloseReason::TakenOver => TAKEN_OVER,
                CloseReason::Ended => NORMAL,
            },
            reason: Utf8Bytes::from_static(reason.message()),
        })),
    }
}

async fn run(svc: Arc<Service>, socket: WebSocket, mut session: Session) {
    let (mut tx, mut rx) = socket.split();
    if tx.send(text(session.welcome().to_string())).await.is_err() {
        return;
    }
    let mut keepalive = tokio::time::interval(svc.config.keepalive());
    keepalive.tick().await;
    // When our oldest unanswered ping was sent.
    let mut unanswered: Option<Instant> = None;
    loop {
        let out: Vec<Message> = tokio::select! {
            out = session.next() => {
                // Write whatever else is already waiting before one flush.
                let mut batch = vec![frame(out)];
                while batch.len() < WRITE_BATCH && !matches!(batch.last(), Some(Message::Close(_))) {
                    match session.try_next() {
                        Some(out) => batch.push(frame(out)),
                        None => break,
                    }
                }
                batch
            }
            msg = rx.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(Message::Text(t))) => match session.command(t.as_str()) {
                    Some(reply) => vec![text(reply.to_string())],
                    None => continue,
                },
                Some(Ok(Message::Binary(_))) => vec![text(session.not_a_command().to_string())],
                Some(Ok(Message::Pong(_))) => {
                    unanswered = None;
                    continue;
                }
                Some(Ok(_)) => continue, // pings: answered by the protocol layer
            },
            _ = keepalive.tick() => {
                if unanswered.is_some_and(|t| t.elapsed() > svc.config.send_timeout()) {
                    tracing::debug!("websocket client did not answer pings: closing");
                    break;
                }
                unanswered.get_or_insert_with(Instant::now);
                vec![Message::Ping(Default::default())]
            }
        };
        let closing = matches!(out.last(), Some(Message::Close(_)));
        let write = async {
            for m in out {
                tx.feed(m).await?;
            }
            tx.flush().await
        };
        // A peer that stops reading is dropped by the connection's
        // write-stall timeout (see `server`): this write then fails.
        match write.await {
            Ok(()) if !closing => {}
            _ => break,
        }
    }
}
