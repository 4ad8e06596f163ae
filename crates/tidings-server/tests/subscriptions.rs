//! WebSocket and SSE subscriptions: patterns, commands, resume, slow
//! clients, limits, shutdown.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn ws_patterns_and_live_commands() {
    let s = memory_server(|_| {}).await;
    let mut ws = s.ws("/ws?pattern=order.*&pattern=user.%3E").await;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "connection");
    assert_eq!(welcome["patterns"], json!(["order.*", "user.>"]));
    s.post(json!({"name": "order.placed"})).await;
    s.post(json!({"name": "noise"})).await;
    s.post(json!({"name": "user.a.b"})).await;
    assert_eq!(next_json(&mut ws).await["seq"], 1);
    assert_eq!(next_json(&mut ws).await["seq"], 3);

    send_json(&mut ws, json!({"op": "subscribe", "pattern": "noise"})).await;
    let r = next_json(&mut ws).await;
    assert_eq!(r["type"], "subscribed");
    assert_eq!(r["pattern"], "noise");
    assert_eq!(
        r["count"], 3,
        "the reply counts the patterns, it does not echo them"
    );
    send_json(&mut ws, json!({"op": "unsubscribe", "pattern": "order.*"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "unsubscribed");
    s.post(json!({"name": "order.paid"})).await;
    s.post(json!({"name": "noise"})).await;
    assert_eq!(next_json(&mut ws).await["seq"], 5);

    send_json(&mut ws, json!({"op": "ping"})).await;
    let pong = next_json(&mut ws).await;
    assert_eq!(
        (pong["type"].as_str(), pong["last_seq"].as_u64()),
        (Some("pong"), Some(5))
    );
}

#[tokio::test]
async fn ws_bad_commands_get_errors_and_the_socket_stays_open() {
    let s = memory_server(|_| {}).await;
    let mut ws = s.ws("/ws").await;
    next_json(&mut ws).await;
    for (cmd, code) in [
        (json!({"op": "dance"}), "unknown_command"),
        (json!({"pattern": "x"}), "unknown_command"),
        (
            json!({"op": "subscribe", "pattern": "a..b"}),
            "invalid_pattern",
        ),
        (
            json!({"op": "unsubscribe", "pattern": "never"}),
            "not_subscribed",
        ),
    ] {
        send_json(&mut ws, cmd).await;
        let r = next_json(&mut ws).await;
        assert_eq!(
            (r["type"].as_str(), r["code"].as_str()),
            (Some("error"), Some(code)),
            "{r}"
        );
    }
    ws.send_text("not json").await;
    assert_eq!(next_json(&mut ws).await["code"], "unknown_command");
    // A frame far larger than the socket's 1 KiB read buffer still arrives.
    let big = json!({"op": "subscribe", "pattern": "x".repeat(20_000)}).to_string();
    ws.send_text(&big).await;
    let r = next_json(&mut ws).await;
    assert_eq!(r["code"], "invalid_pattern", "{r}");
    assert!(r["error"].as_str().unwrap().contains("255"), "{r}");
    send_json(&mut ws, json!({"op": "subscribe", "pattern": "late"})).await;
    next_json(&mut ws).await;
    s.post(json!({"name": "late"})).await;
    assert_eq!(next_json(&mut ws).await["name"], "late");
}

trait SendText {
    async fn send_text(&mut self, t: &str);
}
impl SendText for Ws {
    async fn send_text(&mut self, t: &str) {
        use futures_util::SinkExt;
        self.send(Message::Text(t.to_owned().into())).await.unwrap();
    }
}

#[tokio::test]
async fn ws_resumes_after_a_seq_without_gap() {
    let s = sqlite_server(|_| {}).await;
    for i in 0..20 {
        s.post(json!({"name": "r.x", "data": i})).await;
    }
    let mut ws = s.ws("/ws?pattern=r.*&after=15").await;
    next_json(&mut ws).await;
    for want in 16..=20 {
        assert_eq!(next_json(&mut ws).await["seq"], want);
    }
    s.post(json!({"name": "r.live"})).await;
    assert_eq!(next_json(&mut ws).await["seq"], 21);
}

#[tokio::test]
async fn sse_delivers_with_ids_and_resumes_by_last_event_id() {
    let s = sqlite_server(|_| {}).await;
    let mut a = sse(&s, "pattern=chat.%3E", None).await.unwrap();
    for i in 0..5 {
        s.post(json!({"name": "chat.room.1", "data": i})).await;
    }
    for want in 1..=3u64 {
        let (id, event, data) = a.next().await;
        assert_eq!(id.as_deref(), Some(want.to_string().as_str()));
        assert_eq!(event, None, "plain events use the default type");
        assert_eq!(data["seq"], want);
    }
    drop(a); // the browser lost its connection after id 3
    s.post(json!({"name": "chat.room.2"})).await;
    let mut b = sse(&s, "pattern=chat.%3E", Some("3")).await.unwrap();
    for want in 4..=6u64 {
        assert_eq!(b.next().await.2["seq"], want);
    }
    // Last-Event-ID wins over `after`.
    let mut c = sse(&s, "pattern=chat.%3E&after=0", Some("5"))
        .await
        .unwrap();
    assert_eq!(c.next().await.2["seq"], 6);
}

#[tokio::test]
async fn sse_refuses_bad_requests() {
    let s = memory_server(|_| {}).await;
    let (st, body) = sse(&s, "pattern=x", Some("abc")).await.err().unwrap();
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("invalid_last_event_id"))
    );
    let (st, body) = sse(&s, "after=1", None).await.err().unwrap();
    assert_eq!((st, body["code"].as_str()), (400, Some("missing_pattern")));
    let (st, body) = sse(&s, "pattern=a%20b", None).await.err().unwrap();
    assert_eq!((st, body["code"].as_str()), (400, Some("invalid_pattern")));
    let (st, body) = sse(&s, "pattern=x&after=z", None).await.err().unwrap();
    assert_eq!((st, body["code"].as_str()), (400, Some("invalid_after")));
}

#[tokio::test]
async fn a_stalled_client_does_not_hold_back_the_others_and_loses_nothing() {
    let s = sqlite_server(|c| c.stream_queue = 8).await;
    // The stalled client connects and then reads nothing for a while.
    let mut stalled = s.ws("/ws?pattern=load.*").await;
    next_json(&mut stalled).await;
    let mut fast = s.ws("/ws?pattern=load.*").await;
    next_json(&mut fast).await;
    let payload = "x".repeat(4096);
    let publisher = {
        let http = s.http.clone();
        let url = s.url("/events");
        let payload = payload.clone();
        tokio::spawn(async move {
            for i in 0..400 {
                let r = http
                    .post(&url)
                    .json(&json!({"name": "load.item", "data": {"i": i, "pad": payload}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    for want in 1..=400u64 {
        assert_eq!(
            next_json(&mut fast).await["seq"],
            want,
            "the fast client kept up"
        );
    }
    publisher.await.unwrap();
    // Now the stalled client reads: everything, in order, no lag notice.
    for want in 1..=400u64 {
        let m = next_json(&mut stalled).await;
        assert_eq!(m["seq"], want, "{m}");
    }
}

#[tokio::test]
async fn a_client_behind_pruned_events_is_told_what_it_missed() {
    let s = memory_server(|c| {
        c.retention_max_count = Some(5);
        c.stream_queue = 1;
    })
    .await;
    for i in 0..20 {
        s.post(json!({"name": "p", "data": i})).await;
    }
    let mut ws = s.ws("/ws?pattern=p&after=2").await;
    next_json(&mut ws).await;
    let lag = next_json(&mut ws).await;
    assert_eq!(
        lag,
        json!({"type": "lagged", "missed": 13, "resume_from": 16})
    );
    assert_eq!(next_json(&mut ws).await["seq"], 16);
    let mut e = sse(&s, "pattern=p&after=2", None).await.unwrap();
    let (id, event, data) = e.next().await;
    assert_eq!(
        (id.as_deref(), event.as_deref()),
        (Some("15"), Some("lagged"))
    );
    assert_eq!(data["missed"], 13);
    assert_eq!(e.next().await.2["seq"], 16);
}

#[tokio::test]
async fn connection_limit_is_429() {
    let s = memory_server(|c| c.max_connections = 1).await;
    let mut a = s.ws("/ws?pattern=x").await;
    next_json(&mut a).await;
    match tokio_tungstenite::connect_async(format!("{}/ws?pattern=x", s.ws_base)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    let (st, body) = sse(&s, "pattern=x", None).await.err().unwrap();
    assert_eq!((st, body["code"].as_str()), (429, Some("limit_reached")));
}

#[tokio::test]
async fn keepalive_pings_flow_on_idle_sockets() {
    let s = memory_server(|c| c.keepalive_secs = 1).await;
    let mut ws = s.ws("/ws?pattern=x").await;
    next_json(&mut ws).await;
    let got_ping = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Ping(_)) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(got_ping);
}

#[tokio::test]
async fn shutdown_closes_sockets_with_a_close_frame() {
    let mut s = memory_server(|_| {}).await;
    let mut ws = s.ws("/ws?pattern=x").await;
    next_json(&mut ws).await;
    let mut e = sse(&s, "pattern=x", None).await.unwrap();
    let stop = tokio::spawn(async move {
        s.shutdown().await;
    });
    match tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    drop(ws);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = e.body_next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the SSE stream ended on shutdown");
    tokio::time::timeout(Duration::from_secs(10), stop)
        .await
        .unwrap()
        .unwrap();
}
