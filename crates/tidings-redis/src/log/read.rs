//! Reads: `read`, `bounds` and `seq_before`, each a script (so it sees one
//! state of the stream and the counter).
//!
//! # Contract
//!
//! * A page's `last_seq` is the counter read in the same script as its
//!   events, and `bounds()` reads the counter and the first entry together:
//!   both are consistent with the entries returned.
//! * `bounds().first` is the first event of the first entry left, not
//!   below the kept floor (`K:first`); `last + 1` when no entry is left.
//! * A page holds the events after `after` (and not below the kept floor),
//!   at most `limit`, dense; the script returns whole entries and the
//!   events outside the range are dropped here, before decoding.
//! * `seq_before(time)` scans the event times from the front in steps of
//!   [`SEQ_BEFORE_STEP`] entries (so Redis is never blocked long) and
//!   compares at the microsecond, rounding `time` up.
//! * Each answer raises `watch` to the counter it read.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use redis::Value;
use tidings_core::log::{Bounds, Page};

use super::{array, bounded, Shared};
use crate::codec::{decode_entry, int, seq_of};
use crate::error::{OpError, StorageError};
use crate::scripts;

/// Entries one `seq_before` script step examines.
const SEQ_BEFORE_STEP: usize = 1_000;

/// Microseconds since the epoch, rounded up (so `stored >= result` exactly
/// when the stored, truncated time is at or after `t`).
fn micros_ceil(t: DateTime<Utc>) -> i64 {
    let us = t.timestamp_micros();
    if !t.timestamp_subsec_nanos().is_multiple_of(1000) {
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
            Ok(scripts::on_stream(&scripts::READ, &self.keys)
                .arg(after)
                .arg(limit)
                .invoke_async(&mut conn)
                .await?)
        })
        .await?;
        let mut items = array(reply, "read reply")?.into_iter();
        let (Some(last), Some(kept), Some(entries)) = (items.next(), items.next(), items.next())
        else {
            return Err(StorageError::decode("short read reply").into());
        };
        let last_seq = seq_of(&last)?;
        let from = after.saturating_add(1).max(seq_of(&kept)?);
        // Never past the counter read with them (entries beyond it can only
        // be left over from a Redis that lost its counter's writes).
        let max = usize::try_from((last_seq + 1).saturating_sub(from))
            .unwrap_or(usize::MAX)
            .min(limit);
        let mut events = Vec::new();
        for e in array(entries, "read entries")? {
            decode_entry(&e, from, max, &mut events)?;
        }
        self.publish(last_seq);
        Ok(Page { events, last_seq })
    }

    pub(super) async fn bounds(self: Arc<Self>) -> Result<Bounds, OpError> {
        let mut conn = self.conn.clone();
        let reply: Value = bounded(self.options.timeout, async {
            Ok(scripts::on_stream(&scripts::BOUNDS, &self.keys)
                .invoke_async(&mut conn)
                .await?)
        })
        .await?;
        let items = array(reply, "bounds reply")?;
        let [last, first] = items.as_slice() else {
            return Err(StorageError::decode("bounds reply is not a pair").into());
        };
        let (first, last) = (seq_of(first)?, seq_of(last)?);
        self.publish(last);
        Ok(Bounds { first, last })
    }

    pub(super) async fn seq_before(self: Arc<Self>, time: DateTime<Utc>) -> Result<u64, OpError> {
        let t = micros_ceil(time);
        let mut start = String::new();
        loop {
            let mut conn = self.conn.clone();
            let reply: Value = bounded(self.options.timeout, async {
                Ok(scripts::on_stream(&scripts::SEQ_BEFORE_STEP, &self.keys)
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
                1 => return Ok(seq_of(value)?.saturating_sub(1)),
                2 => return Ok(seq_of(value)?),
                _ => start = seq_of(value)?.to_string(),
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
