//! Cairn's distributor: the remote write receiver.
//!
//! ```text
//!  POST /api/v1/push | /api/v1/write
//!    │ Content-Type / Content-Encoding checked first (415)
//!    │ body read up to the size limit (413)
//!    ▼
//!  snappy: declared size checked before allocating (413), then decoded (400)
//!    ▼
//!  wire: zero-copy protobuf decode, remote write 1.0 or 2.0 (400)
//!    ▼
//!  validate: labels sorted and checked, metric name, limits, future samples
//!    ▼                                   (bad series dropped, 400 names the first)
//!  Pusher::push ──> ingester (in process, or gRPC in a cluster)
//!    ▼
//!  204, or 400 naming rejected samples, or 5xx when the ingester failed
//! ```
//!
//! The distributor owns no data; it must never acknowledge a write that the
//! ingester did not confirm.

pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod metrics;
pub mod replication;
pub mod validate;

use std::sync::Arc;

use cairn_common::TenantId;
use cairn_common::metrics::Registry;
use cairn_common::push::{PushOutcome, Pusher};
use cairn_common::status::ServiceError;

use cairn_common::inflight::InFlight;
pub use config::{DistributorConfig, ValidationConfig};
pub use error::PushError;
use metrics::DistributorMetrics;
use validate::Validated;

/// The remote write protocol of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    V1,
    V2,
}

struct Inner {
    cfg: DistributorConfig,
    limits: ValidationConfig,
    pusher: Arc<dyn Pusher>,
    metrics: DistributorMetrics,
    in_flight: Arc<InFlight>,
}

/// A cheap-to-clone handle to the distributor of this process.
#[derive(Clone)]
pub struct Distributor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Distributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distributor").finish()
    }
}

/// What happened to one remote write request.
#[derive(Debug)]
pub struct WriteResult {
    /// Validation's findings; its batch has been handed to the ingester.
    pub validated: Validated,
    /// Float samples handed to the ingester.
    pub samples_pushed: u64,
    pub pushed: Result<PushOutcome, ServiceError>,
}

impl WriteResult {
    /// Float samples now stored (including exact duplicates of stored ones).
    pub fn samples_written(&self) -> u64 {
        match &self.pushed {
            Ok(o) => self.samples_pushed.saturating_sub(o.samples_rejected()),
            Err(_) => 0,
        }
    }
}

impl Distributor {
    pub fn new(
        cfg: DistributorConfig,
        limits: ValidationConfig,
        pusher: Arc<dyn Pusher>,
        registry: &mut Registry,
    ) -> Self {
        let metrics = DistributorMetrics::new(registry);
        let in_flight = InFlight::with_gauges(
            cfg.max_inflight_push_requests,
            cfg.max_inflight_push_requests_bytes,
            metrics.inflight_requests.clone(),
            metrics.inflight_bytes.clone(),
        );
        Self { inner: Arc::new(Inner { cfg, limits, pusher, metrics, in_flight }) }
    }

    /// The bounds on requests held at once.
    pub fn in_flight(&self) -> &Arc<InFlight> {
        &self.inner.in_flight
    }

    pub fn config(&self) -> &DistributorConfig {
        &self.inner.cfg
    }

    /// Decodes, validates and pushes one decompressed body.
    pub async fn write(&self, tenant: &TenantId, protocol: Protocol, body: &[u8]) -> Result<WriteResult, PushError> {
        let validated = self.prepare(tenant, protocol, body)?;
        Ok(self.push_validated(tenant, validated).await)
    }

    /// Decodes and validates one decompressed body: CPU work only, which
    /// the HTTP path runs off the async runtime.
    pub fn prepare(&self, tenant: &TenantId, protocol: Protocol, body: &[u8]) -> Result<Validated, PushError> {
        let raw = match protocol {
            Protocol::V1 => cairn_common::wire::decode_v1(body),
            Protocol::V2 => cairn_common::wire::decode_v2(body),
        }?;
        let validated = validate::validate(raw, &self.inner.limits, cairn_common::time::now_ms());
        let m = &self.inner.metrics;
        m.received(tenant, validated.samples_received, validated.batch.metadata.len() as u64);
        for (reason, n) in &validated.discarded {
            m.discarded(tenant, reason.as_str(), *n);
        }
        Ok(validated)
    }

    /// Hands what validation kept to the ingesters.
    pub async fn push_validated(&self, tenant: &TenantId, mut validated: Validated) -> WriteResult {
        let batch = std::mem::take(&mut validated.batch);
        let samples_pushed = batch.num_samples() as u64;
        let pushed = if batch.series.is_empty() && batch.metadata.is_empty() {
            Ok(PushOutcome::default())
        } else {
            self.inner.pusher.push(tenant, batch).await
        };
        if let Ok(o) = &pushed {
            for r in &o.rejections {
                self.inner.metrics.discarded(tenant, r.reason.as_str(), r.samples);
            }
        }
        WriteResult { validated, samples_pushed, pushed }
    }
}

#[async_trait::async_trait]
impl cairn_common::service::Service for Distributor {
    fn name(&self) -> &'static str {
        "distributor"
    }

    fn http(&self) -> axum::Router {
        http::routes(self.clone())
    }

    /// After the servers drained, waits for the replica pushes that were
    /// still running when their requests were answered.
    async fn run(&self, shutdown: cairn_common::Shutdown) -> Result<(), cairn_common::service::BoxError> {
        shutdown.cancelled().await;
        self.inner.pusher.drain().await;
        Ok(())
    }
}
