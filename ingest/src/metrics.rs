//! Prometheus metrics of ingest, served at `/metrics`.
//!
//! Every rejection is counted by its reason, so an operator can see at a glance that a
//! gateway keeps sending readings of a device nobody registered, or a clock is off.

use std::sync::RwLock;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::reason::Reason;

/// Label of a rejection reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason's stable name.
    pub reason: Reason,
}

impl EncodeLabelValue for Reason {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Label of an MQTT channel.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    /// `telemetry`, `status`, `ack`, or `other`.
    pub channel: &'static str,
}

/// Ingest's metrics.
pub struct Metrics {
    registry: RwLock<Registry>,
    /// MQTT messages received, by channel.
    pub messages: Family<ChannelLabel, Counter>,
    /// Readings and batches refused, by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Readings stored.
    pub readings_stored: Counter,
    /// Batches stored.
    pub batches_stored: Counter,
    /// Batches dropped as already stored (resends).
    pub batches_duplicate: Counter,
    /// Time of one durable store append (one group of batches, one fsync).
    pub append_seconds: Histogram,
    /// Messages per durable append.
    pub group_size: Histogram,
    /// HTTP connections accepted and served.
    pub http_connections: Counter,
    /// HTTP connections closed at once because the connection cap was reached.
    pub http_refused: Counter,
    /// Failed accepts of the HTTP listener (out of file descriptors, ...), each followed
    /// by a pause.
    pub http_accept_errors: Counter,
    /// HTTP connections closed because a request's header or the whole request took too
    /// long.
    pub http_timeouts: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("ingest");
        let m = Metrics {
            messages: Family::default(),
            rejected: Family::default(),
            readings_stored: Counter::default(),
            batches_stored: Counter::default(),
            batches_duplicate: Counter::default(),
            append_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            http_connections: Counter::default(),
            http_refused: Counter::default(),
            http_accept_errors: Counter::default(),
            http_timeouts: Counter::default(),
            registry: RwLock::new(Registry::default()),
        };
        registry.register("mqtt_messages", "MQTT messages received, by channel", m.messages.clone());
        registry.register("rejected", "Readings or batches refused, by reason", m.rejected.clone());
        registry.register("readings_stored", "Readings stored durably", m.readings_stored.clone());
        registry.register("batches_stored", "Gateway batches stored durably", m.batches_stored.clone());
        registry.register(
            "batches_duplicate",
            "Gateway batches dropped as already stored",
            m.batches_duplicate.clone(),
        );
        registry.register("store_append_seconds", "Time of one durable store append", m.append_seconds.clone());
        registry.register("store_group_messages", "Messages made durable by one append", m.group_size.clone());
        registry.register("http_connections", "HTTP connections accepted and served", m.http_connections.clone());
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at once because the connection cap was reached",
            m.http_refused.clone(),
        );
        registry.register("http_accept_errors", "Failed accepts of the HTTP listener", m.http_accept_errors.clone());
        registry.register(
            "http_timeouts",
            "HTTP requests cut because the header or the whole request took too long",
            m.http_timeouts.clone(),
        );
        Metrics { registry: RwLock::new(registry), ..m }
    }
}

impl Metrics {
    /// Counts a rejection.
    pub fn reject(&self, reason: Reason, n: u64) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc_by(n);
    }

    /// How many were rejected for `reason` so far.
    pub fn rejected_count(&self, reason: Reason) -> u64 {
        self.rejected.get_or_create(&ReasonLabel { reason }).get()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Registers a further metric (alerts, broadcasts, sinks) under ingest's prefix.
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        let mut registry = self.registry.write().unwrap_or_else(|e| e.into_inner());
        registry.register(name, help, metric);
    }
}
