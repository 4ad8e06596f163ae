//! tidings-core's backend conformance suite against a real nats-server
//! (`TIDINGS_TEST_NATS`, e.g. `nats://127.0.0.1:4222`), one fresh stream per
//! log; every stream a check made is deleted after it, pass or fail.

mod common;

use std::sync::Arc;

use futures_util::FutureExt;
use parking_lot::Mutex;
use tidings_core::conformance::{BoxedOpener, Opened};
use tidings_core::{EventLog, LogOptions};
use tidings_nats::{NatsLog, NatsOptions};

/// The streams a check made, deleted after it.
type Made = Arc<Mutex<Vec<String>>>;

async fn make(server: String, made: Made, log: LogOptions) -> Opened {
    let stream = common::unique_stream("conf");
    made.lock().push(stream.clone());
    let opts = NatsOptions {
        log,
        ..NatsOptions::default()
    };
    let log = NatsLog::open(&server, &stream, opts)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(log))
}

/// A new stream and an opener of new instances on it.
fn new_store(server: String, made: Made) -> BoxedOpener {
    let stream = common::unique_stream("store");
    made.lock().push(stream.clone());
    Box::new(move || {
        let (server, stream) = (server.clone(), stream.clone());
        Box::pin(async move {
            let log = NatsLog::open(&server, &stream, NatsOptions::default())
                .await
                .expect("open the same stream");
            Arc::new(log) as Arc<dyn EventLog>
        })
    })
}

/// Runs `check`, then deletes every stream it made, then re-raises its
/// panic if it failed.
async fn run_and_clean(server: &str, made: Made, check: impl std::future::Future<Output = ()>) {
    let outcome = std::panic::AssertUnwindSafe(check).catch_unwind().await;
    let streams: Vec<String> = made.lock().clone();
    for stream in streams {
        common::delete_stream(server, &stream).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

macro_rules! nats_conformance {
    ([] $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(server) = common::nats_url() else { return };
                let made = Made::default();
                let (s, m) = (server.clone(), made.clone());
                let check = tidings_core::conformance::$check(
                    move |options| make(s.clone(), m.clone(), options),
                );
                run_and_clean(&server, made, check).await;
            }
        )*
    };
}

macro_rules! nats_store_conformance {
    ([] $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(server) = common::nats_url() else { return };
                let made = Made::default();
                let open = new_store(server.clone(), made.clone());
                run_and_clean(&server, made, tidings_core::conformance::$check(open)).await;
            }
        )*
    };
}

tidings_core::conformance_checks!(nats_conformance);
tidings_core::conformance_store_checks!(nats_store_conformance);
