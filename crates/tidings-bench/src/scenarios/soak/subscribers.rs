//! The soak's subscribers: live WebSocket and SSE readers that record into
//! a [`super::check::Check`], and stalled raw sockets that never read.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::clients::{q, sse_events};
use crate::process;
use crate::stats::json_u64;

use super::check::{lock, Shared};

pub(super) fn pattern_of(partition: usize, shape: usize) -> String {
    if shape.is_multiple_of(2) {
        format!("soak.{partition}.*")
    } else {
        format!("soak.{partition}.>")
    }
}

/// Opens a WebSocket subscriber; its start seq is the welcome's `last_seq`.
/// The returned task reads until `stop` is set or the socket ends.
pub(super) async fn ws_sub(
    base: &str,
    pattern: &str,
    check: Shared,
    stop: Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let url = format!("{base}/ws?pattern={}", q(pattern));
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("cannot open {url}"))?;
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .with_context(|| format!("no welcome from {url} within 10 s"))?;
    let start = match first {
        Some(Ok(Message::Text(t))) if t.as_str().contains("\"connection\"") => {
            json_u64(t.as_str(), "last_seq").context("no last_seq in the welcome")?
        }
        other => bail!("unexpected first message from {url}: {other:?}"),
    };
    lock(&check).start = start;
    Ok(tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                _ = wait_flag(&stop) => break,
            };
            match msg {
                Some(Ok(Message::Text(t))) => lock(&check).text(t.as_str()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    lock(&check).closed = true;
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
        let _ = ws.close(None).await;
    }))
}

/// Opens an SSE subscriber with `after` = the server's last seq now.
pub(super) async fn sse_sub(
    http: &reqwest::Client,
    base: &str,
    pattern: &str,
    check: Shared,
    stop: Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let start = process::last_seq(http, base).await?;
    lock(&check).start = start;
    let resp = http
        .get(format!("{base}/sse?pattern={}&after={start}", q(pattern)))
        .send()
        .await
        .context("GET /sse")?;
    ensure!(
        resp.status().is_success(),
        "GET /sse answered {}",
        resp.status()
    );
    Ok(tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        loop {
            let chunk = tokio::select! {
                c = body.next() => c,
                _ = wait_flag(&stop) => break,
            };
            match chunk {
                Some(Ok(c)) => {
                    buf.push_str(&String::from_utf8_lossy(&c));
                    let events = sse_events(&mut buf);
                    let mut ch = lock(&check);
                    for (kind, data) in events {
                        if kind.as_deref() == Some("lagged") {
                            ch.lagged += json_u64(&data, "missed").unwrap_or(0);
                        } else {
                            ch.text(&data);
                        }
                    }
                }
                _ => {
                    lock(&check).closed = true;
                    break;
                }
            }
        }
    }))
}

pub(super) async fn wait_flag(flag: &AtomicBool) {
    while !flag.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A raw TCP subscriber that sends its request and never reads.
pub(super) async fn stalled_sub(addr: &str, ws: bool) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(4096)?;
    let mut s = sock.connect(addr.parse()?).await?;
    let pattern = q("soak.>");
    let req = if ws {
        format!(
            "GET /ws?pattern={pattern} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    } else {
        format!(
            "GET /sse?pattern={pattern} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
    };
    s.write_all(req.as_bytes()).await?;
    Ok(s)
}

/// Reads a stalled socket: true if it ends (EOF or reset) within 15 s.
pub(super) async fn was_dropped(mut s: TcpStream) -> (bool, u64) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, bytes),
            Ok(Ok(n)) => bytes += n as u64,
            Err(_) => return (false, bytes),
        }
    }
}
