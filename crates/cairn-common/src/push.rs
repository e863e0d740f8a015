//! The hand-off from a distributor to an ingester.
//!
//! A distributor validates and normalises what it receives, then calls a
//! [`Pusher`]: the ingester itself when both run in one process, a gRPC
//! client when they do not. Both paths carry the same [`PushBatch`]; an
//! ingester reading a gRPC request appends its series borrowed from the
//! request's bytes ([`SeriesInput`]).

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

/// One series of a write as an ingester reads it: owned ([`PushSeries`]),
/// or borrowed from the bytes of a request so that a series the head
/// already holds costs no allocation.
pub trait SeriesInput {
    /// Name/value pairs in [`Labels`] order (sorted by name, names unique,
    /// no empty value), as bytes. Borrowed pairs are checked to be UTF-8
    /// only by [`SeriesInput::to_labels`], when a series is created: pairs
    /// equal to a set the head holds are valid already.
    fn label_pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    fn samples(&self) -> &[Sample];

    /// [`Labels::hash64`] of the set.
    fn labels_hash(&self) -> u64 {
        crate::labels::hash_pairs(self.label_pairs())
    }

    /// The set, owned (for a new series); refused when a name or value is
    /// not UTF-8.
    fn to_labels(&self) -> Result<Labels, ServiceError> {
        let text = |b: &[u8]| {
            std::str::from_utf8(b).map(str::to_owned).map_err(|_| {
                ServiceError::bad_data(format!(
                    "label {:?} of series {} is not valid UTF-8",
                    String::from_utf8_lossy(b),
                    self.describe()
                ))
            })
        };
        let mut labels = Vec::new();
        for (n, v) in self.label_pairs() {
            labels.push(crate::Label { name: text(n)?, value: text(v)? });
        }
        Ok(Labels::from_sorted(labels))
    }

    /// The set in Prometheus's notation, for messages (bytes that are not
    /// UTF-8 replaced).
    fn describe(&self) -> String {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Labels::from_sorted(self.label_pairs().map(|(n, v)| crate::Label { name: lossy(n), value: lossy(v) }).collect())
            .to_string()
    }
}

impl<T: SeriesInput> SeriesInput for &T {
    fn label_pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        (**self).label_pairs()
    }

    fn samples(&self) -> &[Sample] {
        (**self).samples()
    }

    fn labels_hash(&self) -> u64 {
        (**self).labels_hash()
    }

    fn to_labels(&self) -> Result<Labels, ServiceError> {
        (**self).to_labels()
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}

impl SeriesInput for PushSeries {
    fn label_pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.labels.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes()))
    }

    fn samples(&self) -> &[Sample] {
        &self.samples
    }

    fn labels_hash(&self) -> u64 {
        self.labels.hash64()
    }

    fn to_labels(&self) -> Result<Labels, ServiceError> {
        Ok(self.labels.clone())
    }

    fn describe(&self) -> String {
        self.labels.to_string()
    }
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
