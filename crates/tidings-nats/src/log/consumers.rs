//! Durable consumers in the stream `<name>_cursors`: their cursors and
//! their definitions, one subject each, the last message kept per subject
//! (a key-value bucket by hand).
//!
//! # Subjects
//!
//! A consumer name becomes one subject token: a kind prefix and the hex of
//! the name's bytes, so any name is a valid token and the kinds cannot
//! collide (the first byte of the token differs; hex digits are never `_`):
//!
//! * `<name>_cursors.c_<hex>`: the cursor, payload the seq as decimal text;
//! * `<name>_cursors.d_<hex>`: the definition, payload the spec as stored.
//!
//! # Contract
//!
//! * A definition is written once: it is published with
//!   `Nats-Expected-Last-Subject-Sequence: 0`, which the server refuses
//!   ("wrong last sequence") when the subject already holds a message, so
//!   of two servers defining one name at once the first wins and the other
//!   reads the stored spec back.
//! * `delete_consumer` purges both subjects (two purges: a reader in
//!   between may see the cursor without the definition, never a stale
//!   definition afterwards).
//! * `consumers()` lists the stream's subjects (stream info with a subjects
//!   filter) and reads the last message of each; a subject purged in
//!   between is left out.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::DirectGetErrorKind;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tidings_core::log::{validate_consumer_name, ConsumerRecord, CursorError};

use super::Inner;
use crate::error::EngineError;

/// Token prefix of cursor subjects.
const CURSOR: &str = "c_";
/// Token prefix of definition subjects.
const DEFINITION: &str = "d_";
/// How often `define_consumer` retries when the definition it lost to is
/// deleted before it could read it back.
const DEFINE_ATTEMPTS: usize = 5;
/// Last-message reads `consumers()` runs at once.
const LIST_CONCURRENCY: usize = 16;

/// What a subject of the cursor stream holds.
enum Kind {
    Cursor,
    Definition,
}

/// The consumer name behind a subject token, if it is one of ours.
fn decode_token(token: &str) -> Option<(Kind, String)> {
    let (kind, hex) = if let Some(h) = token.strip_prefix(CURSOR) {
        (Kind::Cursor, h)
    } else if let Some(h) = token.strip_prefix(DEFINITION) {
        (Kind::Definition, h)
    } else {
        return None;
    };
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok().map(|name| (kind, name))
}

fn parse_seq(consumer: &str, payload: &[u8]) -> Result<u64, EngineError> {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| EngineError::Storage(format!("cursor {consumer:?} holds a malformed value")))
}

fn parse_spec(consumer: &str, payload: Bytes) -> Result<String, EngineError> {
    String::from_utf8(payload.to_vec()).map_err(|_| {
        EngineError::Storage(format!(
            "consumer {consumer:?} has a definition that is not UTF-8"
        ))
    })
}

impl Inner {
    /// The subject of `consumer`'s cursor or definition (`prefix`).
    fn consumer_subject(&self, prefix: &str, consumer: &str) -> String {
        // Subjects allow few characters: hex-encode the consumer name.
        let mut k = String::with_capacity(self.cursor_prefix.len() + consumer.len() * 2 + 2);
        k.push_str(&self.cursor_prefix);
        k.push_str(prefix);
        for b in consumer.bytes() {
            k.push_str(&format!("{b:02x}"));
        }
        k
    }

    /// The last message on `subject` of the cursor stream, if any.
    async fn last_on(&self, what: &str, subject: String) -> Result<Option<Bytes>, EngineError> {
        let res = tokio::time::timeout(
            self.opts.request_timeout,
            self.cursors.direct_get_last_for_subject(subject),
        )
        .await;
        match res {
            Err(_) => Err(EngineError::Unavailable(format!(
                "{what}: no answer from NATS within {:?}",
                self.opts.request_timeout
            ))),
            Ok(Err(e)) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Ok(Err(e)) => Err(self.engine_err(what, e)),
            Ok(Ok(m)) => Ok(Some(m.payload)),
        }
    }

    pub(super) async fn cursor(&self, consumer: &str) -> Result<Option<u64>, CursorError> {
        validate_consumer_name(consumer)?;
        let subject = self.consumer_subject(CURSOR, consumer);
        match self.last_on("cursor get", subject).await? {
            None => Ok(None),
            Some(b) => Ok(Some(parse_seq(consumer, &b)?)),
        }
    }

    pub(super) async fn commit_cursor(&self, consumer: &str, seq: u64) -> Result<(), CursorError> {
        validate_consumer_name(consumer)?;
        let mut last = self.state.lock().tail.last;
        if seq > last {
            last = self.fetch_tail().await?.last;
            if seq > last {
                return Err(CursorError::BeyondEnd {
                    name: consumer.to_owned(),
                    seq,
                    last,
                });
            }
        }
        let subject = self.consumer_subject(CURSOR, consumer);
        let ack = self
            .bounded(
                "cursor put",
                self.js.publish(subject, seq.to_string().into()),
            )
            .await?;
        self.bounded("cursor put ack", async { ack.await }).await?;
        Ok(())
    }

    pub(super) async fn define_consumer(
        &self,
        name: &str,
        spec: &str,
    ) -> Result<String, CursorError> {
        validate_consumer_name(name)?;
        let subject = self.consumer_subject(DEFINITION, name);
        for _ in 0..DEFINE_ATTEMPTS {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
            let payload = Bytes::copy_from_slice(spec.as_bytes());
            let ack = self
                .bounded(
                    "consumer define",
                    self.js
                        .publish_with_headers(subject.clone(), headers, payload),
                )
                .await?;
            match tokio::time::timeout(self.opts.request_timeout, ack).await {
                Err(_) => {
                    return Err(EngineError::Unavailable(format!(
                        "consumer define ack: no answer from NATS within {:?}",
                        self.opts.request_timeout
                    ))
                    .into())
                }
                Ok(Ok(_)) => return Ok(spec.to_owned()),
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {}
                Ok(Err(e)) => return Err(self.engine_err("consumer define ack", e).into()),
            }
            // Defined already: the stored spec wins. If it was deleted
            // before we read it, try to define it again.
            if let Some(stored) = self.last_on("consumer get", subject.clone()).await? {
                return Ok(parse_spec(name, stored)?);
            }
        }
        Err(EngineError::Unavailable(format!(
            "consumer {name:?} kept being defined and deleted under define_consumer()"
        ))
        .into())
    }

    pub(super) async fn consumers(&self) -> Result<Vec<ConsumerRecord>, CursorError> {
        let filter = format!("{}>", self.cursor_prefix);
        let subjects: BTreeSet<String> = self
            .bounded("consumer list", async {
                self.cursors
                    .info_with_subjects(&filter)
                    .await?
                    .map_ok(|(subject, _)| subject)
                    .try_collect()
                    .await
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })
            .await?;
        let wanted: Vec<(Kind, String, String)> = subjects
            .into_iter()
            .filter_map(|subject| {
                let token = subject.strip_prefix(&self.cursor_prefix)?;
                let (kind, name) = decode_token(token)?;
                Some((kind, name, subject))
            })
            .collect();
        let values: Vec<_> = futures_util::stream::iter(wanted)
            .map(|(kind, name, subject)| async move {
                let v = self.last_on("consumer get", subject).await?;
                Ok::<_, EngineError>((kind, name, v))
            })
            .buffered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        let mut by_name: BTreeMap<String, ConsumerRecord> = BTreeMap::new();
        for (kind, name, value) in values {
            // Purged since it was listed.
            let Some(value) = value else { continue };
            let rec = by_name
                .entry(name.clone())
                .or_insert_with(|| ConsumerRecord {
                    name: name.clone(),
                    spec: String::new(),
                    cursor: None,
                });
            match kind {
                Kind::Cursor => rec.cursor = Some(parse_seq(&name, &value)?),
                Kind::Definition => rec.spec = parse_spec(&name, value)?,
            }
        }
        Ok(by_name.into_values().collect())
    }

    pub(super) async fn delete_consumer(&self, name: &str) -> Result<bool, CursorError> {
        validate_consumer_name(name)?;
        let mut purged = 0;
        for prefix in [DEFINITION, CURSOR] {
            let subject = self.consumer_subject(prefix, name);
            let r = self
                .bounded("consumer delete", async {
                    self.cursors.purge().filter(subject).await
                })
                .await?;
            purged += r.purged;
        }
        Ok(purged > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_kinds_differ() {
        assert!(matches!(
            decode_token("c_6162"),
            Some((Kind::Cursor, n)) if n == "ab"
        ));
        assert!(matches!(
            decode_token("d_6162"),
            Some((Kind::Definition, n)) if n == "ab"
        ));
        assert!(decode_token("x_6162").is_none());
        assert!(decode_token("c_616").is_none());
        assert!(decode_token("c_zz").is_none());
    }
}
