//! Data contracts at emit: an event whose data breaks a contract its name
//! matches is refused before the append; a batch is refused whole, no seq
//! is used, nothing is stored or dispatched, and the error says which
//! event, where and why.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tidings_core::{Bus, ConfigError, EmitError, NewEvent, Refusal, Violation};

/// `qty` must be a positive integer.
fn positive_qty(d: &Value) -> Result<(), Violation> {
    match d.get("qty") {
        None => Err(Violation::new("", "\"qty\" is a required property")),
        Some(q) if q.as_u64().is_some_and(|n| n > 0) => Ok(()),
        Some(_) => Err(Violation::new("/qty", "must be a positive integer")),
    }
}

fn orders_bus() -> (Bus, Arc<AtomicUsize>) {
    let bus = Bus::builder()
        .schema("orders.>", positive_qty)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    std::mem::forget(
        bus.on(">", move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap(),
    );
    (bus, calls)
}

fn refusal(e: EmitError) -> Box<Refusal> {
    match e {
        EmitError::Contract(r) => r,
        other => panic!("expected a contract refusal, got {other:?}"),
    }
}

fn stored(bus: &Bus) -> usize {
    futures_util::FutureExt::now_or_never(bus.log().read(0, 100))
        .expect("the memory log reads at once")
        .unwrap()
        .events
        .len()
}

#[test]
fn a_violating_emit_is_refused_before_the_append() {
    let (bus, calls) = orders_bus();
    let r = refusal(bus.emit("orders.placed", json!({"qty": -1})).unwrap_err());
    assert_eq!((r.index, r.name.as_str()), (0, "orders.placed"));
    assert_eq!(r.pattern, "orders.>");
    assert_eq!(r.violation.path, "/qty");
    let msg = r.to_string();
    assert!(msg.contains("/qty") && msg.contains("orders.>"), "{msg}");
    assert_eq!(bus.last_seq(), 0);
    assert_eq!(stored(&bus), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(bus.stats().contract_refused, 1);

    // The builder path and names the pattern does not match.
    let e = bus
        .event("orders.placed")
        .data(json!({}))
        .emit()
        .unwrap_err();
    assert_eq!(refusal(e).violation.path, "");
    bus.emit("users.joined", json!({"qty": -1})).unwrap();
    let ok = bus.emit("orders.placed", json!({"qty": 2})).unwrap();
    assert_eq!(ok.seq, 2, "refused emits used no seq");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(bus.stats().contract_refused, 2);
}

#[test]
fn a_batch_with_one_bad_event_commits_nothing_and_names_it() {
    let (bus, calls) = orders_bus();
    bus.emit("orders.placed", json!({"qty": 1})).unwrap();
    let batch = vec![
        NewEvent::new("orders.placed", json!({"qty": 1})).unwrap(),
        NewEvent::new("users.joined", json!(null)).unwrap(),
        NewEvent::new("orders:shipped", json!({"qty": "two"})).unwrap(),
        NewEvent::new("orders.placed", json!({"qty": 0})).unwrap(),
    ];
    let r = refusal(bus.emit_batch(batch, None).unwrap_err());
    assert_eq!((r.index, r.name.as_str()), (2, "orders:shipped"));
    assert!(r.to_string().starts_with("event 2 "), "{r}");
    assert_eq!(bus.last_seq(), 1);
    assert_eq!(stored(&bus), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let next = bus.emit("orders.placed", json!({"qty": 3})).unwrap();
    assert_eq!(next.seq, 2, "the refused batch consumed no seq");
}

#[tokio::test]
async fn async_emits_are_checked_too() {
    let (bus, _) = orders_bus();
    let e = bus
        .emit_async("orders.placed", json!({"qty": 0}))
        .await
        .unwrap_err();
    assert_eq!(refusal(e).violation.path, "/qty");
    let batch = vec![
        NewEvent::new("orders.placed", json!({"qty": 1})).unwrap(),
        NewEvent::new("orders.placed", json!({})).unwrap(),
    ];
    let e = bus.emit_batch_async(batch, None).await.unwrap_err();
    assert_eq!(refusal(e).index, 1);
    assert_eq!(bus.last_seq(), 0);
    assert_eq!(stored(&bus), 0);
}

#[test]
fn every_matching_contract_applies() {
    let bus = Bus::builder()
        .schema("orders.>", positive_qty)
        .schema("orders.vip", |d: &Value| {
            if d["qty"].as_u64() >= Some(10) {
                Ok(())
            } else {
                Err(Violation::new("/qty", "a VIP order is at least 10"))
            }
        })
        .build()
        .unwrap();
    bus.emit("orders.placed", json!({"qty": 1})).unwrap();
    let r = refusal(bus.emit("orders.vip", json!({"qty": 1})).unwrap_err());
    assert_eq!(r.pattern, "orders.vip");
    let r = refusal(bus.emit("orders.vip", json!({"qty": 0})).unwrap_err());
    assert_eq!(
        r.pattern, "orders.>",
        "registration order decides the first"
    );
    bus.emit("orders.vip", json!({"qty": 10})).unwrap();
}

#[test]
fn an_invalid_contract_pattern_is_a_build_error() {
    let e = Bus::builder()
        .schema("orders..placed", positive_qty)
        .build()
        .unwrap_err();
    assert!(matches!(e, ConfigError::Pattern(_)), "{e:?}");
    assert!(e.to_string().contains("schema pattern"), "{e}");
}
