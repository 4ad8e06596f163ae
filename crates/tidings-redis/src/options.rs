//! [`RedisOptions`] and the `redis://HOST:PORT?key=NAME` URL form.
//!
//! # Contract
//!
//! * Options are checked once, when the log opens: core's
//!   [`LogOptions::validate`] for retention, the idempotency window and
//!   the prune interval, then the Redis-only ones. A zero is refused with a
//!   message naming the option; nothing is clamped.
//! * [`parse_url`] takes the log's `key` out of the URL (at most once;
//!   [`DEFAULT_KEY`] when absent) and hands the rest, other query
//!   parameters included, to the Redis client unchanged.

use std::time::Duration;

use tidings_core::log::LogOptions;

use crate::error::ConnectError;

/// The stream key used when a URL names none.
pub const DEFAULT_KEY: &str = "tidings";

/// How a [`RedisLog`](crate::RedisLog) behaves. Every instance sharing one
/// key should use the same retention and idempotency window.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Retention, idempotency window and prune interval ([`LogOptions`]).
    /// `max_count` is applied exactly (the kept floor `K:first`) on every append, both
    /// limits on [`EventLog::prune`](tidings_core::EventLog::prune) and
    /// every `prune_interval` (`None`: only on `prune`, count retention
    /// still on append). Default: keep everything, 120 s, 1 s.
    pub log: LogOptions,
    /// Upper bound on every operation, including waiting for a reconnect:
    /// past it the operation fails with `Unavailable`. Default 3 s.
    pub timeout: Duration,
    /// How long one `XREAD BLOCK` of the follower waits. Default 1 s.
    pub block: Duration,
    /// Longest wait between reconnection attempts. Default 1 s.
    pub max_reconnect_delay: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            log: LogOptions::default(),
            timeout: Duration::from_secs(3),
            block: Duration::from_secs(1),
            max_reconnect_delay: Duration::from_secs(1),
        }
    }
}

impl RedisOptions {
    /// Sets retention, the idempotency window and the prune interval.
    pub fn log(mut self, log: LogOptions) -> Self {
        self.log = log;
        self
    }

    /// Sets the per-operation timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConnectError> {
        let bad = |m: &str| Err(ConnectError::InvalidOptions(m.to_owned()));
        if let Err(e) = self.log.validate() {
            return bad(&e.to_string());
        }
        if self.timeout.is_zero() {
            return bad("timeout must be positive");
        }
        if self.block.is_zero() || self.block.as_millis() == 0 {
            return bad("block must be at least 1 ms");
        }
        if self.max_reconnect_delay.is_zero() {
            return bad("max_reconnect_delay must be positive");
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes and `+` (a space, as in form encoding).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Splits `redis://HOST:PORT[/DB][?key=NAME&...]` into the URL for the
/// Redis client (without the `key` parameter) and the log's key
/// ([`DEFAULT_KEY`] when absent). Other query parameters are kept.
pub fn parse_url(url: &str) -> Result<(String, String), ConnectError> {
    let invalid = |reason: &str| ConnectError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    if !(url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://")
        || url.starts_with("unix://"))
    {
        return Err(invalid(
            "expected a redis://, rediss://, redis+unix:// or unix:// URL",
        ));
    }
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let (path, query) = match base.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (base, None),
    };
    let mut key = None;
    let mut kept = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "key" {
            if key.is_some() {
                return Err(invalid("the key parameter is given twice"));
            }
            let k = percent_decode(value).ok_or_else(|| invalid("bad %-escape in key"))?;
            if k.is_empty() {
                return Err(invalid("the key parameter is empty"));
            }
            key = Some(k);
        } else {
            kept.push(pair);
        }
    }
    let mut client_url = path.to_owned();
    if !kept.is_empty() {
        client_url.push('?');
        client_url.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        client_url.push('#');
        client_url.push_str(f);
    }
    Ok((client_url, key.unwrap_or_else(|| DEFAULT_KEY.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_taken_from_the_query() {
        assert_eq!(
            parse_url("redis://127.0.0.1:6379?key=orders").unwrap(),
            ("redis://127.0.0.1:6379".to_owned(), "orders".to_owned())
        );
        assert_eq!(
            parse_url("redis://h:1/2?protocol=resp3&key=a%3Ab&x=1").unwrap(),
            (
                "redis://h:1/2?protocol=resp3&x=1".to_owned(),
                "a:b".to_owned()
            )
        );
    }

    #[test]
    fn key_defaults() {
        assert_eq!(
            parse_url("redis://localhost").unwrap(),
            ("redis://localhost".to_owned(), DEFAULT_KEY.to_owned())
        );
        assert_eq!(parse_url("redis://h:1?").unwrap().1, DEFAULT_KEY);
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("redis://h?key=").is_err());
        assert!(parse_url("redis://h?key=a&key=b").is_err());
        assert!(parse_url("redis://h?key=%zz").is_err());
    }

    #[test]
    fn options_are_checked() {
        assert!(RedisOptions::default().validate().is_ok());
        assert!(RedisOptions::default()
            .timeout(Duration::ZERO)
            .validate()
            .is_err());
        assert!(RedisOptions::default()
            .log(LogOptions::retention(tidings_core::Retention {
                max_count: Some(0),
                max_age: None
            }))
            .validate()
            .is_err());
    }
}
