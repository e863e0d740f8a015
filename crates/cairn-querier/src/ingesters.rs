//! The querier's path to the ingesters' heads in a cluster.
//!
//! Each read asks the members of the ring's read set that a complete answer
//! needs (see `cairn_ring::ReadSet`): every acknowledged sample is on a
//! quorum of ingesters, so with replication factor 3 any two of three hold
//! a copy of it. Ingesters answer selects with XOR chunks, decoded here (off
//! the async runtime, over the machine's cores): the chunks replicas share
//! byte for byte once, the rest merged per series with duplicates kept once.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use cairn_common::push::MetricMetadata;
use cairn_common::status::ServiceError;
use cairn_common::storage::{
    Copies, LabelsRequest, Queryable, SelectRequest, Series, check_limits, decode_copies, group_replicas, union,
};
use cairn_common::{Labels, TenantId};
use cairn_ring::{ReadSet, RingView};
use cairn_rpc::{Clients, IngesterClient};

/// The ingesters of a ring as one [`Queryable`].
#[derive(Clone, Debug)]
pub struct ReplicatedQueryable {
    view: RingView,
    clients: Clients,
    rf: usize,
    /// How long after a member left its blocks may still be unseen by this
    /// querier (its bucket index refresh); meanwhile reads wait for every
    /// ingester, since the departed one no longer counts as a replica.
    blocks_visible_after_ms: i64,
    /// The least time a slow ingester is waited for before the others are
    /// asked (see [`ReadSet::run`]).
    hedge: Duration,
}

impl ReplicatedQueryable {
    pub fn new(view: RingView, clients: Clients, rf: usize, blocks_visible_after_ms: i64, hedge: Duration) -> Self {
        Self { view, clients, rf: rf.max(1), blocks_visible_after_ms, hedge }
    }

    /// Asks the ingesters a complete answer about data from `start_ms` on
    /// needs.
    async fn fan_out<T, F, Fut>(&self, start_ms: i64, ask: F) -> Result<Vec<T>, ServiceError>
    where
        F: Fn(IngesterClient) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let snap = self.view.snapshot();
        let set = ReadSet::new(&snap, self.rf, &self.view.health(), self.blocks_visible_after_ms, start_ms);
        set.run(self.hedge, |m| {
            let client = self.clients.get(&m.addr);
            let ask = &ask;
            async move { ask(client?).await }
        })
        .await
    }
}

/// Answers of less work than this many chunks ([`Copies::work`]) are
/// decoded on the request's task: handing them to other threads costs more
/// than it saves.
const INLINE_DECODE_CHUNKS: usize = 256;

/// Decodes the ingesters' answers off the async runtime, split over the
/// machine's cores (at most four parts), in label order.
async fn decode_in_parallel(groups: Vec<Copies>, req: &SelectRequest<'_>) -> Result<Vec<Series>, ServiceError> {
    let (start, end, latest) = (req.start, req.end, req.latest_only);
    let work: usize = groups.iter().map(Copies::work).sum();
    if work < INLINE_DECODE_CHUNKS {
        return decode_copies(groups, start, end, latest, req.ctx.as_deref());
    }
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let per_part = groups.len().div_ceil(parts).max(1);
    let mut tasks = Vec::with_capacity(parts);
    let mut groups = groups.into_iter();
    loop {
        let slice: Vec<Copies> = groups.by_ref().take(per_part).collect();
        if slice.is_empty() {
            break;
        }
        let ctx = req.ctx.clone();
        tasks.push(tokio::task::spawn_blocking(move || decode_copies(slice, start, end, latest, ctx.as_deref())));
    }
    let mut out = Vec::new();
    for t in tasks {
        let part = t.await.map_err(|e| ServiceError::internal(format!("decoding ingester chunks failed: {e}")))??;
        out.extend(part);
    }
    Ok(out)
}

#[async_trait]
impl Queryable for ReplicatedQueryable {
    async fn select(&self, tenant: &TenantId, req: &SelectRequest<'_>) -> Result<Vec<Series>, ServiceError> {
        let parts = self.fan_out(req.start, |c| async move { c.select_chunks(tenant, req).await }).await?;
        let out = decode_in_parallel(group_replicas(parts), req).await?;
        check_limits(&out, req)?;
        Ok(out)
    }

    async fn series(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<Labels>, ServiceError> {
        let parts = self.fan_out(req.start, |c| async move { c.series(tenant, req).await }).await?;
        Ok(union(parts, req.limit))
    }

    async fn label_names(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<String>, ServiceError> {
        let parts = self.fan_out(req.start, |c| async move { c.label_names(tenant, req).await }).await?;
        Ok(union(parts, req.limit))
    }

    async fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        req: &LabelsRequest<'_>,
    ) -> Result<Vec<String>, ServiceError> {
        let parts = self.fan_out(req.start, |c| async move { c.label_values(tenant, name, req).await }).await?;
        Ok(union(parts, req.limit))
    }

    async fn metadata(
        &self,
        tenant: &TenantId,
        metric: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<MetricMetadata>>, ServiceError> {
        // Metadata has no time range: any member may hold the only copy.
        let parts = self.fan_out(i64::MIN, |c| async move { c.metadata(tenant, metric).await }).await?;
        let mut out: BTreeMap<String, Vec<MetricMetadata>> = BTreeMap::new();
        for part in parts {
            for (family, list) in part {
                let merged = out.entry(family).or_default();
                for m in list {
                    if !merged.contains(&m) {
                        merged.push(m);
                    }
                }
            }
        }
        Ok(out)
    }
}
