//! One [`Queryable`] over both tiers: the ingesters' heads (recent data)
//! and the blocks in object storage (everything cut so far).
//!
//! ```text
//!  [start ............................................. end]
//!  blocks:  the whole range (the bucket index skips blocks outside it)
//!  heads:                    [now - query-ingesters-within .. end]
//!  merged by labels; a sample in both tiers (a block uploaded before its
//!  period left the head) counts once
//! ```
//!
//! Heads are asked only for the recent part, as they hold nothing older
//! once their blocks are uploaded; blocks are asked for the whole range,
//! so a period whose block is uploaded but still in a head is answered
//! from both and de-duplicated rather than missed.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use cairn_common::push::MetricMetadata;
use cairn_common::status::ServiceError;
use cairn_common::storage::{LabelsRequest, Queryable, SelectRequest, Series, merge_series, union};
use cairn_common::{Labels, TenantId};

pub struct Tiers {
    recent: Arc<dyn Queryable>,
    long_term: Arc<dyn Queryable>,
    /// Heads are queried for `[now - recent_within, ..]`; 0 = always.
    recent_within_ms: i64,
}

impl Tiers {
    pub fn new(recent: Arc<dyn Queryable>, long_term: Arc<dyn Queryable>, recent_within_ms: i64) -> Self {
        Self { recent, long_term, recent_within_ms }
    }

    /// The part of `[start, end]` the heads are asked for, if any.
    fn recent_range(&self, start: i64, end: i64) -> Option<(i64, i64)> {
        if self.recent_within_ms <= 0 {
            return Some((start, end));
        }
        let from = start.max(cairn_common::time::now_ms() - self.recent_within_ms);
        (from <= end).then_some((from, end))
    }

    /// `ask(start, end)` of the heads for the recent part of the range, or
    /// nothing when the range is older.
    async fn recent<T, F, Fut>(&self, start: i64, end: i64, ask: F) -> Result<Vec<T>, ServiceError>
    where
        F: FnOnce(i64, i64) -> Fut,
        Fut: Future<Output = Result<Vec<T>, ServiceError>>,
    {
        match self.recent_range(start, end) {
            Some((start, end)) => ask(start, end).await,
            None => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl Queryable for Tiers {
    async fn select(&self, tenant: &TenantId, req: &SelectRequest<'_>) -> Result<Vec<Series>, ServiceError> {
        let recent = self.recent(req.start, req.end, |start, end| async move {
            self.recent.select(tenant, &SelectRequest { start, end, ..*req }).await
        });
        let (recent, old) = tokio::join!(recent, self.long_term.select(tenant, req));
        merge_series(vec![recent?, old?], req)
    }

    async fn series(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<Labels>, ServiceError> {
        let recent = self.recent(req.start, req.end, |start, end| async move {
            self.recent.series(tenant, &LabelsRequest { start, end, ..*req }).await
        });
        let (recent, old) = tokio::join!(recent, self.long_term.series(tenant, req));
        Ok(union([recent?, old?], req.limit))
    }

    async fn label_names(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<String>, ServiceError> {
        let recent = self.recent(req.start, req.end, |start, end| async move {
            self.recent.label_names(tenant, &LabelsRequest { start, end, ..*req }).await
        });
        let (recent, old) = tokio::join!(recent, self.long_term.label_names(tenant, req));
        Ok(union([recent?, old?], req.limit))
    }

    async fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        req: &LabelsRequest<'_>,
    ) -> Result<Vec<String>, ServiceError> {
        let recent = self.recent(req.start, req.end, |start, end| async move {
            self.recent.label_values(tenant, name, &LabelsRequest { start, end, ..*req }).await
        });
        let (recent, old) = tokio::join!(recent, self.long_term.label_values(tenant, name, req));
        Ok(union([recent?, old?], req.limit))
    }

    async fn metadata(
        &self,
        tenant: &TenantId,
        metric: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<MetricMetadata>>, ServiceError> {
        // Metadata is kept by the ingesters only.
        self.recent.metadata(tenant, metric).await
    }
}
