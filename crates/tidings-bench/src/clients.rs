//! Clients the network scenarios share: a Tidings server in this process,
//! WebSocket and SSE subscribers, and a sequence tracker that counts loss.
//!
//! The in-process server ([`LocalServer`]) runs on **its own** tokio
//! runtime with [`SERVER_WORKERS`] workers, separate from the runtime of the
//! clients measuring it, as the peer nats-server runs in its own process
//! with its own threads: the clients never share workers with the server.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use tidings_server::config::Config;
use tidings_server::server::{start, RunningServer};
use tokio_tungstenite::tungstenite::Message;

use crate::stats::json_u64;

/// A client WebSocket.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Where an in-process server keeps its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// `memory:` (retention raised to hold the whole run).
    Memory,
    /// SQLite in a temporary directory (durability: the scenario's
    /// `--durability`).
    Sqlite,
}

/// Worker threads of the in-process server's own runtime.
pub const SERVER_WORKERS: usize = 2;

/// A Tidings server started in this process on 127.0.0.1:0, on its own
/// runtime ([`SERVER_WORKERS`] workers named `tidings-server`).
pub struct LocalServer {
    server: Option<RunningServer>,
    rt: Option<tokio::runtime::Runtime>,
    pub http_base: String,
    pub ws_base: String,
    _dir: Option<tempfile::TempDir>,
}

impl LocalServer {
    /// Starts a server; `retain` is the number of events the memory store
    /// keeps (the default of 10,000 would make a subscriber that falls
    /// further behind than that lag, which is a retention setting, not the
    /// delivery speed being measured); `durability` is the SQLite store's
    /// (`sync`, `batch`, `none`).
    pub async fn start(store: StoreKind, retain: u64, durability: &str) -> Result<LocalServer> {
        let dir = match store {
            StoreKind::Memory => None,
            StoreKind::Sqlite => Some(tempfile::tempdir()?),
        };
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            ..Config::default()
        };
        match &dir {
            None => {
                config.store = Some("memory:".into());
                config.retention_max_count = Some(retain.max(10_000));
            }
            Some(d) => {
                config.data_dir = d.path().to_owned();
                config.durability = durability.into();
            }
        }
        config.validate()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(SERVER_WORKERS)
            .thread_name("tidings-server")
            .enable_all()
            .build()?;
        // Started on its runtime, so every task it spawns runs there.
        let started = rt.spawn(start(config)).await;
        let server = match started {
            Ok(s) => s.context("cannot start the Tidings server"),
            Err(e) => Err(anyhow::anyhow!("the server's start task failed: {e}")),
        };
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                rt.shutdown_background();
                return Err(e);
            }
        };
        let addr = server.addr;
        Ok(LocalServer {
            server: Some(server),
            rt: Some(rt),
            http_base: format!("http://{addr}"),
            ws_base: format!("ws://{addr}"),
            _dir: dir,
        })
    }

    /// Shuts the server down gracefully (on its own runtime), then the
    /// runtime.
    pub async fn shutdown(mut self) {
        if let (Some(server), Some(rt)) = (self.server.take(), self.rt.as_ref()) {
            if let Err(e) = rt.spawn(server.shutdown()).await {
                eprintln!("warning: the server's shutdown task failed: {e}");
            }
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        // Dropped inside the clients' runtime: a blocking drop would panic.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A pattern as a query value (`>` is not a valid URI character).
pub fn q(pattern: &str) -> String {
    pattern.replace('>', "%3E")
}

/// Opens a WebSocket and waits for the welcome message.
pub async fn ws_subscribe(url: &str) -> Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("cannot open {url}"))?;
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .with_context(|| format!("no welcome from {url} within 10 s"))?;
    match first {
        Some(Ok(Message::Text(t))) if t.as_str().contains("\"connection\"") => Ok(ws),
        other => bail!("unexpected first message from {url}: {other:?}"),
    }
}

/// Tracks the sequence numbers one subscriber received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqTracker {
    /// The highest seq seen.
    pub last: u64,
    /// Events received (each seq once).
    pub received: u64,
    /// Seqs skipped over without a notice.
    pub gaps: u64,
    /// Seqs reported missed by `lagged` notices.
    pub lagged: u64,
    /// Seqs received twice or out of order.
    pub duplicates: u64,
}

impl SeqTracker {
    /// Records an event with `seq`; true if it is new (not a duplicate).
    pub fn event(&mut self, seq: u64) -> bool {
        if seq <= self.last {
            self.duplicates += 1;
            return false;
        }
        self.gaps += seq - self.last - 1;
        self.last = seq;
        self.received += 1;
        true
    }

    /// Records a lag notice: `missed` events, resuming at `resume_from`.
    pub fn lagged(&mut self, missed: u64, resume_from: u64) {
        self.lagged += missed;
        self.last = self.last.max(resume_from.saturating_sub(1));
    }

    /// Whether everything up to `seq` is accounted for.
    pub fn done(&self, seq: u64) -> bool {
        self.last >= seq
    }

    /// Events of `1..=total` this subscriber did not receive.
    pub fn lost(&self, total: u64) -> u64 {
        total.saturating_sub(self.received)
    }
}

/// The `missed` and `resume_from` of a server's lag notice, or `None` for
/// any other frame. The server writes the notice's keys sorted
/// (`{"missed":N,"resume_from":M,"type":"lagged"}`), so it is recognised
/// by its `type` anywhere in the object, and by having no `seq`.
pub fn lag_notice(text: &str) -> Option<(u64, u64)> {
    if !text.contains("\"type\":\"lagged\"") || json_u64(text, "seq").is_some() {
        return None;
    }
    Some((
        json_u64(text, "missed").unwrap_or(0),
        json_u64(text, "resume_from").unwrap_or(0),
    ))
}

/// Splits SSE text into complete events (`\n\n`-terminated); returns the
/// `data:` payload of each and leaves any incomplete tail in `buf`.
pub fn sse_events(buf: &mut String) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let mut event = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            } else if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_owned());
            }
        }
        if !data.is_empty() {
            out.push((event, data));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_escaped_for_urls() {
        assert_eq!(q("fan.>"), "fan.%3E");
        assert_eq!(q("a.*"), "a.*");
    }

    #[test]
    fn tracker_counts_gaps_lags_and_duplicates() {
        let mut t = SeqTracker::default();
        t.event(1);
        t.event(2);
        t.event(5);
        t.event(5);
        t.lagged(3, 9);
        t.event(9);
        assert_eq!(t.received, 4);
        assert_eq!(t.gaps, 2);
        assert_eq!(t.lagged, 3);
        assert_eq!(t.duplicates, 1);
        assert!(t.done(9));
        assert_eq!(t.lost(10), 6);
    }

    #[test]
    fn lag_notices_are_recognised_in_the_servers_key_order() {
        // What the server sends: serde_json's keys, sorted.
        let notice = r#"{"missed":7,"resume_from":12,"type":"lagged"}"#;
        assert_eq!(lag_notice(notice), Some((7, 12)));
        assert_eq!(
            lag_notice(r#"{"type":"lagged","missed":2,"resume_from":3}"#),
            Some((2, 3))
        );
        assert_eq!(
            lag_notice(r#"{"last_seq":5,"patterns":[">"],"type":"connection"}"#),
            None
        );
        assert_eq!(lag_notice(r#"{"seq":4,"data":{"type":"lagged"}}"#), None);
        let mut t = SeqTracker::default();
        assert!(t.event(1));
        let (missed, resume_from) = lag_notice(notice).expect("a notice");
        t.lagged(missed, resume_from);
        assert!(t.event(12));
        assert!(!t.event(12));
        // The notice accounts for 2..=11: no gap, 7 reported missed.
        assert_eq!((t.gaps, t.lagged, t.duplicates), (0, 7, 1));
    }

    #[test]
    fn sse_blocks_are_split_and_tails_kept() {
        let mut buf = String::from(
            ": keepalive\n\nid: 1\ndata: {\"seq\":1}\n\nevent: lagged\nid: 4\ndata: {\"type\":\"lagged\"}\n\nid: 5\ndata: {\"se",
        );
        let ev = sse_events(&mut buf);
        assert_eq!(
            ev,
            vec![
                (None, "{\"seq\":1}".to_owned()),
                (
                    Some("lagged".to_owned()),
                    "{\"type\":\"lagged\"}".to_owned()
                ),
            ]
        );
        assert_eq!(buf, "id: 5\ndata: {\"se");
    }
}
