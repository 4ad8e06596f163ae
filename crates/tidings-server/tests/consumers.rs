//! Durable consumers over the server, and filters.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tidings_server::config::TokenConfig;
use tokio_tungstenite::tungstenite::Message;

async fn ack_http(s: &TestServer, name: &str, seq: u64) -> (u16, Value) {
    let r = s
        .http
        .post(s.url(&format!("/consumers/{name}/ack")))
        .json(&json!({ "seq": seq }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn wait_cursor(s: &TestServer, name: &str, want: u64) {
    for _ in 0..200 {
        let (_, c) = s.get(&format!("/consumers/{name}")).await;
        if c["cursor"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the cursor of {name} never reached {want}");
}

#[tokio::test]
async fn a_ws_consumer_resumes_after_its_ack_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let mut s = sqlite_server({
        let data = data.clone();
        move |c| c.data_dir = data
    })
    .await;
    for i in 0..5 {
        s.post(json!({"name": "story.x", "data": i})).await;
        s.post(json!({"name": "noise"})).await;
    }
    let mut ws = s.ws("/ws?consumer=timeline&pattern=story.%3E").await;
    let welcome = next_json(&mut ws).await;
    assert_eq!(
        (welcome["consumer"].as_str(), &welcome["cursor"]),
        (Some("timeline"), &json!(0))
    );
    let seqs: Vec<u64> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(next_json(&mut ws).await["seq"].as_u64().unwrap());
        }
        v
    };
    assert_eq!(seqs, [1, 3, 5, 7, 9]);
    send_json(&mut ws, json!({"op": "ack", "seq": 5})).await;
    send_json(&mut ws, json!({"op": "ack", "seq": 99})).await;
    let refused = next_json(&mut ws).await;
    assert_eq!(
        refused["code"], "invalid_ack",
        "cannot ack what was not delivered"
    );
    wait_cursor(&s, "timeline", 5).await;
    drop(ws);
    s.shutdown().await;

    // Restart on the same data: 7 and 9 were not acknowledged: again.
    let s = sqlite_server(move |c| c.data_dir = data).await;
    let mut ws = s.ws("/ws?consumer=timeline&pattern=story.%3E").await;
    assert_eq!(next_json(&mut ws).await["cursor"], 5);
    assert_eq!(next_json(&mut ws).await["seq"], 7);
    assert_eq!(next_json(&mut ws).await["seq"], 9);
    let (_, list) = s.get("/consumers").await;
    let c = &list["consumers"][0];
    assert_eq!(c["name"], "timeline");
    assert_eq!(c["patterns"], json!(["story.>"]));
    assert_eq!(
        (
            c["cursor"].as_u64(),
            c["last_seq"].as_u64(),
            c["lag"].as_u64()
        ),
        (Some(5), Some(10), Some(5))
    );
    assert_eq!(c["connected"], true);
    let metrics = s.text("/metrics").await;
    assert!(
        metrics.contains("tidings_consumer_lag{consumer=\"timeline\"} 5"),
        "{metrics}"
    );
}

#[tokio::test]
async fn takeover_conflicts_http_acks_and_delete() {
    let s = memory_server(|_| {}).await;
    for _ in 0..3 {
        s.post(json!({"name": "job.run"})).await;
    }
    let mut first = s.ws("/ws?consumer=w&pattern=job.*").await;
    next_json(&mut first).await;
    // Other patterns: refused until it is deleted.
    let r = tokio_tungstenite::connect_async(format!("{}/ws?consumer=w&pattern=other", s.ws_base))
        .await;
    match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 409),
        other => panic!("expected 409, got {:?}", other.map(|_| ())),
    }
    let (st, _) = sse(&s, "consumer=w&pattern=other", None)
        .await
        .err()
        .unwrap();
    assert_eq!(st, 409);
    // A second connection takes over; the first is closed with a reason.
    let mut events = sse(&s, "consumer=w&pattern=job.*", None).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match first.next().await {
                Some(Ok(Message::Close(Some(f)))) => return f,
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(u16::from(closed.code), 4409);
    let (id, _, _) = events.next().await;
    assert_eq!(
        id.as_deref(),
        Some("1"),
        "nothing was acknowledged: from the start"
    );
    events.next().await;
    assert_eq!(ack_http(&s, "w", 2).await.0, 200);
    wait_cursor(&s, "w", 2).await;
    assert_eq!(ack_http(&s, "nope", 1).await.0, 404);
    let r = s
        .http
        .post(s.url("/consumers/w/ack"))
        .json(&json!({"sequence": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s.http.delete(s.url("/consumers/w")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.get("/consumers/w").await.0, 404);
    assert_eq!(s.get("/consumers").await.1["consumers"], json!([]));
    // Deleted: the name can be defined anew with other patterns.
    let mut again = s.ws("/ws?consumer=w&pattern=other").await;
    assert_eq!(next_json(&mut again).await["consumer"], "w");
    let (st, body) = s.get("/consumers/bad%20name").await;
    assert_eq!((st, body["code"].as_str()), (400, Some("invalid_consumer")));
}

#[tokio::test]
async fn consumers_are_scoped_by_their_patterns() {
    let s = memory_server(|c| {
        c.auth.tokens = vec![
            TokenConfig {
                token: "orders".into(),
                name: None,
                publish: vec![">".into()],
                subscribe: vec!["orders.>".into()],
            },
            TokenConfig {
                token: "payroll".into(),
                name: None,
                publish: vec![">".into()],
                subscribe: vec!["payroll.>".into()],
            },
        ]
    })
    .await;
    let mut ws = s.ws("/ws?consumer=o&pattern=orders.*&token=orders").await;
    next_json(&mut ws).await;
    let list = |tok: &'static str| {
        let url = s.url(&format!("/consumers?token={tok}"));
        let http = s.http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        list("orders").await["consumers"].as_array().unwrap().len(),
        1
    );
    assert_eq!(list("payroll").await["consumers"], json!([]));
    let r = s
        .http
        .get(s.url("/consumers/o?token=payroll"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "another scope cannot see it");
    let r = s
        .http
        .delete(s.url("/consumers/o?token=payroll"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "nor delete it");
    let r = tokio_tungstenite::connect_async(format!(
        "{}/ws?consumer=o&pattern=orders.*&token=payroll",
        s.ws_base
    ))
    .await;
    assert!(r.is_err(), "nor take it over");
    // Opening it with its own patterns: the answer does not show the
    // other scope's definition.
    let r = s
        .http
        .get(s.url("/sse?consumer=o&pattern=payroll.*&token=payroll"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(!body.contains("orders"), "{body}");
    assert_eq!(s.get("/consumers").await.0, 401);
}

#[tokio::test]
async fn filters_deliver_exactly_the_matching_events() {
    let s = memory_server(|c| c.stream_queue = 2).await;
    let f = "data.world_id%20%3D%3D%2042%20%26%26%20source%20!%3D%20%22bot%22";
    let mut ws = s.ws(&format!("/ws?pattern=move&filter={f}")).await;
    next_json(&mut ws).await;
    let mut sse_stream = sse(&s, &format!("pattern=move&filter={f}"), None)
        .await
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..30u64 {
        let (world, source) = match i % 3 {
            0 => (42, "game"),
            1 => (42, "bot"),
            _ => (7, "game"),
        };
        let (_, e) = s
            .post(json!({"name": "move", "source": source, "data": {"world_id": world}}))
            .await;
        if world == 42 && source != "bot" {
            expected.push(e["seq"].as_u64().unwrap());
        }
    }
    s.post(json!({"name": "move", "data": "no fields"})).await;
    let mut got = Vec::new();
    let mut got_sse = Vec::new();
    for _ in 0..expected.len() {
        got.push(next_json(&mut ws).await["seq"].as_u64().unwrap());
        got_sse.push(sse_stream.next().await.0.unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(got, expected);
    assert_eq!(got_sse, expected);
    quiet(&mut ws, 200).await;
    let (_, page) = s.get(&format!("/events?pattern=move&filter={f}")).await;
    let hist: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(hist, expected);
    let (st, body) = s.get("/events?filter=data.world_id%20%3D%3D").await;
    assert_eq!((st, body["code"].as_str()), (400, Some("invalid_filter")));
    assert!(
        body["error"].as_str().unwrap().contains("data.world_id =="),
        "{body}"
    );
    let metrics = s.text("/metrics").await;
    assert!(
        metrics.contains("tidings_filter_failures_total"),
        "{metrics}"
    );
}

/// One ack per event is never refused by the command rate limit.
#[tokio::test]
async fn acks_are_not_rate_limited() {
    let s = memory_server(|c| c.commands_per_sec = 1).await;
    for _ in 0..50 {
        s.post(json!({"name": "a.b"})).await;
    }
    let mut ws = s.ws("/ws?consumer=fast&pattern=a.*").await;
    next_json(&mut ws).await;
    for seq in 1..=50u64 {
        assert_eq!(next_json(&mut ws).await["seq"], seq);
        send_json(&mut ws, json!({"op": "ack", "seq": seq})).await;
    }
    quiet(&mut ws, 300).await;
    wait_cursor(&s, "fast", 50).await;
}
