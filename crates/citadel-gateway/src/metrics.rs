//! Prometheus metrics of the data plane. Decisions increment these at the
//! same place they record their event (see `record.rs`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of `citadel_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route label (OpenAI path or http prefix; `other` when unrouted).
    pub route: String,
    /// Upstream name (empty when not routed).
    pub upstream: String,
    /// `allowed`, or the refusal code.
    pub decision: String,
}

/// Labels naming an upstream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Upstream name.
    pub upstream: String,
}

/// Labels of `citadel_upstream_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// Upstream name.
    pub upstream: String,
    /// `connect`, `timeout` or `protocol`.
    pub kind: String,
}

/// Labels naming a SIEM exporter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExporterLabels {
    /// Exporter name (`[[audit.export]] name`).
    pub exporter: String,
}

/// The data plane's metrics, and the audit log's gauges (set by the admin
/// listener when it is scraped).
pub struct GatewayMetrics {
    registry: Registry,
    /// Requests by route, upstream and decision.
    pub requests: Family<RequestLabels, Counter>,
    /// Time the gateway itself added to a request (to response headers).
    pub gateway_added_seconds: Histogram,
    /// Upstream time to response headers.
    pub upstream_seconds: Family<UpstreamLabels, Histogram>,
    /// Upstream failures.
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// Security events queued but not yet durable.
    pub event_sink_lag: Gauge,
    /// Security events written.
    pub events_written: Gauge,
    /// Open client connections.
    pub open_connections: Gauge,
    /// Connections refused at the connection limit.
    pub refused_connections: Counter,
    /// Entries in the Merkle audit log.
    pub audit_log_entries: Gauge,
    /// Tree size of the latest signed checkpoint.
    pub audit_checkpoint_size: Gauge,
    /// Seconds since the latest checkpoint was signed.
    pub audit_checkpoint_age_seconds: Gauge,
    /// Log entries each SIEM exporter has yet to deliver.
    pub audit_export_lag: Family<ExporterLabels, Gauge>,
}

impl std::fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayMetrics")
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("citadel");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by route, upstream and decision",
            requests.clone(),
        );
        let gateway_added_seconds = Histogram::new(exponential_buckets(0.000_025, 2.0, 16));
        registry.register(
            "gateway_added_seconds",
            "Latency the gateway added before the response headers",
            gateway_added_seconds.clone(),
        );
        let upstream_seconds = Family::<UpstreamLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "upstream_seconds",
            "Upstream time to response headers",
            upstream_seconds.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures by kind",
            upstream_errors.clone(),
        );
        let event_sink_lag = Gauge::default();
        registry.register(
            "event_sink_lag",
            "Security events queued but not yet durable",
            event_sink_lag.clone(),
        );
        let events_written = Gauge::default();
        registry.register(
            "events_written",
            "Security events written since start",
            events_written.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Open client connections",
            open_connections.clone(),
        );
        let refused_connections = Counter::default();
        registry.register(
            "refused_connections",
            "Connections refused at the connection limit",
            refused_connections.clone(),
        );
        let audit_log_entries = Gauge::default();
        registry.register(
            "audit_log_entries",
            "Entries in the Merkle audit log",
            audit_log_entries.clone(),
        );
        let audit_checkpoint_size = Gauge::default();
        registry.register(
            "audit_checkpoint_size",
            "Tree size of the latest signed audit checkpoint",
            audit_checkpoint_size.clone(),
        );
        let audit_checkpoint_age_seconds = Gauge::default();
        registry.register(
            "audit_checkpoint_age_seconds",
            "Seconds since the latest audit checkpoint was signed",
            audit_checkpoint_age_seconds.clone(),
        );
        let audit_export_lag = Family::<ExporterLabels, Gauge>::default();
        registry.register(
            "audit_export_lag",
            "Audit log entries a SIEM exporter has yet to deliver",
            audit_export_lag.clone(),
        );
        Self {
            audit_log_entries,
            audit_checkpoint_size,
            audit_checkpoint_age_seconds,
            audit_export_lag,
            registry,
            requests,
            gateway_added_seconds,
            upstream_seconds,
            upstream_errors,
            event_sink_lag,
            events_written,
            open_connections,
            refused_connections,
        }
    }
}

impl GatewayMetrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts an upstream failure.
    pub fn upstream_error(&self, upstream: &str, kind: &str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                upstream: upstream.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }
}
