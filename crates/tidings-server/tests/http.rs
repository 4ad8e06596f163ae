//! The HTTP surface: publish (single, batch, CloudEvents), history, every
//! bad input with its status, limits, health, metrics, CORS.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn publish_answers_with_the_committed_envelope() {
    let s = memory_server(|_| {}).await;
    let (status, ev) = s
        .post(json!({"name": "player:move", "data": {"to": "street"}, "source": "engine"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(ev["seq"], 1);
    assert_eq!(ev["name"], "player:move");
    assert_eq!(ev["source"], "engine");
    assert!(ev["id"].as_str().unwrap().len() == 36);
    assert!(ev["time"].as_str().unwrap().ends_with('Z'));
    let (_, ev) = s.post(json!({"name": "x"})).await;
    assert_eq!(
        (ev["seq"].as_u64(), ev["source"].as_str()),
        (Some(2), Some("http"))
    );
}

#[tokio::test]
async fn a_batch_is_atomic() {
    let s = memory_server(|_| {}).await;
    let (status, out) = s
        .post(json!([{"name": "a"}, {"name": "b", "data": 2}, {"name": "c"}]))
        .await;
    assert_eq!(status, 200);
    let seqs: Vec<u64> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    // One bad event refuses the whole batch.
    let (status, err) = s
        .post(json!([{"name": "ok.one"}, {"name": "bad..name"}]))
        .await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("event 1"), "{err}");
    let (_, page) = s.get("/events").await;
    assert_eq!(
        page["events"].as_array().unwrap().len(),
        3,
        "nothing of the refused batch was committed"
    );
    assert_eq!(s.post(json!([])).await.0, 400);
}

#[tokio::test]
async fn expected_seq_conflicts_are_409_and_commit_nothing() {
    let s = memory_server(|_| {}).await;
    s.post(json!({"name": "a"})).await;
    let r = s
        .http
        .post(s.url("/events?expect_last=0"))
        .json(&json!([{"name": "b"}, {"name": "c"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "conflict");
    let r = s
        .http
        .post(s.url("/events?expect_last=1"))
        .json(&json!({"name": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.get("/healthz").await.1["last_seq"], 2);
}

#[tokio::test]
async fn idempotency_keys_return_the_original() {
    let s = memory_server(|_| {}).await;
    let (_, a) = s.post(json!({"name": "pay", "key": "order-7"})).await;
    let (_, b) = s.post(json!({"name": "pay", "key": "order-7"})).await;
    assert_eq!(a["seq"], b["seq"]);
    assert_eq!(b["duplicate"], true);
}

#[tokio::test]
async fn cloudevents_single_and_batch_with_id_dedup() {
    let s = memory_server(|_| {}).await;
    let ce = json!({
        "specversion": "1.0", "type": "order.placed", "source": "/shop", "id": "A-1",
        "time": "2026-01-02T03:04:05Z", "data": {"total": 9}, "datacontenttype": "application/json"
    });
    let (status, ev) = s
        .post_raw("application/cloudevents+json", ce.to_string())
        .await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(ev["name"], "order.placed");
    assert_eq!(ev["source"], "/shop");
    assert_eq!(ev["data"]["total"], 9);
    assert_eq!(ev["time"], "2026-01-02T03:04:05Z");
    let (_, again) = s
        .post_raw("application/cloudevents+json", ce.to_string())
        .await;
    assert_eq!(
        again["seq"], ev["seq"],
        "same source and id: the same event"
    );
    assert_eq!(again["duplicate"], true);

    let batch = json!([
        {"specversion": "1.0", "type": "order.paid", "source": "/shop", "id": "A-2"},
        {"specversion": "1.0", "type": "order.shipped", "source": "/shop", "id": "A-3"}
    ]);
    let (status, out) = s
        .post_raw("application/cloudevents-batch+json", batch.to_string())
        .await;
    assert_eq!(status, 200);
    assert_eq!(out.as_array().unwrap().len(), 2);

    let (status, err) = s
        .post_raw(
            "application/cloudevents+json",
            json!({"specversion": "0.3", "type": "x", "source": "s", "id": "1"}).to_string(),
        )
        .await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("specversion"));
    let (status, _) = s
        .post_raw(
            "application/cloudevents+json",
            json!({"type": "x"}).to_string(),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn history_filters_pages_and_reports_positions() {
    let s = memory_server(|_| {}).await;
    for i in 0..10 {
        s.post(json!({"name": if i % 2 == 0 { "even.n" } else { "odd.n" }, "data": i}))
            .await;
    }
    let (_, p) = s.get("/events?pattern=even.*&limit=3").await;
    let seqs: Vec<u64> = p["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 3, 5]);
    assert_eq!(p["next_after"], 5);
    assert_eq!(p["last_seq"], 10);
    let (_, p) = s.get("/events?pattern=even.*&after=5").await;
    let seqs: Vec<u64> = p["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![7, 9]);
    let (_, p) = s.get("/events?after=10").await;
    assert!(p["events"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn every_bad_input_gets_a_json_error_with_the_right_status() {
    let s = memory_server(|c| c.max_payload = 1000).await;
    let cases: Vec<(u16, &str, (u16, Value))> = vec![
        (
            400,
            "malformed_json",
            s.post_raw("application/json", "{not json").await,
        ),
        (400, "missing_name", s.post(json!({"data": 1})).await),
        (400, "invalid_name", s.post(json!({"name": "a b"})).await),
        (400, "invalid_name", s.post(json!({"name": ""})).await),
        (
            400,
            "invalid_event",
            s.post(json!({"name": "a", "nmae": 1})).await,
        ),
        (400, "invalid_event", s.post(json!("just a string")).await),
        (
            400,
            "invalid_pattern",
            s.get("/events?pattern=a.%3E.b").await,
        ),
        (400, "invalid_after", s.get("/events?after=-3").await),
        (400, "invalid_limit", s.get("/events?limit=0").await),
        (400, "invalid_limit", s.get("/events?limit=999999").await),
        (
            413,
            "payload_too_large",
            s.post(json!({"name": "big", "data": "x".repeat(2000)}))
                .await,
        ),
        (404, "not_found", s.get("/nowhere").await),
    ];
    for (want, code, (status, body)) in cases {
        assert_eq!(status, want, "{code}: {body}");
        assert_eq!(body["code"], code, "{body}");
        assert!(!body["error"].as_str().unwrap().is_empty());
    }
    // Chunked (no Content-Length) oversized bodies are refused too.
    let chunks =
        futures_util::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b' '; 100])));
    let r = s
        .http
        .post(s.url("/events"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // And the server is still up, with nothing committed.
    let (status, h) = s.get("/healthz").await;
    assert_eq!((status, h["last_seq"].as_u64()), (200, Some(0)));
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let s = memory_server(|_| {}).await;
    s.post(json!({"name": "m"})).await;
    s.post(json!({"name": "bad name"})).await;
    let text = s.text("/metrics").await;
    assert!(text.contains("tidings_published_total 1"), "{text}");
    assert!(text.contains("tidings_append_seconds_count 1"), "{text}");
    assert!(text.contains("tidings_rejected_requests_total 1"), "{text}");
    assert!(text.contains("tidings_connections{transport=\"sse\"} 0"));
    assert!(
        !text.contains("tidings_sqlite_"),
        "a memory store adds no SQLite series"
    );
}

/// A SQLite store adds its own counters to the same registry.
#[tokio::test]
async fn metrics_of_a_sqlite_store_include_its_writer() {
    let s = sqlite_server(|_| {}).await;
    s.post(json!([{"name": "m"}, {"name": "n"}])).await;
    let text = s.text("/metrics").await;
    assert!(
        text.contains("tidings_sqlite_events_appended_total 2"),
        "{text}"
    );
    assert!(
        text.contains("tidings_sqlite_group_commits_total "),
        "{text}"
    );
    assert!(text.contains("tidings_sqlite_fsyncs_total "), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let s = memory_server(|c| c.cors_origins = vec!["http://app.test".into()]).await;
    let pre = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/events"))
        .header("Origin", "http://app.test")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(
        pre.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("http://app.test")
    );
    let other = s
        .http
        .get(s.url("/events"))
        .header("Origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // WebSocket upgrades from a foreign origin are refused.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("{}/ws?pattern=a", s.ws_base),
    )
    .unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.test".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("{}/ws?pattern=a", s.ws_base),
    )
    .unwrap();
    req.headers_mut()
        .insert("Origin", "http://app.test".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    // So are event streams, by the same rule.
    let sse_from = |origin: &'static str| {
        s.http
            .get(s.url("/sse?pattern=a"))
            .header("Origin", origin)
            .send()
    };
    assert_eq!(sse_from("http://evil.test").await.unwrap().status(), 403);
    assert_eq!(sse_from("http://app.test").await.unwrap().status(), 200);
}

#[tokio::test]
async fn sqlite_store_persists_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |c: &mut tidings_server::config::Config| {
        c.listen = "127.0.0.1:0".into();
        c.data_dir = dir.path().to_owned();
        c.store = None;
    };
    let mut s = memory_server(cfg).await;
    s.post(json!({"name": "kept", "data": 1})).await;
    s.shutdown().await;
    let s = memory_server(cfg).await;
    let (_, p) = s.get("/events").await;
    assert_eq!(p["events"][0]["name"], "kept");
    assert_eq!(s.post(json!({"name": "next"})).await.1["seq"], 2);
}

#[tokio::test]
async fn history_of_a_rare_pattern_pages_through_a_large_log() {
    let s = memory_server(|c| c.retention_max_count = Some(300_000)).await;
    let bulk: Vec<serde_json::Value> = (0..1000).map(|_| json!({"name": "common"})).collect();
    for _ in 0..150 {
        assert_eq!(s.post(serde_json::Value::Array(bulk.clone())).await.0, 200);
    }
    s.post(json!({"name": "rare"})).await;
    let (_, p) = s.get("/events?pattern=rare").await;
    assert!(
        p["events"].as_array().unwrap().is_empty(),
        "the budget stops the first page early"
    );
    let next = p["next_after"].as_u64().unwrap();
    assert!(next < p["last_seq"].as_u64().unwrap());
    let (_, p) = s.get(&format!("/events?pattern=rare&after={next}")).await;
    assert_eq!(p["events"][0]["seq"], 150_001);
}
