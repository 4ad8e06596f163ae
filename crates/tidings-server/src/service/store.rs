//! Opening the log a server's settings name.

use std::sync::Arc;
use std::time::Duration;

use tidings_core::{EventLog, MemoryLog};
use tidings_sqlite::{Durability, SqliteLog, SqliteOptions};

use prometheus_client::collector::Collector;

use crate::config::{Config, ConfigError, StoreUrl};
use crate::metrics::stores::{EngineCollector, SqliteCollector};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The memory log's options are invalid.
    #[error("invalid memory store options: {0}")]
    Memory(#[from] tidings_core::log::OptionsError),
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

/// An opened log.
pub struct Store {
    /// The log ([`EventLog::shared`]: other servers append to it too, so
    /// the bus follows it; [`EventLog::close`] flushes and closes it).
    pub log: Arc<dyn EventLog>,
    /// The store's own counters, for the server's metrics registry (taken
    /// by the service when it is built).
    pub metrics: Option<Box<dyn Collector>>,
}

impl Store {
    fn of(log: impl EventLog) -> Store {
        Store {
            log: Arc::new(log),
            metrics: None,
        }
    }
}

impl Store {
    /// Opens the store the settings name.
    pub async fn open(config: &Config) -> Result<Store, StoreError> {
        let log_options = config.log_options();
        match config.store_url()? {
            StoreUrl::Memory => Ok(Store::of(MemoryLog::with_options(log_options)?)),
            StoreUrl::Nats(url) => {
                let options = tidings_nats::NatsOptions {
                    log: log_options,
                    ..Default::default()
                };
                let log = tidings_nats::NatsLog::connect(&url, options).await?;
                Ok(Store {
                    metrics: Some(Box::new(EngineCollector::nats(log.clone()))),
                    log: Arc::new(log),
                })
            }
            StoreUrl::Redis(url) => {
                let options = tidings_redis::RedisOptions {
                    log: log_options,
                    ..Default::default()
                };
                let log = tidings_redis::RedisLog::connect(&url, options).await?;
                Ok(Store {
                    metrics: Some(Box::new(EngineCollector::redis(log.clone()))),
                    log: Arc::new(log),
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
                        interval: Duration::from_millis(config.batch_interval_ms),
                    },
                    "none" => Durability::None,
                    _ => Durability::Sync,
                };
                let log = SqliteLog::open(
                    &path,
                    SqliteOptions {
                        log: log_options,
                        ..SqliteOptions::default()
                    }
                    .durability(durability)
                    .archive_dir(config.archive_dir.clone()),
                )?;
                Ok(Store {
                    metrics: Some(Box::new(SqliteCollector(log.clone()))),
                    log: Arc::new(log),
                })
            }
        }
    }

    /// Flushes and closes the log.
    pub async fn close(&self) {
        if let Err(e) = self.log.close().await {
            tracing::error!(%e, "closing the store failed");
        }
    }
}
