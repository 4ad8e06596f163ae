//! Data contracts: a rule an event's `data` must keep to be emitted,
//! checked before anything is appended.
//!
//! # Contract
//!
//! * The core defines only the trait ([`DataContract`]) and what a refusal
//!   says ([`Violation`]: a JSON pointer and a reason); a schema language
//!   (JSON Schema, in the `tidings-schema` crate) or a plain closure
//!   implements it. A contract is built once and shared (`Arc`), never
//!   rebuilt per event.
//! * A bus built with contracts ([`BusBuilder::schema`]) checks every
//!   event it emits against **every** contract whose pattern matches the
//!   event's name, in registration order, before the append. The first
//!   violation refuses the whole emit (for a batch: every event of it)
//!   with [`EmitError::Contract`], so nothing is committed and no seq is
//!   used.
//! * Events another process appended to a shared log are not checked
//!   again: they are facts already. Servers sharing a log should share
//!   their contracts.
//! * A bus with no contracts pays one length check per emit.
//!
//! [`BusBuilder::schema`]: crate::BusBuilder::schema
//! [`EmitError::Contract`]: crate::EmitError::Contract

use std::sync::Arc;

use crate::event::NewEvent;
use crate::name::Pattern;

/// Longest [`Violation::reason`] kept, in bytes: a reason may quote the
/// offending value, which can be as large as the payload.
pub const MAX_REASON: usize = 512;

/// Where and why `data` broke a contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// A JSON pointer (RFC 6901) to the first failing place in `data`:
    /// `""` is `data` itself, `/items/0/qty` a field inside it.
    pub path: String,
    /// What is wrong there, for a person.
    pub reason: String,
}

impl Violation {
    /// A violation at `path`; `reason` is cut to [`MAX_REASON`] bytes
    /// (on a character boundary, marked with `…`).
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push('…');
        }
        Violation {
            path: path.into(),
            reason,
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "at the root: {}", self.reason)
        } else {
            write!(f, "at {}: {}", self.path, self.reason)
        }
    }
}

/// A rule over an event's `data`, checked at emit.
///
/// `check` must not block and must decide the same way every time for the
/// same value.
pub trait DataContract: Send + Sync + 'static {
    /// `Ok` if `data` keeps the contract, else the first place it breaks.
    fn check(&self, data: &serde_json::Value) -> Result<(), Violation>;
}

impl<F> DataContract for F
where
    F: Fn(&serde_json::Value) -> Result<(), Violation> + Send + Sync + 'static,
{
    fn check(&self, data: &serde_json::Value) -> Result<(), Violation> {
        self(data)
    }
}

/// A contract shared by the buses (and patterns) that use it.
pub type SharedContract = Arc<dyn DataContract>;

/// Why an event was refused by a contract: which event, under which
/// pattern, and the [`Violation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Its position in what was emitted (0 for a single emit).
    pub index: usize,
    /// Its name.
    pub name: String,
    /// The pattern of the contract it broke.
    pub pattern: String,
    /// Where and why.
    pub violation: Violation,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event {} ({:?}): its data does not match the schema for {:?} {}",
            self.index, self.name, self.pattern, self.violation
        )
    }
}

/// The contracts of a bus, by pattern, in registration order.
#[derive(Clone, Default)]
pub(crate) struct Contracts {
    list: Vec<(Pattern, SharedContract)>,
}

impl Contracts {
    pub(crate) fn push(&mut self, pattern: Pattern, contract: SharedContract) {
        self.list.push((pattern, contract));
    }

    /// Checks each event against every contract whose pattern matches its
    /// name; the first failure, in event order then registration order.
    pub(crate) fn check<'a>(
        &self,
        events: impl IntoIterator<Item = &'a NewEvent>,
    ) -> Result<(), Box<Refusal>> {
        if self.list.is_empty() {
            return Ok(());
        }
        for (index, event) in events.into_iter().enumerate() {
            for (pattern, contract) in &self.list {
                if !pattern.matches(&event.name) {
                    continue;
                }
                if let Err(violation) = contract.check(&event.data) {
                    return Err(Box::new(Refusal {
                        index,
                        name: event.name.clone(),
                        pattern: pattern.as_str().to_owned(),
                        violation,
                    }));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn positive(data: &serde_json::Value) -> Result<(), Violation> {
        match data["qty"].as_i64() {
            Some(n) if n > 0 => Ok(()),
            _ => Err(Violation::new("/qty", "must be a positive integer")),
        }
    }

    #[test]
    fn only_matching_patterns_are_checked_and_the_first_failure_is_named() {
        let mut c = Contracts::default();
        c.push(Pattern::parse("orders.>").unwrap(), Arc::new(positive));
        let ok = NewEvent::new("orders.placed", json!({"qty": 2})).unwrap();
        let other = NewEvent::new("users.joined", json!({"qty": -1})).unwrap();
        let bad = NewEvent::new("orders:placed", json!({"qty": 0})).unwrap();
        assert!(c.check([&ok, &other]).is_ok());
        let r = c.check([&ok, &other, &bad]).unwrap_err();
        assert_eq!(r.index, 2);
        assert_eq!(r.pattern, "orders.>");
        assert_eq!(r.violation.path, "/qty");
    }

    #[test]
    fn every_matching_contract_applies_in_order() {
        let mut c = Contracts::default();
        c.push(Pattern::all(), Arc::new(|_: &serde_json::Value| Ok(())));
        c.push(Pattern::parse("a.*").unwrap(), Arc::new(positive));
        c.push(
            Pattern::parse("a.b").unwrap(),
            Arc::new(|_: &serde_json::Value| Err(Violation::new("", "never"))),
        );
        let e = NewEvent::new("a.b", json!({"qty": 1})).unwrap();
        let r = c.check([&e]).unwrap_err();
        assert_eq!(
            (r.pattern.as_str(), r.violation.reason.as_str()),
            ("a.b", "never")
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let v = Violation::new("", "é".repeat(MAX_REASON));
        assert!(v.reason.len() <= MAX_REASON + '…'.len_utf8());
        assert!(v.reason.ends_with('…'));
        assert_eq!(v.to_string(), format!("at the root: {}", v.reason));
    }
}
