//! `GET /stats`: what the dashboard shows, as one JSON object, built only
//! from the service's public surface (the metrics, the caller's channels,
//! the log's last seq, the bus's statistics).

use serde_json::{json, Value};

use super::{Health, Service};
use crate::auth::Principal;
use crate::metrics::Transport;

impl Service {
    /// The dashboard's numbers. Server-wide counters (as `/metrics` shows
    /// every caller) plus the channels `who` may subscribe to (as
    /// `/channels`).
    ///
    /// `{"last_seq","published","delivered":{"ws","sse","total"},
    /// "connections":{"ws","sse","total"},"channels":{name:n},
    /// "total_channels","subscriptions","lagged","health","reason"?,"auth"}`
    pub fn stats(&self, who: &Principal) -> Value {
        let bus = self.bus().stats();
        let (dws, dsse) = (
            self.metrics.delivered_total(Transport::WebSocket),
            self.metrics.delivered_total(Transport::Sse),
        );
        let (cws, csse) = (
            self.metrics.connections(Transport::WebSocket).max(0),
            self.metrics.connections(Transport::Sse).max(0),
        );
        let channels = self.channels(who);
        let mut v = json!({
            "last_seq": self.last_seq(),
            "published": bus.published,
            "delivered": {"ws": dws, "sse": dsse, "total": dws + dsse},
            "connections": {"ws": cws, "sse": csse, "total": cws + csse},
            "total_channels": channels.len(),
            "channels": channels,
            "subscriptions": bus.subscriptions,
            "lagged": bus.lagged,
            "auth": self.auth_enabled(),
            "health": "ok",
        });
        if let Health::Degraded { reason } = self.health() {
            v["health"] = json!("degraded");
            v["reason"] = json!(reason);
        }
        v
    }
}
