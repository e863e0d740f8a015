//! The read side: what the PromQL engine and the query API need from any
//! storage tier (the ingesters' heads now, blocks later).

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::push::MetricMetadata;
use crate::status::ServiceError;
use crate::{Labels, Matcher, Sample, TenantId};

/// One series with its samples in `[start, end]`, sorted by time, no
/// duplicate timestamps. Staleness markers are included.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// A request for raw samples.
#[derive(Clone, Debug)]
pub struct SelectRequest<'a> {
    /// All must match (an empty slice matches nothing).
    pub matchers: &'a [Matcher],
    /// Inclusive bounds in milliseconds.
    pub start: i64,
    pub end: i64,
    /// Refuse (with `TooManyRequests`) once more series than this would be
    /// returned; 0 = no limit.
    pub max_series: usize,
    /// Refuse once more samples than this would be returned; 0 = no limit.
    pub max_samples: usize,
    /// Only the newest sample in `[start, end]` of each series is needed
    /// (an instant selector evaluated at one time); a storage may return
    /// just that one.
    pub latest_only: bool,
}

/// A request for series, label names or label values: series matching any
/// of the matcher sets (all series when there are none) with samples in
/// `[start, end]`.
#[derive(Clone, Debug)]
pub struct LabelsRequest<'a> {
    pub matcher_sets: &'a [Vec<Matcher>],
    pub start: i64,
    pub end: i64,
    /// Stop after this many results; 0 = no limit.
    pub limit: usize,
}

/// Read access to one tier of storage.
#[async_trait]
pub trait Queryable: Send + Sync + 'static {
    /// Series matching all matchers, sorted by labels.
    async fn select(&self, tenant: &TenantId, req: &SelectRequest<'_>) -> Result<Vec<Series>, ServiceError>;

    /// Label sets of the matching series, sorted.
    async fn series(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<Labels>, ServiceError>;

    /// Label names of the matching series, sorted.
    async fn label_names(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<String>, ServiceError>;

    /// Values of label `name` on the matching series, sorted.
    async fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        req: &LabelsRequest<'_>,
    ) -> Result<Vec<String>, ServiceError>;

    /// Metadata by metric family, optionally for one metric only.
    async fn metadata(
        &self,
        tenant: &TenantId,
        metric: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<MetricMetadata>>, ServiceError>;
}
