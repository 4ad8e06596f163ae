//! Server settings: a TOML file, then `TIDINGS_*` environment variables,
//! then command-line flags (flags win). Every setting has a default and an
//! environment variable named after it: `max_payload` is
//! `TIDINGS_MAX_PAYLOAD`, `auth.jwt_secret` is `TIDINGS_AUTH_JWT_SECRET`.
//! Values are read as TOML (`TIDINGS_MAX_PAYLOAD=65536`), lists also as
//! comma-separated text (`TIDINGS_CORS_ORIGINS=http://a,http://b`).
//! The settings struct and its defaults live here; layering is in
//! `config/load.rs`, range checks and the store URL in `config/validate.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The default listen address: loopback, on a port no service of the
/// development machines uses.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";

/// Every server setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Where the embedded store keeps its files.
    pub data_dir: PathBuf,
    /// The log: `sqlite:PATH`, `memory:`, `nats://HOST:PORT?stream=NAME` or
    /// `redis://HOST:PORT?key=NAME`; default `sqlite:<data_dir>/events.db`.
    pub store: Option<String>,
    /// SQLite durability: `sync` (acknowledged after fsync), `batch`, `none`.
    pub durability: String,
    /// For `batch` durability: fsync at most this often.
    pub batch_interval_ms: u64,
    /// Keep at most this many events (none: no count limit).
    pub retention_max_count: Option<u64>,
    /// Drop events older than this many seconds (none: no age limit).
    pub retention_max_age_secs: Option<u64>,
    /// SQLite store only: where retention puts events (zstd JSON-lines
    /// files and a manifest) before it deletes them (none: it deletes for
    /// good). `GET /export` and `tidings export` read it back.
    pub archive_dir: Option<PathBuf>,
    /// Largest accepted request body, in bytes (answered 413 beyond).
    pub max_payload: usize,
    /// Most open WebSocket and SSE connections together.
    pub max_connections: usize,
    /// Most subscribers of one `/ws/events/{channel}` channel.
    pub max_subscribers_per_channel: usize,
    /// Events queued per connection before it switches to reading the log.
    pub stream_queue: usize,
    /// Seconds between keepalive pings (WebSocket) or comments (SSE).
    pub keepalive_secs: u64,
    /// Largest `limit` of `GET /events`.
    pub history_max_limit: usize,
    /// Origins allowed for cross-origin browser clients (none by default).
    pub cors_origins: Vec<String>,
    /// Host names (the `Host` header, without port) requests may name, a
    /// guard against DNS rebinding. Unset: the loopback names (`localhost`,
    /// `127.0.0.1`, `[::1]`) when listening on loopback, any host
    /// otherwise. `["*"]` allows any host.
    pub allowed_hosts: Option<Vec<String>>,
    /// Most patterns one WebSocket or SSE connection may hold.
    pub max_patterns_per_connection: usize,
    /// WebSocket commands a connection may send per second (bursts of
    /// twice that are allowed); beyond, commands are refused.
    pub commands_per_sec: u32,
    /// A write to a client (an event, a reply, a response) that makes no
    /// progress for this many seconds drops the connection.
    pub send_timeout_secs: u64,
    /// A request whose headers take longer than this to arrive is dropped.
    pub header_read_timeout_secs: u64,
    /// A request body that takes longer than this to arrive is refused (408).
    pub body_read_timeout_secs: u64,
    /// Most bytes (about) one history page or catch-up read holds.
    pub history_max_bytes: usize,
    /// An event `time` further ahead of the server clock than this many
    /// seconds is refused.
    pub max_future_secs: u64,
    /// Authentication (off unless tokens or a JWT secret are configured).
    pub auth: AuthConfig,
    /// Data contracts: a publish whose `data` fails the schema of a
    /// pattern its name matches is refused (422). Compiled at start.
    pub schemas: Vec<SchemaConfig>,
    /// The directory of the config file the settings came from: relative
    /// `schemas` paths resolve against it (none: the working directory).
    #[serde(skip)]
    pub config_dir: Option<PathBuf>,
}

/// One `[[schemas]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// Names it applies to, e.g. `orders.>`.
    pub pattern: String,
    /// A JSON Schema (2020-12) file; relative to the config file's
    /// directory.
    pub schema: PathBuf,
}

/// Authentication settings. Auth is on when any token or a secret is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Static tokens and what they may do.
    pub tokens: Vec<TokenConfig>,
    /// Secret for HS256 JWTs whose claims carry `publish` and `subscribe`
    /// pattern lists.
    pub jwt_secret: Option<String>,
    /// JWTs must carry `exp` (default true; false accepts tokens that
    /// never expire).
    pub jwt_require_exp: bool,
    /// Clock skew allowed when checking `exp` and `nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// When set, a JWT's `iss` must equal it.
    pub jwt_issuer: Option<String>,
    /// When set, a JWT's `aud` must contain it.
    pub jwt_audience: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            tokens: Vec::new(),
            jwt_secret: None,
            jwt_require_exp: true,
            jwt_leeway_secs: 30,
            jwt_issuer: None,
            jwt_audience: None,
        }
    }
}

/// One static token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The bearer token.
    pub token: String,
    /// The token's idempotency-key namespace (default: derived from a
    /// hash of the token). Tokens that share a name share their keys.
    #[serde(default)]
    pub name: Option<String>,
    /// Patterns of names it may publish.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Patterns it may subscribe to (and read history of).
    #[serde(default)]
    pub subscribe: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.to_owned(),
            data_dir: PathBuf::from("./tidings-data"),
            store: None,
            durability: "sync".to_owned(),
            batch_interval_ms: 10,
            retention_max_count: None,
            retention_max_age_secs: None,
            archive_dir: None,
            max_payload: 1024 * 1024,
            max_connections: 20_000,
            max_subscribers_per_channel: 1000,
            stream_queue: 1024,
            keepalive_secs: 15,
            history_max_limit: 1000,
            cors_origins: Vec::new(),
            allowed_hosts: None,
            max_patterns_per_connection: 64,
            commands_per_sec: 20,
            send_timeout_secs: 30,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            history_max_bytes: 4 * 1024 * 1024,
            max_future_secs: 300,
            auth: AuthConfig::default(),
            schemas: Vec::new(),
            config_dir: None,
        }
    }
}

/// Where the log lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// Process memory (lost on exit).
    Memory,
    /// A NATS JetStream stream, shared by every server using it.
    Nats(String),
    /// A Redis stream, shared by every server using it.
    Redis(String),
}

/// A setting could not be read or is out of range.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file (or a variable, or a flag) is not valid for the settings.
    #[error("invalid settings: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

mod load;
mod validate;

pub use load::env_name;

impl Config {
    /// The log options these settings ask for (every backend reads the
    /// same ones; the memory store keeps 10,000 events unless told).
    pub fn log_options(&self) -> tidings_core::log::LogOptions {
        let memory = matches!(self.store_url(), Ok(StoreUrl::Memory));
        let default_count = memory.then_some(tidings_core::log::DEFAULT_MAX_COUNT);
        tidings_core::log::LogOptions::retention(tidings_core::Retention {
            max_count: self.retention_max_count.or(default_count),
            max_age: self
                .retention_max_age_secs
                .map(std::time::Duration::from_secs),
        })
    }

    /// Where a `[[schemas]]` file is: as written if absolute, else under
    /// the config file's directory.
    pub fn schema_path(&self, schema: &SchemaConfig) -> PathBuf {
        match &self.config_dir {
            Some(dir) if schema.schema.is_relative() => dir.join(&schema.schema),
            _ => schema.schema.clone(),
        }
    }

    /// The keepalive interval.
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs)
    }

    /// The send timeout.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_secs)
    }

    /// The host names requests may name; `None` allows any.
    pub fn hosts_allowed(&self) -> Option<Vec<String>> {
        match &self.allowed_hosts {
            Some(list) if list.iter().any(|h| h == "*") => None,
            Some(list) => Some(list.iter().map(|h| h.to_ascii_lowercase()).collect()),
            None => {
                let loopback = self
                    .listen
                    .parse::<SocketAddr>()
                    .is_ok_and(|a| a.ip().is_loopback());
                loopback.then(|| {
                    ["localhost", "127.0.0.1", "[::1]"]
                        .map(String::from)
                        .to_vec()
                })
            }
        }
    }

    /// True if any authentication is configured.
    pub fn auth_enabled(&self) -> bool {
        !self.auth.tokens.is_empty() || self.auth.jwt_secret.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_use_sqlite_in_the_data_dir() {
        let c = Config::load(None, vec![], vec![]).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(
            c.store_url().unwrap(),
            StoreUrl::Sqlite(PathBuf::from("./tidings-data/events.db"))
        );
        assert!(!c.auth_enabled());
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9001\"\nmax_payload = 10\n[auth]\njwt_secret = \"s\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&f),
            env(&[
                ("TIDINGS_MAX_PAYLOAD", "20"),
                ("TIDINGS_LISTEN", "127.0.0.1:9002"),
                ("TIDINGS_CORS_ORIGINS", "http://a.test, https://b.test"),
                ("TIDINGS_SERVER", "ignored: not a server setting"),
            ]),
            vec![("listen", toml::Value::String("127.0.0.1:9003".into()))],
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9003");
        assert_eq!(c.max_payload, 20);
        assert_eq!(c.cors_origins, vec!["http://a.test", "https://b.test"]);
        assert_eq!(c.auth.jwt_secret.as_deref(), Some("s"));
        assert!(c.auth_enabled());
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let e = Config::load(None, env(&[("TIDINGS_MAX_PAYLOAD", "0")]), vec![]).unwrap_err();
        assert!(e.to_string().contains("max_payload"), "{e}");
        let e = Config::load(None, env(&[("TIDINGS_LISTEN", "nowhere")]), vec![]).unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let e = Config::load(None, env(&[("TIDINGS_STORE", "postgres://x")]), vec![]).unwrap_err();
        assert!(e.to_string().contains("not a supported store URL"), "{e}");
        let e = Config::load(None, env(&[("TIDINGS_BATCH_INTERVAL_MS", "0")]), vec![]).unwrap_err();
        assert!(e.to_string().contains("batch_interval_ms"), "{e}");
        let e = Config::load(None, env(&[("TIDINGS_DURABILITY", "maybe")]), vec![]).unwrap_err();
        assert!(e.to_string().contains("durability"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(&f, "max_payloda = 3\n").unwrap();
        let e = Config::load(Some(&f), vec![], vec![]).unwrap_err();
        assert!(e.to_string().contains("max_payloda"), "{e}");
        let e = Config::load(Some(Path::new("/nonexistent/x.toml")), vec![], vec![]).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
    }

    #[test]
    fn the_archive_is_sqlite_only() {
        let c = Config::load(None, env(&[("TIDINGS_ARCHIVE_DIR", "/tmp/a")]), vec![]).unwrap();
        assert_eq!(c.archive_dir, Some(PathBuf::from("/tmp/a")));
        for store in [
            "memory:",
            "nats://127.0.0.1:4222?stream=E",
            "redis://127.0.0.1:6379?key=e",
        ] {
            let e = Config::load(
                None,
                env(&[("TIDINGS_ARCHIVE_DIR", "/tmp/a"), ("TIDINGS_STORE", store)]),
                vec![],
            )
            .unwrap_err();
            assert!(
                e.to_string().contains("archive_dir") && e.to_string().contains("SQLite-only"),
                "{e}"
            );
        }
        let e = Config::load(None, env(&[("TIDINGS_ARCHIVE_DIR", "\"\"")]), vec![]).unwrap_err();
        assert!(e.to_string().contains("archive_dir"), "{e}");
    }

    #[test]
    fn store_urls() {
        let mut c = Config {
            store: Some("memory:".into()),
            ..Config::default()
        };
        assert_eq!(c.store_url().unwrap(), StoreUrl::Memory);
        c.store = Some("sqlite:/tmp/x.db".into());
        assert_eq!(c.store_url().unwrap(), StoreUrl::Sqlite("/tmp/x.db".into()));
        c.store = Some("sqlite:".into());
        assert!(c.store_url().is_err());
        c.store = Some("nats://127.0.0.1:4222?stream=EV".into());
        assert_eq!(
            c.store_url().unwrap(),
            StoreUrl::Nats("nats://127.0.0.1:4222?stream=EV".into())
        );
        c.store = Some("redis://127.0.0.1:6379?key=ev".into());
        assert_eq!(
            c.store_url().unwrap(),
            StoreUrl::Redis("redis://127.0.0.1:6379?key=ev".into())
        );
    }

    #[test]
    fn tokens_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            "[[auth.tokens]]\ntoken = \"abc\"\npublish = [\"orders.>\"]\nsubscribe = [\">\"]\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), vec![], vec![]).unwrap();
        assert_eq!(c.auth.tokens[0].publish, vec!["orders.>"]);
        std::fs::write(
            &f,
            "[[auth.tokens]]\ntoken = \"abc\"\npublish = [\"a..b\"]\n",
        )
        .unwrap();
        assert!(Config::load(Some(&f), vec![], vec![]).is_err());
    }
}
