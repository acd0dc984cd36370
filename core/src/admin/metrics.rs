//! Prometheus metrics: connections, bytes, journal batches and latency, errors by kind.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels `route`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route name.
    pub route: String,
}

/// Labels `route`, `direction`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// Route name.
    pub route: String,
    /// `client_to_upstream` or `upstream_to_client`.
    pub direction: &'static str,
}

/// Labels `route`, `reason`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Route name.
    pub route: String,
    /// Why.
    pub reason: &'static str,
}

/// Labels `kind`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Error kind, e.g. `upstream_connect`, `journal_write`.
    pub kind: &'static str,
}

/// Labels `route`, `phase`, `effect`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Route name.
    pub route: String,
    /// `authenticate`, `session` or `request`.
    pub phase: &'static str,
    /// `allow`, `deny` or `require_approval`.
    pub effect: &'static str,
}

/// All metrics of one gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Sessions accepted.
    pub connections: Family<RouteLabels, Counter>,
    /// Sessions open now.
    pub connections_active: Family<RouteLabels, Gauge>,
    /// Callers refused before a session started.
    pub connections_rejected: Family<RejectLabels, Counter>,
    /// Bytes forwarded.
    pub bytes: Family<BytesLabels, Counter>,
    /// Records committed.
    pub journal_records: Counter,
    /// Records per group commit.
    pub journal_batch_records: Histogram,
    /// Time to write (and in strict mode fsync) one batch.
    pub journal_commit_seconds: Histogram,
    /// Checkpoints signed.
    pub journal_checkpoints: Counter,
    /// Batched mode: WAL fsyncs, and how long each took.
    pub journal_wal_sync_seconds: Histogram,
    /// Errors by kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Access decisions.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Sessions opened under break-glass.
    pub break_glass_sessions: Counter,
    /// Policy reloads that took effect.
    pub policy_reloads: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("airlock");
        let m = Self {
            connections: Family::default(),
            connections_active: Family::default(),
            connections_rejected: Family::default(),
            bytes: Family::default(),
            journal_records: Counter::default(),
            journal_batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            journal_commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            journal_checkpoints: Counter::default(),
            journal_wal_sync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            errors: Family::default(),
            decisions: Family::default(),
            break_glass_sessions: Counter::default(),
            policy_reloads: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Sessions accepted", m.connections.clone());
        registry.register("connections_active", "Sessions open now", m.connections_active.clone());
        registry.register("connections_rejected", "Callers refused before a session", m.connections_rejected.clone());
        registry.register("bytes", "Bytes forwarded", m.bytes.clone());
        registry.register("journal_records", "Journal records committed", m.journal_records.clone());
        registry.register("journal_batch_records", "Records per group commit", m.journal_batch_records.clone());
        registry.register(
            "journal_commit_seconds",
            "Time to write and sync one journal batch",
            m.journal_commit_seconds.clone(),
        );
        registry.register("journal_checkpoints", "Signed checkpoints written", m.journal_checkpoints.clone());
        registry.register(
            "journal_wal_sync_seconds",
            "Batched mode: time of each WAL fsync, done beside the writer",
            m.journal_wal_sync_seconds.clone(),
        );
        registry.register("errors", "Errors by kind", m.errors.clone());
        registry.register("decisions", "Access decisions by phase and effect", m.decisions.clone());
        registry.register("break_glass_sessions", "Sessions opened under break-glass", m.break_glass_sessions.clone());
        registry.register("policy_reloads", "Configuration reloads that took effect", m.policy_reloads.clone());
        Self { registry, ..m }
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    pub(crate) fn journal_commit(&self, records: usize, took: Duration) {
        self.journal_records.inc_by(records as u64);
        self.journal_batch_records.observe(records as f64);
        self.journal_commit_seconds.observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
