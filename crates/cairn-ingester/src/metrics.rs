//! The ingester's own metrics.

use cairn_common::TenantId;
use cairn_common::metrics::{Registry, duration_buckets};
use cairn_common::push::RejectReason;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
pub struct IngesterMetrics {
    samples_appended: Family<Labels, Counter>,
    rejected_samples: Family<Labels, Counter>,
    active_series: Family<Labels, Gauge>,
    pub series_created: Counter,
    pub wal_bytes: Counter,
    pub wal_write_failures: Counter,
    pub wal_corruptions: Counter,
    pub replay_dropped_samples: Counter,
    pub background_failures: Counter,
    pub wal_fsync_duration: Histogram,
    pub checkpoint_duration: Histogram,
    pub memory_bytes: Gauge,
    pub inflight_push_requests: Gauge,
}

impl IngesterMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            samples_appended: Family::default(),
            rejected_samples: Family::default(),
            active_series: Family::default(),
            series_created: Counter::default(),
            wal_bytes: Counter::default(),
            wal_write_failures: Counter::default(),
            wal_corruptions: Counter::default(),
            replay_dropped_samples: Counter::default(),
            background_failures: Counter::default(),
            wal_fsync_duration: Histogram::new(duration_buckets()),
            checkpoint_duration: Histogram::new(duration_buckets()),
            memory_bytes: Gauge::default(),
            inflight_push_requests: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("cairn_ingester");
        r.register("samples_appended", "Samples appended to the head, per tenant", m.samples_appended.clone());
        r.register("rejected_samples", "Samples the head refused, per tenant and reason", m.rejected_samples.clone());
        r.register("active_series", "Series in the head, per tenant", m.active_series.clone());
        r.register("series_created", "Series created in the head", m.series_created.clone());
        r.register("wal_written_bytes", "Bytes written to write-ahead logs", m.wal_bytes.clone());
        r.register("wal_write_failures", "Failed write-ahead log writes", m.wal_write_failures.clone());
        r.register(
            "wal_corruptions",
            "Torn or corrupt write-ahead log tails and checkpoints found at replay",
            m.wal_corruptions.clone(),
        );
        r.register(
            "replay_dropped_samples",
            "Samples outside the storable time range found in a WAL or checkpoint at replay and dropped",
            m.replay_dropped_samples.clone(),
        );
        r.register(
            "background_failures",
            "Background checkpoints and fsyncs that failed for one tenant (an error or a panic); the others carry on",
            m.background_failures.clone(),
        );
        r.register(
            "wal_fsync_duration_seconds",
            "Time to fsync the write-ahead log before acknowledging (sync mode always)",
            m.wal_fsync_duration.clone(),
        );
        r.register(
            "checkpoint_duration_seconds",
            "Time to write a checkpoint of a tenant's head",
            m.checkpoint_duration.clone(),
        );
        r.register(
            "memory_series_bytes",
            "Approximate heap bytes held by heads (index, labels, chunks), updated every minute",
            m.memory_bytes.clone(),
        );
        r.register(
            "inflight_push_requests",
            "Pushes admitted and not yet answered (bounded by --ingester.instance-limits.max-inflight-push-requests)",
            m.inflight_push_requests.clone(),
        );
        m
    }

    pub fn tenant_samples(&self, t: &TenantId) -> Counter {
        self.samples_appended.get_or_create(&vec![("tenant", t.to_string())]).clone()
    }

    pub fn tenant_series(&self, t: &TenantId) -> Gauge {
        self.active_series.get_or_create(&vec![("tenant", t.to_string())]).clone()
    }

    pub fn rejected(&self, t: &TenantId, reason: RejectReason) -> Counter {
        self.rejected_samples
            .get_or_create(&vec![("tenant", t.to_string()), ("reason", reason.as_str().to_owned())])
            .clone()
    }
}
