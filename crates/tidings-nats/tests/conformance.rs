//! tidings-core's backend conformance suite against a real nats-server
//! (`TIDINGS_TEST_NATS`, e.g. `nats://127.0.0.1:4222`), one fresh stream per
//! log; a check's streams are deleted when its logs are dropped, pass or
//! fail.

mod common;

use std::sync::Arc;

use tidings_core::conformance::{BoxedOpener, Guarded, Opened};
use tidings_core::{EventLog, LogOptions};
use tidings_nats::{NatsLog, NatsOptions};

async fn make(log: LogOptions) -> Opened {
    let server = common::nats_url().expect("checked by the test");
    let stream = common::unique_stream("conf");
    let guard = common::delete_on_drop(&server, &stream);
    let opts = NatsOptions {
        log,
        ..NatsOptions::default()
    };
    let log = NatsLog::open(&server, &stream, opts)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(Guarded { log, guard }))
}

/// A new stream (deleted once the opener and every log on it are gone),
/// and an opener of new instances on it.
fn new_store() -> BoxedOpener {
    let server = common::nats_url().expect("checked by the test");
    let stream = common::unique_stream("store");
    let guard = Arc::new(common::delete_on_drop(&server, &stream));
    Box::new(move || {
        let (server, stream, guard) = (server.clone(), stream.clone(), guard.clone());
        Box::pin(async move {
            let log = NatsLog::open(&server, &stream, NatsOptions::default())
                .await
                .expect("open the same stream");
            Arc::new(Guarded { log, guard }) as Arc<dyn EventLog>
        })
    })
}

tidings_core::conformance_tests!(
    make,
    store = new_store,
    skip_unless_env = "TIDINGS_TEST_NATS"
);
