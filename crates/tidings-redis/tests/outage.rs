//! Losing Redis while publishing: against a redis-server of its own (a free
//! port, a temporary directory, `appendonly yes` and `appendfsync always`
//! so what was acknowledged survives the kill; the machine's shared Redis is never touched), the test kills the
//! server in the middle of a stream of appends, checks that appends fail
//! with `Unavailable` within the timeout (never hang, never succeed), starts
//! the server again on the same port and directory, checks that appends
//! succeed again, that nothing acknowledged was lost, that the log is
//! gap-free, and that a follower running throughout saw every event once.
//!
//! Gated by `TIDINGS_TEST_REDIS` like the other tests (it needs
//! `/usr/bin/redis-server`, which CI has).

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings_core::log::LogFailure;

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::json;
use tidings_core::log::AppendError;
use tidings_core::{stream_from, Delivery, EventLog, NewEvent, Position};
use tidings_redis::{RedisLog, RedisOptions};
use uuid::Uuid;

const REDIS_SERVER: &str = "/usr/bin/redis-server";
const TIMEOUT: Duration = Duration::from_secs(2);

/// A redis-server child process, killed on drop.
struct Server {
    child: Child,
}

impl Server {
    fn start(port: u16, dir: &Path) -> Server {
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            // `everysec` may answer writes it has not yet handed to the OS
            // (when an fsync is slow, Redis postpones the write up to 2 s):
            // a SIGKILL then loses acknowledged events.
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {REDIS_SERVER}: {e}"));
        Server { child }
    }

    /// SIGKILL: no shutdown, no final save (the AOF has what was acked).
    fn kill(&mut self) {
        self.child.kill().expect("kill redis-server");
        self.child.wait().expect("reap redis-server");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
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

#[derive(Default)]
struct Tally {
    /// (seq, id) of every acknowledged event.
    acked: Mutex<Vec<(u64, Uuid)>>,
    unavailable: AtomicU64,
    /// The longest an append took to answer, in ms.
    slowest_ms: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_fail_fast_during_an_outage_and_nothing_acked_is_lost() {
    if common::redis_url().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut server = Server::start(port, dir.path());
    wait_ready(&url).await;

    let options = RedisOptions {
        timeout: TIMEOUT,
        max_reconnect_delay: Duration::from_millis(500),
        ..RedisOptions::default()
    };
    let log = RedisLog::open(&url, "outage", options.clone())
        .await
        .expect("open");
    let shared: Arc<dyn EventLog> = Arc::new(log.clone());

    // A follower running through the whole test; what it saw is shared so
    // the test can check it while it runs.
    let seen: Arc<Mutex<Vec<(u64, Uuid)>>> = Arc::default();
    let read_errors = Arc::new(AtomicU64::new(0));
    let follower = {
        let (log, seen, read_errors) = (shared.clone(), seen.clone(), read_errors.clone());
        tokio::spawn(async move {
            let mut s = stream_from(log, Position::Beginning);
            while let Some(item) = s.next().await {
                match item {
                    Ok(Delivery::Event(e)) => seen.lock().push((e.seq, e.id)),
                    Ok(other) => panic!("the follower was told {other:?}"),
                    Err(_) => {
                        // A read failed during the outage: polling again
                        // retries from the same position.
                        read_errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };

    // The publisher: one event at a time, as fast as it can.
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (log, tally, stop) = (shared.clone(), tally.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let e = NewEvent::new("outage.tick", json!({ "i": i })).expect("name");
                let started = Instant::now();
                let r = log.append(vec![e], None).await;
                let took = started.elapsed().as_millis() as u64;
                tally.slowest_ms.fetch_max(took, Ordering::Relaxed);
                match r {
                    Ok(c) => tally.acked.lock().push((c[0].event.seq, c[0].event.id)),
                    Err(AppendError::Failed(LogFailure::Unavailable(_))) => {
                        tally.unavailable.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(other) => panic!("append {i} failed with {other:?}, not Unavailable"),
                }
                i += 1;
            }
        })
    };

    let acked = |t: &Tally| t.acked.lock().len();
    let wait_until = |what: &'static str, secs: u64, cond: Box<dyn Fn() -> bool + Send>| async move {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };

    // Publishing works; kill the server in the middle of it.
    let t = tally.clone();
    wait_until("200 acked appends", 30, Box::new(move || acked(&t) >= 200)).await;
    server.kill();
    let acked_at_kill = acked(&tally);
    let killed_at = Instant::now();

    // Appends now fail with Unavailable, promptly.
    let t = tally.clone();
    wait_until(
        "3 Unavailable errors",
        20,
        Box::new(move || t.unavailable.load(Ordering::Relaxed) >= 3),
    )
    .await;
    let acked_while_down = acked(&tally) - acked_at_kill;
    assert!(
        acked_while_down <= 1,
        "{acked_while_down} appends were acknowledged by a dead server"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slowest = tally.slowest_ms.load(Ordering::Relaxed);
    assert!(
        slowest <= TIMEOUT.as_millis() as u64 + 1_500,
        "an append took {slowest} ms to fail (timeout {TIMEOUT:?})"
    );
    println!(
        "outage: {} Unavailable in {:?}, slowest append {slowest} ms",
        tally.unavailable.load(Ordering::Relaxed),
        killed_at.elapsed()
    );

    // Restart on the same port and directory: appends succeed again.
    let _server = Server::start(port, dir.path());
    wait_ready(&url).await;
    let before = acked(&tally);
    let t = tally.clone();
    wait_until(
        "100 acked appends after the restart",
        30,
        Box::new(move || acked(&t) >= before + 100),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.expect("publisher");

    // Nothing acknowledged was lost, and the log is gap-free.
    let page = log.read(0, 1_000_000).await.expect("read after restart");
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=page.last_seq).collect::<Vec<_>>(),
        "the log is gap-free"
    );
    let stored: std::collections::HashMap<u64, Uuid> =
        page.events.iter().map(|e| (e.seq, e.id)).collect();
    let acked_all = tally.acked.lock().clone();
    for (seq, id) in &acked_all {
        assert_eq!(stored.get(seq), Some(id), "acknowledged seq {seq} is kept");
    }
    println!(
        "acked {} events, log holds {} (the rest were sent but unanswered), {} Unavailable",
        acked_all.len(),
        page.last_seq,
        tally.unavailable.load(Ordering::Relaxed)
    );

    // The follower went on through the outage without a gap.
    let last = page.last_seq;
    let mut rx = shared.watch();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v >= last))
        .await
        .expect("watch reached the last seq")
        .expect("watch open");
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().last().map(|(s, _)| *s) != Some(last) {
        assert!(
            !follower.is_finished(),
            "the follower stopped (panicked or its stream ended)"
        );
        assert!(
            Instant::now() < deadline,
            "the follower did not reach seq {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    follower.abort();
    let seen = seen.lock().clone();
    let want: Vec<(u64, Uuid)> = page.events.iter().map(|e| (e.seq, e.id)).collect();
    assert_eq!(seen, want, "the follower saw every event once, in order");
    println!(
        "the follower saw all {last} events ({} read errors during the outage)",
        read_errors.load(Ordering::Relaxed)
    );
}
