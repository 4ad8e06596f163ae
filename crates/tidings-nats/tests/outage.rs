//! Connection loss against a private nats-server this test starts on a free
//! port (never the machine's shared one): appends fail with `Unavailable`
//! within a bound while it is down, succeed again after it restarts on the
//! same store, and nothing acknowledged is lost; the log stays gap-free.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings_core::log::LogFailure;

use serde_json::json;
use tidings_core::log::AppendError;
use tidings_core::{EventLog, NewEvent};
use tidings_nats::{NatsLog, NatsOptions};
use tokio::process::{Child, Command};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn start_server(port: u16, dir: &Path) -> Child {
    Command::new(NATS_SERVER)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start nats-server")
}

async fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nats-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ev(i: u64) -> NewEvent {
    NewEvent::new("outage.item", json!({ "i": i })).expect("valid name")
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
    let mut server = start_server(port, dir.path());
    wait_listening(port).await;

    let opts = NatsOptions {
        request_timeout: Duration::from_millis(1000),
        append_timeout: Duration::from_millis(2000),
        ..NatsOptions::default()
    };
    let url = format!("nats://127.0.0.1:{port}?stream=OUTAGE");
    let log = Arc::new(NatsLog::connect(&url, opts).await.expect("connect"));

    // Acknowledged appends: seq -> event id.
    let mut acked = HashMap::new();
    let mut i = 0;
    for _ in 0..50 {
        let c = log
            .append(vec![ev(i)], None)
            .await
            .expect("append while up");
        acked.insert(c[0].event.seq, c[0].event.id);
        i += 1;
    }

    // Kill the server while a writer task is publishing.
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut ok = Vec::new();
            let mut unavailable = 0u32;
            let mut slowest = Duration::ZERO;
            let until = Instant::now() + Duration::from_secs(4);
            let mut j = 1_000_000;
            while Instant::now() < until {
                let t = Instant::now();
                match log.append(vec![ev(j)], None).await {
                    Ok(c) => ok.push((c[0].event.seq, c[0].event.id)),
                    Err(AppendError::Failed(LogFailure::Unavailable(_))) => {
                        unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(other) => panic!("expected Unavailable during the outage, got {other}"),
                }
                slowest = slowest.max(t.elapsed());
                j += 1;
            }
            (ok, unavailable, slowest)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill().await.expect("kill nats-server");
    let (ok, unavailable, slowest) = writer.await.expect("writer");
    acked.extend(ok);
    assert!(unavailable > 0, "appends during the outage must fail");
    assert!(
        slowest < Duration::from_millis(3500),
        "an append took {slowest:?} (bound: append_timeout + slack)"
    );

    // Restart on the same port and store; appends succeed again.
    let mut server = start_server(port, dir.path());
    wait_listening(port).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match log.append(vec![ev(i)], None).await {
            Ok(c) => {
                acked.insert(c[0].event.seq, c[0].event.id);
                break;
            }
            Err(AppendError::Failed(LogFailure::Unavailable(_))) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("appends did not recover: {e}"),
        }
    }
    for _ in 0..20 {
        i += 1;
        let c = log
            .append(vec![ev(i)], None)
            .await
            .expect("append after restart");
        acked.insert(c[0].event.seq, c[0].event.id);
    }

    // Gap-free, and every acknowledged event is there at its seq.
    let page = log.read(0, 1_000_000).await.expect("read");
    let n = page.last_seq;
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    for (seq, id) in &acked {
        assert_eq!(
            page.events[(*seq - 1) as usize].id,
            *id,
            "acked seq {seq} lost"
        );
    }
    // The watch went on from its last seq.
    let mut w = log.watch();
    tokio::time::timeout(Duration::from_secs(10), w.wait_for(|v| *v == n))
        .await
        .expect("watch caught up after the restart")
        .expect("watch open");
    println!(
        "outage: {} acked, {unavailable} refused as unavailable, slowest append {slowest:?}, last seq {n}",
        acked.len()
    );
    drop(log);
    server.kill().await.ok();
}
