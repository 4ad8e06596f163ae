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
