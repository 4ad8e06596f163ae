//! WebSocket commands: `tidings_server::service::Command::parse`.
//!
//! Input: the message text.
//!
//! What must hold besides "no panic":
//! * a refusal is a bad request with the code `unknown_command`;
//! * an accepted command is a JSON object whose `op` names it, and
//!   written back in its canonical form it parses to the same command;
//! * reformatting the JSON (whitespace, key order) changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tidings_server::service::{Command, ErrorKind};

fn canonical(c: &Command) -> Value {
    match c {
        Command::Subscribe { pattern } => json!({"op": "subscribe", "pattern": pattern}),
        Command::Unsubscribe { pattern } => json!({"op": "unsubscribe", "pattern": pattern}),
        Command::Ping => json!({"op": "ping"}),
        Command::Ack { seq } => json!({"op": "ack", "seq": seq}),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cmd = match Command::parse(text) {
        Ok(c) => c,
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::BadRequest, "{e:?}");
            assert_eq!(e.code, "unknown_command", "{e:?}");
            return;
        }
    };
    let value: Value = serde_json::from_str(text).expect("an accepted command is JSON");
    let op = value
        .get("op")
        .and_then(Value::as_str)
        .expect("it has an op");
    let want_op = match &cmd {
        Command::Subscribe { .. } => "subscribe",
        Command::Unsubscribe { .. } => "unsubscribe",
        Command::Ping => "ping",
        Command::Ack { .. } => "ack",
    };
    assert_eq!(op, want_op, "{text:?}");
    let canon = canonical(&cmd);
    let again = Command::parse(&canon.to_string()).expect("the canonical form parses");
    assert_eq!(again, cmd, "{text:?}");
    let pretty = serde_json::to_string_pretty(&value).unwrap();
    let reformatted = Command::parse(&pretty).expect("reformatted JSON parses");
    assert_eq!(reformatted, cmd, "{text:?}");
});
