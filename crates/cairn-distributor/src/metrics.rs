//! The distributor's own metrics.

use cairn_common::TenantId;
use cairn_common::metrics::Registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
pub struct DistributorMetrics {
    received_samples: Family<Labels, Counter>,
    received_metadata: Family<Labels, Counter>,
    discarded_samples: Family<Labels, Counter>,
    /// Push requests held now, and their bytes (see `crate::inflight`).
    pub inflight_requests: Gauge,
    pub inflight_bytes: Gauge,
}

impl DistributorMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("cairn_distributor");
        r.register("received_samples", "Float samples received, per tenant", m.received_samples.clone());
        r.register("received_metadata", "Metadata entries received, per tenant", m.received_metadata.clone());
        r.register(
            "discarded_samples",
            "Samples dropped by validation or refused by ingesters, per tenant and reason",
            m.discarded_samples.clone(),
        );
        r.register("inflight_push_requests", "Push requests being handled", m.inflight_requests.clone());
        r.register(
            "inflight_push_requests_bytes",
            "Bytes held by push requests being handled, as received plus decompressed",
            m.inflight_bytes.clone(),
        );
        m
    }

    pub fn received(&self, t: &TenantId, samples: u64, metadata: u64) {
        self.received_samples.get_or_create(&vec![("tenant", t.to_string())]).inc_by(samples);
        if metadata > 0 {
            self.received_metadata.get_or_create(&vec![("tenant", t.to_string())]).inc_by(metadata);
        }
    }

    pub fn discarded(&self, t: &TenantId, reason: &str, n: u64) {
        self.discarded_samples.get_or_create(&vec![("tenant", t.to_string()), ("reason", reason.to_owned())]).inc_by(n);
    }
}
