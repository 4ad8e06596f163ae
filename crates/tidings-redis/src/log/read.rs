//! Reads: `read`, `bounds` and `seq_before`, each a script (so it sees one
//! state of the stream and the counter).
//!
//! # Contract
//!
//! * A page's `last_seq` is the counter read in the same script as its
//!   events, and `bounds()` reads the counter and the first entry together:
//!   both are consistent with the entries returned.
//! * `bounds().first` is the first entry left, `last + 1` when none is.
//! * `seq_before(time)` scans the `time` fields from the front in steps of
//!   [`SEQ_BEFORE_STEP`] entries (so Redis is never blocked long) and
//!   compares at the microsecond, rounding `time` up.
//! * Each answer raises `watch` to the counter it read.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use redis::Value;
use tidings_core::log::{Bounds, Page};

use super::{array, bounded, Shared};
use crate::codec::{decode_entry, int, parse_id, seq_of, text};
use crate::error::{OpError, StorageError};
use crate::scripts;

/// Entries one `seq_before` script step examines.
const SEQ_BEFORE_STEP: usize = 1_000;

/// Microseconds since the epoch, rounded up (so `stored >= result` exactly
/// when the stored, truncated time is at or after `t`).
fn micros_ceil(t: DateTime<Utc>) -> i64 {
    let us = t.timestamp_micros();
    if t.timestamp_subsec_nanos() % 1000 != 0 {
        us.saturating_add(1)
    } else {
        us
    }
}

impl Shared {
    pub(super) async fn read(self: Arc<Self>, after: u64, limit: usize) -> Result<Page, OpError> {
        let mut conn = self.conn.clone();
        let limit = limit.min(i64::MAX as usize);
        let reply: Value = bounded(self.options.timeout, async {
            Ok(scripts::READ
                .key(&self.keys.stream)
                .key(&self.keys.counter)
                .arg(after)
                .arg(limit)
                .invoke_async(&mut conn)
                .await?)
        })
        .await?;
        let mut items = array(reply, "read reply")?.into_iter();
        let (Some(last), Some(entries)) = (items.next(), items.next()) else {
            return Err(StorageError::decode("short read reply").into());
        };
        let last_seq = seq_of(&last)?;
        let entries = array(entries, "read entries")?;
        let events = entries
            .iter()
            .map(|e| decode_entry(e).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        self.publish(last_seq);
        Ok(Page { events, last_seq })
    }

    pub(super) async fn bounds(self: Arc<Self>) -> Result<Bounds, OpError> {
        let mut conn = self.conn.clone();
        let reply: Value = bounded(self.options.timeout, async {
            Ok(scripts::BOUNDS
                .key(&self.keys.stream)
                .key(&self.keys.counter)
                .invoke_async(&mut conn)
                .await?)
        })
        .await?;
        let items = array(reply, "bounds reply")?;
        let last = items
            .first()
            .map(seq_of)
            .transpose()?
            .ok_or_else(|| StorageError::decode("empty bounds reply"))?;
        let first = match items.get(1) {
            Some(id) => parse_id(text(id)?.as_bytes())?,
            None => last + 1,
        };
        self.publish(last);
        Ok(Bounds { first, last })
    }

    pub(super) async fn seq_before(self: Arc<Self>, time: DateTime<Utc>) -> Result<u64, OpError> {
        let t = micros_ceil(time);
        let mut start = String::new();
        loop {
            let mut conn = self.conn.clone();
            let reply: Value = bounded(self.options.timeout, async {
                Ok(scripts::SEQ_BEFORE_STEP
                    .key(&self.keys.stream)
                    .key(&self.keys.counter)
                    .arg(t)
                    .arg(&start)
                    .arg(SEQ_BEFORE_STEP)
                    .invoke_async(&mut conn)
                    .await?)
            })
            .await?;
            let items = array(reply, "seq_before reply")?;
            let [status, value] = items.as_slice() else {
                return Err(StorageError::decode("seq_before reply is not a pair").into());
            };
            match int(status)? {
                1 => return Ok(parse_id(text(value)?.as_bytes())?.saturating_sub(1)),
                2 => return Ok(seq_of(value)?),
                _ => start = parse_id(text(value)?.as_bytes())?.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_up() {
        let t = DateTime::from_timestamp(10, 1_500).unwrap();
        assert_eq!(micros_ceil(t), 10_000_002);
        let t = DateTime::from_timestamp(10, 2_000).unwrap();
        assert_eq!(micros_ceil(t), 10_000_002);
    }
}
