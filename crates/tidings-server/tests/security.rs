//! Regression tests for "Safe to expose": each finding of the review, as a
//! test against a real server.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tidings_server::config::TokenConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

fn token(token: &str, publish: &[&str], subscribe: &[&str]) -> TokenConfig {
    TokenConfig {
        token: token.into(),
        name: None,
        publish: publish.iter().map(|s| s.to_string()).collect(),
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
    }
}

async fn post_as(s: &TestServer, tok: &str, body: Value) -> (u16, Value) {
    let r = s
        .http
        .post(s.url("/events"))
        .bearer_auth(tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn jwt(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"k"),
    )
    .unwrap()
}

#[tokio::test]
async fn idempotency_keys_live_in_the_callers_namespace() {
    let s = memory_server(|c| {
        c.auth.tokens = vec![
            token("payroll", &["payroll.>"], &["payroll.>"]),
            token("orders", &["orders.>"], &["orders.>"]),
            token("blind", &["orders.>"], &[]),
        ]
    })
    .await;
    let (st, first) = post_as(
        &s,
        "payroll",
        json!({"name": "payroll.paid", "key": "K", "data": {"salary": 1}}),
    )
    .await;
    assert_eq!(st, 200);
    let (st, second) = post_as(
        &s,
        "orders",
        json!({"name": "orders.created", "key": "K", "data": {"n": 2}}),
    )
    .await;
    assert_eq!(st, 200, "{second}");
    assert_ne!(second["seq"], first["seq"], "its own event was stored");
    assert_eq!(second["name"], "orders.created");
    assert!(second.get("duplicate").is_none(), "{second}");
    assert_eq!(second["key"], "K", "clients see their own key");
    // A repeat in one namespace answers the original to who may read it.
    let (st, again) = post_as(&s, "orders", json!({"name": "orders.created", "key": "K"})).await;
    assert_eq!((st, &again["duplicate"]), (200, &json!(true)));
    assert_eq!(again["seq"], second["seq"]);
    // A caller that may not read the original gets 409 and nothing of it.
    let (st, body) = post_as(&s, "blind", json!({"name": "orders.x", "key": "B"})).await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = post_as(&s, "blind", json!({"name": "orders.x", "key": "B"})).await;
    assert_eq!((st, body["code"].as_str()), (409, Some("duplicate_key")));
    assert!(
        body.get("data").is_none() && body.get("seq").is_none(),
        "{body}"
    );
    // A key with control characters is refused, not stored.
    let (st, body) = post_as(&s, "orders", json!({"name": "orders.y", "key": "a\u{1f}b"})).await;
    assert_eq!((st, body["code"].as_str()), (400, Some("invalid_key")));
}

#[tokio::test]
async fn cloudevent_keys_are_namespaced_too() {
    let s = memory_server(|c| {
        c.auth.tokens = vec![token("a", &[">"], &[">"]), token("b", &[">"], &[">"])]
    })
    .await;
    let ce = json!({"specversion": "1.0", "type": "x.y", "source": "/s", "id": "1"});
    let send = |tok: &'static str| {
        s.http
            .post(s.url("/events"))
            .bearer_auth(tok)
            .header("content-type", "application/cloudevents+json")
            .body(ce.to_string())
            .send()
    };
    let a: Value = send("a").await.unwrap().json().await.unwrap();
    let b: Value = send("b").await.unwrap().json().await.unwrap();
    assert_ne!(a["seq"], b["seq"]);
    assert!(b.get("duplicate").is_none());
}

#[tokio::test]
async fn only_json_publishes_are_taken() {
    let s = memory_server(|_| {}).await;
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let (st, body) = s.post_raw(ct, r#"{"name":"a.b"}"#).await;
        assert_eq!(
            (st, body["code"].as_str()),
            (415, Some("unsupported_media_type")),
            "{ct}"
        );
    }
    let r = s
        .http
        .post(s.url("/events"))
        .body(r#"{"name":"a.b"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "no content type");
    assert_eq!(
        s.get("/events").await.1["events"],
        json!([]),
        "nothing stored"
    );
}

#[tokio::test]
async fn event_times_far_ahead_are_refused() {
    let s = memory_server(|c| c.max_future_secs = 60).await;
    let (st, body) = s
        .post(json!({"name": "a.b", "time": "9999-01-01T00:00:00Z"}))
        .await;
    assert_eq!((st, body["code"].as_str()), (400, Some("time_in_future")));
    assert!(body["error"].as_str().unwrap().contains("max_future_secs"));
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc3339();
    let (st, body) = s.post(json!({"name": "a.b", "time": soon})).await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = s
        .post(json!({"name": "a.b", "time": "1999-01-01T00:00:00Z"}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        body["time"], "1999-01-01T00:00:00Z",
        "the event keeps its time"
    );
}

#[tokio::test]
async fn a_connection_holds_a_bounded_number_of_patterns() {
    let s = memory_server(|c| c.max_patterns_per_connection = 2).await;
    let r =
        tokio_tungstenite::connect_async(format!("{}/ws?pattern=a&pattern=b&pattern=c", s.ws_base))
            .await;
    match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    let (st, _) = sse(&s, "pattern=a&pattern=b&pattern=c", None)
        .await
        .err()
        .unwrap();
    assert_eq!(st, 429);
    let mut ws = s.ws("/ws?pattern=a").await;
    next_json(&mut ws).await;
    send_json(&mut ws, json!({"op": "subscribe", "pattern": "b"})).await;
    assert_eq!(next_json(&mut ws).await["count"], 2);
    send_json(&mut ws, json!({"op": "subscribe", "pattern": "c"})).await;
    let r = next_json(&mut ws).await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("limit_reached"))
    );
    // Re-subscribing a held pattern is not a new one.
    send_json(&mut ws, json!({"op": "subscribe", "pattern": "b"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
}

#[tokio::test]
async fn commands_are_rate_limited() {
    let s = memory_server(|c| c.commands_per_sec = 5).await;
    let mut ws = s.ws("/ws").await;
    next_json(&mut ws).await;
    for _ in 0..30 {
        send_json(&mut ws, json!({"op": "ping"})).await;
    }
    let mut limited = 0;
    let mut pongs = 0;
    for _ in 0..30 {
        let r = next_json(&mut ws).await;
        match r["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") if r["code"] == "limit_reached" => limited += 1,
            _ => panic!("unexpected {r}"),
        }
    }
    assert!(pongs <= 12, "a burst of twice the rate, about: {pongs}");
    assert!(limited >= 18, "{limited}");
}

#[tokio::test]
async fn binary_frames_and_stray_acks_count_against_the_command_rate() {
    use futures_util::SinkExt;
    let s = memory_server(|c| c.commands_per_sec = 5).await;
    let mut ws = s.ws("/ws").await;
    next_json(&mut ws).await;
    for i in 0..30 {
        if i % 2 == 0 {
            ws.send(Message::Binary(vec![1, 2, 3].into()))
                .await
                .unwrap();
        } else {
            // Not a consumer: an ack is just another command here.
            send_json(&mut ws, json!({"op": "ack", "seq": 1})).await;
        }
    }
    let mut limited = 0;
    for _ in 0..30 {
        let r = next_json(&mut ws).await;
        assert_eq!(r["type"], "error", "{r}");
        if r["code"] == "limit_reached" {
            limited += 1;
        }
    }
    assert!(limited >= 18, "{limited} of 30 refused for the rate");
}

#[tokio::test]
async fn the_connection_limit_holds_under_concurrent_connects() {
    let s = memory_server(|c| c.max_connections = 5).await;
    let attempts = (0..40).map(|_| {
        let url = format!("{}/ws?pattern=a", s.ws_base);
        tokio::spawn(async move {
            tokio_tungstenite::connect_async(url)
                .await
                .ok()
                .map(|(ws, _)| ws)
        })
    });
    let mut open = Vec::new();
    for a in attempts {
        if let Some(ws) = a.await.unwrap() {
            open.push(ws);
        }
    }
    assert_eq!(
        open.len(),
        5,
        "exactly max_connections sockets were accepted"
    );
}

#[tokio::test]
async fn channel_names_are_one_channel_whichever_separator() {
    let s = memory_server(|c| c.max_subscribers_per_channel = 1).await;
    let mut a = s.ws("/ws/events/game:room").await;
    assert_eq!(next_json(&mut a).await["channel"], "game:room");
    let mut b = s.ws("/ws/events/game.room").await;
    match tokio::time::timeout(Duration::from_secs(5), b.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1013),
        other => panic!("expected the channel to be full, got {other:?}"),
    }
    let (_, ch) = s.get("/channels").await;
    assert_eq!(ch["channels"], json!({"game.room": 1}));
}

#[tokio::test]
async fn channels_show_only_what_the_caller_may_see() {
    let s = memory_server(|c| {
        c.auth.tokens = vec![
            token("all", &[], &[">"]),
            token("orders", &[], &["orders.>"]),
        ]
    })
    .await;
    let _a = s.ws("/ws/events/orders.eu?token=all").await;
    let _b = s.ws("/ws/events/payroll?token=all").await;
    let get = |tok: &'static str| {
        let url = s.url(&format!("/channels?token={tok}"));
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
    for _ in 0..100 {
        if get("all").await["total_channels"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get("all").await["channels"],
        json!({"orders.eu": 1, "payroll": 1})
    );
    let mine = get("orders").await;
    assert_eq!(mine["channels"], json!({"orders.eu": 1}));
    assert_eq!(mine["total_channels"], 1);
}

#[tokio::test]
async fn hosts_outside_the_allowed_list_are_refused() {
    let s = memory_server(|_| {}).await;
    let r = s
        .http
        .get(s.url("/healthz"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "loopback listener: only loopback names");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "host_not_allowed");
    let port = s.base.rsplit(':').next().unwrap().to_owned();
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let r = s
            .http
            .get(s.url("/healthz"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let open = memory_server(|c| c.allowed_hosts = Some(vec!["*".into()])).await;
    let r = open
        .http
        .get(open.url("/healthz"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn history_pages_have_a_byte_budget() {
    let s = memory_server(|c| c.history_max_bytes = 300_000).await;
    let big = "x".repeat(200_000);
    for _ in 0..4 {
        assert_eq!(s.post(json!({"name": "blob", "data": big})).await.0, 200);
    }
    let (_, page) = s.get("/events?limit=100").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_after"], 1);
    let (_, page) = s.get("/events?limit=100&after=1").await;
    assert_eq!(
        page["events"][0]["seq"], 2,
        "paging goes on where it stopped"
    );
}

/// Raw TCP: the server drops a request whose headers never finish.
#[tokio::test]
async fn slow_headers_and_bodies_time_out() {
    let s = memory_server(|c| {
        c.header_read_timeout_secs = 1;
        c.body_read_timeout_secs = 1;
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .expect("the server closed the connection")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(!text.contains("200 OK"), "{text}");

    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\"",
    )
    .await
    .unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("an answer within the body timeout")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_read_timeout_secs"), "{text}");
}

/// An SSE client that stops reading is dropped after the send timeout, and
/// the others go on.
#[tokio::test]
async fn a_stalled_sse_client_is_dropped() {
    let s = memory_server(|c| c.send_timeout_secs = 1).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A tiny receive buffer so the server's writes stall quickly.
    stalled
        .write_all(b"GET /sse?pattern=big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut live = sse(&s, "pattern=big", None).await.unwrap();
    let metrics = |s: &TestServer| {
        let url = s.url("/metrics");
        let http = s.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let open_sse = |text: &str| -> i64 {
        text.lines()
            .find(|l| l.starts_with("tidings_connections{transport=\"sse\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1)
    };
    assert_eq!(open_sse(&metrics(&s).await), 2, "{}", metrics(&s).await);
    let big = "y".repeat(256 * 1024);
    let mut dropped = false;
    for i in 0..400 {
        s.post(json!({"name": "big", "data": big})).await;
        let (id, _, _) = live.next().await;
        assert_eq!(
            id.as_deref(),
            Some((i + 1).to_string().as_str()),
            "the live one loses nothing"
        );
        if i % 10 == 9 && open_sse(&metrics(&s).await) == 1 {
            dropped = true;
            break;
        }
    }
    if !dropped {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if open_sse(&metrics(&s).await) == 1 {
                dropped = true;
                break;
            }
        }
    }
    assert!(
        dropped,
        "the stalled client was not dropped: {}",
        metrics(&s).await
    );
}

#[tokio::test]
async fn sockets_close_when_their_token_expires() {
    let s = memory_server(|c| {
        c.auth.jwt_secret = Some("k".into());
        c.auth.jwt_leeway_secs = 0;
    })
    .await;
    let exp = chrono::Utc::now().timestamp() + 2;
    let t = jwt(json!({"sub": "a", "exp": exp, "subscribe": [">"]}));
    let mut ws = s.ws(&format!("/ws?pattern=a&token={t}")).await;
    next_json(&mut ws).await;
    let mut events = sse(&s, &format!("pattern=a&token={t}"), None)
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => return f,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed at expiry");
    assert_eq!(u16::from(closed.code), 1008);
    assert!(closed.reason.contains("expired"));
    let (_, event, data) = events.next().await;
    assert_eq!(event.as_deref(), Some("close"));
    assert!(data["reason"].as_str().unwrap().contains("expired"));
    // And the token is refused once `exp` is in the past (whole seconds).
    while chrono::Utc::now().timestamp() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = s
        .http
        .get(s.url(&format!("/events?token={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn metrics_need_a_token_when_auth_is_on() {
    let s = memory_server(|c| c.auth.tokens = vec![token("t", &[], &["a"])]).await;
    assert_eq!(s.get("/metrics").await.0, 401);
    let r = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A WebSocket client that reads but never answers pings is closed.
#[tokio::test]
async fn a_websocket_that_never_answers_pings_is_closed() {
    let s = memory_server(|c| {
        c.keepalive_secs = 1;
        c.send_timeout_secs = 2;
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A hand-made handshake: this client reads, and never writes again.
    tcp.write_all(
        format!(
            "GET /ws?pattern=a HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the socket stayed open without pongs");
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    // Ping frames (opcode 0x9) were sent before it was closed.
    assert!(seen.contains(&0x89), "no ping was sent");
}

/// A `max_future_secs` too large for the clock means no limit, not a panic
/// (found by the config fuzzer).
#[tokio::test]
async fn a_huge_future_limit_does_not_break_publishing() {
    let s = memory_server(|c| c.max_future_secs = u64::MAX).await;
    let (st, body) = s
        .post(json!({"name": "a.b", "time": "9999-01-01T00:00:00Z"}))
        .await;
    assert_eq!(st, 200, "{body}");
}
