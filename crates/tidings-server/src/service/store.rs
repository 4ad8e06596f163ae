//! Opening the log a server's settings name.

use std::sync::Arc;
use std::time::Duration;

use tidings_core::{EventLog, MemoryLog, Retention};
use tidings_sqlite::{Durability, SqliteLog, SqliteOptions};

use crate::config::{Config, ConfigError, StoreUrl};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The SQLite file could not be opened.
    #[error("cannot open the SQLite store: {0}")]
    Sqlite(#[from] tidings_sqlite::OpenError),
    /// The NATS JetStream store could not be opened.
    #[error("cannot open the NATS store: {0}")]
    Nats(#[from] tidings_nats::ConnectError),
    /// The Redis store could not be opened.
    #[error("cannot open the Redis store: {0}")]
    Redis(#[from] tidings_redis::ConnectError),
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// An opened log and how to close it.
pub struct Store {
    /// The log.
    pub log: Arc<dyn EventLog>,
    /// Other servers append to it too (NATS, Redis): the bus follows it.
    pub shared: bool,
    sqlite: Option<SqliteLog>,
}

impl Store {
    /// Opens the store the settings name.
    pub async fn open(config: &Config) -> Result<Store, StoreError> {
        let retention = Retention {
            max_count: config.retention_max_count,
            max_age: config.retention_max_age_secs.map(Duration::from_secs),
        };
        match config.store_url()? {
            StoreUrl::Memory => {
                let log = MemoryLog::with_options(
                    Retention {
                        max_count: retention
                            .max_count
                            .or(Some(tidings_core::log::DEFAULT_MAX_COUNT)),
                        ..retention
                    },
                    tidings_core::log::DEFAULT_IDEMPOTENCY_WINDOW,
                );
                Ok(Store {
                    log: Arc::new(log),
                    shared: false,
                    sqlite: None,
                })
            }
            StoreUrl::Nats(url) => {
                let options = tidings_nats::NatsOptions {
                    retention,
                    ..Default::default()
                };
                let log = tidings_nats::NatsLog::connect(&url, options).await?;
                Ok(Store {
                    log: Arc::new(log),
                    shared: true,
                    sqlite: None,
                })
            }
            StoreUrl::Redis(url) => {
                let options = tidings_redis::RedisOptions {
                    retention,
                    ..Default::default()
                };
                let log = tidings_redis::RedisLog::connect(&url, options).await?;
                Ok(Store {
                    log: Arc::new(log),
                    shared: true,
                    sqlite: None,
                })
            }
            StoreUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                        path: dir.to_owned(),
                        source,
                    })?;
                }
                let durability = match config.durability.as_str() {
                    "batch" => Durability::Batch {
                        interval: Duration::from_millis(config.batch_interval_ms.max(1)),
                    },
                    "none" => Durability::None,
                    _ => Durability::Sync,
                };
                let log = SqliteLog::open(
                    &path,
                    SqliteOptions::default()
                        .durability(durability)
                        .retention(retention)
                        .archive_dir(config.archive_dir.clone()),
                )?;
                Ok(Store {
                    log: Arc::new(log.clone()),
                    shared: false,
                    sqlite: Some(log),
                })
            }
        }
    }

    /// Flushes and closes the log.
    pub fn close(&self) {
        if let Some(s) = &self.sqlite {
            if let Err(e) = s.close() {
                tracing::error!(%e, "closing the SQLite store failed");
            }
        }
    }
}
