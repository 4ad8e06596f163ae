//! The follower: the background task that keeps `watch` current with the
//! appends of every process (see "Reads, cursors and wake-ups" in the crate
//! docs).
//!
//! # Contract
//!
//! * It loops a blocking `XREAD` from the last id it saw, pipelined with
//!   `GET K:seq` on the same connection, and raises `watch` to the counter
//!   (or the newest id seen, if higher); `watch` never goes down.
//! * It has its own connection (a blocking command would stall the shared
//!   one), reconnects with backoff on its own, and goes on from the last seq
//!   it saw, so waiters miss nothing.
//! * It holds nothing of the log but the watch sender, and stops when the
//!   log's last clone is dropped.
//! * A wake that brings nothing `watch` did not already hold (this
//!   process's own appends publish before the follower sees them) is
//!   followed by a pause of [`OWN_WAKE_PAUSE`] before it blocks again: while
//!   this process appends, the follower costs Redis at most one round trip
//!   per pause instead of one per append, and another process's append is
//!   seen at most that much later. An idle follower blocks at once.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::watch;

use crate::codec::{parse_id, text};
use crate::stats::Counters;

/// The pause after a wake that only echoed this process's own appends.
pub(super) const OWN_WAKE_PAUSE: Duration = Duration::from_millis(1);

/// What the follower needs; it holds nothing of the log but the watch
/// sender, so it does not keep the log alive.
pub(super) struct FollowerSetup {
    pub client: redis::Client,
    pub stream: String,
    pub counter: String,
    pub tx: Arc<watch::Sender<u64>>,
    /// The counter read at open: the follower reads from here.
    pub last: u64,
    pub block: Duration,
    pub timeout: Duration,
    pub max_delay: Duration,
    /// Resolves (with an error) when the log is dropped.
    pub stop: watch::Receiver<()>,
    /// The log's counters (reconnects are counted here).
    pub counters: Arc<Counters>,
}

/// The id of the newest entry in an `XREAD` reply (RESP2 or RESP3 shape).
fn newest_id(reply: &Value) -> Option<u64> {
    let streams: Vec<&Value> = match reply {
        Value::Array(items) => items
            .iter()
            .filter_map(|s| match s {
                Value::Array(kv) => kv.get(1),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(_, v)| v).collect(),
        _ => return None,
    };
    streams
        .into_iter()
        .filter_map(|entries| match entries {
            Value::Array(es) => es.last(),
            _ => None,
        })
        .filter_map(|entry| match entry {
            Value::Array(parts) => parts.first(),
            _ => None,
        })
        .filter_map(|id| parse_id(text(id).ok()?.as_bytes()).ok())
        .max()
}

fn publish(tx: &watch::Sender<u64>, last: u64) {
    tx.send_if_modified(|v| {
        if last > *v {
            *v = last;
            true
        } else {
            false
        }
    });
}

/// Follows the stream: `XREAD COUNT 1 BLOCK b STREAMS K <last>-0` then `GET
/// K:seq`, pipelined on a connection of its own, publishing the counter on
/// `watch`. Reconnects with backoff after any error and goes on from the
/// last seq it saw.
pub(super) async fn follow(mut s: FollowerSetup) {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(s.timeout))
        .set_response_timeout(Some(s.block + s.timeout));
    let block_ms = s.block.as_millis().max(1) as u64;
    let mut delay = Duration::from_millis(50);
    let mut failing = false;
    loop {
        let connect = s
            .client
            .get_multiplexed_async_connection_with_config(&config);
        let mut conn: MultiplexedConnection = tokio::select! {
            _ = s.stop.changed() => return,
            c = connect => match c {
                Ok(c) => c,
                Err(e) => {
                    if !failing {
                        tracing::warn!(key = s.stream, error = %e, "log follower cannot reach Redis; retrying");
                        failing = true;
                    }
                    tokio::select! {
                        _ = s.stop.changed() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(s.max_delay);
                    continue;
                }
            }
        };
        if std::mem::take(&mut failing) {
            Counters::bump(&s.counters.follower_reconnects);
            tracing::info!(
                key = s.stream,
                last = s.last,
                "log follower reconnected to Redis"
            );
        }
        delay = Duration::from_millis(50);
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("XREAD")
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(&s.stream)
                .arg(format!("{}-0", s.last))
                .cmd("GET")
                .arg(&s.counter);
            let reply: Result<(Value, Option<u64>), _> = tokio::select! {
                _ = s.stop.changed() => return,
                r = pipe.query_async(&mut conn) => r,
            };
            match reply {
                Ok((entries, counter)) => {
                    let seen = newest_id(&entries).unwrap_or(0);
                    let last = counter.unwrap_or(0).max(seen);
                    let known = *s.tx.borrow();
                    if last > s.last {
                        s.last = last;
                        publish(&s.tx, last);
                    }
                    if seen > 0 && last <= known {
                        // Only our own appends: no need to look again at once.
                        tokio::select! {
                            _ = s.stop.changed() => return,
                            _ = tokio::time::sleep(OWN_WAKE_PAUSE) => {}
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(key = s.stream, error = %e, last = s.last, "log follower lost Redis; reconnecting");
                    failing = true;
                    tokio::select! {
                        _ = s.stop.changed() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn newest_id_of_xread_replies() {
        let entry = |id: &str| Value::Array(vec![bulk(id), Value::Array(vec![])]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("k"),
            Value::Array(vec![entry("3-0"), entry("7-0")]),
        ])]);
        assert_eq!(newest_id(&resp2), Some(7));
        let resp3 = Value::Map(vec![(bulk("k"), Value::Array(vec![entry("9-0")]))]);
        assert_eq!(newest_id(&resp3), Some(9));
        assert_eq!(newest_id(&Value::Nil), None);
    }
}
