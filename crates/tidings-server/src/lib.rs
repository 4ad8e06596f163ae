//! # tidings-server: Tidings on the network
//!
//! One [`service::Service`] implements every command and keeps every rule
//! (publish, history, sessions, channels, limits, auth, key namespaces);
//! [`http`], [`ws`] and [`sse`] are thin adapters that parse requests, call
//! it and write answers, over the shared plumbing in [`request`] (input)
//! and [`response`] (refusals). None of them imports another; the router
//! lives in [`server`]. [`server::start`] opens
//! the store named by the [`config::Config`] and serves
//! the surface fixed in the design brief:
//!
//! | route | what |
//! |---|---|
//! | `POST /events` | one event `{"name","data"?,"source"?,"key"?,"time"?,"priority"?}`, a JSON array (atomic batch), or a CloudEvent (`application/cloudevents+json`, `-batch+json`); `?expect_last=SEQ` for optimistic concurrency |
//! | `GET /events?pattern=P&after=SEQ&limit=N` | history, oldest first: `{"events","next_after","last_seq"}` |
//! | `GET /channels` | seed 002's `{"status":"success","channels":{..},"total_channels":N}` |
//! | `GET /ws/events/{channel}` | seed 002's channel socket |
//! | `GET /ws?pattern=P&after=SEQ` | WebSocket subscription; commands in [`ws`] |
//! | `GET /sse?pattern=P&after=SEQ` | Server-Sent Events; `Last-Event-ID` resumes |
//! | `GET /healthz`, `GET /metrics` | liveness; Prometheus text |
//! | `GET /export?after=SEQ&until=SEQ&pattern=P` | NDJSON, streamed: archive then log, one gap-free range |
//! | `GET /schemas` | the data contracts in force |
//! | `GET /consumers`, `GET`/`DELETE /consumers/{name}`, `POST /consumers/{name}/ack` | durable consumers: list, inspect, delete, acknowledge `{"seq":N}` |
//! | `GET /`, `GET /assets/{*path}`, `GET /stats` | the dashboard, its files, its figures |
//!
//! Errors are [`service::ServiceError`]s (a kind and a code, no status);
//! [`response::status`] alone maps them to 400, 401, 403, 404, 408, 409,
//! 410, 413, 415, 422, 429, 500, 503 or 507, answered as
//! `{"error","code","status"}`.
//!
//! **Slow clients.** Each connection reads a bounded queue; when it
//! overflows the connection switches to reading the log (lossless) and only
//! a position lost to retention yields a `lagged` message. A client that
//! stops reading entirely is dropped once a write to it has stalled for
//! `send_timeout_secs` ([`server::StallGuard`], under every transport).

pub mod auth;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod http;
pub mod metrics;
pub mod request;
pub mod response;
pub mod server;
pub mod service;
pub mod sse;
pub mod ws;
