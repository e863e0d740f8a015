//! Writes to and reads from replicated ingesters.
//!
//! - A write sends each series to the replicas the ring gives it and
//!   succeeds once a quorum (`rf / 2 + 1`) of them has it in their WAL. The
//!   request returns as soon as every series has its quorum; the slower
//!   replicas still receive their copy in the background.
//! - A read asks every ingester that may hold recent data and merges the
//!   answers (a sample on several replicas counts once). It tolerates as
//!   many failed ingesters as a write tolerates missing replicas
//!   (`rf - quorum`), so every acknowledged sample is on at least one
//!   ingester that answered.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use cairn_common::push::{MetricMetadata, PushBatch, PushOutcome, Pusher, Rejection};
use cairn_common::status::ServiceError;
use cairn_common::storage::{LabelsRequest, Queryable, SelectRequest, Series, merge_series, union};
use cairn_common::{ErrorCode, Labels, TenantId};

use crate::channels::Channels;
use crate::client::IngesterClient;
use crate::state::{Member, MemberState};
use crate::view::{RingView, shard_key};
use crate::wire::{self, EncodedPush};

/// The replicas that must acknowledge a write.
pub fn quorum(rf: usize) -> usize {
    rf / 2 + 1
}

/// Clients for ring members, built on the process's shared channels.
#[derive(Clone, Debug)]
pub struct Clients {
    pub channels: Channels,
    /// Deadline of each call to an ingester.
    pub timeout: Duration,
}

impl Clients {
    fn get(&self, m: &Member) -> Result<IngesterClient, ServiceError> {
        let channel = self.channels.get(&m.addr).map_err(|e| ServiceError::new(ErrorCode::Unavailable, e))?;
        Ok(IngesterClient::new(m.addr.clone(), channel, self.timeout))
    }
}

fn unavailable(msg: String) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, msg)
}

/// The distributor's path to the ingesters.
#[derive(Clone, Debug)]
pub struct ReplicatedPusher {
    view: RingView,
    clients: Clients,
    rf: usize,
}

impl ReplicatedPusher {
    pub fn new(view: RingView, clients: Clients, rf: usize) -> Self {
        Self { view, clients, rf: rf.max(1) }
    }
}

/// Folds replicas' outcomes. Every series went to `copies` replicas on
/// average, so counts summed over replicas are divided by it (exact when
/// every series had the same number of replicas). Any rejection is
/// reported, so that bad samples are answered with 400.
fn merge_outcomes(total_samples: u64, copies: f64, outcomes: &[PushOutcome]) -> PushOutcome {
    let per_series = |n: u64| (n as f64 / copies.max(1.0)).ceil() as u64;
    let mut by_reason: BTreeMap<_, Rejection> = BTreeMap::new();
    let mut created = 0;
    for o in outcomes {
        created += o.series_created;
        for r in &o.rejections {
            by_reason.entry(r.reason).or_insert_with(|| Rejection { samples: 0, ..r.clone() }).samples += r.samples;
        }
    }
    let mut rejections: Vec<Rejection> = by_reason.into_values().collect();
    for r in &mut rejections {
        r.samples = per_series(r.samples);
    }
    let rejected: u64 = rejections.iter().map(|r| r.samples).sum();
    PushOutcome {
        samples_appended: total_samples.saturating_sub(rejected),
        series_created: per_series(created),
        rejections,
    }
}

#[async_trait]
impl Pusher for ReplicatedPusher {
    async fn push(&self, tenant: &TenantId, batch: PushBatch) -> Result<PushOutcome, ServiceError> {
        let snap = self.view.snapshot();
        let health = self.view.health();
        let need = quorum(self.rf);
        let total_samples = batch.num_samples() as u64;

        if batch.series.is_empty() {
            return self.push_metadata(tenant, batch).await;
        }

        // Which series go to which member; each series encoded once.
        let head = wire::encode_head(tenant, &batch.metadata);
        let mut groups: Vec<(IngesterClient, EncodedPush)> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut group_of: HashMap<&str, usize> = HashMap::new();
        let mut replicas: Vec<usize> = Vec::with_capacity(batch.series.len());
        for (i, s) in batch.series.iter().enumerate() {
            let chosen = snap.write_replicas(shard_key(tenant, &s.labels), self.rf, &health);
            if chosen.len() < need {
                return Err(unavailable(format!(
                    "too few healthy ACTIVE ingesters: a write needs {need} of {} replicas, the ring has {}",
                    self.rf,
                    chosen.len()
                )));
            }
            replicas.push(chosen.len());
            let encoded = wire::encode_series(s);
            for m in chosen {
                let g = match group_of.get(m.id.as_str()) {
                    Some(&g) => g,
                    None => {
                        groups.push((self.clients.get(m)?, EncodedPush { parts: vec![head.clone()] }));
                        members.push(Vec::new());
                        group_of.insert(&m.id, groups.len() - 1);
                        groups.len() - 1
                    }
                };
                groups[g].1.parts.push(encoded.clone());
                members[g].push(i);
            }
        }

        // Send every group; each task runs to its end even if this request
        // returns first, so slower replicas still get their copy.
        let (tx, mut rx) = tokio::sync::mpsc::channel(groups.len());
        for (g, (client, req)) in groups.into_iter().enumerate() {
            let tx = tx.clone();
            tokio::spawn(async move {
                let res = client.push_encoded(req).await;
                let _ = tx.send((g, res)).await;
            });
        }
        drop(tx);

        let n = batch.series.len();
        let mut ok = vec![0usize; n];
        let mut failed = vec![0usize; n];
        let mut pending = n;
        let mut outcomes = Vec::new();
        while let Some((g, res)) = rx.recv().await {
            match res {
                Ok(o) => {
                    outcomes.push(o);
                    for &i in &members[g] {
                        ok[i] += 1;
                        if ok[i] == need {
                            pending -= 1;
                        }
                    }
                    if pending == 0 {
                        let copies = members.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
                        return Ok(merge_outcomes(total_samples, copies, &outcomes));
                    }
                }
                Err(e) => {
                    for &i in &members[g] {
                        failed[i] += 1;
                        if ok[i] < need && replicas[i] - failed[i] < need {
                            return Err(quorum_error(e, need, self.rf));
                        }
                    }
                }
            }
        }
        Err(ServiceError::internal("a replica's answer went missing"))
    }
}

/// Whether an ingester's error is about the ingester (down, slow, failing)
/// rather than about the request, which every replica would refuse alike.
fn replica_failed(e: &ServiceError) -> bool {
    matches!(e.code, ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::Internal | ErrorCode::Canceled)
}

/// Keeps an answer about the request as it is (bad data 4xx, a limit's
/// 429), and turns a replica failure into a retryable 503 naming the quorum.
fn quorum_error(e: ServiceError, need: usize, rf: usize) -> ServiceError {
    if replica_failed(&e) {
        unavailable(format!("write quorum not reached ({need} of {rf} replicas needed): {}", e.message))
    } else {
        e
    }
}

impl ReplicatedPusher {
    /// Metadata alone (Prometheus sends it in requests of its own) goes to
    /// the replicas of its first metric family, with the same quorum.
    async fn push_metadata(&self, tenant: &TenantId, batch: PushBatch) -> Result<PushOutcome, ServiceError> {
        let snap = self.view.snapshot();
        let need = quorum(self.rf);
        let family = batch.metadata.first().map(|m| m.metric_family.clone()).unwrap_or_default();
        let key = shard_key(tenant, &Labels::from_pairs([(cairn_common::METRIC_NAME, family.as_str())]));
        let chosen = snap.write_replicas(key, self.rf, &self.view.health());
        if chosen.len() < need {
            return Err(unavailable(format!(
                "too few healthy ACTIVE ingesters: a write needs {need} of {} replicas, the ring has {}",
                self.rf,
                chosen.len()
            )));
        }
        let clients = chosen.iter().map(|m| self.clients.get(m)).collect::<Result<Vec<_>, _>>()?;
        let results = futures::future::join_all(clients.iter().map(|c| c.push(tenant, batch.clone()))).await;
        let mut outcomes = Vec::new();
        let mut last = None;
        for r in results {
            match r {
                Ok(o) => outcomes.push(o),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) if outcomes.len() < need => Err(quorum_error(e, need, self.rf)),
            _ => Ok(PushOutcome::default()),
        }
    }
}

/// The querier's path to the ingesters' heads.
#[derive(Clone, Debug)]
pub struct ReplicatedQueryable {
    view: RingView,
    clients: Clients,
    rf: usize,
    /// How long after a member left its blocks may still be unseen by this
    /// querier (its bucket index refresh); meanwhile reads wait for every
    /// ingester, since the departed one no longer counts as a replica.
    blocks_visible_after_ms: i64,
}

impl ReplicatedQueryable {
    pub fn new(view: RingView, clients: Clients, rf: usize, blocks_visible_after_ms: i64) -> Self {
        Self { view, clients, rf: rf.max(1), blocks_visible_after_ms }
    }

    /// Calls `ask` on every readable member; fails when more of them are
    /// down than the replication factor covers, or when one refuses the
    /// request itself (a 4xx).
    async fn fan_out<T, F, Fut>(&self, ask: F) -> Result<Vec<T>, ServiceError>
    where
        F: Fn(IngesterClient) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let snap = self.view.snapshot();
        let health = self.view.health();
        let (members, unhealthy) = snap.read_members(&health);
        // A member that left recently holds its data in blocks this querier
        // may not see yet: it no longer counts as a replica, so no other
        // may be missing meanwhile.
        let recently_left = snap
            .members()
            .iter()
            .any(|m| m.state == MemberState::Left && health.now_ms - m.heartbeat_ms <= self.blocks_visible_after_ms);
        let tolerated = if recently_left { 0 } else { self.rf - quorum(self.rf) };
        let too_many = |failed: usize, msgs: Vec<String>| {
            unavailable(format!(
                "{failed} ingesters failed and {unhealthy} are unhealthy; with replication factor {} reads \
                 tolerate {tolerated}{}{}",
                self.rf,
                if msgs.is_empty() { "" } else { ": " },
                msgs.join("; ")
            ))
        };
        if unhealthy > tolerated {
            return Err(too_many(0, Vec::new()));
        }
        // Every answer is needed: an ingester that restarted, or a series
        // whose replicas moved, may leave any one of them holding a sample.
        let calls = members.iter().map(|m| {
            let client = self.clients.get(m);
            let ask = &ask;
            async move { ask(client?).await }
        });
        let mut out = Vec::with_capacity(members.len());
        let mut failures: Vec<ServiceError> = Vec::new();
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(v) => out.push(v),
                Err(e) if replica_failed(&e) => failures.push(e),
                Err(e) => return Err(e),
            }
        }
        if failures.len() + unhealthy > tolerated {
            return Err(too_many(failures.len(), failures.into_iter().map(|e| e.message).collect()));
        }
        Ok(out)
    }
}

#[async_trait]
impl Queryable for ReplicatedQueryable {
    async fn select(&self, tenant: &TenantId, req: &SelectRequest<'_>) -> Result<Vec<Series>, ServiceError> {
        let parts = self.fan_out(|c| async move { c.select(tenant, req).await }).await?;
        merge_series(parts, req)
    }

    async fn series(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<Labels>, ServiceError> {
        let parts = self.fan_out(|c| async move { c.series(tenant, req).await }).await?;
        Ok(union(parts, req.limit))
    }

    async fn label_names(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<String>, ServiceError> {
        let parts = self.fan_out(|c| async move { c.label_names(tenant, req).await }).await?;
        Ok(union(parts, req.limit))
    }

    async fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        req: &LabelsRequest<'_>,
    ) -> Result<Vec<String>, ServiceError> {
        let parts = self.fan_out(|c| async move { c.label_values(tenant, name, req).await }).await?;
        Ok(union(parts, req.limit))
    }

    async fn metadata(
        &self,
        tenant: &TenantId,
        metric: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<MetricMetadata>>, ServiceError> {
        let parts = self.fan_out(|c| async move { c.metadata(tenant, metric).await }).await?;
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

#[cfg(test)]
mod tests {
    use cairn_common::push::RejectReason;

    use super::*;

    #[test]
    fn quorum_is_a_majority() {
        assert_eq!((quorum(1), quorum(2), quorum(3), quorum(5)), (1, 2, 2, 3));
    }

    #[test]
    fn outcomes_count_each_rejected_sample_once() {
        let rej = |reason, samples| Rejection { reason, samples, message: format!("{samples}") };
        let a =
            PushOutcome { samples_appended: 8, series_created: 1, rejections: vec![rej(RejectReason::OutOfOrder, 2)] };
        let b = PushOutcome {
            samples_appended: 7,
            series_created: 3,
            rejections: vec![rej(RejectReason::OutOfOrder, 3), rej(RejectReason::TooOld, 1)],
        };
        // Two replicas of every series: counts summed over them, halved.
        let m = merge_outcomes(10, 2.0, &[a, b]);
        assert_eq!(m.series_created, 2);
        assert_eq!(
            m.rejections.iter().map(|r| (r.reason, r.samples)).collect::<Vec<_>>(),
            vec![(RejectReason::OutOfOrder, 3), (RejectReason::TooOld, 1)]
        );
        assert_eq!(m.samples_appended, 6);
    }
}
