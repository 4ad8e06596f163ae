//! Publish bodies: `tidings_server::service::decode_publish` (envelopes,
//! batches, CloudEvents structured and batch mode).
//!
//! Input: the first line is the Content-Type (`<none>` for no header), the
//! rest is the body.
//!
//! What must hold besides "no panic":
//! * the media type is matched case-insensitively and without parameters;
//! * a body without a Content-Type, or with a non-JSON one, is refused as
//!   an unsupported media type, whatever it holds;
//! * an accepted envelope, written back as JSON, decodes to the same event;
//!   one envelope and a batch of one agree; each event of a batch decodes
//!   alone to the same event;
//! * a CloudEvent and a CloudEvents batch of one agree; every CloudEvent
//!   gets `source` and the key `ce:<source>:<id>`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tidings_server::service::{decode_publish, Decoded, ErrorKind, Incoming};

const JSON: &str = "application/json";
const CE: &str = "application/cloudevents+json";
const CE_BATCH: &str = "application/cloudevents-batch+json";

/// `Incoming` has no `PartialEq`; its `Debug` shows every field.
fn show(d: &Decoded) -> String {
    format!("{d:?}")
}

fn envelope(e: &Incoming) -> Value {
    let mut v = json!({"name": e.name, "data": e.data});
    let o = v.as_object_mut().unwrap();
    if let Some(s) = &e.source {
        o.insert("source".into(), json!(s));
    }
    if let Some(k) = &e.key {
        o.insert("key".into(), json!(k));
    }
    if let Some(p) = &e.priority {
        o.insert("priority".into(), serde_json::to_value(p).unwrap());
    }
    if let Some(t) = &e.time {
        o.insert("time".into(), serde_json::to_value(t).unwrap());
    }
    v
}

fn decode_ok(ct: &str, body: &[u8]) -> Decoded {
    decode_publish(Some(ct), body)
        .unwrap_or_else(|e| panic!("{ct} refused {:?}: {e:?}", String::from_utf8_lossy(body)))
}

fuzz_target!(|data: &[u8]| {
    let (ct_line, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(ct_line) = std::str::from_utf8(ct_line) else {
        return;
    };
    let ct = (ct_line != "<none>").then_some(ct_line);
    let got = decode_publish(ct, body);

    let media = ct.map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let kind = match media.as_deref() {
        Some(JSON) => JSON,
        Some(CE) => CE,
        Some(CE_BATCH) => CE_BATCH,
        _ => {
            let e = got.expect_err("a non-JSON content type is refused");
            assert_eq!(e.kind, ErrorKind::UnsupportedMediaType, "{ct:?}: {e:?}");
            return;
        }
    };
    // The canonical spelling decides the same way.
    let canonical = decode_publish(Some(kind), body);
    match (&got, &canonical) {
        (Ok(a), Ok(b)) => assert_eq!(show(a), show(b), "{ct:?} vs {kind}"),
        (Err(a), Err(b)) => assert_eq!((a.kind, a.code), (b.kind, b.code), "{ct:?} vs {kind}"),
        _ => panic!("{ct:?} and {kind} disagree: {got:?} / {canonical:?}"),
    }
    let Ok(decoded) = got else {
        let e = got.unwrap_err();
        assert_ne!(e.kind, ErrorKind::UnsupportedMediaType, "{e:?}");
        return;
    };
    assert!(
        !decoded.events.is_empty() || decoded.batch,
        "a single event decoded to none"
    );

    match kind {
        JSON => {
            // Every event, alone and written back as an envelope, decodes
            // to itself; the batch written back decodes to the same batch.
            let mut items = Vec::new();
            for e in &decoded.events {
                let env = envelope(e);
                let text = serde_json::to_vec(&env).unwrap();
                let again = decode_ok(JSON, &text);
                assert!(!again.batch);
                assert_eq!(format!("{:?}", again.events), format!("{:?}", [e]));
                items.push(env);
            }
            if decoded.batch {
                let text = serde_json::to_vec(&items).unwrap();
                let again = decode_ok(JSON, &text);
                assert_eq!(show(&again), show(&decoded));
            } else {
                let one: Value = serde_json::from_slice(body).unwrap();
                let text = serde_json::to_vec(&[one]).unwrap();
                let again = decode_ok(JSON, &text);
                assert!(again.batch);
                assert_eq!(
                    format!("{:?}", again.events),
                    format!("{:?}", decoded.events)
                );
            }
        }
        CE | CE_BATCH => {
            assert_eq!(decoded.batch, kind == CE_BATCH);
            // serde_json does not check UTF-8 inside strings it skips, so a
            // CloudEvent whose ignored attribute holds invalid UTF-8 decodes
            // while the body as a whole is not JSON; nothing to compare then.
            let Ok(raw) = serde_json::from_slice::<Value>(body) else {
                return;
            };
            let objects: Vec<Value> = match raw {
                Value::Array(items) => items,
                one => vec![one],
            };
            assert_eq!(objects.len(), decoded.events.len());
            for (obj, e) in objects.iter().zip(&decoded.events) {
                let source = e.source.as_deref().expect("a CloudEvent has a source");
                let id = obj.get("id").and_then(Value::as_str).expect("id");
                let key = format!("ce:{}:{source}:{id}", source.len());
                assert_eq!(e.key.as_deref(), Some(key.as_str()));
                assert_eq!(obj.get("source").and_then(Value::as_str), Some(source));
                assert_eq!(
                    obj.get("type").and_then(Value::as_str),
                    Some(e.name.as_str())
                );
                assert!(e.priority.is_none());
                // One CloudEvent and a batch of one agree.
                let text = serde_json::to_vec(obj).unwrap();
                let one = decode_ok(CE, &text);
                assert_eq!(format!("{:?}", one.events), format!("{:?}", [e]));
                let text = serde_json::to_vec(&[obj]).unwrap();
                let batch = decode_ok(CE_BATCH, &text);
                assert!(batch.batch);
                assert_eq!(format!("{:?}", batch.events), format!("{:?}", [e]));
            }
        }
        _ => unreachable!(),
    }
});
