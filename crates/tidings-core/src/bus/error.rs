//! The bus's error types.
//!
//! # Contract
//!
//! * After an [`EmitError`], nothing was committed, except possibly after
//!   [`EmitError::Append`] with [`AppendError::Failed`]: a log that does
//!   I/O may have committed the events before the answer was lost (see
//!   [`AppendError`]); retry with an idempotency key.
//! * After a [`SubscribeError`], no subscription was made.
//! * After a [`WaitError`], [`Bus::wait_for`](super::Bus::wait_for) has
//!   returned without an event and its subscription is gone.
//! * After a [`ConfigError`], no bus (and no external-appends task) was made.

use std::time::Duration;

use crate::contract::Refusal;
use crate::log::{AppendError, ReadError};
use crate::name::{NameError, PatternError};

/// Why an emit failed. Nothing was committed, except possibly after an
/// append that [`AppendError::Failed`] (the outcome is then unknown; retry
/// with an idempotency key).
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The event name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The log refused or failed the append.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Handlers emitting from handlers went deeper than the limit.
    #[error("emit refused at depth {depth} (limit {max}): handlers keep emitting events whose handlers emit again; is there a loop?")]
    DepthExceeded { depth: u32, max: u32 },
    /// A typed event could not be serialized.
    #[error("cannot serialize the typed event: {0}")]
    Serialize(#[source] serde_json::Error),
    /// An event's data broke a contract its name matches (see
    /// [`BusBuilder::schema`](super::BusBuilder::schema)); for a batch,
    /// no event of it was committed.
    #[error("{0}")]
    Contract(Box<Refusal>),
}

/// Why a subscription could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// An async handler needs a tokio runtime and none was given or running.
    #[error("async handlers need a tokio runtime: call this inside one, or give the bus one with BusBuilder::runtime")]
    NoRuntime,
    /// Resolving the start position failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Why [`Bus::wait_for`](super::Bus::wait_for) returned without an event.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// No matching event within the timeout.
    #[error("no matching event within {0:?}")]
    Timeout(Duration),
    /// Reading the log failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The subscription was removed while waiting.
    #[error("the subscription was removed while waiting")]
    Closed,
}

/// A bus setting was out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A capacity or limit of zero.
    #[error("{setting} must be at least 1, got 0{hint}")]
    Zero {
        setting: &'static str,
        hint: &'static str,
    },
    /// The pattern given to [`BusBuilder::schema`](super::BusBuilder::schema)
    /// is invalid.
    #[error("schema pattern: {0}")]
    Pattern(#[from] PatternError),
    /// Dispatching what other processes append to a shared log needs a
    /// tokio runtime.
    #[error("dispatching the appends of other processes to a shared log needs a tokio runtime: build the bus inside one, or give it one with BusBuilder::runtime")]
    NoRuntime,
}
