//! What each store adds to the server's registry: its own counters, read
//! at each scrape from the store's `stats()`: [`SqliteCollector`] for
//! SQLite's writer, and one [`EngineCollector`] for NATS and Redis, which
//! encodes the append counters they share (core's `WriteStats`) and each
//! engine's own, under the engine's prefix.

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

/// What an engine store reports at each scrape: the append counters every
/// group-committing store keeps, and the engine's own counters as
/// `(name after tidings_<engine>_, help, value)`.
type EngineRead =
    Box<dyn Fn() -> (WriteStats, Vec<(&'static str, &'static str, u64)>) + Send + Sync>;

/// An engine store's counters (NATS, Redis), named `tidings_<engine>_...`:
/// one collector for both, the engines differing only in what they read.
pub(crate) struct EngineCollector {
    engine: &'static str,
    read: EngineRead,
}

impl EngineCollector {
    /// NATS: appends, lost races, follower restarts, skipped messages.
    pub(crate) fn nats(log: tidings_nats::NatsLog) -> EngineCollector {
        EngineCollector {
            engine: "nats",
            read: Box::new(move || {
                let s = log.stats();
                let own = vec![
                    (
                        "lost_races",
                        "Records refused for a stale tail, usually because another server appended first.",
                        s.lost_races,
                    ),
                    (
                        "follower_restarts",
                        "Times the log's follower started, or tried to start, its consumer again (a failed start counts too).",
                        s.follower_restarts,
                    ),
                    (
                        "messages_skipped",
                        "Messages on the log's subject that were not Tidings records.",
                        s.messages_skipped,
                    ),
                ];
                (s.appends, own)
            }),
        }
    }

    /// Redis: appends, plain groups, lost writes, follower reconnects.
    pub(crate) fn redis(log: tidings_redis::RedisLog) -> EngineCollector {
        EngineCollector {
            engine: "redis",
            read: Box::new(move || {
                let s = log.stats();
                let own = vec![
                    (
                        "plain_groups",
                        "Groups the smaller append script answered (no key, expectation or count retention).",
                        s.plain_groups,
                    ),
                    (
                        "lost_writes",
                        "Groups refused because Redis lost events this server saw committed.",
                        s.lost_writes,
                    ),
                    (
                        "follower_reconnects",
                        "Times the log's follower got its connection back after losing Redis.",
                        s.follower_reconnects,
                    ),
                ];
                (s.appends, own)
            }),
        }
    }
}

impl fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EngineCollector({})", self.engine)
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let (s, own) = (self.read)();
        let shared = [
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
        ];
        let counters: Vec<_> = shared
            .into_iter()
            .chain(own)
            .map(|(name, help, v)| (format!("tidings_{}_{name}", self.engine), help, v))
            .collect();
        encode_counters(&mut encoder, &counters)
    }
}
