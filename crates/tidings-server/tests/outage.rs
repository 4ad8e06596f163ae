//! An engine outage seen through the server: publishes fail with a clear
//! 503 (never a silent drop), and after the engine is back a WebSocket
//! subscriber goes on from its last seq without a gap. Runs against a
//! private redis-server on a free port (never the machine's shared one);
//! switched on by TIDINGS_TEST_REDIS like the other engine tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tidings_server::config::Config;
use tokio_tungstenite::tungstenite::Message;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private redis-server, killed and reaped when dropped.
struct Engine(Child);

impl Engine {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis(port: u16, dir: &std::path::Path) -> Engine {
    let engine = Engine(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return engine;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-server did not start on {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_fail_with_503_during_an_outage_and_subscribers_resume() {
    if std::env::var("TIDINGS_TEST_REDIS").is_err() {
        eprintln!("skipped: TIDINGS_TEST_REDIS not set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut engine = redis(port, dir.path());
    let server = tidings_server::server::start(Config {
        listen: "127.0.0.1:0".into(),
        store: Some(format!("redis://127.0.0.1:{port}?key=outage")),
        ..Config::default()
    })
    .await
    .unwrap();
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?pattern=o.*", server.addr))
            .await
            .unwrap();
    let post = |i: u64| {
        let http = http.clone();
        let url = format!("{base}/events");
        async move {
            let r = http
                .post(url)
                .json(&json!({"name": "o.e", "data": i}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let mut acked = Vec::new();
    for i in 0..5 {
        let (st, v) = post(i).await;
        assert_eq!(st, 200);
        acked.push(v["seq"].as_u64().unwrap());
    }

    engine.kill();
    let started = Instant::now();
    let (st, err) = post(100).await;
    assert_eq!(st, 503, "{err}");
    assert_eq!(err["code"], "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed in bounded time"
    );

    let _engine = redis(port, dir.path());
    let mut ok = None;
    for i in 0..100 {
        let (st, v) = post(200 + i).await;
        if st == 200 {
            ok = Some(v["seq"].as_u64().unwrap());
            break;
        }
        assert_eq!(st, 503, "only 503 while reconnecting: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acked.push(ok.expect("publishing works again after the engine is back"));
    for i in 0..3 {
        let (st, v) = post(300 + i).await;
        assert_eq!(st, 200);
        acked.push(v["seq"].as_u64().unwrap());
    }
    // The subscriber got every acknowledged event, in order, no gap.
    let mut got = Vec::new();
    while got.len() < acked.len() {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v.get("type").is_none() {
                got.push(v["seq"].as_u64().unwrap());
            }
        }
    }
    assert_eq!(got, acked);
    let want: Vec<u64> = (1..=acked.len() as u64).collect();
    assert_eq!(acked, want, "nothing was assigned to the refused publish");
    server.shutdown().await;
}
