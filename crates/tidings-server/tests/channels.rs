//! Seed 002's scenarios over real WebSockets: welcome, several subscribers,
//! channel isolation, cleanup on disconnect, /channels counts, limits.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn welcome_then_events_of_the_channel_and_below() {
    let s = memory_server(|_| {}).await;
    let mut ws = s.ws("/ws/events/route").await;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "connection");
    assert_eq!(welcome["channel"], "route");
    assert_eq!(welcome["subscribers"], 1);
    s.post(json!({"name": "route", "data": {"path": "/dashboard"}}))
        .await;
    s.post(json!({"name": "router.other"})).await;
    s.post(json!({"name": "route.navigation.back"})).await;
    let a = next_json(&mut ws).await;
    assert_eq!(
        (a["name"].as_str(), a["seq"].as_u64()),
        (Some("route"), Some(1))
    );
    assert_eq!(a["data"]["path"], "/dashboard");
    let b = next_json(&mut ws).await;
    assert_eq!(
        (b["name"].as_str(), b["seq"].as_u64()),
        (Some("route.navigation.back"), Some(3))
    );
    quiet(&mut ws, 100).await;
}

#[tokio::test]
async fn several_subscribers_all_receive_and_channels_are_isolated() {
    let s = memory_server(|_| {}).await;
    let mut a1 = s.ws("/ws/events/notifications").await;
    assert_eq!(next_json(&mut a1).await["subscribers"], 1);
    let mut a2 = s.ws("/ws/events/notifications").await;
    assert_eq!(next_json(&mut a2).await["subscribers"], 2);
    let mut b = s.ws("/ws/events/spell").await;
    assert_eq!(next_json(&mut b).await["subscribers"], 1);

    let (_, ch) = s.get("/channels").await;
    assert_eq!(ch["status"], "success");
    assert_eq!(ch["total_channels"], 2);
    assert_eq!(ch["channels"]["notifications"], 2);
    assert_eq!(ch["channels"]["spell"], 1);

    s.post(json!({"name": "notifications", "data": "daemon summoned"}))
        .await;
    assert_eq!(next_json(&mut a1).await["data"], "daemon summoned");
    assert_eq!(next_json(&mut a2).await["data"], "daemon summoned");
    quiet(&mut b, 150).await;
}

#[tokio::test]
async fn a_disconnected_subscriber_is_cleaned_up() {
    let s = memory_server(|_| {}).await;
    let mut a = s.ws("/ws/events/route").await;
    next_json(&mut a).await;
    let mut b = s.ws("/ws/events/route").await;
    next_json(&mut b).await;
    drop(a);
    let mut ok = false;
    for _ in 0..100 {
        if s.get("/channels").await.1["channels"]["route"] == 1 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the dropped subscriber was not removed");
    b.close(None).await.unwrap();
    for _ in 0..100 {
        let (_, ch) = s.get("/channels").await;
        if ch["total_channels"] == 0 {
            assert_eq!(ch["channels"], json!({}), "an empty channel disappears");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the channel did not disappear");
}

#[tokio::test]
async fn a_full_channel_refuses_with_a_close_reason() {
    let s = memory_server(|c| c.max_subscribers_per_channel = 1).await;
    let mut a = s.ws("/ws/events/vip").await;
    next_json(&mut a).await;
    let mut b = s.ws("/ws/events/vip").await;
    match tokio::time::timeout(Duration::from_secs(5), b.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1013);
            assert!(frame.reason.contains("full"), "{}", frame.reason);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(s.get("/channels").await.1["channels"]["vip"], 1);
}

#[tokio::test]
async fn invalid_channel_names_are_refused_before_upgrade() {
    let s = memory_server(|_| {}).await;
    let r = tokio_tungstenite::connect_async(format!("{}/ws/events/a..b", s.ws_base)).await;
    match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }
}

#[tokio::test]
async fn channel_sockets_resume_after_a_seq() {
    let s = memory_server(|_| {}).await;
    for i in 0..3 {
        s.post(json!({"name": "route.step", "data": i})).await;
    }
    let mut ws = s.ws("/ws/events/route?after=1").await;
    next_json(&mut ws).await;
    assert_eq!(next_json(&mut ws).await["seq"], 2);
    assert_eq!(next_json(&mut ws).await["seq"], 3);
}
