//! Starting and stopping a server.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::http::{router, AppState};
use crate::service::{Service, Store, StoreError};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A server accepting connections.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The service behind it.
    pub service: Arc<Service>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    store: Store,
}

/// Opens the store and starts serving.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let store = Store::open(&config).await?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen.clone(),
        source,
    })?;
    // Small event frames must not wait for the peer's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(%e, "cannot set TCP_NODELAY");
        }
    });
    let service = Service::new(config, store.log.clone(), store.shared);
    let (shutdown, rx) = watch::channel(false);
    let app = router(AppState {
        service: service.clone(),
        shutdown: rx.clone(),
    });
    let mut stop = rx;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|v| *v).await;
            })
            .await
    });
    tracing::info!(%addr, "tidings listening");
    Ok(RunningServer {
        addr,
        service,
        shutdown,
        task,
        store,
    })
}

impl RunningServer {
    /// Stops accepting, closes every socket with a close frame, waits for
    /// open requests, then flushes and closes the log.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(%e, "server stopped with an error"),
            Err(e) => tracing::error!(%e, "server task failed"),
        }
        self.store.close();
        tracing::info!("tidings stopped");
    }
}
