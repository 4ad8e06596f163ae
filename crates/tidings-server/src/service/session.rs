//! A live subscription over a connection: what `/ws`, `/ws/events/{channel}`
//! and `/sse` all are. Every delivery and connection rule lives here, once:
//! the channel rule, the pattern limit, the command rate limit, the
//! WebSocket commands, closing at token expiry and at server shutdown, and
//! counting what was delivered. A transport opens a [`Session`], writes
//! what [`Session::next`] yields and hands client text to
//! [`Session::command`]; that is all it does.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tidings_core::{Consumer, Delivery, EventStream, Pattern};
use tokio::time::Sleep;

use super::consumers::LiveGuard;
use super::{ChannelGuard, ConnectionGuard, Service, ServiceError};
use crate::auth::Principal;
use crate::metrics::Transport;

/// What a connection subscribes to.
#[derive(Debug, Clone)]
pub enum Target {
    /// `/ws` and `/sse`: these patterns.
    Patterns(Vec<String>),
    /// `/ws/events/{channel}` (seed 002): the channel's name and every name
    /// under it.
    Channel(String),
}

/// A request to open a session.
#[derive(Debug, Clone)]
pub struct Open {
    /// What to subscribe to.
    pub target: Target,
    /// Deliver events after this seq (default: from now).
    pub after: Option<u64>,
    /// The transport; it decides only whether commands can follow.
    pub transport: Transport,
    /// How events are written.
    pub format: super::Format,
    /// A CEL filter over the envelope (`filter=`).
    pub filter: Option<String>,
    /// A durable consumer's name (`consumer=`): the session resumes after
    /// its cursor and takes acknowledgements.
    pub consumer: Option<String>,
}

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The server is shutting down.
    ShuttingDown,
    /// The token the session was opened with expired.
    TokenExpired,
    /// Another connection took the consumer over, or it was deleted.
    TakenOver,
    /// The subscription ended (the log was closed).
    Ended,
}

impl CloseReason {
    /// For a person.
    pub fn message(self) -> &'static str {
        match self {
            CloseReason::ShuttingDown => "server shutting down",
            CloseReason::TokenExpired => "token expired: reconnect with a fresh token",
            CloseReason::TakenOver => {
                "another connection took this consumer over, or it was deleted"
            }
            CloseReason::Ended => "subscription closed",
        }
    }
}

/// What a session hands its transport to write.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// An event: its seq and its envelope JSON (encoded once for every
    /// connection that sends it).
    Event {
        /// The event's seq.
        seq: u64,
        /// The envelope as clients see it.
        json: Bytes,
    },
    /// Events were pruned before they could be delivered.
    Lagged {
        /// How many.
        missed: u64,
        /// The next seq delivered.
        resume_from: u64,
    },
    /// The session is over; write a close and stop.
    Close(CloseReason),
}

impl Outgoing {
    /// The lag notice as JSON.
    pub fn lagged_json(missed: u64, resume_from: u64) -> Value {
        json!({"type": "lagged", "missed": missed, "resume_from": resume_from})
    }
}

/// A command a WebSocket client may send (JSON text).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Command {
    /// `{"op":"subscribe","pattern":P}`
    Subscribe {
        /// The pattern.
        pattern: String,
    },
    /// `{"op":"unsubscribe","pattern":P}`
    Unsubscribe {
        /// The pattern.
        pattern: String,
    },
    /// `{"op":"ping"}`
    Ping,
    /// `{"op":"ack","seq":N}`: a consumer has processed everything up to N.
    Ack {
        /// The seq.
        seq: u64,
    },
}

impl Command {
    /// Parses a command.
    pub fn parse(text: &str) -> Result<Command, ServiceError> {
        let refuse = |why: String| {
            ServiceError::bad_request(
                "unknown_command",
                format!("{why}; commands are {{\"op\":\"subscribe\"|\"unsubscribe\",\"pattern\":P}}, {{\"op\":\"ack\",\"seq\":N}} and {{\"op\":\"ping\"}}"),
            )
        };
        // A command is one JSON object with only the fields of its op.
        // (Parsed as a value first: serde's tagged enums would also take
        // the tag as an array's first element, and unknown fields beside
        // a unit variant; both found by the fuzzer.)
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| refuse(e.to_string()))?;
        let fields = value
            .as_object()
            .map(|o| o.len())
            .ok_or_else(|| refuse("a command is a JSON object".into()))?;
        let cmd: Command = serde_json::from_value(value).map_err(|e| refuse(e.to_string()))?;
        if cmd == Command::Ping && fields != 1 {
            return Err(refuse("ping takes no fields".into()));
        }
        Ok(cmd)
    }
}

/// A token bucket: `rate` per second, bursts of `2 × rate`.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket {
            rate: rate as f64,
            tokens: 2.0 * rate as f64,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate)
            .min(2.0 * self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a session reads: a plain subscription, or a durable consumer.
enum Source {
    Stream(EventStream),
    Consumer {
        consumer: Box<Consumer>,
        /// Acknowledgements arriving by HTTP (`POST /consumers/NAME/ack`).
        acks: tokio::sync::mpsc::UnboundedReceiver<u64>,
        /// Set when another connection takes the consumer over.
        kicked: tokio::sync::watch::Receiver<bool>,
        _live: LiveGuard,
    },
}

/// One connection's subscription and everything it is allowed.
pub struct Session {
    service: Arc<Service>,
    who: Principal,
    source: Source,
    transport: Transport,
    format: super::Format,
    welcome: Value,
    commands: Bucket,
    /// Fires when the token expires (never without `exp`).
    expiry: Option<Pin<Box<Sleep>>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    _conn: ConnectionGuard,
    _channel: Option<ChannelGuard>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("who", &self.who.name)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Opens a session: checks the patterns (their count and the token's
    /// scope), takes a connection slot (and a channel slot), and subscribes
    /// from `after`.
    pub(super) async fn open(
        service: &Arc<Service>,
        who: Principal,
        open: Open,
    ) -> Result<Session, ServiceError> {
        let (patterns, channel) = match &open.target {
            Target::Patterns(list) => (
                list.iter()
                    .map(|p| Pattern::parse(p).map_err(ServiceError::from))
                    .collect::<Result<Vec<_>, _>>()?,
                None,
            ),
            Target::Channel(c) => {
                let canonical = canonical_channel(c)?;
                (
                    vec![
                        Pattern::parse(&canonical)?,
                        Pattern::parse(&format!("{canonical}.>"))?,
                    ],
                    Some(canonical),
                )
            }
        };
        if patterns.is_empty() && open.transport == Transport::Sse {
            return Err(ServiceError::bad_request(
                "missing_pattern",
                "give at least one pattern, as in ?pattern=orders.>: this transport cannot add patterns later",
            ));
        }
        let limit = service.config.max_patterns_per_connection;
        if patterns.len() > limit {
            return Err(ServiceError::limit(format!(
                "{} patterns asked for; a connection may hold {limit} (max_patterns_per_connection)",
                patterns.len()
            )));
        }
        for p in &patterns {
            who.check_subscribe(p)?;
        }
        let filter = open
            .filter
            .as_deref()
            .map(|f| service.compile_filter(f))
            .transpose()?;
        if open.consumer.is_some() && (channel.is_some() || patterns.is_empty()) {
            return Err(ServiceError::bad_request(
                "invalid_consumer",
                "a consumer needs at least one pattern, on /ws or /sse",
            ));
        }
        if who.expires.is_some_and(|t| t <= chrono::Utc::now()) {
            return Err(ServiceError::unauthenticated("the token has expired"));
        }
        let conn = service.connect(open.transport)?;
        let channel = match channel {
            Some(c) => Some(service.join_channel(&c)?),
            None => None,
        };
        let source = match &open.consumer {
            None => Source::Stream(
                service
                    .subscribe(&patterns, open.after, filter.map(|f| f as _))
                    .await?,
            ),
            Some(name) => {
                let (consumer, live) = service
                    .open_consumer(&who, name, &patterns, open.after, filter)
                    .await?;
                Source::Consumer {
                    consumer: Box::new(consumer),
                    acks: live.acks,
                    kicked: live.kicked,
                    _live: live.guard,
                }
            }
        };
        let welcome = match (&open.target, &channel) {
            (Target::Channel(c), Some(guard)) => json!({
                "type": "connection",
                "message": format!("Connected to channel '{c}'"),
                "channel": c,
                "subscribers": guard.subscribers,
                "last_seq": service.last_seq(),
            }),
            _ => {
                let mut w = json!({
                    "type": "connection",
                    "patterns": patterns.iter().map(Pattern::as_str).collect::<Vec<_>>(),
                    "last_seq": service.last_seq(),
                });
                if let (Some(name), Source::Consumer { consumer, .. }) = (&open.consumer, &source) {
                    w["consumer"] = json!(name);
                    w["cursor"] = json!(consumer.acked());
                }
                w
            }
        };
        let expiry = who.expires.map(|t| {
            let left = (t - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
            Box::pin(tokio::time::sleep(left))
        });
        Ok(Session {
            commands: Bucket::new(service.config.commands_per_sec),
            shutdown: service.shutdown.subscribe(),
            service: service.clone(),
            who,
            source,
            transport: open.transport,
            format: open.format,
            welcome,
            expiry,
            _conn: conn,
            _channel: channel,
        })
    }

    /// The first message to send.
    pub fn welcome(&self) -> &Value {
        &self.welcome
    }

    fn delivery(
        &self,
        item: Option<Result<Delivery, tidings_core::ReadError>>,
    ) -> Option<Outgoing> {
        match item {
            Some(Ok(Delivery::Event(e))) => {
                self.service.metrics.delivered(self.transport);
                Some(Outgoing::Event {
                    seq: e.seq,
                    json: self.service.encode(&e, self.format),
                })
            }
            Some(Ok(Delivery::Lagged {
                missed,
                resume_from,
            })) => {
                self.service.metrics.lagged();
                Some(Outgoing::Lagged {
                    missed,
                    resume_from,
                })
            }
            Some(Err(e)) => {
                // The stream retries from the same position when polled
                // again; the caller just asks again.
                tracing::warn!(%e, "a session could not read the log");
                None
            }
            None => Some(Outgoing::Close(CloseReason::Ended)),
        }
    }

    /// The next thing to write: an event, a lag notice, or the end.
    pub async fn next(&mut self) -> Outgoing {
        loop {
            let Session {
                source,
                shutdown,
                expiry,
                ..
            } = self;
            let expiry = async {
                match expiry {
                    Some(s) => s.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            let item = match source {
                Source::Stream(stream) => tokio::select! {
                    biased;
                    _ = stopped(shutdown) => return Outgoing::Close(CloseReason::ShuttingDown),
                    _ = expiry => return Outgoing::Close(CloseReason::TokenExpired),
                    item = futures_util::StreamExt::next(stream) => item,
                },
                Source::Consumer {
                    consumer,
                    acks,
                    kicked,
                    ..
                } => tokio::select! {
                    biased;
                    _ = stopped(shutdown) => return Outgoing::Close(CloseReason::ShuttingDown),
                    _ = expiry => return Outgoing::Close(CloseReason::TokenExpired),
                    _ = stopped(kicked) => return Outgoing::Close(CloseReason::TakenOver),
                    Some(seq) = acks.recv() => {
                        if let Err(e) = consumer.ack(seq) {
                            tracing::debug!(%e, "an HTTP acknowledgement was refused");
                        }
                        continue;
                    }
                    item = futures_util::StreamExt::next(&mut **consumer) => item,
                },
            };
            if let Some(out) = self.delivery(item) {
                return out;
            }
            // A failed read: wait a little, then retry from the same seq.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The next thing to write if it is ready now (to batch writes).
    pub fn try_next(&mut self) -> Option<Outgoing> {
        use futures_util::FutureExt;
        let item = match &mut self.source {
            Source::Stream(s) => futures_util::StreamExt::next(s).now_or_never()?,
            Source::Consumer { consumer, .. } => {
                futures_util::StreamExt::next(&mut **consumer).now_or_never()?
            }
        };
        self.delivery(item)
    }

    /// Runs a client's command; returns the reply to send, if any.
    pub fn command(&mut self, text: &str) -> Option<Value> {
        // A consumer's acks are not rate limited: there is one per
        // delivered event, so the delivery rate already bounds them. Any
        // other message, an ack on a connection that is no consumer
        // included, is.
        let parsed = Command::parse(text);
        let consumer_ack = matches!(parsed, Ok(Command::Ack { .. }))
            && matches!(self.source, Source::Consumer { .. });
        if !consumer_ack && !self.commands.take() {
            return Some(self.too_many_commands());
        }
        match parsed.and_then(|cmd| self.run(cmd)) {
            Ok(Value::Null) => None,
            Ok(v) => Some(v),
            Err(e) => Some(error_json(&e)),
        }
    }

    /// A message that is not a command (a binary frame): refused, and
    /// counted against the command rate like any other.
    pub fn not_a_command(&mut self) -> Value {
        if !self.commands.take() {
            return self.too_many_commands();
        }
        error_json(&ServiceError::bad_request(
            "unknown_command",
            "binary messages are not commands; send JSON text",
        ))
    }

    fn too_many_commands(&self) -> Value {
        error_json(&ServiceError::limit(format!(
            "too many commands: at most {} per second (commands_per_sec)",
            self.service.config.commands_per_sec
        )))
    }

    fn run(&mut self, cmd: Command) -> Result<Value, ServiceError> {
        match cmd {
            Command::Ping => Ok(json!({"type": "pong", "last_seq": self.service.last_seq()})),
            Command::Ack { seq } => match &self.source {
                Source::Consumer { consumer, .. } => {
                    consumer
                        .ack(seq)
                        .map_err(|e| ServiceError::bad_request("invalid_ack", e.to_string()))?;
                    // Acks are not answered: one per event would double
                    // the traffic. Only a refused one is.
                    Ok(Value::Null)
                }
                Source::Stream(_) => Err(ServiceError::bad_request(
                    "not_a_consumer",
                    "only a consumer connection (?consumer=NAME) acknowledges",
                )),
            },
            Command::Subscribe { .. } | Command::Unsubscribe { .. }
                if matches!(self.source, Source::Consumer { .. }) =>
            {
                Err(ServiceError::new(
                    super::ErrorKind::Conflict,
                    "consumer_patterns_fixed",
                    "a consumer's patterns are part of it: delete it to change them",
                ))
            }
            Command::Subscribe { pattern } => {
                let Source::Stream(stream) = &mut self.source else {
                    unreachable!("consumers were answered above")
                };
                let parsed = Pattern::parse(&pattern)?;
                self.who.check_subscribe(&parsed)?;
                let held = stream.patterns();
                let limit = self.service.config.max_patterns_per_connection;
                if !held.contains(&parsed) && held.len() >= limit {
                    return Err(ServiceError::limit(format!(
                        "this connection holds {limit} patterns, the limit (max_patterns_per_connection)"
                    )));
                }
                stream.add_pattern(parsed)?;
                Ok(
                    json!({"type": "subscribed", "pattern": pattern, "count": stream.patterns().len()}),
                )
            }
            Command::Unsubscribe { pattern } => {
                let Source::Stream(stream) = &mut self.source else {
                    unreachable!("consumers were answered above")
                };
                if stream.remove_pattern(pattern.as_str())? {
                    Ok(
                        json!({"type": "unsubscribed", "pattern": pattern, "count": stream.patterns().len()}),
                    )
                } else {
                    Err(ServiceError::bad_request(
                        "not_subscribed",
                        format!("not subscribed to {pattern:?}"),
                    ))
                }
            }
        }
    }
}

/// An error as a socket message.
pub fn error_json(e: &ServiceError) -> Value {
    json!({"type": "error", "code": e.code, "error": e.message})
}

/// The channel name every limit and count uses: validated, `:` written
/// as `.` (the two separators are the same name).
pub fn canonical_channel(channel: &str) -> Result<String, ServiceError> {
    tidings_core::name::validate_name(channel)?;
    Ok(channel.replace(':', "."))
}

/// Resolves once `rx` holds `true` (or its sender is gone): how a session,
/// and the server's accept loop, see a shutdown or a take-over.
pub async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_or_say_what_they_take() {
        assert_eq!(Command::parse(r#"{"op":"ping"}"#).unwrap(), Command::Ping);
        assert_eq!(
            Command::parse(r#"{"op":"subscribe","pattern":"a.*"}"#).unwrap(),
            Command::Subscribe {
                pattern: "a.*".into()
            }
        );
        let e = Command::parse(r#"{"op":"shout"}"#).unwrap_err();
        assert!(e.message.contains("commands are"), "{}", e.message);
        assert!(Command::parse("not json").is_err());
        assert!(
            Command::parse(r#"["ping"]"#).is_err(),
            "found by the fuzzer"
        );
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut b = Bucket::new(5);
        assert_eq!((0..10).filter(|_| b.take()).count(), 10);
        assert!(!b.take());
    }

    #[test]
    fn channels_are_canonical() {
        assert_eq!(canonical_channel("a:b").unwrap(), "a.b");
        assert_eq!(canonical_channel("a.b").unwrap(), "a.b");
        assert!(canonical_channel("a..b").is_err());
        assert!(canonical_channel("*").is_err());
    }
}
