//! Options and the `nats://HOST:PORT?stream=NAME` URL form.
//!
//! # Contract
//!
//! * Options are checked once, when the log opens: core's
//!   [`LogOptions::validate`] for retention, the idempotency window and
//!   the prune interval, then the NATS-only ones. A zero is refused with a
//!   message naming the option; nothing is clamped.
//! * A URL is refused unless it is `nats://` or `tls://` with a host, no
//!   path, and no query parameter but `stream`, which must be a valid
//!   stream name ([`DEFAULT_STREAM`] when absent).

use std::time::Duration;

use tidings_core::log::LogOptions;

use crate::error::ConnectError;

/// The stream name used when the URL names none.
pub const DEFAULT_STREAM: &str = "TIDINGS";

/// Where JetStream keeps the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Storage {
    /// On disk (the default).
    #[default]
    File,
    /// In the server's memory (lost when the server restarts).
    Memory,
}

/// How a [`crate::NatsLog`] configures and uses its stream.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Retention, idempotency window and prune interval ([`LogOptions`]).
    /// `max_count` becomes the stream's `MaxMsgs` (counted in records, so a
    /// backstop that never removes more than asked) and is applied
    /// exactly: `prune` removes whole records, reads hide the older events
    /// of a record straddling the limit; `max_age` is applied by
    /// `prune` and by a background pruner every `prune_interval` (see the
    /// crate docs for why not by the stream's `MaxAge`).
    pub log: LogOptions,
    /// Bound on every single request to the server (publish ack, direct get,
    /// stream info, KV). Past it the operation fails with `Unavailable`.
    pub request_timeout: Duration,
    /// Bound on an append as a whole, including waiting behind other appends
    /// of this process and retries after losing a race to another server.
    pub append_timeout: Duration,
    /// Most events merged into one record by group commit (concurrent
    /// appends of one process share a record; each append stays atomic).
    pub max_record_events: usize,
    /// How many recent events the follower keeps in memory to serve reads.
    pub cache_events: usize,
    /// File or memory storage for the stream and the cursor bucket.
    pub storage: Storage,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            log: LogOptions::default(),
            request_timeout: Duration::from_secs(3),
            append_timeout: Duration::from_secs(5),
            max_record_events: 256,
            cache_events: 16_384,
            storage: Storage::File,
        }
    }
}

impl NatsOptions {
    /// The interval of the background age pruner: none without `max_age`
    /// (count retention needs no timer, see [`NatsOptions::log`]).
    pub(crate) fn effective_prune_interval(&self) -> Option<Duration> {
        self.log.retention.max_age?;
        self.log.prune_interval
    }

    /// Checks the options; the message names what is wrong.
    pub(crate) fn validate(&self) -> Result<(), ConnectError> {
        let bad = |m: String| Err(ConnectError::InvalidOptions(m));
        self.log.validate().or_else(|e| bad(e.to_string()))?;
        if self.request_timeout.is_zero() || self.append_timeout.is_zero() {
            return bad("request_timeout and append_timeout must be positive".into());
        }
        if self.max_record_events == 0 || self.cache_events == 0 {
            return bad("max_record_events and cache_events must be at least 1".into());
        }
        Ok(())
    }
}

/// A parsed `nats://HOST:PORT?stream=NAME` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsUrl {
    /// The server address handed to the client (`nats://HOST:PORT`, with
    /// credentials if the URL had any).
    pub server: String,
    /// The stream name (default [`DEFAULT_STREAM`]).
    pub stream: String,
}

impl NatsUrl {
    /// Parses `nats://HOST[:PORT][/]?stream=NAME` (`tls://` also accepted).
    /// The only query parameter understood is `stream`.
    pub fn parse(url: &str) -> Result<NatsUrl, ConnectError> {
        let bad = |reason: &str| ConnectError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected nats://HOST:PORT?stream=NAME"))?;
        if scheme != "nats" && scheme != "tls" {
            return Err(bad("the scheme must be nats:// or tls://"));
        }
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let authority = authority.trim_end_matches('/');
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('/') {
            return Err(bad(
                "a path is not allowed; name the stream with ?stream=NAME",
            ));
        }
        let mut stream = DEFAULT_STREAM.to_owned();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("stream", v)) => stream = v.to_owned(),
                _ => return Err(bad(&format!("unknown query parameter {pair:?}"))),
            }
        }
        validate_stream_name(&stream)?;
        Ok(NatsUrl {
            server: format!("{scheme}://{authority}"),
            stream,
        })
    }
}

/// Checks a stream name: it also names the consumer bucket `<name>_cursors` and
/// the subject `<name>.events`, so only letters, digits, `-` and `_`.
pub fn validate_stream_name(name: &str) -> Result<(), ConnectError> {
    if name.is_empty()
        || name.len() > 200
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ConnectError::InvalidStreamName(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_url_forms() {
        let u = NatsUrl::parse("nats://127.0.0.1:4222?stream=ORDERS").unwrap();
        assert_eq!(u.server, "nats://127.0.0.1:4222");
        assert_eq!(u.stream, "ORDERS");
        let u = NatsUrl::parse("nats://localhost:4222/").unwrap();
        assert_eq!(u.stream, DEFAULT_STREAM);
        let u = NatsUrl::parse("nats://u:p@h:1/?stream=a_b-c").unwrap();
        assert_eq!(u.server, "nats://u:p@h:1");
        assert_eq!(u.stream, "a_b-c");
    }

    #[test]
    fn refuses_bad_urls() {
        for url in [
            "127.0.0.1:4222",
            "http://h:1",
            "nats://",
            "nats://h:1/x",
            "nats://h:1?stream=a.b",
            "nats://h:1?stream=",
            "nats://h:1?foo=bar",
        ] {
            assert!(NatsUrl::parse(url).is_err(), "{url} should be refused");
        }
    }
}
