//! The library in one page: emit, subscribe, priorities, once, history.
//!
//! Run: `cargo run -p tidings-core --example quickstart`

use serde_json::json;
use tidings_core::{Bus, Priority};

fn main() {
    let bus = Bus::new();

    let _audit = bus
        .handler("*")
        .priority(Priority::Low)
        .sync(|e| println!("  [audit] {e}"))
        .unwrap();
    let _moves = bus
        .on("player:move", |e| {
            println!("  {} moved to {}", e.data["username"], e.data["to_room"]);
        })
        .unwrap();
    let _first_login = bus
        .once("player:login", |e| {
            println!("  first login: {}", e.data["username"])
        })
        .unwrap();

    bus.emit("player:login", json!({"username": "Gribnak"}))
        .unwrap();
    bus.emit("player:login", json!({"username": "Snaga"}))
        .unwrap();
    let ev = bus
        .event("player:move")
        .data(json!({"username": "Gribnak", "from_room": "tavern", "to_room": "street"}))
        .source("engine")
        .emit()
        .unwrap();
    println!("committed #{} at {}", ev.seq, ev.time);

    println!("history of player.* (oldest first):");
    for e in bus.history(10, Some("player.*")).unwrap() {
        println!("  #{} {} {}", e.seq, e.name, e.data);
    }
    println!("stats: {:?}", bus.stats());
}
