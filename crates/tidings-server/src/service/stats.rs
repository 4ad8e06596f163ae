//! `GET /stats`: what the dashboard shows, as one JSON object, built only
//! from the service's public surface (the metrics, the caller's channels,
//! the log's last seq, the bus's statistics).

use serde_json::{json, Value};

use super::{Health, Service};
use crate::auth::Principal;
use crate::metrics::Transport;

/// Reads `tidings_delivered_total{transport="T"}` from the metrics text:
/// the per-transport delivery counters are only exposed there.
fn delivered(text: &str, transport: Transport) -> u64 {
    let label = format!("transport=\"{}\"", transport.label());
    text.lines()
        .filter(|l| l.starts_with("tidings_delivered_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .next()
        .unwrap_or(0)
}

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
        // Only the server-wide counters are read: no consumer series.
        let text = self.metrics.render(&[], 0);
        let (dws, dsse) = (
            delivered(&text, Transport::WebSocket),
            delivered(&text, Transport::Sse),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_counters_are_read_by_transport() {
        let text = "# TYPE tidings_delivered counter\n\
                    tidings_delivered_total{transport=\"ws\"} 7\n\
                    tidings_delivered_total{transport=\"sse\"} 2\n# EOF\n";
        assert_eq!(delivered(text, Transport::WebSocket), 7);
        assert_eq!(delivered(text, Transport::Sse), 2);
        assert_eq!(delivered("", Transport::Sse), 0);
    }
}
