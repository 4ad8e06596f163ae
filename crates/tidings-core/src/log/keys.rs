//! [`KeyWindow`]: the idempotency keys a log remembers in process memory.
//!
//! # Contract
//!
//! * Each key maps to the event first appended with it and the time it was
//!   appended; a key is remembered once (a later append of the same key is
//!   a duplicate, not a new entry).
//! * [`KeyWindow::expire`] forgets, oldest first, every key appended
//!   `window` or longer before `now`. Times are microseconds on any clock
//!   the caller keeps non-decreasing enough for ordering (the memory log
//!   uses a monotonic clock; NATS the engine's record times).
//! * The window itself is not checked here: [`LogOptions`](super::LogOptions)
//!   validates it once.
//!
//! Used by the memory log and by backends that keep keys in process (NATS);
//! backends that keep keys in their engine (SQLite, Redis) do not need it.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::event::SharedEvent;

/// Idempotency keys within a time window, in insertion order.
#[derive(Debug)]
pub struct KeyWindow {
    /// Window length in microseconds.
    window: i64,
    /// Key -> the event first appended with it, and when.
    keys: HashMap<String, (SharedEvent, i64)>,
    /// `(when, key)` in insertion order. Invariant: every entry of `keys`
    /// has one entry here with the same time; an entry here whose key maps
    /// to another time (or none) is stale and skipped by `expire`.
    order: VecDeque<(i64, String)>,
}

impl KeyWindow {
    /// An empty window of length `window`.
    pub fn new(window: Duration) -> KeyWindow {
        KeyWindow {
            window: i64::try_from(window.as_micros()).unwrap_or(i64::MAX),
            keys: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The window length in microseconds.
    pub fn window_micros(&self) -> i64 {
        self.window
    }

    /// No key is remembered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The event first appended with `key`, if it is remembered.
    pub fn get(&self, key: &str) -> Option<&SharedEvent> {
        self.keys.get(key).map(|(e, _)| e)
    }

    /// Forgets every key appended `window` or longer before `now`.
    pub fn expire(&mut self, now: i64) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_sub(*at) < self.window {
                break;
            }
            if let Some((at, k)) = self.order.pop_front() {
                if self.keys.get(&k).is_some_and(|(_, a)| *a == at) {
                    self.keys.remove(&k);
                }
            }
        }
    }

    /// Remembers the key of `event` (if it has one and it is not already
    /// remembered) as appended at `at`.
    pub fn remember(&mut self, event: &SharedEvent, at: i64) {
        if let Some(k) = &event.key {
            if !self.keys.contains_key(k) {
                self.keys.insert(k.clone(), (event.clone(), at));
                self.order.push_back((at, k.clone()));
            }
        }
    }

    /// Remembers the keys of `events` appended at `at`, unless that is
    /// already outside the window at `now`.
    pub fn remember_all(&mut self, events: &[SharedEvent], at: i64, now: i64) {
        if now.saturating_sub(at) >= self.window {
            return;
        }
        for e in events {
            self.remember(e, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::event::NewEvent;

    fn keyed(seq: u64, key: &str) -> SharedEvent {
        Arc::new(NewEvent::new("k", json!(seq)).unwrap().key(key).commit(seq))
    }

    #[test]
    fn first_append_wins_and_keys_expire_in_order() {
        let mut w = KeyWindow::new(Duration::from_micros(100));
        w.remember(&keyed(1, "a"), 0);
        w.remember(&keyed(2, "a"), 10);
        w.remember(&keyed(3, "b"), 50);
        assert_eq!(w.get("a").unwrap().seq, 1, "the first append is kept");
        w.expire(99);
        assert!(w.get("a").is_some(), "not yet a full window old");
        w.expire(100);
        assert!(w.get("a").is_none(), "a full window old: forgotten");
        assert_eq!(w.get("b").unwrap().seq, 3);
        w.remember(&keyed(4, "a"), 120);
        w.expire(150);
        assert_eq!(w.get("a").unwrap().seq, 4, "re-remembered after expiry");
        w.expire(1_000);
        assert!(w.is_empty());
    }

    #[test]
    fn records_already_outside_the_window_are_not_remembered() {
        let mut w = KeyWindow::new(Duration::from_micros(100));
        w.remember_all(&[keyed(1, "old")], 0, 100);
        assert!(w.is_empty());
        w.remember_all(&[keyed(2, "new"), keyed(3, "new")], 50, 100);
        assert_eq!(w.get("new").unwrap().seq, 2);
    }
}
