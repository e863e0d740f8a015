//! Replication sets: which members a batch of keys goes to and how many of
//! them must answer, which members a read asks and how many may be missing,
//! and the loops that call them.
//!
//! Nothing here knows what a key stands for: a distributor places series,
//! and scrapers, rulers and compactors can place targets, groups and jobs
//! the same way.

use std::time::Duration;

use cairn_common::ErrorCode;
use cairn_common::status::ServiceError;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::state::{Member, MemberState};
use crate::view::{Health, RingSnapshot};

/// The replicas that must acknowledge a write: a majority.
pub fn quorum(rf: usize) -> usize {
    rf / 2 + 1
}

/// Whether an error is about the member (down, slow, failing) rather than
/// about the request, which every member would refuse alike.
pub fn member_failed(e: &ServiceError) -> bool {
    matches!(e.code, ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::Internal | ErrorCode::Canceled)
}

fn unavailable(msg: String) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, msg)
}

/// Where a batch of keys goes: each member that owns some of them, with
/// the indices of its keys.
#[derive(Debug)]
pub struct BatchPlan<'a> {
    pub groups: Vec<(&'a Member, Vec<usize>)>,
    /// Replicas chosen for each key.
    replicas: Vec<usize>,
    /// Acknowledgements each key needs.
    need: usize,
    rf: usize,
}

impl<'a> BatchPlan<'a> {
    /// Places every key on `rf` ACTIVE healthy members. Fails when a key
    /// has fewer than a quorum of them.
    pub fn new(snap: &'a RingSnapshot, keys: &[u32], rf: usize, health: &Health) -> Result<Self, ServiceError> {
        let rf = rf.max(1);
        let need = quorum(rf);
        let placement = snap.placement(rf, health);
        let mut groups: Vec<(&'a Member, Vec<usize>)> = Vec::new();
        let mut group_of: Vec<Option<usize>> = vec![None; snap.members().len()];
        let mut replicas = Vec::with_capacity(keys.len());
        // About as many keys in each group.
        let per_group = keys.len() * rf / snap.members().len().max(1) + 1;
        for (i, &key) in keys.iter().enumerate() {
            let chosen = placement.replicas(key);
            if chosen.len() < need {
                return Err(unavailable(format!(
                    "too few healthy ACTIVE ingesters: a write needs {need} of {rf} replicas, the ring has {}",
                    chosen.len()
                )));
            }
            replicas.push(chosen.len());
            for &m in chosen {
                let m = m as usize;
                let g = *group_of[m].get_or_insert_with(|| {
                    groups.push((&snap.members()[m], Vec::with_capacity(per_group)));
                    groups.len() - 1
                });
                groups[g].1.push(i);
            }
        }
        Ok(Self { groups, replicas, need, rf })
    }

    /// Copies per key, averaged over the batch.
    pub fn copies(&self) -> f64 {
        if self.replicas.is_empty() {
            return 0.0;
        }
        self.replicas.iter().sum::<usize>() as f64 / self.replicas.len() as f64
    }

    /// Calls every group (`call` gets each group's index) concurrently and
    /// returns once every key has a quorum of successes, with the answers so
    /// far. Fails as soon as one key can no longer reach its quorum: with a
    /// 503 naming the quorum when members failed, or with the member's own
    /// answer when it refused the request itself (bad data, a limit).
    ///
    /// Calls still running when it returns (the slowest replicas) go on in
    /// `tracker`, so that a shutdown can wait for them.
    pub async fn run<T: Send + 'static>(
        &self,
        tracker: &TaskTracker,
        mut call: impl FnMut(usize) -> BoxFuture<'static, Result<T, ServiceError>>,
    ) -> Result<Vec<T>, ServiceError> {
        let n = self.replicas.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let (tx, mut rx) = mpsc::channel(self.groups.len());
        for g in 0..self.groups.len() {
            let tx = tx.clone();
            let fut = call(g);
            tracker.spawn(async move {
                let res = fut.await;
                let _ = tx.send((g, res)).await;
            });
        }
        drop(tx);
        let mut ok = vec![0usize; n];
        let mut failed = vec![0usize; n];
        let mut pending = n;
        let mut answers = Vec::with_capacity(self.groups.len());
        while let Some((g, res)) = rx.recv().await {
            match res {
                Ok(v) => {
                    answers.push(v);
                    for &i in &self.groups[g].1 {
                        ok[i] += 1;
                        if ok[i] == self.need {
                            pending -= 1;
                        }
                    }
                    if pending == 0 {
                        return Ok(answers);
                    }
                }
                Err(e) => {
                    for &i in &self.groups[g].1 {
                        failed[i] += 1;
                        if ok[i] < self.need && self.replicas[i] - failed[i] < self.need {
                            return Err(if member_failed(&e) {
                                unavailable(format!(
                                    "write quorum not reached ({} of {} replicas needed): {}",
                                    self.need, self.rf, e.message
                                ))
                            } else {
                                e
                            });
                        }
                    }
                }
            }
        }
        Err(ServiceError::internal("a replica's answer went missing"))
    }
}

/// The members a read asks, and how many of them may be missing.
#[derive(Debug)]
pub struct ReadSet<'a> {
    /// Healthy members that may hold recent data.
    pub members: Vec<&'a Member>,
    /// Members that may hold data but are not healthy: missing from the start.
    pub unhealthy: usize,
    /// How many members in all may be missing from a complete answer.
    pub tolerated: usize,
    pub rf: usize,
}

impl<'a> ReadSet<'a> {
    /// The members to ask for data from `start_ms` on. Every acknowledged
    /// write is on a quorum of members, so `rf - quorum` of them may be
    /// missing, less one for each member that lost its data after `start_ms`
    /// (it may have held the only other copy). Within `settle_ms` after a
    /// member left, none may: the departed member's data is in blocks a
    /// reader may not see yet, so it no longer counts as a replica.
    pub fn new(snap: &'a RingSnapshot, rf: usize, health: &Health, settle_ms: i64, start_ms: i64) -> Self {
        let rf = rf.max(1);
        let (members, unhealthy) = snap.read_members(health);
        let recently_left =
            snap.members().iter().any(|m| m.state == MemberState::Left && health.now_ms - m.heartbeat_ms <= settle_ms);
        let lost = snap
            .members()
            .iter()
            .filter(|m| m.state != MemberState::Left && m.lost_data_ms > 0 && m.lost_data_ms > start_ms)
            .count();
        let tolerated = if recently_left { 0 } else { (rf - quorum(rf)).saturating_sub(lost) };
        Self { members, unhealthy, tolerated, rf }
    }

    /// Answers a complete read needs: every member but the tolerated
    /// missing ones (unhealthy members count as missing).
    pub fn needed(&self) -> usize {
        (self.members.len() + self.unhealthy).saturating_sub(self.tolerated)
    }

    fn too_many_failed(&self, failures: &[ServiceError]) -> ServiceError {
        let msgs: Vec<&str> = failures.iter().map(|e| e.message.as_str()).collect();
        unavailable(format!(
            "{} ingesters failed and {} are unhealthy; with replication factor {} reads tolerate {}{}{}",
            failures.len(),
            self.unhealthy,
            self.rf,
            self.tolerated,
            if msgs.is_empty() { "" } else { ": " },
            msgs.join("; ")
        ))
    }

    /// Calls members until [`ReadSet::needed`] of them have answered. It
    /// starts with that many; each member failure starts a spare. A member
    /// much slower than the others is hedged: once the first answer is in,
    /// the spares are started if the rest are not in after as long again
    /// (at least `hedge`). Fails when too many members failed, or at once
    /// with a member's own answer when it refused the request itself (a bad
    /// regex, a limit).
    pub async fn run<T, Fut>(&self, hedge: Duration, call: impl Fn(&'a Member) -> Fut) -> Result<Vec<T>, ServiceError>
    where
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        use futures::StreamExt;
        if self.unhealthy > self.tolerated {
            return Err(self.too_many_failed(&[]));
        }
        let wanted = self.needed().min(self.members.len());
        // Successive reads leave out different members, spreading the load.
        let mut order: Vec<&'a Member> = self.members.clone();
        let offset = spread_offset(order.len());
        order.rotate_left(offset);
        let mut spares = order.split_off(wanted);
        let mut running: futures::stream::FuturesUnordered<Fut> = order.into_iter().map(&call).collect();
        let mut answers = Vec::with_capacity(wanted);
        let mut failures: Vec<ServiceError> = Vec::new();
        let started = tokio::time::Instant::now();
        let hedge_at = tokio::time::sleep(Duration::MAX);
        tokio::pin!(hedge_at);
        let mut hedge_armed = false;
        while answers.len() < wanted {
            tokio::select! {
                next = running.next() => match next {
                    Some(Ok(v)) => {
                        answers.push(v);
                        if !hedge_armed && !spares.is_empty() {
                            hedge_armed = true;
                            let waited = started.elapsed();
                            hedge_at.as_mut().reset(tokio::time::Instant::now() + waited.max(hedge));
                        }
                    }
                    Some(Err(e)) if member_failed(&e) => {
                        failures.push(e);
                        if self.unhealthy + failures.len() > self.tolerated {
                            return Err(self.too_many_failed(&failures));
                        }
                        if let Some(m) = spares.pop() {
                            running.push(call(m));
                        }
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Err(self.too_many_failed(&failures)),
                },
                _ = &mut hedge_at, if hedge_armed && !spares.is_empty() => {
                    for m in spares.drain(..) {
                        running.push(call(m));
                    }
                }
            }
        }
        Ok(answers)
    }
}

/// A rotating start position, so that successive reads leave out
/// different members.
fn spread_offset(n: usize) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    if n == 0 { 0 } else { NEXT.fetch_add(1, Ordering::Relaxed) % n }
}

#[cfg(test)]
mod tests;
