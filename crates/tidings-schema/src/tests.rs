//! Unit tests: compiling (and refusing) schemas, the pointer and reason of
//! the first failing place, derived schemas of typed events.

use super::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tidings_core::{typed_event, Bus, EmitError};

fn order() -> Schema {
    Schema::from_value(json!({
        "type": "object",
        "required": ["id", "items"],
        "properties": {
            "id": {"type": "integer"},
            "email": {"type": "string", "format": "email"},
            "items": {"type": "array", "items": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {
                    "sku": {"type": "string"},
                    "qty": {"type": "integer", "minimum": 1}
                }
            }}
        }
    }))
    .unwrap()
}

#[test]
fn valid_data_passes() {
    let s = order();
    s.validate(&json!({"id": 1, "items": [{"sku": "a", "qty": 2}]}))
        .unwrap();
    s.validate(&json!({"id": 1, "items": []})).unwrap();
}

#[test]
fn the_violation_points_at_the_first_failing_place() {
    let s = order();
    let v = s
        .validate(&json!({"id": 1, "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 0}]}))
        .unwrap_err();
    assert_eq!(v.path, "/items/1/qty");
    assert!(v.reason.contains("minimum"), "{}", v.reason);

    let v = s.validate(&json!({"items": []})).unwrap_err();
    assert_eq!(v.path, "", "a missing property fails at its object");
    assert!(v.reason.contains("\"id\""), "{}", v.reason);

    let v = s.validate(&json!({"id": "x", "items": []})).unwrap_err();
    assert_eq!(v.path, "/id");
    assert!(v.reason.contains("integer"), "{}", v.reason);

    let v = s.validate(&json!([1, 2])).unwrap_err();
    assert_eq!(v.path, "");
}

#[test]
fn formats_are_asserted() {
    let s = order();
    s.validate(&json!({"id": 1, "items": [], "email": "a@b.example"}))
        .unwrap();
    let v = s
        .validate(&json!({"id": 1, "items": [], "email": "not an address"}))
        .unwrap_err();
    assert_eq!(v.path, "/email");
}

#[test]
fn draft_2020_12_is_the_default() {
    // `prefixItems` exists only since 2020-12.
    let s = Schema::from_value(json!({"prefixItems": [{"type": "string"}]})).unwrap();
    s.validate(&json!(["a", 1])).unwrap();
    let v = s.validate(&json!([1])).unwrap_err();
    assert_eq!(v.path, "/0");
}

#[test]
fn a_huge_offending_value_is_not_quoted_whole() {
    let s = Schema::from_value(json!({"type": "array"})).unwrap();
    let big = json!({ "blob": "x".repeat(100_000) });
    let v = s.validate(&big).unwrap_err();
    assert!(v.reason.len() <= tidings_core::contract::MAX_REASON + 3);
}

#[test]
fn invalid_schemas_are_refused_with_the_problem() {
    let e = Schema::from_value(json!({"type": "strnig"})).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("the inline schema is not a valid JSON Schema"),
        "{msg}"
    );
    assert!(msg.contains("/type"), "{msg}");

    let e = Schema::from_value(json!({"minimum": "one"})).unwrap_err();
    assert!(e.to_string().contains("/minimum"), "{e}");

    let e = Schema::from_value(json!([{"type": "string"}])).unwrap_err();
    assert!(e.to_string().contains("JSON object"), "{e}");

    // No network and no file is read to resolve a reference.
    let e = Schema::from_value(json!({"$ref": "https://schemas.example/order.json"})).unwrap_err();
    assert!(matches!(e, SchemaError::Invalid { .. }), "{e}");
    let e = Schema::from_value(json!({"$ref": "#/$defs/missing"})).unwrap_err();
    assert!(matches!(e, SchemaError::Invalid { .. }), "{e}");
}

#[test]
fn files_name_themselves_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(&good, r#"{"type": "object", "required": ["id"]}"#).unwrap();
    let s = Schema::from_file(&good).unwrap();
    assert_eq!(s.file(), Some(good.as_path()));
    assert_eq!(s.document()["required"], json!(["id"]));

    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, "{\"type\": ").unwrap();
    let e = Schema::from_file(&bad_json).unwrap_err();
    assert!(matches!(e, SchemaError::Json { .. }));
    assert!(e.to_string().contains("bad.json"), "{e}");
    assert!(e.to_string().contains("line 1"), "{e}");

    let invalid = dir.path().join("invalid.json");
    std::fs::write(&invalid, r#"{"type": 12}"#).unwrap();
    let e = Schema::from_file(&invalid).unwrap_err();
    assert!(e.to_string().contains("invalid.json"), "{e}");
    assert!(e.to_string().contains("not a valid JSON Schema"), "{e}");

    let e = Schema::from_file(dir.path().join("missing.json")).unwrap_err();
    assert!(matches!(e, SchemaError::Read { .. }));
    assert!(e.to_string().contains("missing.json"), "{e}");
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct OrderPlaced {
    order_id: u64,
    lines: Vec<Line>,
    note: Option<String>,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
struct Line {
    sku: String,
    qty: u32,
}
typed_event!(OrderPlaced => "orders.placed");

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EntityEvent {
    Created { id: u64 },
    Deleted { id: u64, reason: String },
}
impl TypedEvent for EntityEvent {
    const PATTERN: &'static str = "entity.*";
    fn name(&self) -> std::borrow::Cow<'static, str> {
        match self {
            EntityEvent::Created { .. } => "entity.created".into(),
            EntityEvent::Deleted { .. } => "entity.deleted".into(),
        }
    }
}

#[test]
fn a_derived_schema_follows_the_type_and_its_serde_attributes() {
    let s = Schema::for_type::<OrderPlaced>().unwrap();
    let ok = serde_json::to_value(OrderPlaced {
        order_id: 1,
        lines: vec![Line {
            sku: "a".into(),
            qty: 2,
        }],
        note: None,
    })
    .unwrap();
    s.validate(&ok).unwrap();
    let v = s
        .validate(&json!({"order_id": 1, "lines": []}))
        .unwrap_err();
    assert_eq!(v.path, "", "{}", v.reason); // orderId (camelCase) is missing
    let v = s
        .validate(&json!({"orderId": 1, "lines": [{"sku": "a", "qty": -1}]}))
        .unwrap_err();
    assert_eq!(v.path, "/lines/0/qty");

    let e = Schema::for_type::<EntityEvent>().unwrap();
    e.validate(&json!({"kind": "created", "id": 3})).unwrap();
    assert!(e.validate(&json!({"kind": "deleted", "id": 3})).is_err());
}

#[test]
fn typed_schema_holds_typed_and_untyped_emits_to_one_contract() {
    let bus = Bus::builder()
        .typed_schema::<OrderPlaced>()
        .unwrap()
        .typed_schema::<EntityEvent>()
        .unwrap()
        .build()
        .unwrap();
    bus.emit_typed(&OrderPlaced {
        order_id: 9,
        lines: vec![],
        note: Some("gift".into()),
    })
    .unwrap();
    bus.emit_typed(&EntityEvent::Created { id: 1 }).unwrap();
    let err = bus
        .emit("orders.placed", json!({"orderId": "nine", "lines": []}))
        .unwrap_err();
    let EmitError::Contract(r) = err else {
        panic!("expected a contract refusal, got {err:?}")
    };
    assert_eq!(
        (r.pattern.as_str(), r.violation.path.as_str()),
        ("orders.placed", "/orderId")
    );
    assert!(bus
        .emit("entity.updated", json!({"kind": "moved"}))
        .is_err());
    assert_eq!(bus.last_seq(), 2);
}
