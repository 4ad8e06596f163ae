//! Appends, group-committed (core's [`GroupCommit`]): an append that finds
//! no write running sends itself as one call of the append script; appends
//! that arrive meanwhile are queued and sent together, as one call per
//! group, up to [`MAX_IN_FLIGHT`] calls at once (see "The append script"
//! in the crate docs).
//!
//! # Contract
//!
//! * Each append is all or nothing, and so is each group: the script checks
//!   the floor, every expectation and every idempotency key before its
//!   first write, and Redis runs it atomically, so seqs are dense and never
//!   shared between processes.
//! * Within a group, appends keep their queue order: an append's
//!   `expected_last` is checked against the counter plus what the appends
//!   before it in the group take, exactly as if each had been its own call.
//!   One refused append takes no seq and does not affect the others. Up to
//!   [`MAX_IN_FLIGHT`] calls are sent before the first is answered; Redis
//!   runs each atomically, in whichever order, as it would concurrent
//!   calls.
//! * A duplicate (a key held in Redis, or used earlier in the group) is
//!   answered with the original event, never appended again.
//! * The script is sent the last seq this instance saw committed (the
//!   floor); a counter below it means Redis lost acknowledged writes, and
//!   every append of the group is refused with [`StorageError::LostWrites`]
//!   instead of handing those seqs out again.
//! * The caller's wait is bounded by the timeout. An append that timed out
//!   after its group was sent may have been committed (retry it with a
//!   key); one whose caller stopped waiting before its group was formed is
//!   left out and never written.
//! * After a commit, `watch` rises to the new last seq before any of the
//!   group's callers is answered.
//!
//! * A group with no key, no expectation and no count retention is sent
//!   to [`scripts::APPEND_PLAIN`], which skips the per-append bookkeeping;
//!   any other group to [`scripts::APPEND`]. Both check the floor and
//!   write the same entries.
//!
//! Why groups: concurrent single appends would otherwise be one script
//! call each, and Redis (one thread) spends much of a call on the script's
//! fixed costs (reading the counter and the clock, the call itself). One
//! call per group pays them once; under no contention a group is one
//! append, sent by its own caller.

use std::collections::HashMap;
use std::sync::Arc;

use redis::{ScriptInvocation, Value};
use tidings_core::log::{AppendError, BoxFuture, Committed, GroupCommit, GroupWriter, LogFailure};
use tidings_core::{NewEvent, SharedEvent};
use tokio::sync::oneshot;

use super::{bounded, Shared};
use crate::codec::{self, decode_stored, int, seq_of, text, Encoded, EVENTS_PER_ENTRY};
use crate::error::{OpError, StorageError};
use crate::scripts;
use crate::stats::Counters;

/// Most script calls sent and not yet answered (measured: 1 makes groups of
/// single appends larger, 4 overlaps large batches better; 2 is between).
/// Groups in flight together are
/// still each atomic and checked against the counter when Redis runs them,
/// so they may commit in either order, like concurrent appends.
pub(super) const MAX_IN_FLIGHT: usize = 2;

/// Most events one group carries (a larger append goes alone): bounds the
/// script's argument list and how long Redis is busy with one call.
pub(super) const MAX_GROUP_EVENTS: usize = 512;

/// One `append` call waiting for the writer.
pub(super) struct Request {
    events: Vec<Encoded>,
    expected: Option<u64>,
    reply: oneshot::Sender<Result<Vec<Committed>, AppendError>>,
}

/// What the script answered for one append of the group.
enum Fate {
    Conflict { expected: u64, actual: u64 },
    Done(Vec<Committed>),
}

fn storage(e: StorageError) -> AppendError {
    AppendError::Failed(LogFailure::Storage(Box::new(e)))
}

/// Decodes the script's reply for `group` (see [`scripts::APPEND`]): the
/// new last seq and each append's fate, in order. `Err(LostWrites)` when
/// the counter was below `floor`.
fn decode_group(
    reply: Value,
    group: &mut [Request],
    floor: u64,
) -> Result<(u64, Vec<Fate>), StorageError> {
    let (last, items) = reply_head(reply, floor)?;
    let mut results = items[2..].iter();
    let mut next = |what: &str| {
        results
            .next()
            .ok_or_else(|| StorageError::decode(format!("append reply ends before {what}")))
    };
    // The group's fresh keyed events by seq, for repeats of a key used
    // earlier.
    let mut fresh: HashMap<u64, SharedEvent> = HashMap::new();
    let mut fates = Vec::with_capacity(group.len());
    for req in group.iter_mut() {
        if int(next("an append's status")?)? == 0 {
            let actual = seq_of(next("a conflict's last seq")?)?;
            fates.push(Fate::Conflict {
                expected: req.expected.unwrap_or_default(),
                actual,
            });
            continue;
        }
        let events = std::mem::take(&mut req.events);
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let fate = next("an event's fate")?;
            let committed = match fate {
                Value::Int(s) if *s > 0 => {
                    let keyed = e.event.key.is_some();
                    let event: SharedEvent = Arc::new(e.event.commit(*s as u64));
                    if keyed {
                        // Only a keyed event can be repeated later in the group.
                        fresh.insert(event.seq, event.clone());
                    }
                    Committed {
                        event,
                        duplicate: false,
                    }
                }
                Value::Int(s) => {
                    let want = s.unsigned_abs();
                    let orig = fresh.get(&want).cloned().ok_or_else(|| {
                        StorageError::decode(format!(
                            "duplicate of seq {want}, which is not in the group"
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
        fates.push(Fate::Done(out));
    }
    if results.next().is_some() {
        return Err(StorageError::decode(
            "append reply has more results than the group has events",
        ));
    }
    Ok((last, fates))
}

/// The status and new last seq every append reply starts with, and the
/// whole reply. `Err(LostWrites)` when the counter was below `floor`.
fn reply_head(reply: Value, floor: u64) -> Result<(u64, Vec<Value>), StorageError> {
    let Value::Array(items) = reply else {
        return Err(StorageError::decode(format!(
            "append reply: expected an array, got {reply:?}"
        )));
    };
    let (Some(status), Some(last)) = (items.first(), items.get(1)) else {
        return Err(StorageError::decode("short append reply"));
    };
    let last = seq_of(last)?;
    if int(status)? == 2 {
        return Err(StorageError::LostWrites {
            counter: last,
            seen: floor,
        });
    }
    Ok((last, items))
}

/// Decodes the reply of [`scripts::APPEND_PLAIN`] for `group`: its events
/// took the `n` seqs up to the new last one, in queue order.
fn decode_plain(
    reply: Value,
    group: &mut [Request],
    floor: u64,
) -> Result<(u64, Vec<Fate>), StorageError> {
    let (last, items) = reply_head(reply, floor)?;
    if items.len() != 2 {
        return Err(StorageError::decode(format!(
            "plain append reply has {} items, not 2",
            items.len()
        )));
    }
    let n: usize = group.iter().map(|r| r.events.len()).sum();
    let Some(mut next) = (last + 1).checked_sub(n as u64).filter(|&s| s > 0) else {
        return Err(StorageError::decode(format!(
            "plain append of {n} events answered last seq {last}"
        )));
    };
    let fates = group
        .iter_mut()
        .map(|req| {
            let events = std::mem::take(&mut req.events);
            Fate::Done(
                events
                    .into_iter()
                    .map(|e| {
                        let event = Arc::new(e.event.commit(next));
                        next += 1;
                        Committed {
                            event,
                            duplicate: false,
                        }
                    })
                    .collect(),
            )
        })
        .collect();
    Ok((last, fates))
}

/// Whether `group` can be sent as [`scripts::APPEND_PLAIN`]: no
/// idempotency key, no expected last seq, and no count retention to apply.
fn is_plain(group: &[Request], max_count: Option<u64>) -> bool {
    max_count.is_none()
        && group
            .iter()
            .all(|r| r.expected.is_none() && r.events.iter().all(|e| e.event.key.is_none()))
}

impl Shared {
    /// Writes `batch` (not empty), alone or in a group, and waits for its
    /// answer, at most the timeout.
    pub(super) async fn append(
        self: Arc<Self>,
        batch: Vec<NewEvent>,
        expected: Option<u64>,
    ) -> Result<Vec<Committed>, AppendError> {
        let events = batch
            .into_iter()
            .map(codec::encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        let (reply, mut answer) = oneshot::channel();
        let req = Request {
            events,
            expected,
            reply,
        };
        let limit = self.options.timeout;
        let written = async {
            GroupCommit::submit(&self, req).await;
            (&mut answer).await
        };
        // A failure answered by the writer is counted there (only if it
        // reached this caller); one the caller gives itself (timed out, or
        // no answer will come) is counted here. On a timeout the channel is
        // closed first, so the writer can no longer answer, and an answer
        // that arrived meanwhile is taken instead: each append is counted
        // once.
        let result = match tokio::time::timeout(limit, written).await {
            Ok(Ok(result)) => return result,
            Ok(Err(_)) => Err(AppendError::Failed(LogFailure::Closed)),
            Err(_) => {
                answer.close();
                if let Ok(result) = answer.try_recv() {
                    return result;
                }
                Err(OpError::timed_out(limit).into())
            }
        };
        self.counters.appends.failed(1);
        result
    }

    /// The call of [`scripts::APPEND`] for `group` (see its arguments).
    fn full_call(&self, group: &[Request], floor: u64) -> ScriptInvocation<'static> {
        let window_ms = self.options.log.idempotency_window.as_millis();
        let mut inv = scripts::on_stream(&scripts::APPEND, &self.keys);
        // Idempotency key -> its index in KEYS (1-based; 1 to 3 are taken).
        let mut key_index: HashMap<&str, usize> = HashMap::new();
        let mut kidx: Vec<usize> = Vec::new();
        for e in group.iter().flat_map(|r| &r.events) {
            let idx = match &e.event.key {
                Some(k) => {
                    let next = key_index.len() + 4;
                    *key_index.entry(k.as_str()).or_insert_with(|| {
                        inv.key(format!("{}{k}", self.keys.idempotency_prefix));
                        next
                    })
                }
                None => 0,
            };
            kidx.push(idx);
        }
        inv.arg(window_ms.max(1).to_string())
            .arg(
                self.options
                    .log
                    .retention
                    .max_count
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )
            .arg(floor)
            .arg(group.len())
            .arg(EVENTS_PER_ENTRY);
        let mut kidx = kidx.into_iter();
        for r in group {
            inv.arg(r.expected.map(|e| e.to_string()).unwrap_or_default())
                .arg(r.events.len());
            for (e, idx) in r.events.iter().zip(kidx.by_ref()) {
                inv.arg(idx).arg(&e.record);
            }
        }
        inv
    }

    /// The call of [`scripts::APPEND_PLAIN`] for `group` (see its
    /// arguments).
    fn plain_call(&self, group: &[Request], floor: u64) -> ScriptInvocation<'static> {
        let mut inv = scripts::on_stream(&scripts::APPEND_PLAIN, &self.keys);
        inv.arg(floor).arg(EVENTS_PER_ENTRY);
        for e in group.iter().flat_map(|r| &r.events) {
            inv.arg(&e.record);
        }
        inv
    }

    /// Sends `group` as one call of the append script (the plain one when
    /// it can) and answers each request.
    async fn send_group(&self, mut group: Vec<Request>) {
        // Every seq up to the floor was seen committed by this instance; a
        // counter below it means Redis lost them (see `LostWrites`).
        let floor = *self.tx.borrow();
        let plain = is_plain(&group, self.options.log.retention.max_count);
        let inv = if plain {
            self.plain_call(&group, floor)
        } else {
            self.full_call(&group, floor)
        };
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
                let told = group
                    .into_iter()
                    .filter_map(|r| r.reply.send(Err(e.clone().into())).ok())
                    .count();
                self.counters.appends.failed(told);
                return;
            }
        };
        let decoded = if plain {
            decode_plain(reply, &mut group, floor)
        } else {
            decode_group(reply, &mut group, floor)
        };
        match decoded {
            Ok((last, fates)) => {
                self.publish(last);
                tracing::trace!(key = self.keys.stream, last, n = group.len(), "appended");
                let results: Vec<_> = fates
                    .into_iter()
                    .map(|fate| match fate {
                        Fate::Done(out) => Ok(out),
                        Fate::Conflict { expected, actual } => {
                            Err(AppendError::Conflict { expected, actual })
                        }
                    })
                    .collect();
                self.counters.appends.answered(&results);
                if plain {
                    Counters::bump(&self.counters.plain_groups);
                }
                for (r, result) in group.into_iter().zip(results) {
                    let _ = r.reply.send(result);
                }
            }
            Err(e) => {
                if let StorageError::LostWrites { counter, seen } = &e {
                    Counters::bump(&self.counters.lost_writes);
                    tracing::error!(
                        key = self.keys.stream,
                        counter,
                        floor = seen,
                        "Redis lost acknowledged events; appends refused"
                    );
                }
                let told = group
                    .into_iter()
                    .filter_map(|r| r.reply.send(Err(storage(e.clone()))).ok())
                    .count();
                self.counters.appends.failed(told);
            }
        }
    }
}

impl GroupWriter for Shared {
    type Request = Request;

    fn group_commit(&self) -> &GroupCommit<Shared> {
        &self.group
    }

    fn units(r: &Request) -> usize {
        r.events.len()
    }

    fn write_group(self: Arc<Self>, mut group: Vec<Request>) -> BoxFuture<()> {
        Box::pin(async move {
            // A caller that stopped waiting is left out: never written.
            group.retain(|r| !r.reply.is_closed());
            if !group.is_empty() {
                self.send_group(group).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(names: &[&str], key: Option<&str>, expected: Option<u64>) -> Request {
        let events = names
            .iter()
            .map(|n| {
                let mut e = NewEvent::new(*n, serde_json::json!(1)).expect("name");
                if let Some(k) = key {
                    e = e.key(k);
                }
                codec::encode(e).expect("encode")
            })
            .collect();
        Request {
            events,
            expected,
            reply: oneshot::channel().0,
        }
    }

    fn seqs(fates: &[Fate]) -> Vec<Vec<u64>> {
        fates
            .iter()
            .map(|f| match f {
                Fate::Done(out) => out.iter().map(|c| c.event.seq).collect(),
                Fate::Conflict { .. } => panic!("a plain group has no conflicts"),
            })
            .collect()
    }

    #[test]
    fn a_plain_group_takes_the_seqs_up_to_the_new_last_in_queue_order() {
        let mut group = vec![
            request(&["a", "b"], None, None),
            request(&["c"], None, None),
        ];
        let reply = Value::Array(vec![Value::Int(1), Value::Int(12)]);
        let (last, fates) = decode_plain(reply, &mut group, 9).expect("decode");
        assert_eq!(last, 12);
        assert_eq!(seqs(&fates), vec![vec![10, 11], vec![12]]);
        let names: Vec<_> = fates
            .iter()
            .flat_map(|f| match f {
                Fate::Done(out) => out.iter().map(|c| c.event.name.clone()).collect(),
                Fate::Conflict { .. } => vec![],
            })
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn a_plain_reply_that_does_not_fit_the_group_is_refused() {
        let mut group = vec![request(&["a", "b"], None, None)];
        // Fewer seqs than events.
        let short = Value::Array(vec![Value::Int(1), Value::Int(1)]);
        assert!(decode_plain(short, &mut group, 0).is_err());
        // The full script's shape.
        let mut group = vec![request(&["a"], None, None)];
        let full = Value::Array(vec![
            Value::Int(1),
            Value::Int(1),
            Value::Int(1),
            Value::Int(1),
        ]);
        assert!(decode_plain(full, &mut group, 0).is_err());
        // A counter below the floor.
        let lost = Value::Array(vec![Value::Int(2), Value::Int(3)]);
        assert!(matches!(
            decode_plain(lost, &mut group, 5),
            Err(StorageError::LostWrites {
                counter: 3,
                seen: 5
            })
        ));
    }

    #[test]
    fn only_groups_without_keys_expectations_or_count_retention_are_plain() {
        let plain = [
            request(&["a"], None, None),
            request(&["b", "c"], None, None),
        ];
        assert!(is_plain(&plain, None));
        assert!(!is_plain(&plain, Some(10)));
        let keyed = [
            request(&["a"], None, None),
            request(&["b"], Some("k"), None),
        ];
        assert!(!is_plain(&keyed, None));
        let expecting = [request(&["a"], None, Some(3))];
        assert!(!is_plain(&expecting, None));
    }
}
