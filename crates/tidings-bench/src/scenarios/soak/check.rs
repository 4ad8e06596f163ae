//! What one soak subscriber saw, checked against what was published: every
//! seq of its partition after its start seq exactly once and in order.

use std::sync::{Arc, Mutex};

use crate::stats::json_u64;

/// The seqs of each partition's events, by `soak_n`.
pub(super) type Table = Arc<Vec<Mutex<Vec<u64>>>>;

/// What one subscriber saw.
#[derive(Debug, Default, Clone)]
pub(super) struct Check {
    pub(super) partition: usize,
    /// Events after this seq are expected.
    pub(super) start: u64,
    /// (`soak_n`, seq) of the first event after `start`.
    pub(super) first: Option<(u64, u64)>,
    pub(super) last_n: u64,
    pub(super) last_seq: u64,
    pub(super) received: u64,
    /// `soak_n` values skipped.
    pub(super) gaps: u64,
    /// Events received twice or out of order.
    pub(super) dups: u64,
    /// Events at or before `start` (not expected, not wrong).
    pub(super) pre_start: u64,
    /// Events reported missed by lag notices.
    pub(super) lagged: u64,
    /// The connection ended (for a live subscriber: before the end).
    pub(super) closed: bool,
}

impl Check {
    pub(super) fn event(&mut self, seq: u64, n: u64) {
        if seq <= self.start {
            self.pre_start += 1;
            return;
        }
        if self.first.is_none() {
            self.first = Some((n, seq));
        } else {
            if seq <= self.last_seq || n <= self.last_n {
                self.dups += 1;
                return;
            }
            self.gaps += n - self.last_n - 1;
        }
        self.last_n = n;
        self.last_seq = seq;
        self.received += 1;
    }

    /// Index in `table` of the first event expected.
    pub(super) fn expected_first(&self, table: &[u64]) -> u64 {
        table.partition_point(|&s| s <= self.start) as u64
    }

    /// Events missing at the start (a subscriber that left early is not
    /// expected to see the end).
    pub(super) fn start_miss(&self, table: &[u64]) -> u64 {
        match self.first {
            Some((n, _)) => n.saturating_sub(self.expected_first(table)),
            None => 0,
        }
    }

    /// Events of `table` after `start` this subscriber did not get, if it
    /// was meant to see them all.
    pub(super) fn loss(&self, table: &[u64]) -> u64 {
        let total = table.len() as u64;
        match self.first {
            None => total.saturating_sub(self.expected_first(table)),
            Some(_) => {
                self.start_miss(table)
                    + self.gaps
                    + (total.saturating_sub(1)).saturating_sub(self.last_n)
            }
        }
    }

    /// Received seqs that are not the seqs published under their `soak_n`.
    pub(super) fn mismatches(&self, table: &[u64]) -> u64 {
        let Some((n, seq)) = self.first else { return 0 };
        let wrong = |n: u64, seq: u64| table.get(n as usize).is_some_and(|&s| s != seq) as u64;
        wrong(n, seq) + wrong(self.last_n, self.last_seq)
    }

    pub(super) fn done(&self, table: &[u64]) -> bool {
        match self.first {
            Some(_) => self.last_n + 1 >= table.len() as u64,
            None => self.expected_first(table) >= table.len() as u64,
        }
    }

    /// An envelope or control text from either transport.
    pub(super) fn text(&mut self, text: &str) {
        // Control messages carry a "type" (keys sorted: not necessarily
        // first); envelopes do not.
        if text.contains("\"type\":\"") && !text.contains("\"soak_n\"") {
            if text.contains("\"type\":\"lagged\"") {
                self.lagged += json_u64(text, "missed").unwrap_or(0);
            }
            return;
        }
        if let (Some(seq), Some(n)) = (json_u64(text, "seq"), json_u64(text, "soak_n")) {
            self.event(seq, n);
        }
    }
}

pub(super) type Shared = Arc<Mutex<Check>>;

pub(super) fn lock(c: &Shared) -> std::sync::MutexGuard<'_, Check> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_counts_gaps_duplicates_and_the_edges() {
        // Partition seqs: n=0..5 at seqs 10,20,30,40,50,60.
        let table = [10, 20, 30, 40, 50, 60];
        let mut c = Check {
            start: 25,
            ..Check::default()
        };
        c.event(20, 1); // before the start: ignored
        c.event(30, 2);
        c.event(40, 3);
        c.event(40, 3); // duplicate
        c.event(60, 5); // gap of one
        assert_eq!(c.pre_start, 1);
        assert_eq!(c.dups, 1);
        assert_eq!(c.gaps, 1);
        assert_eq!(c.loss(&table), 1);
        assert_eq!(c.mismatches(&table), 0);
        assert!(c.done(&table));

        let mut late = Check {
            start: 25,
            ..Check::default()
        };
        late.event(40, 3); // missed n=2 at the start
        assert_eq!(late.start_miss(&table), 1);
        assert_eq!(late.loss(&table), 1 + 2);
        let none = Check {
            start: 25,
            ..Check::default()
        };
        assert_eq!(none.loss(&table), 4);
    }
}
