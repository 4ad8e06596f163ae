//! tidings-core's backend conformance suite, run against the Redis server
//! named by `TIDINGS_TEST_REDIS`, with a fresh log under a unique key per
//! check (its keys are deleted when the check's log is dropped).

mod common;

use std::sync::Arc;

use tidings_core::conformance::{BoxedOpener, Guarded, Opened};
use tidings_core::{EventLog, LogOptions};
use tidings_redis::{RedisLog, RedisOptions};

async fn make(log: LogOptions) -> Opened {
    let url = common::redis_url().expect("checked by the test");
    let options = RedisOptions {
        log,
        ..RedisOptions::default()
    };
    let key = common::unique_key("conformance");
    let guard = common::delete_on_drop(&url, &key);
    let log = RedisLog::open(&url, &key, options)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(Guarded { log, guard }))
}

/// A new unique key (deleted once the opener and every log on it are
/// gone), and an opener of a new instance on it.
fn new_store() -> BoxedOpener {
    let url = common::redis_url().expect("checked by the test");
    let key = common::unique_key("store");
    let guard = Arc::new(common::delete_on_drop(&url, &key));
    Box::new(move || {
        let (url, key, guard) = (url.clone(), key.clone(), guard.clone());
        Box::pin(async move {
            let log = RedisLog::open(&url, &key, RedisOptions::default())
                .await
                .expect("open the same key");
            Arc::new(Guarded { log, guard }) as Arc<dyn EventLog>
        })
    })
}

tidings_core::conformance_tests!(
    make,
    store = new_store,
    skip_unless_env = "TIDINGS_TEST_REDIS"
);
