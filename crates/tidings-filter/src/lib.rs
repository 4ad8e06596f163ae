//! # tidings-filter: CEL filters over events
//!
//! [`CelFilter`] compiles a [CEL](https://cel.dev) expression once and
//! implements [`tidings_core::EventFilter`], so a subscription, a handler,
//! a consumer or a server connection evaluates it per event without parsing
//! it again. The expression sees the envelope:
//!
//! | variable | CEL type | |
//! |---|---|---|
//! | `seq` | `uint` | the event's sequence number |
//! | `name` | `string` | its name |
//! | `source` | `string` | who emitted it |
//! | `time` | `timestamp` | when it happened |
//! | `data` | JSON as CEL values | the payload |
//!
//! ```
//! use tidings_core::EventFilter;
//! let f = tidings_filter::CelFilter::compile(r#"data.world_id == 42 && source != "bot""#).unwrap();
//! let mut e = tidings_core::NewEvent::new("move", serde_json::json!({"world_id": 42})).unwrap();
//! # let e = tidings_core::Event { seq: 1, id: e.id, name: e.name, source: e.source, time: e.time, data: e.data, key: None, priority: None };
//! assert!(f.accepts(&e));
//! ```
//!
//! An expression that does not parse is a [`FilterError`] quoting the
//! problem. So is one that nests a comprehension (`all`, `exists`,
//! `exists_one`, `map`, `filter`) inside another: each level multiplies the
//! work per event, and filters run where every subscriber's events are
//! dispatched, so a few nested levels over a literal list would stall the
//! whole bus for every client. One level is linear in the lists it walks. An event the expression cannot be evaluated on (a missing
//! field, a type mismatch, a result that is not a boolean) is **not
//! delivered** and counted ([`CelFilter::failures`]); it never panics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cel::{Context, Env, Program, Value};
use tidings_core::{Event, EventFilter};

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 4096;

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// It is longer than [`MAX_LEN`].
    #[error("the filter is {len} bytes; at most {MAX_LEN} are accepted")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// It is empty.
    #[error("the filter is empty")]
    Empty,
    /// It nests a comprehension inside another.
    #[error("invalid filter {expr:?}: `{inner}` inside another comprehension; comprehensions cannot be nested (the cost would multiply per level)")]
    Nested {
        /// The expression.
        expr: String,
        /// The inner comprehension's macro.
        inner: String,
    },
    /// It does not parse.
    #[error("invalid filter {expr:?}: {message}")]
    Parse {
        /// The expression.
        expr: String,
        /// What the parser said.
        message: String,
    },
}

/// A compiled CEL expression over the envelope.
pub struct CelFilter {
    source: String,
    program: Program,
    /// The standard library, built once: building it is most of what an
    /// evaluation would otherwise cost.
    env: Arc<Env>,
    /// Events it could not evaluate (shared with whoever counts them).
    failures: Arc<AtomicU64>,
}

impl std::fmt::Debug for CelFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CelFilter")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl CelFilter {
    /// Compiles `expr`, counting failures on its own counter.
    pub fn compile(expr: &str) -> Result<CelFilter, FilterError> {
        Self::with_counter(expr, Arc::default())
    }

    /// Compiles `expr`; evaluation failures are added to `failures`.
    pub fn with_counter(expr: &str, failures: Arc<AtomicU64>) -> Result<CelFilter, FilterError> {
        if expr.len() > MAX_LEN {
            return Err(FilterError::TooLong { len: expr.len() });
        }
        if expr.trim().is_empty() {
            return Err(FilterError::Empty);
        }
        if let Some(inner) = nested_comprehension(expr) {
            return Err(FilterError::Nested {
                expr: expr.to_owned(),
                inner,
            });
        }
        // The parser must never take the process down, whatever it is given.
        let env = Arc::new(Env::stdlib());
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| env.compile(expr)))
            .map_err(|_| FilterError::Parse {
            expr: expr.to_owned(),
            message: "the expression could not be parsed".to_owned(),
        })?;
        let program = parsed.map_err(|e| FilterError::Parse {
            expr: expr.to_owned(),
            message: e.to_string(),
        })?;
        Ok(CelFilter {
            source: expr.to_owned(),
            program,
            env,
            failures,
        })
    }

    /// The expression.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Events this filter (and the others sharing its counter) could not
    /// evaluate.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Evaluates the expression on `event`: `Ok(bool)`, or why it could
    /// not.
    pub fn evaluate(&self, event: &Event) -> Result<bool, String> {
        let mut ctx = Context::with_env(self.env.clone());
        ctx.add_variable_from_value("seq", Value::UInt(event.seq));
        ctx.add_variable_from_value("name", Value::String(Arc::new(event.name.clone())));
        ctx.add_variable_from_value("source", Value::String(Arc::new(event.source.to_string())));
        ctx.add_variable_from_value("time", Value::Timestamp(event.time.fixed_offset()));
        ctx.add_variable_from_value("data", json(&event.data));
        match self.program.execute(&ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the filter gave {other:?}, not a boolean")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// JSON as CEL values: integers that fit are `int` (so `data.n == 42`
/// holds), other numbers `double`.
/// The first comprehension macro called inside another's arguments, if
/// any: `.all(`, `.exists(`, `.exists_one(`, `.map(` or `.filter(` while
/// an earlier one's parenthesis is still open (string literals skipped).
fn nested_comprehension(expr: &str) -> Option<String> {
    const MACROS: [&str; 5] = ["all", "exists", "exists_one", "map", "filter"];
    let bytes = expr.as_bytes();
    // Paren depth of each open comprehension call.
    let mut open: Vec<usize> = Vec::new();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            // A comment runs to the end of the line.
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            quote @ (b'"' | b'\'') => {
                // Skip the literal: escapes count unless it is raw (r"..").
                let raw = i > 0 && matches!(bytes[i - 1], b'r' | b'R');
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' && !raw { 2 } else { 1 };
                }
            }
            b'(' => depth += 1,
            b')' => {
                if open.last() == Some(&depth) {
                    open.pop();
                }
                depth = depth.saturating_sub(1);
            }
            b'.' => {
                let rest = &expr[i + 1..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let after = rest[name.len()..].trim_start();
                if MACROS.contains(&name.as_str()) && after.starts_with('(') {
                    if !open.is_empty() {
                        return Some(name);
                    }
                    open.push(depth + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn json(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::String(Arc::new(s.clone())),
        J::Array(a) => Value::List(Arc::new(a.iter().map(json).collect())),
        J::Object(o) => {
            let map: std::collections::HashMap<String, Value> =
                o.iter().map(|(k, v)| (k.clone(), json(v))).collect();
            Value::Map(map.into())
        }
    }
}

impl EventFilter for CelFilter {
    fn accepts(&self, event: &Event) -> bool {
        match self.evaluate(event) {
            Ok(b) => b,
            Err(_) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(name: &str, data: serde_json::Value) -> Event {
        let n = tidings_core::NewEvent::new(name, data).unwrap();
        Event {
            seq: 7,
            id: n.id,
            name: n.name,
            source: "game".into(),
            time: n.time,
            data: n.data,
            key: None,
            priority: None,
        }
    }

    #[test]
    fn the_envelope_is_visible() {
        let e = event(
            "player.move",
            json!({"world_id": 42, "x": 1.5, "tags": ["a"]}),
        );
        for (expr, want) in [
            ("data.world_id == 42", true),
            ("data.world_id == 41", false),
            (r#"data.world_id == 42 && source != "bot""#, true),
            ("seq == 7u", true),
            ("seq > 3u", true),
            (r#"name.startsWith("player.")"#, true),
            ("data.x > 1.0", true),
            (r#""a" in data.tags"#, true),
            (r#"time > timestamp("2000-01-01T00:00:00Z")"#, true),
        ] {
            assert_eq!(
                CelFilter::compile(expr).unwrap().accepts(&e),
                want,
                "{expr}"
            );
        }
    }

    #[test]
    fn failures_are_not_delivered_and_counted() {
        let f = CelFilter::compile("data.world_id == 42").unwrap();
        assert!(
            !f.accepts(&event("a", json!({"other": 1}))),
            "a missing field"
        );
        assert!(!f.accepts(&event("a", json!("text"))), "no fields at all");
        let g = CelFilter::compile("data.world_id").unwrap();
        assert!(
            !g.accepts(&event("a", json!({"world_id": 3}))),
            "not a boolean"
        );
        assert_eq!(f.failures(), 2);
        assert_eq!(g.failures(), 1);
    }

    #[test]
    fn bad_expressions_quote_the_problem() {
        let e = CelFilter::compile("data.world_id ==").unwrap_err();
        assert!(matches!(e, FilterError::Parse { .. }));
        assert!(e.to_string().contains("data.world_id =="), "{e}");
        assert_eq!(CelFilter::compile("  ").unwrap_err(), FilterError::Empty);
        assert!(matches!(
            CelFilter::compile(&"a".repeat(MAX_LEN + 1)),
            Err(FilterError::TooLong { .. })
        ));
    }

    #[test]
    fn comprehensions_cannot_be_nested() {
        let nested = |e: &str| matches!(CelFilter::compile(e), Err(FilterError::Nested { .. }));
        for ok in [
            r#"data.items.exists(i, i.price > 100)"#,
            r#"data.a.all(x, x > 0) && data.b.exists(y, y == 2)"#,
            r#"[1, 2].map(x, x * 2) == [2, 4]"#,
            r#"data.note == ".exists(a, [1].exists(b, true))""#,
            r#"data.s.contains("(") && data.t.exists(x, x == ")")"#,
        ] {
            assert!(!nested(ok), "{ok}");
            assert!(CelFilter::compile(ok).is_ok(), "{ok}");
        }
        for bad in [
            r#"data.items.exists(i, i.tags.exists(t, t == "x"))"#,
            r#"[0,1,2].exists(a, [0,1,2].exists(b, [0,1,2].exists(c, a+b+c == 99)))"#,
            r#"data.l.map(x, data.l.filter(y, y == x))"#,
            // Hidden behind a raw string or a comment quote: still seen.
            "r\"\\\" == data.s || [1].exists(a, [1].exists(b, true)) || data.t == \"\"",
            "data.x == 1 // \"\n|| [1].exists(a, [1].exists(b, true)) // \"",
        ] {
            assert!(nested(bad), "{bad}");
        }
        let e = CelFilter::compile("[1].all(a, [1].exists(b, true))").unwrap_err();
        assert!(e.to_string().contains("cannot be nested"), "{e}");
    }
}
