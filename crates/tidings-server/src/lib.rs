//! # tidings-server: Tidings on the network
//!
//! One [`service::Service`] implements every command (publish, history,
//! subscribe, channels, limits, auth); [`http`], [`ws`] and [`sse`] are thin
//! adapters that parse requests and write answers. [`server::start`] opens
//! the store named by the [`config::Config`] and serves
//! the surface fixed in the design brief:
//!
//! | route | what |
//! |---|---|
//! | `POST /events` | one event `{"name","data","source"?,"key"?}`, a JSON array (atomic batch), or a CloudEvent (`application/cloudevents+json`, `-batch+json`); `?expect_last=SEQ` for optimistic concurrency |
//! | `GET /events?pattern=P&after=SEQ&limit=N` | history, oldest first: `{"events","next_after","last_seq"}` |
//! | `GET /channels` | seed 002's `{"status":"success","channels":{..},"total_channels":N}` |
//! | `GET /ws/events/{channel}` | seed 002's channel socket |
//! | `GET /ws?pattern=P&after=SEQ` | WebSocket subscription; commands in [`ws`] |
//! | `GET /sse?pattern=P&after=SEQ` | Server-Sent Events; `Last-Event-ID` resumes |
//! | `GET /healthz`, `GET /metrics` | liveness; Prometheus text |
//!
//! Errors are `{"error","code","status"}` with 400, 401, 403, 404, 409,
//! 413, 429 or 503 (see [`error::ApiError`]).
//!
//! **Slow clients.** Each connection reads a bounded queue; when it
//! overflows the connection switches to reading the log (lossless) and only
//! a position lost to retention yields a `lagged` message. A client that
//! stops reading entirely is dropped after a 30 s send timeout.

pub mod auth;
pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
pub mod request;
pub mod server;
pub mod service;
pub mod sse;
pub mod ws;
