//! Durable consumers: their cursors in the hash `K:cursors` and their
//! definitions in the hash `K:consumers`.
//!
//! # Contract
//!
//! * Every name is validated first (`validate_consumer_name`).
//! * `commit_cursor` checks the seq against the counter and writes in one
//!   script: a cursor is never beyond the last committed seq (`BeyondEnd`).
//! * A definition is written once (`HSETNX` then `HGET` in one script): of
//!   several servers defining one name, the first wins and every one gets
//!   the stored spec back.
//! * `delete_consumer` removes the definition and the cursor in one
//!   script; `consumers()` reads both hashes in one script and lists every
//!   name found in either, sorted.

use std::collections::HashMap;
use std::sync::Arc;
use tidings_core::log::LogFailure;

use redis::Value;
use tidings_core::log::{validate_consumer_name, ConsumerRecord, CursorError};

use super::{array, bounded, Shared};
use crate::codec::{int, seq_of};
use crate::error::{OpError, StorageError};
use crate::scripts;

impl Shared {
    pub(super) async fn cursor(
        self: Arc<Self>,
        consumer: String,
    ) -> Result<Option<u64>, CursorError> {
        validate_consumer_name(&consumer)?;
        let mut conn = self.conn.clone();
        let v: Option<String> = bounded(self.options.timeout, async {
            Ok(redis::cmd("HGET")
                .arg(&self.keys.cursors)
                .arg(&consumer)
                .query_async(&mut conn)
                .await?)
        })
        .await?;
        match v {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                CursorError::Failed(LogFailure::Storage(Box::new(StorageError::decode(
                    format!("cursor {consumer:?} holds {s:?}, not a seq"),
                ))))
            }),
        }
    }

    pub(super) async fn commit_cursor(
        self: Arc<Self>,
        consumer: String,
        seq: u64,
    ) -> Result<(), CursorError> {
        validate_consumer_name(&consumer)?;
        let mut conn = self.conn.clone();
        let reply: Value = bounded(self.options.timeout, async {
            Ok(scripts::COMMIT_CURSOR
                .key(&self.keys.cursors)
                .key(&self.keys.counter)
                .arg(&consumer)
                .arg(seq)
                .invoke_async(&mut conn)
                .await?)
        })
        .await?;
        let items = array(reply, "commit_cursor reply")?;
        match items.as_slice() {
            [ok] if int(ok).map_err(OpError::from)? == 1 => Ok(()),
            [_, last] => Err(CursorError::BeyondEnd {
                name: consumer,
                seq,
                last: seq_of(last).map_err(OpError::from)?,
            }),
            _ => Err(OpError::from(StorageError::decode("bad commit_cursor reply")).into()),
        }
    }

    pub(super) async fn define_consumer(
        self: Arc<Self>,
        name: String,
        spec: String,
    ) -> Result<String, CursorError> {
        validate_consumer_name(&name)?;
        let mut conn = self.conn.clone();
        let stored: String = bounded(self.options.timeout, async {
            Ok(scripts::DEFINE_CONSUMER
                .key(&self.keys.consumers)
                .arg(&name)
                .arg(&spec)
                .invoke_async(&mut conn)
                .await?)
        })
        .await?;
        Ok(stored)
    }

    pub(super) async fn consumers(self: Arc<Self>) -> Result<Vec<ConsumerRecord>, CursorError> {
        let mut conn = self.conn.clone();
        let (specs, cursors): (HashMap<String, String>, HashMap<String, String>) =
            bounded(self.options.timeout, async {
                Ok(scripts::CONSUMERS
                    .key(&self.keys.consumers)
                    .key(&self.keys.cursors)
                    .invoke_async(&mut conn)
                    .await?)
            })
            .await?;
        let mut names: Vec<&String> = specs.keys().chain(cursors.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let cursor = match cursors.get(name) {
                    None => None,
                    Some(s) => Some(s.parse().map_err(|_| {
                        CursorError::Failed(LogFailure::Storage(Box::new(StorageError::decode(
                            format!("cursor {name:?} holds {s:?}, not a seq"),
                        ))))
                    })?),
                };
                Ok(ConsumerRecord {
                    name: name.clone(),
                    spec: specs.get(name).cloned().unwrap_or_default(),
                    cursor,
                })
            })
            .collect()
    }

    pub(super) async fn delete_consumer(
        self: Arc<Self>,
        name: String,
    ) -> Result<bool, CursorError> {
        validate_consumer_name(&name)?;
        let mut conn = self.conn.clone();
        let removed: u64 = bounded(self.options.timeout, async {
            Ok(scripts::DELETE_CONSUMER
                .key(&self.keys.consumers)
                .key(&self.keys.cursors)
                .arg(&name)
                .invoke_async(&mut conn)
                .await?)
        })
        .await?;
        Ok(removed > 0)
    }
}
