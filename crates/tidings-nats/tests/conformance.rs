//! tidings-core's backend conformance suite against a real nats-server
//! (`TIDINGS_TEST_NATS`, e.g. `nats://127.0.0.1:4222`), one fresh stream per
//! log; every stream a check made is deleted after it, pass or fail.

mod common;

use std::sync::Arc;

use futures_util::FutureExt;
use parking_lot::Mutex;
use tidings_core::conformance::LogSpec;
use tidings_core::EventLog;
use tidings_nats::{NatsLog, NatsOptions};

async fn make(server: String, made: Arc<Mutex<Vec<String>>>, spec: LogSpec) -> Arc<dyn EventLog> {
    let stream = common::unique_stream("conf");
    made.lock().push(stream.clone());
    let opts = NatsOptions {
        retention: spec.retention,
        idempotency_window: spec.idempotency_window,
        ..NatsOptions::default()
    };
    let log = NatsLog::open(&server, &stream, opts)
        .await
        .expect("open a NATS log");
    Arc::new(log)
}

macro_rules! nats_conformance {
    ([] $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(server) = common::nats_url() else { return };
                let made = Arc::new(Mutex::new(Vec::new()));
                let m = made.clone();
                let s = server.clone();
                let outcome = std::panic::AssertUnwindSafe(tidings_core::conformance::$check(
                    move |spec| make(s.clone(), m.clone(), spec),
                ))
                .catch_unwind()
                .await;
                let streams: Vec<String> = made.lock().clone();
                for stream in streams {
                    common::delete_stream(&server, &stream).await;
                }
                if let Err(panic) = outcome {
                    std::panic::resume_unwind(panic);
                }
            }
        )*
    };
}

tidings_core::conformance_checks!(nats_conformance);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_reopen() {
    let Some(server) = common::nats_url() else {
        return;
    };
    let stream = common::unique_stream("reopen");
    let outcome = std::panic::AssertUnwindSafe(tidings_core::conformance::survives_reopen(|| {
        let (server, stream) = (server.clone(), stream.clone());
        async move {
            let log = NatsLog::open(&server, &stream, NatsOptions::default())
                .await
                .expect("open the same stream");
            Arc::new(log) as Arc<dyn EventLog>
        }
    }))
    .catch_unwind()
    .await;
    common::delete_stream(&server, &stream).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
