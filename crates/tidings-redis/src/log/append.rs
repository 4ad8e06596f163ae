//! Appends: one call of the append script per batch (see "The append
//! script" in the crate docs).
//!
//! # Contract
//!
//! * A batch is all or nothing: the script checks the expectation and the
//!   idempotency keys before its first write, and Redis runs it atomically,
//!   so seqs are dense and never shared between processes.
//! * A duplicate (a key held in Redis, or used earlier in the batch) is
//!   answered with the original event, never appended again.
//! * The script is sent the last seq this instance saw committed (the
//!   floor); a counter below it means Redis lost acknowledged writes, and
//!   the append is refused with [`StorageError::LostWrites`] instead of
//!   handing those seqs out again.
//! * The call is bounded by the timeout; an append that timed out after the
//!   script was sent may have been committed (retry it with a key).
//! * After a commit, `watch` rises to the new last seq.

use std::collections::HashMap;
use std::sync::Arc;

use redis::Value;
use tidings_core::log::{AppendError, Committed};
use tidings_core::{NewEvent, SharedEvent};

use super::{bounded, Shared};
use crate::codec::{self, decode_stored, int, seq_of, text};
use crate::error::{OpError, StorageError};
use crate::scripts;

/// What the append script answered.
enum AppendOutcome {
    /// The counter is below the floor the caller sent.
    Regressed {
        counter: u64,
    },
    Conflict {
        expected: u64,
        actual: u64,
    },
    Done {
        last: u64,
        committed: Vec<Committed>,
    },
}

/// Decodes the append script's reply (see [`scripts::APPEND`]).
fn decode_append(
    reply: Value,
    encoded: Vec<codec::Encoded>,
    expected_last: Option<u64>,
) -> Result<AppendOutcome, StorageError> {
    let n = encoded.len();
    let Value::Array(items) = reply else {
        return Err(StorageError::decode(format!(
            "append reply: expected an array, got {reply:?}"
        )));
    };
    let (Some(status), Some(last)) = (items.first(), items.get(1)) else {
        return Err(StorageError::decode("short append reply"));
    };
    let last = seq_of(last)?;
    let status = int(status)?;
    if status == 2 {
        return Ok(AppendOutcome::Regressed { counter: last });
    }
    if status == 0 {
        return Ok(AppendOutcome::Conflict {
            expected: expected_last.unwrap_or_default(),
            actual: last,
        });
    }
    if items.len() != n + 2 {
        return Err(StorageError::decode(format!(
            "append reply has {} results for {n} events",
            items.len().saturating_sub(2)
        )));
    }
    let mut out: Vec<Committed> = Vec::with_capacity(n);
    for (e, fate) in encoded.into_iter().zip(&items[2..]) {
        let committed = match fate {
            Value::Int(s) if *s > 0 => Committed {
                event: Arc::new(e.event.commit(*s as u64)),
                duplicate: false,
            },
            Value::Int(s) => {
                let want = s.unsigned_abs();
                let orig: SharedEvent = out
                    .iter()
                    .find(|c| !c.duplicate && c.event.seq == want)
                    .map(|c| c.event.clone())
                    .ok_or_else(|| {
                        StorageError::decode(format!(
                            "duplicate of seq {want}, which is not in the batch"
                        ))
                    })?;
                Committed {
                    event: orig,
                    duplicate: true,
                }
            }
            other => Committed {
                event: Arc::new(decode_stored(text(other)?)?),
                duplicate: true,
            },
        };
        out.push(committed);
    }
    Ok(AppendOutcome::Done {
        last,
        committed: out,
    })
}

impl Shared {
    /// Appends `batch` (not empty) with one call of the append script.
    pub(super) async fn append(
        self: Arc<Self>,
        batch: Vec<NewEvent>,
        expected_last: Option<u64>,
    ) -> Result<Vec<Committed>, AppendError> {
        let n = batch.len();
        let encoded = batch
            .into_iter()
            .map(codec::encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AppendError::Storage(Box::new(e)))?;
        let window_ms = self.options.log.idempotency_window.as_millis();
        let mut inv = scripts::APPEND.prepare_invoke();
        inv.key(&self.keys.stream).key(&self.keys.counter);
        // Idempotency key -> its index in KEYS (1-based; 1 and 2 are taken).
        let mut key_index: HashMap<&str, usize> = HashMap::new();
        let mut kidx = Vec::with_capacity(n);
        for e in &encoded {
            let idx = match &e.event.key {
                Some(k) => {
                    let next = key_index.len() + 3;
                    *key_index.entry(k.as_str()).or_insert_with(|| {
                        inv.key(format!("{}{k}", self.keys.idempotency_prefix));
                        next
                    })
                }
                _ => 0,
            };
            kidx.push(idx);
        }
        inv.arg(expected_last.map(|e| e.to_string()).unwrap_or_default())
            .arg(window_ms.max(1).to_string())
            .arg(
                self.options
                    .log
                    .retention
                    .max_count
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )
            .arg(n);
        // Every seq up to the floor was seen committed by this instance; a
        // counter below it means Redis lost them (see `LostWrites`).
        let floor = *self.tx.borrow();
        inv.arg(floor);
        for (e, idx) in encoded.iter().zip(&kidx) {
            inv.arg(*idx).arg(e.fields.len()).arg(&e.fields);
        }
        let mut conn = self.conn.clone();
        let reply = bounded(self.options.timeout, async {
            inv.invoke_async::<Value>(&mut conn)
                .await
                .map_err(OpError::from)
        })
        .await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                if let OpError::Unavailable(m) = &e {
                    tracing::warn!(key = self.keys.stream, error = %m, "append failed: Redis unavailable");
                }
                return Err(e.into());
            }
        };
        let (last, out) = match decode_append(reply, encoded, expected_last) {
            Ok(AppendOutcome::Done { last, committed }) => (last, committed),
            Ok(AppendOutcome::Conflict { expected, actual }) => {
                return Err(AppendError::Conflict { expected, actual })
            }
            Ok(AppendOutcome::Regressed { counter }) => {
                tracing::error!(
                    key = self.keys.stream,
                    counter,
                    floor,
                    "Redis lost acknowledged events; appends refused"
                );
                return Err(AppendError::Storage(Box::new(StorageError::LostWrites {
                    counter,
                    seen: floor,
                })));
            }
            Err(e) => return Err(AppendError::Storage(Box::new(e))),
        };
        self.publish(last);
        tracing::trace!(key = self.keys.stream, last, n, "appended");
        Ok(out)
    }
}
