//! The quorum write: each series to the ingesters the ring gives it.
//!
//! Every series of a request is encoded once; each ingester gets one request
//! with all of its series (split when it would pass the protocol's size
//! limit). The write succeeds once every series has a quorum
//! (`rf / 2 + 1`) of acknowledgements, each meaning the series is in that
//! ingester's WAL; the slower replicas' pushes go on, tracked, so that a
//! shutdown waits for them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use cairn_common::push::{PushBatch, PushOutcome, Pusher, Rejection};
use cairn_common::status::ServiceError;
use cairn_common::{Labels, TenantId};
use cairn_ring::{BatchPlan, RingView, shard_key};
use cairn_rpc::codec::encode_head;
use cairn_rpc::{Clients, EncodedPush, IngesterClient, MAX_REQUEST_BYTES, SeriesBuffer};
use futures::FutureExt;
use tokio_util::task::TaskTracker;

/// The distributor's path to replicated ingesters.
#[derive(Clone, Debug)]
pub struct ReplicatedPusher {
    view: RingView,
    clients: Clients,
    rf: usize,
    /// Replica pushes still running after their request was answered.
    tracker: TaskTracker,
}

impl ReplicatedPusher {
    pub fn new(view: RingView, clients: Clients, rf: usize) -> Self {
        Self { view, clients, rf: rf.max(1), tracker: TaskTracker::new() }
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

/// Sends `requests` to one ingester, one after another (they exist only
/// when its series pass the size limit), and folds their outcomes.
async fn send_all(client: IngesterClient, requests: Vec<EncodedPush>) -> Result<PushOutcome, ServiceError> {
    let mut total = PushOutcome::default();
    for req in requests {
        let o = client.push_encoded(req).await?;
        total.samples_appended += o.samples_appended;
        total.series_created += o.series_created;
        total.rejections.extend(o.rejections);
    }
    Ok(total)
}

#[async_trait]
impl Pusher for ReplicatedPusher {
    async fn push(&self, tenant: &TenantId, batch: PushBatch) -> Result<PushOutcome, ServiceError> {
        let snap = self.view.snapshot();
        let health = self.view.health();
        let total_samples = batch.num_samples() as u64;

        // Metadata alone (Prometheus sends it in requests of its own) goes
        // to the replicas of its first metric family, with the same quorum.
        let keys: Vec<u32> = if batch.series.is_empty() {
            let family = batch.metadata.first().map(|m| m.metric_family.as_str()).unwrap_or_default();
            vec![shard_key(tenant, &Labels::from_pairs([(cairn_common::METRIC_NAME, family)]))]
        } else {
            batch.series.iter().map(|s| shard_key(tenant, &s.labels)).collect()
        };
        let plan = BatchPlan::new(&snap, &keys, self.rf, &health)?;

        let head = encode_head(tenant, &batch.metadata);
        let mut buf = SeriesBuffer::for_series(&batch.series);
        for s in &batch.series {
            buf.push(s);
        }
        let series = buf.finish();
        let mut sends: Vec<Option<(IngesterClient, Vec<EncodedPush>)>> = Vec::with_capacity(plan.groups.len());
        for (member, indices) in &plan.groups {
            let mut requests = vec![EncodedPush::new(head.clone(), series.clone())];
            for &i in indices {
                if i >= batch.series.len() {
                    continue;
                }
                let last = requests.len() - 1;
                if requests[last].len() + series.len_of(i) > MAX_REQUEST_BYTES && requests[last].len() > head.len() {
                    requests.push(EncodedPush::new(head.clone(), series.clone()));
                }
                let last = requests.len() - 1;
                requests[last].add(i);
            }
            sends.push(Some((self.clients.get(&member.addr)?, requests)));
        }
        let metadata_only = batch.series.is_empty();
        drop(batch);
        let outcomes = plan
            .run(&self.tracker, |g| {
                let send = sends[g].take();
                async move {
                    let (client, requests) =
                        send.ok_or_else(|| ServiceError::internal("a replica's request was sent twice"))?;
                    send_all(client, requests).await
                }
                .boxed()
            })
            .await?;
        if metadata_only {
            return Ok(PushOutcome::default());
        }
        Ok(merge_outcomes(total_samples, plan.copies(), &outcomes))
    }

    /// Waits for the replica pushes still running (each bounded by the
    /// client's timeout).
    async fn drain(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use cairn_common::push::RejectReason;

    use super::*;

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
