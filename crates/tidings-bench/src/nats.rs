//! Reaching the machine's nats-server (the peer of `durable`, `fanout` and
//! `latency`), and unique subject/stream names so concurrent runs do not
//! collide.

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Where the peer NATS server is expected.
pub const NATS_URL: &str = "127.0.0.1:4222";

/// Connects to nats-server at `url`, or fails with an error that says
/// which scenario needs it and how to get one.
pub async fn connect(url: &str, scenario: &str) -> Result<async_nats::Client> {
    let reachable =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(url)).await;
    match reachable {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => bail!(
            "the `{scenario}` scenario compares with nats-server at {url}, which is unreachable ({e}); \
             start one (`nats-server -a 127.0.0.1 -p 4222 -js`) or pass --nats-url"
        ),
        Err(_) => bail!(
            "the `{scenario}` scenario compares with nats-server at {url}, which did not answer within 2 s"
        ),
    }
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to nats-server at {url}"))
}

/// A token unique to this process and moment, for subjects and streams.
pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}
