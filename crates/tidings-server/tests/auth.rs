//! Auth on: 401 without a token, 403 outside its patterns, tokens by header
//! or query parameter, static tokens and HS256 JWTs.

mod common;

use common::*;
use serde_json::{json, Value};
use tidings_server::config::TokenConfig;

fn jwt(claims: Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

async fn auth_server() -> TestServer {
    memory_server(|c| {
        c.auth.tokens = vec![TokenConfig {
            token: "orders-token".into(),
            name: None,
            publish: vec!["orders.>".into()],
            subscribe: vec!["orders.*".into()],
        }];
        c.auth.jwt_secret = Some("s3cret".into());
    })
    .await
}

#[tokio::test]
async fn no_token_is_401_everywhere() {
    let s = auth_server().await;
    assert_eq!(s.post(json!({"name": "orders.placed"})).await.0, 401);
    assert_eq!(s.get("/events").await.0, 401);
    assert_eq!(s.get("/channels").await.0, 401);
    let (st, body) = sse(&s, "pattern=orders.*", None).await.err().unwrap();
    assert_eq!((st, body["code"].as_str()), (401, Some("unauthorized")));
    match tokio_tungstenite::connect_async(format!("{}/ws?pattern=orders.*", s.ws_base)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    let r = s
        .http
        .get(s.url("/events"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(s.get("/healthz").await.0, 200, "health needs no token");
}

#[tokio::test]
async fn static_token_is_held_to_its_patterns() {
    let s = auth_server().await;
    let post = |name: &'static str| {
        s.http
            .post(s.url("/events"))
            .bearer_auth("orders-token")
            .json(&json!({"name": name}))
            .send()
    };
    assert_eq!(post("orders.placed").await.unwrap().status(), 200);
    let r = post("users.created").await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "forbidden");
    let batch = s
        .http
        .post(s.url("/events"))
        .bearer_auth("orders-token")
        .json(&json!([{"name": "orders.a"}, {"name": "admin.x"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 403, "one forbidden event refuses the batch");

    let h = s
        .http
        .get(s.url("/events?pattern=orders.*&token=orders-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    let h = s
        .http
        .get(s.url("/events?pattern=orders.%3E&token=orders-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 403, "orders.* does not cover orders.>");

    // Browsers: token as a query parameter for WebSocket and SSE.
    let mut ws = s.ws("/ws?pattern=orders.*&token=orders-token").await;
    next_json(&mut ws).await;
    send_json(&mut ws, json!({"op": "subscribe", "pattern": ">"})).await;
    let r = next_json(&mut ws).await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    assert!(sse(&s, "pattern=orders.*&token=orders-token", None)
        .await
        .is_ok());
    let (st, _) = sse(&s, "pattern=users.*&token=orders-token", None)
        .await
        .err()
        .unwrap();
    assert_eq!(st, 403);
}

#[tokio::test]
async fn jwts_carry_their_patterns_and_forgeries_fail() {
    let s = auth_server().await;
    let good = jwt(
        json!({"sub": "ann", "exp": chrono::Utc::now().timestamp() + 3600, "publish": ["chat.>"], "subscribe": [">"]}),
        b"s3cret",
    );
    let r = s
        .http
        .post(s.url("/events"))
        .bearer_auth(&good)
        .json(&json!({"name": "chat.room.1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .post(s.url("/events"))
        .bearer_auth(&good)
        .json(&json!({"name": "orders.x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let forged = jwt(
        json!({"sub": "eve", "publish": [">"], "subscribe": [">"]}),
        b"guess",
    );
    let r = s
        .http
        .post(s.url("/events"))
        .bearer_auth(&forged)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let expired = jwt(
        json!({"sub": "old", "exp": 1_000_000, "publish": [">"]}),
        b"s3cret",
    );
    let r = s
        .http
        .post(s.url("/events"))
        .bearer_auth(&expired)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut ws = s.ws(&format!("/ws/events/chat?token={good}")).await;
    assert_eq!(next_json(&mut ws).await["type"], "connection");
}

/// Every route × {no token, a token of another scope, the right token}.
#[tokio::test]
async fn every_route_checks_the_callers_scope() {
    let s = memory_server(|c| {
        c.auth.tokens = vec![
            TokenConfig {
                token: "right".into(),
                name: None,
                publish: vec!["orders.>".into()],
                subscribe: vec!["orders.>".into()],
            },
            TokenConfig {
                token: "other".into(),
                name: None,
                publish: vec!["payroll.>".into()],
                subscribe: vec!["payroll.>".into()],
            },
        ];
    })
    .await;
    enum Call {
        Post(&'static str, &'static str),
        Get(&'static str),
        Ws(&'static str),
    }
    use Call::*;
    let ce = r#"{"specversion":"1.0","type":"orders.x","source":"/s","id":"1"}"#;
    let ce_batch = r#"[{"specversion":"1.0","type":"orders.x","source":"/s","id":"2"}]"#;
    // (route, call, expected status for [no token, other scope, right scope])
    let table: Vec<(&str, Call, [u16; 3])> = vec![
        (
            "publish",
            Post("application/json", r#"{"name":"orders.x"}"#),
            [401, 403, 200],
        ),
        (
            "publish a batch",
            Post(
                "application/json",
                r#"[{"name":"orders.x"},{"name":"orders.y"}]"#,
            ),
            [401, 403, 200],
        ),
        (
            "publish a CloudEvent",
            Post("application/cloudevents+json", ce),
            [401, 403, 200],
        ),
        (
            "publish a CloudEvents batch",
            Post("application/cloudevents-batch+json", ce_batch),
            [401, 403, 200],
        ),
        (
            "history",
            Get("/events?pattern=orders.%3E"),
            [401, 403, 200],
        ),
        (
            "history without a pattern (all)",
            Get("/events"),
            [401, 403, 403],
        ),
        ("export", Get("/export?pattern=orders.%3E"), [401, 403, 200]),
        (
            "export without a pattern (what the token may read)",
            Get("/export"),
            [401, 200, 200],
        ),
        ("channels", Get("/channels"), [401, 200, 200]),
        ("metrics", Get("/metrics"), [401, 200, 200]),
        ("schemas", Get("/schemas"), [401, 200, 200]),
        ("health", Get("/healthz"), [200, 200, 200]),
        ("sse", Get("/sse?pattern=orders.*"), [401, 403, 200]),
        (
            "ws with patterns",
            Ws("/ws?pattern=orders.*"),
            [401, 403, 101],
        ),
        ("ws without patterns", Ws("/ws"), [401, 101, 101]),
        ("ws channel", Ws("/ws/events/orders.eu"), [401, 403, 101]),
    ];
    for (route, call, expected) in table {
        for (who, want) in [None, Some("other"), Some("right")]
            .into_iter()
            .zip(expected)
        {
            let got = match &call {
                Post(ct, body) => {
                    let mut r = s
                        .http
                        .post(s.url("/events"))
                        .header("content-type", *ct)
                        .body(*body);
                    if let Some(t) = who {
                        r = r.bearer_auth(t);
                    }
                    r.send().await.unwrap().status().as_u16()
                }
                Get(path) => {
                    let mut r = s.http.get(s.url(path));
                    if let Some(t) = who {
                        r = r.bearer_auth(t);
                    }
                    r.send().await.unwrap().status().as_u16()
                }
                Ws(path) => {
                    let sep = if path.contains('?') { '&' } else { '?' };
                    let url = match who {
                        Some(t) => format!("{}{path}{sep}token={t}", s.ws_base),
                        None => format!("{}{path}", s.ws_base),
                    };
                    match tokio_tungstenite::connect_async(url).await {
                        Ok((_, resp)) => resp.status().as_u16(),
                        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                            resp.status().as_u16()
                        }
                        Err(e) => panic!("{route}: {e}"),
                    }
                }
            };
            assert_eq!(got, want, "{route} as {who:?}");
        }
    }
}
