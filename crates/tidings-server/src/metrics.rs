//! Server metrics in one `prometheus-client` registry, rendered by
//! `GET /metrics` in the OpenMetrics text format (which Prometheus reads).
//!
//! The service's own counters are registered here; the bus's counters and
//! the log's last seq are read at scrape time by a collector, and so are a
//! store's own statistics (the collectors in `metrics/stores.rs`: SQLite's writer,
//! NATS's and Redis' appends and followers, added with
//! [`Metrics::register_collector`] when the service is built). The
//! registry holds no per-channel or per-pattern series, so every caller
//! may see all of it.

pub(crate) mod stores;

use std::fmt;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tidings_core::Bus;

/// Upper bounds (seconds) of the append latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A transport clients connect with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `/ws` and `/ws/events/{channel}`.
    WebSocket,
    /// `/sse`.
    Sse,
}

impl Transport {
    /// Its label value.
    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Sse => "sse",
        }
    }
}

impl EncodeLabelValue for Transport {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.label(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConsumerLabel {
    consumer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabel {
    transport: Transport,
}

/// Counters the service updates, and the registry they live in.
pub struct Metrics {
    registry: Registry,
    /// Handles to the family's series, by `Transport as usize`: the hot
    /// path takes no lock.
    delivered: [Counter; 2],
    connections: [Gauge; 2],
    lagged: Counter,
    rejected: Counter,
    append: Histogram,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Encodes `(name, help, value)` counters read at scrape time.
fn encode_counters<N: AsRef<str>>(
    encoder: &mut DescriptorEncoder,
    counters: &[(N, &str, u64)],
) -> Result<(), fmt::Error> {
    for (name, help, v) in counters {
        let c = ConstCounter::new(*v);
        c.encode(encoder.encode_descriptor(name.as_ref(), help, None, c.metric_type())?)?;
    }
    Ok(())
}

/// The bus's counters and the log's last seq, read at each scrape.
struct BusCollector(Bus);

impl fmt::Debug for BusCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BusCollector")
    }
}

impl Collector for BusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self.0.stats();
        encode_counters(
            &mut encoder,
            &[
                (
                    "tidings_published",
                    "Events committed through this server.",
                    stats.published,
                ),
                (
                    "tidings_handler_errors",
                    "In-process handlers that failed.",
                    stats.handler_errors,
                ),
                (
                    "tidings_handler_panics",
                    "In-process handlers that panicked.",
                    stats.handler_panics,
                ),
                (
                    "tidings_schema_violations",
                    "Publishes refused because an event's data failed a [[schemas]] schema.",
                    stats.contract_refused,
                ),
            ],
        )?;
        let g = ConstGauge::new(self.0.last_seq() as i64);
        g.encode(encoder.encode_descriptor(
            "tidings_last_seq",
            "The log's last sequence number.",
            None,
            g.metric_type(),
        )?)?;
        Ok(())
    }
}

impl Metrics {
    /// The registry, with the bus's counters collected from `bus`.
    pub fn new(bus: Bus) -> Metrics {
        let mut registry = Registry::default();
        let delivered = Family::<TransportLabel, Counter>::default();
        let connections = Family::<TransportLabel, Gauge>::default();
        let lagged = Counter::default();
        let rejected = Counter::default();
        let append = Histogram::new(BUCKETS);
        // `register` ends each help text with a full stop itself; the
        // collectors' descriptors are written out as given.
        registry.register(
            "tidings_delivered",
            "Events delivered to clients",
            delivered.clone(),
        );
        registry.register(
            "tidings_connections",
            "Open client connections",
            connections.clone(),
        );
        registry.register(
            "tidings_lagged",
            "Lag notices sent to clients",
            lagged.clone(),
        );
        registry.register(
            "tidings_rejected_requests",
            "Requests refused with a 4xx status",
            rejected.clone(),
        );
        registry.register(
            "tidings_append_seconds",
            "Time to commit a publish to the log",
            append.clone(),
        );
        registry.register_collector(Box::new(BusCollector(bus)));
        let series = |t| TransportLabel { transport: t };
        Metrics {
            registry,
            delivered: [Transport::WebSocket, Transport::Sse]
                .map(|t| delivered.get_or_create(&series(t)).clone()),
            connections: [Transport::WebSocket, Transport::Sse]
                .map(|t| connections.get_or_create(&series(t)).clone()),
            lagged,
            rejected,
            append,
        }
    }

    /// Adds a collector (a log's own statistics, say) to the registry.
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// One event delivered over `t`.
    pub fn delivered(&self, t: Transport) {
        self.delivered[t as usize].inc();
    }
    /// Events delivered over `t` so far.
    pub fn delivered_total(&self, t: Transport) -> u64 {
        self.delivered[t as usize].get()
    }
    /// A connection opened (+1) or closed (-1).
    pub fn connection(&self, t: Transport, delta: i64) {
        self.connections[t as usize].inc_by(delta);
    }
    /// Open connections over `t`.
    pub fn connections(&self, t: Transport) -> i64 {
        self.connections[t as usize].get()
    }
    /// A lag notice was sent.
    pub fn lagged(&self) {
        self.lagged.inc();
    }
    /// A request was refused.
    pub fn rejected(&self) {
        self.rejected.inc();
    }
    /// An append took `d`.
    pub fn append_latency(&self, d: Duration) {
        self.append.observe(d.as_secs_f64());
    }

    /// The text exposition, with the lag of the consumers given (the ones
    /// the caller may see) and the filter failure count.
    pub fn render(&self, consumer_lags: &[(String, u64)], filter_failures: u64) -> String {
        let mut per_call = Registry::default();
        let lag = Family::<ConsumerLabel, Gauge>::default();
        for (name, l) in consumer_lags {
            lag.get_or_create(&ConsumerLabel {
                consumer: name.clone(),
            })
            .set(*l as i64);
        }
        per_call.register(
            "tidings_consumer_lag",
            "Events after a durable consumer's cursor",
            lag,
        );
        per_call.register(
            "tidings_filter_failures",
            "Events a filter could not evaluate (not delivered)",
            ConstCounter::new(filter_failures),
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
            .and_then(|()| prometheus_client::encoding::text::encode_registry(&mut out, &per_call))
            .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut out))
            .expect("writing to a String cannot fail");
        out
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_text_is_wellformed() {
        let bus = Bus::new();
        bus.emit("a", serde_json::Value::Null).unwrap();
        let m = Metrics::new(bus);
        m.append_latency(Duration::from_micros(50));
        m.append_latency(Duration::from_millis(3));
        m.append_latency(Duration::from_secs(5));
        m.delivered(Transport::Sse);
        assert_eq!(m.delivered_total(Transport::Sse), 1);
        assert_eq!(m.delivered_total(Transport::WebSocket), 0);
        m.connection(Transport::WebSocket, 1);
        let text = m.render(&[("timeline".into(), 4)], 2);
        assert!(
            text.contains("tidings_consumer_lag{consumer=\"timeline\"} 4"),
            "{text}"
        );
        assert!(text.contains("tidings_filter_failures_total 2"), "{text}");
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
        assert!(text.contains("tidings_append_seconds_count 3"), "{text}");
        assert!(
            text.contains("tidings_delivered_total{transport=\"sse\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tidings_connections{transport=\"ws\"} 1"),
            "{text}"
        );
        assert!(text.contains("tidings_last_seq 1"), "{text}");
        assert!(text.contains("tidings_published_total 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(line.split(' ').count(), 2, "{line}");
        }
        let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP")).collect();
        assert!(helps.len() >= 10, "{text}");
        for help in helps {
            assert!(
                help.ends_with('.') && !help.ends_with(".."),
                "one full stop: {help}"
            );
        }
    }
}
