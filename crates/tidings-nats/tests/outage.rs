//! Losing NATS while appending: core's outage check
//! ([`tidings_core::conformance::outage_fails_fast_and_loses_nothing`])
//! against a private nats-server this test starts on a free port with a
//! temporary store directory (never the machine's shared one), which the
//! check kills in the middle of a stream of appends and starts again on
//! the same port and store.
//!
//! Gated by `TIDINGS_TEST_NATS` like the other tests (it needs
//! `/usr/sbin/nats-server`, which CI has).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_core::conformance::{
    outage_fails_fast_and_loses_nothing, outage_shows_in_the_counters, EngineProcess,
};
use tidings_core::EventLog;
use tidings_nats::{NatsLog, NatsOptions};
use tokio::process::{Child, Command};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A nats-server with JetStream on `port` over `dir`, killed on drop.
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

    async fn spawn(&mut self) {
        let child = Command::new(NATS_SERVER)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl EngineProcess for Server {
    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.expect("kill nats-server");
        }
    }

    async fn restart(&mut self) {
        self.spawn().await;
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_fail_fast_during_an_outage_and_nothing_acked_is_lost() {
    if common::nats_url().is_none() {
        return;
    }
    if !Path::new(NATS_SERVER).exists() {
        println!("skipped: {NATS_SERVER} not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut server = Server::start(port, dir.path()).await;
    let opts = NatsOptions {
        request_timeout: Duration::from_millis(1000),
        append_timeout: Duration::from_millis(2000),
        ..NatsOptions::default()
    };
    let url = format!("nats://127.0.0.1:{port}?stream=OUTAGE");
    let handle = NatsLog::connect(&url, opts).await.expect("connect");
    let log: Arc<dyn EventLog> = Arc::new(handle.clone());
    // An append answers within its append_timeout, plus slack.
    let unavailable =
        outage_fails_fast_and_loses_nothing(log, &mut server, Duration::from_millis(3_500)).await;
    outage_shows_in_the_counters(
        unavailable,
        || handle.stats().appends,
        || handle.stats().follower_restarts,
    )
    .await;
}
