//! Starting and stopping a server: the router, the listener, and the
//! connection-level limits every route shares.
//!
//! Every accepted TCP connection is wrapped in a [`StallGuard`]: a write
//! that makes no progress for `send_timeout_secs` fails, which ends the
//! connection, whatever it carries (a response, a WebSocket, an SSE
//! stream). Headers must arrive within `header_read_timeout_secs`; bodies
//! within `body_read_timeout_secs` (see [`crate::request::read_body`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::{header, Method};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;
use crate::service::{stopped, SchemaLoadError, Schemas, Service, Store, StoreError};
use crate::{http, request, sse, ws};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A `[[schemas]]` entry could not be compiled.
    #[error(transparent)]
    Schema(#[from] SchemaLoadError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The whole HTTP surface over `service`.
pub fn router(service: Arc<Service>) -> Router {
    let cors = &service.config.cors_origins;
    let allowed_hosts: Option<Arc<[String]>> = service.config.hosts_allowed().map(Into::into);
    let mut router = Router::new()
        .route("/events", get(http::get_events).post(http::post_events))
        .route("/channels", get(http::get_channels))
        .route("/schemas", get(http::get_schemas))
        .route("/export", get(http::export))
        .route("/healthz", get(http::healthz))
        .route("/metrics", get(http::metrics))
        .route("/ws", get(ws::ws_patterns))
        .route("/ws/events/{channel}", get(ws::ws_channel))
        .route("/sse", get(sse::sse))
        .route("/consumers", get(http::list_consumers))
        .route(
            "/consumers/{name}",
            get(http::get_consumer).delete(http::delete_consumer),
        )
        .route(
            "/consumers/{name}/ack",
            axum::routing::post(http::ack_consumer),
        )
        .route("/", get(crate::dashboard::index))
        .route("/assets/{*path}", get(crate::dashboard::asset))
        .route("/stats", get(crate::dashboard::stats))
        .fallback(crate::response::not_found)
        .with_state(service.clone());
    if !cors.is_empty() {
        let origins: Vec<axum::http::HeaderValue> =
            cors.iter().filter_map(|o| o.parse().ok()).collect();
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    axum::http::HeaderName::from_static("last-event-id"),
                ]),
        );
    }
    router.layer(axum::middleware::from_fn_with_state(
        allowed_hosts,
        request::guard_host,
    ))
}

/// A server accepting connections.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The service behind it.
    pub service: Arc<Service>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    store: Store,
}

/// Opens the store and starts serving.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    // Before the store: a server never runs with a schema it cannot compile.
    let schemas = Schemas::load(&config)?;
    let mut store = Store::open(&config).await?;
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
    let service = Service::new(
        config,
        store.log.clone(),
        store.log.shared(),
        schemas,
        store.metrics.take(),
    );
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, service.clone(), rx));
    tracing::info!(%addr, "tidings listening");
    Ok(RunningServer {
        addr,
        service,
        shutdown,
        task,
        store,
    })
}

/// Accepts connections until `stop`, then waits for open requests.
async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    mut stop: watch::Receiver<bool>,
) {
    let app = router(service.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(service.config.header_read_timeout_secs));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let send_timeout = service.config.send_timeout();
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(%e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        // Small event frames must not wait for the peer's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(%e, "cannot set TCP_NODELAY");
        }
        let io = TokioIo::new(StallGuard::new(tcp, send_timeout));
        let hyper_service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(io, hyper_service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Sessions (upgraded sockets, SSE streams) end with a close frame.
    service.shut_down();
    graceful.shutdown().await;
}

impl RunningServer {
    /// Stops accepting, closes every socket with a close frame, waits for
    /// open requests, then flushes and closes the log.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(%e, "server task failed");
        }
        self.store.close().await;
        tracing::info!("tidings stopped");
    }
}

/// A TCP stream whose writes fail once one has made no progress for the
/// send timeout: a peer that stops reading cannot hold a connection (and
/// its queue) forever.
pub struct StallGuard {
    inner: TcpStream,
    timeout: Duration,
    /// Armed while a write or flush is pending; reset on progress.
    /// Invariant: `Some` only between a `Pending` write and the next
    /// completed one.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl StallGuard {
    /// Wraps `inner`.
    pub fn new(inner: TcpStream, timeout: Duration) -> StallGuard {
        StallGuard {
            inner,
            timeout,
            stalled: None,
        }
    }

    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the peer read nothing for {} s (send_timeout_secs)",
                timeout.as_secs()
            ),
        )))
    }

    fn progress<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.pending(cx),
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
