//! Durable consumers over the server: opening one for a connection (with
//! takeover), acknowledgements by HTTP, listing and deleting. The cursor
//! and the definition live in the log, so every server on a shared log
//! sees the same consumer; which connection holds it is known per server.
//!
//! A token sees and uses only consumers whose every pattern it may
//! subscribe to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tidings_core::{Consumer, ConsumerError, ConsumerSpec, Pattern, Position, SharedFilter};
use tidings_filter::CelFilter;

use super::{ErrorKind, Service, ServiceError};
use crate::auth::Principal;

/// The connection holding a consumer on this server.
pub(super) struct Live {
    /// Which session (to tell a takeover's guard from the old one's).
    id: u64,
    acks: tokio::sync::mpsc::UnboundedSender<u64>,
    kick: tokio::sync::watch::Sender<bool>,
}

/// What a session gets with its consumer.
pub(super) struct LiveHandle {
    pub acks: tokio::sync::mpsc::UnboundedReceiver<u64>,
    pub kicked: tokio::sync::watch::Receiver<bool>,
    pub guard: LiveGuard,
}

/// Removes the live entry when its session ends (unless taken over).
pub(super) struct LiveGuard {
    service: Arc<Service>,
    name: String,
    id: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut live = self.service.live.lock();
        if live.get(&self.name).is_some_and(|l| l.id == self.id) {
            live.remove(&self.name);
        }
    }
}

static NEXT_LIVE: AtomicU64 = AtomicU64::new(1);

fn cursor_error(e: tidings_core::CursorError) -> ServiceError {
    match e {
        tidings_core::CursorError::InvalidName(_) => {
            ServiceError::bad_request("invalid_consumer", e.to_string())
        }
        tidings_core::CursorError::BeyondEnd { .. } => {
            ServiceError::bad_request("invalid_ack", e.to_string())
        }
        other => ServiceError::new(ErrorKind::Unavailable, "unavailable", other.to_string()),
    }
}

impl Service {
    /// Compiles a `filter=` expression (400 quoting the problem).
    pub fn compile_filter(&self, expr: &str) -> Result<Arc<CelFilter>, ServiceError> {
        CelFilter::with_counter(expr, self.filter_failures.clone())
            .map(Arc::new)
            .map_err(|e| ServiceError::bad_request("invalid_filter", e.to_string()))
    }

    /// Events a filter could not evaluate (not delivered).
    pub fn filter_failures(&self) -> u64 {
        self.filter_failures.load(Ordering::Relaxed)
    }

    /// Opens consumer `name` for a session; a live holder on this server
    /// is closed (takeover).
    pub(super) async fn open_consumer(
        self: &Arc<Self>,
        who: &Principal,
        name: &str,
        patterns: &[Pattern],
        after: Option<u64>,
        filter: Option<Arc<CelFilter>>,
    ) -> Result<(Consumer, LiveHandle), ServiceError> {
        let mut builder = self
            .bus
            .consumer(name)
            .patterns(patterns.iter().map(|p| p.as_str().to_owned()))
            .start(after.map_or(Position::Beginning, Position::After));
        if let Some(f) = filter {
            let text = f.source().to_owned();
            builder = builder.filter(text, f as SharedFilter);
        }
        let consumer = builder.stream().await.map_err(|e| match e {
            // Another scope's definition is not shown (its patterns and
            // filter may name what this token cannot read): the name is
            // simply not one this token may use, as `GET` says.
            ConsumerError::Mismatch {
                ref existing,
                ref existing_filter,
                ..
            } if !may_use(
                who,
                &ConsumerSpec {
                    patterns: existing.clone(),
                    filter: existing_filter.clone(),
                },
            ) =>
            {
                ServiceError::new(
                    ErrorKind::NotFound,
                    "consumer_not_found",
                    format!("no consumer {name:?} this token may use"),
                )
            }
            ConsumerError::Mismatch { .. } => {
                ServiceError::new(ErrorKind::Conflict, "consumer_conflict", e.to_string())
            }
            ConsumerError::Pattern(p) => p.into(),
            ConsumerError::Cursor(c) => cursor_error(c),
            ConsumerError::Read(r) => r.into(),
            other => ServiceError::internal(other.to_string()),
        })?;
        let (acks_tx, acks) = tokio::sync::mpsc::unbounded_channel();
        let (kick, kicked) = tokio::sync::watch::channel(false);
        let id = NEXT_LIVE.fetch_add(1, Ordering::Relaxed);
        let previous = self.live.lock().insert(
            name.to_owned(),
            Live {
                id,
                acks: acks_tx,
                kick,
            },
        );
        if let Some(old) = previous {
            old.kick.send_replace(true);
        }
        Ok((
            consumer,
            LiveHandle {
                acks,
                kicked,
                guard: LiveGuard {
                    service: self.clone(),
                    name: name.to_owned(),
                    id,
                },
            },
        ))
    }

    /// The stored definition of `name`, if `who` may use it.
    async fn visible(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<(ConsumerSpec, Option<u64>), ServiceError> {
        tidings_core::log::validate_consumer_name(name).map_err(cursor_error)?;
        let list = self.bus.log().consumers().await.map_err(cursor_error)?;
        let not_found = || {
            ServiceError::new(
                ErrorKind::NotFound,
                "consumer_not_found",
                format!("no consumer {name:?}"),
            )
        };
        let record = list
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(not_found)?;
        let spec = ConsumerSpec::decode(&record.spec).unwrap_or(ConsumerSpec {
            patterns: Vec::new(),
            filter: None,
        });
        if !may_use(who, &spec) {
            // Not yours: as if it did not exist.
            return Err(not_found());
        }
        Ok((spec, record.cursor))
    }

    fn describe(&self, name: &str, spec: &ConsumerSpec, cursor: Option<u64>) -> Value {
        let last = self.last_seq();
        let cursor = cursor.unwrap_or(0);
        json!({
            "name": name,
            "patterns": spec.patterns,
            "filter": spec.filter,
            "cursor": cursor,
            "last_seq": last,
            "lag": last.saturating_sub(cursor),
            "connected": self.live.lock().contains_key(name),
        })
    }

    /// `GET /consumers`: the consumers `who` may use.
    pub async fn list_consumers(&self, who: &Principal) -> Result<Value, ServiceError> {
        let list = self.bus.log().consumers().await.map_err(cursor_error)?;
        let visible: Vec<Value> = list
            .into_iter()
            .filter_map(|c| {
                let spec = ConsumerSpec::decode(&c.spec)?;
                may_use(who, &spec).then(|| self.describe(&c.name, &spec, c.cursor))
            })
            .collect();
        Ok(json!({ "consumers": visible }))
    }

    /// `GET /consumers/NAME`.
    pub async fn get_consumer(&self, who: &Principal, name: &str) -> Result<Value, ServiceError> {
        let (spec, cursor) = self.visible(who, name).await?;
        Ok(self.describe(name, &spec, cursor))
    }

    /// `DELETE /consumers/NAME`: its definition and cursor go, and a
    /// connection holding it here is closed.
    pub async fn delete_consumer(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<Value, ServiceError> {
        self.visible(who, name).await?;
        self.bus
            .log()
            .delete_consumer(name)
            .await
            .map_err(cursor_error)?;
        if let Some(live) = self.live.lock().remove(name) {
            live.kick.send_replace(true);
        }
        Ok(json!({ "deleted": name }))
    }

    /// `POST /consumers/NAME/ack`: everything up to `seq` is done. A
    /// connection holding the consumer here takes it (so it never moves
    /// the cursor past what it delivered); otherwise the cursor is moved
    /// forward directly, never back.
    pub async fn ack(&self, who: &Principal, name: &str, seq: u64) -> Result<Value, ServiceError> {
        let (_, cursor) = self.visible(who, name).await?;
        let sender = self.live.lock().get(name).map(|l| l.acks.clone());
        if let Some(tx) = sender {
            if tx.send(seq).is_ok() {
                return Ok(json!({ "name": name, "acked": seq }));
            }
        }
        if seq > cursor.unwrap_or(0) {
            self.bus
                .log()
                .commit_cursor(name, seq)
                .await
                .map_err(cursor_error)?;
        }
        Ok(json!({ "name": name, "acked": seq }))
    }

    /// Each visible consumer's lag, for `/metrics`.
    pub async fn consumer_lags(&self, who: &Principal) -> Vec<(String, u64)> {
        let Ok(list) = self.bus.log().consumers().await else {
            return Vec::new();
        };
        let last = self.last_seq();
        list.into_iter()
            .filter_map(|c| {
                let spec = ConsumerSpec::decode(&c.spec)?;
                may_use(who, &spec).then(|| (c.name, last.saturating_sub(c.cursor.unwrap_or(0))))
            })
            .collect()
    }
}

/// A token may use a consumer when it may subscribe to every pattern.
fn may_use(who: &Principal, spec: &ConsumerSpec) -> bool {
    !spec.patterns.is_empty()
        && spec
            .patterns
            .iter()
            .all(|p| Pattern::parse(p).is_ok_and(|p| who.may_subscribe(&p)))
}
