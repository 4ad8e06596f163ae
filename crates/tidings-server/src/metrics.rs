//! Server counters, rendered in Prometheus text format by `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tidings_core::Stats;

/// Upper bounds (seconds) of the append latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A transport clients connect with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `/ws` and `/ws/events/{channel}`.
    WebSocket,
    /// `/sse`.
    Sse,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Sse => "sse",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// Counters the service updates.
#[derive(Default)]
pub struct Metrics {
    /// Events delivered to clients, per transport.
    delivered: [AtomicU64; 2],
    /// Open connections, per transport.
    connections: [AtomicI64; 2],
    /// Lag notices sent to clients.
    lagged: AtomicU64,
    /// Requests refused (4xx) by code.
    rejected: AtomicU64,
    /// Histogram of append latency: counts per bucket (+Inf last), sum in ns.
    append_buckets: [AtomicU64; 13],
    append_sum_ns: AtomicU64,
    append_count: AtomicU64,
}

impl Metrics {
    /// One event delivered over `t`.
    pub fn delivered(&self, t: Transport) {
        self.delivered[t.index()].fetch_add(1, Relaxed);
    }
    /// A connection opened (+1) or closed (-1).
    pub fn connection(&self, t: Transport, delta: i64) {
        self.connections[t.index()].fetch_add(delta, Relaxed);
    }
    /// Open connections over `t`.
    pub fn connections(&self, t: Transport) -> i64 {
        self.connections[t.index()].load(Relaxed)
    }
    /// A lag notice was sent.
    pub fn lagged(&self) {
        self.lagged.fetch_add(1, Relaxed);
    }
    /// A request was refused.
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }
    /// An append took `d`.
    pub fn append_latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.append_buckets[i].fetch_add(1, Relaxed);
        self.append_sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
        self.append_count.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, bus: &Stats, last_seq: u64) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "tidings_published_total",
            "Events committed through this server.",
            bus.published,
        );
        counter(
            "tidings_handler_errors_total",
            "In-process handlers that failed.",
            bus.handler_errors,
        );
        counter(
            "tidings_handler_panics_total",
            "In-process handlers that panicked.",
            bus.handler_panics,
        );
        counter(
            "tidings_lagged_total",
            "Lag notices sent to clients.",
            self.lagged.load(Relaxed),
        );
        counter(
            "tidings_rejected_requests_total",
            "Requests refused with a 4xx status.",
            self.rejected.load(Relaxed),
        );
        let _ = writeln!(out, "# HELP tidings_last_seq The log's last sequence number.\n# TYPE tidings_last_seq gauge\ntidings_last_seq {last_seq}");
        let _ = writeln!(out, "# HELP tidings_delivered_total Events delivered to clients.\n# TYPE tidings_delivered_total counter");
        for t in [Transport::WebSocket, Transport::Sse] {
            let _ = writeln!(
                out,
                "tidings_delivered_total{{transport=\"{}\"}} {}",
                t.label(),
                self.delivered[t.index()].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tidings_connections Open client connections.\n# TYPE tidings_connections gauge"
        );
        for t in [Transport::WebSocket, Transport::Sse] {
            let _ = writeln!(
                out,
                "tidings_connections{{transport=\"{}\"}} {}",
                t.label(),
                self.connections(t)
            );
        }
        let _ = writeln!(out, "# HELP tidings_append_seconds Time to commit a publish to the log.\n# TYPE tidings_append_seconds histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.append_buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "tidings_append_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += self.append_buckets[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "tidings_append_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "tidings_append_seconds_sum {}",
            self.append_sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "tidings_append_seconds_count {}",
            self.append_count.load(Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_text_is_wellformed() {
        let m = Metrics::default();
        m.append_latency(Duration::from_micros(50));
        m.append_latency(Duration::from_millis(3));
        m.append_latency(Duration::from_secs(5));
        m.delivered(Transport::Sse);
        m.connection(Transport::WebSocket, 1);
        let text = m.render(&Stats::default(), 9);
        assert!(
            text.contains("tidings_append_seconds_bucket{le=\"0.0001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tidings_append_seconds_bucket{le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tidings_append_seconds_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(text.contains("tidings_append_seconds_count 3"));
        assert!(text.contains("tidings_delivered_total{transport=\"sse\"} 1"));
        assert!(text.contains("tidings_connections{transport=\"ws\"} 1"));
        assert!(text.contains("tidings_last_seq 9"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(line.split(' ').count(), 2, "{line}");
        }
    }
}
