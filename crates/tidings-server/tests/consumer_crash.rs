//! kill -9 of the real server with a durable consumer on SQLite: after a
//! restart the consumer resumes exactly after its last committed ack —
//! nothing acknowledged comes again, nothing after it is lost.

mod common;

use std::time::Duration;

use common::{next_json, send_json, spawn_binary};
use serde_json::{json, Value};

fn spawn(dir: &std::path::Path) -> (std::process::Child, String) {
    spawn_binary(&["--data-dir".as_ref(), dir.as_os_str()])
}

async fn consumer(base: &str) -> common::Ws {
    let ws = base.replacen("http", "ws", 1);
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{ws}/ws?consumer=proj&pattern=job.%3E"))
            .await
            .unwrap();
    assert_eq!(next_json(&mut socket).await["consumer"], "proj");
    socket
}

async fn cursor(http: &reqwest::Client, base: &str) -> u64 {
    let v: Value = http
        .get(format!("{base}/consumers/proj"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["cursor"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_resumes_after_its_committed_ack_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (mut child, base) = spawn(dir.path());
    for i in 0..60 {
        let r = http
            .post(format!("{base}/events"))
            .json(&json!({"name": if i % 4 == 3 { "other" } else { "job.run" }, "data": i}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let wanted: Vec<u64> = (1..=60).filter(|s| (s - 1) % 4 != 3).collect();

    // Round 1: process and acknowledge the first 20, read 10 more without
    // acknowledging them, then the server dies.
    let mut ws = consumer(&base).await;
    let mut seen = Vec::new();
    for _ in 0..30 {
        seen.push(next_json(&mut ws).await["seq"].as_u64().unwrap());
    }
    assert_eq!(seen, wanted[..30]);
    let acked = wanted[19];
    send_json(&mut ws, json!({"op": "ack", "seq": acked})).await;
    for _ in 0..200 {
        if cursor(&http, &base).await == acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cursor(&http, &base).await, acked, "the ack was committed");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Round 2: resumes right after the committed ack; the unacknowledged
    // ten come again, then the rest; nothing is missing.
    let (mut child, base) = spawn(dir.path());
    assert_eq!(cursor(&http, &base).await, acked);
    let mut ws = consumer(&base).await;
    let mut again = Vec::new();
    for _ in 20..wanted.len() {
        again.push(next_json(&mut ws).await["seq"].as_u64().unwrap());
    }
    assert_eq!(
        again,
        wanted[20..],
        "exactly after the ack, no gap, in order"
    );
    send_json(
        &mut ws,
        json!({"op": "ack", "seq": *wanted.last().unwrap()}),
    )
    .await;
    for _ in 0..200 {
        if cursor(&http, &base).await == 60 - 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Round 3: everything was acknowledged: nothing comes again.
    let (mut child, base) = spawn(dir.path());
    let mut ws = consumer(&base).await;
    common::quiet(&mut ws, 300).await;
    child.kill().unwrap();
    child.wait().unwrap();
}
