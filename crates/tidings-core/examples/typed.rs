//! Seed 003's entity and link events as typed events: one enum per family,
//! each value emitted under its own name (`entity.created`, `link.deleted`),
//! each family subscribed with one typed handler.
//!
//! Run: `cargo run -p tidings-core --example typed`

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tidings_core::{Bus, TypedEvent};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum EntityEvent {
    Created {
        entity_type: String,
        entity_id: Uuid,
        data: serde_json::Value,
    },
    Updated {
        entity_type: String,
        entity_id: Uuid,
        data: serde_json::Value,
    },
    Deleted {
        entity_type: String,
        entity_id: Uuid,
    },
}

impl TypedEvent for EntityEvent {
    const PATTERN: &'static str = "entity.*";
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            EntityEvent::Created { .. } => "entity.created",
            EntityEvent::Updated { .. } => "entity.updated",
            EntityEvent::Deleted { .. } => "entity.deleted",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum LinkEvent {
    Created {
        link_type: String,
        link_id: Uuid,
        source_id: Uuid,
        target_id: Uuid,
    },
    Deleted {
        link_type: String,
        link_id: Uuid,
        source_id: Uuid,
        target_id: Uuid,
    },
}

impl TypedEvent for LinkEvent {
    const PATTERN: &'static str = "link.*";
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            LinkEvent::Created { .. } => "link.created",
            LinkEvent::Deleted { .. } => "link.deleted",
        })
    }
}

fn main() {
    let bus = Bus::new();
    let _entities = bus
        .on_typed(|e: &EntityEvent, env| println!("#{} {}: {:?}", env.seq, env.name, e))
        .unwrap();
    let _links = bus
        .on_typed(|l: &LinkEvent, env| println!("#{} {}: {:?}", env.seq, env.name, l))
        .unwrap();

    let order = Uuid::now_v7();
    let customer = Uuid::now_v7();
    bus.emit_typed(&EntityEvent::Created {
        entity_type: "order".into(),
        entity_id: order,
        data: serde_json::json!({"name": "Order #1"}),
    })
    .unwrap();
    bus.emit_typed(&LinkEvent::Created {
        link_type: "placed_by".into(),
        link_id: Uuid::now_v7(),
        source_id: order,
        target_id: customer,
    })
    .unwrap();
    bus.emit_typed(&EntityEvent::Deleted {
        entity_type: "order".into(),
        entity_id: order,
    })
    .unwrap();
    println!(
        "{} events, {} handler errors",
        bus.last_seq(),
        bus.stats().handler_errors
    );
}
