//! [`LogOptions`]: what every log keeps and forgets, with one meaning and one
//! validation for every backend.
//!
//! # Contract
//!
//! * `None` means "no limit" (retention) or "never in the background"
//!   (`prune_interval`); a zero is never a way to say either. Every zero
//!   (`max_count = 0`, `max_age = 0`, a zero idempotency window, a zero
//!   prune interval) is refused by [`LogOptions::validate`], with a message
//!   naming the option, and every backend's `open` calls it before touching
//!   storage. Nothing is clamped or turned into something else.
//! * Backends keep their engine-specific settings in their own options
//!   struct, beside a `log: LogOptions` field.

use std::time::Duration;

use super::Retention;

/// Default idempotency window (JetStream's default duplicate window).
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(120);
/// Default interval of background pruning.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// Retention, idempotency and background pruning, shared by every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// How much the log keeps (a hard limit: consumers are told what they
    /// missed, never waited for). Default: keep everything.
    pub retention: Retention,
    /// How long an idempotency key is remembered after its event was
    /// appended. Default: 120 s. Must be positive.
    pub idempotency_window: Duration,
    /// How often the log applies retention and forgets expired keys in the
    /// background; `None`: only on [`EventLog::prune`](super::EventLog::prune)
    /// (and whatever the backend applies on append, documented there).
    /// Default: 1 s. Must be positive when set.
    pub prune_interval: Option<Duration>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            retention: Retention::default(),
            idempotency_window: DEFAULT_IDEMPOTENCY_WINDOW,
            prune_interval: Some(DEFAULT_PRUNE_INTERVAL),
        }
    }
}

/// A [`LogOptions`] value that makes no sense. The message names the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// `retention.max_count` is 0.
    #[error("retention.max_count is 0: a log keeps at least one event (leave it unset to keep every event)")]
    ZeroCount,
    /// `retention.max_count` does not fit the engines' signed counters.
    #[error("retention.max_count {0} is too large (at most {max})", max = i64::MAX)]
    CountTooLarge(u64),
    /// `retention.max_age` is zero.
    #[error("retention.max_age is 0: leave it unset to keep events of any age")]
    ZeroAge,
    /// The idempotency window is zero.
    #[error("idempotency_window is 0: it must be at least 1 ms")]
    ZeroWindow,
    /// The prune interval is zero.
    #[error("prune_interval is 0: it must be at least 1 ms (or unset for no background pruning)")]
    ZeroPruneInterval,
}

impl LogOptions {
    /// The options with this retention, the rest default.
    pub fn retention(retention: Retention) -> LogOptions {
        LogOptions {
            retention,
            ..LogOptions::default()
        }
    }

    /// These options with `retention`.
    pub fn with_retention(self, retention: Retention) -> LogOptions {
        LogOptions { retention, ..self }
    }

    /// These options with `window` as the idempotency window.
    pub fn with_idempotency_window(self, window: Duration) -> LogOptions {
        LogOptions {
            idempotency_window: window,
            ..self
        }
    }

    /// These options with `interval` as the background pruning interval
    /// (`None`: none).
    pub fn with_prune_interval(self, interval: Option<Duration>) -> LogOptions {
        LogOptions {
            prune_interval: interval,
            ..self
        }
    }

    /// Checks every rule of the module contract.
    pub fn validate(&self) -> Result<(), OptionsError> {
        match self.retention.max_count {
            Some(0) => return Err(OptionsError::ZeroCount),
            Some(n) if n > i64::MAX as u64 => return Err(OptionsError::CountTooLarge(n)),
            _ => {}
        }
        if self.retention.max_age.is_some_and(|a| a.is_zero()) {
            return Err(OptionsError::ZeroAge);
        }
        if self.idempotency_window < Duration::from_millis(1) {
            return Err(OptionsError::ZeroWindow);
        }
        if self
            .prune_interval
            .is_some_and(|d| d < Duration::from_millis(1))
        {
            return Err(OptionsError::ZeroPruneInterval);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_every_zero_is_refused() {
        assert_eq!(LogOptions::default().validate(), Ok(()));
        let with = |f: fn(&mut LogOptions)| {
            let mut o = LogOptions::default();
            f(&mut o);
            o.validate()
        };
        assert_eq!(
            with(|o| o.retention.max_count = Some(0)),
            Err(OptionsError::ZeroCount)
        );
        assert_eq!(
            with(|o| o.retention.max_count = Some(u64::MAX)),
            Err(OptionsError::CountTooLarge(u64::MAX))
        );
        assert_eq!(
            with(|o| o.retention.max_age = Some(Duration::ZERO)),
            Err(OptionsError::ZeroAge)
        );
        assert_eq!(
            with(|o| o.idempotency_window = Duration::ZERO),
            Err(OptionsError::ZeroWindow)
        );
        assert_eq!(
            with(|o| o.prune_interval = Some(Duration::ZERO)),
            Err(OptionsError::ZeroPruneInterval)
        );
        assert_eq!(with(|o| o.prune_interval = None), Ok(()));
        assert_eq!(with(|o| o.retention.max_count = Some(1)), Ok(()));
        let msg = OptionsError::ZeroCount.to_string();
        assert!(msg.contains("retention.max_count"), "{msg}");
    }
}
