//! Losing Redis while appending: core's outage check
//! ([`tidings_core::conformance::outage_fails_fast_and_loses_nothing`])
//! against a redis-server of its own (a free port, a temporary directory,
//! `appendonly yes` and `appendfsync always` so what was acknowledged
//! survives the kill; the machine's shared Redis is never touched), which
//! the check kills in the middle of a stream of appends and starts again
//! on the same port and directory.
//!
//! Gated by `TIDINGS_TEST_REDIS` like the other tests (it needs
//! `/usr/bin/redis-server`, which CI has).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_core::conformance::{
    outage_fails_fast_and_loses_nothing, outage_shows_in_the_counters, EngineProcess,
};
use tidings_core::EventLog;
use tidings_redis::{RedisLog, RedisOptions};

const REDIS_SERVER: &str = "/usr/bin/redis-server";
const TIMEOUT: Duration = Duration::from_secs(2);

/// A redis-server child process on `port` over `dir`, killed on drop.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Server {
    async fn start(port: u16, dir: &Path) -> Server {
        let mut s = Server {
            child: None,
            port,
            dir: dir.to_owned(),
        };
        s.spawn().await;
        s
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            // `everysec` may answer writes it has not yet handed to the OS
            // (when an fsync is slow, Redis postpones the write up to 2 s):
            // a SIGKILL then loses acknowledged events.
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {REDIS_SERVER}: {e}"));
        self.child = Some(child);
        wait_ready(&self.url()).await;
    }
}

impl EngineProcess for Server {
    /// SIGKILL: no shutdown, no final save (the AOF has what was acked).
    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill redis-server");
            c.wait().expect("reap redis-server");
        }
    }

    async fn restart(&mut self) {
        self.spawn().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

async fn wait_ready(url: &str) {
    let client = redis::Client::open(url).expect("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
            if pong.is_ok() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_fail_fast_during_an_outage_and_nothing_acked_is_lost() {
    if common::redis_url().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(free_port(), dir.path()).await;
    let options = RedisOptions {
        timeout: TIMEOUT,
        max_reconnect_delay: Duration::from_millis(500),
        ..RedisOptions::default()
    };
    let log = RedisLog::open(&server.url(), "outage", options)
        .await
        .expect("open");
    let handle = log.clone();
    let log: Arc<dyn EventLog> = Arc::new(log);
    // An append answers within the timeout, plus slack for a busy machine.
    let unavailable = outage_fails_fast_and_loses_nothing(
        log,
        &mut server,
        TIMEOUT + Duration::from_millis(1_500),
    )
    .await;
    outage_shows_in_the_counters(
        unavailable,
        || handle.stats().appends,
        || handle.stats().follower_reconnects,
    )
    .await;
    assert_eq!(handle.stats().lost_writes, 0);
}
