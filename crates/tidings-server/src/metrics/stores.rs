//! What each store adds to the server's registry: its own counters, read
//! at each scrape from the store's `stats()`. One collector per store
//! kind; the append counters NATS and Redis share (core's `WriteStats`)
//! are encoded by one function, under each engine's prefix.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tidings_core::log::WriteStats;

use super::encode_counters;

/// A SQLite store's own counters (group commits, fsyncs, retention), read
/// at each scrape: what the store adds to the server's registry.
pub(crate) struct SqliteCollector(pub(crate) tidings_sqlite::SqliteLog);

impl fmt::Debug for SqliteCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SqliteCollector")
    }
}

impl Collector for SqliteCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = self.0.stats();
        encode_counters(
            &mut encoder,
            &[
                (
                    "tidings_sqlite_group_commits",
                    "Group commits the SQLite writer ran.",
                    s.groups,
                ),
                (
                    "tidings_sqlite_fsyncs",
                    "WAL fsyncs of the SQLite store.",
                    s.syncs,
                ),
                (
                    "tidings_sqlite_events_appended",
                    "Events the SQLite store appended (duplicates not counted).",
                    s.events_appended,
                ),
                (
                    "tidings_sqlite_events_pruned",
                    "Events the SQLite store removed by retention.",
                    s.events_pruned,
                ),
                (
                    "tidings_sqlite_failed_transactions",
                    "SQLite write transactions that failed and were rolled back.",
                    s.failed_transactions,
                ),
                (
                    "tidings_sqlite_rows_read",
                    "Rows the SQLite reader threads copied out.",
                    s.rows_read,
                ),
            ],
        )
    }
}

/// `(name, help, value)` of the append counters every group-committing
/// store reports, named `tidings_<engine>_...`.
fn write_counters(engine: &str, s: &WriteStats) -> Vec<(String, &'static str, u64)> {
    [
        (
            "group_commits",
            "Groups of appends answered with results (one engine write each, none when all were duplicates or refused).",
            s.groups,
        ),
        (
            "events_appended",
            "Events appended through this server (duplicates not counted).",
            s.events_appended,
        ),
        (
            "duplicates",
            "Events answered with the original because their key was seen.",
            s.duplicates,
        ),
        (
            "conflicts",
            "Appends refused for an expected-last-seq mismatch.",
            s.conflicts,
        ),
        (
            "failed_appends",
            "Appends that failed (outage, timeout, storage error).",
            s.failed_appends,
        ),
    ]
    .into_iter()
    .map(|(name, help, v)| (format!("tidings_{engine}_{name}"), help, v))
    .collect()
}

/// A NATS store's counters: appends, lost races, follower restarts.
pub(crate) struct NatsCollector(pub(crate) tidings_nats::NatsLog);

impl fmt::Debug for NatsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NatsCollector")
    }
}

impl Collector for NatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = self.0.stats();
        let mut counters = write_counters("nats", &s.appends);
        counters.extend([
            (
                "tidings_nats_lost_races".to_owned(),
                "Records refused for a stale tail, usually because another server appended first.",
                s.lost_races,
            ),
            (
                "tidings_nats_follower_restarts".to_owned(),
                "Times the log's follower started its consumer again.",
                s.follower_restarts,
            ),
            (
                "tidings_nats_messages_skipped".to_owned(),
                "Messages on the log's subject that were not Tidings records.",
                s.messages_skipped,
            ),
        ]);
        encode_counters(&mut encoder, &counters)
    }
}

/// A Redis store's counters: appends, lost writes, follower reconnects.
pub(crate) struct RedisCollector(pub(crate) tidings_redis::RedisLog);

impl fmt::Debug for RedisCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisCollector")
    }
}

impl Collector for RedisCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = self.0.stats();
        let mut counters = write_counters("redis", &s.appends);
        counters.extend([
            (
                "tidings_redis_plain_groups".to_owned(),
                "Groups the smaller append script answered (no key, expectation or count retention).",
                s.plain_groups,
            ),
            (
                "tidings_redis_lost_writes".to_owned(),
                "Groups refused because Redis lost events this server saw committed.",
                s.lost_writes,
            ),
            (
                "tidings_redis_follower_reconnects".to_owned(),
                "Times the log's follower got its connection back after losing Redis.",
                s.follower_reconnects,
            ),
        ]);
        encode_counters(&mut encoder, &counters)
    }
}
