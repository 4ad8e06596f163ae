//! Several servers on one shared log (NATS JetStream, Redis Streams): an
//! event published to any of them is delivered by all of them in one
//! gap-free order; killing one leaves the other serving; a restarted one
//! catches up. Switched on by TIDINGS_TEST_NATS / TIDINGS_TEST_REDIS.

mod common;

use std::process::Child;
use std::time::Duration;

use common::{all_events, spawn_binary};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(store: &str, dir: &std::path::Path) -> Server {
    let (child, base) = spawn_binary(&[
        "--store".as_ref(),
        store.as_ref(),
        "--data-dir".as_ref(),
        dir.as_os_str(),
    ]);
    Server { child, base }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(base: &str, after: Option<u64>) -> Ws {
    let mut url = format!("{}/ws?pattern=%3E", base.replacen("http", "ws", 1));
    if let Some(a) = after {
        url.push_str(&format!("&after={a}"));
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let welcome = next(&mut ws).await;
    assert_eq!(welcome["type"], "connection");
    ws
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("no message within 15 s")
            .expect("socket ended")
            .expect("socket error");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// (seq, id) of the next `n` events.
async fn take(ws: &mut Ws, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let v = next(ws).await;
        assert!(v.get("type").is_none(), "unexpected control message {v}");
        out.push((
            v["seq"].as_u64().unwrap(),
            v["id"].as_str().unwrap().to_owned(),
        ));
    }
    out
}

async fn history(http: &reqwest::Client, base: &str) -> Vec<(u64, String)> {
    all_events(http, base)
        .await
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn publish_many(http: reqwest::Client, base: String, tag: usize, n: usize) {
    for i in 0..n {
        let body = if i % 10 == 0 {
            json!([{"name": "cluster.batch", "data": [tag, i]}, {"name": "cluster.batch", "data": [tag, i]}])
        } else {
            json!({"name": "cluster.one", "data": [tag, i]})
        };
        let r = http
            .post(format!("{base}/events"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }
}

fn dense(v: &[(u64, String)], from: u64) {
    for (i, (seq, _)) in v.iter().enumerate() {
        assert_eq!(*seq, from + i as u64, "gap or duplicate at position {i}");
    }
}

/// The value of the counter `name` in `base`'s `/metrics`.
async fn counter(http: &reqwest::Client, base: &str, name: &str) -> u64 {
    let text = common::get_text(http, &format!("{base}/metrics")).await;
    let line = format!("{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// `engine`: the store's metric prefix (`nats`, `redis`).
async fn two_servers_share_one_log(store: &str, engine: &str) {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let a = spawn(store, dir_a.path());
    let b = spawn(store, dir_b.path());
    let mut ws_a = subscribe(&a.base, None).await;
    let mut ws_b = subscribe(&b.base, None).await;

    // Concurrent publishes to both servers: 4 publishers x 40 posts, every
    // tenth post a batch of two -> 176 events.
    let pubs: Vec<_> = (0..4)
        .map(|t| {
            let base = if t % 2 == 0 {
                a.base.clone()
            } else {
                b.base.clone()
            };
            tokio::spawn(publish_many(http.clone(), base, t, 40))
        })
        .collect();
    let (seen_a, seen_b) = tokio::join!(take(&mut ws_a, 176), take(&mut ws_b, 176));
    for p in pubs {
        p.await.unwrap();
    }
    dense(&seen_a, 1);
    assert_eq!(seen_a, seen_b, "both servers deliver the same order");
    assert_eq!(history(&http, &a.base).await, seen_a, "server A's history");
    assert_eq!(history(&http, &b.base).await, seen_a, "server B's history");
    // Each server's store counted the events it appended; together, all.
    let appended = format!("tidings_{engine}_events_appended");
    let (by_a, by_b) = (
        counter(&http, &a.base, &appended).await,
        counter(&http, &b.base, &appended).await,
    );
    assert!(by_a > 0 && by_b > 0, "{by_a} {by_b}");
    assert_eq!(by_a + by_b, 176);
    for base in [&a.base, &b.base] {
        let failed = format!("tidings_{engine}_failed_appends");
        assert_eq!(counter(&http, base, &failed).await, 0);
    }

    // Kill A: B keeps serving.
    drop(a);
    publish_many(http.clone(), b.base.clone(), 9, 10).await; // 11 events
    let more = take(&mut ws_b, 11).await;
    dense(&more, 177);

    // Restart A on the same store: it catches up, then follows B live.
    let a2 = spawn(store, dir_a.path());
    let mut ws_a2 = subscribe(&a2.base, Some(0)).await;
    let caught_up = take(&mut ws_a2, 187).await;
    let mut all = seen_a.clone();
    all.extend(more);
    assert_eq!(caught_up, all, "the restarted server caught up");
    publish_many(http.clone(), b.base.clone(), 10, 1).await;
    let (x, y) = tokio::join!(take(&mut ws_a2, 1), take(&mut ws_b, 1));
    assert_eq!(x, y);
    assert_eq!(x[0].0, 188);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_nats_stream() {
    let Ok(url) = std::env::var("TIDINGS_TEST_NATS") else {
        eprintln!("skipped: TIDINGS_TEST_NATS not set");
        return;
    };
    let stream = format!("cluster_{}", uuid::Uuid::now_v7().simple());
    let store = format!("{url}?stream={stream}");
    two_servers_share_one_log(&store, "nats").await;
    if let Ok(log) = tidings_nats::NatsLog::connect(&store, Default::default()).await {
        let _ = log.destroy().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_redis_stream() {
    let Ok(url) = std::env::var("TIDINGS_TEST_REDIS") else {
        eprintln!("skipped: TIDINGS_TEST_REDIS not set");
        return;
    };
    let key = format!("tidings-cluster-{}", uuid::Uuid::now_v7().simple());
    let store = format!("{url}?key={key}");
    two_servers_share_one_log(&store, "redis").await;
    if let Ok(log) = tidings_redis::RedisLog::connect(&store, Default::default()).await {
        let _ = log.destroy().await;
    }
}

/// One consumer shared by two servers on one log: its definition and
/// cursor live in the log, so it resumes on the other server after the
/// last ack made on the first, and the other patterns are refused there.
async fn two_servers_share_one_consumer(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let a = spawn(store, &dir.path().join("a"));
    let b = spawn(store, &dir.path().join("b"));
    for i in 0..10 {
        let r = http
            .post(format!("{}/events", a.base))
            .json(&json!({"name": "job.run", "data": i}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let ws_url = |base: &str, pattern: &str| {
        format!(
            "{}/ws?consumer=shared&pattern={pattern}",
            base.replacen("http", "ws", 1)
        )
    };
    let (mut on_a, _) = tokio_tungstenite::connect_async(ws_url(&a.base, "job.*"))
        .await
        .unwrap();
    assert_eq!(next(&mut on_a).await["consumer"], "shared");
    let first = take(&mut on_a, 6).await;
    assert_eq!(
        first.iter().map(|e| e.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    on_a.send(Message::Text(
        json!({"op": "ack", "seq": 4}).to_string().into(),
    ))
    .await
    .unwrap();
    let cursor_on = |base: String| {
        let http = http.clone();
        async move {
            let v: Value = http
                .get(format!("{base}/consumers/shared"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["cursor"].as_u64()
        }
    };
    let mut seen = None;
    for _ in 0..300 {
        seen = cursor_on(b.base.clone()).await;
        if seen == Some(4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, Some(4), "server b sees the ack made on server a");
    drop(on_a);
    // The definition is shared: other patterns are refused on b too.
    match tokio_tungstenite::connect_async(ws_url(&b.base, "other")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 409),
        other => panic!("expected 409, got {:?}", other.map(|_| ())),
    }
    let (mut on_b, _) = tokio_tungstenite::connect_async(ws_url(&b.base, "job.*"))
        .await
        .unwrap();
    assert_eq!(next(&mut on_b).await["cursor"], 4);
    let rest = take(&mut on_b, 6).await;
    assert_eq!(
        rest.iter().map(|e| e.0).collect::<Vec<_>>(),
        [5, 6, 7, 8, 9, 10],
        "resumes after the last ack: 5 and 6 again, nothing lost"
    );
    let r = http
        .delete(format!("{}/consumers/shared", b.base))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_a_consumer_on_nats() {
    let Ok(url) = std::env::var("TIDINGS_TEST_NATS") else {
        eprintln!("skipped: TIDINGS_TEST_NATS not set");
        return;
    };
    let stream = format!("consumer_{}", uuid::Uuid::now_v7().simple());
    let store = format!("{url}?stream={stream}");
    two_servers_share_one_consumer(&store).await;
    if let Ok(log) = tidings_nats::NatsLog::connect(&store, Default::default()).await {
        let _ = log.destroy().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_a_consumer_on_redis() {
    let Ok(url) = std::env::var("TIDINGS_TEST_REDIS") else {
        eprintln!("skipped: TIDINGS_TEST_REDIS not set");
        return;
    };
    let key = format!("tidings-consumer-{}", uuid::Uuid::now_v7().simple());
    let store = format!("{url}?key={key}");
    two_servers_share_one_consumer(&store).await;
    if let Ok(log) = tidings_redis::RedisLog::connect(&store, Default::default()).await {
        let _ = log.destroy().await;
    }
}
