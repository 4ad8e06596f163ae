//! Range and format checks on a merged [`Config`], and the parsing of the
//! `store` URL. Every check names the setting it refuses
//! ([`ConfigError::Invalid`]), so start-up errors say which key to fix.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Config, ConfigError, StoreUrl};

impl Config {
    /// Checks ranges and formats.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if let Err(e) = self.listen.parse::<SocketAddr>() {
            return invalid(
                "listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:7700 ({e})",
                    self.listen
                ),
            );
        }
        for (key, v) in [
            ("max_payload", self.max_payload),
            ("max_connections", self.max_connections),
            (
                "max_subscribers_per_channel",
                self.max_subscribers_per_channel,
            ),
            ("stream_queue", self.stream_queue),
            ("history_max_limit", self.history_max_limit),
            (
                "max_patterns_per_connection",
                self.max_patterns_per_connection,
            ),
            ("commands_per_sec", self.commands_per_sec as usize),
            ("send_timeout_secs", self.send_timeout_secs as usize),
            (
                "header_read_timeout_secs",
                self.header_read_timeout_secs as usize,
            ),
            (
                "body_read_timeout_secs",
                self.body_read_timeout_secs as usize,
            ),
            ("history_max_bytes", self.history_max_bytes),
            ("batch_interval_ms", self.batch_interval_ms as usize),
        ] {
            if v == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        if self.keepalive_secs == 0 {
            return invalid("keepalive_secs", "must be at least 1".into());
        }
        if !["sync", "batch", "none"].contains(&self.durability.as_str()) {
            return invalid(
                "durability",
                format!("{:?} is not one of sync, batch, none", self.durability),
            );
        }
        let store = self.store_url()?;
        if let Some(dir) = &self.archive_dir {
            let engine = match store {
                _ if dir.as_os_str().is_empty() => "set, but empty (leave it unset for none)",
                StoreUrl::Sqlite(_) => "",
                StoreUrl::Memory => "SQLite-only; the store is memory:",
                StoreUrl::Nats(_) => "SQLite-only; NATS retention is its own and deletes",
                StoreUrl::Redis(_) => "SQLite-only; Redis retention (XTRIM) deletes",
            };
            if !engine.is_empty() {
                return invalid("archive_dir", format!("the archive is {engine}"));
            }
        }
        if let Err(e) = self.log_options().validate() {
            let key = match e {
                tidings_core::log::OptionsError::ZeroAge => "retention_max_age_secs",
                _ => "retention_max_count",
            };
            return invalid(key, e.to_string());
        }
        for o in &self.cors_origins {
            if o.parse::<http::HeaderValue>().is_err()
                || !(o.starts_with("http://") || o.starts_with("https://"))
            {
                return invalid(
                    "cors_origins",
                    format!("{o:?} is not an origin like https://app.example"),
                );
            }
        }
        for t in &self.auth.tokens {
            if t.token.is_empty() {
                return invalid("auth.tokens", "a token is empty".into());
            }
            for p in t.publish.iter().chain(&t.subscribe) {
                if let Err(e) = tidings_core::Pattern::parse(p) {
                    return invalid("auth.tokens", e.to_string());
                }
            }
        }
        for h in self.allowed_hosts.iter().flatten() {
            if h.is_empty() || h.contains(['/', ' ', ',']) {
                return invalid(
                    "allowed_hosts",
                    format!("{h:?} is not a host name like app.example or \"*\""),
                );
            }
        }
        if self.auth.jwt_secret.as_deref() == Some("") {
            return invalid("auth.jwt_secret", "is empty".into());
        }
        Ok(())
    }

    /// The store to open.
    pub fn store_url(&self) -> Result<StoreUrl, ConfigError> {
        let raw = match &self.store {
            Some(s) => s.clone(),
            None => return Ok(StoreUrl::Sqlite(self.data_dir.join("events.db"))),
        };
        if raw == "memory:" || raw == "memory" {
            return Ok(StoreUrl::Memory);
        }
        if let Some(path) = raw.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "store",
                    reason: "sqlite: needs a file path, as in sqlite:./tidings-data/events.db"
                        .into(),
                });
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if raw.starts_with("nats://") {
            return Ok(StoreUrl::Nats(raw));
        }
        if raw.starts_with("redis://") {
            return Ok(StoreUrl::Redis(raw));
        }
        Err(ConfigError::Invalid {
            key: "store",
            reason: format!(
                "{raw:?} is not a supported store URL (use sqlite:PATH, memory:, nats://HOST:PORT?stream=NAME or redis://HOST:PORT?key=NAME)"
            ),
        })
    }
}
