//! The hand-off from a distributor to an ingester.
//!
//! A distributor validates and normalises what it receives, then calls a
//! [`Pusher`]: the ingester itself when both run in one process, a gRPC
//! client when they do not. Both paths carry the same [`PushBatch`].

use async_trait::async_trait;

use crate::status::ServiceError;
use crate::{Labels, Sample, TenantId};

/// The metric type announced in metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricType {
    Unknown,
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
}

impl MetricType {
    /// The name the Prometheus metadata API uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            MetricType::Unknown => "unknown",
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
        }
    }

    /// From the protobuf enum number (the same in remote write 1.0 and 2.0).
    pub fn from_proto(n: i32) -> Self {
        match n {
            1 => MetricType::Counter,
            2 => MetricType::Gauge,
            3 => MetricType::Histogram,
            4 => MetricType::GaugeHistogram,
            5 => MetricType::Summary,
            6 => MetricType::Info,
            7 => MetricType::StateSet,
            _ => MetricType::Unknown,
        }
    }

    pub fn to_proto(self) -> i32 {
        match self {
            MetricType::Unknown => 0,
            MetricType::Counter => 1,
            MetricType::Gauge => 2,
            MetricType::Histogram => 3,
            MetricType::GaugeHistogram => 4,
            MetricType::Summary => 5,
            MetricType::Info => 6,
            MetricType::StateSet => 7,
        }
    }
}

/// Metadata of one metric family.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricMetadata {
    pub metric_family: String,
    pub kind: MetricType,
    pub help: String,
    pub unit: String,
}

/// One series and its new samples, labels validated and sorted.
#[derive(Clone, Debug, PartialEq)]
pub struct PushSeries {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// A validated write for one tenant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PushBatch {
    pub series: Vec<PushSeries>,
    pub metadata: Vec<MetricMetadata>,
}

impl PushBatch {
    pub fn num_samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

/// Why an ingester refused individual samples of an otherwise good batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Older than the newest sample of its series (and outside any
    /// out-of-order window).
    OutOfOrder,
    /// Same timestamp as a stored sample but a different value.
    DuplicateTimestamp,
    /// Too old for the out-of-order window.
    TooOld,
    /// The tenant reached its series limit.
    SeriesLimit,
    /// Outside the timestamps Cairn stores (see
    /// [`crate::time::MIN_SAMPLE_TIME_MS`]).
    OutOfBounds,
}

impl RejectReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::OutOfOrder => "sample-out-of-order",
            RejectReason::DuplicateTimestamp => "sample-duplicate-timestamp",
            RejectReason::TooOld => "sample-too-old",
            RejectReason::SeriesLimit => "per-tenant-series-limit",
            RejectReason::OutOfBounds => "sample-out-of-bounds",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::OutOfOrder, Self::DuplicateTimestamp, Self::TooOld, Self::SeriesLimit, Self::OutOfBounds]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// Samples of one kind that an ingester refused, with the first example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub samples: u64,
    pub message: String,
}

/// What an ingester did with a batch. Accepted samples are durable (in the
/// WAL) by the time this is returned, whatever the rejections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    pub samples_appended: u64,
    pub series_created: u64,
    pub rejections: Vec<Rejection>,
}

impl PushOutcome {
    pub fn samples_rejected(&self) -> u64 {
        self.rejections.iter().map(|r| r.samples).sum()
    }
}

/// Where a distributor sends validated batches.
#[async_trait]
pub trait Pusher: Send + Sync + 'static {
    async fn push(&self, tenant: &TenantId, batch: PushBatch) -> Result<PushOutcome, ServiceError>;

    /// Waits for work that pushes left running after they were answered
    /// (a cluster's slowest replicas). Called once at shutdown.
    async fn drain(&self) {}
}
