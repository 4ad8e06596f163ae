//! CloudEvents in: structured, batch and binary mode; and out:
//! `?format=cloudevents` on `/ws`, `/sse` and `GET /events`.

mod common;

use common::*;
use serde_json::{json, Value};

async fn binary(
    s: &TestServer,
    headers: &[(&str, &str)],
    ct: &str,
    body: &'static [u8],
) -> (u16, Value) {
    let mut r = s
        .http
        .post(s.url("/events"))
        .header("content-type", ct)
        .body(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

const CE: [(&str, &str); 4] = [
    ("ce-specversion", "1.0"),
    ("ce-type", "order.placed"),
    ("ce-source", "/shop"),
    ("ce-id", "A-1"),
];

#[tokio::test]
async fn binary_mode_is_published_and_deduplicated() {
    let s = memory_server(|_| {}).await;
    let mut h = CE.to_vec();
    h.push(("ce-time", "2026-01-02T03:04:05Z"));
    let (st, e) = binary(&s, &h, "application/json", br#"{"world_id":42}"#).await;
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["name"], "order.placed");
    assert_eq!(e["source"], "/shop");
    assert_eq!(e["data"], json!({"world_id": 42}));
    assert_eq!(e["time"], "2026-01-02T03:04:05Z");
    let (st, again) = binary(&s, &h, "application/json", br#"{"world_id":42}"#).await;
    assert_eq!(
        (st, &again["duplicate"], &again["seq"]),
        (200, &json!(true), &e["seq"])
    );
    let mut h2 = CE.to_vec();
    h2[3] = ("ce-id", "A-2");
    let (_, t) = binary(&s, &h2, "text/plain; charset=utf-8", b"hello").await;
    assert_eq!(t["data"], "hello");
    h2[3] = ("ce-id", "A-3");
    let (_, b) = binary(&s, &h2, "application/octet-stream", b"\x00\xff").await;
    assert_eq!(b["data"], "AP8=", "binary data as base64");
    let (st, bad) = binary(&s, &CE[..3], "application/json", b"{}").await;
    assert_eq!(
        (st, bad["code"].as_str()),
        (400, Some("invalid_cloudevent"))
    );
    assert!(bad["error"].as_str().unwrap().contains("ce-id"));
}

#[tokio::test]
async fn events_come_out_as_cloudevents_on_request() {
    let s = memory_server(|_| {}).await;
    let mut ws = s
        .ws("/ws?pattern=order.%3E&format=cloudevents&after=0")
        .await;
    next_json(&mut ws).await;
    let mut sse_stream = sse(&s, "pattern=order.%3E&format=cloudevents&after=0", None)
        .await
        .unwrap();
    let (_, e) = s
        .post(json!({"name": "order.paid", "source": "billing", "data": {"n": 1}}))
        .await;
    let check = |ce: &Value| {
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["type"], "order.paid");
        assert_eq!(ce["source"], "billing");
        assert_eq!(ce["id"], e["id"]);
        assert_eq!(ce["sequence"], "1");
        assert_eq!(ce["data"], json!({"n": 1}));
        assert_eq!(ce["datacontenttype"], "application/json");
    };
    check(&next_json(&mut ws).await);
    let (id, _, data) = sse_stream.next().await;
    assert_eq!(id.as_deref(), Some("1"));
    check(&data);
    let (_, page) = s.get("/events?format=cloudevents").await;
    check(&page["events"][0]);
    let (st, body) = s.get("/events?format=xml").await;
    assert_eq!((st, body["code"].as_str()), (400, Some("invalid_format")));
    // The envelope stays the default.
    let (_, page) = s.get("/events").await;
    assert_eq!(page["events"][0]["name"], "order.paid");
}
