//! One [`Queryable`] over both tiers: the ingesters' heads (recent data)
//! and the blocks in object storage (everything cut so far).
//!
//! ```text
//!  [start ............................................. end]
//!  blocks:  the whole range (the bucket index skips blocks outside it)
//!  heads:   the whole range (a head outside it answers at once, from the
//!           time range it knows it holds)
//!  merged by labels; a sample in both tiers (a block uploaded before its
//!  period left the head) counts once
//! ```
//!
//! Both tiers are asked for every range: a head may hold any acknowledged
//! sample until its block is uploaded, however old (a backfill), so no
//! wall-clock rule may decide that a head is not worth asking. Heads skip
//! cheaply what they do not hold.
//!
//! When object storage is down or slow (the block store gives up within
//! the query's time), a request that carries a context still answers, from
//! the heads, with a warning saying that blocks could not be read: that is
//! what short-term storage is for. Without a context there is nowhere to
//! put the warning, and the error is returned.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use cairn_common::push::MetricMetadata;
use cairn_common::status::ServiceError;
use cairn_common::storage::{LabelsRequest, Queryable, ReadContext, SelectRequest, Series, merge_series, union};
use cairn_common::{ErrorCode, Labels, TenantId};

pub struct Tiers {
    recent: Arc<dyn Queryable>,
    long_term: Arc<dyn Queryable>,
}

impl Tiers {
    pub fn new(recent: Arc<dyn Queryable>, long_term: Arc<dyn Queryable>) -> Self {
        Self { recent, long_term }
    }
}

/// The long-term tier's answer, or nothing and a warning when it is
/// unavailable and the request can carry the warning.
fn or_warn<T>(got: Result<Vec<T>, ServiceError>, ctx: Option<&Arc<dyn ReadContext>>) -> Result<Vec<T>, ServiceError> {
    match (got, ctx) {
        (Err(e), Some(ctx)) if matches!(e.code, ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::Internal) => {
            ctx.warn(format!(
                "blocks in object storage could not be read, so the answer holds only what the ingesters keep: {}",
                e.message
            ));
            Ok(Vec::new())
        }
        (got, _) => got,
    }
}

#[async_trait]
impl Queryable for Tiers {
    async fn select(&self, tenant: &TenantId, req: &SelectRequest<'_>) -> Result<Vec<Series>, ServiceError> {
        let (recent, old) = tokio::join!(self.recent.select(tenant, req), self.long_term.select(tenant, req));
        merge_series(vec![recent?, or_warn(old, req.ctx.as_ref())?], req)
    }

    async fn series(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<Labels>, ServiceError> {
        let (recent, old) = tokio::join!(self.recent.series(tenant, req), self.long_term.series(tenant, req));
        Ok(union([recent?, or_warn(old, req.ctx.as_ref())?], req.limit))
    }

    async fn label_names(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<String>, ServiceError> {
        let (recent, old) = tokio::join!(self.recent.label_names(tenant, req), self.long_term.label_names(tenant, req));
        Ok(union([recent?, or_warn(old, req.ctx.as_ref())?], req.limit))
    }

    async fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        req: &LabelsRequest<'_>,
    ) -> Result<Vec<String>, ServiceError> {
        let (recent, old) =
            tokio::join!(self.recent.label_values(tenant, name, req), self.long_term.label_values(tenant, name, req));
        Ok(union([recent?, or_warn(old, req.ctx.as_ref())?], req.limit))
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
