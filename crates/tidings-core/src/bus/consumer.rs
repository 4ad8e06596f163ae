//! Durable consumers: named subscriptions whose position the log keeps.
//!
//! # Contract
//!
//! * A consumer is a name, its patterns and an optional filter. The first
//!   definition of a name is stored in the log ([`EventLog::define_consumer`])
//!   and is part of it: opening the name with other patterns or another
//!   filter is refused ([`ConsumerError::Mismatch`]) until it is deleted.
//! * A consumer delivers the events after its cursor (the last seq it
//!   acknowledged), or from its start position when it has none yet.
//! * [`Consumer::ack`] is cumulative: acknowledging N means everything up
//!   to N is done. The cursor moves only to acknowledged seqs, never past
//!   an event that was not acknowledged, so a restart resumes exactly after
//!   the last acknowledgement: at-least-once, never a gap.
//! * Acknowledgements are committed in batches (at most one cursor write
//!   per `commit_interval`, and one last write when the consumer is
//!   dropped), not one write per ack. [`Consumer::flush`] commits now.
//! * [`ConsumerBuilder::on_async`] runs a handler per event and
//!   acknowledges it only when the handler returns `Ok`; an `Err` is retried
//!   with capped exponential backoff, so a projector sees every event.
//!
//! [`EventLog::define_consumer`]: crate::EventLog::define_consumer

use crate::log::LogFailure;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Bus, EventStream, SubscribeError};
use crate::event::SharedEvent;
use crate::filter::SharedFilter;
use crate::log::{CursorError, Delivery, Position, ReadError};
use crate::name::{Pattern, PatternError};

/// How often acknowledgements are committed, at most.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(50);

/// A consumer's stored definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerSpec {
    /// Its patterns, sorted, without duplicates.
    pub patterns: Vec<String>,
    /// Its filter's text, if any.
    #[serde(default)]
    pub filter: Option<String>,
}

impl ConsumerSpec {
    /// A definition from patterns (sorted and deduplicated) and a filter.
    pub fn new(patterns: &[Pattern], filter: Option<&str>) -> ConsumerSpec {
        let mut p: Vec<String> = patterns.iter().map(|p| p.as_str().to_owned()).collect();
        p.sort();
        p.dedup();
        ConsumerSpec {
            patterns: p,
            filter: filter.map(str::to_owned),
        }
    }

    /// The stored form.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a spec always serializes")
    }

    /// Reads a stored form; `None` for a cursor with no definition.
    pub fn decode(raw: &str) -> Option<ConsumerSpec> {
        serde_json::from_str(raw).ok()
    }
}

/// Why a consumer could not be opened or acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// A pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// A consumer needs at least one pattern.
    #[error("a consumer needs at least one pattern")]
    NoPatterns,
    /// The name is already defined with other patterns or another filter.
    #[error("consumer {name:?} is defined with patterns {existing:?}{}; delete it to change them", .existing_filter.as_ref().map(|f| format!(" and filter {f:?}")).unwrap_or_default())]
    Mismatch {
        /// The consumer.
        name: String,
        /// Its stored patterns.
        existing: Vec<String>,
        /// Its stored filter.
        existing_filter: Option<String>,
    },
    /// The cursor store failed or refused (an invalid name, say).
    #[error(transparent)]
    Cursor(#[from] CursorError),
    /// Reading the log failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Consumers need a tokio runtime.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The seq was not delivered to this consumer yet.
    #[error("cannot acknowledge seq {seq}: the last seq delivered is {delivered}")]
    NotDelivered {
        /// The seq acknowledged.
        seq: u64,
        /// The last seq delivered.
        delivered: u64,
    },
}

/// Options for opening a consumer: made by [`Bus::consumer`].
#[must_use]
pub struct ConsumerBuilder {
    bus: Bus,
    name: String,
    patterns: Vec<String>,
    start: Position,
    filter: Option<(String, SharedFilter)>,
    commit_interval: Duration,
}

impl ConsumerBuilder {
    pub(crate) fn new(bus: &Bus, name: impl Into<String>) -> Self {
        ConsumerBuilder {
            bus: bus.clone(),
            name: name.into(),
            patterns: Vec::new(),
            start: Position::Beginning,
            filter: None,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
        }
    }

    /// Adds a pattern.
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.patterns.push(pattern.into());
        self
    }

    /// Adds patterns.
    pub fn patterns<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.patterns.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Where a consumer with no cursor yet starts (default: the beginning).
    pub fn start(mut self, from: Position) -> Self {
        self.start = from;
        self
    }

    /// Only events `filter` accepts are delivered; `text` names the filter
    /// in the consumer's stored definition (its expression).
    pub fn filter(mut self, text: impl Into<String>, filter: SharedFilter) -> Self {
        self.filter = Some((text.into(), filter));
        self
    }

    /// At most one cursor write per `interval` (default 50 ms).
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Opens the consumer: defines it (or checks its definition) and
    /// streams from after its cursor.
    pub async fn stream(self) -> Result<Consumer, ConsumerError> {
        let runtime = self.bus.runtime()?;
        let patterns = self
            .patterns
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.is_empty() {
            return Err(ConsumerError::NoPatterns);
        }
        let log = self.bus.log().clone();
        let spec = ConsumerSpec::new(&patterns, self.filter.as_ref().map(|(t, _)| t.as_str()));
        let stored = log.define_consumer(&self.name, &spec.encode()).await?;
        match ConsumerSpec::decode(&stored) {
            Some(s) if s == spec => {}
            Some(s) => {
                return Err(ConsumerError::Mismatch {
                    name: self.name,
                    existing: s.patterns,
                    existing_filter: s.filter,
                })
            }
            // Defined by something else (a bare cursor): ours now.
            None => {}
        }
        let cursor = log.cursor(&self.name).await?;
        let from = match cursor {
            Some(seq) => Position::After(seq),
            None => self.start,
        };
        let stream = self
            .bus
            .subscribe_filtered(patterns, from, self.filter.map(|(_, f)| f))
            .await?;
        let start = match from {
            Position::After(n) => n,
            _ => stream.last_seq(),
        };
        if cursor.is_none() && start > 0 {
            // A new consumer starting after `start`: saved now, so a
            // restart before its first ack does not begin again earlier.
            log.commit_cursor(&self.name, start).await?;
        }
        let (acked, rx) = tokio::sync::watch::channel(start);
        let committed = Arc::new(AtomicU64::new(start));
        runtime.spawn(commit_loop(
            log,
            self.name.clone(),
            rx,
            committed.clone(),
            self.commit_interval,
        ));
        Ok(Consumer {
            name: self.name,
            stream,
            delivered: start,
            acked,
            committed,
        })
    }

    /// Runs `handler` for every event, in seq order, acknowledging each
    /// when the handler returns `Ok`; an `Err` is retried with capped
    /// exponential backoff (at-least-once). Dropping the returned handle
    /// stops it (what was acknowledged is committed).
    pub async fn on_async<F, Fut, E>(self, handler: F) -> Result<ConsumerTask, ConsumerError>
    where
        F: Fn(SharedEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let runtime = self.bus.runtime()?;
        let mut consumer = self.stream().await?;
        let task = runtime.spawn(async move {
            while let Some(item) = consumer.next().await {
                match item {
                    Ok(Delivery::Event(e)) => {
                        let mut wait = Duration::from_millis(10);
                        loop {
                            match handler(e.clone()).await {
                                Ok(()) => break,
                                Err(err) => {
                                    tracing::warn!(consumer = consumer.name(), seq = e.seq, %err, retry_in = ?wait, "consumer handler failed");
                                    tokio::time::sleep(wait).await;
                                    wait = (wait * 2).min(Duration::from_secs(5));
                                }
                            }
                        }
                        let _ = consumer.ack(e.seq);
                    }
                    Ok(Delivery::Lagged { resume_from, missed }) => {
                        tracing::warn!(consumer = consumer.name(), missed, resume_from, "consumer lagged: events were pruned");
                        let _ = consumer.ack(resume_from - 1);
                    }
                    Err(err) => {
                        tracing::error!(consumer = consumer.name(), %err, "consumer could not read the log");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(ConsumerTask { task })
    }
}

/// A running [`ConsumerBuilder::on_async`]; dropping it stops the handler.
#[must_use = "dropping a ConsumerTask stops it"]
pub struct ConsumerTask {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConsumerTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Commits acknowledgements, at most one write per `interval`, until the
/// consumer is dropped; then writes the last one.
async fn commit_loop(
    log: Arc<dyn crate::EventLog>,
    name: String,
    mut acked: tokio::sync::watch::Receiver<u64>,
    committed: Arc<AtomicU64>,
    interval: Duration,
) {
    loop {
        let open = acked.changed().await.is_ok();
        if open {
            tokio::time::sleep(interval).await;
        }
        let target = *acked.borrow_and_update();
        let mut wait = Duration::from_millis(50);
        while target > committed.load(Ordering::Acquire) {
            match log.commit_cursor(&name, target).await {
                Ok(()) => {
                    committed.fetch_max(target, Ordering::AcqRel);
                }
                Err(CursorError::Failed(LogFailure::Closed)) => return,
                Err(e) => {
                    tracing::warn!(consumer = %name, %e, "committing the cursor failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
        if !open {
            return;
        }
    }
}

/// A durable consumer: a stream of its events plus acknowledgements.
pub struct Consumer {
    name: String,
    stream: EventStream,
    /// The last seq handed out (or skipped as lagged).
    delivered: u64,
    /// The highest seq acknowledged. Invariant: never decreases, never
    /// above `delivered`. Dropping it ends the commit task after one last
    /// write.
    acked: tokio::sync::watch::Sender<u64>,
    /// The highest seq written to the cursor store. Invariant: `<= acked`.
    committed: Arc<AtomicU64>,
}

impl Consumer {
    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Acknowledges everything up to `seq` (cumulative; a lower seq than
    /// already acknowledged changes nothing). Committed in the background.
    pub fn ack(&self, seq: u64) -> Result<(), AckError> {
        if seq > self.delivered {
            return Err(AckError::NotDelivered {
                seq,
                delivered: self.delivered,
            });
        }
        self.acked.send_if_modified(|v| {
            let newer = seq > *v;
            if newer {
                *v = seq;
            }
            newer
        });
        Ok(())
    }

    /// The highest seq acknowledged.
    pub fn acked(&self) -> u64 {
        *self.acked.borrow()
    }

    /// The highest seq committed to the cursor store.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Commits what was acknowledged now.
    pub async fn flush(&self) -> Result<(), CursorError> {
        let target = self.acked();
        if target > self.committed() {
            self.stream_log().commit_cursor(&self.name, target).await?;
            self.committed.fetch_max(target, Ordering::AcqRel);
        }
        Ok(())
    }

    fn stream_log(&self) -> Arc<dyn crate::EventLog> {
        self.stream.bus().log().clone()
    }

    /// The stream underneath (its patterns, its last seq).
    pub fn stream(&self) -> &EventStream {
        &self.stream
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = futures_core::ready!(Pin::new(&mut self.stream).poll_next(cx));
        match &item {
            Some(Ok(Delivery::Event(e))) => self.delivered = e.seq,
            Some(Ok(Delivery::Lagged { resume_from, .. })) => self.delivered = resume_from - 1,
            _ => {}
        }
        Poll::Ready(item)
    }
}
