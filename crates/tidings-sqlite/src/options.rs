//! Configuration of a [`SqliteLog`](crate::SqliteLog).
//!
//! # Contract
//!
//! * [`SqliteOptions`] is plain data with documented defaults; it is
//!   checked once, by `open` ([`SqliteOptions::validate`]), and an option
//!   that makes no sense refuses the open with `OpenError::InvalidOptions`
//!   rather than being clamped.
//! * [`Durability`] documents exactly what each mode guarantees on a
//!   process crash and on a machine crash; the writer implements that
//!   table (`synchronous` level, explicit WAL fsyncs), nothing more.

use std::path::PathBuf;
use std::time::Duration;

use tidings_core::log::LogOptions;

/// When an acknowledged append (or cursor commit) is on stable storage.
///
/// Every mode survives a crash of the *process*: a commit is written to the
/// WAL file (in the OS page cache) before it is acknowledged. The modes
/// differ in what survives a crash of the *machine* (power loss, kernel
/// panic):
///
/// | mode | SQLite setting | an acknowledged append survives power loss |
/// | --- | --- | --- |
/// | [`Sync`](Durability::Sync) (default) | `synchronous=FULL` | always: the WAL was fsynced before the ack |
/// | [`Batch`](Durability::Batch) | `synchronous=NORMAL` + an explicit WAL fsync at most every `interval` | once the next sync ran: at most `interval` after the ack (plus the length of the transaction the writer is in, if any); [`SqliteLog::sync`](crate::SqliteLog::sync) forces one |
/// | [`None`](Durability::None) | `synchronous=OFF` | not guaranteed: the OS writes it back when it likes |
///
/// "fsync" here means the writer's own syncs. SQLite additionally fsyncs
/// the WAL and the database file whenever it checkpoints (about every
/// 4 MiB of WAL) in `Sync` and `Batch` modes; in `None` mode it never does.
///
/// After a process crash, in every mode, and after a machine crash in
/// `Sync` and `Batch` modes, the file reopens consistent (SQLite's WAL
/// makes a transaction all there or not at all): the only possible loss is
/// a suffix of recent appends (none in `Sync`), sequence numbers stay
/// gap-free, and no number of a surviving event is reused. In `None` mode a
/// machine crash can, as SQLite documents for `synchronous=OFF`, also leave
/// the file damaged (a checkpoint may have reused WAL space before the
/// database pages it copied reached the disk); `SqliteLog::open` (with the
/// default [`OpenCheck::Quick`]) then
/// refuses it with `OpenError::Corrupt` rather than serving bad data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledge after the WAL is fsynced. With group commit, concurrent
    /// appenders share one transaction and so one fsync.
    #[default]
    Sync,
    /// Acknowledge after the write; fsync the WAL at most every `interval`
    /// (and when the log closes). Must be non-zero.
    Batch {
        /// The longest an acknowledged append may wait for its fsync.
        interval: Duration,
    },
    /// Never fsync (SQLite `synchronous=OFF`): fastest; a power loss loses
    /// recent appends and may damage the file. For data you can rebuild.
    None,
}

/// How much of the file to verify when opening it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenCheck {
    /// No verification beyond reading the schema and the last sequence.
    /// Damage deeper in the file then shows up as `Storage` errors on reads.
    Off,
    /// `PRAGMA quick_check`: every b-tree page is read and checked (but not
    /// index/table consistency). Cost grows with the file (roughly a
    /// sequential read of it); this is what turns a truncated or
    /// overwritten file into [`OpenError::Corrupt`](crate::OpenError::Corrupt)
    /// at open instead of an error on some later read.
    #[default]
    Quick,
    /// `PRAGMA integrity_check`: `Quick` plus index consistency; slower.
    Full,
}

/// Options of [`SqliteLog::open`](crate::SqliteLog::open). Start from
/// [`SqliteOptions::default()`] and change the fields you need.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// See [`Durability`]. Default: [`Durability::Sync`].
    pub durability: Durability,
    /// Retention (a hard limit: see the crate docs), the idempotency window
    /// and how often the writer thread applies them in the background
    /// (`prune_interval: None`: only [`EventLog::prune`](tidings_core::EventLog::prune)
    /// prunes). The shared meaning and validation: [`LogOptions`].
    /// Default: keep everything, 120 s, 1 s.
    pub log: LogOptions,
    /// Reader threads, each with its own read connection. Default: 2.
    pub readers: usize,
    /// Upper bound on the events one group commit takes from the queue
    /// (a request is never split, so a single larger batch still goes in
    /// whole). Bounds the latency of one transaction. Default: 32,768.
    pub max_group_events: usize,
    /// How long the writer may wait for more appenders before committing a
    /// group smaller than the previous one, when every commit fsyncs
    /// ([`Durability::Sync`]; with `Batch` and `None` it never waits, see
    /// the crate docs on group commit). Zero: never wait. Default: 200 µs.
    pub group_wait: Duration,
    /// Verification at open. Default: [`OpenCheck::Quick`].
    pub check_on_open: OpenCheck,
    /// SQLite page cache per connection, in KiB. Default: 16,384 (16 MiB).
    pub cache_kib: u32,
    /// Bytes of the file the reader connections map into memory (faster
    /// replay); 0 turns memory mapping off. Default: 256 MiB.
    pub reader_mmap_bytes: u64,
    /// How long a connection waits for a lock held by another process
    /// before failing with `Unavailable`. Default: 5 s.
    pub busy_timeout: Duration,
    /// While writes fail for a fault of the storage (a full disk, an I/O
    /// error), how often the idle writer tries a small probe write, so
    /// [`EventLog::health`](tidings_core::EventLog::health) goes back to
    /// `Ok` once the fault is gone even if nobody publishes. `None`: health
    /// only recovers with the next write that succeeds. Default: 1 s.
    pub probe_interval: Option<Duration>,
    /// Where retention puts events before it deletes them (see
    /// [`crate::archive`]); `None`: retention deletes them for good.
    /// Created if missing. Default: `None`.
    pub archive_dir: Option<PathBuf>,
    /// With an archive, background pruning writes a file once a full chunk
    /// ([`CHUNK_EVENTS`](crate::archive::CHUNK_EVENTS)) is due, or once
    /// this long passed since the last file, whichever comes first (so the
    /// log holds up to a chunk more than retention says, for at most this
    /// long). An explicit [`EventLog::prune`](tidings_core::EventLog::prune)
    /// archives everything due at once. Default: 60 s.
    pub archive_delay: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Sync,
            log: LogOptions::default(),
            readers: 2,
            max_group_events: 32_768,
            group_wait: Duration::from_micros(200),
            check_on_open: OpenCheck::Quick,
            cache_kib: 16 * 1024,
            reader_mmap_bytes: 256 * 1024 * 1024,
            busy_timeout: Duration::from_secs(5),
            probe_interval: Some(Duration::from_secs(1)),
            archive_dir: None,
            archive_delay: Duration::from_secs(60),
        }
    }
}

impl SqliteOptions {
    /// Sets the durability mode.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets retention, the idempotency window and the prune interval.
    pub fn log(mut self, log: LogOptions) -> Self {
        self.log = log;
        self
    }

    /// Sets (or with `None` turns off) the probe writes while degraded.
    pub fn probe_interval(mut self, interval: Option<Duration>) -> Self {
        self.probe_interval = interval;
        self
    }

    /// Sets (or with `None` turns off) the archive directory.
    pub fn archive_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.archive_dir = dir;
        self
    }

    /// Checks the options; the message says what is wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        self.log.validate().map_err(|e| e.to_string())?;
        if self.readers == 0 {
            return Err("readers must be at least 1".into());
        }
        if self.max_group_events == 0 {
            return Err("max_group_events must be at least 1".into());
        }
        if let Durability::Batch { interval } = self.durability {
            if interval.is_zero() {
                return Err("Durability::Batch needs a non-zero interval".into());
            }
        }
        if self.probe_interval.is_some_and(|d| d.is_zero()) {
            return Err("probe_interval must be non-zero (use None to turn it off)".into());
        }
        if self
            .archive_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err("archive_dir is empty (use None to turn the archive off)".into());
        }
        Ok(())
    }
}
